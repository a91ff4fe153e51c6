//! The access log: one JSON line per request with the fields operators need,
//! written off the shard; a full disk drops (and counts) lines, never
//! requests; reopening follows logrotate.

use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, TestGateway, wait_until};
use std::path::Path;
use std::time::Duration;

fn log_config(path: &Path, format: &str) -> String {
    format!(
        "[access_log]\npath = \"{}\"\nformat = \"{format}\"\n",
        path.display()
    )
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shardgate-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn json_lines_carry_every_field() {
    for driver in DRIVERS {
        let path = temp(&format!("json-{driver:?}.log"));
        let up = MockUpstream::ok("hello");
        let gw = TestGateway::proxy(driver, &[up.addr()], &log_config(&path, "json"));
        let mut c = RawClient::connect(gw.addr());
        c.send(
            b"POST /items?x=\"1\" HTTP/1.1\r\nHost: a\r\nX-Request-Id: req-42\r\n\
              traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert_eq!(c.read_response().unwrap().status, 200);
        c.send(b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 200);
        assert!(
            wait_until(Duration::from_secs(3), || lines(&path).len() == 2),
            "{driver:?}: {:?}",
            lines(&path)
        );
        let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).expect("a JSON line");
        assert_eq!(first["route"], "all");
        assert_eq!(first["method"], "POST");
        assert_eq!(first["path"], "/items?x=\"1\"");
        assert_eq!(first["status"], 200);
        assert_eq!(first["request_id"], "req-42");
        assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(first["client"], "127.0.0.1");
        assert_eq!(first["upstream"], up.addr().to_string());
        assert!(first["bytes_in"].as_u64().unwrap() > 3);
        assert!(first["bytes_out"].as_u64().unwrap() > 5);
        assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(first["tenant"], "");
    }
}

#[test]
fn tenant_and_filter_ids_are_logged_for_forwarded_and_refused_requests() {
    for driver in DRIVERS {
        let path = temp(&format!("tenant-{driver:?}.log"));
        let up = MockUpstream::ok("hello");
        let extra = format!(
            "{}[[tenants]]\nname = \"acme\"\nhosts = [\"acme.test\"]\n\
             filters = [{{ type = \"request-id\" }}, {{ type = \"trace-context\" }}, \
             {{ type = \"rate-limit\", rate = 1, per = \"1m\", burst = 1, key = \"tenant\" }}]\n\
             [[routes]]\nname = \"acme-api\"\ntenant = \"acme\"\nprefix = \"/\"\nupstream = \"backend\"\n",
            log_config(&path, "json")
        );
        let gw = TestGateway::proxy(driver, &[up.addr()], &extra);
        let mut c = RawClient::connect(gw.addr());
        let mut ids = Vec::new();
        for want in [200, 429] {
            c.send(b"GET /x HTTP/1.1\r\nHost: acme.test\r\n\r\n");
            let r = c.read_response().unwrap();
            assert_eq!(r.status, want, "{driver:?}");
            ids.push(r.header("x-request-id").expect("an id on both"));
        }
        let trace = up.requests()[0].header("traceparent").unwrap()[3..35].to_string();
        assert!(wait_until(Duration::from_secs(3), || lines(&path).len() == 2));
        for (line, (id, status)) in lines(&path).iter().zip(ids.iter().zip([200, 429])) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["tenant"], "acme", "{line}");
            assert_eq!(v["route"], "acme-api");
            assert_eq!(v["status"], status);
            assert_eq!(v["request_id"], id.as_str(), "the generated id is logged");
        }
        let first: serde_json::Value = serde_json::from_str(&lines(&path)[0]).unwrap();
        assert_eq!(
            first["trace_id"],
            trace.as_str(),
            "the started trace is logged"
        );
    }
}

#[test]
fn an_api_key_in_the_query_is_not_logged() {
    let path = temp("keyless.log");
    let up = MockUpstream::ok("hello");
    let digest = shardgate_filters::api_key::hash_key("s3cret");
    let extra = format!(
        "{}[[routes]]\nname = \"k\"\nprefix = \"/k\"\nupstream = \"backend\"\n\
         filters = [{{ type = \"api-key\", keys = [{{ sha256 = \"{digest}\", consumer = \"c\" }}], \
         query_param = \"key\" }}]\n",
        log_config(&path, "json")
    );
    let gw = TestGateway::proxy(shardgate_config::Driver::Auto, &[up.addr()], &extra);
    let mut c = RawClient::connect(gw.addr());
    for target in ["/k?key=s3cret&page=2", "/k?key=wrong"] {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        c.read_response().unwrap();
    }
    assert!(wait_until(Duration::from_secs(3), || lines(&path).len() == 2));
    let logged: Vec<String> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
        .collect();
    assert_eq!(logged, ["\"/k?page=2\"", "\"/k\""]);
}

