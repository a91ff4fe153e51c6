//! Upstream resilience through the gateway: weighted splits, consistent
//! hashing, retries, passive ejection, circuit breaking.

use shardgate_config::Driver;
use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, Script, TestGateway};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn two_groups(
    driver: Driver,
    a: &MockUpstream,
    b: &MockUpstream,
    upstream_extra: &str,
) -> TestGateway {
    let text = format!(
        "workers = 1\ndriver = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [upstreams.app]\nendpoints = [\"{}\", \"{}\"]\n{upstream_extra}\n\
         [[routes]]\nname = \"all\"\nprefix = \"/\"\nupstream = \"app\"\n",
        if driver == Driver::Uring {
            "uring"
        } else {
            "legacy"
        },
        a.addr(),
        b.addr()
    );
    TestGateway::start(shardgate_config::from_toml(&text).unwrap_or_else(|e| panic!("{e}")))
}

fn get(c: &mut RawClient, path: &str) -> (u16, String) {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let r = c.read_response().expect("a response");
    (r.status, r.body_str())
}

#[test]
fn weighted_70_30_split_is_exact() {
    for driver in DRIVERS {
        let (a, b) = (MockUpstream::ok("a"), MockUpstream::ok("b"));
        let gw = two_groups(
            driver,
            &a,
            &b,
            "weights = [70, 30]\nbalancer = \"weighted\"",
        );
        let mut c = RawClient::connect(gw.addr());
        let mut seq = String::new();
        for i in 0..10_000 {
            let (status, body) = get(&mut c, "/");
            assert_eq!(status, 200);
            if i < 10 {
                seq.push_str(&body);
            }
        }
        assert_eq!(
            (a.requests().len(), b.requests().len()),
            (7000, 3000),
            "{driver:?}"
        );
        // Smooth: the 3 of every 10 are spread out, never bunched.
        assert!(!seq.contains("bb"), "{driver:?}: {seq}");
    }
}

#[test]
fn consistent_hash_on_a_header_keeps_keys_on_one_endpoint() {
    let (a, b) = (MockUpstream::ok("a"), MockUpstream::ok("b"));
    let gw = two_groups(
        Driver::Uring,
        &a,
        &b,
        "balancer = \"hash\"\nhash_key = \"header:X-User\"",
    );
    let mut c = RawClient::connect(gw.addr());
    let mut seen = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..40 {
            c.send(format!("GET / HTTP/1.1\r\nHost: a\r\nX-User: u{user}\r\n\r\n").as_bytes());
            let body = c.read_response().unwrap().body_str();
            let first = seen.entry(user).or_insert_with(|| body.clone());
            assert_eq!(*first, body, "user {user} moved in round {round}");
        }
    }
    let on_a = seen.values().filter(|v| *v == "a").count();
    assert!(
        (5..=35).contains(&on_a),
        "both endpoints take keys: {on_a} of 40 on a"
    );
}

#[test]
fn status_retries_go_to_another_endpoint() {
    for driver in DRIVERS {
        let bad = MockUpstream::start(|_| {
            Script::Raw(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec())
        });
        let good = MockUpstream::ok("good");
        let gw = two_groups(
            driver,
            &bad,
            &good,
            "[upstreams.app.retry]\nattempts = 2\non = [\"connect-failure\", \"reset\", \"503\"]\nbudget_percent = 100",
        );
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..20 {
            assert_eq!(get(&mut c, "/"), (200, "good".to_string()), "{driver:?}");
        }
        assert!(!bad.requests().is_empty(), "the failing endpoint was tried");
        // POST is not retried: the 503 reaches the client.
        let mut statuses = Vec::new();
        for _ in 0..4 {
            c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx");
            statuses.push(c.read_response().unwrap().status);
        }
        assert!(statuses.contains(&503), "{driver:?}: {statuses:?}");
    }
}

