//! One client connection: connect (optionally from a chosen source address), write precomputed
//! request bytes, and frame responses out of a reused read buffer.
//!
//! The hot path is one `write` of the request and, for a small response, one `read` that
//! returns it whole: the buffer is only read into when the parser needs more bytes, so a short
//! read is never followed by a read that would find the socket empty.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::response::{ResponseReader, Step};
use crate::stats::ErrorKind;

/// Initial read buffer per connection.
pub const READ_BUF: usize = 16 * 1024;
/// A response head larger than this is treated as malformed.
pub const MAX_HEAD: usize = 256 * 1024;

/// How to open a client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOpts {
    /// Bind this source address first (port chosen by the kernel).
    pub source: Option<IpAddr>,
    /// Leave the socket in blocking mode once the connect is under way, as the io_uring
    /// driver expects; the legacy (epoll) driver needs it non-blocking.
    pub blocking: bool,
    /// `SO_LINGER 0`: closing sends a reset and leaves no TIME_WAIT behind, so thousands of
    /// held connections do not use up the ephemeral ports of the next run.
    pub reset_on_close: bool,
    pub timeout: Duration,
}

/// Opens a TCP connection to `addr` with `TCP_NODELAY`.
pub async fn connect(addr: SocketAddr, opts: ConnectOpts) -> Result<TcpStream, ErrorKind> {
    match monoio::time::timeout(opts.timeout, connect_inner(addr, opts)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(_)) | Err(_) => Err(ErrorKind::Connect),
    }
}

async fn connect_inner(addr: SocketAddr, opts: ConnectOpts) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    if opts.reset_on_close {
        sock.set_linger(Some(Duration::ZERO))?;
    }
    if let Some(ip) = opts.source {
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    if opts.blocking {
        sock.set_nonblocking(false)?;
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(sock))?;
    stream.writable(false).await?;
    // A failed connect leaves the socket unconnected.
    stream.peer_addr()?;
    Ok(stream)
}

/// A response's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub keep_alive: bool,
}

/// A connected client socket with its read buffer and response framer.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    reader: ResponseReader,
    /// Bytes read from the socket so far.
    pub bytes_read: u64,
}

impl Conn {
    /// Wraps `stream`, reusing `buf` (given back by [`Conn::into_buf`]) when it has capacity.
    pub fn new(stream: TcpStream, mut buf: Vec<u8>, head_request: bool) -> Self {
        buf.clear();
        if buf.capacity() == 0 {
            buf.reserve_exact(READ_BUF);
        }
        Conn {
            stream,
            buf,
            pos: 0,
            reader: ResponseReader::new(head_request),
            bytes_read: 0,
        }
    }

    /// Gives the read buffer back for the next connection.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// Takes the read buffer out while the connection is idle (nothing buffered), so an idle
    /// connection pins no buffer; `None` if unread bytes remain.
    pub fn take_idle_buf(&mut self) -> Option<Vec<u8>> {
        if self.pos == self.buf.len() && self.reader.idle() {
            self.pos = 0;
            let mut b = std::mem::take(&mut self.buf);
            b.clear();
            Some(b)
        } else {
            None
        }
    }

    /// Puts a buffer back before the next exchange (only if the connection has none).
    pub fn give_buf(&mut self, buf: Vec<u8>) {
        if self.buf.capacity() == 0 {
            self.buf = buf;
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Writes the first `len` bytes of `req`. The buffer is lent to the kernel and put back;
    /// if the future is dropped mid-write `req` is left empty.
    pub async fn write(&mut self, req: &mut Vec<u8>, len: usize) -> Result<(), ErrorKind> {
        let owned = std::mem::take(req);
        let (res, slice) = self.stream.write_all(owned.slice(..len)).await;
        *req = slice.into_inner();
        res.map(|_| ()).map_err(|_| ErrorKind::Reset)
    }

    /// Reads until one whole response is framed.
    pub async fn read_response(&mut self) -> Result<Response, ErrorKind> {
        loop {
            if self.pos < self.buf.len() {
                match self.reader.advance(&self.buf[self.pos..]) {
                    Ok(Step::Done {
                        consumed,
                        status,
                        keep_alive,
                    }) => {
                        self.pos += consumed;
                        if self.pos == self.buf.len() {
                            self.buf.clear();
                            self.pos = 0;
                        }
                        return Ok(Response { status, keep_alive });
                    }
                    Ok(Step::NeedMore { consumed }) => self.pos += consumed,
                    Err(_) => return Err(ErrorKind::Parse),
                }
            }
            self.make_room()?;
            let buf = std::mem::take(&mut self.buf);
            let (len, cap) = (buf.len(), buf.capacity());
            let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
            self.buf = slice.into_inner();
            match res {
                Ok(0) => {
                    return match self.reader.finish_at_eof() {
                        Some(status) => Ok(Response {
                            status,
                            keep_alive: false,
                        }),
                        None => Err(ErrorKind::Eof),
                    };
                }
                Ok(n) => self.bytes_read += n as u64,
                Err(_) => return Err(ErrorKind::Reset),
            }
        }
    }

    /// Drops consumed bytes and makes sure there is space to read into.
    fn make_room(&mut self) -> Result<(), ErrorKind> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.buf.capacity() - self.buf.len() < 1024 && self.pos > 0 {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(READ_BUF);
        } else if self.buf.len() == self.buf.capacity() {
            if self.buf.capacity() >= MAX_HEAD {
                return Err(ErrorKind::Parse);
            }
            self.buf.reserve_exact(self.buf.capacity());
        }
        Ok(())
    }
}
