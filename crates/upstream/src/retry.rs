//! Retry settings and one request's tries. The decision itself is [`crate::group::Group::retry`],
//! the one place that says whether and where a failed try goes again.
//!
//! A failed try is retried only when all of these hold, checked in this order (the first that
//! fails is the [`StopReason`]):
//!
//! 1. the outcome is in the group's `retry.on` set (connect failure, reset before any response
//!    byte, try timeout, or a listed status); a reset after the response started never is;
//! 2. the request may be sent again: the method is idempotent (RFC 9110 §9.2.2) or the group
//!    opted in, and its body (if any) can be replayed; a try that failed to connect sent
//!    nothing, so any request may go elsewhere;
//! 3. fewer than `attempts` tries were made, and the overall deadline has not passed;
//! 4. another endpoint is there to take it (retries never go back to one already tried);
//! 5. the retry is free (after a connect failure nothing reached the group) or the
//!    [`crate::retry_budget::RetryBudget`] has one to spare (checked last, so a refused retry
//!    costs nothing).

use std::fmt;
use std::time::{Duration, Instant};

use crate::outcome::Outcome;
use crate::retry_budget::RetryBudgetConfig;

/// Most tries (first + retries) any group may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 8;
/// Default tries per request: the first and one retry.
pub const DEFAULT_ATTEMPTS: u32 = 2;

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
    /// Failures where the endpoint, not the request, is at fault and nothing of a response
    /// was seen: connect failures and resets before any response byte.
    fn default() -> Self {
        RetryOn {
            connect_failure: true,
            reset_before_response: true,
            try_timeout: false,
            statuses: Box::new([]),
        }
    }
}

impl RetryOn {
    /// Nothing is retried.
    pub fn none() -> RetryOn {
        RetryOn {
            connect_failure: false,
            reset_before_response: false,
            try_timeout: false,
            statuses: Box::new([]),
        }
    }

    /// Is this outcome one the group retries (before the other conditions)?
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

/// When a failed try goes to another endpoint (a group's `[retry]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// Tries in total, the first included (1: no retries).
    pub attempts: u32,
    pub on: RetryOn,
    /// Retry methods that are not idempotent too (POST, PATCH).
    pub non_idempotent: bool,
    /// Retries stay under this share of requests (the retry budget).
    pub budget: RetryBudgetConfig,
    /// Longest wait for each try's response head (`None`: the gateway's upstream timeout).
    pub per_try_timeout: Option<Duration>,
    /// Longest time for all tries together (`None`: no overall limit).
    pub deadline: Option<Duration>,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            attempts: DEFAULT_ATTEMPTS,
            on: RetryOn::default(),
            non_idempotent: false,
            budget: RetryBudgetConfig::default(),
            per_try_timeout: None,
            deadline: None,
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
    NoOtherEndpoint,
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
            StopReason::NoOtherEndpoint => "no other endpoint to try",
            StopReason::BudgetExhausted => "retry budget exhausted",
        })
    }
}

/// One request's tries: what it is, where it went, and until when it may go on.
#[derive(Debug, Clone)]
pub struct Tries {
    /// The method is idempotent, or the group retries any method.
    resendable: bool,
    /// The whole request is at hand to send again.
    replayable: bool,
    deadline: Option<Instant>,
    tried: [usize; MAX_ATTEMPTS_LIMIT as usize],
    made: u32,
    replaced_dead: bool,
}

impl Tries {
    /// A request that starts at `now`. `idempotent`: per [`is_idempotent`]; `replayable`: it
    /// has no body or its body is held whole.
    pub fn new(
        settings: &RetrySettings,
        idempotent: bool,
        replayable: bool,
        now: Instant,
    ) -> Tries {
        Tries {
            resendable: idempotent || settings.non_idempotent,
            replayable,
            deadline: settings.deadline.map(|d| now + d),
            tried: [usize::MAX; MAX_ATTEMPTS_LIMIT as usize],
            made: 0,
            replaced_dead: false,
        }
    }

    /// Endpoints tried so far, in order.
    pub fn tried(&self) -> &[usize] {
        &self.tried[..self.made as usize]
    }

    /// Tries made so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// How long the next try may wait for its response head: the per-try timeout (or
    /// `default`), never past the overall deadline.
    pub fn try_deadline(
        &self,
        settings: &RetrySettings,
        default: Duration,
        now: Instant,
    ) -> Instant {
        let own = now + settings.per_try_timeout.unwrap_or(default);
        self.deadline.map_or(own, |d| own.min(d))
    }

