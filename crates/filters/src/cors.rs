//! CORS at the gateway: answer preflights without bothering the upstream, and add the
//! `Access-Control-*` headers to actual responses.
//!
//! Decisions follow the Fetch standard's CORS protocol:
//! - A **preflight** is `OPTIONS` with `Origin` and `Access-Control-Request-Method`. It is
//!   allowed when the origin is configured, the method is configured (or CORS-safelisted:
//!   GET, HEAD, POST), and every name in `Access-Control-Request-Headers` is configured. The
//!   answer (the proxy sends it as a 204) allows the origin, the methods, the requested headers
//!   and the max age. A refused preflight gets no CORS headers (the proxy answers 403), which is
//!   what makes the browser refuse the real request.
//! - An **actual** request from an allowed origin gets `Access-Control-Allow-Origin` (plus
//!   credentials and expose headers when configured); from another origin nothing is added.
//!
//! `Vary: Origin` is added to every response whose CORS headers depend on the origin (any
//! configuration except `*` without credentials), including responses to requests *without*
//! an `Origin`, so a shared cache never serves one origin's answer to another. The proxy should
//! add it as an extra `Vary` field, not replace an existing one.
//!
//! `*` as an origin cannot be combined with credentials (browsers reject that pair, and
//! reflecting every origin with credentials would hand any site the user's session): the config
//! is refused. With credentials, `*` in methods or headers is treated as "reflect what was
//! asked", since the literal `*` means nothing to the browser then.

use crate::chain::{Cx, Declare, Flow, line};
use crate::filter::{BuildContext, BuiltIn};
use crate::syntax::ParseCx;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Default `Access-Control-Max-Age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// The filter's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// `*`, or exact origins like `https://app.example` (scheme, host, optional port).
    pub origins: Vec<String>,
    /// Allowed methods (`*` for any).
    pub methods: Vec<String>,
    /// Allowed request headers (`*` for any).
    pub headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            origins: Vec::new(),
            methods: ["GET", "HEAD", "POST"].map(String::from).to_vec(),
            headers: Vec::new(),
            expose_headers: Vec::new(),
            credentials: false,
            max_age: Some(DEFAULT_MAX_AGE),
        }
    }
}

/// A configuration problem with its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for CorsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for CorsConfigError {}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<Box<[u8]>>,
    any_method: bool,
    methods: Vec<Box<[u8]>>,
    methods_value: Box<[u8]>,
    any_header: bool,
    /// Lowercase.
    headers: Vec<Box<[u8]>>,
    headers_value: Box<[u8]>,
    expose_value: Box<[u8]>,
    credentials: bool,
    max_age_value: Box<[u8]>,
}

/// Up to eight header fields to add, borrowing from the policy and the request.
#[derive(Debug, Clone, Copy)]
pub struct CorsHeaders<'a> {
    fields: [(&'static str, &'a [u8]); 8],
    len: usize,
}

impl<'a> CorsHeaders<'a> {
    fn new() -> Self {
        CorsHeaders {
            fields: [("", &[]); 8],
            len: 0,
        }
    }

    fn push(&mut self, name: &'static str, value: &'a [u8]) {
        self.fields[self.len] = (name, value);
        self.len += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'a [u8])> + '_ {
        self.fields[..self.len].iter().copied()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of field `name`, if present (for tests and logs).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Why a preflight was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightRefusal {
    Origin,
    Method,
    Header,
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &[u8], origin: Option<&[u8]>, request_method: Option<&[u8]>) -> bool {
    method == b"OPTIONS" && origin.is_some() && request_method.is_some()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '@'])
}

fn join(items: &[Box<[u8]>]) -> Box<[u8]> {
    items.join(&b", "[..]).into()
}

impl Cors {
    pub fn new(cfg: &CorsConfig) -> Result<Cors, Vec<CorsConfigError>> {
        let mut errors = Vec::new();
        let mut err =
            |field: String, message: String| errors.push(CorsConfigError { field, message });
        let any_origin = cfg.origins.iter().any(|o| o == "*");
        if cfg.origins.is_empty() {
            err(
                "origins".into(),
                "at least one origin (or \"*\") is required".into(),
            );
        }
        if any_origin && cfg.credentials {
            err(
                "origins".into(),
                "\"*\" cannot be combined with credentials = true; list the origins".into(),
            );
        }
        let mut origins = Vec::new();
        for (i, o) in cfg.origins.iter().enumerate() {
            if o == "*" {
                continue;
            }
            if valid_origin(o) {
                origins.push(o.to_ascii_lowercase().into_bytes().into_boxed_slice());
            } else {
                err(
                    format!("origins[{i}]"),
                    format!("{o:?} is not an origin like \"https://app.example:8443\""),
                );
            }
        }
        let mut list = |name: &str, items: &[String], lower: bool| {
            let mut out = Vec::new();
            for (i, s) in items.iter().enumerate() {
                if s == "*" {
                    continue;
                }
                if is_token(s) {
                    let s = if lower {
                        s.to_ascii_lowercase()
                    } else {
                        s.clone()
                    };
                    out.push(s.into_bytes().into_boxed_slice());
                } else {
                    err(format!("{name}[{i}]"), format!("{s:?} is not a token"));
                }
            }
            out
        };
        let methods = list("methods", &cfg.methods, false);
        let headers = list("headers", &cfg.headers, true);
        let expose = list("expose_headers", &cfg.expose_headers, false);
        if !errors.is_empty() {
            return Err(errors);
        }
        let any_method = cfg.methods.iter().any(|m| m == "*");
        let any_header = cfg.headers.iter().any(|h| h == "*");
        let star = |any: bool, items: &[Box<[u8]>]| {
            if any && !cfg.credentials {
                Box::from(&b"*"[..])
            } else {
                join(items)
            }
        };
        Ok(Cors {
            any_origin,
            methods_value: star(any_method, &methods),
            headers_value: star(any_header, &headers),
            expose_value: join(&expose),
            origins,
            any_method,
            methods,
            any_header,
            headers,
            credentials: cfg.credentials,
            max_age_value: cfg
                .max_age
                .map(|d| d.as_secs().to_string().into_bytes().into_boxed_slice())
                .unwrap_or_default(),
        })
    }

    fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Whether the answer depends on the request's `Origin` (then `Vary: Origin` is due).
    fn varies(&self) -> bool {
        !self.any_origin || self.credentials
    }

    fn allow_origin<'a>(&'a self, origin: &'a [u8], out: &mut CorsHeaders<'a>) {
        if self.any_origin && !self.credentials {
            out.push("Access-Control-Allow-Origin", b"*");
        } else {
            out.push("Access-Control-Allow-Origin", origin);
        }
        if self.credentials {
            out.push("Access-Control-Allow-Credentials", b"true");
        }
    }

    /// Answer a preflight: the headers for a 204, or why it is refused (answer 403, no CORS
    /// headers). `request_headers` is the `Access-Control-Request-Headers` value, if any.
    pub fn preflight<'a>(
        &'a self,
        origin: &'a [u8],
        request_method: &'a [u8],
        request_headers: Option<&'a [u8]>,
    ) -> Result<CorsHeaders<'a>, PreflightRefusal> {
        if !self.origin_allowed(origin) {
            return Err(PreflightRefusal::Origin);
        }
        let safelisted = matches!(request_method, b"GET" | b"HEAD" | b"POST");
        if !(safelisted || self.any_method || self.methods.iter().any(|m| **m == *request_method)) {
            return Err(PreflightRefusal::Method);
        }
        let requested = request_headers
            .unwrap_or_default()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|h| !h.is_empty());
        if !self.any_header {
            for h in requested {
                if !self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)) {
                    return Err(PreflightRefusal::Header);
                }
            }
        }
        let mut out = CorsHeaders::new();
        self.allow_origin(origin, &mut out);
        let methods: &[u8] = if self.any_method && self.credentials {
            request_method
        } else {
            &self.methods_value
        };
        if !methods.is_empty() {
            out.push("Access-Control-Allow-Methods", methods);
        }
        let headers: &[u8] = match request_headers {
            // Reflect exactly what was asked when any header is allowed with credentials.
            Some(h) if self.any_header && self.credentials => h.trim_ascii(),
            _ => &self.headers_value,
        };
        if !headers.is_empty() {
            out.push("Access-Control-Allow-Headers", headers);
        }
        if !self.max_age_value.is_empty() {
            out.push("Access-Control-Max-Age", &self.max_age_value);
        }
        if self.varies() {
            out.push("Vary", b"Origin");
        }
        out.push(
            "Vary",
            b"Access-Control-Request-Method, Access-Control-Request-Headers",
        );
        Ok(out)
    }

    /// Headers to add to an actual (non-preflight) response.
    pub fn actual<'a>(&'a self, origin: Option<&'a [u8]>) -> CorsHeaders<'a> {
        let mut out = CorsHeaders::new();
        if let Some(origin) = origin.filter(|o| self.origin_allowed(o)) {
            self.allow_origin(origin, &mut out);
            if !self.expose_value.is_empty() {
                out.push("Access-Control-Expose-Headers", &self.expose_value);
            }
        }
        if self.varies() {
            out.push("Vary", b"Origin");
        }
        out
    }
}

/// The TOML table: every field optional (defaults from [`CorsConfig`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    origins: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    headers: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    credentials: Option<bool>,
    max_age: Option<String>,
}

