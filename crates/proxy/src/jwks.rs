//! Remote JWKS: the key sets identity providers publish, fetched by one
//! control-plane thread and handed to the shards, which never do I/O for
//! keys.
//!
//! Each `jwt` key with a `jwks_url` has a slot on every shard
//! (`shardgate_filters::jwt::KeySlot`). The fetcher keeps the last good set
//! of each source in the [`JwksStore`] and bumps the store's generation
//! when one changes; each shard compares the generation once per tick and
//! copies new sets into its slots. A token naming a `kid` no set has marks
//! its slot; the shard passes the wish on at its next tick, and the fetcher
//! fetches early, but no sooner than `min_refresh` after the set's last
//! fetch, so a flood of bogus kids costs the provider at most one request
//! per `min_refresh`. A failed fetch keeps the last good set, is logged and
//! counted (`/metrics`), and is retried with back-off.

use shardgate_config::{Config, SYSTEM_CA_BUNDLES};
use shardgate_filters::filter::FilterSpec;
use shardgate_filters::jwt::{JwksSource, RemoteKeys};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The whole of one fetch: connect, handshake, request and body.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS document larger than this is refused (real ones are a few KiB).
const MAX_DOCUMENT: u64 = 1 << 20;
/// The first retry after a failure; each further failure doubles it, up to
/// the source's `refresh` or [`MAX_BACKOFF`], whichever is shorter.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the fetcher is told.
pub(crate) enum Msg {
    /// The sources the configuration in effect names (it replaces the last list).
    Sources(Vec<JwksSource>),
    /// A token named a `kid` this source's set lacks.
    Want(JwksSource),
    Stop,
}

/// Fetch counts of one URL, for `/metrics`.
#[derive(Debug, Clone, Default)]
struct UrlStats {
    fetches: u64,
    failures: u64,
    /// Keys in the set in use (0 before the first good fetch).
    keys: usize,
    /// Failures since the last good fetch.
    failing: u64,
}

#[derive(Default)]
struct Inner {
    /// The last good set of each source.
    sets: HashMap<JwksSource, Arc<RemoteKeys>>,
    stats: BTreeMap<String, UrlStats>,
    /// Sources handed to the fetcher (a reload fetches only new ones itself).
    tracked: HashSet<JwksSource>,
}

/// A metric family: name, type, help, and its value for one URL.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&UrlStats) -> u64,
);

/// The gateway's remote key sets, shared by the fetcher, the shards (at
/// ticks, never per request) and reloads.
pub(crate) struct JwksStore {
    inner: Mutex<Inner>,
    generation: AtomicU64,
    tx: Sender<Msg>,
}

