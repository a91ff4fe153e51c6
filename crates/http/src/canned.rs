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
    let c = Canned::for_status(status);
    let mut sbuf = itoa_buf();
    let status_text = fmt_u64(u64::from(status), &mut sbuf);
    // body: "404 Not Found\n"
    let body_len = status_text.len() + 1 + c.reason.len() + 1;
    let mut lbuf = itoa_buf();
    let len_text = fmt_u64(body_len as u64, &mut lbuf);
    for part in [
        b"HTTP/1.1 ".as_slice(),
        status_text,
        b" ",
        c.reason.as_bytes(),
        b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ",
        len_text,
        b"\r\n",
    ] {
        out.extend_from_slice(part);
    }
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(status_text);
        out.push(b' ');
        out.extend_from_slice(c.reason.as_bytes());
        out.push(b'\n');
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
    fn canned_head_has_no_body() {
        let mut out = Vec::new();
        canned_response(502, true, true, &[], &mut out);
        assert!(out.ends_with(b"Connection: close\r\n\r\n"));
    }
}
