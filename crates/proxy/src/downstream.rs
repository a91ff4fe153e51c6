//! Phase 4: the response, from the upstream's head to the client's last
//! byte. [`plan_response`] decides the framing on both sides and writes the
//! client's head; [`relay`] streams the body, one read and one write at a
//! time; [`switch_protocols`] hands a `101` over to the tunnel.

use crate::error::{ErrorKind, ProxyError};
use crate::io::{IoFail, read_more, write_from, write_range};
use crate::request::{BodyLeft, Bufs, Client, Exchanged, Next, ResponsePlan};
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use shardgate_http::{
    ChunkedDecoder, HeadEdits, RequestInfo, ResponseEncodeOptions, ResponseError, ResponseFraming,
    Version, empty_headers, encode_response_head, parse_response,
};
use std::mem::take;

pub(crate) struct Outcome {
    pub upstream_reusable: bool,
    pub client_keep_alive: bool,
}

const BROKEN: Outcome = Outcome {
    upstream_reusable: false,
    client_keep_alive: false,
};

/// Parses the response head in `u` and writes the client's head, followed
/// by the body bytes that came with it, into `w`. `Ok(None)`: incomplete.
pub(crate) fn plan_response(
    snap: &Snapshot,
    b: &mut Bufs,
    req: RequestInfo,
    draining: bool,
) -> Result<Option<ResponsePlan>, ProxyError> {
    loop {
        let mut headers = empty_headers();
        let res = match parse_response(&b.u, &mut headers, req.method, snap.limits.max_head) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => return Err(ProxyError::new(ErrorKind::BadResponse(e))),
        };
        let info = res.info;
        if (100..200).contains(&info.status) && info.status != 101 {
            // Interim responses are not passed on: the gateway answers
            // `Expect: 100-continue` itself.
            b.u.drain(..info.head_len);
            if b.u.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let upgrade = info.status == 101;
        if upgrade && !req.upgrade {
            return Err(ProxyError::new(ErrorKind::BadResponse(
                ResponseError::UnexpectedUpgrade,
            )));
        }
        if upgrade {
            let field = |name: &str| {
                res.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            };
            let answered = b.rec.upgrade.is_some_and(|want| {
                want.answered_by(
                    field("upgrade").unwrap_or(b""),
                    field("sec-websocket-accept"),
                )
            });
            if !answered {
                return Err(ProxyError::new(ErrorKind::BadResponse(
                    ResponseError::BadUpgrade,
                )));
            }
        }
        let dechunk = info.framing == ResponseFraming::Chunked && req.version == Version::Http10;
        // A draining shard tells every client it answers to go elsewhere.
        let client_keep_alive = req.keep_alive
            && !draining
            && !upgrade
            && !dechunk
            && info.framing != ResponseFraming::UntilClose;
        let opts = ResponseEncodeOptions {
            client_version: req.version,
            close: !client_keep_alive,
            dechunk,
            upgrade,
            edits: match b.rec.route {
                Some(r) if !b.x.is_empty() || !snap.chains[r].response_drop().is_empty() => {
                    HeadEdits {
                        drop: snap.chains[r].response_drop(),
                        add: &b.x,
                    }
                }
                _ => HeadEdits::NONE,
            },
        };
        b.w.clear();
        encode_response_head(&res, &opts, &mut b.w);

        let head_len = info.head_len;
        let avail = &b.u[head_len..];
        let mut extra = false;
        let (consumed, body) = match info.framing {
            _ if upgrade => (avail.len(), BodyLeft::Done),
            ResponseFraming::None => {
                extra = !avail.is_empty();
                (0, BodyLeft::Done)
            }
            ResponseFraming::Length(len) => {
                let n = len.min(avail.len() as u64);
                extra = (avail.len() as u64) > len;
                let left = if n == len {
                    BodyLeft::Done
                } else {
                    BodyLeft::Length(len - n)
                };
                (n as usize, left)
            }
            ResponseFraming::Chunked => {
                let mut d = ChunkedDecoder::new(snap.limits.max_head, None);
                let p = if dechunk {
                    let (u, w) = (&b.u, &mut b.w);
                    d.feed(avail, |r| {
                        w.extend_from_slice(&u[head_len + r.start..head_len + r.end])
                    })
                } else {
                    d.feed(avail, |_| {})
                }
                .map_err(|e| ProxyError::new(ErrorKind::BadResponseBody(e)))?;
                extra = p.done && p.consumed < avail.len();
                (
                    p.consumed,
                    if p.done {
                        BodyLeft::Done
                    } else {
                        BodyLeft::Chunked(d)
                    },
                )
            }
            ResponseFraming::UntilClose => (avail.len(), BodyLeft::UntilClose),
        };
        if !dechunk {
            b.w.extend_from_slice(&b.u[head_len..head_len + consumed]);
        }
        b.u.clear();
        return Ok(Some(ResponsePlan {
            status: info.status,
            body,
            dechunk,
            upstream_reusable: info.reusable && !extra,
            client_keep_alive,
        }));
    }
}

