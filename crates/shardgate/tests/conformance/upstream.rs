//! A raw-socket mock upstream on std threads. It records every byte it receives (per
//! connection) and every request it could frame, and answers with whatever a handler writes,
//! so a case can send malformed or ambiguous responses.

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::harness::{IO_TIMEOUT, bind_listener, read_retrying};
use crate::wire::{self, Framed, Request, show};

#[derive(Default)]
pub struct Seen {
    /// Raw bytes received, one entry per accepted connection.
    pub conns: Vec<Vec<u8>>,
    /// Requests framed, in arrival order, across connections.
    pub requests: Vec<Request>,
    /// Requests that could not be framed (the mock stops answering that connection).
    pub errors: Vec<String>,
}

struct Shared {
    seen: Mutex<Seen>,
    changed: Condvar,
    stop: AtomicBool,
    /// Requests answered so far, across connections (for "first request gets X" scripts).
    answered: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    /// Runs `handler` on its own thread for every accepted connection.
    pub fn start(handler: impl Fn(&mut UpConn) + Send + Sync + 'static) -> Upstream {
        let listener = bind_listener();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            answered: AtomicUsize::new(0),
        });
        let handler = Arc::new(handler);
        let accept_shared = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let idx = {
                    let mut seen = accept_shared.lock();
                    seen.conns.push(Vec::new());
                    seen.conns.len() - 1
                };
                let (shared, handler) = (accept_shared.clone(), handler.clone());
                std::thread::spawn(move || {
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                    let mut conn = UpConn {
                        stream,
                        buf: Vec::new(),
                        idx,
                        shared,
                    };
                    handler(&mut conn);
                });
            }
        });
        Upstream { addr, shared }
    }

    /// Answers every request with 200 and the request target as the body, keep-alive.
    pub fn echo() -> Upstream {
        Upstream::start(|c| while c.answer_echo() {})
    }

    /// The first request (on any connection) gets `reply`, then the connection is closed if
    /// `close`. Every other request gets the echo answer.
    pub fn scripted(reply: &'static [u8], close: bool) -> Upstream {
        Upstream::start(move |c| {
            while let Some(req) = c.next_request() {
                if c.shared.answered.fetch_add(1, Ordering::SeqCst) == 0 {
                    c.write(reply);
                    if close {
                        return;
                    }
                } else {
                    c.write(&echo_reply(&req));
                }
            }
        })
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.shared.lock()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.seen().requests.clone()
    }

    /// All bytes received on all connections, concatenated.
    pub fn raw(&self) -> Vec<u8> {
        self.seen().conns.concat()
    }

    pub fn connections(&self) -> usize {
        self.seen().conns.len()
    }

    /// Waits (bounded) until `cond` holds; returns whether it did.
    pub fn wait_until(&self, cond: impl Fn(&Seen) -> bool) -> bool {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut seen = self.shared.lock();
        loop {
            if cond(&seen) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            seen = match self.shared.changed.wait_timeout(seen, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
    }
}

pub fn echo_reply(req: &Request) -> Vec<u8> {
    let body = req.target.as_bytes();
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// One accepted upstream connection.
pub struct UpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    idx: usize,
    shared: Arc<Shared>,
}

impl UpConn {
    /// Reads once; records the bytes. `false` on close, error or timeout.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match read_retrying(&mut self.stream, &mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.shared.lock().conns[self.idx].extend_from_slice(&chunk[..n]);
                self.shared.changed.notify_all();
                true
            }
        }
    }

    /// The next complete request, recorded. `None` on close, timeout or unframeable bytes
    /// (then the rest of the connection is drained and recorded).
    pub fn next_request(&mut self) -> Option<Request> {
        loop {
            match wire::parse_request(&self.buf) {
                Ok(Framed::Complete(req, n)) => {
                    self.buf.drain(..n);
                    self.shared.lock().requests.push(req.clone());
                    self.shared.changed.notify_all();
                    return Some(req);
                }
                Ok(Framed::Partial) => {
                    if !self.fill() {
                        return None;
                    }
                }
                Err(e) => {
                    let msg = format!("{e} in {}", show(&self.buf));
                    self.shared.lock().errors.push(msg);
                    self.shared.changed.notify_all();
                    self.drain();
                    return None;
                }
            }
        }
    }

    /// Reads one request and answers it with the echo reply; `false` when there was none.
    pub fn answer_echo(&mut self) -> bool {
        match self.next_request() {
            Some(req) => {
                self.write(&echo_reply(&req));
                true
            }
            None => false,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Writes `bytes`; `false` once the proxy has gone (or stopped reading for `IO_TIMEOUT`).
    pub fn try_write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Bytes received but not yet consumed as a request, waiting (bounded) for at least `n`.
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n && self.fill() {}
        let n = n.min(self.buf.len());
        self.buf.drain(..n).collect()
    }

    /// Waits (bounded) until the unconsumed bytes contain `needle`; consumes and returns the
    /// bytes up to and including it, or `None` if it never came.
    pub fn read_until(&mut self, needle: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = wire::find(&self.buf, needle) {
                return Some(self.buf.drain(..i + needle.len()).collect());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Reads and records until the peer closes or `IO_TIMEOUT` passes without bytes.
    pub fn drain(&mut self) {
        while self.fill() {}
    }

    /// Whether the peer closed (EOF) within the timeout, recording whatever came first.
    pub fn wait_eof(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match read_retrying(&mut self.stream, &mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.shared.lock().conns[self.idx].extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}
