//! Bytes arrive intact and in order: large bodies both ways, many pipelined requests, client
//! aborts that must not be completed upstream, stalled upstream bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{Proxy, timed};
use crate::upstream::Upstream;
use crate::wire::show;

/// Deterministic, non-repeating-looking payload.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + i / 36) % 36])
        .collect()
}

/// Chunked encoding with uneven chunk sizes.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < body.len() {
        let n = size.min(body.len() - at);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&body[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
        size = size * 3 % 40_000 + 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// An upstream that answers every request with its body, chunked the same uneven way.
fn body_echo() -> Upstream {
    Upstream::start(|c| {
        while let Some(req) = c.next_request() {
            c.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            c.write(&chunked(&req.body));
        }
    })
}

both_drivers! {
    fn large_chunked_bodies_round_trip_intact(d) {
        let up = body_echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let body = payload(600_000);
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        c.send(&chunked(&body));
        let r = c.expect_final(false, "600 KB chunked");
        assert_eq!(r.status, 200);
        assert!(r.body == body, "response body differs ({} bytes back)", r.body.len());
        assert!(up.requests()[0].body == body, "request body differs upstream");
    }

    fn large_content_length_body_round_trip_intact(d) {
        let up = body_echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let body = payload(700_000);
        c.send(format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        c.send(&body);
        let r = c.expect_final(false, "700 KB body");
        assert!(r.status == 200 && r.body == body, "response differs ({} bytes)", r.body.len());
    }

    fn large_chunked_response_dechunked_for_http10(d) {
        let up = body_echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let body = payload(500_000);
        c.send(format!("POST / HTTP/1.0\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        c.send(&body);
        let r = c.expect_final(false, "500 KB to HTTP/1.0");
        assert!(!r.head.has("transfer-encoding"), "{}", show(&r.raw[..200]));
        assert!(r.status == 200 && r.body == body, "body differs ({} bytes)", r.body.len());
        c.closed_cleanly().unwrap();
    }

    fn fifty_pipelined_requests_answered_in_order(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let all: Vec<u8> = (0..50)
            .flat_map(|i| format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes())
            .collect();
        c.send(&all);
        for i in 0..50 {
            let r = c.expect_final(false, &format!("pipelined /{i}"));
            assert_eq!((r.status, r.body), (200, format!("/{i}").into_bytes()));
        }
    }

    fn pipelined_good_then_bad_request(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /good HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx");
        let r = c.expect_final(false, "good");
        assert_eq!((r.status, &r.body[..]), (200, &b"/good"[..]));
        assert_eq!(c.expect_final(false, "bad").status, 400);
        c.closed_cleanly().unwrap();
        assert_eq!(up.requests().len(), 1);
    }

    fn client_abort_mid_body_is_not_completed_upstream(d) {
        let eof = Arc::new(AtomicBool::new(false));
        let saw_eof = eof.clone();
        let up = Upstream::start(move |c| {
            while c.answer_echo() {}
            saw_eof.store(true, Ordering::SeqCst);
        });
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        // Larger than `limits.request_buffer` (64 KiB), so it streams before it is whole.
        c.send(b"POST /abort HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
        c.send(&[b'h'; 70_000]);
        assert!(up.wait_until(|s| s.conns.concat().ends_with(b"hhhhh")), "body never streamed");
        drop(c);
        assert!(up.wait_until(|_| eof.load(Ordering::SeqCst)), "upstream connection kept open");
        assert!(up.requests().is_empty(), "an aborted request was completed upstream");
    }

    fn stalled_upstream_body_is_cut_visibly(d) {
        let up = Upstream::start(|c| {
            if c.next_request().is_some() {
                c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
                c.drain();
            }
        });
        let flags = [("--upstream-timeout", "1s"), ("--idle-timeout", "1s")];
        let proxy = Proxy::start_with(d, &[up.addr], &flags);
        let mut c = proxy.client();
        c.set_read_timeout(Duration::from_secs(6));
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (r, took) = timed(|| c.read_final(false));
        match r {
            Err(crate::harness::ReadError::Closed(_)) => {}
            other => panic!("stalled body: expected a close, got {other:?} after {took:?}"),
        }
    }

    fn expect_100_with_body_sent_at_once(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
        let r = c.expect_final(false, "expect with the body already sent");
        assert_eq!((r.status, &r.body[..]), (200, &b"/e"[..]));
        c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.expect_final(false, "next");
        assert_eq!((r.status, &r.body[..]), (200, &b"/next"[..]), "{}", show(&r.raw));
    }
}
