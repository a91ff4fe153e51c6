//! Random route sets and requests for differential testing, drawn from a small alphabet so
//! that routes collide, overlap and conflict often. Driven by any [`Source`]: a seeded PRNG in
//! `cargo test`, the fuzzer's bytes in `fuzz/`.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use shardgate_router::{Method, RouteSpec};

/// A stream of choices.
pub trait Source {
    fn next_u32(&mut self) -> u32;

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        self.next_u32() as usize % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// SplitMix64: deterministic, seedable.
pub struct Rng(pub u64);

impl Source for Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    }
}

/// Fuzzer bytes; zeros once exhausted.
pub struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn next_u32(&mut self) -> u32 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b as u32
            }
            None => 0,
        }
    }
}

const SEGMENTS: &[&str] = &["a", "b", "ab", "x:y", "%2F", "~"];
const CONFIG_HOSTS: &[&str] = &["a.com", "b.a.com", "*.a.com", "*.com", "A.com.", "[::1]"];
const METHODS: &[&str] = &["GET", "POST", "DELETE", "PURGE"];
pub const REQUEST_HOSTS: &[&str] = &[
    "a.com",
    "A.COM:80",
    "b.a.com",
    "x.b.a.com",
    "a.com.",
    "c.com",
    "",
    "com",
    "[::1]:8080",
];
pub const REQUEST_METHODS: &[&str] = &["GET", "POST", "DELETE", "PURGE", "PATCH", "get"];

/// A random route named `r{i}`.
pub fn route(src: &mut impl Source, i: usize) -> RouteSpec {
    let prefix = src.chance(25);
    let mut pattern = String::new();
    let n = src.below(4);
    let mut p = 0;
    for k in 0..n {
        pattern.push('/');
        let roll = src.below(10);
        if !prefix && roll >= 8 && k + 1 == n {
            pattern.push_str(&format!("*c{k}"));
        } else if !prefix && roll >= 5 {
            pattern.push_str(&format!(":p{p}"));
            p += 1;
        } else {
            pattern.push_str(src.pick(SEGMENTS));
        }
    }
    if pattern.is_empty() || src.chance(15) && !pattern.contains('*') {
        pattern.push('/');
    }
    let name = format!("r{i}");
    let mut spec = if prefix {
        RouteSpec::prefix(name, pattern)
    } else {
        RouteSpec::exact(name, pattern)
    };
    if src.chance(50) {
        for _ in 0..1 + src.below(2) {
            spec = spec.host(src.pick(CONFIG_HOSTS));
        }
    }
    if src.chance(60) {
        for _ in 0..1 + src.below(2) {
            spec = spec.method(Method::parse(src.pick(METHODS)).unwrap());
        }
    }
    spec
}

/// A random normal path: either an instance of one of the routes or free-form.
pub fn path(src: &mut impl Source, routes: &[RouteSpec]) -> String {
    let mut out = String::new();
    if !routes.is_empty() && src.chance(70) {
        let r = &routes[src.below(routes.len())];
        for seg in r.pattern[1..].split('/') {
            out.push('/');
            if seg.starts_with(':') {
                out.push_str(src.pick(SEGMENTS));
            } else if seg.starts_with('*') {
                for k in 0..1 + src.below(3) {
                    if k > 0 {
                        out.push('/');
                    }
                    out.push_str(src.pick(SEGMENTS));
                }
            } else {
                out.push_str(seg);
            }
        }
        // Sometimes walk off the end, or stop short.
        match src.below(6) {
            0 => out.push('/'),
            1 => {
                out.push('/');
                out.push_str(src.pick(SEGMENTS));
            }
            2 if out.len() > 1 => {
                let cut = src.below(out.len() - 1) + 1;
                out.truncate(cut);
                while out.ends_with('/') && out.len() > 1 {
                    out.pop();
                }
                if out.ends_with('%') || out.ends_with("%2") {
                    out.truncate(out.rfind('%').unwrap());
                }
            }
            _ => {}
        }
    } else {
        for _ in 0..src.below(4) {
            out.push('/');
            out.push_str(src.pick(SEGMENTS));
        }
        if out.is_empty() || src.chance(20) {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    while out.contains("//") {
        out = out.replace("//", "/");
    }
    out
}
