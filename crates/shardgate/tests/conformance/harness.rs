//! The black-box harness: the real `shardgate` binary in a child process (killed on drop), a
//! raw client with bounded reads. The mock upstream lives in `upstream.rs`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::{self, Framed, Framing, Head, show};

/// Every read and write in this suite gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a freshly spawned proxy may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Driver {
    Uring,
    Legacy,
}

impl Driver {
    fn flag(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Legacy => "legacy",
        }
    }
}

/// Ports handed to proxies by this process. The proxy binds with SO_REUSEPORT, so two proxies
/// on one port would silently share connections; never hand a port out twice.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Records `port` as handed out; `false` if it already was.
fn claim_port(port: u16) -> bool {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    used.get_or_insert_with(HashSet::new).insert(port)
}

/// A loopback listener on a port no proxy of this process was or will be given (mock upstreams
/// use it, so a proxy port released for spawning is never taken by a mock in between).
pub fn bind_listener() -> TcpListener {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback listener");
        if claim_port(l.local_addr().unwrap().port()) {
            return l;
        }
    }
}

fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        if claim_port(port) {
            return port;
        }
    }
}

/// A port nothing listens on (bound once, then released).
pub fn dead_addr() -> SocketAddr {
    let port = free_port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The running binary. Dropping it kills the process; the log is kept (and its path printed)
/// only when the test is failing.
pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    /// The configuration file of `start_config` (none is written otherwise).
    config: PathBuf,
}

impl Proxy {
    /// Default flags: 2s header and upstream timeouts, 5s idle, 1MiB max body.
    pub fn start(driver: Driver, upstreams: &[SocketAddr]) -> Proxy {
        Self::start_with(driver, upstreams, &[])
    }

    /// Like `start`, with some flags replaced or added (`("--header-timeout", "1s")`).
    pub fn start_with(driver: Driver, upstreams: &[SocketAddr], flags: &[(&str, &str)]) -> Proxy {
        let mut all = vec![
            ("--header-timeout", "2s"),
            ("--upstream-timeout", "2s"),
            ("--idle-timeout", "5s"),
            ("--max-body", "1MiB"),
        ];
        for &(k, v) in flags {
            match all.iter_mut().find(|f| f.0 == k) {
                Some(f) => f.1 = v,
                None => all.push((k, v)),
            }
        }
        let to = upstreams
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        Self::spawn(driver, |cmd, addr, _| {
            cmd.args(["proxy", "--listen", &addr.to_string(), "--to", &to]);
            cmd.args(["--workers", "1", "--driver", driver.flag()]);
            for (k, v) in &all {
                cmd.args([k, v]);
            }
        })
    }

    /// `shardgate run` with a configuration file: one shard on `driver`, listening where the
    /// harness says, then `config` (TOML without `workers`, `driver` or `[[listeners]]`).
    pub fn start_config(driver: Driver, config: &str) -> Proxy {
        Self::start_config_with(driver, "", config)
    }

    /// [`Proxy::start_config`] with top-level keys (`top`) before the listener's table.
    pub fn start_config_with(driver: Driver, top: &str, config: &str) -> Proxy {
        Self::start_config_shards(driver, 1, top, config)
    }

    /// [`Proxy::start_config_with`] on `shards` shards.
    pub fn start_config_shards(driver: Driver, shards: usize, top: &str, config: &str) -> Proxy {
        Self::spawn(driver, |cmd, addr, file| {
            let text = format!(
                "workers = {shards}\ndriver = \"{}\"\n{top}\n\n[[listeners]]\naddress = \"{addr}\"\n\n{config}",
                driver.flag()
            );
            std::fs::write(file, text).expect("write proxy config");
            cmd.args(["run", "-c"]).arg(file);
        })
    }

    /// Starts the binary with the arguments `args` sets (given the address to listen on and a
    /// path for a configuration file), on a fresh port, up to three times.
    fn spawn(driver: Driver, args: impl Fn(&mut Command, SocketAddr, &std::path::Path)) -> Proxy {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let stem = format!(
                "shardgate-conformance-{}-{}",
                std::process::id(),
                addr.port()
            );
            let log = std::env::temp_dir().join(format!("{stem}.log"));
            let config = std::env::temp_dir().join(format!("{stem}.toml"));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardgate"));
            args(&mut cmd, addr, &config);
            let level = std::env::var("SHARDGATE_LOG").unwrap_or_else(|_| "info".into());
            cmd.env("SHARDGATE_LOG", level)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            cmd.stderr(File::create(&log).expect("create proxy log"));
            let child = cmd.spawn().expect("spawn shardgate");
            let mut proxy = Proxy {
                child,
                addr,
                log,
                config,
            };
            if proxy.wait_ready() {
                return proxy;
            }
            last_log = proxy.log_text();
        }
        panic!("proxy did not start ({driver:?}); last log:\n{last_log}");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return matches!(self.child.try_wait(), Ok(None));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still alive (a panic in a shard must not take it down).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id (for its memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file of `start_config` (rewrite it, then reload).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        if std::thread::panicking() {
            eprintln!("proxy log kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A response as the raw client read it.
#[derive(Clone, Debug)]
pub struct Response {
    pub head: Head,
    pub status: u16,
    pub body: Vec<u8>,
    /// Every byte of this response as it arrived (head and framed body).
    pub raw: Vec<u8>,
}

/// Why reading a response failed.
#[derive(Debug)]
pub enum ReadError {
    /// The connection closed (FIN or reset) before a complete response; the bytes seen so far.
    Closed(Vec<u8>),
    /// Nothing more arrived within `IO_TIMEOUT`; the bytes seen so far.
    Timeout(Vec<u8>),
    /// The bytes are not a valid HTTP/1.1 response.
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed(b) => write!(f, "closed after {:?}", show(b)),
            ReadError::Timeout(b) => write!(f, "timed out after {:?}", show(b)),
            ReadError::Malformed(m) => write!(f, "malformed: {m}"),
        }
    }
}

/// A raw TCP client. Every read is bounded by `IO_TIMEOUT`.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to proxy");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Sends bytes; a peer that already closed is not an error here (the reads will tell).
    pub fn send(&mut self, bytes: &[u8]) {
        match self.stream.write_all(bytes) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
            Err(e) => panic!("send failed: {e}"),
        }
    }

