//! The demo (`shardgate` with no arguments) on free ports: every command its
//! banner prints is run, in banner order, by the small HTTP client below
//! (curl may be missing), and must do what its comment says. A banner
//! command without a check here fails the test, and so does a check whose
//! command left the banner.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the demo may take to print its banner.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Each read or write of one exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The banner's last line.
const LAST_LINE: &str = "Ctrl-C stops it.";

/// The demo process, killed when dropped.
struct Demo {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts the demo on free ports and returns it with its banner.
    fn start() -> (Demo, Vec<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .env("SHARDGATE_DEMO_PORT_BASE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the demo");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let demo = Demo {
            child,
            stderr: Arc::default(),
        };
        let log = demo.stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line == LAST_LINE => return (demo, banner),
                Ok(line) => banner.push(line),
                Err(e) => panic!(
                    "no banner ({e:?}); stdout so far:\n{}\nstderr:\n{}",
                    banner.join("\n"),
                    demo.stderr.lock().unwrap()
                ),
            }
        }
    }
}

/// One banner command: its HTTP request and how many times the shell runs it.
#[derive(Debug, Clone)]
struct Curl {
    line: String,
    repeat: u32,
    method: String,
    /// `host:port` from the URL.
    addr: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn run(&self) -> Reply {
        exchange(self).unwrap_or_else(|e| panic!("{}: {e}", self.line))
    }

    /// Every response of the command's runs, in order.
    fn run_all(&self) -> Vec<Reply> {
        (0..self.repeat).map(|_| self.run()).collect()
    }
}

/// The banner's commands: `curl ...` lines and `for i in $(seq N); do curl ...; done ...`.
fn commands(banner: &[String]) -> Vec<Curl> {
    let mut out = Vec::new();
    for line in banner {
        let text = line.trim_start();
        let (repeat, curl) = if let Some(rest) = text.strip_prefix("for i in $(seq ") {
            let (n, rest) = rest.split_once("); do ").expect("for i in $(seq N); do");
            let (curl, _) = rest.split_once("; done").expect("; done");
            (n.parse().expect("a count"), curl)
        } else if text.starts_with("curl ") {
            (1, text)
        } else {
            assert!(
                !text.contains("curl "),
                "a command the test cannot read: {line}"
            );
            continue;
        };
        out.push(parse_curl(line, repeat, &words(curl)));
    }
    out
}

/// Shell words, with '...' and "..." quoting, up to a comment or a pipe.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') | Some('|') => return out,
            _ => {}
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            match c {
                '\'' | '"' => word.extend(chars.by_ref().take_while(|&q| q != c)),
                c => word.push(c),
            }
        }
        out.push(word);
    }
}

fn parse_curl(line: &str, repeat: u32, words: &[String]) -> Curl {
    assert_eq!(words[0], "curl", "{line}");
    let mut method = None;
    let mut url = None;
    let mut headers = Vec::new();
    let mut body = None;
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{arg} needs a value: {line}"))
        };
        match arg.as_str() {
            "-i" | "-s" => {}
            "-o" | "-w" => {
                value();
            }
            "-X" => method = Some(value().clone()),
            "-H" => {
                let (name, v) = value().split_once(':').expect("-H 'Name: value'");
                headers.push((name.to_string(), v.trim().to_string()));
            }
            "-d" => body = Some(value().clone()),
            a if a.starts_with("http://") => url = Some(a.to_string()),
            a => panic!("the test does not know curl's {a}: {line}"),
        }
    }
    let url = url.unwrap_or_else(|| panic!("no URL: {line}"));
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, target) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
    Curl {
        line: line.trim().to_string(),
        repeat,
        method,
        addr: addr.to_string(),
        target: if target.is_empty() { "/" } else { target }.to_string(),
        headers,
        body,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The demo upstream's description of the request it received.
    fn echo(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// A header the upstream received.
    fn echoed(&self, name: &str) -> Option<String> {
        let echo = self.echo();
        echo["headers"]
            .as_object()
            .expect("echoed headers")
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str().unwrap().to_string())
    }

    fn instance(&self) -> String {
        self.echo()["instance"].as_str().unwrap().to_string()
    }
}

