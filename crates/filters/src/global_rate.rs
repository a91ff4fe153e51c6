//! A gateway-wide rate limit enforced by shard-local token buckets: each shard admits against its
//! **share** of the limit, and a coordinator off the request path moves the shares toward where
//! the demand is.
//!
//! # The protocol
//!
//! ```text
//!  request path (per shard, no locks)          every period P (100 ms by default), off path
//!  ---------------------------------           -------------------------------------------
//!  ShardLimiter::check(key, 1, now)   ──┐      shard i:  ShardLimiter::report(now) -> ShardReport
//!    LRU bucket for the key, whose      │                 ── ferried to the coordinator ──>
//!    rate/burst is this shard's share   │      coord:    Coordinator::rebalance(&reports, now)
//!    counts attempted / admitted        │                   -> Vec<ShareUpdate> (one per shard)
//!                                       └──    shard i:  <── ferried back ── ShardLimiter::apply(u)
//! ```
//!
//! - **Keys** are [`RateKey`]s: a stable 64-bit hash of the limited thing (route, client IP,
//!   consumer, header value, tenant), the same on every shard, so reports need no strings.
//! - **Shares.** Every key starts with the even split (`rate / N`, `burst / N`). A
//!   [`ShareUpdate`] lists the keys that are hot somewhere with this shard's share for each;
//!   keys it does not list go back to the even split. Buckets pick up a new share lazily, on
//!   their next check, keeping the tokens they had (clamped to the new burst).
//! - **Demand.** Each shard counts, per key and per period, the tokens *attempted* (admitted or
//!   not) and admitted. A report carries the `top_k` keys by attempts and one aggregate for the
//!   rest, so its size is bounded whatever the key cardinality.
//! - **Rebalance (max-min fair water-filling).** For each reported key, shard `i` *needs*
//!   `max(demand_i × (1 + headroom), floor × rate)` per second. Needs are served smallest first,
//!   each capped at an equal split of what is left; if every need is met, the rest is spread
//!   evenly. The shares always add up to the configured rate, so the gateway-wide admitted rate
//!   is the configured one whenever demand exceeds it. `floor` keeps a trickle on shards that
//!   saw none of a key's traffic (so a shifting client is not refused outright until the next
//!   period), at the cost of `floor × (N − 1)` of the rate while all traffic sits on one shard.
//!   A shard's burst share is proportional to its rate share (at least one token).
//! - **Unknowns.** A key missing from one shard's report is estimated at that shard's average
//!   demand of unreported keys (zero when it reported all it saw). A shard with no report newer
//!   than `stale_after` is assumed to need the even split.
//!
//! # Memory and cost
//!
//! Buckets live in a per-shard [`Lru`] of `max_keys` entries: a key evicted (or never seen)
//! starts again from a full bucket at its current share. Once warm, a check is one hash lookup,
//! a list splice and a few float operations, with no allocation: the list of keys touched in
//! the period is preallocated to `max_keys`. Reports, updates and the coordinator allocate, but
//! only off the request path.
//!
//! # Accuracy
//!
//! Measured by the deterministic simulation in `tests/global_rate_sim.rs` (2 shards, 1000/s,
//! burst 100, 3000/s offered): within a few percent of the configured rate with all traffic
//! on one shard, split evenly, and after the traffic moves between shards. The error comes from
//! the floor, from one period of lag after demand moves, and from bursts. The advertised
//! `RateLimit-Remaining` is the shard's local count, a lower bound of the global one.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::lru::{Lru, Prehashed, Slot};
use crate::token_bucket::{Decision, Limit, RateLimitHeaders, TokenBucket};

/// Default period between rebalances (the proxy's timer; documented here as the design point).
pub const DEFAULT_REBALANCE_PERIOD: Duration = Duration::from_millis(100);
/// Default bound on buckets per shard per limiter.
pub const DEFAULT_MAX_KEYS: usize = 10_000;
/// Default number of hottest keys in a shard's report.
pub const DEFAULT_TOP_K: usize = 64;
/// Default share of the rate every shard keeps for a key, whatever its demand.
pub const DEFAULT_FLOOR: f64 = 0.02;
/// Default margin over measured demand a shard is granted under contention, to absorb jitter
/// in its arrivals. Without contention the surplus is spread anyway; under contention every
/// bit of headroom a shard leaves unused is lost to the gateway (10% headroom on a shard with
/// 10% of the demand costs 1% of the rate), so it stays small.
pub const DEFAULT_HEADROOM: f64 = 0.05;
/// Default age after which a shard's last report no longer steers its shares.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(1);

