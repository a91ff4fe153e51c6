//! A blocking Redis client for one control-plane thread: a connection (plain or TLS) made on
//! demand with `AUTH` and `SELECT`, and pipelines of commands sent in one write and answered in
//! one round trip (RESP2). Any I/O or protocol error drops the connection; the next pipeline
//! connects again. Every read and write has a timeout, so a Redis that stops answering costs
//! the caller at most that long.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Connecting, reading and writing each give up after this long.
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// The largest bulk string or array accepted in an answer.
const MAX_BULK: usize = 64 << 20;

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    pub tls: bool,
    /// The CA bundle for `rediss://` (default: the system's).
    pub ca: Option<PathBuf>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs.
        write!(f, "{}", self.display())
    }
}

impl Settings {
    /// Parses a `redis://` or `rediss://` URL; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Settings, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?}: expected redis://host:port or rediss://host:port"
            ));
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, d)) => (
                h,
                d.parse()
                    .map_err(|_| format!("{url:?}: database {d:?} is not a number"))?,
            ),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // `[::1]` has colons but no port.
            Some((h, p)) if !hostport.ends_with(']') => (
                h,
                p.parse()
                    .map_err(|_| format!("{url:?}: port {p:?} is not a number"))?,
            ),
            _ => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(p.to_string())),
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Ok(Settings {
            host: host.to_string(),
            port,
            username,
            password,
            db,
            tls,
            ca: None,
        })
    }

    /// The URL without its password.
    pub fn display(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = if self.password.is_some() { "***@" } else { "" };
        format!("{scheme}://{auth}{}:{}/{}", self.host, self.port, self.db)
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    /// A bulk string, or a simple status (`OK`).
    Data(Vec<u8>),
    Array(Vec<Value>),
    /// An error answer (`-ERR ...`): the command failed, the connection is fine.
    Error(String),
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Data(d) => std::str::from_utf8(d).ok()?.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> &[Value] {
        match self {
            Value::Array(a) => a,
            _ => &[],
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Data(d) => Some(d),
            _ => None,
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A client; not shared between threads.
pub struct Client {
    settings: Settings,
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Option<BufReader<Box<dyn Stream>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis::Client({})", self.settings.display())
    }
}

/// A command: its words.
pub type Command = Vec<Vec<u8>>;

/// Builds a command from words.
pub fn cmd(words: &[&[u8]]) -> Command {
    words.iter().map(|w| w.to_vec()).collect()
}

impl Client {
    /// A client for `settings` (no connection yet); an error names a bad CA file.
    pub fn new(settings: Settings) -> Result<Client, String> {
        let tls = if settings.tls {
            Some(Arc::new(tls_config(settings.ca.as_ref())?))
        } else {
            None
        };
        Ok(Client {
            settings,
            tls,
            conn: None,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Sends `commands` in one write and reads their answers, connecting first if needed.
    /// An `Err` means the connection failed (and is dropped); a command's own failure is a
    /// [`Value::Error`] in its place.
    pub fn pipeline(&mut self, commands: &[Command]) -> io::Result<Vec<Value>> {
        let result = self.exchange(commands);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(&mut self, commands: &[Command]) -> io::Result<Vec<Value>> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        send(conn.get_mut(), commands)?;
        (0..commands.len()).map(|_| read_value(conn, 0)).collect()
    }

    fn connect(&self) -> io::Result<BufReader<Box<dyn Stream>>> {
        let s = &self.settings;
        let addrs: Vec<SocketAddr> = (s.host.as_str(), s.port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, TIMEOUT) {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(s.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let conn = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(io::Error::other)?;
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        };
        let mut conn = BufReader::new(stream);
        let mut hello = Vec::new();
        if let Some(p) = &s.password {
            hello.push(match &s.username {
                Some(u) => cmd(&[b"AUTH", u.as_bytes(), p.as_bytes()]),
                None => cmd(&[b"AUTH", p.as_bytes()]),
            });
        }
        if s.db != 0 {
            hello.push(cmd(&[b"SELECT", s.db.to_string().as_bytes()]));
        }
        if !hello.is_empty() {
            send(conn.get_mut(), &hello)?;
            for _ in &hello {
                if let Value::Error(e) = read_value(&mut conn, 0)? {
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, e));
                }
            }
        }
        Ok(conn)
    }
}

fn tls_config(ca: Option<&PathBuf>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let path = match ca {
        Some(p) => p.clone(),
        None => [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no system CA bundle found: give the Redis CA")?,
    };
    let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok) {
        let _ = roots.add(der);
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| e.to_string())
}

fn send(w: &mut dyn Stream, commands: &[Command]) -> io::Result<()> {
    let mut out = Vec::new();
    for c in commands {
        out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
        for word in c {
            out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
            out.extend_from_slice(word);
            out.extend_from_slice(b"\r\n");
        }
    }
    w.write_all(&out)?;
    w.flush()
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis protocol: {why}"))
}

fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.take(MAX_BULK as u64).read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(bad("a line without CRLF (connection closed?)"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_value(r: &mut impl BufRead, depth: usize) -> io::Result<Value> {
    if depth > 8 {
        return Err(bad("nested too deep"));
    }
    let line = read_line(r)?;
    let (&kind, rest) = line.split_first().ok_or_else(|| bad("an empty line"))?;
    let text = std::str::from_utf8(rest).map_err(|_| bad("a line that is not UTF-8"))?;
    let number = || {
        text.parse::<i64>()
            .map_err(|_| bad("a bad length or number"))
    };
    Ok(match kind {
        b'+' => Value::Data(rest.to_vec()),
        b'-' => Value::Error(text.to_string()),
        b':' => Value::Int(number()?),
        b'$' => match number()? {
            -1 => Value::Nil,
            n if n < 0 || n as usize > MAX_BULK => return Err(bad("a bulk string too long")),
            n => {
                let mut data = vec![0; n as usize + 2];
                r.read_exact(&mut data)?;
                data.truncate(n as usize);
                Value::Data(data)
            }
        },
        b'*' => match number()? {
            -1 => Value::Nil,
            n if n < 0 || n as usize > MAX_BULK / 16 => return Err(bad("an array too long")),
            n => Value::Array(
                (0..n)
                    .map(|_| read_value(r, depth + 1))
                    .collect::<io::Result<_>>()?,
            ),
        },
        _ => return Err(bad("an unknown type byte")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = Settings::parse("redis://:pw@10.0.0.1:6380/2").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.db), ("10.0.0.1", 6380, 2));
        assert_eq!(s.password.as_deref(), Some("pw"));
        assert_eq!(s.display(), "redis://***@10.0.0.1:6380/2");
        let s = Settings::parse("rediss://user:pw@cache.internal").unwrap();
        assert!(s.tls && s.port == 6379 && s.username.as_deref() == Some("user"));
        assert!(
            Settings::parse("http://x")
                .unwrap_err()
                .contains("redis://")
        );
        assert!(
            Settings::parse("redis://h:port")
                .unwrap_err()
                .contains("port")
        );
    }

    #[test]
    fn answers_parse() {
        let wire = b"+OK\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\nx\r\n:1\r\n-ERR no\r\n";
        let mut r = BufReader::new(&wire[..]);
        let got: Vec<Value> = (0..6).map(|_| read_value(&mut r, 0).unwrap()).collect();
        assert_eq!(
            got,
            [
                Value::Data(b"OK".to_vec()),
                Value::Int(42),
                Value::Data(b"abc".to_vec()),
                Value::Nil,
                Value::Array(vec![Value::Data(b"x".to_vec()), Value::Int(1)]),
                Value::Error("ERR no".into()),
            ]
        );
        assert!(read_value(&mut BufReader::new(&b"$5\r\nab"[..]), 0).is_err());
        assert!(read_value(&mut BufReader::new(&b"?x\r\n"[..]), 0).is_err());
    }
}
