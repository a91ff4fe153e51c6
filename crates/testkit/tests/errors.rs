//! Failures on either side get the right answer: statuses, closes, truncation.

use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, Script, TestGateway, closed_port};
use std::time::{Duration, Instant};

#[test]
fn refused_upstream_is_502() {
    for driver in DRIVERS {
        let gw = TestGateway::proxy(driver, &[closed_port()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 502, "{driver:?}");
        // The client connection survives an upstream failure.
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 502, "{driver:?}");
    }
}

#[test]
fn connect_failure_moves_to_another_endpoint() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("alive");
        let gw = TestGateway::proxy(driver, &[closed_port(), up.addr()], "");
        for _ in 0..4 {
            let mut c = RawClient::connect(gw.addr());
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.read_response().unwrap().body_str(), "alive", "{driver:?}");
        }
        assert!(gw.stats().upstream_retries >= 1);
    }
}

#[test]
fn silent_upstream_is_504() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| Script::Hang);
        let gw = TestGateway::proxy(
            driver,
            &[up.addr()],
            "[timeouts]\nupstream_response = \"300ms\"",
        );
        let mut c = RawClient::connect(gw.addr());
        let t = Instant::now();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 504, "{driver:?}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}

#[test]
fn slowloris_gets_408_and_close() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(
            driver,
            &[up.addr()],
            "[timeouts]\nrequest_header = \"300ms\"",
        );
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
        // Dribbling bytes does not extend the deadline.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(50));
            c.try_send(b"X-A: b\r\n");
        }
        let r = c.read_response().expect("a 408");
        assert_eq!(r.status, 408, "{driver:?}");
        assert!(c.is_closed());
        assert!(up.requests().is_empty());
    }
}

#[test]
fn idle_keep_alive_connection_closes_quietly() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "[timeouts]\nidle = \"200ms\"");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 200);
        let t = Instant::now();
        assert!(
            c.read_to_end().is_empty(),
            "nothing is sent on idle close ({driver:?})"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{driver:?}");
    }
}

#[test]
fn upstream_dying_mid_body_cuts_the_client_off() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|r| {
            Script::RawThenClose(if r.request_line().contains("chunked") {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec()
            })
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET /length HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert!(
            !r.complete,
            "a cut Content-Length body must not look complete ({driver:?})"
        );
        assert!(c.is_closed());
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert!(!r.complete, "no last-chunk may be invented ({driver:?})");
        assert!(!r.raw_body.ends_with(b"0\r\n\r\n"));
        assert!(c.is_closed());
    }
}

#[test]
fn malformed_upstream_responses_are_502() {
    let cases: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    ];
    for driver in DRIVERS {
        for case in cases {
            let bytes = case.to_vec();
            let up = MockUpstream::start(move |_| Script::RawThenClose(bytes.clone()));
            let gw = TestGateway::proxy(driver, &[up.addr()], "");
            let mut c = RawClient::connect(gw.addr());
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            let r = c.read_response().expect("a response");
            assert_eq!(
                r.status,
                502,
                "{driver:?}: {}",
                String::from_utf8_lossy(case)
            );
        }
    }
}

#[test]
fn bad_chunked_upstream_body_cuts_the_client_off() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| {
            Script::Slow(
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec(),
                    b"zz\r\nnot hex\r\n0\r\n\r\n".to_vec(),
                ],
                Duration::from_millis(30),
            )
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert!(!r.complete, "{driver:?}");
        assert!(c.is_closed());
    }
}

#[test]
fn smuggling_attempts_never_reach_the_upstream() {
    let cases: &[(&[u8], u16)] = &[
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nContent-Length: 5\r\n\r\nabcdef", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400),
    ];
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        for (raw, status) in cases {
            let mut c = RawClient::connect(gw.addr());
            c.send(raw);
            let r = c.read_response().expect("a response");
            assert_eq!(
                r.status,
                *status,
                "{driver:?}: {}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(r.header("connection").as_deref(), Some("close"));
            assert!(
                c.is_closed(),
                "{driver:?}: {}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(up.requests().is_empty(), "{driver:?}: {:?}", up.requests());
    }
}

#[test]
fn bad_chunk_in_a_streamed_request_body_is_400() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        std::thread::sleep(Duration::from_millis(20));
        c.send(b"5\r\nhello\r\nzz\r\n");
        assert_eq!(c.read_response().unwrap().status, 400, "{driver:?}");
        assert!(c.is_closed());
    }
}

#[test]
fn limits_give_414_431_413() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "[limits]\nmax_body = 10");
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "b".repeat(17000)
        );
        let cases = [
            (long_target.into_bytes(), 414),
            (big_header.into_bytes(), 431),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890".to_vec(), 413),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n01234567890\r\n0\r\n\r\n".to_vec(), 413),
        ];
        for (raw, status) in cases {
            let mut c = RawClient::connect(gw.addr());
            c.try_send(&raw);
            let r = c.read_response().expect("a response");
            assert_eq!(r.status, status, "{driver:?}");
        }
        assert!(up.requests().is_empty());
    }
}

#[test]
fn routes_answer_404_and_405() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let extra = format!(
            "[upstreams.other]\nendpoints = [\"{}\"]\n[[routes]]\nname = \"ro\"\npath = \"/ro\"\nmethods = [\"GET\", \"HEAD\"]\nupstream = \"other\"\n",
            up.addr()
        );
        let text = format!(
            "workers = 1\ndriver = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n{extra}\n[[routes]]\nname = \"api\"\nprefix = \"/api\"\nupstream = \"other\"\n",
            if driver == shardgate_config::Driver::Uring {
                "uring"
            } else {
                "legacy"
            }
        );
        let gw = TestGateway::start(shardgate_config::from_toml(&text).unwrap());
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 404, "{driver:?}");
        c.send(b"DELETE /ro HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
        c.send(b"GET /apix HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            c.read_response().unwrap().status,
            404,
            "prefixes match whole segments"
        );
        c.send(b"GET /api/v1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 200, "{driver:?}");
    }
}
