//! Path normalisation, one case a line, and the bypass attempts it exists to stop.

mod support {
    pub mod generate;
    pub mod table;
}

use shardgate_router::{
    EscapedSlashes, Normalized, PathError, PathOptions, Semicolons, is_normal, normalize_path,
    normalize_path_with, split_query,
};
use support::generate::{Rng, Source};
use support::table::{Row, build, render};

fn norm(raw: &str) -> Result<String, PathError> {
    norm_with(raw, &PathOptions::default())
}

fn norm_with(raw: &str, opts: &PathOptions) -> Result<String, PathError> {
    let mut out = b"garbage".to_vec();
    match normalize_path_with(raw.as_bytes(), &mut out, opts)? {
        Normalized::Unchanged => {
            assert_eq!(out, b"garbage", "Unchanged must not touch the buffer");
            Ok(raw.to_string())
        }
        Normalized::Rewritten => {
            let s = String::from_utf8(out).unwrap();
            assert_ne!(s, raw, "Rewritten must change something");
            Ok(s)
        }
    }
}

#[test]
fn normalize_table() {
    let cases: &[(&str, Result<&str, PathError>)] = &[
        ("/", Ok("/")),
        ("/a/b", Ok("/a/b")),
        ("/a/b/", Ok("/a/b/")),
        ("/a/b?x=1&y=/../", Ok("/a/b?x=1&y=/../")),
        ("/?", Ok("/?")),
        // Unreserved encodings decoded, others kept with upper-case hex.
        ("/%61dmin", Ok("/admin")),
        ("/%41%5a%30%2D%2E%5F%7E", Ok("/AZ0-._~")),
        ("/a%20b", Ok("/a%20b")),
        ("/%e2%82%ac", Ok("/%E2%82%AC")),
        ("/%25", Ok("/%25")),
        ("/%252e", Ok("/%252e")),
        // Empty segments merged, trailing slash kept.
        ("//", Ok("/")),
        ("//admin", Ok("/admin")),
        ("/a//b///c", Ok("/a/b/c")),
        ("/a//", Ok("/a/")),
        // Dot segments, literal or encoded.
        ("/.", Ok("/")),
        ("/./a", Ok("/a")),
        ("/a/.", Ok("/a/")),
        ("/a/./b", Ok("/a/b")),
        ("/a/..", Ok("/")),
        ("/a/b/..", Ok("/a/")),
        ("/a/b/../c", Ok("/a/c")),
        ("/public/../admin", Ok("/admin")),
        ("/public/%2e%2e/admin", Ok("/admin")),
        ("/public/%2E./admin", Ok("/admin")),
        ("/public/.%2e/admin?q", Ok("/admin?q")),
        ("/a/.b/..c/...", Ok("/a/.b/..c/...")),
        ("/a/b/.../", Ok("/a/b/.../")),
        ("/a//../b", Ok("/b")),
        // Errors.
        ("/..", Err(PathError::AboveRoot)),
        ("/a/../..", Err(PathError::AboveRoot)),
        ("/%2e%2e/admin", Err(PathError::AboveRoot)),
        ("/a/../../b", Err(PathError::AboveRoot)),
        ("", Err(PathError::NotOriginForm)),
        ("a/b", Err(PathError::NotOriginForm)),
        ("*", Err(PathError::NotOriginForm)),
        ("http://x/a", Err(PathError::NotOriginForm)),
        ("?a", Err(PathError::NotOriginForm)),
        ("/a b", Err(PathError::InvalidByte(2))),
        ("/a\0", Err(PathError::InvalidByte(2))),
        ("/a#f", Err(PathError::InvalidByte(2))),
        ("/a\x7f", Err(PathError::InvalidByte(2))),
        ("/a%", Err(PathError::BadPercentEncoding(2))),
        ("/a%4", Err(PathError::BadPercentEncoding(2))),
        ("/a%zz", Err(PathError::BadPercentEncoding(2))),
        ("//%g0", Err(PathError::BadPercentEncoding(2))),
        // What origins read differently from the router, refused by default.
        ("/a%2Fb", Err(PathError::EscapedSlash(2))),
        ("/a%2fb", Err(PathError::EscapedSlash(2))),
        ("/a%5Cb", Err(PathError::EscapedSlash(2))),
        ("/a%5cb", Err(PathError::EscapedSlash(2))),
        ("//x/%2F", Err(PathError::EscapedSlash(4))),
        ("/a\\b", Err(PathError::Backslash(2))),
        ("/public/..\\admin", Err(PathError::Backslash(10))),
        ("/public/..;/admin", Err(PathError::Semicolon(10))),
        ("/a;jsessionid=1", Err(PathError::Semicolon(2))),
        ("/a%00b", Err(PathError::EncodedNul(2))),
        ("/a?x=%2F;y=\\", Ok("/a?x=%2F;y=\\")),
    ];
    for (raw, want) in cases {
        let want = want.map(str::to_string);
        assert_eq!(norm(raw), want, "{raw:?}");
    }
}

