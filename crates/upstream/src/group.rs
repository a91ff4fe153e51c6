//! One shard's view of an upstream group: the only place that picks an endpoint, records what
//! a try did, and decides whether and where a failed try goes again.
//!
//! It owns the group's balancer, the in-flight count per endpoint, the active health verdicts,
//! passive outlier detection, the circuit breaker and the retry budget; the proxy holds one per
//! group per shard (rebuilt, and so reset, by a reload) and does only the I/O around it. Time
//! is passed in.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shardgate_upstream::group::{Group, GroupConfig};
//! use shardgate_upstream::retry::Tries;
//! use shardgate_upstream::{Algorithm, EndpointSpec, Outcome};
//!
//! let t0 = Instant::now();
//! let eps = [EndpointSpec::new("10.0.0.1:80", 1), EndpointSpec::new("10.0.0.2:80", 1)];
//! let mut group = Group::new(GroupConfig::new("app", &eps, &Algorithm::RoundRobin), t0).unwrap();
//! let mut tries = Tries::new(group.retry_settings(), true, true, t0);
//!
//! let first = group.pick(None, t0, tries.tried());
//! group.begin_try(&mut tries, first);
//! group.end_try(first);
//! // The first endpoint refused the connection: it is ejected, and the retry goes elsewhere.
//! group.record(first, Outcome::ConnectFailed, t0);
//! let second = group.retry(&mut tries, Outcome::ConnectFailed, None, t0).unwrap();
//! assert_ne!(first, second);
//! assert_eq!(group.pick(None, t0 + Duration::from_millis(10), &[]), second);
//! ```

use std::time::Instant;

use crate::balance::{Algorithm, BalanceError, BalancerKind, EndpointSpec, PickHint};
use crate::breaker::{Breaker, BreakerConfig, BreakerState, Rejected, Ticket, Transition, Verdict};
use crate::outcome::Outcome;
use crate::outlier::{OutlierConfig, OutlierDetector, OutlierEvent};
use crate::retry::{RetrySettings, StopReason, Tries};
use crate::retry_budget::RetryBudget;

/// What a group is built from.
#[derive(Debug, Clone)]
pub struct GroupConfig<'a> {
    pub name: &'a str,
    pub endpoints: &'a [EndpointSpec<'a>],
    pub algorithm: &'a Algorithm,
    pub outlier: OutlierConfig,
    pub breaker: Option<BreakerConfig>,
    pub retry: RetrySettings,
    /// Spreads the balancers' starting points across shards.
    pub seed: u64,
}

impl<'a> GroupConfig<'a> {
    /// Default outlier detection and retries, no breaker.
    pub fn new(
        name: &'a str,
        endpoints: &'a [EndpointSpec<'a>],
        algorithm: &'a Algorithm,
    ) -> GroupConfig<'a> {
        GroupConfig {
            name,
            endpoints,
            algorithm,
            outlier: OutlierConfig::default(),
            breaker: None,
            retry: RetrySettings::default(),
            seed: 0,
        }
    }
}

/// The breaker's answer to a new request.
#[derive(Debug)]
pub struct Admission {
    /// `Ok(None)`: the group has no breaker. `Ok(Some)`: the ticket to hand back with the
    /// request's verdict.
    pub decision: Result<Option<Ticket>, Rejected>,
    /// The state change the admission caused (open to half-open), to log.
    pub transition: Option<Transition>,
}

/// One shard's state for one upstream group.
#[derive(Debug)]
pub struct Group {
    name: String,
    balancer: BalancerKind,
    in_flight: Vec<u32>,
    /// Active health checks' verdict per endpoint (all up without checks).
    up: Vec<bool>,
    outlier: OutlierDetector,
    breaker: Option<Breaker>,
    retry: RetrySettings,
    budget: RetryBudget,
}

