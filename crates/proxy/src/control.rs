//! The control plane: what travels between the supervisor (or the admin
//! server, or a signal) and the shards, all off the request path. Each shard
//! looks at its command queue once per tick; a command carries its own reply
//! channel.

use crate::metrics::{GatewayFacts, ShardMetrics};
use crate::snapshot::BuildError;
use shardgate_config::Config;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long the supervisor waits for shards to answer a command.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) enum Command {
    /// Make `config` current, at request boundaries.
    Reload {
        config: Arc<Config>,
        version: u64,
        ack: mpsc::Sender<(usize, Result<(), BuildError>)>,
    },
    /// Copy out the shard's metrics.
    Collect { reply: mpsc::Sender<ShardMetrics> },
    /// Stop accepting, finish in-flight requests, close idle connections,
    /// exit by `deadline`.
    Drain { deadline: Instant },
    /// Active health checks found these endpoints of a group up or down.
    Health {
        group: String,
        endpoints: Vec<std::net::SocketAddr>,
        up: Vec<bool>,
    },
    /// New shares of a gateway-wide rate limit (see `rates`).
    RateShares {
        version: u64,
        limiter: usize,
        update: shardgate_filters::global_rate::ShareUpdate,
    },
    /// The fleet's totals of a quota's keys, for the window starting at `window`.
    QuotaTotals {
        name: String,
        window: u64,
        totals: Arc<Vec<(shardgate_filters::global_rate::RateKey, u64)>>,
    },
    /// Exit now.
    Stop,
}

/// What the gateway knows about its configuration, for `/config`.
#[derive(Debug, Clone)]
pub struct ConfigInfo {
    pub version: u64,
    /// FNV-1a 64 of the source text (0 when built in code).
    pub hash: u64,
    pub loaded_at: SystemTime,
    /// A file path, `command line`, or `built-in`.
    pub source: String,
    pub reloads: u64,
    pub reload_failures: u64,
    /// The errors of the last refused reload, if the last attempt failed.
    pub last_error: Option<String>,
    /// The latest reload attempts, oldest first (at most [`HISTORY`]).
    pub history: std::collections::VecDeque<ReloadEvent>,
}

/// Reload attempts [`ConfigInfo::history`] keeps.
pub const HISTORY: usize = 20;

/// One reload attempt: the version it made, or why it was refused.
#[derive(Debug, Clone)]
pub struct ReloadEvent {
    pub at: SystemTime,
    pub version: u64,
    pub error: Option<String>,
}

impl ConfigInfo {
    fn note(&mut self, error: Option<String>) {
        match &error {
            None => self.reloads += 1,
            Some(_) => self.reload_failures += 1,
        }
        self.last_error.clone_from(&error);
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(ReloadEvent {
            at: SystemTime::now(),
            version: self.version,
            error,
        });
    }
}

