//! Building a table: validate each route, detect conflicts, then freeze.

use std::collections::BTreeMap;

use crate::error::BuildError;
use crate::host::{HostKey, HostMap, parse_host};
use crate::method::{
    ANY, AllowMethods, FIRST_EXTENSION_BIT, MAX_EXTENSION_METHODS, Method, OTHER_BIT, standard_bit,
};
use crate::pattern::{Piece, parse_exact, parse_prefix};
use crate::router::{Route, Router};
use crate::table::NONE;
use crate::trie::PathTrie;

/// How a route's path pattern matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// The whole path must match the pattern (with its parameters and catch-all).
    Exact,
    /// A static prefix on a segment boundary: `/api` matches `/api`, `/api/` and `/api/x`,
    /// not `/apix`. Any exact match beats every prefix match; the longest prefix wins.
    Prefix,
}

/// One route as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Used in error messages; unique within a table.
    pub name: String,
    /// Exact (`api.example.com`) or wildcard (`*.example.com`) hosts; empty for the default.
    pub hosts: Vec<String>,
    /// Methods the route takes; `None` for any method.
    pub methods: Option<Vec<Method>>,
    /// The path pattern (syntax in the crate docs).
    pub pattern: String,
    pub kind: PatternKind,
}

impl RouteSpec {
    /// A route matching the whole path against `pattern`, any host, any method.
    pub fn exact(name: impl Into<String>, pattern: impl Into<String>) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            hosts: Vec::new(),
            methods: None,
            pattern: pattern.into(),
            kind: PatternKind::Exact,
        }
    }

    /// A route matching every path under `pattern`, any host, any method.
    pub fn prefix(name: impl Into<String>, pattern: impl Into<String>) -> RouteSpec {
        RouteSpec {
            kind: PatternKind::Prefix,
            ..RouteSpec::exact(name, pattern)
        }
    }

    /// Adds a host.
    pub fn host(mut self, host: impl Into<String>) -> RouteSpec {
        self.hosts.push(host.into());
        self
    }

    /// Adds a method (the route then takes only the methods added).
    pub fn method(mut self, method: Method) -> RouteSpec {
        self.methods.get_or_insert_with(Vec::new).push(method);
        self
    }
}

/// Collects routes, rejecting bad and conflicting ones as they come; then [`build`]s an
/// immutable [`Router`].
///
/// [`build`]: RouterBuilder::build
#[derive(Debug)]
pub struct RouterBuilder<T> {
    routes: Vec<Route<T>>,
    scopes: BTreeMap<HostKey, PathTrie>,
    extensions: Vec<Box<str>>,
    errors: Vec<BuildError>,
}

impl<T> Default for RouterBuilder<T> {
    fn default() -> Self {
        RouterBuilder::new()
    }
}

