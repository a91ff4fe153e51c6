//! Connection lifecycle: Expect: 100-continue, Upgrade tunnels, size limits, timeouts and
//! upstream failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{IO_TIMEOUT, Proxy, dead_addr, timed};
use crate::upstream::Upstream;
use crate::wire::show;

const WS_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const WS_101: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// An upstream that accepts a websocket upgrade, says `up-hello` (if `greet`), answers `ping`
/// with `pong`, then (if `close_first`) closes, else waits for the client's close and sets
/// `saw_eof`.
fn ws_upstream(greet: bool, close_first: bool, saw_eof: Arc<AtomicBool>) -> Upstream {
    Upstream::start(move |c| {
        let Some(req) = c.next_request() else { return };
        if req.head.get("upgrade") != Some("websocket") || !req.head.connection_has("upgrade") {
            c.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        c.write(WS_101);
        if greet {
            c.write(b"up-hello");
        }
        if c.read_bytes(4) == b"ping" {
            c.write(b"pong");
        }
        if close_first {
            return;
        }
        saw_eof.store(c.wait_eof(), Ordering::SeqCst);
    })
}

fn many_headers(count: usize, size: usize) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..count {
        req.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(size)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

both_drivers! {
    fn expect_100_continue_answered_by_gateway(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        let interim = c.read_response(false).unwrap_or_else(|e| panic!("no 100 Continue: {e}"));
        assert_eq!(interim.status, 100, "{}", show(&interim.raw));
        c.send(b"hello");
        let r = c.expect_final(false, "after 100 Continue");
        assert_eq!((r.status, &r.body[..]), (200, &b"/e"[..]), "{}", show(&r.raw));
        assert_eq!(up.requests()[0].body, b"hello");
    }

    fn expect_100_continue_ignored_for_http10(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"POST /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
        let (interim, r) = c.read_final(false).unwrap_or_else(|e| panic!("HTTP/1.0 expect: {e}"));
        assert!(interim.is_empty(), "1xx sent to an HTTP/1.0 client: {interim:?}");
        assert_eq!((r.status, &r.body[..]), (200, &b"/e"[..]));
    }

    fn expect_100_continue_over_max_body_is_413_not_100(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n");
        let r = c.read_response(false).unwrap_or_else(|e| panic!("no answer: {e}"));
        assert_eq!(r.status, 413, "{}", show(&r.raw));
        assert_eq!(up.connections(), 0);
    }

    fn websocket_upgrade_tunnels_until_client_closes(d) {
        let saw_eof = Arc::new(AtomicBool::new(false));
        let up = ws_upstream(true, false, saw_eof.clone());
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(WS_REQUEST);
        let r = c.expect_final(false, "upgrade");
        assert_eq!(r.status, 101, "{}", show(&r.raw));
        assert_eq!(c.read_exact_bytes(8).unwrap(), b"up-hello");
        c.send(b"ping");
        assert_eq!(c.read_exact_bytes(4).unwrap(), b"pong");
        c.shutdown_write();
        c.closed_cleanly().unwrap();
        assert!(saw_eof.load(Ordering::SeqCst), "upstream never saw the client's close");
    }

    fn websocket_upgrade_ends_when_upstream_closes(d) {
        let up = ws_upstream(true, true, Arc::new(AtomicBool::new(false)));
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(WS_REQUEST);
        assert_eq!(c.expect_final(false, "upgrade").status, 101);
        assert_eq!(c.read_exact_bytes(8).unwrap(), b"up-hello");
        c.send(b"ping");
        assert_eq!(c.read_exact_bytes(4).unwrap(), b"pong");
        c.closed_cleanly().unwrap();
    }

    fn websocket_tunnel_client_speaks_first(d) {
        let saw_eof = Arc::new(AtomicBool::new(false));
        let up = ws_upstream(false, false, saw_eof.clone());
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(WS_REQUEST);
        assert_eq!(c.expect_final(false, "upgrade").status, 101);
        c.send(b"ping");
        assert_eq!(c.read_exact_bytes(4).unwrap(), b"pong");
        c.shutdown_write();
        c.closed_cleanly().unwrap();
        assert!(saw_eof.load(Ordering::SeqCst), "upstream never saw the client's close");
    }

    fn websocket_bytes_sent_with_the_request_reach_upstream(d) {
        let up = ws_upstream(false, true, Arc::new(AtomicBool::new(false)));
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(&[WS_REQUEST, b"ping"].concat());
        assert_eq!(c.expect_final(false, "upgrade").status, 101);
        assert_eq!(c.read_exact_bytes(4).unwrap(), b"pong");
        c.closed_cleanly().unwrap();
    }

    fn upgrade_refused_by_upstream_stays_http(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(WS_REQUEST);
        let r = c.expect_final(false, "refused upgrade");
        assert_eq!((r.status, &r.body[..]), (200, &b"/ws"[..]));
        c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.expect_final(false, "after refused upgrade");
        assert_eq!((r.status, &r.body[..]), (200, &b"/next"[..]));
    }

    fn upgrade_without_connection_token_is_not_an_upgrade(d) {
        let up = Upstream::start(|c| {
            if c.next_request().is_some() {
                c.write(WS_101);
                c.drain();
            }
        });
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        let r = c.expect_final(false, "Upgrade without Connection: upgrade");
        assert_eq!(r.status, 502, "{}", show(&r.raw));
        let reqs = up.requests();
        assert!(!reqs[0].head.has("upgrade"), "{}", show(&reqs[0].raw));
    }

    fn h2c_upgrade_is_not_tunnelled(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(b"GET /h2 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n");
        let r = c.expect_final(false, "h2c");
        assert_eq!((r.status, &r.body[..]), (200, &b"/h2"[..]));
        let req = &up.requests()[0];
        assert!(!req.head.has("upgrade"), "Upgrade reached the upstream: {}", show(&req.raw));
        assert!(!req.head.has("http2-settings"), "{}", show(&req.raw));
        assert!(!req.head.connection_has("upgrade"), "{}", show(&req.raw));
    }

    fn request_line_over_limit_is_414(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000)).as_bytes());
        assert_eq!(c.expect_final(false, "long request line").status, 414);
        assert_eq!(up.connections(), 0);
    }

    fn request_line_under_limit_passes(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(8000)).as_bytes());
        assert_eq!(c.expect_final(false, "8000-byte target").status, 200);
    }

    fn head_over_limit_is_431(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(&many_headers(20, 1000));
        assert_eq!(c.expect_final(false, "20 KB of fields").status, 431);
        assert_eq!(up.connections(), 0);
    }

    fn head_just_under_limit_passes(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        let req = many_headers(15, 1000);
        assert!(req.len() > 15_000 && req.len() < 16_000);
        c.send(&req);
        assert_eq!(c.expect_final(false, "15.x KB head").status, 200);
    }

    fn single_huge_field_is_431(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(&many_headers(1, 17_000));
        assert_eq!(c.expect_final(false, "one 17 KB field").status, 431);
        assert_eq!(up.connections(), 0);
    }

    fn many_small_fields_forwarded_whole_or_431(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        c.send(&many_headers(300, 4));
        let r = c.expect_final(false, "300 small fields");
        match r.status {
            431 => assert_eq!(up.connections(), 0),
            200 => {
                let req = &up.requests()[0];
                let n = (0..300).filter(|i| req.head.has(&format!("x-h{i}"))).count();
                assert_eq!(n, 300, "fields silently dropped");
            }
            s => panic!("300 small fields answered {s}"),
        }
    }

    fn chunked_body_over_max_body_is_413(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start_with(d, &[up.addr], &[("--max-body", "1KiB")]);
        let mut c = proxy.client();
        let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(format!("800\r\n{}\r\n0\r\n\r\n", "x".repeat(0x800)).as_bytes());
        c.send(&req);
        let r = c.expect_final(false, "2 KiB chunked body, 1 KiB limit");
        assert_eq!(r.status, 413, "{}", show(&r.raw));
        c.closed_cleanly().unwrap();
        assert!(up.requests().is_empty(), "over-limit body reached the upstream whole");
    }

    fn head_split_into_single_bytes_passes(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start(d, &[up.addr]);
        let mut c = proxy.client();
        for b in b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" {
            c.send(&[*b]);
        }
        let r = c.expect_final(false, "byte-by-byte request");
        assert_eq!((r.status, &r.body[..]), (200, &b"/slow"[..]));
        assert_eq!(up.requests()[0].body, b"hello");
    }

    fn slowloris_head_gets_408(d) {
        let up = Upstream::echo();
        let proxy = Proxy::start_with(d, &[up.addr], &[("--header-timeout", "1s")]);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
        let mut writer = c.try_clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_writer = stop.clone();
        // Pacing the trickle is the point of the test: one byte every 100 ms, each in time
        // for a per-read timeout, never completing the head.
        let trickle = std::thread::spawn(move || {
            for _ in 0..40 {
                if stop_writer.load(Ordering::SeqCst) || !writer.try_send(b"a") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Another client on the same shard is served meanwhile.
        let mut other = proxy.client();
        other.send(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(other.expect_final(false, "request during slowloris").status, 200);
        let (r, took) = timed(|| c.expect_final(false, "slowloris"));
        stop.store(true, Ordering::SeqCst);
        let _ = trickle.join();
        assert_eq!(r.status, 408, "{}", show(&r.raw));
        assert!(took < Duration::from_millis(2500), "408 after {took:?} with a 1s header timeout");
        c.closed_cleanly().unwrap();
        assert!(up.requests().iter().all(|r| r.target == "/other"));
    }

    fn idle_keep_alive_closes_quietly(d) {
        let up = Upstream::echo();
        let flags = [("--idle-timeout", "1s"), ("--header-timeout", "10s")];
        let proxy = Proxy::start_with(d, &[up.addr], &flags);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.expect_final(false, "before idling").status, 200);
        let (closed, took) = timed(|| c.closed_cleanly());
        closed.unwrap_or_else(|e| panic!("idle connection: {e}"));
        assert!(took >= Duration::from_millis(700), "closed after only {took:?}");
        assert!(took < IO_TIMEOUT, "closed after {took:?} with a 1s idle timeout");
    }

    fn upstream_refused_is_502(d) {
        let proxy = Proxy::start(d, &[dead_addr()]);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.expect_final(false, "refused upstream").status, 502);
    }

    fn upstream_silent_is_504(d) {
        let up = Upstream::start(|c| {
            if c.next_request().is_some() {
                c.drain();
            }
        });
        let proxy = Proxy::start_with(d, &[up.addr], &[("--upstream-timeout", "1s")]);
        let mut c = proxy.client();
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let (r, took) = timed(|| c.expect_final(false, "silent upstream"));
        assert_eq!(r.status, 504, "{}", show(&r.raw));
        assert!(took >= Duration::from_millis(700), "504 after only {took:?}");
        assert!(took < Duration::from_millis(2500), "504 after {took:?} with a 1s timeout");
    }
}
