//! Raw → model: every rule, every error collected with its field path.

mod filters;
mod tenants;

use crate::defaults as d;
use crate::error::{ConfigError, ConfigErrors};
use crate::model::*;
use crate::raw::*;
use shardgate_common::units::{
    int_between, or_default, parse_duration, positive_duration, size_of,
};
use shardgate_filters::filter::FilterSpec;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(ConfigError::new(path, msg));
    }

    /// `v` read by `read`, or `default` when absent or refused (the reason
    /// goes to `path`).
    fn checked<V, T>(
        &mut self,
        path: &str,
        v: Option<V>,
        default: T,
        read: impl FnOnce(V) -> Result<T, String>,
    ) -> T {
        or_default(v, default, read, |e| self.push(path, e))
    }

    fn duration(&mut self, path: &str, v: Option<&String>, default: Duration) -> Duration {
        self.checked(path, v, default, |t| positive_duration(t))
    }

    /// A duration where `0s` turns the bound off.
    fn duration_or_off(&mut self, path: &str, v: Option<&String>, default: Duration) -> Duration {
        self.checked(path, v, default, |t| parse_duration(t))
    }

    fn size(&mut self, path: &str, v: Option<&RawSize>, default: u64) -> u64 {
        self.checked(path, v, default, size_of)
    }

    fn int_in(&mut self, path: &str, v: Option<i64>, default: u64, min: u64, max: u64) -> u64 {
        self.checked(path, v, default, |n| int_between(n, min, max))
    }
}

/// The whole configuration, section by section; every error of every
/// section is collected before the verdict.
pub(crate) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut e = Errors(Vec::new());

    let workers = workers(&mut e, &raw);
    let driver = driver(&mut e, &raw);
    let listeners = listeners(&mut e, &raw);
    let trusted_proxies = trusted_proxies(&mut e, &raw);
    let timeouts = timeouts(&mut e, &raw);
    let limits = limits(&mut e, &raw);
    let pool = pool(&mut e, &raw);
    let admin = admin(&mut e, &raw);
    let access_log = access_log(&mut e, &raw);
    let drain_timeout = e.duration(
        "shutdown.drain_timeout",
        raw.shutdown.drain_timeout.as_ref(),
        d::DRAIN_TIMEOUT,
    );

    let upstreams = upstreams(&mut e, &raw);
    let tenants = tenants::tenants(&mut e, &raw.tenants);
    let routes = routes(&mut e, &raw, &upstreams, &tenants);

    tenants::consumer_limits_follow_auth(&mut e, &tenants, &routes);
    let fleet = fleet(&mut e, &raw);
    let tracing = tracing(&mut e, &raw);
    // A fleet limit needs somewhere to meet.
    if fleet.is_none() {
        let chains = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("tenants[{i}]"), &t.filters))
            .chain(
                routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("routes[{i}]"), &r.filters)),
            );
        for (owner, filters) in chains {
            for (j, f) in filters.iter().enumerate() {
                if f.fleet_limit().is_some() {
                    let (at, what) = match f {
                        FilterSpec::Quota(_) => ("", "a quota"),
                        _ => (".scope", "scope = \"fleet\""),
                    };
                    e.push(
                        format!("{owner}.filters[{j}]{at}"),
                        format!("{what} needs a [fleet] section naming Redis"),
                    );
                }
            }
        }
    }

    // The routing table itself: malformed patterns, conflicts between
    // routes (each error names both), all reported against the route.
    if e.0.is_empty() {
        let mut builder = shardgate_router::RouterBuilder::new();
        for (i, r) in routes.iter().enumerate() {
            if let Err(err) = builder.insert(r.router_spec(), i) {
                e.push(format!("routes[{i}]"), err.to_string());
            }
        }
        if e.0.is_empty()
            && let Err(errs) = builder.build()
        {
            for err in errs {
                e.push("routes", err.to_string());
            }
        }
    }

    if e.0.is_empty() {
        Ok(Config {
            workers,
            driver,
            trusted_proxies,
            listeners,
            timeouts,
            limits,
            pool,
            admin,
            access_log,
            drain_timeout,
            upstreams,
            routes,
            tenants,
            fleet,
            tracing,
        })
    } else {
        Err(ConfigErrors(e.0))
    }
}

