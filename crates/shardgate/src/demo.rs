//! `shardgate` with no arguments: the gateway on 127.0.0.1:8080 with the
//! embedded `configs/default.toml`, two demo upstreams that echo what they
//! received as JSON, and a banner of commands to try.

use shardgate_http::{BodyFraming, ChunkedDecoder, Limits, empty_headers, parse_request};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_CONFIG: &str = include_str!("../../../configs/default.toml");
const UPSTREAMS: [(&str, &str); 3] = [
    ("blue", "127.0.0.1:9001"),
    ("green", "127.0.0.1:9002"),
    ("flaky", "127.0.0.1:9003"),
];

pub fn run() -> ExitCode {
    let config = match shardgate_config::from_toml(DEFAULT_CONFIG) {
        Ok(c) => c,
        Err(e) => {
            eprint!("built-in configuration: {e}");
            return ExitCode::from(1);
        }
    };
    for (name, addr) in UPSTREAMS {
        let listener = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                log::error!("demo upstream {name} cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        std::thread::Builder::new()
            .name(format!("demo-{name}"))
            .spawn(move || accept(listener, name))
            .expect("spawning a demo thread");
    }
    let options = shardgate_proxy::GatewayOptions {
        config_hash: shardgate_proxy::config_hash(DEFAULT_CONFIG),
        ..Default::default()
    };
    crate::serve(config, options, Some(&|g| print_banner(g.local_addrs()[0])))
}

fn print_banner(addr: std::net::SocketAddr) {
    let base = format!("http://{addr}");
    println!(
        "\nShardgate demo on {base}: two demo upstreams, blue (127.0.0.1:9001) and green \
         (127.0.0.1:9002), echo back what reached them.\n\nTry:\n\
         \x20 curl -i {base}/api/hello                      # repeat it: blue and green take turns\n\
         \x20 curl -i {base}/status                         # GET-only route to blue\n\
         \x20 curl -i -X POST {base}/status                 # 405 with an Allow header\n\
         \x20 curl -i -H 'Host: green.localhost' {base}/    # host routing: always green\n\
         \x20 curl -i {base}/nowhere                        # 404: no route\n\
         \x20 curl -i -d 'hello' {base}/api/echo            # a body goes through\n\
         \x20 for i in $(seq 20); do curl -s {base}/canary | grep -o 'blue\\|green'; done | sort | uniq -c\n\
         \x20                                               # canary split: about 14 blue, 6 green\n\
         \x20 for i in $(seq 12); do curl -s -o /dev/null -w '%{{http_code}} ' {base}/flaky; done; echo\n\
         \x20                                               # 500s from the flaky upstream, then 503s: the breaker opened\n\
         \nCtrl-C stops it.\n"
    );
}

fn accept(listener: TcpListener, name: &'static str) {
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
