//! Nanoseconds per operation for the hot primitives: balancer picks, breaker admit/record,
//! hashing, retry budget. Plain `Instant` timing; run with
//! `cargo bench -p shardgate-upstream --bench pick`. Figures are printed, never asserted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shardgate_common::hash::hash_bytes;
use shardgate_upstream::balance::{
    Algorithm, BalancerKind, EndpointSpec, HashKey, PickHint, WeightedSplit,
};
use shardgate_upstream::breaker::{Breaker, BreakerConfig, Verdict};
use shardgate_upstream::retry_budget::{RetryBudget, RetryBudgetConfig};

const ITERS: u32 = 2_000_000;

/// Run `f` `ITERS` times (after a warm-up) and print ns per call.
fn bench(name: &str, mut f: impl FnMut(u32)) {
    for i in 0..ITERS / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..ITERS {
        f(i);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(ITERS);
    println!("{name:<48} {ns:>7.1} ns/op");
}

fn main() {
    let n = 16;
    let ids: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:8080")).collect();
    let specs: Vec<EndpointSpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| EndpointSpec::new(id, 1 + (i as u32 % 4)))
        .collect();
    let in_flight: Vec<u32> = (0..n as u32).map(|i| (i * 7) % 5).collect();
    let down = 3usize;

    let algorithms = [
        ("round robin", Algorithm::RoundRobin),
        ("smooth weighted", Algorithm::Weighted),
        ("least request (p2c)", Algorithm::LeastRequest),
        (
            "maglev",
            Algorithm::ConsistentHash {
                key: HashKey::ClientIp,
                table_size: 65_537,
            },
        ),
    ];
    println!("{n} endpoints, endpoint {down} ineligible");
    for (name, algorithm) in &algorithms {
        let mut b = BalancerKind::new(algorithm, &specs, 1).expect("builds");
        bench(&format!("pick: {name}"), |i| {
            let hint = PickHint {
                key: Some(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                in_flight: &in_flight,
            };
            black_box(b.pick(black_box(&hint), |e| e != down));
        });
    }
    let mut split = WeightedSplit::new([("v1", 70), ("v2", 30)]);
    bench("pick: weighted split 70/30", |_| {
        black_box(split.pick());
    });
    let start = Instant::now();
    let table = BalancerKind::new(&algorithms[3].1, &specs, 1).expect("builds");
    println!(
        "{:<48} {:>7.2} ms",
        "maglev table build (65537 slots, 16 endpoints)",
        start.elapsed().as_secs_f64() * 1e3
    );
    black_box(table);

    bench("hash_bytes (16-byte key)", |i| {
        let mut key = *b"session-00000000";
        key[8..12].copy_from_slice(&i.to_le_bytes());
        black_box(hash_bytes(black_box(&key)));
    });

    let t0 = Instant::now();
    let mut breaker = Breaker::new("bench", BreakerConfig::default(), t0);
    bench("breaker admit + record (closed)", |i| {
        let now = t0 + Duration::from_micros(u64::from(i));
        if let Ok(ticket) = breaker.admit(now).decision {
            black_box(breaker.record(ticket, Verdict::Success, now));
        }
    });

    let mut budget = RetryBudget::new(RetryBudgetConfig::default(), t0);
    bench("retry budget record_request + try_withdraw", |i| {
        let now = t0 + Duration::from_micros(u64::from(i));
        budget.record_request(now);
        black_box(budget.try_withdraw(now));
    });
}
