//! Protocol switches (tunnels), the upstream pool's dead-connection retry,
//! and what a reload does to pools.

use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, Script, TestGateway, wait_until};
use std::time::Duration;

/// A WebSocket `101` for the key [`WS_KEY`] (RFC 6455 §1.3's example).
const SWITCH: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[test]
fn websocket_upgrade_tunnels_both_ways() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| Script::Echo(SWITCH.to_vec()));
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(format!("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n").as_bytes());
        let r = c.read_response().expect("101");
        assert_eq!(r.status, 101, "{driver:?}");
        assert_eq!(r.header("upgrade").as_deref(), Some("websocket"));
        let seen = &up.requests()[0];
        assert_eq!(seen.header("upgrade").as_deref(), Some("websocket"));
        assert_eq!(seen.header("connection").as_deref(), Some("upgrade"));
        for msg in [&b"ping"[..], b"frames of any shape \x00\xff", b"x"] {
            c.send(msg);
            assert_eq!(c.read_exact_bytes(msg.len()), msg, "{driver:?}");
        }
        // Closing our side ends the tunnel: the echo upstream closes back.
        c.shutdown_write();
        assert!(c.is_closed(), "{driver:?}");
    }
}

/// A `101` that does not complete the handshake the client asked for is a 502, and nothing
/// is tunnelled: a WebSocket answer without the right `Sec-WebSocket-Accept`, or a switch to
/// another protocol.
#[test]
fn a_101_that_does_not_answer_the_handshake_is_502() {
    let wrong: [&'static [u8]; 3] = [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: something-else\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    ];
    for driver in DRIVERS {
        for answer in wrong {
            let up = MockUpstream::start(move |_| Script::Echo(answer.to_vec()));
            let gw = TestGateway::proxy(driver, &[up.addr()], "");
            let mut c = RawClient::connect(gw.addr());
            c.send(format!("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {WS_KEY}\r\n\r\n").as_bytes());
            let r = c.read_response().expect("an answer");
            assert_eq!(
                r.status,
                502,
                "{driver:?}: {}",
                String::from_utf8_lossy(answer)
            );
        }
    }
}

#[test]
fn unsolicited_101_is_502_and_h2c_is_not_tunnelled() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| Script::Raw(SWITCH.to_vec()));
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 502, "{driver:?}");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 502, "{driver:?}");
        let seen = &up.requests()[1];
        assert_eq!(
            seen.header("upgrade"),
            None,
            "h2c must not reach the upstream"
        );
        assert_eq!(seen.header("http2-settings"), None);
    }
}

/// A pooled connection the upstream has closed is noticed at checkout (its end
/// of stream arrived while it was idle) and never used: every request gets a
/// fresh connection, with no failed try to retry.
#[test]
fn dead_pooled_connection_is_replaced_by_a_fresh_one() {
    for driver in DRIVERS {
        // Answers, then closes without saying so: the pooled connection is dead.
        let up = MockUpstream::start(|_| {
            Script::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        for i in 0..5 {
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                c.read_response().unwrap().status,
                200,
                "{driver:?} request {i}"
            );
            // Let the upstream's close reach the pooled socket.
            assert!(wait_until(Duration::from_secs(2), || up.connections() > i));
            std::thread::sleep(Duration::from_millis(20));
        }
        let stats = gw.stats();
        assert_eq!(
            (stats.upstream_connects, stats.upstream_reuses),
            (5, 0),
            "{driver:?}: {stats:?}"
        );
    }
}

#[test]
fn a_post_after_the_upstream_closed_goes_once_on_a_fresh_connection() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| {
            Script::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 200);
        assert!(wait_until(Duration::from_secs(2), || up.connections() == 1));
        std::thread::sleep(Duration::from_millis(50));
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx");
        let status = c.read_response().unwrap().status;
        // The close reached the idle socket: it is not used, and the POST goes
        // once, on a fresh connection. Never a silent second POST.
        assert_eq!(status, 200, "{driver:?}");
        assert_eq!(
            up.requests()
                .iter()
                .filter(|r| r.request_line().starts_with("POST"))
                .count(),
            1
        );
    }
}

#[test]
fn max_requests_per_connection_retires_upstream_connections() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(
            driver,
            &[up.addr()],
            "[pool]\nmax_requests_per_connection = 3",
        );
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..9 {
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.read_response().unwrap().status, 200);
        }
        assert_eq!(up.connections(), 3, "{driver:?}");
    }
}

