//! Remote JWKS: `jwt` keys fetched from an identity provider over HTTPS. The provider is a
//! Python HTTPS server that serves whatever `jwks.json` in its directory says (so the test
//! rotates keys by rewriting it), answers 500 while a `down` file exists, and appends one
//! line to `hits` per request (so the test counts fetches). Tokens are ES256, signed with
//! keys made by `openssl`.

use crate::harness::{Driver, Proxy, bind_listener, dead_addr};
use crate::tls::{make_signed, python_https_server, temp_dir};
use crate::upstream::Upstream;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// An EC P-256 key for signing tokens: its PEM, and its public JWK with `kid`.
fn signing_key(dir: &Path, kid: &str) -> (Vec<u8>, String) {
    let key = dir.join(format!("{kid}.key"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let path = key.to_str().unwrap();
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path,
    ]);
    // The public key's DER ends with the uncompressed point: 04, x (32 bytes), y (32 bytes).
    let der = run(&["pkey", "-in", path, "-pubout", "-outform", "DER"]);
    let (x, y) = der[der.len() - 64..].split_at(32);
    let jwk = format!(
        "{{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"{kid}\",\"alg\":\"ES256\",\"use\":\"sig\",\"x\":\"{}\",\"y\":\"{}\"}}",
        base64url(x),
        base64url(y)
    );
    (std::fs::read(&key).unwrap(), jwk)
}

fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An ES256 token for `kid`, signed with `pem`, valid for an hour.
fn token(pem: &[u8], kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = serde_json::json!({ "sub": "alice", "exp": exp });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(pem).unwrap(),
    )
    .unwrap()
}

/// The provider: a Python HTTPS server on 127.0.0.1 serving `dir`/jwks.json.
struct Provider {
    child: Child,
    dir: PathBuf,
    port: u16,
    ca: PathBuf,
}

impl Provider {
    fn start(dir: &Path) -> Provider {
        let leaf = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
        let (ca, cert, key) = make_signed(dir, "idp", "/CN=idp", leaf);
        let setup = format!("d = '{}'\n", dir.display());
        let get = "\x20       with open(os.path.join(d, 'hits'), 'a') as f: f.write(self.path + '\\n')\n\
                   \x20       if os.path.exists(os.path.join(d, 'down')):\n\
                   \x20           body = b'down'\n\
                   \x20           self.send_response(500)\n\
                   \x20       else:\n\
                   \x20           body = open(os.path.join(d, 'jwks.json'), 'rb').read()\n\
                   \x20           self.send_response(200)\n\
                   \x20           self.send_header('Content-Type', 'application/json')\n";
        let (child, port) = python_https_server(&setup, get, "", &cert, &key);
        Provider {
            child,
            dir: dir.to_path_buf(),
            port,
            ca,
        }
    }

    fn publish(&self, jwks: &[&str]) {
        let doc = format!("{{\"keys\":[{}]}}", jwks.join(","));
        let tmp = self.dir.join("jwks.json.tmp");
        std::fs::write(&tmp, doc).unwrap();
        std::fs::rename(tmp, self.dir.join("jwks.json")).unwrap();
    }

