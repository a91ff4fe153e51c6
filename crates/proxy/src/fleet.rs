//! Rate limits shared by a fleet of gateways (`scope = "fleet"`), with nothing on the request
//! path: shards admit from their local shares as for a gateway-wide limit (`rates`); what a
//! fleet adds is the gateway's **part** of each key's rate, which this module's thread derives
//! from what every gateway reports to Redis.
//!
//! Every `fleet.sync` (100 ms) the thread makes one pipelined round trip:
//! - `ZADD P:gw NOW ID` (and trims entries older than [`live_for`]), then reads the gateways
//!   alive: Redis learns who is alive from their reports;
//! - per fleet limit `L` and per key `K` hot on this gateway (its demand, requests per second,
//!   from the shards' reports): `HSET P:rl:L:K ID "DEMAND@NOW"`, a short expiry, and
//!   `ZADD P:rl:L:hot NOW K`;
//! - reads the keys hot anywhere (`ZRANGEBYSCORE P:rl:L:hot`) and the demand of each key it
//!   learned of the round before (`HGETALL`).
//!
//! Each gateway then splits each key's rate over the live gateways by max-min fair
//! water-filling of their demands (each with 5% headroom and a 2% floor), the same computation
//! on the same numbers everywhere, and keeps its own part; a key no gateway reported gets
//! `rate / N`, N the live gateways. When Redis cannot be reached, every key falls back to
//! `rate / N` with the last N known; that is logged once, shown at `/ready` (still ready) and
//! in `shardgate_fleet_redis_up`, and undone at the first round trip that works. No request
//! ever waits for Redis.

use shardgate_config::Fleet;
use shardgate_filters::global_rate::{DEFAULT_FLOOR, DEFAULT_HEADROOM, RateKey, water_fill};
use shardgate_filters::quota::Period;
use shardgate_redis::{Client, Value, cmd};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Keys reported and read per limit per round, hottest first.
const MAX_KEYS: usize = 256;

/// A gateway whose last report is older than this is no longer counted.
fn live_for(sync: Duration) -> Duration {
    (sync * 10).max(Duration::from_secs(1))
}

/// A demand older than this no longer claims a share: as long as its gateway counts as alive.
/// A gateway whose traffic for a key stops withdraws its demand at once (`HDEL`), so a short
/// window is not needed to follow traffic that moves; a long one keeps a gateway that is slow
/// to report (a busy machine) from being taken for idle, which would let the others take its
/// part too.
fn fresh_for(sync: Duration) -> Duration {
    live_for(sync)
}

/// One fleet limit's demand on this gateway, from the shards' last reports.
#[derive(Debug, Clone)]
struct Demand {
    rate: f64,
    keys: Vec<(RateKey, f64)>,
    /// When the rate coordinator last reported it: a limit a reload removed stops reporting,
    /// and is dropped after [`FORGET_AFTER`].
    at: Instant,
}

/// A limit whose demand is not reported for this long is no longer exchanged.
const FORGET_AFTER: Duration = Duration::from_secs(5);

/// This gateway's part of one fleet limit.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// For keys not in `keys`.
    pub other: f64,
    pub keys: HashMap<RateKey, f64>,
}

/// A quota's totals in Redis for some keys: (quota, window start, (key, total)).
pub(crate) type QuotaTotals = (String, u64, Vec<(RateKey, u64)>);

/// What the rate coordinator and the fleet thread share (control plane only).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    demand: HashMap<String, Demand>,
    parts: HashMap<String, Part>,
    /// Quota increments not yet added in Redis: by (quota, window start, key).
    quota_pending: HashMap<(String, u64, RateKey), (u64, Period)>,
    /// Totals Redis answered, for the shards: (quota, window start, totals).
    quota_totals: Vec<QuotaTotals>,
    status: Status,
}

/// How the exchange is doing, for `/ready` and `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub redis: String,
    pub up: bool,
    pub gateways: usize,
    pub syncs: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// The handle the rate coordinator and admin server use.
#[derive(Clone)]
pub(crate) struct FleetHandle(Arc<Mutex<Shared>>);

