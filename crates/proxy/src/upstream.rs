//! Phase 3: the upstream side of an exchange. Check out a pooled connection
//! or open one, send the head and body, read the response head. A connect
//! failure moves to another endpoint once; a pooled connection found dead
//! before any response byte is replaced by a fresh one once, when the
//! request is idempotent and was sent whole in the first write.

use crate::downstream::{self, ResponsePlan};
use crate::error::{ErrorKind, ProxyError};
use crate::io::{IoFail, read_more, write_from, write_range, write_static};
use crate::pipeline::{Bufs, Client, Forward};
use crate::pool::EndpointId;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use monoio::net::TcpStream;
use shardgate_http::{BodyFraming, ChunkedDecoder};
use std::mem::take;

/// An upstream connection in use.
pub(crate) struct UpConn {
    pub stream: TcpStream,
    pub endpoint: EndpointId,
    /// Requests completed on it before this one.
    pub requests: u32,
}

/// A request sent and a response head received.
pub(crate) struct Exchanged {
    pub conn: UpConn,
    pub response: ResponsePlan,
}

/// What is left of the request body after the first write.
enum BodyLeft {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Sends the request and reads the response head. On failure, also says
/// whether the request body was fully read from the client (so the client
/// connection can stay open).
pub(crate) async fn exchange(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    fwd: Forward,
) -> Result<Exchanged, (ProxyError, bool)> {
    let mut body = first_body_part(snap, b, fwd).map_err(|e| (e, false))?;
    // The whole request is in `w`: it can be sent again on another connection.
    let replayable = matches!(body, BodyLeft::Done);
    let idempotent = fwd.info.method.is_idempotent();
    let group = &snap.groups[fwd.group];
    let mut endpoint = fwd.endpoint;
    let mut retried = false;
    let mut fresh = false;
    loop {
        let (mut conn, reused) = match checkout_or_connect(shard, snap, endpoint, fresh).await {
            Ok(c) => {
                shard.stats.upstream_active.incr();
                b.rec.upstream_conns += 1;
                c
            }
            Err(e) if !retried && group.endpoints.len() > 1 => {
                log::debug!(
                    "{e} to {}, trying another endpoint",
                    shard.pools.addr(endpoint)
                );
                retried = true;
                shard.stats.upstream_retries.incr();
                endpoint = group.pick(Some(endpoint));
                continue;
            }
            Err(e) => return Err((e, replayable)),
        };
        let may_retry = !retried && reused && replayable && idempotent;

        let sent_at = std::time::Instant::now();
        let deadline = shard.timers.now() + snap.timeouts.send;
        let (r, w) = write_from(&shard.timers, &mut conn.stream, take(&mut b.w), 0, deadline).await;
        b.w = w;
        match r {
            Ok(()) => {}
            Err(IoFail::Io) if may_retry => {
                retried = true;
                fresh = true;
                shard.stats.upstream_retries.incr();
                continue;
            }
            Err(IoFail::Io) => {
                return Err((ProxyError::new(ErrorKind::UpstreamClosed), replayable));
            }
            Err(IoFail::Timeout) => {
                return Err((ProxyError::new(ErrorKind::UpstreamTimeout), replayable));
            }
        }

        if !matches!(body, BodyLeft::Done) {
            if fwd.info.expect_continue {
                let deadline = shard.timers.now() + snap.timeouts.send;
                write_static(
                    &shard.timers,
                    &mut client.stream,
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    deadline,
                )
                .await
                .map_err(|_| (ProxyError::new(ErrorKind::ClientGone), false))?;
            }
            stream_body(shard, snap, client, &mut conn, b, &mut body)
                .await
                .map_err(|e| (e, false))?;
        }

        match read_response_head(shard, snap, &mut conn, b, fwd).await {
            Ok(response) => {
                let took = sent_at.elapsed();
                b.rec.upstream = Some(endpoint);
                b.rec.upstream_time = Some(took);
                snap.group_metrics[fwd.group].response.record(took);
                return Ok(Exchanged { conn, response });
            }
            Err(e) if e.kind == ErrorKind::UpstreamTimeout => {
                let t = &snap.group_metrics[fwd.group].timeouts;
                t.set(t.get() + 1);
                b.rec.upstream = Some(endpoint);
                return Err((e, true));
            }
            Err(e) if may_retry && e.retry_safe => {
                log::debug!(
                    "pooled connection to {} was dead; retrying",
                    shard.pools.addr(endpoint)
                );
                retried = true;
                fresh = true;
                shard.stats.upstream_retries.incr();
                continue;
            }
            Err(e) => return Err((e, true)),
        }
    }
}

/// Moves the body bytes that arrived with the head from `c` to `w`, so the
/// head and the start of the body leave in one write; `c` keeps only what
/// follows this request.
fn first_body_part(snap: &Snapshot, b: &mut Bufs, fwd: Forward) -> Result<BodyLeft, ProxyError> {
    let head_len = fwd.info.head_len;
    let avail = &b.c[head_len..];
    let (n, left) = match fwd.info.body {
        BodyFraming::None => (0, BodyLeft::Done),
        BodyFraming::Length(len) => {
            let n = len.min(avail.len() as u64);
            let left = if n == len {
                BodyLeft::Done
            } else {
                BodyLeft::Length(len - n)
            };
            (n as usize, left)
        }
        BodyFraming::Chunked => {
            let mut d = ChunkedDecoder::new(snap.limits.max_head, snap.limits.max_body);
            let p = d
                .feed(avail, |_| {})
                .map_err(|e| ProxyError::new(ErrorKind::BadRequestBody(e)))?;
            (
                p.consumed,
                if p.done {
                    BodyLeft::Done
                } else {
                    BodyLeft::Chunked(d)
                },
            )
        }
    };
    b.w.extend_from_slice(&b.c[head_len..head_len + n]);
    b.c.drain(..head_len + n);
    b.rec.bytes_in += n as u64;
    Ok(left)
}

/// Streams the rest of the request body from the client to the upstream,
/// one read and one write at a time (back-pressure both ways).
async fn stream_body(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    conn: &mut UpConn,
    b: &mut Bufs,
    body: &mut BodyLeft,
) -> Result<(), ProxyError> {
    loop {
        if matches!(body, BodyLeft::Done) {
            return Ok(());
        }
        if b.c.is_empty() {
            let deadline = shard.timers.now() + snap.timeouts.client_body;
            let (r, c) =
                read_more(&shard.timers, &mut client.stream, take(&mut b.c), deadline).await;
            b.c = c;
            match r {
                Ok(0) | Err(IoFail::Io) => return Err(ProxyError::new(ErrorKind::ClientGone)),
                Err(IoFail::Timeout) => return Err(ProxyError::new(ErrorKind::ClientTimeout)),
                Ok(_) => {}
            }
        }
        let n = match body {
            BodyLeft::Done => 0,
            BodyLeft::Length(left) => {
                let n = (*left).min(b.c.len() as u64);
                *left -= n;
                if *left == 0 {
                    *body = BodyLeft::Done;
                }
                n as usize
            }
            BodyLeft::Chunked(d) => {
                let p = d
                    .feed(&b.c, |_| {})
                    .map_err(|e| ProxyError::new(ErrorKind::BadRequestBody(e)))?;
                if p.done {
                    *body = BodyLeft::Done;
                }
                p.consumed
            }
        };
        let deadline = shard.timers.now() + snap.timeouts.send;
        let (r, c) = write_range(
            &shard.timers,
            &mut conn.stream,
            take(&mut b.c),
            0,
            n,
            deadline,
        )
        .await;
        b.c = c;
        match r {
            Ok(()) => {}
            Err(IoFail::Io) => return Err(ProxyError::new(ErrorKind::UpstreamClosed)),
            Err(IoFail::Timeout) => return Err(ProxyError::new(ErrorKind::UpstreamTimeout)),
        }
        b.c.drain(..n);
        b.rec.bytes_in += n as u64;
    }
}

/// Reads until the response head is complete and planned (see
/// [`downstream::plan_response`]). Interim 1xx responses are skipped.
async fn read_response_head(
    shard: &Shard,
    snap: &Snapshot,
    conn: &mut UpConn,
    b: &mut Bufs,
    fwd: Forward,
) -> Result<ResponsePlan, ProxyError> {
    b.u.clear();
    let deadline = shard.timers.now() + snap.timeouts.upstream_response;
    let mut received = false;
    loop {
        if !b.u.is_empty() {
            if let Some(plan) = downstream::plan_response(snap, b, fwd.info, shard.drain.is_on())? {
                return Ok(plan);
            }
            if b.u.len() == b.u.capacity() {
                return Err(ProxyError::new(ErrorKind::BadResponse(
                    shardgate_http::ResponseError::HeadTooLarge,
                )));
            }
        }
        let (r, u) = read_more(&shard.timers, &mut conn.stream, take(&mut b.u), deadline).await;
        b.u = u;
        match r {
            Ok(0) | Err(IoFail::Io) => {
                return Err(ProxyError {
                    kind: ErrorKind::UpstreamClosed,
                    retry_safe: !received,
                });
            }
            Err(IoFail::Timeout) => return Err(ProxyError::new(ErrorKind::UpstreamTimeout)),
            Ok(_) => received = true,
        }
    }
}

/// A pooled connection to `endpoint`, or a new one.
async fn checkout_or_connect(
    shard: &Shard,
    snap: &Snapshot,
    endpoint: EndpointId,
    fresh: bool,
) -> Result<(UpConn, bool), ProxyError> {
    if !fresh
        && let Some(p) = shard
            .pools
            .checkout(endpoint, snap.pool.idle_timeout, shard.timers.now())
    {
        shard.stats.upstream_reuses.incr();
        let conn = UpConn {
            stream: p.stream,
            endpoint,
            requests: p.requests,
        };
        return Ok((conn, true));
    }
    shard.stats.upstream_connects.incr();
    let addr = shard.pools.addr(endpoint);
    let connect = TcpStream::connect_addr(addr);
    let deadline = shard.timers.now() + snap.timeouts.connect;
    match shard.timers.within(deadline, connect).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            let conn = UpConn {
                stream,
                endpoint,
                requests: 0,
            };
            Ok((conn, false))
        }
        Ok(Err(e)) => {
            shard.stats.upstream_connect_errors.incr();
            shard.log_limited(|| format!("connect to upstream {addr} failed: {e}"));
            Err(ProxyError {
                kind: ErrorKind::ConnectFailed,
                retry_safe: true,
            })
        }
        Err(_) => {
            shard.stats.upstream_connect_errors.incr();
            shard.log_limited(|| format!("connect to upstream {addr} timed out"));
            Err(ProxyError {
                kind: ErrorKind::ConnectTimeout,
                retry_safe: true,
            })
        }
    }
}
