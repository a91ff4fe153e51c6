//! TLS on listeners, through real clients: `openssl s_client` for what the handshake picks,
//! curl for HTTPS requests, Python's `ssl` for a connection kept open across a reload.
//! Certificates are made with the `openssl` command line, as a user would make them.

use crate::harness::Proxy;
use crate::upstream::Upstream;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardgate-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed ECDSA P-256 certificate for `names`, with CN `cn`: (cert, key) paths.
fn make_cert(dir: &Path, stem: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", &format!("/CN={cn}")])
        .args(["-addext", &format!("subjectAltName={}", san.join(","))])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `[listeners.tls]` lines for `pairs`, after the harness's `[[listeners]]` table.
fn tls_table(pairs: &[&(PathBuf, PathBuf)], extra: &str) -> String {
    let certs: Vec<String> = pairs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        "[listeners.tls]\ncertificates = [{}]\n{extra}\n",
        certs.join(", ")
    )
}

fn gateway(d: crate::harness::Driver, up: &Upstream, tls: &str) -> Proxy {
    gateway_with(d, up, tls, "")
}

/// [`gateway`] with `top` (top-level keys and tables such as `[admin]`) first.
fn gateway_with(d: crate::harness::Driver, up: &Upstream, tls: &str, top: &str) -> Proxy {
    Proxy::start_config_with(
        d,
        top,
        &format!(
            "{tls}\n[upstreams.app]\nendpoints = [\"{}\"]\n\n[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
            up.addr
        ),
    )
}

/// The CN of the certificate the proxy presents for `sni` (`None`: no SNI), or `None` when
/// the handshake fails.
fn presented_cn(proxy: &Proxy, sni: Option<&str>) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &proxy.addr.to_string(),
        "-alpn",
        "http/1.1",
    ]);
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.contains("ALPN protocol: http/1.1") {
        return None;
    }
    text.lines()
        .find_map(|l| {
            l.strip_prefix("subject=CN = ")
                .or_else(|| l.strip_prefix("subject=CN="))
        })
        .map(|cn| cn.trim().to_string())
}

