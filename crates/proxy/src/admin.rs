//! The admin server: a plain blocking HTTP/1.1 server on its own thread,
//! loopback by default, far from the shards' request paths. It answers from
//! the control plane (`GatewayHandle`): metrics are collected from the
//! shards when scraped, never read from their hot state.
//!
//! `GET /healthz`, `/ready`, `/config`, `/routes`, `/upstreams`, `/metrics`;
//! `POST /reload`.

use crate::control::GatewayHandle;
use shardgate_config::PathMatch;
use shardgate_http::{Limits, empty_headers, parse_request};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

pub(crate) struct AdminServer {
    stop: Arc<AtomicBool>,
    /// A second handle on the listening socket, to wake the blocked accept.
    listener: Option<TcpListener>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    pub(crate) fn start(listener: TcpListener, handle: GatewayHandle) -> AdminServer {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = listener.local_addr().ok();
        let waker = listener.try_clone().ok();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shardgate-admin".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(conn) => serve(conn, &handle),
                        // EMFILE and friends: do not spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .ok();
        if let Some(a) = addr {
            log::info!("admin server on http://{a}/ (metrics at /metrics)");
        }
        AdminServer {
            stop,
            listener: waker,
            thread,
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
    }
}

fn serve(mut conn: TcpStream, handle: &GatewayHandle) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let (method, path) = loop {
        let mut headers = empty_headers();
        match parse_request(&buf, &mut headers, &Limits::default()) {
            Ok(Some(req)) => {
                break (
                    req.method.to_string(),
                    String::from_utf8_lossy(req.path).into_owned(),
                );
            }
            Ok(None) => {}
            Err(e) => {
                respond(&mut conn, 400, "text/plain", &format!("{e}\n"));
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = route(&method, path, handle);
    respond(&mut conn, status, content_type, &body);
}

fn route(method: &str, path: &str, handle: &GatewayHandle) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    match (method, path) {
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
            "/healthz" | "/ready" | "/config" | "/routes" | "/upstreams" | "/metrics" | "/reload",
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
    match problem {
        None => (
            200,
            "text/plain",
            format!(
                "ready: {} shards on configuration version {}\n",
                shards.len(),
                info.version
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
    format!(
        "{{\"version\":{},\"hash\":\"{:016x}\",\"loaded_at_unix\":{loaded},\"source\":{},\"reloads\":{},\"reload_failures\":{},\"last_error\":{}}}\n",
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

fn json_str(s: &str) -> String {
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
    let reason = shardgate_http::Canned::for_status(status).reason;
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
}