/// `[tracing]`: where spans go and how many.
fn tracing(e: &mut Errors, raw: &RawConfig) -> Option<Tracing> {
    let t = raw.tracing.as_ref()?;
    let Some(endpoint) = &t.otlp_endpoint else {
        e.push(
            "tracing.otlp_endpoint",
            "required: http://host:4318/v1/traces",
        );
        return None;
    };
    let host = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')) {
        e.push(
            "tracing.otlp_endpoint",
            format!("{endpoint:?}: an http:// or https:// URL with a host"),
        );
    }
    let sample_ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        e.push("tracing.sample_ratio", "between 0 and 1");
    }
    let service_name = t.service_name.clone().unwrap_or_else(|| "shardgate".into());
    if service_name.is_empty() {
        e.push("tracing.service_name", "must not be empty");
    }
    let headers: Vec<(String, String)> =
        t.headers.clone().unwrap_or_default().into_iter().collect();
    for (name, value) in &headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            e.push(format!("tracing.headers.{name}"), "not a field name");
        } else if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            e.push(
                format!("tracing.headers.{name}"),
                "control characters in the value",
            );
        }
    }
    let resource = t.resource.clone().unwrap_or_default().into_iter().collect();
    let count = |e: &mut Errors, field: &str, v: Option<i64>, default: usize, max: i64| match v {
        None => default,
        Some(n) if (1..=max).contains(&n) => n as usize,
        Some(_) => {
            e.push(format!("tracing.{field}"), format!("between 1 and {max}"));
            default
        }
    };
    let batch_size = count(e, "batch_size", t.batch_size, d::TRACING_BATCH, 65_536);
    let queue = count(e, "queue", t.queue, d::TRACING_QUEUE, 1 << 20);
    let interval = e.duration("tracing.interval", t.interval.as_ref(), d::TRACING_INTERVAL);
    if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
        e.push("tracing.interval", "between 10ms and 60s");
    }
    let timeout = e.duration("tracing.timeout", t.timeout.as_ref(), d::TRACING_TIMEOUT);
    if timeout.is_zero() {
        e.push("tracing.timeout", "must be more than 0");
    }
    Some(Tracing {
        otlp_endpoint: endpoint.clone(),
        sample_ratio,
        service_name,
        headers,
        resource,
        batch_size,
        interval,
        queue,
        timeout,
    })
}

/// `[fleet]`: Redis for limits shared by gateways.
fn fleet(e: &mut Errors, raw: &RawConfig) -> Option<Fleet> {
    let f = raw.fleet.as_ref()?;
    let Some(url) = &f.redis else {
        e.push("fleet.redis", "required: redis://host:port");
        return None;
    };
    let mut redis = match shardgate_redis::Settings::parse(url) {
        Ok(r) => r,
        Err(m) => {
            e.push("fleet.redis", m);
            return None;
        }
    };
    if f.password.is_some() {
        redis.password = f.password.clone();
    }
    if let Some(ca) = &f.ca {
        if !redis.tls {
            e.push("fleet.ca", "only with a rediss:// URL");
        }
        redis.ca = Some(ca.into());
    }
    let key_prefix = f.key_prefix.clone().unwrap_or_else(|| "shardgate:".into());
    if key_prefix.bytes().any(|b| !b.is_ascii_graphic()) {
        e.push("fleet.key_prefix", "printable ASCII without spaces");
    }
    let sync = e.duration("fleet.sync", f.sync.as_ref(), d::FLEET_SYNC);
    if sync < Duration::from_millis(10) || sync > Duration::from_secs(10) {
        e.push("fleet.sync", "between 10ms and 10s");
    }
    // Without a secret the Redis address and prefix seed the hashes: equal across the fleet,
    // but guessable by whoever knows them.
    let secret = f
        .secret
        .clone()
        .unwrap_or_else(|| {
            format!(
                "{}|{}|{}",
                redis.display(),
                key_prefix,
                redis.password.as_deref().unwrap_or("")
            )
        })
        .into_bytes();
    Some(Fleet {
        redis,
        key_prefix,
        secret,
        sync,
    })
}

/// `workers`: a count or `auto`.
fn workers(e: &mut Errors, raw: &RawConfig) -> Workers {
    match &raw.workers {
        None => Workers::Auto,
        Some(RawWorkers::Word(w)) if w == "auto" => Workers::Auto,
        Some(RawWorkers::Word(w)) => {
            e.push(
                "workers",
                format!("expected \"auto\" or a number, got {w:?}"),
            );
            Workers::Auto
        }
        Some(RawWorkers::Count(n)) => match usize::try_from(*n).ok().and_then(NonZeroUsize::new) {
            Some(n) if n.get() <= 1024 => Workers::Count(n),
            _ => {
                e.push("workers", format!("must be between 1 and 1024 (got {n})"));
                Workers::Auto
            }
        },
    }
}

/// `driver`: `auto`, `uring` or `legacy`.
fn driver(e: &mut Errors, raw: &RawConfig) -> Driver {
    match raw.driver.as_deref() {
        None => Driver::Auto,
        Some(t) => Driver::parse(t).unwrap_or_else(|| {
            e.push(
                "driver",
                format!("expected \"auto\", \"uring\" or \"legacy\", got {t:?}"),
            );
            Driver::Auto
        }),
    }
}

