//! Every built-in filter end to end through the gateway, on both drivers:
//! what the client gets back and what the upstream receives.

use shardgate_config::Driver;
use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, Reply, TestGateway, config_for};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A gateway with one route `r` (`prefix` or `path`) to the mock, carrying
/// the given filters (TOML inline tables), plus any `extra` TOML.
fn gateway(driver: Driver, up: &MockUpstream, matcher: &str, filters: &str) -> TestGateway {
    let extra = format!(
        "[[routes]]\nname = \"r\"\n{matcher}\nupstream = \"backend\"\nfilters = [{filters}]\n"
    );
    TestGateway::start(config_for(driver, &[up.addr()], &extra))
}

fn exchange(gw: &TestGateway, request: &str) -> Reply {
    let mut c = RawClient::connect(gw.addr());
    c.send(request.as_bytes());
    c.read_response().expect("a response")
}

fn get(gw: &TestGateway, target: &str, headers: &str) -> Reply {
    exchange(
        gw,
        &format!("GET {target} HTTP/1.1\r\nHost: a\r\n{headers}\r\n"),
    )
}

/// An `api-key` filter table taking `key` for `consumer`, plus `more` fields.
fn api_key(key: &str, consumer: &str, more: &str) -> String {
    let digest = shardgate_filters::api_key::hash_key(key);
    format!(
        "{{ type = \"api-key\", keys = [{{ sha256 = \"{digest}\", consumer = \"{consumer}\" }}]{more} }}"
    )
}

fn last_request(up: &MockUpstream) -> shardgate_testkit::Recorded {
    up.requests().pop().expect("the upstream saw a request")
}

#[test]
fn api_key_from_header_or_query_with_consumer_forwarded() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let gw = gateway(
            driver,
            &up,
            "prefix = \"/k\"",
            &format!(
                "{}, {{ type = \"headers\", response = {{ set = {{ \"X-Frame-Options\" = \"DENY\" }} }} }}",
                api_key("s3cret", "alice", ", query_param = \"api_key\"")
            ),
        );
        let r = get(&gw, "/k", "");
        assert_eq!(r.status, 401, "{driver:?}");
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("ApiKey realm=\"shardgate\"")
        );
        assert_eq!(
            r.header("x-frame-options").as_deref(),
            Some("DENY"),
            "the route's response headers are on its refusals too"
        );
        assert_eq!(get(&gw, "/k", "X-Api-Key: wrong\r\n").status, 403);
        let twice = get(&gw, "/k", "X-Api-Key: s3cret\r\nX-Api-Key: other\r\n");
        assert_eq!(twice.status, 400, "a repeated credential is refused");
        assert!(up.requests().is_empty(), "refused requests never leave");

        // A client cannot name its own consumer, and the key stays at the gateway.
        let r = get(&gw, "/k", "X-Api-Key: s3cret\r\nX-Consumer: mallory\r\n");
        assert_eq!(r.status, 200);
        let seen = last_request(&up);
        assert_eq!(seen.header("x-consumer").as_deref(), Some("alice"));
        let head = seen.head_str().to_ascii_lowercase();
        assert_eq!(head.matches("x-consumer").count(), 1);
        assert!(!head.contains("s3cret"), "{head}");

        assert_eq!(get(&gw, "/k/x?a=1&api_key=s3cret&b=2", "").status, 200);
        assert_eq!(
            last_request(&up).request_line(),
            "GET /k/x?a=1&b=2 HTTP/1.1"
        );
        assert_eq!(get(&gw, "/k/x?api_key=s3cre", "").status, 403);
    }
}

#[test]
fn one_route_s_filter_lines_never_reach_another_route_s_upstream() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let gw = gateway(
            driver,
            &up,
            "prefix = \"/k\"",
            &format!(
                "{}, {{ type = \"request-id\" }}",
                api_key("s3cret", "alice", "")
            ),
        );
        // One connection, so both requests run on the same shard.
        let mut c = RawClient::connect(gw.addr());
        for (target, key) in [
            ("/k", "X-Api-Key: s3cret\r\n"),
            ("/plain", ""),
            ("/k", ""),
            ("/plain", ""),
        ] {
            c.send(format!("GET {target} HTTP/1.1\r\nHost: a\r\n{key}\r\n").as_bytes());
            c.read_response().unwrap();
        }
        let heads: Vec<String> = up.requests().iter().map(|r| r.head_str()).collect();
        assert_eq!(heads.len(), 3, "{driver:?}");
        assert!(heads[0].contains("x-consumer: alice"), "{}", heads[0]);
        for plain in &heads[1..] {
            let lower = plain.to_ascii_lowercase();
            assert!(
                !lower.contains("x-consumer") && !lower.contains("x-request-id"),
                "{driver:?}: {plain}"
            );
        }
    }
}

