//! Path rewrites and redirects, written into a caller's buffer (no allocation once it has room).
//!
//! Rewrites act on the path and keep the query string (`?...`) as it came:
//! - **strip prefix** `/api`: `/api/users?x=1` → `/users?x=1`; `/api` → `/`.
//! - **replace prefix** `/api` → `/v2`: `/api/users` → `/v2/users`.
//! - **template** `/v2/users/{id}`: filled from the route's parameters (raw path bytes, as the
//!   router captured them, so percent-encoding is preserved).
//!
//! Prefixes match at a segment boundary only: `/api` does not strip `/apix`. A path that does
//! not carry the prefix is passed on unchanged. Dot segments are the router's business (it
//! routes on the normalised path); nothing here resolves them.
//!
//! A redirect builds a `Location` from a template (which may be absolute, like
//! `https://new.example/{rest}`), optionally keeping the query, with status 301, 302, 307 or 308.

use crate::chain::{Cx, Flow, line};
use crate::filter::{BuildContext, BuiltIn};
use crate::syntax::ParseCx;
use serde::Deserialize;
use std::fmt;

/// A configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteError {
    /// A prefix must start with `/`.
    Prefix(String),
    /// Unbalanced or empty `{}` in a template, or a byte not allowed in a target.
    Template(String),
    /// The template names a parameter the route does not capture.
    UnknownParam {
        template: String,
        param: String,
    },
    Status(u16),
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteError::Prefix(p) => write!(f, "prefix {p:?} must start with '/'"),
            RewriteError::Template(t) => write!(
                f,
                "template {t:?} is not a path with {{name}} parameters (no spaces, quotes or control bytes)"
            ),
            RewriteError::UnknownParam { template, param } => write!(
                f,
                "template {template:?} uses {{{param}}}, which the route does not capture"
            ),
            RewriteError::Status(s) => write!(f, "redirect status {s} is not 301, 302, 307 or 308"),
        }
    }
}

impl std::error::Error for RewriteError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<[u8]>),
    Param(Box<str>),
}

/// A target with `{name}` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: Box<str>,
    parts: Vec<Part>,
}

fn target_byte_ok(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'|')
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, RewriteError> {
        let bad = || RewriteError::Template(s.to_owned());
        let mut parts = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'{' => {
                    if i > 0 {
                        parts.push(Part::Lit(rest.as_bytes()[..i].into()));
                    }
                    let close = rest[i..].find('}').ok_or_else(bad)? + i;
                    let name = &rest[i + 1..close];
                    if name.is_empty() || name.contains('{') {
                        return Err(bad());
                    }
                    parts.push(Part::Param(name.into()));
                    rest = &rest[close + 1..];
                }
                Some(_) => return Err(bad()),
                None => {
                    parts.push(Part::Lit(rest.as_bytes().into()));
                    rest = "";
                }
            }
        }
        let lit_ok = parts.iter().all(|p| match p {
            Part::Lit(l) => l.iter().all(|&b| target_byte_ok(b)),
            Part::Param(_) => true,
        });
        if !lit_ok || s.is_empty() {
            return Err(bad());
        }
        Ok(Template {
            source: s.into(),
            parts,
        })
    }

    /// The parameter names used, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Param(n) => Some(&**n),
            Part::Lit(_) => None,
        })
    }

    /// Config-time check against the names the route captures.
    pub fn check_params(&self, route_params: &[&str]) -> Result<(), RewriteError> {
        match self.params().find(|p| !route_params.contains(p)) {
            Some(p) => Err(RewriteError::UnknownParam {
                template: self.source.to_string(),
                param: p.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// Append the filled template to `out`. A parameter missing from `params` renders empty
    /// (ruled out at config time by [`Template::check_params`]).
    pub fn render(&self, params: &[(&str, &[u8])], out: &mut Vec<u8>) {
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.extend_from_slice(l),
                Part::Param(name) => {
                    if let Some((_, v)) = params.iter().find(|(n, _)| *n == &**name) {
                        out.extend_from_slice(v);
                    }
                }
            }
        }
    }
}

/// How to rewrite the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    StripPrefix(Box<[u8]>),
    ReplacePrefix { from: Box<[u8]>, to: Box<[u8]> },
    Template(Template),
}

