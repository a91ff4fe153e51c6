//! The shard's routing table, behind the interface the proxy calls.
//!
//! Interim implementation until `shardgate-router` lands: host (exact,
//! `*.suffix`, or any), then the longest matching path (`path` routes match
//! the whole path exactly, `prefix` routes at segment boundaries), then the
//! method (405 with `Allow` when only the method is wrong).

use shardgate_config::{PathMatch, Route};

/// Index of a route in the configuration.
pub(crate) type RouteId = usize;

pub(crate) enum RouteLookup<'t> {
    Found(RouteId),
    /// The path exists for other methods; the value for `Allow`.
    MethodNotAllowed(&'t str),
    NotFound,
}

struct Entry {
    id: RouteId,
    hosts: Vec<String>,
    methods: Vec<String>,
    path: PathMatch,
}

pub(crate) struct RouteTable {
    entries: Vec<Entry>,
    allow: Vec<String>,
}

impl RouteTable {
    pub(crate) fn build(routes: &[Route]) -> RouteTable {
        let entries: Vec<Entry> = routes
            .iter()
            .enumerate()
            .map(|(id, r)| Entry {
                id,
                hosts: r.hosts.clone(),
                methods: r.methods.clone(),
                path: r.path.clone(),
            })
            .collect();
        let allow = entries
            .iter()
            .map(|e| {
                if e.methods.is_empty() {
                    String::new()
                } else {
                    e.methods.join(", ")
                }
            })
            .collect();
        RouteTable { entries, allow }
    }

    pub(crate) fn lookup(&self, host: &[u8], method: &[u8], path: &[u8]) -> RouteLookup<'_> {
        let host = strip_port(host);
        let path = &path[..path.iter().position(|&b| b == b'?').unwrap_or(path.len())];
        // Best host class first: exact (2) > wildcard (1) > any (0).
        let mut best: Option<(u8, usize, usize)> = None; // (host rank, path len, index)
        let mut best_any_method: Option<(u8, usize, usize)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let Some(host_rank) = host_rank(&e.hosts, host) else {
                continue;
            };
            let Some(len) = path_match(&e.path, path) else {
                continue;
            };
            let key = (host_rank, len, usize::MAX - i);
            let method_ok =
                e.methods.is_empty() || e.methods.iter().any(|m| m.as_bytes() == method);
            if best_any_method.is_none_or(|b| key > b) {
                best_any_method = Some(key);
            }
            if method_ok && best.is_none_or(|b| key > b) {
                best = Some(key);
            }
        }
        match (best, best_any_method) {
            (Some(b), Some(a)) if b.0 >= a.0 => {
                RouteLookup::Found(self.entries[usize::MAX - b.2].id)
            }
            (_, Some(a)) => RouteLookup::MethodNotAllowed(&self.allow[usize::MAX - a.2]),
            _ => RouteLookup::NotFound,
        }
    }
}

fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return host;
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

fn host_rank(hosts: &[String], host: &[u8]) -> Option<u8> {
    if hosts.is_empty() {
        return Some(0);
    }
    let mut rank = None;
    for h in hosts {
        if let Some(suffix) = h.strip_prefix("*.") {
            let s = suffix.as_bytes();
            if host.len() > s.len() + 1
                && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                && host[host.len() - s.len() - 1] == b'.'
            {
                rank = rank.max(Some(1));
            }
        } else if h.as_bytes().eq_ignore_ascii_case(host) {
            return Some(2);
        }
    }
    rank
}

/// Length of the match (longer wins), or `None`.
fn path_match(m: &PathMatch, path: &[u8]) -> Option<usize> {
    match m {
        PathMatch::Exact(p) => (p.as_bytes() == path).then_some(p.len() + 1),
        PathMatch::Prefix(p) => {
            let p = p.as_bytes();
            let p = p.strip_suffix(b"/").unwrap_or(p);
            let ok = path.starts_with(p)
                && (path.len() == p.len() || path[p.len()] == b'/' || p.is_empty());
            ok.then_some(p.len())
        }
    }
}
