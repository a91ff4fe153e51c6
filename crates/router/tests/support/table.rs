//! Helpers for table-driven tests: build a table from one-line specs, render lookups as short
//! strings (`name p=v`, `405 GET, POST`, `404`).

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use shardgate_router::{Lookup, Method, RouteSpec, Router, RouterBuilder};

/// `(name, hosts, methods, kind+pattern)`: methods `"*"` for any, else space-separated;
/// hosts space-separated, `""` for the default; pattern `"= /x"` exact or `"^ /x"` prefix.
pub type Row<'a> = (&'a str, &'a str, &'a str, &'a str);

pub fn spec((name, hosts, methods, pattern): Row<'_>) -> RouteSpec {
    let mut s = match pattern.split_once(' ') {
        Some(("=", p)) => RouteSpec::exact(name, p),
        Some(("^", p)) => RouteSpec::prefix(name, p),
        _ => panic!("bad pattern cell {pattern:?}"),
    };
    for h in hosts.split_whitespace() {
        s = s.host(h);
    }
    if methods != "*" {
        for m in methods.split_whitespace() {
            s = s.method(Method::parse(m).expect("method token"));
        }
    }
    s
}

pub fn build(rows: &[Row<'_>]) -> Router<usize> {
    let mut b = RouterBuilder::new();
    for (i, row) in rows.iter().enumerate() {
        b.insert(spec(*row), i).unwrap_or_else(|e| panic!("{e}"));
    }
    b.build().expect("table builds")
}

pub fn render(l: Lookup<'_, '_, usize>) -> String {
    match l {
        Lookup::Found(m) => {
            let mut s = m.name.to_string();
            for (n, v) in m.params.iter() {
                s.push_str(&format!(" {n}={}", String::from_utf8_lossy(v)));
            }
            s
        }
        Lookup::MethodNotAllowed(allow) => format!("405 {allow}"),
        Lookup::NotFound => "404".to_string(),
    }
}