/// Why a reload was refused: the previous configuration keeps serving.
#[derive(Debug)]
pub enum ReloadError {
    /// The gateway was started from a configuration built in code.
    NotFromFile,
    /// The file could not be read.
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not a valid configuration (every error, with its field).
    Invalid(String),
    /// The change needs a restart (or a binary upgrade).
    RestartRequired { field: &'static str },
    /// A shard has stopped and cannot take the configuration.
    ShardStopped,
    /// A shard could not build the configuration.
    ShardRefused { shard: usize, error: BuildError },
    /// A shard did not answer in time.
    ShardSilent,
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NotFromFile => f.write_str("this gateway was not started from a file"),
            ReloadError::Read { path, error } => write!(f, "{}: {error}", path.display()),
            ReloadError::Invalid(errors) => f.write_str(errors),
            ReloadError::RestartRequired { field } => write!(
                f,
                "{field} cannot change on reload: restart (or upgrade the binary) to apply it"
            ),
            ReloadError::ShardStopped => f.write_str("a shard has stopped"),
            ReloadError::ShardRefused { shard, error } => write!(f, "shard {shard}: {error}"),
            ReloadError::ShardSilent => f.write_str("a shard did not answer in time"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// A change applied to every configuration read on reload.
pub type Adjust = Arc<dyn Fn(&mut Config) + Send + Sync>;

pub(crate) struct Shared {
    pub controls: Vec<mpsc::Sender<Command>>,
    pub state: Mutex<State>,
    pub path: Option<PathBuf>,
    /// Set to make the access log writer reopen its file.
    pub log_reopen: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Lines the access log writer failed to write.
    pub log_lost: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Applied to each configuration read on reload (command-line overrides).
    pub adjust: Option<Adjust>,
    /// Held for a whole reload from the file, so two (a signal and a
    /// `POST /reload`) cannot interleave their reads and writes of `State`.
    pub reloading: Mutex<()>,
    /// Remote key sets (fetched off the shards).
    pub jwks: Arc<crate::jwks::JwksStore>,
    /// How the etcd configuration centre is doing, when the configuration comes from etcd.
    pub etcd: Option<crate::etcd_source::SharedStatus>,
    /// The fleet-limit exchange with Redis, when `[fleet]` is configured.
    pub fleet: Option<crate::fleet::FleetHandle>,
    /// The span exporter's counts, when `[tracing]` is configured.
    pub spans: Option<Arc<crate::tracing::ExportCounts>>,
}

pub(crate) struct State {
    pub config: Arc<Config>,
    pub info: ConfigInfo,
    /// The configuration text in effect (the file's, or the file's with
    /// refused tenants' previous sections), when it came from a file.
    pub text: Option<String>,
}

/// A cloneable handle to a running gateway, usable from any thread.
#[derive(Clone)]
pub struct GatewayHandle(pub(crate) Arc<Shared>);

/// FNV-1a 64: a stable fingerprint of configuration text.
pub fn config_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl GatewayHandle {
    /// Applies a new configuration on every shard. Refused (the old one keeps
    /// serving) when it changes a setting that needs a restart. Returns the
    /// new version.
    pub fn reload(&self, config: Config, hash: u64, source: &str) -> Result<u64, ReloadError> {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.apply(&mut state, config, hash, source);
        match &result {
            Ok(v) => {
                state.info.note(None);
                log::info!("configuration version {v} from {source} is now serving");
            }
            Err(e) => {
                state.info.note(Some(e.to_string()));
                log::error!(
                    "reload from {source} refused, the previous configuration keeps serving: {e}"
                );
            }
        }
        result
    }

    fn apply(
        &self,
        state: &mut State,
        config: Config,
        hash: u64,
        source: &str,
    ) -> Result<u64, ReloadError> {
        if let Some(field) = state.config.restart_required(&config) {
            return Err(ReloadError::RestartRequired { field });
        }
        // New remote key sets are fetched before any shard builds on them.
        self.0.jwks.prepare(&config);
        let config = Arc::new(config);
        let version = state.info.version + 1;
        let (ack, acks) = mpsc::channel();
        for c in &self.0.controls {
            c.send(Command::Reload {
                config: config.clone(),
                version,
                ack: ack.clone(),
            })
            .map_err(|_| ReloadError::ShardStopped)?;
        }
        drop(ack);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        for _ in &self.0.controls {
            let left = deadline.saturating_duration_since(Instant::now());
            match acks.recv_timeout(left) {
                Ok((_, Ok(()))) => {}
                Ok((shard, Err(error))) => return Err(ReloadError::ShardRefused { shard, error }),
                Err(_) => return Err(ReloadError::ShardSilent),
            }
        }
        self.0.jwks.adopt(&config);
        state.config = config;
        state.info = ConfigInfo {
            version,
            hash,
            loaded_at: SystemTime::now(),
            source: source.to_string(),
            ..state.info.clone()
        };
        Ok(version)
    }

    /// Re-reads the configuration file the gateway was started from. When
    /// the only errors are inside some tenants' sections, those tenants keep
    /// their previous sections and the rest applies (see
    /// `shardgate_config::reload_toml`); the refusal is logged, counted and
    /// shown at `/config`.
    pub fn reload_from_file(&self) -> Result<u64, ReloadError> {
        let Some(path) = self.0.path.clone() else {
            return Err(ReloadError::NotFromFile);
        };
        let _one_at_a_time = self.0.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let source = path.display().to_string();
        match shardgate_config::read_text(&path, shardgate_config::MAX_CONFIG_FILE) {
            Ok(text) => self.reload_text_locked(&text, &source, &|_| {}),
            Err(error) => {
                let e = ReloadError::Read { path, error };
                self.refused(&e);
                Err(e)
            }
        }
    }

    /// Validates `text` exactly as a reload from the file does (tenants kept
    /// apart), lets `finish` add what does not come from the text (endpoints
    /// registered in etcd), and applies it. A refusal is logged, counted and
    /// shown at `/config`; the previous configuration keeps serving.
    pub fn reload_text(
        &self,
        text: &str,
        source: &str,
        finish: &dyn Fn(&mut Config),
    ) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.0.reloading.lock().unwrap_or_else(|p| p.into_inner());
        self.reload_text_locked(text, source, finish)
    }

    fn refused(&self, e: &ReloadError) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.info.note(Some(e.to_string()));
        log::error!("reload refused, the previous configuration keeps serving: {e}");
    }

    /// Records a refusal that happened before any validation (an etcd key
    /// deleted): counted, logged and shown like an invalid configuration.
    pub fn refuse(&self, why: &str) {
        self.refused(&ReloadError::Invalid(why.to_string()));
    }

    fn reload_text_locked(
        &self,
        text: &str,
        source: &str,
        finish: &dyn Fn(&mut Config),
    ) -> Result<u64, ReloadError> {
        let previous = self
            .0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .text
            .clone();
        let loaded = match &previous {
            Some(p) => shardgate_config::reload_toml(text, p),
            None => shardgate_config::from_toml(text).map(|config| shardgate_config::Reloaded {
                config,
                kept: Vec::new(),
                effective: text.to_string(),
            }),
        };
        let loaded = match loaded {
            Ok(l) => l,
            Err(errors) => {
                let e = ReloadError::Invalid(errors.to_string().trim_end().to_string());
                self.refused(&e);
                return Err(e);
            }
        };
        let mut config = loaded.config;
        if let Some(adjust) = &self.0.adjust {
            adjust(&mut config);
        }
        finish(&mut config);
        let version = self.reload(config, config_hash(text), source)?;
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.text = Some(loaded.effective);
        if !loaded.kept.is_empty() {
            let refused: Vec<String> = loaded
                .kept
                .iter()
                .map(|(tenant, errors)| {
                    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    format!(
                        "tenant {tenant:?} keeps its previous configuration: {}",
                        list.join("; ")
                    )
                })
                .collect();
            let message = refused.join("\n");
            log::error!("reload from {source} applied in part: {message}");
            state.info.note(Some(message));
        }
        Ok(version)
    }

    /// Changes the configuration being served in place (`change` says
    /// whether it changed anything) and applies it, one reload at a time
    /// with the others. `None` when nothing changed.
    pub fn modify(
        &self,
        source: &str,
        change: impl FnOnce(&mut Config) -> bool,
    ) -> Option<Result<u64, ReloadError>> {
        let _one_at_a_time = self.0.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let (config, info) = self.config();
        let mut next = (*config).clone();
        if !change(&mut next) {
            return None;
        }
        Some(self.reload(next, info.hash, source))
    }

    /// The configuration text in effect, when it came from a file or etcd.
    pub fn effective_text(&self) -> Option<String> {
        self.0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .text
            .clone()
    }

    /// The file the gateway reloads from, if any.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.0.path.clone()
    }

