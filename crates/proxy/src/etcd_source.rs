//! The configuration from etcd: the whole configuration as one TOML document at
//! `<prefix>config`, and endpoints that services register at
//! `<prefix>endpoints/<group>/<ip:port>` (with a lease, so they leave when it expires).
//!
//! One control-plane thread reads the prefix, then watches it from the next revision. A new
//! document is validated like a file reload (tenants kept apart) and applied, or refused with
//! the error at `/config`, in the log and in the reload failure count; a deleted document is
//! refused the same way, so the routing table is never emptied. Registrations are applied like
//! a DNS change. After a compaction or a broken connection the prefix is read in full again;
//! reconnecting backs off (100 ms doubling to 5 s, with jitter).
//!
//! Each applied state is also written to the state directory (write, fsync, rename), so a
//! gateway that starts while etcd is unreachable serves the last good state, says so in the
//! log and at `/ready`, and catches up when etcd returns.

use crate::control::GatewayHandle;
use serde_json::{Value, json};
use shardgate_config::Config;
use shardgate_etcd::{Client, Error, Kv, WatchEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The key under the prefix that holds the configuration.
pub const CONFIG_KEY: &str = "config";
/// The folder under the prefix where services register endpoints.
pub const ENDPOINTS_DIR: &str = "endpoints/";
/// The file in the state directory.
pub const STATE_FILE: &str = "last-good.json";

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MOST: Duration = Duration::from_secs(5);

/// Endpoints registered in etcd, by group.
pub type Registered = BTreeMap<String, BTreeSet<SocketAddr>>;

/// Where the configuration comes from.
#[derive(Clone)]
pub struct EtcdSource {
    pub client: Arc<Client>,
    /// Ends with `/` (added when missing).
    pub prefix: String,
    /// Where the last good state is kept; `None`: nowhere.
    pub state_dir: Option<PathBuf>,
}

/// What the gateway starts with.
#[derive(Debug, Clone)]
pub struct Initial {
    /// The configuration text.
    pub text: String,
    /// The modification revision of the configuration key it came from.
    pub revision: i64,
    pub registered: Registered,
    /// It came from the state directory (etcd was unreachable, or held nothing valid):
    /// why.
    pub from_state: Option<String>,
    /// The store revision the prefix was read at (0 when it was not read).
    pub read_at: i64,
    /// The cluster that answered that read.
    pub cluster: String,
    /// The text of etcd's configuration key as read, when it was not used (refused).
    pub refused_text: Option<Vec<u8>>,
}

/// How the configuration centre is doing, for `/config`, `/ready` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub endpoint: String,
    pub key: String,
    pub connected: bool,
    /// The modification revision of the configuration being served.
    pub revision: i64,
    /// The last store revision seen.
    pub seen: i64,
    /// Serving the state directory's last good configuration, and why.
    pub from_state: Option<String>,
    pub full_reads: u64,
    pub reconnects: u64,
    pub state_writes: u64,
    pub state_write_failures: u64,
    pub last_state_error: Option<String>,
}

/// The centre's status, shared with the admin server.
pub type SharedStatus = Arc<Mutex<Status>>;

impl EtcdSource {
    pub fn new(client: Client, prefix: &str, state_dir: Option<PathBuf>) -> EtcdSource {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        EtcdSource {
            client: Arc::new(client),
            prefix,
            state_dir,
        }
    }

    /// `<prefix>config`.
    pub fn config_key(&self) -> String {
        format!("{}{CONFIG_KEY}", self.prefix)
    }

