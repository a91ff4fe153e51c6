//! Command line: a small hand-written parser (`--flag value`, `--flag=value`, `-f value`).

use std::path::PathBuf;
use std::time::Duration;

/// Longest run the harness accepts for `-d` (and hold duration).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Request cap when `-n` is not given; with `-d` at most an hour this is never the binding limit
/// below ~280k req/s, but it keeps every run bounded in count as well as time.
pub const DEFAULT_MAX_REQUESTS: u64 = 1_000_000_000;
/// Largest `-n` accepted.
pub const MAX_REQUESTS: u64 = 100_000_000_000;
/// Largest number of connections per run.
pub const MAX_CONNECTIONS: u64 = 1_000_000;

pub const HELP: &str = "\
loadtest: Shardgate's HTTP/1.1 load generator, connection holder and upstream

USAGE:
    loadtest [OPTIONS] URL              load test (closed loop, or open loop with --rate)
    loadtest hold [OPTIONS] URL         open many connections, keep them alive with heartbeats
    loadtest upstream [OPTIONS]         fast fixed-response HTTP/1.1 server for benchmarks
    loadtest compare A.json B.json... --html FILE   the runs' --json reports side by side
    loadtest help | --help | -h         this text

URL is http://HOST[:PORT][/PATH]. HOST must resolve to loopback (127.0.0.0/8 or ::1) unless
--allow-remote is given. DURATIONs take a unit: 500ms, 30s, 2m, 1h (a bare number is seconds).
COUNTs may end in k (thousand) or m (million).

LOAD OPTIONS:
    -c, --connections COUNT   connections, spread over the threads [default: 64]
    -t, --threads COUNT       worker threads, one pinned per CPU [default: CPUs available]
    -d, --duration DURATION   measured time, at most 1h [default: 10s]
    -w, --warmup DURATION     load before measuring, excluded from all figures [default: 1s]
    -n, --requests COUNT      stop after this many measured requests [default: 1000000000]
    -R, --rate RATE           open loop: RATE requests/s in total, on a fixed schedule;
                              latency counts from the scheduled send time (coordinated-
                              omission correction); without it the run is closed loop
    -p, --pipeline DEPTH      closed loop: requests in flight per connection [default: 1]
        --timeout DURATION    per request and per connect attempt [default: 5s]
    -m, --method METHOD       request method [default: GET]
    -H, --header 'NAME: VALUE'  extra request header (repeatable)
        --body TEXT           request body (sent with Content-Length)
        --json FILE           write every figure as JSON
        --plot FILE.svg       draw the latency percentile curve as SVG
        --html FILE.html      a report page: throughput over time, the percentile curve,
                              errors and statuses, and the run's settings
        --driver DRIVER       uring | legacy | auto [default: legacy]
        --no-progress         no live line (it is shown only when stderr is a terminal)
        --allow-remote        allow a target outside loopback (never needed on one machine)

HOLD OPTIONS (loadtest hold):
    -c, --connections COUNT   connections to open and hold [default: 1000]
    -t, --threads COUNT       worker threads [default: CPUs available]
    -d, --duration DURATION   how long to hold once connected, at most 1h [default: 30s]
    -k, --heartbeat DURATION  one request per connection every DURATION [default: 10s]
        --sources COUNT       source addresses 127.0.0.1..127.0.0.COUNT to spread the
                              connections over [default: one per 16384 connections]
        --connect-concurrency COUNT  connects in flight per thread [default: 256]
        --timeout DURATION    per connect and per request [default: 5s]
        --ready-file FILE     created once every connection has been tried (for scripts)
        --json FILE           write the figures as JSON
        --driver DRIVER       uring | legacy | auto [default: legacy]
        --no-progress         no live line
        --allow-remote        allow a target outside loopback

UPSTREAM OPTIONS (loadtest upstream):
        --listen ADDR         address to listen on; port 0 picks one [default: 127.0.0.1:8080]
        --body-size BYTES     response body size [default: 64]
        --delay MS            wait this many milliseconds before each response [default: 0]
        --status CODE         response status [default: 200]
        --name NAME           send `X-Upstream: NAME` to tell instances apart
    -t, --threads COUNT       worker threads, SO_REUSEPORT listener each [default: CPUs]
        --driver DRIVER       uring | legacy | auto [default: legacy]
    It prints `listening on ADDR` on stdout once bound, and serves until killed.

