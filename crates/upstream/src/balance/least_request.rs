//! Least request by the power of two choices: draw two distinct eligible endpoints at random,
//! send to the one with fewer requests in flight.
//!
//! Two random choices avoid both the herd behaviour of "pick the global minimum" (every shard
//! piles onto the same idle endpoint) and the O(n) scan. The in-flight counts are the caller's
//! (the proxy already tracks them per endpoint); the generator is per balancer, seeded per
//! shard, so runs are reproducible.

use shardgate_common::hash::Rng;

/// How many random draws to try before scanning for an eligible endpoint.
const RANDOM_DRAWS: usize = 4;

/// Least request, power of two choices.
#[derive(Debug, Clone)]
pub struct LeastRequest {
    rng: Rng,
}

impl LeastRequest {
    /// A balancer whose choices are fixed by `seed` (give each shard a different one).
    pub fn new(seed: u64) -> Self {
        LeastRequest {
            rng: Rng::new(seed),
        }
    }

    /// Pick among `0..n`; `in_flight[i]` is endpoint `i`'s current request count (missing
    /// entries count as 0). A tie goes to the first draw. With one eligible endpoint, that one.
    pub fn pick(
        &mut self,
        n: usize,
        in_flight: &[u32],
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let a = self.draw(n, None, &eligible)?;
        let Some(b) = self.draw(n, Some(a), &eligible) else {
            return Some(a);
        };
        let load = |i: usize| in_flight.get(i).copied().unwrap_or(0);
        Some(if load(b) < load(a) { b } else { a })
    }

    /// A random eligible endpoint other than `exclude`: a few random draws, then a scan from a
    /// random start so the fallback does not favour low indices.
    fn draw(
        &mut self,
        n: usize,
        exclude: Option<usize>,
        eligible: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let ok = |i: usize| Some(i) != exclude && eligible(i);
        let mut start = 0;
        for _ in 0..RANDOM_DRAWS {
            start = self.rng.below(n);
            if ok(start) {
                return Some(start);
            }
        }
        (1..n).map(|step| (start + step) % n).find(|&i| ok(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_loaded_endpoint_is_never_chosen_when_another_is_eligible() {
        let in_flight = [3, 9, 1, 4, 2];
        let mut lr = LeastRequest::new(1);
        for _ in 0..10_000 {
            assert_ne!(lr.pick(5, &in_flight, |_| true), Some(1));
        }
    }

    #[test]
    fn prefers_the_idle_endpoint_over_uniform() {
        // One idle endpoint among four busy ones: P2C picks it whenever it is one of the two
        // draws, 1 - C(4,2)/C(5,2) = 40 % of the time, against 20 % for uniform random.
        let in_flight = [10, 10, 0, 10, 10];
        let mut lr = LeastRequest::new(42);
        let picks = 20_000;
        let idle = (0..picks)
            .filter(|_| lr.pick(5, &in_flight, |_| true) == Some(2))
            .count();
        let share = idle as f64 / picks as f64;
        assert!((0.37..0.43).contains(&share), "idle share {share:.3}");
    }

    #[test]
    fn simulated_slow_endpoint_gets_less_traffic() {
        // Endpoint 0 holds each request 4 ticks, the others 1 tick.
        let n = 4;
        let mut lr = LeastRequest::new(7);
        let mut in_flight = vec![0u32; n];
        let mut finishing: Vec<(u32, usize)> = Vec::new();
        let mut counts = vec![0u32; n];
        for tick in 0..20_000u32 {
            finishing.retain(|&(at, i)| {
                if at == tick {
                    in_flight[i] -= 1;
                    false
                } else {
                    true
                }
            });
            for _ in 0..3 {
                let i = lr.pick(n, &in_flight, |_| true).unwrap();
                in_flight[i] += 1;
                counts[i] += 1;
                finishing.push((tick + if i == 0 { 4 } else { 1 }, i));
            }
        }
        let fast_avg = counts[1..].iter().sum::<u32>() / 3;
        assert!(
            counts[0] < fast_avg * 3 / 4,
            "slow {} vs fast avg {fast_avg}",
            counts[0]
        );
    }

    #[test]
    fn eligibility_edges() {
        let mut lr = LeastRequest::new(3);
        assert_eq!(lr.pick(0, &[], |_| true), None);
        assert_eq!(lr.pick(3, &[0, 0, 0], |_| false), None);
        for _ in 0..100 {
            assert_eq!(
                lr.pick(6, &[0; 6], |i| i == 4),
                Some(4),
                "only one eligible"
            );
            let got = lr
                .pick(6, &[5, 5, 5, 0, 5, 1], |i| i == 1 || i == 5)
                .unwrap();
            assert_eq!(got, 5, "two eligible: the less loaded one");
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let load = [1, 2, 3, 4, 5, 6, 7, 8];
        let run = |seed| {
            let mut lr = LeastRequest::new(seed);
            (0..50)
                .map(|_| lr.pick(8, &load, |i| i % 3 != 0).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