impl FleetHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This gateway's demand of a fleet limit over the last period (requests per second by
    /// key), and its part of the limit as last derived (`None` before the first exchange).
    pub(crate) fn exchange(
        &self,
        name: &str,
        rate: f64,
        keys: Vec<(RateKey, f64)>,
    ) -> Option<Part> {
        let mut s = self.lock();
        s.demand.insert(
            name.to_string(),
            Demand {
                rate,
                keys,
                at: Instant::now(),
            },
        );
        // Before the first exchange for this limit: an even split over the gateways known.
        let n = s.status.gateways.max(1);
        Some(s.parts.get(name).cloned().unwrap_or_else(|| Part {
            other: rate / n as f64,
            keys: HashMap::new(),
        }))
    }

    pub(crate) fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// Quota increments from a shard, to add in Redis at the next exchange.
    pub(crate) fn add_quota_counts(&self, counts: Vec<crate::rates::QuotaCounts>) {
        if counts.is_empty() {
            return;
        }
        let mut s = self.lock();
        for q in counts {
            for (key, window, n) in q.counts {
                s.quota_pending
                    .entry((q.name.clone(), window, key))
                    .or_insert((0, q.period))
                    .0 += n;
            }
        }
    }

    /// The quota totals Redis answered since the last call.
    pub(crate) fn take_quota_totals(&self) -> Vec<QuotaTotals> {
        std::mem::take(&mut self.lock().quota_totals)
    }
}

