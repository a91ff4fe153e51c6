//! Mock upstreams: blocking std servers, one thread per connection, that
//! record every request exactly as it arrived and answer from a script.

use shardgate_http::{BodyFraming, ChunkedDecoder, Limits, empty_headers, parse_request};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The raw head, up to and including the blank line.
    pub head: Vec<u8>,
    /// The raw body bytes (still chunked if it was chunked).
    pub body: Vec<u8>,
    /// Which upstream connection carried it (0, 1, ... in accept order).
    pub connection: usize,
}

impl Recorded {
    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head_str().split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The request line.
    pub fn request_line(&self) -> String {
        self.head_str()
            .split("\r\n")
            .next()
            .unwrap_or("")
            .to_string()
    }
}

/// What the mock does with a request.
pub enum Script {
    /// Write these bytes; keep the connection for the next request.
    Raw(Vec<u8>),
    /// Write these bytes, then close.
    RawThenClose(Vec<u8>),
    /// Write these bytes in pieces with a pause between them, then keep going.
    Slow(Vec<Vec<u8>>, Duration),
    /// Close without answering.
    Close,
    /// Never answer; hold the connection until the peer closes it.
    Hang,
    /// Write these bytes (a `101`), then echo every byte back until EOF.
    Echo(Vec<u8>),
}

impl Script {
    /// `200 OK` with `body` and a Content-Length.
    pub fn ok(body: &str) -> Script {
        Script::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }
}

type Handler = dyn Fn(&Recorded) -> Script + Send + Sync;

/// A scripted upstream on 127.0.0.1:0. Stops accepting on drop.
pub struct MockUpstream {
    addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Every accepted connection, so `kill` can cut them.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl MockUpstream {
    pub fn start(handler: impl Fn(&Recorded) -> Script + Send + Sync + 'static) -> MockUpstream {
        MockUpstream::start_on("127.0.0.1:0".parse().expect("address"), handler)
    }

    /// Like [`MockUpstream::start`] on a given address (to bring a killed
    /// upstream back on its port).
    pub fn start_on(
        addr: SocketAddr,
        handler: impl Fn(&Recorded) -> Script + Send + Sync + 'static,
    ) -> MockUpstream {
        let listener = TcpListener::bind(addr).expect("binding a mock upstream");
        let addr = listener.local_addr().expect("mock address");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let (recorded, connections, closed, stop, open) = (
                recorded.clone(),
                connections.clone(),
                closed.clone(),
                stop.clone(),
                open.clone(),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let (Ok(mut o), Ok(c)) = (open.lock(), stream.try_clone()) {
                        o.push(c);
                    }
                    let id = connections.fetch_add(1, Ordering::AcqRel);
                    let (recorded, handler, closed) =
                        (recorded.clone(), handler.clone(), closed.clone());
                    std::thread::spawn(move || {
                        serve(stream, id, &recorded, &*handler);
                        closed.fetch_add(1, Ordering::AcqRel);
                    });
                }
            });
        }
        MockUpstream {
            addr,
            recorded,
            connections,
            closed,
            stop,
            open,
        }
    }

    /// Dies like a crashed server: every open connection is reset and the
    /// port stops accepting (connections are refused from now on).
    pub fn kill(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop, which exits
        if let Ok(open) = self.open.lock() {
            for s in open.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Answers every request with `200 OK` and `body`.
    pub fn ok(body: &'static str) -> MockUpstream {
        MockUpstream::start(move |_| Script::ok(body))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Connections that have ended so far (closed by the peer, or cut).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
    }
}

/// An address on which nothing listens (connections are refused).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding");
    l.local_addr().expect("address")
}

fn serve(mut stream: TcpStream, id: usize, recorded: &Mutex<Vec<Recorded>>, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Read one request.
        let (head_len, framing) = loop {
            let mut headers = empty_headers();
            let limits = Limits {
                max_head: 1 << 20,
                max_request_line: 1 << 20,
                ..Limits::default()
            };
            match parse_request(&buf, &mut headers, &limits) {
                Ok(Some(r)) => break (r.info.head_len, r.info.body),
                Ok(None) => {}
                Err(_) => {
                    record(recorded, std::mem::take(&mut buf), Vec::new(), id);
                    return;
                }
            }
            match read_retrying(&mut stream, &mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = buf[..head_len].to_vec();
        buf.drain(..head_len);
        let Some(body) = read_body(&mut stream, &mut buf, &mut chunk, framing) else {
            record(recorded, head, Vec::new(), id);
            return;
        };
        let req = Recorded {
            head,
            body,
            connection: id,
        };
        let script = handler(&req);
        if let Ok(mut r) = recorded.lock() {
            r.push(req);
        }
        match script {
            Script::Raw(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
            Script::RawThenClose(bytes) => {
                let _ = stream.write_all(&bytes);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Script::Slow(parts, pause) => {
                for p in parts {
                    if stream.write_all(&p).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
            }
            Script::Close => return,
            Script::Hang => {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                while matches!(read_retrying(&mut stream, &mut chunk), Ok(n) if n > 0) {}
                return;
            }
            Script::Echo(bytes) => {
                if stream.write_all(&bytes).is_err()
                    || (!buf.is_empty() && stream.write_all(&buf).is_err())
                {
                    return;
                }
                loop {
                    match read_retrying(&mut stream, &mut chunk) {
                        Ok(0) | Err(_) => {
                            let _ = stream.shutdown(Shutdown::Write);
                            return;
                        }
                        Ok(n) => {
                            if stream.write_all(&chunk[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn record(recorded: &Mutex<Vec<Recorded>>, head: Vec<u8>, body: Vec<u8>, connection: usize) {
    if let Ok(mut r) = recorded.lock() {
        r.push(Recorded {
            head,
            body,
            connection,
        });
    }
}

fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    framing: BodyFraming,
) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            while (body.len() as u64) < n {
                if buf.is_empty() {
                    let got = read_retrying(stream, chunk).ok().filter(|&g| g > 0)?;
                    buf.extend_from_slice(&chunk[..got]);
                }
                let take = (n - body.len() as u64).min(buf.len() as u64) as usize;
                body.extend_from_slice(&buf[..take]);
                buf.drain(..take);
            }
        }
        BodyFraming::Chunked => {
            let mut d = ChunkedDecoder::new(1 << 20, None);
            loop {
                let p = d.feed(buf, |_| {}).ok()?;
                body.extend_from_slice(&buf[..p.consumed]);
                buf.drain(..p.consumed);
                if p.done {
                    break;
                }
                let got = read_retrying(stream, chunk).ok().filter(|&g| g > 0)?;
                buf.extend_from_slice(&chunk[..got]);
            }
        }
    }
    Some(body)
}

/// `read`, retrying when a signal interrupts it.
fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