/// `[[listeners]]`: at least one, each address once.
fn listeners(e: &mut Errors, raw: &RawConfig) -> Vec<Listener> {
    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        e.push("listeners", "at least one listener is required");
    }
    if raw.listeners.len() > 255 {
        e.push("listeners", "at most 255 listeners");
    }
    let mut seen_addrs = HashSet::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        let backlog = e.int_in(
            &format!("{path}.backlog"),
            l.backlog,
            u64::from(d::BACKLOG),
            1,
            65535,
        ) as u32;
        match l.address.parse::<SocketAddr>() {
            Ok(address) => {
                if !seen_addrs.insert(address) {
                    e.push(
                        format!("{path}.address"),
                        format!("{address} is listed twice"),
                    );
                }
                let underscores = match l.headers_with_underscores.as_deref() {
                    None | Some("drop") => Underscores::Drop,
                    Some("reject") => Underscores::Reject,
                    Some("keep") => Underscores::Keep,
                    Some(other) => {
                        e.push(
                            format!("{path}.headers_with_underscores"),
                            format!("expected \"drop\", \"reject\" or \"keep\", got {other:?}"),
                        );
                        Underscores::Drop
                    }
                };
                let tls = l.tls.as_ref().map(|t| listener_tls(e, &path, t));
                let redirect_to_https = l.redirect_to_https.map(|p| {
                    e.int_in(&format!("{path}.redirect_to_https"), Some(p), 443, 1, 65535) as u16
                });
                if tls.is_some() && redirect_to_https.is_some() {
                    e.push(
                        format!("{path}.redirect_to_https"),
                        "is for a plain listener; this one has tls",
                    );
                }
                listeners.push(Listener {
                    tls,
                    redirect_to_https,
                    address,
                    backlog,
                    paths: listener_paths(e, &path, l),
                    underscores,
                    proxy_protocol: l.proxy_protocol.unwrap_or(false),
                    http2: l.http2.unwrap_or(false),
                    forward_path: match l.forward_path.as_deref() {
                        None | Some("normalized") => ForwardPath::Normalized,
                        Some("as_received") => ForwardPath::AsReceived,
                        Some(other) => {
                            e.push(
                                format!("{path}.forward_path"),
                                format!(
                                    "expected \"normalized\" or \"as_received\", got {other:?}"
                                ),
                            );
                            ForwardPath::Normalized
                        }
                    },
                });
            }
            Err(_) => e.push(
                format!("{path}.address"),
                format!("{:?} is not an IP:port address", l.address),
            ),
        }
    }
    listeners
}

/// `[listeners.tls]`: every pair loaded and checked now, so a reload with a
/// broken certificate is refused like any invalid configuration.
fn listener_tls(e: &mut Errors, path: &str, t: &RawListenerTls) -> ListenerTls {
    let mut certs = Vec::new();
    if t.certificates.is_empty() {
        e.push(
            format!("{path}.tls.certificates"),
            "at least one certificate and key",
        );
    }
    for (i, c) in t.certificates.iter().enumerate() {
        let paths = shardgate_tls::PairPaths {
            cert: c.cert.clone().into(),
            key: c.key.clone().into(),
        };
        match shardgate_tls::load_pair(&paths) {
            Ok(loaded) => certs.push(loaded),
            Err(err) => e.push(format!("{path}.tls.certificates[{i}]"), err),
        }
    }
    let unknown_name = match t.unknown_name.as_deref() {
        None | Some("default") => shardgate_tls::UnknownName::Default,
        Some("refuse") => shardgate_tls::UnknownName::Refuse,
        Some(other) => {
            e.push(
                format!("{path}.tls.unknown_name"),
                format!("expected \"default\" or \"refuse\", got {other:?}"),
            );
            shardgate_tls::UnknownName::Default
        }
    };
    let required = match t.client_certificates.as_deref() {
        None | Some("required") => true,
        Some("optional") => false,
        Some(other) => {
            e.push(
                format!("{path}.tls.client_certificates"),
                format!("expected \"required\" or \"optional\", got {other:?}"),
            );
            true
        }
    };
    if t.client_certificates.is_some() && t.client_ca.is_none() {
        e.push(
            format!("{path}.tls.client_certificates"),
            "needs tls.client_ca, the CA bundle client certificates are verified against",
        );
    }
    let client_auth = t.client_ca.as_ref().and_then(|ca| {
        match shardgate_tls::load_ca(std::path::Path::new(ca)) {
            Ok(ca) => Some(shardgate_tls::ClientAuth { ca, required }),
            Err(err) => {
                e.push(format!("{path}.tls.client_ca"), err);
                None
            }
        }
    });
    let client_subject_header = t.client_subject_header.as_ref().map(|h| {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            e.push(
                format!("{path}.tls.client_subject_header"),
                format!("{h:?} is not a header name (letters, digits and '-')"),
            );
        }
        if t.client_ca.is_none() {
            e.push(
                format!("{path}.tls.client_subject_header"),
                "needs tls.client_ca: without client certificates there is no subject",
            );
        }
        h.to_ascii_lowercase()
    });
    ListenerTls {
        client_auth,
        client_subject_header,
        certs,
        unknown_name,
        handshake_timeout: e.duration(
            &format!("{path}.tls.handshake_timeout"),
            t.handshake_timeout.as_ref(),
            d::TLS_HANDSHAKE_TIMEOUT,
        ),
    }
}

/// A listener's path options: `escaped_slashes` (`reject`, `keep`, `decode`)
/// and `path_semicolons` (`reject`, `keep`); both refuse by default.
fn listener_paths(e: &mut Errors, path: &str, l: &RawListener) -> shardgate_router::PathOptions {
    use shardgate_router::{EscapedSlashes, PathOptions, Semicolons};
    let mut opts = PathOptions::default();
    match l.escaped_slashes.as_deref() {
        None | Some("reject") => {}
        Some("keep") => opts.escaped_slashes = EscapedSlashes::Keep,
        Some("decode") => opts.escaped_slashes = EscapedSlashes::Decode,
        Some(other) => e.push(
            format!("{path}.escaped_slashes"),
            format!("expected \"reject\", \"keep\" or \"decode\", got {other:?}"),
        ),
    }
    match l.path_semicolons.as_deref() {
        None | Some("reject") => {}
        Some("keep") => opts.semicolons = Semicolons::Keep,
        Some(other) => e.push(
            format!("{path}.path_semicolons"),
            format!("expected \"reject\" or \"keep\", got {other:?}"),
        ),
    }
    opts
}

