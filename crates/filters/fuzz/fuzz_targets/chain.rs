//! Any request head through filter chains that hold every built-in filter, as the gateway
//! configures them from TOML. No panic; and whatever the request:
//! - every line a chain adds to the upstream head or to the response is one well-formed field
//!   (a token name, a value without CR, LF, NUL or other controls but tab), so nothing a client
//!   sends can split a head;
//! - a rewritten target is origin-form (starts with `/`) without spaces or controls;
//! - an answer's status is a final status (200..=599);
//! - a response carries at most one set of `RateLimit-*` fields.
//!
//! The first input byte picks the client address (one deny-listed, the others allowed). Each
//! input runs twice on fresh chains (fresh rate-limit buckets, so a crash replays on its own):
//! the second run meets a spent one-request limit.
//!
//! Run: `cargo +nightly fuzz run chain corpus/chain seeds/chain` (`seeds/chain` holds one request
//! per route, including HS256 tokens signed with the configured secret, which mutation alone
//! would never find).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_http::{Limits, empty_headers, parse_request};
use shardgate_filters::chain::{Chain, Cx, Flow, LimitSet, Limiters};
use shardgate_filters::global_rate::RateKey;
use shardgate_filters::headers::{is_token, is_value};
use shardgate_filters::request_id::RequestIdGen;
use std::net::IpAddr;
use std::time::{Instant, SystemTime};

/// Three routes whose chains together hold every built-in filter.
const CONFIG: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
[upstreams.app]
endpoints = ["127.0.0.1:9"]

[[routes]]
name = "keys"
path = "/users/:id"
upstream = "app"
filters = [
  { type = "ip-filter", allow = ["10.0.0.0/8", "127.0.0.0/8", "::1/128"], deny = ["10.0.0.5/32"] },
  { type = "cors", origins = ["https://app.example"], methods = ["GET", "PUT"], headers = ["authorization"], expose_headers = ["x-request-id"], credentials = true },
  { type = "request-id" },
  { type = "trace-context", sample_new = true },
  { type = "api-key", keys = [{ sha256 = "231e9b2f757db8d48ecd0711b60135e1cc57a3a807be9dc12638856f17a7872c", consumer = "demo" }], query_param = "api_key" },
  { type = "rate-limit", rate = 1000, key = "consumer" },
  { type = "rate-limit", rate = 1, per = "1h", burst = 1, key = "header:x-client" },
  { type = "headers", request = { set = { "X-Tenant" = "acme" }, add = { "X-Via" = "gw" }, remove = ["X-Debug"] }, response = { set = { "X-Served-By" = "gw" }, remove = ["Server"] } },
  { type = "rewrite", template = "/v2/users/{id}" },
  { type = "body-limit", max = "1KiB" },
]

[[routes]]
name = "tokens"
prefix = "/api"
upstream = "app"
filters = [
  { type = "jwt", keys = [{ algorithms = ["HS256"], secret = "fuzz-secret-of-at-least-32-bytes!!" }], leeway = "30s", required_claims = ["sub"], forward_claims = { sub = "x-user-id", tier = "x-tier" } },
  { type = "rate-limit", rate = 10, key = "client-ip" },
  { type = "rewrite", strip_prefix = "/api" },
]

[[routes]]
name = "answers"
path = "/old/*rest"
upstream = "app"
filters = [
  { type = "redirect", status = 308, to = "https://new.example/n/{rest}", keep_query = true },
]

[[routes]]
name = "status"
prefix = "/status"
upstream = "app"
filters = [
  { type = "rewrite", replace_prefix = { from = "/status", to = "/health" } },
  { type = "direct-response", status = 503, body = "down\n" },
]
"#;

