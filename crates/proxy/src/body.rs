//! The request body on its way upstream: where it ends, what of it may be
//! forwarded, and how long a client may take to send it.
//!
//! - [`RequestBody`] walks the body as it arrives and says what to do with
//!   the front of the client buffer: forward bytes as they are, or forward a
//!   trailer section with the fields the gateway owns left out.
//! - [`gather`] reads a small body whole before the upstream is contacted
//!   (`limits.request_buffer`), so a client trickling its body in holds no
//!   upstream connection; a larger one is streamed by [`stream`].
//! - [`Pace`] turns a base allowance and a minimum rate into the deadline of
//!   each wait, for the request body and for the response's writes alike.

use crate::error::{ErrorKind, ProxyError};
use crate::io::{IoFail, read_more, write_from, write_range, write_static};
use crate::request::{Bufs, Client, UpConn};
use crate::route::RouteId;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use shardgate_config::Underscores;
use shardgate_http::{
    BodyFraming, ChunkedDecoder, ChunkedError, HeadEdits, RequestInfo, filter_trailers,
    trailer_field_allowed,
};
use std::mem::take;
use std::time::{Duration, Instant};

/// How long a peer may keep a transfer waiting: a base allowance plus a
/// second for each `min_rate` bytes moved. Only the time spent waiting on
/// that peer counts (not an upstream's back-pressure, not a quiet
/// server-sent-events stream), so a slow link that keeps moving is never cut,
/// and a peer moving a byte every few seconds is, however short each gap.
#[derive(Default)]
pub(crate) struct Pace {
    waited: Duration,
    moved: u64,
}

impl Pace {
    /// The deadline of the next wait: `gap` from `now`, and not past what
    /// is left of the allowance. A zero `base` sets no allowance.
    pub(crate) fn deadline(
        &self,
        now: Instant,
        gap: Duration,
        base: Duration,
        min_rate: u64,
    ) -> Instant {
        if base.is_zero() {
            return now + gap;
        }
        let earned = self
            .moved
            .saturating_mul(1_000_000)
            .checked_div(min_rate)
            .map_or(Duration::ZERO, Duration::from_micros);
        now + gap.min((base + earned).saturating_sub(self.waited))
    }

    /// One wait of `waited` that moved `bytes`.
    pub(crate) fn record(&mut self, waited: Duration, bytes: u64) {
        self.waited += waited;
        self.moved += bytes;
    }
}

/// What is left of a request body, and the trailer bytes held back.
pub(crate) struct RequestBody {
    left: Left,
    /// Bytes of a trailer section at the front of the client buffer that
    /// have been scanned and are held until the section is complete.
    held: usize,
    /// `100 Continue` has been sent (or was not asked for).
    continued: bool,
}

enum Left {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// What to do with the front of the client buffer.
pub(crate) enum Piece {
    /// Forward its first `n` bytes as they are.
    Send(usize),
    /// Its first `n` bytes are a whole trailer section: forward it filtered.
    Trailers(usize),
    /// Nothing can be forwarded until more arrives.
    More,
}

impl RequestBody {
    pub(crate) fn new(info: &RequestInfo, max_meta: usize, max_body: Option<u64>) -> RequestBody {
        RequestBody {
            left: match info.body {
                BodyFraming::None | BodyFraming::Length(0) => Left::Done,
                BodyFraming::Length(n) => Left::Length(n),
                BodyFraming::Chunked => Left::Chunked(ChunkedDecoder::new(max_meta, max_body)),
            },
            held: 0,
            continued: !info.expect_continue,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.left, Left::Done)
    }

    /// Bytes of body still to come, when the framing says so.
    fn length_left(&self) -> Option<u64> {
        match self.left {
            Left::Length(n) => Some(n),
            _ => None,
        }
    }

    /// [`RequestBody::next`], `None` once the body is done.
    fn next_piece(&mut self, c: &[u8]) -> Result<Option<Piece>, ProxyError> {
        if self.is_done() {
            return Ok(None);
        }
        self.next(c)
            .map(Some)
            .map_err(|e| ProxyError::new(ErrorKind::BadRequestBody(e)))
    }

