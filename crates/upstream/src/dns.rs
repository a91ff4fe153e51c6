//! DNS-named endpoints, the pure part: turn each resolution into the new endpoint set, what was
//! added and removed, and when to resolve again.
//!
//! Resolution happens off the request path (the proxy's resolver task); this type decides what
//! it means. A success replaces the set (sorted and de-duplicated, so the same answer in another
//! order is "unchanged" and endpoint indices stay stable) and schedules the next lookup at the
//! record TTL, clamped to `[min_refresh, interval]`. A failure — including an answer with no
//! addresses — keeps the last good set and retries sooner, with a back-off that doubles from
//! `backoff_base` up to `backoff_max` (and never past `interval`). An upstream never loses its
//! endpoints because a resolver hiccupped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Default longest time between two resolutions.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default shortest time between two resolutions (floor for tiny or zero TTLs).
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(1);
/// Default retry delay after the first failed resolution.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default longest retry delay after repeated failures.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(16);

/// Re-resolution settings for one DNS-named upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsConfig {
    pub interval: Duration,
    pub min_refresh: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            interval: DEFAULT_RESOLVE_INTERVAL,
            min_refresh: DEFAULT_MIN_REFRESH,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }
}

/// What the resolver returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Resolved {
        addrs: Vec<SocketAddr>,
        ttl: Duration,
    },
    Failed,
}

/// How the endpoint set fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsOutcome {
    /// New addresses in use.
    Updated,
    /// Same addresses as before.
    Unchanged,
    /// Resolution failed (or came back empty); the last good set stays, `failures` in a row.
    KeptLastGood { failures: u32 },
    /// Resolution failed and there never was a good set.
    NoAddresses { failures: u32 },
}

/// The result of applying one resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsUpdate {
    pub outcome: DnsOutcome,
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
    pub next_resolve: Instant,
}

/// The last good address set of one name, and its failure streak.
#[derive(Debug, Clone, Default)]
pub struct DnsState {
    addrs: Vec<SocketAddr>,
    failures: u32,
    resolved_once: bool,
}

