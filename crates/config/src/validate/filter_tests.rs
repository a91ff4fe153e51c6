//! Route filter chains: the syntax of every filter, defaults, and an error
//! naming the field for each way a filter can be wrong.

use crate::{ConfigErrors, from_toml};
use shardgate_filters::api_key::ApiKeyConfig;
use shardgate_filters::api_key::hash_key;
use shardgate_filters::body_limit::BodyLimitConfig;
use shardgate_filters::cidr::IpFilterConfig;
use shardgate_filters::cors::CorsConfig;
use shardgate_filters::direct_response::DirectResponseConfig;
use shardgate_filters::filter::{FilterSpec, REGISTRY, lookup};
use shardgate_filters::headers::HeaderOpsConfig;
use shardgate_filters::headers::HeadersConfig;
use shardgate_filters::jwt::{JwtConfig, KeyMaterial, KeySpec};
use shardgate_filters::quota::{Period, QuotaConfig};
use shardgate_filters::rate_limit::{RateKeySource, RateLimitConfig};
use shardgate_filters::request_id::RequestIdConfig;
use shardgate_filters::rewrite::{RedirectConfig, RewriteConfig};
use shardgate_filters::traceparent::TraceContextConfig;
use std::time::Duration;

use super::tests::MINIMAL as BASE;

/// A public EC P-256 key (the filters crate's test fixture).
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEb8aWwNNOSObUaezp/KShnrUn+5iU\n\
VnfCC+94nLE38K7v6Qwo8j3axRVJcbxFhtzUbz8lZq/2floNnsdGSPhuSg==\n\
-----END PUBLIC KEY-----\n";

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// `BASE` plus a second route (`routes[1]`) at `path` with these filters.
fn with_filters(path: &str, filters: &str) -> String {
    format!(
        "{BASE}\n[[routes]]\nname = \"r\"\npath = \"{path}\"\nupstream = \"app\"\nfilters = [\n{filters}\n]\n\
         [fleet]\nredis = \"redis://127.0.0.1:6379\"\n"
    )
}

fn route_filters(path: &str, filters: &str) -> Vec<FilterSpec> {
    let text = with_filters(path, filters);
    let mut c = from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    c.routes.remove(1).filters
}

fn errors(path: &str, filters: &str) -> ConfigErrors {
    from_toml(&with_filters(path, filters)).expect_err(filters)
}

