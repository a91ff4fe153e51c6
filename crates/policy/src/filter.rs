//! The filter model: what a route's (or tenant's) filter chain is made of, before the proxy
//! wires it into its request and response phases.
//!
//! A chain is an ordered list of [`FilterSpec`]s, each named in config by its registry name
//! (`"api-key"`, `"rate-limit"`, ...) and carrying a small config struct. [`FilterSpec::validate`]
//! reports every problem with the filter's name and the field path;
//! [`FilterSpec::build`] compiles it into a [`Filter`], the immutable, shard-cloneable form the
//! proxy's filter enum dispatches on statically. Per-shard mutable state (rate-limit buckets,
//! the id/trace PRNG) is not in a [`Filter`]: the proxy makes one per shard from it
//! ([`crate::global_rate::ShardLimiter::new`], [`crate::request_id::RequestIdGen::new`]).
//!
//! # How to write a new built-in filter
//!
//! 1. **One file** in this crate, `src/my_filter.rs`: the pure logic with time passed in, its
//!    config struct (plain data, `pub` fields, a `Default` if it has sensible defaults), its
//!    validation (every problem with a field path), and table-driven tests. No I/O, no
//!    allocation per request where avoidable.
//! 2. **One enum line** in [`FilterSpec`] (`MyFilter(MyFilterConfig)`) and in [`Filter`] (its
//!    compiled form), plus the matching arms in `validate`, `build` and `phases` here; the
//!    compiler lists every `match` that needs one.
//! 3. **One registry line** in [`REGISTRY`]: `("my-filter", "what it does", || FilterSpec::MyFilter(Default::default()))`.
//!    Config loading looks the name up with [`lookup`] and fills the fields.
//!
//! Then the proxy adds an arm to its filter enum's request/response hooks.

use std::fmt;

use crate::api_key::{ApiKeyAuth, KeyStore};
use crate::body_limit::BodyLimit;
use crate::chain::{Cx, Declare, Flow};
use crate::cidr::IpRules;
use crate::cors::{Cors, CorsConfig};
use crate::global_rate::GlobalLimitConfig;
use crate::headers::{HeaderOpsConfig, HeaderRules, is_managed, is_token, is_value};
use crate::jwt::{JwtConfig, JwtVerifier};
use crate::rate_limit::RateLimit;
use crate::rewrite::{PathRewrite, Redirect};
use crate::token_bucket::Limit;

/// A problem in one filter's config: `filter` is the registry name, `message` starts with the
/// field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfigError {
    pub filter: &'static str,
    pub message: String,
}

impl fmt::Display for FilterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter {:?}: {}", self.filter, self.message)
    }
}

impl std::error::Error for FilterConfigError {}

type Errors = Vec<FilterConfigError>;

fn errs<E: fmt::Display>(filter: &'static str, list: impl IntoIterator<Item = E>) -> Errors {
    list.into_iter()
        .map(|e| FilterConfigError {
            filter,
            message: e.to_string(),
        })
        .collect()
}

fn one(filter: &'static str, message: String) -> Errors {
    vec![FilterConfigError { filter, message }]
}

/// `api-key`: keys as SHA-256 hex digests with their consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// `(sha256 hex, consumer)`.
    pub keys: Vec<(String, String)>,
    pub header: Option<String>,
    pub query_param: Option<String>,
    pub consumer_header: String,
    pub realm: String,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        ApiKeyConfig {
            keys: Vec::new(),
            header: Some(crate::api_key::DEFAULT_HEADER.into()),
            query_param: None,
            consumer_header: crate::api_key::DEFAULT_CONSUMER_HEADER.into(),
            realm: crate::api_key::DEFAULT_REALM.into(),
        }
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKeySource {
    /// One bucket for the route.
    Route,
    ClientIp,
    /// The API-key consumer (requests without one share the bucket of the empty name).
    Consumer,
    /// A request header's value (requests without it share one bucket).
    Header(String),
    /// One bucket for the tenant.
    Tenant,
}