#[test]
fn listener_options_keep_or_decode_what_the_default_refuses() {
    let keep = PathOptions {
        escaped_slashes: EscapedSlashes::Keep,
        semicolons: Semicolons::Keep,
    };
    let decode = PathOptions {
        escaped_slashes: EscapedSlashes::Decode,
        ..PathOptions::default()
    };
    let cases: &[(&PathOptions, &str, Result<&str, PathError>)] = &[
        (&keep, "/a%2Fb", Ok("/a%2Fb")),
        (&keep, "/a%2fb", Ok("/a%2Fb")),
        (&keep, "/a%5cb", Ok("/a%5Cb")),
        (&keep, "/a;v=1/b", Ok("/a;v=1/b")),
        (&keep, "/a\\b", Err(PathError::Backslash(2))),
        (&keep, "/a%00", Err(PathError::EncodedNul(2))),
        // Decoded into separators before dot segments are resolved.
        (&decode, "/a%2Fb", Ok("/a/b")),
        (&decode, "/a%5cb", Ok("/a/b")),
        (&decode, "/public%2F..%2Fadmin", Ok("/admin")),
        (&decode, "/a%2F%2Fb%2F", Ok("/a/b/")),
        (&decode, "/%2F..", Err(PathError::AboveRoot)),
        (&decode, "/a;b", Err(PathError::Semicolon(2))),
        (&decode, "/a%00", Err(PathError::EncodedNul(2))),
    ];
    for (opts, raw, want) in cases {
        let want = want.map(str::to_string);
        assert_eq!(norm_with(raw, opts), want, "{raw:?} with {opts:?}");
    }
}

#[test]
fn split_query_table() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/a", "/a", None),
        ("/a?", "/a", Some("")),
        ("/a?b?c", "/a", Some("b?c")),
    ];
    for (target, path, query) in cases {
        let (p, q) = split_query(target.as_bytes());
        assert_eq!(
            (p, q),
            (path.as_bytes(), query.map(str::as_bytes)),
            "{target}"
        );
    }
}

/// A protected exact route and subtree next to a public catch-everything: no spelling of the
/// protected paths may reach `public`.
#[test]
fn bypass_attempts_reach_the_specific_route() {
    let rows: &[Row<'_>] = &[
        ("admin", "", "*", "= /admin"),
        ("admin-tree", "", "*", "^ /admin"),
        ("public", "", "*", "^ /"),
    ];
    let router = build(rows);
    let cases: &[(&str, &str)] = &[
        ("/admin", "admin"),
        ("/%61dmin", "admin"),
        ("/%61%64%6D%69%6E", "admin"),
        ("/public/../admin", "admin"),
        ("/public/%2e%2e/admin", "admin"),
        ("//admin", "admin"),
        ("/./admin", "admin"),
        ("///admin?x", "admin"),
        ("/admin/", "admin-tree"),
        ("/admin/./x", "admin-tree"),
        ("/admin//x", "admin-tree"),
        ("/x/../admin/y", "admin-tree"),
        ("/%2e%2e/admin", "400"),
        ("/public%2F..%2Fadmin", "400"),
        ("/public/..;/admin", "400"),
        ("/public\\..\\admin", "400"),
        ("/Admin", "public"),
    ];
    check_bypass(&router, cases, &PathOptions::default());
    // A listener that keeps encoded slashes: one segment, never /admin.
    let keep = PathOptions {
        escaped_slashes: EscapedSlashes::Keep,
        ..PathOptions::default()
    };
    check_bypass(
        &router,
        &[("/admin%2Fx", "public"), ("/public%2F..%2Fadmin", "public")],
        &keep,
    );
    // One that decodes them: the segments the origin would see, routed as such.
    let decode = PathOptions {
        escaped_slashes: EscapedSlashes::Decode,
        ..PathOptions::default()
    };
    check_bypass(
        &router,
        &[
            ("/admin%2Fx", "admin-tree"),
            ("/public%2F..%2Fadmin", "admin"),
        ],
        &decode,
    );
}

fn check_bypass(
    router: &shardgate_router::Router<usize>,
    cases: &[(&str, &str)],
    opts: &PathOptions,
) {
    let mut buf = Vec::new();
    for (raw, want) in cases {
        let got = match normalize_path_with(raw.as_bytes(), &mut buf, opts) {
            Err(_) => "400".to_string(),
            Ok(n) => {
                let target = if n == Normalized::Rewritten {
                    &buf[..]
                } else {
                    raw.as_bytes()
                };
                let (path, _) = split_query(target);
                render(router.lookup(b"", b"GET", path))
            }
        };
        assert_eq!(got, *want, "{raw} with {opts:?}");
    }
}

/// Properties on random targets built from a hostile alphabet: the fast check agrees with the
/// rewrite, the output is normal, and normalising twice changes nothing.
#[test]
fn normalize_is_idempotent_and_fast_check_agrees() {
    const PIECES: &[&str] = &[
        "/", "a", ".", "..", "%2e", "%2E", "%2f", "%41", "%7e", "%20", "?", "%", "b/", "//",
    ];
    let mut rng = Rng(7);
    let mut out = Vec::new();
    let mut again = Vec::new();
    for _ in 0..20_000 {
        let mut raw = String::from("/");
        for _ in 0..rng.below(8) {
            raw.push_str(rng.pick(PIECES));
        }
        let Ok(n) = normalize_path(raw.as_bytes(), &mut out) else {
            continue;
        };
        let target = if n == Normalized::Rewritten {
            out.clone()
        } else {
            raw.clone().into_bytes()
        };
        let (path, _) = split_query(&target);
        assert!(
            is_normal(path),
            "{raw:?} -> {:?} is not normal",
            String::from_utf8_lossy(&target)
        );
        assert_eq!(
            normalize_path(&target, &mut again),
            Ok(Normalized::Unchanged),
            "{raw:?}"
        );
        assert_eq!(
            n == Normalized::Unchanged,
            is_normal(split_query(raw.as_bytes()).0),
            "{raw:?}"
        );
    }
}