/// The secret key of rate-limit key hashes: SipHash keyed at random once per process, the same
/// for every shard; or, in a fleet, keyed from the fleet's secret (see [`seed_keys`]) so that
/// every gateway hashes a key alike. With a fixed, public key a client could compute keys that
/// collide with a victim's and spend the victim's budget.
static RANDOM: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
static SEEDED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

fn keys() -> (u64, u64) {
    if let Some(k) = SEEDED.get() {
        return *k;
    }
    *RANDOM.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new();
        let mut a = random.build_hasher();
        a.write_u8(0);
        let mut b = random.build_hasher();
        b.write_u8(1);
        (a.finish(), b.finish())
    })
}

#[allow(deprecated)] // SipHasher is deprecated only in favour of RandomState, which takes no key
fn key_hasher() -> std::hash::SipHasher {
    let (k0, k1) = keys();
    std::hash::SipHasher::new_with_keys(k0, k1)
}

/// Keys rate-limit hashes from `secret` instead of at random, so that gateways sharing the
/// secret compute the same [`RateKey`] for the same client (fleet-wide limits, whose demand is
/// exchanged by key). Call it before the shards build their filters: keys computed earlier
/// (while validating a configuration) used the random key. `false` if another secret was set
/// first (a fleet's secret needs a restart to change).
pub fn seed_keys(secret: &[u8]) -> bool {
    #[allow(deprecated)]
    let derive = |k: u64| {
        use std::hash::Hasher;
        let mut h = std::hash::SipHasher::new_with_keys(k, !k);
        h.write(secret);
        h.finish()
    };
    let wanted = (derive(0x5348_4152_4447_4154), derive(0x4b45_5953_3031_3233));
    *SEEDED.get_or_init(|| wanted) == wanted
}

/// IPv6 client addresses count per /64 by default: one host usually holds a
/// whole /64, so a limit per address would be a limit per 2^64 addresses.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// A rate-limited key: a keyed hash of what is limited, equal on every shard
/// of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey(pub u64);

impl RateKey {
    /// The key for a byte string (consumer name, header value, route or tenant id).
    pub fn of(bytes: &[u8]) -> RateKey {
        use std::hash::{Hash, Hasher};
        let mut h = key_hasher();
        bytes.hash(&mut h);
        RateKey(h.finish())
    }

    /// The key for a client address: IPv4 by address, IPv6 by its /64
    /// (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn of_ip(ip: IpAddr) -> RateKey {
        RateKey::of_ip_within(ip, DEFAULT_IPV6_PREFIX)
    }

    /// [`RateKey::of_ip`] with IPv6 addresses counted per `/ipv6_prefix`
    /// (at most 128).
    pub fn of_ip_within(ip: IpAddr, ipv6_prefix: u8) -> RateKey {
        use std::hash::{Hash, Hasher};
        let mut h = key_hasher();
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                (6u8, bits, u128::from(v6) & mask).hash(&mut h);
            }
            IpAddr::V6(v6) => (4u8, v6.to_ipv4_mapped().map(|a| a.octets())).hash(&mut h),
            IpAddr::V4(v4) => (4u8, Some(v4.octets())).hash(&mut h),
        }
        RateKey(h.finish())
    }
}

/// One gateway-wide limit (per key) and how it is shared.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalLimitConfig {
    /// The limit for each key, for the whole gateway.
    pub limit: Limit,
    /// Number of shards sharing it (at least 1).
    pub shards: usize,
    pub max_keys: usize,
    pub top_k: usize,
    pub floor: f64,
    pub headroom: f64,
    pub stale_after: Duration,
    /// Shared by a fleet of gateways (`scope = "fleet"`), under this name: the gateway's part
    /// of the limit then comes from the fleet coordinator ([`Coordinator::set_totals`]).
    pub fleet: Option<String>,
}