impl JwksStore {
    /// A store, and the receiver its fetcher reads.
    pub(crate) fn new() -> (Arc<JwksStore>, Receiver<Msg>) {
        let (tx, rx) = mpsc::channel();
        let store = JwksStore {
            inner: Mutex::default(),
            generation: AtomicU64::new(0),
            tx,
        };
        (Arc::new(store), rx)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever a set does.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The last good set of `source`, if one has been fetched.
    pub(crate) fn get(&self, source: &JwksSource) -> Option<Arc<RemoteKeys>> {
        self.lock().sets.get(source).cloned()
    }

    /// Asks for an early fetch of `source` (the fetcher throttles it).
    pub(crate) fn want(&self, source: &JwksSource) {
        let _ = self.tx.send(Msg::Want(source.clone()));
    }

    /// Fetches `config`'s sources that the fetcher does not keep yet, now,
    /// on the calling thread, so a route that starts (or reloads) with a new
    /// `jwks_url` has its keys from its first request when the provider
    /// answers. The sets in use are not touched: a reload that is then
    /// refused leaves the running configuration's sets as they were.
    pub(crate) fn prepare(&self, config: &Config) {
        let sources = sources(config);
        let new: Vec<JwksSource> = {
            let inner = self.lock();
            sources
                .iter()
                .filter(|s| !inner.tracked.contains(*s) && !inner.sets.contains_key(*s))
                .cloned()
                .collect()
        };
        for source in &new {
            self.record(source, fetch(source));
        }
    }

    /// Makes `config`'s sources the ones kept fresh (once it serves): the
    /// fetcher refreshes these, and the sets and counts of sources no
    /// longer named are dropped.
    pub(crate) fn adopt(&self, config: &Config) {
        let sources = sources(config);
        {
            let mut inner = self.lock();
            inner.tracked = sources.iter().cloned().collect();
            let Inner { sets, stats, .. } = &mut *inner;
            sets.retain(|s, _| sources.contains(s));
            stats.retain(|url, _| sources.iter().any(|s| s.url == *url));
        }
        let _ = self.tx.send(Msg::Sources(sources));
    }

    /// Counts a fetch (a failure is logged) and keeps its set if it brought
    /// one; whether it did.
    fn record(&self, source: &JwksSource, fetched: Result<RemoteKeys, String>) -> bool {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let stats = inner.stats.entry(source.url.clone()).or_default();
        stats.fetches += 1;
        match fetched {
            Ok(keys) => {
                if stats.failing > 0 || stats.keys == 0 {
                    log::info!(
                        "jwks {}: {} keys{}",
                        source.url,
                        keys.len(),
                        match stats.failing {
                            0 => String::new(),
                            n => format!(" (the provider answers again after {n} failed fetches)"),
                        }
                    );
                }
                stats.failing = 0;
                stats.keys = keys.len();
                inner.sets.insert(source.clone(), Arc::new(keys));
                self.generation.fetch_add(1, Ordering::Release);
                true
            }
            Err(e) => {
                stats.failures += 1;
                stats.failing += 1;
                let kept = inner.sets.get(source).map_or(0, |k| k.len());
                log::warn!(
                    "jwks {}: fetch failed, {}: {e}",
                    source.url,
                    if kept > 0 {
                        format!("keeping the last good set ({kept} keys)")
                    } else {
                        "no keys yet: its tokens get 503".to_string()
                    }
                );
                false
            }
        }
    }

    /// The Prometheus lines of every URL's fetches.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let inner = self.lock();
        if inner.stats.is_empty() {
            return;
        }
        let families: [Family; 3] = [
            (
                "shardgate_jwks_fetches_total",
                "counter",
                "Fetches of a remote JWKS, successful or not.",
                |s| s.fetches,
            ),
            (
                "shardgate_jwks_fetch_failures_total",
                "counter",
                "Fetches of a remote JWKS that failed (the last good set was kept).",
                |s| s.failures,
            ),
            (
                "shardgate_jwks_keys",
                "gauge",
                "Usable keys in the remote JWKS in use.",
                |s| s.keys as u64,
            ),
        ];
        for (name, kind, help, value) in families {
            crate::metrics::header(out, name, kind, help);
            for (url, s) in &inner.stats {
                let url = crate::metrics::escape(url);
                let _ = writeln!(out, "{name}{{url=\"{url}\"}} {}", value(s));
            }
        }
    }
}

