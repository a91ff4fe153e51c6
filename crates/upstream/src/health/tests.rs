use super::*;

const S: Duration = Duration::from_secs(1);

#[test]
fn status_ranges_parse_and_match() {
    // (spec, status, passes)
    let cases = [
        ("200-399", 200, true),
        ("200-399", 399, true),
        ("200-399", 400, false),
        ("200-399", 199, false),
        ("200", 200, true),
        ("200", 204, false),
        ("200-299, 404", 404, true),
        (" 204 ,301-302 ", 302, true),
        ("200-299,404", 403, false),
    ];
    for (spec, status, want) in cases {
        let ranges: StatusRanges = spec.parse().unwrap();
        assert_eq!(ranges.contains(status), want, "{spec:?} vs {status}");
    }
}

#[test]
fn status_ranges_reject_bad_items_naming_them() {
    let cases = [
        ("", ""),
        ("abc", "abc"),
        ("200-", "200-"),
        ("399-200", "399-200"),
        ("200-399,,404", ""),
        ("99", "99"),
        ("600", "600"),
        ("200-399,2xx", "2xx"),
    ];
    for (input, item) in cases {
        let err = input.parse::<StatusRanges>().unwrap_err();
        assert_eq!(&*err.item, item, "{input:?}");
    }
    let err = "200-399,2xx".parse::<StatusRanges>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid status range "2xx" in "200-399,2xx": expected a status 100-599 or a range like 200-399"#
    );
}

#[test]
fn status_ranges_display_round_trips() {
    let r: StatusRanges = "200-299, 404,500-503".parse().unwrap();
    assert_eq!(r.to_string(), "200-299,404,500-503");
    assert_eq!(r.to_string().parse::<StatusRanges>().unwrap(), r);
}

#[test]
fn default_spec_status_ok() {
    let spec = ProbeSpec::default();
    assert!(spec.status_ok(200) && spec.status_ok(302));
    assert!(!spec.status_ok(404) && !spec.status_ok(503));
}

#[test]
fn rise_and_fall_thresholds() {
    // From `initial`, feed probes (true = pass); the health after each.
    use Health::{Healthy as H, Unhealthy as U};
    let cases: &[(&str, Health, &[bool], &[Health])] = &[
        ("falls after 3", H, &[false, false, false], &[H, H, U]),
        (
            "a pass resets the fall count",
            H,
            &[false, false, true, false, false],
            &[H, H, H, H, H],
        ),
        ("rises after 2", U, &[true, true], &[U, H]),
        (
            "a failure resets the rise count",
            U,
            &[true, false, true, true],
            &[U, U, U, H],
        ),
        (
            "round trip",
            H,
            &[false, false, false, true, true],
            &[H, H, U, U, H],
        ),
    ];
    for (name, initial, probes, want) in cases {
        let mut s = HealthState::new(*initial);
        let got: Vec<Health> = probes
            .iter()
            .map(|&p| {
                s.record(p, 2, 3);
                s.health()
            })
            .collect();
        assert_eq!(&got, want, "{name}");
    }
}

#[test]
fn zero_thresholds_behave_as_one() {
    let mut s = HealthState::new(Health::Healthy);
    assert_eq!(s.record(false, 0, 0), Some(Health::Unhealthy));
    assert_eq!(s.record(true, 0, 0), Some(Health::Healthy));
}

#[test]
fn group_records_changes_bumps_version_and_bitmap() {
    let t0 = Instant::now();
    let spec = ProbeSpec {
        rise: 2,
        fall: 2,
        ..ProbeSpec::default()
    };
    let mut g = GroupHealth::new(spec, 3, t0);
    assert_eq!(g.snapshot().version, 1);
    assert!((0..3).all(|i| g.snapshot().is_up(i)));

    assert_eq!(g.record(1, ProbeResult::Status(500)), None);
    let change = g.record(1, ProbeResult::Timeout).expect("falls");
    assert_eq!(
        change.to_string(),
        "endpoint #1 healthy -> unhealthy after 2 failed probes (last: timeout)"
    );
    assert_eq!(g.snapshot().version, 2);
    assert!(!g.snapshot().is_up(1));
    assert_eq!(g.health(1), Some(Health::Unhealthy));

    assert_eq!(g.record(1, ProbeResult::Status(200)), None);
    let change = g.record(1, ProbeResult::Status(204)).expect("rises");
    assert_eq!(
        change.to_string(),
        "endpoint #1 unhealthy -> healthy after 2 passing probes (last: status 204)"
    );
    assert_eq!(g.snapshot().version, 3);
    assert!(g.snapshot().is_up(1));
    assert_eq!(
        g.record(7, ProbeResult::Timeout),
        None,
        "unknown endpoint ignored"
    );
}

#[test]
fn probe_failures_of_every_kind_count() {
    let t0 = Instant::now();
    let spec = ProbeSpec {
        fall: 1,
        ..ProbeSpec::default()
    };
    for result in [
        ProbeResult::Status(404),
        ProbeResult::Timeout,
        ProbeResult::ConnectFailed,
        ProbeResult::Malformed,
    ] {
        let mut g = GroupHealth::new(spec.clone(), 1, t0);
        assert!(g.record(0, result).is_some(), "{result}");
    }
}

#[test]
fn initially_unhealthy_waits_for_rise() {
    let t0 = Instant::now();
    let spec = ProbeSpec {
        initial: Health::Unhealthy,
        rise: 1,
        ..ProbeSpec::default()
    };
    let mut g = GroupHealth::new(spec, 2, t0);
    assert!(!g.snapshot().is_up(0) && !g.snapshot().is_up(1));
    assert!(g.record(0, ProbeResult::Status(200)).is_some());
    assert!(g.snapshot().is_up(0) && !g.snapshot().is_up(1));
}

#[test]
fn probes_are_staggered_then_repeat_every_interval() {
    let t0 = Instant::now();
    let spec = ProbeSpec {
        interval: 4 * S,
        ..ProbeSpec::default()
    };
    let mut g = GroupHealth::new(spec, 4, t0);
    let mut order = Vec::new();
    for sec in 0..8 {
        while let Some(i) = g.due(t0 + sec * S) {
            order.push((sec, i));
        }
    }
    assert_eq!(
        order,
        vec![
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 0),
            (5, 1),
            (6, 2),
            (7, 3)
        ]
    );
    assert_eq!(g.next_due(), Some(t0 + 8 * S));
}

#[test]
fn shard_copy_takes_only_newer_snapshots() {
    let t0 = Instant::now();
    let mut g = GroupHealth::new(
        ProbeSpec {
            fall: 1,
            ..ProbeSpec::default()
        },
        2,
        t0,
    );
    let mut shard = HealthSnapshot::default();
    assert!(shard.is_up(5), "an empty snapshot fails open");
    assert!(shard.update_from(g.snapshot()));
    let old = g.snapshot().clone();
    g.record(0, ProbeResult::Timeout);
    assert!(shard.update_from(g.snapshot()));
    assert!(!shard.is_up(0));
    assert!(
        !shard.update_from(&old),
        "an older snapshot never overwrites a newer one"
    );
    assert!(!shard.is_up(0));
}
