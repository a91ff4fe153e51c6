//! Gateway-wide rate limits across shards, off the request path.
//!
//! Each shard admits against its own share of every limit with no lock or
//! atomic (`shardgate_filters::global_rate::ShardLimiter`). Every
//! [`PERIOD`], each shard closes a period of counts per limiter and sends
//! the small reports here; one coordinator thread per gateway runs
//! `Coordinator::rebalance` for each limiter and sends every shard its new
//! shares through its control queue, applied at the next tick. A limiter is
//! known by `(configuration version, index)`: every shard numbers the limits
//! of one configuration the same way, and a reload starts them afresh.

use crate::control::{Command, GatewayHandle};
use shardgate_filters::global_rate::{
    Coordinator, GlobalLimitConfig, RateKey, ShardReport, ShareUpdate,
};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often shards report and shares are rebalanced.
pub(crate) const PERIOD: Duration = shardgate_filters::global_rate::DEFAULT_REBALANCE_PERIOD;

/// Coordinators of limiters that stopped reporting (an old configuration)
/// are dropped after this long.
const FORGET_AFTER: Duration = Duration::from_secs(5);

/// One shard's period for one limiter.
pub(crate) struct Report {
    pub version: u64,
    pub limiter: usize,
    /// The limit's settings (a limiter's first report creates its coordinator).
    pub config: GlobalLimitConfig,
    pub report: ShardReport,
}

/// A shard's quota increments of one period, `(key, window start, count)`.
pub(crate) struct QuotaCounts {
    pub name: String,
    pub period: shardgate_filters::quota::Period,
    pub counts: Vec<(RateKey, u64, u64)>,
}

/// What travels from a shard to the coordinator: its reports of one period (never both
/// empty: an empty batch stops the coordinator).
pub(crate) struct Batch {
    pub limits: Vec<Report>,
    pub quotas: Vec<QuotaCounts>,
}

pub(crate) struct RateCoordinator {
    /// Dropping the last sender (the shards') also ends the thread.
    stop: Option<Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
}

impl RateCoordinator {
    /// A channel for the shards' reports (made before the shards start).
    pub(crate) fn channel() -> (Sender<Batch>, Receiver<Batch>) {
        mpsc::channel()
    }

    /// Starts the thread reading the shards' reports from `rx`; `tx` is a
    /// sender of the same channel, kept to stop it.
    pub(crate) fn start(
        handle: GatewayHandle,
        tx: Sender<Batch>,
        rx: Receiver<Batch>,
        fleet: Option<crate::fleet::FleetHandle>,
    ) -> RateCoordinator {
        let thread = std::thread::Builder::new()
            .name("shardgate-rates".into())
            .spawn(move || run(&handle, &rx, fleet.as_ref()))
            .ok();
        RateCoordinator {
            stop: Some(tx),
            thread,
        }
    }

    pub(crate) fn stop(mut self) {
        // An empty batch is the stop signal (shards never send one).
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Batch {
                limits: Vec::new(),
                quotas: Vec::new(),
            });
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Limit {
    coordinator: Coordinator,
    /// A fleet limit's name and configured rate.
    fleet: Option<(String, f64)>,
    /// Reports received since the last rebalance.
    pending: Vec<ShardReport>,
    seen: Instant,
}

fn run(handle: &GatewayHandle, rx: &Receiver<Batch>, fleet: Option<&crate::fleet::FleetHandle>) {
    let mut limits: HashMap<(u64, usize), Limit> = HashMap::new();
    let mut next = Instant::now() + PERIOD;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(batch) if batch.limits.is_empty() && batch.quotas.is_empty() => return,
            Ok(batch) => {
                let now = Instant::now();
                if let Some(fleet) = fleet {
                    fleet.add_quota_counts(batch.quotas);
                }
                for r in batch.limits {
                    let l = limits
                        .entry((r.version, r.limiter))
                        .or_insert_with(|| Limit {
                            fleet: r.config.fleet.clone().map(|n| (n, r.config.limit.rate())),
                            coordinator: Coordinator::new(r.config),
                            pending: Vec::new(),
                            seen: now,
                        });
                    l.pending.push(r.report);
                    l.seen = now;
                }
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        next = now + PERIOD;
        // The fleet's totals of quotas, to every shard.
        if let Some(fleet) = fleet {
            for (name, window, totals) in fleet.take_quota_totals() {
                let totals = std::sync::Arc::new(totals);
                for c in &handle.0.controls {
                    let _ = c.send(Command::QuotaTotals {
                        name: name.clone(),
                        window,
                        totals: totals.clone(),
                    });
                }
            }
        }
        limits.retain(|_, l| now.duration_since(l.seen) < FORGET_AFTER);
        for (&(version, limiter), l) in &mut limits {
            if l.pending.is_empty() {
                continue;
            }
            if let (Some((name, rate)), Some(fleet)) = (&l.fleet, fleet) {
                // This gateway's demand by key, summed over its shards' reports; its part of
                // the fleet's rate comes back (as of the last exchange with Redis).
                // Per shard, over all the windows it reported since the last rebalance (a
                // shard late by one period sends two: averaged, not added).
                let mut windows: HashMap<usize, f64> = HashMap::new();
                for r in &l.pending {
                    *windows.entry(r.shard).or_default() += r.window.as_secs_f64();
                }
                let mut demand: HashMap<RateKey, f64> = HashMap::new();
                for r in &l.pending {
                    let secs = windows[&r.shard].max(1e-3);
                    for k in &r.keys {
                        *demand.entry(k.key).or_default() += f64::from(k.attempted) / secs;
                    }
                }
                if let Some(part) = fleet.exchange(name, *rate, demand.into_iter().collect()) {
                    l.coordinator.set_totals(part.other, part.keys);
                }
            }
            let updates = l.coordinator.rebalance(&l.pending, now);
            l.pending.clear();
            send(handle, version, limiter, updates);
        }
    }
}

fn send(handle: &GatewayHandle, version: u64, limiter: usize, updates: Vec<ShareUpdate>) {
    for update in updates {
        if let Some(c) = handle.0.controls.get(update.shard) {
            let _ = c.send(Command::RateShares {
                version,
                limiter,
                update,
            });
        }
    }
}
