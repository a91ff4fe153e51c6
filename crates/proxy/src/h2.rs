//! Downstream HTTP/2: the `h2` crate speaks the protocol over monoio's
//! poll-io socket; each stream becomes one HTTP/1.1 request that runs
//! through the same pipeline as any other (routing, filters, limits,
//! retries, metrics, logs), so nothing above the codec knows the protocol.
//!
//! A stream's request head is translated strictly (RFC 9113 §8): fields a
//! downgrade could abuse are refused with a stream reset, never copied into
//! the HTTP/1.1 head. The pipeline reads the body and writes the response
//! through [`StreamIo`], which turns DATA frames into a body (chunked when
//! the client gave no length) and the HTTP/1.1 response back into HEADERS
//! and DATA frames, within the stream's flow-control window.

use crate::request::{Client, Next};
use crate::shard::Shard;
use crate::stream::Transport;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use shardgate_http::ChunkedDecoder;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams a client may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams a client may open and reset before they are accepted (Rapid
/// Reset, CVE-2023-44487), and streams it may make the gateway reset.
const MAX_PENDING_RESETS: usize = 32;
const MAX_ERROR_RESETS: usize = 256;

/// Reads a new connection's first bytes: `Ok(true)` when they are the
/// HTTP/2 preface (then serve it with [`serve`]), `Ok(false)` when they
/// are anything else (HTTP/1.1), with what was read in `buf` either way.
pub(crate) async fn sniff(shard: &Shard, client: &mut Client, buf: &mut Vec<u8>) -> bool {
    let deadline = shard.timers.now() + shard.timeouts().request_header;
    loop {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return false;
        }
        if n == PREFACE.len() {
            return true;
        }
        let (r, b) = crate::io::read_more(
            &shard.timers,
            &mut client.stream,
            std::mem::take(buf),
            deadline,
        )
        .await;
        *buf = b;
        // A close or a timeout: the HTTP/1.1 path answers what there is.
        if !matches!(r, Ok(n) if n > 0) {
            return false;
        }
    }
}

