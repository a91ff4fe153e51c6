//! Upstream HTTP/2 (a group with `protocol = "h2"` or `"h2c"`). Each shard
//! keeps its own multiplexed connections per endpoint ([`Conns`]); a
//! request takes a stream on one with room under the peer's
//! SETTINGS_MAX_CONCURRENT_STREAMS, or a new connection when none has.
//!
//! The pipeline speaks HTTP/1.1 to its upstream transport, so [`UpStream`]
//! is the mirror of the downstream `StreamIo`: it parses the HTTP/1.1
//! request head the pipeline writes into HEADERS (`te: trailers` added,
//! connection-specific fields dropped), its body (chunked or by length)
//! into DATA and a chunked trailer section into trailing HEADERS; and it
//! gives the response back as HTTP/1.1: by length when the upstream sent
//! one, chunked otherwise, with the upstream's trailers as the chunked
//! trailer section.

use super::wire::Wire;
use super::{Framing, send_body};
use crate::pool::EndpointId;
use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One multiplexed connection to an endpoint.
pub(crate) struct Conn {
    send: SendRequest<Bytes>,
    /// Streams this shard has open on it.
    streams: Cell<usize>,
    /// When the last stream ended (for closing an idle connection).
    idle_since: Cell<Instant>,
    /// Its driver ended: GOAWAY, an error, or the peer closed.
    closed: Cell<bool>,
}

impl Conn {
    fn has_room(&self) -> bool {
        !self.closed.get() && self.streams.get() < self.send.current_max_send_streams()
    }
}

/// A shard's upstream HTTP/2 connections, by endpoint.
#[derive(Default)]
pub(crate) struct Conns {
    by_endpoint: RefCell<HashMap<EndpointId, Vec<Rc<Conn>>>>,
    /// Endpoints a connection is being opened to, with the requests
    /// waiting for it: a burst of requests opens one connection, not one
    /// each.
    opening: RefCell<HashMap<EndpointId, Vec<std::task::Waker>>>,
}

impl Conns {
    /// A connection to `ep` with a stream to spare.
    pub(crate) fn pick(&self, ep: EndpointId) -> Option<Rc<Conn>> {
        let mut all = self.by_endpoint.borrow_mut();
        let list = all.get_mut(&ep)?;
        list.retain(|c| !c.closed.get());
        list.iter().find(|c| c.has_room()).cloned()
    }

    /// Whether a connection to `ep` is being opened; if so, waits until
    /// that ends (opened or failed).
    pub(crate) async fn wait_opening(&self, ep: EndpointId) -> bool {
        if !self.opening.borrow().contains_key(&ep) {
            return false;
        }
        // Once woken (or polled again), the caller looks again: a pending
        // result must always leave a waker behind.
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return std::task::Poll::Ready(());
            }
            match self.opening.borrow_mut().get_mut(&ep) {
                Some(waiters) => {
                    waiters.push(cx.waker().clone());
                    registered = true;
                    std::task::Poll::Pending
                }
                None => std::task::Poll::Ready(()),
            }
        })
        .await;
        true
    }

    /// Marks a connection to `ep` as being opened, until the guard drops.
    pub(crate) fn opening(&self, ep: EndpointId) -> Opening<'_> {
        self.opening.borrow_mut().entry(ep).or_default();
        Opening(self, ep)
    }

    fn end_opening(&self, ep: EndpointId) {
        let waiters = self.opening.borrow_mut().remove(&ep);
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }

    fn add(&self, ep: EndpointId, conn: Rc<Conn>) {
        self.by_endpoint
            .borrow_mut()
            .entry(ep)
            .or_default()
            .push(conn);
    }
}

/// While a connection is being opened (see [`Conns::opening`]).
pub(crate) struct Opening<'a>(&'a Conns, EndpointId);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.end_opening(self.1);
    }
}

/// h2's budget for small DATA frames buffered unread (each costs it 256
/// bytes less its payload). Its default (about 130 tiny frames) is meant for
/// peers that may be hostile; an upstream streaming small gRPC messages
/// faster than the client reads them (1,000 of 5 bytes, in the tests) would
/// trip it. At this size the flow-control window bounds the frames instead
/// (65,535 at most, at the default 64 KiB).
const UPSTREAM_DATA_FRAME_BUDGET: usize = 16 << 20;

/// Streams asked of a peer before it says how many it allows.
const INITIAL_MAX_STREAMS: usize = 100;