impl GlobalLimitConfig {
    /// Defaults for everything but the limit and the shard count.
    pub fn new(limit: Limit, shards: usize) -> GlobalLimitConfig {
        GlobalLimitConfig {
            limit,
            shards: shards.max(1),
            max_keys: DEFAULT_MAX_KEYS,
            top_k: DEFAULT_TOP_K,
            floor: DEFAULT_FLOOR,
            headroom: DEFAULT_HEADROOM,
            stale_after: DEFAULT_STALE_AFTER,
            fleet: None,
        }
    }

    fn shards(&self) -> usize {
        self.shards.max(1)
    }

    /// The share for `rate` of the gateway-wide rate: burst in proportion, at least one token.
    fn share(&self, rate: f64) -> Limit {
        let l = self.limit;
        Limit::share(rate, (l.burst() * rate / l.rate()).max(1.0))
    }

    fn even(&self) -> Limit {
        self.share(self.limit.rate() / self.shards() as f64)
    }
}

/// Attempts and admissions for one key on one shard over one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDemand {
    pub key: RateKey,
    pub attempted: u32,
    pub admitted: u32,
}

/// Totals for the keys a report does not list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtherDemand {
    pub keys: u32,
    pub attempted: u64,
    pub admitted: u64,
}

/// What a shard saw in one period; sent to the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardReport {
    pub shard: usize,
    /// The period the counts cover.
    pub window: Duration,
    /// The hottest keys by attempts, hottest first, at most `top_k`.
    pub keys: Vec<KeyDemand>,
    pub other: OtherDemand,
    /// Keys evicted from the shard's LRU during the period (their counts are in `other`).
    pub evicted: u32,
}

/// New shares for one shard; keys not listed use the even split.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareUpdate {
    pub shard: usize,
    pub epoch: u64,
    pub keys: Vec<(RateKey, Limit)>,
    /// The share of keys not listed, when it is no longer the even split of the configured
    /// limit (a fleet limit: the even split of this gateway's part).
    pub even: Option<Limit>,
}

impl fmt::Display for ShareUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate shares epoch {} for shard {}: {} keys off the even split",
            self.epoch,
            self.shard,
            self.keys.len()
        )?;
        if let Some((key, limit)) = self.keys.first() {
            write!(
                f,
                " (e.g. {:016x}: {:.1}/s burst {:.1})",
                key.0,
                limit.rate(),
                limit.burst()
            )?;
        }
        Ok(())
    }
}

/// Recomputes shares from reports. Pure state; the proxy runs it on one shard (or the
/// supervisor) every period.
#[derive(Debug, Clone)]
pub struct Coordinator {
    cfg: GlobalLimitConfig,
    epoch: u64,
    latest: Vec<Option<(Instant, ShardReport)>>,
    /// This gateway's part of a fleet limit: per key, and for every other key.
    totals: Option<(f64, HashMap<RateKey, f64>)>,
}

impl Coordinator {
    pub fn new(cfg: GlobalLimitConfig) -> Coordinator {
        let n = cfg.shards();
        Coordinator {
            cfg,
            epoch: 0,
            latest: vec![None; n],
            totals: None,
        }
    }

    /// The part of the limit this gateway admits (a fleet limit): `per_key` rates for the keys
    /// listed, `other` for the rest. Shares follow from the next rebalance.
    pub fn set_totals(&mut self, other: f64, per_key: HashMap<RateKey, f64>) {
        self.totals = Some((other, per_key));
    }

