//! Field-level helpers shared by requests and responses: comma-separated token
//! lists, hop-by-hop classification, Content-Length and Transfer-Encoding.

/// Header fields that describe one connection and never cross the proxy.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
    b"transfer-encoding",
];

/// Whether `name` is a hop-by-hop field by definition (not counting those a
/// `Connection` header names; see [`ConnectionTokens`]).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Iterates over the elements of a comma-separated list value, trimmed of
/// optional whitespace; empty elements are skipped (RFC 9110 §5.6.1).
pub(crate) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Whether a comma-separated list `value` contains `token` (ASCII case-insensitive).
pub fn tokens_contain(value: &[u8], token: &[u8]) -> bool {
    list_items(value).any(|t| t.eq_ignore_ascii_case(token))
}

const CONNECTION_CAP: usize = 8;

/// The options of a message's `Connection` header fields, collected so the
/// encoder can drop every field they name. Holds borrowed values; at most
/// [`ConnectionTokens::CAP`] `Connection` fields are remembered, beyond that
/// the message is rejected by the parser.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionTokens<'b> {
    values: [&'b [u8]; CONNECTION_CAP],
    len: usize,
    /// `close` was listed.
    pub close: bool,
    /// `keep-alive` was listed.
    pub keep_alive: bool,
    /// `upgrade` was listed.
    pub upgrade: bool,
}

impl<'b> ConnectionTokens<'b> {
    /// How many `Connection` fields one message may carry.
    pub const CAP: usize = CONNECTION_CAP;

    /// Records one `Connection` field value; `false` when over [`Self::CAP`].
    pub fn add(&mut self, value: &'b [u8]) -> bool {
        if self.len == Self::CAP {
            return false;
        }
        self.values[self.len] = value;
        self.len += 1;
        for t in list_items(value) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
        true
    }

    /// Whether a `Connection` header named the field `name`.
    pub fn names(&self, name: &[u8]) -> bool {
        self.values[..self.len]
            .iter()
            .any(|v| tokens_contain(v, name))
    }
}

/// Parses a Content-Length value: one or more digits, nothing else. A list of
/// identical values (`5, 5`) is accepted as RFC 9110 §8.6 allows.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result: Option<u64> = None;
    let mut any = false;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        let n = parse_decimal(part)?;
        if result.is_some_and(|r| r != n) {
            return None;
        }
        result = Some(n);
        any = true;
    }
    if any { result } else { None }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        // 19 digits always fit in u64; longer values are refused outright.
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Some(n)
}

/// How a `Transfer-Encoding` list ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TeVerdict {
    /// The final coding is `chunked` (appearing once).
    Chunked,
    /// The final coding is something else.
    NotChunked,
    /// Malformed: empty, a non-token, or `chunked` repeated / not last.
    Invalid,
}

/// Folds one `Transfer-Encoding` field value into the running verdict for a
/// message (several fields form one list).
pub(crate) fn fold_transfer_encoding(prev: Option<TeVerdict>, value: &[u8]) -> TeVerdict {
    let mut verdict = prev;
    let mut saw_item = false;
    for item in value.split(|&b| b == b',') {
        let item = trim_ows(item);
        if item.is_empty() {
            continue;
        }
        saw_item = true;
        // A coding may carry parameters (`gzip;q=1` is not valid, but
        // `foo;bar=baz` is). We only need the coding name.
        let name = trim_ows(item.split(|&b| b == b';').next().unwrap_or(item));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return TeVerdict::Invalid;
        }
        let is_chunked = name.eq_ignore_ascii_case(b"chunked");
        if is_chunked && name.len() != item.len() {
            // chunked takes no parameters
            return TeVerdict::Invalid;
        }
        verdict = match (verdict, is_chunked) {
            (Some(TeVerdict::Invalid), _) => return TeVerdict::Invalid,
            // chunked applied twice, or a coding after chunked
            (Some(TeVerdict::Chunked), _) => return TeVerdict::Invalid,
            (_, true) => Some(TeVerdict::Chunked),
            (_, false) => Some(TeVerdict::NotChunked),
        };
    }
    if !saw_item {
        return TeVerdict::Invalid;
    }
    verdict.unwrap_or(TeVerdict::Invalid)
}

