//! A route's filter chain, wired into the request path. The decisions are
//! `shardgate_policy`'s (one file per filter there); this module runs them in
//! order over a parsed request and turns their answers into head edits:
//!
//! - **request phase** ([`Chain::on_request`]): each filter may let the
//!   request through, add lines to the head sent upstream, rewrite the path,
//!   add lines to the eventual response, or answer on the spot (the answer is
//!   written whole into the response buffer);
//! - **response phase**: the response head is re-encoded with the chain's
//!   dropped fields left out and the lines gathered in the request phase
//!   added ([`Chain::response_drop`]).
//!
//! Dispatch is a `match` over [`Filter`]; a chain with no filters costs one
//! length check. Per-shard mutable state lives outside the chain: rate-limit
//! buckets in the snapshot's limiters (one per rate-limit filter), the id and
//! trace generator in the shard.

use shardgate_http::{GatewayResponse, Request, gateway_response};
use shardgate_policy::api_key::{ApiKeyOutcome, strip_query_param};
use shardgate_policy::cidr::IpVerdict;
use shardgate_policy::filter::{BuildContext, Filter, FilterSpec, RateKeySource};
use shardgate_policy::global_rate::{GlobalLimitConfig, RateKey, ShardLimiter};
use shardgate_policy::headers::is_value;
use shardgate_policy::request_id::RequestIdGen;
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

/// One step of a chain.
#[derive(Clone)]
enum Step {
    Filter(Filter),
    /// A rate limit, with the index of its buckets in the snapshot.
    RateLimit {
        limiter: usize,
        key: RateKeySource,
    },
}

/// A route's compiled chain (its tenant's filters, then its own).
#[derive(Default, Clone)]
pub(crate) struct Chain {
    steps: Vec<Step>,
    /// Request fields the chain owns (lower-case): removed or set by a
    /// headers filter, or written by a filter (consumer, claims, request id,
    /// traceparent), so a client cannot smuggle its own value through.
    request_drop: Vec<Box<[u8]>>,
    /// Response fields removed or set by the chain (and those it writes).
    response_drop: Vec<Box<[u8]>>,
    /// Lines headers filters add to each side, in chain order.
    request_add: Vec<u8>,
    response_add: Vec<u8>,
    /// The smallest body limit of the chain's body-limit filters.
    pub max_body: Option<u64>,
    /// The chain answers CORS preflights.
    cors: bool,
    /// The query parameter an API key may come in (kept out of the
    /// forwarded target and the access log).
    key_param: Option<Box<str>>,
}

/// The rate limits of one configuration on one shard, by index.
/// Shared with the next snapshot when a reload leaves a limit as it was.
pub(crate) type Limiters = Vec<Rc<RefCell<ShardLimiter>>>;

/// Collects a configuration's rate limits while its chains are built: this
/// shard's buckets and each limit's settings, in the same order on every
/// shard.
pub(crate) struct LimitSet {
    pub shard: usize,
    pub shards: usize,
    pub now: Instant,
    pub limiters: Limiters,
    pub configs: Vec<GlobalLimitConfig>,
    /// Whose each limit is (`tenant acme #0`, `route api #1`): a reload keeps
    /// a shard's buckets when owners and settings are all the same.
    pub owners: Vec<String>,
}

/// What the request phase decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Continue,
    /// A complete response with this status is in the response buffer.
    Answered {
        status: u16,
        rate_limited: bool,
    },
}

/// What a filter sees of the request.
pub(crate) struct Input<'a, 'r> {
    pub req: &'a Request<'r, 'r>,
    /// The normalised request target (path and query) as routed.
    pub target: &'a [u8],
    pub params: &'a [(&'a str, &'a [u8])],
    pub client: IpAddr,
    pub route: &'a str,
    pub tenant: &'a str,
    /// Gateway answers close the connection / carry no body (HEAD).
    pub close: bool,
    pub head_only: bool,
}

/// Where the request phase writes.
pub(crate) struct Output<'a> {
    /// Lines for the head sent upstream.
    pub upstream: &'a mut Vec<u8>,
    /// Lines for the response (or for the gateway's own answer).
    pub response: &'a mut Vec<u8>,
    /// The rewritten target; meaningful when `rewritten`.
    pub path: &'a mut Vec<u8>,
    pub rewritten: bool,
    /// The request id the chain settled on, for the access log.
    pub request_id: ([u8; 128], u8),
    /// The trace id of this hop, for the access log (hex).
    pub trace_id: Option<[u8; 32]>,
    /// A gateway answer is written here.
    pub answer: &'a mut Vec<u8>,
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
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

