//! A load run: plans the workers, starts them, shows progress, merges and reports.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{Driver, LoadOpts};
use crate::stats::{ErrorKind, LoadStats, Progress, record};
use crate::{closed_loop, open_loop, progress, report, rt, target};

/// Everything one worker needs, sent to its thread.
#[derive(Debug, Clone)]
struct WorkerPlan {
    addr: SocketAddr,
    request: Vec<u8>,
    request_len: usize,
    pipeline: u32,
    head_request: bool,
    timeout: Duration,
    blocking_sockets: bool,
    start: Instant,
    measure_start: Instant,
    deadline: Instant,
    rate: Option<f64>,
    total_connections: u64,
    /// Global slot numbers of this worker's connections.
    slots: Vec<u64>,
    budget: u64,
    progress: Arc<Progress>,
}

/// A worker's shared state, owned by its thread (`Rc`, `Cell`, `RefCell`: nothing crosses
/// threads on the request path except the relaxed progress stores).
pub struct WorkerCtx {
    pub addr: SocketAddr,
    /// `pipeline` copies of the request, back to back.
    pub request: Vec<u8>,
    pub request_len: usize,
    pub pipeline: u32,
    pub head_request: bool,
    pub timeout: Duration,
    pub blocking_sockets: bool,
    pub start: Instant,
    pub measure_start: Instant,
    pub deadline: Instant,
    pub rate: Option<f64>,
    pub total_connections: u64,
    budget: Cell<u64>,
    stopped: Cell<bool>,
    completed: Cell<u64>,
    errors: Cell<u64>,
    last_done: Cell<Instant>,
    pub stats: RefCell<LoadStats>,
    progress: Arc<Progress>,
}

/// Pause after a failed connect before trying again.
pub const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

