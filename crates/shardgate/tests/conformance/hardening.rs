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

/// A route matching `matching` (TOML lines) that only 10.0.0.0/8 may use (so never this
/// client), and a catch-all, both to `up`; `top` holds top-level keys and `listener` the
/// listener's.
fn guarded(
    d: crate::harness::Driver,
    up: &Upstream,
    top: &str,
    listener: &str,
    matching: &str,
) -> Proxy {
    Proxy::start_config_with(
        d,
        top,
        &format!(
            r#"{listener}
[upstreams.app]
endpoints = ["{}"]

[[routes]]
name = "guarded"
{matching}
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

/// A GET-only, guarded `/panel`.
fn panel_gateway(d: crate::harness::Driver, up: &Upstream) -> Proxy {
    guarded(d, up, "", "", "path = \"/panel\"\nmethods = [\"GET\"]")
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

/// A listener with `listener` options, a guarded `/admin` subtree and a catch-all.
fn paths_gateway(d: crate::harness::Driver, up: &Upstream, listener: &str) -> Proxy {
    guarded(d, up, "", listener, "prefix = \"/admin\"")
}

fn get(c: &mut Client, target: &str) -> crate::harness::Response {
    ask(
        c,
        format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
    )
}

both_drivers! {
    fn what_origins_read_differently_is_refused_by_default(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "");
        for target in [
            "/public%2F..%2Fadmin",
            "/admin%2fx",
            "/public%5C..%5Cadmin",
            "/public\\..\\admin",
            "/public/..;/admin",
            "/a;jsessionid=1",
            "/a%00.html",
        ] {
            let r = get(&mut proxy.client(), target);
            assert_eq!(r.status, 400, "{target}: {}", show(&r.raw));
        }
        assert!(up.requests().is_empty(), "a refused request reached the origin");
        let r = get(&mut proxy.client(), "/public/page?next=%2Fhome;x=\\");
        assert_eq!(r.status, 200, "the query is not the path's: {}", show(&r.raw));
    }

    fn a_listener_may_keep_encoded_slashes_and_semicolons(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "escaped_slashes = \"keep\"\npath_semicolons = \"keep\"");
        let r = get(&mut proxy.client(), "/files/a%2fb;v=2");
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        // One segment, never /admin.
        let r = get(&mut proxy.client(), "/public%2F..%2Fadmin");
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        let seen: Vec<String> = up.requests().iter().map(|q| q.target.clone()).collect();
        assert_eq!(seen, ["/files/a%2Fb;v=2", "/public%2F..%2Fadmin"]);
        let r = get(&mut proxy.client(), "/a\\b");
        assert_eq!(r.status, 400, "a raw backslash stays refused: {}", show(&r.raw));
    }

    fn a_listener_may_decode_encoded_slashes_and_routes_what_the_origin_sees(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "escaped_slashes = \"decode\"");
        let r = get(&mut proxy.client(), "/public%2F..%2Fadmin");
        assert_eq!(r.status, 403, "it is /admin, and /admin is guarded: {}", show(&r.raw));
        let r = get(&mut proxy.client(), "/files%2Fa%5Cb");
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        let seen: Vec<String> = up.requests().iter().map(|q| q.target.clone()).collect();
        assert_eq!(seen, ["/files/a/b"], "the origin sees the decoded path");
    }
}

both_drivers! {
    fn transfer_encoding_leaves_as_one_canonical_line(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let r = ask(
            &mut proxy.client(),
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  CHUNKED \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        let seen = up.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].head.all("transfer-encoding"),
            ["chunked"],
            "{}",
            show(&seen[0].raw)
        );
        assert_eq!(seen[0].body, b"hello");
    }
}

/// A guarded `/inner`; `top` holds top-level keys, `listener` the listener's.
fn inner_gateway(d: crate::harness::Driver, up: &Upstream, top: &str, listener: &str) -> Proxy {
    guarded(d, up, top, listener, "path = \"/inner\"")
}

const FROM_INSIDE: &[u8] = b"GET /inner HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n";