#[test]
fn jwt_checks_signature_and_expiry_and_forwards_claims() {
    let secret = "a-test-secret-of-at-least-32-bytes";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |claims: serde_json::Value, key: &str| {
        shardgate_filters::jwt::issue_hs256(key.as_bytes(), &claims).unwrap()
    };
    let good = token(
        serde_json::json!({"sub": "bob", "iss": "demo", "exp": now + 600}),
        secret,
    );
    let expired = token(
        serde_json::json!({"sub": "bob", "iss": "demo", "exp": now - 600}),
        secret,
    );
    let forged = token(
        serde_json::json!({"sub": "bob", "iss": "demo", "exp": now + 600}),
        "another-secret",
    );
    // Validly signed, but naming a critical extension the gateway does not implement.
    let critical = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.crit = Some(vec!["b64".into()]);
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": "bob", "iss": "demo", "exp": now + 600}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let gw = gateway(
            driver,
            &up,
            "prefix = \"/j\"",
            &format!(
                "{{ type = \"jwt\", keys = [{{ algorithms = [\"HS256\"], secret = \"{secret}\" }}], \
                 issuers = [\"demo\"], forward_claims = {{ sub = \"x-user\" }} }}"
            ),
        );
        let r = get(&gw, "/j", "");
        assert_eq!(r.status, 401, "{driver:?}");
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"shardgate\"")
        );
        for bad in [&expired, &forged, &critical] {
            let r = get(&gw, "/j", &format!("Authorization: Bearer {bad}\r\n"));
            assert_eq!(r.status, 401);
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|c| c.contains("invalid_token")),
                "{}",
                r.head
            );
        }
        let twice = format!("Authorization: Bearer {good}\r\nAuthorization: Bearer {forged}\r\n");
        assert_eq!(get(&gw, "/j", &twice).status, 400);
        assert!(up.requests().is_empty());
        let r = get(
            &gw,
            "/j",
            &format!("Authorization: Bearer {good}\r\nX-User: mallory\r\n"),
        );
        assert_eq!(r.status, 200);
        let seen = last_request(&up);
        assert_eq!(seen.header("x-user").as_deref(), Some("bob"));
        assert_eq!(
            seen.head_str()
                .to_ascii_lowercase()
                .matches("x-user")
                .count(),
            1
        );
    }
}

