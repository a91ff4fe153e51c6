//! The `rate-limit` filter: a gateway-wide token bucket per key (see
//! [`crate::global_rate`] for how shards share it), answering 429 with
//! `Retry-After` and advertising `RateLimit-*` on every response.

use crate::chain::{Cx, Declare, Flow};
use crate::filter::{BuildContext, BuiltIn};
use crate::global_rate::{DEFAULT_IPV6_PREFIX, DEFAULT_MAX_KEYS, GlobalLimitConfig, RateKey};
use crate::headers::is_token;
use crate::syntax::ParseCx;
use crate::token_bucket::{Limit, LimitError, RateLimitHeaders};
use serde::Deserialize;
use std::time::Duration;

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKeySource {
    /// One bucket for the route.
    Route,
    /// The client address; IPv6 addresses per `/ipv6_prefix` (64 unless set).
    ClientIp { ipv6_prefix: u8 },
    /// The API-key consumer (requests without one share the bucket of the empty name).
    Consumer,
    /// A request header's value (requests without it share one bucket).
    Header(String),
    /// The verified TLS client certificate's subject (requests without one
    /// share the bucket of the empty subject).
    ClientCert,
    /// One bucket for the tenant.
    Tenant,
}

/// `max_keys`: keys a shard keeps counts for.
pub(crate) fn max_keys(cx: &mut ParseCx<'_>, raw: Option<i64>, default: usize) -> usize {
    cx.int_in("max_keys", raw, default as u64, 1, u64::from(u32::MAX)) as usize
}

/// `name` of a limit the fleet shares in Redis: printable ASCII; by default the filter's place
/// in the configuration (`routes[2].filters[0]`).
pub(crate) fn fleet_name(cx: &mut ParseCx<'_>, name: Option<String>) -> String {
    match name {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()) => n,
        Some(n) => {
            cx.push("name", format!("{n:?}: printable ASCII without spaces"));
            n
        }
        None => cx.path.to_string(),
    }
}

/// A limit's verdict: its `RateLimit-*` fields kept for the response (the tighter of the
/// request's limits), and a 429 when it refused.
pub(crate) fn decide<'f>(cx: &mut Cx<'_, '_>, allowed: bool, met: RateLimitHeaders) -> Flow<'f> {
    cx.rate = Some(cx.rate.map_or(met, |before| before.tighter(met)));
    if allowed {
        Flow::Continue
    } else {
        Flow::Answer {
            status: 429,
            body: None,
            rate_limited: true,
        }
    }
}

impl RateKeySource {
    /// The request's key.
    pub(crate) fn key(&self, cx: &Cx<'_, '_>) -> RateKey {
        match self {
            RateKeySource::Route => RateKey::of(cx.route.as_bytes()),
            RateKeySource::ClientIp { ipv6_prefix } => {
                RateKey::of_ip_within(cx.client, *ipv6_prefix)
            }
            RateKeySource::Consumer => cx.consumer,
            RateKeySource::Header(h) => RateKey::of(cx.header(h.as_bytes()).unwrap_or_default()),
            RateKeySource::Tenant => RateKey::of(cx.tenant.as_bytes()),
            RateKeySource::ClientCert => RateKey::of(cx.client_cert),
        }
    }
}

/// `rate-limit`: a gateway-wide token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Tokens per second, for the whole gateway.
    pub rate: f64,
    pub burst: f64,
    pub key: RateKeySource,
    pub max_keys: usize,
    /// `scope = "fleet"`: one limit across every gateway sharing `[fleet]`'s Redis, under this
    /// name (`name`, else the filter's place: `routes[2].filters[0]`).
    pub fleet: Option<String>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rate: 100.0,
            burst: 100.0,
            key: RateKeySource::ClientIp {
                ipv6_prefix: DEFAULT_IPV6_PREFIX,
            },
            max_keys: DEFAULT_MAX_KEYS,
            fleet: None,
        }
    }
}

/// `rate` requests per `per` (one second when absent).
const DEFAULT_PER: Duration = Duration::from_secs(1);

/// The TOML table: every field optional (defaults from [`RateLimitConfig`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    /// Requests per `per`.
    rate: Option<f64>,
    per: Option<String>,
    /// Defaults to the per-second rate, rounded up (at least 1).
    burst: Option<f64>,
    /// `route`, `client-ip`, `consumer`, `tenant`, `client-cert` or `header:NAME`.
    key: Option<String>,
    /// With `client-ip`: the IPv6 prefix length clients are counted by.
    ipv6_prefix: Option<i64>,
    max_keys: Option<i64>,
    /// `"gateway"` (default) or `"fleet"`.
    scope: Option<String>,
    /// The fleet limit's name (default: the filter's place in the configuration).
    name: Option<String>,
}

