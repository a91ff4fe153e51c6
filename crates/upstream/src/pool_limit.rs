//! Connection limits per endpoint: the bookkeeping behind "at most N connections; beyond that
//! requests wait in a bounded queue with a timeout, then 503".
//!
//! [`PoolLimit::try_acquire`] grants a connection slot, or tells the caller to wait (with the
//! deadline of its wait), or to fail fast because the queue is full. Slots are handed over, not
//! released and re-raced: when a connection is released and someone is waiting,
//! [`PoolLimit::release`] says so and the slot passes to the oldest waiter, whom the proxy wakes.
//! A waiter whose deadline passes first calls [`PoolLimit::cancel_wait`] and answers 503.
//! The queue itself (the wakers) lives in the proxy; this type only keeps the counts honest.
//!
//! Limits are per shard: with a gateway-wide limit, give each shard [`per_shard_share`].

use std::time::{Duration, Instant};

/// Default connections per endpoint, gateway-wide.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default requests that may wait for a connection, per endpoint.
pub const DEFAULT_MAX_WAITERS: u32 = 256;
/// Default time a request waits for a connection before a 503.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pool limit settings for one endpoint on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimitConfig {
    pub max_connections: u32,
    pub max_waiters: u32,
    pub wait_timeout: Duration,
}

impl Default for PoolLimitConfig {
    fn default() -> Self {
        PoolLimitConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_waiters: DEFAULT_MAX_WAITERS,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
        }
    }
}

/// This shard's part of a gateway-wide limit: `total` split over `shards`, the remainder going
/// to the lowest shard indices, and never below 1 so every shard can reach every endpoint.
pub fn per_shard_share(total: u32, shards: u32, shard: u32) -> u32 {
    let shards = shards.max(1);
    let share = total / shards + u32::from(shard < total % shards);
    share.max(1)
}

/// The answer to [`PoolLimit::try_acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// A slot is yours; release it when the request no longer holds the connection.
    Acquired,
    /// Enqueue and wait until handed a slot or `deadline`, whichever is first.
    MustWait { deadline: Instant },
    /// The queue is full: 503 now.
    QueueFull,
}

/// The answer to [`PoolLimit::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The slot is free.
    Freed,
    /// The slot now belongs to the oldest waiter: wake it.
    HandedOff,
}

/// Slot and queue counts for one endpoint on one shard.
#[derive(Debug, Clone)]
pub struct PoolLimit {
    cfg: PoolLimitConfig,
    active: u32,
    waiting: u32,
}

impl PoolLimit {
    pub fn new(cfg: PoolLimitConfig) -> Self {
        PoolLimit {
            cfg,
            active: 0,
            waiting: 0,
        }
    }