fn prefix(p: &str) -> Result<Box<[u8]>, RewriteError> {
    if !p.starts_with('/') || !p.bytes().all(target_byte_ok) || p.contains('?') {
        return Err(RewriteError::Prefix(p.to_owned()));
    }
    // `/api/` and `/api` mean the same prefix.
    let trimmed = p.trim_end_matches('/');
    Ok(trimmed.as_bytes().into())
}

/// The rest of `path` after `prefix` when it matches at a segment boundary.
fn after_prefix<'p>(path: &'p [u8], prefix: &[u8]) -> Option<&'p [u8]> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

fn split_query(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

impl PathRewrite {
    pub fn strip_prefix(p: &str) -> Result<PathRewrite, RewriteError> {
        Ok(PathRewrite::StripPrefix(prefix(p)?))
    }

    pub fn replace_prefix(from: &str, to: &str) -> Result<PathRewrite, RewriteError> {
        Ok(PathRewrite::ReplacePrefix {
            from: prefix(from)?,
            to: prefix(to)?,
        })
    }

    pub fn template(t: &str) -> Result<PathRewrite, RewriteError> {
        if !t.starts_with('/') || t.contains('?') {
            return Err(RewriteError::Template(t.to_owned()));
        }
        Ok(PathRewrite::Template(Template::parse(t)?))
    }

    /// Write the rewritten request target (path and query) for `target` into `out` (cleared
    /// first).
    pub fn apply(&self, target: &[u8], params: &[(&str, &[u8])], out: &mut Vec<u8>) {
        out.clear();
        let (path, query) = split_query(target);
        match self {
            PathRewrite::StripPrefix(p) => match after_prefix(path, p) {
                Some(b"") => out.push(b'/'),
                Some(rest) => out.extend_from_slice(rest),
                None => out.extend_from_slice(path),
            },
            PathRewrite::ReplacePrefix { from, to } => match after_prefix(path, from) {
                Some(rest) => {
                    out.extend_from_slice(to);
                    if out.is_empty() && rest.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(rest);
                }
                None => out.extend_from_slice(path),
            },
            PathRewrite::Template(t) => t.render(params, out),
        }
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q);
        }
    }
}

/// A redirect answered at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub status: u16,
    pub to: Template,
    pub keep_query: bool,
}

impl Redirect {
    pub fn new(status: u16, to: &str, keep_query: bool) -> Result<Redirect, RewriteError> {
        if !matches!(status, 301 | 302 | 307 | 308) {
            return Err(RewriteError::Status(status));
        }
        Ok(Redirect {
            status,
            to: Template::parse(to)?,
            keep_query,
        })
    }

    /// Write the `Location` value into `out` (cleared first) and return the
    /// status. A kept query leaves out the parameters named in `secrets`
    /// (API keys): a redirect must not echo a credential to another place.
    pub fn location(
        &self,
        target: &[u8],
        params: &[(&str, &[u8])],
        secrets: &[Box<[u8]>],
        out: &mut Vec<u8>,
    ) -> u16 {
        out.clear();
        self.to.render(params, out);
        if self.keep_query
            && let (_, Some(q)) = split_query(target)
        {
            let secret = |pair: &[u8]| {
                let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
                secrets.iter().any(|s| **s == *name)
            };
            let mut sep = if out.contains(&b'?') { b'&' } else { b'?' };
            for pair in q
                .split(|&b| b == b'&')
                .filter(|p| !p.is_empty() && !secret(p))
            {
                out.push(sep);
                out.extend_from_slice(pair);
                sep = b'&';
            }
        }
        self.status
    }
}

/// `rewrite`: one path rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteConfig {
    StripPrefix(String),
    ReplacePrefix { from: String, to: String },
    Template(String),
}

impl Default for RewriteConfig {
    fn default() -> Self {
        RewriteConfig::StripPrefix("/".into())
    }
}

/// `redirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectConfig {
    pub status: u16,
    pub to: String,
    pub keep_query: bool,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        RedirectConfig {
            status: 302,
            to: "/".into(),
            keep_query: true,
        }
    }
}

/// The `rewrite` table: exactly one of the three.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    strip_prefix: Option<String>,
    replace_prefix: Option<RawReplacePrefix>,
    template: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplacePrefix {
    from: String,
    to: String,
}

