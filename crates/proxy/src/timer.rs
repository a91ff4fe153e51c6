//! Shard-local deadlines on a coarse timing wheel.
//!
//! Every read and write on the request path has a deadline. monoio's own
//! timer entries are cache-padded (hundreds of bytes, 128-byte aligned), and
//! every future holding one inherits that size, including each idle
//! connection's task. Here a deadline is a slot in a shard-owned slab plus a
//! key in one wheel bucket: a 16-byte handle in the future, eager removal
//! when the operation finishes first, nothing allocated in steady state.
//! One task per shard advances the wheel every [`TICK`]; deadlines fire up
//! to one tick late, which is fine for timeouts measured in seconds.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Resolution of the wheel.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// Buckets in the wheel (one rotation is `BUCKETS * TICK`); later
/// deadlines simply stay in their bucket for more rotations.
const BUCKETS: usize = 512;

struct Slot {
    epoch: u32,
    live: bool,
    fired: bool,
    bucket: u32,
    pos: u32,
    deadline: Instant,
    waker: Option<Waker>,
}

struct Wheel {
    slots: Vec<Slot>,
    free: Vec<u32>,
    buckets: Vec<Vec<u32>>,
    origin: Instant,
    /// The next tick to process.
    cursor: u64,
}

/// A shard's deadlines. Not `Send`: one per shard.
pub(crate) struct Timers {
    wheel: RefCell<Wheel>,
    /// The time at the last tick: deadlines are computed from it instead of
    /// reading the clock several times per request.
    now: Clock,
}

/// The shard's tick clock, shared with what needs the time after the
/// request that holds it is gone (a drop guard).
#[derive(Clone)]
pub(crate) struct Clock(Rc<Cell<Instant>>);

impl Clock {
    /// The time of the last tick.
    pub(crate) fn now(&self) -> Instant {
        self.0.get()
    }
}

/// The deadline passed before the operation finished.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            now: Clock(Rc::new(Cell::new(Instant::now()))),
            wheel: RefCell::new(Wheel {
                slots: Vec::with_capacity(1024),
                free: Vec::with_capacity(1024),
                buckets: (0..BUCKETS).map(|_| Vec::with_capacity(16)).collect(),
                origin: Instant::now(),
                cursor: 0,
            }),
        }
    }

    /// Registers `deadline`; returns its slot key and epoch, which the
    /// caller must pass to [`Timers::release`] exactly once.
    fn register(&self, deadline: Instant) -> (u32, u32) {
        let mut w = self.wheel.borrow_mut();
        let since = deadline.saturating_duration_since(w.origin);
        let tick = since.as_nanos().div_ceil(TICK.as_nanos()) as u64;
        let tick = tick.max(w.cursor);
        let bucket = (tick % BUCKETS as u64) as u32;
        let key = match w.free.pop() {
            Some(k) => k,
            None => {
                w.slots.push(Slot {
                    epoch: 0,
                    live: false,
                    fired: false,
                    bucket: 0,
                    pos: 0,
                    deadline,
                    waker: None,
                });
                (w.slots.len() - 1) as u32
            }
        };
        let pos = w.buckets[bucket as usize].len() as u32;
        w.buckets[bucket as usize].push(key);
        let slot = &mut w.slots[key as usize];
        slot.epoch = slot.epoch.wrapping_add(1);
        slot.live = true;
        slot.fired = false;
        slot.bucket = bucket;
        slot.pos = pos;
        slot.deadline = deadline;
        (key, slot.epoch)
    }

    fn remove_from_bucket(w: &mut Wheel, key: u32) {
        let (bucket, pos) = {
            let s = &w.slots[key as usize];
            (s.bucket as usize, s.pos as usize)
        };
        let b = &mut w.buckets[bucket];
        b.swap_remove(pos);
        if let Some(&moved) = b.get(pos) {
            w.slots[moved as usize].pos = pos as u32;
        }
    }

    fn release(&self, key: u32, epoch: u32) {
        let mut w = self.wheel.borrow_mut();
        let slot = &w.slots[key as usize];
        if slot.epoch != epoch || !slot.live {
            return;
        }
        if !slot.fired {
            Self::remove_from_bucket(&mut w, key);
        }
        let slot = &mut w.slots[key as usize];
        slot.live = false;
        slot.waker = None;
        w.free.push(key);
    }

    fn poll_fired(&self, key: u32, epoch: u32, cx: &mut Context<'_>) -> bool {
        let mut w = self.wheel.borrow_mut();
        let slot = &mut w.slots[key as usize];
        if slot.epoch != epoch || slot.fired {
            return true;
        }
        match &slot.waker {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        false
    }

    /// The time of the last tick (at most one [`TICK`] behind the clock
    /// while the shard runs).
    pub(crate) fn now(&self) -> Instant {
        self.now.now()
    }

    /// The tick clock, to keep.
    pub(crate) fn clock(&self) -> Clock {
        self.now.clone()
    }

    /// Fires every deadline that has passed by `now`.
    pub(crate) fn advance(&self, now: Instant) {
        self.now.0.set(now);
        let mut wakers: [Option<Waker>; 32] = Default::default();
        loop {
            let mut n = 0;
            let more = {
                let mut w = self.wheel.borrow_mut();
                let now_tick =
                    (now.saturating_duration_since(w.origin).as_nanos() / TICK.as_nanos()) as u64;
                let mut more = false;
                if w.cursor + BUCKETS as u64 <= now_tick {
                    // Far behind: one visit per bucket covers everything.
                    w.cursor = now_tick + 1 - BUCKETS as u64;
                }
                while w.cursor <= now_tick {
                    let bucket = (w.cursor % BUCKETS as u64) as usize;
                    let mut i = 0;
                    while i < w.buckets[bucket].len() {
                        let key = w.buckets[bucket][i];
                        if w.slots[key as usize].deadline > now {
                            i += 1;
                            continue;
                        }
                        if n == wakers.len() {
                            more = true;
                            break;
                        }
                        Self::remove_from_bucket(&mut w, key);
                        let slot = &mut w.slots[key as usize];
                        slot.fired = true;
                        wakers[n] = slot.waker.take();
                        n += 1;
                    }
                    if more {
                        break;
                    }
                    w.cursor += 1;
                }
                more
            };
            // Wake outside the borrow: a woken task may register again.
            for w in wakers.iter_mut().take(n) {
                if let Some(w) = w.take() {
                    w.wake();
                }
            }
            if !more {
                return;
            }
        }
    }

    /// Runs `fut` until it completes or `deadline` passes. The deadline is
    /// registered only if `fut` does not finish on its first poll.
    pub(crate) fn within<F: Future>(&self, deadline: Instant, fut: F) -> Within<'_, F> {
        Within {
            fut,
            timers: self,
            deadline,
            registered: None,
        }
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        let w = self.wheel.borrow();
        w.buckets.iter().map(Vec::len).sum()
    }
}

