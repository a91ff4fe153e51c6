//! Any bytes through `parse_request`, with the default and with small limits. No panic; and
//! whenever a head parses:
//! - it parses the same from its own bytes, and every sampled shorter prefix asks for more;
//! - the head `encode_request_head` writes for it parses again, with the same method and body
//!   framing, the Host the encoder wrote, exactly one `X-Forwarded-For` (old values, then the
//!   client), no hop-by-hop field and no field the original `Connection` named (except those the
//!   encoder writes itself), and every other field forwarded in order, byte for byte.
//!
//! Run: `cargo +nightly fuzz run request_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_http::{
    BodyFraming, ForwardContext, Limits, MAX_HEADERS_CAP, Request, Target, Version, empty_headers,
    encode_request_head, is_hop_by_hop, parse_request,
};

const SMALL: Limits = Limits {
    max_request_line: 64,
    max_head: 256,
    max_headers: 8,
    max_body: Some(1000),
};

/// Limits that never refuse what the encoder writes (it may add a few fields and bytes).
const WIDE: Limits = Limits {
    max_request_line: usize::MAX,
    max_head: usize::MAX,
    max_headers: MAX_HEADERS_CAP,
    max_body: None,
};

const CONTEXTS: [ForwardContext<'static>; 2] = [
    ForwardContext {
        identity: None,
        client_ip: b"192.0.2.7",
        keep_forwarded_for: true,
        drop_underscored: false,
        proto: b"http",
        path: None,
        fallback_host: b"127.0.0.1:9000",
        edits: shardgate_http::HeadEdits::NONE,
    },
    ForwardContext {
        identity: None,
        client_ip: b"2001:db8::1",
        keep_forwarded_for: false,
        drop_underscored: true,
        proto: b"https",
        path: Some(b"/normalised?q=1"),
        fallback_host: b"",
        edits: shardgate_http::HeadEdits::NONE,
    },
];

fuzz_target!(|data: &[u8]| {
    check(data, &Limits::default());
    check(data, &SMALL);
});

fn check(data: &[u8], limits: &Limits) {
    let mut headers = empty_headers();
    let req = match parse_request(data, &mut headers, limits) {
        Ok(Some(req)) => req,
        Ok(None) => {
            assert!(
                data.len() <= limits.max_head,
                "incomplete head over the limit"
            );
            return;
        }
        Err(_) => return,
    };
    let n = req.info.head_len;
    assert!(n <= data.len(), "head_len {n} > input {}", data.len());
    assert!(n <= limits.max_head);

    let mut h = empty_headers();
    let alone = parse_request(&data[..n], &mut h, limits);
    assert_eq!(alone.map(|r| r.map(|r| r.info)), Ok(Some(req.info)));
    for cut in cuts(n) {
        let mut h = empty_headers();
        let got = parse_request(&data[..cut], &mut h, limits).map(|r| r.map(|r| r.info));
        assert_eq!(got, Ok(None), "prefix of {cut} bytes of a valid head");
    }

    for ctx in &CONTEXTS {
        check_forward(&req, ctx);
    }
}

/// A few proper prefix lengths of an `n`-byte head, spread without a random source.
fn cuts(n: usize) -> impl Iterator<Item = usize> {
    [1, n / 3, n / 2, n.saturating_sub(2), n.saturating_sub(1)]
        .into_iter()
        .filter(move |&c| c > 0 && c < n)
}

