//! What crosses the proxy: hop-by-hop fields both ways, X-Forwarded-*, absolute-form targets
//! (no open proxy), keep-alive, pipelining and HTTP/1.0 framing.

use crate::harness::{Driver, Proxy};
use crate::upstream::Upstream;
use crate::wire::{Request, show};

/// Sends one request through a fresh proxy in front of an echo upstream; returns the 200 body
/// and the request as the upstream framed it.
fn forward_one(driver: Driver, request: &[u8]) -> Request {
    forward_one_with(driver, "", request)
}

/// [`forward_one`] with top-level configuration keys (`trusted_proxies = [...]`).
fn forward_one_with(driver: Driver, top: &str, request: &[u8]) -> Request {
    let up = Upstream::echo();
    let config = format!(
        "[upstreams.app]\nendpoints = [\"{}\"]\n[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        up.addr
    );
    let proxy = if top.is_empty() {
        Proxy::start(driver, &[up.addr])
    } else {
        Proxy::start_config_with(driver, top, &config)
    };
    let mut c = proxy.client();
    c.send(request);
    let r = c.expect_final(false, &show(request));
    assert_eq!(
        r.status,
        200,
        "{}: upstream errors {:?}",
        show(request),
        up.seen().errors
    );
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "upstream requests: {reqs:?}");
    reqs.into_iter().next().unwrap()
}

const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-secret",
    "x-other",
];

