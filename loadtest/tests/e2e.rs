//! End to end: the built `loadtest` binary against `loadtest upstream` (or a tiny mock) on a
//! loopback port, short bounded runs, assertions on the JSON report. Never on speed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

/// A running `loadtest upstream`, killed on drop.
struct Upstream {
    child: Child,
    url: String,
}

impl Upstream {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["upstream", "--listen", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start upstream");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected upstream output {line:?}"))
            .to_string();
        Upstream {
            child,
            url: format!("http://{addr}/"),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run loadtest")
}

/// Runs loadtest with `--json` and returns the parsed report.
fn run_json(name: &str, args: &[&str]) -> Value {
    let path = temp_path(&format!("{name}.json"));
    let path_s = path.to_str().expect("utf-8 path").to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", &path_s, "--no-progress"]);
    let out = run(&all);
    assert!(
        out.status.success(),
        "loadtest {all:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&path).expect("json written");
    let _ = std::fs::remove_file(&path);
    serde_json::from_str(&text).expect("valid json")
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn closed_loop_on_both_drivers() {
    let up = Upstream::start(&[]);
    for driver in ["legacy", "uring"] {
        let r = run_json(
            &format!("closed-{driver}"),
            &[
                "-c", "8", "-t", "2", "-d", "1s", "-w", "200ms", "--driver", driver, &up.url,
            ],
        );
        let requests = u(&r, "requests");
        assert!(requests > 0, "{driver}: {r}");
        assert_eq!(u(&r, "errors_total"), 0, "{driver}: {r}");
        assert_eq!(r["status"]["200"].as_u64(), Some(requests), "{driver}");
        assert_eq!(r["mode"], "closed");
        assert_eq!(r["driver"], driver);
        assert!(r["latency"]["p99_us"].as_f64().unwrap() > 0.0);
        assert!(r["throughput_rps"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn open_loop_keeps_its_rate_and_reports_both_latencies() {
    let up = Upstream::start(&[]);
    let r = run_json(
        "open",
        &[
            "-c", "4", "-t", "1", "-d", "1s", "-w", "0", "--rate", "400", &up.url,
        ],
    );
    let requests = u(&r, "requests");
    // 400 req/s for one second, on a fixed schedule: never more than that.
    assert!(requests > 0 && requests <= 400, "{r}");
    assert_eq!(u(&r, "errors_total"), 0, "{r}");
    assert_eq!(r["mode"], "open");
    assert!(r["service_latency"]["count"].as_u64().unwrap() > 0);
    let corrected = r["latency"]["max_us"].as_f64().unwrap();
    let service = r["service_latency"]["max_us"].as_f64().unwrap();
    assert!(corrected >= service * 0.99, "{corrected} < {service}");
}

#[test]
fn non_2xx_counted_by_status() {
    let up = Upstream::start(&["--status", "503"]);
    let r = run_json(
        "503",
        &[
            "-c", "2", "-t", "1", "-d", "2s", "-n", "300", "-w", "0", &up.url,
        ],
    );
    assert_eq!(u(&r, "requests"), 300, "{r}");
    assert_eq!(u(&r, "non_2xx"), 300);
    assert_eq!(r["status"]["503"].as_u64(), Some(300));
    assert_eq!(u(&r, "errors_total"), 0);
}

#[test]
fn request_cap_and_pipelining() {
    let up = Upstream::start(&["--body-size", "5000"]);
    let r = run_json(
        "pipeline",
        &[
            "-c", "3", "-t", "1", "-p", "8", "-n", "1000", "-d", "5s", "-w", "0", &up.url,
        ],
    );
    assert_eq!(u(&r, "requests"), 1000, "{r}");
    assert_eq!(u(&r, "errors_total"), 0);
    assert!(u(&r, "bytes_read") >= 1000 * 5000);
}

#[test]
fn server_closing_each_connection_is_not_an_error() {
    let up = Upstream::start(&[]);
    let r = run_json(
        "close",
        &[
            "-c",
            "2",
            "-t",
            "1",
            "-n",
            "200",
            "-d",
            "5s",
            "-w",
            "0",
            "-H",
            "Connection: close",
            &up.url,
        ],
    );
    assert_eq!(u(&r, "requests"), 200, "{r}");
    assert_eq!(u(&r, "errors_total"), 0, "{r}");
    assert!(u(&r, "connects") >= 200);
}

/// A std-only server answering every request with a chunked body.
fn chunked_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                                     5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n";
                        if s.write_all(resp).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}/")
}

#[test]
fn chunked_responses() {
    let url = chunked_server();
    let r = run_json(
        "chunked",
        &[
            "-c", "2", "-t", "1", "-n", "200", "-d", "5s", "-w", "0", &url,
        ],
    );
    assert_eq!(u(&r, "requests"), 200, "{r}");
    assert_eq!(u(&r, "errors_total"), 0, "{r}");
}

#[test]
fn connect_errors_do_not_stop_the_run() {
    // Bind then drop: nothing listens on this port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let r = run_json(
        "refused",
        &["-c", "2", "-t", "1", "-d", "300ms", "-w", "0", &url],
    );
    assert_eq!(u(&r, "requests"), 0);
    assert!(r["errors"]["connect"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn refuses_remote_targets() {
    for url in ["http://10.1.2.3/", "http://192.0.2.1:8080/x"] {
        let out = run(&["-d", "1s", url]);
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--allow-remote"), "{err}");
        let out = run(&["hold", "-c", "1", url]);
        assert_eq!(out.status.code(), Some(1), "hold {url}");
    }
}

#[test]
fn hold_keeps_connections_alive_with_heartbeats() {
    let up = Upstream::start(&[]);
    let ready = temp_path("hold.ready");
    let ready_s = ready.to_str().unwrap().to_string();
    let r = run_json(
        "hold",
        &[
            "hold",
            "-c",
            "60",
            "-t",
            "2",
            "-k",
            "200ms",
            "-d",
            "1s",
            "--sources",
            "3",
            "--ready-file",
            &ready_s,
            &up.url,
        ],
    );
    assert_eq!(u(&r, "connections"), 60);
    assert_eq!(u(&r, "established"), 60, "{r}");
    assert_eq!(u(&r, "alive"), 60, "{r}");
    assert_eq!(u(&r, "failed"), 0, "{r}");
    assert!(u(&r, "heartbeats") > 0, "{r}");
    assert!(r["heartbeat_latency"]["p99_us"].as_f64().unwrap() > 0.0);
    assert!(ready.exists());
    let _ = std::fs::remove_file(&ready);
}

/// A std-only server that answers one request per connection, then closes it.
fn answer_once_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
                // Dropping the stream closes the connection under the client.
            });
        }
    });
    format!("http://{addr}/")
}

