//! Any bytes through `parse_response` (for GET and HEAD, with a roomy and a small head limit).
//! No panic; and whenever a head parses:
//! - it parses the same from its own bytes, and every sampled shorter prefix asks for more;
//! - for each of the 16 combinations of `ResponseEncodeOptions`, the head
//!   `encode_response_head` writes parses again with the same status, the framing those options
//!   call for, the `Connection` field they call for, no other hop-by-hop field, and every
//!   end-to-end field forwarded in order, byte for byte.
//!
//! Run: `cargo +nightly fuzz run response_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_http::{
    Method, Response, ResponseEncodeOptions, ResponseFraming, Version, empty_headers,
    encode_response_head, is_hop_by_hop, parse_response,
};

fuzz_target!(|data: &[u8]| {
    for method in [Method::Get, Method::Head] {
        for max_head in [8192, 96] {
            check(data, method, max_head);
        }
    }
});

fn check(data: &[u8], method: Method, max_head: usize) {
    let mut headers = empty_headers();
    let res = match parse_response(data, &mut headers, method, max_head) {
        Ok(Some(res)) => res,
        Ok(None) => {
            assert!(data.len() <= max_head, "incomplete head over the limit");
            return;
        }
        Err(_) => return,
    };
    let n = res.info.head_len;
    assert!(n <= data.len() && n <= max_head, "head_len {n}");
    if let ResponseFraming::Length(0) = res.info.framing {
        panic!("Length(0) must be None");
    }

    let mut h = empty_headers();
    let alone = parse_response(&data[..n], &mut h, method, max_head);
    let alone = alone.map(|r| r.map(|r| summary(&r)));
    assert_eq!(alone, Ok(Some(summary(&res))));
    for cut in [1, n / 3, n / 2, n.saturating_sub(2), n.saturating_sub(1)] {
        if cut == 0 || cut >= n {
            continue;
        }
        let mut h = empty_headers();
        let got = parse_response(&data[..cut], &mut h, method, max_head);
        let got = got.map(|r| r.map(|r| summary(&r)));
        assert_eq!(got, Ok(None), "prefix of {cut} bytes of a valid head");
    }

    for bits in 0u8..16 {
        let opts = ResponseEncodeOptions {
            client_version: if bits & 1 == 0 {
                Version::Http11
            } else {
                Version::Http10
            },
            close: bits & 2 != 0,
            dechunk: bits & 4 != 0,
            upgrade: bits & 8 != 0,
            edits: shardgate_http::HeadEdits::NONE,
        };
        check_encode(&res, method, &opts);
    }
}

/// The facts compared between two parses (`ResponseInfo` has no `PartialEq`).
fn summary(r: &Response<'_, '_>) -> (usize, u16, Version, ResponseFraming, bool) {
    let i = r.info;
    (i.head_len, i.status, i.version, i.framing, i.reusable)
}

fn check_encode(res: &Response<'_, '_>, method: Method, opts: &ResponseEncodeOptions) {
    let mut out = b"prefix".to_vec();
    encode_response_head(res, opts, &mut out);
    assert!(out.starts_with(b"prefix"), "encode overwrote the buffer");
    out.drain(..6);
    let shown = String::from_utf8_lossy(&out).into_owned();
    let mut h = empty_headers();
    let again = match parse_response(&out, &mut h, method, usize::MAX) {
        Ok(Some(r)) => r,
        other => panic!("client head does not parse: {other:?}\n{opts:?}\n{shown}"),
    };
    assert_eq!(again.info.head_len, out.len(), "{shown}");
    assert_eq!(again.info.status, res.info.status, "{shown}");
    assert_eq!(again.info.version, Version::Http11, "{shown}");
    assert_eq!(again.reason, res.reason, "{shown}");

    let te_passed = match res.info.framing {
        ResponseFraming::Chunked => !opts.dechunk,
        ResponseFraming::UntilClose => true,
        _ => false,
    };
    let want_framing = match res.info.framing {
        ResponseFraming::Chunked if opts.dechunk => ResponseFraming::UntilClose,
        f => f,
    };
    assert_eq!(
        again.info.framing, want_framing,
        "framing changed from {:?} with {opts:?}\n{shown}",
        res.info.framing
    );

    let want_connection: Option<&[u8]> = if opts.upgrade {
        Some(b"upgrade")
    } else if opts.close {
        Some(b"close")
    } else if opts.client_version == Version::Http10 {
        Some(b"keep-alive")
    } else {
        None
    };
    let length_rewritten = matches!(res.info.framing, ResponseFraming::Length(_));
    let mut connection: Vec<&[u8]> = Vec::new();
    for f in again.headers {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            connection.push(f.value);
            continue;
        }
        let allowed = (te_passed && name.eq_ignore_ascii_case(b"transfer-encoding"))
            || (opts.upgrade && name.eq_ignore_ascii_case(b"upgrade"));
        if is_hop_by_hop(name) {
            assert!(allowed, "hop-by-hop {:?} sent\n{shown}", f.name);
        }
        if res.connection.names(name) {
            let rewritten = length_rewritten && name.eq_ignore_ascii_case(b"content-length");
            assert!(
                allowed || rewritten,
                "{:?} named by Connection sent\n{shown}",
                f.name
            );
        }
    }
    assert_eq!(connection, Vec::from_iter(want_connection), "{shown}");

    // Every end-to-end field travels, in order, byte for byte.
    let passed = |name: &[u8]| {
        !is_hop_by_hop(name)
            && !name.eq_ignore_ascii_case(b"upgrade")
            && !res.connection.names(name)
            && !(length_rewritten && name.eq_ignore_ascii_case(b"content-length"))
    };
    let sent: Vec<(&str, &[u8])> = res
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
