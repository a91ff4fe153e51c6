//! A rate limit is one limit for the whole gateway, though each shard
//! admits on its own: with two shards, the admitted rate stays within 10%
//! of the configured one whether all traffic lands on one shard or is split
//! between them. Prints the measured figures (`--nocapture`).

use shardgate_testkit::{MockUpstream, RawClient, TestGateway};
use std::time::{Duration, Instant};

const RATE: f64 = 200.0;
const BURST: f64 = 20.0;
const RUN: Duration = Duration::from_secs(3);

fn gateway(up: &MockUpstream) -> TestGateway {
    let text = format!(
        "workers = 2\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [upstreams.backend]\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"limited\"\nprefix = \"/\"\nupstream = \"backend\"\n\
         filters = [{{ type = \"rate-limit\", rate = {RATE}, burst = {BURST}, key = \"route\" }}]\n",
        up.addr()
    );
    TestGateway::start(shardgate_config::from_toml(&text).unwrap())
}

/// A connection that has served one request, and the shard that served it.
fn connection_on_a_shard(gw: &TestGateway) -> (RawClient, usize) {
    let before = gw.gateway().shard_stats();
    let mut c = RawClient::connect(gw.addr());
    c.send(b"GET /probe HTTP/1.1\r\nHost: a\r\n\r\n");
    c.read_response().expect("a response");
    let after = gw.gateway().shard_stats();
    let shard = (0..after.len())
        .find(|&i| after[i].requests > before[i].requests)
        .expect("a shard served it");
    (c, shard)
}

/// Requests as fast as each connection goes for `RUN`; (admitted, refused).
fn hammer(connections: Vec<RawClient>) -> (u64, u64) {
    let deadline = Instant::now() + RUN;
    let threads: Vec<_> = connections
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u64, 0u64);
                while Instant::now() < deadline {
                    c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
                    match c.read_response().map(|r| r.status) {
                        Some(200) => ok += 1,
                        Some(429) => refused += 1,
                        other => panic!("unexpected answer {other:?}"),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Waits for the probes' tokens to come back and the shares to settle on
/// the idle state.
fn settle() {
    std::thread::sleep(Duration::from_millis(500));
}

fn check(case: &str, admitted: u64, refused: u64) {
    // Everything admitted beyond the initial burst, over the run.
    let rate = (admitted as f64 - BURST) / RUN.as_secs_f64();
    let error = (rate - RATE) / RATE;
    eprintln!(
        "{case}: admitted {admitted}, refused {refused} in {RUN:?}: {rate:.1}/s against {RATE}/s ({:+.1}%)",
        error * 100.0
    );
    assert!(
        refused > admitted,
        "{case}: the offered load must exceed the limit"
    );
    assert!(
        error.abs() < 0.10,
        "{case}: {rate:.1}/s is not within 10% of {RATE}/s"
    );
}

#[test]
fn admitted_rate_is_the_configured_one_on_one_shard_or_split() {
    let up = MockUpstream::ok("ok");
    let gw = gateway(&up);
    assert_eq!(gw.gateway().shards(), 2);

    // Find a connection on each shard.
    let mut on = [None, None];
    for _ in 0..64 {
        let (c, shard) = connection_on_a_shard(&gw);
        if on[shard].is_none() {
            on[shard] = Some(c);
        }
        if on.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(first), Some(second)] = on else {
        panic!("SO_REUSEPORT put 64 connections on one shard");
    };

    settle();
    let (ok, refused) = hammer(vec![first]);
    check("all traffic on one shard", ok, refused);

    settle();
    let (c0, s0) = connection_on_a_shard(&gw);
    let mut pair = vec![c0];
    while pair.len() < 2 {
        let (c, s) = connection_on_a_shard(&gw);
        if s != s0 {
            pair.push(c);
        }
    }
    drop(second);
    settle();
    let (ok, refused) = hammer(pair);
    check("traffic split over both shards", ok, refused);
}