#[test]
fn hold_counts_connections_the_server_drops() {
    let url = answer_once_server();
    let r = run_json(
        "hold-drop",
        &[
            "hold", "-c", "5", "-t", "1", "-k", "100ms", "-d", "600ms", &url,
        ],
    );
    assert_eq!(u(&r, "established"), 5, "{r}");
    assert_eq!(u(&r, "alive"), 0, "{r}");
    assert_eq!(u(&r, "failed"), 5, "{r}");
    let he = &r["heartbeat_errors"];
    assert_eq!(u(he, "eof") + u(he, "reset"), 5, "{r}");

    // Nothing listening: every connect fails, and the run still ends normally.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let r = run_json(
        "hold-gone",
        &[
            "hold",
            "-c",
            "4",
            "-t",
            "1",
            "-d",
            "100ms",
            &format!("http://127.0.0.1:{port}/"),
        ],
    );
    assert_eq!(u(&r, "alive"), 0);
    assert_eq!(u(&r, "failed"), 4, "{r}");
    assert_eq!(r["connect_errors"]["connect"].as_u64(), Some(4));
}

#[test]
fn plot_and_help() {
    let up = Upstream::start(&[]);
    let svg = temp_path("plot.svg");
    let r = run_json(
        "plot",
        &[
            "-c",
            "2",
            "-t",
            "1",
            "-n",
            "500",
            "-w",
            "0",
            "--plot",
            svg.to_str().unwrap(),
            &up.url,
        ],
    );
    assert_eq!(u(&r, "requests"), 500);
    let text = std::fs::read_to_string(&svg).expect("svg written");
    let _ = std::fs::remove_file(&svg);
    assert!(
        text.starts_with("<svg") && text.contains("percentile"),
        "{}",
        &text[..100]
    );

    let out = run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--connections",
        "--threads",
        "--duration",
        "--warmup",
        "--requests",
        "--rate",
        "--pipeline",
        "--timeout",
        "--method",
        "--header",
        "--body",
        "--json",
        "--plot",
        "--driver",
        "--no-progress",
        "--allow-remote",
        "--heartbeat",
        "--sources",
        "--connect-concurrency",
        "--ready-file",
        "--listen",
        "--body-size",
        "--delay",
        "--status",
        "--name",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn html_report_and_comparing_two_runs() {
    let up = Upstream::start(&[]);
    let mut reports = Vec::new();
    for (name, conns) in [("two", "2"), ("eight", "8")] {
        let json = temp_path(&format!("{name}.json"));
        let html = temp_path(&format!("{name}.html"));
        let out = run(&[
            "-c",
            conns,
            "-t",
            "1",
            "-d",
            "1500ms",
            "-w",
            "500ms",
            "--no-progress",
            "--json",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
            &up.url,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        // Throughput over time: warm-up samples before 0, measured ones after, all counting.
        let timeline = report["timeline"].as_array().expect("timeline");
        assert!(timeline.len() >= 10, "{timeline:?}");
        assert!(timeline.iter().any(|p| p["t_s"].as_f64().unwrap() < 0.0));
        assert!(
            timeline
                .iter()
                .filter(|p| p["t_s"].as_f64().unwrap() > 0.2)
                .all(|p| p["rps"].as_f64().unwrap() > 0.0)
        );
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(page.contains("Throughput over time") && page.contains("Latency by percentile"));
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(
            page.contains(&format!("<th>connections</th><td>{conns}</td>")),
            "settings"
        );
        reports.push(json);
    }
    let cmp = temp_path("compare.html");
    let out = run(&[
        "compare",
        reports[0].to_str().unwrap(),
        reports[1].to_str().unwrap(),
        "--html",
        cmp.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&cmp).unwrap();
    assert!(
        page.contains("<th>two</th><th>eight</th>"),
        "a column per run"
    );
    assert!(page.contains("<th>connections</th><td>2</td><td>8</td>"));
    // A file that is not a report is refused by name.
    let bad = temp_path("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let out = run(&[
        "compare",
        reports[0].to_str().unwrap(),
        bad.to_str().unwrap(),
        "--html",
        cmp.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}
