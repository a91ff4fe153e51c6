//! Starting and stopping a gateway: bind every listener once per shard,
//! start one pinned thread per shard with its own runtime, collect counters.

use crate::driver::{self, DriverChoice};
use crate::listener;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::stats::{ShardStats, StatsSnapshot};
use crate::timer::TICK;
use shardgate_config::Config;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// How often a shard looks at its control flag.
const CONTROL_EVERY: u64 = 10;
/// How often a shard sweeps its idle upstream connections, in ticks.
const SWEEP_EVERY: u64 = 100;

/// Why a gateway could not start.
#[derive(Debug)]
pub enum GatewayError {
    Driver(String),
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    Shard {
        shard: usize,
        message: String,
    },
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Driver(m) => f.write_str(m),
            GatewayError::Bind { address, source } => {
                write!(f, "cannot listen on {address}: {source}")
            }
            GatewayError::Shard { shard, message } => {
                write!(f, "shard {shard} failed to start: {message}")
            }
        }
    }
}

impl std::error::Error for GatewayError {}

/// Options that are about the process rather than the configuration.
#[derive(Debug, Clone, Copy)]
pub struct GatewayOptions {
    /// Pin shard `i` to core `i` (modulo the core count).
    pub pin_cores: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions { pin_cores: true }
    }
}

/// A running gateway. Dropping it stops the shards.
pub struct Gateway {
    addrs: Vec<SocketAddr>,
    driver: DriverChoice,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Vec<Arc<ShardStats>>,
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

        let config = Arc::new(config);
        let stop = Arc::new(AtomicBool::new(false));
        let cores = if options.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        for (id, sockets) in per_shard.into_iter().enumerate() {
            let shard_stats = Arc::new(ShardStats::default());
            stats.push(shard_stats.clone());
            let config = config.clone();
            let stop = stop.clone();
            let ready = ready_tx.clone();
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
                        shard_main(id, config, sockets, stop, shard_stats, ready.clone())
                    });
                    if let Err(e) = run {
                        let _ = ready.send(Err((
                            id,
                            format!("cannot start the {} runtime: {e}", driver.name()),
                        )));
                    }
                })
                .map_err(|e| GatewayError::Shard {
                    shard: id,
                    message: e.to_string(),
                })?;
            threads.push(spawned);
        }
        drop(ready_tx);
        let mut gateway = Gateway {
            addrs,
            driver,
            stop,
            threads,
            stats,
        };
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((shard, message))) => {
                    gateway.shutdown();
                    return Err(GatewayError::Shard { shard, message });
                }
                Err(_) => {
                    gateway.shutdown();
                    return Err(GatewayError::Shard {
                        shard: 0,
                        message: "a shard thread exited during start-up".into(),
                    });
                }
            }
        }
        Ok(gateway)
    }

    /// The bound listener addresses, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The driver the shards run on.
    pub fn driver(&self) -> DriverChoice {
        self.driver
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.stats.len()
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

    /// Stops every shard (open connections are closed) and waits for them.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Blocks until the shards exit (they do when [`Gateway::shutdown`] is
    /// called from another handle or a shard fails).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Asks a gateway's shards to stop, from any thread (a signal handler's).
#[derive(Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

type Ready = mpsc::Sender<Result<(), (usize, String)>>;

async fn shard_main(
    id: usize,
    config: Arc<Config>,
    sockets: Vec<std::net::TcpListener>,
    stop: Arc<AtomicBool>,
    stats: Arc<ShardStats>,
    ready: Ready,
) {
    let snapshot = match Snapshot::build(&config) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err((id, format!("cannot build the routing table: {e}"))));
            return;
        }
    };
    let shard = Rc::new(Shard::new(id, snapshot, stats));
    for socket in sockets {
        match monoio::net::TcpListener::from_std(socket) {
            Ok(l) => {
                monoio::spawn(listener::accept_loop(shard.clone(), l));
            }
            Err(e) => {
                let _ = ready.send(Err((id, format!("cannot register a listener: {e}"))));
                return;
            }
        }
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    // The shard's clock: advances the deadline wheel every tick.
    let mut ticks = 0u64;
    loop {
        monoio::time::sleep(TICK).await;
        shard.timers.advance(std::time::Instant::now());
        ticks += 1;
        if ticks.is_multiple_of(CONTROL_EVERY) && stop.load(Ordering::Acquire) {
            break;
        }
        if ticks.is_multiple_of(SWEEP_EVERY) {
            shard.pools.sweep(shard.snapshot.pool.idle_timeout);
        }
    }
}
