//! Passive health: eject endpoints that fail live traffic, for a back-off that grows on repeat.
//!
//! Per endpoint, two streaks are counted from real requests: consecutive server errors (5xx,
//! resets, per-try timeouts) and consecutive transport failures (a connect that failed, or a
//! connection closed before any response byte). A streak reaching its threshold ejects the
//! endpoint for `base_ejection × times ejected`, capped at `max_ejection`. An endpoint that
//! then behaves for `max_ejection` after its last ejection ended starts again from
//! `base_ejection`.
//!
//! **On by default.** Without an `[outlier]` section a group still routes around a dead
//! endpoint: one transport failure ejects it for 1 s, then 2 s, 3 s ... up to 30 s while it
//! keeps failing (nginx's `max_fails=1 fail_timeout=10s` in spirit), and server errors eject
//! nothing (an application's 5xx says nothing about the endpoint's transport). When an
//! ejection ends the endpoint is *on probation*: it takes one request at a time (the caller
//! asks [`OutlierDetector::on_probation`]) until one succeeds, so a still-dead endpoint costs
//! one try per ejection, not a burst.
//!
//! Never more than `max_ejection_percent` of the group (rounded down) is ejected at once, so a
//! group-wide failure degrades to "try everyone" rather than "no one"; a refused ejection is
//! reported too, and its streak restarts so the log is not flooded. A group too small to eject
//! anyone (a single endpoint) reports nothing.
//!
//! Ejection ends by the clock: [`OutlierDetector::is_ejected`] compares with `now`, and
//! [`OutlierDetector::expire`] reports the endpoints whose ejection ended (for the log line).
//! The detector is per shard: each shard ejects on what it sees, which is what keeps it off
//! any shared path; a bad endpoint fails on every shard, so every shard soon agrees.

use std::fmt;
use std::time::{Duration, Instant};

use crate::outcome::Outcome;

/// Default consecutive server errors that eject an endpoint (0 disables): off, since a 5xx is
/// usually the application's answer, not the endpoint failing.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 0;
/// Default consecutive transport failures (connect failures, resets before any response
/// byte) that eject an endpoint (0 disables): the first one, as nginx's `max_fails=1`.
pub const DEFAULT_CONSECUTIVE_CONNECT_FAILURES: u32 = 1;
/// Default first ejection time: short, since one failure is enough to eject.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(1);
/// Default longest ejection time.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(30);
/// Default share of a group that may be ejected at once.
pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 50;

/// Outlier ejection settings for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_connect_failures: DEFAULT_CONSECUTIVE_CONNECT_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

/// Which streak crossed its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectCause {
    Consecutive5xx(u32),
    ConnectFailures(u32),
}

impl fmt::Display for EjectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EjectCause::Consecutive5xx(n) => write!(f, "{n} consecutive server errors"),
            EjectCause::ConnectFailures(n) => write!(f, "{n} consecutive connect failures"),
        }
    }
}

/// A change to be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierEvent {
    Ejected {
        endpoint: usize,
        cause: EjectCause,
        duration: Duration,
        times: u32,
    },
    /// The ejection cap refused an ejection.
    Spared {
        endpoint: usize,
        cause: EjectCause,
        ejected: usize,
        max: usize,
    },
    Returned {
        endpoint: usize,
    },
}

impl fmt::Display for OutlierEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutlierEvent::Ejected {
                endpoint,
                cause,
                duration,
                times,
            } => write!(
                f,
                "endpoint #{endpoint} ejected for {}s after {cause} (ejection #{times})",
                duration.as_secs()
            ),
            OutlierEvent::Spared {
                endpoint,
                cause,
                ejected,
                max,
            } => write!(
                f,
                "endpoint #{endpoint} not ejected after {cause}: {ejected} of at most {max} already ejected"
            ),
            OutlierEvent::Returned { endpoint } => {
                write!(f, "endpoint #{endpoint} back from ejection")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Streaks {
    server_errors: u32,
    connect_failures: u32,
    times_ejected: u32,
    /// When the current or last ejection ends.
    ejected_until: Option<Instant>,
    /// Ejected and its return not yet reported by `expire`.
    reported_out: bool,
    /// Ejected, and no request has succeeded since: after the ejection
    /// ends it takes one request at a time.
    probation: bool,
}

/// Outlier state for one group on one shard.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    cfg: OutlierConfig,
    endpoints: Vec<Streaks>,
}

