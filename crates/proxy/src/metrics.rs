//! Metrics: every name in one place, recorded shard-locally with plain
//! `Cell`s on the request path, copied out by each shard when the admin
//! server asks (off the request path), merged and rendered in the
//! Prometheus text format. Label values are bounded: tenants, routes and
//! upstream groups by configured name, methods from a fixed list, status by
//! class.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::rc::Rc;
use std::time::Duration;

pub(crate) const REQUESTS: &str = "shardgate_requests_total";
pub(crate) const REQUEST_DURATION: &str = "shardgate_request_duration_seconds";
pub(crate) const UPSTREAM_DURATION: &str = "shardgate_upstream_response_duration_seconds";
pub(crate) const UPSTREAM_CONNECTS: &str = "shardgate_upstream_connects_total";
pub(crate) const UPSTREAM_REUSES: &str = "shardgate_upstream_reuses_total";
pub(crate) const UPSTREAM_CONNECT_ERRORS: &str = "shardgate_upstream_connect_errors_total";
pub(crate) const UPSTREAM_TIMEOUTS: &str = "shardgate_upstream_timeouts_total";
pub(crate) const UPSTREAM_RETRIES: &str = "shardgate_upstream_retries_total";
pub(crate) const POOL_REUSE_RATIO: &str = "shardgate_upstream_pool_reuse_ratio";
pub(crate) const POOL_IDLE: &str = "shardgate_upstream_pool_idle_connections";
pub(crate) const POOL_ACTIVE: &str = "shardgate_upstream_active_connections";
pub(crate) const OPEN_CONNECTIONS: &str = "shardgate_open_connections";
pub(crate) const PARKED_CONNECTIONS: &str = "shardgate_parked_connections";
pub(crate) const ACCEPTED: &str = "shardgate_accepted_connections_total";
pub(crate) const HANDSHAKE_LIMITED: &str = "shardgate_tls_handshake_limited_ticks_total";
pub(crate) const ACCEPT_ERRORS: &str = "shardgate_accept_errors_total";
pub(crate) const RELOADS: &str = "shardgate_config_reloads_total";
pub(crate) const RELOAD_FAILURES: &str = "shardgate_config_reload_failures_total";
pub(crate) const CONFIG_VERSION: &str = "shardgate_config_version";
pub(crate) const LOG_DROPPED: &str = "shardgate_access_log_dropped_lines_total";
pub(crate) const LOG_WRITTEN: &str = "shardgate_access_log_lines_total";
pub(crate) const BREAKER_STATE: &str = "shardgate_upstream_breaker_state";
pub(crate) const BREAKER_REJECTIONS: &str = "shardgate_upstream_breaker_rejections_total";
pub(crate) const EJECTED: &str = "shardgate_upstream_ejected_endpoints";
pub(crate) const UNHEALTHY: &str = "shardgate_upstream_unhealthy_endpoints";
pub(crate) const RATE_LIMITED: &str = "shardgate_rate_limited_total";
pub(crate) const HTTP2_CONNECTIONS: &str = "shardgate_http2_connections_total";
pub(crate) const HTTP2_ABUSE: &str = "shardgate_http2_abuse_closed_connections_total";

/// Histogram bucket upper bounds, seconds.
pub(crate) const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Method label values; anything else is `OTHER`.
pub(crate) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

pub(crate) fn method_index(m: &[u8]) -> usize {
    METHODS[..7]
        .iter()
        .position(|x| x.as_bytes() == m)
        .unwrap_or(7)
}

/// Status class index: 0 for 1xx ... 4 for 5xx.
fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// A fixed-bucket latency histogram of one shard.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [Cell<u64>; BUCKETS.len() + 1],
    sum_micros: Cell<u64>,
}

impl Histogram {
    pub(crate) fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].set(self.buckets[i].get() + 1);
        self.sum_micros
            .set(self.sum_micros.get() + d.as_micros() as u64);
    }

    fn snapshot(&self) -> HistogramData {
        HistogramData {
            buckets: std::array::from_fn(|i| self.buckets[i].get()),
            sum_micros: self.sum_micros.get(),
        }
    }
}

