//! Long-idle keep-alive connections are parked (held without a task) and
//! come back as the client sends, closes, times out or the gateway drains.

use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, TestGateway, wait_until};
use std::time::{Duration, Instant};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// Sends one request on a new connection.
fn served_client(gw: &TestGateway) -> RawClient {
    let mut c = RawClient::connect(gw.addr());
    c.send(GET);
    assert_eq!(c.read_response().unwrap().status, 200);
    c
}

/// Waits until the gateway holds `n` parked connections (each idle for a
/// second).
fn wait_parked(gw: &TestGateway, n: u64) {
    assert!(
        wait_until(Duration::from_secs(4), || gw.stats().parked_connections
            == n),
        "not {n} parked: {:?}",
        gw.stats()
    );
}

#[test]
fn a_parked_connection_is_served_again_and_closes_with_its_client() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut c = served_client(&gw);
        wait_parked(&gw, 1);
        assert_eq!(gw.stats().open_connections, 1, "{driver:?}");
        // The next request wakes it: served on the same connection.
        for _ in 0..2 {
            c.send(GET);
            let r = c.read_response().unwrap();
            assert_eq!((r.status, r.body_str().as_str()), (200, "x"), "{driver:?}");
            assert_eq!(gw.stats().parked_connections, 0, "{driver:?}");
        }
        // Parked again, and several at once.
        let mut others: Vec<RawClient> = (0..3).map(|_| served_client(&gw)).collect();
        wait_parked(&gw, 4);
        for o in &mut others {
            o.send(GET);
            assert_eq!(o.read_response().unwrap().status, 200, "{driver:?}");
        }
        // A client that leaves while parked is closed by the gateway.
        drop(c);
        drop(others);
        assert!(
            wait_until(Duration::from_secs(4), || {
                let s = gw.stats();
                s.open_connections == 0 && s.parked_connections == 0
            }),
            "{driver:?}: {:?}",
            gw.stats()
        );
        assert_eq!(up.requests().len(), 9, "{driver:?}");
    }
}

#[test]
fn a_parked_connection_closes_at_its_idle_timeout() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "[timeouts]\nidle = \"3s\"");
        let mut c = served_client(&gw);
        let start = Instant::now();
        wait_parked(&gw, 1);
        c.set_timeout(Duration::from_secs(6));
        assert!(c.is_closed(), "{driver:?}: not closed");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
            "{driver:?}: closed after {took:?} with a 3s idle timeout"
        );
        let s = gw.stats();
        assert_eq!(
            (s.open_connections, s.parked_connections),
            (0, 0),
            "{driver:?}"
        );
    }
}

#[test]
fn a_drain_gives_a_parked_connection_its_grace_then_closes_it() {
    for driver in DRIVERS {
        let up = MockUpstream::ok("x");
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let mut idle = served_client(&gw);
        let mut late = served_client(&gw);
        wait_parked(&gw, 2);
        gw.gateway().handle().drain(Duration::from_secs(10));
        // The drain hands both back to tasks for their grace period.
        wait_parked(&gw, 0);
        // A request that was on its way as the drain began is answered,
        // with the connection closed after it.
        late.send(GET);
        let r = late.read_response().unwrap();
        assert_eq!(r.status, 200, "{driver:?}");
        assert_eq!(
            r.header("connection").as_deref(),
            Some("close"),
            "{driver:?}"
        );
        // The other is closed once its grace is over, well before the
        // drain's deadline.
        let start = Instant::now();
        idle.set_timeout(Duration::from_secs(8));
        assert!(idle.is_closed(), "{driver:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{driver:?}");
        assert!(
            wait_until(Duration::from_secs(4), || gw.stats().open_connections == 0),
            "{driver:?}: {:?}",
            gw.stats()
        );
    }
}
