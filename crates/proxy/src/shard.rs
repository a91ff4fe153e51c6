//! A shard: everything one pinned thread owns. Shared by its tasks through
//! `Rc`; never seen by another thread except its counters.

use crate::buffers::BufferPool;
use crate::pool::Pools;
use crate::snapshot::Snapshot;
use crate::stats::ShardStats;
use crate::timer::Timers;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Free buffers a shard keeps for the next requests; beyond this, buffers
/// freed after a burst go back to the allocator.
const KEEP_BUFFERS: usize = 64;

pub(crate) struct Shard {
    pub id: usize,
    pub snapshot: Rc<Snapshot>,
    pub buffers: BufferPool,
    pub pools: Pools,
    pub stats: Arc<ShardStats>,
    pub timers: Timers,
    /// Reused heap slots for request futures (see `conn`).
    pub future_slots: RefCell<Option<Box<dyn Any>>>,
    /// Where a request path is normalised when it is not already normal.
    pub path_scratch: RefCell<Vec<u8>>,
    log_limiter: LogLimiter,
}

impl Shard {
    pub(crate) fn new(id: usize, snapshot: Snapshot, stats: Arc<ShardStats>) -> Shard {
        let buffers = BufferPool::new(snapshot.limits.buffer_size, KEEP_BUFFERS);
        let pools = Pools::new(snapshot.endpoints.len());
        Shard {
            id,
            snapshot: Rc::new(snapshot),
            buffers,
            pools,
            stats,
            timers: Timers::new(),
            future_slots: RefCell::new(None),
            path_scratch: RefCell::new(Vec::with_capacity(1024)),
            log_limiter: LogLimiter::new(),
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
