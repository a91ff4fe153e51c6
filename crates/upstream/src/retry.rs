//! Retry decisions: whether a failed try may be retried, and how long the next try may take.
//!
//! A try is retried only when all of these hold, checked in this order (the first that fails
//! is the [`StopReason`]):
//!
//! 1. the outcome is in the policy's `retry_on` set (connect failure, reset before any response
//!    byte, per-try timeout, or a listed status such as 502/503/504); a reset after the
//!    response started is never retried;
//! 2. the request may be sent again: the method is idempotent (RFC 9110 §9.2.2) or the route
//!    opted in, and its body (if any) can be replayed — unless the try failed to connect, in
//!    which case no byte left the gateway and any request is safe to send elsewhere;
//! 3. fewer than `max_attempts` tries were made;
//! 4. time remains before the overall deadline;
//! 5. the [`RetryBudget`] has a retry to spare (checked last, so a refused retry costs nothing).
//!
//! The retry should go to a different endpoint: [`RetryState::tried`] feeds
//! [`crate::balance::BalancerKind::pick_retry`].

use std::fmt;
use std::time::{Duration, Instant};

use crate::outcome::Outcome;
use crate::retry_budget::RetryBudget;

/// Most tries (first + retries) any policy may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 8;
/// Default tries per request: the first and one retry.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;
/// Default time one try may take until the response head.
pub const DEFAULT_PER_TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time all tries together may take.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15);
/// Default statuses that are retried.
pub const DEFAULT_RETRY_STATUSES: [u16; 3] = [502, 503, 504];

/// Is `method` idempotent per RFC 9110 §9.2.2 (GET, HEAD, OPTIONS, TRACE, PUT, DELETE)?
/// Methods are case-sensitive; unknown methods are not idempotent.
pub fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// Which failures are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset_before_response: bool,
    pub try_timeout: bool,
    pub statuses: Box<[u16]>,
}

impl Default for RetryOn {
    fn default() -> Self {
        RetryOn {
            connect_failure: true,
            reset_before_response: true,
            try_timeout: true,
            statuses: DEFAULT_RETRY_STATUSES.into(),
        }
    }
}

impl RetryOn {
    /// Is this outcome one the policy retries (before the other conditions)?
    pub fn matches(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::ConnectFailed => self.connect_failure,
            Outcome::ResetBeforeResponse => self.reset_before_response,
            Outcome::TryTimeout => self.try_timeout,
            Outcome::Response(status) => self.statuses.contains(&status),
            Outcome::ResetAfterResponse => false,
        }
    }
}

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, first included (1 = no retries); clamped to [`MAX_ATTEMPTS_LIMIT`].
    pub max_attempts: u32,
    pub retry_on: RetryOn,
    /// The route opts in to retrying non-idempotent methods.
    pub non_idempotent: bool,
    pub per_try_timeout: Duration,
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_on: RetryOn::default(),
            non_idempotent: false,
            per_try_timeout: DEFAULT_PER_TRY_TIMEOUT,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

/// Why a failed try is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    NotRetryable,
    NotIdempotent,
    BodyNotReplayable,
    AttemptsExhausted,
    DeadlineExceeded,
    BudgetExhausted,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::NotRetryable => "outcome not retryable",
            StopReason::NotIdempotent => "method not idempotent",
            StopReason::BodyNotReplayable => "request body already streamed",
            StopReason::AttemptsExhausted => "attempts exhausted",
            StopReason::DeadlineExceeded => "deadline exceeded",
            StopReason::BudgetExhausted => "retry budget exhausted",
        })
    }
}

/// The verdict on a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again (on another endpoint) with this timeout.
    Retry {
        timeout: Duration,
    },
    Stop(StopReason),
}

/// Per-request retry bookkeeping: when it started, what it is, where it went.
#[derive(Debug, Clone)]
pub struct RetryState {
    started: Instant,
    idempotent: bool,
    body_replayable: bool,
    tried: [u32; MAX_ATTEMPTS_LIMIT as usize],
    attempts: u8,
}

impl RetryState {
    /// A request that arrived at `started`. `body_replayable` is true when it has no body or
    /// the body is fully buffered.
    pub fn new(started: Instant, method: &[u8], body_replayable: bool) -> Self {
        RetryState {
            started,
            idempotent: is_idempotent(method),
            body_replayable,
            tried: [0; MAX_ATTEMPTS_LIMIT as usize],
            attempts: 0,
        }
    }

    /// Note a try sent to endpoint `i`.
    pub fn record_attempt(&mut self, endpoint: usize) {
        if let Some(slot) = self.tried.get_mut(usize::from(self.attempts)) {
            *slot = u32::try_from(endpoint).unwrap_or(u32::MAX);
            self.attempts += 1;
        }
    }