/// `trusted_proxies`: CIDR blocks.
fn trusted_proxies(e: &mut Errors, raw: &RawConfig) -> Vec<shardgate_filters::cidr::Cidr> {
    let mut out = Vec::new();
    for (i, text) in raw.trusted_proxies.iter().enumerate() {
        match text.trim().parse() {
            Ok(c) => out.push(c),
            Err(err) => e.push(format!("trusted_proxies[{i}]"), format!("{err}")),
        }
    }
    out
}

/// `[timeouts]`.
fn timeouts(e: &mut Errors, raw: &RawConfig) -> Timeouts {
    let t = &raw.timeouts;

    Timeouts {
        connect: e.duration("timeouts.connect", t.connect.as_ref(), d::CONNECT_TIMEOUT),
        request_header: e.duration(
            "timeouts.request_header",
            t.request_header.as_ref(),
            d::REQUEST_HEADER_TIMEOUT,
        ),
        upstream_response: e.duration(
            "timeouts.upstream_response",
            t.upstream_response.as_ref(),
            d::UPSTREAM_RESPONSE_TIMEOUT,
        ),
        idle: e.duration("timeouts.idle", t.idle.as_ref(), d::IDLE_TIMEOUT),
        client_body: e.duration(
            "timeouts.client_body",
            t.client_body.as_ref(),
            d::CLIENT_BODY_TIMEOUT,
        ),
        request_body: e.duration_or_off(
            "timeouts.request_body",
            t.request_body.as_ref(),
            d::REQUEST_BODY_TIMEOUT,
        ),
        send: e.duration("timeouts.send", t.send.as_ref(), d::SEND_TIMEOUT),
        response_send: e.duration_or_off(
            "timeouts.response_send",
            t.response_send.as_ref(),
            d::RESPONSE_SEND_TIMEOUT,
        ),
    }
}

/// `[limits]`: sizes that fit each other (the head fits a buffer, the
/// request line fits the head).
fn limits(e: &mut Errors, raw: &RawConfig) -> Limits {
    let l = &raw.limits;
    let max_request_line = e.size(
        "limits.max_request_line",
        l.max_request_line.as_ref(),
        d::MAX_REQUEST_LINE,
    );
    let max_head = e.size("limits.max_head", l.max_head.as_ref(), d::MAX_HEAD);
    let buffer_size = e.size("limits.buffer_size", l.buffer_size.as_ref(), d::BUFFER_SIZE);
    let max_body = e.size("limits.max_body", l.max_body.as_ref(), d::MAX_BODY);
    let request_buffer = e.size(
        "limits.request_buffer",
        l.request_buffer.as_ref(),
        d::REQUEST_BUFFER,
    );
    if request_buffer > 64 * 1024 * 1024 {
        e.push(
            "limits.request_buffer",
            format!("must be at most 64MiB (got {request_buffer})"),
        );
    }
    let min_rate = e.size("limits.min_rate", l.min_rate.as_ref(), d::MIN_RATE);
    let max_headers = e.int_in(
        "limits.max_headers",
        l.max_headers,
        u64::from(d::MAX_HEADERS),
        1,
        128,
    );
    if !(1024..=64 * 1024 * 1024).contains(&buffer_size) {
        e.push(
            "limits.buffer_size",
            format!("must be between 1KiB and 64MiB (got {buffer_size})"),
        );
    }
    if max_head < 64 {
        e.push(
            "limits.max_head",
            format!("must be at least 64 bytes (got {max_head})"),
        );
    }
    if max_head > buffer_size {
        e.push(
            "limits.max_head",
            format!("{max_head} is larger than limits.buffer_size ({buffer_size}): a head must fit in one buffer"),
        );
    }
    if max_request_line == 0 || max_request_line > max_head {
        e.push(
            "limits.max_request_line",
            format!("must be between 1 and limits.max_head ({max_head}) (got {max_request_line})"),
        );
    }

    Limits {
        max_request_line: max_request_line as usize,
        max_head: max_head as usize,
        max_headers: max_headers as usize,
        max_body: (max_body > 0).then_some(max_body),
        buffer_size: buffer_size as usize,
        request_buffer: request_buffer as usize,
        min_rate,
    }
}

