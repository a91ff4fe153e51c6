//! Phase 3: the upstream side of an exchange. Check out a pooled connection
//! or open one, send the head and body, read the response head. A connect
//! failure moves to another endpoint once; a pooled connection found dead
//! before any response byte is replaced by a fresh one once, when the
//! request is idempotent and was sent whole in the first write.

use crate::body::{self, RequestBody};
use crate::downstream;
use crate::error::{ErrorKind, IoCause, ProxyError};
use crate::io::{IoFail, read_more, write_from};
use crate::pool::EndpointId;
use crate::request::{
    Admitted, Bufs, Client, Exchanged, Forward, InFlight, Permit, ResponsePlan, UpConn,
};
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::stream::{TlsStream, Transport};
use monoio::net::TcpStream;
use shardgate_upstream::Outcome;
use shardgate_upstream::retry::{StopReason, Tries};
use std::mem::take;
use std::time::Instant;

/// Why one try failed, and what that says about the endpoint.
struct TryFail {
    err: ProxyError,
    /// What outlier detection and the retry policy see (`None`: the
    /// failure was the client's, or not the endpoint's to answer for).
    outcome: Option<Outcome>,
    /// A pooled connection turned out dead before any response byte.
    dead_pooled: bool,
    /// The request body has been read from the client in full.
    body_done: bool,
    /// An HTTP/2 upstream refused the stream unprocessed (REFUSED_STREAM,
    /// or past its GOAWAY), and the whole request is at hand: it may go
    /// again on a fresh connection whatever its method.
    unprocessed: bool,
}

/// Sends the request and reads the response head, trying again elsewhere
/// where the group says so ([`shardgate_upstream::Group::retry`]: after a
/// connect failure, and for requests that may be sent again, after a reset
/// before any response byte, a timeout or a configured status; to an
/// endpoint not tried yet, within the attempts, the deadline and the retry
/// budget). A pooled connection found dead is replaced by a fresh one to
/// the same endpoint once, without counting as a retry. An open circuit
/// breaker answers 503 at once. On failure, also says whether the request
/// body was fully read from the client (so the client connection can stay
/// open).
pub(crate) async fn exchange(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    fwd: Forward,
) -> Result<Exchanged, (ProxyError, bool)> {
    let mut body = RequestBody::new(&fwd.info, snap.limits.max_head, fwd.max_body);
    body::gather(shard, snap, client, b, &mut body, fwd.info.head_len)
        .await
        .map_err(|e| (e, false))?;
    // The whole request is in `w`: it can be sent again on another connection.
    let replayable = body.is_done();
    let group = &snap.groups[fwd.group];
    let now = shard.timers.now();
    let admission = group.state.borrow_mut().admit(now);
    if let Some(t) = admission.transition {
        log::warn!("shard {}: {t}", shard.id);
    }
    match admission.decision {
        Ok(None) => {}
        Ok(Some(ticket)) => {
            b.rec.admission = Some(Admitted::new(
                &group.state,
                ticket,
                shard.timers.clock(),
                shard.id,
            ));
        }
        Err(_) => {
            let r = &snap.group_metrics[fwd.group].breaker_rejections;
            r.set(r.get() + 1);
            return Err((ProxyError::new(ErrorKind::BreakerOpen), replayable));
        }
    }
    let mut tries = Tries::new(
        group.state.borrow().retry_settings(),
        fwd.info.method.is_idempotent(),
        replayable,
        now,
    );
    // Retrying on a status needs the request again after `w` has been
    // reused for the response head: keep a copy (only for such groups).
    let mut replay = tries
        .may_retry_a_status(group.state.borrow().retry_settings())
        .then(|| {
            let mut copy = shard.buffers.take();
            copy.extend_from_slice(&b.w);
            copy
        });
    let result = exchange_tries(
        shard,
        snap,
        client,
        b,
        fwd,
        &mut body,
        &mut tries,
        &mut replay,
    )
    .await;
    if let Some(copy) = replay {
        shard.buffers.give(copy);
    }
    result
}

