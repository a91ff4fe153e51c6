use crate::{Driver, PathMatch, Workers, from_toml};
use std::time::Duration;

/// The smallest valid configuration: one listener, one upstream, one route.
pub(super) const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.app]
endpoints = ["127.0.0.1:9000"]

[[routes]]
prefix = "/"
upstream = "app"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = from_toml(MINIMAL).unwrap();
    assert_eq!(c.workers, Workers::Auto);
    assert_eq!(c.driver, Driver::Auto);
    assert_eq!(
        c.timeouts.request_header,
        crate::defaults::REQUEST_HEADER_TIMEOUT
    );
    assert_eq!(c.limits.max_body, None);
    assert_eq!(c.routes[0].name, "route-0");
    assert_eq!(c.routes[0].path, PathMatch::Prefix("/".into()));
}

#[test]
fn full_config_parses() {
    let c = from_toml(
        r#"
workers = 2
driver = "legacy"
[[listeners]]
address = "0.0.0.0:80"
backlog = 128
[timeouts]
connect = "250ms"
idle = "2m"
[limits]
max_body = "10MiB"
buffer_size = "32KiB"
max_headers = 50
[pool]
max_idle_per_endpoint = 8
idle_timeout = "5s"
[upstreams.api]
endpoints = ["127.0.0.1:9000", "[::1]:9001", "localhost:9002"]
[[routes]]
name = "users"
hosts = ["API.example.com", "*.example.org"]
methods = ["get", "POST"]
path = "/users/:id"
upstream = "api"
"#,
    )
    .unwrap();
    assert_eq!(c.workers.resolve(), 2);
    assert_eq!(c.driver, Driver::Legacy);
    assert_eq!(c.listeners[0].backlog, 128);
    assert_eq!(c.timeouts.connect, Duration::from_millis(250));
    assert_eq!(c.timeouts.idle, Duration::from_secs(120));
    assert_eq!(c.limits.max_body, Some(10 << 20));
    assert_eq!(c.limits.buffer_size, 32 << 10);
    assert_eq!(c.upstreams[0].endpoints.len(), 3);
    assert_eq!(c.routes[0].hosts, ["api.example.com", "*.example.org"]);
    assert_eq!(c.routes[0].methods, ["GET", "POST"]);
}

/// Each broken config must report an error at exactly the named path.
#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("workers = 0", "workers"),
        ("workers = \"many\"", "workers"),
        ("driver = \"kqueue\"", "driver"),
        ("[timeouts]\nconnect = \"5\"", "timeouts.connect"),
        ("[timeouts]\nidle = \"0s\"", "timeouts.idle"),
        ("[limits]\nmax_body = \"ten\"", "limits.max_body"),
        ("[limits]\nmax_headers = 500", "limits.max_headers"),
        ("[limits]\nmax_head = \"1MiB\"", "limits.max_head"),
        ("[limits]\nbuffer_size = 10", "limits.buffer_size"),
        (
            "[pool]\nmax_requests_per_connection = 0",
            "pool.max_requests_per_connection",
        ),
        (
            "[timeouts]\nrequest_body = \"soon\"",
            "timeouts.request_body",
        ),
        (
            "[timeouts]\nresponse_send = \"5\"",
            "timeouts.response_send",
        ),
        (
            "[limits]\nrequest_buffer = \"1GiB\"",
            "limits.request_buffer",
        ),
        ("[limits]\nmin_rate = -1", "limits.min_rate"),
        (
            "[admin]\naddress = \"127.0.0.1:9901\"\ntoken = \"short\"",
            "admin.token",
        ),
        (
            "[admin]\naddress = \"127.0.0.1:9901\"\nhosts = [\"gw:9901\"]",
            "admin.hosts[0]",
        ),
        (
            "[access_log]\npath = \"/tmp/a.log\"\nredact_query = [\"a=b\"]",
            "access_log.redact_query[0]",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\ncertificates = []",
            "listeners[0].tls.certificates",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\n\
             certificates = [{ cert = \"/nonexistent.crt\", key = \"/nonexistent.key\" }]",
            "listeners[0].tls.certificates[0]",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\ncertificates = []\n\
             client_certificates = \"optional\"",
            "listeners[0].tls.client_certificates",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\ncertificates = []\n\
             client_ca = \"/nonexistent-ca.pem\"",
            "listeners[0].tls.client_ca",
        ),
        (
            "[[listeners]]\naddress = \"127.0.0.1:8081\"\nredirect_to_https = 0",
            "listeners[0].redirect_to_https",
        ),
    ];
    for (extra, path) in cases {
        let text = format!("{extra}\n{MINIMAL}");
        let errs = from_toml(&text).expect_err(extra);
        assert!(
            errs.0.iter().any(|e| e.path == *path),
            "{extra}: got {errs}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = r#"
[[listeners]]
address = "nowhere"
[upstreams.app]
endpoints = ["127.0.0.1"]
[[routes]]
prefix = "api"
upstream = "billing"
[[routes]]
upstream = "app"
"#;
    let errs = from_toml(text).unwrap_err();
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "listeners[0].address",
        "upstreams.app.endpoints[0]",
        "routes[0].prefix",
        "routes[0].upstream",
        "routes[1]",
    ] {
        assert!(paths.contains(&want), "missing {want} in {errs}");
    }
    let msg = errs.to_string();
    assert!(
        msg.contains(r#"routes[0].upstream: unknown upstream "billing""#),
        "{msg}"
    );
}

#[test]
fn unknown_keys_are_errors_with_position() {
    let text = format!("{MINIMAL}\n[timeouts]\nconect = \"1s\"\n");
    let errs = from_toml(&text).unwrap_err();
    let msg = errs.to_string();
    assert!(msg.contains("conect"), "{msg}");
    assert!(msg.contains("line "), "{msg}");
}

#[test]
fn missing_listener_and_duplicate_route_names() {
    let text = r#"
[upstreams.app]
endpoints = ["127.0.0.1:1"]
[[routes]]
name = "a"
prefix = "/"
upstream = "app"
[[routes]]
name = "a"
prefix = "/x"
upstream = "app"
"#;
    let errs = from_toml(text).unwrap_err();
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"listeners"), "{errs}");
    assert!(paths.contains(&"routes[1].name"), "{errs}");
}

