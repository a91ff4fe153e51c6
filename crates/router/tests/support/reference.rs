//! A deliberately naive reference router, written straight from the rules in the crate docs:
//! it scans every route, splits strings, allocates freely. Differential tests and the fuzz
//! target compare the real router with it. Shared by `tests/`, `fuzz/` (via `#[path]`).

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use shardgate_router::{PatternKind, RouteSpec};

/// What the reference decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    Found {
        name: String,
        params: Vec<(String, Vec<u8>)>,
    },
    /// The sorted method names.
    MethodNotAllowed(Vec<String>),
    NotFound,
}

/// Host, as the reference understands it: lower-case, no port, no trailing dot.
fn clean_host(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    let no_port = if lower.starts_with('[') {
        match lower.find(']') {
            Some(i) => lower[..=i].to_string(),
            None => lower,
        }
    } else {
        lower.split(':').next().unwrap_or("").to_string()
    };
    no_port
        .strip_suffix('.')
        .map(str::to_string)
        .unwrap_or(no_port)
}

/// The scope key of a configured host: `=name` or `*suffix`.
fn host_key(configured: &str) -> String {
    match configured.strip_prefix("*.") {
        Some(rest) => format!("*{}", clean_host(rest)),
        None => format!("={}", clean_host(configured)),
    }
}

fn route_keys(r: &RouteSpec) -> Vec<String> {
    if r.hosts.is_empty() {
        vec!["default".to_string()]
    } else {
        r.hosts.iter().map(|h| host_key(h)).collect()
    }
}

/// The scope a request host selects: an exact host, else the longest wildcard, else default.
fn select_scope(routes: &[RouteSpec], raw_host: &[u8]) -> String {
    let host = clean_host(&String::from_utf8_lossy(raw_host));
    let keys: Vec<String> = routes.iter().flat_map(route_keys).collect();
    let exact = format!("={host}");
    if keys.contains(&exact) {
        return exact;
    }
    let mut best: Option<String> = None;
    for k in &keys {
        if let Some(suffix) = k.strip_prefix('*') {
            let dotted = format!(".{suffix}");
            let longer = best.as_ref().is_none_or(|b| b.len() < k.len());
            if host.ends_with(&dotted) && host.len() > dotted.len() && longer {
                best = Some(k.clone());
            }
        }
    }
    best.unwrap_or_else(|| "default".to_string())
}

/// Priority class and key: smaller is better. Exact routes rank by their segment kinds
/// (0 static, 1 param, 2 catch-all) compared left to right; prefix routes by length, longer
/// first, after every exact route.
type Rank = (u8, Vec<i64>);

/// Captured `(name, value)` pairs.
type Captures = Vec<(String, Vec<u8>)>;

/// Whether `r`'s pattern matches `path`, with its rank and captures.
fn match_path(r: &RouteSpec, path: &[u8]) -> Option<(Rank, Captures)> {
    let path = String::from_utf8_lossy(path).to_string();
    match r.kind {
        PatternKind::Prefix => {
            let p = r.pattern.trim_end_matches('/');
            let hit = path == p || path.starts_with(&format!("{p}/"));
            hit.then(|| ((1, vec![-(p.len() as i64)]), Vec::new()))
        }
        PatternKind::Exact => {
            let pat: Vec<&str> = r.pattern[1..].split('/').collect();
            let segs: Vec<&str> = path.get(1..)?.split('/').collect();
            let mut kinds = Vec::new();
            let mut params = Vec::new();
            for (i, p) in pat.iter().enumerate() {
                if let Some(name) = p.strip_prefix('*') {
                    let rest = segs.get(i..).unwrap_or(&[]).join("/");
                    if rest.is_empty() {
                        return None;
                    }
                    kinds.push(2);
                    params.push((name.to_string(), rest.into_bytes()));
                    return Some(((0, kinds), params));
                }
                let s = *segs.get(i)?;
                if let Some(name) = p.strip_prefix(':') {
                    if s.is_empty() {
                        return None;
                    }
                    kinds.push(1);
                    params.push((name.to_string(), s.as_bytes().to_vec()));
                } else if *p == s {
                    kinds.push(0);
                } else {
                    return None;
                }
            }
            (segs.len() == pat.len()).then_some(((0, kinds), params))
        }
    }
}

fn takes(r: &RouteSpec, method: &[u8]) -> bool {
    match &r.methods {
        None => true,
        Some(ms) => ms.iter().any(|m| m.as_str().as_bytes() == method),
    }
}

/// The reference lookup over the routes that were accepted, in insertion order. The most
/// specific routes matching the path decide: routes of the whole path (the best-ranked one
/// that takes the method), else the longest matching prefix; when those do not take the
/// method, 405 with their methods, never a less specific route.
pub fn lookup(routes: &[RouteSpec], host: &[u8], method: &[u8], path: &[u8]) -> Expect {
    let scope = select_scope(routes, host);
    let matching: Vec<(Rank, &RouteSpec, Captures)> = routes
        .iter()
        .filter(|r| route_keys(r).contains(&scope))
        .filter_map(|r| match_path(r, path).map(|(rank, params)| (rank, r, params)))
        .collect();
    let whole: Vec<&(Rank, &RouteSpec, Captures)> =
        matching.iter().filter(|(rank, _, _)| rank.0 == 0).collect();
    let deciding: Vec<&(Rank, &RouteSpec, Captures)> = if whole.is_empty() {
        // The longest prefix: the smallest rank key.
        let longest = matching.iter().map(|(rank, _, _)| rank).min();
        matching
            .iter()
            .filter(|(rank, _, _)| Some(rank) == longest)
            .collect()
    } else {
        whole
    };
    let mut best: Option<&(Rank, &RouteSpec, Captures)> = None;
    let mut allow: Vec<String> = Vec::new();
    for m in deciding {
        let (rank, r, _) = m;
        if !takes(r, method) {
            for m in r.methods.iter().flatten() {
                allow.push(m.as_str().to_string());
            }
            continue;
        }
        match best {
            Some((b, other, _)) if b == rank => {
                panic!(
                    "ambiguous: {} and {} both rank {rank:?}",
                    other.name, r.name
                )
            }
            Some((b, _, _)) if b < rank => {}
            _ => best = Some(m),
        }
    }
    match best {
        Some((_, r, params)) => Expect::Found {
            name: r.name.clone(),
            params: params.clone(),
        },
        None if !allow.is_empty() => {
            allow.sort();
            allow.dedup();
            Expect::MethodNotAllowed(allow)
        }
        None => Expect::NotFound,
    }
}

/// Shape of a pattern with parameter names erased.
fn shape(r: &RouteSpec) -> String {
    match r.kind {
        PatternKind::Prefix => format!("prefix {}", r.pattern.trim_end_matches('/')),
        PatternKind::Exact => r
            .pattern
            .split('/')
            .map(|s| {
                if s.starts_with(':') {
                    ":"
                } else if s.starts_with('*') {
                    "*"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// Whether two routes are ambiguous: a shared scope, the same shape, a shared method.
pub fn conflicts(a: &RouteSpec, b: &RouteSpec) -> bool {
    let ka = route_keys(a);
    let shared_scope = route_keys(b).iter().any(|k| ka.contains(k));
    let shared_method = match (&a.methods, &b.methods) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    };
    shared_scope && shared_method && shape(a) == shape(b)
}