/// What curl sends for `c`, on a connection of its own, and the response.
fn exchange(c: &Curl) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(&c.addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", c.method, c.target);
    if c.header("host").is_none() {
        head.push_str(&format!("Host: {}\r\n", c.addr));
    }
    head.push_str("User-Agent: demo-test\r\nAccept: */*\r\n");
    for (name, value) in &c.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = &c.body {
        head.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(c.body.as_deref().unwrap_or(""));
    stream.write_all(head.as_bytes())?;

    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse::<usize>().expect("a length"));
    assert!(
        !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")),
        "the demo's responses have a length: {head}"
    );
    let mut body = buf[head_end..].to_vec();
    while body.len() < length && c.method != "HEAD" {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Runs `c` and checks what the banner says of it; returns the check's name.
fn check(c: &Curl) -> &'static str {
    let key = c.header("x-api-key");
    let bearer = c.header("authorization").is_some();
    match (c.method.as_str(), c.header("host"), c.target.as_str()) {
        ("GET", None, "/api/hello") => {
            let (a, b) = (c.run(), c.run());
            assert_eq!((a.status, b.status), (200, 200), "{}", c.line);
            let mut instances = [a.instance(), b.instance()];
            instances.sort();
            assert_eq!(instances, ["blue", "green"], "round robin: {}", c.line);
            let id = a.header("x-request-id").expect("X-Request-Id");
            assert_eq!(a.echoed("x-request-id").as_deref(), Some(id));
            assert!(a.echoed("traceparent").is_some(), "{a:?}");
            "round robin"
        }
        ("GET", None, "/status") => {
            let r = c.run();
            assert_eq!((r.status, r.instance().as_str()), (200, "blue"));
            "status"
        }
        ("POST", None, "/status") => {
            let r = c.run();
            assert_eq!(r.status, 405, "{r:?}");
            assert!(
                r.header("allow").is_some_and(|a| a.contains("GET")),
                "{r:?}"
            );
            "method not allowed"
        }
        ("GET", Some("green.localhost"), "/") => {
            for _ in 0..3 {
                assert_eq!(c.run().instance(), "green");
            }
            "host routing"
        }
        ("GET", None, "/nowhere") => {
            assert_eq!(c.run().status, 404);
            "no route"
        }
        ("POST", None, "/api/echo") => {
            let r = c.run();
            assert_eq!(r.status, 200);
            assert_eq!(r.echo()["body_bytes"], 5, "{r:?}");
            "body"
        }
        ("GET", None, "/old/docs") => {
            let r = c.run();
            assert_eq!(r.status, 301);
            assert_eq!(r.header("location"), Some("/api/docs"));
            "redirect"
        }
        ("GET", None, "/canary") => {
            let replies = c.run_all();
            let blue = replies.iter().filter(|r| r.instance() == "blue").count();
            assert_eq!((replies.len(), blue), (20, 14), "canary: 14 blue of 20");
            "canary"
        }
        ("GET", None, "/flaky") => {
            let codes: Vec<u16> = c.run_all().iter().map(|r| r.status).collect();
            let opened = codes.iter().position(|&s| s == 503);
            let opened = opened.unwrap_or_else(|| panic!("the breaker never opened: {codes:?}"));
            assert!(opened >= 4, "{codes:?}");
            assert_eq!(codes[0], 500, "{codes:?}");
            assert!(codes[opened..].iter().all(|&s| s == 503), "{codes:?}");
            "breaker"
        }
        ("GET", None, "/limited") => {
            let replies = c.run_all();
            let codes: Vec<u16> = replies.iter().map(|r| r.status).collect();
            assert_eq!(codes[..5], [200; 5], "{codes:?}");
            let refused = replies.iter().find(|r| r.status == 429);
            let refused = refused.unwrap_or_else(|| panic!("no 429: {codes:?}"));
            assert!(refused.header("retry-after").is_some(), "{refused:?}");
            "rate limit"
        }
        ("GET", None, "/keyed/hello") => match key {
            None => {
                let r = c.run();
                assert_eq!(r.status, 401);
                assert!(
                    r.header("www-authenticate")
                        .is_some_and(|v| v.starts_with("ApiKey"))
                );
                "no api key"
            }
            Some("demo-key") => {
                let r = c.run();
                assert_eq!(r.status, 200);
                assert_eq!(r.echoed("x-consumer").as_deref(), Some("demo-app"));
                assert_eq!(r.echoed("x-api-key"), None, "the key stays at the gateway");
                assert!(r.header("x-request-id").is_some(), "{r:?}");
                "api key"
            }
            Some(_) => {
                assert_eq!(c.run().status, 403);
                "wrong api key"
            }
        },
        ("GET", None, "/jwt/hello") if !bearer => {
            let r = c.run();
            assert_eq!(r.status, 401);
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer"))
            );
            "no token"
        }
        ("GET", None, "/jwt/hello") => {
            let r = c.run();
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.echoed("x-user").as_deref(), Some("alice"));
            "token"
        }
        ("OPTIONS", None, "/api/hello") => {
            let r = c.run();
            assert_eq!(r.status, 204, "{r:?}");
            assert_eq!(
                r.header("access-control-allow-origin"),
                c.header("origin"),
                "{r:?}"
            );
            assert!(
                r.header("access-control-allow-methods")
                    .is_some_and(|m| m.contains("PUT"))
            );
            "cors preflight"
        }
        ("GET", Some("acme.localhost"), _) => {
            let r = c.run();
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.header("x-tenant"), Some("acme"));
            assert_eq!(r.echoed("x-tenant").as_deref(), Some("acme"));
            assert!(r.header("ratelimit-limit").is_some(), "{r:?}");
            "tenant acme"
        }
        ("GET", Some("globex.localhost"), _) => {
            let r = c.run();
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.echoed("x-consumer").as_deref(), Some("globex-ci"));
            assert_eq!(r.echoed("x-api-key"), None);
            // "without: 401", and the other keys are not globex's.
            let mut without = c.clone();
            without
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("x-api-key"));
            assert_eq!(without.run().status, 401);
            without
                .headers
                .push(("X-Api-Key".into(), "demo-key".into()));
            assert_eq!(without.run().status, 403);
            "tenant globex"
        }
        _ => panic!("the test has no check for the banner's {}", c.line),
    }
}

#[test]
fn every_banner_command_does_what_the_banner_says() {
    let (_demo, banner) = Demo::start();
    let commands = commands(&banner);
    let mut seen = BTreeSet::new();
    for c in &commands {
        assert!(seen.insert(check(c)), "checked twice: {}", c.line);
    }
    let want = BTreeSet::from([
        "round robin",
        "status",
        "method not allowed",
        "host routing",
        "no route",
        "body",
        "redirect",
        "canary",
        "breaker",
        "rate limit",
        "no api key",
        "api key",
        "wrong api key",
        "no token",
        "token",
        "cors preflight",
        "tenant acme",
        "tenant globex",
    ]);
    assert_eq!(seen, want, "banner:\n{}", banner.join("\n"));
}

#[test]
fn a_bad_port_base_is_refused_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .env("SHARDGATE_DEMO_PORT_BASE", "65535")
        .output()
        .expect("running the demo");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SHARDGATE_DEMO_PORT_BASE=\"65535\""), "{err}");
}