/// `[pool]`.
fn pool(e: &mut Errors, raw: &RawConfig) -> PoolSettings {
    let p = &raw.pool;

    PoolSettings {
        max_connections_per_endpoint: e.int_in(
            "pool.max_connections_per_endpoint",
            p.max_connections_per_endpoint,
            u64::from(d::POOL_MAX_CONNECTIONS),
            0,
            1_000_000,
        ) as u32,
        max_waiting: e.int_in(
            "pool.max_waiting",
            p.max_waiting,
            u64::from(d::POOL_MAX_WAITING),
            0,
            1_000_000,
        ) as u32,
        wait_timeout: e.duration(
            "pool.wait_timeout",
            p.wait_timeout.as_ref(),
            d::POOL_WAIT_TIMEOUT,
        ),
        max_idle_per_endpoint: e.int_in(
            "pool.max_idle_per_endpoint",
            p.max_idle_per_endpoint,
            u64::from(d::POOL_MAX_IDLE),
            0,
            100_000,
        ) as usize,
        idle_timeout: e.duration(
            "pool.idle_timeout",
            p.idle_timeout.as_ref(),
            d::POOL_IDLE_TIMEOUT,
        ),
        max_requests_per_connection: e.int_in(
            "pool.max_requests_per_connection",
            p.max_requests_per_connection,
            u64::from(d::POOL_MAX_REQUESTS),
            1,
            u64::from(u32::MAX),
        ) as u32,
    }
}

/// `[admin]`.
fn admin(e: &mut Errors, raw: &RawConfig) -> Option<Admin> {
    let a = raw.admin.as_ref()?;
    for (i, h) in a.hosts.iter().enumerate() {
        if h.is_empty()
            || h.contains(':') && !h.starts_with('[')
            || !h.bytes().all(|b| b.is_ascii_graphic())
        {
            e.push(
                format!("admin.hosts[{i}]"),
                format!("{h:?} is not a host name (give it without a port)"),
            );
        }
    }
    if let Some(t) = &a.token
        && (t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        e.push(
            "admin.token",
            "must be at least 16 printable characters without spaces",
        );
    }
    match a.address.parse::<SocketAddr>() {
        Ok(address) => Some(Admin {
            address,
            hosts: a.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            token: a.token.clone(),
        }),
        Err(_) => {
            e.push(
                "admin.address",
                format!("{:?} is not an IP:port address", a.address),
            );
            None
        }
    }
}

/// `[access_log]`.
fn access_log(e: &mut Errors, raw: &RawConfig) -> Option<AccessLog> {
    raw.access_log.as_ref().map(|l| {
        let format = match l.format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(f) => {
                e.push(
                    "access_log.format",
                    format!("expected \"json\" or \"text\", got {f:?}"),
                );
                LogFormat::Json
            }
        };
        if l.path.is_empty() {
            e.push("access_log.path", "must not be empty");
        }
        let buffer = e.size("access_log.buffer", l.buffer.as_ref(), d::ACCESS_LOG_BUFFER);
        if !(4096..=64 << 20).contains(&buffer) {
            e.push(
                "access_log.buffer",
                format!("must be between 4KiB and 64MiB (got {buffer})"),
            );
        }
        for (i, name) in l.redact_query.iter().enumerate() {
            if name.is_empty()
                || name
                    .bytes()
                    .any(|b| matches!(b, b'&' | b'=' | b'?' | b'#') || !b.is_ascii_graphic())
            {
                e.push(
                    format!("access_log.redact_query[{i}]"),
                    format!("{name:?} is not a query parameter name"),
                );
            }
        }
        AccessLog {
            path: l.path.clone().into(),
            format,
            buffer: buffer as usize,
            redact_query: l.redact_query.clone(),
        }
    })
}

