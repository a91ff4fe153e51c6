//! The `rate-limit` filter: a gateway-wide token bucket per key (see
//! [`crate::global_rate`] for how shards share it), answering 429 with
//! `Retry-After` and advertising `RateLimit-*` on every response.

use crate::chain::{Cx, Declare, Flow};
use crate::filter::RateKeySource;
use crate::global_rate::{GlobalLimitConfig, RateKey};

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

    /// Takes buckets on the shard; its `RateLimit-*` replace an upstream's.
    pub fn declare(&mut self, d: &mut Declare<'_>) {
        for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            d.own_response(name);
        }
        self.slot = d.limiter(&self.limit);
    }

    /// One token for the request's key: `RateLimit-*` on the response, or
    /// 429 with `Retry-After`.
    pub fn on_request(&self, cx: &mut Cx<'_, '_>) -> Flow<'static> {
        let key = match &self.key {
            RateKeySource::Route => RateKey::of(cx.route.as_bytes()),
            RateKeySource::ClientIp => RateKey::of_ip(cx.client),
            RateKeySource::Consumer => cx.consumer,
            RateKeySource::Header(h) => RateKey::of(cx.header(h.as_bytes()).unwrap_or_default()),
            RateKeySource::Tenant => RateKey::of(cx.tenant.as_bytes()),
        };
        let Some(limiter) = cx.limiters.get(self.slot) else {
            // Not declared on this shard's chain: nothing to count against.
            return Flow::Continue;
        };
        let mut limiter = limiter.borrow_mut();
        let d = limiter.check(key, 1, cx.now);
        limiter.headers(&d).write_lines(cx.response);
        if d.allowed {
            Flow::Continue
        } else {
            Flow::Answer {
                status: 429,
                body: None,
                rate_limited: true,
            }
        }
    }
}