/// The `redirect` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    status: Option<i64>,
    to: Option<String>,
    keep_query: Option<bool>,
}

impl BuiltIn for PathRewrite {
    type Spec = RewriteConfig;
    const NAME: &'static str = "rewrite";
    const ABOUT: &'static str = "strip/replace a path prefix or fill a path template";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<RewriteConfig> {
        let r: RawRewrite = cx.read(body)?;
        let given = [
            (
                "strip_prefix",
                r.strip_prefix.map(RewriteConfig::StripPrefix),
            ),
            (
                "replace_prefix",
                r.replace_prefix.map(|p| RewriteConfig::ReplacePrefix {
                    from: p.from,
                    to: p.to,
                }),
            ),
            ("template", r.template.map(RewriteConfig::Template)),
        ]
        .into_iter()
        .filter_map(|(field, c)| Some((field, c?)))
        .collect();
        let names = "strip_prefix, replace_prefix, template";
        Some(
            cx.exactly_one("", names, given)
                .map_or_else(RewriteConfig::default, |(_, c)| c),
        )
    }

    fn build(c: &RewriteConfig, cx: &BuildContext<'_>) -> Result<PathRewrite, Vec<String>> {
        let rw = match c {
            RewriteConfig::StripPrefix(p) => PathRewrite::strip_prefix(p),
            RewriteConfig::ReplacePrefix { from, to } => PathRewrite::replace_prefix(from, to),
            RewriteConfig::Template(t) => PathRewrite::template(t),
        }
        .map_err(|e| vec![e.to_string()])?;
        if let PathRewrite::Template(t) = &rw {
            t.check_params(cx.route_params)
                .map_err(|e| vec![format!("template: {e}")])?;
        }
        Ok(rw)
    }

    /// Rewrites the target sent upstream (after any earlier rewrite).
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        if cx.rewritten {
            let current = cx.path.clone();
            self.apply(&current, cx.params, cx.path);
        } else {
            self.apply(cx.target, cx.params, cx.path);
        }
        cx.rewritten = true;
        Flow::Continue
    }
}

impl BuiltIn for Redirect {
    type Spec = RedirectConfig;
    const NAME: &'static str = "redirect";
    const ABOUT: &'static str = "answer 301/302/307/308 with a Location template";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<RedirectConfig> {
        let r: RawRedirect = cx.read(body)?;
        let d = RedirectConfig::default();
        Some(RedirectConfig {
            status: cx.status("status", r.status, d.status),
            to: r.to.unwrap_or(d.to),
            keep_query: r.keep_query.unwrap_or(d.keep_query),
        })
    }

    fn build(c: &RedirectConfig, cx: &BuildContext<'_>) -> Result<Redirect, Vec<String>> {
        let r = Redirect::new(c.status, &c.to, c.keep_query).map_err(|e| vec![e.to_string()])?;
        r.to.check_params(cx.route_params)
            .map_err(|e| vec![format!("to: {e}")])?;
        Ok(r)
    }

    /// Answers with the redirect. The location is built in the path scratch
    /// (nothing goes upstream after an answer), so no buffer is allocated.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        let status = self.location(cx.target, cx.params, cx.secrets, cx.path);
        line(cx.response, b"Location", cx.path);
        Flow::answer(status)
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples
mod tests {
    use super::*;

    #[test]
    fn rewrite_table() {
        let strip = PathRewrite::strip_prefix("/api/").unwrap();
        let replace = PathRewrite::replace_prefix("/api", "/v2").unwrap();
        let to_root = PathRewrite::replace_prefix("/old", "/").unwrap();
        let tpl = PathRewrite::template("/v2/users/{id}/posts/{post}").unwrap();
        let params: &[(&str, &[u8])] = &[("id", b"42"), ("post", b"a%20b")];
        let cases: &[(&PathRewrite, &[u8], &[u8])] = &[
            (&strip, b"/api/users", b"/users"),
            (&strip, b"/api/users?x=1&y", b"/users?x=1&y"),
            (&strip, b"/api", b"/"),
            (&strip, b"/api?x=1", b"/?x=1"),
            (&strip, b"/api/", b"/"),
            (&strip, b"/apix/users", b"/apix/users"),
            (&strip, b"/other", b"/other"),
            (&replace, b"/api/users?q", b"/v2/users?q"),
            (&replace, b"/api", b"/v2"),
            (&replace, b"/apiary", b"/apiary"),
            (&to_root, b"/old/a", b"/a"),
            (&to_root, b"/old", b"/"),
            (
                &tpl,
                b"/u/42/p/x?keep=1",
                b"/v2/users/42/posts/a%20b?keep=1",
            ),
            (&tpl, b"/u/42/p/x", b"/v2/users/42/posts/a%20b"),
        ];
        let mut out = Vec::with_capacity(64);
        for (rw, target, want) in cases {
            rw.apply(target, params, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(want),
                "{rw:?} on {:?}",
                String::from_utf8_lossy(target)
            );
        }
    }

