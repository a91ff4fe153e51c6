//! A route's filter chain at run time: the contract between the chain and its
//! filters, with no I/O. The proxy parses a request, hands the chain a [`Cx`]
//! (the request, where to write, the shard's mutable state) and acts on the
//! [`Flow`] it gets back; each filter's part lives in that filter's own file
//! (`declare` when the chain is built, `on_request` for each request), so the
//! proxy knows no filter by name.
//!
//! - **Build** ([`Chain::build`]): each filter declares what it owns in the
//!   heads (fields a client must not set, lines it always adds), its body
//!   limit, and its rate limits ([`Declare`]).
//! - **Request phase** ([`Chain::on_request`]): filters run in order; each
//!   may add lines to the head sent upstream or to the response, rewrite the
//!   path, or answer ([`Flow::Answer`]).
//! - **Response phase**: the proxy re-encodes the response head without
//!   [`Chain::response_drop`] fields and with the lines gathered in
//!   [`Cx::response`].

use crate::filter::{BuildContext, Filter, FilterSpec};
use crate::global_rate::{GlobalLimitConfig, RateKey, ShardLimiter};
use crate::jwt::KeySlot;
use crate::request_id::RequestIdGen;
use crate::token_bucket::RateLimitHeaders;
use shardgate_http::Request;
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

/// What a chain owns in the heads, known when it is built.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    /// Request fields the chain owns (lower-case): removed or set by a
    /// headers filter, or written by a filter (consumer, claims, request id,
    /// traceparent), so a client cannot smuggle its own value through.
    pub request_drop: Vec<Box<[u8]>>,
    /// Response fields removed or set by the chain (and those it writes).
    pub response_drop: Vec<Box<[u8]>>,
    /// Lines added to each side on every request, in chain order.
    pub request_add: Vec<u8>,
    pub response_add: Vec<u8>,
    /// The smallest body limit of the chain.
    pub max_body: Option<u64>,
    /// A filter of the chain answers CORS preflights (the proxy routes a
    /// preflight by the method it asks about).
    pub answers_preflights: bool,
    /// A filter may claim requests as its alone ([`crate::filter::BuiltIn::claims`]).
    pub claims: bool,
    /// A filter runs before the others decide ([`crate::filter::BuiltIn::before`]).
    pub before: bool,
    /// A query parameter that carries a secret (an API key): kept out of
    /// the access log.
    pub secret_param: Option<Box<str>>,
}

/// The rate limits of one configuration on one shard, by index. Shared with
/// the next snapshot when a reload leaves a limit as it was.
pub type Limiters = Vec<Rc<RefCell<ShardLimiter>>>;

/// Collects a configuration's rate limits while its chains are built: this
/// shard's buckets and each limit's settings, in the same order on every
/// shard.
pub struct LimitSet {
    pub shard: usize,
    pub shards: usize,
    pub now: Instant,
    pub limiters: Limiters,
    pub configs: Vec<GlobalLimitConfig>,
    /// Whose each limit is (`tenant acme #0`, `route api #1`): a reload keeps
    /// a shard's buckets when owners and settings are all the same.
    pub owners: Vec<String>,
    /// This shard's remote JWKS sets, which the shard fills from what the
    /// control plane fetched.
    pub key_slots: Vec<Rc<KeySlot>>,
    /// This shard's counts of the configuration's quotas, in declaration order.
    pub quotas: Quotas,
}

/// The quotas of one configuration on one shard, by index.
pub type Quotas = Vec<Rc<RefCell<crate::quota::QuotaShard>>>;

/// What a filter declares when its chain is built.
pub struct Declare<'a> {
    pub edits: &'a mut Edits,
    limits: &'a mut LimitSet,
    owner: &'a str,
}

impl Declare<'_> {
    /// A new gateway-wide limit with buckets on this shard; returns its index
    /// in [`Cx::limiters`].
    pub fn limiter(&mut self, limit: &GlobalLimitConfig) -> usize {
        let l = &mut *self.limits;
        l.limiters.push(Rc::new(RefCell::new(ShardLimiter::new(
            limit.clone(),
            l.shard,
            l.now,
        ))));
        l.configs.push(limit.clone());
        l.owners.push(format!("{} #{}", self.owner, l.owners.len()));
        l.limiters.len() - 1
    }

    /// A new quota with counts on this shard; returns its index in [`Cx::quotas`].
    pub fn quota(&mut self, cfg: &crate::quota::QuotaConfig) -> usize {
        let l = &mut *self.limits;
        l.quotas
            .push(Rc::new(RefCell::new(crate::quota::QuotaShard::new(cfg))));
        l.quotas.len() - 1
    }

    /// A remote key set the chain reads (filled by the shard).
    pub fn key_slot(&mut self, slot: Rc<KeySlot>) {
        self.limits.key_slots.push(slot);
    }

    /// The chain owns request field `name`: a client's copies are dropped.
    pub fn own_request(&mut self, name: &str) {
        self.edits.request_drop.push(lower(name));
    }

    /// The chain owns response field `name`: an upstream's copies are dropped.
    pub fn own_response(&mut self, name: &str) {
        self.edits.response_drop.push(lower(name));
    }
}

