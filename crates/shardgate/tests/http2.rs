//! Downstream HTTP/2 with prior knowledge (h2c) on a listener with `http2 = true`, through
//! `shardgate run`, with real clients: curl `--http2-prior-knowledge`, nghttp and h2load.
//! The upstream is an HTTP/1.1 server in the test that records what it receives.

#[allow(dead_code)]
#[path = "ops/harness.rs"]
mod harness;

use harness::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Each request an upstream received: its head and its body.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An HTTP/1.1 upstream that answers `seen <body length>` and records each head and body.
fn recording_upstream() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let lower = head.to_ascii_lowercase();
                    let mut body = Vec::new();
                    if let Some(n) = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                    {
                        body.resize(n, 0);
                        r.read_exact(&mut body).unwrap();
                    } else if lower.contains("transfer-encoding: chunked") {
                        loop {
                            let mut size = String::new();
                            r.read_line(&mut size).unwrap();
                            let n = usize::from_str_radix(size.trim(), 16).unwrap();
                            let mut chunk = vec![0; n + 2];
                            r.read_exact(&mut chunk).unwrap();
                            if n == 0 {
                                break;
                            }
                            body.extend_from_slice(&chunk[..n]);
                        }
                    }
                    if head.starts_with("GET /slow") {
                        std::thread::sleep(std::time::Duration::from_millis(2500));
                    }
                    let answer = format!("seen {}", body.len());
                    sink.lock().unwrap().push((head, body));
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: 1\r\nConnection: keep-alive\r\n\r\n{answer}",
                        answer.len()
                    );
                }
            });
        }
    });
    (addr, seen)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the client runs (apt-get install curl nghttp2-client)");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http2_prior_knowledge_beside_http1_with_real_clients_on_io_uring() {
    with_real_clients("uring");
}

#[test]
fn http2_prior_knowledge_beside_http1_with_real_clients_on_epoll() {
    with_real_clients("legacy");
}

fn with_real_clients(driver: &str) {
    let (up, seen) = recording_upstream();
    let ports = Ports::pick();
    let cfg = ConfigFile::new(&format!("http2-{driver}"));
    cfg.write(&format!(
        "workers = 2\ndriver = \"{driver}\"\n[[listeners]]\naddress = \"127.0.0.1:{}\"\nhttp2 = true\n\
         [admin]\naddress = \"127.0.0.1:{}\"\n\
         [upstreams.app]\nendpoints = [\"{up}\"]\n\
         [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen, ports.admin
    ));
    let _gw = Gateway::start(&cfg, &ports);
    let url = format!("http://127.0.0.1:{}/items?x=1", ports.listen);

    // curl over HTTP/2, with cookies in two fields and a body.
    let out = run(Command::new("curl").args([
        "-s",
        "--http2-prior-knowledge",
        "-w",
        " %{http_version} %{http_code}",
        "-H",
        "cookie: a=1",
        "-H",
        "cookie: b=2",
        "-d",
        "hello h2",
        &url,
    ]));
    assert_eq!(out, "seen 8 2 200");
    // The same listener still speaks HTTP/1.1.
    let out = run(Command::new("curl").args(["-s", "-w", " %{http_version}", &url]));
    assert_eq!(out, "seen 0 1.1");
    // A HEAD over HTTP/2 has no body.
    let out = run(Command::new("curl").args(["-sI", "--http2-prior-knowledge", &url]));
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-up: 1"), "{out}");
    assert!(
        !out.to_ascii_lowercase().contains("connection:"),
        "no connection field in h2: {out}"
    );

    let requests = seen.lock().unwrap().clone();
    let (head, body) = &requests[0];
    assert!(head.starts_with("POST /items?x=1 HTTP/1.1\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{}\r\n", ports.listen)),
        "{head}"
    );
    assert!(
        lower.contains("cookie: a=1; b=2\r\n"),
        "crumbs joined: {head}"
    );
    assert_eq!(body, b"hello h2");

    // nghttp: a body without a content-length arrives chunked and whole.
    let data =
        std::env::temp_dir().join(format!("shardgate-h2-{}-{driver}.bin", std::process::id()));
    std::fs::write(&data, vec![b'z'; 100_000]).unwrap();
    let out = run(Command::new("nghttp").args(["-d", data.to_str().unwrap(), &url]));
    assert_eq!(out, "seen 100000");
    let _ = std::fs::remove_file(&data);

    // h2load: many streams on few connections, every one answered.
    let out = run(Command::new("h2load").args(["-c", "4", "-m", "10", "-n", "2000", &url]));
    assert!(out.contains("2000 succeeded, 0 failed"), "{out}");
}

