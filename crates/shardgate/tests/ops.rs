//! Operating the gateway under continuous load from the bundled load
//! generator: reloads (valid and invalid), binary upgrade, graceful drain,
//! and the admin endpoints. Runs the real binaries: `shardgate` and
//! `loadtest` (both built by `cargo test --workspace`).

mod ops {
    pub mod harness;
}

use ops::harness::*;
use std::time::{Duration, Instant};

/// The tests that run full-speed load take turns: two loads at once on a
/// two-core runner starve each other's clients, and a client descheduled
/// for long enough turns a gateway's graceful close into a failure of the
/// test rather than of the gateway.
static UNDER_LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn under_load() -> std::sync::MutexGuard<'static, ()> {
    UNDER_LOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn json_number(json: &str, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {json}"))
}

#[test]
fn reload_every_second_under_load_drops_nothing_and_switches_routes() {
    let _turn = under_load();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let cfg = ConfigFile::new("reload");
    let ports = Ports::pick();
    cfg.write(&config_text(&ports, &a, &b, "a"));
    let gw = Gateway::start(&cfg, &ports);
    let load = Load::start(&ports, 12);
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(1000));
        let target = if i % 2 == 0 { "b" } else { "a" };
        cfg.write(&config_text(&ports, &a, &b, target));
        gw.signal("HUP");
        assert!(
            wait_for(Duration::from_secs(3), || which(&ports) == target),
            "reload {i}: /which never moved to {target}"
        );
    }
    let report = load.finish();
    assert_eq!(
        report.errors, 0,
        "failed requests during reloads: {report:?}"
    );
    assert_eq!(report.non_2xx, 0, "{report:?}");
    assert!(report.requests > 1000, "{report:?}");
    // Each change is applied by SIGHUP and by the file watcher, whichever
    // comes first; the second finds nothing new but still counts.
    let config = admin_get(&ports, "/config");
    assert!(json_number(&config, "version") >= 11, "{config}");
    assert!(config.contains("\"last_error\":null"), "{config}");
}

#[test]
fn invalid_reload_keeps_the_old_config_serving_and_says_why() {
    let _turn = under_load();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let cfg = ConfigFile::new("invalid");
    let ports = Ports::pick();
    cfg.write(&config_text(&ports, &a, &b, "b"));
    let _gw = Gateway::start(&cfg, &ports);
    let load = Load::start(&ports, 4);
    std::thread::sleep(Duration::from_millis(800));
    cfg.write(&config_text(&ports, &a, &b, "a").replace("upstream = \"a\"", "upstream = \"nope\""));
    let (status, body) = admin_request(&ports, "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown upstream"), "{body}");
    assert_eq!(which(&ports), "b", "the old configuration keeps serving");
    let config = admin_get(&ports, "/config");
    assert!(config.contains("unknown upstream \\\"nope\\\""), "{config}");
    assert!(json_number(&config, "reload_failures") >= 1, "{config}");
    assert_eq!(json_number(&config, "version"), 1, "{config}");
    let report = load.finish();
    assert_eq!((report.errors, report.non_2xx), (0, 0), "{report:?}");
    let metrics = admin_get(&ports, "/metrics");
    assert!(
        !metrics.contains("shardgate_config_reload_failures_total 0"),
        "{metrics}"
    );
}

#[test]
fn command_line_overrides_hold_across_reloads() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let cfg = ConfigFile::new("overrides");
    let ports = Ports::pick();
    // The file says two workers; the command line one.
    cfg.write(&config_text(&ports, &a, &b, "a"));
    let _gw = Gateway::start_with(&cfg, &ports, &["--workers", "1"]);
    cfg.write(&config_text(&ports, &a, &b, "b"));
    let (status, body) = admin_request(&ports, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(which(&ports), "b");
    let metrics = admin_get(&ports, "/metrics");
    assert!(
        !metrics.contains("shard=\"1\""),
        "still one shard: {metrics}"
    );
}

