//! Connection reuse and its hazards: upstream connections that close, pooled connections that
//! went stale, and responses that arrive before the request body is complete.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::Proxy;
use crate::upstream::Upstream;
use crate::wire::show;

both_drivers! {
    fn upstream_connection_close_is_not_reused(d) {
        let up = Upstream::start(|c| {
            if let Some(req) = c.next_request() {
                let body = req.target.as_bytes();
                let head = format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
                c.write(&[head.as_bytes(), body].concat());
            }
        });
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        for path in ["/1", "/2", "/3"] {
            c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let r = c.expect_final(false, path);
            assert_eq!((r.status, &r.body[..]), (200, path.as_bytes()), "{}", show(&r.raw));
        }
        assert_eq!(up.connections(), 3);
    }

    fn stale_pooled_connection_is_not_served_as_502(d) {
        // The upstream answers one request per connection and then closes without saying so
        // (as an upstream whose keep-alive timeout is shorter than the proxy's does).
        let closed = Arc::new(AtomicUsize::new(0));
        let closed_by_up = closed.clone();
        let up = Upstream::start(move |c| {
            c.answer_echo();
            closed_by_up.fetch_add(1, Ordering::SeqCst);
        });
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.expect_final(false, "first").status, 200);
        assert!(up.wait_until(|_| closed.load(Ordering::SeqCst) == 1), "upstream did not close");
        c.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.expect_final(false, "second, after the pooled connection closed");
        assert_eq!((r.status, &r.body[..]), (200, &b"/2"[..]), "{}", show(&r.raw));
    }

    fn early_response_does_not_turn_the_body_into_a_request(d) {
        // The upstream answers as soon as it has the head, without reading the body.
        let up = Upstream::start(|c| {
            if c.read_until(b"\r\n\r\n").is_some() {
                c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly");
                c.drain();
            }
        });
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let body = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
        c.send(format!("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        // Give the early answer a bounded chance to arrive before the body is sent.
        c.set_read_timeout(Duration::from_secs(1));
        let early = c.read_final(false);
        c.set_read_timeout(crate::harness::IO_TIMEOUT);
        c.send(body);
        let early = match early {
            Ok((_, r)) => r,
            Err(_) => c.expect_final(false, "early response"),
        };
        assert_eq!((early.status, &early.body[..]), (200, &b"early"[..]), "{}", show(&early.raw));
        // Whatever follows, the body must never be answered as a request of its own.
        let after = c.read_to_close().unwrap_or_default();
        assert!(!crate::wire::contains(&after, b"/smuggled"), "body answered: {}", show(&after));
        assert!(up.requests().iter().all(|r| r.target != "/smuggled"), "body forwarded as a request");
        let raw = up.raw();
        let first = crate::wire::find(&raw, b"POST /p").unwrap_or(0);
        assert!(crate::wire::find(&raw[first + 1..], b"GET /smuggled\r\n").is_none());
    }
}