/// The tries of [`exchange`]: I/O here, every decision the group's.
#[allow(clippy::too_many_arguments)]
async fn exchange_tries(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    fwd: Forward,
    body: &mut RequestBody,
    tries: &mut Tries,
    replay: &mut Option<Vec<u8>>,
) -> Result<Exchanged, (ProxyError, bool)> {
    let group = &snap.groups[fwd.group];
    let idempotent = fwd.info.method.is_idempotent();
    let mut index = fwd.index;
    let mut fresh = false;
    loop {
        // The previous try's count ends as this one's begins; a dead pooled
        // connection's replacement is the same try, still in flight.
        if !fresh {
            b.rec.flight = Some(InFlight::begin(&group.state, tries, index));
        }
        let try_span = b.rec.trace.as_mut().map(|span| {
            let id = shard.ids.borrow_mut().rng().next_u64().max(1).to_be_bytes();
            span.name_try_in(&mut b.w, &id);
            (id, crate::tracing::unix_nanos())
        });
        let result = try_once(shard, snap, client, b, fwd, index, fresh, body, tries).await;
        if let (Some((span_id, start)), Some(span)) = (try_span, &mut b.rec.trace) {
            span.tries.push(crate::tracing::TrySpan {
                span_id,
                start,
                end: crate::tracing::unix_nanos(),
                endpoint: shard.pools.addr(group.endpoints[index]),
                status: result.as_ref().map_or(0, |ex| ex.response.status),
                error: result.as_ref().err().map(|f| f.err.kind.label()),
            });
        }
        fresh = false;
        let now = shard.timers.now();
        let outcome = match &result {
            Ok(ex) => Some(Outcome::Response(ex.response.status)),
            Err(f) => f.outcome,
        };
        if let Some(o) = outcome
            && let Some(event) = group.state.borrow_mut().record(index, o, now)
        {
            log::warn!("shard {}: upstream {:?}: {event}", shard.id, group.name);
        }
        let next = match result {
            Ok(ex) => {
                let status = ex.response.status;
                if replay.is_none() {
                    return Ok(ex);
                }
                let decision =
                    group
                        .state
                        .borrow_mut()
                        .retry(tries, Outcome::Response(status), fwd.key, now);
                let Ok(next) = decision else {
                    return Ok(ex);
                };
                if let Some(copy) = replay.as_ref() {
                    b.w.clear();
                    b.w.extend_from_slice(copy);
                }
                log::debug!(
                    "{} answered {status}; retrying elsewhere",
                    shard.pools.addr(group.endpoints[index])
                );
                drop(ex); // the connection closes; its response is not read
                next
            }
            Err(f)
                if (f.dead_pooled || f.unprocessed)
                    && tries.replace_dead_connection(idempotent || f.unprocessed) =>
            {
                log::debug!(
                    "pooled connection to {} was dead; retrying",
                    shard.pools.addr(group.endpoints[index])
                );
                fresh = true;
                shard.stats.upstream_retries.incr();
                index
            }
            Err(f) => {
                let decision = match f.outcome {
                    Some(o) => group.state.borrow_mut().retry(tries, o, fwd.key, now),
                    None => Err(StopReason::NotRetryable),
                };
                let next = match decision {
                    Ok(next) => next,
                    Err(why) => {
                        log::debug!("{}: not retried: {why}", f.err);
                        return Err((f.err, f.body_done));
                    }
                };
                log::debug!(
                    "{} to {}; retrying elsewhere",
                    f.err,
                    shard.pools.addr(group.endpoints[index])
                );
                next
            }
        };
        if !fresh {
            shard.stats.upstream_retries.incr();
        }
        index = next;
    }
}

