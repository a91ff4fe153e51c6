//! Handshakes give way to established connections when a shard is short of
//! CPU.
//!
//! A full TLS handshake costs a shard a few hundred microseconds of CPU (key
//! exchange and signature), a kept-alive request a few tens. Run in turn on
//! one thread, a flood of new connections would take most of the shard from
//! the clients it already serves. So each shard meters the time its
//! handshakes spend being polled, and at every tick looks at the tick
//! before: when the shard was busy (its thread used at least
//! [`SATURATED`] of the wall time) and requests on kept-alive connections
//! were served in it, handshakes may use at most [`SHARE`] of each tick
//! for the next [`HOLD`] (or until the shard goes idle); a handshake over
//! budget waits for the next tick (its client sees a slower handshake,
//! bounded by `handshake_timeout`, not a failure). A shard with time to
//! spare, or one that serves only new connections, holds no handshake back.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The share of a busy tick handshakes may use while established
/// connections want the rest.
const SHARE: f64 = 0.3;
/// A shard whose thread used this much of a tick's wall time was busy.
const SATURATED: f64 = 0.9;
/// Once limited, handshakes stay limited this long after the shard was
/// last busy with kept-alive traffic (unless it goes idle)...
const HOLD: Duration = Duration::from_millis(200);
/// ...where idle is using less than this share of the time.
const IDLE: f64 = 0.5;
/// A budget is never less than the share of this much time.
const MIN_TICK: f64 = 0.005;

pub(crate) struct HandshakeGate {
    /// Handshake time allowed in the current tick; `None`: no limit.
    budget: Cell<Option<Duration>>,
    /// Handshakes are limited until then (see [`HOLD`]).
    limited_until: Cell<Option<Instant>>,
    /// Handshake time spent in the current tick.
    used: Cell<Duration>,
    /// Requests served on kept-alive connections (not a connection's first).
    pub kept_alive: Cell<u64>,
    /// At the last tick: when, the thread's CPU time then, `kept_alive` then.
    last: Cell<Option<(Instant, Duration, u64)>>,
    waiting: RefCell<Vec<Waker>>,
    /// Ticks whose handshakes used up their budget (some waited), for metrics.
    pub limited_ticks: Cell<u64>,
}

impl HandshakeGate {
    pub(crate) fn new() -> HandshakeGate {
        HandshakeGate {
            budget: Cell::new(None),
            limited_until: Cell::new(None),
            used: Cell::new(Duration::ZERO),
            kept_alive: Cell::new(0),
            last: Cell::new(None),
            waiting: RefCell::new(Vec::new()),
            limited_ticks: Cell::new(0),
        }
    }

    /// Runs `handshake` under the gate: each poll is timed and charged, and
    /// a poll that would go over budget waits for the next tick instead.
    pub(crate) fn meter<'a, F: Future + 'a>(&'a self, handshake: F) -> Metered<'a, F> {
        Metered {
            gate: self,
            inner: Box::pin(handshake),
        }
    }

    /// At each tick (off the request path): decides the next tick's budget
    /// from the one that ended, and lets waiting handshakes go on.
    pub(crate) fn tick(&self, now: Instant) {
        self.tick_with(now, thread_cpu_time());
    }

    /// [`HandshakeGate::tick`] with the thread's CPU time given.
    fn tick_with(&self, now: Instant, cpu: Option<Duration>) {
        let kept = self.kept_alive.get();
        let spent = self.used.replace(Duration::ZERO);
        if self.budget.get().is_some_and(|b| spent >= b) {
            self.limited_ticks.set(self.limited_ticks.get() + 1);
        }
        let mut budget = None;
        if let (Some((at, cpu_then, kept_then)), Some(cpu)) = (self.last.get(), cpu) {
            let wall = now.saturating_duration_since(at).as_secs_f64();
            let busy = cpu.saturating_sub(cpu_then).as_secs_f64();
            if wall > 0.0 && busy >= SATURATED * wall && kept > kept_then {
                self.limited_until.set(Some(now + HOLD));
            } else if busy < IDLE * wall {
                self.limited_until.set(None);
            }
            // Held for a while once limited: a tick in which handshakes
            // waited looks less busy, and letting the whole queue of them
            // go at once would stall the shard.
            if self.limited_until.get().is_some_and(|t| now < t) {
                budget = Some(Duration::from_secs_f64(SHARE * wall.max(MIN_TICK)));
            }
        }
        self.budget.set(budget);
        self.last.set(cpu.map(|c| (now, c, kept)));
        for w in self.waiting.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn may_run(&self) -> bool {
        self.budget.get().is_none_or(|b| self.used.get() < b)
    }
}

/// This thread's CPU time (user and system).
#[allow(unsafe_code)]
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| {
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    })
}

