//! A shard: everything one pinned thread owns. Shared by its tasks through
//! `Rc`; never seen by another thread except its counters.

use crate::buffers::BufferPool;
use crate::drain::Drain;
use crate::metrics::Registry;
use crate::pool::Pools;
use crate::snapshot::Snapshot;
use crate::stats::ShardStats;
use crate::timer::Timers;
use shardgate_config::Config;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Free buffers a shard keeps for the next requests; beyond this, buffers
/// freed after a burst go back to the allocator.
const KEEP_BUFFERS: usize = 64;

/// Capacity of a buffer for a response's filter-added lines.
const LINE_BUFFER: usize = 1024;

/// What a route's filters change in the head sent upstream: lines to add,
/// and the rewritten target.
pub(crate) struct Edits {
    pub upstream: Vec<u8>,
    pub path: Vec<u8>,
    /// The client's target with an API key taken out, for the access log.
    pub log: Vec<u8>,
}

pub(crate) struct Shard {
    pub id: usize,
    /// How many shards the gateway runs (rate-limit shares are split by it).
    pub shards: usize,
    /// The configuration requests start on; replaced at reload. A request
    /// holds its own `Rc` and finishes on the snapshot it started with.
    snapshot: RefCell<Rc<Snapshot>>,
    pub buffers: BufferPool,
    pub pools: Pools,
    pub stats: Arc<ShardStats>,
    pub timers: Timers,
    pub metrics: Registry,
    pub drain: Drain,
    /// Long-idle connections held without a task (`None` if the shard could
    /// not make its epoll set: connections then wait in their tasks).
    pub parking: Option<crate::park::Parking>,
    /// Holds TLS handshakes to a share of a busy shard (see `handshakes`).
    pub handshakes: crate::handshakes::HandshakeGate,
    /// Downstream HTTP/2 counters.
    pub http2: crate::h2::Counts,
    /// Upstream HTTP/2 connections, by endpoint.
    pub h2_up: crate::h2::client::Conns,
    /// Connections in use per endpoint, when limited.
    pub limits: Rc<crate::limit::Limits>,
    /// The access log, when configured.
    pub log: Option<crate::access_log::ShardLog>,
    /// Spans for the exporter, when `[tracing]` is configured.
    pub traces: Option<crate::tracing::ShardTraces>,
    /// Reused heap slots for request futures (see `conn`).
    pub future_slots: RefCell<Option<Box<dyn Any>>>,
    /// Where a request path is normalised when it is not already normal.
    pub path_scratch: RefCell<Vec<u8>>,
    /// Where a route's filters write the upstream head's edits.
    pub edits: RefCell<Edits>,
    /// Small buffers for the response lines of filtered routes.
    pub lines: BufferPool,
    /// Where rate-limit reports go (with more than one shard).
    rate_tx: Option<std::sync::mpsc::Sender<crate::rates::Batch>>,
    /// Remote key sets, fetched by the control plane; `jwks_seen` is the
    /// store generation this shard's slots hold.
    jwks: Arc<crate::jwks::JwksStore>,
    jwks_seen: Cell<u64>,
    /// Request and trace ids.
    pub ids: RefCell<shardgate_filters::request_id::RequestIdGen>,
    log_limiter: LogLimiter,
}

