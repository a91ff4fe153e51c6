//! The admin server: a plain blocking HTTP/1.1 server, loopback by default,
//! far from the shards' request paths. It answers from the control plane
//! (`GatewayHandle`): metrics are collected from the shards when scraped,
//! never read from their hot state.
//!
//! `GET /` (the live dashboard, see `dashboard`), `/dashboard.json`,
//! `/healthz`, `/ready`, `/config`, `/routes`, `/upstreams`, `/metrics`;
//! `POST /reload`.
//!
//! Each connection has a thread of its own (up to [`MAX_CONNECTIONS`]; one
//! more is answered 503) and [`REQUEST_DEADLINE`] to send its whole
//! request, so a client that connects and stalls cannot keep `/healthz` from
//! the others. A request must name the server in `Host` (loopback names, its
//! own address, or `admin.hosts`), which defeats DNS rebinding from a
//! browser, and carry `admin.token` when one is set.

use crate::control::GatewayHandle;
use shardgate_config::PathMatch;
use shardgate_http::{Limits, empty_headers, parse_request};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Connections served at once; one more is answered 503 and closed.
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its whole request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) struct AdminServer {
    stop: Arc<AtomicBool>,
    /// A second handle on the listening socket, to wake the blocked accept.
    listener: Option<TcpListener>,
    thread: Option<JoinHandle<()>>,
    history: Arc<crate::dashboard::History>,
}

