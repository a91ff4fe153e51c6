//! HTTP/2, downstream and upstream. The `h2` crate speaks the protocol over
//! monoio's poll-io socket (`wire`: plain, or the rustls session the
//! handshake set up); each downstream stream becomes one HTTP/1.1 request
//! that runs through the same pipeline as any other (routing, filters,
//! limits, retries, metrics, logs), so nothing above the codec knows the
//! protocol.
//!
//! - A stream's request head is translated strictly (`translate`, RFC 9113
//!   §8): fields a downgrade could abuse are refused with a stream reset,
//!   never copied into the HTTP/1.1 head.
//! - The pipeline reads the body and writes the response through
//!   [`StreamIo`], which turns DATA frames into a body (chunked when the
//!   client gave no length, with its trailers) and the HTTP/1.1 response
//!   back into HEADERS, DATA and trailing HEADERS, within the stream's
//!   flow-control window; a gateway answer to a gRPC request goes back
//!   Trailers-Only (`grpc`).
//! - `guard` follows the frame headers both ways and closes an abusive
//!   connection with GOAWAY; `client` is the upstream side, the mirror of
//!   [`StreamIo`].

use crate::request::{Client, Next};
use crate::shard::Shard;
use crate::stream::Transport;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use shardgate_http::ChunkedDecoder;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::Poll;
use translate::{CONNECTION_SPECIFIC, InBody, content_length, translate};

pub(crate) mod client;
mod grpc;
mod guard;
pub(crate) mod translate;
mod wire;

pub(crate) use guard::Abuse;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams a client may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams a client may open and reset before they are accepted (Rapid
/// Reset, CVE-2023-44487), and streams it may make the gateway reset.
const MAX_PENDING_RESETS: usize = 32;
const MAX_ERROR_RESETS: usize = 256;
/// h2's budget for small DATA frames buffered unread (each costs it 256
/// bytes less its payload): about 1,000 tiny frames, so a gRPC client
/// streaming small messages to a slow upstream is not taken for a flood;
/// empty frames keep h2's own limit of 100.
const DATA_FRAME_BUDGET: usize = 256 * 1024;

/// Reads a new connection's first bytes into `buf`: `true` when they are
/// the HTTP/2 preface (then serve it with [`run`]), `false` when they are
/// anything else (HTTP/1.1); gives back what was read either way.
pub(crate) async fn sniff(shard: &Shard, client: &mut Client, mut buf: Vec<u8>) -> (bool, Vec<u8>) {
    let deadline = shard.timers.now() + shard.timeouts().request_header;
    loop {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return (false, buf);
        }
        if n == PREFACE.len() {
            return (true, buf);
        }
        let (r, b) = crate::io::read_more(&shard.timers, &mut client.stream, buf, deadline).await;
        buf = b;
        // A close or a timeout: the HTTP/1.1 path answers what there is.
        if !matches!(r, Ok(n) if n > 0) {
            return (false, buf);
        }
    }
}

/// A shard's downstream HTTP/2 counters (shown in `/metrics`).
#[derive(Default)]
pub(crate) struct Counts {
    pub connections: std::cell::Cell<u64>,
    pub abuse: [std::cell::Cell<u64>; Abuse::ALL.len()],
}

/// How long a connection closed as abusive gets to take its GOAWAY.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// An HTTP/2 connection past its handshake, with who it comes from.
struct Open {
    conn: h2::server::Connection<wire::Wire, Bytes>,
    tripwire: Rc<guard::Tripwire>,
    /// Over TLS: the verified client certificate's subject, if any.
    tls_peer: Option<Option<Rc<[u8]>>>,
    addr: std::net::IpAddr,
    listener: u8,
}

/// What serves an HTTP/2 connection until it closes.
type Serving = std::pin::Pin<Box<dyn Future<Output = ()>>>;