/// The value of a field that must not repeat (credentials): `Err` when it
/// does, since the gateway and the upstream could each read another copy.
fn single<'r>(req: &Request<'r, 'r>, name: &[u8]) -> Result<Option<&'r [u8]>, ()> {
    let mut found = req
        .headers
        .iter()
        .filter(|h| h.name.as_bytes().eq_ignore_ascii_case(name));
    match (found.next(), found.next()) {
        (first, None) => Ok(first.map(|h| h.value)),
        _ => Err(()),
    }
}

fn lower(name: &str) -> Box<[u8]> {
    name.to_ascii_lowercase().into_bytes().into()
}

impl Chain {
    /// Compiles `specs` after `base` (the tenant's chain, whose rate limits
    /// its routes share) for a route capturing `params`; new rate limits are
    /// added to `limits` as `owner`'s.
    pub(crate) fn build(
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
            let filter = spec.build(&ctx).map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            match &filter {
                Filter::ApiKey(a) => {
                    // The consumer is the gateway's to say; the key itself
                    // stays at the gateway.
                    chain.request_drop.push(lower(&a.consumer_header));
                    if let Some(h) = &a.header {
                        chain.request_drop.push(lower(h));
                    }
                    if let Some(q) = &a.query_param {
                        chain.key_param = Some(q.clone());
                    }
                }
                Filter::Jwt(j) => chain.request_drop.extend(j.forwarded_headers().map(lower)),
                Filter::Headers(rules) => {
                    chain.request_drop.extend(rules.request.dropped().cloned());
                    chain
                        .response_drop
                        .extend(rules.response.dropped().cloned());
                    for (n, v) in rules.request.appends() {
                        line(&mut chain.request_add, n, v);
                    }
                    for (n, v) in rules.response.appends() {
                        line(&mut chain.response_add, n, v);
                    }
                }
                Filter::BodyLimit { max } => {
                    chain.max_body = Some(chain.max_body.map_or(*max, |m| m.min(*max)));
                }
                Filter::RequestId(c) => {
                    chain.request_drop.push(lower(&c.header));
                    if c.in_response {
                        chain.response_drop.push(lower(&c.header));
                    }
                }
                Filter::TraceContext(_) => {
                    // Re-added below only when an incoming trace continues.
                    chain.request_drop.push(lower("traceparent"));
                    chain.request_drop.push(lower("tracestate"));
                }
                Filter::Cors(_) => {
                    chain.cors = true;
                    // The gateway answers for the route's CORS policy; an
                    // upstream's own Access-Control-* would contradict it.
                    chain.response_drop.extend(
                        [
                            "access-control-allow-origin",
                            "access-control-allow-credentials",
                            "access-control-expose-headers",
                        ]
                        .map(lower),
                    );
                }
                Filter::RateLimit { .. } => {
                    chain.response_drop.extend(
                        ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"].map(lower),
                    );
                }
                _ => {}
            }
            let step = match filter {
                Filter::RateLimit { limit, key } => {
                    let limiter = ShardLimiter::new(limit.clone(), limits.shard, limits.now);
                    limits.limiters.push(Rc::new(RefCell::new(limiter)));
                    limits.configs.push(limit);
                    limits
                        .owners
                        .push(format!("{owner} #{}", limits.owners.len()));
                    Step::RateLimit {
                        limiter: limits.limiters.len() - 1,
                        key,
                    }
                }
                f => Step::Filter(f),
            };
            chain.steps.push(step);
        }
        for list in [&mut chain.request_drop, &mut chain.response_drop] {
            list.sort();
            list.dedup();
        }
        Ok(chain)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether the chain answers CORS preflights.
    pub(crate) fn has_cors(&self) -> bool {
        self.cors
    }

    /// The query parameter API keys may come in, if any.
    pub(crate) fn key_param(&self) -> Option<&str> {
        self.key_param.as_deref()
    }

    /// Response fields the chain replaces or removes.
    pub(crate) fn response_drop(&self) -> &[Box<[u8]>] {
        &self.response_drop
    }