both_drivers! {
    fn hop_by_hop_request_fields_dropped(d) {
        let req = forward_one(d, b"GET /h HTTP/1.1\r\nHost: front.example\r\nConnection: keep-alive, X-Secret\r\nConnection: x-other\r\nX-Secret: 1\r\nX-Other: 2\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: websocket\r\nX-Kept: yes\r\n\r\n");
        for name in HOP_BY_HOP {
            assert!(!req.head.has(name), "{name} reached the upstream: {}", show(&req.raw));
        }
        for token in ["x-secret", "x-other", "upgrade"] {
            assert!(!req.head.connection_has(token), "Connection kept {token}: {}", show(&req.raw));
        }
        assert_eq!(req.head.get("x-kept"), Some("yes"));
        assert_eq!(req.head.all("host"), ["front.example"], "Host must be kept");
    }

    fn hop_by_hop_response_fields_dropped(d) {
        let up = Upstream::scripted(b"HTTP/1.1 200 OK\r\nConnection: X-Up-Secret\r\nX-Up-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok", false);
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.expect_final(false, "hop-by-hop response");
        assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]));
        for name in ["x-up-secret", "keep-alive", "proxy-connection", "trailer", "upgrade"] {
            assert!(!r.head.has(name), "{name} reached the client: {}", show(&r.raw));
        }
        assert!(!r.head.connection_has("x-up-secret"), "{}", show(&r.raw));
        assert_eq!(r.head.get("x-kept"), Some("yes"));
    }

    fn xff_set_when_absent(d) {
        let req = forward_one(d, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(xff(&req), ["127.0.0.1"], "{}", show(&req.raw));
    }

    fn xff_from_an_untrusted_client_is_replaced(d) {
        let req = forward_one(d, b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n");
        assert_eq!(xff(&req), ["127.0.0.1"], "{}", show(&req.raw));
    }

    fn xff_from_a_trusted_proxy_is_appended_to_in_order(d) {
        let req = forward_one_with(
            d,
            "trusted_proxies = [\"127.0.0.0/8\"]",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.7, 198.51.100.2\r\nX-Forwarded-For: 192.0.2.9\r\n\r\n",
        );
        let want = ["203.0.113.7", "198.51.100.2", "192.0.2.9", "127.0.0.1"];
        assert_eq!(xff(&req), want, "{}", show(&req.raw));
    }

    fn what_a_client_claims_about_itself_does_not_reach_the_origin(d) {
        let req = forward_one(d, b"GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 10.1.1.1\r\nTrue-Client-IP: 10.1.1.1\r\nForwarded: for=10.1.1.1\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX_Consumer: root\r\nX-Kept: 1\r\n\r\n");
        for name in ["x-real-ip", "true-client-ip", "forwarded", "x-original-url", "x-rewrite-url", "x_consumer"] {
            assert!(!req.head.has(name), "{name} forwarded: {}", show(&req.raw));
        }
        assert_eq!(req.head.get("x-kept"), Some("1"));
    }

    fn x_forwarded_proto_and_host_set(d) {
        let req = forward_one(d, b"GET / HTTP/1.1\r\nHost: front.example:8080\r\n\r\n");
        assert_eq!(req.head.all("x-forwarded-proto"), ["http"], "{}", show(&req.raw));
        assert_eq!(req.head.all("x-forwarded-host"), ["front.example:8080"], "{}", show(&req.raw));
        assert_eq!(req.head.all("host"), ["front.example:8080"]);
    }

    fn x_forwarded_proto_and_host_not_spoofable(d) {
        let req = forward_one(d, b"GET / HTTP/1.1\r\nHost: front.example\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: spoofed.example\r\n\r\n");
        assert_eq!(req.head.all("x-forwarded-proto"), ["http"], "{}", show(&req.raw));
        assert_eq!(req.head.all("x-forwarded-host"), ["front.example"], "{}", show(&req.raw));
    }

    fn absolute_form_goes_to_configured_upstream_only(d) {
        let up = Upstream::echo();
        let elsewhere = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let authority = elsewhere.addr.to_string();
        c.send(format!("GET http://{authority}/x?y=1 HTTP/1.1\r\nHost: front.example\r\n\r\n").as_bytes());
        let r = c.expect_final(false, "absolute-form");
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        let reqs = up.requests();
        assert_eq!(reqs.len(), 1, "configured upstream: {reqs:?}");
        assert_eq!(reqs[0].target, "/x?y=1", "origin-form upstream: {}", show(&reqs[0].raw));
        assert_eq!(reqs[0].head.all("host"), [authority.as_str()], "{}", show(&reqs[0].raw));
        assert_eq!(elsewhere.connections(), 0, "the proxy connected to the absolute-form authority");
    }

    fn absolute_form_authority_replaces_host(d) {
        let req = forward_one(d, b"GET http://evil.example/p HTTP/1.1\r\nHost: front.example\r\n\r\n");
        assert_eq!(req.target, "/p", "{}", show(&req.raw));
        assert_eq!(req.head.all("host"), ["evil.example"], "{}", show(&req.raw));
    }

    fn connect_is_not_tunnelled(d) {
        let up = Upstream::echo();
        let elsewhere = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let authority = elsewhere.addr.to_string();
        c.send(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes());
        let r = c.expect_final(false, "CONNECT");
        assert!((400..600).contains(&r.status), "CONNECT answered {}", show(&r.raw));
        assert_eq!(elsewhere.connections(), 0, "the proxy connected to the CONNECT authority");
    }

    fn bare_lf_head_rejected_or_normalised(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /lf HTTP/1.1\nHost: a\nX-A: b\n\n");
        let r = c.expect_final(false, "bare LF head");
        match r.status {
            400 => c.closed_cleanly().unwrap(),
            200 => assert_eq!(up.requests()[0].head.get("x-a"), Some("b")),
            s => panic!("bare LF head answered {s}; upstream errors {:?}", up.seen().errors),
        }
    }

    fn keep_alive_reuses_both_sides(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        for path in ["/1", "/2", "/3"] {
            c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let r = c.expect_final(false, path);
            assert_eq!((r.status, &r.body[..]), (200, path.as_bytes()));
        }
        assert_eq!(up.connections(), 1, "upstream connection not reused");
    }

    fn pipelined_requests_with_bodies_answered_in_order(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET /4 HTTP/1.1\r\nHost: a\r\n\r\n");
        for path in ["/1", "/2", "/3", "/4"] {
            let r = c.expect_final(false, path);
            assert_eq!((r.status, &r.body[..]), (200, path.as_bytes()), "{}", show(&r.raw));
        }
        let targets: Vec<String> = up.requests().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, ["/1", "/2", "/3", "/4"]);
        assert_eq!(up.requests()[1].body, b"hello");
        assert_eq!(up.requests()[2].body, b"abc");
    }

    fn pipelined_head_then_get_stay_in_sync(d) {
        let up = Upstream::start(|c| {
            while let Some(req) = c.next_request() {
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", req.target.len());
                c.write(reply.as_bytes());
                if req.method != "HEAD" {
                    c.write(req.target.as_bytes());
                }
            }
        });
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"HEAD /head HTTP/1.1\r\nHost: a\r\n\r\nGET /get HTTP/1.1\r\nHost: a\r\n\r\n");
        let h = c.expect_final(true, "HEAD");
        assert_eq!((h.status, h.head.get("content-length")), (200, Some("5")), "{}", show(&h.raw));
        let g = c.expect_final(false, "GET after HEAD");
        assert_eq!((g.status, &g.body[..]), (200, &b"/get"[..]), "{}", show(&g.raw));
    }

    fn client_connection_close_honoured(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let r = c.expect_final(false, "Connection: close");
        assert_eq!(r.status, 200);
        c.closed_cleanly().unwrap();
    }

    fn http10_without_keep_alive_closes(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /a HTTP/1.0\r\n\r\n");
        let r = c.expect_final(false, "HTTP/1.0");
        assert_eq!((r.status, &r.body[..]), (200, &b"/a"[..]));
        assert!(!r.head.has("transfer-encoding"), "chunked to a 1.0 client: {}", show(&r.raw));
        c.closed_cleanly().unwrap();
    }

    fn http10_keep_alive_works_or_closes(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.expect_final(false, "HTTP/1.0 keep-alive");
        assert_eq!((r.status, &r.body[..]), (200, &b"/a"[..]));
        assert!(!r.head.has("transfer-encoding"), "chunked to a 1.0 client: {}", show(&r.raw));
        if r.head.connection_has("keep-alive") {
            c.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
            let r = c.expect_final(false, "second HTTP/1.0 request");
            assert_eq!((r.status, &r.body[..]), (200, &b"/b"[..]));
        } else {
            c.closed_cleanly().unwrap();
        }
    }

    fn chunked_upstream_to_http10_is_dechunked_and_closed(d) {
        let up = Upstream::scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", false);
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.0\r\n\r\n");
        let r = c.expect_final(false, "chunked to 1.0");
        assert!(!r.head.has("transfer-encoding"), "chunked to a 1.0 client: {}", show(&r.raw));
        assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]), "{}", show(&r.raw));
        c.closed_cleanly().unwrap();
    }

    fn http10_head_with_chunked_upstream_headers(d) {
        let up = Upstream::scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"HEAD / HTTP/1.0\r\n\r\n");
        let r = c.expect_final(true, "HEAD from 1.0");
        assert_eq!(r.status, 200);
        assert!(!r.head.has("transfer-encoding"), "chunked to a 1.0 client: {}", show(&r.raw));
        c.closed_cleanly().unwrap();
    }

    fn chunked_upstream_to_http10_keep_alive(d) {
        let up = Upstream::scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", false);
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.expect_final(false, "chunked to 1.0 keep-alive");
        assert!(!r.head.has("transfer-encoding"), "chunked to a 1.0 client: {}", show(&r.raw));
        assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]), "{}", show(&r.raw));
        if !(r.head.has("content-length") && r.head.connection_has("keep-alive")) {
            c.closed_cleanly().unwrap();
        }
    }
}

/// The X-Forwarded-For list as the upstream saw it, all lines joined in order.
fn xff(req: &Request) -> Vec<String> {
    let all = req.head.all("x-forwarded-for");
    all.iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect()
}
