//! Pick, record and retry as tables, with time passed in.

use super::*;
use crate::outlier::EjectCause;
use crate::retry::RetryOn;
use crate::retry_budget::RetryBudgetConfig;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn specs(n: usize) -> Vec<(String, u32)> {
    (0..n).map(|i| (format!("10.0.0.{i}:80"), 1)).collect()
}

fn group_of(n: usize, retry: RetrySettings, t0: Instant) -> Group {
    let names = specs(n);
    let eps: Vec<EndpointSpec<'_>> = names
        .iter()
        .map(|(a, w)| EndpointSpec::new(a, *w))
        .collect();
    Group::new(
        GroupConfig {
            retry,
            ..GroupConfig::new("app", &eps, &Algorithm::RoundRobin)
        },
        t0,
    )
    .expect("group")
}

/// Which endpoints `picks` consecutive picks land on.
fn landed(g: &mut Group, now: Instant, tried: &[usize], picks: usize) -> Vec<usize> {
    let mut seen: Vec<usize> = (0..picks).map(|_| g.pick(None, now, tried)).collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

#[test]
fn pick_honours_health_ejection_probation_and_the_tried_set() {
    let t0 = Instant::now();
    // (what happens to a group of three, picks at t0 + 10 ms avoid, picks may land on)
    type Setup = fn(&mut Group, Instant);
    let cases: &[(&str, Setup, &[usize], &[usize])] = &[
        ("nothing", |_, _| {}, &[], &[0, 1, 2]),
        (
            "1 held down by health checks",
            |g, _| g.set_up(&[true, false, true]),
            &[],
            &[0, 2],
        ),
        (
            "every endpoint down: all are used",
            |g, _| g.set_up(&[false, false, false]),
            &[],
            &[0, 1, 2],
        ),
        (
            "2 refused a connection: ejected",
            |g, t| {
                g.record(2, Outcome::ConnectFailed, t);
            },
            &[],
            &[0, 1],
        ),
        ("tried 0", |_, _| {}, &[0], &[1, 2]),
        (
            "1 down and 2 ejected: 0 even if tried",
            |g, t| {
                g.set_up(&[true, false, true]);
                g.record(2, Outcome::ConnectFailed, t);
            },
            &[0],
            &[0],
        ),
        (
            "a 500 does not eject by default",
            |g, t| {
                for _ in 0..10 {
                    g.record(1, Outcome::Response(500), t);
                }
            },
            &[],
            &[0, 1, 2],
        ),
    ];
    for (name, setup, tried, want) in cases {
        let mut g = group_of(3, RetrySettings::default(), t0);
        setup(&mut g, t0);
        assert_eq!(landed(&mut g, t0 + 10 * MS, tried, 30), *want, "{name}");
    }
}

#[test]
fn an_ejected_endpoint_comes_back_on_probation_one_request_at_a_time() {
    let t0 = Instant::now();
    let mut g = group_of(2, RetrySettings::default(), t0);
    let ev = g.record(1, Outcome::ConnectFailed, t0);
    assert!(
        matches!(
            ev,
            Some(OutlierEvent::Ejected {
                endpoint: 1,
                cause: EjectCause::ConnectFailures(_),
                ..
            })
        ),
        "{ev:?}"
    );
    assert_eq!(g.ejected(t0 + 999 * MS), 1);
    assert_eq!(landed(&mut g, t0 + 999 * MS, &[], 10), [0]);
    // Back after the base ejection (1 s), on probation: one request at a time.
    let back = t0 + S + MS;
    assert_eq!(g.ejected(back), 0);
    let mut tries = Tries::new(g.retry_settings(), true, true, back);
    let first = (0..4).map(|_| g.pick(None, back, &[])).find(|&i| i == 1);
    assert_eq!(first, Some(1), "round robin reaches 1 again");
    g.begin_try(&mut tries, 1);
    assert_eq!(landed(&mut g, back, &[], 10), [0], "1 has its one request");
    g.end_try(1);
    g.record(1, Outcome::Response(200), back);
    assert_eq!(
        landed(&mut g, back, &[], 10),
        [0, 1],
        "a success ends probation"
    );
}

#[test]
fn a_single_endpoint_is_never_ejected() {
    let t0 = Instant::now();
    let mut g = group_of(1, RetrySettings::default(), t0);
    for _ in 0..5 {
        assert_eq!(g.record(0, Outcome::ConnectFailed, t0), None);
    }
    assert_eq!(g.ejected(t0), 0);
    assert_eq!(g.pick(None, t0, &[]), 0);
}

#[test]
fn retry_decisions() {
    use StopReason::*;
    let t0 = Instant::now();
    let statuses = RetrySettings {
        attempts: 3,
        on: RetryOn {
            try_timeout: true,
            statuses: Box::new([503]),
            ..RetryOn::default()
        },
        deadline: Some(5 * S),
        ..RetrySettings::default()
    };
    let broke = RetrySettings {
        budget: RetryBudgetConfig {
            percent: 0,
            min_retries_per_sec: 0,
            ..RetryBudgetConfig::default()
        },
        ..statuses.clone()
    };
    struct Case<'a> {
        name: &'a str,
        settings: &'a RetrySettings,
        endpoints: usize,
        idempotent: bool,
        replayable: bool,
        /// Endpoints already tried, the failed one last.
        tried: &'a [usize],
        outcome: Outcome,
        at: Duration,
        want: Result<(), StopReason>,
    }
    let case = |name, outcome, want| Case {
        name,
        settings: &statuses,
        endpoints: 3,
        idempotent: true,
        replayable: true,
        tried: &[0],
        outcome,
        at: S,
        want,
    };
    let cases = [
        case("connect failure", Outcome::ConnectFailed, Ok(())),
        case(
            "reset before response",
            Outcome::ResetBeforeResponse,
            Ok(()),
        ),
        case("try timeout", Outcome::TryTimeout, Ok(())),
        case("listed status", Outcome::Response(503), Ok(())),
        case("unlisted status", Outcome::Response(500), Err(NotRetryable)),
        case("a success", Outcome::Response(200), Err(NotRetryable)),
        case(
            "reset after the response began",
            Outcome::ResetAfterResponse,
            Err(NotRetryable),
        ),
        Case {
            idempotent: false,
            ..case(
                "POST, reset",
                Outcome::ResetBeforeResponse,
                Err(NotIdempotent),
            )
        },
        Case {
            idempotent: false,
            replayable: false,
            ..case(
                "POST, refused: nothing was sent",
                Outcome::ConnectFailed,
                Ok(()),
            )
        },
        Case {
            replayable: false,
            ..case(
                "streamed body",
                Outcome::Response(503),
                Err(BodyNotReplayable),
            )
        },
        Case {
            tried: &[0, 1, 2],
            ..case(
                "three tries made",
                Outcome::Response(503),
                Err(AttemptsExhausted),
            )
        },
        Case {
            at: 5 * S,
            ..case(
                "deadline passed",
                Outcome::ConnectFailed,
                Err(DeadlineExceeded),
            )
        },
        Case {
            endpoints: 1,
            ..case(
                "nowhere else to go",
                Outcome::ConnectFailed,
                Err(NoOtherEndpoint),
            )
        },
        Case {
            settings: &broke,
            ..case("budget dry", Outcome::Response(503), Err(BudgetExhausted))
        },
        Case {
            settings: &broke,
            ..case(
                "budget dry, refused: a free retry",
                Outcome::ConnectFailed,
                Ok(()),
            )
        },
        Case {
            settings: &RetrySettings::default(),
            ..case(
                "defaults: a timeout is not retried",
                Outcome::TryTimeout,
                Err(NotRetryable),
            )
        },
    ];
    for c in cases {
        let mut g = group_of(c.endpoints, c.settings.clone(), t0);
        let mut tries = Tries::new(c.settings, c.idempotent, c.replayable, t0);
        for &i in c.tried {
            g.admit(t0);
            g.begin_try(&mut tries, i);
            g.end_try(i);
        }
        let got = g.retry(&mut tries, c.outcome, None, t0 + c.at);
        match (got, c.want) {
            (Ok(next), Ok(())) => assert!(
                !c.tried.contains(&next),
                "{}: retried on {next}, already tried",
                c.name
            ),
            (got, want) => assert_eq!(got.map(|_| ()), want, "{}", c.name),
        }
    }
}

