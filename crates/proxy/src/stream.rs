//! The byte streams the request path reads and writes: a plain TCP socket,
//! or one that speaks TLS. [`Stream`] is what the I/O helpers in `io` need
//! of either; [`Transport`] is a connection to a client or an upstream,
//! plain or TLS.
//!
//! TLS here is rustls driven by hand over monoio's owned-buffer I/O: records
//! are read into a buffer the connection holds only while it is busy (an
//! idle TLS connection keeps no read or write buffer of its own), handed to
//! rustls, and the plaintext copied into the caller's buffer.

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::{ClientConnection, Connection, ServerConnection};
use std::io::{self, Read, Write};
use std::mem::take;
use std::sync::Arc;

/// What the request path needs of a byte stream.
pub(crate) trait Stream {
    /// Reads what is available into the spare capacity of `buf` (after its
    /// length). `Ok(0)` is the end of the stream.
    fn read_at(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    /// Writes `buf[from..end]` in full.
    fn write_range(
        &mut self,
        buf: Vec<u8>,
        from: usize,
        end: usize,
    ) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
    /// Writes a static message in full.
    fn write_static(&mut self, msg: &'static [u8]) -> impl Future<Output = io::Result<()>>;
    /// Waits until a read would not block, holding no buffer.
    fn readable(&mut self) -> impl Future<Output = io::Result<()>>;
    /// Ends the sending side.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;
}

impl Stream for TcpStream {
    async fn read_at(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        use monoio::buf::IoBufMut;
        let start = buf.len();
        let cap = buf.capacity();
        debug_assert!(start < cap, "read_at needs spare capacity");
        let (r, slice) = self.read(buf.slice_mut(start..cap)).await;
        (r, slice.into_inner())
    }

    async fn write_range(
        &mut self,
        buf: Vec<u8>,
        from: usize,
        end: usize,
    ) -> (io::Result<()>, Vec<u8>) {
        use monoio::buf::IoBuf;
        if from >= end {
            return (Ok(()), buf);
        }
        let (r, slice) = self.write_all(buf.slice(from..end)).await;
        (r.map(|_| ()), slice.into_inner())
    }

    async fn write_static(&mut self, msg: &'static [u8]) -> io::Result<()> {
        self.write_all(msg).await.0.map(|_| ())
    }

    async fn readable(&mut self) -> io::Result<()> {
        // Not "relaxed": on the epoll driver a relaxed wait trusts readiness
        // left over from the last read.
        TcpStream::readable(self, false).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteRent::shutdown(self).await
    }
}

/// A connection to a client or an upstream.
pub(crate) enum Transport {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and most connections are not TLS.
    Tls(Box<TlsStream>),
    /// One stream of a downstream HTTP/2 connection (see `h2`).
    H2(Box<crate::h2::StreamIo>),
    /// One stream of an upstream HTTP/2 connection (see `h2::client`).
    H2Up(Box<crate::h2::client::UpStream>),
}

impl Transport {
    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Transport::Plain(_) | Transport::H2Up(_) => false,
            Transport::Tls(_) => true,
            Transport::H2(s) => s.tls.is_some(),
        }
    }

    /// The verified client certificate's subject, if the client sent one.
    pub(crate) fn client_subject(&self) -> Option<&[u8]> {
        match self {
            Transport::Tls(s) => s.subject.as_deref(),
            Transport::H2(s) => s.tls.as_ref().and_then(|t| t.as_deref()),
            Transport::Plain(_) | Transport::H2Up(_) => None,
        }
    }

    /// Before an idle wait: the socket to wait on, or `None` when bytes are
    /// already waiting to be read (a TLS session holding a record). A TLS
    /// session gives its I/O buffers back here, so an idle one holds none.
    pub(crate) fn idle_socket(&mut self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(s) => s.idle_socket(),
            Transport::H2(_) | Transport::H2Up(_) => None,
        }
    }

    /// When a gRPC client's `grpc-timeout` runs out: the upstream's answer
    /// is waited for no longer.
    pub(crate) fn grpc_deadline(&self) -> Option<std::time::Instant> {
        match self {
            Transport::H2(s) => s.grpc_deadline,
            _ => None,
        }
    }

    /// The socket underneath (`None` for an HTTP/2 stream).
    pub(crate) fn socket(&self) -> Option<&TcpStream> {
        match self {
            Transport::Plain(s) => Some(s),
            Transport::Tls(s) => Some(&s.tcp),
            Transport::H2(_) | Transport::H2Up(_) => None,
        }
    }

    /// The plain socket, to start TLS on (`None` once it has).
    pub(crate) fn take_plain(self) -> Result<TcpStream, Transport> {
        match self {
            Transport::Plain(s) => Ok(s),
            other => Err(other),
        }
    }
}