/// `rate-limit`: a gateway-wide token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Tokens per second, for the whole gateway.
    pub rate: f64,
    pub burst: f64,
    pub key: RateKeySource,
    pub max_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rate: 100.0,
            burst: 100.0,
            key: RateKeySource::ClientIp,
            max_keys: crate::global_rate::DEFAULT_MAX_KEYS,
        }
    }
}

/// `headers`: add/set/remove on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadersConfig {
    pub request: HeaderOpsConfig,
    pub response: HeaderOpsConfig,
}

/// `rewrite`: one path rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteConfig {
    StripPrefix(String),
    ReplacePrefix { from: String, to: String },
    Template(String),
}

impl Default for RewriteConfig {
    fn default() -> Self {
        RewriteConfig::StripPrefix("/".into())
    }
}

/// `redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    pub status: u16,
    pub to: String,
    pub keep_query: bool,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        RedirectConfig {
            status: 302,
            to: "/".into(),
            keep_query: true,
        }
    }
}

/// `direct-response`: answer with a fixed status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponseConfig {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

impl Default for DirectResponseConfig {
    fn default() -> Self {
        DirectResponseConfig {
            status: 200,
            body: String::new(),
            content_type: "text/plain; charset=utf-8".into(),
        }
    }
}

/// `ip-filter`: allow/deny by CIDR (deny wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpFilterConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// `body-limit`: 413 over `max` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLimitConfig {
    pub max: u64,
}

impl Default for BodyLimitConfig {
    fn default() -> Self {
        BodyLimitConfig { max: 1 << 20 }
    }
}

/// `request-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIdConfig {
    pub header: String,
    /// Return the id to the client in the response too.
    pub in_response: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        RequestIdConfig {
            header: crate::request_id::HEADER.into(),
            in_response: true,
        }
    }
}

/// `trace-context`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContextConfig {
    /// Flags of traces started here: sampled or not.
    pub sample_new: bool,
}

/// One configured filter.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterSpec {
    ApiKey(ApiKeyConfig),
    Jwt(JwtConfig),
    RateLimit(RateLimitConfig),
    Headers(HeadersConfig),
    Rewrite(RewriteConfig),
    Redirect(RedirectConfig),
    DirectResponse(DirectResponseConfig),
    Cors(CorsConfig),
    IpFilter(IpFilterConfig),
    BodyLimit(BodyLimitConfig),
    RequestId(RequestIdConfig),
    TraceContext(TraceContextConfig),
}

/// A registered built-in: its config name, one line of doc, and its default spec.
pub type Registered = (&'static str, &'static str, fn() -> FilterSpec);

/// Every built-in filter, by config name.
pub const REGISTRY: &[Registered] = &[
    (
        "api-key",
        "API key from a header or query parameter -> consumer",
        || FilterSpec::ApiKey(Default::default()),
    ),
    (
        "jwt",
        "bearer JWT: signature, exp/nbf, iss, aud, claims as headers",
        || FilterSpec::Jwt(Default::default()),
    ),
    (
        "rate-limit",
        "gateway-wide token bucket per key; 429 with RateLimit-*",
        || FilterSpec::RateLimit(Default::default()),
    ),
    (
        "headers",
        "add/set/remove request and response headers",
        || FilterSpec::Headers(Default::default()),
    ),
    (
        "rewrite",
        "strip/replace a path prefix or fill a path template",
        || FilterSpec::Rewrite(Default::default()),
    ),
    (
        "redirect",
        "answer 301/302/307/308 with a Location template",
        || FilterSpec::Redirect(Default::default()),
    ),
    (
        "direct-response",
        "answer with a fixed status and body",
        || FilterSpec::DirectResponse(Default::default()),
    ),
    (
        "cors",
        "answer preflights, add Access-Control-* to responses",
        || FilterSpec::Cors(Default::default()),
    ),
    (
        "ip-filter",
        "allow/deny client addresses by CIDR, deny wins",
        || FilterSpec::IpFilter(Default::default()),
    ),
    (
        "body-limit",
        "413 for request bodies over a size, chunked too",
        || FilterSpec::BodyLimit(Default::default()),
    ),
    (
        "request-id",
        "keep or generate X-Request-Id, forward and return it",
        || FilterSpec::RequestId(Default::default()),
    ),
    (
        "trace-context",
        "W3C traceparent: continue with a new span or start",
        || FilterSpec::TraceContext(Default::default()),
    ),
];

