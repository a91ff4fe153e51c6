//! Deterministic simulation of the gateway-wide rate limit shared by shards
//! (`shardgate_filters::global_rate`): simulated time, no threads.
//!
//! Every millisecond each shard receives its offered requests (evenly spaced); every rebalance
//! period each shard reports, the coordinator rebalances, and the updates reach the shards
//! `lag` later (the proxy ferries them between threads). The admitted rate over each steady
//! window must stay within 10% of the configured rate.
//!
//! Run with `cargo test -p shardgate-filters --test global_rate_sim -- --nocapture` to see the
//! figures.

use std::time::{Duration, Instant};

use shardgate_common::hash::Rng;
use shardgate_filters::global_rate::{
    Coordinator, GlobalLimitConfig, RateKey, ShardLimiter, ShareUpdate,
};
use shardgate_filters::token_bucket::Limit;

const RATE: f64 = 1000.0;
const BURST: f64 = 100.0;
const SECONDS: u64 = 30;
const MS: Duration = Duration::from_millis(1);

/// Offered requests per second on each shard at second `s`.
type Offered = fn(u64) -> [f64; 2];

struct Sim {
    cfg: GlobalLimitConfig,
    period: Duration,
    lag: Duration,
    /// Poisson arrivals from this seed instead of evenly spaced ones.
    poisson: Option<u64>,
}

struct Outcome {
    /// Admitted requests of the hot key in each simulated second.
    per_second: Vec<u64>,
    /// Largest bucket count seen on any shard.
    max_buckets: usize,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            cfg: GlobalLimitConfig::new(Limit::new(RATE, BURST).unwrap(), 2),
            period: Duration::from_millis(100),
            lag: Duration::from_millis(5),
            poisson: None,
        }
    }

    /// Run `offered` against key "hot"; `cold_per_ms` more requests per ms each go to a fresh
    /// key from a rotating set of `cold_keys`, on shard 0.
    fn run(&self, offered: Offered, cold_keys: u64, cold_per_ms: u64) -> Outcome {
        let t0 = Instant::now();
        let mut coord = Coordinator::new(self.cfg.clone());
        let mut shards: Vec<ShardLimiter> = (0..2)
            .map(|i| ShardLimiter::new(self.cfg.clone(), i, t0))
            .collect();
        let hot = RateKey::of(b"hot");
        let mut acc = [0.0f64; 2];
        let mut pending: Vec<(Instant, ShareUpdate)> = Vec::new();
        let mut next_rebalance = t0 + self.period;
        let mut per_second = vec![0u64; SECONDS as usize];
        let mut max_buckets = 0;
        let mut cold = 0u64;
        let mut rng = Rng::new(self.poisson.unwrap_or(0));
        for ms in 0..SECONDS * 1000 {
            let now = t0 + ms as u32 * MS;
            pending.retain(|(at, u)| {
                if *at <= now {
                    shards[u.shard].apply(u);
                    false
                } else {
                    true
                }
            });
            if now >= next_rebalance {
                let reports: Vec<_> = shards.iter_mut().map(|s| s.report(now)).collect();
                for u in coord.rebalance(&reports, now) {
                    pending.push((now + self.lag, u));
                }
                next_rebalance += self.period;
            }
            let rates = offered(ms / 1000);
            for (i, shard) in shards.iter_mut().enumerate() {
                let arrivals = match self.poisson {
                    None => {
                        acc[i] += rates[i] / 1000.0;
                        let n = acc[i].floor();
                        acc[i] -= n;
                        n as u64
                    }
                    Some(_) => poisson(&mut rng, rates[i] / 1000.0),
                };
                for _ in 0..arrivals {
                    if shard.check(hot, 1, now).allowed {
                        per_second[(ms / 1000) as usize] += 1;
                    }
                }
            }
            for _ in 0..cold_per_ms {
                let key = RateKey::of(format!("cold-{}", cold % cold_keys.max(1)).as_bytes());
                cold += 1;
                shards[0].check(key, 1, now);
            }
            max_buckets = max_buckets.max(shards.iter().map(|s| s.len()).max().unwrap());
        }
        Outcome {
            per_second,
            max_buckets,
        }
    }
}