impl DnsState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The addresses in use, sorted.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Apply a resolution that completed at `now`.
    pub fn apply(&mut self, cfg: &DnsConfig, result: Resolution, now: Instant) -> DnsUpdate {
        let (mut addrs, ttl) = match result {
            Resolution::Resolved { addrs, ttl } if !addrs.is_empty() => (addrs, ttl),
            _ => return self.failed(cfg, now),
        };
        self.failures = 0;
        self.resolved_once = true;
        addrs.sort_unstable();
        addrs.dedup();
        let added: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| self.addrs.binary_search(a).is_err())
            .copied()
            .collect();
        let removed: Vec<SocketAddr> = self
            .addrs
            .iter()
            .filter(|a| addrs.binary_search(a).is_err())
            .copied()
            .collect();
        let outcome = if added.is_empty() && removed.is_empty() {
            DnsOutcome::Unchanged
        } else {
            DnsOutcome::Updated
        };
        self.addrs = addrs;
        let wait = ttl.min(cfg.interval).max(cfg.min_refresh);
        DnsUpdate {
            outcome,
            added,
            removed,
            next_resolve: now + wait,
        }
    }

    fn failed(&mut self, cfg: &DnsConfig, now: Instant) -> DnsUpdate {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(20);
        let wait = cfg
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(cfg.backoff_max)
            .min(cfg.interval)
            .max(cfg.min_refresh);
        let failures = self.failures;
        let outcome = if self.resolved_once {
            DnsOutcome::KeptLastGood { failures }
        } else {
            DnsOutcome::NoAddresses { failures }
        };
        DnsUpdate {
            outcome,
            added: Vec::new(),
            removed: Vec::new(),
            next_resolve: now + wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn ok(list: &[&str], ttl: Duration) -> Resolution {
        Resolution::Resolved {
            addrs: addrs(list),
            ttl,
        }
    }

    #[test]
    fn first_answer_adds_everything_sorted_and_deduplicated() {
        let t0 = Instant::now();
        let mut d = DnsState::new();
        let u = d.apply(
            &DnsConfig::default(),
            ok(&["10.0.0.2:80", "10.0.0.1:80", "10.0.0.2:80"], 10 * S),
            t0,
        );
        assert_eq!(u.outcome, DnsOutcome::Updated);
        assert_eq!(u.added, addrs(&["10.0.0.1:80", "10.0.0.2:80"]));
        assert!(u.removed.is_empty());
        assert_eq!(d.addrs(), &addrs(&["10.0.0.1:80", "10.0.0.2:80"])[..]);
    }

    #[test]
    fn diff_between_answers() {
        let t0 = Instant::now();
        let cfg = DnsConfig::default();
        let mut d = DnsState::new();
        let _ = d.apply(
            &cfg,
            ok(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], 10 * S),
            t0,
        );
        let u = d.apply(&cfg, ok(&["10.0.0.3:80", "10.0.0.1:80"], 10 * S), t0);
        assert_eq!(u.outcome, DnsOutcome::Updated);
        assert_eq!((u.added, u.removed), (vec![], addrs(&["10.0.0.2:80"])));
        let u = d.apply(
            &cfg,
            ok(&["10.0.0.1:80", "10.0.0.3:80", "[::1]:80"], 10 * S),
            t0,
        );
        assert_eq!((u.added, u.removed), (addrs(&["[::1]:80"]), vec![]));
        let u = d.apply(
            &cfg,
            ok(&["[::1]:80", "10.0.0.3:80", "10.0.0.1:80"], 10 * S),
            t0,
        );
        assert_eq!(
            u.outcome,
            DnsOutcome::Unchanged,
            "same set in another order"
        );
    }

    #[test]
    fn next_resolve_is_the_ttl_clamped_to_floor_and_interval() {
        let t0 = Instant::now();
        let cfg = DnsConfig {
            interval: 30 * S,
            min_refresh: 2 * S,
            ..DnsConfig::default()
        };
        // (ttl, wait)
        for (ttl, wait) in [
            (Duration::ZERO, 2 * S),
            (S, 2 * S),
            (5 * S, 5 * S),
            (30 * S, 30 * S),
            (3600 * S, 30 * S),
        ] {
            let u = DnsState::new().apply(&cfg, ok(&["10.0.0.1:80"], ttl), t0);
            assert_eq!(u.next_resolve, t0 + wait, "ttl {ttl:?}");
        }
    }

    #[test]
    fn failure_keeps_the_last_good_set_and_backs_off() {
        let t0 = Instant::now();
        let cfg = DnsConfig {
            interval: 30 * S,
            min_refresh: S,
            backoff_base: S,
            backoff_max: 10 * S,
        };
        let mut d = DnsState::new();
        let _ = d.apply(&cfg, ok(&["10.0.0.1:80", "10.0.0.2:80"], 30 * S), t0);
        let waits: Vec<Duration> = (1..=6)
            .map(|n| {
                let u = d.apply(&cfg, Resolution::Failed, t0);
                assert_eq!(u.outcome, DnsOutcome::KeptLastGood { failures: n });
                assert!(u.added.is_empty() && u.removed.is_empty());
                u.next_resolve - t0
            })
            .collect();
        assert_eq!(waits, vec![S, 2 * S, 4 * S, 8 * S, 10 * S, 10 * S]);
        assert_eq!(d.addrs().len(), 2, "last good set kept");
        let u = d.apply(&cfg, ok(&["10.0.0.1:80", "10.0.0.2:80"], 30 * S), t0);
        assert_eq!(u.outcome, DnsOutcome::Unchanged);
        let u = d.apply(&cfg, Resolution::Failed, t0);
        assert_eq!(
            (u.outcome, u.next_resolve),
            (DnsOutcome::KeptLastGood { failures: 1 }, t0 + S),
            "streak reset"
        );
    }

    #[test]
    fn regression_empty_answer_does_not_empty_the_upstream() {
        let t0 = Instant::now();
        let cfg = DnsConfig::default();
        let mut d = DnsState::new();
        let _ = d.apply(&cfg, ok(&["10.0.0.1:80"], 30 * S), t0);
        let u = d.apply(&cfg, ok(&[], 30 * S), t0);
        assert_eq!(u.outcome, DnsOutcome::KeptLastGood { failures: 1 });
        assert_eq!(d.addrs(), &addrs(&["10.0.0.1:80"])[..]);
    }

    #[test]
    fn failure_before_any_success_reports_no_addresses_and_backoff_never_exceeds_interval() {
        let t0 = Instant::now();
        let cfg = DnsConfig {
            interval: 3 * S,
            min_refresh: S,
            backoff_base: S,
            backoff_max: 60 * S,
        };
        let mut d = DnsState::new();
        let outcomes: Vec<(DnsOutcome, Duration)> = (0..4)
            .map(|_| d.apply(&cfg, Resolution::Failed, t0))
            .map(|u| (u.outcome, u.next_resolve - t0))
            .collect();
        let want = (1..=4).map(|f| {
            (
                DnsOutcome::NoAddresses { failures: f },
                [S, 2 * S, 3 * S, 3 * S][f as usize - 1],
            )
        });
        assert_eq!(outcomes, want.collect::<Vec<_>>());
        assert!(d.addrs().is_empty());
    }
}
