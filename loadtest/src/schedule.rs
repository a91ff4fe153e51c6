//! Open-loop scheduling and coordinated-omission correction, as pure arithmetic.
//!
//! At `--rate R` over `C` connections each connection sends one request every `C / R` seconds,
//! and connection `k` is shifted by `k / R` so that the whole run sends evenly spaced requests.
//! Request `i` of a connection is *scheduled* at `first + i * interval`, whatever happened
//! before. When a response is late the next request goes out as soon as the connection is free,
//! and its latency is counted from its scheduled time, not from when it was sent: the time it
//! spent waiting behind a slow response is latency a real client would have seen (wrk2's
//! correction). The one delay not charged is the timer's own lateness on an idle connection
//! (monoio's timer ticks in milliseconds), up to [`TIMER_SLACK`]; any lateness beyond that is
//! the harness falling behind and is charged like the server's.
//!
//! monoio rounds a sleep up to the next millisecond tick and the wait up to a whole
//! millisecond again, so a sleep ends 0-2 ms after its deadline. A connection therefore
//! sleeps until [`wake_time`], [`TIMER_EARLY`] before its scheduled time, and sends when it
//! wakes: sends land within about a millisecond either side of the schedule instead of always
//! late, and an early send is timed from the moment it was written.

use std::time::{Duration, Instant};

/// Lateness of a timer wake-up that is not counted as latency on an idle connection.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// How much earlier than its scheduled time a connection asks the timer to wake it.
pub const TIMER_EARLY: Duration = Duration::from_millis(1);

/// When to wake for a request scheduled at `planned`.
pub fn wake_time(planned: Instant) -> Instant {
    planned.checked_sub(TIMER_EARLY).unwrap_or(planned)
}

/// The send times of one connection in an open-loop run.
#[derive(Debug, Clone)]
pub struct Schedule {
    first: Instant,
    /// Seconds between two requests of this connection (f64: no rounding drift).
    interval_s: f64,
    next_index: u64,
}

impl Schedule {
    /// `rate` is the total rate in requests per second over `connections` connections;
    /// `slot` is this connection's index among them.
    pub fn new(start: Instant, rate: f64, connections: u64, slot: u64) -> Self {
        let phase = Duration::from_secs_f64(slot as f64 / rate);
        Schedule {
            first: start + phase,
            interval_s: connections as f64 / rate,
            next_index: 0,
        }
    }

    /// Time between two requests of this connection.
    #[cfg(test)]
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_s)
    }

    /// The scheduled time of the next request; advances the schedule.
    pub fn next_send(&mut self) -> Instant {
        let at = self.planned(self.next_index);
        self.next_index += 1;
        at
    }

    /// The scheduled time of request `index` (pure).
    pub fn planned(&self, index: u64) -> Instant {
        // One multiplication per request: rounding never accumulates over a long run.
        self.first + Duration::from_secs_f64(index as f64 * self.interval_s)
    }
}

/// The instant a request's latency is measured from.
///
/// * `planned`: when the schedule wanted it sent;
/// * `sent`: when it was actually written;
/// * `free_at`: when the connection finished the previous response (or connected).
///
/// If the connection was busy at `planned`, the wait is the server's doing: count from
/// `planned`. If it was idle, the request was only held back by the timer: count from `sent`,
/// but never more than [`TIMER_SLACK`] after `planned`.
pub fn latency_origin(planned: Instant, sent: Instant, free_at: Instant) -> Instant {
    if free_at > planned {
        planned
    } else {
        sent.min(planned + TIMER_SLACK)
    }
}

/// Latency of a response completed at `done`, measured from `origin` (never negative).
pub fn latency(origin: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn schedule_spaces_connections_evenly() {
        let t0 = Instant::now();
        // 1000 req/s over 4 connections: each sends every 4 ms, shifted by 1 ms per slot.
        let mut a = Schedule::new(t0, 1000.0, 4, 0);
        let mut b = Schedule::new(t0, 1000.0, 4, 3);
        assert_eq!(a.interval(), ms(4));
        assert_eq!(a.next_send(), t0);
        assert_eq!(a.next_send(), t0 + ms(4));
        assert_eq!(b.next_send(), t0 + ms(3));
        assert_eq!(b.next_send(), t0 + ms(7));
        assert_eq!(a.planned(1000), t0 + ms(4000));
    }

    #[test]
    fn no_drift_over_many_requests() {
        let t0 = Instant::now();
        // 3 req/s on one connection: the interval is not a whole number of nanoseconds, yet
        // request 3_000_000 still lands within a microsecond of 1e6 seconds.
        let s = Schedule::new(t0, 3.0, 1, 0);
        let at = s.planned(3_000_000).duration_since(t0);
        let err = at.as_secs_f64() - 1_000_000.0;
        assert!(err.abs() < 1e-6, "drift {err}");
    }

    #[test]
    fn busy_connection_counts_from_schedule() {
        // The server stalled: the previous response came 50 ms after this request was due, so
        // the request was sent 50 ms late and answered 1 ms later. Its latency is 51 ms.
        let t0 = Instant::now();
        let planned = t0 + ms(10);
        let free_at = t0 + ms(60);
        let sent = free_at;
        let origin = latency_origin(planned, sent, free_at);
        assert_eq!(origin, planned);
        assert_eq!(latency(origin, sent + ms(1)), ms(51));
    }

    #[test]
    fn idle_connection_does_not_charge_timer_lateness() {
        let t0 = Instant::now();
        let planned = t0 + ms(10);
        let free_at = t0 + ms(5);
        let sent = planned + Duration::from_micros(900);
        let origin = latency_origin(planned, sent, free_at);
        assert_eq!(origin, sent);
        assert_eq!(latency(origin, sent + ms(1)), ms(1));
    }

    #[test]
    fn idle_but_far_behind_is_charged_past_slack() {
        // An overloaded harness woke 30 ms late: everything past the slack is counted.
        let t0 = Instant::now();
        let planned = t0 + ms(10);
        let sent = planned + ms(30);
        let origin = latency_origin(planned, sent, t0);
        assert_eq!(origin, planned + TIMER_SLACK);
        assert_eq!(latency(origin, sent + ms(1)), ms(29));
    }

    #[test]
    fn sent_early_counts_from_send() {
        let t0 = Instant::now();
        let planned = t0 + ms(10);
        let sent = t0 + ms(9);
        assert_eq!(latency_origin(planned, sent, t0), sent);
    }

    #[test]
    fn wakes_one_timer_tick_early() {
        let t0 = Instant::now();
        assert_eq!(wake_time(t0 + ms(10)), t0 + ms(9));
        // Woken 0.4 ms early: timed from the write, the schedule is not touched.
        let planned = t0 + ms(10);
        let sent = planned - Duration::from_micros(400);
        assert_eq!(latency_origin(planned, sent, t0), sent);
    }

    #[test]
    fn latency_never_negative() {
        let t0 = Instant::now();
        assert_eq!(latency(t0 + ms(5), t0), Duration::ZERO);
    }
}
