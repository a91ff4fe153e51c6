//! Forwarding, keep-alive, pipelining, header rewriting: every case on both drivers.

use shardgate_http::Method;
use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, Script, TestGateway};

#[test]
fn get_is_forwarded_with_forwarding_headers_and_without_hop_by_hop() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("hello");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(
            b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Drop\r\n\
              X-Drop: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
              X-Forwarded-For: 10.1.1.1\r\nX-Forwarded-Proto: https\r\nX-Keep: yes\r\n\r\n",
        );
        let r = c.read_response().expect("a response");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "hello"),
            "{driver:?}"
        );
        let seen = &up.requests()[0];
        assert_eq!(seen.request_line(), "GET /a/b?x=1 HTTP/1.1", "{driver:?}");
        assert_eq!(seen.header("host").as_deref(), Some("example.com"));
        // The client is not a trusted proxy: what it claims is replaced.
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some("example.com")
        );
        assert_eq!(seen.header("x-keep").as_deref(), Some("yes"));
        for dropped in [
            "connection",
            "x-drop",
            "keep-alive",
            "te",
            "proxy-connection",
        ] {
            assert_eq!(
                seen.header(dropped),
                None,
                "{dropped} reached the upstream ({driver:?})"
            );
        }
    }
}

#[test]
fn response_hop_by_hop_headers_are_dropped() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| {
            Script::Raw(
                b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=9\r\n\
                  Trailer: X-T\r\nUpgrade: foo\r\nX-Public: 2\r\nContent-Length: 2\r\n\r\nok"
                    .to_vec(),
            )
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(r.header("x-public").as_deref(), Some("2"));
        for dropped in [
            "x-internal",
            "keep-alive",
            "trailer",
            "upgrade",
            "connection",
        ] {
            assert_eq!(
                r.header(dropped),
                None,
                "{dropped} reached the client ({driver:?})"
            );
        }
    }
}

#[test]
fn keep_alive_reuses_one_upstream_connection() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        for i in 0..20 {
            c.send(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            assert_eq!(c.read_response().unwrap().status, 200);
        }
        // A second client connection also reuses the pooled one.
        let mut c2 = RawClient::connect(gw.addr());
        c2.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c2.read_response().unwrap().status, 200);
        assert_eq!(up.connections(), 1, "{driver:?}");
        let s = gw.stats();
        assert_eq!(
            (s.upstream_connects, s.upstream_reuses),
            (1, 20),
            "{driver:?}"
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|r| {
            let path = r.request_line().split(' ').nth(1).unwrap_or("").to_string();
            Script::ok(&path)
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(
            b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
              GET /three HTTP/1.1\r\nHost: a\r\n\r\n",
        );
        for want in ["/one", "/two", "/three"] {
            assert_eq!(c.read_response().unwrap().body_str(), want, "{driver:?}");
        }
        assert_eq!(up.requests()[1].body, b"abc");
    }
}

#[test]
fn bodies_pass_through_with_length_and_chunked_framing() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("done");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"PUT /l HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
        assert_eq!(c.read_response().unwrap().status, 200);
        let chunked = b"5;ext=\"v\"\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n";
        c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send(chunked);
        assert_eq!(c.read_response().unwrap().status, 200);
        let seen = up.requests();
        assert_eq!(seen[0].body, b"hello world", "{driver:?}");
        assert_eq!(
            seen[1].header("transfer-encoding").as_deref(),
            Some("chunked")
        );
        assert_eq!(
            seen[1].body, chunked,
            "chunk extensions and trailers must pass ({driver:?})"
        );
    }
}

#[test]
fn chunked_response_with_trailers_reaches_a_1_1_client_intact() {
    for driver in DRIVERS {
        let raw = b"4\r\nabcd\r\n0\r\nX-Digest: 7\r\n\r\n";
        let up = MockUpstream::start(move |_| {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(raw);
            Script::Raw(r)
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(r.raw_body, raw, "{driver:?}");
        assert_eq!(r.body, b"abcd");
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            c.read_response().unwrap().status,
            200,
            "connection still usable"
        );
    }
}

#[test]
fn head_204_304_are_framed_without_bodies() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|r| {
            let line = r.request_line();
            Script::Raw(if line.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec()
            } else if line.contains("/204") {
                b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
            } else if line.contains("/304") {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec()
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast".to_vec()
            })
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response_to(Method::Head).unwrap();
        assert_eq!(
            r.header("content-length").as_deref(),
            Some("1000"),
            "{driver:?}"
        );
        c.send(b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 204);
        c.send(b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 304);
        c.send(b"GET /end HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().body_str(), "last", "{driver:?}");
    }
}

#[test]
fn expect_continue_is_answered_before_the_body() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("got it");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
        let interim = c.read_exact_bytes(25);
        assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n", "{driver:?}");
        c.send(b"data");
        let r = c.read_response().unwrap();
        assert_eq!(r.body_str(), "got it");
        let seen = &up.requests()[0];
        assert_eq!(seen.body, b"data");
        assert_eq!(
            seen.header("expect"),
            None,
            "Expect is answered by the gateway"
        );
    }
}

#[test]
fn http10_clients_get_http10_framing() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|r| {
            if r.request_line().contains("/chunked") {
                Script::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec())
            } else {
                Script::ok("plain")
            }
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        // Keep-alive requested: kept, and said so.
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(
            r.header("connection").as_deref(),
            Some("keep-alive"),
            "{driver:?}"
        );
        // A chunked upstream body reaches a 1.0 client de-chunked, then close.
        c.send(b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(r.header("transfer-encoding"), None);
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert_eq!(r.body_str(), "abcde", "{driver:?}");
        assert!(c.is_closed());
        // No keep-alive: closed after the response.
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET /a HTTP/1.0\r\n\r\n");
        assert_eq!(c.read_response().unwrap().body_str(), "plain");
        assert!(c.is_closed(), "{driver:?}");
        // The upstream got a valid 1.1 request with a Host.
        assert!(up.requests()[0].request_line().ends_with("HTTP/1.1"));
        assert!(up.requests().iter().all(|r| r.header("host").is_some()));
    }
}

#[test]
fn absolute_form_target_goes_to_the_configured_upstream() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("mine");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(b"GET http://evil.example:8080/steal?x HTTP/1.1\r\nHost: good.example\r\n\r\n");
        assert_eq!(c.read_response().unwrap().body_str(), "mine");
        let seen = &up.requests()[0];
        assert_eq!(seen.request_line(), "GET /steal?x HTTP/1.1", "{driver:?}");
        assert_eq!(seen.header("host").as_deref(), Some("evil.example:8080"));
    }
}

#[test]
fn large_bodies_stream_both_ways() {
    const SIZE: usize = 8 << 20;
    for driver in DRIVERS {
        let up = MockUpstream::start(|r| {
            let mut resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\nX-Got: {}\r\n\r\n",
                r.body.len()
            )
            .into_bytes();
            resp.extend(std::iter::repeat_n(b'd', SIZE));
            Script::Raw(resp)
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = RawClient::connect(gw.addr());
        c.send(
            format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
        );
        let chunk = vec![b'u'; 64 * 1024];
        for _ in 0..SIZE / chunk.len() {
            c.send(&chunk);
        }
        let r = c.read_response().unwrap();
        assert!(r.complete, "{driver:?}");
        assert_eq!(r.body.len(), SIZE);
        assert_eq!(r.header("x-got"), Some(SIZE.to_string()), "{driver:?}");
    }
}