#[test]
fn every_filter_type_parses_to_its_spec() {
    let filters = format!(
        r#"
{{ type = "api-key", keys = [{{ sha256 = "{hash}", consumer = "alice" }}], header = "x-key", query_param = "api_key", consumer_header = "x-who", realm = "users" }},
{{ type = "jwt", keys = [{{ kid = "k1", algorithms = ["HS256"], secret = "{SECRET}" }}, {{ algorithms = ["ES256"], pem = "{pem}" }}], issuers = ["https://issuer.example"], audiences = ["api"], leeway = "0s", require_exp = false, required_claims = ["sub"], forward_claims = {{ sub = "x-user-id", role = "x-role" }}, realm = "jwt-realm" }},
{{ type = "rate-limit", rate = 100, burst = 20, key = "header:X-Client", max_keys = 10000 }},
{{ type = "quota", limit = 5000, per = "month", key = "consumer", max_keys = 100, name = "monthly" }},
{{ type = "headers", request = {{ set = {{ "X-A" = "1" }}, add = {{ "X-B" = "2" }}, remove = ["X-C"] }}, response = {{ remove = ["Server"] }} }},
{{ type = "rewrite", template = "/v2/users/{{id}}" }},
{{ type = "redirect", status = 301, to = "https://example.com/new", keep_query = false }},
{{ type = "direct-response", status = 503, body = "maintenance\n", content_type = "text/plain" }},
{{ type = "cors", origins = ["https://app.example"], methods = ["GET", "POST"], headers = ["content-type"], expose_headers = ["x-total"], credentials = true, max_age = "10m" }},
{{ type = "ip-filter", allow = ["10.0.0.0/8"], deny = ["10.0.0.5/32"] }},
{{ type = "body-limit", max = "1MiB" }},
{{ type = "request-id", header = "x-trace-id", in_response = false }},
{{ type = "trace-context", sample_new = true }},
"#,
        hash = hash_key("s3cret"),
        pem = EC_PUBLIC.replace('\n', "\\n"),
    );
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let want = vec![
        FilterSpec::ApiKey(ApiKeyConfig {
            keys: vec![(hash_key("s3cret"), "alice".into())],
            header: Some("x-key".into()),
            query_param: Some("api_key".into()),
            consumer_header: "x-who".into(),
            realm: "users".into(),
        }),
        FilterSpec::Jwt(JwtConfig {
            keys: vec![
                KeySpec {
                    kid: Some("k1".into()),
                    algorithms: strings(&["HS256"]),
                    material: KeyMaterial::Secret(SECRET.into()),
                },
                KeySpec {
                    kid: None,
                    algorithms: strings(&["ES256"]),
                    material: KeyMaterial::Pem(EC_PUBLIC.into()),
                },
            ],
            issuers: strings(&["https://issuer.example"]),
            audiences: strings(&["api"]),
            leeway: Duration::ZERO,
            require_exp: false,
            required_claims: strings(&["sub"]),
            // Read in key order.
            forward_claims: vec![
                ("role".into(), "x-role".into()),
                ("sub".into(), "x-user-id".into()),
            ],
            realm: "jwt-realm".into(),
        }),
        FilterSpec::RateLimit(RateLimitConfig {
            rate: 100.0,
            burst: 20.0,
            key: RateKeySource::Header("x-client".into()),
            max_keys: 10000,
            fleet: None,
        }),
        FilterSpec::Quota(QuotaConfig {
            limit: 5000,
            period: Period::Month,
            key: RateKeySource::Consumer,
            max_keys: 100,
            name: "monthly".into(),
        }),
        FilterSpec::Headers(HeadersConfig {
            request: HeaderOpsConfig {
                add: vec![("X-B".into(), "2".into())],
                set: vec![("X-A".into(), "1".into())],
                remove: strings(&["X-C"]),
            },
            response: HeaderOpsConfig {
                remove: strings(&["Server"]),
                ..Default::default()
            },
        }),
        FilterSpec::Rewrite(RewriteConfig::Template("/v2/users/{id}".into())),
        FilterSpec::Redirect(RedirectConfig {
            status: 301,
            to: "https://example.com/new".into(),
            keep_query: false,
        }),
        FilterSpec::DirectResponse(DirectResponseConfig {
            status: 503,
            body: "maintenance\n".into(),
            content_type: "text/plain".into(),
        }),
        FilterSpec::Cors(CorsConfig {
            origins: strings(&["https://app.example"]),
            methods: strings(&["GET", "POST"]),
            headers: strings(&["content-type"]),
            expose_headers: strings(&["x-total"]),
            credentials: true,
            max_age: Some(Duration::from_secs(600)),
        }),
        FilterSpec::IpFilter(IpFilterConfig {
            allow: strings(&["10.0.0.0/8"]),
            deny: strings(&["10.0.0.5/32"]),
        }),
        FilterSpec::BodyLimit(BodyLimitConfig { max: 1 << 20 }),
        FilterSpec::RequestId(RequestIdConfig {
            header: "x-trace-id".into(),
            in_response: false,
        }),
        FilterSpec::TraceContext(TraceContextConfig { sample_new: true }),
    ];
    let got = route_filters("/users/:id", &filters);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // Every registered filter has a syntax, and this test covers each.
    let names: Vec<&str> = got.iter().map(FilterSpec::name).collect();
    let registered: Vec<&str> = REGISTRY.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, registered);
}

