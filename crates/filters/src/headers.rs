//! Header operations: `add`, `set` and `remove` lists, one set for the request and one for the
//! response, validated once at config time and applied without allocating.
//!
//! Meaning, in order: `remove` drops every field with that name; `set` drops every field with
//! that name and appends one line; `add` appends a line whatever is there. The proxy owns its
//! header model, so application is split in two questions it can ask while re-encoding a head:
//! [`HeaderOps::drops`] (which existing fields to skip, by index) and [`HeaderOps::appends`]
//! (which lines to write after them).
//!
//! Names must be HTTP tokens and are compared case-insensitively; values must not hold CR, LF
//! or NUL. The framing and connection fields (`content-length`, `transfer-encoding`,
//! `connection`, `keep-alive`, `upgrade`, `te`, `trailer`, `proxy-connection`) are refused: the
//! proxy sets those itself, and letting config change them would let it desynchronise the two
//! sides of a connection.

use crate::chain::{Cx, Declare, Flow, line};
use crate::filter::{BuildContext, BuiltIn};
use crate::syntax::ParseCx;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Fields no header operation may touch.
pub const PROTECTED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    // Written by the proxy on every forwarded request; a second line would
    // make them ambiguous.
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "expect",
];

/// Whether no filter may write, set or remove the field `name` (any case):
/// the proxy owns it (see [`PROTECTED`]).
pub fn is_managed(name: &str) -> bool {
    PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// One side's raw lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOpsConfig {
    pub add: Vec<(String, String)>,
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// A configuration problem with its field path (`request.set[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderOpsError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for HeaderOpsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for HeaderOpsError {}

/// Whether `name` is an HTTP token (RFC 9110 `tchar`s).
pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can go in a header line (no CR, LF, NUL; other controls except tab refused
/// too).
pub fn is_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A header line to append: name, value.
type Line = (Box<[u8]>, Box<[u8]>);

/// Validated operations for one side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// Lowercase names of fields to drop (`remove` and `set`).
    drop: Vec<Box<[u8]>>,
    /// Lines to append (`set` first, then `add`), names as configured.
    append: Vec<Line>,
}

impl HeaderOps {
    /// Validate `cfg`; field paths start with `side` (`"request"` or `"response"`).
    pub fn new(side: &str, cfg: &HeaderOpsConfig) -> Result<HeaderOps, Vec<HeaderOpsError>> {
        let mut errors = Vec::new();
        let mut name_ok = |field: String, name: &str| {
            let lower = name.to_ascii_lowercase();
            if !is_token(name.as_bytes()) {
                errors.push(HeaderOpsError {
                    field,
                    message: format!("{name:?} is not a header name"),
                });
                false
            } else if is_managed(&lower) {
                errors.push(HeaderOpsError {
                    field,
                    message: format!("{name:?} is managed by the proxy and cannot be changed"),
                });
                false
            } else {
                true
            }
        };
        let mut ops = HeaderOps::default();
        let mut bad_values = Vec::new();
        for (list, items) in [("set", &cfg.set), ("add", &cfg.add)] {
            for (i, (name, value)) in items.iter().enumerate() {
                let field = format!("{side}.{list}[{i}]");
                let ok = name_ok(field.clone(), name);
                if !is_value(value.as_bytes()) {
                    bad_values.push(HeaderOpsError {
                        field,
                        message: format!("value {value:?} holds control characters"),
                    });
                } else if ok {
                    if list == "set" {
                        ops.drop.push(name.to_ascii_lowercase().into_bytes().into());
                    }
                    ops.append
                        .push((name.as_bytes().into(), value.trim().as_bytes().into()));
                }
            }
        }
        for (i, name) in cfg.remove.iter().enumerate() {
            if name_ok(format!("{side}.remove[{i}]"), name) {
                ops.drop.push(name.to_ascii_lowercase().into_bytes().into());
            }
        }
        errors.extend(bad_values);
        if errors.is_empty() {
            ops.drop.sort();
            ops.drop.dedup();
            Ok(ops)
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.append.is_empty()
    }

    /// Lower-case names of the fields these operations drop (`remove` and `set`).
    pub fn dropped(&self) -> impl Iterator<Item = &Box<[u8]>> {
        self.drop.iter()
    }

    /// Whether an existing field named `name` goes.
    pub fn should_drop(&self, name: &[u8]) -> bool {
        self.drop.iter().any(|d| d.eq_ignore_ascii_case(name))
    }

    /// Indices (in the order given) of the existing fields to skip.
    pub fn drops<'s, 'n>(
        &'s self,
        names: impl Iterator<Item = &'n [u8]> + 's,
    ) -> impl Iterator<Item = usize> + 's {
        names
            .enumerate()
            .filter(|(_, n)| self.should_drop(n))
            .map(|(i, _)| i)
    }

    /// Lines to write after the kept fields.
    pub fn appends(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.append.iter().map(|(n, v)| (&**n, &**v))
    }
}

/// Operations for both sides of an exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// `headers`: add/set/remove on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadersConfig {
    pub request: HeaderOpsConfig,
    pub response: HeaderOpsConfig,
}