/// The default spec for a config name, or `None` for an unknown filter.
pub fn lookup(name: &str) -> Option<FilterSpec> {
    REGISTRY
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, make)| make())
}

/// Which phases a filter takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub request: bool,
    pub response: bool,
}

/// What the proxy knows when it builds a route's filters.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// Shards sharing global limits.
    pub shards: usize,
    /// Parameter names the route captures (for templates).
    pub route_params: &'a [&'a str],
}

/// A compiled filter: immutable, cloned into each shard.
#[derive(Debug, Clone)]
pub enum Filter {
    ApiKey(ApiKeyAuth),
    Jwt(Box<JwtVerifier>),
    RateLimit(RateLimit),
    Headers(HeaderRules),
    Rewrite(PathRewrite),
    Redirect(Redirect),
    DirectResponse(DirectResponseConfig),
    Cors(Cors),
    IpFilter(IpRules),
    BodyLimit(BodyLimit),
    RequestId(RequestIdConfig),
    TraceContext(TraceContextConfig),
}

impl FilterSpec {
    /// The registry name.
    pub fn name(&self) -> &'static str {
        match self {
            FilterSpec::ApiKey(_) => "api-key",
            FilterSpec::Jwt(_) => "jwt",
            FilterSpec::RateLimit(_) => "rate-limit",
            FilterSpec::Headers(_) => "headers",
            FilterSpec::Rewrite(_) => "rewrite",
            FilterSpec::Redirect(_) => "redirect",
            FilterSpec::DirectResponse(_) => "direct-response",
            FilterSpec::Cors(_) => "cors",
            FilterSpec::IpFilter(_) => "ip-filter",
            FilterSpec::BodyLimit(_) => "body-limit",
            FilterSpec::RequestId(_) => "request-id",
            FilterSpec::TraceContext(_) => "trace-context",
        }
    }

    /// Which phases the compiled filter acts in.
    pub fn phases(&self) -> Phases {
        let (request, response) = match self {
            FilterSpec::Headers(_) | FilterSpec::Cors(_) | FilterSpec::RequestId(_) => (true, true),
            FilterSpec::RateLimit(_) => (true, true), // RateLimit-* on admitted responses
            _ => (true, false),
        };
        Phases { request, response }
    }

    /// Every problem in the config (route-independent checks).
    pub fn validate(&self) -> Result<(), Errors> {
        self.build(&BuildContext {
            shards: 1,
            route_params: &[],
        })
        .map(|_| ())
        .or_else(|e| {
            // Template parameters are checked against the route in `build`; without a route
            // they are not an error here.
            let rest: Errors = e
                .into_iter()
                .filter(|e| !e.message.contains("which the route does not capture"))
                .collect();
            if rest.is_empty() { Ok(()) } else { Err(rest) }
        })
    }

    /// Compile for a route.
    pub fn build(&self, ctx: &BuildContext) -> Result<Filter, Errors> {
        let name = self.name();
        match self {
            FilterSpec::ApiKey(c) => {
                let store = KeyStore::new(c.keys.iter().map(|(h, n)| (h.as_str(), n.as_str())))
                    .map_err(|e| errs(name, e))?;
                let mut problems = Errors::new();
                if c.keys.is_empty() {
                    problems.extend(one(name, "keys: at least one key is required".into()));
                }
                if c.header.is_none() && c.query_param.is_none() {
                    problems.extend(one(name, "header, query_param: set at least one".into()));
                }
                for (field, v) in [
                    ("header", c.header.as_deref()),
                    ("consumer_header", Some(&c.consumer_header)),
                ] {
                    if let Some(v) = v.filter(|v| !is_token(v.as_bytes())) {
                        problems.extend(one(name, format!("{field}: {v:?} is not a header name")));
                    } else if let Some(v) = v.filter(|v| is_managed(v)) {
                        problems.extend(one(
                            name,
                            format!("{field}: {v:?} is managed by the proxy and cannot be used"),
                        ));
                    }
                }
                if !problems.is_empty() {
                    return Err(problems);
                }
                Ok(Filter::ApiKey(ApiKeyAuth::new(
                    store,
                    c.header.as_deref(),
                    c.query_param.as_deref(),
                    &c.consumer_header,
                    &c.realm,
                )))
            }
            FilterSpec::Jwt(c) => JwtVerifier::new(c)
                .map(|v| Filter::Jwt(Box::new(v)))
                .map_err(|e| errs(name, e)),
            FilterSpec::RateLimit(c) => {
                let limit = Limit::new(c.rate, c.burst).map_err(|e| {
                    let field = match e {
                        crate::token_bucket::LimitError::Rate(_) => "rate",
                        crate::token_bucket::LimitError::Burst(_) => "burst",
                    };
                    one(name, format!("{field}: {e}"))
                })?;
                if let RateKeySource::Header(h) = &c.key
                    && !is_token(h.as_bytes())
                {
                    return Err(one(name, format!("key.header: {h:?} is not a header name")));
                }
                if c.max_keys == 0 {
                    return Err(one(name, "max_keys: must be at least 1".into()));
                }
                let mut limit = GlobalLimitConfig::new(limit, ctx.shards);
                limit.max_keys = c.max_keys;
                Ok(Filter::RateLimit(RateLimit::new(limit, c.key.clone())))
            }
            FilterSpec::Headers(c) => HeaderRules::new(&c.request, &c.response)
                .map(Filter::Headers)
                .map_err(|e| errs(name, e)),
            FilterSpec::Rewrite(c) => {
                let rw = match c {
                    RewriteConfig::StripPrefix(p) => PathRewrite::strip_prefix(p),
                    RewriteConfig::ReplacePrefix { from, to } => {
                        PathRewrite::replace_prefix(from, to)
                    }
                    RewriteConfig::Template(t) => PathRewrite::template(t),
                }
                .map_err(|e| one(name, e.to_string()))?;
                if let PathRewrite::Template(t) = &rw {
                    t.check_params(ctx.route_params)
                        .map_err(|e| one(name, format!("template: {e}")))?;
                }
                Ok(Filter::Rewrite(rw))
            }
            FilterSpec::Redirect(c) => {
                let r = Redirect::new(c.status, &c.to, c.keep_query)
                    .map_err(|e| one(name, e.to_string()))?;
                r.to.check_params(ctx.route_params)
                    .map_err(|e| one(name, format!("to: {e}")))?;
                Ok(Filter::Redirect(r))
            }
            FilterSpec::DirectResponse(c) => {
                let mut problems = Errors::new();
                if !(200..=599).contains(&c.status) {
                    problems.extend(one(name, format!("status: {} is not 200..=599", c.status)));
                }
                if c.content_type.is_empty() || !is_value(c.content_type.as_bytes()) {
                    problems.extend(one(
                        name,
                        format!("content_type: {:?} is not a header value", c.content_type),
                    ));
                }
                if problems.is_empty() {
                    Ok(Filter::DirectResponse(c.clone()))
                } else {
                    Err(problems)
                }
            }
            FilterSpec::Cors(c) => Cors::new(c).map(Filter::Cors).map_err(|e| errs(name, e)),
            FilterSpec::IpFilter(c) => IpRules::parse(
                c.allow.iter().map(String::as_str),
                c.deny.iter().map(String::as_str),
            )
            .map(Filter::IpFilter)
            .map_err(|e| errs(name, e)),
            FilterSpec::BodyLimit(c) => Ok(Filter::BodyLimit(BodyLimit { max: c.max })),
            FilterSpec::RequestId(c) => {
                if !is_token(c.header.as_bytes()) {
                    return Err(one(
                        name,
                        format!("header: {:?} is not a header name", c.header),
                    ));
                }
                if is_managed(&c.header) {
                    return Err(one(
                        name,
                        format!(
                            "header: {:?} is managed by the proxy and cannot be used",
                            c.header
                        ),
                    ));
                }
                Ok(Filter::RequestId(c.clone()))
            }
            FilterSpec::TraceContext(c) => Ok(Filter::TraceContext(c.clone())),
        }
    }
}

