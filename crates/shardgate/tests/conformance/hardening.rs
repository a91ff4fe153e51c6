//! Edge hardening: what a hostile client cannot make the gateway do. Each case is a request
//! that would get past a route's protection, or reach the origin meaning something other than
//! what was routed, if the gateway let it.

use crate::harness::{Client, Proxy};
use crate::upstream::Upstream;
use crate::wire::show;

/// Sends `req` and returns the final response.
fn ask(c: &mut Client, req: &[u8]) -> crate::harness::Response {
    c.send(req);
    c.expect_final(false, "the answer")
}

/// A GET-only `/panel` that only 10.0.0.0/8 may use (so never this client), and a catch-all.
fn panel_gateway(d: crate::harness::Driver, up: &Upstream) -> Proxy {
    Proxy::start_config(
        d,
        &format!(
            r#"
[upstreams.app]
endpoints = ["{}"]

[[routes]]
name = "panel"
path = "/panel"
methods = ["GET"]
upstream = "app"
filters = [{{ type = "ip-filter", allow = ["10.0.0.0/8"] }}]

[[routes]]
name = "site"
prefix = "/"
upstream = "app"
"#,
            up.addr
        ),
    )
}

both_drivers! {
    fn a_method_the_specific_route_does_not_take_is_405_not_the_catch_all(d) {
        let up = Upstream::echo();
        let proxy = panel_gateway(d, &up);
        let mut c = proxy.client();
        let r = ask(&mut c, b"GET /panel HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(r.status, 403, "the guard works for GET: {}", show(&r.raw));
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let req = format!("{method} /panel HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
            let r = ask(&mut c, req.as_bytes());
            assert_eq!(r.status, 405, "{method} /panel: {}", show(&r.raw));
            let allow = r.head.get("allow").unwrap_or_default();
            assert!(allow.contains("GET"), "{method}: Allow {allow:?}");
        }
        let r = ask(&mut c, b"POST /elsewhere HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.status, 200, "the catch-all still serves other paths: {}", show(&r.raw));
        assert!(
            up.requests().iter().all(|q| !q.target.starts_with("/panel")),
            "a /panel request reached the origin"
        );
    }
}
