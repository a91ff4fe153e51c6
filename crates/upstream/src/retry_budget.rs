//! A retry budget: retries may be at most a share of recent requests, plus a small floor, so
//! retries cannot multiply the load on an upstream that is already failing.
//!
//! Over a sliding window (10 × 1 s buckets by default) the budget counts original requests and
//! retries. A retry is allowed while `retries < percent% × requests + min_retries_per_sec ×
//! window`. The floor lets a quiet route still retry the odd failure; the percentage caps the
//! amplification of an outage at `1 + percent%` (plus the floor). Counting is two integers in a
//! fixed ring of buckets: no allocation per request.

use std::time::{Duration, Instant};

use crate::window::RollingWindow;

/// Default share of requests that may be retried, in percent.
pub const DEFAULT_BUDGET_PERCENT: u32 = 20;
/// Default retries per second always allowed, whatever the traffic.
pub const DEFAULT_MIN_RETRIES_PER_SEC: u32 = 10;
/// Default window over which requests and retries are counted.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Buckets in the window.
const BUCKETS: u32 = 10;

/// Retry budget settings (per route or per group, per shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    pub percent: u32,
    pub min_retries_per_sec: u32,
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            percent: DEFAULT_BUDGET_PERCENT,
            min_retries_per_sec: DEFAULT_MIN_RETRIES_PER_SEC,
            window: DEFAULT_BUDGET_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    requests: u32,
    retries: u32,
}

/// The budget's ledger on one shard.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    cfg: RetryBudgetConfig,
    window: RollingWindow<Counts>,
}

impl RetryBudget {
    pub fn new(cfg: RetryBudgetConfig, now: Instant) -> Self {
        let window = RollingWindow::new(cfg.window, BUCKETS, now);
        RetryBudget { cfg, window }
    }

    /// Count an original request (not a retry): each one earns `percent`% of a retry.
    #[inline]
    pub fn record_request(&mut self, now: Instant) {
        let c = self.window.current(now);
        c.requests = c.requests.saturating_add(1);
    }

    /// Take one retry from the budget if there is one; `false` means don't retry.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.remaining(now) == 0 {
            return false;
        }
        let c = self.window.current(now);
        c.retries = c.retries.saturating_add(1);
        true
    }

    /// Retries still allowed in the window at `now`.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.window.advance(now);
        let (requests, retries) = self.window.buckets().fold((0u64, 0u64), |(q, r), c| {
            (q + u64::from(c.requests), r + u64::from(c.retries))
        });
        let floor =
            u64::from(self.cfg.min_retries_per_sec) * self.window.span().as_millis() as u64 / 1000;
        let allowance = requests * u64::from(self.cfg.percent) / 100 + floor;
        allowance.saturating_sub(retries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn budget(percent: u32, min_per_sec: u32, t0: Instant) -> RetryBudget {
        RetryBudget::new(
            RetryBudgetConfig {
                percent,
                min_retries_per_sec: min_per_sec,
                window: 10 * S,
            },
            t0,
        )
    }

    fn withdraw_all(b: &mut RetryBudget, now: Instant) -> u32 {
        let mut n = 0;
        while b.try_withdraw(now) {
            n += 1;
            assert!(n <= 1_000_000, "budget never runs out");
        }
        n
    }

    #[test]
    fn allowance_table() {
        // (percent, min/s, requests, retries allowed)
        let cases = [
            (20, 0, 100, 20),
            (20, 0, 4, 0),
            (20, 0, 5, 1),
            (10, 1, 100, 20),
            (0, 0, 1000, 0),
            (100, 0, 7, 7),
            (20, 2, 0, 20),
        ];
        for (percent, min, requests, want) in cases {
            let t0 = Instant::now();
            let mut b = budget(percent, min, t0);
            for _ in 0..requests {
                b.record_request(t0);
            }
            assert_eq!(
                b.remaining(t0),
                u64::from(want),
                "{percent}% + {min}/s of {requests}"
            );
            assert_eq!(
                withdraw_all(&mut b, t0),
                want,
                "{percent}% + {min}/s of {requests}"
            );
            assert_eq!(b.remaining(t0), 0);
        }
    }

    #[test]
    fn exhausted_budget_refills_as_retries_leave_the_window() {
        let t0 = Instant::now();
        let mut b = budget(20, 0, t0);
        for sec in 0..10 {
            for _ in 0..10 {
                b.record_request(t0 + sec * S);
            }
        }
        assert_eq!(
            withdraw_all(&mut b, t0 + 9 * S),
            20,
            "100 requests in window"
        );
        assert!(!b.try_withdraw(t0 + 9 * S));
        // At 10 s the first second's 10 requests leave the window; the retries (taken at 9 s)
        // stay until 19 s.
        assert_eq!(b.remaining(t0 + 10 * S), 0);
        for _ in 0..5 {
            b.record_request(t0 + 10 * S);
        }
        assert_eq!(b.remaining(t0 + 10 * S), 0, "95 requests earn 19, 20 spent");
        for _ in 0..5 {
            b.record_request(t0 + 10 * S);
        }
        assert_eq!(
            b.remaining(t0 + 10 * S),
            0,
            "100 again: 20 earned, 20 spent"
        );
        assert_eq!(
            b.remaining(t0 + 19 * S),
            2,
            "retries gone, 10 requests at 10 s remain"
        );
    }

    #[test]
    fn floor_lets_a_quiet_route_retry() {
        let t0 = Instant::now();
        let mut b = budget(20, 1, t0);
        b.record_request(t0);
        assert_eq!(withdraw_all(&mut b, t0), 10, "1/s over 10 s");
        assert!(
            b.try_withdraw(t0 + 10 * S),
            "refilled once the window moved on"
        );
    }

    #[test]
    fn regression_retries_cannot_amplify_an_outage() {
        // Every try fails and every failure asks for a retry, 100 requests a second for a
        // minute: the retries stay within 20 % of the requests plus the 10 s floor.
        let t0 = Instant::now();
        let mut b = budget(20, 1, t0);
        let (mut requests, mut retries) = (0u64, 0u64);
        for ms in (0..60_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            b.record_request(now);
            requests += 1;
            while b.try_withdraw(now) {
                retries += 1;
            }
        }
        let ratio = retries as f64 / requests as f64;
        assert!(
            ratio <= 0.20 + 10.0 / 1000.0 + 0.01,
            "retry ratio {ratio:.3}"
        );
        assert!(ratio >= 0.15, "budget was spent: {ratio:.3}");
    }
}