#[test]
fn a_reload_keeps_the_pools_of_endpoints_it_keeps_and_drains_the_rest() {
    use std::sync::{Mutex, mpsc};
    for driver in DRIVERS {
        // `/slow` is answered only once the test says so.
        let (arrived_tx, arrived) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let gate = Mutex::new((arrived_tx, release_rx));
        let a = MockUpstream::start(move |r| {
            if r.request_line().contains("/slow") {
                let gate = gate.lock().unwrap();
                let _ = gate.0.send(());
                let _ = gate.1.recv_timeout(Duration::from_secs(30));
                Script::ok("s")
            } else {
                Script::ok("a")
            }
        });
        let b = MockUpstream::ok("b");
        let config = shardgate_testkit::config_for(driver, &[a.addr()], "");
        let gw = TestGateway::start(config.clone());
        let handle = gw.gateway().handle();
        let addr = gw.addr();
        let get = move |path: &str| {
            let mut c = RawClient::connect(addr);
            c.set_timeout(Duration::from_secs(30));
            c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
            let r = c.read_response().expect("a response");
            (r.status, r.body_str())
        };
        assert_eq!(get("/"), (200, "a".into()));

        // A reload that still names the endpoint keeps its pool: the next
        // request reuses the connection.
        let mut same = config.clone();
        same.timeouts.connect = Duration::from_secs(2);
        handle.reload(same, 0, "test").unwrap();
        assert_eq!(get("/"), (200, "a".into()));
        assert_eq!((a.connections(), a.closed()), (1, 0), "{driver:?}");

        // One connection busy with an answer held back, one idle in the pool.
        let slow = std::thread::spawn(move || get("/slow"));
        arrived
            .recv_timeout(Duration::from_secs(10))
            .expect("/slow reaches the upstream");
        assert_eq!(get("/"), (200, "a".into()));
        assert_eq!(a.connections(), 2, "{driver:?}");

        // A reload that moves the group elsewhere closes the idle one at
        // once; the busy one finishes its answer and then closes.
        handle
            .reload(
                shardgate_testkit::config_for(driver, &[b.addr()], ""),
                0,
                "test",
            )
            .unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || a.closed() == 1),
            "{driver:?}: the idle connection was kept"
        );
        release.send(()).unwrap();
        assert_eq!(slow.join().unwrap(), (200, "s".into()), "{driver:?}");
        assert!(
            wait_until(Duration::from_secs(10), || a.closed() == 2),
            "{driver:?}: the busy connection was pooled again"
        );
        assert_eq!(get("/"), (200, "b".into()));
        assert_eq!(a.connections(), 2, "{driver:?}");
    }
}

/// A steady closed loop of 256 client connections on one shard, default
/// pool settings: the pool keeps what the load needs, so the gateway opens
/// about one upstream connection per concurrent request, not one per
/// request (with a 64-connection idle cap it opened thousands a second).
#[test]
fn the_default_pool_does_not_churn_under_256_connections() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| {
            // Long enough that most of the 256 requests are in flight at once.
            std::thread::sleep(Duration::from_millis(2));
            Script::ok("x")
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let addr = gw.addr();
        let run = Duration::from_secs(2);
        let start = std::time::Instant::now();
        let clients: Vec<_> = (0..256)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = RawClient::connect(addr);
                    let mut ok = 0u64;
                    while start.elapsed() < run {
                        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
                        match c.read_response() {
                            Some(r) if r.status == 200 => ok += 1,
                            _ => c = RawClient::connect(addr),
                        }
                    }
                    ok
                })
            })
            .collect();
        let requests: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
        let opened = up.connections();
        eprintln!("{driver:?}: {requests} requests over {opened} upstream connections");
        assert!(requests > 2_000, "{driver:?}: too little load: {requests}");
        assert!(
            opened <= 256 + 64,
            "{driver:?}: {opened} upstream connections for {requests} requests from 256 clients"
        );
    }
}

/// An upstream that answers HEAD with a body it should not send, late: the bytes land on the
/// idle pooled connection. That connection must be closed, never handed to the next request,
/// whose answer would otherwise start with them.
#[test]
fn a_pooled_connection_that_receives_bytes_while_idle_is_not_reused() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|r| {
            if r.request_line().starts_with("HEAD") {
                Script::Slow(
                    vec![
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
                        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstray!".to_vec(),
                    ],
                    Duration::from_millis(50),
                )
            } else {
                Script::ok("fresh")
            }
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c
            .read_response_to(shardgate_http::Method::Head)
            .expect("HEAD answer");
        assert_eq!(r.status, 200, "{driver:?}");
        // Let the stray bytes arrive on the idle pooled connection.
        std::thread::sleep(Duration::from_millis(200));
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().expect("GET answer");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "fresh"),
            "{driver:?}: the stray bytes were read as the answer"
        );
        assert_eq!(
            up.connections(),
            2,
            "{driver:?}: the dirty connection was reused"
        );
    }
}