impl Shard {
    /// Shard `id` of `shards`.
    pub(crate) fn new(
        (id, shards): (usize, usize),
        config: &Arc<Config>,
        stats: Arc<ShardStats>,
        (log_tx, rate_tx, jwks, span_tx): crate::supervisor::Outlets,
    ) -> Result<Shard, crate::snapshot::BuildError> {
        let pools = Pools::new();
        let metrics = Registry::default();
        let snapshot = Snapshot::build(config, 1, &pools, &metrics, (id, shards))?;
        let buffers = BufferPool::new(snapshot.limits.buffer_size, KEEP_BUFFERS);
        let jwks_seen = Cell::new(jwks.generation());
        fill_key_slots(&snapshot, &jwks);
        Ok(Shard {
            jwks,
            jwks_seen,
            id,
            shards,
            snapshot: RefCell::new(Rc::new(snapshot)),
            buffers,
            pools,
            stats,
            timers: Timers::new(),
            metrics,
            drain: Drain::default(),
            parking: crate::park::Parking::new()
                .map_err(|e| log::warn!("shard {id}: idle connections will not be parked: {e}"))
                .ok(),
            handshakes: crate::handshakes::HandshakeGate::new(),
            http2: Default::default(),
            h2_up: Default::default(),
            limits: Default::default(),
            log: config
                .access_log
                .as_ref()
                .zip(log_tx)
                .map(|(c, tx)| crate::access_log::ShardLog::new(c, tx)),
            traces: config
                .tracing
                .as_ref()
                .zip(span_tx)
                .map(|(c, tx)| crate::tracing::ShardTraces::new(c, shards, tx)),
            future_slots: RefCell::new(None),
            path_scratch: RefCell::new(Vec::with_capacity(1024)),
            edits: RefCell::new(Edits {
                upstream: Vec::with_capacity(1024),
                path: Vec::with_capacity(1024),
                log: Vec::with_capacity(1024),
            }),
            lines: BufferPool::new(LINE_BUFFER, KEEP_BUFFERS),
            rate_tx,
            ids: RefCell::new(shardgate_filters::request_id::RequestIdGen::new(
                id,
                std::time::SystemTime::now(),
            )),
            log_limiter: LogLimiter::new(),
        })
    }

    /// Copies out this shard's metrics (for the admin server).
    pub(crate) fn collect_metrics(&self) -> crate::metrics::ShardMetrics {
        let (routes, mut groups) = self.metrics.snapshot();
        let snap = self.snapshot();
        let now = self.timers.now();
        for g in &mut groups {
            if let Some(live) = snap.groups.iter().find(|x| x.name == g.name) {
                let state = live.state.borrow();
                g.breaker_state = state.breaker_state().map(|b| match b {
                    shardgate_upstream::BreakerState::Closed => 0,
                    shardgate_upstream::BreakerState::HalfOpen => 1,
                    shardgate_upstream::BreakerState::Open => 2,
                });
                g.ejected = state.ejected(now) as u64;
                g.down = state.down() as u64;
                g.endpoints = live
                    .endpoints
                    .iter()
                    .zip(state.endpoint_states(now))
                    .map(|(&id, (up, ejected))| (self.pools.addr(id), up, ejected))
                    .collect();
            }
        }
        crate::metrics::ShardMetrics {
            shard: self.id,
            config_version: self.snapshot.borrow().version,
            draining: self.drain.is_on(),
            stats: self.stats.snapshot(),
            routes,
            groups,
            pool_idle: self.pools.idle_counts(),
            log_written: self.log.as_ref().map_or(0, |l| l.written.get()),
            log_dropped: self.log.as_ref().map_or(0, |l| l.dropped.get()),
            handshake_limited_ticks: self.handshakes.limited_ticks.get(),
            spans_dropped: self.traces.as_ref().map_or(0, |t| t.dropped.get()),
            http2: crate::metrics::Http2Counts {
                connections: self.http2.connections.get(),
                abuse: std::array::from_fn(|i| self.http2.abuse[i].get()),
            },
        }
    }

    /// Closes a rate-limit period: sends this shard's demand of every
    /// limit to the coordinator (every `rates::PERIOD`, off the request path).
    pub(crate) fn report_rates(&self) {
        let Some(tx) = &self.rate_tx else { return };
        let snap = self.snapshot();
        if snap.limiters.is_empty() && snap.quotas.is_empty() {
            return;
        }
        let now = self.timers.now();
        let quotas: Vec<crate::rates::QuotaCounts> = snap
            .quotas
            .iter()
            .filter_map(|q| {
                let mut q = q.borrow_mut();
                let counts = q.report();
                (!counts.is_empty()).then(|| crate::rates::QuotaCounts {
                    name: q.name.clone(),
                    period: q.period,
                    counts,
                })
            })
            .collect();
        let limits: Vec<crate::rates::Report> = snap
            .limiters
            .iter()
            .zip(&snap.limit_configs)
            .enumerate()
            .map(|(limiter, (l, config))| crate::rates::Report {
                version: snap.version,
                limiter,
                config: config.clone(),
                report: l.borrow_mut().report(now),
            })
            .collect();
        if limits.is_empty() && quotas.is_empty() {
            return;
        }
        let _ = tx.send(crate::rates::Batch { limits, quotas });
    }