    #[test]
    fn apply_reuses_the_buffer() {
        let rw = PathRewrite::strip_prefix("/api").unwrap();
        let mut out = Vec::with_capacity(64);
        let before = out.as_ptr();
        for _ in 0..100 {
            rw.apply(b"/api/some/long/path?with=query", &[], &mut out);
        }
        assert_eq!(out.as_ptr(), before, "no reallocation");
    }

    #[test]
    fn config_errors_table() {
        let cases: Vec<(Result<PathRewrite, RewriteError>, &str)> = vec![
            (
                PathRewrite::strip_prefix("api"),
                "prefix \"api\" must start with '/'",
            ),
            (PathRewrite::strip_prefix("/a b"), "prefix \"/a b\""),
            (PathRewrite::template("/x/{id"), "template \"/x/{id\""),
            (PathRewrite::template("/x/{}"), "template \"/x/{}\""),
            (PathRewrite::template("/x/}"), "template \"/x/}\""),
            (PathRewrite::template("x/{id}"), "template \"x/{id}\""),
            (PathRewrite::template("/x?y"), "template \"/x?y\""),
        ];
        for (got, want) in cases {
            let e = got.unwrap_err();
            assert!(e.to_string().starts_with(want), "{e}");
        }
        let t = Template::parse("/v2/{id}/{name}").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), vec!["id", "name"]);
        assert!(t.check_params(&["id", "name", "x"]).is_ok());
        assert_eq!(
            t.check_params(&["id"]).unwrap_err().to_string(),
            "template \"/v2/{id}/{name}\" uses {name}, which the route does not capture"
        );
        assert_eq!(
            Redirect::new(303, "/x", false).unwrap_err(),
            RewriteError::Status(303)
        );
    }

    #[test]
    fn a_kept_query_never_carries_a_secret_parameter() {
        let r = Redirect::new(302, "https://new.example/{rest}?a=1", true).unwrap();
        let params: &[(&str, &[u8])] = &[("rest", b"x")];
        let secrets: Vec<Box<[u8]>> =
            vec![b"api_key".as_slice().into(), b"token".as_slice().into()];
        let mut out = Vec::new();
        r.location(
            b"/old/x?api_key=s3&v=2&token=t&&w",
            params,
            &secrets,
            &mut out,
        );
        assert_eq!(out, b"https://new.example/x?a=1&v=2&w");
        r.location(b"/old/x?api_key=s3", params, &secrets, &mut out);
        assert_eq!(out, b"https://new.example/x?a=1");
    }

    #[test]
    fn redirect_table() {
        let params: &[(&str, &[u8])] = &[("rest", b"docs/intro")];
        let cases: &[(u16, &str, bool, &[u8], &[u8])] = &[
            (
                301,
                "https://new.example/{rest}",
                true,
                b"/old/docs/intro?v=2",
                b"https://new.example/docs/intro?v=2",
            ),
            (
                302,
                "https://new.example/{rest}",
                false,
                b"/old/docs/intro?v=2",
                b"https://new.example/docs/intro",
            ),
            (307, "/login?next=1", true, b"/x?v=2", b"/login?next=1&v=2"),
            (308, "/fixed", true, b"/x", b"/fixed"),
        ];
        let mut out = Vec::new();
        for (status, to, keep, target, want) in cases {
            let r = Redirect::new(*status, to, *keep).unwrap();
            assert_eq!(r.location(target, params, &[], &mut out), *status);
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
        }
    }
}