#[test]
fn binary_upgrade_under_load_drops_nothing() {
    let _turn = under_load();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let cfg = ConfigFile::new("upgrade");
    let ports = Ports::pick();
    cfg.write(&config_text(&ports, &a, &b, "a"));
    let old = Gateway::start(&cfg, &ports);
    let load = Load::start(&ports, 8);
    // And a connection per request: new connections keep arriving at the
    // old process's listeners as it stops listening.
    let churn = Load::start_with(&ports, 8, "churn", &["-c", "32", "-H", "Connection: close"]);
    std::thread::sleep(Duration::from_millis(1500));
    // The new process binds the same addresses (SO_REUSEPORT) and serves at once.
    let new = Gateway::start(&cfg, &ports);
    std::thread::sleep(Duration::from_millis(300));
    // The old one drains: stops accepting, finishes what it has, exits.
    old.signal("TERM");
    let old_log = old.log.clone();
    let exited = old.wait_exit(Duration::from_secs(8));
    assert_eq!(
        exited,
        Some(true),
        "the old process exits cleanly once drained"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(which(&ports), "a", "the new process serves");
    for report in [load.finish(), churn.finish()] {
        if !upgrade_lost_nothing(&report) {
            panic!(
                "{report:?} ({})\n-- old process:\n{}\n-- new process:\n{}",
                report.kinds,
                old_log.lock().unwrap(),
                new.log.lock().unwrap()
            );
        }
    }
    drop(new);
}

fn upgrade_lost_nothing(report: &Report) -> bool {
    // Without `net.ipv4.tcp_migrate_req` (the upgrade procedure in the README
    // sets it; `.ci/run` does) the kernel resets connections still queued on
    // the old listeners when they close, and refuses a connect whose
    // handshake was queued there (the client sees a connect error): those are
    // the kernel's, and the only failures allowed then.
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .is_ok_and(|v| v.trim() == "1");
    let kinds: serde_json::Value = serde_json::from_str(&report.kinds).expect("kinds");
    let resets = kinds["reset"].as_u64().unwrap_or(0) + kinds["connect"].as_u64().unwrap_or(0);
    let allowed = if migrate { 0 } else { resets };
    if !migrate && resets > 0 {
        eprintln!("tcp_migrate_req is off: {resets} connection(s) reset or refused by the kernel");
    }
    (report.errors - allowed, report.non_2xx) == (0, 0)
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let slow = Upstream::start_with("slow", &["--delay", "400"]);
    let cfg = ConfigFile::new("drain");
    let ports = Ports::pick();
    cfg.write(&config_text(&ports, &slow, &slow, "a"));
    let gw = Gateway::start(&cfg, &ports);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let port = ports.listen;
            std::thread::spawn(move || raw_get(port, "/in-flight"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let t = Instant::now();
    gw.signal("TERM");
    for c in clients {
        let (status, _) = c.join().expect("client thread");
        assert_eq!(status, 200, "an in-flight request was cut off by the drain");
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(8)), Some(true));
    assert!(t.elapsed() < Duration::from_secs(8));
    // Nothing listens any more (the kernel may take a moment to release an
    // io_uring-registered socket after the process exits).
    assert!(wait_for(Duration::from_secs(3), || {
        std::net::TcpStream::connect(("127.0.0.1", ports.listen)).is_err()
    }));
}

#[test]
fn admin_endpoints_and_metrics_parse() {
    let _turn = under_load();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let cfg = ConfigFile::new("admin");
    let ports = Ports::pick();
    cfg.write(&config_text(&ports, &a, &b, "b"));
    let _gw = Gateway::start(&cfg, &ports);
    let load = Load::start(&ports, 2);
    let report = load.finish();
    assert!(report.requests > 0);
    assert_eq!(admin_request(&ports, "GET", "/healthz").0, 200);
    let (status, ready) = admin_request(&ports, "GET", "/ready");
    assert_eq!(status, 200, "{ready}");
    let routes = admin_get(&ports, "/routes");
    assert!(
        routes.contains("\"name\":\"which\"") && routes.contains("\"upstream\":\"b\""),
        "{routes}"
    );
    let upstreams = admin_get(&ports, "/upstreams");
    assert!(
        upstreams.contains(&format!("\"address\":\"{}\"", a.addr)),
        "{upstreams}"
    );
    assert_eq!(admin_request(&ports, "GET", "/nope").0, 404);
    assert_eq!(admin_request(&ports, "DELETE", "/metrics").0, 405);

    let text = admin_get(&ports, "/metrics");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid Prometheus exposition");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let ok = value(
        "shardgate_requests_total",
        &[
            ("route", "main"),
            ("method", "GET"),
            ("status_class", "2xx"),
        ],
    );
    assert!(
        ok >= report.requests as f64,
        "{ok} < {} in\n{text}",
        report.requests
    );
    assert!(
        value("shardgate_upstream_reuses_total", &[]) > 0.0,
        "{text}"
    );
    assert!(
        value("shardgate_accepted_connections_total", &[]) >= 2.0,
        "{text}"
    );
    assert_eq!(value("shardgate_config_version", &[]), 1.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "shardgate_request_duration_seconds");
    assert!(
        matches!(
            histogram.map(|h| &h.value),
            Some(prometheus_parse::Value::Histogram(_))
        ),
        "request duration is a histogram: {text}"
    );
}

#[test]
fn an_upstream_reset_is_logged_in_the_kernels_words() {
    // An upstream that reads the request and resets the connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Read;
        for mut conn in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
        }
    });
    let cfg = ConfigFile::new("reset");
    let ports = Ports::pick();
    cfg.write(&format!(
        "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:{}\"\n\
         [upstreams.app]\nendpoints = [\"{addr}\"]\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        ports.listen
    ));
    let gw = Gateway::start(&cfg, &ports);
    let (status, _) = raw_get(ports.listen, "/");
    assert_eq!(status, 502);
    // ECONNRESET, as the kernel words it.
    assert!(
        wait_for(Duration::from_secs(3), || gw
            .log
            .lock()
            .unwrap()
            .contains("Connection reset by peer (os error 104)")),
        "the errno is not in the log: {}",
        gw.log.lock().unwrap()
    );
}