#[test]
fn a_dying_endpoint_costs_no_idempotent_request_and_is_ejected() {
    for driver in DRIVERS {
        let (a, b) = (MockUpstream::ok("a"), MockUpstream::ok("b"));
        let gw = two_groups(
            driver,
            &a,
            &b,
            "[upstreams.app.outlier]\nconsecutive_connect_failures = 2\nbase_ejection = \"30s\"",
        );
        let clients: Vec<_> = (0..4).map(|_| RawClient::connect(gw.addr())).collect();
        let mut clients = clients;
        for i in 0..400 {
            if i == 100 {
                a.kill();
            }
            let c = &mut clients[i % 4];
            let (status, body) = get(c, "/");
            assert_eq!(status, 200, "{driver:?}: request {i} failed after the kill");
            if i > 200 {
                assert_eq!(body, "b", "{driver:?}: the dead endpoint is ejected");
            }
        }
        let text = gw.gateway().handle().metrics_text();
        assert!(
            text.contains("shardgate_upstream_ejected_endpoints{upstream=\"app\",shard=\"0\"} 1"),
            "{text}"
        );
    }
}

#[test]
fn failing_group_opens_the_breaker_and_gets_fast_503s() {
    for driver in DRIVERS {
        let bad = MockUpstream::start(|_| {
            Script::Raw(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec())
        });
        let also_bad = MockUpstream::start(|_| {
            Script::Raw(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec())
        });
        let gw = two_groups(
            driver,
            &bad,
            &also_bad,
            "[upstreams.app.breaker]\nmin_requests = 10\nerror_percent = 50\nsleep_window = \"30s\"",
        );
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..10 {
            assert_eq!(get(&mut c, "/").0, 500);
        }
        let reached = bad.requests().len() + also_bad.requests().len();
        let t = Instant::now();
        for _ in 0..50 {
            assert_eq!(get(&mut c, "/").0, 503, "{driver:?}: the breaker answers");
        }
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(
            bad.requests().len() + also_bad.requests().len(),
            reached,
            "{driver:?}: nothing reached the group"
        );
        let text = gw.gateway().handle().metrics_text();
        assert!(
            text.contains("shardgate_upstream_breaker_state{upstream=\"app\",shard=\"0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("shardgate_upstream_breaker_rejections_total{upstream=\"app\"} 50"),
            "{text}"
        );
    }
}

/// Only the health check can take `a` out here: it answers `/` with 200
/// throughout and `/health` with 503 while `sick`, so neither retries nor
/// ejection route around it.
#[test]
fn active_health_checks_take_an_endpoint_out_and_bring_it_back() {
    for driver in DRIVERS {
        let sick = Arc::new(AtomicBool::new(false));
        let flag = sick.clone();
        let a = MockUpstream::start(move |r| {
            if r.request_line().starts_with("GET /health") && flag.load(Ordering::SeqCst) {
                Script::Raw(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
                )
            } else {
                Script::ok("a")
            }
        });
        let b = MockUpstream::ok("b");
        let gw = two_groups(
            driver,
            &a,
            &b,
            "[upstreams.app.health]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 2",
        );
        let handle = gw.gateway().handle();
        let unhealthy = || {
            handle
                .metrics_text()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(
                        "shardgate_upstream_unhealthy_endpoints{upstream=\"app\",shard=\"0\"} ",
                    )
                })
                .and_then(|v| v.parse::<u32>().ok())
        };
        let served_a = || {
            a.requests()
                .iter()
                .filter(|r| r.request_line() == "GET / HTTP/1.1")
                .count()
        };
        assert!(shardgate_testkit::wait_until(
            Duration::from_secs(2),
            || a.requests()
                .iter()
                .any(|r| r.request_line().starts_with("GET /health"))
        ));
        sick.store(true, Ordering::SeqCst);
        assert!(
            shardgate_testkit::wait_until(Duration::from_secs(3), || unhealthy() == Some(1)),
            "{driver:?}: a is marked down"
        );
        let before = served_a();
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..20 {
            assert_eq!(
                get(&mut c, "/"),
                (200, "b".to_string()),
                "{driver:?}: only b serves while a is held down"
            );
        }
        assert_eq!(served_a(), before, "{driver:?}: a got no request");
        // After `rise` passing probes it takes traffic again.
        sick.store(false, Ordering::SeqCst);
        assert!(
            shardgate_testkit::wait_until(Duration::from_secs(3), || unhealthy() == Some(0)),
            "{driver:?}: a is up again"
        );
        let mut answers = Vec::new();
        for _ in 0..20 {
            answers.push(get(&mut c, "/").1);
        }
        assert!(
            answers.iter().any(|x| x == "a"),
            "{driver:?}: a serves again: {answers:?}"
        );
    }
}