#[test]
fn drain_sends_goaway_and_lets_open_streams_finish() {
    let (up, _) = recording_upstream();
    let ports = Ports::pick();
    let cfg = ConfigFile::new("http2-drain");
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\nhttp2 = true\n\
         [shutdown]\ndrain_timeout = \"5s\"\n\
         [upstreams.app]\nendpoints = [\"{up}\"]\n\
         [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen
    ));
    let gw = Gateway::start(&cfg, &ports);
    let url = format!("http://127.0.0.1:{}/slow", ports.listen);
    let client = Command::new("nghttp")
        .args(["-v", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nghttp (apt-get install nghttp2-client)");
    // The stream is open upstream (the answer takes 2.5 s) when the drain begins (the
    // signal is seen within a second).
    std::thread::sleep(std::time::Duration::from_millis(500));
    gw.signal("TERM");
    let out = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("recv GOAWAY"), "GOAWAY: {text}");
    assert!(
        text.contains(":status: 200") && text.contains("seen 0"),
        "the stream finished: {text}"
    );
    assert_eq!(gw.wait_exit(std::time::Duration::from_secs(10)), Some(true));
}

// Raw-frame probes: each abuse ends its own connection with an ENHANCE_YOUR_CALM GOAWAY,
// is counted by what it did, and leaves other connections alone.

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK block for `method` (0x82 GET, 0x83 POST) `/` over http, :authority a.test
/// (static-table indexes and one literal without indexing).
fn request_block(method: u8) -> Vec<u8> {
    let mut b = vec![method, 0x86, 0x84, 0x01, 0x06];
    b.extend_from_slice(b"a.test");
    b
}

