//! Reloading over a running configuration with tenants kept apart: when the
//! only errors in a new file are inside some tenants' sections (their
//! `[[tenants]]` entry, or routes that name them), those tenants keep the
//! sections they had and everything else in the new file applies. One
//! tenant's mistake then neither takes effect nor holds back anyone else's
//! change. Any other error refuses the file as a whole.

use crate::error::{ConfigError, ConfigErrors};
use crate::model::Config;
use crate::raw::RawConfig;
use std::collections::BTreeMap;
use toml::{Table, Value};

/// A configuration loaded over a running one.
#[derive(Debug)]
pub struct Reloaded {
    pub config: Config,
    /// Tenants whose new sections were refused, each with its errors; they
    /// keep their previous sections (a tenant that is new is left out).
    pub kept: Vec<(String, Vec<ConfigError>)>,
    /// The text now in effect: the new text, or the new text with the kept
    /// tenants' previous sections. The next reload falls back to this.
    pub effective: String,
}

/// Parses and validates `text` to replace `previous` (the effective text of
/// the configuration being served).
pub fn reload_toml(text: &str, previous: &str) -> Result<Reloaded, ConfigErrors> {
    let errors = match crate::from_toml(text) {
        Ok(config) => {
            return Ok(Reloaded {
                config,
                kept: Vec::new(),
                effective: text.to_string(),
            });
        }
        Err(e) => e,
    };
    let (Ok(mut new), Ok(old)) = (text.parse::<Table>(), previous.parse::<Table>()) else {
        return Err(errors);
    };
    // Only tenants the new file still declares: a route naming a tenant
    // that is gone must not bring the old one back.
    let declared = |name: &str| {
        new.get("tenants")
            .and_then(Value::as_array)
            .is_some_and(|list| {
                list.iter()
                    .any(|t| t.get("name").and_then(Value::as_str) == Some(name))
            })
    };
    let mut broken: BTreeMap<String, Vec<ConfigError>> = BTreeMap::new();
    for e in &errors.0 {
        match tenant_of(&new, &e.path) {
            Some(t) if declared(&t) => broken.entry(t).or_default().push(e.clone()),
            _ => return Err(errors),
        }
    }
    for (list, key) in [("tenants", "name"), ("routes", "tenant")] {
        let is_broken = |v: &Value| {
            v.get(key)
                .and_then(Value::as_str)
                .is_some_and(|t| broken.contains_key(t))
        };
        let mut items = match new.remove(list) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        items.retain(|v| !is_broken(v));
        if let Some(previous) = old.get(list).and_then(Value::as_array) {
            items.extend(previous.iter().filter(|v| is_broken(v)).cloned());
        }
        if !items.is_empty() {
            new.insert(list.to_string(), Value::Array(items));
        }
    }
    let Ok(effective) = toml::to_string(&new) else {
        return Err(errors);
    };
    let merged = Value::Table(new)
        .try_into::<RawConfig>()
        .ok()
        .and_then(|raw| crate::from_raw(raw).ok());
    match merged {
        Some(config) => Ok(Reloaded {
            config,
            kept: broken.into_iter().collect(),
            effective,
        }),
        None => Err(errors),
    }
}

