//! Active health checks: one prober thread per gateway (not per shard)
//! probes every endpoint of each group that configures checks, runs the
//! rise/fall state machine (`shardgate_upstream::health`), and sends each
//! change to every shard through its control queue, off the request path.
//! A shard then balances only over endpoints that are up (if none is, over
//! all of them: serving beats refusing).

use crate::control::{Command, GatewayHandle};
use shardgate_upstream::health::{GroupHealth, ProbeResult, ProbeSpec};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest sleep between two looks at the schedule.
const MAX_NAP: Duration = Duration::from_millis(100);

pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    pub(crate) fn start(handle: GatewayHandle) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shardgate-health".into())
            .spawn(move || run(&handle, &flag))
            .ok();
        Prober { stop, thread }
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Checked {
    name: String,
    endpoints: Vec<SocketAddr>,
    health: GroupHealth,
    /// The group's TLS, as configured and as probes speak it (a client
    /// configuration and each endpoint's verified name).
    tls: Option<(shardgate_config::UpstreamTls, ProbeTls)>,
    /// The group speaks HTTP/2: so do its probes.
    http2: bool,
}

type ProbeTls = (
    Arc<rustls::ClientConfig>,
    Vec<rustls_pki_types::ServerName<'static>>,
);

/// How probes to `u` speak TLS, if they do; `None` inside when the client
/// configuration cannot be built (probes then fail, logged once).
fn probe_tls(u: &shardgate_config::Upstream) -> Option<(shardgate_config::UpstreamTls, ProbeTls)> {
    let t = u.tls.as_ref()?;
    let names = crate::snapshot::tls_names(u)?;
    match shardgate_tls::client_config(&t.ca, t.identity.as_ref(), crate::snapshot::alpn(u)) {
        Ok(config) => Some((t.clone(), (config, names))),
        Err(e) => {
            log::error!("upstream {:?}: health probes cannot speak TLS: {e}", u.name);
            None
        }
    }
}

fn run(handle: &GatewayHandle, stop: &AtomicBool) {
    let mut version = 0;
    let mut groups: Vec<Checked> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let (config, info) = handle.config();
        if info.version != version {
            // New configuration: keep the state of groups whose endpoints
            // and checks did not change, start the others afresh, and tell
            // the shards (their new snapshots start with every endpoint up).
            let now = Instant::now();
            let mut next = Vec::new();
            for u in &config.upstreams {
                let Some(spec) = &u.health else { continue };
                let kept = groups.iter().position(|g| {
                    g.name == u.name
                        && g.endpoints == u.endpoints
                        && g.health.spec() == spec
                        && g.tls.as_ref().map(|t| &t.0) == u.tls.as_ref()
                        && g.http2 == u.protocol.is_h2()
                });
                next.push(match kept {
                    Some(i) => groups.swap_remove(i),
                    None => Checked {
                        name: u.name.clone(),
                        endpoints: u.endpoints.clone(),
                        health: GroupHealth::new(spec.clone(), u.endpoints.len(), now),
                        tls: probe_tls(u),
                        http2: u.protocol.is_h2(),
                    },
                });
            }
            groups = next;
            version = info.version;
            for g in &groups {
                publish(handle, g);
            }
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for (gi, g) in groups.iter_mut().enumerate() {
            while let Some(i) = g.health.due(now) {
                due.push((gi, i));
            }
        }
        if !due.is_empty() {
            let results: Vec<ProbeResult> = std::thread::scope(|s| {
                let probes: Vec<_> = due
                    .iter()
                    .map(|&(gi, i)| {
                        let g = &groups[gi];
                        let (addr, spec) = (g.endpoints[i], g.health.spec().clone());
                        let tls = g
                            .tls
                            .as_ref()
                            .map(|(_, (c, names))| (c.clone(), names[i].clone()));
                        let http2 = g.http2;
                        s.spawn(move || match http2 {
                            true => probe_h2(addr, &spec, tls),
                            false => probe(addr, &spec, tls),
                        })
                    })
                    .collect();
                probes
                    .into_iter()
                    .map(|p| p.join().unwrap_or(ProbeResult::Malformed))
                    .collect()
            });
            let mut changed = vec![false; groups.len()];
            for (&(gi, i), result) in due.iter().zip(results) {
                let g = &mut groups[gi];
                if let Some(change) = g.health.record(i, result) {
                    log::warn!("upstream {:?}: {} {change}", g.name, g.endpoints[i]);
                    changed[gi] = true;
                }
            }
            for (g, _) in groups.iter().zip(&changed).filter(|(_, c)| **c) {
                publish(handle, g);
            }
        }
        let next = groups.iter().filter_map(|g| g.health.next_due()).min();
        let nap = next.map_or(MAX_NAP, |t| {
            t.saturating_duration_since(Instant::now()).min(MAX_NAP)
        });
        std::thread::sleep(nap.max(Duration::from_millis(5)));
    }
}

