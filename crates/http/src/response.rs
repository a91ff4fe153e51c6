//! Upstream response heads: parse, validate, and decide the body framing
//! (RFC 9112 §6.3). Anything ambiguous becomes a [`ResponseError`] and the
//! client gets a 502 instead of a desynchronised connection.

use crate::error::ResponseError;
use crate::header::{ConnectionTokens, TeVerdict, fold_transfer_encoding, parse_content_length};
use crate::request::{Method, Version};

/// How an upstream response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304, or Content-Length: 0).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// The facts about a response the proxy keeps while streaming its body.
#[derive(Debug, Clone, Copy)]
pub struct ResponseInfo {
    pub head_len: usize,
    pub status: u16,
    pub version: Version,
    pub framing: ResponseFraming,
    /// The upstream connection may be reused after this response.
    pub reusable: bool,
}

/// A parsed response head borrowing the read buffer.
#[derive(Debug)]
pub struct Response<'h, 'b> {
    pub info: ResponseInfo,
    pub reason: &'b [u8],
    pub headers: &'h [httparse::Header<'b>],
    pub connection: ConnectionTokens<'b>,
}

/// Parses a response head at the start of `buf`, for a request made with
/// `method`. `Ok(None)` means incomplete (and within `max_head`).
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    method: Method,
    max_head: usize,
) -> Result<Option<Response<'h, 'b>>, ResponseError> {
    let mut res = httparse::Response::new(headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_head {
                return Err(ResponseError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::HeadTooLarge),
        Err(_) => return Err(ResponseError::Malformed),
    };
    if head_len > max_head {
        return Err(ResponseError::HeadTooLarge);
    }
    let head = &buf[..head_len];
    if memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r') {
        return Err(ResponseError::Malformed);
    }
    let version = match res.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(ResponseError::Malformed),
    };
    let status = res.code.ok_or(ResponseError::Malformed)?;
    if !(100..=999).contains(&status) {
        return Err(ResponseError::Malformed);
    }
    let reason = res.reason.unwrap_or("").as_bytes();

    let mut content_length: Option<u64> = None;
    let mut te: Option<TeVerdict> = None;
    let mut connection = ConnectionTokens::default();
    let headers: &'h [httparse::Header<'b>] = res.headers;
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(h.value).ok_or(ResponseError::BadContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ResponseError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = Some(fold_transfer_encoding(te, h.value));
        } else if name.eq_ignore_ascii_case(b"connection") && !connection.add(h.value) {
            return Err(ResponseError::Malformed);
        }
    }

    let no_body =
        method == Method::Head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        ResponseFraming::None
    } else {
        match (te, content_length) {
            (Some(_), Some(_)) => return Err(ResponseError::Ambiguous),
            // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
            (Some(_), None) if version == Version::Http10 => return Err(ResponseError::Malformed),
            (Some(TeVerdict::Chunked), None) if version == Version::Http11 => {
                ResponseFraming::Chunked
            }
            (Some(TeVerdict::Invalid), None) => return Err(ResponseError::Malformed),
            (Some(_), None) => ResponseFraming::UntilClose,
            (None, Some(0)) => ResponseFraming::None,
            (None, Some(n)) => ResponseFraming::Length(n),
            (None, None) => ResponseFraming::UntilClose,
        }
    };
    let keep_alive = match version {
        Version::Http11 => !connection.close,
        Version::Http10 => connection.keep_alive && !connection.close,
    };
    let reusable = keep_alive && framing != ResponseFraming::UntilClose && status != 101;
    Ok(Some(Response {
        info: ResponseInfo {
            head_len,
            status,
            version,
            framing,
            reusable,
        },
        reason,
        headers,
        connection,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::empty_headers;

    fn parse(input: &[u8], method: Method) -> Result<Option<ResponseInfo>, ResponseError> {
        let mut h = empty_headers();
        parse_response(input, &mut h, method, 8192).map(|r| r.map(|r| r.info))
    }

    #[test]
    fn framing_table() {
        use ResponseFraming::*;
        let g = Method::Get;
        let cases: &[(&[u8], Method, ResponseFraming, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                g,
                Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                g,
                None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                g,
                Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                g,
                UntilClose,
                false,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", g, UntilClose, false),
            (b"HTTP/1.1 204 No Content\r\n\r\n", g, None, true),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                g,
                None,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                Method::Head,
                None,
                true,
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", g, None, true),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                g,
                Length(5),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                g,
                Length(5),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                g,
                Length(5),
                true,
            ),
            (
                b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n",
                g,
                Length(1),
                true,
            ),
        ];
        for (input, method, framing, reusable) in cases {
            let info = parse(input, *method).unwrap().unwrap();
            assert_eq!(info.framing, *framing, "{}", String::from_utf8_lossy(input));
            assert_eq!(
                info.reusable,
                *reusable,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn refuses_ambiguous_responses() {
        let cases: &[(&[u8], ResponseError)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                ResponseError::Ambiguous,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                ResponseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ResponseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
                ResponseError::BadContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                ResponseError::Malformed,
            ),
            (
                b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n",
                ResponseError::Malformed,
            ),
            (b"HTTP/1.1 2000 OK\r\n\r\n", ResponseError::Malformed),
            (b"HTTP/2 200 OK\r\n\r\n", ResponseError::Malformed),
            (b"garbage\r\n\r\n", ResponseError::Malformed),
            (
                b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
                ResponseError::Malformed,
            ),
            (
                b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
                ResponseError::Malformed,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input, Method::Get).err(),
                Some(*want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partial_and_oversized() {
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", Method::Get)
                .unwrap()
                .is_none()
        );
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(
            parse(&big, Method::Get).err(),
            Some(ResponseError::HeadTooLarge)
        );
    }
}
