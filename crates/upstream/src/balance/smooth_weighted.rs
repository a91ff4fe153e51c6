//! Smooth weighted round robin (the nginx algorithm) over endpoints, and [`WeightedSplit`] over
//! upstream groups for route-level canary splits.
//!
//! Each pick adds every eligible endpoint's weight to its running score, chooses the highest
//! score (lowest index on a tie) and subtracts the total eligible weight from the winner. With
//! weights 7 and 3 that yields `A B A A A B A A B A` — exactly 7 of every 10, never more than
//! three in a row — and the sequence is the same on every shard.

/// Smooth weighted round robin over endpoints `0..weights.len()`.
#[derive(Debug, Clone)]
pub struct SmoothWeighted {
    weights: Vec<u32>,
    scores: Vec<i64>,
}

impl SmoothWeighted {
    /// One weight per endpoint. A weight of 0 drains the endpoint: it is never picked.
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Self {
        let weights: Vec<u32> = weights.into_iter().collect();
        let scores = vec![0; weights.len()];
        SmoothWeighted { weights, scores }
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// True when there are no endpoints.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The configured weights.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// The next endpoint. Ineligible endpoints neither gain score nor count toward the total,
    /// so the eligible ones keep their relative ratio while another is out.
    pub fn pick(&mut self, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, (&w, score)) in self.weights.iter().zip(self.scores.iter_mut()).enumerate() {
            if w == 0 || !eligible(i) {
                continue;
            }
            *score += i64::from(w);
            total += i64::from(w);
            if best.is_none_or(|(_, s)| *score > s) {
                best = Some((i, *score));
            }
        }
        let (best, _) = best?;
        self.scores[best] -= total;
        Some(best)
    }

    /// Forget accumulated scores (after the endpoint set or the weights changed).
    pub fn reset(&mut self) {
        self.scores.fill(0);
    }
}

/// A route-level split across upstream groups (`v1` 70 %, `v2` 30 %), by smooth weighted round
/// robin over the targets: deterministic and burst-free, like [`SmoothWeighted`].
#[derive(Debug, Clone)]
pub struct WeightedSplit<G> {
    targets: Vec<G>,
    wrr: SmoothWeighted,
}

impl<G> WeightedSplit<G> {
    /// Targets with their weights; weight 0 keeps a target configured but unused.
    pub fn new(targets: impl IntoIterator<Item = (G, u32)>) -> Self {
        let (targets, weights): (Vec<G>, Vec<u32>) = targets.into_iter().unzip();
        WeightedSplit {
            targets,
            wrr: SmoothWeighted::new(weights),
        }
    }

    /// The next target, or `None` if every weight is 0.
    pub fn pick(&mut self) -> Option<&G> {
        self.pick_where(|_| true)
    }

    /// The next target among those `eligible` accepts (e.g. whose breaker is not open); the
    /// others' share goes to the rest in proportion to their weights.
    pub fn pick_where(&mut self, eligible: impl Fn(&G) -> bool) -> Option<&G> {
        let targets = &self.targets;
        let i = self.wrr.pick(|i| eligible(&targets[i]))?;
        Some(&self.targets[i])
    }

    /// The targets, in configuration order.
    pub fn targets(&self) -> &[G] {
        &self.targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], picks: usize, down: &[usize]) -> String {
        let mut wrr = SmoothWeighted::new(weights.iter().copied());
        (0..picks)
            .map(|_| match wrr.pick(|i| !down.contains(&i)) {
                Some(i) => char::from(b'A' + i as u8),
                None => '-',
            })
            .collect()
    }

    #[test]
    fn exact_sequences() {
        let cases: &[(&str, &[u32], &[usize], &str)] = &[
            ("70/30", &[70, 30], &[], "ABAAABAABA"),
            ("7/3 same as 70/30", &[7, 3], &[], "ABAAABAABA"),
            ("5/1/1 (nginx's example)", &[5, 1, 1], &[], "AABACAA"),
            ("equal weights is round robin", &[1, 1, 1], &[], "ABCABC"),
            ("weight 0 is drained", &[2, 0, 1], &[], "ACAACA"),
            ("50/50", &[50, 50], &[], "ABABAB"),
            (
                "down endpoint skipped, ratio kept",
                &[2, 5, 1],
                &[1],
                "ACAACA",
            ),
            ("all down", &[1, 1], &[0, 1], "---"),
            ("all zero", &[0, 0], &[], "--"),
            ("empty", &[], &[], "-"),
        ];
        for (name, weights, down, want) in cases {
            assert_eq!(sequence(weights, want.len(), down), *want, "{name}");
        }
    }

    #[test]
    fn seventy_thirty_is_exact_in_every_window_of_ten() {
        let seq = sequence(&[70, 30], 10_000, &[]);
        let bytes = seq.as_bytes();
        for (k, window) in bytes.chunks(10).enumerate() {
            let a = window.iter().filter(|&&c| c == b'A').count();
            assert_eq!(a, 7, "window {k}: {}", std::str::from_utf8(window).unwrap());
        }
        let longest_a_run = seq.split('B').map(str::len).max().unwrap();
        assert!(
            longest_a_run <= 3,
            "no bursts: longest run of A is {longest_a_run}"
        );
    }

    #[test]
    fn uneven_weights_match_their_share_exactly_per_cycle() {
        let weights = [5u32, 3, 2, 1];
        let total: u32 = weights.iter().sum();
        let mut wrr = SmoothWeighted::new(weights);
        let mut counts = [0u32; 4];
        for _ in 0..total * 1000 {
            counts[wrr.pick(|_| true).unwrap()] += 1;
        }
        assert_eq!(counts, weights.map(|w| w * 1000));
    }

    #[test]
    fn regression_recovered_endpoint_rejoins_without_a_burst() {
        // B is out for a while; when it comes back it must not get a backlog of turns.
        let mut wrr = SmoothWeighted::new([1, 1]);
        for _ in 0..100 {
            assert_eq!(wrr.pick(|i| i == 0), Some(0));
        }
        let after: Vec<usize> = (0..6).map(|_| wrr.pick(|_| true).unwrap()).collect();
        let b = after.iter().filter(|&&i| i == 1).count();
        assert_eq!(b, 3, "{after:?}");
    }

    #[test]
    fn split_across_groups() {
        let mut split = WeightedSplit::new([("v1", 70), ("v2", 30)]);
        let mut v2 = 0;
        for _ in 0..10_000 {
            if *split.pick().unwrap() == "v2" {
                v2 += 1;
            }
        }
        assert_eq!(v2, 3_000);
        // v2's breaker is open: everything goes to v1.
        for _ in 0..10 {
            assert_eq!(split.pick_where(|g| *g != "v2"), Some(&"v1"));
        }
        assert_eq!(split.targets(), &["v1", "v2"]);
        assert_eq!(WeightedSplit::new([("x", 0)]).pick(), None);
    }
}
