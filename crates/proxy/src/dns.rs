//! Endpoints given as host names: resolved again every `dns_refresh` on a
//! thread of their own (never on the request path). When a host's
//! addresses change, the gateway reloads its own configuration with the new
//! endpoint set, so added addresses join the group and removed ones leave it
//! the way any reload does: in-flight requests finish, pools of addresses
//! that stay are kept. A failed resolution keeps the last good set and is
//! retried sooner, with back-off (`shardgate_upstream::dns`). The system
//! resolver gives no TTLs, so the configured interval is the refresh period.

use crate::control::GatewayHandle;
use shardgate_upstream::dns::{DnsConfig, DnsOutcome, DnsState, Resolution};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Resolves `(host, port)` to addresses. The default is the system resolver;
/// tests give their own.
pub type Resolver = Arc<dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The system resolver (`getaddrinfo`).
pub fn system_resolver() -> Resolver {
    Arc::new(|host: &str, port: u16| Ok((host, port).to_socket_addrs()?.collect()))
}

const NAP: Duration = Duration::from_millis(100);

pub(crate) struct Refresher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Refresher {
    pub(crate) fn start(handle: GatewayHandle, resolver: Resolver) -> Refresher {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shardgate-dns".into())
            .spawn(move || run(&handle, &resolver, &flag))
            .ok();
        Refresher { stop, thread }
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Tracked {
    state: DnsState,
    next: Instant,
}

fn run(handle: &GatewayHandle, resolver: &Resolver, stop: &AtomicBool) {
    // Keyed by (group, source text): survives reloads that keep the source.
    let mut tracked: HashMap<(String, String), Tracked> = HashMap::new();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(NAP);
        let (config, _) = handle.config();
        let now = Instant::now();
        let mut updates = Vec::new();
        for u in config.upstreams.iter() {
            let cfg = DnsConfig {
                interval: u.dns_refresh,
                min_refresh: u.dns_refresh.min(DnsConfig::default().min_refresh),
                ..DnsConfig::default()
            };
            for src in u.sources.iter() {
                let Some((host, port)) = src.host.clone() else {
                    continue;
                };
                let t = tracked
                    .entry((u.name.clone(), src.text.clone()))
                    .or_insert_with(|| Tracked {
                        state: DnsState::new(),
                        next: now,
                    });
                if now < t.next {
                    continue;
                }
                let result = match resolver(&host, port) {
                    Ok(mut addrs) if !addrs.is_empty() => {
                        addrs.sort();
                        addrs.dedup();
                        Resolution::Resolved {
                            addrs,
                            ttl: u.dns_refresh,
                        }
                    }
                    _ => Resolution::Failed,
                };
                let update = t.state.apply(&cfg, result, now);
                t.next = update.next_resolve;
                match update.outcome {
                    DnsOutcome::KeptLastGood { failures }
                    | DnsOutcome::NoAddresses { failures } => {
                        log::warn!(
                            "upstream {:?}: cannot resolve {} ({failures} in a row); keeping its last addresses",
                            u.name,
                            src.text
                        );
                    }
                    _ => {
                        let addrs = t.state.addrs().to_vec();
                        if !addrs.is_empty() && addrs != src.addrs {
                            log::info!(
                                "upstream {:?}: {} now resolves to {addrs:?}",
                                u.name,
                                src.text
                            );
                            updates.push((u.name.clone(), src.text.clone(), addrs));
                        }
                    }
                }
            }
        }
        if !updates.is_empty() {
            // Applied to the configuration serving at that moment, not to the copy read
            // before resolving: a reload (file, etcd) in between is kept.
            let _ = handle.modify("dns refresh", |c| apply(c, &updates));
        }
    }
}

/// Sets the addresses of each `(group, source text)` in `updates`; whether anything changed.
fn apply(
    config: &mut shardgate_config::Config,
    updates: &[(String, String, Vec<SocketAddr>)],
) -> bool {
    let mut changed = false;
    for u in config.upstreams.iter_mut() {
        let mut group_changed = false;
        for src in u.sources.iter_mut() {
            let update = updates
                .iter()
                .find(|(g, text, _)| *g == u.name && *text == src.text);
            if let Some((_, _, addrs)) = update
                && *addrs != src.addrs
            {
                src.addrs = addrs.clone();
                group_changed = true;
            }
        }
        if group_changed {
            u.flatten();
            changed = true;
        }
    }
    changed
}