COMPARE (loadtest compare):
    Reads two or more reports written with --json and writes one HTML page with their
    settings and figures in columns and their curves on the same axes.
        --html FILE.html      where to write the page (required)
";

/// Which monoio driver a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Auto,
    Uring,
    Legacy,
}

#[derive(Debug, Clone)]
pub struct LoadOpts {
    pub url: String,
    pub connections: u64,
    pub threads: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub requests: u64,
    pub rate: Option<f64>,
    pub pipeline: u32,
    pub timeout: Duration,
    pub method: String,
    pub headers: Vec<String>,
    pub body: Option<String>,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub driver: Driver,
    pub progress: bool,
    pub allow_remote: bool,
}

#[derive(Debug, Clone)]
pub struct CompareOpts {
    pub reports: Vec<PathBuf>,
    pub html: PathBuf,
}

#[derive(Debug, Clone)]
pub struct HoldOpts {
    pub url: String,
    pub connections: u64,
    pub threads: usize,
    pub duration: Duration,
    pub heartbeat: Duration,
    pub sources: Option<u32>,
    pub connect_concurrency: usize,
    pub timeout: Duration,
    pub ready_file: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub driver: Driver,
    pub progress: bool,
    pub allow_remote: bool,
}

#[derive(Debug, Clone)]
pub struct UpstreamOpts {
    pub listen: String,
    pub body_size: usize,
    pub delay: Duration,
    pub status: u16,
    pub name: Option<String>,
    pub threads: usize,
    pub driver: Driver,
}

#[derive(Debug, Clone)]
pub enum Command {
    Help,
    Load(LoadOpts),
    Hold(HoldOpts),
    Upstream(UpstreamOpts),
    Compare(CompareOpts),
}

/// Number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (examples: 500ms, 30s, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 1e7 {
        return Err(format!("duration {text:?} out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Parses `10000`, `10k` or `2m`.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, scale) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1_000),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1_000_000),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("invalid count {text:?}"))
}

fn parse_driver(text: &str) -> Result<Driver, String> {
    match text {
        "auto" => Ok(Driver::Auto),
        "uring" | "io_uring" | "iouring" => Ok(Driver::Uring),
        "legacy" | "epoll" => Ok(Driver::Legacy),
        _ => Err(format!(
            "invalid driver {text:?} (expected uring, legacy or auto)"
        )),
    }
}

/// Splits `--flag=value` and walks the arguments.
struct Args {
    items: std::vec::IntoIter<String>,
    pending_value: Option<String>,
}

impl Args {
    fn new(args: Vec<String>) -> Self {
        Args {
            items: args.into_iter(),
            pending_value: None,
        }
    }

    /// Next flag or positional argument.
    fn next(&mut self) -> Result<Option<String>, String> {
        if let Some(v) = self.pending_value.take() {
            return Err(format!("unexpected value {v:?}"));
        }
        let Some(arg) = self.items.next() else {
            return Ok(None);
        };
        if arg.starts_with("--")
            && let Some((flag, value)) = arg.split_once('=')
        {
            self.pending_value = Some(value.to_string());
            return Ok(Some(flag.to_string()));
        }
        Ok(Some(arg))
    }

    fn value(&mut self, flag: &str) -> Result<String, String> {
        if let Some(v) = self.pending_value.take() {
            return Ok(v);
        }
        self.items
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))
    }
}

fn nonzero(flag: &str, n: u64, max: u64) -> Result<u64, String> {
    if n == 0 || n > max {
        return Err(format!("{flag} must be between 1 and {max}"));
    }
    Ok(n)
}

fn bounded_duration(flag: &str, d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "{flag} must be at most {}s",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// Parses the arguments after the program name.
pub fn parse(args: Vec<String>) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => Ok(Command::Help),
        Some("hold") => parse_hold(args[1..].to_vec()).map(Command::Hold),
        Some("upstream") => parse_upstream(args[1..].to_vec()).map(Command::Upstream),
        Some("compare") => parse_compare(args[1..].to_vec()).map(Command::Compare),
        Some("run") => parse_load(args[1..].to_vec()).map(Command::Load),
        Some(_) => parse_load(args).map(Command::Load),
    }
}