#[test]
fn rate_limit_answers_429_with_retry_after_and_counts_it() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let config = config_for(
            driver,
            &[up.addr()],
            "[admin]\naddress = \"127.0.0.1:0\"\n[[routes]]\nname = \"r\"\nprefix = \"/rl\"\n\
             upstream = \"backend\"\n\
             filters = [{ type = \"rate-limit\", rate = 1, per = \"1m\", burst = 3, key = \"client-ip\" }]\n",
        );
        let gw = TestGateway::start(config.clone());
        let mut c = RawClient::connect(gw.addr());
        let mut remaining = Vec::new();
        for _ in 0..3 {
            c.send(b"GET /rl HTTP/1.1\r\nHost: a\r\n\r\n");
            let r = c.read_response().unwrap();
            assert_eq!(r.status, 200, "{driver:?}");
            assert_eq!(r.header("ratelimit-limit").as_deref(), Some("3"));
            remaining.push(r.header("ratelimit-remaining").unwrap());
        }
        assert_eq!(remaining, ["2", "1", "0"]);
        c.send(b"GET /rl HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 429);
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
        // The connection lives on after a refusal, and other routes are not limited.
        c.send(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 200);
        assert_eq!(up.requests().len(), 4);
        let text = gw.gateway().handle().metrics_text();
        assert!(
            text.contains("shardgate_rate_limited_total{tenant=\"\",route=\"r\"} 1"),
            "{text}"
        );

        // A reload that leaves the limit alone leaves its buckets alone (a
        // DNS refresh must not hand out a fresh burst)...
        let handle = gw.gateway().handle();
        let mut other = config.clone();
        other.timeouts.connect = Duration::from_secs(2);
        handle.reload(other, 0, "test").unwrap();
        c.send(b"GET /rl HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 429, "{driver:?}");
        // ...and one that changes it starts afresh.
        let mut changed = config.clone();
        let spec = &mut changed.routes[1].filters[0];
        let shardgate_filters::filter::FilterSpec::RateLimit(limit) = spec else {
            panic!("{spec:?}")
        };
        limit.burst = 4.0;
        handle.reload(changed, 0, "test").unwrap();
        c.send(b"GET /rl HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 200);
    }
}

#[test]
fn headers_are_set_added_and_removed_on_both_sides() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|_| {
            shardgate_testkit::Script::Raw(
                b"HTTP/1.1 200 OK\r\nServer: internal/1.2\r\nX-Debug: yes\r\nContent-Length: 2\r\n\r\nok"
                    .to_vec(),
            )
        });
        let gw = gateway(
            driver,
            &up,
            "prefix = \"/t\"",
            "{ type = \"headers\", request = { set = { \"X-Env\" = \"prod\" }, add = { \"X-Via\" = \"sg\" }, \
             remove = [\"Cookie\"] }, response = { remove = [\"Server\", \"X-Debug\"], set = { \"X-Frame-Options\" = \"DENY\" } } }",
        );
        let r = get(&gw, "/t", "X-Env: dev\r\nCookie: a=b\r\nX-Via: client\r\n");
        assert_eq!(r.status, 200, "{driver:?}");
        assert_eq!(r.header("server"), None);
        assert_eq!(r.header("x-debug"), None);
        assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
        let seen = last_request(&up).head_str();
        assert!(seen.contains("X-Env: prod\r\n"), "{seen}");
        assert!(!seen.contains("X-Env: dev"), "{seen}");
        assert!(!seen.contains("Cookie"), "{seen}");
        assert!(seen.contains("X-Via: client\r\n") && seen.contains("X-Via: sg\r\n"));
    }
}

#[test]
fn path_rewrites_strip_replace_and_fill_templates() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let extra = "[[routes]]\nname = \"strip\"\nprefix = \"/api\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"rewrite\", strip_prefix = \"/api\" }]\n\
                     [[routes]]\nname = \"replace\"\nprefix = \"/old\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"rewrite\", replace_prefix = { from = \"/old\", to = \"/new/v2\" } }]\n\
                     [[routes]]\nname = \"tpl\"\npath = \"/u/:id/posts/:post\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"rewrite\", template = \"/v2/users/{id}/p/{post}\" }]\n";
        let gw = TestGateway::start(config_for(driver, &[up.addr()], extra));
        for (target, want) in [
            ("/api/users?x=1", "GET /users?x=1 HTTP/1.1"),
            ("/api", "GET / HTTP/1.1"),
            ("/old/a/b", "GET /new/v2/a/b HTTP/1.1"),
            (
                "/u/42/posts/7?full=1",
                "GET /v2/users/42/p/7?full=1 HTTP/1.1",
            ),
            ("/%61pi/z", "GET /z HTTP/1.1"),
        ] {
            assert_eq!(get(&gw, target, "").status, 200, "{driver:?} {target}");
            assert_eq!(last_request(&up).request_line(), want, "{target}");
        }
    }
}

#[test]
fn redirect_and_direct_response_answer_at_the_gateway() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let extra = "[[routes]]\nname = \"moved\"\npath = \"/old/:page\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"redirect\", status = 301, to = \"https://example.com/new/{page}\" }]\n\
                     [[routes]]\nname = \"maint\"\nprefix = \"/maint\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"direct-response\", status = 503, body = \"back soon\\n\", \
                     content_type = \"text/plain\" }]\n";
        let gw = TestGateway::start(config_for(driver, &[up.addr()], extra));
        let r = get(&gw, "/old/about?lang=en", "");
        assert_eq!(r.status, 301, "{driver:?}");
        assert_eq!(
            r.header("location").as_deref(),
            Some("https://example.com/new/about?lang=en")
        );
        let r = get(&gw, "/maint/x", "");
        assert_eq!((r.status, r.body_str().as_str()), (503, "back soon\n"));
        assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
        // HEAD gets the head only, and the connection stays usable.
        let mut c = RawClient::connect(gw.addr());
        c.send(b"HEAD /maint HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response_to(shardgate_http::Method::Head).unwrap();
        assert_eq!((r.status, r.body.len()), (503, 0));
        c.send(b"GET /maint HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.read_response().unwrap().status, 503);
        assert!(up.requests().is_empty());
    }
}

