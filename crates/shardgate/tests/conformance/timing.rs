//! Timeouts apply to the phase they name and nothing else: a slow upstream is not an idle
//! client, a slow upload is not a slow head, a trickling response is not a silent upstream.
//! Pacing here is the scenario itself (a peer that is slow on purpose), not a wait for state.

use std::time::Duration;

use crate::harness::{Client, Proxy};
use crate::upstream::Upstream;
use crate::wire::show;

both_drivers! {
    fn slow_upstream_is_not_an_idle_or_slow_client(d) {
        let up = Upstream::start(|c| {
            while let Some(req) = c.next_request() {
                std::thread::sleep(Duration::from_millis(1500));
                c.write(&crate::upstream::echo_reply(&req));
            }
        });
        let flags = [("--idle-timeout", "1s"), ("--header-timeout", "1s"), ("--upstream-timeout", "3s")];
        let proxy = Proxy::start_with(d, &[up.addr], &flags);
        let mut c = proxy.client();
        c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.expect_final(false, "1.5 s upstream");
        assert_eq!((r.status, &r.body[..]), (200, &b"/slow"[..]), "{}", show(&r.raw));
    }

    fn slow_upload_is_not_a_slow_head(d) {
        let up = Upstream::echo();
        let flags = [("--header-timeout", "1s"), ("--idle-timeout", "5s")];
        let proxy = Proxy::start_with(d, &[up.addr], &flags);
        let mut c = proxy.client();
        c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        for b in b"hello" {
            std::thread::sleep(Duration::from_millis(300));
            c.send(&[*b]);
        }
        let r = c.expect_final(false, "1.5 s upload");
        assert_eq!((r.status, &r.body[..]), (200, &b"/upload"[..]), "{}", show(&r.raw));
        assert_eq!(up.requests()[0].body, b"hello");
    }

    fn trickling_response_outlives_the_upstream_timeout(d) {
        let up = Upstream::start(|c| {
            if c.next_request().is_some() {
                c.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                for _ in 0..8 {
                    std::thread::sleep(Duration::from_millis(200));
                    c.write(b"1\r\nx\r\n");
                }
                c.write(b"0\r\n\r\n");
                c.drain();
            }
        });
        let proxy = Proxy::start_with(d, &[up.addr], &[("--upstream-timeout", "1s")]);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.expect_final(false, "1.6 s trickle, 200 ms gaps");
        assert_eq!((r.status, &r.body[..]), (200, &b"xxxxxxxx"[..]), "{}", show(&r.raw));
    }

    fn hundred_concurrent_connections_all_answered(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut clients: Vec<Client> = (0..100).map(|_| proxy.client()).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.expect_final(false, &format!("connection {i}"));
            assert_eq!((r.status, r.body), (200, format!("/{i}").into_bytes()));
        }
    }
}