    /// Request fields the chain replaces or removes.
    pub(crate) fn request_drop(&self) -> &[Box<[u8]>] {
        &self.request_drop
    }

    /// Runs the request phase. On [`Verdict::Continue`], `out.upstream` and
    /// `out.response` hold the lines to add on each side.
    pub(crate) fn on_request(
        &self,
        input: &Input<'_, '_>,
        out: &mut Output<'_>,
        limiters: &Limiters,
        ids: &mut RequestIdGen,
        now: Instant,
    ) -> Verdict {
        let req = input.req;
        // Who is calling, once an api-key or jwt step has said (the empty
        // name before).
        let mut consumer = RateKey::of(b"");
        let mut location = Vec::new();
        // A browser's preflight carries no credentials: when the chain
        // answers preflights, nothing but its CORS steps judges one.
        let preflight = self.cors
            && shardgate_policy::cors::is_preflight(
                req.method.as_bytes(),
                header(req, b"origin"),
                header(req, b"access-control-request-method"),
            );
        if self.cors && !preflight {
            // Up front, so a refusal by an earlier step is readable by the
            // page that made the request too.
            for step in &self.steps {
                if let Step::Filter(Filter::Cors(cors)) = step {
                    for (n, v) in cors.actual(header(req, b"origin")).iter() {
                        line(out.response, n.as_bytes(), v);
                    }
                }
            }
        }
        for step in &self.steps {
            if preflight && !matches!(step, Step::Filter(Filter::Cors(_))) {
                continue;
            }
            let filter = match step {
                Step::RateLimit { limiter, key } => {
                    let key = match key {
                        RateKeySource::Route => RateKey::of(input.route.as_bytes()),
                        RateKeySource::ClientIp => RateKey::of_ip(input.client),
                        RateKeySource::Consumer => consumer,
                        RateKeySource::Header(h) => {
                            RateKey::of(header(req, h.as_bytes()).unwrap_or_default())
                        }
                        RateKeySource::Tenant => RateKey::of(input.tenant.as_bytes()),
                    };
                    let mut limiter = limiters[*limiter].borrow_mut();
                    let d = limiter.check(key, 1, now);
                    let headers = limiter.headers(&d);
                    if d.allowed {
                        headers.write_lines(out.response);
                        continue;
                    }
                    headers.write_lines(out.response);
                    return self.answer(input, out, 429, None, true);
                }
                Step::Filter(f) => f,
            };
            match filter {
                Filter::ApiKey(auth) => {
                    let presented = match auth.header.as_deref() {
                        Some(h) => match single(req, h.as_bytes()) {
                            Ok(v) => v,
                            Err(()) => return self.answer(input, out, 400, None, false),
                        },
                        None => None,
                    };
                    let query = shardgate_router::split_query(input.target).1;
                    match auth.check(presented, query) {
                        ApiKeyOutcome::Valid(name) => {
                            line(
                                out.upstream,
                                auth.consumer_header.as_bytes(),
                                name.as_bytes(),
                            );
                            consumer = RateKey::of(name.as_bytes());
                        }
                        ApiKeyOutcome::Missing => {
                            line(
                                out.response,
                                b"WWW-Authenticate",
                                auth.challenge().as_bytes(),
                            );
                            return self.answer(input, out, 401, None, false);
                        }
                        ApiKeyOutcome::Invalid => return self.answer(input, out, 403, None, false),
                    }
                    if let Some(name) = auth.query_param.as_deref() {
                        let stripped = if out.rewritten {
                            let current = out.path.clone();
                            strip_query_param(&current, name.as_bytes(), out.path)
                        } else {
                            strip_query_param(input.target, name.as_bytes(), out.path)
                        };
                        out.rewritten |= stripped;
                    }
                }
                Filter::Jwt(verifier) => {
                    let Ok(auth) = single(req, b"authorization") else {
                        return self.answer(input, out, 400, None, false);
                    };
                    match verifier.verify_authorization(auth, SystemTime::now()) {
                        Ok(v) => {
                            for (name, value) in &v.forward {
                                if is_value(value.as_bytes()) {
                                    line(out.upstream, name.as_bytes(), value.as_bytes());
                                }
                            }
                            if let Some(sub) = v.claims.get("sub").and_then(|s| s.as_str()) {
                                consumer = RateKey::of(sub.as_bytes());
                            }
                        }
                        Err(e) => {
                            let challenge = verifier.challenge(&e);
                            line(out.response, b"WWW-Authenticate", challenge.as_bytes());
                            return self.answer(input, out, e.status(), None, false);
                        }
                    }
                }
                Filter::Headers(_) => {}
                Filter::Rewrite(rw) => {
                    if out.rewritten {
                        // A second rewrite works on the first one's result.
                        let current = out.path.clone();
                        rw.apply(&current, input.params, out.path);
                    } else {
                        rw.apply(input.target, input.params, out.path);
                    }
                    out.rewritten = true;
                }
                Filter::Redirect(r) => {
                    let status = r.location(input.target, input.params, &mut location);
                    line(out.response, b"Location", &location);
                    return self.answer(input, out, status, None, false);
                }
                Filter::DirectResponse(d) => {
                    let body = (d.content_type.as_bytes(), d.body.as_bytes());
                    return self.answer(input, out, d.status, Some(body), false);
                }
                Filter::Cors(cors) => {
                    let origin = header(req, b"origin");
                    let wanted = header(req, b"access-control-request-method");
                    if shardgate_policy::cors::is_preflight(req.method.as_bytes(), origin, wanted) {
                        let (Some(origin), Some(wanted)) = (origin, wanted) else {
                            return self.answer(input, out, 403, None, false);
                        };
                        let asked = header(req, b"access-control-request-headers");
                        return match cors.preflight(origin, wanted, asked) {
                            Ok(h) => {
                                for (n, v) in h.iter() {
                                    line(out.response, n.as_bytes(), v);
                                }
                                self.answer(input, out, 204, None, false)
                            }
                            Err(_) => self.answer(input, out, 403, None, false),
                        };
                    }
                    // Not a preflight: its headers were added up front.
                }
                Filter::IpFilter(rules) => {
                    if rules.check(input.client) == IpVerdict::Deny {
                        return self.answer(input, out, 403, None, false);
                    }
                }
                Filter::BodyLimit { max } => {
                    if let shardgate_http::BodyFraming::Length(n) = req.info.body
                        && n > *max
                    {
                        return self.answer(input, out, 413, None, false);
                    }
                }
                Filter::RequestId(c) => {
                    let id = ids.resolve(header(req, c.header.as_bytes()));
                    let value = id.as_bytes();
                    line(out.upstream, c.header.as_bytes(), value);
                    if c.in_response {
                        line(out.response, c.header.as_bytes(), value);
                    }
                    let n = value.len().min(out.request_id.0.len());
                    out.request_id.0[..n].copy_from_slice(&value[..n]);
                    out.request_id.1 = n as u8;
                }
                Filter::TraceContext(c) => {
                    let incoming = header(req, b"traceparent");
                    let hop =
                        shardgate_policy::traceparent::next_hop(incoming, ids.rng(), c.sample_new);
                    let value = hop.value();
                    line(out.upstream, b"traceparent", &value);
                    if hop.keep_tracestate {
                        for h in req.headers {
                            if h.name.eq_ignore_ascii_case("tracestate") {
                                line(out.upstream, b"tracestate", h.value);
                            }
                        }
                    }
                    let mut id = [0u8; 32];
                    id.copy_from_slice(&value[3..35]);
                    out.trace_id = Some(id);
                }
                Filter::RateLimit { .. } => {}
            }
        }
        out.upstream.extend_from_slice(&self.request_add);
        out.response.extend_from_slice(&self.response_add);
        Verdict::Continue
    }

    /// Writes the gateway's own answer (with the response lines gathered so
    /// far) into `out.answer`.
    fn answer(
        &self,
        input: &Input<'_, '_>,
        out: &mut Output<'_>,
        status: u16,
        body: Option<(&[u8], &[u8])>,
        rate_limited: bool,
    ) -> Verdict {
        out.answer.clear();
        out.response.extend_from_slice(&self.response_add);
        gateway_response(
            status,
            GatewayResponse {
                close: input.close,
                head: input.head_only,
                lines: out.response,
                body,
            },
            out.answer,
        );
        Verdict::Answered {
            status,
            rate_limited,
        }
    }
}