/// Sends the preface, an empty SETTINGS frame and `frames` on a new connection; returns the
/// error code of the GOAWAY the gateway sent (`None`: the connection ended without one).
fn probe(port: u16, frames: Vec<u8>) -> Option<u32> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    // Written from another thread: the gateway may stop reading midway.
    let writer = std::thread::spawn(move || {
        let mut all = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        all.extend(frame(SETTINGS, 0, 0, &[]));
        all.extend(frames);
        let _ = w.write_all(&all);
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    let code = loop {
        // Frames read so far: find a GOAWAY.
        let mut at = 0;
        let mut found = None;
        while got.len() >= at + 9 {
            let len = (usize::from(got[at]) << 16)
                | (usize::from(got[at + 1]) << 8)
                | usize::from(got[at + 2]);
            if got.len() < at + 9 + len {
                break;
            }
            if got[at + 3] == GOAWAY && len >= 8 {
                let p = &got[at + 9..];
                found = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
            }
            at += 9 + len;
        }
        if found.is_some() {
            break found;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    };
    drop(s);
    let _ = writer.join();
    code
}

fn repeat(n: usize, f: impl Fn(u32) -> Vec<u8>) -> Vec<u8> {
    (0..n as u32).flat_map(f).collect()
}

#[test]
fn each_abuse_closes_only_its_connection_with_goaway_and_is_counted() {
    let (up, _) = recording_upstream();
    let ports = Ports::pick();
    let cfg = ConfigFile::new("http2-abuse");
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\nhttp2 = true\n\
         [admin]\naddress = \"127.0.0.1:{}\"\n[timeouts]\nsend = \"1s\"\n\
         [upstreams.app]\nendpoints = [\"{up}\"]\n\
         [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen, ports.admin
    ));
    let gw = Gateway::start(&cfg, &ports);
    let port = ports.listen;
    let url = format!("http://127.0.0.1:{port}/ok");
    let get = request_block(0x82);
    let post = request_block(0x83);
    // A big header value in the dynamic table (literal with incremental indexing, new name),
    // then referenced over and over: an HPACK bomb.
    let mut bomb = vec![0x40, 0x01, b'x', 0x7f, 0xa1, 0x1e]; // value length 127 + 3873 = 4000
    bomb.extend(std::iter::repeat_n(b'v', 4000));
    bomb.extend(std::iter::repeat_n(0xbe, 12000)); // index 62: the entry just added
    // A header value longer than it says, spread one byte per CONTINUATION frame.
    let mut first = get.clone();
    first.extend([0x00, 0x01, b'y', 0x7f, 0xff, 0x7f]); // value length 127 + 16383
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "rapid_reset",
            repeat(500, |i| {
                let id = 2 * i + 1;
                let mut f = frame(HEADERS, END_HEADERS | END_STREAM, id, &get);
                f.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
                f
            }),
        ),
        (
            "settings_flood",
            repeat(200, |_| frame(SETTINGS, 0, 0, &[])),
        ),
        (
            "ping_flood",
            repeat(2000, |i| frame(PING, 0, 0, &u64::from(i).to_be_bytes())),
        ),
        (
            "priority_flood",
            repeat(2000, |i| frame(PRIORITY, 0, 2 * i + 1, &[0, 0, 0, 0, 16])),
        ),
        ("continuation_flood", {
            let mut f = frame(HEADERS, END_STREAM, 1, &first);
            f.extend(repeat(2000, |_| frame(CONTINUATION, 0, 1, b"y")));
            f
        }),
        (
            "header_list_too_large",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &bomb),
        ),
        ("empty_data_flood", {
            let mut f = frame(HEADERS, END_HEADERS, 1, &post);
            f.extend(repeat(2000, |_| frame(DATA, 0, 1, &[])));
            f
        }),
        (
            "stalled",
            // The client's window is shut (SETTINGS_INITIAL_WINDOW_SIZE 0) and never opens:
            // the answer's DATA cannot go, and the send timeout (1 s here) ends it.
            [
                frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]),
                frame(HEADERS, END_HEADERS | END_STREAM, 1, &get),
            ]
            .concat(),
        ),
        (
            "too_many_streams",
            // Streams left open (a POST whose body never comes), far past the 128 allowed.
            repeat(600, |i| frame(HEADERS, END_HEADERS, 2 * i + 1, &post)),
        ),
    ];
    for (reason, frames) in cases {
        // A well-behaved client on its own connection, before and after.
        let ok = |when: &str| {
            let out = run(Command::new("curl").args([
                "-s",
                "--http2-prior-knowledge",
                "-w",
                " %{http_code}",
                &url,
            ]));
            assert_eq!(out, "seen 0 200", "{reason}, {when}");
        };
        ok("before");
        assert_eq!(
            probe(port, frames),
            Some(ENHANCE_YOUR_CALM),
            "{reason}: GOAWAY"
        );
        ok("after");
        // Counted as the connection ends, just after its GOAWAY.
        let line =
            format!("shardgate_http2_abuse_closed_connections_total{{reason=\"{reason}\"}} 1");
        let counted = wait_for(std::time::Duration::from_secs(3), || {
            admin_get(&ports, "/metrics").contains(&line)
        });
        assert!(counted, "{line}; log: {}", gw.log.lock().unwrap());
    }
    let metrics = admin_get(&ports, "/metrics");
    assert!(
        metrics.contains("shardgate_http2_connections_total{shard=\"0\"} 27"),
        "{metrics}"
    );
}