    fn set_down(&self, down: bool) {
        let flag = self.dir.join("down");
        if down {
            std::fs::write(flag, "").unwrap();
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// Requests the provider has had.
    fn hits(&self) -> usize {
        std::fs::read_to_string(self.dir.join("hits")).map_or(0, |t| t.lines().count())
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with a jwt route whose key set is at `url`, and an admin listener.
fn gateway(url: &str, ca: &Path, up: &Upstream) -> (Proxy, u16) {
    let admin = bind_listener().local_addr().unwrap().port();
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
         [upstreams.app]\nendpoints = [\"{}\"]\n\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n\
         filters = [{{ type = \"jwt\", keys = [{{ jwks_url = \"{url}\", ca = \"{}\", \
         refresh = \"1h\", min_refresh = \"1s\" }}] }}]\n",
        up.addr,
        ca.display()
    );
    (Proxy::start_config(Driver::Uring, &config), admin)
}

/// The status of `GET /` with `token`, and the response's `Retry-After`.
fn ask(proxy: &Proxy, token: &str) -> (u16, Option<String>) {
    ask_at(proxy, "/", token)
}

fn ask_at(proxy: &Proxy, path: &str, token: &str) -> (u16, Option<String>) {
    let mut c = proxy.client();
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\n\r\n");
    c.send(req.as_bytes());
    let r = c.expect_final(false, "the answer");
    (r.status, r.head.get("retry-after").map(str::to_string))
}

fn metrics(admin: u16) -> String {
    admin_request(admin, "GET", "/metrics")
}

/// The admin server's whole answer to `method path`.
fn admin_request(admin: u16, method: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ask = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(ask.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The value of the `name` sample in `text` (0 when absent).
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b'{'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Polls `f` until it holds or `within` passes.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn rotated_keys_are_fetched_early_bogus_kids_are_throttled_and_outages_keep_the_last_set() {
    let dir = temp_dir("jwks-rotation");
    let _ = std::fs::remove_file(dir.join("hits"));
    let (a_pem, a_jwk) = signing_key(&dir, "a");
    let (b_pem, b_jwk) = signing_key(&dir, "b");
    let idp = Provider::start(&dir);
    idp.publish(&[&a_jwk]);
    let up = Upstream::echo();
    let url = format!("https://127.0.0.1:{}/jwks", idp.port);
    let (proxy, admin) = gateway(&url, &idp.ca, &up);

    assert_eq!(
        ask(&proxy, &token(&a_pem, "a")).0,
        200,
        "the set is there from the start"
    );
    assert_eq!(idp.hits(), 1, "one fetch at start");

    // The provider rotates in key b: its first token finds no such kid and asks for an early
    // fetch (refresh is an hour away); within a tick or two it is accepted.
    idp.publish(&[&a_jwk, &b_jwk]);
    let b = token(&b_pem, "b");
    assert_eq!(ask(&proxy, &b).0, 401, "unknown until fetched");
    assert!(
        eventually(Duration::from_secs(5), || ask(&proxy, &b).0 == 200),
        "key b is fetched early: {}",
        proxy.log_text()
    );

    // A flood of made-up kids for 3 s: every one refused, and the provider asked at most
    // once per min_refresh (1 s).
    std::thread::sleep(Duration::from_millis(1100));
    let before = idp.hits();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(ask(&proxy, &token(&a_pem, &format!("bogus-{n}"))).0, 401);
        n += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    let fetched = idp.hits() - before;
    eprintln!("{n} tokens with made-up kids in 3 s: {fetched} fetches");
    assert!(n > 100, "the flood was a flood: {n} requests");
    assert!(
        (1..=4).contains(&fetched),
        "{fetched} fetches for {n} bogus kids in 3 s"
    );

    // The provider fails: the last good set keeps serving, the failure is logged and counted.
    idp.set_down(true);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(ask(&proxy, &token(&a_pem, "bogus-again")).0, 401);
    assert!(
        eventually(Duration::from_secs(5), || {
            sample(&metrics(admin), "shardgate_jwks_fetch_failures_total") >= 1
        }),
        "a failed fetch is counted: {}",
        metrics(admin)
    );
    assert_eq!(ask(&proxy, &b).0, 200, "the last good set is kept");
    assert_eq!(ask(&proxy, &token(&a_pem, "a")).0, 200);
    let log = proxy.log_text();
    assert!(
        log.contains("fetch failed") && log.contains("keeping the last good set (2 keys)"),
        "{log}"
    );
    let m = metrics(admin);
    assert_eq!(sample(&m, "shardgate_jwks_keys"), 2, "{m}");
    assert!(sample(&m, "shardgate_jwks_fetches_total") >= 3, "{m}");

    // Back, with key a retired: tokens of a stop working once the set is fetched again.
    idp.set_down(false);
    idp.publish(&[&b_jwk]);
    std::thread::sleep(Duration::from_millis(1100));
    let _ = ask(&proxy, &token(&a_pem, "c"));
    assert!(
        eventually(Duration::from_secs(5), || ask(&proxy, &token(&a_pem, "a"))
            .0
            == 401),
        "key a is gone after the next fetch"
    );
    assert_eq!(ask(&proxy, &b).0, 200);
}

#[test]
fn tokens_wait_with_503_until_the_first_set_arrives() {
    let dir = temp_dir("jwks-unreachable");
    let (a_pem, _) = signing_key(&dir, "a");
    let leaf = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    let (ca, _, _) = make_signed(&dir, "idp", "/CN=idp", leaf);
    let up = Upstream::echo();
    let url = format!("https://{}/jwks", dead_addr());
    let (proxy, admin) = gateway(&url, &ca, &up);
    let (status, retry) = ask(&proxy, &token(&a_pem, "a"));
    assert_eq!(
        status, 503,
        "no key set yet: the gateway's problem, not the token's"
    );
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(up.requests().is_empty());
    let log = proxy.log_text();
    assert!(log.contains("fetch failed, no keys yet"), "{log}");
    assert!(sample(&metrics(admin), "shardgate_jwks_fetch_failures_total") >= 1);
}

#[test]
fn a_reload_that_adds_a_jwks_url_has_its_keys_from_the_first_request() {
    let dir = temp_dir("jwks-reload");
    let _ = std::fs::remove_file(dir.join("hits"));
    let (a_pem, a_jwk) = signing_key(&dir, "a");
    let idp = Provider::start(&dir);
    idp.publish(&[&a_jwk]);
    let up = Upstream::echo();
    let admin = bind_listener().local_addr().unwrap().port();
    let proxy = Proxy::start_config(
        Driver::Uring,
        &format!(
            "[admin]\naddress = \"127.0.0.1:{admin}\"\n\n\
             [upstreams.app]\nendpoints = [\"{}\"]\n\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
            up.addr
        ),
    );
    assert_eq!(idp.hits(), 0);
    let mut text = std::fs::read_to_string(proxy.config_path()).unwrap();
    text.push_str(&format!(
        "\n[[routes]]\nprefix = \"/secure\"\nupstream = \"app\"\n\
         filters = [{{ type = \"jwt\", keys = [{{ jwks_url = \"https://127.0.0.1:{}/jwks\", \
         ca = \"{}\" }}] }}]\n",
        idp.port,
        idp.ca.display()
    ));
    std::fs::write(proxy.config_path(), text).unwrap();
    let answer = admin_request(admin, "POST", "/reload");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(idp.hits(), 1, "fetched while reloading");
    let first = ask_at(&proxy, "/secure", &token(&a_pem, "a")).0;
    assert_eq!(first, 200, "no 503 after the reload");
}