/// Every remote key source `config` names, once each.
pub(crate) fn sources(config: &Config) -> Vec<JwksSource> {
    let chains = config.routes.iter().map(|r| &r.filters);
    let chains = chains.chain(config.tenants.iter().map(|t| &t.filters));
    let mut out: Vec<JwksSource> = Vec::new();
    for spec in chains.flatten() {
        if let FilterSpec::Jwt(jwt) = spec {
            for s in jwt.remote_sources() {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
    }
    out
}

/// The system's CA bundle (the first of `SYSTEM_CA_BUNDLES` there is).
pub(crate) fn system_ca_pem() -> Result<String, String> {
    let path = SYSTEM_CA_BUNDLES
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .ok_or("no system CA bundle found")?;
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// A ureq TLS configuration on our rustls and ring that trusts the
/// certificates of `pem`.
pub(crate) fn tls_config(pem: &[u8]) -> ureq::tls::TlsConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let roots: Vec<Certificate<'static>> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|der| Certificate::from_der(&der).to_owned())
        .collect();
    TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build()
}

/// One GET of a source's document, verified against its CA (or the
/// system's roots), parsed into keys. A set with no usable key is a
/// failure: adopting it would refuse every token.
fn fetch(source: &JwksSource) -> Result<RemoteKeys, String> {
    let system;
    let pem = match &source.ca {
        Some(pem) => pem.as_str(),
        None => {
            system = system_ca_pem().map_err(|e| format!("{e}; give the key a ca"))?;
            system.as_str()
        }
    };
    let tls = tls_config(pem.as_bytes());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .https_only(true)
        .max_redirects(3)
        .http_status_as_error(false)
        .timeout_global(Some(FETCH_TIMEOUT))
        .user_agent("shardgate")
        .accept("application/json, application/jwk-set+json")
        .build()
        .into();
    let mut response = agent.get(&source.url).call().map_err(|e| e.to_string())?;
    let status = response.status();
    if status != 200 {
        return Err(format!("the provider answered {status}"));
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_string()
        .map_err(|e| format!("reading the document: {e}"))?;
    let keys = RemoteKeys::parse(source, &text)?;
    if keys.is_empty() {
        return Err("the set has no key usable with this key's algorithms".into());
    }
    Ok(keys)
}

/// The fetcher thread.
pub(crate) struct Fetcher {
    store: Arc<JwksStore>,
    thread: Option<JoinHandle<()>>,
}

impl Fetcher {
    pub(crate) fn start(store: Arc<JwksStore>, rx: Receiver<Msg>) -> Fetcher {
        let worker = store.clone();
        let thread = std::thread::Builder::new()
            .name("shardgate-jwks".into())
            .spawn(move || run(&worker, &rx))
            .ok();
        Fetcher { store, thread }
    }

    pub(crate) fn stop(mut self) {
        let _ = self.store.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// When one source is next fetched, and why.
struct Schedule {
    next: Instant,
    last: Option<Instant>,
    failures: u32,
}

impl Schedule {
    fn after(&mut self, source: &JwksSource, ok: bool, now: Instant) {
        self.last = Some(now);
        if ok {
            self.failures = 0;
            self.next = now + source.refresh;
        } else {
            let backoff = FIRST_BACKOFF.saturating_mul(1 << self.failures.min(16));
            self.failures = self.failures.saturating_add(1);
            self.next = now + backoff.min(source.refresh).min(MAX_BACKOFF);
        }
    }
}

fn run(store: &JwksStore, rx: &Receiver<Msg>) {
    let mut plan: HashMap<JwksSource, Schedule> = HashMap::new();
    loop {
        let now = Instant::now();
        let wake = plan.values().map(|s| s.next).min();
        let msg = match wake {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(Msg::Sources(list)) => {
                plan.retain(|s, _| list.contains(s));
                for s in list {
                    plan.entry(s).or_insert_with_key(|s| {
                        // `prepare` has just fetched it: due at its refresh
                        // if that worked, soon if not.
                        let mut sched = Schedule {
                            next: now,
                            last: None,
                            failures: 0,
                        };
                        sched.after(s, store.get(s).is_some(), now);
                        sched
                    });
                }
            }
            Ok(Msg::Want(source)) => {
                // As soon as `min_refresh` allows: a wish that comes too
                // early waits rather than being lost.
                if let Some(s) = plan.get_mut(&source) {
                    let allowed = s.last.map_or(now, |t| t + source.min_refresh);
                    s.next = s.next.min(allowed);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        let due: Vec<JwksSource> = plan
            .iter()
            .filter(|(_, s)| s.next <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for source in due {
            let ok = store.record(&source, fetch(&source));
            if let Some(s) = plan.get_mut(&source) {
                s.after(&source, ok, Instant::now());
            }
        }
    }
}