/// curl's status and body for `https://{host}:{port}{path}`, trusting `ca`.
fn curl(proxy: &Proxy, host: &str, path: &str, ca: &Path) -> (String, String) {
    let port = proxy.addr.port();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// A Python `ssl` client on one connection to `port`: GET /before and print its status, wait
/// for a line on stdin, then GET /after on the same connection and print its status.
struct KeptOpen {
    py: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl KeptOpen {
    /// Starts the client; returns it with the first request's status.
    fn start(ca: &Path, port: u16) -> (KeptOpen, String) {
        let mut py = Command::new("python3")
            .args(["-c", &kept_open_script(ca, port)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let out = std::io::BufReader::new(py.stdout.take().unwrap());
        let mut client = KeptOpen { py, out };
        let status = client.status();
        (client, status)
    }

    fn status(&mut self) -> String {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut line).unwrap();
        line.trim().to_string()
    }

    /// Sends the second request; its status.
    fn again(&mut self) -> String {
        self.py.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        self.status()
    }
}

impl Drop for KeptOpen {
    fn drop(&mut self) {
        let _ = self.py.kill();
        let _ = self.py.wait();
    }
}

fn kept_open_script(ca: &Path, port: u16) -> String {
    format!(
        "import socket, ssl, sys\n\
         ctx = ssl.create_default_context(cafile='{}')\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='site.test')\n\
         def get(path):\n\
         \x20   s.sendall(('GET %s HTTP/1.1\\r\\nHost: site.test\\r\\n\\r\\n' % path).encode())\n\
         \x20   data = b''\n\
         \x20   while not data.endswith(path.encode()):\n\
         \x20       chunk = s.recv(4096)\n\
         \x20       if not chunk: return 'closed'\n\
         \x20       data += chunk\n\
         \x20   return data.split(b' ')[1].decode()\n\
         print(get('/before'), flush=True)\n\
         sys.stdin.readline()\n\
         print(get('/after'), flush=True)\n",
        ca.display()
    )
}

both_drivers! {
    fn sni_picks_exact_then_wildcard_then_the_default(d) {
        let dir = temp_dir(&format!("sni-{d:?}"));
        let default = make_cert(&dir, "default", "default", &["default.test"]);
        let wild = make_cert(&dir, "wild", "wildcard", &["*.example.test"]);
        let exact = make_cert(&dir, "exact", "exact", &["api.example.test"]);
        let up = Upstream::echo();
        let proxy = gateway(d, &up, &tls_table(&[&default, &wild, &exact], ""));
        let cases = [
            (Some("api.example.test"), "exact"),
            (Some("www.example.test"), "wildcard"),
            (Some("a.b.example.test"), "default"),
            (Some("unknown.test"), "default"),
            (None, "default"),
        ];
        for (sni, want) in cases {
            assert_eq!(presented_cn(&proxy, sni).as_deref(), Some(want), "SNI {sni:?}");
        }
        let strict = gateway(d, &up, &tls_table(&[&default, &wild], "unknown_name = \"refuse\""));
        assert_eq!(presented_cn(&strict, Some("unknown.test")), None, "refused");
        assert_eq!(presented_cn(&strict, None), None, "no SNI: refused");
        assert_eq!(presented_cn(&strict, Some("a.example.test")).as_deref(), Some("wildcard"));
    }

    fn https_requests_are_proxied_and_marked_https(d) {
        let dir = temp_dir(&format!("https-{d:?}"));
        let site = make_cert(&dir, "site", "site", &["site.test"]);
        let up = Upstream::echo();
        let proxy = gateway(d, &up, &tls_table(&[&site], ""));
        let (code, body) = curl(&proxy, "site.test", "/hello?x=1", &site.0);
        assert_eq!((code.as_str(), body.as_str()), ("200", "/hello?x=1"));
        let seen = up.requests();
        assert_eq!(seen[0].head.get("x-forwarded-proto"), Some("https"));
        assert_eq!(seen[0].head.get("host"), Some(format!("site.test:{}", proxy.addr.port()).as_str()));
        // A body larger than one TLS record, both ways.
        let big = "b".repeat(100_000);
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}"])
            .arg("--cacert")
            .arg(&site.0)
            .args(["--resolve", &format!("site.test:{}:127.0.0.1", proxy.addr.port())])
            .args(["--data-binary", &big])
            .arg(format!("https://site.test:{}/upload", proxy.addr.port()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200 100000");
        assert_eq!(up.requests()[1].body.len(), 100_000);
    }

    fn a_stalled_handshake_is_ended_by_its_timeout(d) {
        let dir = temp_dir(&format!("stall-{d:?}"));
        let site = make_cert(&dir, "site", "site", &["site.test"]);
        let up = Upstream::echo();
        let proxy = gateway(d, &up, &tls_table(&[&site], "handshake_timeout = \"1s\""));
        let started = Instant::now();
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.write_all(&[0x16, 0x03, 0x01]).unwrap(); // a ClientHello that never finishes
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
        // Plain HTTP to a TLS listener is not served.
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut out);
        assert!(!out.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&out));
        assert!(up.requests().is_empty());
    }
}

both_drivers! {
    fn the_one_liner_terminates_tls(d) {
        let dir = temp_dir(&format!("oneliner-{d:?}"));
        let (cert, key) = make_cert(&dir, "site", "site", &["site.test"]);
        let up = Upstream::echo();
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let proxy = Proxy::start_with(d, &[up.addr], &[("--tls-cert", &c), ("--tls-key", &k)]);
        assert_eq!(curl(&proxy, "site.test", "/one", &cert), ("200".into(), "/one".into()));
    }
}

/// `openssl s_client` sending one request: "New" or "Reused", saving or resuming `session`.
fn handshake_kind(proxy: &Proxy, session: &Path, save: bool, tls12: bool) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &proxy.addr.to_string(),
        "-servername",
        "site.test",
    ]);
    cmd.arg(if save { "-sess_out" } else { "-sess_in" })
        .arg(session);
    if tls12 {
        cmd.arg("-tls1_2");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Wait for the answer (TLS 1.3 tickets come after the handshake), then leave.
    std::thread::sleep(Duration::from_millis(300));
    let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("New,") || l.starts_with("Reused,"))
        .map_or_else(
            || format!("no handshake: {text}"),
            |l| l.split(',').next().unwrap().to_string(),
        )
}