impl Group {
    pub fn new(cfg: GroupConfig<'_>, now: Instant) -> Result<Group, BalanceError> {
        let n = cfg.endpoints.len();
        Ok(Group {
            name: cfg.name.to_string(),
            balancer: BalancerKind::new(cfg.algorithm, cfg.endpoints, cfg.seed)?,
            in_flight: vec![0; n],
            up: vec![true; n],
            outlier: OutlierDetector::new(cfg.outlier, n),
            breaker: cfg.breaker.map(|c| Breaker::new(cfg.name, c, now)),
            budget: RetryBudget::new(cfg.retry.budget.clone(), now),
            retry: cfg.retry,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn retry_settings(&self) -> &RetrySettings {
        &self.retry
    }

    /// A request arrives for the group: it counts towards the retry budget, and the breaker
    /// (if any) admits it or not.
    pub fn admit(&mut self, now: Instant) -> Admission {
        self.budget.record_request(now);
        match &mut self.breaker {
            None => Admission {
                decision: Ok(None),
                transition: None,
            },
            Some(b) => {
                let a = b.admit(now);
                Admission {
                    decision: a.decision.map(Some),
                    transition: a.transition,
                }
            }
        }
    }

    /// The request a ticket admitted has ended with `verdict`.
    pub fn settle(&mut self, ticket: Ticket, verdict: Verdict, now: Instant) -> Option<Transition> {
        self.breaker.as_mut()?.record(ticket, verdict, now)
    }

    /// Picks an endpoint (its position in the group) for a try, honouring active health
    /// verdicts, ejections, probation (one request at a time on an endpoint back from
    /// ejection) and the `tried` set, in the order [`BalancerKind::choose`] gives them.
    pub fn pick(&mut self, key: Option<u64>, now: Instant, tried: &[usize]) -> usize {
        let hint = PickHint {
            key,
            in_flight: &self.in_flight,
        };
        let (outlier, in_flight, up) = (&self.outlier, &self.in_flight, &self.up);
        let out = |i: usize| {
            outlier.is_ejected(i, now)
                || (outlier.on_probation(i, now) && in_flight.get(i).is_some_and(|&n| n > 0))
        };
        let up = |i: usize| up.get(i).copied().unwrap_or(true);
        self.balancer.choose(&hint, up, out, tried)
    }

    /// A try starts on endpoint `i`: it is in flight there, and tried.
    pub fn begin_try(&mut self, tries: &mut Tries, i: usize) {
        tries.record(i);
        if let Some(n) = self.in_flight.get_mut(i) {
            *n += 1;
        }
    }

    /// A try on endpoint `i` is no longer in flight.
    pub fn end_try(&mut self, i: usize) {
        if let Some(n) = self.in_flight.get_mut(i) {
            *n = n.saturating_sub(1);
        }
    }

    /// What a try on endpoint `i` did, for outlier detection; an ejection or return to log.
    pub fn record(&mut self, i: usize, outcome: Outcome, now: Instant) -> Option<OutlierEvent> {
        self.outlier.record(i, outcome, now)
    }

    /// Where the request's last try, which ended with `outcome`, goes again, or why it does
    /// not (see [`crate::retry`] for the conditions and their order).
    pub fn retry(
        &mut self,
        tries: &mut Tries,
        outcome: Outcome,
        key: Option<u64>,
        now: Instant,
    ) -> Result<usize, StopReason> {
        tries.may_retry(&self.retry, outcome, now)?;
        let next = self.pick(key, now, tries.tried());
        if tries.tried().contains(&next) {
            return Err(StopReason::NoOtherEndpoint);
        }
        // Nothing reached the endpoint after a connect failure: its retry costs the group
        // nothing, so the budget does not ration it.
        let free = outcome == Outcome::ConnectFailed;
        if !free && !self.budget.try_withdraw(now) {
            return Err(StopReason::BudgetExhausted);
        }
        Ok(next)
    }

    /// Active health checks' verdict for every endpoint (ignored if the count differs).
    pub fn set_up(&mut self, up: &[bool]) {
        if self.up.len() == up.len() {
            self.up.copy_from_slice(up);
        }
    }

    /// Endpoints active health checks hold down now.
    pub fn down(&self) -> usize {
        self.up.iter().filter(|u| !**u).count()
    }

    /// Each endpoint's (up by the health checks, ejected now).
    pub fn endpoint_states(&self, now: Instant) -> Vec<(bool, bool)> {
        (0..self.up.len())
            .map(|i| (self.up[i], self.outlier.is_ejected(i, now)))
            .collect()
    }

    /// Endpoints ejected now.
    pub fn ejected(&self, now: Instant) -> usize {
        self.outlier.ejected_count(now)
    }

    /// The breaker's state, when the group has one.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.breaker.as_ref().map(Breaker::state)
    }
}

#[cfg(test)]
mod tests;
