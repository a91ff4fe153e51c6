//! Starting and stopping a gateway: bind every listener once per shard,
//! start one pinned thread per shard with its own runtime, and the tick loop
//! through which each shard takes commands (reload, metrics, drain, stop).

use crate::control::{Command, ConfigInfo, GatewayHandle, Shared, State};
use crate::driver::{self, DriverChoice};
use crate::listener;
use crate::shard::Shard;
use crate::stats::{ShardStats, StatsSnapshot};
use crate::timer::TICK;
use shardgate_config::Config;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How often a shard sweeps its idle upstream connections, in ticks.
const SWEEP_EVERY: u64 = 100;

/// Why a gateway could not start.
#[derive(Debug)]
pub enum GatewayError {
    Driver(driver::DriverError),
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    /// The access log file could not be opened.
    AccessLog {
        path: std::path::PathBuf,
        source: io::Error,
    },
    Shard {
        shard: usize,
        cause: ShardStartError,
    },
}

/// Why one shard could not start.
#[derive(Debug)]
pub enum ShardStartError {
    /// Its thread could not be spawned.
    Thread(io::Error),
    /// Its I/O runtime could not be built (`driver` names it).
    Runtime {
        driver: &'static str,
        source: io::Error,
    },
    /// Its snapshot of the configuration could not be built.
    Build(crate::snapshot::BuildError),
    /// A listening socket could not be registered with its runtime.
    Listener(io::Error),
    /// Its thread ended before saying it was ready.
    Exited,
}

impl fmt::Display for ShardStartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardStartError::Thread(e) => write!(f, "cannot spawn its thread: {e}"),
            ShardStartError::Runtime { driver, source } => {
                write!(f, "cannot start the {driver} runtime: {source}")
            }
            ShardStartError::Build(e) => write!(f, "cannot build the routing table: {e}"),
            ShardStartError::Listener(e) => write!(f, "cannot register a listener: {e}"),
            ShardStartError::Exited => f.write_str("its thread exited during start-up"),
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Driver(e) => e.fmt(f),
            GatewayError::Bind { address, source } => {
                write!(f, "cannot listen on {address}: {source}")
            }
            GatewayError::AccessLog { path, source } => {
                write!(f, "cannot open the access log {}: {source}", path.display())
            }
            GatewayError::Shard { shard, cause } => {
                write!(f, "shard {shard} failed to start: {cause}")
            }
        }
    }
}

impl std::error::Error for GatewayError {}

/// Options that are about the process rather than the configuration.
#[derive(Clone)]
pub struct GatewayOptions {
    /// Pin shard `i` to core `i` (modulo the core count).
    pub pin_cores: bool,
    /// The file the configuration came from; reloads re-read it.
    pub config_path: Option<PathBuf>,
    /// Fingerprint of the configuration text (see [`config_hash`]).
    pub config_hash: u64,
    /// What to call the source when there is no file (`command line`).
    pub source_name: &'static str,
    /// Resolves endpoint host names on refresh (the system resolver by default).
    pub resolver: Option<crate::dns::Resolver>,
    /// The text the configuration was parsed from (a reload whose errors
    /// are all in some tenants' sections keeps those tenants' sections from
    /// it).
    pub config_text: Option<String>,
    /// Applied to every configuration read from the file on reload, as it
    /// was at start (command-line overrides such as `--workers`).
    pub adjust: Option<crate::control::Adjust>,
    /// The configuration came from etcd: watch it for changes and registrations.
    pub etcd: Option<(crate::etcd_source::EtcdSource, crate::etcd_source::Initial)>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            pin_cores: true,
            config_path: None,
            config_hash: 0,
            source_name: "built-in",
            resolver: None,
            config_text: None,
            adjust: None,
            etcd: None,
        }
    }
}

/// A running gateway. Dropping it stops the shards.
pub struct Gateway {
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    driver: DriverChoice,
    handle: GatewayHandle,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<ShardStats>>,
    admin: Option<crate::admin::AdminServer>,
    access_log: Option<crate::access_log::Writer>,
    prober: Option<crate::health::Prober>,
    dns: Option<crate::dns::Refresher>,
    rates: Option<crate::rates::RateCoordinator>,
    jwks: Option<crate::jwks::Fetcher>,
    etcd: Option<crate::etcd_source::Watcher>,
    fleet: Option<crate::fleet::Exchanger>,
    spans: Option<crate::tracing::Exporter>,
}