/// `[upstreams.<name>]`: endpoints (parsed, not resolved), weights,
/// balancer, breaker, outlier detection, retries, health checks.
fn upstreams(e: &mut Errors, raw: &RawConfig) -> Vec<Upstream> {
    let mut upstreams = Vec::new();
    for (name, u) in &raw.upstreams {
        let path = format!("upstreams.{name}");
        if !valid_name(name) {
            e.push(
                &path,
                format!("name {name:?} may only use letters, digits, '-', '_' and '.'"),
            );
        }
        let discovery = match u.discovery.as_deref() {
            None => false,
            Some("etcd") => true,
            Some(other) => {
                e.push(
                    format!("{path}.discovery"),
                    format!("{other:?}: the one discovery source is \"etcd\""),
                );
                false
            }
        };
        if u.endpoints.is_empty() && !discovery {
            e.push(
                format!("{path}.endpoints"),
                "at least one endpoint is required (or discovery = \"etcd\")",
            );
        }
        let mut sources = Vec::new();
        for (j, ep) in u.endpoints.iter().enumerate() {
            let weight = match &u.weights {
                Some(w) if w.len() == u.endpoints.len() => {
                    e.int_in(&format!("{path}.weights[{j}]"), Some(w[j]), 1, 1, 1_000_000) as u32
                }
                _ => 1,
            };
            match parse_endpoint(ep) {
                Ok((addrs, host)) => sources.push(EndpointSource {
                    text: ep.clone(),
                    weight,
                    host,
                    addrs,
                    registered: false,
                }),
                Err(m) => e.push(format!("{path}.endpoints[{j}]"), m),
            }
        }
        if let Some(w) = &u.weights
            && w.len() != u.endpoints.len()
        {
            e.push(
                format!("{path}.weights"),
                format!(
                    "{} weights for {} endpoints: give one per endpoint",
                    w.len(),
                    u.endpoints.len()
                ),
            );
        }
        let dns_refresh = e.duration(
            &format!("{path}.dns_refresh"),
            u.dns_refresh.as_ref(),
            d::DNS_REFRESH,
        );
        let balancer = upstream_balancer(e, &path, u);
        let breaker = u.breaker.as_ref().map(|b| upstream_breaker(e, &path, b));
        let outlier = u
            .outlier
            .as_ref()
            .map_or_else(Default::default, |o| upstream_outlier(e, &path, o));
        let retry = upstream_retry(e, &path, u.retry.as_ref());
        let health = u.health.as_ref().map(|h| upstream_health(e, &path, h));
        let tls = u.tls.as_ref().and_then(|t| {
            let ca_path = match &t.ca {
                Some(p) => p.clone(),
                None => SYSTEM_CA_BUNDLES
                    .iter()
                    .find(|p| std::path::Path::new(p).exists())
                    .map_or_else(|| SYSTEM_CA_BUNDLES[0].to_string(), |p| p.to_string()),
            };
            if let Some(sni) = &t.sni
                && rustls_pki_types::ServerName::try_from(sni.as_str()).is_err()
            {
                e.push(
                    format!("{path}.tls.sni"),
                    format!("{sni:?} is not a host name or address"),
                );
            }
            let identity = match (&t.cert, &t.key) {
                (None, None) => None,
                (Some(cert), Some(key)) => {
                    let paths = shardgate_tls::PairPaths {
                        cert: cert.into(),
                        key: key.into(),
                    };
                    match shardgate_tls::load_client_pair(&paths) {
                        Ok(c) => Some(c),
                        Err(err) => {
                            e.push(format!("{path}.tls.cert"), err);
                            None
                        }
                    }
                }
                _ => {
                    e.push(format!("{path}.tls.cert"), "cert and key come together");
                    None
                }
            };
            match shardgate_tls::load_ca(std::path::Path::new(&ca_path)) {
                Ok(ca) => Some(UpstreamTls {
                    sni: t.sni.clone(),
                    ca,
                    identity,
                }),
                Err(err) => {
                    e.push(format!("{path}.tls.ca"), err);
                    None
                }
            }
        });
        let protocol = match u.protocol.as_deref() {
            None | Some("h1") => UpstreamProtocol::H1,
            Some("h2") if tls.is_some() || u.tls.is_some() => UpstreamProtocol::H2,
            Some("h2") => {
                e.push(
                    format!("{path}.protocol"),
                    format!(
                        "\"h2\" is HTTP/2 over TLS: add [{path}.tls], or use \"h2c\" for cleartext"
                    ),
                );
                UpstreamProtocol::H1
            }
            Some("h2c") if u.tls.is_some() => {
                e.push(
                    format!("{path}.protocol"),
                    "\"h2c\" is HTTP/2 over cleartext, and the group has [tls]: use \"h2\"",
                );
                UpstreamProtocol::H1
            }
            Some("h2c") => UpstreamProtocol::H2c,
            Some(other) => {
                e.push(
                    format!("{path}.protocol"),
                    format!("expected \"h1\", \"h2\" or \"h2c\", got {other:?}"),
                );
                UpstreamProtocol::H1
            }
        };
        let mut upstream = Upstream {
            tls,
            protocol,
            name: name.clone(),
            sources,
            dns_refresh,
            endpoints: Vec::new(),
            weights: Vec::new(),
            balancer,
            breaker,
            outlier,
            retry,
            health,
            discovery,
        };
        upstream.flatten();
        upstreams.push(upstream);
    }
    upstreams
}

/// `[[routes]]`: names, hosts, methods, paths, the upstreams and tenant
/// they name and their filters (the table they make is checked after).
fn routes(
    e: &mut Errors,
    raw: &RawConfig,
    upstreams: &[Upstream],
    tenants: &[Tenant],
) -> Vec<Route> {
    let mut routes = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
        if !names.insert(name.clone()) {
            e.push(
                format!("{path}.name"),
                format!("route name {name:?} is used twice"),
            );
        }
        let lookup = |e: &mut Errors, field: String, name: &str| match upstreams
            .iter()
            .position(|u| u.name == name)
        {
            Some(id) => id,
            None => {
                e.push(field, format!("unknown upstream {name:?}"));
                0
            }
        };
        let (upstream, split) = match (&r.upstream, &r.upstreams) {
            (Some(name), None) => (lookup(e, format!("{path}.upstream"), name), Vec::new()),
            (None, Some(list)) if !list.is_empty() => {
                let split: Vec<(UpstreamId, u32)> = list
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        let id = lookup(e, format!("{path}.upstreams[{j}].name"), &t.name);
                        let w = e.int_in(
                            &format!("{path}.upstreams[{j}].weight"),
                            Some(t.weight),
                            1,
                            1,
                            1_000_000,
                        );
                        (id, w as u32)
                    })
                    .collect();
                (split[0].0, split)
            }
            (Some(_), Some(_)) => {
                e.push(&path, "give either `upstream` or `upstreams`, not both");
                (0, Vec::new())
            }
            _ => {
                e.push(
                    &path,
                    "a route needs `upstream` (or a non-empty `upstreams` split)",
                );
                (0, Vec::new())
            }
        };
        let path_match = match (&r.path, &r.prefix) {
            (Some(p), None) => PathMatch::Exact(p.clone()),
            (None, Some(p)) => PathMatch::Prefix(p.clone()),
            (Some(_), Some(_)) => {
                e.push(&path, "give either `path` or `prefix`, not both");
                PathMatch::Prefix("/".into())
            }
            (None, None) => {
                e.push(&path, "a route needs `path` or `prefix`");
                PathMatch::Prefix("/".into())
            }
        };
        let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = &path_match;
        if !p.starts_with('/') {
            let field = if matches!(path_match, PathMatch::Exact(_)) {
                "path"
            } else {
                "prefix"
            };
            e.push(
                format!("{path}.{field}"),
                format!("{p:?} must start with '/'"),
            );
        }
        let mut hosts: Vec<String> = r
            .hosts
            .iter()
            .enumerate()
            .map(|(j, h)| host(e, &format!("{path}.hosts[{j}]"), h))
            .collect();
        let tenant = tenants::assign(e, &path, r.tenant.as_deref(), &mut hosts, tenants);
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().enumerate() {
            if m.is_empty()
                || !m
                    .bytes()
                    .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
            {
                e.push(
                    format!("{path}.methods[{j}]"),
                    format!("{m:?} is not a method name"),
                );
            }
            methods.push(m.to_ascii_uppercase());
        }
        let scope = filters::Scope {
            path: &path,
            params: &path_match.params(),
            tenant: r.tenant.is_some(),
        };
        let filters = filters::chain(e, &scope, &r.filters);
        routes.push(Route {
            name,
            hosts,
            methods,
            path: path_match,
            upstream,
            split,
            tenant,
            filters,
        });
    }
    routes
}