impl AdminServer {
    pub(crate) fn start(listener: TcpListener, handle: GatewayHandle) -> AdminServer {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = listener.local_addr().ok();
        let waker = listener.try_clone().ok();
        let flag = stop.clone();
        let history = crate::dashboard::History::start(handle.clone());
        let samples = history.clone();
        let thread = std::thread::Builder::new()
            .name("shardgate-admin".into())
            .spawn(move || {
                let busy = Arc::new(AtomicUsize::new(0));
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(conn) => dispatch(conn, &handle, &samples, &busy),
                        // EMFILE and friends: do not spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .ok();
        if let Some(a) = addr {
            log::info!("admin server on http://{a}/ (dashboard at /, metrics at /metrics)");
        }
        AdminServer {
            stop,
            listener: waker,
            thread,
            history,
        }
    }

    pub(crate) fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        // Shutting the listening socket down wakes the blocked accept (a
        // connect could reach another process sharing the port).
        if let Some(l) = &self.listener {
            let _ = socket2::SockRef::from(l).shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.history.stop();
    }
}

/// Serves `conn` on a thread of its own, or answers 503 when
/// [`MAX_CONNECTIONS`] are being served.
fn dispatch(
    mut conn: TcpStream,
    handle: &GatewayHandle,
    history: &Arc<crate::dashboard::History>,
    busy: &Arc<AtomicUsize>,
) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        busy.fetch_sub(1, Ordering::AcqRel);
        let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
        respond(&mut conn, 503, "text/plain", "admin server busy\n");
        return;
    }
    let (handle, history, count) = (handle.clone(), history.clone(), busy.clone());
    let spawned = std::thread::Builder::new()
        .name("shardgate-admin-conn".into())
        .spawn(move || {
            serve(conn, &handle, &history);
            count.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the admin server needs of a request head.
struct AdminRequest {
    method: String,
    path: String,
    host: Vec<u8>,
    authorization: Option<Vec<u8>>,
}

fn serve(mut conn: TcpStream, handle: &GatewayHandle, history: &crate::dashboard::History) {
    let Some(req) = read_request(&mut conn) else {
        return;
    };
    let (config, _) = handle.config();
    let local = conn.local_addr().ok();
    let (status, content_type, body) = match config.admin.as_ref() {
        Some(admin) if !host_allowed(&req.host, admin, local) => (
            403,
            "text/plain",
            "Host is not this admin server (add it to admin.hosts)\n".to_string(),
        ),
        Some(admin) if !authorized(&req, admin) => {
            respond_with(
                &mut conn,
                401,
                "text/plain",
                "WWW-Authenticate: Bearer realm=\"shardgate-admin\"\r\n",
                "a bearer token is required\n",
            );
            return;
        }
        _ => {
            let path = req.path.split('?').next().unwrap_or("");
            route(&req.method, path, handle, history)
        }
    };
    respond(&mut conn, status, content_type, &body);
}

/// Reads a request head within [`REQUEST_DEADLINE`]; `None` (after a 400
/// when it was malformed) when there is none to answer.
fn read_request(conn: &mut TcpStream) -> Option<AdminRequest> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = empty_headers();
        match parse_request(&buf, &mut headers, &Limits::default()) {
            Ok(Some(req)) => {
                let field = |name: &str| {
                    req.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value.to_vec())
                };
                return Some(AdminRequest {
                    method: req.method.to_string(),
                    path: String::from_utf8_lossy(req.path).into_owned(),
                    host: req.host.to_vec(),
                    authorization: field("authorization"),
                });
            }
            Ok(None) => {}
            Err(e) => {
                respond(conn, 400, "text/plain", &format!("{e}\n"));
                return None;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            respond(conn, 408, "text/plain", "request head too slow\n");
            return None;
        }
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return None,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                respond(conn, 408, "text/plain", "request head too slow\n");
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// Whether `host` (a `Host` value, port included or not) names this
/// server: `localhost`, a loopback address, the address it was reached on,
/// or one of `admin.hosts`. An absent `Host` (HTTP/1.0) is no browser's.
fn host_allowed(
    host: &[u8],
    admin: &shardgate_config::Admin,
    local: Option<std::net::SocketAddr>,
) -> bool {
    if host.is_empty() {
        return true;
    }
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h),
    };
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<std::net::IpAddr>()
        && (ip.is_loopback() || local.is_some_and(|l| l.ip() == ip))
    {
        return true;
    }
    admin
        .hosts
        .iter()
        .any(|h| h.trim_start_matches('[').trim_end_matches(']') == name)
}

/// Whether the request may go on: no token is set, it is a probe
/// (`GET /healthz`, `GET /ready`) or the dashboard's page (which holds no
/// data; it sends the token from the URL's `#token=` to
/// `/dashboard.json`), or it carries the token.
fn authorized(req: &AdminRequest, admin: &shardgate_config::Admin) -> bool {
    let Some(token) = &admin.token else {
        return true;
    };
    let path = req.path.split('?').next().unwrap_or("");
    if req.method == "GET" && matches!(path, "/healthz" | "/ready" | "/") {
        return true;
    }
    let presented = req
        .authorization
        .as_deref()
        .and_then(|v| {
            let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| rest.trim_ascii())
        })
        .unwrap_or_default();
    constant_time_eq(presented, token.as_bytes())
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in b.iter().enumerate() {
        diff |= usize::from(x ^ a.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn route(
    method: &str,
    path: &str,
    handle: &GatewayHandle,
    history: &crate::dashboard::History,
) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    match (method, path) {
        ("GET", "/") => (
            200,
            "text/html; charset=utf-8",
            crate::dashboard::PAGE.to_string(),
        ),
        ("GET", "/dashboard.json") => (200, JSON, crate::dashboard::json(handle, history)),
        ("GET", "/healthz") => (200, "text/plain", "ok\n".into()),
        ("GET", "/ready") => ready(handle),
        ("GET", "/config") => (200, JSON, config_json(handle)),
        ("GET", "/routes") => (200, JSON, routes_json(handle)),
        ("GET", "/upstreams") => (200, JSON, upstreams_json(handle)),
        ("GET", "/metrics") => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            handle.metrics_text(),
        ),
        ("POST", "/reload") => match handle.reload_from_file() {
            Ok(v) => (200, JSON, format!("{{\"version\":{v}}}\n")),
            Err(e) => (
                400,
                JSON,
                format!("{{\"error\":{}}}\n", json_str(&e.to_string())),
            ),
        },
        (
            _,
            "/" | "/dashboard.json" | "/healthz" | "/ready" | "/config" | "/routes" | "/upstreams"
            | "/metrics" | "/reload",
        ) => (405, "text/plain", "method not allowed\n".into()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// Ready when every shard answers, serves the current configuration, and
/// is not draining.
fn ready(handle: &GatewayHandle) -> (u16, &'static str, String) {
    let (_, info) = handle.config();
    let shards = handle.collect();
    let expected = handle.0.controls.len();
    let problem = if shards.len() != expected {
        Some(format!("{} of {expected} shards answered", shards.len()))
    } else if let Some(s) = shards.iter().find(|s| s.draining) {
        Some(format!("shard {} is draining", s.shard))
    } else {
        shards
            .iter()
            .find(|s| s.config_version != info.version)
            .map(|s| {
                format!(
                    "shard {} serves version {} of {}",
                    s.shard, s.config_version, info.version
                )
            })
    };
    // Serving the state directory's configuration is still ready, and says so.
    let from_state = handle.0.etcd.as_ref().and_then(|s| {
        let s = s.lock().unwrap_or_else(|p| p.into_inner());
        s.from_state.as_ref().map(|why| {
            format!(
                "serving the last good configuration (etcd revision {}) from the state directory: {}\n",
                s.revision,
                why.lines().next().unwrap_or_default()
            )
        })
    });
    // So is a fleet whose Redis is down: its limits fall back to rate / gateways.
    let fleet = handle
        .0
        .fleet
        .as_ref()
        .map(|f| f.status())
        .filter(|s| !s.up)
        .map(|s| {
            format!(
                "fleet limits fall back to rate / {} gateway(s): Redis at {} is unreachable ({})\n",
                s.gateways,
                s.redis,
                s.last_error.unwrap_or_default()
            )
        });
    match problem {
        None => (
            200,
            "text/plain",
            format!(
                "ready: {} shards on configuration version {}\n{}{}",
                shards.len(),
                info.version,
                from_state.unwrap_or_default(),
                fleet.unwrap_or_default()
            ),
        ),
        Some(p) => (503, "text/plain", format!("not ready: {p}\n")),
    }
}

fn config_json(handle: &GatewayHandle) -> String {
    let (_, info) = handle.config();
    let loaded = info
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let etcd = handle.0.etcd.as_ref().map_or_else(
        || "null".to_string(),
        |s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "null".to_string(), json_str);
            format!(
                "{{\"endpoint\":{},\"key\":{},\"connected\":{},\"revision\":{},\"seen_revision\":{},\"from_state\":{},\"full_reads\":{},\"state_writes\":{},\"state_write_failures\":{},\"last_state_error\":{}}}",
                json_str(&s.endpoint),
                json_str(&s.key),
                s.connected,
                s.revision,
                s.seen,
                opt(&s.from_state),
                s.full_reads,
                s.state_writes,
                s.state_write_failures,
                opt(&s.last_state_error)
            )
        },
    );
    format!(
        "{{\"version\":{},\"hash\":\"{:016x}\",\"loaded_at_unix\":{loaded},\"source\":{},\"reloads\":{},\"reload_failures\":{},\"last_error\":{},\"etcd\":{etcd}}}\n",
        info.version,
        info.hash,
        json_str(&info.source),
        info.reloads,
        info.reload_failures,
        info.last_error
            .as_deref()
            .map_or_else(|| "null".to_string(), json_str)
    )
}

fn routes_json(handle: &GatewayHandle) -> String {
    let (config, _) = handle.config();
    let mut out = String::from("[");
    for (i, r) in config.routes.iter().enumerate() {
        let (kind, pattern) = match &r.path {
            PathMatch::Exact(p) => ("path", p),
            PathMatch::Prefix(p) => ("prefix", p),
        };
        let list = |v: &[String]| v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",");
        let split: Vec<String> = r
            .split
            .iter()
            .map(|(g, w)| {
                format!(
                    "{{\"name\":{},\"weight\":{w}}}",
                    json_str(&config.upstreams[*g].name)
                )
            })
            .collect();
        // The chain as it runs: the tenant's filters, then the route's.
        let tenant = r.tenant.map(|t| &config.tenants[t]);
        let filters: Vec<String> = tenant
            .map_or(&[][..], |t| &t.filters[..])
            .iter()
            .chain(&r.filters)
            .map(|f| json_str(f.name()))
            .collect();
        let _ = write!(
            out,
            "{}{{\"name\":{},\"tenant\":{},\"hosts\":[{}],\"methods\":[{}],\"{kind}\":{},\"upstream\":{},\"split\":[{}],\"filters\":[{}]}}",
            if i > 0 { "," } else { "" },
            json_str(&r.name),
            tenant.map_or("null".to_string(), |t| json_str(&t.name)),
            list(&r.hosts),
            list(&r.methods),
            json_str(pattern),
            json_str(&config.upstreams[r.upstream].name),
            split.join(","),
            filters.join(",")
        );
    }
    out.push_str("]\n");
    out
}

fn upstreams_json(handle: &GatewayHandle) -> String {
    let (config, _) = handle.config();
    let shards = handle.collect();
    let mut out = String::from("[");
    for (i, u) in config.upstreams.iter().enumerate() {
        let _ = write!(
            out,
            "{}{{\"name\":{},\"endpoints\":[",
            if i > 0 { "," } else { "" },
            json_str(&u.name)
        );
        for (j, ep) in u.endpoints.iter().enumerate() {
            let idle: usize = shards
                .iter()
                .flat_map(|s| s.pool_idle.iter())
                .filter(|(a, _)| a == ep)
                .map(|(_, n)| n)
                .sum();
            let _ = write!(
                out,
                "{}{{\"address\":\"{ep}\",\"weight\":{},\"pool_idle\":{idle}}}",
                if j > 0 { "," } else { "" },
                u.weights.get(j).copied().unwrap_or(1)
            );
        }
        // Per shard: breakers and ejections are shard-local state.
        let mut states = Vec::new();
        let mut ejected = Vec::new();
        for s in &shards {
            if let Some(g) = s.groups.iter().find(|g| g.name == u.name) {
                states.push(match g.breaker_state {
                    None => "\"none\"",
                    Some(0) => "\"closed\"",
                    Some(1) => "\"half-open\"",
                    Some(_) => "\"open\"",
                });
                ejected.push(g.ejected.to_string());
            }
        }
        let _ = write!(
            out,
            "],\"balancer\":{},\"breaker_by_shard\":[{}],\"ejected_by_shard\":[{}]}}",
            json_str(&format!("{:?}", u.balancer)),
            states.join(","),
            ejected.join(",")
        );
    }
    out.push_str("]\n");
    out
}

pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    respond_with(conn, status, content_type, "", body);
}

/// [`respond`] with `extra` header lines (each ending in CRLF).
fn respond_with(conn: &mut TcpStream, status: u16, content_type: &str, extra: &str, body: &str) {
    let reason = shardgate_http::Canned::for_status(status).reason;
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
}
