//! Request trailers: the fields that may follow a chunked body upstream.
//!
//! An origin that merges trailer fields into the head (several frameworks
//! do) would otherwise take `X-Forwarded-For`, an identity header a filter
//! set, or `Authorization` from a trailer the gateway never looked at.

use crate::encode::owned_request_field;
use crate::header::is_hop_by_hop;

/// Whether `name` may travel in a request trailer at all: not a field the
/// gateway owns in the head, not hop-by-hop, and none of the fields RFC 9110
/// §6.5.1 keeps out of trailers (framing, routing, request modifiers,
/// authentication, content metadata).
pub fn trailer_field_allowed(name: &[u8]) -> bool {
    const NEVER: [&[u8]; 20] = [
        b"authorization",
        b"proxy-authorization",
        b"cookie",
        b"set-cookie",
        b"cache-control",
        b"max-forwards",
        b"range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
        b"content-encoding",
        b"content-type",
        b"content-range",
        b"trailer",
        b"x-request-id",
        b"x-consumer",
        b"traceparent",
        b"tracestate",
    ];
    !owned_request_field(name)
        && !is_hop_by_hop(name)
        && !NEVER.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Appends the trailer section `section` (its fields and the final empty
/// line, as [`crate::ChunkedDecoder`] validated them) to `out`, leaving out
/// each field for which `drop` holds. Returns how many were left out.
pub fn filter_trailers(section: &[u8], drop: impl Fn(&[u8]) -> bool, out: &mut Vec<u8>) -> usize {
    let mut dropped = 0;
    let mut rest = section;
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let line = &rest[..end + 2];
        rest = &rest[end + 2..];
        if end == 0 {
            break;
        }
        let name = &line[..line.iter().position(|&b| b == b':').unwrap_or(end)];
        if drop(name) {
            dropped += 1;
        } else {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_and_forbidden_fields_are_left_out() {
        let section = b"X-Checksum: abc\r\nX-Forwarded-For: 1.2.3.4\r\nauthorization: x\r\nX-Consumer: admin\r\nContent-Length: 5\r\nExpires: 0\r\n\r\n";
        let mut out = Vec::new();
        let n = filter_trailers(section, |n| !trailer_field_allowed(n), &mut out);
        assert_eq!(n, 4);
        assert_eq!(out, b"X-Checksum: abc\r\nExpires: 0\r\n\r\n");
    }

    #[test]
    fn an_empty_section_stays_one_empty_line() {
        let mut out = Vec::new();
        assert_eq!(filter_trailers(b"\r\n", |_| true, &mut out), 0);
        assert_eq!(out, b"\r\n");
        let mut out = Vec::new();
        assert_eq!(filter_trailers(b"A: 1\r\n\r\n", |_| true, &mut out), 1);
        assert_eq!(out, b"\r\n");
    }
}