#[test]
fn cors_preflights_are_answered_and_responses_carry_the_origin() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let gw = gateway(
            driver,
            &up,
            "prefix = \"/c\"\nmethods = [\"GET\", \"PUT\", \"DELETE\"]",
            &format!(
                "{}, {{ type = \"cors\", origins = [\"https://app.example\"], \
                 methods = [\"GET\", \"PUT\"], headers = [\"content-type\"], max_age = \"10m\" }}",
                api_key("web", "app", "")
            ),
        );
        let preflight = |origin: &str, method: &str| {
            exchange(
                &gw,
                &format!(
                    "OPTIONS /c/x HTTP/1.1\r\nHost: a\r\nOrigin: {origin}\r\n\
                     Access-Control-Request-Method: {method}\r\n\
                     Access-Control-Request-Headers: content-type\r\n\r\n"
                ),
            )
        };
        let r = preflight("https://app.example", "PUT");
        assert_eq!(r.status, 204, "{driver:?}: {}", r.head);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(r.header("access-control-max-age").as_deref(), Some("600"));
        assert!(
            r.header("access-control-allow-methods")
                .is_some_and(|m| m.contains("PUT"))
        );
        assert_eq!(preflight("https://evil.example", "PUT").status, 403);
        assert_eq!(preflight("https://app.example", "DELETE").status, 403);
        assert!(
            up.requests().is_empty(),
            "preflights never reach the upstream"
        );

        // Preflights carry no credentials and pass the API key check; actual
        // requests do not.
        let r = get(&gw, "/c/x", "Origin: https://app.example\r\n");
        assert_eq!(r.status, 401);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("https://app.example"),
            "the browser may read the refusal"
        );
        let r = get(
            &gw,
            "/c/x",
            "Origin: https://app.example\r\nX-Api-Key: web\r\n",
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("https://app.example")
        );
        let r = get(
            &gw,
            "/c/x",
            "Origin: https://evil.example\r\nX-Api-Key: web\r\n",
        );
        assert_eq!(r.header("access-control-allow-origin"), None);
    }
}

#[test]
fn ip_filter_allows_and_denies_by_cidr() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let extra = "[[routes]]\nname = \"open\"\nprefix = \"/open\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"ip-filter\", allow = [\"127.0.0.0/8\"], deny = [\"10.0.0.0/8\"] }]\n\
                     [[routes]]\nname = \"closed\"\nprefix = \"/closed\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"ip-filter\", allow = [\"127.0.0.0/8\"], deny = [\"127.0.0.1/32\"] }]\n\
                     [[routes]]\nname = \"office\"\nprefix = \"/office\"\nupstream = \"backend\"\n\
                     filters = [{ type = \"ip-filter\", allow = [\"192.0.2.0/24\"] }]\n";
        let gw = TestGateway::start(config_for(driver, &[up.addr()], extra));
        assert_eq!(get(&gw, "/open", "").status, 200, "{driver:?}");
        assert_eq!(get(&gw, "/closed", "").status, 403, "deny wins");
        assert_eq!(get(&gw, "/office", "").status, 403, "not in the allow list");
        assert_eq!(up.requests().len(), 1);
    }
}

#[test]
fn body_limit_refuses_large_bodies_declared_or_chunked() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let gw = gateway(
            driver,
            &up,
            "prefix = \"/up\"",
            "{ type = \"body-limit\", max = 16 }",
        );
        let small = exchange(
            &gw,
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(small.status, 200, "{driver:?}");
        let big = exchange(
            &gw,
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n0123456789abcdefg",
        );
        assert_eq!(big.status, 413);
        assert_eq!(up.requests().len(), 1, "a declared large body never leaves");
        // Chunked: refused once the payload passes the limit as it streams.
        let mut c = RawClient::connect(gw.addr());
        c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n");
        c.send(b"8\r\n01234567\r\n0\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 413);
        assert!(c.is_closed());
        let ok = exchange(
            &gw,
            "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
        );
        assert_eq!(ok.status, 200);
    }
}