impl WorkerCtx {
    /// Connects, retrying after a pause on failure (each failure counted),
    /// until it succeeds (the connection, counted) or the run stops (the
    /// buffer back).
    pub async fn connect(&self, buf: Vec<u8>) -> Result<crate::client::Conn, Vec<u8>> {
        while !self.stopped(Instant::now()) {
            match crate::client::connect(self.addr, self.connect_opts()).await {
                Ok(stream) => {
                    self.connected();
                    return Ok(crate::client::Conn::new(stream, buf, self.head_request));
                }
                Err(kind) => {
                    self.error(kind);
                    monoio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
        }
        Err(buf)
    }

    fn new(p: WorkerPlan) -> Self {
        WorkerCtx {
            addr: p.addr,
            request: p.request,
            request_len: p.request_len,
            pipeline: p.pipeline,
            head_request: p.head_request,
            timeout: p.timeout,
            blocking_sockets: p.blocking_sockets,
            start: p.start,
            measure_start: p.measure_start,
            deadline: p.deadline,
            rate: p.rate,
            total_connections: p.total_connections,
            budget: Cell::new(p.budget),
            stopped: Cell::new(false),
            completed: Cell::new(0),
            errors: Cell::new(0),
            last_done: Cell::new(p.measure_start),
            stats: RefCell::new(LoadStats::new(p.rate.is_some())),
            progress: p.progress,
        }
    }

    /// How this worker's connections are opened.
    pub fn connect_opts(&self) -> crate::client::ConnectOpts {
        crate::client::ConnectOpts {
            source: None,
            blocking: self.blocking_sockets,
            reset_on_close: false,
            timeout: self.timeout,
        }
    }

    /// True once the deadline passed or the request budget ran out.
    pub fn stopped(&self, now: Instant) -> bool {
        if now >= self.deadline {
            self.stopped.set(true);
        }
        self.stopped.get()
    }

    /// Takes up to `want` requests from the budget; measured requests are counted, warm-up
    /// ones are free. Returns 0 when the budget is spent (and stops the worker).
    pub fn take(&self, want: u64, measured: bool) -> u64 {
        if !measured {
            return want;
        }
        let left = self.budget.get();
        let n = left.min(want);
        self.budget.set(left - n);
        if n == 0 {
            self.stopped.set(true);
        }
        n
    }

    /// Counts one response; open-loop runs add (service time, send lag).
    #[inline]
    pub fn response(
        &self,
        measured: bool,
        status: u16,
        latency: Duration,
        open_loop: Option<(Duration, Duration)>,
        done: Instant,
    ) {
        let c = self.completed.get() + 1;
        self.completed.set(c);
        Progress::set(&self.progress.completed, c);
        if !measured {
            return;
        }
        self.last_done.set(done);
        let mut s = self.stats.borrow_mut();
        s.requests += 1;
        s.status.add(status);
        record(&mut s.latency, latency);
        if let Some((service, lag)) = open_loop {
            if let Some(h) = &mut s.service {
                record(h, service);
            }
            if let Some(h) = &mut s.lag {
                record(h, lag);
            }
        }
    }

    /// Counts an error if it happened while measuring.
    pub fn error(&self, kind: ErrorKind) {
        let e = self.errors.get() + 1;
        self.errors.set(e);
        Progress::set(&self.progress.errors, e);
        if Instant::now() >= self.measure_start {
            self.stats.borrow_mut().errors.add(kind);
        }
    }

    /// Counts a successful connect.
    pub fn connected(&self) {
        self.stats.borrow_mut().connects += 1;
    }

    /// Counts bytes read by a connection that is being dropped or reused.
    pub fn bytes(&self, n: u64) {
        self.stats.borrow_mut().bytes_read += n;
    }
}

/// What a worker hands back.
struct WorkerResult {
    stats: LoadStats,
    last_done: Instant,
}

async fn worker_main(plan: WorkerPlan) -> WorkerResult {
    let slots = plan.slots.clone();
    let ctx = std::rc::Rc::new(WorkerCtx::new(plan));
    let mut tasks = Vec::with_capacity(slots.len());
    for slot in slots {
        let ctx = ctx.clone();
        tasks.push(if ctx.rate.is_some() {
            monoio::spawn(open_loop::connection(ctx, slot))
        } else {
            monoio::spawn(closed_loop::connection(ctx, slot))
        });
    }
    for t in tasks {
        t.await;
    }
    WorkerResult {
        stats: ctx.stats.borrow().clone(),
        last_done: ctx.last_done.get(),
    }
}

/// Runs a load test; returns the process exit code.
pub fn run(opts: LoadOpts) -> Result<i32, String> {
    let target = target::resolve(&opts.url, opts.allow_remote)?;
    let single = target::request_bytes(
        &target,
        &opts.method,
        &opts.headers,
        opts.body.as_deref(),
        1,
    )?;
    let request = single.repeat(opts.pipeline as usize);
    let threads = opts.threads.min(opts.connections as usize).max(1);
    let driver = rt::resolve_driver(opts.driver);
    let cpu_before = crate::stats::process_cpu().unwrap_or_default();
    let start = Instant::now() + Duration::from_millis(20);
    let measure_start = start + opts.warmup;
    let deadline = measure_start + opts.duration;

    let mut handles = Vec::with_capacity(threads);
    let mut cells = Vec::with_capacity(threads);
    for w in 0..threads {
        let progress = Arc::new(Progress::default());
        cells.push(progress.clone());
        let per = opts.requests / threads as u64;
        let budget = per + u64::from((w as u64) < opts.requests % threads as u64);
        let plan = WorkerPlan {
            addr: target.addr,
            request: request.clone(),
            request_len: single.len(),
            pipeline: opts.pipeline,
            head_request: opts.method.eq_ignore_ascii_case("HEAD"),
            timeout: opts.timeout,
            blocking_sockets: driver == Driver::Uring,
            start,
            measure_start,
            deadline,
            rate: opts.rate,
            total_connections: opts.connections,
            slots: (w as u64..opts.connections).step_by(threads).collect(),
            budget,
            progress,
        };
        let h = rt::spawn_worker("loadtest", w, driver, move || worker_main(plan))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(h);
    }

    let show = opts.progress && progress::stderr_is_terminal();
    let mut line = progress::LoadLine::new();
    let mut timeline = Timeline::new(start, measure_start, opts.warmup + opts.duration);
    progress::wait(
        &handles,
        show,
        |elapsed| progress::load_line(&cells, elapsed, opts.warmup, &mut line),
        || timeline.tick(&cells),
    );
    timeline.tick(&cells);

    let mut total = LoadStats::new(opts.rate.is_some());
    let mut last_done = measure_start;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a worker thread panicked".to_string())??;
        total.merge(&r.stats);
        last_done = last_done.max(r.last_done);
    }
    let elapsed = last_done
        .saturating_duration_since(measure_start)
        .min(opts.duration)
        .max(Duration::from_millis(1));
    let cpu = crate::stats::process_cpu()
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let completed: u64 = cells.iter().map(|c| Progress::get(&c.completed)).sum();
    let mut summary = report::LoadReport::new(
        &opts,
        &target,
        rt::driver_name(driver),
        threads,
        &total,
        elapsed,
        (cpu, completed),
    );
    summary.timeline = timeline.points;
    report::print_load(&summary);
    if let Some(path) = &opts.json {
        report::write_json(path, &summary)?;
    }
    if let Some(path) = &opts.plot {
        crate::plot::write_load_plot(path, &summary)?;
    }
    if let Some(path) = &opts.html {
        crate::html::write_run(path, &summary)?;
    }
    Ok(0)
}

/// Throughput over time, sampled from the workers' progress counters by the main thread
/// (the workers do nothing more for it).
struct Timeline {
    start: Instant,
    measure_start: Instant,
    every: Duration,
    next: Instant,
    last: (Instant, u64, u64),
    points: Vec<report::TimelinePoint>,
}

impl Timeline {
    fn new(start: Instant, measure_start: Instant, total: Duration) -> Self {
        // About a hundred points whatever the length, and never more often than 10 a second.
        let every = (total / 100).clamp(Duration::from_millis(100), Duration::from_secs(1));
        Timeline {
            start,
            measure_start,
            every,
            next: start + every,
            last: (start, 0, 0),
            points: Vec::new(),
        }
    }

    fn tick(&mut self, cells: &[Arc<Progress>]) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.every;
        let completed: u64 = cells.iter().map(|c| Progress::get(&c.completed)).sum();
        let errors: u64 = cells.iter().map(|c| Progress::get(&c.errors)).sum();
        let (at, done, failed) = self.last;
        let dt = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
        if now > self.start {
            let since = |t: Instant| {
                t.saturating_duration_since(self.measure_start)
                    .as_secs_f64()
                    - self
                        .measure_start
                        .saturating_duration_since(t)
                        .as_secs_f64()
            };
            self.points.push(report::TimelinePoint {
                t_s: since(now),
                rps: completed.saturating_sub(done) as f64 / dt,
                errors_per_s: errors.saturating_sub(failed) as f64 / dt,
            });
        }
        self.last = (now, completed, errors);
    }
}