    /// Ask for a slot at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Acquire {
        // Waiters go first: a newcomer never overtakes the queue.
        if self.active < self.cfg.max_connections && self.waiting == 0 {
            self.active += 1;
            return Acquire::Acquired;
        }
        if self.waiting >= self.cfg.max_waiters {
            return Acquire::QueueFull;
        }
        self.waiting += 1;
        Acquire::MustWait {
            deadline: now + self.cfg.wait_timeout,
        }
    }

    /// Give a slot back.
    pub fn release(&mut self) -> Release {
        // Above a lowered limit the slot is dropped instead, until the count is back under it.
        if self.waiting > 0 && self.active <= self.cfg.max_connections {
            self.waiting -= 1;
            return Release::HandedOff;
        }
        self.active = self.active.saturating_sub(1);
        Release::Freed
    }

    /// A waiter gave up (deadline passed, client gone) before being handed a slot.
    pub fn cancel_wait(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// Apply a new limit (reload). Extra slots above a lowered limit drain as they are released;
    /// a raised limit admits waiters, returning how many to wake now.
    pub fn reconfigure(&mut self, cfg: PoolLimitConfig) -> u32 {
        self.cfg = cfg;
        let room = cfg.max_connections.saturating_sub(self.active);
        let wake = room.min(self.waiting);
        self.waiting -= wake;
        self.active += wake;
        wake
    }

    /// Slots held.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Requests waiting.
    pub fn waiting(&self) -> u32 {
        self.waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limit(max_connections: u32, max_waiters: u32) -> PoolLimit {
        PoolLimit::new(PoolLimitConfig {
            max_connections,
            max_waiters,
            wait_timeout: 2 * S,
        })
    }

    #[test]
    fn acquire_then_wait_then_queue_full() {
        let t0 = Instant::now();
        let mut p = limit(2, 2);
        let got: Vec<Acquire> = (0..5).map(|_| p.try_acquire(t0)).collect();
        let wait = Acquire::MustWait {
            deadline: t0 + 2 * S,
        };
        assert_eq!(
            got,
            vec![
                Acquire::Acquired,
                Acquire::Acquired,
                wait,
                wait,
                Acquire::QueueFull
            ]
        );
        assert_eq!((p.active(), p.waiting()), (2, 2));
    }

    #[test]
    fn release_hands_slots_to_waiters_before_freeing_them() {
        let t0 = Instant::now();
        let mut p = limit(1, 4);
        assert_eq!(p.try_acquire(t0), Acquire::Acquired);
        assert!(matches!(p.try_acquire(t0), Acquire::MustWait { .. }));
        assert_eq!(p.release(), Release::HandedOff);
        assert_eq!(
            (p.active(), p.waiting()),
            (1, 0),
            "the waiter holds the slot now"
        );
        assert_eq!(p.release(), Release::Freed);
        assert_eq!((p.active(), p.waiting()), (0, 0));
    }

    #[test]
    fn regression_newcomer_right_after_a_release_queues_behind_the_woken_waiter() {
        // Were the slot freed and re-raced, the newcomer (already running) would beat the
        // waiter (still to be woken) every time, starving the queue.
        let t0 = Instant::now();
        let mut p = limit(1, 4);
        assert_eq!(p.try_acquire(t0), Acquire::Acquired);
        assert!(matches!(p.try_acquire(t0), Acquire::MustWait { .. }));
        assert_eq!(p.release(), Release::HandedOff);
        assert!(matches!(p.try_acquire(t0), Acquire::MustWait { .. }));
    }

    #[test]
    fn timed_out_waiter_frees_its_queue_place() {
        let t0 = Instant::now();
        let mut p = limit(1, 1);
        assert_eq!(p.try_acquire(t0), Acquire::Acquired);
        assert!(matches!(p.try_acquire(t0), Acquire::MustWait { .. }));
        assert_eq!(p.try_acquire(t0), Acquire::QueueFull);
        p.cancel_wait();
        assert_eq!(
            p.try_acquire(t0 + S),
            Acquire::MustWait {
                deadline: t0 + 3 * S
            }
        );
    }

    #[test]
    fn reconfigure_raises_and_lowers() {
        let t0 = Instant::now();
        let mut p = limit(1, 8);
        assert_eq!(p.try_acquire(t0), Acquire::Acquired);
        for _ in 0..3 {
            assert!(matches!(p.try_acquire(t0), Acquire::MustWait { .. }));
        }
        assert_eq!(
            p.reconfigure(PoolLimitConfig {
                max_connections: 3,
                max_waiters: 8,
                wait_timeout: S
            }),
            2
        );
        assert_eq!((p.active(), p.waiting()), (3, 1));
        assert_eq!(
            p.reconfigure(PoolLimitConfig {
                max_connections: 1,
                max_waiters: 8,
                wait_timeout: S
            }),
            0
        );
        assert_eq!(
            p.release(),
            Release::Freed,
            "over the lowered limit: drain, don't hand off"
        );
        assert_eq!(p.release(), Release::Freed);
        assert_eq!(
            p.release(),
            Release::HandedOff,
            "back at the limit: hand off"
        );
        assert_eq!((p.active(), p.waiting()), (1, 0));
    }

    #[test]
    fn per_shard_shares_add_up() {
        // (total, shards)
        for (total, shards) in [(10, 4), (1024, 2), (3, 3), (7, 1), (100, 7)] {
            let shares: Vec<u32> = (0..shards)
                .map(|s| per_shard_share(total, shards, s))
                .collect();
            assert_eq!(
                shares.iter().sum::<u32>(),
                total,
                "{total} over {shards}: {shares:?}"
            );
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
        assert_eq!(per_shard_share(2, 4, 3), 1, "never zero");
    }
}