/// One try on endpoint `index` of the request's group.
#[allow(clippy::too_many_arguments)]
async fn try_once(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    fwd: Forward,
    index: usize,
    fresh: bool,
    body: &mut RequestBody,
    tries: &Tries,
) -> Result<Exchanged, TryFail> {
    let group = &snap.groups[fwd.group];
    let endpoint = group.endpoints[index];
    let body_done = body.is_done();
    let fail =
        |err: ProxyError, outcome: Option<Outcome>, dead_pooled: bool, body_done: bool| TryFail {
            err,
            outcome,
            dead_pooled,
            body_done,
            unprocessed: false,
        };
    // An HTTP/2 stream the upstream refused, with the whole request at hand.
    let unprocessed = |conn: &UpConn, f: TryFail| TryFail {
        unprocessed: body_done && matches!(&conn.stream, Transport::H2Up(s) if s.refused),
        ..f
    };
    if snap.pool.max_connections_per_endpoint > 0
        && b.rec.permit.as_ref().map(Permit::endpoint) != Some(endpoint)
    {
        // A slot held on another endpoint (an earlier try) goes back first.
        b.rec.permit = None;
        let now = shard.timers.now();
        if shard
            .limits
            .acquire(&shard.timers, endpoint, &snap.pool, now)
            .await
            .is_err()
        {
            return Err(fail(
                ProxyError::new(ErrorKind::PoolExhausted),
                None,
                false,
                body_done,
            ));
        }
        b.rec.permit = Some(Permit::held(&shard.limits, endpoint));
    }
    let tls = group.tls.as_ref().map(|(c, names)| (c, &names[index]));
    let connected = checkout_or_connect(shard, snap, endpoint, fresh, tls, group.http2).await;
    let (mut conn, reused) = match connected {
        Ok(c) => {
            shard.stats.upstream_active.incr();
            b.rec.upstream_conns += 1;
            c
        }
        Err(e) => return Err(fail(e, Some(Outcome::ConnectFailed), false, body_done)),
    };
    let sent_at = std::time::Instant::now();
    let deadline = shard.timers.now() + snap.timeouts.send;
    let (r, w) = write_from(&shard.timers, &mut conn.stream, take(&mut b.w), 0, deadline).await;
    b.w = w;
    match r {
        Ok(()) => {}
        Err(IoFail::Io(c)) => {
            let e = ProxyError::new(ErrorKind::UpstreamClosed).because(Some(c));
            let f = fail(
                e,
                (!reused).then_some(Outcome::ResetBeforeResponse),
                reused,
                body_done,
            );
            return Err(unprocessed(&conn, f));
        }
        Err(IoFail::Timeout) => {
            // The request (in `w`) went with the timed-out write: not retried.
            let e = ProxyError::new(ErrorKind::UpstreamTimeout);
            return Err(fail(e, Some(Outcome::ResetAfterResponse), false, body_done));
        }
    }

    if !body.is_done() {
        body::stream(shard, snap, client, &mut conn, b, body)
            .await
            .map_err(|e| {
                let outcome = (e.side() == crate::error::Side::Upstream)
                    .then_some(Outcome::ResetBeforeResponse);
                fail(e, outcome, false, false)
            })?;
    }

    // Each try waits for its response head at most the per-try timeout,
    // and never past the overall deadline of all tries.
    let group = &snap.groups[fwd.group];
    let deadline = tries.try_deadline(
        group.state.borrow().retry_settings(),
        snap.timeouts.upstream_response,
        shard.timers.now(),
    );
    // A gRPC client's own deadline comes first (within the route's).
    let deadline = client
        .stream
        .grpc_deadline()
        .map_or(deadline, |d| d.min(deadline));
    let head = read_response_head(shard, snap, &mut conn, b, fwd, deadline);
    // An HTTP/2 client that resets its stream while the upstream thinks is
    // gone: the wait ends, and the upstream's stream is reset with it.
    let head = match &mut client.stream {
        Transport::H2(io) => monoio::select! {
            r = head => r,
            () = io.reset() => Err(ProxyError::new(ErrorKind::ClientGone)),
        },
        _ => head.await,
    };
    match head {
        Ok(response) => {
            let took = sent_at.elapsed();
            b.rec.upstream = Some(endpoint);
            b.rec.upstream_time = Some(took);
            snap.group_metrics[fwd.group].response.record(took);
            Ok(Exchanged { conn, response })
        }
        Err(e) => {
            b.rec.upstream = Some(endpoint);
            let outcome = match e.kind {
                ErrorKind::UpstreamTimeout => {
                    let t = &snap.group_metrics[fwd.group].timeouts;
                    t.set(t.get() + 1);
                    Some(Outcome::TryTimeout)
                }
                ErrorKind::UpstreamClosed if e.retry_safe && !reused => {
                    Some(Outcome::ResetBeforeResponse)
                }
                ErrorKind::UpstreamClosed if e.retry_safe => None,
                // Not the endpoint's doing.
                ErrorKind::ClientGone => None,
                _ => Some(Outcome::ResetAfterResponse),
            };
            let dead_pooled = reused && e.kind == ErrorKind::UpstreamClosed && e.retry_safe;
            Err(unprocessed(&conn, fail(e, outcome, dead_pooled, true)))
        }
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
    deadline: Instant,
) -> Result<ResponsePlan, ProxyError> {
    if b.u.capacity() == 0 {
        // A previous try's read timed out and its buffer stayed with the kernel.
        b.u = shard.buffers.take();
    }
    b.u.clear();
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
            Ok(0) | Err(IoFail::Io(_)) => {
                return Err(ProxyError {
                    kind: ErrorKind::UpstreamClosed,
                    retry_safe: !received,
                    io: r.err().and_then(|f| f.cause()),
                });
            }
            Err(IoFail::Timeout) => return Err(ProxyError::new(ErrorKind::UpstreamTimeout)),
            Ok(_) => received = true,
        }
    }
}

