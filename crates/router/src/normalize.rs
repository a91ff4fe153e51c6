//! Path normalisation: the one canonical form the router matches on.
//!
//! A request target in origin form (`/path?query`) is normalised like this:
//!
//! 1. It must start with `/`; otherwise [`PathError::NotOriginForm`].
//! 2. Bytes below 0x21, DEL (0x7F) and `#` are rejected ([`PathError::InvalidByte`]).
//! 3. Percent-encodings must be `%` and two hex digits ([`PathError::BadPercentEncoding`]).
//!    Those of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`/%61dmin` is
//!    `/admin`); the others stay encoded with upper-case hex digits (`%2f` becomes `%2F`). So an
//!    encoded `/` never splits a segment and never matches a literal `/` in a route.
//! 4. Runs of `/` are merged (`//admin` is `/admin`); a trailing `/` is kept and significant.
//! 5. Dot segments are resolved as in RFC 3986 §5.2.4, after step 3, so `%2e%2e` counts:
//!    `/public/../admin` is `/admin`, `/a/.` is `/a/`. A `..` that would climb above the root
//!    is rejected ([`PathError::AboveRoot`]) rather than silently clamped.
//! 6. The query (from the first `?`) is kept byte for byte and is not part of matching.
//!
//! The proxy routes on the normalised path and, when it was rewritten, forwards the rewritten
//! target upstream, so the upstream sees exactly what was routed on.
//!
//! Bytes that origins read differently from the router are refused by default
//! ([`PathOptions`]), since each is a way around a route's protection:
//! - `%2F` and `%5C` (an origin that decodes them before routing sees more segments),
//!   unless the listener keeps them encoded ([`EscapedSlashes::Keep`], today's reading: they
//!   never split a segment) or decodes them into separators before routing
//!   ([`EscapedSlashes::Decode`]);
//! - a raw `\` (a separator to IIS and other Windows stacks);
//! - `;` (Tomcat, Jetty and Spring strip path parameters, so `/public/..;/admin` is their
//!   `/admin`), unless the listener keeps them ([`Semicolons::Keep`]);
//! - `%00`.
//!
//! Not handled (the upstream must agree): double encoding (`%252e` stays `%252e`), non-ASCII
//! bytes (passed through).

use std::fmt;

/// Why a request target cannot be routed. The proxy answers 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// The target does not start with `/` (absolute form, `*`, empty).
    NotOriginForm,
    /// A control byte, space, DEL or `#` at this offset.
    InvalidByte(usize),
    /// A `%` at this offset is not followed by two hex digits.
    BadPercentEncoding(usize),
    /// A `..` segment would climb above the root.
    AboveRoot,
    /// `%2F` or `%5C` at this offset, on a listener that refuses them.
    EscapedSlash(usize),
    /// A raw `\` at this offset.
    Backslash(usize),
    /// A `;` at this offset, on a listener that refuses path parameters.
    Semicolon(usize),
    /// `%00` at this offset.
    EncodedNul(usize),
}

/// What a listener does with `%2F` and `%5C` in a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Refuse the request (400).
    #[default]
    Reject,
    /// Keep them encoded: they never split a segment or match a `/` in a route.
    Keep,
    /// Decode them into `/` before routing, so the route and the origin see the same
    /// segments (`/a%2F..%2Fadmin` is `/admin`).
    Decode,
}

/// What a listener does with `;` in a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Semicolons {
    /// Refuse the request (400).
    #[default]
    Reject,
    /// Keep them as ordinary bytes of their segment.
    Keep,
}

/// How strictly a listener reads paths; the default refuses everything ambiguous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathOptions {
    pub escaped_slashes: EscapedSlashes,
    pub semicolons: Semicolons,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotOriginForm => f.write_str("request target does not start with '/'"),
            PathError::InvalidByte(at) => write!(f, "invalid byte in path at offset {at}"),
            PathError::BadPercentEncoding(at) => {
                write!(f, "bad percent-encoding in path at offset {at}")
            }
            PathError::AboveRoot => f.write_str("path climbs above the root with '..'"),
            PathError::EscapedSlash(at) => write!(f, "encoded '/' or '\\' in path at offset {at}"),
            PathError::Backslash(at) => write!(f, "'\\' in path at offset {at}"),
            PathError::Semicolon(at) => write!(f, "';' in path at offset {at}"),
            PathError::EncodedNul(at) => write!(f, "encoded NUL in path at offset {at}"),
        }
    }
}

impl std::error::Error for PathError {}

/// What [`normalize_path`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalized {
    /// The target was already normal; the output buffer was not touched.
    Unchanged,
    /// The normal form (path and query) was written to the output buffer.
    Rewritten,
}