/// Serves an HTTP/2 connection to its end: a plain one whose first bytes
/// (the preface, and maybe more) are in `read`, or a TLS one that chose
/// `h2`. The caller counted the connection open and counts it closed when
/// this returns.
///
/// Two boxed futures, one after the other, so that an idle connection keeps
/// only the second: the handshake's state (1.4 KiB, h2's and the session's
/// on the way) is freed once the connection is open, and the connection
/// itself (1.6 KiB) lives in the serving future alone. The caller's task
/// holds one pointer to whichever runs.
pub(crate) fn run(shard: Rc<Shard>, client: Client, read: Vec<u8>) -> Run {
    Run::Handshake(Box::pin(handshake(shard, client, read)))
}

/// The future [`run`] gives.
pub(crate) enum Run {
    Handshake(std::pin::Pin<Box<dyn Future<Output = Option<Serving>>>>),
    Serving(Serving),
    Done,
}

impl Future for Run {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            match &mut *self {
                Run::Handshake(h) => match std::task::ready!(h.as_mut().poll(cx)) {
                    Some(serving) => *self = Run::Serving(serving),
                    None => break,
                },
                Run::Serving(s) => {
                    std::task::ready!(s.as_mut().poll(cx));
                    break;
                }
                Run::Done => break,
            }
        }
        *self = Run::Done;
        Poll::Ready(())
    }
}

/// Sets up the connection [`run`] serves; `None` when that fails.
async fn handshake(shard: Rc<Shard>, client: Client, read: Vec<u8>) -> Option<Serving> {
    let Client {
        stream,
        addr,
        listener,
    } = client;
    let tripwire = Rc::new(guard::Tripwire::default());
    let mut tls_peer = None;
    let guard = guard::Guard::new(tripwire.clone());
    let wire = match stream {
        Transport::Plain(tcp) => tcp
            .try_into_poll_io()
            .map(|io| wire::Wire::plain(io, read, Some(guard))),
        Transport::Tls(tls) => {
            let (tcp, conn, records, subject) = tls.into_parts();
            tls_peer = Some(subject.map(Rc::from));
            tcp.try_into_poll_io()
                .map(|io| wire::Wire::tls(io, conn, records, Some(guard)))
        }
        Transport::H2(_) | Transport::H2Up(_) => return None,
    };
    let wire = match wire {
        Ok(w) => w,
        Err((e, _)) => {
            log::debug!("shard {}: HTTP/2 from {addr}: {e}", shard.id);
            return None;
        }
    };
    let counts = &shard.http2;
    counts.connections.set(counts.connections.get() + 1);
    let max_header_list = u32::try_from(shard.snapshot().limits.max_head).unwrap_or(u32::MAX);
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
        .max_header_list_size(max_header_list)
        .max_send_buffer_size(64 * 1024)
        .data_frame_budget(DATA_FRAME_BUDGET)
        .handshake::<_, Bytes>(wire);
    let deadline = shard.timers.now() + shard.timeouts().request_header;
    match shard.timers.within(deadline, handshake).await {
        Ok(Ok(conn)) => {
            let c = Open {
                conn,
                tripwire,
                tls_peer,
                addr,
                listener,
            };
            Some(Box::pin(serve(shard, c)))
        }
        Ok(Err(e)) => {
            log::debug!("shard {}: HTTP/2 handshake from {addr}: {e}", shard.id);
            None
        }
        Err(_) => None,
    }
}

