//! `loadtest hold`: open many connections, send one request on each, keep them open with a
//! heartbeat request every `--heartbeat`, and report how many stayed alive.
//!
//! Connections are spread over source addresses 127.0.0.1..=127.0.0.S so that more than one
//! address's ephemeral port range is available. An idle held connection owns no read buffer:
//! a worker lends one from its pool for each exchange.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{Driver, HoldOpts};
use crate::client::{self, Conn, ConnectOpts};
use crate::report::{self, fmt_us};
use crate::stats::{
    ErrorCounts, ErrorKind, LatencySummary, Progress, StatusCounts, new_histogram, record,
};
use crate::{progress, rt, target};

/// Default number of connections per source address.
pub const CONNECTIONS_PER_SOURCE: u64 = 16384;

/// Source address for connection `slot` when spreading over `sources` addresses.
pub fn source_for(slot: u64, sources: u32) -> IpAddr {
    let last = 1 + (slot % u64::from(sources.max(1))) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Default spread: one source address per [`CONNECTIONS_PER_SOURCE`] connections.
pub fn default_sources(connections: u64) -> u32 {
    connections.div_ceil(CONNECTIONS_PER_SOURCE).clamp(1, 254) as u32
}

struct Plan {
    addr: SocketAddr,
    request: Vec<u8>,
    sources: Option<u32>,
    slots: Vec<u64>,
    heartbeat: Duration,
    duration: Duration,
    timeout: Duration,
    concurrency: usize,
    blocking_sockets: bool,
    progress: Arc<Progress>,
}

struct Ctx {
    plan: Plan,
    next_slot: Cell<usize>,
    pool: RefCell<Vec<Vec<u8>>>,
    alive: Cell<u64>,
    established: Cell<u64>,
    heartbeats: Cell<u64>,
    connect_errors: RefCell<ErrorCounts>,
    first_request_errors: RefCell<ErrorCounts>,
    heartbeat_errors: RefCell<ErrorCounts>,
    status: RefCell<StatusCounts>,
    first_latency: RefCell<Histogram<u64>>,
    heartbeat_latency: RefCell<Histogram<u64>>,
    hold_end: Cell<Option<Instant>>,
}

impl Ctx {
    fn publish(&self) {
        let p = &self.plan.progress;
        Progress::set(&p.alive, self.alive.get());
        Progress::set(&p.failed, self.failed());
        Progress::set(&p.completed, self.heartbeats.get());
    }

    fn failed(&self) -> u64 {
        self.connect_errors.borrow().total()
            + self.first_request_errors.borrow().total()
            + self.heartbeat_errors.borrow().total()
    }
}

/// A worker's figures.
struct WorkerResult {
    established: u64,
    alive: u64,
    heartbeats: u64,
    connect_errors: ErrorCounts,
    first_request_errors: ErrorCounts,
    heartbeat_errors: ErrorCounts,
    status: StatusCounts,
    first_latency: Histogram<u64>,
    heartbeat_latency: Histogram<u64>,
    connect_phase: Duration,
}

/// One request/response on a held connection, with a lent buffer and a timeout.
async fn exchange(ctx: &Ctx, conn: &mut Conn) -> Result<(u16, Duration), ErrorKind> {
    let buf = ctx.pool.borrow_mut().pop().unwrap_or_default();
    conn.give_buf(buf);
    let mut req = ctx.plan.request.clone();
    let sent = Instant::now();
    let fut = async {
        conn.write(&mut req, ctx.plan.request.len()).await?;
        conn.read_response().await
    };
    let res = match monoio::time::timeout(ctx.plan.timeout, fut).await {
        Ok(Ok(r)) if r.keep_alive => Ok((r.status, sent.elapsed())),
        Ok(Ok(_)) => Err(ErrorKind::Eof),
        Ok(Err(k)) => Err(k),
        Err(_) => Err(ErrorKind::Timeout),
    };
    if let Some(b) = conn.take_idle_buf() {
        ctx.pool.borrow_mut().push(b);
    }
    res
}

/// Connects and sends the first request on slots taken from the worker's queue; each
/// established connection is handed to its own heartbeat task.
async fn connector(ctx: Rc<Ctx>) {
    loop {
        let i = ctx.next_slot.get();
        if i >= ctx.plan.slots.len() {
            return;
        }
        ctx.next_slot.set(i + 1);
        let slot = ctx.plan.slots[i];
        let p = &ctx.plan;
        let opts = ConnectOpts {
            // With one source the kernel picks it (and reuses ports per destination).
            source: p.sources.filter(|&s| s > 1).map(|s| source_for(slot, s)),
            blocking: p.blocking_sockets,
            reset_on_close: true,
            timeout: p.timeout,
        };
        let stream = match client::connect(p.addr, opts).await {
            Ok(s) => s,
            Err(k) => {
                ctx.connect_errors.borrow_mut().add(k);
                ctx.publish();
                continue;
            }
        };
        let mut conn = Conn::new(stream, Vec::new(), false);
        match exchange(&ctx, &mut conn).await {
            Ok((status, lat)) => {
                ctx.status.borrow_mut().add(status);
                record(&mut ctx.first_latency.borrow_mut(), lat);
                ctx.established.set(ctx.established.get() + 1);
                ctx.alive.set(ctx.alive.get() + 1);
                monoio::spawn(heartbeats(ctx.clone(), conn, slot));
            }
            Err(k) => ctx.first_request_errors.borrow_mut().add(k),
        }
        ctx.publish();
    }
}

/// Sends a heartbeat every `--heartbeat` until the hold ends or the connection fails.
async fn heartbeats(ctx: Rc<Ctx>, mut conn: Conn, slot: u64) {
    let hb = ctx.plan.heartbeat;
    // Spread heartbeats over the interval (golden-ratio sequence over the slots).
    let frac = (slot as f64 * 0.618_033_988_75).fract();
    let mut next = Instant::now() + hb.mul_f64(0.5 + frac / 2.0);
    loop {
        if let Some(end) = ctx.hold_end.get()
            && next >= end
        {
            // Nothing more to send: stay connected until the worker ends the hold.
            monoio::time::sleep_until(monoio::time::Instant::from_std(end)).await;
            return;
        }
        monoio::time::sleep_until(monoio::time::Instant::from_std(next)).await;
        next += hb;
        match exchange(&ctx, &mut conn).await {
            Ok((status, lat)) => {
                ctx.status.borrow_mut().add(status);
                record(&mut ctx.heartbeat_latency.borrow_mut(), lat);
                ctx.heartbeats.set(ctx.heartbeats.get() + 1);
            }
            Err(k) => {
                ctx.heartbeat_errors.borrow_mut().add(k);
                ctx.alive.set(ctx.alive.get() - 1);
                ctx.publish();
                return;
            }
        }
        ctx.publish();
    }
}

async fn worker_main(plan: Plan) -> WorkerResult {
    let began = Instant::now();
    let concurrency = plan.concurrency.min(plan.slots.len()).max(1);
    let ctx = Rc::new(Ctx {
        plan,
        next_slot: Cell::new(0),
        pool: RefCell::new(Vec::new()),
        alive: Cell::new(0),
        established: Cell::new(0),
        heartbeats: Cell::new(0),
        connect_errors: RefCell::new(ErrorCounts::default()),
        first_request_errors: RefCell::new(ErrorCounts::default()),
        heartbeat_errors: RefCell::new(ErrorCounts::default()),
        status: RefCell::new(StatusCounts::default()),
        first_latency: RefCell::new(new_histogram()),
        heartbeat_latency: RefCell::new(new_histogram()),
        hold_end: Cell::new(None),
    });
    let connectors: Vec<_> = (0..concurrency)
        .map(|_| monoio::spawn(connector(ctx.clone())))
        .collect();
    for c in connectors {
        c.await;
    }
    let connect_phase = began.elapsed();
    ctx.plan.progress.ready.store(true, Ordering::Release);
    let end = Instant::now() + ctx.plan.duration;
    ctx.hold_end.set(Some(end));
    monoio::time::sleep_until(monoio::time::Instant::from_std(end)).await;
    // Figures at the end of the hold; the held connections close when the runtime drops.
    WorkerResult {
        established: ctx.established.get(),
        alive: ctx.alive.get(),
        heartbeats: ctx.heartbeats.get(),
        connect_errors: *ctx.connect_errors.borrow(),
        first_request_errors: *ctx.first_request_errors.borrow(),
        heartbeat_errors: *ctx.heartbeat_errors.borrow(),
        status: ctx.status.borrow().clone(),
        first_latency: ctx.first_latency.borrow().clone(),
        heartbeat_latency: ctx.heartbeat_latency.borrow().clone(),
        connect_phase,
    }
}

/// Every figure of a hold run.
#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    pub tool: &'static str,
    pub mode: &'static str,
    pub url: String,
    pub target: String,
    pub driver: &'static str,
    pub threads: usize,
    pub sources: u32,
    pub connections: u64,
    pub established: u64,
    pub alive: u64,
    pub failed: u64,
    pub heartbeat_interval_s: f64,
    pub hold_s: f64,
    pub connect_phase_s: f64,
    pub heartbeats: u64,
    pub connect_errors: ErrorCounts,
    pub first_request_errors: ErrorCounts,
    pub heartbeat_errors: ErrorCounts,
    pub first_request_latency: LatencySummary,
    pub heartbeat_latency: LatencySummary,
    pub non_2xx: u64,
    pub status: std::collections::BTreeMap<String, u64>,
}