pub(crate) struct Exchanger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exchanger {
    pub(crate) fn start(fleet: &Fleet) -> Result<(Exchanger, FleetHandle), String> {
        let client = Client::new(fleet.redis.clone())?;
        let handle = FleetHandle(Arc::new(Mutex::new(Shared {
            status: Status {
                redis: fleet.redis.display(),
                up: true,
                gateways: 1,
                ..Status::default()
            },
            ..Shared::default()
        })));
        let stop = Arc::new(AtomicBool::new(false));
        let mut run = Round {
            client,
            handle: handle.clone(),
            prefix: fleet.key_prefix.clone(),
            sync: fleet.sync,
            id: gateway_id(),
            known: HashMap::new(),
            gateways: 1,
            reported: HashMap::new(),
            smoothed: HashMap::new(),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shardgate-fleet".into())
            .spawn(move || {
                let mut next = Instant::now();
                while !flag.load(Ordering::Acquire) {
                    next += run.sync;
                    run.once();
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    if Instant::now() > next + run.sync * 10 {
                        next = Instant::now();
                    }
                }
                // What the shards reported last is added before the gateway goes.
                run.once();
            })
            .map_err(|e| format!("cannot start the fleet thread: {e}"))?;
        Ok((
            Exchanger {
                stop,
                thread: Some(thread),
            },
            handle,
        ))
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Exchanger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A name for this gateway in Redis: host, pid and a random part (a restarted gateway is a new
/// one; the old entry ages out).
fn gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "gateway".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut rng =
        shardgate_common::hash::Rng::new(u64::from(std::process::id()) << 32 | u64::from(nanos));
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rng.next_u64() as u32
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Round {
    client: Client,
    handle: FleetHandle,
    prefix: String,
    sync: Duration,
    id: String,
    /// Per limit: keys hot anywhere, learned in the last round (their demand is read next).
    known: HashMap<String, Vec<String>>,
    /// Live gateways at the last exchange that worked.
    gateways: usize,
    /// Per limit: the keys whose demand this gateway wrote last round.
    reported: HashMap<String, HashSet<String>>,
    /// Per limit: the smoothed demand of each key, as last written.
    smoothed: HashMap<String, HashMap<RateKey, f64>>,
}

/// What one limit's part of the pipeline is, to read its answers.
struct Asked {
    name: String,
    rate: f64,
    ours: HashMap<String, f64>,
    /// The index of the hot-set read, then of each `HGETALL` and its key.
    hot_at: usize,
    reads: Vec<(usize, String)>,
}

impl Round {
    fn once(&mut self) {
        let (demand, quotas): (Vec<(String, Demand)>, Vec<_>) = {
            let mut s = self.handle.lock();
            s.demand.retain(|_, d| d.at.elapsed() < FORGET_AFTER);
            (
                s.demand
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                s.quota_pending.drain().collect(),
            )
        };
        // Even without demand yet, the gateway says it is alive: the others count it before
        // its traffic starts.
        let now = now_ms();
        let live = live_for(self.sync).as_millis() as u64;
        let since = now.saturating_sub(live).to_string();
        let stamp = now.to_string();
        let gw = format!("{}gw", self.prefix);
        let mut commands = vec![
            cmd(&[b"ZADD", gw.as_bytes(), stamp.as_bytes(), self.id.as_bytes()]),
            cmd(&[
                b"ZREMRANGEBYSCORE",
                gw.as_bytes(),
                b"-inf",
                format!("({since}").as_bytes(),
            ]),
            cmd(&[b"ZRANGEBYSCORE", gw.as_bytes(), since.as_bytes(), b"+inf"]),
            cmd(&[
                b"PEXPIRE",
                gw.as_bytes(),
                (live * 10).to_string().as_bytes(),
            ]),
        ];
        let expire = (live * 2).to_string();
        let mut asked = Vec::new();
        for (name, d) in &demand {
            let base = format!("{}rl:{name}:", self.prefix);
            let hot = format!("{base}hot");
            let mut ours = HashMap::new();
            // Demand is smoothed over rounds (half the last measure, half the history): each
            // gateway splits with its own demand as of now and the others' as of their last
            // round, and the parts add up to the rate only as far as those agree.
            let previous = self.smoothed.remove(name).unwrap_or_default();
            let mut keys: Vec<(RateKey, f64)> = d
                .keys
                .iter()
                .map(|&(k, r)| (k, previous.get(&k).map_or(r, |p| (p + r) / 2.0)))
                .collect();
            keys.sort_by(|a, b| b.1.total_cmp(&a.1));
            keys.truncate(MAX_KEYS);
            self.smoothed
                .insert(name.clone(), keys.iter().copied().collect());
            for (key, rate) in &keys {
                let k = format!("{:016x}", key.0);
                let field = format!("{base}{k}");
                let value = format!("{rate:.3}@{now}");
                commands.push(cmd(&[
                    b"HSET",
                    field.as_bytes(),
                    self.id.as_bytes(),
                    value.as_bytes(),
                ]));
                commands.push(cmd(&[b"PEXPIRE", field.as_bytes(), expire.as_bytes()]));
                commands.push(cmd(&[
                    b"ZADD",
                    hot.as_bytes(),
                    stamp.as_bytes(),
                    k.as_bytes(),
                ]));
                ours.insert(k, *rate);
            }
            // Keys whose traffic stopped here: the demand is withdrawn, not left to age.
            let before = self
                .reported
                .insert(name.clone(), ours.keys().cloned().collect());
            for k in before.iter().flatten().filter(|k| !ours.contains_key(*k)) {
                let field = format!("{base}{k}");
                commands.push(cmd(&[b"HDEL", field.as_bytes(), self.id.as_bytes()]));
            }
            commands.push(cmd(&[
                b"ZREMRANGEBYSCORE",
                hot.as_bytes(),
                b"-inf",
                format!("({since}").as_bytes(),
            ]));
            commands.push(cmd(&[b"PEXPIRE", hot.as_bytes(), expire.as_bytes()]));
            let hot_at = commands.len();
            commands.push(cmd(&[
                b"ZRANGEBYSCORE",
                hot.as_bytes(),
                since.as_bytes(),
                b"+inf",
            ]));
            let mut wanted: Vec<String> = ours.keys().cloned().collect();
            let seen: HashSet<String> = wanted.iter().cloned().collect();
            for k in self.known.get(name).into_iter().flatten() {
                if wanted.len() >= MAX_KEYS {
                    break;
                }
                if !seen.contains(k) {
                    wanted.push(k.clone());
                }
            }
            let mut reads = Vec::new();
            for k in wanted {
                reads.push((commands.len(), k.clone()));
                commands.push(cmd(&[b"HGETALL", format!("{base}{k}").as_bytes()]));
            }
            asked.push(Asked {
                name: name.clone(),
                rate: d.rate,
                ours,
                hot_at,
                reads,
            });
        }
        // Quotas: each increment added, the total read back in the same answer.
        let quota_at = commands.len();
        for ((name, window, key), (n, period)) in &quotas {
            let k = format!("{}q:{name}:{window}:{:016x}", self.prefix, key.0);
            let (_, end) = period.window(*window);
            let keep = (end.saturating_sub(now / 1000) + 86_400).to_string();
            commands.push(cmd(&[b"INCRBY", k.as_bytes(), n.to_string().as_bytes()]));
            commands.push(cmd(&[b"EXPIRE", k.as_bytes(), keep.as_bytes()]));
        }
        let result = self.client.pipeline(&commands);
        match &result {
            Ok(answers) if !answers.iter().any(|a| matches!(a, Value::Error(_))) => {
                let mut totals: HashMap<(String, u64), Vec<(RateKey, u64)>> = HashMap::new();
                for (i, ((name, window, key), _)) in quotas.iter().enumerate() {
                    if let Some(total) = answers[quota_at + 2 * i].as_int() {
                        totals
                            .entry((name.clone(), *window))
                            .or_default()
                            .push((*key, total.max(0) as u64));
                    }
                }
                let mut s = self.handle.lock();
                s.quota_totals
                    .extend(totals.into_iter().map(|((n, w), t)| (n, w, t)));
            }
            _ => {
                // Not added: kept for the next exchange.
                let mut s = self.handle.lock();
                for (k, (n, period)) in quotas {
                    s.quota_pending.entry(k).or_insert((0, period)).0 += n;
                }
            }
        }
        match result {
            Ok(answers) => {
                let fresh = fresh_for(self.sync).as_millis() as u64;
                self.derive(&answers, &asked, now, fresh)
            }
            Err(e) => self.failed(&e.to_string(), &asked),
        }
    }

    fn derive(&mut self, answers: &[Value], asked: &[Asked], now: u64, fresh: u64) {
        if let Some(e) = answers.iter().find_map(|a| match a {
            Value::Error(e) => Some(e.clone()),
            _ => None,
        }) {
            return self.failed(&format!("Redis refused a command: {e}"), asked);
        }
        let alive = strings(&answers[2]);
        let mut index: HashMap<&str, usize> = alive
            .iter()
            .enumerate()
            .map(|(i, g)| (g.as_str(), i))
            .collect();
        let mine = match index.get(self.id.as_str()) {
            Some(&i) => i,
            None => {
                index.insert(&self.id, alive.len());
                alive.len()
            }
        };
        let n = index.len().max(1);
        self.gateways = n;
        let mut parts = HashMap::new();
        for a in asked {
            let hot = strings(&answers[a.hot_at]);
            self.known.insert(a.name.clone(), hot);
            let floor = DEFAULT_FLOOR.clamp(0.0, 1.0 / n as f64) * a.rate;
            let headroom = 1.0 + DEFAULT_HEADROOM;
            let mut keys = HashMap::new();
            let mut needs = vec![floor; n];
            let mut shares = vec![0.0; n];
            for (at, k) in &a.reads {
                needs.fill(floor);
                let fields = answers[*at].as_array();
                for pair in fields.chunks(2) {
                    let (Some(g), Some(v)) =
                        (pair[0].as_bytes(), pair.get(1).and_then(Value::as_bytes))
                    else {
                        continue;
                    };
                    let Some(&i) = index.get(String::from_utf8_lossy(g).as_ref()) else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(v);
                    let Some((rate, at_ms)) = text.split_once('@') else {
                        continue;
                    };
                    let (Ok(rate), Ok(at_ms)) = (rate.parse::<f64>(), at_ms.parse::<u64>()) else {
                        continue;
                    };
                    if now.saturating_sub(at_ms) <= fresh && i != mine {
                        needs[i] = (rate * headroom).max(floor);
                    }
                }
                // Our own demand as measured now, not as Redis had it.
                needs[mine] = (a.ours.get(k).copied().unwrap_or(0.0) * headroom).max(floor);
                water_fill(a.rate, &needs, &mut shares);
                if let Ok(key) = u64::from_str_radix(k, 16) {
                    keys.insert(RateKey(key), shares[mine]);
                }
            }
            parts.insert(
                a.name.clone(),
                Part {
                    other: a.rate / n as f64,
                    keys,
                },
            );
        }
        let mut s = self.handle.lock();
        if !s.status.up {
            log::info!(
                "fleet limits: Redis at {} answers again; {n} gateway(s) share them",
                s.status.redis
            );
        }
        s.status.up = true;
        s.status.gateways = n;
        s.status.syncs += 1;
        s.status.last_error = None;
        s.parts = parts;
    }

    fn failed(&mut self, why: &str, asked: &[Asked]) {
        // What was written may not have arrived: write it all again next time.
        self.reported.clear();
        let n = self.gateways.max(1);
        let mut s = self.handle.lock();
        if s.status.up {
            log::warn!(
                "fleet limits: Redis at {} is unreachable ({why}); each key falls back to its rate / {n} until it answers",
                s.status.redis
            );
        }
        s.status.up = false;
        s.status.failures += 1;
        s.status.last_error = Some(why.to_string());
        s.parts = asked
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    Part {
                        other: a.rate / n as f64,
                        keys: HashMap::new(),
                    },
                )
            })
            .collect();
    }
}

/// The strings of an array answer (`ZRANGEBYSCORE`).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .iter()
        .filter_map(|v| {
            v.as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        })
        .collect()
}

/// The fleet's lines of `/metrics`.
pub(crate) fn render_metrics(s: &Status, out: &mut String) {
    let lines = [
        (
            "fleet_redis_up",
            "gauge",
            "1 while the fleet exchange with Redis works",
            u64::from(s.up),
        ),
        (
            "fleet_gateways",
            "gauge",
            "gateways sharing fleet limits, as Redis last said",
            s.gateways as u64,
        ),
        (
            "fleet_syncs_total",
            "counter",
            "exchanges with Redis that worked",
            s.syncs,
        ),
        (
            "fleet_sync_failures_total",
            "counter",
            "exchanges with Redis that failed (limits fell back to rate / gateways)",
            s.failures,
        ),
    ];
    crate::metrics::plain(out, &lines);
}
