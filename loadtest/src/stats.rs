//! Per-worker figures (histograms and counters), merged once at the end of a run, and the
//! live progress counters a worker publishes for the once-a-second line.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency a histogram tracks (larger values are clamped to it): 10 minutes in ns.
pub const HIST_MAX_NS: u64 = 600 * 1_000_000_000;
/// Significant decimal digits kept by every histogram.
pub const HIST_SIGFIG: u8 = 3;

/// A latency histogram in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG).expect("static histogram bounds")
}

/// Records a duration, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(ns);
}

/// Why a request or connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connecting failed or timed out.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// Reset or other I/O error while writing or reading.
    Reset,
    /// The peer closed before a complete response.
    Eof,
    /// The response could not be parsed or framed.
    Parse,
}

/// Error counters by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub eof: u64,
    pub parse: u64,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Reset => self.reset += 1,
            ErrorKind::Eof => self.eof += 1,
            ErrorKind::Parse => self.parse += 1,
        }
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.eof += o.eof;
        self.parse += o.parse;
    }

    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.eof + self.parse
    }
}

/// Responses by status code 100..=599 (anything else lands in slot 0).
#[derive(Debug, Clone)]
pub struct StatusCounts(Box<[u64; 600]>);

impl Default for StatusCounts {
    fn default() -> Self {
        StatusCounts(Box::new([0; 600]))
    }
}

impl StatusCounts {
    #[inline]
    pub fn add(&mut self, status: u16) {
        let i = if (100..600).contains(&status) {
            usize::from(status)
        } else {
            0
        };
        self.0[i] += 1;
    }

    pub fn merge(&mut self, o: &StatusCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }

    /// Non-zero `(status, count)` pairs, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s as u16, *n))
    }

    /// Responses whose status is not 2xx.
    pub fn non_2xx(&self) -> u64 {
        self.iter()
            .filter(|(s, _)| !(200..300).contains(s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Everything a load worker measures.
#[derive(Debug, Clone)]
pub struct LoadStats {
    /// Latency of measured responses; from the scheduled time in open-loop runs.
    pub latency: Histogram<u64>,
    /// Open loop only: from the actual send to the response (no correction).
    pub service: Option<Histogram<u64>>,
    /// Open loop only: how late each request was written after its scheduled time.
    pub lag: Option<Histogram<u64>>,
    pub requests: u64,
    pub bytes_read: u64,
    pub connects: u64,
    pub status: StatusCounts,
    pub errors: ErrorCounts,
}

impl LoadStats {
    pub fn new(open_loop: bool) -> Self {
        LoadStats {
            latency: new_histogram(),
            service: open_loop.then(new_histogram),
            lag: open_loop.then(new_histogram),
            requests: 0,
            bytes_read: 0,
            connects: 0,
            status: StatusCounts::default(),
            errors: ErrorCounts::default(),
        }
    }

    pub fn merge(&mut self, o: &LoadStats) {
        self.latency.add(&o.latency).expect("same histogram bounds");
        if let (Some(a), Some(b)) = (&mut self.service, &o.service) {
            a.add(b).expect("same histogram bounds");
        }
        if let (Some(a), Some(b)) = (&mut self.lag, &o.lag) {
            a.add(b).expect("same histogram bounds");
        }
        self.requests += o.requests;
        self.bytes_read += o.bytes_read;
        self.connects += o.connects;
        self.status.merge(&o.status);
        self.errors.merge(&o.errors);
    }
}

/// Counters a worker publishes for the progress line; one cache line each so workers never
/// share a line with each other.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Progress {
    /// Responses completed (including warm-up).
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    /// Hold mode: connections currently alive / failed.
    pub alive: AtomicU64,
    pub failed: AtomicU64,
    /// Hold mode: every connection of this worker has been tried.
    pub ready: AtomicBool,
}

impl Progress {
    pub fn set(cell: &AtomicU64, v: u64) {
        cell.store(v, Ordering::Relaxed);
    }

    pub fn get(cell: &AtomicU64) -> u64 {
        cell.load(Ordering::Relaxed)
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat`.
pub fn process_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after "(comm) ": state is the first, utime the 12th, stime the 13th.
    let rest = &text[text.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let ticks: u64 = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some(Duration::from_millis(ticks * 10))
}

/// Percentiles reported everywhere.
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 99.99];

/// A latency summary in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub stdev_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
}

fn us(ns: f64) -> f64 {
    ns.round() / 1000.0
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        let p = |q: f64| us(h.value_at_percentile(q) as f64);
        let empty = h.is_empty();
        LatencySummary {
            count: h.len(),
            min_us: if empty { 0.0 } else { us(h.min() as f64) },
            mean_us: us(h.mean()),
            stdev_us: us(h.stdev()),
            p50_us: p(PERCENTILES[0]),
            p90_us: p(PERCENTILES[1]),
            p99_us: p(PERCENTILES[2]),
            p99_9_us: p(PERCENTILES[3]),
            p99_99_us: p(PERCENTILES[4]),
            max_us: us(h.max() as f64),
        }
    }
}

/// Points of the percentile curve: `(percentile, latency in µs)`, denser towards the tail.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    if h.is_empty() {
        return out;
    }
    // Steps of 1/(1-p) on a log scale: 10 points per decade from p0 to p99.9999.
    for i in 0..=60 {
        let tail = 10f64.powf(-f64::from(i) / 10.0);
        let q = 100.0 * (1.0 - tail);
        out.push((q, us(h.value_at_percentile(q) as f64)));
    }
    out.push((100.0, us(h.max() as f64)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_merge() {
        let mut a = LoadStats::new(false);
        let mut b = LoadStats::new(false);
        for i in 1..=100u64 {
            record(&mut a.latency, Duration::from_micros(i));
        }
        record(&mut b.latency, Duration::from_millis(10));
        b.status.add(503);
        b.status.add(200);
        b.errors.add(ErrorKind::Timeout);
        a.merge(&b);
        let s = LatencySummary::of(&a.latency);
        assert_eq!(s.count, 101);
        assert!((s.p50_us - 51.0).abs() < 0.1, "{}", s.p50_us);
        assert!((s.max_us - 10_000.0).abs() < 10.0, "{}", s.max_us);
        assert_eq!(a.status.non_2xx(), 1);
        assert_eq!(a.errors.total(), 1);
        assert_eq!(
            a.status.iter().collect::<Vec<_>>(),
            vec![(200, 1), (503, 1)]
        );
    }

    #[test]
    fn reads_own_cpu_time() {
        let a = process_cpu().expect("/proc/self/stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu().expect("/proc/self/stat") >= a);
    }

    #[test]
    fn curve_is_monotonic() {
        let mut h = new_histogram();
        for i in 1..=10_000u64 {
            record(&mut h, Duration::from_nanos(i * 1000));
        }
        let c = percentile_curve(&h);
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(c.last().map(|p| p.0), Some(100.0));
    }
}
