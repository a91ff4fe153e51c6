//! The fixed set of responses the gateway writes itself.

use crate::encode::{fmt_u64, itoa_buf};

/// A response the gateway answers with on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canned {
    pub status: u16,
    pub reason: &'static str,
}

impl Canned {
    /// The canned response for `status`.
    pub fn for_status(status: u16) -> Canned {
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            301 => "Moved Permanently",
            302 => "Found",
            307 => "Temporary Redirect",
            308 => "Permanent Redirect",
            401 => "Unauthorized",
            403 => "Forbidden",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            414 => "URI Too Long",
            417 => "Expectation Failed",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            505 => "HTTP Version Not Supported",
            _ => "Error",
        };
        Canned { status, reason }
    }
}

/// Appends a complete canned response for `status` to `out`: a short text
/// body, `Content-Length`, `Connection: close` when `close`, and any `extra`
/// fields (e.g. `Allow` on a 405). A `head` request gets no body.
pub fn canned_response(
    status: u16,
    close: bool,
    head: bool,
    extra: &[(&str, &[u8])],
    out: &mut Vec<u8>,
) {
    let mut lines = [0u8; 512];
    let mut at = 0;
    for (name, value) in extra {
        for part in [name.as_bytes(), b": ", value, b"\r\n"] {
            let n = part.len().min(lines.len() - at);
            lines[at..at + n].copy_from_slice(&part[..n]);
            at += n;
        }
    }
    gateway_response(
        status,
        GatewayResponse {
            close,
            head,
            lines: &lines[..at],
            body: None,
        },
        out,
    );
}

/// The parts of a response the gateway writes itself beyond its status.
#[derive(Debug, Clone, Copy)]
pub struct GatewayResponse<'a> {
    /// Say `Connection: close`.
    pub close: bool,
    /// Answering a HEAD request: no body.
    pub head: bool,
    /// Complete header lines (`Name: value\r\n` each) to include.
    pub lines: &'a [u8],
    /// `(content type, body)`; `None` for the canned text (`404 Not Found\n`).
    pub body: Option<(&'a [u8], &'a [u8])>,
}

/// Appends a complete response for `status` to `out`. `204` and `304` get
/// neither a body nor `Content-Length`.
pub fn gateway_response(status: u16, r: GatewayResponse<'_>, out: &mut Vec<u8>) {
    let c = Canned::for_status(status);
    let mut sbuf = itoa_buf();
    let status_text = fmt_u64(u64::from(status), &mut sbuf);
    for part in [
        b"HTTP/1.1 ".as_slice(),
        status_text,
        b" ",
        c.reason.as_bytes(),
        b"\r\n",
    ] {
        out.extend_from_slice(part);
    }
    let bodiless = matches!(status, 204 | 304);
    if !bodiless {
        let (content_type, body_len) = match r.body {
            Some((t, b)) => (t, b.len()),
            // "404 Not Found\n"
            None => (
                b"text/plain; charset=utf-8".as_slice(),
                status_text.len() + 1 + c.reason.len() + 1,
            ),
        };
        let mut lbuf = itoa_buf();
        for part in [
            b"Content-Type: ".as_slice(),
            content_type,
            b"\r\nContent-Length: ",
            fmt_u64(body_len as u64, &mut lbuf),
            b"\r\n",
        ] {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(r.lines);
    if r.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if r.head || bodiless {
        return;
    }
    match r.body {
        Some((_, body)) => out.extend_from_slice(body),
        None => {
            out.extend_from_slice(status_text);
            out.push(b' ');
            out.extend_from_slice(c.reason.as_bytes());
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_is_well_framed() {
        let mut out = Vec::new();
        canned_response(405, false, false, &[("Allow", b"GET, HEAD")], &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 23\r\nAllow: GET, HEAD\r\n\r\n405 Method Not Allowed\n"
        );
    }

    #[test]
    fn gateway_responses_carry_lines_and_bodies() {
        let mut out = Vec::new();
        let r = GatewayResponse {
            close: false,
            head: false,
            lines: b"Location: /new\r\n",
            body: Some((b"text/html", b"<a>x</a>")),
        };
        gateway_response(301, r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 301 Moved Permanently\r\nContent-Type: text/html\r\n\
             Content-Length: 8\r\nLocation: /new\r\n\r\n<a>x</a>"
        );
        let mut out = Vec::new();
        gateway_response(204, GatewayResponse { close: true, ..r }, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 204 No Content\r\nLocation: /new\r\nConnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        let head = GatewayResponse {
            head: true,
            body: None,
            ..r
        };
        gateway_response(429, head, &mut out);
        assert!(out.ends_with(b"Content-Length: 22\r\nLocation: /new\r\n\r\n"));
    }

    #[test]
    fn canned_head_has_no_body() {
        let mut out = Vec::new();
        canned_response(502, true, true, &[], &mut out);
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
    }
}
