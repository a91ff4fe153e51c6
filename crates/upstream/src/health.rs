//! Active health checking: the probe description, rise/fall state per endpoint, and the
//! snapshot shards consume.
//!
//! # One prober per gateway, results shared off the request path
//!
//! Probing from every shard would multiply probe traffic by the core count and let shards
//! disagree about an endpoint. Instead exactly one prober per gateway (a task on shard 0 is
//! enough: probes are rare and cheap) owns a [`GroupHealth`] per upstream group. It asks
//! [`GroupHealth::due`] which endpoint to probe next, performs the HTTP probe, and feeds the
//! result to [`GroupHealth::record`], which applies the rise/fall thresholds and returns a
//! [`HealthChange`] to log when an endpoint flips.
//!
//! Every flip bumps the group's version and updates a compact bitmap (one bit per endpoint,
//! [`EndpointSet`]). The prober publishes [`GroupHealth::snapshot`] — version plus bitmap, a
//! few words — to every shard only when the version changed, through the same off-path channel
//! as config snapshots. Each shard keeps its own copy and swaps it in between requests (on its
//! housekeeping tick), so the request path reads a shard-local bit, never a shared atomic or
//! lock, and cross-shard traffic is proportional to health *changes*, not to requests.
//!
//! A snapshot describes one endpoint set; when DNS or a reload changes the set, the prober
//! rebuilds its `GroupHealth` and shards treat indices beyond a snapshot's length as up (an
//! endpoint not yet probed is not known to be down).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::endpoint_set::EndpointSet;

/// Default probe path.
pub const DEFAULT_PROBE_PATH: &str = "/health";
/// Default time between two probes of one endpoint.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Default time a probe may take before it counts as failed.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default consecutive passing probes to become healthy.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failing probes to become unhealthy.
pub const DEFAULT_FALL: u32 = 3;
/// Default statuses that pass.
pub const DEFAULT_EXPECTED_STATUSES: &str = "200-399";

/// An endpoint's health as probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// A set of status ranges such as `"200-399, 404"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges {
    ranges: Vec<(u16, u16)>,
}

/// A status range list that does not parse; names the offending item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRangeError {
    pub input: Box<str>,
    pub item: Box<str>,
}

impl fmt::Display for StatusRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid status range {:?} in {:?}: expected a status 100-599 or a range like 200-399",
            self.item, self.input
        )
    }
}

impl std::error::Error for StatusRangeError {}

impl StatusRanges {
    /// Does `status` fall in one of the ranges?
    #[inline]
    pub fn contains(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

impl FromStr for StatusRanges {
    type Err = StatusRangeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |item: &str| StatusRangeError {
            input: input.into(),
            item: item.into(),
        };
        let status = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let mut ranges = Vec::new();
        for item in input.split(',') {
            let range = match item.split_once('-') {
                Some((lo, hi)) => status(lo).zip(status(hi)).filter(|(lo, hi)| lo <= hi),
                None => status(item).map(|s| (s, s)),
            };
            ranges.push(range.ok_or_else(|| err(item.trim()))?);
        }
        Ok(StatusRanges { ranges })
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if lo == hi {
                write!(f, "{sep}{lo}")?
            } else {
                write!(f, "{sep}{lo}-{hi}")?
            }
        }
        Ok(())
    }
}

/// How to probe the endpoints of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub path: Box<str>,
    pub interval: Duration,
    pub timeout: Duration,
    pub expected: StatusRanges,
    /// Consecutive passes to turn healthy (at least 1).
    pub rise: u32,
    /// Consecutive failures to turn unhealthy (at least 1).
    pub fall: u32,
    /// The state of an endpoint before its first probes.
    pub initial: Health,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            path: DEFAULT_PROBE_PATH.into(),
            interval: DEFAULT_PROBE_INTERVAL,
            timeout: DEFAULT_PROBE_TIMEOUT,
            expected: DEFAULT_EXPECTED_STATUSES
                .parse()
                .expect("default status ranges parse"),
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            initial: Health::Healthy,
        }
    }
}

impl ProbeSpec {
    /// Does a probe answered with `status` pass?
    #[inline]
    pub fn status_ok(&self, status: u16) -> bool {
        self.expected.contains(status)
    }
}

/// What one probe observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Status(u16),
    Timeout,
    ConnectFailed,
    /// The answer was not a parseable HTTP response.
    Malformed,
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeResult::Status(s) => write!(f, "status {s}"),
            ProbeResult::Timeout => f.write_str("timeout"),
            ProbeResult::ConnectFailed => f.write_str("connect failure"),
            ProbeResult::Malformed => f.write_str("malformed response"),
        }
    }
}

