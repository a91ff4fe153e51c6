//! The bytes an HTTP/2 connection runs over, as the `h2` crate wants them
//! (tokio's poll traits): monoio's poll-io socket, plain or with the TLS
//! session the handshake set up, replaying what was read before HTTP/2
//! began. Every frame header read passes the [`Guard`], which counts what
//! `h2` does not limit.

use super::guard::Guard;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use rustls::Connection;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(super) struct Wire {
    /// Bytes read before HTTP/2 began (`pre[at..]`), served first: the
    /// preface on a plain socket, TLS records on a TLS one.
    pre: Vec<u8>,
    at: usize,
    tcp: TcpStreamPoll,
    tls: Option<Box<Tls>>,
    /// Downstream only: the abuse guard.
    guard: Option<Guard>,
}

struct Tls {
    conn: Connection,
    /// close_notify is queued.
    closing: bool,
    /// Decrypted bytes rustls holds, as of the last records processed.
    plain: usize,
    /// The peer sent close_notify.
    closed: bool,
}

impl Wire {
    pub(super) fn plain(tcp: TcpStreamPoll, read: Vec<u8>, guard: Option<Guard>) -> Wire {
        Wire {
            pre: read,
            at: 0,
            tcp,
            tls: None,
            guard,
        }
    }

    /// `records`: TLS bytes read past the handshake, not yet given to rustls.
    pub(super) fn tls(
        tcp: TcpStreamPoll,
        mut conn: Connection,
        records: Vec<u8>,
        guard: Option<Guard>,
    ) -> Wire {
        // What rustls holds already (plaintext sent with the handshake's last
        // flight); an error shows again at the first read.
        let (plain, closed) = conn.process_new_packets().map_or((0, false), |s| {
            (s.plaintext_bytes_to_read(), s.peer_has_closed())
        });
        Wire {
            pre: records,
            at: 0,
            tcp,
            tls: Some(Box::new(Tls {
                conn,
                closing: false,
                plain,
                closed,
            })),
            guard,
        }
    }

    /// Copies from `pre` into `buf`; false when nothing is left there.
    fn replay(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.at >= self.pre.len() {
            return false;
        }
        let n = (self.pre.len() - self.at).min(buf.remaining());
        buf.put_slice(&self.pre[self.at..self.at + n]);
        self.at += n;
        if self.at == self.pre.len() {
            self.pre = Vec::new();
            self.at = 0;
        }
        true
    }

    fn poll_read_tls(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            // Only as many bytes as rustls holds are zeroed before it fills
            // them: the rest of h2's read buffer stays untouched (and out of
            // an idle connection's resident memory).
            let want = tls.plain.min(buf.remaining());
            let r = if want > 0 || tls.closed {
                tls.conn.reader().read(buf.initialize_unfilled_to(want))
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
            match r {
                Ok(n) => {
                    buf.advance(n);
                    tls.plain -= n.min(tls.plain);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A peer that closes without close_notify ends the stream too.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
            // Alerts and key updates rustls queued go out as they can.
            if let Poll::Ready(Err(e)) = self.poll_send_tls(cx) {
                return Poll::Ready(Err(e));
            }
            let tls = self.tls.as_mut().expect("checked above");
            if self.at < self.pre.len() {
                let mut records = &self.pre[self.at..];
                let before = records.len();
                tls.conn.read_tls(&mut records)?;
                self.at += before - records.len();
                if self.at == self.pre.len() {
                    self.pre = Vec::new();
                    self.at = 0;
                }
            } else {
                let mut socket = Sync {
                    tcp: &mut self.tcp,
                    cx,
                };
                match tls.conn.read_tls(&mut socket) {
                    Ok(0) => return Poll::Ready(Ok(())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            match tls.conn.process_new_packets() {
                Ok(state) => {
                    tls.plain = state.plaintext_bytes_to_read();
                    tls.closed = state.peer_has_closed();
                }
                Err(e) => {
                    // The alert saying why goes out if it can.
                    let _ = self.poll_send_tls(cx);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
        }
    }

    /// Writes plaintext: to the socket, or into the TLS session.
    fn poll_write_plain(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let Some(tls) = self.tls.as_mut() else {
            return Pin::new(&mut self.tcp).poll_write(cx, data);
        };
        let n = tls.conn.writer().write(data)?;
        let sent = self.poll_send_tls(cx)?;
        if n > 0 || data.is_empty() {
            return Poll::Ready(Ok(n));
        }
        // rustls's buffer was full; once the socket has taken it all, there is room.
        ready!(sent);
        match self.tls.as_mut() {
            Some(tls) => Poll::Ready(tls.conn.writer().write(data)),
            None => Poll::Ready(Ok(0)),
        }
    }

    /// Sends what rustls has queued; `Pending` while the socket is full.
    fn poll_send_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(tls) = self.tls.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while tls.conn.wants_write() {
            let mut socket = Sync {
                tcp: &mut self.tcp,
                cx,
            };
            match tls.conn.write_tls(&mut socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A tripped guard reads nothing more: the connection is going away.
        if this.guard.as_ref().is_some_and(Guard::tripped) {
            return Poll::Pending;
        }
        let start = buf.filled().len();
        let r = if this.tls.is_some() {
            this.poll_read_tls(cx, buf)
        } else if this.replay(buf) {
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut this.tcp).poll_read(cx, buf)
        };
        if let (Poll::Ready(Ok(())), Some(g)) = (&r, this.guard.as_mut()) {
            g.scan(&buf.filled()[start..]);
        }
        r
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = this.poll_write_plain(cx, data);
        if let (Poll::Ready(Ok(n)), Some(g)) = (&r, this.guard.as_mut()) {
            g.scan_written(&data[..*n]);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.tls.is_none() {
            let this = &mut *self;
            let r = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
            if let Poll::Ready(Ok(n)) = r {
                let mut left = n;
                for b in bufs {
                    let k = left.min(b.len());
                    if let Some(g) = this.guard.as_mut() {
                        g.scan_written(&b[..k]);
                    }
                    left -= k;
                    if left == 0 {
                        break;
                    }
                }
            }
            return r;
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_none() && self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(tls) = this.tls.as_mut() {
            tls.conn.writer().flush()?;
            ready!(this.poll_send_tls(cx))?;
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(tls) = this.tls.as_mut() {
            if !tls.closing {
                tls.conn.send_close_notify();
                tls.closing = true;
            }
            ready!(this.poll_send_tls(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

/// The poll socket as `std::io` for rustls: `Pending` is `WouldBlock`.
struct Sync<'a, 'b> {
    tcp: &'a mut TcpStreamPoll,
    cx: &'a mut Context<'b>,
}

impl Read for Sync<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *self.tcp).poll_read(self.cx, &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Sync<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
