//! The demo upstreams: keep-alive HTTP/1.1 servers, one thread per
//! connection, that answer every request with a JSON description of it
//! (instance, method, path, every header as received, body length), so the
//! demo's user sees what the gateway forwarded: `x-consumer`, `x-user`,
//! `x-request-id`, `traceparent`, `x-tenant`. The instance named `flaky`
//! fails three requests in four with a 500.

use shardgate_http::{BodyFraming, ChunkedDecoder, Limits, empty_headers, parse_request};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Serves `listener` as the instance `name` until the process ends.
pub(super) fn accept(listener: TcpListener, name: &'static str) {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for stream in listener.incoming().flatten() {
        let served = served.clone();
        let _ = std::thread::Builder::new().spawn(move || {
            let _ = serve_connection(stream, name, &served);
        });
    }
}

/// A keep-alive HTTP/1.1 echo server, one thread per connection.
fn serve_connection(
    mut stream: TcpStream,
    name: &str,
    served: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = empty_headers();
        let parsed = parse_request(&buf, &mut headers, &Limits::default());
        let (head_len, body, reply) = match parsed {
            Ok(Some(req)) => (req.info.head_len, req.info.body, describe(&req, name)),
            Ok(None) => {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
            Err(e) => {
                stream.write_all(format!("HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{e}", e.to_string().len()).as_bytes())?;
                return Ok(());
            }
        };
        buf.drain(..head_len);
        let body_len = read_body(&mut stream, &mut buf, body)?;
        let reply = format!("{reply},\"body_bytes\":{body_len}}}\n");
        let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The flaky instance fails three requests in four.
        let status = if name == "flaky" && n % 4 != 3 {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Instance: {name}\r\n\r\n",
            reply.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(reply.as_bytes())?;
    }
}

/// Consumes the body from `buf` and the stream; returns its payload length.
fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, body: BodyFraming) -> std::io::Result<u64> {
    let mut chunk = [0u8; 8192];
    match body {
        BodyFraming::None => Ok(0),
        BodyFraming::Length(n) => {
            let mut left = n;
            loop {
                let take = left.min(buf.len() as u64) as usize;
                buf.drain(..take);
                left -= take as u64;
                if left == 0 {
                    return Ok(n);
                }
                let got = stream.read(&mut chunk)?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..got]);
            }
        }
        BodyFraming::Chunked => {
            let mut d = ChunkedDecoder::new(16 * 1024, None);
            loop {
                let p = d
                    .feed(buf, |_| {})
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                buf.drain(..p.consumed);
                if p.done {
                    return Ok(d.body_len());
                }
                let got = stream.read(&mut chunk)?;
                if got == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..got]);
            }
        }
    }
}

/// The JSON object (without its closing brace) describing a request.
fn describe(req: &shardgate_http::Request<'_, '_>, name: &str) -> String {
    let mut out = format!(
        "{{\"instance\":{},\"method\":{},\"path\":{},\"headers\":{{",
        json(name.as_bytes()),
        json(req.method.as_bytes()),
        json(req.path)
    );
    for (i, h) in req.headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{}:{}", json(h.name.as_bytes()), json(h.value)));
    }
    out.push('}');
    out
}

fn json(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}
