//! The admin server's live dashboard: `GET /` is one self-contained page
//! (`dashboard.html`: no external assets), which refreshes from
//! `GET /dashboard.json`.
//!
//! A sampler thread collects the shards' metrics every [`EVERY`] and keeps
//! the last [`KEEP`] samples, so a page opened now shows the last minutes at
//! once. Rates and percentiles come from the differences between samples;
//! percentiles are read from the latency histogram's buckets (interpolated
//! within a bucket), as a Prometheus `histogram_quantile` would.

use crate::control::GatewayHandle;
use crate::metrics::{BUCKETS, ShardMetrics};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time between samples.
pub(crate) const EVERY: Duration = Duration::from_secs(2);
/// Samples kept: five minutes.
const KEEP: usize = 151;

/// The page.
pub(crate) const PAGE: &str = include_str!("dashboard.html");

/// One route's counts summed over the shards, at one sample.
#[derive(Clone)]
struct RouteCounts {
    tenant: String,
    name: String,
    classes: [u64; 5],
    buckets: [u64; BUCKETS.len() + 1],
    limited: u64,
}

struct Sample {
    /// Seconds since the Unix epoch.
    at: f64,
    routes: Vec<RouteCounts>,
}

/// The samples, and the thread taking them.
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl History {
    pub(crate) fn start(handle: GatewayHandle) -> Arc<History> {
        let history = Arc::new(History {
            samples: Mutex::new(VecDeque::with_capacity(KEEP)),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let h = history.clone();
        let thread = std::thread::Builder::new()
            .name("shardgate-dashboard".into())
            .spawn(move || {
                while !h.stop.load(Ordering::Acquire) {
                    h.take(&handle.collect());
                    // Sleep in short steps so a stop is quick.
                    for _ in 0..20 {
                        if h.stop.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::sleep(EVERY / 20);
                    }
                }
            })
            .ok();
        *history.thread.lock().unwrap_or_else(|p| p.into_inner()) = thread;
        history
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }

    fn take(&self, shards: &[ShardMetrics]) {
        let mut routes: Vec<RouteCounts> = Vec::new();
        for r in shards.iter().flat_map(|s| &s.routes) {
            let i = match routes
                .iter()
                .position(|c| c.name == r.name && c.tenant == r.tenant)
            {
                Some(i) => i,
                None => {
                    routes.push(RouteCounts {
                        tenant: r.tenant.clone(),
                        name: r.name.clone(),
                        classes: [0; 5],
                        buckets: [0; BUCKETS.len() + 1],
                        limited: 0,
                    });
                    routes.len() - 1
                }
            };
            let c = &mut routes[i];
            for (a, b) in c.classes.iter_mut().zip(r.classes()) {
                *a += b;
            }
            for (a, b) in c.buckets.iter_mut().zip(r.latency_buckets()) {
                *a += b;
            }
            c.limited += r.rate_limited();
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(Sample { at, routes });
    }
}

/// The latency below which `q` of the samples in `buckets` fall, in
/// milliseconds (`None` without samples).
fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (seen + n) as f64 >= rank {
            let low = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            // Above the last bound: the last bound is all that is known.
            let Some(&high) = BUCKETS.get(i) else {
                return Some(low * 1000.0);
            };
            let within = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
            return Some((low + (high - low) * within) * 1000.0);
        }
        seen += n;
    }
    None
}

/// Per interval between samples: requests per second, p50 and p99 (ms),
/// responses per second by class, refusals per second.
#[derive(Default)]
struct Series {
    rps: Vec<f64>,
    p50: Vec<Option<f64>>,
    p99: Vec<Option<f64>>,
    classes: [Vec<f64>; 5],
    limited: Vec<f64>,
    requests: u64,
}

impl Series {
    fn push(&mut self, dt: f64, now: &Counts, before: &Counts) {
        let classes: Vec<u64> = (0..5)
            .map(|i| now.classes[i].saturating_sub(before.classes[i]))
            .collect();
        let buckets: Vec<u64> = now
            .buckets
            .iter()
            .zip(&before.buckets)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let n: u64 = classes.iter().sum();
        self.rps.push(n as f64 / dt);
        self.p50.push(quantile(&buckets, 0.5));
        self.p99.push(quantile(&buckets, 0.99));
        for (s, c) in self.classes.iter_mut().zip(&classes) {
            s.push(*c as f64 / dt);
        }
        self.limited
            .push(now.limited.saturating_sub(before.limited) as f64 / dt);
    }

    fn json(&self, out: &mut String) {
        let nums = |v: &[f64]| -> String {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let opts = |v: &[Option<f64>]| -> String {
            v.iter()
                .map(|x| x.map_or_else(|| "null".to_string(), |x| format!("{x:.3}")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let _ = write!(
            out,
            "{{\"requests\":{},\"rps\":[{}],\"p50_ms\":[{}],\"p99_ms\":[{}],\"limited\":[{}],\"classes\":{{",
            self.requests,
            nums(&self.rps),
            opts(&self.p50),
            opts(&self.p99),
            nums(&self.limited)
        );
        for (i, c) in self.classes.iter().enumerate() {
            let _ = write!(
                out,
                "{}\"{}xx\":[{}]",
                if i > 0 { "," } else { "" },
                i + 1,
                nums(c)
            );
        }
        out.push_str("}}");
    }
}

/// Counts of one route (or of all) at one sample.
#[derive(Default, Clone)]
struct Counts {
    classes: [u64; 5],
    buckets: [u64; BUCKETS.len() + 1],
    limited: u64,
}

impl Counts {
    fn add(&mut self, r: &RouteCounts) {
        for (a, b) in self.classes.iter_mut().zip(&r.classes) {
            *a += b;
        }
        for (a, b) in self.buckets.iter_mut().zip(&r.buckets) {
            *a += b;
        }
        self.limited += r.limited;
    }
}

/// `GET /dashboard.json`.
pub(crate) fn json(handle: &GatewayHandle, history: &History) -> String {
    let samples = history.samples.lock().unwrap_or_else(|p| p.into_inner());
    // Every route seen in the window, by (tenant, name).
    let mut keys: Vec<(String, String)> = Vec::new();
    for s in samples.iter() {
        for r in &s.routes {
            if !keys.iter().any(|(t, n)| *t == r.tenant && *n == r.name) {
                keys.push((r.tenant.clone(), r.name.clone()));
            }
        }
    }
    let counts = |s: &Sample, key: Option<&(String, String)>| {
        let mut c = Counts::default();
        for r in &s.routes {
            if key.is_none_or(|(t, n)| *t == r.tenant && *n == r.name) {
                c.add(r);
            }
        }
        c
    };
    let mut total = Series::default();
    let mut routes: Vec<Series> = keys.iter().map(|_| Series::default()).collect();
    let mut times = Vec::new();
    for pair in samples.iter().collect::<Vec<_>>().windows(2) {
        let (before, now) = (pair[0], pair[1]);
        let dt = (now.at - before.at).max(0.001);
        times.push(now.at);
        total.push(dt, &counts(now, None), &counts(before, None));
        for (series, key) in routes.iter_mut().zip(&keys) {
            series.push(dt, &counts(now, Some(key)), &counts(before, Some(key)));
        }
    }
    if let Some(last) = samples.back() {
        total.requests = counts(last, None).classes.iter().sum();
        for (series, key) in routes.iter_mut().zip(&keys) {
            series.requests = counts(last, Some(key)).classes.iter().sum();
        }
    }
    drop(samples);

    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "{{\"interval_s\":{},\"times\":[{}],\"total\":",
        EVERY.as_secs(),
        times
            .iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    total.json(&mut out);
    out.push_str(",\"routes\":[");
    for (i, ((tenant, name), series)) in keys.iter().zip(&routes).enumerate() {
        let _ = write!(
            out,
            "{}{{\"tenant\":{},\"name\":{},\"series\":",
            if i > 0 { "," } else { "" },
            json_str(tenant),
            json_str(if name.is_empty() { "(no route)" } else { name })
        );
        series.json(&mut out);
        out.push('}');
    }
    out.push(']');
    let shards = handle.collect();
    out.push_str(",\"shards\":[");
    for (i, s) in shards.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"shard\":{},\"open\":{},\"accepted\":{},\"requests\":{},\"draining\":{}}}",
            if i > 0 { "," } else { "" },
            s.shard,
            s.stats.open_connections,
            s.stats.accepted,
            s.stats.requests,
            s.draining
        );
    }
    out.push(']');
    upstreams(handle, &shards, &mut out);
    config(handle, &mut out);
    out.push_str("}\n");
    out
}

/// `"upstreams"`: each group, and each endpoint's state on every shard.
fn upstreams(handle: &GatewayHandle, shards: &[ShardMetrics], out: &mut String) {
    let (config, _) = handle.config();
    out.push_str(",\"upstreams\":[");
    for (i, u) in config.upstreams.iter().enumerate() {
        let groups: Vec<_> = shards
            .iter()
            .filter_map(|s| s.groups.iter().find(|g| g.name == u.name))
            .collect();
        let breaker: Vec<&str> = groups
            .iter()
            .map(|g| match g.breaker_state {
                None => "\"none\"",
                Some(0) => "\"closed\"",
                Some(1) => "\"half-open\"",
                Some(_) => "\"open\"",
            })
            .collect();
        let _ = write!(
            out,
            "{}{{\"name\":{},\"breaker_by_shard\":[{}],\"endpoints\":[",
            if i > 0 { "," } else { "" },
            json_str(&u.name),
            breaker.join(",")
        );
        // The endpoints serving now (etcd or DNS may have changed the configured ones).
        let mut addrs: Vec<std::net::SocketAddr> = Vec::new();
        for g in &groups {
            for (a, _, _) in &g.endpoints {
                if !addrs.contains(a) {
                    addrs.push(*a);
                }
            }
        }
        for (j, a) in addrs.iter().enumerate() {
            let states: Vec<(bool, bool)> = groups
                .iter()
                .filter_map(|g| g.endpoints.iter().find(|(x, _, _)| x == a))
                .map(|&(_, up, ejected)| (up, ejected))
                .collect();
            let pool: usize = shards
                .iter()
                .flat_map(|s| s.pool_idle.iter())
                .filter(|(x, _)| x == a)
                .map(|(_, n)| n)
                .sum();
            let _ = write!(
                out,
                "{}{{\"address\":\"{a}\",\"healthy\":{},\"ejected_shards\":{},\"pool_idle\":{pool}}}",
                if j > 0 { "," } else { "" },
                states.iter().all(|s| s.0),
                states.iter().filter(|s| s.1).count()
            );
        }
        out.push_str("]}");
    }
    out.push(']');
}

/// `"config"`: the version serving and the reload history.
fn config(handle: &GatewayHandle, out: &mut String) {
    let (_, info) = handle.config();
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "null".to_string(), json_str);
    let _ = write!(
        out,
        ",\"config\":{{\"version\":{},\"source\":{},\"loaded_at_unix\":{},\"reloads\":{},\"reload_failures\":{},\"last_error\":{},\"history\":[",
        info.version,
        json_str(&info.source),
        unix(info.loaded_at),
        info.reloads,
        info.reload_failures,
        opt(&info.last_error)
    );
    for (i, e) in info.history.iter().rev().enumerate() {
        let _ = write!(
            out,
            "{}{{\"at_unix\":{},\"version\":{},\"error\":{}}}",
            if i > 0 { "," } else { "" },
            unix(e.at),
            e.version,
            opt(&e.error)
        );
    }
    out.push_str("]}");
}

fn json_str(s: &str) -> String {
    crate::admin::json_str(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let mut b = [0u64; BUCKETS.len() + 1];
        assert_eq!(quantile(&b, 0.5), None);
        // 100 samples in (0.5 ms, 1 ms]: the median is halfway.
        b[1] = 100;
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.75).abs() < 1e-9, "{p50}");
        // One slow sample above every bound: p99 stays in the fast bucket, p100 is the last bound.
        b[BUCKETS.len()] = 1;
        assert!(quantile(&b, 0.99).unwrap() <= 1.0);
        assert_eq!(quantile(&b, 1.0), Some(10_000.0));
    }
}