/// With the default configuration (no `[outlier]`, no `[retry]`), killing
/// one of two endpoints under concurrent load costs at most 0.1% of the
/// GETs in the seconds after the kill (the goal is none), and none once the
/// dead endpoint is out of rotation.
#[test]
fn killing_one_of_two_endpoints_under_load_costs_nothing_by_default() {
    for driver in DRIVERS {
        let (a, b) = (MockUpstream::ok("a"), MockUpstream::ok("b"));
        let gw = two_groups(driver, &a, &b, "");
        let addr = gw.addr();
        let start = Instant::now();
        let kill_at = Duration::from_millis(500);
        let settle = kill_at + Duration::from_secs(1);
        let end = Duration::from_millis(3_000);
        let workers: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = RawClient::connect(addr);
                    // (requests after the kill, failed ones, failed after settling)
                    let (mut after, mut failed, mut late) = (0u64, 0u64, 0u64);
                    while start.elapsed() < end {
                        let sent = start.elapsed();
                        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
                        let status = c.read_response().map_or(0, |r| r.status);
                        if status != 200 {
                            c = RawClient::connect(addr);
                        }
                        if sent >= kill_at {
                            after += 1;
                            failed += u64::from(status != 200);
                            late += u64::from(status != 200 && sent >= settle);
                        }
                    }
                    (after, failed, late)
                })
            })
            .collect();
        while start.elapsed() < kill_at {
            std::thread::sleep(Duration::from_millis(5));
        }
        a.kill();
        let (mut after, mut failed, mut late) = (0, 0, 0);
        for w in workers {
            let (x, f, l) = w.join().expect("client thread");
            (after, failed, late) = (after + x, failed + f, late + l);
        }
        eprintln!("{driver:?}: {failed} of {after} GETs after the kill failed, {late} late");
        assert!(
            after > 1_000,
            "{driver:?}: too little load to judge: {after}"
        );
        assert!(
            failed * 1_000 <= after,
            "{driver:?}: {failed} of {after} GETs failed after the kill"
        );
        assert_eq!(late, 0, "{driver:?}: failures once the endpoint was out");
    }
}

#[test]
fn one_prober_per_gateway_not_per_shard() {
    let a = MockUpstream::ok("a");
    let text = format!(
        "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [\"{}\"]\n\
         [upstreams.app.health]\npath = \"/health\"\ninterval = \"100ms\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
        a.addr()
    );
    let _gw = TestGateway::start(shardgate_config::from_toml(&text).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let before = a.requests().len();
    std::thread::sleep(Duration::from_millis(1000));
    let probes = a.requests().len() - before;
    // One prober: about 10 probes a second; one per shard would be about 20.
    assert!(
        (5..=14).contains(&probes),
        "{probes} probes in 1 s at a 100 ms interval with 2 shards"
    );
}

#[test]
fn route_split_across_groups_is_exact() {
    for driver in DRIVERS {
        let (v1, v2) = (MockUpstream::ok("v1"), MockUpstream::ok("v2"));
        let text = format!(
            "workers = 1\ndriver = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
             [upstreams.v1]\nendpoints = [\"{}\"]\n[upstreams.v2]\nendpoints = [\"{}\"]\n\
             [[routes]]\nname = \"canary\"\nprefix = \"/\"\nupstreams = [{{ name = \"v1\", weight = 70 }}, {{ name = \"v2\", weight = 30 }}]\n",
            if driver == Driver::Uring {
                "uring"
            } else {
                "legacy"
            },
            v1.addr(),
            v2.addr()
        );
        let gw = TestGateway::start(shardgate_config::from_toml(&text).unwrap());
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..10_000 {
            assert_eq!(get(&mut c, "/").0, 200);
        }
        assert_eq!(
            (v1.requests().len(), v2.requests().len()),
            (7000, 3000),
            "{driver:?}"
        );
    }
}

#[test]
fn pool_limit_queues_then_refuses() {
    for driver in DRIVERS {
        let slow = MockUpstream::start(|_| {
            Script::Slow(
                vec![
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_vec(),
                    b"ok".to_vec(),
                ],
                Duration::from_millis(300),
            )
        });
        let gw = TestGateway::proxy(
            driver,
            &[slow.addr()],
            "[pool]\nmax_connections_per_endpoint = 1\nmax_waiting = 1\nwait_timeout = \"2s\"",
        );
        let addr = gw.addr();
        let started = Instant::now();
        let clients: Vec<_> = (0..3)
            .map(|i| {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(40 * i));
                    let mut c = RawClient::connect(addr);
                    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
                    let r = c.read_response().expect("a response");
                    (r.status, started.elapsed())
                })
            })
            .collect();
        let mut results: Vec<(u16, Duration)> =
            clients.into_iter().map(|c| c.join().unwrap()).collect();
        results.sort();
        let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
        // One in use, one waiting (served after the first), one refused at once.
        assert_eq!(statuses, [200, 200, 503], "{driver:?}: {results:?}");
        assert!(
            results[2].1 < Duration::from_millis(250),
            "{driver:?}: the refusal is immediate: {results:?}"
        );
        assert_eq!(
            slow.connections(),
            1,
            "{driver:?}: never more than one connection"
        );
    }
}

