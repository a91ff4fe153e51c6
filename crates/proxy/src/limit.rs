//! Pool limits: at most `pool.max_connections_per_endpoint` connections in
//! use per endpoint on a shard. Beyond it a request waits, in a bounded
//! queue and first come first served, for a connection to be handed over;
//! when the queue is full or the wait times out it gets a 503. The counting
//! is `shardgate_upstream::pool_limit`; this module adds the waiting.

use crate::pool::EndpointId;
use crate::timer::Timers;
use shardgate_config::PoolSettings;
use shardgate_upstream::pool_limit::{Acquire, PoolLimit, PoolLimitConfig, Release};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
struct Waiter {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

struct Slot {
    limit: PoolLimit,
    queue: VecDeque<Rc<Waiter>>,
}

/// The shard's per-endpoint limits (only endpoints that were ever limited).
#[derive(Default)]
pub(crate) struct Limits {
    slots: RefCell<Vec<Option<Slot>>>,
}

/// Why no connection slot was had.
pub(crate) struct NoSlot;

fn config(p: &PoolSettings) -> PoolLimitConfig {
    PoolLimitConfig {
        max_connections: p.max_connections_per_endpoint,
        max_waiters: p.max_waiting,
        wait_timeout: p.wait_timeout,
    }
}

impl Limits {
    /// Waits for a connection slot on `ep` (immediately when there is room).
    pub(crate) async fn acquire(
        &self,
        timers: &Timers,
        ep: EndpointId,
        settings: &PoolSettings,
        now: Instant,
    ) -> Result<(), NoSlot> {
        let waiter = {
            let mut slots = self.slots.borrow_mut();
            if slots.len() <= ep {
                slots.resize_with(ep + 1, || None);
            }
            let slot = slots[ep].get_or_insert_with(|| Slot {
                limit: PoolLimit::new(config(settings)),
                queue: VecDeque::new(),
            });
            match slot.limit.try_acquire(now) {
                Acquire::Acquired => return Ok(()),
                Acquire::QueueFull => return Err(NoSlot),
                Acquire::MustWait { deadline } => {
                    let w = Rc::new(Waiter::default());
                    slot.queue.push_back(w.clone());
                    (w, deadline)
                }
            }
        };
        let (w, deadline) = waiter;
        let _ = timers.within(deadline, Handed(&w)).await;
        if w.granted.get() {
            return Ok(());
        }
        // Timed out: leave the queue.
        if let Some(Some(slot)) = self.slots.borrow_mut().get_mut(ep) {
            slot.queue.retain(|x| !Rc::ptr_eq(x, &w));
            slot.limit.cancel_wait();
        }
        Err(NoSlot)
    }

    /// Gives a slot back, handing it to the oldest waiter if there is one.
    pub(crate) fn release(&self, ep: EndpointId) {
        let mut slots = self.slots.borrow_mut();
        let Some(Some(slot)) = slots.get_mut(ep) else {
            return;
        };
        if slot.limit.release() == Release::HandedOff
            && let Some(w) = slot.queue.pop_front()
        {
            w.granted.set(true);
            if let Some(waker) = w.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// Completes when the waiter has been handed a slot.
struct Handed<'w>(&'w Waiter);

impl Future for Handed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.granted.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}