/// Normalises a request target (path and optional query) as described in the module docs.
///
/// When the target is already normal — the common case — this is one pass over the bytes and
/// returns [`Normalized::Unchanged`] without touching `out`. Otherwise `out` is cleared and
/// receives the normal target (query included); reuse it across requests to avoid allocation.
pub fn normalize_path(raw: &[u8], out: &mut Vec<u8>) -> Result<Normalized, PathError> {
    normalize_path_with(raw, out, &PathOptions::default())
}

/// [`normalize_path`] with a listener's options.
pub fn normalize_path_with(
    raw: &[u8],
    out: &mut Vec<u8>,
    opts: &PathOptions,
) -> Result<Normalized, PathError> {
    let (path, query) = split_query(raw);
    if check_normal(path, opts)? {
        return Ok(Normalized::Unchanged);
    }
    out.clear();
    rewrite(path, out, opts)?;
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    Ok(Normalized::Rewritten)
}

/// Splits a target at its first `?`: the path, and the query without the `?`.
#[inline]
pub fn split_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

/// Whether `raw` (a path as received, no query) and `normal` (its normal
/// form) differ only in how bytes are spelled: unreserved characters written
/// `%XX`, lower-case hex digits. Every origin reads those alike (RFC 3986
/// §6.2.2), so a listener that forwards targets as received may pass such a
/// path on; any other difference (a dot segment, a doubled `/`, a decoded
/// separator) could make the origin read another path than the one routed.
pub fn differs_only_in_spelling(raw: &[u8], normal: &[u8]) -> bool {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut at = 0;
    let mut i = 0;
    while i < raw.len() {
        let mut spelled = [raw[i], 0, 0];
        let mut n = 1;
        if raw[i] == b'%' {
            let Ok((byte, _)) = percent(raw, i) else {
                return false;
            };
            if !is_unreserved(byte) {
                spelled = [
                    b'%',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 15)],
                ];
                n = 3;
            } else {
                spelled[0] = byte;
            }
            i += 3;
        } else {
            i += 1;
        }
        if normal.get(at..at + n) != Some(&spelled[..n]) {
            return false;
        }
        at += n;
    }
    at == normal.len()
}

/// Whether a path (no query) is already in normal form (default options).
pub fn is_normal(path: &[u8]) -> bool {
    is_normal_with(path, &PathOptions::default())
}

/// Whether a path (no query) is already in normal form under `opts`.
pub fn is_normal_with(path: &[u8], opts: &PathOptions) -> bool {
    matches!(check_normal(path, opts), Ok(true))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_invalid(b: u8) -> bool {
    b <= b' ' || b == 0x7F || b == b'#'
}

/// Decodes the `%XX` at `at`; the byte and whether the spelling is already normal
/// (kept encoded with upper-case hex).
#[inline]
fn percent(path: &[u8], at: usize) -> Result<(u8, bool), PathError> {
    let (h, l) = match (path.get(at + 1), path.get(at + 2)) {
        (Some(&h), Some(&l)) => (h, l),
        _ => return Err(PathError::BadPercentEncoding(at)),
    };
    match (hex(h), hex(l)) {
        (Some(hv), Some(lv)) => {
            let byte = hv << 4 | lv;
            let upper = !h.is_ascii_lowercase() && !l.is_ascii_lowercase();
            Ok((byte, upper && !is_unreserved(byte)))
        }
        _ => Err(PathError::BadPercentEncoding(at)),
    }
}

/// The byte a `%XX` at `at` stands for is one the listener refuses, or (Decode) a
/// separator: `Ok(true)` when it separates segments.
#[inline]
fn escaped_separator(byte: u8, at: usize, opts: &PathOptions) -> Result<bool, PathError> {
    match byte {
        0 => Err(PathError::EncodedNul(at)),
        b'/' | b'\\' => match opts.escaped_slashes {
            EscapedSlashes::Reject => Err(PathError::EscapedSlash(at)),
            EscapedSlashes::Keep => Ok(false),
            EscapedSlashes::Decode => Ok(true),
        },
        _ => Ok(false),
    }
}

/// A raw byte the listener refuses.
#[inline]
fn refused(b: u8, at: usize, opts: &PathOptions) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::Backslash(at)),
        b';' if opts.semicolons == Semicolons::Reject => Err(PathError::Semicolon(at)),
        _ if is_invalid(b) => Err(PathError::InvalidByte(at)),
        _ => Ok(()),
    }
}