/// One request as the chain sees it, where its filters write, and the
/// shard's mutable state.
pub struct Cx<'a, 'r> {
    pub req: &'a Request<'r, 'r>,
    /// The normalised request target (path and query) as routed.
    pub target: &'a [u8],
    /// The route's captured parameters.
    pub params: &'a [(&'a str, &'a [u8])],
    pub client: IpAddr,
    pub route: &'a str,
    /// The route's tenant (empty for none).
    pub tenant: &'a str,
    /// The shard's clock.
    pub now: Instant,
    /// This shard's buckets of the configuration's rate limits.
    pub limiters: &'a [Rc<RefCell<ShardLimiter>>],
    /// This shard's counts of the configuration's quotas.
    pub quotas: &'a [Rc<RefCell<crate::quota::QuotaShard>>],
    /// This shard's request and trace id generator.
    pub ids: &'a mut RequestIdGen,
    /// Lines for the head sent upstream.
    pub upstream: &'a mut Vec<u8>,
    /// Lines for the response (or for the gateway's own answer).
    pub response: &'a mut Vec<u8>,
    /// The rewritten target; meaningful when `rewritten`.
    pub path: &'a mut Vec<u8>,
    pub rewritten: bool,
    /// The request id the chain settled on, for the access log.
    pub request_id: ([u8; 128], u8),
    /// This hop's trace context, once a trace-context filter has run.
    pub trace: Option<crate::traceparent::Hop>,
    /// Decides whether traces started here are sampled, when spans are
    /// exported (the trace-context filter's `sample_new` otherwise).
    pub sampler: Option<crate::traceparent::Sampler>,
    /// Who is calling, once an api-key or jwt filter has said (the empty
    /// name before): the key of consumer rate limits.
    pub consumer: RateKey,
    /// The consumer's name as the filter said it (at most 64 bytes), for
    /// spans.
    pub consumer_name: ([u8; 64], u8),
    /// The filter that answered, when one did.
    pub answered_by: &'static str,
    /// The tightest rate limit the request has met so far: the chain writes
    /// its `RateLimit-*` fields to the response once, at the end.
    pub rate: Option<RateLimitHeaders>,
    /// Query parameters that carry secrets anywhere in the configuration
    /// (every api-key filter's, and `access_log.redact_query`): a redirect
    /// never copies them into its `Location`.
    pub secrets: &'a [Box<[u8]>],
    /// The verified TLS client certificate's subject (empty without one).
    pub client_cert: &'a [u8],
}

impl<'r> Cx<'_, 'r> {
    /// The filter found who is calling: the key of consumer limits, and
    /// the name spans show.
    pub fn set_consumer(&mut self, name: &[u8]) {
        self.consumer = RateKey::of(name);
        let n = name.len().min(self.consumer_name.0.len());
        self.consumer_name.0[..n].copy_from_slice(&name[..n]);
        self.consumer_name.1 = n as u8;
    }

    /// The first value of request field `name`.
    pub fn header(&self, name: &[u8]) -> Option<&'r [u8]> {
        header(self.req, name)
    }

    /// The value of a field that must not repeat (credentials): `Err` when
    /// it does, since the gateway and the upstream could each read another
    /// copy.
    pub fn single(&self, name: &[u8]) -> Result<Option<&'r [u8]>, Repeated> {
        let mut found = self
            .req
            .headers
            .iter()
            .filter(|h| h.name.as_bytes().eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (first, None) => Ok(first.map(|h| h.value)),
            _ => Err(Repeated),
        }
    }
}

/// A field that must appear at most once appeared more often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// What a filter (or the chain) decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow<'f> {
    Continue,
    /// Answer with `status` and the lines in [`Cx::response`]; `body` is
    /// `(content type, bytes)`, or `None` for the canned text.
    Answer {
        status: u16,
        body: Option<(&'f [u8], &'f [u8])>,
        rate_limited: bool,
    },
}