#[test]
fn request_id_is_kept_when_valid_generated_otherwise_and_returned() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let gw = gateway(driver, &up, "prefix = \"/t\"", "{ type = \"request-id\" }");
        let r = get(&gw, "/t", "");
        let id = r.header("x-request-id").expect("an id in the response");
        assert_eq!(id.len(), 32, "{driver:?}: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(last_request(&up).header("x-request-id"), Some(id.clone()));
        let again = get(&gw, "/t", "").header("x-request-id").unwrap();
        assert_ne!(id, again, "ids are fresh");

        let r = get(&gw, "/t", "X-Request-Id: abc-123\r\n");
        assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
        assert_eq!(
            last_request(&up).header("x-request-id").as_deref(),
            Some("abc-123")
        );
        // A value that cannot be an id is replaced, not forwarded.
        let r = get(&gw, "/t", "X-Request-Id: has space\r\n");
        let replaced = r.header("x-request-id").unwrap();
        assert_eq!(replaced.len(), 32);
        let seen = last_request(&up).head_str();
        assert!(!seen.contains("has space"), "{seen}");
    }
}

#[test]
fn trace_context_continues_a_trace_with_a_new_span_or_starts_one() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let gw = gateway(
            driver,
            &up,
            "prefix = \"/t\"",
            "{ type = \"trace-context\" }",
        );
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            get(
                &gw,
                "/t",
                &format!("traceparent: {incoming}\r\ntracestate: vendor=1\r\n")
            )
            .status,
            200
        );
        assert_eq!(
            last_request(&up).header("tracestate").as_deref(),
            Some("vendor=1"),
            "a continued trace keeps its state"
        );
        let sent = last_request(&up).header("traceparent").unwrap();
        assert_eq!(&sent[..36], &incoming[..36], "{driver:?}: same trace");
        assert_ne!(&sent[36..52], &incoming[36..52], "a new span id");
        assert_eq!(&sent[52..], "-01");
        assert_eq!(
            last_request(&up).head_str().matches("traceparent").count(),
            1
        );

        get(
            &gw,
            "/t",
            "traceparent: garbage\r\ntracestate: vendor=1\r\n",
        );
        assert_eq!(
            last_request(&up).header("tracestate"),
            None,
            "a new trace drops the old state"
        );
        let started = last_request(&up).header("traceparent").unwrap();
        assert_eq!(started.len(), 55);
        assert!(started.starts_with("00-"));
        assert_ne!(&started[3..35], "00000000000000000000000000000000");
    }
}

#[test]
fn tenants_have_their_own_routes_keys_and_limits() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("ok");
        let extra = format!(
            "[[tenants]]\nname = \"acme\"\nhosts = [\"acme.test\", \"legacy.acme.test\"]\n\
             filters = [{{ type = \"rate-limit\", rate = 1, per = \"1m\", burst = 2, key = \"tenant\" }}]\n\
             [[tenants]]\nname = \"globex\"\nhosts = [\"globex.test\"]\n\
             filters = [{}]\n\
             [[routes]]\nname = \"acme-api\"\ntenant = \"acme\"\nhosts = [\"acme.test\"]\nprefix = \"/api\"\nupstream = \"backend\"\n\
             [[routes]]\nname = \"acme-web\"\ntenant = \"acme\"\nhosts = [\"acme.test\"]\nprefix = \"/web\"\nupstream = \"backend\"\n\
             [[routes]]\nname = \"globex-api\"\ntenant = \"globex\"\nprefix = \"/api\"\nupstream = \"backend\"\n",
            api_key("acme-key", "acme-ci", "")
        );
        let mut config = config_for(driver, &[up.addr()], &extra);
        config.admin = Some(shardgate_config::Admin {
            address: "127.0.0.1:0".parse().unwrap(),
            hosts: Vec::new(),
            token: None,
        });
        let gw = TestGateway::start(config);
        let on = |host: &str, path: &str, headers: &str| {
            exchange(
                &gw,
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n"),
            )
            .status
        };
        // The tenant's limit covers all its routes together.
        assert_eq!(on("acme.test", "/api", ""), 200, "{driver:?}");
        assert_eq!(on("acme.test", "/web", ""), 200);
        assert_eq!(on("acme.test", "/api", ""), 429);
        assert_eq!(on("acme.test", "/web", ""), 429);
        // Another tenant is untouched by it, and has its own keys.
        assert_eq!(on("globex.test", "/api", ""), 401);
        for _ in 0..5 {
            assert_eq!(on("globex.test", "/api", "X-Api-Key: acme-key\r\n"), 200);
        }
        // Hosts outside every tenant still reach the untenanted catch-all;
        // a tenant's host never does, even one none of its routes names.
        assert_eq!(on("other.test", "/api", ""), 200);
        assert_eq!(on("legacy.acme.test", "/api", ""), 404);
        assert_eq!(on("LEGACY.acme.test:80", "/x", ""), 404);

        // The admin API shows each route's tenant and its chain as it runs.
        let admin = gw.gateway().admin_addr().unwrap();
        let mut a = RawClient::connect(admin);
        a.send(b"GET /routes HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let routes: serde_json::Value =
            serde_json::from_slice(&a.read_response().unwrap().body).unwrap();
        let globex = routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "globex-api")
            .unwrap();
        assert_eq!(globex["tenant"], "globex");
        assert_eq!(globex["filters"], serde_json::json!(["api-key"]));

        let text = gw.gateway().handle().metrics_text();
        for want in [
            "shardgate_rate_limited_total{tenant=\"acme\",route=\"acme-web\"} 1",
            "shardgate_requests_total{tenant=\"globex\",route=\"globex-api\",method=\"GET\",status_class=\"2xx\"} 5",
            "shardgate_requests_total{tenant=\"acme\",route=\"acme-api\",method=\"GET\",status_class=\"4xx\"} 1",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }
}