#[test]
fn the_budget_rations_retries_that_reach_the_group_but_not_refused_connects() {
    let t0 = Instant::now();
    let settings = RetrySettings {
        on: RetryOn {
            statuses: Box::new([503]),
            ..RetryOn::default()
        },
        budget: RetryBudgetConfig {
            percent: 10,
            min_retries_per_sec: 0,
            ..RetryBudgetConfig::default()
        },
        ..RetrySettings::default()
    };
    let mut g = group_of(2, settings.clone(), t0);
    // 100 requests, each answered 503 and retried while the budget lasts.
    let mut retried = 0;
    for _ in 0..100 {
        g.admit(t0);
        let mut tries = Tries::new(&settings, true, true, t0);
        let i = g.pick(None, t0, tries.tried());
        g.begin_try(&mut tries, i);
        g.end_try(i);
        retried += usize::from(
            g.retry(&mut tries, Outcome::Response(503), None, t0)
                .is_ok(),
        );
    }
    assert_eq!(retried, 10, "10% of 100 requests");
    // The budget is spent, yet a refused connection still moves on.
    let mut tries = Tries::new(&settings, true, true, t0);
    g.begin_try(&mut tries, 0);
    g.end_try(0);
    assert!(
        g.retry(&mut tries, Outcome::ConnectFailed, None, t0)
            .is_ok()
    );
}

#[test]
fn the_breaker_admits_and_settles_through_the_group() {
    let t0 = Instant::now();
    let names = specs(2);
    let eps: Vec<EndpointSpec<'_>> = names
        .iter()
        .map(|(a, w)| EndpointSpec::new(a, *w))
        .collect();
    let mut plain = Group::new(GroupConfig::new("app", &eps, &Algorithm::RoundRobin), t0).unwrap();
    assert!(matches!(plain.admit(t0).decision, Ok(None)));
    assert_eq!(plain.breaker_state(), None);
    let mut guarded = Group::new(
        GroupConfig {
            breaker: Some(BreakerConfig::default()),
            ..GroupConfig::new("app", &eps, &Algorithm::RoundRobin)
        },
        t0,
    )
    .unwrap();
    let Ok(Some(ticket)) = guarded.admit(t0).decision else {
        panic!("a closed breaker admits");
    };
    assert_eq!(guarded.breaker_state(), Some(BreakerState::Closed));
    assert_eq!(guarded.settle(ticket, Verdict::Success, t0), None);
}