/// Streams the response to the client. An upstream that fails mid-body
/// leaves the client with a visibly cut response: the connection closes.
pub(crate) async fn relay(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    ex: &mut Exchanged,
    _req: RequestInfo,
) -> Outcome {
    let plan = &mut ex.response;
    let up = &mut ex.conn.stream;
    b.rec.bytes_out += b.w.len() as u64;
    let r = send_to_client(shard, snap, client, b).await;
    if r.is_err() {
        return BROKEN;
    }
    let mut reusable = plan.upstream_reusable;
    loop {
        if matches!(plan.body, BodyLeft::Done) {
            break;
        }
        b.u.clear();
        let deadline = shard.timers.now() + snap.timeouts.upstream_response;
        let (r, u) = read_more(&shard.timers, up, take(&mut b.u), deadline).await;
        b.u = u;
        let n = match r {
            Ok(0) if matches!(plan.body, BodyLeft::UntilClose) => break,
            Ok(0) | Err(_) => {
                shard.log_limited(|| {
                    format!(
                        "upstream {} ended the response early; cutting the client off",
                        shard.pools.addr(ex.conn.endpoint)
                    )
                });
                return BROKEN;
            }
            Ok(n) => n,
        };
        let (from, to) = match &mut plan.body {
            BodyLeft::Done => break,
            BodyLeft::UntilClose => (0, n),
            BodyLeft::Length(left) => {
                let take_n = (*left).min(n as u64);
                reusable &= take_n == n as u64;
                *left -= take_n;
                if *left == 0 {
                    plan.body = BodyLeft::Done;
                }
                (0, take_n as usize)
            }
            BodyLeft::Chunked(d) => {
                let fed = if plan.dechunk {
                    b.w.clear();
                    let (u, w) = (&b.u, &mut b.w);
                    d.feed(u, |r| w.extend_from_slice(&u[r]))
                } else {
                    d.feed(&b.u, |_| {})
                };
                let Ok(p) = fed else {
                    shard.log_limited(|| "upstream sent a malformed chunked body".to_string());
                    return BROKEN;
                };
                reusable &= !(p.done && p.consumed < n);
                if p.done {
                    plan.body = BodyLeft::Done;
                }
                if plan.dechunk {
                    (usize::MAX, 0)
                } else {
                    (0, p.consumed)
                }
            }
        };
        let now = shard.timers.now();
        let deadline = client_deadline(snap, b, now);
        b.rec.bytes_out += if from == usize::MAX {
            b.w.len()
        } else {
            to - from
        } as u64;
        let r = if from == usize::MAX {
            send_to_client(shard, snap, client, b).await
        } else {
            let (r, u) = write_range(
                &shard.timers,
                &mut client.stream,
                take(&mut b.u),
                from,
                to,
                deadline,
            )
            .await;
            b.u = u;
            let waited = shard.timers.now().saturating_duration_since(now);
            b.rec.send_pace.record(waited, (to - from) as u64);
            r
        };
        if let Err(e) = r {
            if matches!(e, IoFail::Timeout) {
                log::debug!("client {} stopped reading", client.addr);
            }
            return BROKEN;
        }
    }
    Outcome {
        upstream_reusable: reusable,
        client_keep_alive: plan.client_keep_alive,
    }
}

/// Sends the `101` (and any bytes the upstream sent after it) to the client
/// and any bytes the client sent after its request to the upstream; the
/// connection then becomes a tunnel.
pub(crate) async fn switch_protocols(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    mut ex: Exchanged,
) -> Next {
    shard.stats.record_status(101);
    b.rec.status = 101;
    b.rec.bytes_out = b.w.len() as u64;
    let r = send_to_client(shard, snap, client, b).await;
    if r.is_err() {
        return Next::Close;
    }
    if !b.c.is_empty() {
        let deadline = shard.timers.now() + snap.timeouts.send;
        let (r, c) = write_from(
            &shard.timers,
            &mut ex.conn.stream,
            take(&mut b.c),
            0,
            deadline,
        )
        .await;
        b.c = c;
        b.c.clear();
        if r.is_err() {
            return Next::Close;
        }
    }
    Next::Upgrade(ex.conn.stream)
}

/// Writes `w` to the client in full before its deadline (and keeps `w` for
/// reuse).
pub(crate) async fn send_to_client(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
) -> Result<(), IoFail> {
    let now = shard.timers.now();
    let deadline = client_deadline(snap, b, now);
    let n = b.w.len() as u64;
    let (r, w) = write_from(
        &shard.timers,
        &mut client.stream,
        take(&mut b.w),
        0,
        deadline,
    )
    .await;
    b.w = w;
    let waited = shard.timers.now().saturating_duration_since(now);
    b.rec.send_pace.record(waited, n);
    r
}

/// The deadline of the next write to the client: the gap a write may take
/// (`timeouts.send`), within what is left of the response's time
/// (`timeouts.response_send`, extended at `limits.min_rate`).
fn client_deadline(snap: &Snapshot, b: &Bufs, now: std::time::Instant) -> std::time::Instant {
    let t = &snap.timeouts;
    b.rec
        .send_pace
        .deadline(now, t.send, t.response_send, snap.limits.min_rate)
}