    /// Take this period's reports (any subset of shards; reports for unknown shards are
    /// ignored) and return one update per shard.
    pub fn rebalance(&mut self, reports: &[ShardReport], now: Instant) -> Vec<ShareUpdate> {
        let n = self.cfg.shards();
        for r in reports {
            if r.shard < n {
                self.latest[r.shard] = Some((now, r.clone()));
            }
        }
        self.epoch += 1;
        let configured = self.cfg.limit.rate();
        let rate_of = |key: &RateKey| match &self.totals {
            None => configured,
            Some((other, per_key)) => per_key.get(key).copied().unwrap_or(*other),
        };
        let floor_share = self.cfg.floor.clamp(0.0, 1.0 / n as f64);
        let headroom = 1.0 + self.cfg.headroom.max(0.0);

        // Per shard: is its report fresh, its per-key demand (per second), and the estimate for
        // keys it did not list.
        let mut fresh = vec![false; n];
        let mut unlisted = vec![0.0f64; n];
        let mut demand: HashMap<RateKey, Vec<f64>> = HashMap::new();
        for (i, slot) in self.latest.iter().enumerate() {
            let Some((at, r)) = slot else { continue };
            if now.saturating_duration_since(*at) > self.cfg.stale_after {
                continue;
            }
            fresh[i] = true;
            let secs = r.window.as_secs_f64().max(1e-3);
            if r.other.keys > 0 {
                unlisted[i] = r.other.attempted as f64 / f64::from(r.other.keys) / secs;
            }
            for d in &r.keys {
                demand.entry(d.key).or_insert_with(|| vec![f64::NAN; n])[i] =
                    f64::from(d.attempted) / secs;
            }
        }

        let mut updates: Vec<ShareUpdate> = (0..n)
            .map(|shard| ShareUpdate {
                shard,
                epoch: self.epoch,
                keys: Vec::with_capacity(demand.len()),
                even: self
                    .totals
                    .as_ref()
                    .map(|(other, _)| self.cfg.share(*other / n as f64)),
            })
            .collect();
        let mut keys: Vec<_> = demand.into_iter().collect();
        keys.sort_unstable_by_key(|(k, _)| *k); // deterministic output order
        let mut needs = vec![0.0; n];
        let mut shares = vec![0.0; n];
        for (key, per_shard) in keys {
            let rate = rate_of(&key);
            let floor = floor_share * rate;
            for i in 0..n {
                needs[i] = if !fresh[i] {
                    rate / n as f64
                } else {
                    let d = per_shard[i];
                    let d = if d.is_nan() { unlisted[i] } else { d };
                    (d * headroom).max(floor)
                };
            }
            water_fill(rate, &needs, &mut shares);
            for (u, &r) in updates.iter_mut().zip(&shares) {
                u.keys.push((key, self.cfg.share(r)));
            }
        }
        updates
    }
}

