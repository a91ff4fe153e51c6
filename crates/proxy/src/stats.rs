//! Per-shard counters. Each shard writes only its own block (plain relaxed
//! stores, no read-modify-write), and readers on other threads sum the
//! blocks when asked: nothing is contended on the request path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One shard's counters.
#[derive(Default)]
pub(crate) struct ShardStats {
    pub accepted: Counter,
    pub open_connections: Counter,
    pub requests: Counter,
    pub responses_2xx: Counter,
    pub responses_3xx: Counter,
    pub responses_4xx: Counter,
    pub responses_5xx: Counter,
    pub upstream_connects: Counter,
    pub upstream_reuses: Counter,
    pub upstream_retries: Counter,
    pub upstream_connect_errors: Counter,
    pub accept_errors: Counter,
    pub upstream_active: Counter,
    /// Idle connections held without a task (see `park`).
    pub parked_connections: Counter,
}

/// A counter written by one thread only.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn incr(&self) {
        self.0.store(self.0.load(Relaxed) + 1, Relaxed);
    }

    #[inline]
    pub fn decr(&self) {
        self.0
            .store(self.0.load(Relaxed).saturating_sub(1), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl ShardStats {
    pub(crate) fn record_status(&self, status: u16) {
        match status {
            200..=299 => self.responses_2xx.incr(),
            300..=399 => self.responses_3xx.incr(),
            400..=499 => self.responses_4xx.incr(),
            500..=599 => self.responses_5xx.incr(),
            _ => {}
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.get(),
            open_connections: self.open_connections.get(),
            requests: self.requests.get(),
            responses_2xx: self.responses_2xx.get(),
            responses_3xx: self.responses_3xx.get(),
            responses_4xx: self.responses_4xx.get(),
            responses_5xx: self.responses_5xx.get(),
            upstream_connects: self.upstream_connects.get(),
            upstream_reuses: self.upstream_reuses.get(),
            upstream_retries: self.upstream_retries.get(),
            upstream_connect_errors: self.upstream_connect_errors.get(),
            accept_errors: self.accept_errors.get(),
            upstream_active: self.upstream_active.get(),
            parked_connections: self.parked_connections.get(),
        }
    }
}

/// Counters of one shard, or the sum over all shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub open_connections: u64,
    pub requests: u64,
    pub responses_2xx: u64,
    pub responses_3xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    pub upstream_connects: u64,
    pub upstream_reuses: u64,
    pub upstream_retries: u64,
    pub upstream_connect_errors: u64,
    pub accept_errors: u64,
    pub upstream_active: u64,
    pub parked_connections: u64,
}

impl StatsSnapshot {
    /// Adds another shard's counters.
    pub fn add(&mut self, o: &StatsSnapshot) {
        self.accepted += o.accepted;
        self.open_connections += o.open_connections;
        self.requests += o.requests;
        self.responses_2xx += o.responses_2xx;
        self.responses_3xx += o.responses_3xx;
        self.responses_4xx += o.responses_4xx;
        self.responses_5xx += o.responses_5xx;
        self.upstream_connects += o.upstream_connects;
        self.upstream_reuses += o.upstream_reuses;
        self.upstream_retries += o.upstream_retries;
        self.upstream_connect_errors += o.upstream_connect_errors;
        self.accept_errors += o.accept_errors;
        self.upstream_active += o.upstream_active;
        self.parked_connections += o.parked_connections;
    }

    /// Share of upstream requests sent on a pooled connection.
    pub fn reuse_ratio(&self) -> f64 {
        let total = self.upstream_connects + self.upstream_reuses;
        if total == 0 {
            0.0
        } else {
            self.upstream_reuses as f64 / total as f64
        }
    }
}