impl<T> RouterBuilder<T> {
    pub fn new() -> RouterBuilder<T> {
        RouterBuilder {
            routes: Vec::new(),
            scopes: BTreeMap::new(),
            extensions: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Adds a route. On error nothing is added and the builder stays usable, so a caller can
    /// report every bad route; [`RouterBuilder::build`] then fails with all of them.
    pub fn insert(&mut self, spec: RouteSpec, value: T) -> Result<(), BuildError> {
        let result = self.try_insert(spec, value);
        if let Err(e) = &result {
            self.errors.push(e.clone());
        }
        result
    }

    /// Gives `host` (a name or `*.suffix`) a scope of its own even if no route names it, so
    /// a request for it never falls back to the default scope: with no route of its own, it
    /// is answered 404. A tenant's hosts are reserved this way.
    pub fn reserve_host(&mut self, host: &str) -> Result<(), BuildError> {
        let key = parse_host(host).map_err(|reason| BuildError::InvalidHost {
            route: String::new(),
            host: host.to_string(),
            reason,
        })?;
        self.scopes.entry(key).or_default();
        Ok(())
    }

    /// Freezes the table. Fails with every error [`RouterBuilder::insert`] returned.
    pub fn build(self) -> Result<Router<T>, Vec<BuildError>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let mut scopes = Vec::new();
        let mut exact = Vec::new();
        let mut wildcard = Vec::new();
        let mut default_scope = NONE;
        for (key, trie) in self.scopes {
            let index = scopes.len() as u32;
            scopes.push(trie.freeze());
            match key {
                HostKey::Exact(h) => exact.push((h, index)),
                HostKey::Wildcard(h) => wildcard.push((h, index)),
                HostKey::Default => default_scope = index,
            }
        }
        Ok(Router {
            routes: self.routes,
            scopes,
            exact_hosts: HostMap::new(exact),
            wildcard_hosts: HostMap::new(wildcard),
            default_scope,
            extensions: self.extensions,
        })
    }

    fn try_insert(&mut self, spec: RouteSpec, value: T) -> Result<(), BuildError> {
        let route = spec.name.clone();
        if self.routes.iter().any(|r| *r.name == *route) {
            return Err(BuildError::DuplicateName { route });
        }
        let mut hosts = Vec::new();
        for h in &spec.hosts {
            let key = parse_host(h).map_err(|reason| BuildError::InvalidHost {
                route: route.clone(),
                host: h.clone(),
                reason,
            })?;
            if !hosts.contains(&key) {
                hosts.push(key);
            }
        }
        if hosts.is_empty() {
            hosts.push(HostKey::Default);
        }
        let (mask, new_extensions) = self.method_mask(&route, spec.methods.as_deref())?;
        let invalid = |reason| BuildError::InvalidPattern {
            route: route.clone(),
            pattern: spec.pattern.clone(),
            reason,
        };
        let (pieces, prefix) = match spec.kind {
            PatternKind::Exact => (parse_exact(&spec.pattern).map_err(invalid)?, Vec::new()),
            PatternKind::Prefix => (Vec::new(), parse_prefix(&spec.pattern).map_err(invalid)?),
        };
        let id = self.routes.len() as u32;
        // Check every scope before touching any leaf, so a failed insert adds nothing.
        let mut slots = Vec::with_capacity(hosts.len());
        for key in &hosts {
            let trie = self.scopes.entry(key.clone()).or_default();
            let slot = match spec.kind {
                PatternKind::Exact => trie.exact_slot(&pieces),
                PatternKind::Prefix => trie.prefix_slot(&prefix),
            };
            if let Some((other, overlap)) = trie.conflict(slot, mask) {
                let other = &self.routes[other as usize];
                return Err(BuildError::Conflict {
                    route,
                    other: other.name.to_string(),
                    methods: self.describe_methods(overlap, &new_extensions),
                    pattern: match spec.kind {
                        PatternKind::Exact => spec.pattern.clone(),
                        PatternKind::Prefix => format!("prefix {}", spec.pattern),
                    },
                    host: key.to_string(),
                });
            }
            slots.push(slot);
        }
        for (key, slot) in hosts.iter().zip(slots) {
            self.scopes
                .get_mut(key)
                .expect("scope created above")
                .add(slot, mask, id);
        }
        self.extensions.extend(new_extensions);
        let params = pieces
            .into_iter()
            .filter_map(|p| match p {
                Piece::Param(n) | Piece::CatchAll(n) => Some(n),
                Piece::Static(_) => None,
            })
            .collect();
        self.routes.push(Route {
            name: route.into(),
            value,
            params,
        });
        Ok(())
    }

    /// The route's method bitset, and extension methods it names that the table does not
    /// number yet (they are numbered in order after the existing ones).
    fn method_mask(
        &self,
        route: &str,
        methods: Option<&[Method]>,
    ) -> Result<(u64, Vec<Box<str>>), BuildError> {
        let Some(methods) = methods else {
            return Ok((ANY, Vec::new()));
        };
        if methods.is_empty() {
            return Err(BuildError::NoMethods {
                route: route.into(),
            });
        }
        let mut mask = 0;
        let mut new: Vec<Box<str>> = Vec::new();
        for m in methods {
            let token = m.as_str();
            if Method::parse(token).is_none() {
                return Err(BuildError::InvalidMethod {
                    route: route.into(),
                    method: token.into(),
                });
            }
            if let Some(bit) = standard_bit(token.as_bytes()) {
                mask |= bit;
                continue;
            }
            let known = self
                .extensions
                .iter()
                .chain(&new)
                .position(|e| **e == *token);
            let index = match known {
                Some(i) => i,
                None if self.extensions.len() + new.len() < MAX_EXTENSION_METHODS => {
                    new.push(token.into());
                    self.extensions.len() + new.len() - 1
                }
                None => {
                    return Err(BuildError::TooManyExtensionMethods {
                        route: route.into(),
                        method: token.into(),
                        max: MAX_EXTENSION_METHODS,
                    });
                }
            };
            mask |= 1 << (FIRST_EXTENSION_BIT + index as u32);
        }
        Ok((mask, new))
    }

    fn describe_methods(&self, overlap: u64, new: &[Box<str>]) -> String {
        if overlap == ANY {
            return "any method".into();
        }
        let all: Vec<Box<str>> = self.extensions.iter().chain(new).cloned().collect();
        AllowMethods {
            mask: overlap & !OTHER_BIT,
            extensions: &all,
        }
        .to_string()
    }
}
