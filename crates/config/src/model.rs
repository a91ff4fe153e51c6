//! The validated, typed configuration the proxy runs on.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

/// A whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub workers: Workers,
    pub driver: Driver,
    /// Proxies in front whose `X-Forwarded-For` is believed (empty: none).
    pub trusted_proxies: Vec<shardgate_filters::cidr::Cidr>,
    pub listeners: Vec<Listener>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub pool: PoolSettings,
    /// The admin server, if any.
    pub admin: Option<Admin>,
    pub access_log: Option<AccessLog>,
    /// How long a graceful shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    /// Tenants, by [`TenantId`]; routes name theirs.
    pub tenants: Vec<Tenant>,
    /// Redis for fleet-wide limits, when configured.
    pub fleet: Option<Fleet>,
    /// OpenTelemetry span export, when configured.
    pub tracing: Option<Tracing>,
}

/// `[tracing]`: spans exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// Where export requests are POSTed (`http://` or `https://`).
    pub otlp_endpoint: String,
    /// Share of new traces recorded (a caller's sampled flag decides the others).
    pub sample_ratio: f64,
    pub service_name: String,
    /// Extra fields of each export request, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Resource attributes besides `service.name`, `(key, value)`.
    pub resource: Vec<(String, String)>,
    pub batch_size: usize,
    pub interval: Duration,
    /// Spans waiting for export, gateway-wide, before new ones are dropped.
    pub queue: usize,
    pub timeout: Duration,
}

impl Tracing {
    /// The same exporter: everything but the sampling ratio, which a reload changes.
    pub fn same_exporter(&self, other: &Tracing) -> bool {
        Tracing {
            sample_ratio: other.sample_ratio,
            ..self.clone()
        } == *other
    }
}

/// `[fleet]`: where gateways sharing limits meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    pub redis: shardgate_redis::Settings,
    pub key_prefix: String,
    /// Seeds the hashes of limited keys (equal on every gateway of the fleet).
    pub secret: Vec<u8>,
    pub sync: Duration,
}

/// Index into [`Config::tenants`].
pub type TenantId = usize;

/// A tenant: a set of hosts with its own routes and the filters every one of
/// them runs first (keys, limits, headers).
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: String,
    /// Lower-cased hosts (`*.example.com` wildcards allowed); never empty.
    pub hosts: Vec<String>,
    /// Filter defaults: run before each of the tenant's routes' own filters.
    pub filters: Vec<shardgate_filters::filter::FilterSpec>,
}

/// The admin server: where it listens and who may talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
    /// Lower-cased `Host` names (no port) it answers besides `localhost`,
    /// loopback addresses and its own address: a browser tricked by DNS
    /// rebinding sends the attacker's name and is refused.
    pub hosts: Vec<String>,
    /// When set, every request except `GET /healthz` and `GET /ready` needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// Where and how the access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub path: std::path::PathBuf,
    pub format: LogFormat,
    /// Bytes a shard buffers before handing lines to the writer.
    pub buffer: usize,
    /// Query parameters left out of every logged target (beside every
    /// api-key filter's, which always are).
    pub redact_query: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// nginx-like `combined` text with the route and timings appended.
    Text,
}