/// Split `total` over `needs` max-min fairly into `out`: smallest needs first, each capped at
/// an equal split of what is left; any surplus is spread evenly.
pub fn water_fill(total: f64, needs: &[f64], out: &mut [f64]) {
    let n = needs.len();
    if n == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| needs[a].total_cmp(&needs[b]));
    let mut left = total;
    for (k, &i) in order.iter().enumerate() {
        let give = needs[i].max(0.0).min(left / (n - k) as f64);
        out[i] = give;
        left -= give;
    }
    if left > 0.0 {
        for o in out.iter_mut() {
            *o += left / n as f64;
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    bucket: TokenBucket,
    /// Share epoch the bucket's limit comes from.
    epoch: u64,
    /// Period the counts belong to.
    period: u64,
    attempted: u32,
    admitted: u32,
}

/// One shard's buckets for one gateway-wide limit.
#[derive(Debug, Clone)]
pub struct ShardLimiter {
    cfg: GlobalLimitConfig,
    shard: usize,
    even: Limit,
    shares: HashMap<u64, Limit, Prehashed>,
    epoch: u64,
    buckets: Lru<Entry>,
    /// Slots touched in the current period (each once).
    touched: Vec<u32>,
    period: u64,
    period_start: Instant,
    evicted_other: OtherDemand,
    evicted: u32,
}

impl ShardLimiter {
    pub fn new(cfg: GlobalLimitConfig, shard: usize, now: Instant) -> ShardLimiter {
        let max_keys = cfg.max_keys.max(1);
        let hot = cfg.top_k.saturating_mul(cfg.shards()).min(max_keys);
        ShardLimiter {
            even: cfg.even(),
            shard,
            shares: HashMap::with_capacity_and_hasher(hot, Prehashed::default()),
            epoch: 0,
            buckets: Lru::new(max_keys),
            touched: Vec::with_capacity(max_keys),
            period: 0,
            period_start: now,
            evicted_other: OtherDemand::default(),
            evicted: 0,
            cfg,
        }
    }

    /// Take `cost` tokens for `key`.
    pub fn check(&mut self, key: RateKey, cost: u32, now: Instant) -> Decision {
        let ShardLimiter {
            shares,
            even,
            epoch,
            buckets,
            touched,
            period,
            evicted_other,
            evicted,
            ..
        } = self;
        let share_of = |k: u64| shares.get(&k).copied().unwrap_or(*even);
        let (slot, entry, found) = buckets.get_or_insert_with(key.0, || Entry {
            bucket: TokenBucket::new(share_of(key.0), now),
            epoch: *epoch,
            period: u64::MAX,
            attempted: 0,
            admitted: 0,
        });
        if let Slot::Evicted { value: old, .. } = found {
            *evicted += 1;
            if old.period == *period {
                // The slot is already in `touched`: fold the old key into the aggregate and
                // let the new key take over the slot's place in the list.
                evicted_other.keys += 1;
                evicted_other.attempted += u64::from(old.attempted);
                evicted_other.admitted += u64::from(old.admitted);
                entry.period = *period;
            }
        }
        if entry.epoch != *epoch {
            entry.bucket.set_limit(share_of(key.0), now);
            entry.epoch = *epoch;
        }
        if entry.period != *period {
            entry.period = *period;
            entry.attempted = 0;
            entry.admitted = 0;
            touched.push(slot);
        }
        let d = entry.bucket.try_take(cost, now);
        entry.attempted = entry.attempted.saturating_add(cost);
        if d.allowed {
            entry.admitted = entry.admitted.saturating_add(cost);
        }
        d
    }

    /// The header values for a decision: the advertised limit is the gateway-wide burst.
    pub fn headers(&self, d: &Decision) -> RateLimitHeaders {
        d.headers(self.cfg.limit.burst() as u64)
    }

    /// Close the current period and describe it. Call every rebalance period, off the request
    /// path.
    pub fn report(&mut self, now: Instant) -> ShardReport {
        let mut all: Vec<KeyDemand> = Vec::with_capacity(self.touched.len());
        for &slot in &self.touched {
            if let Some((key, e)) = self.buckets.slot(slot)
                && e.period == self.period
            {
                all.push(KeyDemand {
                    key: RateKey(key),
                    attempted: e.attempted,
                    admitted: e.admitted,
                });
            }
        }
        all.sort_unstable_by(|a, b| b.attempted.cmp(&a.attempted).then(a.key.cmp(&b.key)));
        let k = self.cfg.top_k.min(all.len());
        let mut other = self.evicted_other;
        for d in &all[k..] {
            other.keys += 1;
            other.attempted += u64::from(d.attempted);
            other.admitted += u64::from(d.admitted);
        }
        all.truncate(k);
        let report = ShardReport {
            shard: self.shard,
            window: now.saturating_duration_since(self.period_start),
            keys: all,
            other,
            evicted: self.evicted,
        };
        self.touched.clear();
        self.period += 1;
        self.period_start = now;
        self.evicted_other = OtherDemand::default();
        self.evicted = 0;
        report
    }

    /// Adopt new shares (from [`Coordinator::rebalance`]); updates for another shard are
    /// ignored. Buckets switch on their next check.
    pub fn apply(&mut self, update: &ShareUpdate) {
        if update.shard != self.shard {
            return;
        }
        self.shares.clear();
        self.shares
            .extend(update.keys.iter().map(|&(k, limit)| (k.0, limit)));
        if let Some(even) = update.even {
            self.even = even;
        }
        self.epoch = update.epoch;
    }

    /// Buckets held (bounded by `max_keys`).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The share `key` would get now.
    pub fn share(&self, key: RateKey) -> Limit {
        self.shares.get(&key.0).copied().unwrap_or(self.even)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_key_per_64_and_keys_are_keyed() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let key = |s: &str| RateKey::of_ip(ip(s));
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1234"));
        assert_eq!(key("2001:db8:0:0:8000::1"), key("2001:db8::1"));
        assert_ne!(key("2001:db8:0:1::1"), key("2001:db8::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        let within = |s: &str, bits| RateKey::of_ip_within(ip(s), bits);
        assert_eq!(within("2001:db8:0:ff::1", 56), within("2001:db8::1", 56));
        assert_ne!(within("2001:db8:0:100::1", 56), within("2001:db8::1", 56));
        assert_ne!(within("2001:db8::1", 128), within("2001:db8::2", 128));
        assert_eq!(within("2001:db8::1", 64), key("2001:db8::1"));
        assert_eq!(RateKey::of(b"alice"), RateKey::of(b"alice"));
        assert_ne!(RateKey::of(b"alice"), RateKey::of(b"bob"));
        // Keyed: not the fixed-seed hash a client could compute offline.
        assert_ne!(
            RateKey::of(b"alice").0,
            shardgate_common::hash::hash_bytes_seeded(0x7261_7465_6b65_7931, b"alice")
        );
    }

    fn cfg(rate: f64, burst: f64, shards: usize) -> GlobalLimitConfig {
        GlobalLimitConfig::new(Limit::new(rate, burst).unwrap(), shards)
    }

    #[test]
    fn water_fill_table() {
        // (total, needs, expected shares)
        let cases: &[(f64, &[f64], &[f64])] = &[
            (100.0, &[300.0, 0.0], &[100.0, 0.0]),
            (100.0, &[300.0, 300.0], &[50.0, 50.0]),
            (100.0, &[300.0, 10.0], &[90.0, 10.0]),
            (100.0, &[20.0, 10.0], &[55.0, 45.0]),
            (90.0, &[10.0, 100.0, 100.0], &[10.0, 40.0, 40.0]),
            (100.0, &[0.0, 0.0], &[50.0, 50.0]),
        ];
        for &(total, needs, want) in cases {
            let mut out = vec![0.0; needs.len()];
            water_fill(total, needs, &mut out);
            for (got, want) in out.iter().zip(want) {
                assert!((got - want).abs() < 1e-9, "{needs:?}: {out:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn fresh_keys_get_the_even_split() {
        let t0 = Instant::now();
        let mut s = ShardLimiter::new(cfg(1000.0, 100.0, 4), 0, t0);
        let key = RateKey::of(b"alice");
        assert_eq!(s.share(key), Limit::share(250.0, 25.0));
        let admitted = (0..100).filter(|_| s.check(key, 1, t0).allowed).count();
        assert_eq!(admitted, 25);
    }

    #[test]
    fn rebalance_moves_share_to_the_busy_shard_and_back() {
        let t0 = Instant::now();
        let period = Duration::from_millis(100);
        let c = cfg(1000.0, 100.0, 2);
        let mut coord = Coordinator::new(c.clone());
        let mut shards = [
            ShardLimiter::new(c.clone(), 0, t0),
            ShardLimiter::new(c, 1, t0),
        ];
        let key = RateKey::of(b"k");
        for _ in 0..300 {
            shards[0].check(key, 1, t0);
        }
        let now = t0 + period;
        let reports: Vec<_> = shards.iter_mut().map(|s| s.report(now)).collect();
        assert_eq!(reports[0].keys[0].attempted, 300);
        assert_eq!(reports[0].keys[0].admitted, 50);
        assert!(reports[1].keys.is_empty());
        let updates = coord.rebalance(&reports, now);
        for (s, u) in shards.iter_mut().zip(&updates) {
            s.apply(u);
        }
        assert!((shards[0].share(key).rate() - 980.0).abs() < 1e-6);
        assert!(updates[0].keys.len() == 1 && updates[1].keys.len() == 1);
        assert!((shards[1].share(key).rate() - 20.0).abs() < 1e-6);
        assert!((shards[0].share(key).burst() - 98.0).abs() < 1e-6);
        assert_eq!(shards[1].share(key).burst(), 2.0);
        assert!(updates[0].to_string().contains("1 keys off the even split"));

        // A quiet period: the key is in no report, so both shards go back to the even split.
        let now = now + period;
        let reports: Vec<_> = shards.iter_mut().map(|s| s.report(now)).collect();
        for (s, u) in shards.iter_mut().zip(&coord.rebalance(&reports, now)) {
            s.apply(u);
        }
        assert_eq!(shards[1].share(key), shards[1].even);
    }

    #[test]
    fn stale_shard_is_assumed_to_need_the_even_split() {
        let t0 = Instant::now();
        let c = cfg(1000.0, 100.0, 2);
        let mut coord = Coordinator::new(c.clone());
        let key = RateKey::of(b"k");
        let report = |shard, attempted| ShardReport {
            shard,
            window: Duration::from_millis(100),
            keys: vec![KeyDemand {
                key,
                attempted,
                admitted: 0,
            }],
            other: OtherDemand::default(),
            evicted: 0,
        };
        coord.rebalance(&[report(0, 300), report(1, 1)], t0);
        // Shard 1 goes silent; after stale_after its need is taken as 500/s.
        let later = t0 + Duration::from_secs(2);
        let u = coord.rebalance(&[report(0, 300)], later);
        assert!((u[1].keys[0].1.rate() - 500.0).abs() < 1e-6, "{:?}", u[1]);
        assert!((u[0].keys[0].1.rate() - 500.0).abs() < 1e-6);
    }

    #[test]
    fn report_keeps_top_k_and_aggregates_the_rest() {
        let t0 = Instant::now();
        let mut c = cfg(1000.0, 100.0, 2);
        c.top_k = 2;
        let mut s = ShardLimiter::new(c, 0, t0);
        for (i, n) in [5u32, 1, 9, 3].into_iter().enumerate() {
            for _ in 0..n {
                s.check(RateKey(i as u64), 1, t0);
            }
        }
        let r = s.report(t0 + Duration::from_millis(100));
        let got: Vec<_> = r.keys.iter().map(|d| (d.key.0, d.attempted)).collect();
        assert_eq!(got, vec![(2, 9), (0, 5)]);
        assert_eq!(
            r.other,
            OtherDemand {
                keys: 2,
                attempted: 4,
                admitted: 4
            }
        );
        assert_eq!(r.window, Duration::from_millis(100));
        let empty = s.report(t0 + Duration::from_millis(200));
        assert!(empty.keys.is_empty() && empty.other == OtherDemand::default());
    }

    #[test]
    fn evicted_keys_counts_go_to_the_aggregate_and_start_fresh() {
        let t0 = Instant::now();
        let mut c = cfg(10.0, 2.0, 1);
        c.max_keys = 2;
        let mut s = ShardLimiter::new(c, 0, t0);
        let (a, b, x) = (RateKey(1), RateKey(2), RateKey(3));
        assert!(s.check(a, 1, t0).allowed);
        assert!(s.check(a, 1, t0).allowed);
        assert!(!s.check(a, 1, t0).allowed);
        s.check(b, 1, t0);
        s.check(x, 1, t0); // evicts a
        assert_eq!(s.len(), 2);
        assert!(s.check(a, 1, t0).allowed, "a comes back with a full bucket");
        let r = s.report(t0 + Duration::from_millis(100));
        assert_eq!(r.evicted, 2);
        let listed: u32 = r.keys.iter().map(|d| d.attempted).sum();
        assert_eq!(u64::from(listed) + r.other.attempted, 6, "{r:?}");
    }

    #[test]
    fn update_for_another_shard_is_ignored() {
        let t0 = Instant::now();
        let mut s = ShardLimiter::new(cfg(100.0, 10.0, 2), 0, t0);
        let before = s.share(RateKey(9));
        s.apply(&ShareUpdate {
            shard: 1,
            epoch: 7,
            keys: vec![(RateKey(9), Limit::share(1.0, 1.0))],
            even: None,
        });
        assert_eq!(s.share(RateKey(9)), before);
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(RateKey::of(b"alice"), RateKey::of(b"alice"));
        assert_ne!(RateKey::of(b"alice"), RateKey::of(b"bob"));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(RateKey::of_ip(ip), RateKey::of_ip(ip));
    }
}
