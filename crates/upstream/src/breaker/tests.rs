use super::*;

const S: Duration = Duration::from_secs(1);

fn cfg() -> BreakerConfig {
    BreakerConfig {
        min_volume: 20,
        error_percent: 50,
        sleep_window: 5 * S,
        half_open_trials: 2,
        max_concurrent: 100,
        ..BreakerConfig::default()
    }
}

/// Admit and record `ok` successes then `failed` failures at `now`; the transitions seen.
fn run(b: &mut Breaker, now: Instant, ok: u32, failed: u32) -> Vec<Transition> {
    let mut seen = Vec::new();
    for verdict in (0..ok)
        .map(|_| Verdict::Success)
        .chain((0..failed).map(|_| Verdict::Failure))
    {
        let admission = b.admit(now);
        seen.extend(admission.transition);
        if let Ok(ticket) = admission.decision {
            seen.extend(b.record(ticket, verdict, now));
        }
    }
    seen
}

fn open_breaker(t0: Instant) -> Breaker {
    let mut b = Breaker::new("api", cfg(), t0);
    let seen = run(&mut b, t0, 8, 12);
    assert_eq!(seen.len(), 1);
    assert_eq!(b.state(), BreakerState::Open);
    b
}

#[test]
fn trip_threshold_table() {
    // (successes, failures, trips?)
    let cases = [
        (0, 19, false), // below min volume, even at 100 %
        (10, 10, true), // exactly 50 %
        (11, 9, false), // 45 %
        (8, 12, true),  // 60 %
        (100, 99, false),
        (0, 20, true),
    ];
    for (ok, failed, trips) in cases {
        let t0 = Instant::now();
        let mut b = Breaker::new("api", cfg(), t0);
        let seen = run(&mut b, t0, ok, failed);
        assert_eq!(
            seen.len(),
            usize::from(trips),
            "{ok} ok / {failed} failed: {seen:?}"
        );
        assert_eq!(b.state() == BreakerState::Open, trips, "{ok}/{failed}");
    }
}

#[test]
fn closed_to_open_log_line() {
    let t0 = Instant::now();
    let mut b = Breaker::new("api", cfg(), t0);
    let seen = run(&mut b, t0, 8, 12);
    assert_eq!(
        seen[0].to_string(),
        r#"breaker "api" closed -> open: 12/20 failed (60%) in 10s"#
    );
    assert_eq!(b.stats(t0).times_opened, 1);
}

#[test]
fn open_rejects_fast_until_the_sleep_window_passes_then_half_opens() {
    let t0 = Instant::now();
    let mut b = open_breaker(t0);
    let a = b.admit(t0 + 2 * S);
    assert_eq!(a.decision, Err(Rejected::Open { retry_after: 3 * S }));
    assert!(a.transition.is_none());
    let a = b.admit(t0 + 5 * S);
    let t = a.transition.expect("open -> half-open");
    assert_eq!((t.from, t.to), (BreakerState::Open, BreakerState::HalfOpen));
    assert_eq!(
        t.to_string(),
        r#"breaker "api" open -> half-open: sleep window of 5000ms elapsed"#
    );
    assert!(a.decision.is_ok());
    assert_eq!(b.state(), BreakerState::HalfOpen);
}

#[test]
fn half_open_admits_only_the_trials() {
    let t0 = Instant::now();
    let mut b = open_breaker(t0);
    let now = t0 + 5 * S;
    let first = b.admit(now).decision.unwrap();
    let second = b.admit(now).decision.unwrap();
    assert_eq!(b.admit(now).decision, Err(Rejected::HalfOpenBusy));
    assert_eq!(
        b.record(first, Verdict::Success, now),
        None,
        "one of two trials"
    );
    assert_eq!(
        b.admit(now).decision,
        Err(Rejected::HalfOpenBusy),
        "trial slots are not reused"
    );
    let t = b
        .record(second, Verdict::Success, now)
        .expect("half-open -> closed");
    assert_eq!(
        t.to_string(),
        r#"breaker "api" half-open -> closed: 2 trial requests succeeded"#
    );
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn half_open_trial_failure_reopens_for_a_new_sleep_window() {
    let t0 = Instant::now();
    let mut b = open_breaker(t0);
    let now = t0 + 6 * S;
    let ticket = b.admit(now).decision.unwrap();
    let t = b
        .record(ticket, Verdict::Failure, now)
        .expect("half-open -> open");
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            BreakerState::HalfOpen,
            BreakerState::Open,
            Cause::TrialFailed
        )
    );
    assert_eq!(
        b.admit(now + 4 * S).decision,
        Err(Rejected::Open { retry_after: S })
    );
    assert_eq!(b.stats(now).times_opened, 2);
}