impl Config {
    /// The settings a reload cannot change (they need a restart or a binary
    /// upgrade), with the first field that differs.
    /// Settings that are valid but probably not meant, one line each naming
    /// where (`shardgate check` prints them; nothing refuses them).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (i, l) in self.listeners.iter().enumerate() {
            for (j, c) in l.tls.iter().flat_map(|t| t.certs.iter().enumerate()) {
                let days = (c.not_after - now).div_euclid(86_400);
                let what = format!(
                    "listeners[{i}].tls.certificates[{j}] ({})",
                    c.paths.cert.display()
                );
                if c.not_after <= now {
                    out.push(format!("{what}: expired {} days ago", -days));
                } else if c.not_after - now <= crate::defaults::CERT_EXPIRY_WARNING_DAYS * 86_400 {
                    out.push(format!("{what}: expires in {days} days"));
                }
            }
        }
        for u in &self.upstreams {
            if u.discovery && u.sources.is_empty() {
                out.push(format!(
                    "upstreams.{}: every endpoint comes from etcd registrations; \
                     it answers 503 until one registers (and on a gateway run without --etcd)",
                    u.name
                ));
            }
        }
        let mut chain = |owner: String, filters: &[shardgate_filters::filter::FilterSpec]| {
            for (j, f) in filters.iter().enumerate() {
                for w in f.warnings() {
                    out.push(format!("{owner}, filters[{j}] ({}): {w}", f.name()));
                }
            }
        };
        for t in &self.tenants {
            chain(format!("tenant {:?}", t.name), &t.filters);
        }
        for r in &self.routes {
            chain(format!("route {:?}", r.name), &r.filters);
        }
        out
    }

    pub fn restart_required(&self, new: &Config) -> Option<&'static str> {
        // The sockets: their options apply on reload.
        let sockets = |c: &Config| -> Vec<(SocketAddr, u32)> {
            c.listeners.iter().map(|l| (l.address, l.backlog)).collect()
        };
        if sockets(self) != sockets(new) {
            Some("listeners")
        } else if self.workers != new.workers {
            Some("workers")
        } else if self.driver != new.driver {
            Some("driver")
        } else if self.admin.as_ref().map(|a| a.address) != new.admin.as_ref().map(|a| a.address) {
            Some("admin.address")
        } else if self.limits.buffer_size != new.limits.buffer_size {
            Some("limits.buffer_size")
        } else if self
            .access_log
            .as_ref()
            .map(|l| (&l.path, l.format, l.buffer))
            != new
                .access_log
                .as_ref()
                .map(|l| (&l.path, l.format, l.buffer))
        {
            Some("access_log")
        } else if self.fleet != new.fleet {
            Some("fleet")
        } else if match (&self.tracing, &new.tracing) {
            (Some(a), Some(b)) => !a.same_exporter(b),
            (a, b) => a.is_some() != b.is_some(),
        } {
            Some("tracing (all but sample_ratio)")
        } else {
            None
        }
    }
}

/// How many shards to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per available core.
    Auto,
    Count(NonZeroUsize),
}

impl Workers {
    /// The number of shards on this machine.
    pub fn resolve(self) -> usize {
        match self {
            Workers::Auto => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            Workers::Count(n) => n.get(),
        }
    }
}

/// Which monoio driver the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll (logged).
    Auto,
    /// io_uring, or fail to start.
    Uring,
    /// epoll.
    Legacy,
}

impl Driver {
    pub fn parse(text: &str) -> Option<Driver> {
        match text {
            "auto" => Some(Driver::Auto),
            "uring" | "io_uring" => Some(Driver::Uring),
            "legacy" | "epoll" => Some(Driver::Legacy),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    pub backlog: u32,
    /// How strictly request paths are read (`escaped_slashes`, `path_semicolons`).
    pub paths: shardgate_router::PathOptions,
    /// What happens to request fields with `_` in their names.
    pub underscores: Underscores,
    /// Every connection starts with a PROXY protocol header (v1 or v2)
    /// naming the client; without one it is closed. Off: a connection that
    /// starts with one is refused with 400.
    pub proxy_protocol: bool,
    /// A connection that opens with the HTTP/2 client preface speaks HTTP/2
    /// (cleartext, prior knowledge); others HTTP/1.1.
    pub http2: bool,
    /// Which form of the request target goes upstream.
    pub forward_path: ForwardPath,
    /// TLS, when the listener terminates it.
    pub tls: Option<ListenerTls>,
    /// A plain listener that answers every request with a `308` to the
    /// same host and target over https, on this port (443: none written).
    pub redirect_to_https: Option<u16>,
}

/// A listener's TLS: its certificates (loaded and checked when the
/// configuration loads, again on each reload), what a handshake naming
/// none of them gets, and how long a handshake may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub certs: Vec<shardgate_tls::LoadedCert>,
    pub unknown_name: shardgate_tls::UnknownName,
    pub handshake_timeout: Duration,
    /// Client certificates (mTLS), when asked for.
    pub client_auth: Option<shardgate_tls::ClientAuth>,
    /// Lower-case name of the request field the gateway owns and sets to
    /// the verified client certificate's subject (RFC 4514 text).
    pub client_subject_header: Option<String>,
}

/// Which form of a request's target a listener forwards (it always routes
/// on the normal form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardPath {
    /// The normal form the route matched (`/%61pi/../x` goes as `/x`).
    #[default]
    Normalized,
    /// Byte for byte as received (RFC 9110 §7.7); a target whose normal
    /// form differs in more than spelling (a dot segment, a doubled `/`, a
    /// decoded separator) is refused with 400, since the origin could read
    /// another path than the one routed.
    AsReceived,
}