    /// Scans the front of `c`, the client's bytes not yet forwarded.
    pub(crate) fn next(&mut self, c: &[u8]) -> Result<Piece, ChunkedError> {
        match &mut self.left {
            Left::Done => Ok(Piece::Send(0)),
            Left::Length(left) => {
                let n = (*left).min(c.len() as u64);
                *left -= n;
                if *left == 0 {
                    self.left = Left::Done;
                }
                Ok(if n == 0 {
                    Piece::More
                } else {
                    Piece::Send(n as usize)
                })
            }
            Left::Chunked(d) if d.in_trailers() => {
                if !d.is_done() && c.len() > self.held {
                    let p = d.feed(&c[self.held..], |_| {})?;
                    self.held += p.consumed;
                }
                if !d.is_done() {
                    return Ok(Piece::More);
                }
                let n = take(&mut self.held);
                self.left = Left::Done;
                Ok(Piece::Trailers(n))
            }
            Left::Chunked(d) => {
                if c.is_empty() {
                    return Ok(Piece::More);
                }
                let p = d.feed(c, |_| {})?;
                if let Some(at) = p.trailers_at {
                    // The chunks before the trailer go as they are; the
                    // trailer waits until it is whole.
                    self.held = p.consumed - at;
                    return if at > 0 {
                        Ok(Piece::Send(at))
                    } else {
                        self.next(c)
                    };
                }
                if p.done {
                    self.left = Left::Done;
                }
                Ok(Piece::Send(p.consumed))
            }
        }
    }
}

/// Appends the trailer section `section` to `out` without the fields the
/// gateway owns: its own (`X-Forwarded-*`, framing, authentication), the
/// ones the route's filters set or remove, and `_` names where the listener
/// drops them from heads.
fn filter_request_trailers(
    snap: &Snapshot,
    route: Option<RouteId>,
    listener: u8,
    section: &[u8],
    out: &mut Vec<u8>,
) {
    let chain = route.map(|r| &snap.chains[r]);
    let edits = HeadEdits {
        drop: chain.map_or(&[][..], |c| c.request_drop()),
        add: b"",
    };
    let underscores = snap
        .listeners
        .get(usize::from(listener))
        .map_or(Underscores::Drop, |l| l.underscores);
    let dropped = filter_trailers(
        section,
        |name| {
            !trailer_field_allowed(name)
                || edits.drops(name)
                || (underscores == Underscores::Drop && name.contains(&b'_'))
        },
        out,
    );
    if dropped > 0 {
        log::debug!("{dropped} request trailer fields the gateway owns were left out");
    }
}

/// Moves the body bytes already read (they came with the head) from `c` to
/// `w`, after the head, and for a small body reads the rest first: a body of
/// at most `limits.request_buffer` bytes, or a chunked one until that much
/// has arrived. `c` keeps only what follows this request.
pub(crate) async fn gather(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
    body: &mut RequestBody,
    head_len: usize,
) -> Result<(), ProxyError> {
    b.c.drain(..head_len);
    let limit = snap.limits.request_buffer as u64;
    let wait = body.length_left().map_or(limit > 0, |n| n <= limit);
    let start = b.w.len();
    while let Some(piece) = body.next_piece(&b.c)? {
        let n = match piece {
            Piece::Send(n) => {
                b.w.extend_from_slice(&b.c[..n]);
                n
            }
            Piece::Trailers(n) => {
                filter_request_trailers(snap, b.rec.route, client.listener, &b.c[..n], &mut b.w);
                n
            }
            Piece::More => {
                if !wait || (b.w.len() - start) as u64 >= limit {
                    return Ok(());
                }
                send_continue(shard, snap, client, body).await?;
                read_body(shard, snap, client, b).await?;
                continue;
            }
        };
        b.c.drain(..n);
        b.rec.bytes_in += n as u64;
    }
    Ok(())
}

/// Streams the rest of the request body from the client to the upstream,
/// one read and one write at a time (back-pressure both ways).
pub(crate) async fn stream(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    conn: &mut UpConn,
    b: &mut Bufs,
    body: &mut RequestBody,
) -> Result<(), ProxyError> {
    send_continue(shard, snap, client, body).await?;
    while let Some(piece) = body.next_piece(&b.c)? {
        let deadline = shard.timers.now() + snap.timeouts.send;
        let (r, n) = match piece {
            Piece::More => {
                read_body(shard, snap, client, b).await?;
                continue;
            }
            Piece::Send(n) => {
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
                (r, n)
            }
            Piece::Trailers(n) => {
                b.w.clear();
                filter_request_trailers(snap, b.rec.route, client.listener, &b.c[..n], &mut b.w);
                let w = take(&mut b.w);
                let (r, w) = write_from(&shard.timers, &mut conn.stream, w, 0, deadline).await;
                b.w = w;
                (r, n)
            }
        };
        match r {
            Ok(()) => {}
            Err(IoFail::Io(c)) => {
                return Err(ProxyError::new(ErrorKind::UpstreamClosed).because(Some(c)));
            }
            Err(IoFail::Timeout) => return Err(ProxyError::new(ErrorKind::UpstreamTimeout)),
        }
        b.c.drain(..n);
        b.rec.bytes_in += n as u64;
    }
    Ok(())
}

/// Answers `Expect: 100-continue` once, before the body is read.
async fn send_continue(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    body: &mut RequestBody,
) -> Result<(), ProxyError> {
    if body.continued || body.is_done() {
        return Ok(());
    }
    body.continued = true;
    let deadline = shard.timers.now() + snap.timeouts.send;
    write_static(
        &shard.timers,
        &mut client.stream,
        b"HTTP/1.1 100 Continue\r\n\r\n",
        deadline,
    )
    .await
    .map_err(|_| ProxyError::new(ErrorKind::ClientGone))
}

/// Reads more of the body into `c`, within the gap between reads
/// (`timeouts.client_body`) and what is left of the whole body's time
/// (`timeouts.request_body`, extended at `limits.min_rate`).
async fn read_body(
    shard: &Shard,
    snap: &Snapshot,
    client: &mut Client,
    b: &mut Bufs,
) -> Result<(), ProxyError> {
    if b.c.len() == b.c.capacity() {
        // Only a trailer section is held back, and it fits a buffer.
        return Err(ProxyError::new(ErrorKind::BadRequestBody(
            ChunkedError::TooLarge,
        )));
    }
    let t = &snap.timeouts;
    let now = shard.timers.now();
    let deadline =
        b.rec
            .body_pace
            .deadline(now, t.client_body, t.request_body, snap.limits.min_rate);
    let (r, c) = read_more(&shard.timers, &mut client.stream, take(&mut b.c), deadline).await;
    b.c = c;
    let n = match &r {
        Ok(n) => *n as u64,
        Err(_) => 0,
    };
    b.rec
        .body_pace
        .record(shard.timers.now().saturating_duration_since(now), n);
    match r {
        Ok(0) => Err(ProxyError::new(ErrorKind::ClientGone)),
        Ok(_) => Ok(()),
        Err(IoFail::Io(c)) => Err(ProxyError::new(ErrorKind::ClientGone).because(Some(c))),
        Err(IoFail::Timeout) => Err(ProxyError::new(ErrorKind::ClientTimeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_grows_with_what_moved_and_shrinks_with_waiting() {
        let now = Instant::now();
        let (gap, base) = (Duration::from_secs(60), Duration::from_secs(10));
        let mut p = Pace::default();
        assert_eq!(p.deadline(now, gap, base, 1000), now + base);
        p.record(Duration::from_secs(4), 2000);
        assert_eq!(
            p.deadline(now, gap, base, 1000),
            now + Duration::from_secs(8)
        );
        p.record(Duration::from_secs(20), 0);
        assert_eq!(p.deadline(now, gap, base, 1000), now, "spent");
        assert_eq!(p.deadline(now, gap, Duration::ZERO, 1000), now + gap, "off");
        assert_eq!(
            Pace::default().deadline(now, Duration::from_secs(1), base, 0),
            now + Duration::from_secs(1),
            "the gap still bounds each wait"
        );
    }

    fn scan(body: &mut RequestBody, input: &[u8]) -> Vec<(char, Vec<u8>)> {
        let mut c = input.to_vec();
        let mut out = Vec::new();
        while !body.is_done() {
            match body.next(&c).unwrap() {
                Piece::Send(n) => out.push(('s', c.drain(..n).collect())),
                Piece::Trailers(n) => out.push(('t', c.drain(..n).collect())),
                Piece::More => break,
            }
        }
        out
    }

    fn chunked() -> RequestBody {
        let mut h = shardgate_http::empty_headers();
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let limits = shardgate_http::Limits::default();
        let req = shardgate_http::parse_request(head, &mut h, &limits);
        RequestBody::new(&req.unwrap().unwrap().info, 1024, None)
    }

    #[test]
    fn a_trailer_section_is_held_until_whole() {
        let mut body = chunked();
        let got = scan(&mut body, b"3\r\nabc\r\n0\r\nX-A: 1\r\n");
        assert_eq!(got, vec![('s', b"3\r\nabc\r\n0\r\n".to_vec())]);
        assert!(!body.is_done());
        let got = scan(&mut body, b"X-A: 1\r\n\r\n");
        assert_eq!(got, vec![('t', b"X-A: 1\r\n\r\n".to_vec())]);
        assert!(body.is_done());
    }

    #[test]
    fn a_body_without_trailer_fields_goes_as_it_is() {
        let mut body = chunked();
        let got = scan(&mut body, b"3\r\nabc\r\n0\r\n\r\nGET /");
        assert_eq!(got, vec![('s', b"3\r\nabc\r\n0\r\n\r\n".to_vec())]);
        assert!(body.is_done());
    }
}