#[test]
fn closing_starts_a_fresh_window() {
    let t0 = Instant::now();
    let mut b = open_breaker(t0);
    let now = t0 + 5 * S;
    assert!(
        run(&mut b, now, 2, 0)
            .iter()
            .any(|t| t.to == BreakerState::Closed)
    );
    let stats = b.stats(now);
    assert_eq!((stats.window_requests, stats.window_failures), (0, 0));
    assert!(
        run(&mut b, now, 0, 19).is_empty(),
        "the 12 old failures are forgotten"
    );
}

#[test]
fn failures_slide_out_of_the_window() {
    let t0 = Instant::now();
    let mut b = Breaker::new("api", cfg(), t0);
    assert!(run(&mut b, t0, 0, 15).is_empty());
    assert!(
        run(&mut b, t0 + 10 * S, 5, 0).is_empty(),
        "the 15 failures are 10 s old"
    );
    assert_eq!(b.stats(t0 + 10 * S).window_requests, 5);
    assert!(
        !run(&mut b, t0 + 11 * S, 0, 15).is_empty(),
        "20 in window, 15 failed"
    );
}

#[test]
fn max_concurrent_is_enforced_in_every_state() {
    let t0 = Instant::now();
    let mut b = Breaker::new(
        "api",
        BreakerConfig {
            max_concurrent: 2,
            ..cfg()
        },
        t0,
    );
    let a = b.admit(t0).decision.unwrap();
    let c = b.admit(t0).decision.unwrap();
    assert_eq!(b.admit(t0).decision, Err(Rejected::MaxConcurrent));
    assert_eq!(b.in_flight(), 2);
    assert_eq!(b.record(a, Verdict::Abandoned, t0), None);
    let d = b.admit(t0).decision.unwrap();
    for ticket in [c, d] {
        let _ = b.record(ticket, Verdict::Success, t0);
    }
    assert_eq!(b.in_flight(), 0);
}

#[test]
fn abandoned_trial_gives_its_slot_back() {
    let t0 = Instant::now();
    let mut b = open_breaker(t0);
    let now = t0 + 5 * S;
    let (x, y) = (
        b.admit(now).decision.unwrap(),
        b.admit(now).decision.unwrap(),
    );
    assert_eq!(b.record(x, Verdict::Abandoned, now), None);
    let z = b.admit(now).decision.expect("slot freed");
    assert_eq!(b.record(y, Verdict::Success, now), None);
    assert!(
        b.record(z, Verdict::Success, now).is_some(),
        "two successes close it"
    );
}

#[test]
fn regression_late_outcome_from_before_the_trip_does_not_steer_half_open() {
    let t0 = Instant::now();
    let mut b = Breaker::new("api", cfg(), t0);
    let slow = b.admit(t0).decision.unwrap();
    run(&mut b, t0, 8, 12);
    assert_eq!(
        b.admit(t0 + 5 * S).transition.map(|t| t.to),
        Some(BreakerState::HalfOpen)
    );
    assert_eq!(
        b.record(slow, Verdict::Failure, t0 + 5 * S),
        None,
        "stale ticket ignored"
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.in_flight(), 1, "but its slot is freed");
}

#[test]
fn verdict_from_outcome() {
    assert_eq!(Verdict::from(Outcome::Response(204)), Verdict::Success);
    assert_eq!(Verdict::from(Outcome::Response(503)), Verdict::Failure);
    assert_eq!(Verdict::from(Outcome::ConnectFailed), Verdict::Failure);
}