    /// What to start with: etcd's configuration when etcd answers and it is valid, else the
    /// state directory's last good one, else an error that says what is missing.
    /// `valid` checks a text as the gateway would load it.
    pub fn initial(&self, valid: &dyn Fn(&str) -> Result<(), String>) -> Result<Initial, String> {
        let key = self.config_key();
        let saved = || self.state_dir.as_deref().map(read_state);
        let fall_back = |why: String,
                         read: Option<&shardgate_etcd::Range>,
                         refused_text: Option<Vec<u8>>| match saved() {
            Some(Ok(mut s)) => {
                let dir = self.state_dir.as_deref().unwrap_or(Path::new("")).display();
                log::warn!(
                    "{why}: serving the last good configuration from {dir} (etcd revision {})",
                    s.revision
                );
                s.from_state = Some(why);
                s.read_at = read.map_or(0, |r| r.revision);
                s.cluster = read.map(|r| r.cluster.clone()).unwrap_or_default();
                s.refused_text = refused_text;
                Ok(s)
            }
            Some(Err(e)) => Err(format!("{why}; and no last good configuration: {e}")),
            None => Err(format!(
                "{why}; and no --state-dir to keep a last good configuration in"
            )),
        };
        let range = match self.client.range(&self.prefix, true) {
            Ok(r) => r,
            Err(e) => return fall_back(e.to_string(), None, None),
        };
        let registered = registered_in(&self.prefix, &range.kvs);
        let Some(kv) = range.kvs.iter().find(|kv| kv.key == key) else {
            return fall_back(
                format!("etcd has no {key}: publish one with `shardgate config push`"),
                Some(&range),
                Some(Vec::new()),
            );
        };
        let text = match std::str::from_utf8(&kv.value) {
            Ok(t) => t.to_string(),
            Err(_) => {
                return fall_back(
                    format!("{key} at revision {} is not UTF-8 text", kv.mod_revision),
                    Some(&range),
                    Some(kv.value.clone()),
                );
            }
        };
        if let Err(errors) = valid(&text) {
            return fall_back(
                format!(
                    "{key} at revision {} is not a valid configuration:\n{}",
                    kv.mod_revision,
                    errors.trim_end()
                ),
                Some(&range),
                Some(kv.value.clone()),
            );
        }
        Ok(Initial {
            text,
            revision: kv.mod_revision,
            registered,
            from_state: None,
            read_at: range.revision,
            cluster: range.cluster.clone(),
            refused_text: None,
        })
    }
}

/// Puts the registered endpoints into the groups that take them (`discovery = "etcd"`); whether
/// anything changed.
pub fn merge_registered(config: &mut Config, registered: &Registered) -> bool {
    let mut changed = false;
    for u in config.upstreams.iter_mut().filter(|u| u.discovery) {
        let addrs: Vec<SocketAddr> = registered
            .get(&u.name)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        changed |= u.set_registered(&addrs);
    }
    changed
}

/// The registrations among `kvs`: `<prefix>endpoints/<group>/<ip:port>`. A key whose last part
/// is not an address is logged and left out.
fn registered_in(prefix: &str, kvs: &[Kv]) -> Registered {
    let mut out = Registered::new();
    for kv in kvs {
        if let Some((group, addr)) = registration(prefix, &kv.key) {
            out.entry(group).or_default().insert(addr);
        }
    }
    out
}

fn registration(prefix: &str, key: &str) -> Option<(String, SocketAddr)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(ENDPOINTS_DIR)?;
    let (group, addr) = rest.split_once('/')?;
    match addr.parse::<SocketAddr>() {
        Ok(a) if !group.is_empty() => Some((group.to_string(), a)),
        _ => {
            log::warn!("etcd key {key:?}: not endpoints/<group>/<ip:port>; ignored");
            None
        }
    }
}

/// The state file's document.
fn state_document(text: &str, revision: i64, registered: &Registered) -> String {
    let endpoints: serde_json::Map<String, Value> = registered
        .iter()
        .map(|(g, set)| {
            let list: Vec<Value> = set.iter().map(|a| Value::String(a.to_string())).collect();
            (g.clone(), Value::Array(list))
        })
        .collect();
    let saved = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "revision": revision,
        "saved_at_unix": saved,
        "config": text,
        "endpoints": endpoints,
    })
    .to_string()
}

/// Reads the state directory's last good state.
fn read_state(dir: &Path) -> Result<Initial, String> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |why: &str| format!("{}: {why}", path.display());
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let config = v
        .get("config")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no config in it"))?;
    let mut registered = Registered::new();
    if let Some(groups) = v.get("endpoints").and_then(Value::as_object) {
        for (g, list) in groups {
            let set = registered.entry(g.clone()).or_default();
            for a in list.as_array().into_iter().flatten() {
                if let Some(addr) = a.as_str().and_then(|s| s.parse().ok()) {
                    set.insert(addr);
                }
            }
        }
    }
    Ok(Initial {
        text: config.to_string(),
        revision: v.get("revision").and_then(Value::as_i64).unwrap_or(0),
        registered,
        from_state: None,
        read_at: 0,
        cluster: String::new(),
        refused_text: None,
    })
}