/// A handshake under a [`HandshakeGate`].
pub(crate) struct Metered<'a, F: Future> {
    gate: &'a HandshakeGate,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let gate = self.gate;
        if !gate.may_run() {
            gate.waiting.borrow_mut().push(cx.waker().clone());
            return Poll::Pending;
        }
        let start = Instant::now();
        let r = self.inner.as_mut().poll(cx);
        gate.used.set(gate.used.get() + start.elapsed());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A "handshake" that costs `each` of CPU per poll and needs `polls` polls.
    async fn work(each: Duration, polls: usize) {
        for _ in 0..polls {
            let start = Instant::now();
            while start.elapsed() < each {}
            YieldOnce(false).await;
        }
    }

    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    const TICK: Duration = Duration::from_millis(10);

    #[test]
    fn a_busy_shard_with_kept_alive_traffic_holds_handshakes_to_their_share() {
        let gate = HandshakeGate::new();
        let t0 = Instant::now();
        gate.tick_with(t0, Some(Duration::ZERO));
        // A tick in which the thread ran the whole time and served kept-alive requests.
        gate.kept_alive.set(5);
        gate.tick_with(t0 + TICK, Some(TICK));
        assert_eq!(gate.budget.get(), Some(TICK.mul_f64(SHARE)));

        let waker = Arc::new(Count(0.into()));
        let wk = waker.clone().into();
        let mut cx = Context::from_waker(&wk);
        let mut hs = std::pin::pin!(gate.meter(work(Duration::from_millis(2), 10)));
        let mut polls = 0;
        while gate.may_run() {
            assert!(hs.as_mut().poll(&mut cx).is_pending());
            polls += 1;
        }
        assert_eq!(
            polls, 2,
            "2 ms polls until the 3 ms budget is spent: {polls}"
        );
        assert!(hs.as_mut().poll(&mut cx).is_pending(), "still waiting");
        // The next tick: the shard was not busy, so nothing is held back.
        let woken = waker.0.load(std::sync::atomic::Ordering::Relaxed);
        gate.tick_with(t0 + TICK * 2, Some(TICK + Duration::from_millis(3)));
        assert!(
            waker.0.load(std::sync::atomic::Ordering::Relaxed) > woken,
            "woken at the tick"
        );
        assert_eq!(gate.budget.get(), None);
        let mut more = 0;
        while hs.as_mut().poll(&mut cx).is_pending() {
            more += 1;
        }
        assert!(more >= 7, "the rest ran unhindered: {more}");
    }

    #[test]
    fn the_limit_holds_through_quieter_ticks_until_the_shard_goes_idle() {
        let gate = HandshakeGate::new();
        let t0 = Instant::now();
        gate.tick_with(t0, Some(Duration::ZERO));
        gate.kept_alive.set(5);
        gate.tick_with(t0 + TICK, Some(TICK));
        assert!(gate.budget.get().is_some());
        // 70% busy: handshakes waited, the rest ran; still limited.
        gate.tick_with(t0 + TICK * 2, Some(TICK + TICK.mul_f64(0.7)));
        assert!(gate.budget.get().is_some());
        // Past the hold with no busy tick: free again.
        let later = t0 + TICK * 2 + HOLD;
        gate.tick_with(later, Some(TICK + TICK.mul_f64(0.7) + HOLD.mul_f64(0.7)));
        assert_eq!(gate.budget.get(), None);
        // Idle lifts it at once.
        gate.kept_alive.set(9);
        gate.tick_with(later + TICK, Some(TICK * 2 + HOLD));
        assert!(gate.budget.get().is_some());
        gate.tick_with(later + TICK * 2, Some(TICK * 2 + HOLD + TICK / 10));
        assert_eq!(gate.budget.get(), None);
    }

    #[test]
    fn handshakes_are_not_held_back_without_kept_alive_traffic_or_when_the_shard_is_idle() {
        let gate = HandshakeGate::new();
        let t0 = Instant::now();
        gate.tick_with(t0, Some(Duration::ZERO));
        // Busy, but only with new connections (a flood alone, or a reconnect storm).
        gate.tick_with(t0 + TICK, Some(TICK));
        assert_eq!(gate.budget.get(), None);
        // Kept-alive requests, but the shard had time to spare.
        gate.kept_alive.set(100);
        gate.tick_with(t0 + TICK * 2, Some(TICK + TICK / 2));
        assert_eq!(gate.budget.get(), None);
        // No CPU clock: no limit.
        gate.kept_alive.set(200);
        gate.tick_with(t0 + TICK * 3, None);
        assert_eq!(gate.budget.get(), None);
    }
}