#[test]
fn a_broken_tenant_config_neither_applies_nor_holds_back_other_tenants() {
    let up = MockUpstream::ok("ok");
    let tenant = |name: &str, filters: &str| {
        format!(
            "[[tenants]]\nname = \"{name}\"\nhosts = [\"{name}.test\"]\nfilters = [{filters}]\n\
             [[routes]]\nname = \"{name}-r\"\ntenant = \"{name}\"\nprefix = \"/\"\nupstream = \"backend\"\n"
        )
    };
    let file = |rest: &str| {
        format!(
            "workers = 1\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
             [upstreams.backend]\nendpoints = [\"{}\"]\n{rest}",
            up.addr()
        )
    };
    let path = std::env::temp_dir().join(format!("sg-tenants-{}.toml", std::process::id()));
    let good = file(&(tenant("a", "{ type = \"request-id\" }") + &tenant("b", "")));
    std::fs::write(&path, &good).unwrap();
    let gw = TestGateway::start_with(
        shardgate_config::from_toml(&good).unwrap(),
        shardgate_proxy::GatewayOptions {
            config_path: Some(path.clone()),
            config_text: Some(good.clone()),
            ..Default::default()
        },
    );
    let handle = gw.gateway().handle();
    let get = |host: &str| exchange(&gw, &format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));

    // Tenant a's new filter is invalid while tenant b changes too: b's change
    // applies, a keeps what it had, and the refusal names a's field.
    let next = file(
        &(tenant("a", "{ type = \"rate-limit\", rate = -1 }")
            + &tenant("b", "{ type = \"direct-response\", status = 418 }")),
    );
    std::fs::write(&path, next).unwrap();
    assert_eq!(handle.reload_from_file().ok(), Some(2));
    let (_, info) = handle.config();
    let error = info.last_error.unwrap_or_default();
    assert!(
        error.contains("tenant \"a\" keeps its previous configuration")
            && error.contains("tenants[0].filters[0]"),
        "{error}"
    );
    assert_eq!(info.reload_failures, 1);
    let a = get("a.test");
    assert_eq!(a.status, 200);
    assert!(a.header("x-request-id").is_some(), "a keeps its filters");
    assert_eq!(get("b.test").status, 418, "b's change is live");

    // An error outside every tenant refuses the whole file: nothing changes.
    let outside = file(&(tenant("a", "") + &tenant("b", "") + "[timeouts]\nconnect = \"soon\"\n"));
    std::fs::write(&path, outside).unwrap();
    let error = handle
        .reload_from_file()
        .expect_err("a bad timeout is refused");
    assert!(error.to_string().contains("timeouts.connect"), "{error}");
    assert!(get("a.test").header("x-request-id").is_some());
    assert_eq!(get("b.test").status, 418);
    assert_eq!(handle.config().1.version, 2);
    let _ = std::fs::remove_file(&path);
}