#[test]
fn dns_endpoints_follow_their_host_and_keep_the_last_good_set() {
    use std::sync::{Arc, Mutex};
    for driver in DRIVERS {
        let (a, b) = (MockUpstream::ok("a"), MockUpstream::ok("b"));
        let answer: Arc<Mutex<Option<Vec<std::net::SocketAddr>>>> =
            Arc::new(Mutex::new(Some(vec![a.addr()])));
        let resolver: shardgate_proxy::Resolver = {
            let answer = answer.clone();
            Arc::new(move |_host: &str, _port: u16| {
                answer
                    .lock()
                    .unwrap()
                    .clone()
                    .ok_or_else(|| std::io::Error::other("resolver down"))
            })
        };
        let text = format!(
            "workers = 1\ndriver = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
             [upstreams.app]\nendpoints = [\"localhost:{}\"]\ndns_refresh = \"100ms\"\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
            if driver == Driver::Uring {
                "uring"
            } else {
                "legacy"
            },
            a.addr().port()
        );
        let options = shardgate_proxy::GatewayOptions {
            resolver: Some(resolver),
            ..Default::default()
        };
        let gw = TestGateway::start_with(shardgate_config::from_toml(&text).unwrap(), options);
        let mut c = RawClient::connect(gw.addr());
        let mut answers_until = |want: &str, limit: Duration| {
            let deadline = Instant::now() + limit;
            loop {
                let (status, body) = get(&mut c, "/");
                assert_eq!(
                    status, 200,
                    "{driver:?}: no request fails while addresses change"
                );
                if body == want {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert!(answers_until("a", Duration::from_secs(3)), "{driver:?}");
        *answer.lock().unwrap() = Some(vec![b.addr()]);
        assert!(
            answers_until("b", Duration::from_secs(3)),
            "{driver:?}: the new address joins, the old one leaves"
        );
        *answer.lock().unwrap() = None;
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..10 {
            assert_eq!(
                get(&mut c, "/"),
                (200, "b".to_string()),
                "{driver:?}: the last good set stays"
            );
        }
        let (_, info) = gw.gateway().handle().config();
        assert!(info.version >= 2, "{driver:?}: applied as a reload");
    }
}

#[test]
fn per_try_timeout_moves_on_and_the_deadline_bounds_all_tries() {
    for driver in DRIVERS {
        let hang = MockUpstream::start(|_| Script::Hang);
        let good = MockUpstream::ok("good");
        let gw = two_groups(
            driver,
            &hang,
            &good,
            "[upstreams.app.retry]\nattempts = 2\non = [\"timeout\"]\nper_try_timeout = \"200ms\"\nbudget_percent = 100",
        );
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..4 {
            let t = Instant::now();
            assert_eq!(get(&mut c, "/"), (200, "good".to_string()), "{driver:?}");
            assert!(t.elapsed() < Duration::from_secs(2), "{driver:?}");
        }
        let (h1, h2) = (
            MockUpstream::start(|_| Script::Hang),
            MockUpstream::start(|_| Script::Hang),
        );
        let gw = two_groups(
            driver,
            &h1,
            &h2,
            "[upstreams.app.retry]\nattempts = 3\non = [\"timeout\"]\nper_try_timeout = \"400ms\"\ndeadline = \"500ms\"\nbudget_percent = 100",
        );
        let mut c = RawClient::connect(gw.addr());
        let t = Instant::now();
        assert_eq!(get(&mut c, "/").0, 504, "{driver:?}");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(1100),
            "{driver:?}: {took:?}"
        );
    }
}