fn upstream_balancer(e: &mut Errors, path: &str, u: &RawUpstream) -> shardgate_upstream::Algorithm {
    use shardgate_upstream::Algorithm;
    use shardgate_upstream::balance::HashKey;
    let algorithm = match u.balancer.as_deref() {
        None | Some("round_robin") => Algorithm::RoundRobin,
        Some("weighted") => Algorithm::Weighted,
        Some("least_request") => Algorithm::LeastRequest,
        Some("hash") => {
            let key = match u.hash_key.as_deref() {
                Some("client_ip") | None => HashKey::ClientIp,
                Some(k) if k.starts_with("header:") && k.len() > 7 => {
                    HashKey::Header(k[7..].to_ascii_lowercase().into())
                }
                Some(k) if k.starts_with("cookie:") && k.len() > 7 => {
                    HashKey::Cookie(k[7..].into())
                }
                Some(k) => {
                    e.push(
                        format!("{path}.hash_key"),
                        format!("expected client_ip, header:NAME or cookie:NAME, got {k:?}"),
                    );
                    HashKey::ClientIp
                }
            };
            Algorithm::ConsistentHash {
                key,
                table_size: shardgate_upstream::balance::DEFAULT_TABLE_SIZE,
            }
        }
        Some(b) => {
            e.push(
                format!("{path}.balancer"),
                format!("expected round_robin, weighted, least_request or hash, got {b:?}"),
            );
            Algorithm::RoundRobin
        }
    };
    if u.hash_key.is_some() && !matches!(algorithm, Algorithm::ConsistentHash { .. }) {
        e.push(
            format!("{path}.hash_key"),
            "only used with balancer = \"hash\"",
        );
    }
    algorithm
}

fn upstream_breaker(
    e: &mut Errors,
    path: &str,
    b: &RawBreaker,
) -> shardgate_upstream::BreakerConfig {
    let d = shardgate_upstream::BreakerConfig::default();
    let p = |f: &str| format!("{path}.breaker.{f}");
    shardgate_upstream::BreakerConfig {
        window: e.duration(&p("window"), b.window.as_ref(), d.window),
        buckets: d.buckets,
        min_volume: e.int_in(
            &p("min_requests"),
            b.min_requests,
            u64::from(d.min_volume),
            1,
            1_000_000,
        ) as u32,
        error_percent: e.int_in(
            &p("error_percent"),
            b.error_percent,
            u64::from(d.error_percent),
            1,
            100,
        ) as u8,
        sleep_window: e.duration(&p("sleep_window"), b.sleep_window.as_ref(), d.sleep_window),
        half_open_trials: e.int_in(
            &p("half_open_requests"),
            b.half_open_requests,
            u64::from(d.half_open_trials),
            1,
            10_000,
        ) as u32,
        max_concurrent: e.int_in(
            &p("max_concurrent"),
            b.max_concurrent,
            u64::from(d.max_concurrent),
            1,
            10_000_000,
        ) as u32,
    }
}

fn upstream_outlier(
    e: &mut Errors,
    path: &str,
    o: &RawOutlier,
) -> shardgate_upstream::outlier::OutlierConfig {
    let d = shardgate_upstream::outlier::OutlierConfig::default();
    let p = |f: &str| format!("{path}.outlier.{f}");
    shardgate_upstream::outlier::OutlierConfig {
        consecutive_5xx: e.int_in(
            &p("consecutive_5xx"),
            o.consecutive_5xx,
            u64::from(d.consecutive_5xx),
            0,
            10_000,
        ) as u32,
        consecutive_connect_failures: e.int_in(
            &p("consecutive_connect_failures"),
            o.consecutive_connect_failures,
            u64::from(d.consecutive_connect_failures),
            0,
            10_000,
        ) as u32,
        base_ejection: e.duration(
            &p("base_ejection"),
            o.base_ejection.as_ref(),
            d.base_ejection,
        ),
        max_ejection: e.duration(&p("max_ejection"), o.max_ejection.as_ref(), d.max_ejection),
        max_ejection_percent: e.int_in(
            &p("max_ejected_percent"),
            o.max_ejected_percent,
            u64::from(d.max_ejection_percent),
            0,
            100,
        ) as u8,
    }
}

