//! gRPC at the edge: a request is gRPC by its content type; an answer the
//! gateway makes for one (a 401 from an API-key filter, a 429, a 503 from
//! an open breaker, ...) goes back as a Trailers-Only response, the form a
//! gRPC client reads a status from; `grpc-timeout` caps the wait for the
//! upstream's answer.

use std::time::Duration;

/// Whether the request's content type is gRPC's (`application/grpc`,
/// with or without a `+format`).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The gRPC status code for a gateway answer's HTTP status.
pub(crate) fn status_for(http: u16) -> u8 {
    match http {
        401 => 16,                               // UNAUTHENTICATED
        403 => 7,                                // PERMISSION_DENIED
        404 => 12,                               // UNIMPLEMENTED
        429 => 8,                                // RESOURCE_EXHAUSTED
        502 | 503 => 14,                         // UNAVAILABLE
        504 => 4,                                // DEADLINE_EXCEEDED
        400 | 405 | 411 | 413 | 414 | 431 => 13, // INTERNAL: the request was malformed
        _ => 2,                                  // UNKNOWN
    }
}

/// A Trailers-Only response: status 200, the gRPC content type, and
/// `grpc-status` and `grpc-message` in the one HEADERS frame that ends the
/// stream.
pub(crate) fn trailers_only(http: u16, message: &str) -> http::Response<()> {
    let mut r = http::Response::new(());
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-status",
        http::HeaderValue::from(u16::from(status_for(http))),
    );
    if let Ok(v) = http::HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    r
}

/// The message of a gateway answer: its short text body when it came
/// whole, else the status's reason phrase.
pub(crate) fn message(reason: Option<&str>, body: &[u8], length: Option<u64>) -> String {
    if let Some(n) = length
        && n > 0
        && n <= 512
        && body.len() as u64 >= n
        && let Ok(text) = std::str::from_utf8(&body[..n as usize])
    {
        return text.trim().to_string();
    }
    reason.unwrap_or("").to_string()
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as
/// `%XX` (gRPC over HTTP/2, "Responses").
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n).
pub(crate) fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_is_known_by_its_content_type() {
        let mut h = http::HeaderMap::new();
        for (v, yes) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/gRPC", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert("content-type", http::HeaderValue::from_static(v));
            assert_eq!(is_grpc(&h), yes, "{v}");
        }
    }

    #[test]
    fn gateway_answers_map_to_grpc_statuses() {
        let table = [
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 8),
            (502, 14),
            (503, 14),
            (504, 4),
        ];
        for (http, grpc) in table {
            assert_eq!(status_for(http), grpc, "{http}");
        }
        let r = trailers_only(429, "rate limited: 100%\n");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["grpc-message"], "rate limited: 100%25%0A");
        assert_eq!(r.headers()["content-type"], "application/grpc");
    }

    #[test]
    fn the_message_is_the_short_body_else_the_reason() {
        assert_eq!(
            message(Some("Unauthorized"), b"missing API key\n", Some(16)),
            "missing API key"
        );
        assert_eq!(
            message(Some("Unauthorized"), b"missing", Some(16)),
            "Unauthorized"
        );
        assert_eq!(message(Some("Bad Gateway"), b"", None), "Bad Gateway");
    }

    #[test]
    fn timeouts_parse_by_unit() {
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"10u"), Some(Duration::from_micros(10)));
        for bad in [&b""[..], b"S", b"5", b"5s", b"123456789S", b"-1S", b"1.5S"] {
            assert_eq!(
                parse_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