impl OutlierDetector {
    /// Fresh state for `n` endpoints.
    pub fn new(cfg: OutlierConfig, n: usize) -> Self {
        OutlierDetector {
            cfg,
            endpoints: vec![Streaks::default(); n],
        }
    }

    /// Start over for a new endpoint set of size `n` (indices changed meaning).
    pub fn reset(&mut self, n: usize) {
        self.endpoints.clear();
        self.endpoints.resize(n, Streaks::default());
    }

    /// Is endpoint `i` ejected at `now`? Unknown indices are not.
    #[inline]
    pub fn is_ejected(&self, i: usize, now: Instant) -> bool {
        self.endpoints
            .get(i)
            .and_then(|e| e.ejected_until)
            .is_some_and(|until| now < until)
    }

    /// Is endpoint `i` back from an ejection with no success since? The
    /// caller then lets it take one request at a time.
    #[inline]
    pub fn on_probation(&self, i: usize, now: Instant) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.probation && e.ejected_until.is_some_and(|until| now >= until))
    }

    /// How many endpoints are ejected at `now`.
    pub fn ejected_count(&self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| self.is_ejected(i, now))
            .count()
    }

    /// The most endpoints that may be ejected at once.
    pub fn max_ejected(&self) -> usize {
        self.endpoints.len() * usize::from(self.cfg.max_ejection_percent.min(100)) / 100
    }

    /// When the next ejection ends, for the caller's timer.
    pub fn next_return(&self, now: Instant) -> Option<Instant> {
        self.endpoints
            .iter()
            .filter_map(|e| e.ejected_until)
            .filter(|&t| t > now)
            .min()
    }

    /// Feed the outcome of one request to endpoint `i`.
    pub fn record(&mut self, i: usize, outcome: Outcome, now: Instant) -> Option<OutlierEvent> {
        if i >= self.endpoints.len() || self.is_ejected(i, now) {
            // Requests that were in flight when it was ejected say nothing new.
            return None;
        }
        let e = &mut self.endpoints[i];
        let cause = match outcome {
            Outcome::ConnectFailed | Outcome::ResetBeforeResponse => {
                e.connect_failures += 1;
                if outcome == Outcome::ResetBeforeResponse {
                    e.server_errors += 1;
                }
                let (conn, errors) = (
                    self.cfg.consecutive_connect_failures,
                    self.cfg.consecutive_5xx,
                );
                if conn > 0 && e.connect_failures >= conn {
                    Some(EjectCause::ConnectFailures(e.connect_failures))
                } else {
                    (errors > 0 && e.server_errors >= errors)
                        .then_some(EjectCause::Consecutive5xx(e.server_errors))
                }
            }
            o if o.is_server_error() => {
                e.connect_failures = 0;
                e.server_errors += 1;
                let limit = self.cfg.consecutive_5xx;
                (limit > 0 && e.server_errors >= limit)
                    .then_some(EjectCause::Consecutive5xx(e.server_errors))
            }
            _ => {
                e.connect_failures = 0;
                e.server_errors = 0;
                e.probation = false;
                None
            }
        }?;
        if self.max_ejected() == 0 {
            // A group too small to eject anything (one endpoint): nothing to
            // report on every failure.
            let e = &mut self.endpoints[i];
            (e.server_errors, e.connect_failures) = (0, 0);
            return None;
        }
        Some(self.eject(i, cause, now))
    }

    fn eject(&mut self, i: usize, cause: EjectCause, now: Instant) -> OutlierEvent {
        let ejected = self.ejected_count(now);
        let max = self.max_ejected();
        let cfg = &self.cfg;
        let e = &mut self.endpoints[i];
        e.server_errors = 0;
        e.connect_failures = 0;
        if ejected >= max {
            return OutlierEvent::Spared {
                endpoint: i,
                cause,
                ejected,
                max,
            };
        }
        if let Some(last_end) = e.ejected_until
            && now.saturating_duration_since(last_end) >= cfg.max_ejection
        {
            e.times_ejected = 0;
        }
        e.times_ejected = e.times_ejected.saturating_add(1);
        let duration = cfg
            .base_ejection
            .saturating_mul(e.times_ejected)
            .min(cfg.max_ejection);
        e.ejected_until = Some(now + duration);
        e.reported_out = true;
        e.probation = true;
        OutlierEvent::Ejected {
            endpoint: i,
            cause,
            duration,
            times: e.times_ejected,
        }
    }

    /// Report every endpoint whose ejection has ended by `now` (once each).
    pub fn expire(&mut self, now: Instant, mut emit: impl FnMut(OutlierEvent)) {
        for (endpoint, e) in self.endpoints.iter_mut().enumerate() {
            if e.reported_out && e.ejected_until.is_some_and(|until| until <= now) {
                e.reported_out = false;
                emit(OutlierEvent::Returned { endpoint });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            consecutive_connect_failures: 2,
            base_ejection: 10 * S,
            max_ejection: 35 * S,
            max_ejection_percent: 50,
        }
    }

    /// Feed `outcomes` to endpoint `i`; the events produced.
    fn feed(
        d: &mut OutlierDetector,
        i: usize,
        outcomes: &[Outcome],
        now: Instant,
    ) -> Vec<OutlierEvent> {
        outcomes
            .iter()
            .filter_map(|&o| d.record(i, o, now))
            .collect()
    }

    const E500: Outcome = Outcome::Response(500);
    const OK: Outcome = Outcome::Response(200);
    const CONN: Outcome = Outcome::ConnectFailed;

    #[test]
    fn streak_thresholds() {
        let cases: &[(&str, &[Outcome], bool)] = &[
            ("three 5xx", &[E500, E500, E500], true),
            ("two 5xx", &[E500, E500], false),
            (
                "success breaks the streak",
                &[E500, E500, OK, E500, E500],
                false,
            ),
            (
                "404 is a success",
                &[E500, E500, Outcome::Response(404), E500],
                false,
            ),
            (
                "resets and timeouts count as 5xx",
                &[Outcome::ResetBeforeResponse, Outcome::TryTimeout, E500],
                true,
            ),
            ("two connect failures", &[CONN, CONN], true),
            (
                "a reset before any response byte is a transport failure",
                &[Outcome::ResetBeforeResponse, CONN],
                true,
            ),
            (
                "a 5xx breaks the connect streak",
                &[CONN, E500, CONN],
                false,
            ),
            (
                "connect failures don't break the 5xx streak",
                &[E500, E500, CONN, E500],
                true,
            ),
        ];
        for (name, outcomes, ejects) in cases {
            let t0 = Instant::now();
            let mut d = OutlierDetector::new(cfg(), 4);
            let events = feed(&mut d, 1, outcomes, t0);
            assert_eq!(d.is_ejected(1, t0), *ejects, "{name}: {events:?}");
            assert_eq!(events.len(), usize::from(*ejects), "{name}");
        }
    }

    #[test]
    fn ejection_grows_on_repeat_caps_and_ends_by_the_clock() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(), 4);
        let mut now = t0;
        for (times, secs) in [(1, 10), (2, 20), (3, 30), (4, 35)] {
            let events = feed(&mut d, 0, &[E500; 3], now);
            let want = OutlierEvent::Ejected {
                endpoint: 0,
                cause: EjectCause::Consecutive5xx(3),
                duration: secs * S,
                times,
            };
            assert_eq!(events, vec![want]);
            assert!(d.is_ejected(0, now + (secs * S - S)));
            assert_eq!(d.next_return(now), Some(now + secs * S));
            now += secs * S;
            assert!(!d.is_ejected(0, now), "back after {secs}s");
        }
        assert_eq!(
            feed(&mut d, 0, &[E500; 3], now)[0].to_string(),
            "endpoint #0 ejected for 35s after 3 consecutive server errors (ejection #5)"
        );
    }

    #[test]
    fn multiplier_resets_after_a_quiet_max_ejection_period() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(), 4);
        feed(&mut d, 0, &[E500; 3], t0);
        let back = t0 + 10 * S;
        let events = feed(&mut d, 0, &[E500; 3], back + 35 * S);
        assert!(
            matches!(events[..], [OutlierEvent::Ejected { times: 1, duration, .. }] if duration == 10 * S)
        );
    }

    #[test]
    fn ejection_cap_spares_the_rest_of_the_group() {
        // (group size, 5xx-streak endpoints, ejected at once)
        let cases = [(4, 4, 2), (3, 3, 1), (1, 1, 0), (10, 7, 5), (2, 1, 1)];
        for (n, failing, want) in cases {
            let t0 = Instant::now();
            let mut d = OutlierDetector::new(cfg(), n);
            let mut spared = 0;
            for i in 0..failing {
                for e in feed(&mut d, i, &[E500; 3], t0) {
                    if let OutlierEvent::Spared { ejected, max, .. } = e {
                        assert_eq!((ejected, max), (want, want));
                        spared += 1;
                    }
                }
            }
            assert_eq!(d.ejected_count(t0), want, "group of {n}");
            // A group that can eject no one says nothing at every failure.
            let quiet = d.max_ejected() == 0;
            assert_eq!(
                spared,
                if quiet { 0 } else { failing - want },
                "group of {n}"
            );
        }
    }

    #[test]
    fn cap_frees_up_when_an_ejection_ends() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(), 2);
        feed(&mut d, 0, &[E500; 3], t0);
        assert!(matches!(
            feed(&mut d, 1, &[E500; 3], t0)[..],
            [OutlierEvent::Spared { .. }]
        ));
        let later = t0 + 10 * S;
        assert!(matches!(
            feed(&mut d, 1, &[E500; 3], later)[..],
            [OutlierEvent::Ejected { endpoint: 1, .. }]
        ));
    }

    #[test]
    fn expire_reports_each_return_once() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(), 4);
        feed(&mut d, 2, &[CONN; 2], t0);
        let mut seen = Vec::new();
        d.expire(t0 + 9 * S, |e| seen.push(e));
        assert!(seen.is_empty());
        d.expire(t0 + 10 * S, |e| seen.push(e));
        d.expire(t0 + 11 * S, |e| seen.push(e));
        assert_eq!(seen, vec![OutlierEvent::Returned { endpoint: 2 }]);
    }

    #[test]
    fn regression_outcomes_of_requests_in_flight_at_ejection_are_ignored() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(cfg(), 4);
        feed(&mut d, 0, &[E500; 3], t0);
        assert!(feed(&mut d, 0, &[E500; 6], t0 + S).is_empty());
        assert!(
            feed(&mut d, 0, &[E500; 2], t0 + 10 * S).is_empty(),
            "streak restarted at zero"
        );
    }

    #[test]
    fn disabled_thresholds_never_eject() {
        let t0 = Instant::now();
        let off = OutlierConfig {
            consecutive_5xx: 0,
            consecutive_connect_failures: 0,
            ..cfg()
        };
        let mut d = OutlierDetector::new(off, 2);
        assert!(
            feed(
                &mut d,
                0,
                &[E500, CONN, E500, CONN, E500, E500, CONN, CONN],
                t0
            )
            .is_empty()
        );
        assert!(d.record(9, E500, t0).is_none(), "unknown index ignored");
    }

    #[test]
    fn the_default_ejects_at_the_first_transport_failure_and_grows_while_it_fails() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
        // Server errors alone eject nothing by default.
        assert!(feed(&mut d, 0, &[E500; 20], t0).is_empty());
        // (offset in ms, outcome, ejected right after, on probation right after)
        let steps: &[(u64, Outcome, bool, bool)] = &[
            (0, CONN, true, false),
            (999, CONN, true, false),   // in flight when ejected: ignored
            (1_000, CONN, true, false), // the probe fails: 2 s now
            (2_999, OK, true, false),
            (3_000, Outcome::ResetBeforeResponse, true, false), // 3 s
            (6_000, OK, false, false),                          // the probe succeeds
            (6_001, CONN, true, false), // 4 s: the multiplier holds until a quiet max_ejection
        ];
        for &(ms, outcome, ejected, probation) in steps {
            let now = t0 + Duration::from_millis(ms);
            assert!(
                !d.is_ejected(0, now) || ms == 999 || ms == 2_999,
                "at {ms} ms"
            );
            d.record(0, outcome, now);
            assert_eq!(
                d.is_ejected(0, now),
                ejected,
                "ejected after {outcome} at {ms} ms"
            );
            assert_eq!(d.on_probation(0, now), probation, "probation at {ms} ms");
        }
        assert!(d.on_probation(0, t0 + Duration::from_millis(10_001)));
        assert!(!d.is_ejected(0, t0 + Duration::from_millis(10_001)));
    }

    #[test]
    fn a_single_endpoint_group_is_never_ejected_and_logs_nothing() {
        let t0 = Instant::now();
        let mut d = OutlierDetector::new(OutlierConfig::default(), 1);
        assert!(feed(&mut d, 0, &[CONN; 10], t0).is_empty());
        assert!(!d.is_ejected(0, t0));
    }
}