pin_project_lite::pin_project! {
    /// The future returned by [`Timers::within`].
    pub(crate) struct Within<'t, F> {
        #[pin]
        fut: F,
        timers: &'t Timers,
        deadline: Instant,
        registered: Option<(u32, u32)>,
    }

    impl<'t, F> PinnedDrop for Within<'t, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((key, epoch)) = this.registered.take() {
                this.timers.release(key, epoch);
            }
        }
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let (key, epoch) = match *this.registered {
            Some(r) => r,
            None => {
                let r = this.timers.register(*this.deadline);
                *this.registered = Some(r);
                r
            }
        };
        if this.timers.poll_fired(key, epoch, cx) {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A registered deadline; released when dropped.
    struct Deadline<'t> {
        timers: &'t Timers,
        key: u32,
        epoch: u32,
    }

    impl Drop for Deadline<'_> {
        fn drop(&mut self) {
            self.timers.release(self.key, self.epoch);
        }
    }

    impl Timers {
        fn deadline(&self, at: Instant) -> Deadline<'_> {
            let (key, epoch) = self.register(at);
            Deadline {
                timers: self,
                key,
                epoch,
            }
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn fires_in_order_and_releases_eagerly() {
        let t = Timers::new();
        let start = Instant::now();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let a = t.deadline(start + Duration::from_millis(25));
        let b = t.deadline(start + Duration::from_secs(30));
        let c = t.deadline(start + Duration::from_millis(15));
        assert!(!t.poll_fired(a.key, a.epoch, &mut cx));
        assert!(!t.poll_fired(b.key, b.epoch, &mut cx));
        assert!(!t.poll_fired(c.key, c.epoch, &mut cx));
        t.advance(start + Duration::from_millis(20));
        assert!(
            t.poll_fired(c.key, c.epoch, &mut cx),
            "15 ms deadline passed"
        );
        assert!(!t.poll_fired(a.key, a.epoch, &mut cx));
        t.advance(start + Duration::from_millis(40));
        assert!(t.poll_fired(a.key, a.epoch, &mut cx));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // Long deadlines survive rotations of the wheel.
        t.advance(start + Duration::from_secs(29));
        assert!(!t.poll_fired(b.key, b.epoch, &mut cx));
        drop(b);
        assert_eq!(t.live(), 0, "dropping a deadline removes it at once");
        drop((a, c));
        // Slots are reused.
        let d = t.deadline(start + Duration::from_secs(1));
        assert!(d.key < 3);
    }

    #[test]
    fn many_deadlines_in_one_bucket() {
        let t = Timers::new();
        let start = Instant::now();
        let ds: Vec<_> = (0..100)
            .map(|_| t.deadline(start + Duration::from_millis(5)))
            .collect();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        for d in &ds {
            assert!(!t.poll_fired(d.key, d.epoch, &mut cx));
        }
        t.advance(start + Duration::from_millis(50));
        assert!(ds.iter().all(|d| t.poll_fired(d.key, d.epoch, &mut cx)));
        drop(ds);
        assert_eq!(t.live(), 0);
    }
}