#[test]
fn left_out_fields_keep_the_filter_defaults() {
    for name in [
        "headers",
        "redirect",
        "direct-response",
        "ip-filter",
        "body-limit",
        "request-id",
        "trace-context",
    ] {
        let got = route_filters("/x", &format!("{{ type = \"{name}\" }}"));
        assert_eq!(got, [lookup(name).unwrap()], "{name}");
    }
    let hash = hash_key("k");
    let got = route_filters(
        "/x",
        &format!(
            "{{ type = \"api-key\", keys = [{{ sha256 = \"{hash}\", consumer = \"c\" }}] }},\n\
             {{ type = \"cors\", origins = [\"*\"] }},\n\
             {{ type = \"api-key\", keys = [{{ sha256 = \"{hash}\", consumer = \"c\" }}], header = \"\", query_param = \"k\" }}"
        ),
    );
    let api_key = ApiKeyConfig {
        keys: vec![(hash, "c".into())],
        ..Default::default()
    };
    assert_eq!(got[0], FilterSpec::ApiKey(api_key.clone()));
    let cors = CorsConfig {
        origins: vec!["*".into()],
        ..Default::default()
    };
    assert_eq!(got[1], FilterSpec::Cors(cors));
    // An empty header turns the header off, leaving the query parameter.
    let query_only = ApiKeyConfig {
        header: None,
        query_param: Some("k".into()),
        ..api_key
    };
    assert_eq!(got[2], FilterSpec::ApiKey(query_only));
}

#[test]
fn rate_limit_rate_per_and_default_burst() {
    // (fields, per-second rate, burst)
    let cases: &[(&str, f64, f64)] = &[
        ("", 100.0, 100.0),
        ("rate = 10", 10.0, 10.0),
        ("rate = 2.5", 2.5, 3.0),
        ("rate = 60, per = \"1m\"", 1.0, 1.0),
        ("rate = 1, per = \"1h\"", 1.0 / 3600.0, 1.0),
        ("rate = 30, per = \"1m\", burst = 5", 0.5, 5.0),
        ("rate = 500, per = \"100ms\"", 5000.0, 5000.0),
        ("burst = 7", 100.0, 7.0),
    ];
    for (fields, rate, burst) in cases {
        let sep = if fields.is_empty() { "" } else { ", " };
        let got = route_filters("/x", &format!("{{ type = \"rate-limit\"{sep}{fields} }}"));
        let FilterSpec::RateLimit(c) = &got[0] else {
            panic!("{got:?}")
        };
        assert!((c.rate - rate).abs() < 1e-12, "{fields}: rate {}", c.rate);
        assert_eq!(c.burst, *burst, "{fields}");
    }
    let keys = [
        ("route", RateKeySource::Route),
        ("client-ip", RateKeySource::ClientIp { ipv6_prefix: 64 }),
        ("consumer", RateKeySource::Consumer),
        (
            "header:X-Api-Key",
            RateKeySource::Header("x-api-key".into()),
        ),
    ];
    let hash = hash_key("k");
    for (key, want) in keys {
        // A consumer limit needs an authentication filter before it.
        let got = route_filters(
            "/x",
            &format!(
                "{{ type = \"api-key\", keys = [{{ sha256 = \"{hash}\", consumer = \"c\" }}] }}, \
                 {{ type = \"rate-limit\", key = \"{key}\" }}"
            ),
        );
        let FilterSpec::RateLimit(c) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(c.key, want, "{key}");
    }
    let got = route_filters(
        "/x",
        "{ type = \"rate-limit\", key = \"client-ip\", ipv6_prefix = 48 }",
    );
    let FilterSpec::RateLimit(c) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(c.key, RateKeySource::ClientIp { ipv6_prefix: 48 });
}

#[test]
fn array_of_tables_is_the_same_syntax() {
    let inline = route_filters(
        "/x",
        "{ type = \"body-limit\", max = 1024 }, { type = \"request-id\" }",
    );
    let text = format!(
        "{BASE}\n[[routes]]\nname = \"r\"\npath = \"/x\"\nupstream = \"app\"\n\
         [[routes.filters]]\ntype = \"body-limit\"\nmax = 1024\n\
         [[routes.filters]]\ntype = \"request-id\"\n"
    );
    assert_eq!(from_toml(&text).unwrap().routes[1].filters, inline);
}