both_drivers! {
    fn a_client_cannot_claim_an_address(d) {
        let up = Upstream::echo();
        let proxy = inner_gateway(d, &up, "", "");
        let r = ask(&mut proxy.client(), FROM_INSIDE);
        assert_eq!(r.status, 403, "X-Forwarded-For from an untrusted peer is ignored: {}", show(&r.raw));
    }

    fn a_trusted_proxy_s_client_is_the_client(d) {
        let up = Upstream::echo();
        let proxy = inner_gateway(d, &up, "trusted_proxies = [\"127.0.0.0/8\"]", "");
        let r = ask(&mut proxy.client(), FROM_INSIDE);
        assert_eq!(r.status, 200, "the proxy's client is 10.9.9.9: {}", show(&r.raw));
        // Walking from the right, the first address that is not a trusted proxy: what a
        // client put in front of the list does not count.
        let r = ask(
            &mut proxy.client(),
            b"GET /inner HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.9.9.9, 203.0.113.5\r\n\r\n",
        );
        assert_eq!(r.status, 403, "{}", show(&r.raw));
    }

    fn a_listener_may_refuse_or_keep_underscored_fields(d) {
        let up = Upstream::echo();
        let refuse = inner_gateway(d, &up, "", "headers_with_underscores = \"reject\"");
        let r = ask(&mut refuse.client(), b"GET / HTTP/1.1\r\nHost: a\r\nX_Consumer: root\r\n\r\n");
        assert_eq!(r.status, 400, "{}", show(&r.raw));
        assert!(up.requests().is_empty());
        let keep = inner_gateway(d, &up, "", "headers_with_underscores = \"keep\"");
        let r = ask(&mut keep.client(), b"GET / HTTP/1.1\r\nHost: a\r\nX_Legacy: 1\r\n\r\n");
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        assert_eq!(up.requests()[0].head.get("x_legacy"), Some("1"));
    }
}

both_drivers! {
    fn ipv6_clients_are_rate_limited_per_64(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start_config_with(
            d,
            "trusted_proxies = [\"127.0.0.0/8\"]",
            &format!(
                r#"
[upstreams.app]
endpoints = ["{}"]

[[routes]]
prefix = "/"
upstream = "app"
filters = [{{ type = "rate-limit", rate = 1, per = "1h", burst = 1, key = "client-ip" }}]
"#,
                up.addr
            ),
        );
        let from = |client: &str| {
            let req = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {client}\r\n\r\n");
            ask(&mut proxy.client(), req.as_bytes()).status
        };
        assert_eq!(from("2001:db8::1"), 200);
        assert_eq!(from("2001:db8::2"), 429, "the same /64 shares one budget");
        assert_eq!(from("2001:db8:0:1::1"), 200, "another /64 has its own");
        assert_eq!(from("192.0.2.1"), 200);
        assert_eq!(from("192.0.2.2"), 200, "IPv4 counts per address");
    }
}

/// A PROXY protocol v2 header for a TCP-over-IPv4 client `ip:port`.
fn proxy_v2(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&ip);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