impl DirectResponseConfig {
    /// Answers with the configured status and body.
    pub fn on_request(&self, _: &mut Cx<'_, '_>) -> Flow<'_> {
        Flow::Answer {
            status: self.status,
            body: Some((self.content_type.as_bytes(), self.body.as_bytes())),
            rate_limited: false,
        }
    }
}

impl Filter {
    /// What the filter owns in the heads, its body limit and rate limits
    /// (when its chain is built).
    pub fn declare(&mut self, d: &mut Declare<'_>) {
        match self {
            Filter::ApiKey(f) => f.declare(d),
            Filter::Jwt(f) => f.declare(d),
            Filter::RateLimit(f) => f.declare(d),
            Filter::Headers(f) => f.declare(d),
            Filter::Cors(f) => f.declare(d),
            Filter::BodyLimit(f) => f.declare(d),
            Filter::RequestId(f) => f.declare(d),
            Filter::TraceContext(f) => f.declare(d),
            Filter::Rewrite(_) | Filter::Redirect(_) | Filter::DirectResponse(_) => {}
            Filter::IpFilter(_) => {}
        }
    }

    /// The request phase: go on, or answer.
    pub fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        match self {
            Filter::ApiKey(f) => f.on_request(cx),
            Filter::Jwt(f) => f.on_request(cx),
            Filter::RateLimit(f) => f.on_request(cx),
            Filter::Headers(_) => Flow::Continue,
            Filter::Rewrite(f) => f.on_request(cx),
            Filter::Redirect(f) => f.on_request(cx),
            Filter::DirectResponse(f) => f.on_request(cx),
            Filter::Cors(f) => f.on_request(cx),
            Filter::IpFilter(f) => f.on_request(cx),
            Filter::BodyLimit(f) => f.on_request(cx),
            Filter::RequestId(f) => f.on_request(cx),
            Filter::TraceContext(f) => f.on_request(cx),
        }
    }
}