struct Chains {
    limits: LimitSet,
    /// Each route's chain with the names of its parameters.
    chains: Vec<(Chain, Vec<&'static str>)>,
}

thread_local! {
    static CONFIG_PARSED: shardgate_config::Config =
        shardgate_config::from_toml(CONFIG).expect("the fuzz configuration");
}

/// Fresh chains, with fresh rate-limit buckets, for every input, so that an input's outcome
/// does not depend on the ones before it (and a crash replays).
fn build(config: &shardgate_config::Config, now: Instant) -> Chains {
    let mut limits = LimitSet {
        shard: 0,
        shards: 1,
        now,
        limiters: Limiters::new(),
        configs: Vec::new(),
        owners: Vec::new(),
        key_slots: Vec::new(),
        quotas: Vec::new(),
    };
    let params: [&[&'static str]; 4] = [&["id"], &[], &["rest"], &[]];
    let chains = config
        .routes
        .iter()
        .zip(params)
        .map(|(route, params)| {
            let chain = Chain::build(
                &Chain::default(),
                &route.filters,
                params,
                &mut limits,
                &route.name,
            )
            .expect("the fuzz chains build");
            (chain, params.to_vec())
        })
        .collect();
    Chains { limits, chains }
}

/// Every line is `name: value\r\n` with a token name and a value holding no CR, LF, NUL or
/// other control but tab; at most one `RateLimit-Limit`.
fn assert_lines(what: &str, lines: &[u8]) {
    if lines.is_empty() {
        return;
    }
    let Some(text) = lines.strip_suffix(b"\r\n") else {
        panic!("{what}: unterminated {lines:?}")
    };
    let mut rate_limits = 0;
    for line in split_crlf(text) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            panic!("{what}: not a field line {line:?}")
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        assert!(is_token(name), "{what}: bad name in {line:?}");
        assert!(is_value(value), "{what}: bad value in {line:?}");
        rate_limits += usize::from(name.eq_ignore_ascii_case(b"ratelimit-limit"));
    }
    assert!(
        rate_limits <= 1,
        "{what}: {rate_limits} RateLimit-Limit fields"
    );
}

/// The pieces of `text` between `\r\n` pairs (a lone CR or LF stays inside a piece, where
/// `is_value` refuses it).
fn split_crlf(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                rest = Some(&t[i + 2..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, raw)) = data.split_first() else {
        return;
    };
    let client: IpAddr = match pick % 4 {
        0 => "10.0.0.5".parse().unwrap(),
        1 => "127.0.0.1".parse().unwrap(),
        2 => "::1".parse().unwrap(),
        _ => "10.1.2.3".parse().unwrap(),
    };
    let mut headers = empty_headers();
    let Ok(Some(req)) = parse_request(raw, &mut headers, &Limits::default()) else {
        return;
    };
    let now = Instant::now();
    let chains = CONFIG_PARSED.with(|config| build(config, now));
    // Twice: the second meets the spent one-request limit (429 and `Retry-After`).
    for _ in 0..2 {
        run(&chains, &req, client, now);
    }
});

fn run(
    Chains { limits, chains }: &Chains,
    req: &shardgate_http::Request<'_, '_>,
    client: IpAddr,
    now: Instant,
) {
    let mut ids = RequestIdGen::new(0, SystemTime::now());
    for (chain, names) in chains {
        // The parameter takes the path (never the query) after its route's fixed first
        // segment, as the router would.
        let path_only = req.path.split(|&b| b == b'?').next().unwrap_or_default();
        let rest = path_only.get(1..).unwrap_or_default();
        let rest = &rest[rest
            .iter()
            .position(|&b| b == b'/')
            .map_or(rest.len(), |i| i + 1)..];
        let params: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, rest)).collect();
        let (mut up, mut resp, mut path) = (Vec::new(), Vec::new(), Vec::new());
        let mut cx = Cx {
            req,
            target: req.path,
            params: &params,
            client,
            route: "fuzz",
            tenant: "t",
            now,
            limiters: &limits.limiters,
            quotas: &limits.quotas,
            ids: &mut ids,
            upstream: &mut up,
            response: &mut resp,
            path: &mut path,
            rewritten: false,
            request_id: ([0; 128], 0),
            trace: None,
            sampler: None,
            consumer: RateKey::of(b""),
            consumer_name: ([0; 64], 0),
            answered_by: "",
            rate: None,
            secrets: &[],
            client_cert: b"",
        };
        let flow = chain.on_request(&mut cx);
        let rewritten = cx.rewritten;
        if let Flow::Answer { status, .. } = flow {
            assert!((200..=599).contains(&status), "status {status}");
        }
        assert_lines("upstream", &up);
        assert_lines("response", &resp);
        if rewritten {
            assert!(path.starts_with(b"/"), "rewritten to {path:?}");
            assert!(
                path.iter().all(|&b| b > b' ' && b != 0x7f),
                "rewritten to {path:?}"
            );
        }
    }
}