fn parse_load(args: Vec<String>) -> Result<LoadOpts, String> {
    let mut o = LoadOpts {
        url: String::new(),
        connections: 64,
        threads: available_cpus(),
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        requests: DEFAULT_MAX_REQUESTS,
        rate: None,
        pipeline: 1,
        timeout: Duration::from_secs(5),
        method: "GET".into(),
        headers: Vec::new(),
        body: None,
        json: None,
        plot: None,
        html: None,
        driver: Driver::Legacy,
        progress: true,
        allow_remote: false,
    };
    let mut a = Args::new(args);
    while let Some(flag) = a.next()? {
        match flag.as_str() {
            "-c" | "--connections" => {
                let n = parse_count(&a.value(&flag)?)?;
                o.connections = nonzero(&flag, n, MAX_CONNECTIONS)?;
            }
            "-t" | "--threads" => {
                o.threads = nonzero(&flag, parse_count(&a.value(&flag)?)?, 1024)? as usize;
            }
            "-d" | "--duration" => {
                o.duration = bounded_duration(&flag, parse_duration(&a.value(&flag)?)?)?;
            }
            "-w" | "--warmup" => {
                o.warmup = bounded_duration(&flag, parse_duration(&a.value(&flag)?)?)?;
            }
            "-n" | "--requests" => {
                o.requests = nonzero(&flag, parse_count(&a.value(&flag)?)?, MAX_REQUESTS)?;
            }
            "-R" | "--rate" => {
                let v = a.value(&flag)?;
                let r: f64 = v.parse().map_err(|_| format!("invalid rate {v:?}"))?;
                if !(r > 0.0 && r <= 1e8) {
                    return Err("--rate must be between 0 and 100000000".into());
                }
                o.rate = Some(r);
            }
            "-p" | "--pipeline" => {
                o.pipeline = nonzero(&flag, parse_count(&a.value(&flag)?)?, 1024)? as u32;
            }
            "--timeout" => o.timeout = parse_duration(&a.value(&flag)?)?,
            "-m" | "--method" => o.method = a.value(&flag)?,
            "-H" | "--header" => o.headers.push(a.value(&flag)?),
            "--body" => o.body = Some(a.value(&flag)?),
            "--json" => o.json = Some(a.value(&flag)?.into()),
            "--plot" => o.plot = Some(a.value(&flag)?.into()),
            "--html" => o.html = Some(a.value(&flag)?.into()),
            "--driver" => o.driver = parse_driver(&a.value(&flag)?)?,
            "--no-progress" => o.progress = false,
            "--allow-remote" => o.allow_remote = true,
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown flag {f}")),
            url if o.url.is_empty() => o.url = url.to_string(),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    if o.url.is_empty() {
        return Err("missing URL".into());
    }
    if o.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    if o.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if o.rate.is_some() && o.pipeline > 1 {
        return Err("--pipeline applies to closed-loop runs only (drop --rate)".into());
    }
    Ok(o)
}

fn parse_compare(args: Vec<String>) -> Result<CompareOpts, String> {
    let mut reports = Vec::new();
    let mut html = None;
    let mut a = Args::new(args);
    while let Some(flag) = a.next()? {
        match flag.as_str() {
            "--html" => html = Some(PathBuf::from(a.value(&flag)?)),
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown flag {f}")),
            path => reports.push(PathBuf::from(path)),
        }
    }
    if reports.len() < 2 {
        return Err("compare needs two or more JSON reports (written with --json)".into());
    }
    let html = html.ok_or("compare needs --html FILE")?;
    Ok(CompareOpts { reports, html })
}

fn parse_hold(args: Vec<String>) -> Result<HoldOpts, String> {
    let mut o = HoldOpts {
        url: String::new(),
        connections: 1000,
        threads: available_cpus(),
        duration: Duration::from_secs(30),
        heartbeat: Duration::from_secs(10),
        sources: None,
        connect_concurrency: 256,
        timeout: Duration::from_secs(5),
        ready_file: None,
        json: None,
        driver: Driver::Legacy,
        progress: true,
        allow_remote: false,
    };
    let mut a = Args::new(args);
    while let Some(flag) = a.next()? {
        match flag.as_str() {
            "-c" | "--connections" => {
                let n = parse_count(&a.value(&flag)?)?;
                o.connections = nonzero(&flag, n, MAX_CONNECTIONS)?;
            }
            "-t" | "--threads" => {
                o.threads = nonzero(&flag, parse_count(&a.value(&flag)?)?, 1024)? as usize;
            }
            "-d" | "--duration" => {
                o.duration = bounded_duration(&flag, parse_duration(&a.value(&flag)?)?)?;
            }
            "-k" | "--heartbeat" => o.heartbeat = parse_duration(&a.value(&flag)?)?,
            "--sources" => {
                o.sources = Some(nonzero(&flag, parse_count(&a.value(&flag)?)?, 254)? as u32);
            }
            "--connect-concurrency" => {
                let n = parse_count(&a.value(&flag)?)?;
                o.connect_concurrency = nonzero(&flag, n, 65536)? as usize;
            }
            "--timeout" => o.timeout = parse_duration(&a.value(&flag)?)?,
            "--ready-file" => o.ready_file = Some(a.value(&flag)?.into()),
            "--json" => o.json = Some(a.value(&flag)?.into()),
            "--driver" => o.driver = parse_driver(&a.value(&flag)?)?,
            "--no-progress" => o.progress = false,
            "--allow-remote" => o.allow_remote = true,
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown flag {f}")),
            url if o.url.is_empty() => o.url = url.to_string(),
            extra => return Err(format!("unexpected argument {extra:?}")),
        }
    }
    if o.url.is_empty() {
        return Err("missing URL".into());
    }
    if o.heartbeat < Duration::from_millis(10) {
        return Err("--heartbeat must be at least 10ms".into());
    }
    if o.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    Ok(o)
}

fn parse_upstream(args: Vec<String>) -> Result<UpstreamOpts, String> {
    let mut o = UpstreamOpts {
        listen: "127.0.0.1:8080".into(),
        body_size: 64,
        delay: Duration::ZERO,
        status: 200,
        name: None,
        threads: available_cpus(),
        driver: Driver::Legacy,
    };
    let mut a = Args::new(args);
    while let Some(flag) = a.next()? {
        match flag.as_str() {
            "--listen" => o.listen = a.value(&flag)?,
            "--body-size" => {
                let n = parse_count(&a.value(&flag)?)?;
                if n > 64 << 20 {
                    return Err("--body-size must be at most 64 MiB".into());
                }
                o.body_size = n as usize;
            }
            "--delay" => {
                let v = a.value(&flag)?;
                let ms: u64 = v.parse().map_err(|_| format!("invalid --delay {v:?}"))?;
                o.delay = Duration::from_millis(ms);
            }
            "--status" => {
                let v = a.value(&flag)?;
                o.status = v
                    .parse()
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .ok_or_else(|| format!("invalid --status {v:?} (200-599)"))?;
            }
            "--name" => o.name = Some(a.value(&flag)?),
            "-t" | "--threads" => {
                o.threads = nonzero(&flag, parse_count(&a.value(&flag)?)?, 1024)? as usize;
            }
            "--driver" => o.driver = parse_driver(&a.value(&flag)?)?,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_count("10k"), Ok(10_000));
        assert_eq!(parse_count("2M"), Ok(2_000_000));
        assert!(parse_count("-1").is_err());
    }

    #[test]
    fn load_flags() {
        let Ok(Command::Load(o)) = parse(args(
            "-c 256 --duration=30s --rate 50000 -H X:1 -H Y:2 http://127.0.0.1:9/",
        )) else {
            panic!("expected load command");
        };
        assert_eq!(o.connections, 256);
        assert_eq!(o.duration, Duration::from_secs(30));
        assert_eq!(o.rate, Some(50000.0));
        assert_eq!(o.headers, vec!["X:1", "Y:2"]);
        assert_eq!(o.url, "http://127.0.0.1:9/");
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(parse(args("-d 2h http://127.0.0.1/")).is_err());
        assert!(parse(args("-c 0 http://127.0.0.1/")).is_err());
        assert!(parse(args("--rate 10 -p 4 http://127.0.0.1/")).is_err());
        assert!(parse(args("--bogus http://127.0.0.1/")).is_err());
        assert!(parse(args("-c 5")).is_err());
        assert!(parse(args("hold -k 1ms http://127.0.0.1/")).is_err());
    }

    #[test]
    fn subcommands() {
        assert!(matches!(parse(args("--help")), Ok(Command::Help)));
        assert!(matches!(
            parse(args("hold -c 10 http://127.0.0.1/")),
            Ok(Command::Hold(_))
        ));
        let Ok(Command::Upstream(u)) = parse(args("upstream --listen 127.0.0.1:0 --status 503"))
        else {
            panic!("expected upstream");
        };
        assert_eq!(u.status, 503);
        assert_eq!(u.listen, "127.0.0.1:0");
    }
}
