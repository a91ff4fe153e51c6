//! One error story for the data path: what failed, on which side, whether
//! the request may be retried, and (in exactly one place) the status the
//! client sees.

use shardgate_http::{ChunkedError, ParseError, ResponseError};
use std::fmt;
use std::io;

/// What the operating system said about a failed socket operation: kept
/// (it is `Copy`, unlike `io::Error`) so the log line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IoCause {
    pub kind: io::ErrorKind,
    /// The errno, when the failure came from a system call.
    pub errno: Option<i32>,
}

impl From<&io::Error> for IoCause {
    fn from(e: &io::Error) -> IoCause {
        IoCause {
            kind: e.kind(),
            errno: e.raw_os_error(),
        }
    }
}

impl fmt::Display for IoCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            // "Connection refused (os error 111)"
            Some(n) => write!(f, "{}", io::Error::from_raw_os_error(n)),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// Which side of the proxy a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The request head broke a rule.
    BadRequest(ParseError),
    /// The chunked request body broke a rule.
    BadRequestBody(ChunkedError),
    /// The client was too slow sending its head.
    ClientHeadTimeout,
    /// The client was too slow sending its body, or stopped reading.
    ClientTimeout,
    /// The client went away (reset, EOF mid-request).
    ClientGone,
    /// The upstream refused or could not be reached.
    ConnectFailed,
    /// Connecting to the upstream took too long.
    ConnectTimeout,
    /// The upstream took too long to answer or stopped sending.
    UpstreamTimeout,
    /// The upstream closed or reset before a full response head.
    UpstreamClosed,
    /// The upstream's response broke a rule.
    BadResponse(ResponseError),
    /// The upstream's chunked body broke a rule.
    BadResponseBody(ChunkedError),
    /// The group's circuit breaker is open (or at its concurrency limit).
    BreakerOpen,
    /// Every connection to the endpoint is in use and the wait for one
    /// timed out (or the queue was full).
    PoolExhausted,
}

/// A failure on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProxyError {
    pub kind: ErrorKind,
    /// Retrying on another connection cannot repeat an effect upstream
    /// (nothing reached it, or what did is known to be unprocessed).
    pub retry_safe: bool,
    /// The socket error behind it, if one was.
    pub io: Option<IoCause>,
}

impl ProxyError {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        ProxyError {
            kind,
            retry_safe: false,
            io: None,
        }
    }

    /// The same failure, with the socket error that caused it.
    pub(crate) fn because(self, io: Option<IoCause>) -> Self {
        ProxyError { io, ..self }
    }

    pub(crate) fn side(&self) -> Side {
        match self.kind {
            ErrorKind::BadRequest(_)
            | ErrorKind::BadRequestBody(_)
            | ErrorKind::ClientHeadTimeout
            | ErrorKind::ClientTimeout
            | ErrorKind::ClientGone => Side::Client,
            _ => Side::Upstream,
        }
    }

    /// The status the client receives, or `None` when no response can or
    /// should be written (the client is gone or stopped reading).
    pub(crate) fn status(&self) -> Option<u16> {
        Some(match self.kind {
            ErrorKind::BadRequest(p) => p.status(),
            ErrorKind::BadRequestBody(ChunkedError::BodyTooLarge) => 413,
            ErrorKind::BadRequestBody(_) => 400,
            ErrorKind::ClientHeadTimeout => 408,
            // The body's deadline: the client may still read the answer.
            ErrorKind::ClientTimeout => 408,
            ErrorKind::ClientGone => return None,
            ErrorKind::ConnectFailed
            | ErrorKind::UpstreamClosed
            | ErrorKind::BadResponse(_)
            | ErrorKind::BadResponseBody(_) => 502,
            ErrorKind::ConnectTimeout | ErrorKind::UpstreamTimeout => 504,
            ErrorKind::BreakerOpen | ErrorKind::PoolExhausted => 503,
        })
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)?;
        match self.io {
            Some(io) => write!(f, " ({io})"),
            None => Ok(()),
        }
    }
}

impl ErrorKind {
    /// A short name of the failure (a span's `error.type`).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ErrorKind::BadRequest(_) | ErrorKind::BadRequestBody(_) => "bad_request",
            ErrorKind::ClientHeadTimeout | ErrorKind::ClientTimeout => "client_timeout",
            ErrorKind::ClientGone => "client_gone",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamTimeout => "timeout",
            ErrorKind::UpstreamClosed => "upstream_closed",
            ErrorKind::BadResponse(_) | ErrorKind::BadResponseBody(_) => "bad_response",
            ErrorKind::BreakerOpen => "breaker_open",
            ErrorKind::PoolExhausted => "pool_exhausted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorKind::BadRequest(p) => write!(f, "bad request: {p}"),
            ErrorKind::BadRequestBody(c) => write!(f, "bad request body: {c}"),
            ErrorKind::ClientHeadTimeout => f.write_str("client sent no complete head in time"),
            ErrorKind::ClientTimeout => f.write_str("client too slow"),
            ErrorKind::ClientGone => f.write_str("client closed the connection"),
            ErrorKind::ConnectFailed => f.write_str("upstream connect failed"),
            ErrorKind::ConnectTimeout => f.write_str("upstream connect timed out"),
            ErrorKind::UpstreamTimeout => f.write_str("upstream response timed out"),
            ErrorKind::UpstreamClosed => f.write_str("upstream closed before responding"),
            ErrorKind::BadResponse(r) => write!(f, "{r}"),
            ErrorKind::BadResponseBody(c) => write!(f, "bad upstream body: {c}"),
            ErrorKind::BreakerOpen => f.write_str("circuit breaker open"),
            ErrorKind::PoolExhausted => f.write_str("no upstream connection free in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        use ErrorKind::*;
        let cases = [
            (BadRequest(ParseError::HeadTooLarge), Some(431)),
            (BadRequest(ParseError::RequestLineTooLong), Some(414)),
            (BadRequestBody(ChunkedError::BadSize), Some(400)),
            (BadRequestBody(ChunkedError::BodyTooLarge), Some(413)),
            (ClientHeadTimeout, Some(408)),
            (ClientGone, None),
            (ConnectFailed, Some(502)),
            (ConnectTimeout, Some(504)),
            (UpstreamTimeout, Some(504)),
            (UpstreamClosed, Some(502)),
            (BadResponse(ResponseError::Ambiguous), Some(502)),
        ];
        for (kind, status) in cases {
            assert_eq!(ProxyError::new(kind).status(), status, "{kind:?}");
        }
        assert_eq!(ProxyError::new(ClientHeadTimeout).side(), Side::Client);
        assert_eq!(ProxyError::new(ConnectFailed).side(), Side::Upstream);
    }

    #[test]
    fn the_socket_error_reaches_the_message() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let e = ProxyError::new(ErrorKind::ConnectFailed).because(Some(IoCause::from(&refused)));
        let text = e.to_string();
        assert!(
            text.starts_with("upstream connect failed (") && text.contains("os error 111"),
            "{text}"
        );
        assert_eq!(
            ProxyError::new(ErrorKind::ConnectFailed).to_string(),
            "upstream connect failed"
        );
    }
}