/// Runs a hold test; returns the exit code.
pub fn run(opts: HoldOpts) -> Result<i32, String> {
    let target = target::resolve(&opts.url, opts.allow_remote)?;
    let request = target::request_bytes(&target, "GET", &[], None, 1)?;
    let threads = opts.threads.min(opts.connections as usize).max(1);
    let driver = rt::resolve_driver(opts.driver);
    // Binding a source address only makes sense towards an IPv4 loopback target.
    let sources = (target.addr.ip().is_loopback() && target.addr.is_ipv4()).then(|| {
        opts.sources
            .unwrap_or_else(|| default_sources(opts.connections))
    });

    let mut handles = Vec::new();
    let mut cells = Vec::new();
    for w in 0..threads {
        let progress = Arc::new(Progress::default());
        cells.push(progress.clone());
        let plan = Plan {
            addr: target.addr,
            request: request.clone(),
            sources,
            slots: (w as u64..opts.connections).step_by(threads).collect(),
            heartbeat: opts.heartbeat,
            duration: opts.duration,
            timeout: opts.timeout,
            concurrency: opts.connect_concurrency,
            blocking_sockets: driver == Driver::Uring,
            progress,
        };
        let h = rt::spawn_worker("hold", w, driver, move || worker_main(plan))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }

    let show = opts.progress && progress::stderr_is_terminal();
    let mut ready_written = false;
    progress::wait(
        &handles,
        show,
        |elapsed| progress::hold_line(&cells, elapsed),
        || {
            if !ready_written && cells.iter().all(|c| c.ready.load(Ordering::Acquire)) {
                ready_written = true;
                if let Some(path) = &opts.ready_file
                    && let Err(e) = std::fs::write(path, "ready\n")
                {
                    eprintln!("loadtest: cannot write {}: {e}", path.display());
                }
            }
        },
    );

    let mut results = Vec::new();
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| "a worker thread panicked".to_string())??,
        );
    }
    let report = merge(
        &opts,
        &target,
        rt::driver_name(driver),
        threads,
        sources,
        results,
    );
    print_hold(&report);
    if let Some(path) = &opts.json {
        report::write_json(path, &report)?;
    }
    Ok(0)
}