/// Each broken filter (the only filter of `routes[1]`, at the given path) must
/// give an error that reads exactly as the start of the expected text.
#[test]
fn errors_name_the_field() {
    let known = REGISTRY
        .iter()
        .map(|(n, _, _)| *n)
        .collect::<Vec<_>>()
        .join(", ");
    let unknown = format!("routes[1].filters[0].type: unknown filter \"foo\"; known: {known}");
    let hash = hash_key("k");
    let cases: Vec<(&str, String, String)> = vec![
        ("/x", "{ type = \"foo\" }".into(), unknown),
        (
            "/x",
            "{ header = \"x\" }".into(),
            format!("routes[1].filters[0].type: required; known: {known}"),
        ),
        (
            "/x",
            "{ type = 5 }".into(),
            "routes[1].filters[0].type: expected a filter name, got 5".into(),
        ),
        (
            "/x",
            "{ type = \"body-limit\", maks = 1 }".into(),
            "routes[1].filters[0]: unknown field `maks`, expected `max`".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", rate = \"fast\" }".into(),
            "routes[1].filters[0].rate: invalid type: string \"fast\", expected f64".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", key = \"route\", ipv6_prefix = 56 }".into(),
            "routes[1].filters[0].ipv6_prefix: applies only to key = \"client-ip\"".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", rate = 0 }".into(),
            "routes[1].filters[0].rate: must be a positive number of requests per `per`, got 0"
                .into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", per = \"0s\" }".into(),
            "routes[1].filters[0].per: must be greater than zero".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", key = \"tenant\" }".into(),
            "routes[1].filters[0].key: \"tenant\" needs the route to belong to a tenant (routes[1].tenant)".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", key = \"cookie:sid\" }".into(),
            "routes[1].filters[0].key: expected route, client-ip, consumer, tenant, client-cert or header:NAME, got \"cookie:sid\"".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", burst = 0.5 }".into(),
            "routes[1].filters[0]: burst: ".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", max_keys = 0 }".into(),
            "routes[1].filters[0].max_keys: must be between 1 and".into(),
        ),
        (
            "/x",
            "{ type = \"rate-limit\", key = \"header:a b\" }".into(),
            "routes[1].filters[0]: key.header: \"a b\" is not a header name".into(),
        ),
        (
            "/x",
            "{ type = \"rewrite\", template = \"/v2/{id}\" }".into(),
            "routes[1].filters[0]: template: template \"/v2/{id}\" uses {id}, which the route does not capture".into(),
        ),
        (
            "/users/:uid",
            "{ type = \"redirect\", to = \"/u/{id}\" }".into(),
            "routes[1].filters[0]: to: template \"/u/{id}\" uses {id}".into(),
        ),
        (
            "/x",
            "{ type = \"rewrite\" }".into(),
            "routes[1].filters[0]: give one of strip_prefix, replace_prefix, template".into(),
        ),
        (
            "/x",
            "{ type = \"rewrite\", strip_prefix = \"/a\", template = \"/b\" }".into(),
            "routes[1].filters[0]: give only one of strip_prefix, replace_prefix, template, not strip_prefix and template".into(),
        ),
        (
            "/x",
            "{ type = \"rewrite\", replace_prefix = { from = \"a\", to = \"/b\" } }".into(),
            "routes[1].filters[0]: prefix \"a\" must start with '/'".into(),
        ),
        (
            "/x",
            "{ type = \"api-key\", keys = [{ sha256 = \"zz\", consumer = \"c\" }] }".into(),
            "routes[1].filters[0]: keys[0].sha256: expected 64 hex digits".into(),
        ),
        (
            "/x",
            "{ type = \"api-key\", keys = [{ sha256 = \"zz\" }] }".into(),
            "routes[1].filters[0].keys: missing field `consumer`".into(),
        ),
        (
            "/x",
            format!("{{ type = \"api-key\", keys = [{{ sha256 = \"{hash}\", consumer = \"c\" }}], header = \"\" }}"),
            "routes[1].filters[0]: header, query_param: set at least one".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\" }".into(),
            "routes[1].filters[0]: keys: at least one key is required".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ algorithms = [\"HS256\"] }] }".into(),
            "routes[1].filters[0].keys[0]: give one of secret, secret_base64, pem, pem_file, jwks, jwks_file, jwks_url".into(),
        ),
        (
            "/x",
            format!("{{ type = \"jwt\", keys = [{{ algorithms = [\"HS256\"], secret = \"{SECRET}\", pem_file = \"/k.pem\" }}] }}"),
            "routes[1].filters[0].keys[0]: give only one of secret, secret_base64, pem, pem_file, jwks, jwks_file, jwks_url, not secret and pem_file".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ algorithms = [\"HS256\"], secret = \"short\" }] }".into(),
            "routes[1].filters[0]: keys[0].secret: an HMAC secret must be at least 32 bytes".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ algorithms = [\"HS256\"], secret_base64 = \"no!\" }] }".into(),
            "routes[1].filters[0].keys[0].secret_base64: not base64".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ algorithms = [\"RS256\"], pem_file = \"/nonexistent/shardgate/k.pem\" }] }".into(),
            "routes[1].filters[0].keys[0].pem_file: cannot read \"/nonexistent/shardgate/k.pem\": No such file".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_file = \"/nonexistent/shardgate/jwks.json\" }] }".into(),
            "routes[1].filters[0].keys[0].jwks_file: cannot read \"/nonexistent/shardgate/jwks.json\"".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_file = \"/dev/zero\" }] }".into(),
            "routes[1].filters[0].keys[0].jwks_file: cannot read \"/dev/zero\": larger than 1 MiB".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_url = \"http://idp.example/jwks\" }] }".into(),
            "routes[1].filters[0].keys[0].jwks_url: \"http://idp.example/jwks\": must be an https:// URL".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_url = \"https://u:p@idp.example/jwks\" }] }".into(),
            "routes[1].filters[0].keys[0].jwks_url: \"https://u:p@idp.example/jwks\": needs a host (and no user info)".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_url = \"https://idp.example/jwks\", refresh = \"5s\" }] }".into(),
            "routes[1].filters[0].keys[0].min_refresh: longer than refresh".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_url = \"https://idp.example/jwks\", ca = \"/nonexistent/shardgate/ca.pem\" }] }".into(),
            "routes[1].filters[0].keys[0].ca: cannot read \"/nonexistent/shardgate/ca.pem\"".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_url = \"https://idp.example/jwks\", ca = \"/dev/null\" }] }".into(),
            "routes[1].filters[0].keys[0].ca: \"/dev/null\": no certificate in it".into(),
        ),
        (
            "/x",
            format!("{{ type = \"jwt\", keys = [{{ algorithms = [\"HS256\"], secret = \"{SECRET}\", refresh = \"1m\" }}] }}"),
            "routes[1].filters[0].keys[0].refresh: only with jwks_url".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks_url = \"https://idp.example/jwks\", algorithms = [\"XX1\"] }] }".into(),
            "routes[1].filters[0]: keys[0].algorithms".into(),
        ),
        (
            "/x",
            "{ type = \"jwt\", keys = [{ jwks = \"{}\" }] }".into(),
            "routes[1].filters[0]: keys[0].jwks: not a JWKS document".into(),
        ),
        (
            "/x",
            format!("{{ type = \"jwt\", keys = [{{ algorithms = [\"HS256\"], secret = \"{SECRET}\" }}], leeway = \"soon\" }}"),
            "routes[1].filters[0].leeway: invalid duration \"soon\"".into(),
        ),
        (
            "/x",
            "{ type = \"redirect\", status = 70000 }".into(),
            "routes[1].filters[0].status: 70000 is not an HTTP status".into(),
        ),
        (
            "/x",
            "{ type = \"redirect\", status = 303 }".into(),
            "routes[1].filters[0]: redirect status 303 is not 301, 302, 307 or 308".into(),
        ),
        (
            "/x",
            "{ type = \"direct-response\", status = 99 }".into(),
            "routes[1].filters[0]: status: 99 is not 200..=599".into(),
        ),
        (
            "/x",
            "{ type = \"cors\" }".into(),
            "routes[1].filters[0]: origins".into(),
        ),
        (
            "/x",
            "{ type = \"cors\", origins = [\"*\"], max_age = \"long\" }".into(),
            "routes[1].filters[0].max_age: invalid duration \"long\"".into(),
        ),
        (
            "/x",
            "{ type = \"ip-filter\", allow = [\"10.0.0.1/8\"] }".into(),
            "routes[1].filters[0]: allow[0]: \"10.0.0.1/8\" has host bits set".into(),
        ),
        (
            "/x",
            "{ type = \"headers\", response = { remove = [\"Connection\"] } }".into(),
            "routes[1].filters[0]: response.remove[0]: \"Connection\" is managed".into(),
        ),
        (
            "/x",
            "{ type = \"headers\", request = { rename = {} } }".into(),
            "routes[1].filters[0].request: unknown field `rename`, expected one of `set`, `add`, `remove`".into(),
        ),
        (
            "/x",
            "{ type = \"body-limit\", max = \"1 parsec\" }".into(),
            "routes[1].filters[0].max: unknown size unit \"parsec\"".into(),
        ),
        (
            "/x",
            "{ type = \"request-id\", header = \"bad header\" }".into(),
            "routes[1].filters[0]: header: \"bad header\" is not a header name".into(),
        ),
    ];
    for (path, filter, want) in cases {
        let errs = errors(path, &filter);
        assert!(
            errs.0.iter().any(|e| e.to_string().starts_with(&want)),
            "{filter}\n  want: {want}\n  got: {errs}"
        );
    }
}

#[test]
fn every_broken_filter_is_reported_at_once() {
    let errs = errors(
        "/x",
        "{ type = \"foo\" }, { type = \"body-limit\", max = \"x\" }, { type = \"request-id\" }, \
         { type = \"rewrite\", template = \"/{a}\" }",
    );
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[1].filters[0].type",
            "routes[1].filters[1].max",
            "routes[1].filters[3]"
        ],
        "{errs}"
    );
}

/// A file in the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("shardgate-config-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn toml(&self) -> String {
        self.0.display().to_string().replace('\\', "\\\\")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn jwt_keys_from_files_and_base64() {
    let pem = TempFile::new("ec.pem", EC_PUBLIC);
    let jwks_text = r#"{"keys":[{"kty":"oct","kid":"h1","alg":"HS256","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#;
    let jwks = TempFile::new("keys.jwks", jwks_text);
    let got = route_filters(
        "/x",
        &format!(
            "{{ type = \"jwt\", keys = [\
             {{ algorithms = [\"ES256\"], pem_file = \"{}\" }}, \
             {{ jwks_file = \"{}\" }}, \
             {{ kid = \"b\", algorithms = [\"HS256\"], secret_base64 = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }}] }}",
            pem.toml(),
            jwks.toml()
        ),
    );
    let FilterSpec::Jwt(c) = &got[0] else {
        panic!("{got:?}")
    };
    let materials: Vec<&KeyMaterial> = c.keys.iter().map(|k| &k.material).collect();
    assert_eq!(
        materials,
        [
            &KeyMaterial::Pem(EC_PUBLIC.into()),
            &KeyMaterial::Jwks(jwks_text.into()),
            &KeyMaterial::Secret(SECRET.into()),
        ]
    );
    assert_eq!(c.keys[2].kid.as_deref(), Some("b"));
    // A file that is there but holds no key is refused by the key's checks.
    let junk = TempFile::new("junk.pem", "not a key");
    let errs = errors(
        "/x",
        &format!(
            "{{ type = \"jwt\", keys = [{{ algorithms = [\"ES256\"], pem_file = \"{}\" }}] }}",
            junk.toml()
        ),
    );
    assert!(
        errs.to_string()
            .contains("routes[1].filters[0]: keys[0].pem: not a EC public key"),
        "{errs}"
    );
}

#[test]
fn fleet_limits_and_quotas_need_a_fleet_and_errors_name_the_field() {
    let text = format!(
        "{BASE}\n[[routes]]\nname = \"r\"\npath = \"/q\"\nupstream = \"app\"\nfilters = [\n\
         {{ type = \"rate-limit\", rate = 10, scope = \"fleet\" }},\n\
         {{ type = \"quota\", limit = 10, per = \"day\", key = \"client-ip\" }}\n]\n"
    );
    let e = from_toml(&text).unwrap_err().to_string();
    assert!(e.contains("routes[1].filters[0].scope"), "{e}");
    assert!(e.contains("routes[1].filters[1]"), "{e}");
    assert!(e.contains("needs a [fleet] section"), "{e}");
    // With one, the fleet limit is named after its place.
    let c = from_toml(&format!(
        "{text}[fleet]\nredis = \"redis://:pw@127.0.0.1:6380/1\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.routes[1].filters[0].fleet_limit(),
        Some("routes[1].filters[0]")
    );
    let f = c.fleet.unwrap();
    assert_eq!(
        (f.redis.port, f.redis.db, f.redis.password.as_deref()),
        (6380, 1, Some("pw"))
    );
    assert_eq!(f.sync, Duration::from_millis(100));
    for (bad, field) in [
        ("[fleet]\nredis = \"http://x\"\n", "fleet.redis"),
        ("[fleet]\n", "fleet.redis"),
        (
            "[fleet]\nredis = \"redis://h\"\nsync = \"1ms\"\n",
            "fleet.sync",
        ),
        ("[fleet]\nredis = \"redis://h\"\nca = \"/x\"\n", "fleet.ca"),
    ] {
        let e = from_toml(&format!("{BASE}\n{bad}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
    for (filter, field) in [
        ("{ type = \"rate-limit\", scope = \"planet\" }", "scope"),
        ("{ type = \"rate-limit\", name = \"x\" }", "name"),
        (
            "{ type = \"quota\", per = \"week\", key = \"client-ip\" }",
            "per",
        ),
        (
            "{ type = \"quota\", limit = 0, key = \"client-ip\" }",
            "limit",
        ),
    ] {
        let e = errors("/q", filter).to_string();
        assert!(
            e.contains(&format!("routes[1].filters[0].{field}")),
            "{filter}: {e}"
        );
    }
}

#[test]
fn tracing_settings_defaults_errors_and_what_a_reload_may_change() {
    let text = format!(
        "{BASE}\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n\
         headers = {{ \"x-key\" = \"k\" }}\nresource = {{ \"deployment.environment\" = \"prod\" }}\n"
    );
    let c = from_toml(&text).unwrap();
    let t = c.tracing.clone().unwrap();
    assert_eq!(
        (
            t.sample_ratio,
            t.service_name.as_str(),
            t.batch_size,
            t.queue
        ),
        (1.0, "shardgate", 512, 4096)
    );
    assert_eq!(
        (t.interval, t.timeout),
        (Duration::from_secs(5), Duration::from_secs(5))
    );
    assert_eq!(t.headers, vec![("x-key".to_string(), "k".to_string())]);
    // The ratio changes on a reload; the exporter's settings need a restart.
    let ratio = from_toml(&format!("{text}sample_ratio = 0.5\n")).unwrap();
    assert_eq!(c.restart_required(&ratio), None);
    let batch = from_toml(&format!("{text}batch_size = 10\n")).unwrap();
    assert!(c.restart_required(&batch).unwrap().starts_with("tracing"));
    assert!(c.restart_required(&from_toml(BASE).unwrap()).is_some());
    for (bad, field) in [
        ("[tracing]\n", "tracing.otlp_endpoint"),
        (
            "[tracing]\notlp_endpoint = \"127.0.0.1:4318\"\n",
            "tracing.otlp_endpoint",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://h\"\nsample_ratio = 1.5\n",
            "tracing.sample_ratio",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://h\"\nbatch_size = 0\n",
            "tracing.batch_size",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://h\"\ninterval = \"1ms\"\n",
            "tracing.interval",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://h\"\nheaders = { \"a b\" = \"x\" }\n",
            "tracing.headers.a b",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://h\"\nsampling = 1\n",
            "sampling",
        ),
    ] {
        let e = from_toml(&format!("{BASE}\n{bad}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}