/// A gRPC request's own `grpc-timeout` (300 ms), shorter than the upstream timeout (1 s),
/// ends the wait for the upstream (one that does not enforce it, unlike a gRPC server); the
/// gateway's 504 goes back as a Trailers-Only DEADLINE_EXCEEDED.
#[test]
fn grpc_timeout_is_honoured() {
    let (up, _) = recording_upstream();
    let ports = Ports::pick();
    let cfg = ConfigFile::new("http2-grpc-timeout");
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\nhttp2 = true\n\
         [timeouts]\nupstream_response = \"1s\"\n\
         [upstreams.app]\nendpoints = [\"{up}\"]\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen
    ));
    let _gw = Gateway::start(&cfg, &ports);
    let call = |timeout: &str| {
        let started = std::time::Instant::now();
        let out = run(Command::new("nghttp")
            .args([
                "-v",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
            ])
            .args(["-H", &format!("grpc-timeout: {timeout}")])
            .arg(format!("http://127.0.0.1:{}/slow", ports.listen)));
        (started.elapsed(), out)
    };
    let (took, text) = call("300m");
    assert!(text.contains("grpc-status: 4"), "DEADLINE_EXCEEDED: {text}");
    assert!(text.contains(":status: 200"), "Trailers-Only: {text}");
    assert!(
        took < std::time::Duration::from_millis(900),
        "answered after {took:?}: the 1 s upstream timeout, not the 300 ms grpc-timeout"
    );
    // A longer grpc-timeout is capped by the upstream timeout.
    let (took, text) = call("10S");
    assert!(text.contains("grpc-status: 4"), "{text}");
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

/// An HTTP/2 upstream from raw frames: it answers SETTINGS and PING, and every stream with
/// what `answer` gives for its id.
fn raw_h2_upstream(answer: fn(u32) -> Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = conn.try_clone().unwrap();
                let mut w = conn;
                let mut preface = [0u8; 24];
                if r.read_exact(&mut preface).is_err() {
                    return;
                }
                let _ = w.write_all(&frame(SETTINGS, 0, 0, &[]));
                loop {
                    let mut head = [0u8; 9];
                    if r.read_exact(&mut head).is_err() {
                        return;
                    }
                    let len = (usize::from(head[0]) << 16)
                        | (usize::from(head[1]) << 8)
                        | usize::from(head[2]);
                    let mut payload = vec![0; len];
                    if r.read_exact(&mut payload).is_err() {
                        return;
                    }
                    let (kind, flags) = (head[3], head[4]);
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let answer = match kind {
                        SETTINGS if flags & 1 == 0 => frame(SETTINGS, 1, 0, &[]),
                        PING if flags & 1 == 0 => frame(PING, 1, 0, &payload),
                        HEADERS => answer(stream),
                        _ => continue,
                    };
                    if w.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A stream the upstream resets after its response began is reset downstream too: the
/// client sees RST_STREAM, never a response that looks whole.
#[test]
fn an_upstream_reset_midway_resets_the_client_stream() {
    // :status 200, one DATA frame "part1", then RST_STREAM(CANCEL): a response cut short.
    let up = raw_h2_upstream(|stream| {
        [
            frame(HEADERS, END_HEADERS, stream, &[0x88]),
            frame(DATA, 0, stream, b"part1"),
            frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()),
        ]
        .concat()
    });
    let ports = Ports::pick();
    let cfg = ConfigFile::new("http2-upstream-reset");
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\nhttp2 = true\n\
         [upstreams.app]\nendpoints = [\"127.0.0.1:{up}\"]\nprotocol = \"h2c\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen
    ));
    let _gw = Gateway::start(&cfg, &ports);
    let out = Command::new("nghttp")
        .args(["-v", &format!("http://127.0.0.1:{}/cut", ports.listen)])
        .output()
        .expect("nghttp");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("recv RST_STREAM"),
        "the client's stream is reset: {text}"
    );
    assert!(
        !text.contains("recv DATA frame <length=0, flags=0x01"),
        "no clean end: {text}"
    );
    // An HTTP/1.1 client of the same response gets a connection closed short of the body's
    // end (no terminating chunk), never a body that looks complete.
    let (_, raw) = raw_get(ports.listen, "/cut");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.ends_with("5\r\npart1\r\n"),
        "the part that came, unended: {raw:?}"
    );
}