both_drivers! {
    fn a_proxy_protocol_listener_takes_the_client_from_the_header(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "proxy_protocol = true");
        let get = b"GET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
        let v1 = [b"PROXY TCP4 10.1.2.3 127.0.0.1 40000 80\r\n".as_slice(), get].concat();
        let v2 = [proxy_v2([10, 9, 8, 7], 40001).as_slice(), get].concat();
        for req in [v1, v2] {
            let mut c = proxy.client();
            let r = ask(&mut c, &req);
            assert_eq!(r.status, 200, "the guard lets 10/8 in: {}", show(&r.raw));
            // Later requests on the connection keep the client.
            let r = ask(&mut c, get);
            assert_eq!(r.status, 200, "{}", show(&r.raw));
        }
        let xff: Vec<String> = up
            .requests()
            .iter()
            .map(|q| q.head.get("x-forwarded-for").unwrap_or_default().to_string())
            .collect();
        assert_eq!(xff, ["10.1.2.3", "10.1.2.3", "10.9.8.7", "10.9.8.7"]);
        // No header, or a malformed one: closed without an answer.
        for req in [
            get.to_vec(),
            [b"PROXY TCP4 10.1.2.3 127.0.0.1 040000 80\r\n".as_slice(), get].concat(),
        ] {
            let mut c = proxy.client();
            c.send(&req);
            assert!(c.read_to_close().unwrap_or_default().is_empty(), "{}", show(&req));
        }
        assert_eq!(up.requests().len(), 4);
    }

    fn a_listener_without_the_proxy_protocol_refuses_a_header(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "");
        let get = b"GET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
        let v1 = [b"PROXY TCP4 10.1.2.3 127.0.0.1 40000 80\r\n".as_slice(), get].concat();
        let v2 = [proxy_v2([10, 9, 8, 7], 40001).as_slice(), get].concat();
        for req in [v1, v2] {
            let r = ask(&mut proxy.client(), &req);
            assert_eq!(r.status, 400, "{}", show(&r.raw));
        }
        assert!(up.requests().is_empty());
    }
}

both_drivers! {
    fn a_listener_may_forward_targets_as_received_but_only_when_they_mean_what_was_routed(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "forward_path = \"as_received\"");
        for target in ["/files/%61bc%7e?q=%2F..", "/plain/path"] {
            let r = get(&mut proxy.client(), target);
            assert_eq!(r.status, 200, "{target}: {}", show(&r.raw));
        }
        // Routed as /admin (guarded: 403), or refused when the origin could read another path.
        let r = get(&mut proxy.client(), "/%61dmin");
        assert_eq!(r.status, 403, "routing still uses the normal form: {}", show(&r.raw));
        for target in ["/public/../admin", "//admin", "/a/./b", "/a/%2e%2e/admin"] {
            let r = get(&mut proxy.client(), target);
            assert_eq!(r.status, 400, "{target}: {}", show(&r.raw));
        }
        let seen: Vec<String> = up.requests().iter().map(|q| q.target.clone()).collect();
        assert_eq!(seen, ["/files/%61bc%7e?q=%2F..", "/plain/path"], "byte for byte");
    }

    fn by_default_the_normal_form_is_forwarded(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "");
        for target in ["/files/%61bc%7e", "/public/../files//x"] {
            let r = get(&mut proxy.client(), target);
            assert_eq!(r.status, 200, "{target}: {}", show(&r.raw));
        }
        let seen: Vec<String> = up.requests().iter().map(|q| q.target.clone()).collect();
        assert_eq!(seen, ["/files/abc~", "/files/x"]);
    }
}

both_drivers! {
    fn a_plain_listener_may_send_every_request_to_https(d) {
        let up = Upstream::echo();
        let proxy = paths_gateway(d, &up, "redirect_to_https = 8443");
        let cases = [
            ("GET /a/b?c=1 HTTP/1.1\r\nHost: site.test:8080\r\n\r\n", "https://site.test:8443/a/b?c=1"),
            ("POST /form HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 0\r\n\r\n", "https://[::1]:8443/form"),
            ("GET /admin HTTP/1.1\r\nHost: site.test\r\n\r\n", "https://site.test:8443/admin"),
        ];
        for (req, want) in cases {
            let r = ask(&mut proxy.client(), req.as_bytes());
            assert_eq!(r.status, 308, "{}", show(&r.raw));
            assert_eq!(r.head.get("location"), Some(want));
        }
        let mut c = proxy.client();
        c.send(b"HEAD /x HTTP/1.1\r\nHost: site.test\r\n\r\n");
        let r = c.expect_final(true, "the HEAD answer");
        assert_eq!((r.status, r.body.len()), (308, 0));
        let standard = paths_gateway(d, &up, "redirect_to_https = 443");
        let r = get(&mut standard.client(), "/x");
        assert_eq!(r.head.get("location"), Some("https://a/x"), "no :443");
        assert!(up.requests().is_empty(), "nothing is proxied from a redirecting listener");
    }
}