    /// Whether a retry on a listed status can happen at all, so the caller keeps a copy of the
    /// request to send again.
    pub fn may_retry_a_status(&self, settings: &RetrySettings) -> bool {
        !settings.on.statuses.is_empty()
            && self.replayable
            && self.resendable
            && settings.attempts > 1
    }

    /// A pooled connection turned out dead before any response byte: send the request again
    /// on a fresh connection to the same endpoint, once per request, when it is safe (the
    /// endpoint never saw it, but the gateway cannot be sure). Not a retry: it costs no
    /// attempt and no budget.
    pub fn replace_dead_connection(&mut self, idempotent: bool) -> bool {
        let ok = !self.replaced_dead && self.replayable && idempotent;
        self.replaced_dead |= ok;
        ok
    }

    /// Records a try on `index`.
    pub(crate) fn record(&mut self, index: usize) {
        if let Some(slot) = self.tried.get_mut(self.made as usize) {
            *slot = index;
            self.made += 1;
        }
    }

    /// Conditions 1 to 3 of the module's list, for a try that ended with `outcome`.
    pub(crate) fn may_retry(
        &self,
        settings: &RetrySettings,
        outcome: Outcome,
        now: Instant,
    ) -> Result<(), StopReason> {
        if !settings.on.matches(outcome) {
            return Err(StopReason::NotRetryable);
        }
        let sent = outcome != Outcome::ConnectFailed;
        if sent && !self.resendable {
            return Err(StopReason::NotIdempotent);
        }
        if sent && !self.replayable {
            return Err(StopReason::BodyNotReplayable);
        }
        if self.made >= settings.attempts.clamp(1, MAX_ATTEMPTS_LIMIT) {
            return Err(StopReason::AttemptsExhausted);
        }
        if self.deadline.is_some_and(|d| now >= d) {
            return Err(StopReason::DeadlineExceeded);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn each_try_waits_its_own_timeout_but_never_past_the_overall_deadline() {
        let s = Duration::from_secs(1);
        let t0 = Instant::now();
        let settings = RetrySettings {
            per_try_timeout: Some(2 * s),
            deadline: Some(5 * s),
            ..RetrySettings::default()
        };
        let tries = Tries::new(&settings, true, true, t0);
        // (now, the try's deadline)
        for (now, want) in [
            (t0, t0 + 2 * s),
            (t0 + 3 * s, t0 + 5 * s),
            (t0 + 4 * s, t0 + 5 * s),
        ] {
            assert_eq!(tries.try_deadline(&settings, 60 * s, now), want);
        }
        let open = RetrySettings::default();
        let tries = Tries::new(&open, true, true, t0);
        assert_eq!(tries.try_deadline(&open, 60 * s, t0 + s), t0 + 61 * s);
    }

    #[test]
    fn a_dead_pooled_connection_is_replaced_once_and_only_when_safe() {
        let t0 = Instant::now();
        let settings = RetrySettings::default();
        let mut get = Tries::new(&settings, true, true, t0);
        assert!(get.replace_dead_connection(true));
        assert!(!get.replace_dead_connection(true), "once per request");
        let mut post = Tries::new(&settings, false, true, t0);
        assert!(!post.replace_dead_connection(false));
        let mut streamed = Tries::new(&settings, true, false, t0);
        assert!(!streamed.replace_dead_connection(true));
    }

    #[test]
    fn status_retries_need_statuses_a_replayable_resendable_request_and_attempts() {
        let t0 = Instant::now();
        let with = RetrySettings {
            on: RetryOn {
                statuses: Box::new([503]),
                ..RetryOn::default()
            },
            ..RetrySettings::default()
        };
        // (settings, idempotent, replayable, keep a copy)
        let one_try = RetrySettings {
            attempts: 1,
            ..with.clone()
        };
        let cases = [
            (&with, true, true, true),
            (&with, false, true, false),
            (&with, true, false, false),
            (&one_try, true, true, false),
            (&RetrySettings::default(), true, true, false),
        ];
        for (i, (settings, idempotent, replayable, want)) in cases.into_iter().enumerate() {
            let tries = Tries::new(settings, idempotent, replayable, t0);
            assert_eq!(tries.may_retry_a_status(settings), want, "case {i}");
        }
    }
}
