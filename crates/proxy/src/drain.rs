//! Graceful drain within a shard: a one-way switch that wakes every task
//! waiting on it (accept loops and idle connections), so they can stop at a
//! request boundary. Single-threaded; no allocation once the waiter list has
//! grown to the number of idle connections.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub(crate) struct Drain {
    on: Cell<bool>,
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
    /// Accept loops still running: a draining shard is done only once each
    /// has stopped listening and taken the accept it had in flight.
    accepting: Rc<Cell<usize>>,
}

impl Drain {
    /// Whether the shard is draining.
    pub(crate) fn is_on(&self) -> bool {
        self.on.get()
    }

    /// Starts draining and wakes every waiter.
    pub(crate) fn start(&self) {
        self.on.set(true);
        let wakers: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Counts an accept loop as running until the guard drops (taken before
    /// the loop is spawned, so no drain can finish before it first runs).
    pub(crate) fn accepting(&self) -> Accepting {
        self.accepting.set(self.accepting.get() + 1);
        Accepting(self.accepting.clone())
    }

    /// Whether every accept loop has stopped.
    pub(crate) fn accepts_stopped(&self) -> bool {
        self.accepting.get() == 0
    }

    /// A future that completes once draining has started.
    pub(crate) fn wait(&self) -> DrainWait<'_> {
        DrainWait {
            drain: self,
            slot: None,
        }
    }
}

/// See [`Drain::accepting`].
pub(crate) struct Accepting(Rc<Cell<usize>>);

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

pub(crate) struct DrainWait<'d> {
    drain: &'d Drain,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.on.get() {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match self.slot {
            Some(i) => self.drain.waiters.borrow_mut()[i] = waker,
            None => {
                let mut waiters = self.drain.waiters.borrow_mut();
                let i = match self.drain.free.borrow_mut().pop() {
                    Some(i) => {
                        waiters[i] = waker;
                        i
                    }
                    None => {
                        waiters.push(waker);
                        waiters.len() - 1
                    }
                };
                drop(waiters);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.drain.waiters.borrow_mut()[i] = None;
            self.drain.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn start_wakes_every_waiter_and_slots_are_reused() {
        let d = Drain::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut a = d.wait();
        let mut b = d.wait();
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut b).poll(&mut cx).is_pending());
        drop(b);
        let mut c = d.wait();
        assert!(Pin::new(&mut c).poll(&mut cx).is_pending());
        assert_eq!(
            d.waiters.borrow().len(),
            2,
            "the dropped waiter's slot was reused"
        );
        d.start();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(Pin::new(&mut a).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut d.wait()).poll(&mut cx).is_ready());
    }
}
