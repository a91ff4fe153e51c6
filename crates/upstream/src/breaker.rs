//! Circuit breaker per upstream group: Closed → Open → HalfOpen → Closed, plus a cap on
//! concurrent requests.
//!
//! - **Closed**: requests flow; outcomes land in a rolling window of buckets. When the window
//!   holds at least `min_volume` requests and `error_percent` or more of them failed, it trips.
//! - **Open**: every request is refused at once ([`Rejected::Open`], a fast 503) until
//!   `sleep_window` has passed.
//! - **HalfOpen**: up to `half_open_trials` requests go through; if that many succeed it closes
//!   (with a fresh window), the first failure re-opens it for another sleep window.
//!
//! Independently, at most `max_concurrent` requests may be in flight
//! ([`Rejected::MaxConcurrent`]). Every admitted request gets a [`Ticket`] that must come back
//! through [`Breaker::record`], with [`Verdict::Abandoned`] when the client went away, so the
//! in-flight count stays exact. Each state change is returned as a [`Transition`] whose
//! `Display` is the log line.

use std::fmt;
use std::time::{Duration, Instant};

use crate::outcome::Outcome;
use crate::window::RollingWindow;

/// Default rolling window over which the error rate is measured.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default number of buckets in the window (1 s each by default).
pub const DEFAULT_BUCKETS: u32 = 10;
/// Default minimum requests in the window before the error rate can trip the breaker.
pub const DEFAULT_MIN_VOLUME: u32 = 20;
/// Default failure percentage that trips the breaker.
pub const DEFAULT_ERROR_PERCENT: u8 = 50;
/// Default time the breaker stays open before trying again.
pub const DEFAULT_SLEEP_WINDOW: Duration = Duration::from_secs(5);
/// Default trial requests admitted while half-open; all must succeed to close.
pub const DEFAULT_HALF_OPEN_TRIALS: u32 = 3;
/// Default cap on requests in flight to the group, per shard.
pub const DEFAULT_MAX_CONCURRENT: u32 = 1024;

/// Breaker settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    pub window: Duration,
    pub buckets: u32,
    pub min_volume: u32,
    pub error_percent: u8,
    pub sleep_window: Duration,
    pub half_open_trials: u32,
    pub max_concurrent: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: DEFAULT_WINDOW,
            buckets: DEFAULT_BUCKETS,
            min_volume: DEFAULT_MIN_VOLUME,
            error_percent: DEFAULT_ERROR_PERCENT,
            sleep_window: DEFAULT_SLEEP_WINDOW,
            half_open_trials: DEFAULT_HALF_OPEN_TRIALS,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
        }
    }
}

/// The breaker's state, for metrics and the admin view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The breaker is open; it will let a trial through after `retry_after`.
    Open { retry_after: Duration },
    /// Half-open and all trial slots are taken.
    HalfOpenBusy,
    /// `max_concurrent` requests are already in flight.
    MaxConcurrent,
}

/// How an admitted request ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
    /// Ended without a verdict (client went away, request cancelled): frees the slot only.
    Abandoned,
}

impl From<Outcome> for Verdict {
    fn from(outcome: Outcome) -> Self {
        if outcome.is_server_error() {
            Verdict::Failure
        } else {
            Verdict::Success
        }
    }
}

/// Proof of admission; give it back to [`Breaker::record`] exactly once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an admitted request must be recorded, or the in-flight count leaks"]
pub struct Ticket {
    /// The state epoch it was admitted in; outcomes from an older epoch don't steer the state.
    epoch: u32,
    trial: bool,
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Closed → Open: `failed` of `total` requests failed within `window`.
    Tripped {
        failed: u32,
        total: u32,
        window: Duration,
    },
    /// Open → HalfOpen: the sleep window passed.
    SleepElapsed { slept: Duration },
    /// HalfOpen → Open: a trial request failed.
    TrialFailed,
    /// HalfOpen → Closed: this many trials succeeded.
    TrialsSucceeded { trials: u32 },
}

/// A state change, to be logged (and counted, once metrics exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub breaker: Box<str>,
    pub from: BreakerState,
    pub to: BreakerState,
    pub cause: Cause,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "breaker {:?} {} -> {}: ",
            self.breaker, self.from, self.to
        )?;
        match self.cause {
            Cause::Tripped {
                failed,
                total,
                window,
            } => {
                let pct = u64::from(failed) * 100 / u64::from(total.max(1));
                write!(
                    f,
                    "{failed}/{total} failed ({pct}%) in {}s",
                    window.as_secs()
                )
            }
            Cause::SleepElapsed { slept } => {
                write!(f, "sleep window of {}ms elapsed", slept.as_millis())
            }
            Cause::TrialFailed => f.write_str("trial request failed"),
            Cause::TrialsSucceeded { trials } => write!(f, "{trials} trial requests succeeded"),
        }
    }
}

