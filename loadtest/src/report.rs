//! Reports: the summary printed at the end, and the same figures as JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::cli::LoadOpts;
use crate::stats::{ErrorCounts, LatencySummary, LoadStats, percentile_curve};
use crate::target::Target;

/// Every figure of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub tool: &'static str,
    pub mode: &'static str,
    pub url: String,
    pub target: String,
    pub driver: &'static str,
    pub threads: usize,
    pub connections: u64,
    pub pipeline: u32,
    pub target_rate: Option<f64>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub requests: u64,
    pub throughput_rps: f64,
    pub bytes_read: u64,
    pub connects: u64,
    /// Closed loop: from write to response. Open loop: from the scheduled send time.
    pub latency: LatencySummary,
    /// Open loop only: from the actual write, without coordinated-omission correction.
    pub service_latency: Option<LatencySummary>,
    /// Open loop only: how late requests were written after their scheduled time (the
    /// harness's own timer and scheduling delays, plus waiting behind slow responses).
    pub send_lag: Option<LatencySummary>,
    /// `(percentile, µs)` points of the latency curve.
    pub latency_curve: Vec<(f64, f64)>,
    pub service_curve: Option<Vec<(f64, f64)>>,
    pub errors: ErrorCounts,
    pub errors_total: u64,
    /// The harness's own CPU time (user + system) for the whole run, warm-up included.
    pub harness_cpu_s: f64,
    /// `harness_cpu_s` per response completed (warm-up included), in µs.
    pub harness_cpu_us_per_request: f64,
    pub non_2xx: u64,
    pub status: BTreeMap<String, u64>,
    /// Responses and errors per second over the run (warm-up at negative times).
    pub timeline: Vec<TimelinePoint>,
}

/// One sample of [`LoadReport::timeline`].
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the measured part began (negative in the warm-up).
    pub t_s: f64,
    pub rps: f64,
    pub errors_per_s: f64,
}

impl LoadReport {
    pub fn new(
        opts: &LoadOpts,
        target: &Target,
        driver: &'static str,
        threads: usize,
        stats: &LoadStats,
        elapsed: Duration,
        cpu: (Duration, u64),
    ) -> Self {
        let secs = elapsed.as_secs_f64();
        LoadReport {
            tool: "shardgate-loadtest",
            mode: if opts.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            url: opts.url.clone(),
            target: target.addr.to_string(),
            driver,
            threads,
            connections: opts.connections,
            pipeline: opts.pipeline,
            target_rate: opts.rate,
            warmup_s: opts.warmup.as_secs_f64(),
            duration_s: secs,
            requests: stats.requests,
            throughput_rps: stats.requests as f64 / secs,
            bytes_read: stats.bytes_read,
            connects: stats.connects,
            latency: LatencySummary::of(&stats.latency),
            service_latency: stats.service.as_ref().map(LatencySummary::of),
            send_lag: stats.lag.as_ref().map(LatencySummary::of),
            latency_curve: percentile_curve(&stats.latency),
            service_curve: stats.service.as_ref().map(percentile_curve),
            errors: stats.errors,
            errors_total: stats.errors.total(),
            harness_cpu_s: cpu.0.as_secs_f64(),
            harness_cpu_us_per_request: cpu.0.as_secs_f64() * 1e6 / cpu.1.max(1) as f64,
            non_2xx: stats.status.non_2xx(),
            status: stats
                .status
                .iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
            timeline: Vec::new(),
        }
    }
}

/// Formats microseconds with a unit that keeps 3-4 significant digits.
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.1}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn latency_line(label: &str, l: &LatencySummary) -> String {
    format!(
        "  {label:<10} p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}\n  {:<10} mean {}  stdev {}  min {}",
        fmt_us(l.p50_us),
        fmt_us(l.p90_us),
        fmt_us(l.p99_us),
        fmt_us(l.p99_9_us),
        fmt_us(l.p99_99_us),
        fmt_us(l.max_us),
        "",
        fmt_us(l.mean_us),
        fmt_us(l.stdev_us),
        fmt_us(l.min_us),
    )
}

fn errors_line(e: &ErrorCounts) -> String {
    format!(
        "connect {}, timeout {}, reset {}, eof {}, parse {}",
        e.connect, e.timeout, e.reset, e.eof, e.parse
    )
}

/// Prints the end-of-run summary on stdout.
pub fn print_load(r: &LoadReport) {
    let mode = match r.target_rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None if r.pipeline > 1 => format!("closed loop, pipeline {}", r.pipeline),
        None => "closed loop".to_string(),
    };
    println!(
        "{} ({}) for {:.1}s after {:.1}s warm-up: {} threads, {} connections, {mode}, {} driver",
        r.url, r.target, r.duration_s, r.warmup_s, r.threads, r.connections, r.driver
    );
    println!(
        "  requests   {}  ({:.1} req/s), {:.1} MiB read, {} connects",
        r.requests,
        r.throughput_rps,
        r.bytes_read as f64 / 1048576.0,
        r.connects
    );
    let label = if r.target_rate.is_some() {
        "latency*"
    } else {
        "latency"
    };
    println!("{}", latency_line(label, &r.latency));
    if let Some(s) = &r.service_latency {
        println!("{}", latency_line("service", s));
        println!("  (* from the scheduled send time; service: from the actual write)");
    }
    if let Some(l) = &r.send_lag {
        println!(
            "  send lag   p50 {}  p99 {}  max {}  (write time after schedule)",
            fmt_us(l.p50_us),
            fmt_us(l.p99_us),
            fmt_us(l.max_us)
        );
    }
    println!("  errors     {}", errors_line(&r.errors));
    println!(
        "  harness    {:.2}s CPU, {:.2}us per request",
        r.harness_cpu_s, r.harness_cpu_us_per_request
    );
    if r.non_2xx > 0 {
        let by: Vec<String> = r
            .status
            .iter()
            .filter(|(s, _)| !s.starts_with('2'))
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        println!("  non-2xx    {} ({})", r.non_2xx, by.join(", "));
    }
}

/// Writes any report as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, report: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| format!("cannot encode the JSON report: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(fmt_us(12.34), "12.3us");
        assert_eq!(fmt_us(1234.0), "1.23ms");
        assert_eq!(fmt_us(2_500_000.0), "2.50s");
    }
}
