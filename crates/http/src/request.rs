//! Request heads: parse with httparse, then apply the strict rules a proxy
//! needs before it may forward anything.

use crate::error::ParseError;
use crate::header::{ConnectionTokens, RequestTe, parse_content_length, tokens_contain};

/// Bounds on what a client may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line, in bytes (414 beyond).
    pub max_request_line: usize,
    /// Largest head (request line + fields), in bytes (431 beyond).
    pub max_head: usize,
    /// Most header fields (431 beyond); at most [`crate::MAX_HEADERS_CAP`].
    pub max_headers: usize,
    /// Largest request body; `None` for no limit (413 beyond).
    pub max_body: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 * 1024,
            max_head: 16 * 1024,
            max_headers: 100,
            max_body: None,
        }
    }
}

/// The HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

/// Request methods the gateway treats specially; the rest are `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Other,
}

impl Method {
    fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }

    /// Idempotent per RFC 9110 §9.2.2 (safe methods plus PUT and DELETE).
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        )
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// The form of the request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query`: the authority replaces Host.
    Absolute,
    /// `*` (OPTIONS only).
    Asterisk,
}

/// The facts about a request the proxy keeps after its head is forwarded.
/// Plain data with no borrows, so it can live across awaits cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    pub method: Method,
    pub version: Version,
    pub body: BodyFraming,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` field (not `h2c`).
    pub upgrade: bool,
    pub target: Target,
}

/// A parsed request head borrowing the read buffer.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    pub info: RequestInfo,
    /// The method as sent.
    pub method: &'b str,
    /// The path and query to forward (for absolute-form, the part after the
    /// authority, `/` when empty).
    pub path: &'b [u8],
    /// The authority to route on and forward as Host: the absolute-form
    /// authority if present, else the Host field (empty when HTTP/1.0 sent none).
    pub host: &'b [u8],
    /// The header fields, as parsed.
    pub headers: &'h [httparse::Header<'b>],
    /// Options of the `Connection` fields.
    pub connection: ConnectionTokens<'b>,
    /// The value of the `Upgrade` field when upgrading.
    pub upgrade: &'b [u8],
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is not complete yet and is still within
/// the limits; the caller reads more and calls again.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &Limits,
) -> Result<Option<Request<'h, 'b>>, ParseError> {
    let max_headers = limits.max_headers.min(headers.len());
    let headers = &mut headers[..max_headers];
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, limits)?;
            return Ok(None);
        }
        Err(e) => return Err(map_httparse_error(e, buf, limits)),
    };
    let head = &buf[..head_len];
    if head_len > limits.max_head {
        return Err(if line_len(head) > limits.max_request_line {
            ParseError::RequestLineTooLong
        } else {
            ParseError::HeadTooLarge
        });
    }
    if line_len(head) > limits.max_request_line {
        return Err(ParseError::RequestLineTooLong);
    }
    if has_bare_lf(head) {
        return Err(ParseError::BareLf);
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(ParseError::UnsupportedVersion),
    };
    let method_str = req.method.ok_or(ParseError::BadRequestLine)?;
    let raw_target = req.path.ok_or(ParseError::BadRequestLine)?.as_bytes();
    let method = Method::from_bytes(method_str.as_bytes());
    if method_str == "CONNECT" {
        return Err(ParseError::MethodNotImplemented);
    }
    let (target, path, authority) = split_target(raw_target, method)?;

    let mut host: Option<&'b [u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut te: Option<RequestTe> = None;
    let mut connection = ConnectionTokens::default();
    let mut expect_continue = false;
    let mut upgrade_value: &'b [u8] = b"";
    let headers: &'h [httparse::Header<'b>] = req.headers;
    for h in headers {
        let name = h.name.as_bytes();
        // Value bytes were checked by httparse (HTAB, SP, VCHAR, obs-text
        // only; see the `httparse_value_bytes_match_rfc_field_value` test).
        let value = h.value;
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Err(ParseError::BadHost);
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value).ok_or(ParseError::BadContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ParseError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.get_or_insert_default().add(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            if !connection.add(value) {
                return Err(ParseError::BadHeaderValue);
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if version == Version::Http11 {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(ParseError::UnsupportedExpectation);
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_value = value;
        }
    }

    let host = match (host, authority) {
        (Some(h), _) if !valid_authority(h) => return Err(ParseError::BadHost),
        // RFC 9112 §3.2: every HTTP/1.1 request carries Host, absolute-form too.
        (None, _) if version == Version::Http11 => return Err(ParseError::BadHost),
        (_, Some(a)) => a,
        (Some(h), None) => h,
        (None, None) => b"",
    };

    let body = match (te, content_length) {
        (Some(_), Some(_)) => return Err(ParseError::ContentLengthWithTransferEncoding),
        (Some(_), None) if version == Version::Http10 => {
            return Err(ParseError::BadTransferEncoding);
        }
        (Some(te), None) => {
            te.verdict()?;
            BodyFraming::Chunked
        }
        (None, Some(0)) | (None, None) => BodyFraming::None,
        (None, Some(n)) => {
            if limits.max_body.is_some_and(|max| n > max) {
                return Err(ParseError::BodyTooLarge);
            }
            BodyFraming::Length(n)
        }
    };

    let keep_alive = match version {
        Version::Http11 => !connection.close,
        Version::Http10 => connection.keep_alive && !connection.close,
    };
    let upgrade = connection.upgrade
        && version == Version::Http11
        && !upgrade_value.is_empty()
        && !tokens_contain(upgrade_value, b"h2c");
    if !upgrade {
        upgrade_value = b"";
    }

    Ok(Some(Request {
        info: RequestInfo {
            head_len,
            method,
            version,
            body,
            keep_alive,
            expect_continue: expect_continue && body != BodyFraming::None,
            upgrade,
            target,
        },
        method: method_str,
        path,
        host,
        headers,
        connection,
        upgrade: upgrade_value,
    }))
}

/// While a head is incomplete, enforce the limits on what has arrived.
fn check_partial(buf: &[u8], limits: &Limits) -> Result<(), ParseError> {
    match memchr::memchr(b'\n', buf) {
        None if buf.len() > limits.max_request_line => Err(ParseError::RequestLineTooLong),
        Some(i) if i > limits.max_request_line => Err(ParseError::RequestLineTooLong),
        _ if buf.len() > limits.max_head => Err(ParseError::HeadTooLarge),
        _ => Ok(()),
    }
}

fn map_httparse_error(e: httparse::Error, buf: &[u8], limits: &Limits) -> ParseError {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => ParseError::TooManyHeaders,
        E::HeaderName => {
            // A line starting with whitespace after the first field is obs-fold.
            if has_obs_fold(buf) {
                ParseError::ObsFold
            } else {
                ParseError::BadHeaderName
            }
        }
        E::HeaderValue => ParseError::BadHeaderValue,
        E::Version => {
            if buf.len() > limits.max_request_line && memchr::memchr(b'\n', buf).is_none() {
                ParseError::RequestLineTooLong
            } else if looks_like_other_version(buf) {
                ParseError::UnsupportedVersion
            } else {
                ParseError::BadRequestLine
            }
        }
        E::NewLine => {
            if has_obs_fold(buf) {
                ParseError::ObsFold
            } else {
                ParseError::BadRequestLine
            }
        }
        _ => ParseError::BadRequestLine,
    }
}

/// A well-formed request line (`METHOD SP target SP HTTP/x.y`) whose version
/// is one we do not speak earns 505; anything else malformed earns 400.
fn looks_like_other_version(buf: &[u8]) -> bool {
    let line = &buf[..memchr::memchr(b'\n', buf).unwrap_or(buf.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    version.starts_with(b"HTTP/")
}

fn has_obs_fold(buf: &[u8]) -> bool {
    buf.windows(2)
        .skip(1)
        .any(|w| w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t'))
}

fn line_len(head: &[u8]) -> usize {
    memchr::memchr(b'\n', head).unwrap_or(head.len())
}

/// True when some LF is not preceded by CR (leading blank lines included).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// A target's form, the path to forward, and the absolute-form authority.
type SplitTarget<'a> = (Target, &'a [u8], Option<&'a [u8]>);

/// Splits the request target into its form, the path to forward, and the
/// authority when absolute-form.
fn split_target(raw: &[u8], method: Method) -> Result<SplitTarget<'_>, ParseError> {
    match raw.first() {
        Some(b'/') => Ok((Target::Origin, raw, None)),
        Some(b'*') if raw.len() == 1 && method == Method::Options => {
            Ok((Target::Asterisk, raw, None))
        }
        _ => {
            let rest = strip_prefix_ci(raw, b"http://")
                .or_else(|| strip_prefix_ci(raw, b"https://"))
                .ok_or(ParseError::BadRequestLine)?;
            let end = rest
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            if authority.is_empty() || !valid_authority(authority) || authority.contains(&b'@') {
                return Err(ParseError::BadRequestLine);
            }
            let path: &[u8] = if path.is_empty() { b"/" } else { path };
            if path[0] != b'/' {
                // `http://host?x` forwards as `/?x`; rare enough to refuse.
                return Err(ParseError::BadRequestLine);
            }
            Ok((Target::Absolute, path, Some(authority)))
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2): reg-name / IPv4 / IP-literal.
/// The empty value is allowed (a request whose target has no authority).
fn valid_authority(a: &[u8]) -> bool {
    if a.is_empty() {
        return true;
    }
    let (host, port) = if a[0] == b'[' {
        let Some(close) = a.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &a[1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        let rest = &a[close + 1..];
        match rest.split_first() {
            None => (&a[..=close], None),
            Some((b':', port)) => (&a[..=close], Some(port)),
            _ => return false,
        }
    } else {
        match a.iter().rposition(|&b| b == b':') {
            Some(i) => (&a[..i], Some(&a[i + 1..])),
            None => (a, None),
        }
    };
    if let Some(port) = port
        && (port.len() > 5 || !port.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    host.first() == Some(&b'[')
        || (!host.is_empty()
            && host.iter().all(|&b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            }))
}

#[cfg(test)]
mod tests;