/// What a listener does with request header fields whose names hold `_`
/// (CGI and WSGI origins read `X_Consumer` as `X-Consumer`, so a client
/// could pass for a field the gateway owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Underscores {
    /// Leave them out of the forwarded request (nginx's default).
    #[default]
    Drop,
    /// Refuse the request (400).
    Reject,
    /// Forward them.
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request_header: Duration,
    pub upstream_response: Duration,
    pub idle: Duration,
    pub client_body: Duration,
    /// The whole request body's time (waiting on the client), extended by a
    /// second per `limits.min_rate` bytes received.
    pub request_body: Duration,
    pub send: Duration,
    /// The whole response's time blocked on a client that does not read,
    /// extended by a second per `limits.min_rate` bytes sent.
    pub response_send: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_head: usize,
    pub max_headers: usize,
    /// `None`: no limit.
    pub max_body: Option<u64>,
    pub buffer_size: usize,
    /// Request bodies up to this size are read whole before the upstream is
    /// contacted (0: every body streams).
    pub request_buffer: usize,
    /// Bytes a second a client must at least move on average (see
    /// `Timeouts::request_body` and `Timeouts::response_send`).
    pub min_rate: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections in use per endpoint per shard; 0: no limit.
    pub max_connections_per_endpoint: u32,
    /// Requests that may wait for a connection per endpoint per shard.
    pub max_waiting: u32,
    /// How long a request waits for a connection before a 503.
    pub wait_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
    pub max_requests_per_connection: u32,
}

/// Index of an upstream group in [`Config::upstreams`].
pub type UpstreamId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// The endpoints as configured: IP literals, or host names that resolve
    /// to any number of addresses.
    pub sources: Vec<EndpointSource>,
    /// How often host-name sources are resolved again (off the request path).
    pub dns_refresh: Duration,
    /// The addresses in use: every source's addresses, in source order.
    pub endpoints: Vec<SocketAddr>,
    /// One per endpoint.
    pub weights: Vec<u32>,
    pub balancer: shardgate_upstream::Algorithm,
    /// Circuit breaker for the group, when configured.
    pub breaker: Option<shardgate_upstream::BreakerConfig>,
    /// Passive outlier ejection: always on, the defaults when `[outlier]`
    /// is absent.
    pub outlier: shardgate_upstream::outlier::OutlierConfig,
    pub retry: RetrySettings,
    /// Active health checks, when configured.
    pub health: Option<shardgate_upstream::health::ProbeSpec>,
    /// TLS to the endpoints, when configured.
    pub tls: Option<UpstreamTls>,
    /// Endpoints also come from etcd registrations (`discovery = "etcd"`).
    pub discovery: bool,
    /// What the group's endpoints speak.
    pub protocol: UpstreamProtocol,
}

/// The protocol a group's endpoints speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    H1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 over cleartext, with prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    pub fn is_h2(self) -> bool {
        self != UpstreamProtocol::H1
    }
}

/// TLS to a group's endpoints: always verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The name sent in SNI and verified against each endpoint's certificate;
    /// `None`: the endpoint's host name, or its address for an IP endpoint.
    pub sni: Option<String>,
    /// The CA bundle certificates must chain to.
    pub ca: shardgate_tls::LoadedCa,
    /// The client certificate presented to upstreams that ask for one.
    pub identity: Option<shardgate_tls::LoadedCert>,
}