/// One route's counters on one shard. Shared (by name) by every snapshot
/// of the shard, so counts survive reloads.
#[derive(Default)]
pub(crate) struct RouteMetrics {
    requests: [[Cell<u64>; 5]; METHODS.len()],
    pub duration: Histogram,
    /// Requests a rate limit refused with 429.
    pub rate_limited: Cell<u64>,
}

impl RouteMetrics {
    pub(crate) fn record(&self, method: usize, status: u16, took: Duration) {
        let c = &self.requests[method][class_index(status)];
        c.set(c.get() + 1);
        self.duration.record(took);
    }
}

/// One upstream group's counters on one shard.
#[derive(Default)]
pub(crate) struct GroupMetrics {
    pub response: Histogram,
    pub timeouts: Cell<u64>,
    pub breaker_rejections: Cell<u64>,
}

/// The shard's metrics by name.
#[derive(Default)]
pub(crate) struct Registry {
    /// By (tenant, route).
    routes: RefCell<HashMap<(String, String), Rc<RouteMetrics>>>,
    groups: RefCell<HashMap<String, Rc<GroupMetrics>>>,
}

/// Label for requests that matched no route (404, 405, 400 ...).
pub(crate) const NO_ROUTE: &str = "";

impl Registry {
    pub(crate) fn route(&self, tenant: &str, name: &str) -> Rc<RouteMetrics> {
        self.routes
            .borrow_mut()
            .entry((tenant.to_string(), name.to_string()))
            .or_default()
            .clone()
    }

    pub(crate) fn group(&self, name: &str) -> Rc<GroupMetrics> {
        self.groups
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn snapshot(&self) -> (Vec<RouteData>, Vec<GroupData>) {
        let routes = self
            .routes
            .borrow()
            .iter()
            .map(|((tenant, name), m)| RouteData {
                tenant: tenant.clone(),
                name: name.clone(),
                requests: std::array::from_fn(|i| std::array::from_fn(|j| m.requests[i][j].get())),
                duration: m.duration.snapshot(),
                rate_limited: m.rate_limited.get(),
            })
            .collect();
        let groups = self
            .groups
            .borrow()
            .iter()
            .map(|(name, g)| GroupData {
                name: name.clone(),
                response: g.response.snapshot(),
                timeouts: g.timeouts.get(),
                breaker_rejections: g.breaker_rejections.get(),
                breaker_state: None,
                ejected: 0,
                down: 0,
                endpoints: Vec::new(),
            })
            .collect();
        (routes, groups)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct HistogramData {
    buckets: [u64; BUCKETS.len() + 1],
    sum_micros: u64,
}

impl HistogramData {
    fn add(&mut self, o: &HistogramData) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.sum_micros += o.sum_micros;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[derive(Debug, Clone)]
pub struct RouteData {
    /// The route's tenant (empty for none).
    pub tenant: String,
    pub name: String,
    requests: [[u64; 5]; METHODS.len()],
    duration: HistogramData,
    rate_limited: u64,
}

impl RouteData {
    /// Responses by status class (1xx to 5xx), every method together.
    pub fn classes(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for per_method in &self.requests {
            for (o, n) in out.iter_mut().zip(per_method) {
                *o += n;
            }
        }
        out
    }

    /// The latency histogram's bucket counts (not cumulative; the last is
    /// above every bound of [`BUCKETS`]).
    pub fn latency_buckets(&self) -> &[u64; BUCKETS.len() + 1] {
        &self.duration.buckets
    }

    pub fn rate_limited(&self) -> u64 {
        self.rate_limited
    }
}

#[derive(Debug, Clone)]
pub struct GroupData {
    pub name: String,
    response: HistogramData,
    timeouts: u64,
    breaker_rejections: u64,
    /// 0 closed, 1 half-open, 2 open; `None` without a breaker (or when the
    /// group left the configuration).
    pub breaker_state: Option<u8>,
    /// Endpoints ejected by outlier detection now.
    pub ejected: u64,
    /// Endpoints active health checks hold down now.
    pub down: u64,
    /// Each endpoint's (address, up by the health checks, ejected now).
    pub endpoints: Vec<(std::net::SocketAddr, bool, bool)>,
}

/// Everything one shard reports when asked.
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    pub shard: usize,
    pub config_version: u64,
    pub draining: bool,
    pub stats: crate::StatsSnapshot,
    pub routes: Vec<RouteData>,
    pub groups: Vec<GroupData>,
    /// (endpoint, idle pooled connections).
    pub pool_idle: Vec<(std::net::SocketAddr, usize)>,
    pub log_written: u64,
    pub log_dropped: u64,
    /// Ticks in which TLS handshakes were held to their share of the shard.
    pub handshake_limited_ticks: u64,
    /// Spans the shard's buffer had no room for.
    pub spans_dropped: u64,
    /// HTTP/2 connections served, and those closed as abusive, by
    /// [`crate::h2::Abuse`] index.
    pub http2: Http2Counts,
}

/// A shard's downstream HTTP/2 counters.
#[derive(Debug, Default, Clone)]
pub struct Http2Counts {
    pub connections: u64,
    pub abuse: [u64; crate::h2::Abuse::ALL.len()],
}

/// Gateway-wide values the exposition adds to the shards' reports.
pub struct GatewayFacts {
    pub config_version: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Access log lines the writer failed to write (disk full, I/O errors).
    pub log_lost: u64,
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Unlabelled series, `(name without the shardgate_ prefix, type, help, value)`, each with its
/// `# HELP` and `# TYPE` lines.
pub(crate) fn plain(out: &mut String, lines: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, value) in lines {
        header(out, &format!("shardgate_{name}"), kind, help);
        let _ = writeln!(out, "shardgate_{name} {value}");
    }
}

pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A histogram's samples; `labels` is a rendered label list (`a="x",b="y"`).
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramData) {
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
    }
    cumulative += h.buckets[BUCKETS.len()];
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
}

/// The label list of a route's samples.
fn route_labels(tenant: &str, route: &str) -> String {
    format!("tenant=\"{}\",route=\"{}\"", escape(tenant), escape(route))
}

/// One sample per shard.
fn per_shard(
    out: &mut String,
    shards: &[ShardMetrics],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&ShardMetrics) -> u64,
) {
    header(out, name, kind, help);
    for s in shards {
        let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(s));
    }
}

