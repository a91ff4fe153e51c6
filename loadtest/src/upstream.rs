//! `loadtest upstream`: a fixed-response HTTP/1.1 server to stand behind a proxy in benchmarks.
//!
//! Thread-per-core: each worker owns an `SO_REUSEPORT` listener on the same address (bound up
//! front so port 0 resolves once). Keep-alive and pipelining: every complete request in a read
//! gets its response appended, and all of them go out in one write.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cli::{Driver, UpstreamOpts};
use crate::response::{Body, BodyStep, body_from_headers, keep_alive};
use crate::rt;

/// Read buffer per connection; grows up to [`MAX_REQUEST_HEAD`] for large heads.
const READ_BUF: usize = 8 * 1024;
const MAX_REQUEST_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
const LISTEN_BACKLOG: i32 = 4096;

/// The response variants, prebuilt once per worker.
struct Responses {
    /// HTTP/1.1 keep-alive (no Connection header).
    keep: Rc<Vec<u8>>,
    /// With `Connection: keep-alive`, for HTTP/1.0 clients that asked for it.
    keep10: Vec<u8>,
    /// With `Connection: close`.
    close: Vec<u8>,
    /// Length of the head in `keep` (for HEAD requests).
    keep_head_len: usize,
    bad_request: &'static [u8],
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Builds one response: head (with `connection` header if any) and body.
fn build(opts: &UpstreamOpts, connection: Option<&str>) -> (Vec<u8>, usize) {
    let no_body = opts.status == 204 || opts.status == 304;
    let mut head = format!("HTTP/1.1 {} {}\r\n", opts.status, reason(opts.status));
    if !no_body {
        head.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: text/plain\r\n",
            opts.body_size
        ));
    }
    if let Some(name) = &opts.name {
        head.push_str(&format!("X-Upstream: {name}\r\n"));
    }
    if let Some(c) = connection {
        head.push_str(&format!("Connection: {c}\r\n"));
    }
    head.push_str("\r\n");
    let head_len = head.len();
    let mut out = head.into_bytes();
    if !no_body {
        // The body starts with the instance name so a plain `curl` shows who answered.
        let pattern: Vec<u8> = match &opts.name {
            Some(n) => format!("{n}\n").into_bytes(),
            None => b"x".to_vec(),
        };
        out.extend(pattern.iter().cycle().take(opts.body_size));
    }
    (out, head_len)
}

impl Responses {
    fn new(opts: &UpstreamOpts) -> Self {
        let (keep, keep_head_len) = build(opts, None);
        Responses {
            keep: Rc::new(keep),
            keep10: build(opts, Some("keep-alive")).0,
            close: build(opts, Some("close")).0,
            keep_head_len,
            bad_request:
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        }
    }
}

fn bind(addr: SocketAddr, blocking: bool) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    s.set_nonblocking(!blocking)?;
    Ok(s.into())
}

/// Runs the server until the process is killed.
pub fn run(opts: UpstreamOpts) -> Result<i32, String> {
    let addr = opts
        .listen
        .to_socket_addrs()
        .map_err(|e| format!("--listen {:?}: {e}", opts.listen))?
        .next()
        .ok_or_else(|| format!("--listen {:?}: no address", opts.listen))?;
    let driver = rt::resolve_driver(opts.driver);
    let blocking = driver == Driver::Uring;
    if addr.port() != 0 {
        // SO_REUSEPORT would let us share a port with a stray instance and silently split the
        // load with it: a plain bind first proves the port is free.
        std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr}: {e} (another instance running?)"))?;
    }
    let first = bind(addr, blocking).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = first.local_addr().map_err(|e| e.to_string())?;
    let mut listeners = vec![first];
    for _ in 1..opts.threads {
        listeners
            .push(bind(bound, blocking).map_err(|e| format!("cannot listen on {bound}: {e}"))?);
    }
    println!("listening on {bound}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut handles = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let opts = opts.clone();
        let h = rt::spawn_worker("upstream", i, driver, move || accept_loop(l, opts))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }
    for h in handles {
        h.join()
            .map_err(|_| "an upstream worker panicked".to_string())??;
    }
    Ok(0)
}

