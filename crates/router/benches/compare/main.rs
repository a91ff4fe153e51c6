//! Compares, in one run, this router (host and method matching on), a linear scan over the
//! same routes and `matchit` (path only), on: the GitHub API route set, a synthetic
//! 10,000-route table, and lookups that miss. Prints median ns per lookup and ends with one
//! `ratio_vs_matchit <ours/matchit> table=<name>` line per table.
//!
//! Run: `cargo bench -p shardgate-router --bench compare`
//!
//! Instruction counts (deterministic, unlike the timings on a shared machine): build with
//! `cargo bench -p shardgate-router --bench compare --no-run`, then run the binary under
//! `valgrind --tool=callgrind --toggle-collect='*count_lookups*'` with `--count <table>` as its
//! arguments (and optionally a number of rounds, default `COUNT_ROUNDS`); it runs each candidate and prints the number of lookups
//! per candidate to divide the inclusive counts of `count_lookups_ours` and
//! `count_lookups_matchit` by.

mod github;
mod linear;

use std::hint::black_box;
use std::time::{Duration, Instant};

use shardgate_router::{Lookup, Method, RouteSpec, Router, RouterBuilder};

const HOST: &str = "api.github.com";
const ROUNDS: usize = 101;
const SAMPLE: Duration = Duration::from_millis(4);
/// A slow candidate stops sampling after this long (keeping at least 11 samples).
const BUDGET: Duration = Duration::from_secs(6);

/// `(host, method, pattern)` routes and `(host, method, path)` requests.
struct Table {
    name: &'static str,
    routes: Vec<(String, String, String)>,
    requests: Vec<(String, String, String)>,
    hits: bool,
}