/// What a TLS connection to an endpoint needs: its group's client
/// configuration and the name it is verified as.
type TlsTo<'a> = (
    &'a std::sync::Arc<rustls::ClientConfig>,
    &'a rustls_pki_types::ServerName<'static>,
);

/// A pooled connection to `endpoint`, or a new one (over TLS when `tls`
/// says so: the handshake is part of connecting, within its timeout, and a
/// certificate that does not verify is a failed connect).
///
/// For an HTTP/2 group (`http2`), the connection is a stream on one of the
/// shard's multiplexed connections to the endpoint with room for one, or on
/// a new one; "reused" means an existing connection carries it.
async fn checkout_or_connect(
    shard: &Shard,
    snap: &Snapshot,
    endpoint: EndpointId,
    fresh: bool,
    tls: Option<TlsTo<'_>>,
    http2: bool,
) -> Result<(UpConn, bool), ProxyError> {
    use crate::h2::client::UpStream;
    let mut found = None;
    if http2 && !fresh {
        loop {
            found = shard.h2_up.pick(endpoint);
            // A connection being opened may have room: wait for it (once
            // it is open, or has failed, look again).
            if found.is_some() || !shard.h2_up.wait_opening(endpoint).await {
                break;
            }
        }
    }
    if let Some(c) = found {
        shard.stats.upstream_reuses.incr();
        let conn = UpConn {
            stream: Transport::H2Up(Box::new(UpStream::new(c, tls.is_some()))),
            endpoint,
            requests: 0,
        };
        return Ok((conn, true));
    }
    if !http2
        && !fresh
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
    let _opening = http2.then(|| shard.h2_up.opening(endpoint));
    let connect = async {
        let tcp = TcpStream::connect_addr(addr).await?;
        let _ = tcp.set_nodelay(true);
        if http2 {
            let idle = snap.pool.idle_timeout;
            // Boxed: its 3.4 KiB would otherwise widen every request's future.
            let open = crate::h2::client::open(&shard.h2_up, endpoint, tcp, tls, idle);
            let c = Box::pin(open).await?;
            return Ok(Transport::H2Up(Box::new(UpStream::new(c, tls.is_some()))));
        }
        match tls {
            None => Ok(Transport::Plain(tcp)),
            Some((config, name)) => TlsStream::connect(tcp, config.clone(), name.clone())
                .await
                .map(|s| Transport::Tls(Box::new(s))),
        }
    };
    let deadline = shard.timers.now() + snap.timeouts.connect;
    match shard.timers.within(deadline, connect).await {
        Ok(Ok(stream)) => {
            let conn = UpConn {
                stream,
                endpoint,
                requests: 0,
            };
            Ok((conn, false))
        }
        Ok(Err(io)) => {
            shard.stats.upstream_connect_errors.incr();
            let e = ProxyError {
                kind: ErrorKind::ConnectFailed,
                retry_safe: true,
                io: Some(IoCause::from(&io)),
            };
            // A TLS failure has no errno: its words say why (an unknown
            // issuer, a name the certificate does not carry).
            match io.raw_os_error() {
                Some(_) => shard.log_limited(|| format!("upstream {addr}: {e}")),
                None => shard.log_limited(|| format!("upstream {addr}: {e}: TLS: {io}")),
            }
            Err(e)
        }
        Err(_) => {
            shard.stats.upstream_connect_errors.incr();
            shard.log_limited(|| format!("connect to upstream {addr} timed out"));
            Err(ProxyError {
                retry_safe: true,
                ..ProxyError::new(ErrorKind::ConnectTimeout)
            })
        }
    }
}
