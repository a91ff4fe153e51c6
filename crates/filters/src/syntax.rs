//! Reading a filter's TOML table. Each filter reads its own table (the `type`
//! key removed) in its own file; this module holds what they share: where
//! the table is (for error paths), and readers that report every problem
//! with its field path instead of stopping at the first.

use serde::de::DeserializeOwned;
use shardgate_common::units::{
    RawSize, int_between, or_default, parse_duration, positive_duration, size_of,
};
use std::time::Duration;

/// Where a filter table is, and where its problems go.
pub struct ParseCx<'a> {
    /// The table's path: `routes[2].filters[0]`.
    pub path: &'a str,
    /// Whose chain it is: `routes[2]` or `tenants[0]`.
    pub owner: &'a str,
    /// Requests through the chain have a tenant.
    pub tenant: bool,
    /// `(field path, message)` for every problem found.
    pub problems: &'a mut Vec<(String, String)>,
    /// Reads a file the table names (key files), so that this crate does no
    /// I/O: the configuration loader passes its file reader.
    pub read: &'a dyn Fn(&str) -> std::io::Result<String>,
}

impl ParseCx<'_> {
    /// A problem at `field` of the table (`""`: the table itself).
    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        let path = if field.is_empty() {
            self.path.to_string()
        } else {
            format!("{}.{field}", self.path)
        };
        self.problems.push((path, message.into()));
    }

    /// The table as the filter's raw struct; unknown keys and wrong types
    /// are reported against the key when toml names it.
    pub fn read<T: DeserializeOwned>(&mut self, body: toml::Value) -> Option<T> {
        body.try_into()
            .map_err(|err: toml::de::Error| {
                // Without a span (a value, not text) the error reads "message"
                // or "message\nin `key.key`".
                let text = err.to_string();
                let text = text.trim_end();
                let keyed = text
                    .rsplit_once("\nin `")
                    .and_then(|(message, keys)| Some((message, keys.strip_suffix('`')?)));
                match keyed {
                    Some((message, keys)) => self.push(keys, message),
                    None => self.push("", text),
                }
            })
            .ok()
    }

    /// `v` read by `read`, or `default` when absent or refused (the reason
    /// goes to `field`).
    fn checked<V, T>(
        &mut self,
        field: &str,
        v: Option<V>,
        default: T,
        read: impl FnOnce(V) -> Result<T, String>,
    ) -> T {
        or_default(v, default, read, |e| self.push(field, e))
    }

    /// A duration above zero.
    pub fn duration(&mut self, field: &str, v: Option<&String>, default: Duration) -> Duration {
        self.checked(field, v, default, |t| positive_duration(t))
    }

    /// A duration where zero is meaningful (a leeway, a max age).
    pub fn duration_or_zero(
        &mut self,
        field: &str,
        v: Option<String>,
        default: Duration,
    ) -> Duration {
        self.checked(field, v, default, |t| parse_duration(&t))
    }

    /// A size: bytes, or text with a unit.
    pub fn size(&mut self, field: &str, v: Option<&RawSize>, default: u64) -> u64 {
        self.checked(field, v, default, size_of)
    }

    /// A whole number in `min..=max`.
    pub fn int_in(&mut self, field: &str, v: Option<i64>, default: u64, min: u64, max: u64) -> u64 {
        self.checked(field, v, default, |n| int_between(n, min, max))
    }

    /// An HTTP status as written; which statuses a filter takes, it checks.
    pub fn status(&mut self, field: &str, v: Option<i64>, default: u16) -> u16 {
        let Some(n) = v else { return default };
        u16::try_from(n).unwrap_or_else(|_| {
            self.push(field, format!("{n} is not an HTTP status"));
            default
        })
    }

    /// The one value given among several alternatives (`names` lists them),
    /// or a problem at `field`.
    pub fn exactly_one<T>(
        &mut self,
        field: &str,
        names: &str,
        given: Vec<(&'static str, T)>,
    ) -> Option<(&'static str, T)> {
        match <[_; 1]>::try_from(given) {
            Ok([one]) => Some(one),
            Err(given) if given.is_empty() => {
                self.push(field, format!("give one of {names}"));
                None
            }
            Err(given) => {
                let got: Vec<&str> = given.iter().map(|(name, _)| *name).collect();
                self.push(
                    field,
                    format!("give only one of {names}, not {}", got.join(" and ")),
                );
                None
            }
        }
    }

    /// A file named in the configuration, read now through [`ParseCx::read`].
    pub fn read_file(&mut self, field: &str, file: &str) -> Option<String> {
        (self.read)(file)
            .map_err(|err| self.push(field, format!("cannot read {file:?}: {err}")))
            .ok()
    }
}
