//! One differential case: build a random table, check every insert against the reference's
//! idea of conflicts, then compare many lookups. Used by `tests/differential.rs` and the fuzz
//! target; expects `reference` and `generate` modules beside it.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use shardgate_router::{
    BuildError, EscapedSlashes, Lookup, PathOptions, RouteSpec, RouterBuilder, Semicolons,
    is_normal_with,
};

use super::generate::{self, Source};
use super::reference::{self, Expect};

/// Runs one case drawn from `src`. Panics on any disagreement.
pub fn run(src: &mut impl Source) {
    let mut builder = RouterBuilder::new();
    let mut accepted: Vec<RouteSpec> = Vec::new();
    let total = 1 + src.below(12);
    for i in 0..total {
        let spec = generate::route(src, i);
        let expected = accepted
            .iter()
            .find(|a| reference::conflicts(&spec, a))
            .map(|a| a.name.clone());
        match (builder.insert(spec.clone(), i), expected) {
            (Ok(()), None) => accepted.push(spec),
            (Err(BuildError::Conflict { other, .. }), Some(want)) => {
                // The router may name any of the conflicting routes; it must be one.
                assert!(
                    accepted
                        .iter()
                        .any(|a| a.name == other && reference::conflicts(&spec, a)),
                    "{spec:?}: named {other}, reference found {want}"
                );
            }
            (got, want) => panic!(
                "insert {spec:?} after {accepted:?}: got {got:?}, reference conflict {want:?}"
            ),
        }
    }
    let rejected = count_errors(builder.build());
    assert_eq!(
        rejected,
        total - accepted.len(),
        "build() reports every rejected insert"
    );
    let mut builder = RouterBuilder::new();
    for (i, spec) in accepted.iter().enumerate() {
        builder
            .insert(spec.clone(), i)
            .expect("accepted before, accepted again");
    }
    let router = builder.build().expect("no errors");
    for _ in 0..32 {
        let path = generate::path(src, &accepted);
        assert!(
            // Normal on a listener that keeps `%2F` and `;` (the router matches any
            // normal path; what a listener refuses never reaches it).
            is_normal_with(
                path.as_bytes(),
                &PathOptions {
                    escaped_slashes: EscapedSlashes::Keep,
                    semicolons: Semicolons::Keep,
                }
            ),
            "generator made a non-normal path {path:?}"
        );
        let host = src.pick(generate::REQUEST_HOSTS);
        let method = src.pick(generate::REQUEST_METHODS);
        let want = reference::lookup(
            &accepted,
            host.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
        );
        let got = match router.lookup(host.as_bytes(), method.as_bytes(), path.as_bytes()) {
            Lookup::Found(m) => Expect::Found {
                name: m.name.to_string(),
                params: m
                    .params
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect(),
            },
            Lookup::MethodNotAllowed(allow) => {
                let mut v: Vec<String> = allow.iter().map(str::to_string).collect();
                v.sort();
                Expect::MethodNotAllowed(v)
            }
            Lookup::NotFound => Expect::NotFound,
        };
        assert_eq!(got, want, "{method} {host} {path}\nroutes: {accepted:#?}");
    }
}

fn count_errors<T>(built: Result<T, Vec<BuildError>>) -> usize {
    built.err().map_or(0, |errors| errors.len())
}