both_drivers! {
    fn sessions_resume_on_every_shard(d) {
        let dir = temp_dir(&format!("resume-{d:?}"));
        let site = make_cert(&dir, "site", "site", &["site.test"]);
        let up = Upstream::echo();
        let config = format!(
            "{}\n[upstreams.app]\nendpoints = [\"{}\"]\n\n[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
            tls_table(&[&site], ""),
            up.addr
        );
        // Two shards: the kernel spreads connections between them by their ports.
        let proxy = Proxy::start_config_shards(d, 2, "", &config);
        for tls12 in [false, true] {
            let session = dir.join(format!("session-{tls12}.pem"));
            assert_eq!(handshake_kind(&proxy, &session, true, tls12), "New");
            let kinds: Vec<String> = (0..8).map(|_| handshake_kind(&proxy, &session, false, tls12)).collect();
            assert!(kinds.iter().all(|k| k == "Reused"), "TLS 1.2: {tls12}: {kinds:?}");
        }
    }

    fn a_parked_tls_connection_is_served_again(d) {
        let dir = temp_dir(&format!("park-{d:?}"));
        let site = make_cert(&dir, "site", "site", &["site.test"]);
        let up = Upstream::echo();
        let admin = crate::harness::bind_listener().local_addr().unwrap();
        let top = format!("[admin]\naddress = \"{admin}\"");
        let proxy = gateway_with(d, &up, &tls_table(&[&site], ""), &top);
        let (mut client, first) = KeptOpen::start(&site.0, proxy.addr.port());
        assert_eq!(first, "200", "the first request");
        // Idle for a second: the gateway parks the connection, TLS session and all.
        let parked = |n: &str| {
            let out = Command::new("curl")
                .args(["-s", &format!("http://{admin}/metrics")])
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l == format!("shardgate_parked_connections{{shard=\"0\"}} {n}"))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !parked("1") {
            assert!(Instant::now() < deadline, "the idle TLS connection was never parked");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(client.again(), "200", "the request on the parked connection");
        assert!(parked("0"));
    }

    fn a_reload_swaps_the_certificate_and_open_connections_carry_on(d) {
        let dir = temp_dir(&format!("reload-{d:?}"));
        let site = make_cert(&dir, "site", "before", &["site.test"]);
        let up = Upstream::echo();
        let proxy = gateway(d, &up, &tls_table(&[&site], ""));
        let (mut client, first) = KeptOpen::start(&site.0, proxy.addr.port());
        assert_eq!(first, "200", "before the reload");
        assert_eq!(presented_cn(&proxy, Some("site.test")).as_deref(), Some("before"));
        // New files in the same places, then SIGHUP.
        make_cert(&dir, "site", "after", &["site.test"]);
        let hup = Command::new("kill").args(["-HUP", &proxy.pid().to_string()]).status().unwrap();
        assert!(hup.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        while presented_cn(&proxy, Some("site.test")).as_deref() != Some("after") {
            assert!(Instant::now() < deadline, "the new certificate never served");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            client.again(),
            "200",
            "the connection opened before the reload carries on"
        );
    }
}

/// A CA (in `dir`) and a certificate it signed with `subject`, `extensions` (OpenSSL
/// syntax, one per line) and file stem `stem`: (CA cert, cert, key).
pub(crate) fn make_signed(
    dir: &Path,
    stem: &str,
    subject: &str,
    extensions: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = if ca_key.exists() {
        dir.join("ca.crt")
    } else {
        make_cert(dir, "ca", "Test CA", &["ca.test"]).0
    };
    let (cert, key, csr) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
        dir.join(format!("{stem}.csr")),
    );
    let ext = dir.join(format!("{stem}.ext"));
    std::fs::write(&ext, extensions).unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req".as_ref(),
        "-newkey".as_ref(),
        "ec".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:P-256".as_ref(),
        "-nodes".as_ref(),
        "-subj".as_ref(),
        subject.as_ref(),
        "-keyout".as_ref(),
        key.as_os_str(),
        "-out".as_ref(),
        csr.as_os_str(),
    ]);
    run(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-in".as_ref(),
        csr.as_os_str(),
        "-CA".as_ref(),
        ca.as_os_str(),
        "-CAkey".as_ref(),
        ca_key.as_os_str(),
        "-CAcreateserial".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-extfile".as_ref(),
        ext.as_os_str(),
        "-out".as_ref(),
        cert.as_os_str(),
    ]);
    (ca, cert, key)
}

/// A CA and a client certificate it signed (subject `/O=Acme, Inc/CN={cn}`, clientAuth).
fn make_client_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
    make_signed(
        dir,
        cn,
        &format!("/O=Acme, Inc/CN={cn}"),
        "extendedKeyUsage=clientAuth\n",
    )
}

