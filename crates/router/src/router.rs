//! The built, immutable table and its lookup.

use crate::host::{HostMap, RequestHost};
use crate::method::{AllowMethods, request_bit};
use crate::table::{NONE, PathTable, Spans, Walk};

#[derive(Clone, Debug)]
pub(crate) struct Route<T> {
    pub(crate) name: Box<str>,
    pub(crate) value: T,
    /// Capture names in pattern order.
    pub(crate) params: Box<[Box<str>]>,
}

/// An immutable routing table: host, then path and method. Build one with
/// [`crate::RouterBuilder`]; each shard keeps its own (it is `Clone` when `T` is).
#[derive(Clone, Debug)]
pub struct Router<T> {
    pub(crate) routes: Vec<Route<T>>,
    pub(crate) scopes: Vec<PathTable>,
    pub(crate) exact_hosts: HostMap,
    pub(crate) wildcard_hosts: HostMap,
    pub(crate) default_scope: u32,
    pub(crate) extensions: Vec<Box<str>>,
}

/// The outcome of [`Router::lookup`].
#[derive(Debug)]
pub enum Lookup<'r, 'p, T> {
    /// A route takes this host, method and path.
    Found(Match<'r, 'p, T>),
    /// Routes of the host's scope match the path, none with this method: answer 405 with
    /// this `Allow` header. It lists exactly the methods that would have been `Found`.
    MethodNotAllowed(AllowMethods<'r>),
    /// No route of the host's scope matches the path (or no scope takes the host): 404.
    NotFound,
}

/// A matched route.
#[derive(Debug)]
pub struct Match<'r, 'p, T> {
    /// The value given to [`crate::RouterBuilder::insert`].
    pub value: &'r T,
    /// The route's name.
    pub name: &'r str,
    /// Captured parameters (none for prefix routes).
    pub params: Params<'r, 'p>,
}

/// Parameters captured by a lookup: names from the table, values as byte slices of the path
/// (still percent-encoded where the path was). Held inline: no allocation.
#[derive(Clone, Debug)]
pub struct Params<'r, 'p> {
    names: &'r [Box<str>],
    path: &'p [u8],
    spans: Spans,
}

impl<'r, 'p> Params<'r, 'p> {
    /// Number of captures.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The value captured for `name`.
    pub fn get(&self, name: &str) -> Option<&'p [u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// `(name, value)` in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'r str, &'p [u8])> + '_ {
        let path = self.path;
        self.names
            .iter()
            .zip(&self.spans)
            .map(move |(n, &(s, e))| (&**n, &path[s as usize..e as usize]))
    }

    /// Byte ranges of the values in the path, in pattern order.
    pub fn spans(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.spans.iter().map(|&(s, e)| s as usize..e as usize)
    }
}

impl<T> Router<T> {
    /// Routes a request.
    ///
    /// - `host`: the `Host` header (or authority) as received: any case, optional `:port`.
    ///   Empty selects the default scope.
    /// - `method`: the method token as received (case-sensitive).
    /// - `path`: the path in normal form without the query — what
    ///   [`crate::normalize_path`] produced, split with [`crate::split_query`]. A path that is
    ///   not normal is matched as given, so routes may be bypassed: always normalise first.
    ///
    /// Allocates nothing.
    pub fn lookup<'r, 'p>(
        &'r self,
        host: &[u8],
        method: &[u8],
        path: &'p [u8],
    ) -> Lookup<'r, 'p, T> {
        debug_assert!(
            !path.contains(&b'?'),
            "lookup takes the path without its query"
        );
        let scope = self.scope_for(host);
        if scope == NONE {
            return Lookup::NotFound;
        }
        let mut walk = Walk::new(path, request_bit(method, &self.extensions));
        let trie = &self.scopes[scope as usize];
        // The most specific routes that match the path decide: routes of the
        // whole path before prefixes, longer prefixes before shorter ones. If
        // they do not take the method the answer is 405, never a less specific
        // route (a GET-only `/panel` behind an ip-filter must not let a POST
        // through to a catch-all `/`).
        let not_allowed = |mask| {
            Lookup::MethodNotAllowed(AllowMethods {
                mask,
                extensions: &self.extensions,
            })
        };
        let route = match trie.find(&mut walk) {
            Some(r) => r,
            None if walk.allow != 0 => return not_allowed(walk.allow),
            None if walk.prefix_route != NONE => walk.prefix_route,
            None if walk.prefix_allow != 0 => return not_allowed(walk.prefix_allow),
            None => return Lookup::NotFound,
        };
        let route = &self.routes[route as usize];
        Lookup::Found(Match {
            value: &route.value,
            name: &route.name,
            params: Params {
                names: &route.params,
                path,
                spans: walk.spans,
            },
        })
    }

    /// The scope index a request host selects, or `NONE`.
    #[inline]
    fn scope_for(&self, raw: &[u8]) -> u32 {
        if self.exact_hosts.is_empty() && self.wildcard_hosts.is_empty() {
            return self.default_scope;
        }
        if let Some(s) = self.exact_hosts.get_exactly(raw) {
            return s;
        }
        self.scope_for_other(raw)
    }

    /// [`Router::scope_for`] when the `Host` value is not exactly a configured name: ports,
    /// capitals, wildcards, the default scope. Out of line, so that the usual lookup stays
    /// small.
    #[inline(never)]
    fn scope_for_other(&self, raw: &[u8]) -> u32 {
        let exact = &self.exact_hosts;
        let host = if exact.is_plain() {
            if let Some(s) = exact.get_raw(raw) {
                return s;
            }
            if self.wildcard_hosts.is_empty() {
                return self.default_scope;
            }
            RequestHost::new(raw, false).host
        } else {
            let RequestHost { host, hash } = RequestHost::new(raw, !exact.is_small());
            if let Some(s) = exact.get_hashed(host, hash) {
                return s;
            }
            host
        };
        if !self.wildcard_hosts.is_empty() {
            // Leftmost dot first: the longest suffix wins. A dot at 0 would leave an empty
            // label before the suffix.
            for i in 1..host.len() {
                if host[i] == b'.'
                    && let Some(s) = self.wildcard_hosts.get(&host[i + 1..])
                {
                    return s;
                }
            }
        }
        self.default_scope
    }

    /// Number of routes in the table.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routes' values and names, in insertion order.
    pub fn values(&self) -> impl Iterator<Item = (&str, &T)> {
        self.routes.iter().map(|r| (&*r.name, &r.value))
    }
}