#[test]
fn conflicting_routes_are_named() {
    let text = format!(
        "{MINIMAL}\n[[routes]]\nname = \"users-a\"\npath = \"/users/:id\"\nupstream = \"app\"\n\
         [[routes]]\nname = \"users-b\"\npath = \"/users/:uid\"\nupstream = \"app\"\n"
    );
    let errs = from_toml(&text).unwrap_err().to_string();
    assert!(
        errs.contains("users-a") && errs.contains("users-b"),
        "{errs}"
    );
}

#[test]
fn malformed_patterns_are_errors() {
    let text = format!("{MINIMAL}\n[[routes]]\npath = \"/a/*rest/b\"\nupstream = \"app\"\n");
    let errs = from_toml(&text).unwrap_err();
    assert!(errs.0.iter().any(|e| e.path == "routes[1]"), "{errs}");
}

#[test]
fn route_splits() {
    let ok = format!(
        "{MINIMAL}\n[upstreams.v2]\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"canary\"\nprefix = \"/c\"\n\
         upstreams = [{{ name = \"app\", weight = 70 }}, {{ name = \"v2\", weight = 30 }}]\n"
    );
    let c = from_toml(&ok).unwrap();
    let r = c.routes.iter().find(|r| r.name == "canary").unwrap();
    assert_eq!(r.split.len(), 2);
    assert_eq!(r.split[1].1, 30);
    for (bad, field) in [
        (
            "upstreams = [{ name = \"nope\", weight = 1 }]",
            "routes[1].upstreams[0].name",
        ),
        (
            "upstreams = [{ name = \"app\", weight = 0 }]",
            "routes[1].upstreams[0].weight",
        ),
        ("upstreams = []", "routes[1]"),
        (
            "upstream = \"app\"\nupstreams = [{ name = \"app\", weight = 1 }]",
            "routes[1]",
        ),
    ] {
        let text = format!("{MINIMAL}\n[[routes]]\nprefix = \"/x\"\n{bad}\n");
        let errs = from_toml(&text).unwrap_err();
        assert!(errs.0.iter().any(|e| e.path == field), "{bad}: {errs}");
    }
}

/// `configs/example.toml` documents every option and must stay a valid configuration.
#[test]
fn example_config_is_valid() {
    let text = include_str!("../../../../configs/example.toml");
    let c = from_toml(text).unwrap_or_else(|e| panic!("configs/example.toml: {e}"));
    let tenant_filters = c.tenants.iter().flat_map(|t| &t.filters);
    let used: Vec<&str> = tenant_filters
        .chain(c.routes.iter().flat_map(|r| &r.filters))
        .map(|f| f.name())
        .collect();
    for (name, _, _) in shardgate_filters::filter::REGISTRY {
        assert!(used.contains(name), "configs/example.toml shows no {name}");
    }
}

#[test]
fn upstream_protocol_is_checked_against_tls() {
    let with = |extra: &str| {
        from_toml(&MINIMAL.replace(
            "endpoints = [\"127.0.0.1:9000\"]",
            &format!("endpoints = [\"127.0.0.1:9000\"]\n{extra}"),
        ))
    };
    for (extra, want) in [
        ("protocol = \"h3\"", "expected \"h1\", \"h2\" or \"h2c\""),
        (
            "protocol = \"h2\"",
            "HTTP/2 over TLS: add [upstreams.app.tls]",
        ),
        (
            "protocol = \"h2c\"\n[upstreams.app.tls]\nca = \"/etc/ssl/certs/ca-certificates.crt\"",
            "use \"h2\"",
        ),
    ] {
        let errs = with(extra).expect_err(extra).to_string();
        assert!(
            errs.contains("upstreams.app.protocol") && errs.contains(want),
            "{extra}: {errs}"
        );
    }
    let c = with("protocol = \"h2c\"").unwrap();
    assert_eq!(c.upstreams[0].protocol, crate::UpstreamProtocol::H2c);
    assert_eq!(
        from_toml(MINIMAL).unwrap().upstreams[0].protocol,
        crate::UpstreamProtocol::H1
    );
}