/// Serves a connection [`handshake`] set up, until it closes.
///
/// Not an `async fn`, whose body would copy `c` into a local of its own
/// beside the argument: the block uses it in place, so the future holds it
/// once.
#[expect(clippy::manual_async_fn, reason = "an async fn would hold `c` twice")]
fn serve(shard: Rc<Shard>, mut c: Open) -> impl Future<Output = ()> {
    async move {
        let counts = &shard.http2;
        let mut draining = false;
        // Idle: the GOAWAY gets this long to go out before the socket closes.
        let mut close_by = None;
        let live = Rc::new(std::cell::Cell::new(0usize));
        let abuse = loop {
            // A connection with no stream open for the idle timeout is closed
            // with GOAWAY, as an idle HTTP/1.1 connection is closed.
            let idle = shard.timers.now() + shard.timeouts().idle;
            let next = monoio::select! {
                biased;
                why = c.tripwire.wait() => break Some(why),
                r = c.conn.accept() => Some(r),
                () = shard.drain.wait(), if !draining => None,
                () = idle_after(&shard, idle, &live), if !draining => {
                    close_by = Some(shard.timers.now() + GOAWAY_GRACE);
                    None
                }
                _ = shard.timers.within(close_by.unwrap_or(idle), std::future::pending::<()>()),
                    if close_by.is_some() => break None,
            };
            match next {
                // Draining or idle: GOAWAY, and the open streams finish.
                None => {
                    draining = true;
                    c.conn.graceful_shutdown();
                }
                Some(None) => break None,
                Some(Some(Ok((req, respond)))) => {
                    let peer = Peer {
                        addr: c.addr,
                        listener: c.listener,
                        tls: c.tls_peer.clone(),
                        wire: c.tripwire.clone(),
                    };
                    live.set(live.get() + 1);
                    let (shard, live) = (shard.clone(), live.clone());
                    monoio::spawn(async move {
                        serve_stream(shard, req, respond, peer).await;
                        live.set(live.get() - 1);
                    });
                }
                Some(Some(Err(e))) => {
                    let why = c.tripwire.abuse();
                    if why.is_none() {
                        log::debug!("shard {}: HTTP/2 from {}: {e}", shard.id, c.addr);
                    }
                    break why;
                }
            }
        };
        let Some(why) = abuse else {
            return;
        };
        let slot = &counts.abuse[why.index()];
        slot.set(slot.get() + 1);
        let peer = c.addr;
        shard.log_limited(|| {
            format!(
                "{peer}: HTTP/2 connection closed with GOAWAY: {}",
                why.label()
            )
        });
        if c.tripwire.tripped().is_some() {
            // Our own limit: h2 has not sent a GOAWAY yet.
            c.conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
            let deadline = shard.timers.now() + GOAWAY_GRACE;
            let _ = shard
                .timers
                .within(deadline, async {
                    while let Some(Ok(_)) = c.conn.accept().await {}
                })
                .await;
        }
    }
}

/// Resolves once the connection has had no stream open for the idle
/// timeout (counted from `deadline`, and again from when the last stream
/// closed).
async fn idle_after(
    shard: &Shard,
    mut deadline: std::time::Instant,
    open: &std::cell::Cell<usize>,
) {
    loop {
        let _ = shard
            .timers
            .within(deadline, std::future::pending::<()>())
            .await;
        if open.get() == 0 {
            return;
        }
        // The shard's own timer: monoio's `sleep` would make every idle
        // connection's future 700 bytes larger.
        while open.get() > 0 {
            let tick = shard.timers.now() + std::time::Duration::from_millis(100);
            let _ = shard
                .timers
                .within(tick, std::future::pending::<()>())
                .await;
        }
        deadline = shard.timers.now() + shard.timeouts().idle;
    }
}

/// Who a connection's streams come from.
struct Peer {
    addr: std::net::IpAddr,
    listener: u8,
    /// Over TLS: the verified client certificate's subject, if any.
    tls: Option<Option<Rc<[u8]>>>,
    wire: Rc<guard::Tripwire>,
}