/// The socket, with the bytes already read from it served first.
struct Rewind {
    pre: Vec<u8>,
    at: usize,
    io: monoio::net::tcp::stream_poll::TcpStreamPoll,
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.pre.len() {
            let n = (self.pre.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.pre[at..at + n]);
            self.at += n;
            if self.at == self.pre.len() {
                self.pre = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves an HTTP/2 connection whose first bytes (the preface, and maybe
/// more) are in `read`. The caller counted the connection open and counts
/// it closed when this returns.
pub(crate) async fn serve(shard: Rc<Shard>, client: Client, read: Vec<u8>) {
    let Client {
        stream,
        addr,
        ip,
        listener,
    } = client;
    let Ok(tcp) = stream.take_plain() else {
        return;
    };
    let io = match tcp.try_into_poll_io() {
        Ok(io) => io,
        Err((e, _)) => {
            log::debug!("shard {}: HTTP/2 from {addr}: {e}", shard.id);
            return;
        }
    };
    let max_header_list = u32::try_from(shard.snapshot().limits.max_head).unwrap_or(u32::MAX);
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
        .max_header_list_size(max_header_list)
        .max_send_buffer_size(64 * 1024)
        .handshake::<_, Bytes>(Rewind {
            pre: read,
            at: 0,
            io,
        });
    let deadline = shard.timers.now() + shard.timeouts().request_header;
    let mut conn = match shard.timers.within(deadline, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            log::debug!("shard {}: HTTP/2 handshake from {addr}: {e}", shard.id);
            return;
        }
        Err(_) => return,
    };
    let mut draining = false;
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        // A connection with no stream open for the idle timeout is closed
        // with GOAWAY, as an idle HTTP/1.1 connection is closed.
        let idle = shard.timers.now() + shard.timeouts().idle;
        let next = monoio::select! {
            biased;
            r = conn.accept() => Some(r),
            () = shard.drain.wait(), if !draining => None,
            () = idle_after(&shard, idle, &open), if !draining => None,
        };
        match next {
            // Draining or idle: GOAWAY, and the open streams finish.
            None => {
                draining = true;
                conn.graceful_shutdown();
            }
            Some(None) => break,
            Some(Some(Ok((req, respond)))) => {
                let peer = Peer { addr, ip, listener };
                open.set(open.get() + 1);
                let (shard, open) = (shard.clone(), open.clone());
                monoio::spawn(async move {
                    serve_stream(shard, req, respond, peer).await;
                    open.set(open.get() - 1);
                });
            }
            Some(Some(Err(e))) => {
                log::debug!("shard {}: HTTP/2 from {addr}: {e}", shard.id);
                break;
            }
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
        while open.get() > 0 {
            monoio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        deadline = shard.timers.now() + shard.timeouts().idle;
    }
}

/// Who a connection's streams come from.
#[derive(Clone, Copy)]
struct Peer {
    addr: std::net::IpAddr,
    ip: crate::request::IpText,
    listener: u8,
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
    };
    let client = Client {
        stream: Transport::H2(Box::new(io)),
        addr: peer.addr,
        ip: peer.ip,
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

/// The request's `content-length`: `Err` when it is not one number.
fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        let n: u64 = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or(())?;
        if found.is_some_and(|f| f != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}

/// Fields that are the connection's in HTTP/1.1 and must not appear in an
/// HTTP/2 request (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Writes the HTTP/1.1 head of an HTTP/2 request, or says why it is
/// malformed (RFC 9113 §8): connection-specific fields, `te` other than
/// `trailers`, names that are not lowercase tokens, values with CR, LF or
/// NUL, a `:path` that is not origin-form (or `*` for OPTIONS).
fn translate(
    parts: &http::request::Parts,
    framing: &InBody,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let method = parts.method.as_str();
    if parts.method == http::Method::CONNECT {
        return Err("CONNECT is not proxied");
    }
    let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let origin_form = path.starts_with('/');
    let asterisk = path == "*" && parts.method == http::Method::OPTIONS;
    if !(origin_form || asterisk) {
        return Err(":path is not origin-form");
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(":path has spaces or control characters");
    }
    let authority = parts.uri.authority().map(|a| a.as_str());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let value_ok = |v: &[u8]| !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0);
    match authority {
        Some(a) => {
            if !value_ok(a.as_bytes()) {
                return Err(":authority has CR, LF or NUL");
            }
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None if parts.headers.contains_key(http::header::HOST) => {}
        None => return Err("no :authority and no host"),
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        let v = value.as_bytes();
        if n.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("an uppercase field name");
        }
        if CONNECTION_SPECIFIC.contains(&n) {
            return Err("a connection-specific field");
        }
        if n == "te" && !v.eq_ignore_ascii_case(b"trailers") {
            return Err("te other than trailers");
        }
        if !value_ok(v) {
            return Err("a field value with CR, LF or NUL");
        }
        // The :authority is the host; a host field beside it is dropped.
        if n == "host" && authority.is_some() {
            continue;
        }
        // Cookie crumbs are joined into one field (RFC 9113 §8.2.3).
        if n == "cookie" {
            cookies.push(v);
            continue;
        }
        if n == "te" {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !cookies.is_empty() {
        out.extend_from_slice(b"cookie: ");
        for (i, c) in cookies.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(c);
        }
        out.extend_from_slice(b"\r\n");
    }
    if matches!(framing, InBody::Chunked) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// How the request body reaches the pipeline.
enum InBody {
    None,
    /// As the DATA frames carry it, which must add up to the length.
    Length(u64),
    /// Chunked (the client gave no length).
    Chunked,
}

/// Where the HTTP/1.1 response the pipeline writes is in its translation.
enum Out {
    /// Collecting the head; the stream's response handle.
    Head(Vec<u8>, Option<SendResponse<Bytes>>),
    Body(SendStream<Bytes>, OutBody),
    Done,
}

enum OutBody {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    /// Until the pipeline closes the stream.
    Close,
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
                        InBody::Chunked => self.pending = Bytes::from_static(b"0\r\n\r\n"),
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
                let decoder = ChunkedDecoder::new(64 * 1024, None);
                Out::Body(send, OutBody::Chunked(Box::new(decoder)))
            } else if let Some(n) = length {
                Out::Body(send, OutBody::Length(n))
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
            OutBody::Length(left) => {
                let n = (data.len() as u64).min(*left) as usize;
                *left -= n as u64;
                let end = *left == 0;
                send_data(send, &data[..n], end).await?;
                if end {
                    self.out = Out::Done;
                }
            }
            OutBody::Chunked(decoder) => {
                let mut ranges = Vec::new();
                let progress = decoder
                    .feed(data, |r| ranges.push(r))
                    .map_err(|_| broken("bad chunked response"))?;
                for r in ranges {
                    send_data(send, &data[r], false).await?;
                }
                if progress.done {
                    send_data(send, &[], true).await?;
                    self.out = Out::Done;
                }
            }
            OutBody::Close => send_data(send, data, false).await?,
        }
        Ok(())
    }

    /// The pipeline is done with the stream: a response cut short is reset,
    /// a close-delimited one ends.
    pub(crate) fn finish(&mut self) {
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
async fn send_data(send: &mut SendStream<Bytes>, mut data: &[u8], end: bool) -> io::Result<()> {
    if data.is_empty() {
        if end {
            send.send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let capacity = poll_fn(|cx| send.poll_capacity(cx)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, fields: &[(&str, &[u8])]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in fields {
            b = b.header(*n, http::HeaderValue::from_bytes(v).unwrap());
        }
        b.body(()).unwrap().into_parts().0
    }

    fn head(p: &http::request::Parts, framing: InBody) -> Result<String, &'static str> {
        let mut out = Vec::new();
        translate(p, &framing, &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_request_becomes_a_strict_http1_head() {
        let p = parts(
            "POST",
            "https://api.test/orders?id=7",
            &[
                ("cookie", b"a=1"),
                ("x-id", b"42"),
                ("cookie", b"b=2"),
                ("te", b"trailers"),
                ("host", b"other.test"),
            ],
        );
        let h = head(&p, InBody::Chunked).unwrap();
        assert!(
            h.starts_with("POST /orders?id=7 HTTP/1.1\r\nhost: api.test\r\n"),
            "{h}"
        );
        assert!(h.contains("cookie: a=1; b=2\r\n"), "crumbs joined: {h}");
        assert!(h.contains("x-id: 42\r\n"));
        assert!(!h.contains("other.test"), ":authority wins over host");
        assert!(!h.contains("te:"), "te: trailers is the hop's");
        assert!(h.ends_with("transfer-encoding: chunked\r\n\r\n"));
        let p = parts("OPTIONS", "*", &[("host", b"a")]);
        assert!(
            head(&p, InBody::None)
                .unwrap()
                .starts_with("OPTIONS * HTTP/1.1\r\n")
        );
    }

    #[test]
    fn downgrade_attacks_are_refused() {
        let ok = "https://a.test/x";
        type Fields<'a> = &'a [(&'a str, &'a [u8])];
        let cases: &[(&str, &str, Fields<'_>, &str)] = &[
            (
                "GET",
                ok,
                &[("connection", b"close")],
                "connection-specific",
            ),
            ("GET", ok, &[("keep-alive", b"1")], "connection-specific"),
            (
                "GET",
                ok,
                &[("proxy-connection", b"x")],
                "connection-specific",
            ),
            (
                "GET",
                ok,
                &[("upgrade", b"websocket")],
                "connection-specific",
            ),
            (
                "POST",
                ok,
                &[("transfer-encoding", b"chunked")],
                "connection-specific",
            ),
            ("GET", ok, &[("te", b"gzip")], "te other than trailers"),
            ("CONNECT", "a.test:443", &[], "CONNECT"),
        ];
        for (method, uri, fields, why) in cases {
            let p = parts(method, uri, fields);
            let e = head(&p, InBody::None).expect_err(why);
            assert!(e.contains(why), "{method} {uri} {fields:?}: {e}");
        }
        // CR, LF and NUL in values, and uppercase names, never get this far: h2's HPACK
        // decoder builds fields with the checked constructors, which refuse them (a
        // malformed request; translate checks again).
        for bad in [&b"1\r\nx-b: 2"[..], b"1\nx", b"1\0"] {
            assert!(http::HeaderValue::from_bytes(bad).is_err());
        }
        assert!(http::HeaderName::from_lowercase(b"X-Upper").is_err());
        // Nor does a :path with a space: h2 builds the URI with the checked parser.
        assert!("/x y".parse::<http::uri::PathAndQuery>().is_err());
    }

    #[test]
    fn content_length_must_be_one_number() {
        let p = |v: &[&[u8]]| {
            let mut h = http::HeaderMap::new();
            for x in v {
                h.append("content-length", http::HeaderValue::from_bytes(x).unwrap());
            }
            content_length(&h)
        };
        assert_eq!(p(&[]), Ok(None));
        assert_eq!(p(&[b"12"]), Ok(Some(12)));
        assert_eq!(p(&[b"12", b"12"]), Ok(Some(12)));
        assert_eq!(p(&[b"12", b"13"]), Err(()));
        assert_eq!(p(&[b"1 2"]), Err(()));
        assert_eq!(p(&[b"-1"]), Err(()));
    }
}
