//! Slow and greedy peers: a client that trickles its body, one that does not read its answer,
//! one that pipelines without reading, and trailers that try to carry what the gateway owns.

use crate::harness::{Client, Proxy};
use crate::upstream::Upstream;
use crate::wire::show;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn gateway(d: crate::harness::Driver, up: &Upstream, top: &str) -> Proxy {
    Proxy::start_config_with(
        d,
        top,
        &format!(
            "[upstreams.app]\nendpoints = [\"{}\"]\n\n[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
            up.addr
        ),
    )
}

both_drivers! {
    fn a_small_body_is_read_whole_before_the_upstream_is_contacted(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up, "");
        for (head, first, rest) in [
            ("Content-Length: 10", &b"hello"[..], &b"world"[..]),
            ("Transfer-Encoding: chunked", b"5\r\nhello\r\n", b"5\r\nworld\r\n0\r\n\r\n"),
        ] {
            let before = up.raw().len();
            let mut c = proxy.client();
            c.send(format!("POST /upload HTTP/1.1\r\nHost: a\r\n{head}\r\n\r\n").as_bytes());
            c.send(first);
            std::thread::sleep(Duration::from_millis(600));
            assert_eq!(
                up.raw().len(),
                before,
                "{head}: the upstream was sent the request before its body was in"
            );
            c.send(rest);
            let r = c.expect_final(false, "the answer");
            assert_eq!(r.status, 200, "{}", show(&r.raw));
        }
        let bodies: Vec<Vec<u8>> = up.requests().into_iter().map(|q| q.body).collect();
        assert_eq!(bodies, [b"helloworld".to_vec(), b"helloworld".to_vec()]);
    }

    fn a_large_body_streams_without_waiting_for_its_end(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up, "[limits]\nrequest_buffer = \"16KiB\"\n");
        let mut c = proxy.client();
        c.send(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\n");
        c.send(&[b'x'; 20000]);
        assert!(
            up.wait_until(|s| s.conns.iter().any(|b| b.len() > 16000)),
            "a body over limits.request_buffer streams as it comes"
        );
        c.send(&[b'y'; 20000]);
        let r = c.expect_final(false, "the answer");
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        assert_eq!(up.requests()[0].body.len(), 40000);
    }

    fn a_body_trickled_in_is_ended_by_its_whole_deadline(d) {
        let up = Upstream::echo();
        let top = "[timeouts]\nclient_body = \"1s\"\nrequest_body = \"2s\"\n";
        let proxy = gateway(d, &up, top);
        let mut c = proxy.client();
        c.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n");
        // A byte every 400 ms never trips the 1 s gap; 40 of them take 16 s.
        let mut writer = c.try_clone();
        std::thread::spawn(move || {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(400));
                if !writer.try_send(b"z") {
                    break;
                }
            }
        });
        let started = Instant::now();
        c.set_read_timeout(Duration::from_secs(20));
        let r = c.expect_final(false, "the deadline's answer");
        let took = started.elapsed();
        assert_eq!(r.status, 408, "{}", show(&r.raw));
        assert!(took < Duration::from_secs(6), "ended after {took:?}");
        assert!(up.requests().is_empty(), "a request that never finished reached the origin");
    }
}

both_drivers! {
    fn a_client_that_barely_reads_is_ended_by_the_response_deadline(d) {
        // 64 MiB the upstream writes as fast as it is read; the client reads 64 KiB every
        // 100 ms (about 640 KiB/s, so 100 s for all of it), each write progressing well within
        // `timeouts.send`.
        let cut = Arc::new(Mutex::new(None::<Duration>));
        let seen = cut.clone();
        let up = Upstream::start(move |conn| {
            if conn.next_request().is_none() {
                return;
            }
            let total = 64usize << 20;
            conn.write(format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes());
            let started = Instant::now();
            let chunk = vec![b'r'; 64 * 1024];
            for _ in 0..total / chunk.len() {
                if !conn.try_write(&chunk) {
                    *seen.lock().unwrap() = Some(started.elapsed());
                    return;
                }
            }
        });
        let top = "[timeouts]\nresponse_send = \"2s\"\n\n[limits]\nmin_rate = \"4MiB\"\n";
        let proxy = gateway(d, &up, top);
        let mut c = proxy.client();
        c.send(b"GET /download HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut stream = c.raw_stream();
        let started = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while started.elapsed() < Duration::from_secs(25) && cut.lock().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(100));
            if matches!(stream.read(&mut buf), Ok(0) | Err(_)) {
                break;
            }
        }
        let took = cut.lock().unwrap().expect("the proxy never cut the slow reader off");
        // Allowance: 2 s plus a second per 4 MiB the kernel took (several MiB of socket
        // buffers) and per 4 MiB read: about 6 s.
        assert!(took < Duration::from_secs(15), "cut off after {took:?}");
    }
}

/// Chunked requests whose trailer tries to set fields the gateway owns, `size` bytes of data
/// before it.
fn trailer_case(c: &mut Client, size: usize) {
    let mut req = b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(format!("{size:x}\r\n").as_bytes());
    req.extend(std::iter::repeat_n(b'd', size));
    req.extend_from_slice(
        b"\r\n0\r\nX-Checksum: 42\r\nX-Forwarded-For: 6.6.6.6\r\nX-Consumer: admin\r\n\
          Authorization: Bearer forged\r\nX_Role: root\r\nContent-Length: 1\r\n\r\n",
    );
    c.send(&req);
    let r = c.expect_final(false, "the answer");
    assert_eq!(r.status, 200, "{}", show(&r.raw));
}

both_drivers! {
    fn trailers_never_carry_fields_the_gateway_owns(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up, "");
        // Buffered (small) and streamed (over limits.request_buffer).
        for size in [5, 100_000] {
            trailer_case(&mut proxy.client(), size);
        }
        let raw = String::from_utf8_lossy(&up.raw()).to_ascii_lowercase();
        assert_eq!(raw.matches("x-checksum: 42\r\n").count(), 2, "other trailers pass");
        for owned in ["6.6.6.6", "x-consumer", "forged", "x_role", "content-length: 1\r"] {
            assert!(!raw.contains(owned), "{owned:?} reached the origin in a trailer");
        }
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

both_drivers! {
    fn ten_thousand_pipelined_requests_from_a_client_that_reads_nothing_cost_little(d) {
        let up = Upstream::echo();
        let proxy = gateway(d, &up, "");
        // Warm the shard's buffers and the allocator up first.
        for _ in 0..20 {
            let mut c = proxy.client();
            c.send(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(c.expect_final(false, "warm-up").status, 200);
        }
        let before = rss_kib(proxy.pid());
        let mut c = proxy.client();
        let one = b"GET /p HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut all = Vec::with_capacity(one.len() * 10_000);
        for _ in 0..10_000 {
            all.extend_from_slice(one);
        }
        let mut writer = c.try_clone();
        let sender = std::thread::spawn(move || writer.try_send(&all));
        // The client reads nothing while the gateway answers what it can.
        std::thread::sleep(Duration::from_secs(2));
        let during = rss_kib(proxy.pid());
        let grew = during.saturating_sub(before);
        println!("RSS {before} KiB before, {during} KiB with 10,000 requests pipelined");
        assert!(grew < 4 * 1024, "memory grew by {grew} KiB");
        // It is still a working connection: reading drains the answers in order.
        c.set_read_timeout(Duration::from_secs(10));
        let r = c.expect_final(false, "the first answer");
        assert_eq!(r.status, 200, "{}", show(&r.raw));
        drop(c);
        let _ = sender.join();
    }
}
