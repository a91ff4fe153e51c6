//! A raw HTTP/1.1 client: writes exactly the bytes a test gives it and
//! parses what comes back, noticing truncation and closes.

use shardgate_http::{ChunkedDecoder, Method, ResponseFraming, empty_headers, parse_response};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    /// The payload (de-chunked when chunked).
    pub body: Vec<u8>,
    /// The raw bytes of the body as they arrived.
    pub raw_body: Vec<u8>,
    /// The body ended where its framing said it would.
    pub complete: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connecting to the gateway");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("read timeout");
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .expect("writing to the gateway");
    }

    /// Sends, ignoring errors (the gateway may have closed already).
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads more bytes; false at EOF, reset or timeout.
    fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 64 * 1024];
        let read = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match read {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    /// Reads one response to a GET-like request.
    pub fn read_response(&mut self) -> Option<Reply> {
        self.read_response_to(Method::Get)
    }

    /// Reads one response to a request made with `method`; `None` when the
    /// connection ended (or timed out) before a complete head.
    pub fn read_response_to(&mut self, method: Method) -> Option<Reply> {
        let (status, head_len, framing, head) = loop {
            let mut headers = empty_headers();
            match parse_response(&self.buf, &mut headers, method, 1 << 20) {
                Ok(Some(r)) => {
                    let head = String::from_utf8_lossy(&self.buf[..r.info.head_len]).into_owned();
                    break (r.info.status, r.info.head_len, r.info.framing, head);
                }
                Ok(None) => {}
                Err(e) => panic!(
                    "gateway sent a malformed response ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            if !self.fill() {
                return None;
            }
        };
        self.buf.drain(..head_len);
        let mut reply = Reply {
            status,
            head,
            body: Vec::new(),
            raw_body: Vec::new(),
            complete: true,
        };
        match framing {
            ResponseFraming::None => {}
            ResponseFraming::Length(n) => {
                while (self.buf.len() as u64) < n && self.fill() {}
                let take = (n.min(self.buf.len() as u64)) as usize;
                reply.complete = take as u64 == n;
                reply.body = self.buf.drain(..take).collect();
                reply.raw_body = reply.body.clone();
            }
            ResponseFraming::Chunked => {
                let mut d = ChunkedDecoder::new(1 << 20, None);
                loop {
                    let mut data = Vec::new();
                    let buf = &self.buf;
                    let p = d
                        .feed(buf, |r| data.extend_from_slice(&buf[r]))
                        .unwrap_or_else(|e| panic!("gateway sent bad chunked framing: {e}"));
                    reply.body.extend_from_slice(&data);
                    reply.raw_body.extend(self.buf.drain(..p.consumed));
                    if p.done {
                        break;
                    }
                    if !self.fill() {
                        reply.complete = false;
                        break;
                    }
                }
            }
            ResponseFraming::UntilClose => {
                while self.fill() {}
                reply.complete = self.eof;
                reply.body = std::mem::take(&mut self.buf);
                reply.raw_body = reply.body.clone();
            }
        }
        Some(reply)
    }

    /// Reads until EOF (or the read timeout); everything received.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Reads exactly `n` bytes (or fewer at EOF/timeout).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n && self.fill() {}
        let take = n.min(self.buf.len());
        self.buf.drain(..take).collect()
    }

    /// Whether the gateway closed the connection (EOF or reset) within the
    /// read timeout, with nothing more to read.
    pub fn is_closed(&mut self) -> bool {
        while self.fill() {}
        self.eof && self.buf.is_empty()
    }

    /// Shuts down the write half (the gateway sees EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}