/// Where Debian, Ubuntu and Alpine keep the system's CA bundle, then Fedora
/// and RHEL: the default of `upstreams.NAME.tls.ca`.
pub const SYSTEM_CA_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// One configured endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSource {
    /// As written: `10.0.0.7:8080` or `api.internal:8080`.
    pub text: String,
    pub weight: u32,
    /// `(host, port)` when `text` names a host rather than an address.
    pub host: Option<(String, u16)>,
    /// Its addresses at load time.
    pub addrs: Vec<SocketAddr>,
    /// Registered by a service in etcd (`discovery = "etcd"`), not written in
    /// the configuration.
    pub registered: bool,
}

impl Upstream {
    /// Replaces the endpoints registered in etcd with `addrs` (weight 1 each); `false` when
    /// they are the same already.
    pub fn set_registered(&mut self, addrs: &[SocketAddr]) -> bool {
        let now: Vec<SocketAddr> = self
            .sources
            .iter()
            .filter(|s| s.registered)
            .flat_map(|s| s.addrs.iter().copied())
            .collect();
        if now == addrs {
            return false;
        }
        self.sources.retain(|s| !s.registered);
        self.sources.extend(addrs.iter().map(|a| EndpointSource {
            text: a.to_string(),
            weight: 1,
            host: None,
            addrs: vec![*a],
            registered: true,
        }));
        self.flatten();
        true
    }

    /// Recomputes `endpoints` and `weights` from the sources.
    pub fn flatten(&mut self) {
        self.endpoints.clear();
        self.weights.clear();
        for s in &self.sources {
            for a in &s.addrs {
                if !self.endpoints.contains(a) {
                    self.endpoints.push(*a);
                    self.weights.push(s.weight);
                }
            }
        }
    }
}

/// When a failed try goes to another endpoint (the upstream crate's type, so the group that
/// decides retries reads the settings as validated).
pub use shardgate_upstream::retry::RetrySettings;

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// A full pattern.
    Exact(String),
    /// A prefix at segment boundaries.
    Prefix(String),
}

impl PathMatch {
    /// The names a pattern captures (`:id`, `*rest`), in order; none for a
    /// prefix. What filter templates may use (`{id}`).
    pub fn params(&self) -> Vec<&str> {
        match self {
            PathMatch::Exact(p) => p
                .split('/')
                .filter_map(|seg| seg.strip_prefix(':').or_else(|| seg.strip_prefix('*')))
                .filter(|name| !name.is_empty())
                .collect(),
            PathMatch::Prefix(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Lower-cased hosts (`*.example.com` wildcards allowed); empty: any host.
    pub hosts: Vec<String>,
    /// Upper-case method names; empty: any method.
    pub methods: Vec<String>,
    pub path: PathMatch,
    /// The upstream group (the first of a split).
    pub upstream: UpstreamId,
    /// A weighted split across groups (canary releases); empty for one group.
    pub split: Vec<(UpstreamId, u32)>,
    /// The tenant the route belongs to (its hosts are within the tenant's).
    pub tenant: Option<TenantId>,
    /// The route's own filters, in order (after its tenant's).
    pub filters: Vec<shardgate_filters::filter::FilterSpec>,
}

impl Route {
    /// The route as the router takes it.
    pub fn router_spec(&self) -> shardgate_router::RouteSpec {
        let (pattern, kind) = match &self.path {
            PathMatch::Exact(p) => (p.clone(), shardgate_router::PatternKind::Exact),
            PathMatch::Prefix(p) => (p.clone(), shardgate_router::PatternKind::Prefix),
        };
        shardgate_router::RouteSpec {
            name: self.name.clone(),
            hosts: self.hosts.clone(),
            methods: (!self.methods.is_empty()).then(|| {
                self.methods
                    .iter()
                    .filter_map(|m| shardgate_router::Method::parse(m))
                    .collect()
            }),
            pattern,
            kind,
        }
    }
}
