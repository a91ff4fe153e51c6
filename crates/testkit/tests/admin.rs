//! The admin server: one stalled client cannot keep the others waiting, it answers only
//! requests that name it (DNS rebinding), and an optional bearer token guards all but the
//! probes.

use shardgate_testkit::{MockUpstream, RawClient, TestGateway, config_for};
use std::time::{Duration, Instant};

fn gateway(admin: &str) -> (TestGateway, MockUpstream) {
    let up = MockUpstream::ok("ok");
    let extra = format!("[admin]\naddress = \"127.0.0.1:0\"\n{admin}");
    let config = config_for(shardgate_config::Driver::Auto, &[up.addr()], &extra);
    (TestGateway::start(config), up)
}

fn ask(gw: &TestGateway, head: &str) -> (u16, Option<String>) {
    let mut c = RawClient::connect(gw.gateway().admin_addr().unwrap());
    c.send(format!("{head}Connection: close\r\n\r\n").as_bytes());
    let r = c.read_response().expect("an answer");
    (r.status, r.header("www-authenticate"))
}

#[test]
fn stalled_clients_do_not_keep_healthz_from_the_others() {
    let (gw, _up) = gateway("");
    let admin = gw.gateway().admin_addr().unwrap();
    let stalled: Vec<RawClient> = (0..4)
        .map(|_| {
            let mut c = RawClient::connect(admin);
            c.send(b"GET /heal");
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let (status, _) = ask(&gw, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(2),
        "healthz waited {took:?} behind stalled clients"
    );
    // A stalled client is ended by the whole-request deadline with a 408.
    let mut first = stalled.into_iter().next().unwrap();
    first.set_timeout(Duration::from_secs(10));
    assert_eq!(first.read_response().expect("an answer").status, 408);
}

#[test]
fn only_requests_that_name_the_admin_server_are_answered() {
    let (gw, _up) = gateway("hosts = [\"gw-admin.internal\"]\n");
    let port = gw.gateway().admin_addr().unwrap().port();
    for (host, want) in [
        ("evil.example".to_string(), 403),
        (format!("evil.example:{port}"), 403),
        ("127.0.0.1.evil.example".to_string(), 403),
        ("localhost".to_string(), 200),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        ("[::1]".to_string(), 200),
        ("GW-Admin.internal".to_string(), 200),
    ] {
        let (status, _) = ask(&gw, &format!("GET /config HTTP/1.1\r\nHost: {host}\r\n"));
        assert_eq!(status, want, "Host: {host}");
    }
}

#[test]
fn a_bearer_token_guards_all_but_the_probes() {
    let token = "0123456789abcdef-admin";
    let (gw, _up) = gateway(&format!("token = \"{token}\"\n"));
    let host = "Host: localhost\r\n";
    let (status, challenge) = ask(&gw, &format!("GET /config HTTP/1.1\r\n{host}"));
    assert_eq!(status, 401);
    assert!(challenge.unwrap_or_default().starts_with("Bearer"));
    let wrong = format!("GET /config HTTP/1.1\r\n{host}Authorization: Bearer {token}x\r\n");
    assert_eq!(ask(&gw, &wrong).0, 401);
    let reload = format!("POST /reload HTTP/1.1\r\n{host}Content-Length: 0\r\n");
    assert_eq!(ask(&gw, &reload).0, 401, "a reload needs the token too");
    let right = format!("GET /config HTTP/1.1\r\n{host}Authorization: bearer {token}\r\n");
    assert_eq!(ask(&gw, &right).0, 200);
    for probe in ["/healthz", "/ready"] {
        let (status, _) = ask(&gw, &format!("GET {probe} HTTP/1.1\r\n{host}"));
        assert_eq!(status, 200, "{probe} stays open to probes");
    }
}