fn check_forward(req: &Request<'_, '_>, ctx: &ForwardContext<'_>) {
    let mut out = b"prefix".to_vec();
    encode_request_head(req, ctx, &mut out);
    assert!(out.starts_with(b"prefix"), "encode overwrote the buffer");
    out.drain(..6);
    let shown = String::from_utf8_lossy(&out).into_owned();
    let mut h = empty_headers();
    let again = match parse_request(&out, &mut h, &WIDE) {
        Ok(Some(r)) => r,
        other => panic!("forwarded head does not parse: {other:?}\n{shown}"),
    };
    assert_eq!(again.info.head_len, out.len(), "{shown}");
    assert_eq!(again.method, req.method, "{shown}");
    assert_eq!(again.info.method, req.info.method, "{shown}");
    assert_eq!(again.info.version, Version::Http11, "{shown}");
    assert_eq!(
        again.info.body, req.info.body,
        "body framing changed\n{shown}"
    );
    assert_eq!(again.info.upgrade, req.info.upgrade, "{shown}");
    assert!(!again.info.expect_continue, "{shown}");
    assert_eq!(again.path, ctx.path.unwrap_or(req.path), "{shown}");
    let want_target = if again.path == b"*" {
        Target::Asterisk
    } else {
        Target::Origin
    };
    assert_eq!(again.info.target, want_target, "{shown}");
    let want_host = if req.host.is_empty() {
        ctx.fallback_host
    } else {
        req.host
    };
    assert_eq!(again.host, want_host, "{shown}");

    let upgrading = req.info.upgrade;
    let chunked = req.info.body == BodyFraming::Chunked;
    // Fields the encoder writes itself, whatever the client sent.
    let written = |name: &[u8]| {
        [
            "host",
            "content-length",
            "x-forwarded-proto",
            "x-forwarded-host",
        ]
        .iter()
        .any(|w| name.eq_ignore_ascii_case(w.as_bytes()))
            || (chunked && name.eq_ignore_ascii_case(b"transfer-encoding"))
            || (upgrading
                && (name.eq_ignore_ascii_case(b"connection")
                    || name.eq_ignore_ascii_case(b"upgrade")))
    };

    if chunked {
        // What was accepted is one `chunked` and nothing else, however spelled, and it
        // leaves as one canonical line.
        let items: Vec<Vec<u8>> = req
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|f| f.value.split(|&b| b == b','))
            .map(|i| i.trim_ascii().to_ascii_lowercase())
            .collect();
        assert_eq!(items, [b"chunked".to_vec()], "{shown}");
        let sent: Vec<&[u8]> = again
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("transfer-encoding"))
            .map(|f| f.value)
            .collect();
        assert_eq!(sent, [b"chunked".as_slice()], "{shown}");
    }

    let mut xff = Vec::new();
    let mut xff_lines = 0;
    for f in again.headers {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff_lines += 1;
            xff = f.value.to_vec();
            continue;
        }
        if is_hop_by_hop(name) {
            assert!(written(name), "hop-by-hop {:?} forwarded\n{shown}", f.name);
        }
        if req.connection.names(name) {
            assert!(
                written(name),
                "{:?} named by Connection forwarded\n{shown}",
                f.name
            );
        }
    }
    assert_eq!(xff_lines, 1, "{shown}");
    let mut want_xff = Vec::new();
    for f in req.headers.iter().filter(|_| ctx.keep_forwarded_for) {
        if f.name.eq_ignore_ascii_case("x-forwarded-for") {
            want_xff.extend_from_slice(f.value);
            want_xff.extend_from_slice(b", ");
        }
    }
    want_xff.extend_from_slice(ctx.client_ip);
    assert_eq!(xff, want_xff, "{shown}");

    // No field a client may not claim, nor (when dropping them) one with `_` in its name.
    for f in again.headers {
        let name = f.name.as_bytes();
        if shardgate_http::owned_request_field(name) {
            assert!(written(name) || name.eq_ignore_ascii_case(b"x-forwarded-for"), "{:?} forwarded\n{shown}", f.name);
        }
        assert!(!(ctx.drop_underscored && name.contains(&b'_')), "{:?} forwarded\n{shown}", f.name);
    }

    // Every other end-to-end field travels, in order, byte for byte.
    let passed = |name: &[u8]| {
        !name.eq_ignore_ascii_case(b"x-forwarded-for")
            && !shardgate_http::owned_request_field(name)
            && !(ctx.drop_underscored && name.contains(&b'_'))
            && !written(name)
            && !is_hop_by_hop(name)
            && !req.connection.names(name)
    };
    let sent: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .filter(|f| passed(f.name.as_bytes()))
        .map(|f| (f.name, f.value))
        .collect();
    let got: Vec<(&str, &[u8])> = again
        .headers
        .iter()
        .filter(|f| passed(f.name.as_bytes()))
        .map(|f| (f.name, f.value))
        .collect();
    assert_eq!(got, sent, "end-to-end fields differ\n{shown}");
}
