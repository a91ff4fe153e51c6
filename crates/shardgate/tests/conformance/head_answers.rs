//! Nothing follows the head of a response to HEAD (RFC 9110 §9.3.2), including every answer
//! the gateway writes itself. Each case sends a HEAD that the gateway answers on its own, with
//! a GET pipelined behind it: on a connection that stays open the next bytes must be the GET's
//! response, and on one that closes nothing may come after the head.

use std::time::Duration;

use crate::harness::{Client, Proxy, dead_addr};
use crate::upstream::Upstream;
use crate::wire::show;

const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

/// Sends `head` (a HEAD request, complete or not) with [`NEXT`] behind it when `pipeline`, and
/// checks the answer is `status` with nothing after its head but, on a kept connection, the
/// GET's response.
fn answers_head(c: &mut Client, head: &[u8], pipeline: bool, status: u16) {
    let mut bytes = head.to_vec();
    if pipeline {
        bytes.extend_from_slice(NEXT);
    }
    c.send(&bytes);
    let r = c.expect_final(true, "the HEAD's answer");
    assert_eq!(r.status, status, "{}", show(&r.raw));
    assert!(
        r.head.get("content-length").is_some() || matches!(status, 204 | 304),
        "the HEAD answer keeps the GET's Content-Length: {}",
        show(&r.raw)
    );
    if r.head.connection_has("close") {
        c.closed_cleanly()
            .unwrap_or_else(|e| panic!("after {status}: {e}"));
    } else {
        assert!(
            pipeline,
            "a kept connection is checked with a request behind it"
        );
        let (_, next) = c
            .read_final(false)
            .unwrap_or_else(|e| panic!("after {status} to HEAD, the next response: {e}"));
        assert!(next.status >= 200, "{}", show(&next.raw));
    }
}

/// A gateway with routes whose answers are its own: 404 (no route), 405 (GET-only route), a
/// direct response, a redirect, a rate limit of one request per hour and a breaker that opens
/// after one failure.
fn gateway(d: crate::harness::Driver, up: &Upstream) -> Proxy {
    let config = format!(
        r#"
[timeouts]
request_header = "1s"
upstream_response = "1s"

[upstreams.app]
endpoints = ["{up}"]

[upstreams.dead]
endpoints = ["{dead}"]
[upstreams.dead.retry]
attempts = 1
[upstreams.dead.breaker]
min_requests = 1
error_percent = 50
sleep_window = "60s"

[[routes]]
path = "/get-only"
methods = ["GET"]
upstream = "app"

[[routes]]
path = "/direct"
upstream = "app"
filters = [{{ type = "direct-response", status = 200, body = "maintenance\n" }}]

[[routes]]
path = "/moved"
upstream = "app"
filters = [{{ type = "redirect", status = 301, to = "http://b.example/" }}]

[[routes]]
path = "/limited"
upstream = "app"
filters = [{{ type = "rate-limit", rate = 1, per = "1h", burst = 1 }}]

[[routes]]
prefix = "/dead"
upstream = "dead"

[[routes]]
path = "/next"
upstream = "app"
"#,
        up = up.addr,
        dead = dead_addr()
    );
    Proxy::start_config(d, &config)
}

fn head(path: &str) -> Vec<u8> {
    format!("HEAD {path} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes()
}

both_drivers! {
    fn head_400_malformed_field(d) {
        let proxy = Proxy::start(d, &[Upstream::echo().addr]);
        answers_head(&mut proxy.client(), b"HEAD / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", true, 400);
    }

    fn head_400_pipelined_behind_a_get(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let mut bytes = NEXT.to_vec();
        bytes.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n");
        c.send(&bytes);
        let first = c.expect_final(false, "the GET's answer");
        assert_eq!(first.status, 200, "{}", show(&first.raw));
        let r = c.expect_final(true, "the HEAD's answer");
        assert_eq!(r.status, 400, "{}", show(&r.raw));
        c.closed_cleanly().unwrap_or_else(|e| panic!("after 400: {e}"));
    }

    fn head_404_no_route(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up);
        answers_head(&mut proxy.client(), &head("/nowhere"), true, 404);
    }

    fn head_405_method_not_allowed(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up);
        answers_head(&mut proxy.client(), &head("/get-only"), true, 405);
    }

    fn head_408_head_timeout(d) {
        let proxy = Proxy::start_with(d, &[Upstream::echo().addr], &[("--header-timeout", "1s")]);
        let mut c = proxy.client();
        c.set_read_timeout(Duration::from_secs(4));
        answers_head(&mut c, b"HEAD / HTTP/1.1\r\nHost: a\r\n", false, 408);
    }

    fn head_413_body_too_large(d) {
        let proxy = Proxy::start(d, &[Upstream::echo().addr]);
        let req = b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n";
        answers_head(&mut proxy.client(), req, true, 413);
    }

    fn head_414_request_line_too_long(d) {
        let proxy = Proxy::start(d, &[Upstream::echo().addr]);
        let req = format!("HEAD /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        answers_head(&mut proxy.client(), req.as_bytes(), true, 414);
    }

    fn head_429_rate_limited(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up);
        let mut c = proxy.client();
        answers_head(&mut c, &head("/limited"), true, 200);
        answers_head(&mut c, &head("/limited"), true, 429);
    }

    fn head_431_too_many_fields(d) {
        let proxy = Proxy::start(d, &[Upstream::echo().addr]);
        let mut req = b"HEAD / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..120 {
            req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        answers_head(&mut proxy.client(), &req, true, 431);
    }

    fn head_502_upstream_down(d) {
        let proxy = Proxy::start(d, &[dead_addr()]);
        answers_head(&mut proxy.client(), &head("/"), true, 502);
    }

    fn head_503_breaker_open(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up);
        let mut c = proxy.client();
        answers_head(&mut c, &head("/dead/1"), true, 502);
        answers_head(&mut c, &head("/dead/2"), true, 503);
    }

    fn head_504_upstream_silent(d) {
        let silent = Upstream::start(|c| {
            if c.next_request().is_some() {
                c.wait_eof();
            }
        });
        let proxy = Proxy::start_with(d, &[silent.addr], &[("--upstream-timeout", "1s")]);
        answers_head(&mut proxy.client(), &head("/"), true, 504);
    }

    fn head_direct_response(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up);
        answers_head(&mut proxy.client(), &head("/direct"), true, 200);
    }

    fn head_redirect(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up);
        answers_head(&mut proxy.client(), &head("/moved"), true, 301);
    }
}