    /// Tries made so far.
    pub fn attempts(&self) -> u32 {
        u32::from(self.attempts)
    }

    /// Was endpoint `i` already tried? (Exclude it when picking the retry's endpoint.)
    #[inline]
    pub fn tried(&self, i: usize) -> bool {
        self.tried[..usize::from(self.attempts)]
            .iter()
            .any(|&t| t as usize == i)
    }

    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl RetryPolicy {
    /// The timeout for the next try at `now`: `min(per_try, deadline - elapsed)`, or `None` when
    /// the deadline has passed.
    pub fn try_timeout(&self, started: Instant, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(started);
        let left = self
            .deadline
            .checked_sub(elapsed)
            .filter(|d| !d.is_zero())?;
        Some(left.min(self.per_try_timeout))
    }

    /// Decide about a try that ended with `outcome` at `now`; a `Retry` has taken a retry from
    /// `budget`.
    pub fn decide(
        &self,
        state: &RetryState,
        outcome: Outcome,
        now: Instant,
        budget: &mut RetryBudget,
    ) -> RetryDecision {
        use StopReason::*;
        if !self.retry_on.matches(outcome) {
            return RetryDecision::Stop(NotRetryable);
        }
        let sent = outcome != Outcome::ConnectFailed;
        if sent && !state.idempotent && !self.non_idempotent {
            return RetryDecision::Stop(NotIdempotent);
        }
        if sent && !state.body_replayable {
            return RetryDecision::Stop(BodyNotReplayable);
        }
        if state.attempts() >= self.max_attempts.clamp(1, MAX_ATTEMPTS_LIMIT) {
            return RetryDecision::Stop(AttemptsExhausted);
        }
        let Some(timeout) = self.try_timeout(state.started, now) else {
            return RetryDecision::Stop(DeadlineExceeded);
        };
        if !budget.try_withdraw(now) {
            return RetryDecision::Stop(BudgetExhausted);
        }
        RetryDecision::Retry { timeout }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry_budget::RetryBudgetConfig;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn roomy_budget(t0: Instant) -> RetryBudget {
        RetryBudget::new(
            RetryBudgetConfig {
                percent: 100,
                min_retries_per_sec: 100,
                ..Default::default()
            },
            t0,
        )
    }

    #[test]
    fn idempotent_methods_per_rfc_9110() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET", true),
            (b"HEAD", true),
            (b"OPTIONS", true),
            (b"TRACE", true),
            (b"PUT", true),
            (b"DELETE", true),
            (b"POST", false),
            (b"PATCH", false),
            (b"CONNECT", false),
            (b"get", false),
            (b"PROPFIND", false),
            (b"", false),
        ];
        for (method, want) in cases {
            assert_eq!(
                is_idempotent(method),
                *want,
                "{}",
                String::from_utf8_lossy(method)
            );
        }
    }

    #[test]
    fn deadline_arithmetic() {
        let t0 = Instant::now();
        let p = RetryPolicy {
            per_try_timeout: 2 * S,
            deadline: 5 * S,
            ..RetryPolicy::default()
        };
        // (elapsed, next try timeout)
        let cases = [
            (Duration::ZERO, Some(2 * S)),
            (2 * S, Some(2 * S)),
            (3 * S, Some(2 * S)),
            (3500 * MS, Some(1500 * MS)),
            (5 * S - MS, Some(MS)),
            (5 * S, None),
            (60 * S, None),
        ];
        for (elapsed, want) in cases {
            assert_eq!(p.try_timeout(t0, t0 + elapsed), want, "after {elapsed:?}");
        }
        assert_eq!(
            p.try_timeout(t0 + S, t0),
            Some(2 * S),
            "a clock read before start is elapsed 0"
        );
    }