impl Stream for Transport {
    async fn read_at(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Transport::Plain(s) => s.read_at(buf).await,
            Transport::Tls(s) => s.read_at(buf).await,
            Transport::H2(s) => s.read_at(buf).await,
            Transport::H2Up(s) => s.read_at(buf).await,
        }
    }

    async fn write_range(
        &mut self,
        buf: Vec<u8>,
        from: usize,
        end: usize,
    ) -> (io::Result<()>, Vec<u8>) {
        match self {
            Transport::Plain(s) => s.write_range(buf, from, end).await,
            Transport::Tls(s) => s.write_range(buf, from, end).await,
            Transport::H2(s) => {
                let r = s.write(&buf[from..end]).await;
                (r, buf)
            }
            Transport::H2Up(s) => {
                let r = s.write(&buf[from..end]).await;
                (r, buf)
            }
        }
    }

    async fn write_static(&mut self, msg: &'static [u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_static(msg).await,
            Transport::Tls(s) => s.write_static(msg).await,
            Transport::H2(s) => s.write(msg).await,
            Transport::H2Up(s) => s.write(msg).await,
        }
    }

    async fn readable(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => Stream::readable(s).await,
            Transport::Tls(s) => s.readable().await,
            // A stream is never tunnelled: it waits for nothing else.
            Transport::H2(_) | Transport::H2Up(_) => std::future::pending().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => Stream::shutdown(s).await,
            Transport::Tls(s) => s.shutdown().await,
            Transport::H2(s) => {
                s.finish();
                Ok(())
            }
            Transport::H2Up(_) => Ok(()),
        }
    }
}

/// Bytes of TLS records read from the socket at once.
const RECORD_READ: usize = 16 * 1024 + 512;

/// A TLS session (server or client side) over a TCP socket.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: Connection,
    /// TLS bytes read and not yet taken by rustls (`rbuf[rpos..]`); no
    /// capacity while the connection is idle.
    rbuf: Vec<u8>,
    rpos: usize,
    /// TLS bytes being written; no capacity while idle.
    wbuf: Vec<u8>,
    /// Decrypted bytes rustls holds, as of the last records processed.
    plain: usize,
    /// The peer sent close_notify.
    closed: bool,
    /// The verified client certificate's subject (RFC 4514), when the
    /// client sent one.
    subject: Option<Box<[u8]>>,
}