/// Rise/fall state of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    health: Health,
    /// Consecutive probes disagreeing with `health`.
    against: u32,
}

impl HealthState {
    pub fn new(initial: Health) -> Self {
        HealthState {
            health: initial,
            against: 0,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Count one probe; returns the new health if this probe flipped it.
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) -> Option<Health> {
        let (agrees, threshold, flipped) = match self.health {
            Health::Healthy => (passed, fall, Health::Unhealthy),
            Health::Unhealthy => (!passed, rise, Health::Healthy),
        };
        if agrees {
            self.against = 0;
            return None;
        }
        self.against += 1;
        if self.against < threshold.max(1) {
            return None;
        }
        self.against = 0;
        self.health = flipped;
        Some(flipped)
    }
}

/// An endpoint changed health; `Display` is the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    pub endpoint: usize,
    pub from: Health,
    pub to: Health,
    /// Consecutive probes that caused the change.
    pub probes: u32,
    pub last: ProbeResult,
}

impl fmt::Display for HealthChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.to == Health::Healthy {
            "passing"
        } else {
            "failed"
        };
        write!(
            f,
            "endpoint #{} {} -> {} after {} {kind} probes (last: {})",
            self.endpoint, self.from, self.to, self.probes, self.last
        )
    }
}

/// What shards consume: which endpoints are up, and a version to spot news.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthSnapshot {
    pub version: u64,
    pub up: EndpointSet,
}

impl HealthSnapshot {
    /// Is endpoint `i` up? Indices the snapshot does not cover are (fail open).
    #[inline]
    pub fn is_up(&self, i: usize) -> bool {
        i >= self.up.len() || self.up.contains(i)
    }

    /// Replace `self` with `newer` if it is newer; returns whether it did.
    pub fn update_from(&mut self, newer: &HealthSnapshot) -> bool {
        if newer.version <= self.version {
            return false;
        }
        self.clone_from(newer);
        true
    }
}

/// The prober's view of one group: probe schedule, rise/fall per endpoint, the up bitmap.
#[derive(Debug, Clone)]
pub struct GroupHealth {
    spec: ProbeSpec,
    states: Vec<HealthState>,
    next_probe: Vec<Instant>,
    snapshot: HealthSnapshot,
}

impl GroupHealth {
    /// State for `n` endpoints; first probes are staggered over one interval from `now` so a
    /// big group is not probed in one burst.
    pub fn new(spec: ProbeSpec, n: usize, now: Instant) -> Self {
        let up = match spec.initial {
            Health::Healthy => EndpointSet::full(n),
            Health::Unhealthy => EndpointSet::empty(n),
        };
        let next_probe = (0..n)
            .map(|i| now + spec.interval.mul_f64(i as f64 / n as f64))
            .collect();
        GroupHealth {
            states: vec![HealthState::new(spec.initial); n],
            next_probe,
            snapshot: HealthSnapshot { version: 1, up },
            spec,
        }
    }

    /// The probe description.
    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// An endpoint due for a probe at `now`, marked as probed (its next probe is one interval
    /// later). Call until `None`.
    pub fn due(&mut self, now: Instant) -> Option<usize> {
        let i = self.next_probe.iter().position(|&t| t <= now)?;
        self.next_probe[i] = now + self.spec.interval;
        Some(i)
    }

    /// When the next probe is due, for the prober's timer.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_probe.iter().min().copied()
    }

    /// Feed one probe result for endpoint `i`; returns the change to log, if any.
    pub fn record(&mut self, i: usize, result: ProbeResult) -> Option<HealthChange> {
        let passed = matches!(result, ProbeResult::Status(s) if self.spec.status_ok(s));
        let state = self.states.get_mut(i)?;
        let from = state.health();
        let to = state.record(passed, self.spec.rise, self.spec.fall)?;
        match to {
            Health::Healthy => self.snapshot.up.insert(i),
            Health::Unhealthy => self.snapshot.up.remove(i),
        };
        self.snapshot.version += 1;
        let probes = if to == Health::Healthy {
            self.spec.rise
        } else {
            self.spec.fall
        }
        .max(1);
        Some(HealthChange {
            endpoint: i,
            from,
            to,
            probes,
            last: result,
        })
    }

    /// The current health of endpoint `i`.
    pub fn health(&self, i: usize) -> Option<Health> {
        self.states.get(i).map(HealthState::health)
    }

    /// The version and bitmap to publish to shards (bumped on every change).
    pub fn snapshot(&self) -> &HealthSnapshot {
        &self.snapshot
    }
}

#[cfg(test)]
mod tests;