/// curl with a client certificate (or none): the status, "000" when the handshake failed.
fn curl_as(
    proxy: &Proxy,
    server_ca: &Path,
    client: Option<(&Path, &Path)>,
    extra: &[&str],
) -> String {
    let port = proxy.addr.port();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .arg("--cacert")
    .arg(server_ca)
    .args(["--resolve", &format!("site.test:{port}:127.0.0.1")])
    .args(extra);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .arg(format!("https://site.test:{port}/who"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

both_drivers! {
    fn client_certificates_are_verified_and_their_subject_forwarded(d) {
        let dir = temp_dir(&format!("mtls-{d:?}"));
        let site = make_cert(&dir, "site", "site", &["site.test"]);
        let (ca, cert, key) = make_client_cert(&dir, "client-a");
        let other_dir = temp_dir(&format!("mtls-other-{d:?}"));
        let (_, stranger, stranger_key) = make_client_cert(&other_dir, "stranger");
        let forged = ["-H", "X-Client-Subject: CN=admin"];
        let up = Upstream::echo();
        let tls = tls_table(
            &[&site],
            &format!("client_ca = \"{}\"\nclient_subject_header = \"X-Client-Subject\"", ca.display()),
        );
        let required = gateway(d, &up, &tls);
        assert_eq!(curl_as(&required, &site.0, Some((&cert, &key)), &forged), "200");
        assert_eq!(curl_as(&required, &site.0, None, &[]), "000", "no certificate: no handshake");
        assert_eq!(curl_as(&required, &site.0, Some((&stranger, &stranger_key)), &[]), "000", "another CA's");
        let subjects: Vec<String> = up.requests().iter().map(|q| q.head.all("x-client-subject").join("|")).collect();
        assert_eq!(subjects, ["CN=client-a,O=Acme\\, Inc"], "verified, and the client's own is gone");

        // Optional: no certificate is fine, and nobody can claim one; one limit per subject.
        let up = Upstream::echo();
        let config = format!(
            "{}client_certificates = \"optional\"\n\n[upstreams.app]\nendpoints = [\"{}\"]\n\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n\
             filters = [{{ type = \"rate-limit\", rate = 1, per = \"1m\", burst = 1, key = \"client-cert\" }}]\n",
            tls, up.addr
        );
        let optional = Proxy::start_config(d, &config);
        assert_eq!(curl_as(&optional, &site.0, None, &forged), "200");
        assert_eq!(curl_as(&optional, &site.0, Some((&cert, &key)), &[]), "200", "its own bucket");
        assert_eq!(curl_as(&optional, &site.0, Some((&cert, &key)), &[]), "429");
        assert_eq!(curl_as(&optional, &site.0, Some((&stranger, &stranger_key)), &[]), "000", "a certificate sent must verify");
        let subjects: Vec<String> = up.requests().iter().map(|q| q.head.all("x-client-subject").join("|")).collect();
        assert_eq!(subjects, ["", "CN=client-a,O=Acme\\, Inc"]);
    }
}

/// A Python HTTPS server on 127.0.0.1 with `cert`/`key`: `setup` runs first (module-level
/// Python), `get` is the body of `do_GET` (indented 8 spaces; it sets `body` and sends the
/// status and any fields but `Content-Length`), `tls` adjusts `ctx`. Returns (child, port).
pub(crate) fn python_https_server(
    setup: &str,
    get: &str,
    tls: &str,
    cert: &Path,
    key: &Path,
) -> (std::process::Child, u16) {
    let script = format!(
        "import http.server, os, ssl\n\
         {setup}\
         class H(http.server.BaseHTTPRequestHandler):\n\
         \x20   protocol_version = 'HTTP/1.1'\n\
         \x20   def do_GET(self):\n\
         {get}\
         \x20       self.send_header('Content-Length', str(len(body)))\n\
         \x20       self.end_headers()\n\
         \x20       self.wfile.write(body)\n\
         \x20   def log_message(self, *a): pass\n\
         srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain('{}', '{}')\n\
         {tls}\
         srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
         print(srv.server_address[1], flush=True)\n\
         srv.serve_forever()\n",
        cert.display(),
        key.display()
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    (child, line.trim().parse().expect("the server's port"))
}

/// A Python HTTPS upstream answering `tls <path>`, with `cert`/`key`, requiring client
/// certificates from `client_ca` when given: (child, port).
fn https_upstream(cert: &Path, key: &Path, client_ca: Option<&Path>) -> (std::process::Child, u16) {
    let require = client_ca.map_or(String::new(), |ca| {
        format!(
            "ctx.verify_mode = ssl.CERT_REQUIRED\nctx.load_verify_locations('{}')\n",
            ca.display()
        )
    });
    let get = "\x20       body = ('tls ' + self.path).encode()\n\
               \x20       self.send_response(200)\n";
    python_https_server("", get, &require, cert, key)
}

both_drivers! {
    fn an_upstream_over_tls_is_verified(d) {
        let dir = temp_dir(&format!("upstream-{d:?}"));
        let leaf = "subjectAltName=DNS:up.test\nextendedKeyUsage=serverAuth\n";
        let (ca, up_cert, up_key) = make_signed(&dir, "up", "/CN=up", leaf);
        let (stranger, _, _) = make_signed(&temp_dir(&format!("upstream-other-{d:?}")), "up", "/CN=up", leaf);
        let (mut server, port) = https_upstream(&up_cert, &up_key, None);
        let group = |tls: &str| {
            format!(
                "[upstreams.app]\nendpoints = [\"127.0.0.1:{port}\"]\n[upstreams.app.tls]\n{tls}\n\n\
                 [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n"
            )
        };
        let ask = |proxy: &Proxy, path: &str| {
            let mut c = proxy.client();
            c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let r = c.expect_final(false, "the answer");
            (r.status, String::from_utf8_lossy(&r.body).into_owned())
        };
        let good = Proxy::start_config(d, &group(&format!("sni = \"up.test\"\nca = \"{}\"", ca.display())));
        assert_eq!(ask(&good, "/one"), (200, "tls /one".to_string()));
        assert_eq!(ask(&good, "/two"), (200, "tls /two".to_string()), "and again, pooled");
        let wrong_ca = Proxy::start_config(d, &group(&format!("sni = \"up.test\"\nca = \"{}\"", stranger.display())));
        assert_eq!(ask(&wrong_ca, "/x").0, 502);
        let log = wrong_ca.log_text();
        assert!(log.contains("TLS: invalid peer certificate"), "the reason is logged: {log}");
        let wrong_name = Proxy::start_config(d, &group(&format!("sni = \"other.test\"\nca = \"{}\"", ca.display())));
        assert_eq!(ask(&wrong_name, "/x").0, 502, "the certificate does not name other.test");
        let _ = server.kill();
        let _ = server.wait();
    }
}

both_drivers! {
    fn tls_groups_probe_over_tls_and_present_a_client_certificate(d) {
        let dir = temp_dir(&format!("upstream-mtls-{d:?}"));
        let leaf = "subjectAltName=DNS:up.test\nextendedKeyUsage=serverAuth\n";
        let (ca, up_cert, up_key) = make_signed(&dir, "up", "/CN=up", leaf);
        let (_, gw_cert, gw_key) = make_client_cert(&dir, "gateway");
        let (mut server, port) = https_upstream(&up_cert, &up_key, Some(&ca));
        let group = |identity: &str| {
            format!(
                "[upstreams.app]\nendpoints = [\"127.0.0.1:{port}\"]\n\
                 [upstreams.app.tls]\nsni = \"up.test\"\nca = \"{}\"\n{identity}\n\
                 [upstreams.app.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"1s\"\n\n\
                 [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
                ca.display()
            )
        };
        let ask = |proxy: &Proxy| {
            let mut c = proxy.client();
            c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
            c.expect_final(false, "the answer").status
        };
        let with = Proxy::start_config(
            d,
            &group(&format!("cert = \"{}\"\nkey = \"{}\"", gw_cert.display(), gw_key.display())),
        );
        assert_eq!(ask(&with), 200);
        // Probes speak TLS too: after a dozen of them the endpoint never went unhealthy.
        std::thread::sleep(Duration::from_millis(1500));
        let log = with.log_text();
        assert!(!log.contains("unhealthy"), "probes failed over TLS: {log}");
        let without = Proxy::start_config(d, &group(""));
        assert_eq!(ask(&without), 502, "the upstream wants a client certificate");
        std::thread::sleep(Duration::from_millis(800));
        assert!(without.log_text().contains("unhealthy"), "failing probes are seen: {}", without.log_text());
        let _ = server.kill();
        let _ = server.wait();
    }
}

#[test]
fn check_names_the_file_of_a_bad_certificate_or_key() {
    let dir = temp_dir("check");
    let a = make_cert(&dir, "a", "a", &["a.test"]);
    let b = make_cert(&dir, "b", "b", &["b.test"]);
    let config = dir.join("gw.toml");
    let write = |cert: &Path, key: &Path| {
        std::fs::write(
            &config,
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\n\
                 certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
                 [upstreams.app]\nendpoints = [\"127.0.0.1:9\"]\n\
                 [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
    };
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["check", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    write(&a.0, &a.1);
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(text.contains("for a.test, expires"), "{text}");
    assert!(
        text.contains("warning: listeners[0].tls.certificates[0]"),
        "30 days: {text}"
    );
    write(&a.0, &b.1);
    let (ok, text) = check();
    assert!(!ok);
    assert!(text.contains("listeners[0].tls.certificates[0]"), "{text}");
    assert!(
        text.contains(&b.1.display().to_string()) && text.contains("does not belong"),
        "{text}"
    );
    let broken = dir.join("broken.crt");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    write(&broken, &a.1);
    let (ok, text) = check();
    assert!(
        !ok && text.contains(&broken.display().to_string()),
        "{text}"
    );
}

/// What `curl --http2` over TLS gets: (HTTP version, status, body).
fn curl_h2(
    proxy: &Proxy,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    body: Option<&str>,
) -> (String, String, String) {
    let port = proxy.addr.port();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--http2",
        "--max-time",
        "5",
        "-w",
        "\n%{http_version} %{http_code}",
    ])
    .arg("--cacert")
    .arg(ca)
    .args(["--resolve", &format!("site.test:{port}:127.0.0.1")]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    let out = cmd
        .arg(format!("https://site.test:{port}/h2"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, code) = tail.split_once(' ').unwrap_or((tail, ""));
    (version.to_string(), code.to_string(), body.to_string())
}

both_drivers! {
    fn http2_over_tls_is_chosen_by_alpn(d) {
        let dir = temp_dir(&format!("h2-alpn-{d:?}"));
        let site = make_cert(&dir, "site", "site", &["site.test"]);
        let (ca, cert, key) = make_client_cert(&dir, "client-h2");
        let up = Upstream::echo();
        let tls = tls_table(
            &[&site],
            &format!(
                "client_ca = \"{}\"\nclient_certificates = \"optional\"\nclient_subject_header = \"X-Client-Subject\"",
                ca.display()
            ),
        );
        let proxy = gateway(d, &up, &format!("http2 = true\n{tls}"));
        let (v, code, body) = curl_h2(&proxy, &site.0, Some((&cert, &key)), None);
        assert_eq!((v.as_str(), code.as_str(), body.as_str()), ("2", "200", "/h2"));
        // A body larger than a TLS record, and one larger than the stream's first window.
        let big = "b".repeat(120_000);
        let (v, code, _) = curl_h2(&proxy, &site.0, None, Some(&big));
        assert_eq!((v.as_str(), code.as_str()), ("2", "200"));
        let seen = up.requests();
        assert_eq!(seen[0].head.get("x-forwarded-proto"), Some("https"), "an h2 stream over TLS is https");
        assert_eq!(seen[0].head.get("x-client-subject"), Some("CN=client-h2,O=Acme\\, Inc"), "the certificate's subject");
        assert_eq!(seen[1].body.len(), 120_000);
        assert_eq!(seen[1].head.get("x-client-subject"), None);
        // The same listener serves a client that offers only HTTP/1.1.
        assert_eq!(curl(&proxy, "site.test", "/one", &site.0), ("200".into(), "/one".into()));
        // h2load: many streams over few TLS connections.
        let out = Command::new("h2load")
            .args(["-c", "4", "-m", "10", "-n", "2000"])
            .arg(format!("https://127.0.0.1:{}/load", proxy.addr.port()))
            .output()
            .expect("h2load (apt-get install nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("2000 succeeded, 0 failed"), "{text}");
        assert!(text.contains("Application protocol: h2"), "{text}");

        // Without `http2`, h2 is not offered: curl falls back to HTTP/1.1.
        let plain = gateway(d, &up, &tls_table(&[&site], ""));
        let (v, code, _) = curl_h2(&plain, &site.0, None, None);
        assert_eq!((v.as_str(), code.as_str()), ("1.1", "200"));
    }
}