    /// Sends bytes; `false` if the peer is gone.
    pub fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// A second handle on the same socket (for a writer thread).
    pub fn try_clone(&self) -> Client {
        let stream = self.stream.try_clone().expect("clone client socket");
        Client {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// The socket itself, for reads the harness does not frame.
    pub fn raw_stream(&self) -> TcpStream {
        self.stream.try_clone().expect("clone client socket")
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Reads once more into the buffer. `Ok(false)` on close (FIN or reset).
    fn fill(&mut self) -> Result<bool, ReadError> {
        if self.closed {
            return Ok(false);
        }
        let mut chunk = [0u8; 16 * 1024];
        match read_retrying(&mut self.stream, &mut chunk) {
            Ok(0) => {
                self.closed = true;
                Ok(false)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(ReadError::Timeout(self.buf.clone()))
            }
            Err(_) => {
                self.closed = true;
                Ok(false)
            }
        }
    }

    fn more(&mut self) -> Result<(), ReadError> {
        if self.fill()? {
            Ok(())
        } else {
            Err(ReadError::Closed(self.buf.clone()))
        }
    }

    /// Reads exactly one response (a 1xx counts as one). `head` says the request was HEAD.
    pub fn read_response(&mut self, head: bool) -> Result<Response, ReadError> {
        let (h, used) = loop {
            match wire::parse_head(&self.buf).map_err(ReadError::Malformed)? {
                Framed::Complete(h, n) => break (h, n),
                Framed::Partial => self.more()?,
            }
        };
        let status = parse_status(&h.start).map_err(ReadError::Malformed)?;
        let framing = if head || status < 200 || status == 204 || status == 304 {
            Framing::Empty
        } else {
            wire::body_framing(&h, false).map_err(ReadError::Malformed)?
        };
        let (body, total) = match framing {
            Framing::Empty => (Vec::new(), used),
            Framing::Length(n) => {
                while self.buf.len() < used + n {
                    self.more()?;
                }
                (self.buf[used..used + n].to_vec(), used + n)
            }
            Framing::Chunked => loop {
                match wire::parse_chunked(&self.buf[used..]).map_err(ReadError::Malformed)? {
                    Framed::Complete(body, n) => break (body, used + n),
                    Framed::Partial => self.more()?,
                }
            },
            Framing::UntilClose => {
                while self.fill()? {}
                (self.buf[used..].to_vec(), self.buf.len())
            }
        };
        let raw: Vec<u8> = self.buf.drain(..total).collect();
        Ok(Response {
            head: h,
            status,
            body,
            raw,
        })
    }

    /// Reads responses until a final (non-1xx) one; returns the interim ones too.
    pub fn read_final(&mut self, head: bool) -> Result<(Vec<Response>, Response), ReadError> {
        let mut interim = Vec::new();
        loop {
            let r = self.read_response(head)?;
            if r.status >= 200 || r.status == 101 {
                return Ok((interim, r));
            }
            interim.push(r);
        }
    }

    /// The final response, panicking with context on any read error.
    pub fn expect_final(&mut self, head: bool, what: &str) -> Response {
        match self.read_final(head) {
            Ok((_, r)) => r,
            Err(e) => panic!("{what}: no complete response: {e}"),
        }
    }

    /// Waits for the peer to close, with nothing more arriving first.
    pub fn closed_cleanly(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!(
                "unexpected bytes after the response: {}",
                show(&self.buf)
            ));
        }
        match self.fill() {
            Ok(false) => Ok(()),
            Ok(true) => Err(format!(
                "unexpected bytes instead of a close: {}",
                show(&self.buf)
            )),
            Err(_) => Err(format!("connection still open after {IO_TIMEOUT:?}")),
        }
    }

    /// Reads until the peer closes (or the timeout); returns everything received.
    pub fn read_to_close(&mut self) -> Result<Vec<u8>, ReadError> {
        while self.fill()? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads until `want` bytes have arrived (beyond what was consumed), returning them.
    pub fn read_exact_bytes(&mut self, want: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < want {
            self.more()?;
        }
        Ok(self.buf.drain(..want).collect())
    }
}

fn parse_status(line: &str) -> Result<u16, String> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !(version == "HTTP/1.1" || version == "HTTP/1.0") || code.len() != 3 {
        return Err(format!("bad status line {line:?}"));
    }
    code.parse()
        .map_err(|_| format!("bad status code in {line:?}"))
}

/// Runs `f` and returns how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// `read`, retried when a signal interrupts it (EINTR is not an answer).
pub fn read_retrying(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
