//! Processes for the operations tests: the gateway from a config file, the
//! bundled upstream and load generator, and small blocking HTTP helpers.
//! Everything is bounded in time and killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SHARDGATE: &str = env!("CARGO_BIN_EXE_shardgate");

fn loadtest_bin() -> PathBuf {
    let p = Path::new(SHARDGATE).with_file_name("loadtest");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p loadtest` (cargo test --workspace does)",
        p.display()
    );
    p
}

pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A `loadtest upstream --name NAME`; answers carry `X-Upstream: NAME`.
pub struct Upstream {
    child: Child,
    pub addr: String,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Upstream::start_with(name, &[])
    }

    pub fn start_with(name: &str, extra: &[&str]) -> Upstream {
        let mut child = Command::new(loadtest_bin())
            .args([
                "upstream",
                "--listen",
                "127.0.0.1:0",
                "--threads",
                "1",
                "--name",
                name,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting loadtest upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening on ADDR")
            .to_string();
        Upstream { child, addr }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Free loopback ports for the gateway's listener and admin server.
pub struct Ports {
    pub listen: u16,
    pub admin: u16,
}

/// A loopback port free at the moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Ports {
    pub fn pick() -> Ports {
        Ports {
            listen: free_port(),
            admin: free_port(),
        }
    }
}

/// Two routes: everything to upstream `a`, and `/which` to `which`.
pub fn config_text(ports: &Ports, a: &Upstream, b: &Upstream, which: &str) -> String {
    format!(
        "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n\
         [shutdown]\ndrain_timeout = \"5s\"\n[upstreams.a]\nendpoints = [\"{}\"]\n[upstreams.b]\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"main\"\nprefix = \"/\"\nupstream = \"a\"\n\
         [[routes]]\nname = \"which\"\npath = \"/which\"\nupstream = \"{which}\"\n",
        ports.listen, ports.admin, a.addr, b.addr
    )
}

/// A configuration file, replaced atomically on every write.
pub struct ConfigFile {
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(name: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("shardgate-ops-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ConfigFile {
            path: dir.join(format!("{name}.toml")),
        }
    }

    pub fn write(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

/// `shardgate run -c FILE`, killed on drop.
pub struct Gateway {
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Gateway {
    pub fn start(cfg: &ConfigFile, ports: &Ports) -> Gateway {
        Gateway::start_with(cfg, ports, &[])
    }

    /// With more `run` arguments (command-line overrides).
    pub fn start_with(cfg: &ConfigFile, _ports: &Ports, args: &[&str]) -> Gateway {
        let mut all = vec!["run".to_string(), "-c".to_string()];
        all.push(cfg.path.display().to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        let gw = Gateway::spawn(&all);
        gw.wait_started();
        gw
    }

    /// `shardgate ARGS`, not waited for.
    pub fn spawn(args: &[String]) -> Gateway {
        let mut child = Command::new(SHARDGATE)
            .args(args)
            .env("SHARDGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting shardgate");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Gateway { child, log }
    }

    /// Waits for the "listening on" line.
    pub fn wait_started(&self) {
        assert!(
            self.wait_log(Duration::from_secs(10), "listening on"),
            "shardgate did not start: {}",
            self.log.lock().unwrap()
        );
    }

    /// Whether `needle` appears in the log within `limit`.
    pub fn wait_log(&self, limit: Duration, needle: &str) -> bool {
        wait_for(limit, || self.log.lock().unwrap().contains(needle))
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; `Some(success)`, or `None` on timeout.
    pub fn wait_exit(mut self, limit: Duration) -> Option<bool> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bundled load generator, closed loop, for a fixed time.
pub struct Load {
    child: Child,
    json: PathBuf,
}

#[derive(Debug)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub non_2xx: u64,
    /// Errors by kind, as the load generator reports them.
    pub kinds: String,
}

impl Load {
    /// Eight keep-alive connections for `seconds`.
    pub fn start(ports: &Ports, seconds: u64) -> Load {
        Load::start_with(ports, seconds, "keep-alive", &["-c", "8"])
    }

    /// The load generator with `extra` arguments; `name` tells its report
    /// file apart from other loads on the same port.
    pub fn start_with(ports: &Ports, seconds: u64, name: &str, extra: &[&str]) -> Load {
        Load::start_on(ports, "/load", seconds, name, extra)
    }

    /// [`Load::start_with`] requesting `path`.
    pub fn start_on(ports: &Ports, path: &str, seconds: u64, name: &str, extra: &[&str]) -> Load {
        let json = std::env::temp_dir().join(format!(
            "shardgate-ops-{}-{}-{name}.json",
            std::process::id(),
            ports.listen
        ));
        let child = Command::new(loadtest_bin())
            .args(extra)
            .args(["-t", "1", "-w", "0", "--no-progress", "--timeout", "5s"])
            .args(["-d", &format!("{seconds}s"), "--json"])
            .arg(&json)
            .arg(format!("http://127.0.0.1:{}{path}", ports.listen))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting loadtest");
        Load { child, json }
    }

    pub fn finish(mut self) -> Report {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "loadtest failed");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.json).unwrap()).unwrap();
        let n = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("{k} missing in {v}"))
        };
        Report {
            requests: n("requests"),
            errors: n("errors_total"),
            non_2xx: n("non_2xx"),
            kinds: v["errors"].to_string(),
        }
    }
}

/// A load that is not finished (a test that failed midway) does not outlive the test.
impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a new connection: (status, raw response).
pub fn request(port: u16, method: &str, path: &str) -> (u16, String) {
    request_with(port, method, path, "")
}

/// [`request`] with more header lines (each ending in CRLF).
pub fn request_with(port: u16, method: &str, path: &str, extra: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n{extra}\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub fn raw_get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path)
}

/// Which upstream answered `GET /which`.
pub fn which(ports: &Ports) -> String {
    let (_, text) = raw_get(ports.listen, "/which");
    text.lines()
        .find_map(|l| l.strip_prefix("X-Upstream: "))
        .unwrap_or("?")
        .trim()
        .to_string()
}

/// (status, body) of an admin request.
pub fn admin_request(ports: &Ports, method: &str, path: &str) -> (u16, String) {
    let (status, text) = request(ports.admin, method, path);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn admin_get(ports: &Ports, path: &str) -> String {
    let (status, body) = admin_request(ports, "GET", path);
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// A CA, a certificate for 127.0.0.1 and a client certificate it signed (ECDSA P-256, made
/// with the openssl command line).
#[allow(dead_code)] // the fleet tests use it; the ops tests make no certificates
pub struct Pki {
    pub ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

#[allow(dead_code)]
pub fn make_pki(dir: &std::path::Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "30", "-subj", "/CN=fleet test CA"],
            &[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    for (stem, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, crt, extfile) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
            format!("{stem}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext).unwrap();
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-subj",
                    &format!("/CN={stem}"),
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ]);
    }
    Pki {
        ca: dir.join("ca.crt"),
        server: (dir.join("server.crt"), dir.join("server.key")),
        client: (dir.join("client.crt"), dir.join("client.key")),
    }
}