fn publish(handle: &GatewayHandle, g: &Checked) {
    let snap = g.health.snapshot();
    let up: Vec<bool> = (0..g.endpoints.len()).map(|i| snap.is_up(i)).collect();
    for c in &handle.0.controls {
        let _ = c.send(Command::Health {
            group: g.name.clone(),
            endpoints: g.endpoints.clone(),
            up: up.clone(),
        });
    }
}

/// One probe: `GET path` on a new connection (over TLS, verified, when the
/// group speaks it), judged by the status line.
fn probe(
    addr: SocketAddr,
    spec: &ProbeSpec,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
) -> ProbeResult {
    let deadline = Instant::now() + spec.timeout;
    let Ok(s) = TcpStream::connect_timeout(&addr, spec.timeout) else {
        return ProbeResult::ConnectFailed;
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    match tls {
        None => ask(s, addr, spec),
        Some((config, name)) => match rustls::ClientConnection::new(config, name) {
            Ok(conn) => ask(rustls::StreamOwned::new(conn, s), addr, spec),
            Err(_) => ProbeResult::ConnectFailed,
        },
    }
}

/// [`probe`] for a group that speaks HTTP/2: the same request on a new
/// HTTP/2 connection (h2c, or TLS with ALPN `h2`), run on a small runtime
/// of the probe's own thread.
fn probe_h2(
    addr: SocketAddr,
    spec: &ProbeSpec,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
) -> ProbeResult {
    let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    else {
        return ProbeResult::ConnectFailed;
    };
    rt.block_on(async {
        let ask = async {
            let tcp = monoio::net::TcpStream::connect_addr(addr)
                .await
                .map_err(|_| ProbeResult::ConnectFailed)?;
            let tls = tls.as_ref().map(|(c, n)| (c, n));
            crate::h2::client::probe(tcp, tls, &addr.to_string(), &spec.path)
                .await
                .map_err(|_| ProbeResult::Malformed)
        };
        match monoio::time::timeout(spec.timeout, ask).await {
            Ok(Ok(status)) => ProbeResult::Status(status),
            Ok(Err(r)) => r,
            Err(_) => ProbeResult::Timeout,
        }
    })
}

/// The probe's request and the status of its answer.
fn ask(mut s: impl Read + Write, addr: SocketAddr, spec: &ProbeSpec) -> ProbeResult {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: shardgate-health\r\nConnection: close\r\n\r\n",
        spec.path
    );
    if s.write_all(req.as_bytes()).is_err() {
        return ProbeResult::ConnectFailed;
    }
    let mut buf = [0u8; 1024];
    let mut got = 0;
    loop {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if buf[..got].contains(&b'\n') || got == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return ProbeResult::Timeout;
            }
            Err(_) => return ProbeResult::ConnectFailed,
        }
    }
    let line = &buf[..got];
    match (line.starts_with(b"HTTP/1."), line.get(9..12)) {
        (true, Some(code)) => std::str::from_utf8(code)
            .ok()
            .and_then(|c| c.parse().ok())
            .map_or(ProbeResult::Malformed, ProbeResult::Status),
        _ => ProbeResult::Malformed,
    }
}