/// A Poisson-distributed count with mean `lambda` (Knuth's product of uniforms; lambda is small).
fn poisson(rng: &mut Rng, lambda: f64) -> u64 {
    let limit = (-lambda).exp();
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Mean admitted rate over seconds `from..to`, with the per-second extremes.
fn window(o: &Outcome, from: u64, to: u64) -> (f64, u64, u64) {
    let s = &o.per_second[from as usize..to as usize];
    let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
    (mean, *s.iter().min().unwrap(), *s.iter().max().unwrap())
}

fn check(name: &str, o: &Outcome, windows: &[(u64, u64)]) {
    for &(from, to) in windows {
        let (mean, min, max) = window(o, from, to);
        let err = (mean - RATE) / RATE * 100.0;
        println!(
            "{name:<34} s{from:>2}-{to:<2} admitted {mean:7.1}/s ({err:+5.1}% of {RATE}/s), \
             per-second min {min} max {max}"
        );
        assert!(
            (mean - RATE).abs() <= RATE * 0.10,
            "{name}: {mean:.1}/s over s{from}-{to} is not within 10% of {RATE}/s"
        );
    }
}

// Warm-up of 1 s: a couple of rebalance periods, plus the initial full buckets.
const ALL_ON_0: Offered = |_| [3.0 * RATE, 0.0];
const SPLIT: Offered = |_| [1.5 * RATE, 1.5 * RATE];
const MOVING: Offered = |s| {
    if s < SECONDS / 2 {
        [3.0 * RATE, 0.0]
    } else {
        [0.0, 3.0 * RATE]
    }
};
const SKEWED: Offered = |_| [2.7 * RATE, 0.3 * RATE];

#[test]
fn all_traffic_on_one_shard_admits_the_global_rate() {
    let o = Sim::new().run(ALL_ON_0, 0, 0);
    check("(a) all on shard 0, 3R offered", &o, &[(1, SECONDS)]);
}

#[test]
fn evenly_split_traffic_admits_the_global_rate() {
    let o = Sim::new().run(SPLIT, 0, 0);
    check("(b) split evenly, 3R offered", &o, &[(1, SECONDS)]);
}

#[test]
fn traffic_moving_between_shards_admits_the_global_rate() {
    let o = Sim::new().run(MOVING, 0, 0);
    let half = SECONDS / 2;
    check(
        "(c) moves shard 0 -> 1 at 15 s",
        &o,
        &[(1, half), (half + 1, SECONDS), (1, SECONDS)],
    );
}

#[test]
fn skewed_traffic_admits_the_global_rate() {
    let o = Sim::new().run(SKEWED, 0, 0);
    check("(d) 90/10 split, 3R offered", &o, &[(1, SECONDS)]);
}

#[test]
fn poisson_arrivals_admit_the_global_rate() {
    let mut sim = Sim::new();
    sim.poisson = Some(7);
    for (name, offered) in [
        ("(g) Poisson, all on shard 0", ALL_ON_0),
        ("(g) Poisson, split evenly", SPLIT),
        ("(g) Poisson, 90/10 split", SKEWED),
    ] {
        let o = sim.run(offered, 0, 0);
        check(name, &o, &[(1, SECONDS)]);
    }
    let o = sim.run(MOVING, 0, 0);
    let half = SECONDS / 2;
    check("(g) Poisson, moving", &o, &[(1, half), (half + 1, SECONDS)]);
}

#[test]
fn slow_rebalance_with_long_lag_still_admits_the_global_rate() {
    let mut sim = Sim::new();
    sim.period = Duration::from_millis(250);
    sim.lag = Duration::from_millis(50);
    let o = sim.run(MOVING, 0, 0);
    let half = SECONDS / 2;
    check(
        "(e) as (c), 250 ms period, 50 ms lag",
        &o,
        &[(1, half), (half + 1, SECONDS), (1, SECONDS)],
    );
}

#[test]
fn one_hot_key_among_ten_thousand_cold_keys_keeps_the_lru_bound() {
    let mut sim = Sim::new();
    sim.cfg.max_keys = 1000;
    sim.cfg.top_k = 16;
    // 10,000 cold keys, 2 per ms on shard 0 (each seen every 5 s): far more than the LRU holds.
    let o = sim.run(SPLIT, 10_000, 2);
    println!(
        "(f) LRU bound 1000: at most {} buckets per shard",
        o.max_buckets
    );
    assert!(o.max_buckets <= 1000);
    check("(f) hot key among 10k cold keys", &o, &[(1, SECONDS)]);
}

#[test]
fn demand_under_the_limit_is_never_refused() {
    // 800/s on one shard, then 800/s split: the even split (500/s) must not cap shard 0 for
    // longer than the first period, and nothing is refused once shares follow demand. The
    // second in which the traffic moves loses up to one period of the new shard's demand.
    const UNDER: Offered = |s| {
        if s < SECONDS / 2 {
            [0.8 * RATE, 0.0]
        } else {
            [0.4 * RATE, 0.4 * RATE]
        }
    };
    let o = Sim::new().run(UNDER, 0, 0);
    let half = SECONDS / 2;
    for (from, to) in [(1, half), (half + 1, SECONDS)] {
        let (mean, min, _) = window(&o, from, to);
        println!(
            "(h) 800/s offered, under the limit s{from:>2}-{to:<2} admitted {mean:7.1}/s, min {min}"
        );
        assert!(
            min >= 799,
            "refused traffic under the limit: {:?}",
            o.per_second
        );
    }
    let switch = o.per_second[half as usize];
    println!("(h) the second the traffic moves: {switch} admitted of 800");
    assert!(switch >= 760);
}