/// One pass: `Ok(true)` if normal, `Ok(false)` if it needs rewriting, `Err` if invalid.
fn check_normal(path: &[u8], opts: &PathOptions) -> Result<bool, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut normal = true;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'/' {
            // What follows a '/' must not be another '/', nor a "." or ".." segment.
            match (path.get(i + 1), path.get(i + 2), path.get(i + 3)) {
                (Some(b'/'), _, _) => normal = false,
                (Some(b'.'), None | Some(b'/'), _) => normal = false,
                (Some(b'.'), Some(b'.'), None | Some(b'/')) => normal = false,
                _ => {}
            }
            i += 1;
        } else if b == b'%' {
            let (byte, ok) = percent(path, i)?;
            normal &= ok && !escaped_separator(byte, i, opts)?;
            i += 3;
        } else {
            refused(b, i, opts)?;
            i += 1;
        }
    }
    Ok(normal)
}

/// Where the segment starting at `start` ends, and how long the separator there is (0 at the
/// end of the path): a `/`, or with [`EscapedSlashes::Decode`] an encoded `/` or `\`.
fn segment_end(path: &[u8], start: usize, opts: &PathOptions) -> (usize, usize) {
    let mut i = start;
    while i < path.len() {
        match path[i] {
            b'/' => return (i, 1),
            b'%' if opts.escaped_slashes == EscapedSlashes::Decode
                && matches!(percent(path, i), Ok((b'/' | b'\\', _))) =>
            {
                return (i, 3);
            }
            _ => i += 1,
        }
    }
    (path.len(), 0)
}

/// Writes the normal form of `path` (which starts with '/') into `out`.
fn rewrite(path: &[u8], out: &mut Vec<u8>, opts: &PathOptions) -> Result<(), PathError> {
    out.push(b'/');
    let mut last_was_segment;
    let mut start = 1;
    loop {
        let (end, sep) = segment_end(path, start, opts);
        let seg_start = out.len();
        decode_segment(path, start, end, out, opts)?;
        let seg = &out[seg_start..];
        last_was_segment = false;
        if seg.is_empty() || seg == b"." {
            out.truncate(seg_start);
        } else if seg == b".." {
            out.truncate(seg_start);
            if out.len() == 1 {
                return Err(PathError::AboveRoot);
            }
            // Drop the '/' ending the previous segment, then the segment itself.
            out.pop();
            let cut = out.iter().rposition(|&b| b == b'/').map_or(1, |p| p + 1);
            out.truncate(cut);
        } else {
            out.push(b'/');
            last_was_segment = true;
        }
        if sep == 0 {
            break;
        }
        start = end + sep;
    }
    if last_was_segment {
        out.pop();
    }
    Ok(())
}

fn decode_segment(
    path: &[u8],
    start: usize,
    end: usize,
    out: &mut Vec<u8>,
    opts: &PathOptions,
) -> Result<(), PathError> {
    let mut i = start;
    while i < end {
        let b = path[i];
        if b == b'%' {
            let (byte, _) = percent(path, i)?;
            escaped_separator(byte, i, opts)?;
            if is_unreserved(byte) {
                out.push(byte);
            } else {
                out.extend_from_slice(&[b'%', upper_hex(byte >> 4), upper_hex(byte & 15)]);
            }
            i += 3;
        } else {
            refused(b, i, opts)?;
            out.push(b);
            i += 1;
        }
    }
    Ok(())
}

fn upper_hex(v: u8) -> u8 {
    b"0123456789ABCDEF"[v as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_differences_are_told_from_others() {
        let opts = PathOptions {
            escaped_slashes: EscapedSlashes::Decode,
            semicolons: Semicolons::Reject,
        };
        let normal = |raw: &[u8]| {
            let mut out = Vec::new();
            match normalize_path_with(raw, &mut out, &opts).unwrap() {
                Normalized::Unchanged => raw.to_vec(),
                Normalized::Rewritten => out,
            }
        };
        for raw in [&b"/%61pi/x"[..], b"/a%7Eb", b"/plain", b"/%c3%A9"] {
            assert!(differs_only_in_spelling(raw, &normal(raw)), "{raw:?}");
        }
        // Decoded into a separator: the origin would see one segment where we routed two.
        assert!(!differs_only_in_spelling(b"/a%2fb", &normal(b"/a%2fb")));
        // Kept encoded, only its hex digits change.
        assert!(differs_only_in_spelling(b"/a%2fb", b"/a%2Fb"));
        for raw in [
            &b"/public/../admin"[..],
            b"//admin",
            b"/a/./b",
            b"/a/%2e%2e/x",
            b"/a/%2e",
            b"/x/",
        ] {
            let n = normal(raw);
            assert_eq!(
                differs_only_in_spelling(raw, &n),
                raw == &n[..],
                "{raw:?} -> {n:?}"
            );
        }
    }
}