pub(crate) fn rate_key(
    cx: &mut ParseCx<'_>,
    key: Option<&str>,
    default: RateKeySource,
) -> RateKeySource {
    let Some(key) = key else { return default };
    match key {
        "route" => RateKeySource::Route,
        "client-ip" => RateKeySource::ClientIp {
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        },
        "consumer" => RateKeySource::Consumer,
        "client-cert" => RateKeySource::ClientCert,
        "tenant" if cx.tenant => RateKeySource::Tenant,
        "tenant" => {
            let owner = cx.owner.to_string();
            cx.push(
                "key",
                format!("\"tenant\" needs the route to belong to a tenant ({owner}.tenant)"),
            );
            default
        }
        _ => match key.strip_prefix("header:") {
            Some(name) if !name.is_empty() => RateKeySource::Header(name.to_ascii_lowercase()),
            _ => {
                cx.push(
                    "key",
                    format!(
                        "expected route, client-ip, consumer, tenant, client-cert or header:NAME, got {key:?}"
                    ),
                );
                default
            }
        },
    }
}

/// A compiled rate limit: its settings, what it counts by, and (once its
/// chain is built) which of the shard's limiters holds its buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub limit: GlobalLimitConfig,
    pub key: RateKeySource,
    slot: usize,
}

impl RateLimit {
    pub fn new(limit: GlobalLimitConfig, key: RateKeySource) -> RateLimit {
        RateLimit {
            limit,
            key,
            slot: usize::MAX,
        }
    }
}

impl BuiltIn for RateLimit {
    type Spec = RateLimitConfig;
    const NAME: &'static str = "rate-limit";
    const ABOUT: &'static str = "gateway-wide token bucket per key; 429 with RateLimit-*";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<RateLimitConfig> {
        let r: RawRateLimit = cx.read(body)?;
        let d = RateLimitConfig::default();
        let per = cx.duration("per", r.per.as_ref(), DEFAULT_PER);
        let rate = match r.rate {
            None => d.rate,
            Some(n) if n.is_finite() && n > 0.0 => n,
            Some(n) => {
                cx.push(
                    "rate",
                    format!("must be a positive number of requests per `per`, got {n}"),
                );
                d.rate
            }
        } / per.as_secs_f64();
        let mut key = rate_key(cx, r.key.as_deref(), d.key);
        if let Some(bits) = r.ipv6_prefix {
            match &mut key {
                RateKeySource::ClientIp { ipv6_prefix } => {
                    *ipv6_prefix = cx.int_in("ipv6_prefix", Some(bits), 64, 1, 128) as u8;
                }
                _ => cx.push("ipv6_prefix", "applies only to key = \"client-ip\""),
            }
        }
        let fleet = match r.scope.as_deref() {
            None | Some("gateway") => {
                if r.name.is_some() {
                    cx.push("name", "names a fleet limit: only with scope = \"fleet\"");
                }
                None
            }
            Some("fleet") => Some(fleet_name(cx, r.name)),
            Some(other) => {
                cx.push(
                    "scope",
                    format!("expected \"gateway\" or \"fleet\", got {other:?}"),
                );
                None
            }
        };
        Some(RateLimitConfig {
            fleet,
            rate,
            burst: r.burst.unwrap_or_else(|| rate.ceil().max(1.0)),
            key,
            max_keys: max_keys(cx, r.max_keys, d.max_keys),
        })
    }

    fn build(c: &RateLimitConfig, cx: &BuildContext<'_>) -> Result<RateLimit, Vec<String>> {
        let limit = Limit::new(c.rate, c.burst).map_err(|e| {
            let field = match e {
                LimitError::Rate(_) => "rate",
                LimitError::Burst(_) => "burst",
            };
            vec![format!("{field}: {e}")]
        })?;
        if let RateKeySource::Header(h) = &c.key
            && !is_token(h.as_bytes())
        {
            return Err(vec![format!("key.header: {h:?} is not a header name")]);
        }
        if c.max_keys == 0 {
            return Err(vec!["max_keys: must be at least 1".into()]);
        }
        let mut limit = GlobalLimitConfig::new(limit, cx.shards);
        limit.max_keys = c.max_keys;
        limit.fleet = c.fleet.clone();
        Ok(RateLimit::new(limit, c.key.clone()))
    }

    /// Takes buckets on the shard; its `RateLimit-*` replace an upstream's.
    fn declare(&mut self, d: &mut Declare<'_>) {
        for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            d.own_response(name);
        }
        self.slot = d.limiter(&self.limit);
    }

    /// One token for the request's key: `RateLimit-*` on the response, or
    /// 429 with `Retry-After`.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        let key = self.key.key(cx);
        debug_assert!(
            self.slot != usize::MAX,
            "a rate limit runs in the chain that declared it"
        );
        let Some(limiter) = cx.limiters.get(self.slot) else {
            return Flow::Continue;
        };
        let mut limiter = limiter.borrow_mut();
        let d = limiter.check(key, 1, cx.now);
        let met = limiter.headers(&d);
        decide(cx, d.allowed, met)
    }

    fn needs_consumer(c: &RateLimitConfig) -> Option<&'static str> {
        (c.key == RateKeySource::Consumer).then_some("key")
    }
}
