//! What can be wrong with a message, and the status each fault earns.

use std::fmt;

/// A request the gateway refuses to forward. Every variant closes the client
/// connection after the error response: once framing is in doubt nothing
/// later on the connection can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The request line is malformed (method, target or version).
    BadRequestLine,
    /// The request line is longer than the configured limit (414).
    RequestLineTooLong,
    /// The head is larger than the configured limit (431).
    HeadTooLarge,
    /// More header fields than the configured limit (431).
    TooManyHeaders,
    /// A header name has a byte outside `tchar`, or whitespace before the colon.
    BadHeaderName,
    /// A header value carries NUL, CR or another control byte.
    BadHeaderValue,
    /// A continuation line (obs-fold).
    ObsFold,
    /// A line ended with a bare LF.
    BareLf,
    /// HTTP/1.1 without Host, or Host repeated, or an invalid Host value.
    BadHost,
    /// Content-Length is not a decimal number, overflows, or copies differ.
    BadContentLength,
    /// Both Content-Length and Transfer-Encoding.
    ContentLengthWithTransferEncoding,
    /// A request Transfer-Encoding that is not exactly `chunked`: an empty list
    /// element (`chunked,`), `chunked` twice or with parameters, a non-token,
    /// or any Transfer-Encoding on HTTP/1.0.
    BadTransferEncoding,
    /// A request transfer coding other than `chunked` (`gzip, chunked`): the
    /// gateway implements only chunked (501, RFC 9112 §6.1).
    TransferCodingNotImplemented,
    /// The declared Content-Length is over the body limit (413).
    BodyTooLarge,
    /// An `Expect` other than `100-continue` (417).
    UnsupportedExpectation,
    /// The HTTP version is not 1.0 or 1.1 (505).
    UnsupportedVersion,
    /// A method the gateway does not proxy (CONNECT) (501).
    MethodNotImplemented,
}

impl ParseError {
    /// The status code the client receives.
    pub fn status(self) -> u16 {
        match self {
            ParseError::RequestLineTooLong => 414,
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            ParseError::BodyTooLarge => 413,
            ParseError::UnsupportedExpectation => 417,
            ParseError::UnsupportedVersion => 505,
            ParseError::MethodNotImplemented | ParseError::TransferCodingNotImplemented => 501,
            _ => 400,
        }
    }

    /// A short reason for logs.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::BadRequestLine => "malformed request line",
            ParseError::RequestLineTooLong => "request line too long",
            ParseError::HeadTooLarge => "request head too large",
            ParseError::TooManyHeaders => "too many header fields",
            ParseError::BadHeaderName => "invalid header name",
            ParseError::BadHeaderValue => "invalid byte in header value",
            ParseError::ObsFold => "obsolete line folding",
            ParseError::BareLf => "bare LF line ending",
            ParseError::BadHost => "missing, repeated or invalid Host",
            ParseError::BadContentLength => "invalid Content-Length",
            ParseError::ContentLengthWithTransferEncoding => {
                "Content-Length together with Transfer-Encoding"
            }
            ParseError::BadTransferEncoding => "malformed Transfer-Encoding",
            ParseError::TransferCodingNotImplemented => "transfer coding not implemented",
            ParseError::BodyTooLarge => "body over the size limit",
            ParseError::UnsupportedExpectation => "unsupported Expect",
            ParseError::UnsupportedVersion => "unsupported HTTP version",
            ParseError::MethodNotImplemented => "method not implemented",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

/// An upstream response the gateway will not pass on (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// The status line or a header is malformed.
    Malformed,
    /// The head is larger than the configured limit.
    HeadTooLarge,
    /// Content-Length invalid or conflicting copies.
    BadContentLength,
    /// Content-Length together with Transfer-Encoding.
    Ambiguous,
    /// A `101 Switching Protocols` the client did not ask for.
    UnexpectedUpgrade,
    /// A `101` to another protocol than the one asked for, or a WebSocket
    /// `101` without the right `Sec-WebSocket-Accept`.
    BadUpgrade,
}

impl ResponseError {
    /// A short reason for logs.
    pub fn reason(self) -> &'static str {
        match self {
            ResponseError::Malformed => "malformed upstream response",
            ResponseError::HeadTooLarge => "upstream response head too large",
            ResponseError::BadContentLength => "invalid upstream Content-Length",
            ResponseError::Ambiguous => "upstream sent Content-Length with Transfer-Encoding",
            ResponseError::UnexpectedUpgrade => "upstream switched protocols unasked",
            ResponseError::BadUpgrade => "upstream's 101 does not complete the handshake asked for",
        }
    }
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ResponseError {}