/// TLS to an endpoint: the group's client configuration and the name the
/// endpoint is verified as.
type TlsTo<'a> = (
    &'a std::sync::Arc<rustls::ClientConfig>,
    &'a rustls_pki_types::ServerName<'static>,
);

/// The HTTP/2 handshake over `tcp` (after TLS with ALPN `h2` when `tls`).
async fn handshake(
    tcp: monoio::net::TcpStream,
    tls: Option<TlsTo<'_>>,
) -> io::Result<(SendRequest<Bytes>, h2::client::Connection<Wire, Bytes>)> {
    let wire = match tls {
        None => Wire::plain(poll_io(tcp)?, Vec::new(), None),
        Some((config, name)) => {
            let s = crate::stream::TlsStream::connect(tcp, config.clone(), name.clone()).await?;
            if !s.chose_h2() {
                return Err(io::Error::other("the upstream did not choose h2 (ALPN)"));
            }
            let (tcp, conn, records, _) = s.into_parts();
            Wire::tls(poll_io(tcp)?, conn, records, None)
        }
    };
    h2::client::Builder::new()
        .initial_max_send_streams(INITIAL_MAX_STREAMS)
        .max_send_buffer_size(64 * 1024)
        .data_frame_budget(UPSTREAM_DATA_FRAME_BUDGET)
        .handshake::<_, Bytes>(wire)
        .await
        .map_err(io::Error::other)
}

/// Opens an HTTP/2 connection to `ep` over `tcp` (TLS when `tls`; the
/// caller bounds the time) and adds it to `conns`. Its driver runs as a
/// task of its own until the peer ends it, or until it has carried no
/// stream for `idle`.
pub(crate) async fn open(
    conns: &Conns,
    ep: EndpointId,
    tcp: monoio::net::TcpStream,
    tls: Option<TlsTo<'_>>,
    idle: Duration,
) -> io::Result<Rc<Conn>> {
    let (send, mut connection) = handshake(tcp, tls).await?;
    let mut ping = connection.ping_pong();
    let conn = Rc::new(Conn {
        send,
        streams: Cell::new(0),
        idle_since: Cell::new(Instant::now()),
        closed: Cell::new(false),
    });
    let watched = conn.clone();
    monoio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        loop {
            monoio::select! {
                r = &mut connection => {
                    if let Err(e) = r {
                        log::debug!("upstream HTTP/2 connection ended: {e}");
                    }
                    break;
                }
                () = monoio::time::sleep(idle) => {
                    let c = &watched;
                    if c.streams.get() == 0 && c.idle_since.get().elapsed() >= idle {
                        break;
                    }
                }
            }
        }
        watched.closed.set(true);
    });
    // The peer's SETTINGS come before its answer to a PING: once it is in,
    // its stream limit is known, and requests waiting on this connection
    // take no more streams than it allows.
    if let Some(p) = ping.as_mut() {
        p.ping(h2::Ping::opaque()).await.map_err(io::Error::other)?;
    }
    conns.add(ep, conn.clone());
    Ok(conn)
}

/// A health probe over HTTP/2: `GET path` on a new connection, and the
/// status of the answer (the caller bounds the time).
pub(crate) async fn probe(
    tcp: monoio::net::TcpStream,
    tls: Option<TlsTo<'_>>,
    authority: &str,
    path: &str,
) -> io::Result<u16> {
    let (send, connection) = handshake(tcp, tls).await?;
    let driver = monoio::spawn(connection);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let request = http::Request::get(format!("{scheme}://{authority}{path}"))
        .header("user-agent", "shardgate-health")
        .body(())
        .map_err(io::Error::other)?;
    let mut send = send.ready().await.map_err(io::Error::other)?;
    let (response, _) = send.send_request(request, true).map_err(io::Error::other)?;
    let status = response.await.map_err(io::Error::other)?.status().as_u16();
    drop(send);
    drop(driver);
    Ok(status)
}

fn poll_io(
    tcp: monoio::net::TcpStream,
) -> io::Result<monoio::net::tcp::stream_poll::TcpStreamPoll> {
    tcp.try_into_poll_io().map_err(|(e, _)| e)
}

/// How the request body reaches the stream.
enum ReqBody {
    /// The head is still coming (in `UpStream::head`).
    Head,
    Framed(Framing),
    Done,
}

/// Where the response is in its translation to HTTP/1.1.
enum Stage {
    Head,
    Body { chunked: bool, left: Option<u64> },
    Done,
}