/// A gauge per upstream group per shard (`None`: no sample).
fn per_shard_group(
    out: &mut String,
    shards: &[ShardMetrics],
    name: &str,
    help: &str,
    value: impl Fn(&GroupData) -> Option<u64>,
) {
    header(out, name, "gauge", help);
    for s in shards {
        for g in &s.groups {
            if let Some(v) = value(g) {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",shard=\"{}\"}} {v}",
                    escape(&g.name),
                    s.shard
                );
            }
        }
    }
}

/// Renders the merged reports in the Prometheus text format (version 0.0.4).
pub fn render(shards: &[ShardMetrics], facts: &GatewayFacts) -> String {
    let mut out = String::with_capacity(8 * 1024);
    type RouteSums = ([[u64; 5]; METHODS.len()], HistogramData, u64);
    let mut routes: BTreeMap<(&str, &str), RouteSums> = BTreeMap::new();
    let mut groups: BTreeMap<&str, (HistogramData, u64, u64)> = BTreeMap::new();
    let mut pool_idle: BTreeMap<std::net::SocketAddr, usize> = BTreeMap::new();
    let mut total = crate::StatsSnapshot::default();
    let (mut log_written, mut log_dropped) = (0, 0);
    for s in shards {
        total.add(&s.stats);
        log_written += s.log_written;
        log_dropped += s.log_dropped;
        for r in &s.routes {
            let e = routes.entry((&r.tenant, &r.name)).or_default();
            for (m, row) in r.requests.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    e.0[m][c] += v;
                }
            }
            e.1.add(&r.duration);
            e.2 += r.rate_limited;
        }
        for g in &s.groups {
            let e = groups.entry(&g.name).or_default();
            e.0.add(&g.response);
            e.1 += g.timeouts;
            e.2 += g.breaker_rejections;
        }
        for (addr, n) in &s.pool_idle {
            *pool_idle.entry(*addr).or_default() += n;
        }
    }

    header(
        &mut out,
        REQUESTS,
        "counter",
        "Requests answered, by tenant, route, method and status class.",
    );
    for ((tenant, route), (counts, _, _)) in &routes {
        let labels = route_labels(tenant, route);
        for (m, row) in counts.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                if *v > 0 {
                    let _ = writeln!(
                        out,
                        "{REQUESTS}{{{labels},method=\"{}\",status_class=\"{}xx\"}} {v}",
                        METHODS[m],
                        c + 1
                    );
                }
            }
        }
    }
    header(
        &mut out,
        REQUEST_DURATION,
        "histogram",
        "Time from a request's first byte to its response's last, by tenant and route.",
    );
    for ((tenant, route), (_, h, _)) in &routes {
        histogram(&mut out, REQUEST_DURATION, &route_labels(tenant, route), h);
    }
    header(
        &mut out,
        RATE_LIMITED,
        "counter",
        "Requests refused with 429 by a rate limit, by tenant and route.",
    );
    for ((tenant, route), (_, _, n)) in &routes {
        if !route.is_empty() {
            let _ = writeln!(out, "{RATE_LIMITED}{{{}}} {n}", route_labels(tenant, route));
        }
    }
    header(
        &mut out,
        UPSTREAM_DURATION,
        "histogram",
        "Time from sending a request upstream to its response head, by upstream group.",
    );
    for (group, (h, _, _)) in &groups {
        let labels = format!("upstream=\"{}\"", escape(group));
        histogram(&mut out, UPSTREAM_DURATION, &labels, h);
    }
    header(
        &mut out,
        UPSTREAM_TIMEOUTS,
        "counter",
        "Upstream responses that timed out, by upstream group.",
    );
    for (group, (_, t, _)) in &groups {
        let _ = writeln!(
            out,
            "{UPSTREAM_TIMEOUTS}{{upstream=\"{}\"}} {t}",
            escape(group)
        );
    }
    header(
        &mut out,
        BREAKER_REJECTIONS,
        "counter",
        "Requests refused with 503 by an open circuit breaker, by upstream group.",
    );
    for (group, (_, _, r)) in &groups {
        let _ = writeln!(
            out,
            "{BREAKER_REJECTIONS}{{upstream=\"{}\"}} {r}",
            escape(group)
        );
    }
    per_shard_group(
        &mut out,
        shards,
        BREAKER_STATE,
        "Circuit breaker state by upstream group and shard: 0 closed, 1 half-open, 2 open.",
        |g| g.breaker_state.map(u64::from),
    );
    per_shard_group(
        &mut out,
        shards,
        UNHEALTHY,
        "Endpoints active health checks hold down, by upstream group and shard.",
        |g| Some(g.down),
    );
    per_shard_group(
        &mut out,
        shards,
        EJECTED,
        "Endpoints ejected by outlier detection, by upstream group and shard.",
        |g| Some(g.ejected),
    );
    let counters = [
        (
            UPSTREAM_CONNECTS,
            "Upstream connections opened.",
            total.upstream_connects,
        ),
        (
            UPSTREAM_REUSES,
            "Upstream requests sent on a pooled connection.",
            total.upstream_reuses,
        ),
        (
            UPSTREAM_CONNECT_ERRORS,
            "Upstream connects that failed or timed out.",
            total.upstream_connect_errors,
        ),
        (
            UPSTREAM_RETRIES,
            "Requests retried on another connection or endpoint.",
            total.upstream_retries,
        ),
        (RELOADS, "Configuration reloads applied.", facts.reloads),
        (
            RELOAD_FAILURES,
            "Configuration reloads refused (the old configuration kept serving).",
            facts.reload_failures,
        ),
        (
            LOG_WRITTEN,
            "Access log lines handed to the writer.",
            log_written,
        ),
        (
            LOG_DROPPED,
            "Access log lines dropped: the writer was behind (slow disk) or could not write (full disk).",
            log_dropped + facts.log_lost,
        ),
    ];
    for (name, help, v) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        &mut out,
        POOL_REUSE_RATIO,
        "gauge",
        "Share of upstream requests that reused a pooled connection.",
    );
    let _ = writeln!(out, "{POOL_REUSE_RATIO} {}", total.reuse_ratio());
    header(
        &mut out,
        POOL_ACTIVE,
        "gauge",
        "Upstream connections carrying a request now.",
    );
    let _ = writeln!(out, "{POOL_ACTIVE} {}", total.upstream_active);
    header(
        &mut out,
        POOL_IDLE,
        "gauge",
        "Idle pooled upstream connections, by endpoint.",
    );
    for (addr, n) in &pool_idle {
        let _ = writeln!(out, "{POOL_IDLE}{{endpoint=\"{addr}\"}} {n}");
    }
    per_shard(
        &mut out,
        shards,
        OPEN_CONNECTIONS,
        "gauge",
        "Open client connections, by shard.",
        |s| s.stats.open_connections,
    );
    per_shard(
        &mut out,
        shards,
        PARKED_CONNECTIONS,
        "gauge",
        "Open client connections idle long enough to be held without a task, by shard.",
        |s| s.stats.parked_connections,
    );
    per_shard(
        &mut out,
        shards,
        ACCEPTED,
        "counter",
        "Client connections accepted, by shard (shows SO_REUSEPORT skew).",
        |s| s.stats.accepted,
    );
    per_shard(
        &mut out,
        shards,
        HANDSHAKE_LIMITED,
        "counter",
        "Ticks (10 ms) in which TLS handshakes were held to their share of a busy shard, by shard.",
        |s| s.handshake_limited_ticks,
    );
    per_shard(
        &mut out,
        shards,
        ACCEPT_ERRORS,
        "counter",
        "Accept failures, by shard.",
        |s| s.stats.accept_errors,
    );
    per_shard(
        &mut out,
        shards,
        HTTP2_CONNECTIONS,
        "counter",
        "Client connections that spoke HTTP/2, by shard.",
        |s| s.http2.connections,
    );
    header(
        &mut out,
        HTTP2_ABUSE,
        "counter",
        "HTTP/2 connections closed with GOAWAY as abusive, by what they did.",
    );
    for kind in crate::h2::Abuse::ALL {
        let n: u64 = shards.iter().map(|s| s.http2.abuse[kind.index()]).sum();
        let _ = writeln!(out, "{HTTP2_ABUSE}{{reason=\"{}\"}} {n}", kind.label());
    }
    header(
        &mut out,
        CONFIG_VERSION,
        "gauge",
        "Version of the configuration being served (1 at start, +1 per reload).",
    );
    let _ = writeln!(out, "{CONFIG_VERSION} {}", facts.config_version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_render() {
        let r = RouteMetrics::default();
        r.record(method_index(b"GET"), 200, Duration::from_micros(300));
        r.record(method_index(b"GET"), 503, Duration::from_millis(30));
        r.record(method_index(b"BREW"), 404, Duration::from_secs(60));
        let reg = Registry::default();
        r.rate_limited.set(3);
        *reg.routes
            .borrow_mut()
            .entry(("acme".into(), "api".into()))
            .or_default() = Rc::new(r);
        let (routes, groups) = reg.snapshot();
        let shard = ShardMetrics {
            shard: 0,
            config_version: 1,
            draining: false,
            stats: Default::default(),
            routes,
            groups,
            pool_idle: vec![],
            log_written: 0,
            log_dropped: 0,
            handshake_limited_ticks: 0,
            spans_dropped: 0,
            http2: Http2Counts::default(),
        };
        let text = render(
            &[shard.clone(), shard],
            &GatewayFacts {
                config_version: 1,
                reloads: 0,
                reload_failures: 0,
                log_lost: 0,
            },
        );
        assert!(
            text.contains(
                "shardgate_requests_total{tenant=\"acme\",route=\"api\",method=\"GET\",status_class=\"2xx\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "shardgate_requests_total{tenant=\"acme\",route=\"api\",method=\"OTHER\",status_class=\"4xx\"} 2"
        ));
        assert!(
            text.contains(
                "shardgate_request_duration_seconds_bucket{tenant=\"acme\",route=\"api\",le=\"0.0005\"} 2"
            )
        );
        assert!(text.contains(
            "shardgate_request_duration_seconds_bucket{tenant=\"acme\",route=\"api\",le=\"0.05\"} 4"
        ));
        assert!(text.contains(
            "shardgate_request_duration_seconds_bucket{tenant=\"acme\",route=\"api\",le=\"+Inf\"} 6"
        ));
        assert!(text.contains("shardgate_rate_limited_total{tenant=\"acme\",route=\"api\"} 6"));
        assert!(
            text.contains(
                "shardgate_request_duration_seconds_count{tenant=\"acme\",route=\"api\"} 6"
            )
        );
    }
}