/// One stream: translated, run through the pipeline, finished.
async fn serve_stream(
    shard: Rc<Shard>,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: Peer,
) {
    let (parts, body) = req.into_parts();
    let head_request = parts.method == http::Method::HEAD;
    let is_grpc = grpc::is_grpc(&parts.headers);
    let grpc_deadline = parts
        .headers
        .get("grpc-timeout")
        .filter(|_| is_grpc)
        .and_then(|v| grpc::parse_timeout(v.as_bytes()))
        .map(|t| shard.timers.now() + t);
    let framing = if body.is_end_stream() {
        InBody::None
    } else {
        match content_length(&parts.headers) {
            Ok(Some(n)) => InBody::Length(n),
            Ok(None) => InBody::Chunked,
            Err(()) => {
                respond.send_reset(h2::Reason::PROTOCOL_ERROR);
                return;
            }
        }
    };
    let mut head = Vec::with_capacity(512);
    if let Err(why) = translate(&parts, &framing, &mut head) {
        log::debug!("shard {}: HTTP/2 request refused: {why}", shard.id);
        respond.send_reset(h2::Reason::PROTOCOL_ERROR);
        return;
    }
    let io = StreamIo {
        recv: body,
        framing,
        pending: Bytes::new(),
        ended: false,
        out: Out::Head(Vec::new(), Some(respond)),
        head_request,
        tls: peer.tls,
        wire: peer.wire,
        waiting: false,
        grpc: is_grpc,
        grpc_deadline,
    };
    let client = Client {
        stream: Transport::H2(Box::new(io)),
        addr: peer.addr,
        listener: peer.listener,
    };
    let mut buf = shard.buffers.take();
    buf.extend_from_slice(&head);
    let (client, next) = crate::pipeline::handle(shard.clone(), client, buf).await;
    if let Next::KeepAlive(rest) = next {
        shard.buffers.give(rest);
    }
    if let Transport::H2(mut io) = client.stream {
        io.finish();
    }
}

/// Where the HTTP/1.1 response the pipeline writes is in its translation.
enum Out {
    /// Collecting the head; the stream's response handle.
    Head(Vec<u8>, Option<SendResponse<Bytes>>),
    Body(SendStream<Bytes>, OutBody),
    Done,
}

enum OutBody {
    Framed(Framing),
    /// Until the pipeline closes the stream.
    Close,
}

/// How an HTTP/1.1 body being turned into DATA frames is framed.
pub(super) enum Framing {
    Length(u64),
    /// With the trailer section's bytes so far.
    Chunked(Box<ChunkedDecoder>, Vec<u8>),
}

impl Framing {
    pub(super) fn chunked() -> Framing {
        Framing::Chunked(Box::new(ChunkedDecoder::new(64 * 1024, None)), Vec::new())
    }
}

/// Sends `data`, the next bytes of an HTTP/1.1 body framed as `framing`, as
/// DATA frames within the peer's window; a chunked trailer section goes as
/// trailing HEADERS. `Ok(true)` once the body has ended (and so the stream).
pub(super) async fn send_body(
    send: &mut SendStream<Bytes>,
    framing: &mut Framing,
    data: &[u8],
    waiting: &mut bool,
) -> io::Result<bool> {
    match framing {
        Framing::Length(left) => {
            let n = (data.len() as u64).min(*left) as usize;
            *left -= n as u64;
            let end = *left == 0;
            send_data(send, &data[..n], end, waiting).await?;
            Ok(end)
        }
        Framing::Chunked(decoder, trailers) => {
            let mut ranges = Vec::new();
            let progress = decoder
                .feed(data, |r| ranges.push(r))
                .map_err(|_| broken("a bad chunked body"))?;
            for r in ranges {
                send_data(send, &data[r], false, waiting).await?;
            }
            if let Some(at) = progress.trailers_at {
                trailers.extend_from_slice(&data[at..progress.consumed]);
            } else if decoder.in_trailers() {
                trailers.extend_from_slice(&data[..progress.consumed]);
            }
            if progress.done {
                // The trailers (gRPC's status among them) as trailing HEADERS.
                let fields = client::parse_fields(trailers);
                if fields.is_empty() {
                    send_data(send, &[], true, waiting).await?;
                } else {
                    send.send_trailers(fields).map_err(io::Error::other)?;
                }
            }
            Ok(progress.done)
        }
    }
}