#[test]
fn secrets_in_the_query_never_reach_the_log_or_a_redirect() {
    for driver in DRIVERS {
        let path = temp(&format!("secrets-{driver:?}.log"));
        let up = MockUpstream::ok("hello");
        let digest = shardgate_filters::api_key::hash_key("s3cret");
        let text = format!(
            "workers = 1\ndriver = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
             [access_log]\npath = \"{}\"\nredact_query = [\"token\"]\n\
             [upstreams.backend]\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"k\"\nprefix = \"/k\"\nupstream = \"backend\"\n\
             filters = [{{ type = \"api-key\", keys = [{{ sha256 = \"{digest}\", consumer = \"c\" }}], \
             query_param = \"key\" }}]\n\
             [[routes]]\nname = \"old\"\nprefix = \"/old\"\nupstream = \"backend\"\n\
             filters = [{{ type = \"redirect\", status = 302, to = \"/new\", keep_query = true }}]\n",
            if driver == shardgate_config::Driver::Uring {
                "uring"
            } else {
                "legacy"
            },
            path.display(),
            up.addr()
        );
        let gw = TestGateway::start(shardgate_config::from_toml(&text).unwrap());
        let mut c = RawClient::connect(gw.addr());
        // Unrouted, refused as a path, a wrong key, a good key, a redirect, no key.
        let cases = [
            ("/nowhere?key=S1", 404),
            ("/k/a%2Fb?key=S2", 400),
            ("/k?key=S3", 403),
            ("/k?token=S4&key=s3cret", 200),
            ("/old?key=S5&v=1", 302),
            ("/k?token=S6", 401),
        ];
        for (target, status) in cases {
            let mut c2 = RawClient::connect(gw.addr());
            let c = if status == 400 { &mut c2 } else { &mut c };
            c.send(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let r = c.read_response().unwrap();
            assert_eq!(r.status, status, "{driver:?} {target}");
            if status == 302 {
                assert_eq!(
                    r.header("location").as_deref(),
                    Some("/new?v=1"),
                    "{driver:?}"
                );
            }
        }
        assert!(
            wait_until(Duration::from_secs(3), || lines(&path).len() == cases.len()),
            "{driver:?}: {:?}",
            lines(&path)
        );
        let all = lines(&path).join("\n");
        for secret in ["S1", "S2", "S3", "S4", "S5", "S6", "s3cret"] {
            assert!(
                !all.contains(secret),
                "{driver:?}: {secret} was logged:\n{all}"
            );
        }
        assert!(
            all.contains("\"/old?v=1\""),
            "the rest of the query is kept:\n{all}"
        );
    }
}

#[test]
fn text_lines_escape_what_clients_send() {
    for driver in DRIVERS {
        let path = temp(&format!("text-{driver:?}.log"));
        let up = MockUpstream::ok("hello");
        let gw = TestGateway::proxy(driver, &[up.addr()], &log_config(&path, "text"));
        let mut c = RawClient::connect(gw.addr());
        c.send(
            b"GET /a\"b HTTP/1.1\r\nHost: a\r\nX-Request-Id: x\" status=999 route=\"admin\r\n\r\n",
        );
        c.read_response().unwrap();
        assert!(wait_until(Duration::from_secs(3), || lines(&path).len() == 1));
        let line = &lines(&path)[0];
        assert!(
            line.contains("request_id=\"x\\x22\\x20status=999\\x20route=\\x22admin\""),
            "{driver:?}: {line}"
        );
        assert_eq!(line.matches(" route=").count(), 1, "{line}");
        assert_eq!(
            line.matches('"').count(),
            4,
            "only the gateway's own quotes: {line}"
        );
    }
}

#[test]
fn a_full_disk_drops_lines_not_requests() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(
            driver,
            &[up.addr()],
            &log_config(Path::new("/dev/full"), "json"),
        );
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..50 {
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.read_response().unwrap().status, 200, "{driver:?}");
        }
        let handle = gw.gateway().handle();
        let dropped = || {
            handle
                .metrics_text()
                .lines()
                .find_map(|l| l.strip_prefix("shardgate_access_log_dropped_lines_total "))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert!(
            wait_until(Duration::from_secs(3), || dropped() == 50),
            "{driver:?}: {}\n{}",
            dropped(),
            handle.metrics_text()
        );
    }
}

#[test]
fn reopen_after_rotation_writes_to_the_new_file() {
    let path = temp("rotate.log");
    let up = MockUpstream::ok("x");
    let gw = TestGateway::proxy(
        shardgate_config::Driver::Uring,
        &[up.addr()],
        &log_config(&path, "text"),
    );
    let mut c = RawClient::connect(gw.addr());
    c.send(b"GET /before HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 200);
    assert!(wait_until(Duration::from_secs(3), || lines(&path).len() == 1));
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    gw.gateway().handle().reopen_logs();
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 200);
    assert!(
        wait_until(Duration::from_secs(3), || lines(&path).len() == 1),
        "a new file after reopen"
    );
    assert!(
        lines(&path)[0].contains("\"GET /after\" 200"),
        "{:?}",
        lines(&path)
    );
    assert!(
        lines(&rotated)[0].contains("\"GET /before\" 200"),
        "{:?}",
        lines(&rotated)
    );
}