fn merge(
    opts: &HoldOpts,
    target: &target::Target,
    driver: &'static str,
    threads: usize,
    sources: Option<u32>,
    results: Vec<WorkerResult>,
) -> HoldReport {
    let mut first = new_histogram();
    let mut hb = new_histogram();
    let mut status = StatusCounts::default();
    let (mut ce, mut fe, mut he) = Default::default();
    let (mut established, mut alive, mut heartbeats) = (0, 0, 0);
    let mut phase = Duration::ZERO;
    for r in &results {
        first.add(&r.first_latency).expect("same bounds");
        hb.add(&r.heartbeat_latency).expect("same bounds");
        status.merge(&r.status);
        ErrorCounts::merge(&mut ce, &r.connect_errors);
        ErrorCounts::merge(&mut fe, &r.first_request_errors);
        ErrorCounts::merge(&mut he, &r.heartbeat_errors);
        established += r.established;
        alive += r.alive;
        heartbeats += r.heartbeats;
        phase = phase.max(r.connect_phase);
    }
    HoldReport {
        tool: "shardgate-loadtest",
        mode: "hold",
        url: opts.url.clone(),
        target: target.addr.to_string(),
        driver,
        threads,
        sources: sources.unwrap_or(0),
        connections: opts.connections,
        established,
        alive,
        failed: ce.total() + fe.total() + he.total(),
        heartbeat_interval_s: opts.heartbeat.as_secs_f64(),
        hold_s: opts.duration.as_secs_f64(),
        connect_phase_s: phase.as_secs_f64(),
        heartbeats,
        connect_errors: ce,
        first_request_errors: fe,
        heartbeat_errors: he,
        first_request_latency: LatencySummary::of(&first),
        heartbeat_latency: LatencySummary::of(&hb),
        non_2xx: status.non_2xx(),
        status: status.iter().map(|(s, n)| (s.to_string(), n)).collect(),
    }
}

