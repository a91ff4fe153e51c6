//! The strict translation of an HTTP/2 request head into HTTP/1.1 (RFC
//! 9113 §8): whatever a downgrade could abuse is refused, never copied.
//! Public to the crate for the fuzz target.

/// The request's `content-length`: `Err` when it is not one number.
pub(crate) fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        let n: u64 = std::str::from_utf8(v.as_bytes())
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or(())?;
        if found.is_some_and(|f| f != n) {
            return Err(());
        }
        found = Some(n);
    }
    Ok(found)
}

/// Fields that are the connection's in HTTP/1.1 and must not appear in an
/// HTTP/2 request (RFC 9113 §8.2.2).
pub(super) const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Writes the HTTP/1.1 head of an HTTP/2 request, or says why it is
/// malformed (RFC 9113 §8): connection-specific fields, `te` other than
/// `trailers`, names that are not lowercase tokens, values with CR, LF or
/// NUL, a `:path` that is not origin-form (or `*` for OPTIONS).
pub(crate) fn translate(
    parts: &http::request::Parts,
    framing: &InBody,
    out: &mut Vec<u8>,
) -> Result<(), &'static str> {
    let method = parts.method.as_str();
    if parts.method == http::Method::CONNECT {
        return Err("CONNECT is not proxied");
    }
    let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let origin_form = path.starts_with('/');
    let asterisk = path == "*" && parts.method == http::Method::OPTIONS;
    if !(origin_form || asterisk) {
        return Err(":path is not origin-form");
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(":path has spaces or control characters");
    }
    let authority = parts.uri.authority().map(|a| a.as_str());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let value_ok = |v: &[u8]| !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0);
    match authority {
        Some(a) => {
            if !value_ok(a.as_bytes()) {
                return Err(":authority has CR, LF or NUL");
            }
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None if parts.headers.contains_key(http::header::HOST) => {}
        None => return Err("no :authority and no host"),
    }
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        let v = value.as_bytes();
        if n.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("an uppercase field name");
        }
        if CONNECTION_SPECIFIC.contains(&n) {
            return Err("a connection-specific field");
        }
        if n == "te" && !v.eq_ignore_ascii_case(b"trailers") {
            return Err("te other than trailers");
        }
        if !value_ok(v) {
            return Err("a field value with CR, LF or NUL");
        }
        // RFC 9113 §8.2.1: malformed (HTTP/1.1 would trim it, so the two
        // hops would see different values).
        if matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t')) {
            return Err("a field value with leading or trailing whitespace");
        }
        // The :authority is the host; a host field beside it is dropped.
        if n == "host" && authority.is_some() {
            continue;
        }
        // Cookie crumbs are joined into one field (RFC 9113 §8.2.3).
        if n == "cookie" {
            cookies.push(v);
            continue;
        }
        if n == "te" {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if !cookies.is_empty() {
        out.extend_from_slice(b"cookie: ");
        for (i, c) in cookies.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(c);
        }
        out.extend_from_slice(b"\r\n");
    }
    if matches!(framing, InBody::Chunked) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// How the request body reaches the pipeline.
pub(crate) enum InBody {
    None,
    /// As the DATA frames carry it, which must add up to the length.
    Length(u64),
    /// Chunked (the client gave no length).
    Chunked,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, fields: &[(&str, &[u8])]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in fields {
            b = b.header(*n, http::HeaderValue::from_bytes(v).unwrap());
        }
        b.body(()).unwrap().into_parts().0
    }

    fn head(p: &http::request::Parts, framing: InBody) -> Result<String, &'static str> {
        let mut out = Vec::new();
        translate(p, &framing, &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_request_becomes_a_strict_http1_head() {
        let p = parts(
            "POST",
            "https://api.test/orders?id=7",
            &[
                ("cookie", b"a=1"),
                ("x-id", b"42"),
                ("cookie", b"b=2"),
                ("te", b"trailers"),
                ("host", b"other.test"),
            ],
        );
        let h = head(&p, InBody::Chunked).unwrap();
        assert!(
            h.starts_with("POST /orders?id=7 HTTP/1.1\r\nhost: api.test\r\n"),
            "{h}"
        );
        assert!(h.contains("cookie: a=1; b=2\r\n"), "crumbs joined: {h}");
        assert!(h.contains("x-id: 42\r\n"));
        assert!(!h.contains("other.test"), ":authority wins over host");
        assert!(!h.contains("te:"), "te: trailers is the hop's");
        assert!(h.ends_with("transfer-encoding: chunked\r\n\r\n"));
        let p = parts("OPTIONS", "*", &[("host", b"a")]);
        assert!(
            head(&p, InBody::None)
                .unwrap()
                .starts_with("OPTIONS * HTTP/1.1\r\n")
        );
    }

    #[test]
    fn downgrade_attacks_are_refused() {
        let ok = "https://a.test/x";
        type Fields<'a> = &'a [(&'a str, &'a [u8])];
        let cases: &[(&str, &str, Fields<'_>, &str)] = &[
            (
                "GET",
                ok,
                &[("connection", b"close")],
                "connection-specific",
            ),
            ("GET", ok, &[("keep-alive", b"1")], "connection-specific"),
            (
                "GET",
                ok,
                &[("proxy-connection", b"x")],
                "connection-specific",
            ),
            (
                "GET",
                ok,
                &[("upgrade", b"websocket")],
                "connection-specific",
            ),
            (
                "POST",
                ok,
                &[("transfer-encoding", b"chunked")],
                "connection-specific",
            ),
            ("GET", ok, &[("te", b"gzip")], "te other than trailers"),
            ("CONNECT", "a.test:443", &[], "CONNECT"),
            (
                "GET",
                ok,
                &[("x-a", b"\t=2")],
                "leading or trailing whitespace",
            ),
            (
                "GET",
                ok,
                &[("x-a", b"2 ")],
                "leading or trailing whitespace",
            ),
        ];
        for (method, uri, fields, why) in cases {
            let p = parts(method, uri, fields);
            let e = head(&p, InBody::None).expect_err(why);
            assert!(e.contains(why), "{method} {uri} {fields:?}: {e}");
        }
        // CR, LF and NUL in values, and uppercase names, never get this far: h2's HPACK
        // decoder builds fields with the checked constructors, which refuse them (a
        // malformed request; translate checks again).
        for bad in [&b"1\r\nx-b: 2"[..], b"1\nx", b"1\0"] {
            assert!(http::HeaderValue::from_bytes(bad).is_err());
        }
        assert!(http::HeaderName::from_lowercase(b"X-Upper").is_err());
        // Nor does a :path with a space: h2 builds the URI with the checked parser.
        assert!("/x y".parse::<http::uri::PathAndQuery>().is_err());
    }

    #[test]
    fn content_length_must_be_one_number() {
        let p = |v: &[&[u8]]| {
            let mut h = http::HeaderMap::new();
            for x in v {
                h.append("content-length", http::HeaderValue::from_bytes(x).unwrap());
            }
            content_length(&h)
        };
        assert_eq!(p(&[]), Ok(None));
        assert_eq!(p(&[b"12"]), Ok(Some(12)));
        assert_eq!(p(&[b"12", b"12"]), Ok(Some(12)));
        assert_eq!(p(&[b"12", b"13"]), Err(()));
        assert_eq!(p(&[b"1 2"]), Err(()));
        assert_eq!(p(&[b"-1"]), Err(()));
    }
}