    #[test]
    fn decision_table() {
        use RetryDecision::{Retry, Stop};
        use StopReason::*;
        let t0 = Instant::now();
        let p = RetryPolicy {
            max_attempts: 3,
            per_try_timeout: 2 * S,
            deadline: 5 * S,
            ..RetryPolicy::default()
        };
        let retry = Retry { timeout: 2 * S };
        // (method, body replayable, attempts made, outcome, elapsed, decision)
        type Case<'a> = (&'a [u8], bool, usize, Outcome, Duration, RetryDecision);
        let cases: &[Case<'_>] = &[
            (b"GET", true, 1, Outcome::ConnectFailed, S, retry),
            (b"GET", true, 1, Outcome::ResetBeforeResponse, S, retry),
            (b"GET", true, 1, Outcome::TryTimeout, S, retry),
            (b"GET", true, 1, Outcome::Response(502), S, retry),
            (b"GET", true, 1, Outcome::Response(503), S, retry),
            (b"GET", true, 1, Outcome::Response(504), S, retry),
            (
                b"GET",
                true,
                1,
                Outcome::Response(500),
                S,
                Stop(NotRetryable),
            ),
            (
                b"GET",
                true,
                1,
                Outcome::Response(200),
                S,
                Stop(NotRetryable),
            ),
            (
                b"GET",
                true,
                1,
                Outcome::ResetAfterResponse,
                S,
                Stop(NotRetryable),
            ),
            (
                b"POST",
                true,
                1,
                Outcome::Response(503),
                S,
                Stop(NotIdempotent),
            ),
            (
                b"POST",
                true,
                1,
                Outcome::ResetBeforeResponse,
                S,
                Stop(NotIdempotent),
            ),
            (b"POST", false, 1, Outcome::ConnectFailed, S, retry),
            (
                b"PUT",
                false,
                1,
                Outcome::Response(503),
                S,
                Stop(BodyNotReplayable),
            ),
            (
                b"GET",
                true,
                3,
                Outcome::Response(503),
                S,
                Stop(AttemptsExhausted),
            ),
            (
                b"GET",
                true,
                2,
                Outcome::Response(503),
                4 * S,
                Retry { timeout: S },
            ),
            (
                b"GET",
                true,
                2,
                Outcome::Response(503),
                5 * S,
                Stop(DeadlineExceeded),
            ),
        ];
        for (i, (method, replayable, made, outcome, elapsed, want)) in cases.iter().enumerate() {
            let mut state = RetryState::new(t0, method, *replayable);
            for e in 0..*made {
                state.record_attempt(e);
            }
            let got = p.decide(&state, *outcome, t0 + *elapsed, &mut roomy_budget(t0));
            assert_eq!(
                got,
                *want,
                "case {i}: {} {outcome}",
                String::from_utf8_lossy(method)
            );
        }
    }

    #[test]
    fn route_opt_in_retries_non_idempotent_methods() {
        let t0 = Instant::now();
        let p = RetryPolicy {
            non_idempotent: true,
            ..RetryPolicy::default()
        };
        let mut state = RetryState::new(t0, b"POST", true);
        state.record_attempt(0);
        let got = p.decide(&state, Outcome::Response(503), t0, &mut roomy_budget(t0));
        assert!(matches!(got, RetryDecision::Retry { .. }), "{got:?}");
    }

    #[test]
    fn regression_connect_failure_retries_post_because_nothing_was_sent() {
        let t0 = Instant::now();
        let mut state = RetryState::new(t0, b"POST", false);
        state.record_attempt(4);
        let got = RetryPolicy::default().decide(
            &state,
            Outcome::ConnectFailed,
            t0,
            &mut roomy_budget(t0),
        );
        assert!(matches!(got, RetryDecision::Retry { .. }), "{got:?}");
    }

    #[test]
    fn empty_budget_stops_and_a_refused_decision_spends_nothing() {
        let t0 = Instant::now();
        let cfg = RetryBudgetConfig {
            percent: 0,
            min_retries_per_sec: 0,
            ..Default::default()
        };
        let mut empty = RetryBudget::new(cfg, t0);
        let mut state = RetryState::new(t0, b"GET", true);
        state.record_attempt(0);
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(&state, Outcome::Response(503), t0, &mut empty),
            RetryDecision::Stop(StopReason::BudgetExhausted)
        );

        let mut budget = RetryBudget::new(
            RetryBudgetConfig {
                percent: 0,
                min_retries_per_sec: 1,
                ..Default::default()
            },
            t0,
        );
        let before = budget.remaining(t0);
        assert_eq!(
            p.decide(&state, Outcome::Response(200), t0, &mut budget),
            RetryDecision::Stop(StopReason::NotRetryable)
        );
        assert_eq!(budget.remaining(t0), before);
        assert!(matches!(
            p.decide(&state, Outcome::Response(503), t0, &mut budget),
            RetryDecision::Retry { .. }
        ));
        assert_eq!(budget.remaining(t0), before - 1);
    }

    #[test]
    fn tried_endpoints_are_remembered_up_to_the_limit() {
        let t0 = Instant::now();
        let mut state = RetryState::new(t0, b"GET", true);
        for e in [3, 7, 3] {
            state.record_attempt(e);
        }
        assert_eq!(state.attempts(), 3);
        assert!(state.tried(3) && state.tried(7) && !state.tried(0));
        for e in 0..20 {
            state.record_attempt(e);
        }
        assert_eq!(state.attempts(), MAX_ATTEMPTS_LIMIT);
        let p = RetryPolicy {
            max_attempts: 50,
            ..RetryPolicy::default()
        };
        let got = p.decide(&state, Outcome::Response(503), t0, &mut roomy_budget(t0));
        assert_eq!(
            got,
            RetryDecision::Stop(StopReason::AttemptsExhausted),
            "clamped to the limit"
        );
    }
}
