//! Hot primitives of `shardgate-http`, each next to a peer in the same run:
//! raw `httparse` against the strict layer on the same request and response heads, the head
//! encoders, and the chunked scanner (scanning only, and de-chunking) against a plain copy of
//! the same bytes.
//!
//! Plain `Instant` timing: every case runs `RUNS` times (cases interleaved, so a noisy moment
//! on a shared machine hits all of them), each run long enough to take ~`RUN_TARGET`; the
//! median run is reported. Run: `cargo bench -p shardgate-http --bench parse`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shardgate_http::{
    ChunkedDecoder, ForwardContext, Limits, Method, ResponseEncodeOptions, Version, empty_headers,
    encode_request_head, encode_response_head, parse_request, parse_response,
};

const RUNS: usize = 9;
const RUN_TARGET: Duration = Duration::from_millis(60);

/// A browser navigation as Firefox sends it (~500 bytes).
const REQUEST: &[u8] = b"GET /account/orders/4711?tab=details&lang=en HTTP/1.1\r\n\
Host: shop.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://shop.example.com/account/orders\r\n\
Cookie: sid=3f2a9c0d7e1b4a5f8c6d2e0b9a7f1c3e; theme=dark\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n";

/// A typical HTML page response head (~400 bytes).
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Fri, 27 Nov 2026 10:00:00 GMT\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Length: 51234\r\n\
Connection: keep-alive\r\n\
Cache-Control: private, max-age=0, must-revalidate\r\n\
ETag: \"5e8c-1a2b3c4d5e6f\"\r\n\
Vary: Accept-Encoding, Cookie\r\n\
Server: app/1.4\r\n\
X-Request-Id: 7d1c2b3a-4e5f-6789-abcd-0123456789ef\r\n\
Set-Cookie: sid=3f2a9c0d7e1b4a5f8c6d2e0b9a7f1c3e; Path=/; HttpOnly; Secure\r\n\
Strict-Transport-Security: max-age=31536000\r\n\r\n";

const CHUNK: usize = 4 * 1024;
const BODY: usize = 64 * 1024;

