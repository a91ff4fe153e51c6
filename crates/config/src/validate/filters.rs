//! Filter tables → [`FilterSpec`]s. A table's `type` picks the filter from the
//! filters registry, the filter reads the rest of its table itself (its syntax
//! lives in its own file in `crates/filters`), and the result is built once
//! against its route, so that every problem (an unknown type or key, a bad
//! value, a key file that cannot be read, a template parameter the route does
//! not capture) is reported with its field path. Nothing here names a filter.
//!
//! Key files (`pem_file`, `jwks_file`) are read when the configuration is
//! loaded; a relative path is relative to the current directory.

use super::Errors;
use crate::raw::RawFilter;
use shardgate_filters::filter::{BuildContext, FilterSpec, REGISTRY};
use shardgate_filters::syntax::ParseCx;

/// Where a chain is configured and what its filters may refer to.
pub(super) struct Scope<'a> {
    /// `routes[2]` or `tenants[0]`.
    pub path: &'a str,
    /// The parameters the route captures (none for a tenant's chain).
    pub params: &'a [&'a str],
    /// Whether requests through the chain have a tenant (`key = "tenant"`).
    pub tenant: bool,
}

/// Reads and checks a chain; every problem goes to `e`.
pub(super) fn chain(e: &mut Errors, scope: &Scope<'_>, raw: &[RawFilter]) -> Vec<FilterSpec> {
    let mut specs = Vec::new();
    for (j, table) in raw.iter().enumerate() {
        let path = format!("{}.filters[{j}]", scope.path);
        let before = e.0.len();
        let Some(spec) = spec(e, &path, scope, table) else {
            continue;
        };
        // A filter with refused fields is not built as well: that would report them twice.
        if e.0.len() == before
            && let Err(problems) = spec.build(&BuildContext {
                shards: 1,
                route_params: scope.params,
            })
        {
            for p in problems {
                e.push(&path, p.message);
            }
        }
        specs.push(spec);
    }
    specs
}

/// The registered filter names, for error messages.
fn known() -> String {
    let names: Vec<&str> = REGISTRY.iter().map(|(name, _, _)| *name).collect();
    names.join(", ")
}

fn spec(e: &mut Errors, path: &str, scope: &Scope<'_>, raw: &RawFilter) -> Option<FilterSpec> {
    let mut body = raw.0.clone();
    let type_path = format!("{path}.type");
    let name = match body.remove("type") {
        Some(toml::Value::String(name)) => name,
        Some(other) => {
            e.push(
                type_path,
                format!("expected a filter name, got {other}; known: {}", known()),
            );
            return None;
        }
        None => {
            e.push(type_path, format!("required; known: {}", known()));
            return None;
        }
    };
    let mut problems = Vec::new();
    let mut cx = ParseCx {
        path,
        owner: scope.path,
        tenant: scope.tenant,
        problems: &mut problems,
        // Key files (`pem_file`, `jwks_file`), relative to the current directory.
        read: &|file| crate::read_text(file.as_ref(), crate::MAX_KEY_FILE),
    };
    let parsed = FilterSpec::parse(&name, &mut cx, toml::Value::Table(body));
    for (field, message) in problems {
        e.push(field, message);
    }
    match parsed {
        Some(spec) => spec,
        None => {
            e.push(
                type_path,
                format!("unknown filter {name:?}; known: {}", known()),
            );
            None
        }
    }
}