fn upstream_health(
    e: &mut Errors,
    path: &str,
    h: &RawHealth,
) -> shardgate_upstream::health::ProbeSpec {
    let d = shardgate_upstream::health::ProbeSpec::default();
    let p = |f: &str| format!("{path}.health.{f}");
    let probe_path = h.path.clone().unwrap_or_else(|| d.path.to_string());
    if !probe_path.starts_with('/') || probe_path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        e.push(
            p("path"),
            format!("{probe_path:?} must start with '/' and hold no spaces or control bytes"),
        );
    }
    let expected = match &h.expect {
        None => d.expected.clone(),
        Some(text) => text.parse().unwrap_or_else(|err| {
            e.push(p("expect"), format!("{err}"));
            d.expected.clone()
        }),
    };
    shardgate_upstream::health::ProbeSpec {
        path: probe_path.into(),
        interval: e.duration(&p("interval"), h.interval.as_ref(), d.interval),
        timeout: e.duration(&p("timeout"), h.timeout.as_ref(), d.timeout),
        expected,
        rise: e.int_in(&p("rise"), h.rise, u64::from(d.rise), 1, 100) as u32,
        fall: e.int_in(&p("fall"), h.fall, u64::from(d.fall), 1, 100) as u32,
        initial: d.initial,
    }
}

fn upstream_retry(e: &mut Errors, path: &str, r: Option<&RawRetry>) -> RetrySettings {
    let p = |f: &str| format!("{path}.retry.{f}");
    let Some(r) = r else {
        return RetrySettings::default();
    };
    let on = match &r.on {
        None => shardgate_upstream::retry::RetryOn::default(),
        Some(list) => {
            let mut on = shardgate_upstream::retry::RetryOn::none();
            let mut statuses = Vec::new();
            for (i, item) in list.iter().enumerate() {
                match item.as_str() {
                    "connect-failure" => on.connect_failure = true,
                    "reset" => on.reset_before_response = true,
                    "timeout" => on.try_timeout = true,
                    s => match s.parse::<u16>() {
                        Ok(code) if (500..=599).contains(&code) => statuses.push(code),
                        _ => e.push(
                            format!("{}[{i}]", p("on")),
                            format!("expected connect-failure, reset, timeout or a 5xx status, got {s:?}"),
                        ),
                    },
                }
            }
            on.statuses = statuses.into();
            on
        }
    };
    let d = shardgate_upstream::retry_budget::RetryBudgetConfig::default();
    RetrySettings {
        attempts: e.int_in(
            &p("attempts"),
            r.attempts,
            u64::from(shardgate_upstream::retry::DEFAULT_ATTEMPTS),
            1,
            u64::from(shardgate_upstream::retry::MAX_ATTEMPTS_LIMIT),
        ) as u32,
        on,
        non_idempotent: r.non_idempotent.unwrap_or(false),
        budget: shardgate_upstream::retry_budget::RetryBudgetConfig {
            percent: e.int_in(
                &p("budget_percent"),
                r.budget_percent,
                u64::from(d.percent),
                0,
                100,
            ) as u32,
            ..d
        },
        per_try_timeout: r
            .per_try_timeout
            .as_ref()
            .map(|t| e.duration(&p("per_try_timeout"), Some(t), Duration::from_secs(1))),
        deadline: r
            .deadline
            .as_ref()
            .map(|t| e.duration(&p("deadline"), Some(t), Duration::from_secs(1))),
    }
}

/// A route's or tenant's host, lower-cased: a name or a `*.suffix` wildcard.
fn host(e: &mut Errors, path: &str, raw: &str) -> String {
    let h = raw.to_ascii_lowercase();
    let bare = h.strip_prefix("*.").unwrap_or(&h);
    if bare.is_empty()
        || !bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        e.push(
            path,
            format!("{h:?} is not a host name or *.suffix wildcard"),
        );
    }
    h
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An endpoint is `IP:port` (its address), or `host:port` (no address yet:
/// the loader resolves it, see [`crate::resolve`]; validation does no DNS).
type Parsed = (Vec<SocketAddr>, Option<(String, u16)>);

fn parse_endpoint(ep: &str) -> Result<Parsed, String> {
    if let Ok(a) = ep.parse::<SocketAddr>() {
        return Ok((vec![a], None));
    }
    let Some((host, port)) = ep.rsplit_once(':') else {
        return Err(format!("{ep:?} needs a port (host:port)"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{ep:?}: {port:?} is not a port"))?;
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{ep:?}: {host:?} is neither an IP address nor a host name"
        ));
    }
    Ok((Vec::new(), Some((host.to_string(), port))))
}

#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod tenant_tests;
#[cfg(test)]
mod tests;