fn print_hold(r: &HoldReport) {
    println!(
        "{} ({}): held {} connections for {:.1}s, heartbeat every {:.1}s, {} threads, {} sources, {} driver",
        r.url,
        r.target,
        r.connections,
        r.hold_s,
        r.heartbeat_interval_s,
        r.threads,
        r.sources,
        r.driver
    );
    println!(
        "  alive      {} of {} (established {}, failed {}; connect phase {:.2}s)",
        r.alive, r.connections, r.established, r.failed, r.connect_phase_s
    );
    let e = |c: &ErrorCounts| {
        format!(
            "connect {}, timeout {}, reset {}, eof {}, parse {}",
            c.connect, c.timeout, c.reset, c.eof, c.parse
        )
    };
    println!("  connect    {}", e(&r.connect_errors));
    println!("  first req  {}", e(&r.first_request_errors));
    println!("  heartbeat  {}", e(&r.heartbeat_errors));
    let l = &r.heartbeat_latency;
    println!(
        "  heartbeats {}: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        r.heartbeats,
        fmt_us(l.p50_us),
        fmt_us(l.p90_us),
        fmt_us(l.p99_us),
        fmt_us(l.p99_9_us),
        fmt_us(l.max_us)
    );
    let f = &r.first_request_latency;
    println!(
        "  first req  p50 {}  p99 {}  max {}",
        fmt_us(f.p50_us),
        fmt_us(f.p99_us),
        fmt_us(f.max_us)
    );
    if r.non_2xx > 0 {
        println!("  non-2xx    {}", r.non_2xx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread() {
        assert_eq!(default_sources(1), 1);
        assert_eq!(default_sources(16384), 1);
        assert_eq!(default_sources(40_000), 3);
        assert_eq!(default_sources(100_000_000), 254);
        assert_eq!(source_for(0, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(source_for(5, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    }
}