/// What [`Breaker::admit`] decided, and the transition it caused (Open → HalfOpen), if any.
#[derive(Debug)]
#[must_use]
pub struct Admission {
    pub decision: Result<Ticket, Rejected>,
    pub transition: Option<Transition>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    ok: u32,
    failed: u32,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { since: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// Counters for metrics and the admin view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerStats {
    pub state: BreakerState,
    pub in_flight: u32,
    pub window_requests: u32,
    pub window_failures: u32,
    pub times_opened: u64,
}

/// One group's breaker on one shard.
#[derive(Debug, Clone)]
pub struct Breaker {
    name: Box<str>,
    cfg: BreakerConfig,
    phase: Phase,
    epoch: u32,
    window: RollingWindow<Counts>,
    in_flight: u32,
    times_opened: u64,
}

impl Breaker {
    /// A closed breaker named after its group (the name appears in transition log lines).
    pub fn new(name: &str, cfg: BreakerConfig, now: Instant) -> Self {
        let window = RollingWindow::new(cfg.window, cfg.buckets, now);
        Breaker {
            name: name.into(),
            cfg,
            phase: Phase::Closed,
            epoch: 0,
            window,
            in_flight: 0,
            times_opened: 0,
        }
    }

    /// The current state (Open stays Open until an `admit` after the sleep window).
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Requests admitted and not yet recorded.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Counters for metrics.
    pub fn stats(&mut self, now: Instant) -> BreakerStats {
        let (ok, failed) = self.window_counts(now);
        BreakerStats {
            state: self.state(),
            in_flight: self.in_flight,
            window_requests: ok + failed,
            window_failures: failed,
            times_opened: self.times_opened,
        }
    }

    /// May a request go to this group now?
    pub fn admit(&mut self, now: Instant) -> Admission {
        let mut transition = None;
        if let Phase::Open { since } = self.phase {
            let slept = now.saturating_duration_since(since);
            if slept < self.cfg.sleep_window {
                let retry_after = self.cfg.sleep_window - slept;
                return Admission {
                    decision: Err(Rejected::Open { retry_after }),
                    transition,
                };
            }
            transition = Some(self.go(BreakerState::HalfOpen, Cause::SleepElapsed { slept }, now));
        }
        if self.in_flight >= self.cfg.max_concurrent {
            return Admission {
                decision: Err(Rejected::MaxConcurrent),
                transition,
            };
        }
        let trial = match &mut self.phase {
            Phase::HalfOpen { admitted, .. } => {
                if *admitted >= self.cfg.half_open_trials.max(1) {
                    return Admission {
                        decision: Err(Rejected::HalfOpenBusy),
                        transition,
                    };
                }
                *admitted += 1;
                true
            }
            _ => false,
        };
        self.in_flight += 1;
        Admission {
            decision: Ok(Ticket {
                epoch: self.epoch,
                trial,
            }),
            transition,
        }
    }

    /// Record how an admitted request ended; returns the transition it caused, if any.
    pub fn record(&mut self, ticket: Ticket, verdict: Verdict, now: Instant) -> Option<Transition> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if ticket.epoch != self.epoch {
            return None;
        }
        match (self.phase, verdict) {
            (_, Verdict::Abandoned) => {
                if let Phase::HalfOpen { admitted, .. } = &mut self.phase
                    && ticket.trial
                {
                    *admitted = admitted.saturating_sub(1);
                }
                None
            }
            (Phase::Closed, verdict) => {
                let bucket = self.window.current(now);
                match verdict {
                    Verdict::Failure => bucket.failed += 1,
                    _ => bucket.ok += 1,
                }
                self.maybe_trip(now)
            }
            (Phase::Open { .. }, _) => None,
            (Phase::HalfOpen { .. }, Verdict::Failure) => {
                Some(self.go(BreakerState::Open, Cause::TrialFailed, now))
            }
            (
                Phase::HalfOpen {
                    admitted,
                    succeeded,
                },
                Verdict::Success,
            ) => {
                let succeeded = succeeded + 1;
                let trials = self.cfg.half_open_trials.max(1);
                if succeeded >= trials {
                    return Some(self.go(
                        BreakerState::Closed,
                        Cause::TrialsSucceeded { trials },
                        now,
                    ));
                }
                self.phase = Phase::HalfOpen {
                    admitted,
                    succeeded,
                };
                None
            }
        }
    }

    fn window_counts(&mut self, now: Instant) -> (u32, u32) {
        self.window.advance(now);
        self.window
            .buckets()
            .fold((0, 0), |(ok, failed), c| (ok + c.ok, failed + c.failed))
    }

    fn maybe_trip(&mut self, now: Instant) -> Option<Transition> {
        let (ok, failed) = self.window_counts(now);
        let total = ok + failed;
        let over = u64::from(failed) * 100 >= u64::from(self.cfg.error_percent) * u64::from(total);
        if total < self.cfg.min_volume.max(1) || !over {
            return None;
        }
        let window = self.window.span();
        Some(self.go(
            BreakerState::Open,
            Cause::Tripped {
                failed,
                total,
                window,
            },
            now,
        ))
    }

    fn go(&mut self, to: BreakerState, cause: Cause, now: Instant) -> Transition {
        let from = self.state();
        self.epoch = self.epoch.wrapping_add(1);
        self.phase = match to {
            BreakerState::Closed => {
                self.window.clear();
                Phase::Closed
            }
            BreakerState::Open => {
                self.times_opened += 1;
                Phase::Open { since: now }
            }
            BreakerState::HalfOpen => Phase::HalfOpen {
                admitted: 0,
                succeeded: 0,
            },
        };
        Transition {
            breaker: self.name.clone(),
            from,
            to,
            cause,
        }
    }
}

#[cfg(test)]
mod tests;