fn instantiate(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| match s.as_bytes().first() {
            Some(b':') => format!("{}_value", &s[1..]),
            Some(b'*') => "dir/file.txt".to_string(),
            _ => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn github() -> Table {
    let routes: Vec<_> = github::ROUTES
        .iter()
        .map(|(m, p)| (HOST.to_string(), m.to_string(), p.to_string()))
        .collect();
    let requests = routes
        .iter()
        .map(|(h, m, p)| (h.clone(), m.clone(), instantiate(p)))
        .collect();
    Table {
        name: "github_api",
        routes,
        requests,
        hits: true,
    }
}

fn synthetic() -> Table {
    let host = "synthetic.example.com".to_string();
    let mut routes = Vec::new();
    for i in 0..10_000 {
        let (svc, r) = (i % 50, i / 50);
        let pattern = match r % 4 {
            0 => format!("/svc{svc}/res{r}"),
            1 => format!("/svc{svc}/res{r}/:id"),
            2 => format!("/svc{svc}/res{r}/:id/sub{}/:sid", r % 7),
            _ => format!("/svc{svc}/res{r}/files/*path"),
        };
        let method = if i % 3 == 0 { "POST" } else { "GET" };
        routes.push((host.clone(), method.to_string(), pattern));
    }
    let requests = routes
        .iter()
        .step_by(10)
        .map(|(h, m, p)| (h.clone(), m.clone(), instantiate(p)))
        .collect();
    Table {
        name: "synthetic_10k",
        routes,
        requests,
        hits: true,
    }
}

fn misses() -> Table {
    let paths = [
        "/repos/julienschmidt/httprouter/unknown",
        "/users/gordon/notathing",
        "/nothing",
        "/authorizations/1/x",
        "/gists/1/star/x",
        "/repos/o/r/git/unknown/x",
        "/legacy/issues/search/a/b/c",
        "/userz",
        "/user/keys/1/x",
        "/teams",
        "/orgs",
        "/search/nope",
    ];
    let requests = paths
        .iter()
        .map(|p| (HOST.to_string(), "GET".to_string(), p.to_string()))
        .collect();
    Table {
        name: "github_miss",
        routes: github().routes,
        requests,
        hits: false,
    }
}

fn ours(t: &Table) -> Router<usize> {
    let mut b = RouterBuilder::new();
    for (i, (h, m, p)) in t.routes.iter().enumerate() {
        let spec = RouteSpec::exact(format!("{m} {p}"), p.clone()).host(h.clone());
        b.insert(spec.method(Method::parse(m).unwrap()), i).unwrap();
    }
    // Other scopes, so host selection is real work: a wildcard and a default.
    b.insert(
        RouteSpec::prefix("wildcard", "/").host(format!("*.{}", &t.routes[0].0)),
        usize::MAX,
    )
    .unwrap();
    b.insert(RouteSpec::prefix("default", "/"), usize::MAX)
        .unwrap();
    b.build().unwrap()
}

/// matchit has no methods: one entry per distinct path; parameters renamed by position
/// (`{p3}`) since matchit wants one name per position.
fn matchit(t: &Table) -> matchit::Router<usize> {
    let mut r = matchit::Router::new();
    let mut seen = std::collections::HashSet::new();
    for (i, (_, _, p)) in t.routes.iter().enumerate() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let converted: Vec<String> = p
            .split('/')
            .enumerate()
            .map(|(k, s)| match s.as_bytes().first() {
                Some(b':') => format!("{{p{k}}}"),
                Some(b'*') => format!("{{*p{k}}}"),
                _ => s.to_string(),
            })
            .collect();
        r.insert(converted.join("/"), i).unwrap();
    }
    r
}

/// Median ns per lookup of each candidate, sampled round-robin so drift hits all alike.
fn measure(lookups: usize, candidates: &mut [&mut dyn FnMut() -> usize]) -> Vec<f64> {
    let iters: Vec<usize> = candidates
        .iter_mut()
        .map(|f| {
            let start = Instant::now();
            black_box(f());
            let once = start.elapsed().max(Duration::from_nanos(1));
            (SAMPLE.as_nanos() / once.as_nanos()).max(1) as usize
        })
        .collect();
    let mut samples = vec![Vec::new(); candidates.len()];
    let mut spent = vec![Duration::ZERO; candidates.len()];
    for _ in 0..ROUNDS {
        for (i, f) in candidates.iter_mut().enumerate() {
            if spent[i] > BUDGET && samples[i].len() >= 11 {
                continue;
            }
            let start = Instant::now();
            for _ in 0..iters[i] {
                black_box(f());
            }
            let took = start.elapsed();
            spent[i] += took;
            samples[i].push(took.as_nanos() as f64 / (iters[i] * lookups) as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// Rounds of lookups per candidate in `--count` mode, unless given after the table name.
const COUNT_ROUNDS: usize = 100;

/// One candidate's lookups, `COUNT_ROUNDS` times; functions of their own so callgrind counts
/// just these (`--toggle-collect='*count_lookups*'`) and reports each apart.
#[inline(never)]
fn count_lookups_ours(rounds: usize, f: &mut dyn FnMut() -> usize) -> usize {
    (0..rounds).map(|_| black_box(f())).sum()
}

#[inline(never)]
fn count_lookups_matchit(rounds: usize, f: &mut dyn FnMut() -> usize) -> usize {
    (0..rounds).map(|_| black_box(f())).sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = args.iter().position(|a| a == "--count").map(|i| {
        let table = args
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| "github_api".into());
        let rounds = args
            .get(i + 2)
            .map_or(COUNT_ROUNDS, |r| r.parse().expect("rounds"));
        (table, rounds)
    });
    println!(
        "{:<14} {:>6} {:>7} | {:>11} {:>11} {:>11}  (median ns per lookup)",
        "table", "routes", "lookups", "shardgate", "linear", "matchit"
    );
    let mut ratios = Vec::new();
    for t in [github(), synthetic(), misses()] {
        let router = ours(&t);
        let lin = linear::Linear::new(&t.routes);
        let mat = matchit(&t);
        let reqs: Vec<(&[u8], &[u8], &[u8])> = t
            .requests
            .iter()
            .map(|(h, m, p)| (h.as_bytes(), m.as_bytes(), p.as_bytes()))
            .collect();
        // Check the three agree before timing them.
        for (h, m, p) in &reqs {
            let a = match router.lookup(h, m, p) {
                Lookup::Found(found) => Some(*found.value),
                _ => None,
            };
            let b = lin.lookup(h, m, p).map(|(id, _)| id);
            let c = mat.at(std::str::from_utf8(p).unwrap()).is_ok();
            assert_eq!(a, b, "{}: shardgate and linear disagree on {p:?}", t.name);
            assert_eq!(a.is_some(), t.hits, "{}: {p:?}", t.name);
            assert_eq!(c, t.hits, "{}: matchit on {p:?}", t.name);
        }
        let paths: Vec<&str> = t.requests.iter().map(|(_, _, p)| p.as_str()).collect();
        let mut run_ours = || {
            let mut sum = 0;
            for (h, m, p) in &reqs {
                sum += match router.lookup(black_box(h), black_box(m), black_box(p)) {
                    Lookup::Found(found) => found.value.wrapping_add(found.params.len()),
                    Lookup::MethodNotAllowed(_) => 2,
                    Lookup::NotFound => 1,
                };
            }
            sum
        };
        let mut run_linear = || {
            let mut sum = 0;
            for (h, m, p) in &reqs {
                sum += match lin.lookup(black_box(h), black_box(m), black_box(p)) {
                    Some((id, spans)) => id + spans.len(),
                    None => 1,
                };
            }
            sum
        };
        let mut run_matchit = || {
            let mut sum = 0;
            for p in &paths {
                sum += match mat.at(black_box(p)) {
                    Ok(found) => found.value + found.params.len(),
                    Err(_) => 1,
                };
            }
            sum
        };
        if let Some((table, rounds)) = &count {
            if table == t.name {
                println!("{}: {} lookups per candidate", t.name, rounds * reqs.len());
                black_box(count_lookups_ours(*rounds, &mut run_ours));
                black_box(count_lookups_matchit(*rounds, &mut run_matchit));
            }
            continue;
        }
        let m = measure(
            reqs.len(),
            &mut [&mut run_ours, &mut run_linear, &mut run_matchit],
        );
        println!(
            "{:<14} {:>6} {:>7} | {:>11.1} {:>11.1} {:>11.1}",
            t.name,
            t.routes.len(),
            reqs.len(),
            m[0],
            m[1],
            m[2]
        );
        ratios.push((t.name, m[0] / m[2]));
    }
    for (name, r) in ratios {
        println!("ratio_vs_matchit {r:.3} table={name}");
    }
}