impl Gateway {
    /// Starts the shards and returns once every one is accepting.
    pub fn start(config: Config, options: GatewayOptions) -> Result<Gateway, GatewayError> {
        let driver = driver::resolve_driver(config.driver).map_err(GatewayError::Driver)?;
        let shards = config.workers.resolve();

        // One listening socket per shard per address. The first is bound to
        // the configured address (port 0 picks a port); the rest join it.
        let mut per_shard: Vec<Vec<std::net::TcpListener>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for l in &config.listeners {
            let bind = |a: SocketAddr| {
                listener::bind(a, l.backlog)
                    .map_err(|source| GatewayError::Bind { address: a, source })
            };
            let first = bind(l.address)?;
            let actual = first.local_addr().map_err(|source| GatewayError::Bind {
                address: l.address,
                source,
            })?;
            per_shard[0].push(first);
            for sockets in per_shard.iter_mut().skip(1) {
                sockets.push(bind(actual)?);
            }
            addrs.push(actual);
        }
        let admin_listener = match config.admin.as_ref().map(|a| a.address) {
            Some(a) => Some(
                listener::bind_blocking(a)
                    .map_err(|source| GatewayError::Bind { address: a, source })?,
            ),
            None => None,
        };

        let access_log = match &config.access_log {
            Some(c) => Some(
                crate::access_log::Writer::start(c, shards).map_err(|source| {
                    GatewayError::AccessLog {
                        path: c.path.clone(),
                        source,
                    }
                })?,
            ),
            None => None,
        };
        let spans = match &config.tracing {
            Some(t) => match crate::tracing::Exporter::start(t, shards) {
                Ok(e) => Some(e),
                Err(e) => {
                    log::error!("tracing: {e}; no spans are exported");
                    None
                }
            },
            None => None,
        };
        // Remote key sets are fetched before the shards start, so the
        // first requests find them when the providers answer.
        let (jwks, jwks_rx) = crate::jwks::JwksStore::new();
        jwks.prepare(&config);
        jwks.adopt(&config);
        let config = Arc::new(config);
        let cores = if options.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        // A fleet's gateways hash limited keys alike (before any shard builds a filter), and
        // exchange demand through Redis.
        let fleet = match &config.fleet {
            Some(f) => {
                if !shardgate_filters::global_rate::seed_keys(&f.secret) {
                    log::error!(
                        "fleet.secret: the process already uses another one; restart to change it"
                    );
                }
                match crate::fleet::Exchanger::start(f) {
                    Ok(pair) => Some(pair),
                    Err(e) => {
                        log::error!("fleet: {e}; fleet limits act per gateway");
                        None
                    }
                }
            }
            None => None,
        };
        // Rate limits are shared between shards through a coordinator; one shard has the
        // whole of each limit and needs none, unless the limit is shared by a fleet.
        let rate_channel =
            (shards > 1 || fleet.is_some()).then(crate::rates::RateCoordinator::channel);
        let rate_tx = rate_channel.as_ref().map(|(tx, _)| tx.clone());
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        let mut controls = Vec::new();
        for (id, sockets) in per_shard.into_iter().enumerate() {
            let shard_stats = Arc::new(ShardStats::default());
            stats.push(shard_stats.clone());
            let (control_tx, control_rx) = mpsc::channel();
            controls.push(control_tx);
            let config = config.clone();
            let ready = ready_tx.clone();
            let log_tx = access_log.as_ref().and_then(|w| w.sender());
            let span_tx = spans.as_ref().and_then(|e| e.sender());
            let rate_tx = rate_tx.clone();
            let jwks = jwks.clone();
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let spawned = std::thread::Builder::new()
                .name(format!("shardgate-shard-{id}"))
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        log::warn!("shard {id}: could not pin to core {}", core.id);
                    }
                    let run = driver::block_on(driver, || {
                        shard_main(
                            (id, shards),
                            config,
                            sockets,
                            control_rx,
                            shard_stats,
                            (log_tx, rate_tx, jwks, span_tx),
                            ready.clone(),
                        )
                    });
                    if let Err(source) = run {
                        let _ = ready.send(Err((
                            id,
                            ShardStartError::Runtime {
                                driver: driver.name(),
                                source,
                            },
                        )));
                    }
                })
                .map_err(|e| GatewayError::Shard {
                    shard: id,
                    cause: ShardStartError::Thread(e),
                })?;
            threads.push(spawned);
        }
        drop(ready_tx);
        let handle = GatewayHandle(Arc::new(Shared {
            controls,
            state: Mutex::new(State {
                config: config.clone(),
                text: options.config_text.clone(),
                info: ConfigInfo {
                    version: 1,
                    hash: options.config_hash,
                    loaded_at: SystemTime::now(),
                    source: options.config_path.as_ref().map_or_else(
                        || options.source_name.to_string(),
                        |p| p.display().to_string(),
                    ),
                    reloads: 0,
                    reload_failures: 0,
                    last_error: None,
                    history: Default::default(),
                },
            }),
            path: options.config_path.clone(),
            adjust: options.adjust.clone(),
            reloading: Mutex::new(()),
            log_reopen: access_log.as_ref().map(|w| w.reopen_flag()),
            log_lost: access_log.as_ref().map(|w| w.lost_counter()),
            spans: spans.as_ref().map(|e| e.counts.clone()),
            jwks: jwks.clone(),
            fleet: fleet.as_ref().map(|(_, h)| h.clone()),
            etcd: options.etcd.as_ref().map(|(source, initial)| {
                Arc::new(Mutex::new(crate::etcd_source::initial_status(
                    source, initial,
                )))
            }),
        }));
        let mut gateway = Gateway {
            addrs,
            admin_addr: None,
            driver,
            handle: handle.clone(),
            threads,
            stats,
            admin: None,
            access_log,
            prober: None,
            dns: None,
            rates: None,
            jwks: Some(crate::jwks::Fetcher::start(jwks, jwks_rx)),
            etcd: None,
            fleet: None,
            spans,
        };
        for _ in 0..shards {
            let failed = match ready_rx.recv() {
                Ok(Ok(())) => None,
                Ok(Err((shard, cause))) => Some(GatewayError::Shard { shard, cause }),
                Err(_) => Some(GatewayError::Shard {
                    shard: 0,
                    cause: ShardStartError::Exited,
                }),
            };
            if let Some(e) = failed {
                gateway.shutdown();
                return Err(e);
            }
        }
        gateway.prober = Some(crate::health::Prober::start(handle.clone()));
        if let Some((tx, rx)) = rate_channel {
            gateway.rates = Some(crate::rates::RateCoordinator::start(
                handle.clone(),
                tx,
                rx,
                fleet.as_ref().map(|(_, h)| h.clone()),
            ));
        }
        if let Some((exchanger, _)) = fleet {
            gateway.fleet = Some(exchanger);
        }
        if config
            .upstreams
            .iter()
            .any(|u| u.sources.iter().any(|s| s.host.is_some()))
        {
            let resolver = options
                .resolver
                .clone()
                .unwrap_or_else(crate::dns::system_resolver);
            gateway.dns = Some(crate::dns::Refresher::start(handle.clone(), resolver));
        }
        if let (Some((source, initial)), Some(status)) = (options.etcd, handle.0.etcd.clone()) {
            gateway.etcd = Some(crate::etcd_source::Watcher::start(
                handle.clone(),
                source,
                initial,
                status,
            ));
        }
        if let Some(l) = admin_listener {
            gateway.admin_addr = l.local_addr().ok();
            gateway.admin = Some(crate::admin::AdminServer::start(l, handle));
        }
        Ok(gateway)
    }

    /// The bound listener addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The bound admin address, when the configuration has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The driver the shards run on.
    pub fn driver(&self) -> DriverChoice {
        self.driver
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.stats.len()
    }

    /// A handle for reloads, metrics and drains from other threads.
    pub fn handle(&self) -> GatewayHandle {
        self.handle.clone()
    }

    /// The counters summed over all shards.
    pub fn stats(&self) -> StatsSnapshot {
        let mut total = StatsSnapshot::default();
        for s in &self.stats {
            total.add(&s.snapshot());
        }
        total
    }

    /// Each shard's counters.
    pub fn shard_stats(&self) -> Vec<StatsSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish
    /// (their responses say `Connection: close`), close idle connections,
    /// and return once every shard has exited or `timeout` has passed.
    pub fn drain(&mut self, timeout: Duration) {
        self.handle.drain(timeout);
        self.join();
    }

    /// Stops every shard now (open connections are closed) and waits.
    pub fn shutdown(&mut self) {
        self.handle.stop();
        self.join();
    }

    fn join(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(a) = self.admin.take() {
            a.stop();
        }
        if let Some(p) = self.prober.take() {
            p.stop();
        }
        if let Some(d) = self.dns.take() {
            d.stop();
        }
        if let Some(r) = self.rates.take() {
            r.stop();
        }
        if let Some(f) = self.jwks.take() {
            f.stop();
        }
        if let Some(w) = self.etcd.take() {
            w.stop();
        }
        if let Some(f) = self.fleet.take() {
            f.stop();
        }
        if let Some(mut w) = self.access_log.take() {
            w.finish();
        }
        if let Some(mut e) = self.spans.take() {
            e.finish();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Ready = mpsc::Sender<Result<(), (usize, ShardStartError)>>;

/// Where a shard sends access log lines and rate-limit reports, and where
/// it finds remote key sets.
pub(crate) type Outlets = (
    Option<mpsc::SyncSender<Vec<u8>>>,
    Option<mpsc::Sender<crate::rates::Batch>>,
    Arc<crate::jwks::JwksStore>,
    Option<mpsc::SyncSender<crate::tracing::SpanBatch>>,
);

async fn shard_main(
    (id, shards): (usize, usize),
    config: Arc<Config>,
    sockets: Vec<std::net::TcpListener>,
    control: mpsc::Receiver<Command>,
    stats: Arc<ShardStats>,
    outlets: Outlets,
    ready: Ready,
) {
    let shard = match Shard::new((id, shards), &config, stats, outlets) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            let _ = ready.send(Err((id, ShardStartError::Build(e))));
            return;
        }
    };
    for (index, socket) in sockets.into_iter().enumerate() {
        let registered = socket
            .try_clone()
            .and_then(|stop| Ok((monoio::net::TcpListener::from_std(socket)?, stop)));
        match registered {
            Ok((l, stop)) => {
                let running = shard.drain.accepting();
                let index = u8::try_from(index).unwrap_or(u8::MAX);
                monoio::spawn(listener::accept_loop(
                    shard.clone(),
                    l,
                    stop,
                    index,
                    running,
                ));
            }
            Err(e) => {
                let _ = ready.send(Err((id, ShardStartError::Listener(e))));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    // The shard's clock: advances the deadline wheel every tick, and between
    // requests looks at the control queue.
    let mut ticks = 0u64;
    let mut drain_deadline = None;
    run_ticks(&shard, &control, &mut ticks, &mut drain_deadline).await;
    // The last period's counts: quota increments reach Redis before the process goes.
    shard.report_rates();
    if let Some(log) = &shard.log {
        log.close();
    }
    if let Some(t) = &shard.traces {
        t.close();
    }
}

/// How often a shard reports its rate-limit demand, in ticks.
const RATE_REPORT_EVERY: u64 = crate::rates::PERIOD.as_millis() as u64 / TICK.as_millis() as u64;

/// How often a shard hands its buffered access log lines to the writer.
const LOG_FLUSH_EVERY: u64 = 10;

async fn run_ticks(
    shard: &Shard,
    control: &mpsc::Receiver<Command>,
    ticks: &mut u64,
    drain_deadline: &mut Option<std::time::Instant>,
) {
    let id = shard.id;
    loop {
        monoio::time::sleep(TICK).await;
        let now = std::time::Instant::now();
        shard.timers.advance(now);
        shard.handshakes.tick(now);
        *ticks += 1;
        if ticks.is_multiple_of(LOG_FLUSH_EVERY)
            && let Some(log) = &shard.log
        {
            log.flush();
        }
        if let Some(t) = &shard.traces {
            t.flush();
        }
        while let Ok(cmd) = control.try_recv() {
            match cmd {
                Command::Reload {
                    config,
                    version,
                    ack,
                } => {
                    let _ = ack.send((id, shard.install(&config, version)));
                }
                Command::Collect { reply } => {
                    let _ = reply.send(shard.collect_metrics());
                }
                Command::Drain { deadline } => {
                    if drain_deadline.is_none() {
                        log::info!(
                            "shard {id}: draining ({} open connections)",
                            shard.stats.open_connections.get()
                        );
                    }
                    shard.drain.start();
                    *drain_deadline = Some(deadline);
                }
                Command::Health {
                    group,
                    endpoints,
                    up,
                } => shard.set_health(&group, &endpoints, &up),
                Command::RateShares {
                    version,
                    limiter,
                    update,
                } => shard.apply_rate_shares(version, limiter, &update),
                Command::QuotaTotals {
                    name,
                    window,
                    totals,
                } => shard.apply_quota_totals(&name, window, &totals),
                Command::Stop => return,
            }
        }
        if ticks.is_multiple_of(RATE_REPORT_EVERY) {
            shard.report_rates();
        }
        shard.tend_key_slots(now);
        if let Some(deadline) = *drain_deadline {
            let open = shard.stats.open_connections.get();
            // Done once nothing is open and no accept loop can still hand
            // over a connection it took before its listener closed.
            if open == 0 && shard.drain.accepts_stopped() {
                return;
            }
            if now >= deadline {
                log::warn!(
                    "shard {id}: drain deadline passed with {open} connections open{}; closing them",
                    if shard.drain.accepts_stopped() {
                        ""
                    } else {
                        " and an accept unfinished"
                    }
                );
                return;
            }
        }
        if ticks.is_multiple_of(SWEEP_EVERY) {
            shard.pools.sweep(shard.snapshot().pool.idle_timeout);
        }
    }
}
