//! Plain round robin over eligible endpoints.

/// Round robin: endpoint `i`, then `i + 1`, skipping ineligible ones.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// Start at endpoint 0. (Seed shards with [`Self::starting_at`] so they don't move in step.)
    pub fn new() -> Self {
        RoundRobin { next: 0 }
    }

    /// Start at `start` (taken modulo the group size at pick time).
    pub fn starting_at(start: usize) -> Self {
        RoundRobin { next: start }
    }

    /// The next eligible endpoint among `0..n` at or after the cursor, or `None` when none is.
    /// Skipping an ineligible endpoint does not give its turn to anyone twice: the cursor moves
    /// past whichever endpoint was chosen.
    pub fn pick(&mut self, n: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        for step in 0..n {
            let i = (start + step) % n;
            if eligible(i) {
                self.next = i + 1;
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_in_order_and_skips_ineligible() {
        // (name, group size, ineligible, picks)
        type Case<'a> = (&'a str, usize, &'a [usize], &'a [Option<usize>]);
        let cases: &[Case<'_>] = &[
            ("all up", 3, &[], &[Some(0), Some(1), Some(2), Some(0)]),
            (
                "middle down",
                3,
                &[1],
                &[Some(0), Some(2), Some(0), Some(2)],
            ),
            ("first down", 3, &[0], &[Some(1), Some(2), Some(1)]),
            ("all down", 2, &[0, 1], &[None, None]),
            ("empty group", 0, &[], &[None]),
        ];
        for (name, n, down, want) in cases {
            let mut rr = RoundRobin::new();
            let got: Vec<_> = (0..want.len())
                .map(|_| rr.pick(*n, |i| !down.contains(&i)))
                .collect();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn even_split_over_many_picks() {
        let mut rr = RoundRobin::starting_at(7);
        let mut counts = [0u32; 5];
        for _ in 0..10_000 {
            counts[rr.pick(5, |_| true).unwrap()] += 1;
        }
        assert_eq!(counts, [2000; 5]);
    }

    #[test]
    fn regression_group_shrink_keeps_cursor_in_range() {
        let mut rr = RoundRobin::new();
        for _ in 0..9 {
            rr.pick(10, |_| true);
        }
        assert_eq!(rr.pick(3, |_| true), Some(0), "cursor 9 wraps to 9 % 3");
    }
}