/// Validate a whole chain, prefixing each message with its position (`filters[2]`).
pub fn validate_chain(chain: &[FilterSpec]) -> Result<(), Errors> {
    let mut all = Errors::new();
    for (i, f) in chain.iter().enumerate() {
        if let Err(e) = f.validate() {
            all.extend(e.into_iter().map(|mut e| {
                e.message = format!("filters[{i}].{}", e.message);
                e
            }));
        }
    }
    if all.is_empty() { Ok(()) } else { Err(all) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|(n, _, _)| *n).collect();
        for n in &names {
            assert_eq!(lookup(n).unwrap().name(), *n);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        assert!(lookup("no-such-filter").is_none());
    }

    #[test]
    fn defaults_that_need_no_input_are_valid() {
        // Filters whose defaults are complete on their own; the rest need keys or origins.
        for name in [
            "rate-limit",
            "headers",
            "redirect",
            "direct-response",
            "ip-filter",
            "body-limit",
            "request-id",
            "trace-context",
        ] {
            let spec = lookup(name).unwrap();
            assert!(spec.validate().is_ok(), "{name}: {:?}", spec.validate());
        }
        for name in ["api-key", "jwt", "cors"] {
            assert!(lookup(name).unwrap().validate().is_err(), "{name}");
        }
    }

    #[test]
    fn errors_name_the_filter_and_field() {
        let cases: Vec<(FilterSpec, &str)> = vec![
            (
                FilterSpec::RateLimit(RateLimitConfig {
                    rate: 0.0,
                    ..Default::default()
                }),
                "filter \"rate-limit\": rate: rate must be a positive number, got 0",
            ),
            (
                FilterSpec::RateLimit(RateLimitConfig {
                    key: RateKeySource::Header("x y".into()),
                    ..Default::default()
                }),
                "filter \"rate-limit\": key.header: \"x y\" is not a header name",
            ),
            (
                FilterSpec::ApiKey(ApiKeyConfig {
                    keys: vec![("zz".into(), "c".into())],
                    ..Default::default()
                }),
                "filter \"api-key\": keys[0].sha256: expected 64 hex digits",
            ),
            (
                FilterSpec::DirectResponse(DirectResponseConfig {
                    status: 99,
                    ..Default::default()
                }),
                "filter \"direct-response\": status: 99 is not 200..=599",
            ),
            (
                FilterSpec::Redirect(RedirectConfig {
                    status: 303,
                    ..Default::default()
                }),
                "filter \"redirect\": redirect status 303",
            ),
            (
                FilterSpec::IpFilter(IpFilterConfig {
                    allow: vec!["10.0.0.1/8".into()],
                    ..Default::default()
                }),
                "filter \"ip-filter\": allow[0]: \"10.0.0.1/8\" has host bits set",
            ),
            (
                FilterSpec::Headers(HeadersConfig {
                    response: HeaderOpsConfig {
                        remove: vec!["Connection".into()],
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                "filter \"headers\": response.remove[0]: \"Connection\" is managed",
            ),
            (
                FilterSpec::Jwt(JwtConfig::default()),
                "filter \"jwt\": keys: at least one key is required",
            ),
            (
                FilterSpec::ApiKey(ApiKeyConfig {
                    keys: vec![(crate::api_key::hash_key("k"), "c".into())],
                    consumer_header: "Transfer-Encoding".into(),
                    ..Default::default()
                }),
                "filter \"api-key\": consumer_header: \"Transfer-Encoding\" is managed",
            ),
            (
                FilterSpec::RequestId(RequestIdConfig {
                    header: "host".into(),
                    in_response: true,
                }),
                "filter \"request-id\": header: \"host\" is managed",
            ),
            (
                FilterSpec::Headers(HeadersConfig {
                    request: HeaderOpsConfig {
                        add: vec![("X-Forwarded-For".into(), "1.2.3.4".into())],
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                "filter \"headers\": request.add[0]: \"X-Forwarded-For\" is managed",
            ),
        ];
        for (spec, want) in cases {
            let e = spec.validate().unwrap_err();
            assert!(e[0].to_string().starts_with(want), "{e:?}");
        }
    }

    #[test]
    fn templates_are_checked_against_the_route_at_build() {
        let spec = FilterSpec::Rewrite(RewriteConfig::Template("/v2/users/{id}".into()));
        assert!(spec.validate().is_ok());
        let ok = BuildContext {
            shards: 2,
            route_params: &["id"],
        };
        assert!(matches!(spec.build(&ok), Ok(Filter::Rewrite(_))));
        let none = BuildContext {
            shards: 2,
            route_params: &[],
        };
        let e = spec.build(&none).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "filter \"rewrite\": template: template \"/v2/users/{id}\" uses {id}, which the route does not capture"
        );
    }

    #[test]
    fn chain_validation_prefixes_positions() {
        let chain = vec![
            FilterSpec::RequestId(Default::default()),
            FilterSpec::BodyLimit(Default::default()),
            FilterSpec::RequestId(RequestIdConfig {
                header: "bad header".into(),
                in_response: false,
            }),
        ];
        let e = validate_chain(&chain).unwrap_err();
        assert_eq!(
            e.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["filter \"request-id\": filters[2].header: \"bad header\" is not a header name"]
        );
        assert!(validate_chain(&chain[..2]).is_ok());
    }

    #[test]
    fn rate_limit_build_shares_over_the_shards() {
        let spec = FilterSpec::RateLimit(RateLimitConfig {
            rate: 1000.0,
            burst: 50.0,
            key: RateKeySource::Tenant,
            max_keys: 10,
        });
        let Ok(Filter::RateLimit(r)) = spec.build(&BuildContext {
            shards: 4,
            route_params: &[],
        }) else {
            panic!("build failed");
        };
        assert_eq!(
            (r.limit.shards, r.limit.max_keys, r.key),
            (4, 10, RateKeySource::Tenant)
        );
        assert_eq!(
            spec.phases(),
            Phases {
                request: true,
                response: true
            }
        );
        assert_eq!(
            FilterSpec::BodyLimit(Default::default()).phases(),
            Phases {
                request: true,
                response: false
            }
        );
    }
}