async fn accept_loop(std_listener: std::net::TcpListener, opts: UpstreamOpts) {
    let listener = match TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upstream: cannot register listener: {e}");
            return;
        }
    };
    let responses = Rc::new(Responses::new(&opts));
    let delay = opts.delay;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(serve(stream, responses.clone(), delay));
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                eprintln!("upstream: accept: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// What parsing the buffered requests produced.
struct Parsed {
    consumed: usize,
    responses: usize,
    close: bool,
}

/// Appends a response to `out` for every complete request in `buf`.
fn handle_requests(
    buf: &[u8],
    body: &mut Option<Body>,
    r: &Responses,
    out: &mut Vec<u8>,
) -> Parsed {
    let mut p = Parsed {
        consumed: 0,
        responses: 0,
        close: false,
    };
    loop {
        if let Some(b) = body {
            match b.feed(&buf[p.consumed..]) {
                Ok(BodyStep::More) => {
                    p.consumed = buf.len();
                    return p;
                }
                Ok(BodyStep::End(n)) => {
                    p.consumed += n;
                    *body = None;
                }
                Err(_) => {
                    out.extend_from_slice(r.bad_request);
                    p.close = true;
                    return p;
                }
            }
        }
        if p.consumed == buf.len() {
            return p;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[p.consumed..]) {
            Ok(httparse::Status::Complete(n)) => {
                let version = req.version.unwrap_or(1);
                let keep = keep_alive(version, req.headers);
                match body_from_headers(req.headers) {
                    Ok(Some(Body::Length(0)) | None) => {}
                    Ok(Some(b)) => *body = Some(b),
                    Err(_) => {
                        out.extend_from_slice(r.bad_request);
                        p.close = true;
                        return p;
                    }
                }
                let head_only = req.method == Some("HEAD");
                let resp: &[u8] = match (keep, version) {
                    (false, _) => &r.close,
                    (true, 0) => &r.keep10,
                    (true, _) if head_only => &r.keep[..r.keep_head_len],
                    (true, _) => &r.keep,
                };
                out.extend_from_slice(resp);
                p.consumed += n;
                p.responses += 1;
                if !keep {
                    p.close = true;
                    return p;
                }
            }
            Ok(httparse::Status::Partial) => return p,
            Err(_) => {
                out.extend_from_slice(r.bad_request);
                p.close = true;
                return p;
            }
        }
    }
}

async fn serve(mut stream: TcpStream, r: Rc<Responses>, delay: Duration) {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut body: Option<Body> = None;
    loop {
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let parsed = handle_requests(&buf, &mut body, &r, &mut out);
        if parsed.consumed == buf.len() {
            buf.clear();
        } else {
            buf.drain(..parsed.consumed);
            if buf.len() == buf.capacity() {
                if buf.capacity() >= MAX_REQUEST_HEAD {
                    return;
                }
                buf.reserve(buf.capacity());
            }
        }
        if parsed.responses > 0 || parsed.close {
            if !delay.is_zero() {
                monoio::time::sleep(delay).await;
            }
            let ok = if parsed.responses == 1 && !parsed.close && out.len() == r.keep.len() {
                // The common case: one keep-alive request; send the shared bytes as they are.
                stream.write_all(r.keep.clone()).await.0.is_ok()
            } else {
                let (res, o) = stream.write_all(std::mem::take(&mut out)).await;
                out = o;
                res.is_ok()
            };
            out.clear();
            if !ok || parsed.close {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(status: u16, body: usize, name: Option<&str>) -> UpstreamOpts {
        UpstreamOpts {
            listen: "127.0.0.1:0".into(),
            body_size: body,
            delay: Duration::ZERO,
            status,
            name: name.map(String::from),
            threads: 1,
            driver: Driver::Legacy,
        }
    }

    #[test]
    fn answers_pipelined_requests() {
        let r = Responses::new(&opts(200, 3, Some("a")));
        let mut out = Vec::new();
        let mut body = None;
        let input =
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /";
        let p = handle_requests(input, &mut body, &r, &mut out);
        assert_eq!(p.responses, 2);
        assert!(!p.close);
        assert_eq!(p.consumed, input.len() - 5);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2);
        assert!(text.contains("X-Upstream: a\r\n"));
        assert!(text.ends_with("\r\n\r\na\na"));
    }

    #[test]
    fn closes_when_asked_and_on_garbage() {
        let r = Responses::new(&opts(503, 0, None));
        let mut out = Vec::new();
        let p = handle_requests(
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            &mut None,
            &r,
            &mut out,
        );
        assert!(p.close);
        assert!(out.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(String::from_utf8_lossy(&out).contains("Connection: close"));
        out.clear();
        let p = handle_requests(b"\x00\x01garbage\r\n\r\n", &mut None, &r, &mut out);
        assert!(p.close);
        assert!(out.starts_with(b"HTTP/1.1 400"));
    }

    #[test]
    fn chunked_request_body_is_skipped() {
        let r = Responses::new(&opts(200, 0, None));
        let mut out = Vec::new();
        let mut body = None;
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
        let p = handle_requests(input, &mut body, &r, &mut out);
        assert_eq!((p.responses, p.consumed), (1, input.len()));
        assert!(body.is_none());
    }
}