/// One request on an upstream HTTP/2 connection, as the pipeline's
/// upstream transport.
pub(crate) struct UpStream {
    conn: Rc<Conn>,
    scheme: &'static str,
    head: Vec<u8>,
    req: ReqBody,
    send: Option<SendStream<Bytes>>,
    response: Option<ResponseFuture>,
    recv: Option<RecvStream>,
    head_request: bool,
    out: Bytes,
    stage: Stage,
    waiting: bool,
    /// The peer refused the stream (REFUSED_STREAM, or past its GOAWAY):
    /// it was not processed, and may go again anywhere.
    pub(crate) refused: bool,
}

impl Drop for UpStream {
    fn drop(&mut self) {
        let c = &self.conn;
        c.streams.set(c.streams.get().saturating_sub(1));
        c.idle_since.set(Instant::now());
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A request head, parsed and translated (see [`UpStream::parse_head`]).
struct Head {
    request: http::Request<()>,
    /// The HTTP/1.1 head's length.
    used: usize,
    /// Its `content-length`.
    length: Option<u64>,
    /// Its body is chunked.
    chunked: bool,
}

impl UpStream {
    pub(crate) fn new(conn: Rc<Conn>, tls: bool) -> UpStream {
        conn.streams.set(conn.streams.get() + 1);
        UpStream {
            conn,
            scheme: if tls { "https" } else { "http" },
            head: Vec::new(),
            req: ReqBody::Head,
            send: None,
            response: None,
            recv: None,
            head_request: false,
            out: Bytes::new(),
            stage: Stage::Head,
            waiting: false,
            refused: false,
        }
    }

    fn fail(&mut self, e: h2::Error) -> io::Error {
        let unprocessed =
            e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote());
        if unprocessed && matches!(self.stage, Stage::Head) {
            self.refused = true;
        }
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }

    /// Takes the next bytes of the HTTP/1.1 request.
    pub(crate) async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if matches!(self.req, ReqBody::Head) {
            self.head.extend_from_slice(data);
            let Some(used) = self.start().await? else {
                return Ok(());
            };
            let rest = self.head.split_off(used);
            self.head = Vec::new();
            return self.body(&rest).await;
        }
        self.body(data).await
    }

    /// Once the head is whole: sends HEADERS and returns the head's length.
    async fn start(&mut self) -> io::Result<Option<usize>> {
        // Parsed apart: the 4 KiB of field slots are not kept across the
        // wait below, which would widen every write future of a request.
        let Some(Head {
            request,
            used,
            length,
            chunked,
        }) = self.parse_head()?
        else {
            return Ok(None);
        };
        let end = !chunked && length.unwrap_or(0) == 0;
        let mut send = self.conn.send.clone();
        if let Err(e) = poll_fn(|cx| send.poll_ready(cx)).await {
            return Err(self.fail(e));
        }
        let (response, stream) = match send.send_request(request, end) {
            Ok(x) => x,
            Err(e) => return Err(self.fail(e)),
        };
        self.response = Some(response);
        self.send = Some(stream);
        self.req = if end {
            ReqBody::Done
        } else if chunked {
            ReqBody::Framed(Framing::chunked())
        } else {
            ReqBody::Framed(Framing::Length(length.unwrap_or(0)))
        };
        Ok(Some(used))
    }