/// The TOML table: `request` and `response`, each with `set`, `add`
/// (name -> value, read in key order) and `remove` (names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    request: Option<RawHeaderOps>,
    response: Option<RawHeaderOps>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderOps {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

impl BuiltIn for HeaderRules {
    type Spec = HeadersConfig;
    const NAME: &'static str = "headers";
    const ABOUT: &'static str = "add/set/remove request and response headers";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<HeadersConfig> {
        let r: RawHeaders = cx.read(body)?;
        let d = HeadersConfig::default();
        let ops = |o: RawHeaderOps| HeaderOpsConfig {
            add: o.add.into_iter().collect(),
            set: o.set.into_iter().collect(),
            remove: o.remove,
        };
        Some(HeadersConfig {
            request: r.request.map_or(d.request, ops),
            response: r.response.map_or(d.response, ops),
        })
    }

    fn build(c: &HeadersConfig, _: &BuildContext<'_>) -> Result<HeaderRules, Vec<String>> {
        HeaderRules::new(&c.request, &c.response)
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// The fields set or removed are the chain's on each side; the lines it
    /// adds go on every request and response of the route.
    fn declare(&mut self, d: &mut Declare<'_>) {
        let edits = &mut *d.edits;
        edits.request_drop.extend(self.request.dropped().cloned());
        edits.response_drop.extend(self.response.dropped().cloned());
        for (n, v) in self.request.appends() {
            line(&mut edits.request_add, n, v);
        }
        for (n, v) in self.response.appends() {
            line(&mut edits.response_add, n, v);
        }
    }

    /// Nothing per request: its edits were declared.
    fn on_request<'f>(&'f self, _: &mut Cx<'_, '_>) -> Flow<'f> {
        Flow::Continue
    }
}

impl HeaderRules {
    pub fn new(
        request: &HeaderOpsConfig,
        response: &HeaderOpsConfig,
    ) -> Result<HeaderRules, Vec<HeaderOpsError>> {
        match (
            HeaderOps::new("request", request),
            HeaderOps::new("response", response),
        ) {
            (Ok(request), Ok(response)) => Ok(HeaderRules { request, response }),
            (a, b) => Err(a
                .err()
                .unwrap_or_default()
                .into_iter()
                .chain(b.err().unwrap_or_default())
                .collect()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// Apply `ops` to a simple header list the way the proxy would.
    fn apply(ops: &HeaderOps, fields: &[(&str, &str)]) -> Vec<String> {
        let drops: Vec<usize> = ops
            .drops(fields.iter().map(|(n, _)| n.as_bytes()))
            .collect();
        let mut out: Vec<String> = fields
            .iter()
            .enumerate()
            .filter(|(i, _)| !drops.contains(i))
            .map(|(_, (n, v))| format!("{n}: {v}"))
            .collect();
        out.extend(ops.appends().map(|(n, v)| {
            format!(
                "{}: {}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            )
        }));
        out
    }

    #[test]
    fn plan_table() {
        let ops = HeaderOps::new(
            "request",
            &HeaderOpsConfig {
                add: pairs(&[("X-Via", "gw"), ("Accept", "text/plain")]),
                set: pairs(&[("X-Env", "prod")]),
                remove: vec!["Cookie".into(), "x-debug".into()],
            },
        )
        .unwrap();
        let cases: &[(&[(&str, &str)], &[&str])] = &[
            (&[], &["X-Env: prod", "X-Via: gw", "Accept: text/plain"]),
            (
                &[
                    ("Host", "a"),
                    ("x-env", "dev"),
                    ("COOKIE", "s=1"),
                    ("X-Env", "x"),
                    ("Accept", "*/*"),
                ],
                &[
                    "Host: a",
                    "Accept: */*",
                    "X-Env: prod",
                    "X-Via: gw",
                    "Accept: text/plain",
                ],
            ),
            (
                &[("X-Debug", "1")],
                &["X-Env: prod", "X-Via: gw", "Accept: text/plain"],
            ),
        ];
        for (fields, want) in cases {
            assert_eq!(apply(&ops, fields), *want, "{fields:?}");
        }
        assert!(HeaderOps::default().is_empty());
    }

    #[test]
    fn validation_names_every_bad_entry() {
        let errs = HeaderRules::new(
            &HeaderOpsConfig {
                add: pairs(&[("Bad Name", "v"), ("X-Ok", "a\r\nInjected: 1")]),
                set: pairs(&[("Content-Length", "0")]),
                remove: vec!["Transfer-Encoding".into(), "".into()],
            },
            &HeaderOpsConfig {
                set: pairs(&[("X-Nul", "a\0b")]),
                ..HeaderOpsConfig::default()
            },
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "request.set[0]: \"Content-Length\" is managed by the proxy and cannot be changed",
                "request.add[0]: \"Bad Name\" is not a header name",
                "request.remove[0]: \"Transfer-Encoding\" is managed by the proxy and cannot be changed",
                "request.remove[1]: \"\" is not a header name",
                "request.add[1]: value \"a\\r\\nInjected: 1\" holds control characters",
                "response.set[0]: value \"a\\0b\" holds control characters",
            ]
        );
    }

    #[test]
    fn token_and_value_tables() {
        for (name, ok) in [
            ("x-a", true),
            ("X_A.b~", true),
            ("", false),
            ("a:b", false),
            ("a b", false),
        ] {
            assert_eq!(is_token(name.as_bytes()), ok, "{name:?}");
        }
        for (value, ok) in [
            ("plain", true),
            ("tab\there", true),
            ("", true),
            ("cr\r", false),
            ("del\x7f", false),
        ] {
            assert_eq!(is_value(value.as_bytes()), ok, "{value:?}");
        }
    }
}