/// Writes `document` as the state directory's file: to a temporary file, flushed to disk,
/// renamed over the old one, and the directory flushed, so a crash leaves the old state or the
/// new, never a mix.
fn write_state(dir: &Path, document: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{STATE_FILE}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(document.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The watcher thread. It blocks on etcd, so it is not joined on shutdown: the flag stops it
/// at its next wake-up.
pub(crate) struct Watcher {
    stop: Arc<AtomicBool>,
}

impl Watcher {
    pub(crate) fn start(
        handle: GatewayHandle,
        source: EtcdSource,
        initial: Initial,
        status: SharedStatus,
    ) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("shardgate-etcd".into())
            .spawn(move || {
                let mut w = Watching::new(handle, source, &initial, status);
                w.run(&flag);
            });
        if let Err(e) = spawned {
            log::error!("cannot start the etcd watcher: {e}");
        }
        Watcher { stop }
    }

    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The status the gateway starts with.
pub fn initial_status(source: &EtcdSource, initial: &Initial) -> Status {
    Status {
        endpoint: source.client.current_endpoint().to_string(),
        key: source.config_key(),
        connected: initial.from_state.is_none() || initial.read_at > 0,
        revision: initial.revision,
        seen: initial.read_at,
        from_state: initial.from_state.clone(),
        ..Status::default()
    }
}

/// What the watcher does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Read the whole prefix, then watch after its revision.
    FullRead,
    /// After a broken connection: resume the watch if etcd's history is the one seen.
    Check,
    /// Watch after the last revision seen.
    Watch,
}

struct Watching {
    handle: GatewayHandle,
    source: EtcdSource,
    key: String,
    status: SharedStatus,
    /// The configuration text last applied or refused: the same text is not tried twice.
    tried: Vec<u8>,
    /// The text being served and its revision (written to the state directory).
    serving: (String, i64),
    registered: Registered,
    /// The last store revision seen; watching resumes after it.
    seen: i64,
    /// The cluster that revision belongs to.
    cluster: String,
    next: Next,
    backoff: Duration,
    rng: shardgate_common::hash::Rng,
}

impl Watching {
    fn new(
        handle: GatewayHandle,
        source: EtcdSource,
        initial: &Initial,
        status: SharedStatus,
    ) -> Watching {
        let key = source.config_key();
        Watching {
            handle,
            key,
            status,
            tried: initial
                .refused_text
                .clone()
                .unwrap_or_else(|| initial.text.clone().into_bytes()),
            serving: (initial.text.clone(), initial.revision),
            registered: initial.registered.clone(),
            seen: initial.read_at,
            cluster: initial.cluster.clone(),
            // Started from the state directory: read etcd in full once it answers.
            next: if initial.read_at == 0 {
                Next::FullRead
            } else {
                Next::Watch
            },
            backoff: BACKOFF_FIRST,
            rng: shardgate_common::hash::Rng::new(u64::from(std::process::id())),
            source,
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        if self.seen > 0 {
            // etcd answered at start but its document was refused there: say so at /config.
            if self.tried != self.serving.0.as_bytes() {
                let why = self.status().from_state.clone().unwrap_or_default();
                self.handle.refuse(&why);
            }
            self.write_state();
        }
        while !stop.load(Ordering::Acquire) {
            match self.next {
                Next::FullRead => match self.source.client.range(&self.source.prefix, true) {
                    Ok(range) => self.full_read(&range),
                    Err(e) => {
                        self.lost(&e);
                        continue;
                    }
                },
                Next::Check => match self.source.client.range(&self.key, false) {
                    // The same history, not behind: resume after the last revision seen.
                    Ok(r) if r.cluster == self.cluster && r.revision >= self.seen => {}
                    Ok(r) => {
                        log::warn!(
                            "etcd's history changed (cluster {} at revision {}, was {} at {}): reading {} in full",
                            r.cluster,
                            r.revision,
                            self.cluster,
                            self.seen,
                            self.source.prefix
                        );
                        self.next = Next::FullRead;
                        continue;
                    }
                    Err(e) => {
                        self.lost(&e);
                        continue;
                    }
                },
                Next::Watch => {}
            }
            let mut watch = match self.source.client.watch(&self.source.prefix, self.seen + 1) {
                Ok(w) => w,
                Err(e) => {
                    self.lost(&e);
                    self.next = Next::Check;
                    continue;
                }
            };
            self.connected();
            self.next = Next::Check;
            while !stop.load(Ordering::Acquire) {
                match watch.next_event() {
                    Ok(WatchEvent::Changes { revision, changes }) => {
                        self.changes(&changes);
                        self.seen = self.seen.max(revision);
                        self.status().seen = self.seen;
                    }
                    Ok(WatchEvent::Compacted { revision }) => {
                        log::warn!(
                            "etcd compacted past revision {} (to {revision}): reading {} in full",
                            self.seen + 1,
                            self.source.prefix
                        );
                        self.next = Next::FullRead;
                        break;
                    }
                    Ok(WatchEvent::Canceled(reason)) => {
                        log::warn!("etcd ended the watch ({reason}): reading in full");
                        self.next = Next::FullRead;
                        break;
                    }
                    // Quiet for a minute: watch again from the same revision.
                    Err(Error::Quiet) => {
                        self.next = Next::Watch;
                        break;
                    }
                    Err(e) => {
                        self.lost(&e);
                        break;
                    }
                }
            }
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// etcd answered: forget the back-off, say so once.
    fn connected(&mut self) {
        self.backoff = BACKOFF_FIRST;
        let endpoint = self.source.client.current_endpoint().to_string();
        let mut s = self.status();
        if !s.connected {
            log::info!("etcd at {endpoint} answers again");
        }
        s.connected = true;
        s.endpoint = endpoint;
    }

    /// etcd failed: say so once per outage, then wait before trying again.
    fn lost(&mut self, e: &Error) {
        {
            let mut s = self.status();
            if s.connected {
                log::warn!(
                    "etcd: {e}; serving configuration revision {} until it answers again",
                    s.revision
                );
                s.reconnects += 1;
            }
            s.connected = false;
        }
        let jitter = self.rng.below(self.backoff.as_millis() as usize / 2 + 1) as u64;
        std::thread::sleep(self.backoff / 2 + Duration::from_millis(jitter));
        self.backoff = (self.backoff * 2).min(BACKOFF_MOST);
    }

    fn full_read(&mut self, range: &shardgate_etcd::Range) {
        let (revision, kvs) = (range.revision, &range.kvs[..]);
        self.connected();
        self.status().full_reads += 1;
        self.next = Next::Watch;
        self.seen = revision;
        self.cluster = range.cluster.clone();
        self.status().seen = revision;
        let registered = registered_in(&self.source.prefix, kvs);
        let mut applied = false;
        match kvs.iter().find(|kv| kv.key == self.key) {
            Some(kv) if kv.value != self.tried => {
                applied = self.apply_text(&kv.value, kv.mod_revision, &registered);
            }
            Some(kv) => {
                if kv.value == self.serving.0.as_bytes() {
                    // Started from the state directory with what etcd still has: caught up.
                    self.serving.1 = kv.mod_revision;
                    let mut s = self.status();
                    if s.from_state.take().is_some() {
                        log::info!("etcd holds the configuration being served: caught up");
                    }
                    s.revision = kv.mod_revision;
                }
            }
            None => self.deleted(),
        }
        if !applied && registered != self.registered {
            self.registered = registered;
            self.apply_registered();
        }
    }

    fn changes(&mut self, changes: &[shardgate_etcd::Change]) {
        let mut registered = self.registered.clone();
        let mut text: Option<&Kv> = None;
        let mut deleted = false;
        for c in changes {
            if c.kv.key == self.key {
                text = (!c.deleted).then_some(&c.kv);
                deleted = c.deleted;
            } else if let Some((group, addr)) = registration(&self.source.prefix, &c.kv.key) {
                let set = registered.entry(group).or_default();
                if c.deleted {
                    set.remove(&addr);
                } else {
                    set.insert(addr);
                }
            }
        }
        registered.retain(|_, set| !set.is_empty());
        let mut applied = false;
        if let Some(kv) = text {
            applied = self.apply_text(&kv.value, kv.mod_revision, &registered);
        } else if deleted {
            self.deleted();
        }
        if !applied && registered != self.registered {
            self.registered = registered;
            self.apply_registered();
        }
    }

    /// Validates and applies a new document; whether it now serves (with `registered`).
    fn apply_text(&mut self, value: &[u8], revision: i64, registered: &Registered) -> bool {
        self.tried = value.to_vec();
        let source = format!("etcd {} at revision {revision}", self.key);
        let Ok(text) = std::str::from_utf8(value) else {
            self.handle.refuse(&format!("{source}: not UTF-8 text"));
            return false;
        };
        let merged = registered.clone();
        let finish = move |c: &mut Config| {
            merge_registered(c, &merged);
        };
        match self.handle.reload_text(text, &source, &finish) {
            Ok(_) => {
                self.registered = registered.clone();
                self.serving = (self.handle.effective_text().unwrap_or_default(), revision);
                {
                    let mut s = self.status();
                    s.revision = revision;
                    s.from_state = None;
                }
                self.write_state();
                true
            }
            Err(_) => false,
        }
    }

    /// The configuration key is gone: refused like an invalid document.
    fn deleted(&mut self) {
        if self.tried.is_empty() {
            return;
        }
        self.tried.clear();
        self.handle.refuse(&format!(
            "{} was deleted from etcd: the configuration at revision {} keeps serving",
            self.key, self.serving.1
        ));
    }

    /// Applies the registered endpoints to the configuration being served.
    fn apply_registered(&mut self) {
        let registered = &self.registered;
        let outcome = self
            .handle
            .modify("etcd registrations", |c| merge_registered(c, registered));
        // A refusal is logged and counted by the reload; the next change tries again.
        if let Some(Ok(version)) = outcome {
            log::info!(
                "endpoints registered in etcd now serve (configuration version {version}): {}",
                describe(registered)
            );
            self.write_state();
        }
    }

    fn write_state(&mut self) {
        let Some(dir) = self.source.state_dir.clone() else {
            return;
        };
        let document = state_document(&self.serving.0, self.serving.1, &self.registered);
        let result = write_state(&dir, &document);
        let mut s = self.status();
        match result {
            Ok(()) => {
                s.state_writes += 1;
                s.last_state_error = None;
            }
            Err(e) => {
                s.state_write_failures += 1;
                let message = format!("{}: {e}", dir.join(STATE_FILE).display());
                if s.last_state_error.as_deref() != Some(&message) {
                    log::error!(
                        "cannot save the last good configuration (still serving it): {message}"
                    );
                }
                s.last_state_error = Some(message);
            }
        }
    }
}

/// The centre's lines of `/metrics`.
pub(crate) fn render_metrics(s: &Status, out: &mut String) {
    let lines = [
        (
            "etcd_connected",
            "gauge",
            "1 while etcd answers the watch",
            u64::from(s.connected),
        ),
        (
            "etcd_config_revision",
            "gauge",
            "etcd modification revision of the configuration serving",
            s.revision.max(0) as u64,
        ),
        (
            "etcd_config_from_state",
            "gauge",
            "1 while serving the state directory's last good configuration",
            u64::from(s.from_state.is_some()),
        ),
        (
            "etcd_full_reads_total",
            "counter",
            "full reads of the prefix (start, compaction, reconnection)",
            s.full_reads,
        ),
        (
            "etcd_reconnects_total",
            "counter",
            "times etcd stopped answering",
            s.reconnects,
        ),
        (
            "etcd_state_writes_total",
            "counter",
            "last good configurations written to the state directory",
            s.state_writes,
        ),
        (
            "etcd_state_write_failures_total",
            "counter",
            "failed writes to the state directory",
            s.state_write_failures,
        ),
    ];
    crate::metrics::plain(out, &lines);
}

fn describe(registered: &Registered) -> String {
    if registered.is_empty() {
        return "none".into();
    }
    registered
        .iter()
        .map(|(g, set)| {
            let list: Vec<String> = set.iter().map(ToString::to_string).collect();
            format!("{g}: {}", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_group_and_address() {
        let p = "/sg/";
        assert_eq!(
            registration(p, "/sg/endpoints/api/127.0.0.1:9000"),
            Some(("api".into(), "127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(registration(p, "/sg/endpoints/api/not-an-address"), None);
        assert_eq!(registration(p, "/sg/endpoints//127.0.0.1:9000"), None);
        assert_eq!(registration(p, "/sg/config"), None);
        assert_eq!(registration(p, "/other/endpoints/api/127.0.0.1:9000"), None);
    }

    #[test]
    fn the_state_file_round_trips_and_replaces_atomically() {
        let dir = std::env::temp_dir().join(format!("sg-state-{}", std::process::id()));
        let mut registered = Registered::new();
        registered
            .entry("api".into())
            .or_default()
            .insert("127.0.0.1:9000".parse().unwrap());
        write_state(&dir, &state_document("a = 1\n", 7, &registered)).unwrap();
        write_state(&dir, &state_document("a = 2\n", 9, &registered)).unwrap();
        let s = read_state(&dir).unwrap();
        assert_eq!((s.text.as_str(), s.revision), ("a = 2\n", 9));
        assert_eq!(s.registered, registered);
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != STATE_FILE)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_state(&dir).unwrap_err().contains(STATE_FILE));
    }
}