    /// The HTTP/2 request the HTTP/1.1 head in `self.head` becomes;
    /// `None` while the head is partial.
    fn parse_head(&mut self) -> io::Result<Option<Head>> {
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut fields);
        let used = match parsed.parse(&self.head) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(bad("the request head does not parse")),
        };
        let method = parsed.method.unwrap_or("GET");
        self.head_request = method == "HEAD";
        let path = parsed.path.unwrap_or("/");
        let mut host = None;
        let mut length = None;
        let mut chunked = false;
        let mut request = http::Request::builder().method(method);
        for f in parsed.headers.iter() {
            let name = f.name.to_ascii_lowercase();
            match name.as_str() {
                "host" => host = Some(f.value),
                "transfer-encoding" => chunked = true,
                "connection" | "keep-alive" | "proxy-connection" | "upgrade" | "te" => {}
                _ => {
                    if name == "content-length" {
                        length = std::str::from_utf8(f.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                    }
                    request = request.header(name, f.value);
                }
            }
        }
        let authority = host
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| bad("the request has no host"))?;
        let uri = format!("{}://{authority}{path}", self.scheme);
        let request = request
            .uri(uri)
            .header("te", "trailers")
            .body(())
            .map_err(|_| bad("the request head does not translate"))?;
        Ok(Some(Head {
            request,
            used,
            length,
            chunked,
        }))
    }

    /// Request body bytes as DATA frames (a chunked trailer section as
    /// trailing HEADERS).
    async fn body(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(send) = self.send.as_mut() else {
            return Ok(());
        };
        if let ReqBody::Framed(framing) = &mut self.req
            && send_body(send, framing, data, &mut self.waiting).await?
        {
            self.req = ReqBody::Done;
        }
        Ok(())
    }

    /// The next bytes of the HTTP/1.1 response.
    pub(crate) async fn read_at(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if !self.out.is_empty() {
                let n = self.out.len().min(buf.capacity() - buf.len());
                buf.extend_from_slice(&self.out[..n]);
                let _ = self.out.split_to(n);
                return (Ok(n), buf);
            }
            let next = match self.stage {
                Stage::Done => return (Ok(0), buf),
                Stage::Head => self.response_head().await,
                Stage::Body { .. } => self.response_body().await,
            };
            if let Err(e) = next {
                return (Err(e), buf);
            }
        }
    }

    async fn response_head(&mut self) -> io::Result<()> {
        let Some(response) = self.response.as_mut() else {
            return Err(bad("no request was sent"));
        };
        let response = match response.await {
            Ok(r) => r,
            Err(e) => return Err(self.fail(e)),
        };
        self.response = None;
        let (parts, recv) = response.into_parts();
        let status = parts.status;
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        head.extend_from_slice(b"\r\n");
        let mut left = None;
        for (name, value) in &parts.headers {
            if name == http::header::CONTENT_LENGTH {
                left = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        let bodiless = self.head_request || status == http::StatusCode::NO_CONTENT || status == 304;
        let ended = recv.is_end_stream();
        let chunked = !bodiless && left.is_none() && !ended;
        if chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        } else if ended && left.is_none() && !bodiless {
            // HEADERS that end the stream (gRPC's Trailers-Only among them).
            head.extend_from_slice(b"content-length: 0\r\n");
        }
        head.extend_from_slice(b"\r\n");
        self.out = Bytes::from(head);
        self.stage = if bodiless || ended || left == Some(0) {
            Stage::Done
        } else {
            Stage::Body { chunked, left }
        };
        self.recv = Some(recv);
        Ok(())
    }

    async fn response_body(&mut self) -> io::Result<()> {
        let Stage::Body { chunked, left } = self.stage else {
            return Ok(());
        };
        let Some(recv) = self.recv.as_mut() else {
            return Err(bad("no response"));
        };
        match poll_fn(|cx| recv.poll_data(cx)).await {
            Some(Ok(data)) => {
                let _ = recv.flow_control().release_capacity(data.len());
                if chunked {
                    if !data.is_empty() {
                        let mut framed = Vec::with_capacity(data.len() + 12);
                        framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        framed.extend_from_slice(&data);
                        framed.extend_from_slice(b"\r\n");
                        self.out = Bytes::from(framed);
                    }
                } else {
                    let n = data.len() as u64;
                    let rest = left.map(|l| l.saturating_sub(n));
                    self.stage = if rest == Some(0) {
                        Stage::Done
                    } else {
                        Stage::Body {
                            chunked,
                            left: rest,
                        }
                    };
                    self.out = data;
                }
                Ok(())
            }
            Some(Err(e)) => Err(io::Error::new(io::ErrorKind::ConnectionReset, e)),
            None => {
                self.stage = Stage::Done;
                if !chunked {
                    return match left {
                        Some(n) if n > 0 => Err(bad("the response ended short of its length")),
                        _ => Ok(()),
                    };
                }
                let trailers = poll_fn(|cx| recv.poll_trailers(cx))
                    .await
                    .map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, e))?;
                let mut end = b"0\r\n".to_vec();
                for (name, value) in trailers.iter().flatten() {
                    end.extend_from_slice(name.as_str().as_bytes());
                    end.extend_from_slice(b": ");
                    end.extend_from_slice(value.as_bytes());
                    end.extend_from_slice(b"\r\n");
                }
                end.extend_from_slice(b"\r\n");
                self.out = Bytes::from(end);
                Ok(())
            }
        }
    }
}

/// The fields of an HTTP/1.1 trailer section (`name: value` lines); lines
/// that are not fields, and fields HTTP/2 forbids, are left out.
pub(super) fn parse_fields(section: &[u8]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].to_ascii_lowercase();
        if super::CONNECTION_SPECIFIC.contains(&std::str::from_utf8(&name).unwrap_or("")) {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(&name),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}