/// One stream, as the pipeline's client transport.
pub(crate) struct StreamIo {
    recv: RecvStream,
    framing: InBody,
    /// Body bytes read from DATA frames, not yet handed to the pipeline.
    pending: Bytes,
    ended: bool,
    out: Out,
    head_request: bool,
    /// Over TLS: the verified client certificate's subject, if any.
    pub(crate) tls: Option<Option<Rc<[u8]>>>,
    /// The connection's tripwire: a stream stalled at a zero window trips it.
    wire: Rc<guard::Tripwire>,
    /// A DATA frame is waiting for the client to open its window.
    waiting: bool,
    /// The request is gRPC: a gateway answer goes back Trailers-Only.
    grpc: bool,
    /// When the client's `grpc-timeout` runs out.
    pub(crate) grpc_deadline: Option<std::time::Instant>,
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_string())
}

impl StreamIo {
    /// The next body bytes, as HTTP/1.1 framing of them.
    pub(crate) async fn read_at(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.capacity() - buf.len());
                buf.extend_from_slice(&self.pending[..n]);
                let _ = self.pending.split_to(n);
                return (Ok(n), buf);
            }
            if self.ended {
                return (Ok(0), buf);
            }
            let next = poll_fn(|cx| self.recv.poll_data(cx)).await;
            match next {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    match &mut self.framing {
                        InBody::Length(left) => {
                            let n = data.len() as u64;
                            if n > *left {
                                return (Err(broken("DATA past content-length")), buf);
                            }
                            *left -= n;
                            self.pending = data;
                        }
                        InBody::Chunked if data.is_empty() => {}
                        InBody::Chunked => {
                            let mut framed = Vec::with_capacity(data.len() + 12);
                            framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                            framed.extend_from_slice(&data);
                            framed.extend_from_slice(b"\r\n");
                            self.pending = Bytes::from(framed);
                        }
                        InBody::None => self.pending = data,
                    }
                }
                Some(Err(e)) => return (Err(io::Error::other(e)), buf),
                None => {
                    self.ended = true;
                    match &self.framing {
                        InBody::Length(left) if *left > 0 => {
                            return (Err(broken("DATA short of content-length")), buf);
                        }
                        InBody::Chunked => {
                            // The client's trailers, as the chunked trailer section.
                            let trailers = poll_fn(|cx| self.recv.poll_trailers(cx)).await;
                            let mut end = b"0\r\n".to_vec();
                            if let Ok(Some(fields)) = trailers {
                                for (name, value) in &fields {
                                    end.extend_from_slice(name.as_str().as_bytes());
                                    end.extend_from_slice(b": ");
                                    end.extend_from_slice(value.as_bytes());
                                    end.extend_from_slice(b"\r\n");
                                }
                            }
                            end.extend_from_slice(b"\r\n");
                            self.pending = Bytes::from(end);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Takes the next bytes of the HTTP/1.1 response.
    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let leftover;
        let mut body = data;
        if let Out::Head(head, _) = &mut self.out {
            head.extend_from_slice(data);
            match self.start_response()? {
                None => return Ok(()),
                Some(rest) => leftover = rest,
            }
            body = &leftover;
        }
        self.body(body).await
    }

    /// Once the head has come whole (interim 1xx heads skipped): sends the
    /// HEADERS frame and returns the body bytes that came after it.
    fn start_response(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Out::Head(head, respond) = &mut self.out else {
            return Ok(Some(Vec::new()));
        };
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 100];
            let mut parsed = httparse::Response::new(&mut fields);
            let used = match parsed.parse(head) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(broken("the response head does not parse")),
            };
            let status = parsed.code.unwrap_or(502);
            if (100..200).contains(&status) {
                // Interim answers are not passed on.
                head.drain(..used);
                continue;
            }
            if self.grpc
                && status != 200
                && !parsed
                    .headers
                    .iter()
                    .any(|f| f.name.eq_ignore_ascii_case("grpc-status"))
            {
                // A gateway answer (or an upstream's that is not gRPC), as the
                // status a gRPC client reads.
                let length = parsed
                    .headers
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|f| std::str::from_utf8(f.value).ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let text = grpc::message(parsed.reason, &head[used..], length);
                let Some(mut respond) = respond.take() else {
                    return Err(broken("the response was sent"));
                };
                respond
                    .send_response(grpc::trailers_only(status, &text), true)
                    .map_err(io::Error::other)?;
                self.out = Out::Done;
                return Ok(Some(Vec::new()));
            }
            let mut response = http::Response::builder().status(status);
            let mut length = None;
            let mut chunked = false;
            for f in parsed.headers.iter() {
                let name = f.name.to_ascii_lowercase();
                if name == "content-length" {
                    length = std::str::from_utf8(f.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok());
                }
                if name == "transfer-encoding" {
                    chunked = true;
                }
                if CONNECTION_SPECIFIC.contains(&name.as_str()) || name == "te" {
                    continue;
                }
                response = response.header(name, f.value);
            }
            let Ok(response) = response.body(()) else {
                return Err(broken("the response head does not translate"));
            };
            let no_body = self.head_request || status == 204 || status == 304 || length == Some(0);
            let Some(mut respond) = respond.take() else {
                return Err(broken("the response was sent"));
            };
            let send = respond
                .send_response(response, no_body)
                .map_err(io::Error::other)?;
            let rest = head.split_off(used);
            self.out = if no_body {
                Out::Done
            } else if chunked {
                Out::Body(send, OutBody::Framed(Framing::chunked()))
            } else if let Some(n) = length {
                Out::Body(send, OutBody::Framed(Framing::Length(n)))
            } else {
                Out::Body(send, OutBody::Close)
            };
            return Ok(Some(rest));
        }
    }

    /// Response body bytes, as DATA frames.
    async fn body(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let Out::Body(send, body) = &mut self.out else {
            return Ok(());
        };
        match body {
            OutBody::Framed(framing) => {
                if send_body(send, framing, data, &mut self.waiting).await? {
                    self.out = Out::Done;
                }
            }
            OutBody::Close => send_data(send, data, false, &mut self.waiting).await?,
        }
        Ok(())
    }

    /// Resolves when the client resets the stream (or it ends otherwise)
    /// before the response has begun; pending for good once it has.
    pub(crate) async fn reset(&mut self) {
        poll_fn(|cx| match &mut self.out {
            Out::Head(_, Some(respond)) => respond.poll_reset(cx).map(|_| ()),
            _ => Poll::Pending,
        })
        .await
    }

    /// The pipeline is done with the stream: a response cut short is reset,
    /// a close-delimited one ends.
    pub(crate) fn finish(&mut self) {
        if std::mem::take(&mut self.waiting) {
            // The send deadline passed with the client's window shut.
            self.wire.trip(Abuse::Stalled);
        }
        match std::mem::replace(&mut self.out, Out::Done) {
            Out::Done => {}
            Out::Head(_, Some(mut respond)) => respond.send_reset(h2::Reason::INTERNAL_ERROR),
            Out::Head(_, None) => {}
            Out::Body(mut send, OutBody::Close) => {
                let _ = send.send_data(Bytes::new(), true);
            }
            Out::Body(mut send, _) => send.send_reset(h2::Reason::INTERNAL_ERROR),
        }
    }
}

/// Sends `data` as DATA frames as the peer's window allows.
/// `waiting` is set while the peer's window is closed: a write cancelled
/// then (by the pipeline's send deadline) was stalled by the client.
pub(super) async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: &[u8],
    end: bool,
    waiting: &mut bool,
) -> io::Result<()> {
    if data.is_empty() {
        if end {
            send.send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        *waiting = true;
        let capacity = poll_fn(|cx| send.poll_capacity(cx)).await;
        *waiting = false;
        let n = match capacity {
            Some(Ok(n)) => n.min(data.len()),
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => return Err(broken("the stream closed")),
        };
        if n == 0 {
            continue;
        }
        let last = end && n == data.len();
        send.send_data(Bytes::copy_from_slice(&data[..n]), last)
            .map_err(io::Error::other)?;
        data = &data[n..];
    }
    Ok(())
}