/// An HPACK literal field without indexing, with a new name (no Huffman).
fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name);
    b.push(value.len() as u8);
    b.extend_from_slice(value);
    b
}

/// Sends the preface, SETTINGS and `frames`; returns the first answer about stream 1: its
/// RST_STREAM's error code as `Err`, or `Ok(())` when it got a response HEADERS (a GOAWAY's
/// error code counts as a reset).
fn stream_answer(port: u16, frames: Vec<u8>) -> Result<(), u32> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut all = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    all.extend(frame(SETTINGS, 0, 0, &[]));
    all.extend(frames);
    s.write_all(&all).unwrap();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)
            .expect("an answer before the connection ends");
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).unwrap();
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match head[3] {
            RST_STREAM if stream == 1 => {
                return Err(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            GOAWAY => {
                return Err(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
            HEADERS if stream == 1 => return Ok(()),
            _ => {}
        }
    }
}

/// Every h2-to-h1 downgrade attack, as raw frames: each stream is refused with
/// PROTOCOL_ERROR and the upstream never sees a request; a well-formed one is answered.
#[test]
fn downgrade_attacks_are_refused_on_the_wire() {
    let (up, seen) = recording_upstream();
    let ports = Ports::pick();
    let cfg = ConfigFile::new("http2-downgrade");
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\nhttp2 = true\n\
         [upstreams.app]\nendpoints = [\"{up}\"]\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen
    ));
    let _gw = Gateway::start(&cfg, &ports);
    const PROTOCOL_ERROR: u32 = 1;
    // :method GET, :scheme http, :path /, then :authority a.test.
    let pseudo = |path: &[u8]| -> Vec<u8> {
        let mut b = vec![0x82, 0x86];
        b.extend(literal(b":path", path));
        b.extend([0x01, 0x06]);
        b.extend_from_slice(b"a.test");
        b
    };
    let get = |extra: Vec<u8>| {
        let mut b = pseudo(b"/");
        b.extend(extra);
        frame(HEADERS, END_HEADERS | END_STREAM, 1, &b)
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("connection", get(literal(b"connection", b"close"))),
        ("keep-alive", get(literal(b"keep-alive", b"timeout=5"))),
        (
            "proxy-connection",
            get(literal(b"proxy-connection", b"keep-alive")),
        ),
        ("upgrade", get(literal(b"upgrade", b"h2c"))),
        (
            "transfer-encoding",
            get(literal(b"transfer-encoding", b"chunked")),
        ),
        ("te other than trailers", get(literal(b"te", b"gzip"))),
        ("CR LF in a value", get(literal(b"x-a", b"1\r\nx-b: 2"))),
        ("NUL in a value", get(literal(b"x-a", b"1\0"))),
        ("an uppercase name", get(literal(b"X-Upper", b"1"))),
        ("leading whitespace", get(literal(b"x-a", b" 1"))),
        (
            "a :path with a space",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &pseudo(b"/a b")),
        ),
        (
            "a :path not origin-form",
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &pseudo(b"http://evil.test/x"),
            ),
        ),
        (
            "a relative :path",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &pseudo(b"x")),
        ),
        (
            "a duplicate pseudo-header",
            get(literal(b":path", b"/again")),
        ),
        ("a pseudo-header after a field", {
            let mut b = vec![0x82, 0x86, 0x84];
            b.extend(literal(b"x-a", b"1"));
            b.extend([0x01, 0x06]);
            b.extend_from_slice(b"a.test");
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &b)
        }),
        ("a content-length the DATA disagrees with", {
            let mut b = vec![0x83, 0x86, 0x84, 0x01, 0x06];
            b.extend_from_slice(b"a.test");
            b.extend(literal(b"content-length", b"5"));
            let mut f = frame(HEADERS, END_HEADERS, 1, &b);
            f.extend(frame(DATA, END_STREAM, 1, b"abc"));
            f
        }),
    ];
    for (what, frames) in cases {
        assert_eq!(
            stream_answer(ports.listen, frames),
            Err(PROTOCOL_ERROR),
            "{what}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "the upstream saw a request"
    );
    // The same frames, well formed, are answered.
    assert_eq!(
        stream_answer(ports.listen, get(literal(b"x-a", b"1"))),
        Ok(())
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// An upstream that streams its answer in 3,000 one-byte DATA frames, all at once (gRPC
/// servers send small messages so): the gateway buffers them faster than it relays them,
/// which h2's default small-frame budget takes for a flood and ends the connection. The
/// upstream budget is sized for it: the whole answer arrives.
#[test]
fn an_upstream_streaming_tiny_frames_is_not_a_flood() {
    let up = raw_h2_upstream(|stream| {
        let mut f = frame(HEADERS, END_HEADERS, stream, &[0x88]);
        for _ in 0..3000 {
            f.extend(frame(DATA, 0, stream, b"x"));
        }
        f.extend(frame(DATA, END_STREAM, stream, &[]));
        f
    });
    let ports = Ports::pick();
    let cfg = ConfigFile::new("http2-upstream-tiny");
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n\
         [upstreams.app]\nendpoints = [\"127.0.0.1:{up}\"]\nprotocol = \"h2c\"\n\
         [upstreams.app.retry]\nattempts = 1\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen
    ));
    let _gw = Gateway::start(&cfg, &ports);
    let (status, raw) = raw_get(ports.listen, "/tiny");
    assert_eq!(status, 200, "{raw}");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let xs = body.bytes().filter(|&b| b == b'x').count();
    assert_eq!(xs, 3000, "the whole answer: {raw:?}");
    assert!(raw.ends_with("0\r\n\r\n"), "and its end");
}

/// An upstream that refuses the first stream it is sent (RST_STREAM REFUSED_STREAM: not
/// processed) and answers the rest: a POST, which is not idempotent, still succeeds, with
/// retries off, because a refused stream may go again on a fresh connection.
#[test]
fn a_refused_stream_goes_again_whatever_its_method() {
    static REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let up = raw_h2_upstream(|stream| {
        if !REFUSED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return frame(RST_STREAM, 0, stream, &7u32.to_be_bytes()); // REFUSED_STREAM
        }
        // :status 200, content-length 2 (literal, indexed name 28), "ok".
        let mut h = vec![0x88, 0x0f, 0x0d, 0x01];
        h.extend_from_slice(b"2");
        [
            frame(HEADERS, END_HEADERS, stream, &h),
            frame(DATA, END_STREAM, stream, b"ok"),
        ]
        .concat()
    });
    let ports = Ports::pick();
    let cfg = ConfigFile::new("http2-upstream-refused");
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n\
         [upstreams.app]\nendpoints = [\"127.0.0.1:{up}\"]\nprotocol = \"h2c\"\n\
         [upstreams.app.retry]\nattempts = 1\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen
    ));
    let _gw = Gateway::start(&cfg, &ports);
    let (status, raw) = request(ports.listen, "POST", "/order");
    assert_eq!(status, 200, "{raw}");
    assert!(raw.ends_with("ok"), "{raw}");
    assert!(
        REFUSED.load(std::sync::atomic::Ordering::SeqCst),
        "the first stream was refused"
    );
}
