//! A rolling window of time buckets, shared by the breaker and the retry budget.
//!
//! `count` buckets of `span / count` each; bucket `k` (counted from the window's origin) lives in
//! slot `k % count`. Moving forward clears the slots that fell out of the window, at most
//! `count` of them, so an update costs O(1) amortised and never allocates.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(crate) struct RollingWindow<T> {
    slots: Box<[T]>,
    width_nanos: u64,
    origin: Instant,
    /// Absolute index of the newest bucket.
    head: u64,
}

impl<T: Copy + Default> RollingWindow<T> {
    /// A window of `span` split into `count` buckets (at least 1, each at least 1 ms wide).
    pub(crate) fn new(span: Duration, count: u32, now: Instant) -> Self {
        let count = count.max(1);
        let width = (span.as_nanos() / u128::from(count)).max(1_000_000);
        RollingWindow {
            slots: vec![T::default(); count as usize].into_boxed_slice(),
            width_nanos: u64::try_from(width).unwrap_or(u64::MAX),
            origin: now,
            head: 0,
        }
    }

    /// The span the window covers.
    pub(crate) fn span(&self) -> Duration {
        Duration::from_nanos(self.width_nanos.saturating_mul(self.slots.len() as u64))
    }

    fn bucket_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / u128::from(self.width_nanos)).unwrap_or(u64::MAX)
    }

    /// Move the window so its newest bucket contains `now`. Times earlier than the newest
    /// bucket are counted in the newest bucket (the clock is monotonic; callers may pass an
    /// instant taken a moment earlier).
    pub(crate) fn advance(&mut self, now: Instant) {
        let bucket = self.bucket_of(now);
        if bucket <= self.head {
            return;
        }
        let n = self.slots.len() as u64;
        let stale = (bucket - self.head).min(n);
        for k in 0..stale {
            let abs = bucket - k;
            self.slots[(abs % n) as usize] = T::default();
        }
        self.head = bucket;
    }

    /// The bucket for `now`, after advancing.
    pub(crate) fn current(&mut self, now: Instant) -> &mut T {
        self.advance(now);
        let n = self.slots.len() as u64;
        &mut self.slots[(self.head % n) as usize]
    }

    /// Every bucket in the window (call [`Self::advance`] first).
    pub(crate) fn buckets(&self) -> impl Iterator<Item = &T> {
        self.slots.iter()
    }

    /// Forget everything counted so far.
    pub(crate) fn clear(&mut self) {
        self.slots.fill(T::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(w: &RollingWindow<u32>) -> u32 {
        w.buckets().sum()
    }

    #[test]
    fn counts_expire_bucket_by_bucket() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = RollingWindow::<u32>::new(s(10), 10, t0);
        assert_eq!(w.span(), s(10));
        *w.current(t0) += 5;
        *w.current(t0 + s(3)) += 1;
        w.advance(t0 + s(9));
        assert_eq!(sum(&w), 6, "both still inside 10 s");
        w.advance(t0 + s(10));
        assert_eq!(sum(&w), 1, "bucket 0 fell out");
        w.advance(t0 + s(14));
        assert_eq!(sum(&w), 0);
    }

    #[test]
    fn regression_a_long_idle_gap_clears_every_bucket() {
        let t0 = Instant::now();
        let mut w = RollingWindow::<u32>::new(Duration::from_secs(10), 10, t0);
        for i in 0..10 {
            *w.current(t0 + Duration::from_secs(i)) += 1;
        }
        w.advance(t0 + Duration::from_secs(3600));
        assert_eq!(sum(&w), 0);
    }

    #[test]
    fn an_earlier_instant_counts_in_the_newest_bucket() {
        let t0 = Instant::now();
        let mut w = RollingWindow::<u32>::new(Duration::from_secs(10), 10, t0);
        *w.current(t0 + Duration::from_secs(5)) += 1;
        *w.current(t0 + Duration::from_secs(4)) += 1;
        w.advance(t0 + Duration::from_secs(14));
        assert_eq!(sum(&w), 2, "both counted at 5 s, still inside");
        w.advance(t0 + Duration::from_secs(15));
        assert_eq!(sum(&w), 0);
    }
}