impl TlsStream {
    /// Runs the server handshake on `tcp` (the caller bounds its time).
    /// `early`: bytes already read from the socket (after a PROXY header).
    pub(crate) async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
        early: Vec<u8>,
    ) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        TlsStream::handshake(tcp, Connection::Server(conn), early).await
    }

    /// Runs the client handshake to `name` on `tcp` (the caller bounds its
    /// time); a certificate that does not verify fails it.
    pub(crate) async fn connect(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: rustls_pki_types::ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        TlsStream::handshake(tcp, Connection::Client(conn), Vec::new()).await
    }

    async fn handshake(tcp: TcpStream, conn: Connection, early: Vec<u8>) -> io::Result<TlsStream> {
        let mut s = TlsStream {
            tcp,
            conn,
            rbuf: early,
            rpos: 0,
            wbuf: Vec::new(),
            plain: 0,
            closed: false,
            subject: None,
        };
        while s.conn.is_handshaking() {
            s.flush().await?;
            if s.conn.is_handshaking() && !s.fill().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // TLS 1.3 session tickets go right after the handshake.
        s.flush().await?;
        s.subject = s
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| shardgate_tls::subject_text(leaf))
            .map(|text| text.into_bytes().into_boxed_slice());
        Ok(s)
    }

    /// Moves decrypted bytes into the spare capacity of `buf`; `None` when
    /// there are none yet.
    fn plaintext(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        if self.plain == 0 && !self.closed {
            return None;
        }
        let start = buf.len();
        // Only as many bytes as rustls holds are zeroed before it fills them.
        buf.resize(start + self.plain.min(buf.capacity() - start), 0);
        let r = self.conn.reader().read(&mut buf[start..]);
        match r {
            Ok(n) => {
                buf.truncate(start + n);
                self.plain -= n.min(self.plain);
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(start);
                None
            }
            Err(e) => {
                buf.truncate(start);
                // A peer that closes without close_notify ends the stream too.
                Some(if e.kind() == io::ErrorKind::UnexpectedEof {
                    Ok(0)
                } else {
                    Err(e)
                })
            }
        }
    }

    /// Hands rustls more TLS bytes: what is pending, else one socket read.
    /// `Ok(false)`: the socket ended.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.rpos >= self.rbuf.len() {
            let mut buf = take(&mut self.rbuf);
            if buf.capacity() == 0 {
                buf = Vec::with_capacity(RECORD_READ);
            }
            buf.clear();
            self.rpos = 0;
            let (r, b) = self.tcp.read(buf).await;
            self.rbuf = b;
            if r? == 0 {
                return Ok(false);
            }
        }
        let mut data = &self.rbuf[self.rpos..];
        let before = data.len();
        self.conn.read_tls(&mut data)?;
        self.rpos += before - data.len();
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plain = state.plaintext_bytes_to_read();
                self.closed = state.peer_has_closed();
            }
            Err(e) => {
                // The alert saying why goes out before the error ends the connection.
                let _ = self.flush().await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        Ok(true)
    }

    /// Sends every TLS byte rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut w = take(&mut self.wbuf);
            w.clear();
            self.conn.write_tls(&mut w)?;
            let (r, w) = self.tcp.write_all(w).await;
            self.wbuf = w;
            r?;
        }
        Ok(())
    }

    async fn read_at(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if let Some(r) = self.plaintext(&mut buf) {
                return (r, buf);
            }
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn write_range(
        &mut self,
        buf: Vec<u8>,
        from: usize,
        end: usize,
    ) -> (io::Result<()>, Vec<u8>) {
        let mut at = from;
        while at < end {
            match self.conn.writer().write(&buf[at..end]) {
                Ok(n) => at += n,
                Err(e) => return (Err(e), buf),
            }
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    async fn write_static(&mut self, msg: &'static [u8]) -> io::Result<()> {
        let (r, _) = self.write_range(msg.to_vec(), 0, msg.len()).await;
        r
    }

    /// Whether the client chose HTTP/2 (ALPN `h2`).
    pub(crate) fn chose_h2(&self) -> bool {
        self.conn.alpn_protocol() == Some(b"h2")
    }

    /// The socket, the session, the TLS bytes read and not yet given to
    /// rustls, and the client certificate's subject: for HTTP/2, which runs
    /// the session over the poll-io socket.
    pub(crate) fn into_parts(self) -> (TcpStream, Connection, Vec<u8>, Option<Box<[u8]>>) {
        // Only what is left, in a buffer of its size: the record buffer's
        // capacity would otherwise stay with the connection for its life.
        let records = self
            .rbuf
            .get(self.rpos..)
            .map_or_else(Vec::new, <[u8]>::to_vec);
        (self.tcp, self.conn, records, self.subject)
    }

    /// `None` when rustls holds plaintext, undelivered records or an error
    /// (a read then returns at once); otherwise the buffers go back and the
    /// socket is the one to wait on.
    fn idle_socket(&mut self) -> Option<&TcpStream> {
        if self.plain > 0 || self.closed || self.rpos < self.rbuf.len() {
            return None;
        }
        self.rbuf = Vec::new();
        self.rpos = 0;
        self.wbuf = Vec::new();
        Some(&self.tcp)
    }

    async fn readable(&mut self) -> io::Result<()> {
        match self.idle_socket() {
            Some(tcp) => tcp.readable(false).await,
            None => Ok(()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush().await?;
        AsyncWriteRent::shutdown(&mut self.tcp).await
    }
}