    /// The configuration being served and what is known about it.
    pub fn config(&self) -> (Arc<Config>, ConfigInfo) {
        let state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.config.clone(), state.info.clone())
    }

    /// Asks every shard for its metrics (answered within a tick or two).
    pub fn collect(&self) -> Vec<ShardMetrics> {
        let (reply, replies) = mpsc::channel();
        let mut asked = 0;
        for c in &self.0.controls {
            if c.send(Command::Collect {
                reply: reply.clone(),
            })
            .is_ok()
            {
                asked += 1;
            }
        }
        drop(reply);
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut out = Vec::with_capacity(asked);
        for _ in 0..asked {
            match replies.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        out.sort_by_key(|m| m.shard);
        out
    }

    /// The Prometheus text exposition of every shard's metrics.
    pub fn metrics_text(&self) -> String {
        let shards = self.collect();
        let (_, info) = self.config();
        let mut text = crate::metrics::render(
            &shards,
            &GatewayFacts {
                config_version: info.version,
                reloads: info.reloads,
                reload_failures: info.reload_failures,
                log_lost: self
                    .0
                    .log_lost
                    .as_ref()
                    .map_or(0, |l| l.load(std::sync::atomic::Ordering::Relaxed)),
            },
        );
        self.0.jwks.render_metrics(&mut text);
        if let Some(counts) = &self.0.spans {
            let dropped = shards.iter().map(|m| m.spans_dropped).sum();
            crate::tracing::render_metrics(counts, dropped, &mut text);
        }
        if let Some(f) = &self.0.fleet {
            crate::fleet::render_metrics(&f.status(), &mut text);
        }
        if let Some(s) = &self.0.etcd {
            crate::etcd_source::render_metrics(
                &s.lock().unwrap_or_else(|p| p.into_inner()),
                &mut text,
            );
        }
        text
    }

    /// Asks every shard to drain by `timeout` from now (see [`Command::Drain`]).
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for c in &self.0.controls {
            let _ = c.send(Command::Drain { deadline });
        }
    }

    /// Makes the access log writer reopen its file (after logrotate moved it).
    pub fn reopen_logs(&self) {
        if let Some(flag) = &self.0.log_reopen {
            flag.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Asks every shard to stop now.
    pub fn stop(&self) {
        for c in &self.0.controls {
            let _ = c.send(Command::Stop);
        }
    }
}