    /// Takes the fleet's totals of a quota's keys.
    pub(crate) fn apply_quota_totals(
        &self,
        name: &str,
        window: u64,
        totals: &[(shardgate_filters::global_rate::RateKey, u64)],
    ) {
        for q in &self.snapshot().quotas {
            let mut q = q.borrow_mut();
            if q.name == name {
                q.apply(window, totals);
            }
        }
    }

    /// Adopts new shares of a rate limit, if they are for the configuration
    /// being served.
    pub(crate) fn apply_rate_shares(
        &self,
        version: u64,
        limiter: usize,
        update: &shardgate_filters::global_rate::ShareUpdate,
    ) {
        let snap = self.snapshot();
        if snap.version == version
            && let Some(l) = snap.limiters.get(limiter)
        {
            l.borrow_mut().apply(update);
        }
    }

    /// Applies what active health checks found, if the current snapshot
    /// still has that group with those endpoints.
    pub(crate) fn set_health(&self, group: &str, endpoints: &[std::net::SocketAddr], up: &[bool]) {
        let snap = self.snapshot();
        if let Some(g) = snap.groups.iter().find(|g| g.name == group) {
            let same = g.endpoints.len() == endpoints.len()
                && g.endpoints
                    .iter()
                    .zip(endpoints)
                    .all(|(&id, a)| self.pools.addr(id) == *a);
            if same {
                g.state.borrow_mut().set_up(up);
            }
        }
    }

    /// At a tick: copies key sets the control plane fetched since the last
    /// look into this shard's slots, and passes on requests for an early
    /// fetch that tokens with unknown `kid`s made.
    pub(crate) fn tend_key_slots(&self, now: Instant) {
        let snap = self.snapshot.borrow();
        if snap.key_slots.is_empty() {
            return;
        }
        let generation = self.jwks.generation();
        if generation != self.jwks_seen.get() {
            self.jwks_seen.set(generation);
            fill_key_slots(&snap, &self.jwks);
        }
        for slot in &snap.key_slots {
            if slot.take_wanted(now) {
                self.jwks.want(&slot.source);
            }
        }
    }

    /// The current timeouts (without taking a reference on the snapshot).
    pub(crate) fn timeouts(&self) -> shardgate_config::Timeouts {
        self.snapshot.borrow().timeouts
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Rc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Builds a snapshot of `config` and makes it current: requests that
    /// start from now on use it; pools of endpoints it no longer names are
    /// drained.
    pub(crate) fn install(
        &self,
        config: &Arc<Config>,
        version: u64,
    ) -> Result<(), crate::snapshot::BuildError> {
        let mut snap = Snapshot::build(
            config,
            version,
            &self.pools,
            &self.metrics,
            (self.id, self.shards),
        )?;
        snap.keep_limiters(&self.snapshot());
        // The generation is read first: a set that changes while the slots
        // fill is copied again at the next tick.
        self.jwks_seen.set(self.jwks.generation());
        fill_key_slots(&snap, &self.jwks);
        self.pools.retain(&snap.endpoints);
        *self.snapshot.borrow_mut() = Rc::new(snap);
        Ok(())
    }
}

/// Gives each of `snap`'s remote key slots the store's set, where one has
/// been fetched.
fn fill_key_slots(snap: &Snapshot, store: &crate::jwks::JwksStore) {
    for slot in &snap.key_slots {
        if let Some(keys) = store.get(&slot.source) {
            slot.set(keys);
        }
    }
}

/// Upstream trouble is logged at most once per second per shard, with a
/// count of what was held back, so a dead upstream under load cannot flood
/// the log.
pub(crate) struct LogLimiter {
    last: Cell<Option<Instant>>,
    suppressed: Cell<u64>,
}

impl LogLimiter {
    pub(crate) fn new() -> Self {
        LogLimiter {
            last: Cell::new(None),
            suppressed: Cell::new(0),
        }
    }
}

impl Shard {
    /// Logs a warning unless one was logged less than a second ago.
    pub(crate) fn log_limited(&self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        let lim = &self.log_limiter;
        if lim
            .last
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            lim.suppressed.set(lim.suppressed.get() + 1);
            return;
        }
        let held = lim.suppressed.replace(0);
        lim.last.set(Some(now));
        if held > 0 {
            log::warn!(
                "shard {}: {} ({held} similar messages suppressed)",
                self.id,
                msg()
            );
        } else {
            log::warn!("shard {}: {}", self.id, msg());
        }
    }
}