/// What a request's `Transfer-Encoding` fields amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RequestTe {
    /// `chunked` items seen.
    chunked: u8,
    /// Another coding seen.
    other: bool,
    /// An empty list element, a non-token, or `chunked` with parameters.
    malformed: bool,
}

impl RequestTe {
    /// Adds one field value.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for item in value.split(|&b| b == b',') {
            let item = trim_ows(item);
            let name = trim_ows(item.split(|&b| b == b';').next().unwrap_or(item));
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                self.malformed = true;
            } else if name.eq_ignore_ascii_case(b"chunked") {
                self.malformed |= name.len() != item.len();
                self.chunked = self.chunked.saturating_add(1);
            } else {
                self.other = true;
            }
        }
    }

    /// `Ok` when the body is chunked, exactly once and nothing else; the
    /// error to answer otherwise.
    pub(crate) fn verdict(&self) -> Result<(), crate::ParseError> {
        if self.malformed {
            Err(crate::ParseError::BadTransferEncoding)
        } else if self.other {
            Err(crate::ParseError::TransferCodingNotImplemented)
        } else if self.chunked != 1 {
            Err(crate::ParseError::BadTransferEncoding)
        } else {
            Ok(())
        }
    }
}

/// `tchar` from RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' |
        b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_cases() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"42", Some(42)),
            (b"007", Some(7)),
            (b"5, 5", Some(5)),
            (b"5,5", Some(5)),
            (b"5, 6", None),
            (b"", None),
            (b"+5", None),
            (b"-1", None),
            (b"5 5", None),
            (b"0x10", None),
            (b"1e3", None),
            (b"99999999999999999999", None),
            (b"9999999999999999999", Some(9_999_999_999_999_999_999)),
            (b"5,", None),
            (b",", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_content_length(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn transfer_encoding_cases() {
        use TeVerdict::*;
        let cases: &[(&[&[u8]], TeVerdict)] = &[
            (&[b"chunked"], Chunked),
            (&[b"Chunked"], Chunked),
            (&[b"gzip, chunked"], Chunked),
            (&[b"gzip", b"chunked"], Chunked),
            (&[b"chunked, gzip"], Invalid),
            (&[b"chunked", b"chunked"], Invalid),
            (&[b"chunked, chunked"], Invalid),
            (&[b"gzip"], NotChunked),
            (&[b"identity"], NotChunked),
            (&[b""], Invalid),
            (&[b"chunked;foo=bar"], Invalid),
            (&[b"x chunked"], Invalid),
            (&[b"\"chunked\""], Invalid),
            (&[b"chunk"], NotChunked),
        ];
        for (values, want) in cases {
            let mut v = None;
            for value in *values {
                v = Some(fold_transfer_encoding(v, value));
            }
            assert_eq!(v, Some(*want), "{values:?}");
        }
    }

    #[test]
    fn connection_tokens_name_fields() {
        let mut c = ConnectionTokens::default();
        assert!(c.add(b"keep-alive, X-Secret , Upgrade"));
        assert!(c.keep_alive && c.upgrade && !c.close);
        assert!(c.names(b"x-secret"));
        assert!(!c.names(b"x-other"));
    }

    #[test]
    fn hop_by_hop_is_case_insensitive() {
        for n in [
            "Connection",
            "KEEP-ALIVE",
            "te",
            "Upgrade",
            "Proxy-Connection",
        ] {
            assert!(is_hop_by_hop(n.as_bytes()), "{n}");
        }
        assert!(!is_hop_by_hop(b"Content-Length"));
    }
}