/// 64 KiB of payload in 4 KiB chunks, then the last chunk.
fn chunked_body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..BODY / CHUNK {
        body.extend_from_slice(format!("{CHUNK:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, CHUNK));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// One benchmark: runs the operation `n` times per call.
struct Case<'a> {
    name: &'static str,
    run: Box<dyn FnMut(u64) + 'a>,
    iters: u64,
    samples: Vec<f64>,
}

impl<'a> Case<'a> {
    fn new(name: &'static str, mut op: impl FnMut() + 'a) -> Self {
        Case {
            name,
            run: Box::new(move |n| {
                for _ in 0..n {
                    op();
                }
            }),
            iters: 1,
            samples: Vec::with_capacity(RUNS),
        }
    }

    /// Grows the iteration count until one run takes about `RUN_TARGET`.
    fn calibrate(&mut self) {
        loop {
            let t = Instant::now();
            (self.run)(self.iters);
            let took = t.elapsed();
            if took >= RUN_TARGET / 4 {
                let scale = RUN_TARGET.as_secs_f64() / took.as_secs_f64();
                self.iters = ((self.iters as f64 * scale) as u64).max(1);
                return;
            }
            self.iters *= 4;
        }
    }

    fn sample(&mut self) {
        let t = Instant::now();
        (self.run)(self.iters);
        self.samples
            .push(t.elapsed().as_nanos() as f64 / self.iters as f64);
    }

    fn median_ns(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }
}

fn main() {
    let limits = Limits::default();
    let ctx = ForwardContext {
        identity: None,
        keep_forwarded_for: true,
        drop_underscored: true,
        client_ip: b"198.51.100.23",
        proto: b"https",
        path: None,
        fallback_host: b"10.0.0.2:8080",
        edits: shardgate_http::HeadEdits::NONE,
    };
    let opts = ResponseEncodeOptions {
        client_version: Version::Http11,
        close: false,
        dechunk: false,
        upgrade: false,
        edits: shardgate_http::HeadEdits::NONE,
    };
    let body = chunked_body();

    // The fixtures must be what they claim before anything is timed.
    let mut req_headers = empty_headers();
    let req = parse_request(REQUEST, &mut req_headers, &limits)
        .expect("bench request parses")
        .expect("bench request is complete");
    let mut res_headers = empty_headers();
    let res = parse_response(RESPONSE, &mut res_headers, Method::Get, 16 * 1024)
        .expect("bench response parses")
        .expect("bench response is complete");
    let mut probe = ChunkedDecoder::new(1024, None);
    assert!(probe.feed(&body, |_| {}).expect("bench body").done);

    let mut h1 = empty_headers();
    let mut h2 = empty_headers();
    let mut h3 = empty_headers();
    let mut h4 = empty_headers();
    let mut out_req = Vec::with_capacity(1024);
    let mut out_res = Vec::with_capacity(1024);
    let mut copy = Vec::with_capacity(body.len());
    let mut dechunked = Vec::with_capacity(BODY);

    let mut cases = vec![
        Case::new("httparse_request_parse", || {
            let mut r = httparse::Request::new(&mut h1);
            black_box(r.parse(black_box(REQUEST)).ok());
        }),
        Case::new("shardgate_parse_request", || {
            let r = parse_request(black_box(REQUEST), &mut h2, &limits);
            black_box(r.ok().flatten().map(|r| r.info));
        }),
        Case::new("encode_request_head", || {
            out_req.clear();
            encode_request_head(black_box(&req), &ctx, &mut out_req);
            black_box(&out_req);
        }),
        Case::new("httparse_response_parse", || {
            let mut r = httparse::Response::new(&mut h3);
            black_box(r.parse(black_box(RESPONSE)).ok());
        }),
        Case::new("shardgate_parse_response", || {
            let r = parse_response(black_box(RESPONSE), &mut h4, Method::Get, 16 * 1024);
            black_box(r.ok().flatten().map(|r| r.info.framing));
        }),
        Case::new("encode_response_head", || {
            out_res.clear();
            encode_response_head(black_box(&res), &opts, &mut out_res);
            black_box(&out_res);
        }),
        Case::new("chunked_feed_64k_in_4k_reads", || {
            let mut d = ChunkedDecoder::new(1024, None);
            let mut payload = 0;
            for read in black_box(&body[..]).chunks(CHUNK) {
                let p = d.feed(read, |r| payload += r.len());
                black_box(p.ok());
            }
            black_box((d.is_done(), payload));
        }),
        Case::new("chunked_dechunk_64k_in_4k_reads", || {
            let mut d = ChunkedDecoder::new(1024, None);
            dechunked.clear();
            for read in black_box(&body[..]).chunks(CHUNK) {
                let p = d.feed(read, |r| dechunked.extend_from_slice(&read[r]));
                black_box(p.ok());
            }
            black_box((d.is_done(), &dechunked));
        }),
        Case::new("memcpy_64k_in_4k_reads", || {
            copy.clear();
            for read in black_box(&body[..]).chunks(CHUNK) {
                copy.extend_from_slice(read);
            }
            black_box(&copy);
        }),
    ];

    for c in &mut cases {
        c.calibrate();
    }
    for _ in 0..RUNS {
        for c in &mut cases {
            c.sample();
        }
    }

    println!(
        "shardgate-http parse bench: median of {RUNS} runs of ~{} ms each",
        RUN_TARGET.as_millis()
    );
    println!(
        "request head {} B, response head {} B, chunked body {} B ({} KiB payload)",
        REQUEST.len(),
        RESPONSE.len(),
        body.len(),
        BODY / 1024
    );
    let mut median = std::collections::HashMap::new();
    for c in &cases {
        let ns = c.median_ns();
        median.insert(c.name, ns);
        if c.name.contains("64k") {
            let mbps = body.len() as f64 / ns * 1e9 / 1e6;
            println!("{:<32} {:>10.0} ns/op {:>9.0} MB/s", c.name, ns, mbps);
        } else {
            println!("{:<32} {:>10.1} ns/op", c.name, ns);
        }
    }
    let ratio = |a: &str, b: &str| median[a] / median[b];
    println!(
        "strict_request_overhead_vs_httparse {:.2}x",
        ratio("shardgate_parse_request", "httparse_request_parse")
    );
    println!(
        "strict_response_overhead_vs_httparse {:.2}x",
        ratio("shardgate_parse_response", "httparse_response_parse")
    );
    println!(
        "chunked_scan_vs_memcpy {:.2}x",
        ratio("chunked_feed_64k_in_4k_reads", "memcpy_64k_in_4k_reads")
    );
    println!(
        "chunked_dechunk_vs_memcpy {:.2}x",
        ratio("chunked_dechunk_64k_in_4k_reads", "memcpy_64k_in_4k_reads")
    );
}