/// The tenant an error belongs to: `tenants[i]...` is tenant `i`'s,
/// `routes[i]...` belongs to the tenant route `i` names. `None` for errors
/// outside every tenant.
fn tenant_of(table: &Table, path: &str) -> Option<String> {
    let (list, rest) = path.split_once('[')?;
    let index: usize = rest.split_once(']')?.0.parse().ok()?;
    let item = table.get(list)?.as_array()?.get(index)?;
    let key = match list {
        "tenants" => "name",
        "routes" => "tenant",
        _ => return None,
    };
    item.get(key)?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[[listeners]]\naddress = \"127.0.0.1:8080\"\n\
                        [upstreams.app]\nendpoints = [\"127.0.0.1:9000\"]\n";

    fn tenant(name: &str, filters: &str, prefix: &str) -> String {
        format!(
            "[[tenants]]\nname = \"{name}\"\nhosts = [\"{name}.example\"]\nfilters = [{filters}]\n\
             [[routes]]\nname = \"{name}-r\"\ntenant = \"{name}\"\nprefix = \"{prefix}\"\nupstream = \"app\"\n"
        )
    }

    fn prefixes(c: &Config) -> Vec<(String, String)> {
        c.routes
            .iter()
            .map(|r| match &r.path {
                crate::PathMatch::Prefix(p) | crate::PathMatch::Exact(p) => {
                    (r.name.clone(), p.clone())
                }
            })
            .collect()
    }

    #[test]
    fn a_valid_file_applies_whole() {
        let old = format!("{BASE}{}", tenant("a", "", "/v1"));
        let new = format!("{BASE}{}", tenant("a", "", "/v2"));
        let r = reload_toml(&new, &old).unwrap();
        assert!(r.kept.is_empty());
        assert_eq!(r.effective, new);
    }

    #[test]
    fn a_broken_tenant_keeps_its_sections_while_the_rest_applies() {
        let old = format!("{BASE}{}{}", tenant("a", "", "/v1"), tenant("b", "", "/v1"));
        let new = format!(
            "{BASE}{}{}",
            tenant("a", "{ type = \"rate-limit\", rate = -1 }", "/v2"),
            tenant("b", "", "/v2")
        );
        let r = reload_toml(&new, &old).unwrap();
        assert_eq!(r.kept.len(), 1);
        assert_eq!(r.kept[0].0, "a");
        assert!(r.kept[0].1[0].path.starts_with("tenants[0].filters[0]"));
        let mut got = prefixes(&r.config);
        got.sort();
        assert_eq!(
            got,
            [("a-r".into(), "/v1".into()), ("b-r".into(), "/v2".into())]
        );
        // The next reload falls back to what is in effect, not to the broken text.
        let again = reload_toml(&new, &r.effective).unwrap();
        assert_eq!(prefixes(&again.config).len(), 2);
        assert!(
            again.config.tenants[again.config.tenants.len() - 1]
                .filters
                .is_empty()
        );
    }

    #[test]
    fn a_broken_route_of_a_tenant_is_the_tenant_s() {
        let old = format!("{BASE}{}", tenant("a", "", "/v1"));
        let new = format!(
            "{BASE}{}[[routes]]\nname = \"a-bad\"\ntenant = \"a\"\nprefix = \"/x\"\nupstream = \"nope\"\n\
             [[routes]]\nname = \"plain\"\nprefix = \"/plain\"\nupstream = \"app\"\n",
            tenant("a", "", "/v2")
        );
        let r = reload_toml(&new, &old).unwrap();
        assert_eq!(r.kept[0].0, "a");
        let mut got = prefixes(&r.config);
        got.sort();
        assert_eq!(
            got,
            [
                ("a-r".into(), "/v1".into()),
                ("plain".into(), "/plain".into())
            ]
        );
    }

    #[test]
    fn errors_outside_tenants_refuse_the_whole_file() {
        let old = format!("{BASE}{}", tenant("a", "", "/v1"));
        let new = format!(
            "{BASE}{}[timeouts]\nconnect = \"soon\"\n",
            tenant("a", "{ type = \"rate-limit\", rate = -1 }", "/v2")
        );
        let e = reload_toml(&new, &old).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(reload_toml("not toml [", &old).is_err());
    }

    #[test]
    fn a_route_of_a_removed_tenant_does_not_bring_it_back() {
        let old = format!("{BASE}{}", tenant("a", "", "/v1"));
        let new = format!(
            "{BASE}[[routes]]\nname = \"a-r\"\ntenant = \"a\"\nprefix = \"/v2\"\nupstream = \"app\"\n"
        );
        let e = reload_toml(&new, &old).unwrap_err();
        assert!(e.to_string().contains("unknown tenant \"a\""), "{e}");
    }

    #[test]
    fn a_new_broken_tenant_is_left_out() {
        let old = format!("{BASE}{}", tenant("a", "", "/v1"));
        let new = format!(
            "{BASE}{}{}",
            tenant("a", "", "/v2"),
            tenant("c", "{ type = \"nope\" }", "/v2")
        );
        let r = reload_toml(&new, &old).unwrap();
        assert_eq!(r.kept[0].0, "c");
        assert_eq!(prefixes(&r.config), [("a-r".into(), "/v2".into())]);
        assert_eq!(r.config.tenants.len(), 1);
    }
}
