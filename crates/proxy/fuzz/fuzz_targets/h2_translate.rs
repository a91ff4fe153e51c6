//! Any HTTP/2 request head through the HTTP/2-to-HTTP/1.1 translation. The input is split
//! into a method, a `:path`, an `:authority` and fields at 0xff bytes; each part is built the
//! way `h2`'s decoder builds it (the `http` crate's checked constructors), and skipped when
//! they refuse it, as `h2` refuses the stream. No panic; and whenever the translation
//! accepts:
//! - the HTTP/1.1 head is whole; when Shardgate's strict request parser (which the pipeline
//!   runs on it) accepts it, it is one request with nothing after it (no smuggled second
//!   request);
//! - with the method and target that came in, and exactly one Host, the `:authority`'s;
//! - with no connection-specific field and no `te`; `transfer-encoding: chunked` exactly when
//!   the body has no length, and then the body framing is chunked;
//! - every other field once per crumb, byte for byte (cookies joined into one).
//!
//! Run: `cargo +nightly fuzz run h2_translate`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_http::{BodyFraming, Limits, empty_headers, parse_request};

const WIDE: Limits = Limits {
    max_request_line: usize::MAX,
    max_head: usize::MAX,
    max_headers: 128,
    max_body: None,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let chunked = flags & 1 == 1;
    let mut parts = data.split(|&b| b == 0xff);
    let (Some(method), Some(path), Some(authority)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let mut uri = http::Uri::builder();
    if !authority.is_empty() {
        let Ok(a) = http::uri::Authority::try_from(authority) else {
            return;
        };
        uri = uri.scheme("https").authority(a);
    }
    let Ok(p) = http::uri::PathAndQuery::try_from(path) else {
        return;
    };
    let Ok(uri) = uri.path_and_query(p).build() else {
        return;
    };
    let mut b = http::Request::builder().method(method.clone()).uri(uri);
    let mut fields = Vec::new();
    while let (Some(n), Some(v)) = (parts.next(), parts.next()) {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(n),
            http::HeaderValue::from_bytes(v),
        ) else {
            return;
        };
        fields.push((name.clone(), value.clone()));
        b = b.header(name, value);
    }
    let Ok(req) = b.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let Ok(head) = shardgate_proxy::translate_h2_request(&parts, chunked) else {
        return;
    };

    let mut slots = empty_headers();
    let parsed = match parse_request(&head, &mut slots, &WIDE) {
        Ok(Some(r)) => r,
        // The pipeline parses the head it is given strictly: what it refuses (a host that is
        // not one, say) is a 400, never forwarded.
        Err(_) => return,
        Ok(None) => panic!(
            "the translation is not a whole head:\n{}",
            String::from_utf8_lossy(&head)
        ),
    };
    assert_eq!(parsed.info.head_len, head.len(), "one head and nothing after it");
    assert_eq!(parsed.method, method.as_str());
    let want_path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    assert_eq!(parsed.path, want_path.as_bytes());
    let hosts: Vec<_> = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .collect();
    assert_eq!(hosts.len(), 1, "one Host");
    if let Some(a) = parts.uri.authority() {
        assert_eq!(hosts[0].value, a.as_str().as_bytes(), ":authority is the Host");
    }
    for h in parsed.headers {
        let n = h.name.to_ascii_lowercase();
        assert!(
            !["connection", "keep-alive", "proxy-connection", "upgrade", "te"].contains(&n.as_str()),
            "{n} forwarded"
        );
        if n == "transfer-encoding" {
            assert!(chunked && h.value == b"chunked", "transfer-encoding only for chunked");
        }
    }
    let framed_chunked = parsed.info.body == BodyFraming::Chunked;
    assert_eq!(framed_chunked, chunked, "body framing as the stream said");
    // Every field that was not dropped arrives once, byte for byte.
    for (name, value) in &fields {
        let n = name.as_str();
        if ["host", "te", "cookie"].contains(&n) {
            continue;
        }
        let copies = parsed
            .headers
            .iter()
            .filter(|h| h.name == n && h.value == value.as_bytes())
            .count();
        let sent = fields.iter().filter(|(n2, v2)| n2 == name && v2 == value).count();
        assert_eq!(copies, sent, "{n}: {value:?}");
    }
    let cookies = fields.iter().filter(|(n, _)| n.as_str() == "cookie").count();
    let joined = parsed.headers.iter().filter(|h| h.name == "cookie").count();
    assert_eq!(joined, usize::from(cookies > 0), "cookie crumbs joined into one");
});
