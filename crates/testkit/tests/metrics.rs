//! Gauges and counters read through the control plane, as `/metrics` does.

use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, Script, TestGateway, wait_until};
use std::time::Duration;

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn active_upstream_connections_and_per_route_counts() {
    for driver in DRIVERS {
        let up = MockUpstream::start(|r| {
            if r.request_line().contains("/slow") {
                Script::Slow(
                    vec![
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_vec(),
                        b"ok".to_vec(),
                    ],
                    Duration::from_millis(400),
                )
            } else {
                Script::ok("x")
            }
        });
        let gw = TestGateway::proxy(driver, &[up.addr()], "");
        let handle = gw.gateway().handle();
        let mut slow = RawClient::connect(gw.addr());
        slow.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(
            wait_until(Duration::from_secs(2), || sample(
                &handle.metrics_text(),
                "shardgate_upstream_active_connections"
            ) == Some(1.0)),
            "{driver:?}: one request in flight"
        );
        assert_eq!(slow.read_response().unwrap().status, 200);
        let mut c = RawClient::connect(gw.addr());
        for _ in 0..3 {
            c.send(b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.read_response().unwrap().status, 200);
        }
        let text = handle.metrics_text();
        assert_eq!(
            sample(&text, "shardgate_upstream_active_connections"),
            Some(0.0),
            "{driver:?}\n{text}"
        );
        assert_eq!(
            sample(
                &text,
                "shardgate_requests_total{tenant=\"\",route=\"all\",method=\"GET\",status_class=\"2xx\"}"
            ),
            Some(4.0),
            "{text}"
        );
        let idle = format!(
            "shardgate_upstream_pool_idle_connections{{endpoint=\"{}\"}}",
            up.addr()
        );
        assert!(sample(&text, &idle).is_some_and(|n| n >= 1.0), "{text}");
    }
}
