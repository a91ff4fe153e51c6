//! What happened to one attempt at an upstream: the single vocabulary the outlier detector,
//! the retry policy and the breaker classify.

use std::fmt;

/// The result of one try against one endpoint, as the proxy observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived with this status.
    Response(u16),
    /// The TCP connect (or TLS handshake) failed or timed out: no request byte was sent.
    ConnectFailed,
    /// The connection closed or reset before any response byte arrived.
    ResetBeforeResponse,
    /// The connection closed or reset after the response had started (not retryable).
    ResetAfterResponse,
    /// The per-try timeout fired before a response head arrived.
    TryTimeout,
}

impl Outcome {
    /// A 5xx response, or a failure where the client would have got a 502/504 from us.
    pub fn is_server_error(self) -> bool {
        match self {
            Outcome::Response(status) => (500..=599).contains(&status),
            _ => true,
        }
    }

    /// Did a response with a non-5xx status come back?
    pub fn is_success(self) -> bool {
        !self.is_server_error()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Response(status) => write!(f, "status {status}"),
            Outcome::ConnectFailed => f.write_str("connect failure"),
            Outcome::ResetBeforeResponse => f.write_str("reset before response"),
            Outcome::ResetAfterResponse => f.write_str("reset during response"),
            Outcome::TryTimeout => f.write_str("per-try timeout"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_classification() {
        let cases = [
            (Outcome::Response(200), false),
            (Outcome::Response(404), false),
            (Outcome::Response(499), false),
            (Outcome::Response(500), true),
            (Outcome::Response(503), true),
            (Outcome::Response(599), true),
            (Outcome::Response(600), false),
            (Outcome::ConnectFailed, true),
            (Outcome::ResetBeforeResponse, true),
            (Outcome::ResetAfterResponse, true),
            (Outcome::TryTimeout, true),
        ];
        for (outcome, want) in cases {
            assert_eq!(outcome.is_server_error(), want, "{outcome}");
            assert_eq!(outcome.is_success(), !want, "{outcome}");
        }
    }
}