impl Flow<'_> {
    /// An answer with the canned body.
    pub fn answer(status: u16) -> Flow<'static> {
        Flow::Answer {
            status,
            body: None,
            rate_limited: false,
        }
    }
}

/// Appends the line `name: value`.
pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for part in [name, b": ", value, b"\r\n"] {
        out.extend_from_slice(part);
    }
}

fn header<'r>(req: &Request<'r, 'r>, name: &[u8]) -> Option<&'r [u8]> {
    req.headers
        .iter()
        .find(|h| h.name.as_bytes().eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn lower(name: &str) -> Box<[u8]> {
    name.to_ascii_lowercase().into_bytes().into()
}

/// A route's compiled chain (its tenant's filters, then its own).
#[derive(Debug, Default, Clone)]
pub struct Chain {
    steps: Vec<Filter>,
    edits: Edits,
}

impl Chain {
    /// Compiles `specs` after `base` (the tenant's chain, whose rate limits
    /// its routes share) for a route capturing `params`; new rate limits are
    /// added to `limits` as `owner`'s.
    pub fn build(
        base: &Chain,
        specs: &[FilterSpec],
        params: &[&str],
        limits: &mut LimitSet,
        owner: &str,
    ) -> Result<Chain, String> {
        let ctx = BuildContext {
            shards: limits.shards,
            route_params: params,
        };
        let mut chain = base.clone();
        for spec in specs {
            let mut filter = spec.build(&ctx).map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            filter.declare(&mut Declare {
                edits: &mut chain.edits,
                limits,
                owner,
            });
            chain.steps.push(filter);
        }
        let edits = &mut chain.edits;
        for list in [&mut edits.request_drop, &mut edits.response_drop] {
            list.sort();
            list.dedup();
        }
        Ok(chain)
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether a filter of the chain answers CORS preflights.
    pub fn answers_preflights(&self) -> bool {
        self.edits.answers_preflights
    }

    /// The query parameter the chain's api-key filter reads, if any: a
    /// secret, kept out of logs and redirects.
    pub fn secret_param(&self) -> Option<&str> {
        self.edits.secret_param.as_deref()
    }

    /// The smallest request body limit of the chain.
    pub fn max_body(&self) -> Option<u64> {
        self.edits.max_body
    }

    /// Response fields the chain replaces or removes.
    pub fn response_drop(&self) -> &[Box<[u8]>] {
        &self.edits.response_drop
    }

    /// Request fields the chain replaces or removes.
    pub fn request_drop(&self) -> &[Box<[u8]>] {
        &self.edits.request_drop
    }

    /// Runs the request phase. On [`Flow::Continue`], `cx.upstream` and
    /// `cx.response` hold the lines to add on each side; on an answer,
    /// `cx.response` holds the answer's lines.
    pub fn on_request<'s>(&'s self, cx: &mut Cx<'_, '_>) -> Flow<'s> {
        // A request some filter claims (a CORS preflight, which carries no
        // credentials) is judged by the claiming filters alone.
        let claimed = self.edits.claims && self.steps.iter().any(|f| f.claims(cx));
        if self.edits.before && !claimed {
            for step in &self.steps {
                step.before(cx);
            }
        }
        for step in &self.steps {
            if claimed && !step.claims(cx) {
                continue;
            }
            if let answer @ Flow::Answer { .. } = step.on_request(cx) {
                cx.answered_by = step.name();
                self.finish_response(cx);
                return answer;
            }
        }
        cx.upstream.extend_from_slice(&self.edits.request_add);
        self.finish_response(cx);
        Flow::Continue
    }

    /// The response lines every outcome carries: the rate limit advertised
    /// and the chain's fixed lines.
    fn finish_response(&self, cx: &mut Cx<'_, '_>) {
        if let Some(rate) = cx.rate.take() {
            rate.write_lines(cx.response);
        }
        cx.response.extend_from_slice(&self.edits.response_add);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::{ApiKeyConfig, hash_key};
    use crate::cors::CorsConfig;
    use crate::rate_limit::{RateKeySource, RateLimitConfig};
    use shardgate_http::{Limits, empty_headers, parse_request};
    use std::time::SystemTime;

    fn chain(specs: &[FilterSpec], limits: &mut LimitSet) -> Chain {
        Chain::build(&Chain::default(), specs, &[], limits, "route r").unwrap()
    }

    fn limit_set() -> LimitSet {
        LimitSet {
            shard: 0,
            shards: 1,
            now: Instant::now(),
            limiters: Limiters::new(),
            configs: Vec::new(),
            owners: Vec::new(),
            key_slots: Vec::new(),
            quotas: Quotas::new(),
        }
    }

    /// Runs `chain` over `raw`: the flow's status (0: continue), the upstream
    /// lines and the response lines.
    fn run(chain: &Chain, limits: &LimitSet, raw: &[u8]) -> (u16, String, String) {
        let mut headers = empty_headers();
        let req = parse_request(raw, &mut headers, &Limits::default())
            .unwrap()
            .unwrap();
        let (mut up, mut resp, mut path) = (Vec::new(), Vec::new(), Vec::new());
        let mut ids = RequestIdGen::new(0, SystemTime::now());
        let mut cx = Cx {
            req: &req,
            target: req.path,
            params: &[],
            client: "10.0.0.1".parse().unwrap(),
            route: "r",
            tenant: "",
            now: limits.now,
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
        let status = match chain.on_request(&mut cx) {
            Flow::Continue => 0,
            Flow::Answer { status, .. } => status,
        };
        let text = |v: Vec<u8>| String::from_utf8(v).unwrap();
        (status, text(up), text(resp))
    }

    #[test]
    fn claimed_requests_skip_other_filters_and_before_lines_reach_every_answer() {
        let specs = [
            FilterSpec::ApiKey(ApiKeyConfig {
                keys: vec![(hash_key("k"), "app".into())],
                ..Default::default()
            }),
            FilterSpec::Cors(CorsConfig {
                origins: vec!["https://app.example".into()],
                methods: vec!["PUT".into()],
                ..Default::default()
            }),
        ];
        let mut limits = limit_set();
        let chain = chain(&specs, &mut limits);
        assert!(chain.answers_preflights());

        // A preflight has no key, and the CORS filter alone judges it.
        let (status, up, resp) = run(
            &chain,
            &limits,
            b"OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\n\
              Access-Control-Request-Method: PUT\r\n\r\n",
        );
        assert_eq!((status, up.as_str()), (204, ""));
        assert!(resp.contains("Access-Control-Allow-Origin: https://app.example\r\n"));

        // An actual request without a key is refused by the API key filter,
        // and the refusal carries the CORS headers added before it.
        let (status, _, resp) = run(
            &chain,
            &limits,
            b"GET /x HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example\r\n\r\n",
        );
        assert_eq!(status, 401);
        assert!(resp.contains("Access-Control-Allow-Origin"), "{resp}");
        assert!(resp.contains("WWW-Authenticate: ApiKey"), "{resp}");

        let (status, up, _) = run(
            &chain,
            &limits,
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\r\n\r\n",
        );
        assert_eq!((status, up.as_str()), (0, "x-consumer: app\r\n"));
        assert_eq!(
            chain.request_drop(),
            [
                b"x-api-key".as_slice().into(),
                b"x-consumer".as_slice().into()
            ]
        );
    }

    #[test]
    fn rate_limits_get_one_limiter_each_in_chain_order_and_count_per_consumer() {
        let limit = |rate| {
            FilterSpec::RateLimit(RateLimitConfig {
                rate,
                burst: 1.0,
                key: RateKeySource::Consumer,
                max_keys: 10,
                fleet: None,
            })
        };
        let auth = FilterSpec::ApiKey(ApiKeyConfig {
            keys: vec![
                (hash_key("a"), "alice".into()),
                (hash_key("b"), "bob".into()),
            ],
            ..Default::default()
        });
        let mut limits = limit_set();
        // The tenant's limit, by client address, runs first and is roomy.
        let roomy = FilterSpec::RateLimit(RateLimitConfig {
            key: RateKeySource::ClientIp { ipv6_prefix: 64 },
            ..Default::default()
        });
        let tenant = chain(&[roomy], &mut limits);
        let route =
            Chain::build(&tenant, &[auth, limit(1.0)], &[], &mut limits, "route r").unwrap();
        assert_eq!(
            limits.owners,
            ["route r #0", "route r #1"],
            "one each, in order"
        );
        assert_eq!(limits.configs.len(), 2);
        let get = |key: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: {key}\r\n\r\n");
            let (status, _, resp) = run(&route, &limits, raw.as_bytes());
            // One set of fields, the tighter limit's (burst 1, not the
            // roomy default).
            assert_eq!(resp.matches("RateLimit-Limit").count(), 1, "{resp}");
            assert!(resp.contains("RateLimit-Limit: 1\r\n"), "{resp}");
            assert_eq!(resp.contains("Retry-After"), status == 429, "{resp}");
            status
        };
        // Burst 1 per consumer on the route's own limit: alice's second is
        // refused, bob still has his.
        assert_eq!((get("a"), get("a"), get("b")), (0, 429, 0));
    }
}
