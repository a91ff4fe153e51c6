//! Route path patterns: parsing and validation.
//!
//! Syntax, segment by segment (a segment is the text between two `/`):
//!
//! - `:name` — a parameter: matches one non-empty segment.
//! - `*name` — a catch-all: only as the last segment; matches the non-empty rest of the path,
//!   `/` included.
//! - anything else is literal, including `:` or `*` that do not start a segment
//!   (`/v1/things:batchGet` is static).
//!
//! Names are `[A-Za-z0-9_]+`, unique within a route. A pattern must be in the normal form of
//! [`crate::normalize_path`] (a route `/%61dmin` or `/a//b` could never match and is refused).
//! Prefix routes take static patterns only; a trailing `/` on a prefix is ignored.

use crate::normalize::is_normal_with;

/// Most parameters (catch-all included) one route may capture. Lookups keep captures inline,
/// so this bound is what makes a lookup allocation-free.
pub const MAX_PARAMS: usize = 8;

/// A parsed pattern: static byte runs and captures, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    Static(Vec<u8>),
    Param(Box<str>),
    CatchAll(Box<str>),
}

/// Parses an exact pattern. Errors are human sentences naming the problem.
pub(crate) fn parse_exact(pattern: &str) -> Result<Vec<Piece>, String> {
    check_common(pattern)?;
    let mut pieces: Vec<Piece> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let segments: Vec<&str> = pattern[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        push_static(&mut pieces, b"/");
        let capture = match seg.as_bytes().first() {
            Some(b':') => Some(false),
            Some(b'*') => Some(true),
            _ => None,
        };
        let Some(catch_all) = capture else {
            push_static(&mut pieces, seg.as_bytes());
            continue;
        };
        let name = &seg[1..];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("parameter name {name:?} must be [A-Za-z0-9_]+"));
        }
        if names.contains(&name) {
            return Err(format!("parameter name {name:?} is used twice"));
        }
        names.push(name);
        if names.len() > MAX_PARAMS {
            return Err(format!("more than {MAX_PARAMS} parameters"));
        }
        if catch_all {
            if i != last {
                return Err(format!("catch-all *{name} must be the last segment"));
            }
            pieces.push(Piece::CatchAll(name.into()));
        } else {
            pieces.push(Piece::Param(name.into()));
        }
    }
    Ok(pieces)
}

/// Parses a prefix pattern into the static bytes it stands for, without a trailing `/`
/// (so the root prefix `/` is the empty string).
pub(crate) fn parse_prefix(pattern: &str) -> Result<Vec<u8>, String> {
    check_common(pattern)?;
    if pattern
        .split('/')
        .any(|s| s.starts_with(':') || s.starts_with('*'))
    {
        return Err("a prefix route cannot have parameters".into());
    }
    Ok(pattern.trim_end_matches('/').as_bytes().to_vec())
}

fn check_common(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if pattern.contains('?') {
        return Err("must not contain a query ('?')".into());
    }
    // Judged by the most permissive listener: one that keeps `%2F` and `;`
    // can match a route that has them.
    let keep = crate::PathOptions {
        escaped_slashes: crate::EscapedSlashes::Keep,
        semicolons: crate::Semicolons::Keep,
    };
    if !is_normal_with(pattern.as_bytes(), &keep) {
        let mut out = Vec::new();
        let hint = match crate::normalize_path_with(pattern.as_bytes(), &mut out, &keep) {
            Ok(_) => format!("; its normal form is {:?}", String::from_utf8_lossy(&out)),
            Err(e) => format!(" ({e})"),
        };
        return Err(format!(
            "is not a normalised path, so no request could match it{hint}"
        ));
    }
    Ok(())
}

fn push_static(pieces: &mut Vec<Piece>, bytes: &[u8]) {
    if let Some(Piece::Static(s)) = pieces.last_mut() {
        s.extend_from_slice(bytes);
    } else {
        pieces.push(Piece::Static(bytes.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(s: &str) -> Piece {
        Piece::Static(s.as_bytes().to_vec())
    }
    fn p(s: &str) -> Piece {
        Piece::Param(s.into())
    }
    fn c(s: &str) -> Piece {
        Piece::CatchAll(s.into())
    }

    #[test]
    fn parse_exact_table() {
        let ok: &[(&str, Vec<Piece>)] = &[
            ("/", vec![st("/")]),
            ("/users", vec![st("/users")]),
            ("/users/", vec![st("/users/")]),
            ("/users/:id", vec![st("/users/"), p("id")]),
            (
                "/users/:id/posts",
                vec![st("/users/"), p("id"), st("/posts")],
            ),
            ("/:a/:b", vec![st("/"), p("a"), st("/"), p("b")]),
            ("/static/*path", vec![st("/static/"), c("path")]),
            ("/*all", vec![st("/"), c("all")]),
            ("/v1/things:batchGet", vec![st("/v1/things:batchGet")]),
            ("/a*b", vec![st("/a*b")]),
        ];
        for (pat, want) in ok {
            assert_eq!(parse_exact(pat).as_ref(), Ok(want), "{pat}");
        }
    }

    #[test]
    fn parse_exact_rejects() {
        let bad: &[(&str, &str)] = &[
            ("users", "start with '/'"),
            ("", "start with '/'"),
            ("/a?b", "query"),
            ("/a//b", "normal form is \"/a/b\""),
            ("/%61dmin", "normal form is \"/admin\""),
            ("/a/../b", "normal form is \"/b\""),
            ("/..", "above the root"),
            ("/a/:", "must be [A-Za-z0-9_]+"),
            ("/a/:x-y", "must be [A-Za-z0-9_]+"),
            ("/a/*", "must be [A-Za-z0-9_]+"),
            ("/:x/:x", "used twice"),
            ("/*rest/x", "must be the last segment"),
            ("/:a/:b/:c/:d/:e/:f/:g/:h/:i", "more than 8"),
        ];
        for (pat, want) in bad {
            let err = parse_exact(pat).unwrap_err();
            assert!(err.contains(want), "{pat}: {err}");
        }
    }

    #[test]
    fn parse_prefix_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("/", Ok("")),
            ("/api", Ok("/api")),
            ("/api/", Ok("/api")),
            ("/api/v1", Ok("/api/v1")),
            ("/api/:v", Err("parameters")),
            ("/api/*r", Err("parameters")),
            ("/api//", Err("normal")),
            ("api", Err("start with")),
        ];
        for (pat, want) in cases {
            match (parse_prefix(pat), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w.as_bytes(), "{pat}"),
                (Err(got), Err(w)) => assert!(got.contains(w), "{pat}: {got}"),
                (got, want) => panic!("{pat}: got {got:?}, want {want:?}"),
            }
        }
    }
}