impl BuiltIn for Cors {
    type Spec = CorsConfig;
    const NAME: &'static str = "cors";
    const ABOUT: &'static str = "answer preflights, add Access-Control-* to responses";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<CorsConfig> {
        let r: RawCors = cx.read(body)?;
        let d = CorsConfig::default();
        let max_age = match r.max_age {
            None => d.max_age,
            Some(t) => Some(cx.duration_or_zero("max_age", Some(t), Duration::ZERO)),
        };
        Some(CorsConfig {
            origins: r.origins.unwrap_or(d.origins),
            methods: r.methods.unwrap_or(d.methods),
            headers: r.headers.unwrap_or(d.headers),
            expose_headers: r.expose_headers.unwrap_or(d.expose_headers),
            credentials: r.credentials.unwrap_or(d.credentials),
            max_age,
        })
    }

    fn build(c: &CorsConfig, _: &BuildContext<'_>) -> Result<Cors, Vec<String>> {
        Cors::new(c).map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// The chain answers preflights, and the gateway answers for the route's
    /// policy: an upstream's own `Access-Control-*` would contradict it.
    fn declare(&mut self, d: &mut Declare<'_>) {
        d.edits.answers_preflights = true;
        d.edits.claims = true;
        d.edits.before = true;
        for name in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
        ] {
            d.own_response(name);
        }
    }

    /// A preflight is the CORS filters' alone: it carries no credentials, so
    /// an authentication filter must not judge it.
    fn claims(&self, cx: &Cx<'_, '_>) -> bool {
        is_preflight(
            cx.req.method.as_bytes(),
            cx.header(b"origin"),
            cx.header(b"access-control-request-method"),
        )
    }

    /// The headers of an actual (not preflight) request's response, added
    /// before any filter decides, so refusals carry them too.
    fn before(&self, cx: &mut Cx<'_, '_>) {
        for (n, v) in self.actual(cx.header(b"origin")).iter() {
            line(cx.response, n.as_bytes(), v);
        }
    }

    /// Answers a preflight: 204 with the allowed origin, methods and headers,
    /// or 403. Other requests go on (their headers came from `before`).
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        let origin = cx.header(b"origin");
        let wanted = cx.header(b"access-control-request-method");
        if !is_preflight(cx.req.method.as_bytes(), origin, wanted) {
            return Flow::Continue;
        }
        let (Some(origin), Some(wanted)) = (origin, wanted) else {
            return Flow::answer(403);
        };
        match self.preflight(origin, wanted, cx.header(b"access-control-request-headers")) {
            Ok(h) => {
                for (n, v) in h.iter() {
                    line(cx.response, n.as_bytes(), v);
                }
                Flow::answer(204)
            }
            Err(_) => Flow::answer(403),
        }
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsConfig {
            origins: origins.iter().map(|s| s.to_string()).collect(),
            methods: vec!["GET".into(), "PUT".into(), "DELETE".into()],
            headers: vec!["Content-Type".into(), "X-Trace".into()],
            expose_headers: vec!["X-Request-Id".into()],
            credentials,
            max_age: Some(Duration::from_secs(300)),
        })
        .unwrap()
    }

    fn fields(h: &CorsHeaders) -> Vec<String> {
        h.iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect()
    }

    #[test]
    fn is_preflight_table() {
        let cases: &[(&[u8], Option<&[u8]>, Option<&[u8]>, bool)] = &[
            (b"OPTIONS", Some(b"https://a"), Some(b"PUT"), true),
            (b"OPTIONS", Some(b"https://a"), None, false),
            (b"OPTIONS", None, Some(b"PUT"), false),
            (b"GET", Some(b"https://a"), Some(b"PUT"), false),
        ];
        for (m, o, r, want) in cases {
            assert_eq!(is_preflight(m, *o, *r), *want);
        }
    }

    #[test]
    fn preflight_table() {
        let c = cors(&["https://app.example", "http://localhost:3000"], true);
        let cases: &[(&[u8], &[u8], Option<&[u8]>, Result<(), PreflightRefusal>)] = &[
            (
                b"https://app.example",
                b"PUT",
                Some(b"content-type, x-trace"),
                Ok(()),
            ),
            (b"HTTPS://APP.EXAMPLE", b"PUT", None, Ok(())),
            (b"http://localhost:3000", b"POST", None, Ok(())),
            (
                b"https://evil.example",
                b"PUT",
                None,
                Err(PreflightRefusal::Origin),
            ),
            (
                b"https://app.example",
                b"PATCH",
                None,
                Err(PreflightRefusal::Method),
            ),
            (
                b"https://app.example",
                b"put",
                None,
                Err(PreflightRefusal::Method),
            ),
            (
                b"https://app.example",
                b"GET",
                Some(b"x-other"),
                Err(PreflightRefusal::Header),
            ),
            (b"https://app.example", b"GET", Some(b" , "), Ok(())),
        ];
        for (origin, method, headers, want) in cases {
            let got = c.preflight(origin, method, *headers).map(|_| ());
            assert_eq!(
                got,
                *want,
                "{:?} {:?}",
                String::from_utf8_lossy(origin),
                headers
            );
        }
    }

    #[test]
    fn preflight_answer_with_credentials_echoes_the_origin() {
        let c = cors(&["https://app.example"], true);
        let h = c
            .preflight(b"https://app.example", b"PUT", Some(b"X-Trace"))
            .unwrap();
        assert_eq!(
            fields(&h),
            vec![
                "Access-Control-Allow-Origin: https://app.example",
                "Access-Control-Allow-Credentials: true",
                "Access-Control-Allow-Methods: GET, PUT, DELETE",
                "Access-Control-Allow-Headers: content-type, x-trace",
                "Access-Control-Max-Age: 300",
                "Vary: Origin",
                "Vary: Access-Control-Request-Method, Access-Control-Request-Headers",
            ]
        );
    }

    #[test]
    fn wildcards_without_credentials_use_star_and_no_vary_origin() {
        let c = Cors::new(&CorsConfig {
            origins: vec!["*".into()],
            methods: vec!["*".into()],
            headers: vec!["*".into()],
            ..CorsConfig::default()
        })
        .unwrap();
        let h = c
            .preflight(b"https://any.example", b"PATCH", Some(b"x-anything"))
            .unwrap();
        assert_eq!(h.get("Access-Control-Allow-Origin"), Some(&b"*"[..]));
        assert_eq!(h.get("Access-Control-Allow-Methods"), Some(&b"*"[..]));
        assert_eq!(h.get("Access-Control-Allow-Headers"), Some(&b"*"[..]));
        assert!(!fields(&h).contains(&"Vary: Origin".to_string()));
        let a = c.actual(Some(b"https://any.example"));
        assert_eq!(fields(&a), vec!["Access-Control-Allow-Origin: *"]);
        assert!(c.actual(None).is_empty());
    }

    #[test]
    fn wildcards_with_credentials_reflect_the_request() {
        let c = Cors::new(&CorsConfig {
            origins: vec!["https://app.example".into()],
            methods: vec!["*".into()],
            headers: vec!["*".into()],
            credentials: true,
            ..CorsConfig::default()
        })
        .unwrap();
        let h = c
            .preflight(b"https://app.example", b"PATCH", Some(b"X-A, X-B "))
            .unwrap();
        assert_eq!(h.get("Access-Control-Allow-Methods"), Some(&b"PATCH"[..]));
        assert_eq!(
            h.get("Access-Control-Allow-Headers"),
            Some(&b"X-A, X-B"[..])
        );
        for (_, v) in h.iter() {
            assert_ne!(v, b"*", "never * with credentials");
        }
    }

    #[test]
    fn actual_response_headers_table() {
        let listed = cors(&["https://app.example"], false);
        let cases: &[(&Cors, Option<&[u8]>, &[&str])] = &[
            (
                &listed,
                Some(b"https://app.example"),
                &[
                    "Access-Control-Allow-Origin: https://app.example",
                    "Access-Control-Expose-Headers: X-Request-Id",
                    "Vary: Origin",
                ],
            ),
            (&listed, Some(b"https://evil.example"), &["Vary: Origin"]),
            (&listed, None, &["Vary: Origin"]),
        ];
        for (c, origin, want) in cases {
            assert_eq!(fields(&c.actual(*origin)), *want, "{origin:?}");
        }
    }

    #[test]
    fn config_errors_table() {
        let cases: &[(CorsConfig, &str)] = &[
            (
                CorsConfig {
                    origins: vec!["*".into()],
                    credentials: true,
                    ..CorsConfig::default()
                },
                "origins: \"*\" cannot be combined with credentials",
            ),
            (CorsConfig::default(), "origins: at least one origin"),
            (
                CorsConfig {
                    origins: vec!["https://a.example/path".into()],
                    ..CorsConfig::default()
                },
                "origins[0]: \"https://a.example/path\" is not an origin",
            ),
            (
                CorsConfig {
                    origins: vec!["a.example".into()],
                    ..CorsConfig::default()
                },
                "origins[0]: \"a.example\" is not an origin",
            ),
            (
                CorsConfig {
                    origins: vec!["*".into()],
                    headers: vec!["X Bad".into()],
                    ..CorsConfig::default()
                },
                "headers[0]: \"X Bad\" is not a token",
            ),
        ];
        for (cfg, want) in cases {
            let errs = Cors::new(cfg).unwrap_err();
            assert!(errs[0].to_string().starts_with(want), "{errs:?}");
        }
    }
}
