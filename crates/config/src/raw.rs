//! The TOML file as written: serde types, unknown keys refused. Nothing here
//! is checked beyond its TOML type; see `validate` for the rules.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `"auto"` or a number of shards.
    pub workers: Option<RawWorkers>,
    /// `"auto"`, `"uring"` or `"legacy"`.
    pub driver: Option<String>,
    /// CIDR blocks of proxies in front whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub pool: RawPool,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub access_log: Option<RawAccessLog>,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    /// Redis for limits shared by a fleet of gateways.
    pub fleet: Option<RawFleet>,
    /// OpenTelemetry span export.
    pub tracing: Option<RawTracing>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// `http://host:port/v1/traces` (OTLP/HTTP with protobuf), or `https://`.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0 to 1 (default 1).
    pub sample_ratio: Option<f64>,
    /// `service.name` of the resource (default `shardgate`).
    pub service_name: Option<String>,
    /// Extra request fields of each export (an API key of a hosted collector).
    pub headers: Option<BTreeMap<String, String>>,
    /// More resource attributes (`deployment.environment = "prod"`).
    pub resource: Option<BTreeMap<String, String>>,
    /// Spans per export request (default 512).
    pub batch_size: Option<i64>,
    /// Longest wait before buffered spans are sent (default 5s).
    pub interval: Option<String>,
    /// Spans waiting for export before new ones are dropped (default 4096).
    pub queue: Option<i64>,
    /// Time an export request may take (default 5s).
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// `redis://[:password@]host:port[/db]` or `rediss://` (TLS).
    pub redis: Option<String>,
    /// Overrides a password in the URL.
    pub password: Option<String>,
    /// CA bundle for `rediss://` (default: the system's).
    pub ca: Option<String>,
    /// Prefix of every Redis key (default `shardgate:`).
    pub key_prefix: Option<String>,
    /// Keys the hashes of limited keys; the same on every gateway of the fleet.
    pub secret: Option<String>,
    /// How often a gateway exchanges demand with Redis (default 100ms).
    pub sync: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawWorkers {
    Count(i64),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: String,
    pub backlog: Option<i64>,
    pub escaped_slashes: Option<String>,
    pub path_semicolons: Option<String>,
    pub headers_with_underscores: Option<String>,
    /// Connections start with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: Option<bool>,
    /// Accept HTTP/2 with prior knowledge (the client preface) beside HTTP/1.1.
    pub http2: Option<bool>,
    /// `normalized` or `as_received`.
    pub forward_path: Option<String>,
    /// TLS on this listener.
    pub tls: Option<RawListenerTls>,
    /// Answer every request with a redirect to https on this port.
    pub redirect_to_https: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<RawCertPair>,
    /// `default` (the first certificate) or `refuse`.
    pub unknown_name: Option<String>,
    pub handshake_timeout: Option<String>,
    /// CA bundle (PEM) client certificates must chain to.
    pub client_ca: Option<String>,
    /// `required` (default with a CA) or `optional`.
    pub client_certificates: Option<String>,
    /// A request field the gateway sets to the verified client's subject.
    pub client_subject_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub request_header: Option<String>,
    pub upstream_response: Option<String>,
    pub idle: Option<String>,
    pub client_body: Option<String>,
    pub request_body: Option<String>,
    pub send: Option<String>,
    pub response_send: Option<String>,
}

pub use shardgate_common::units::RawSize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_request_line: Option<RawSize>,
    pub max_head: Option<RawSize>,
    pub max_headers: Option<i64>,
    pub max_body: Option<RawSize>,
    pub buffer_size: Option<RawSize>,
    pub request_buffer: Option<RawSize>,
    pub min_rate: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub max_connections_per_endpoint: Option<i64>,
    pub max_waiting: Option<i64>,
    pub wait_timeout: Option<String>,
    pub max_idle_per_endpoint: Option<i64>,
    pub idle_timeout: Option<String>,
    pub max_requests_per_connection: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// `"etcd"`: endpoints also come from keys services register under the
    /// gateway's etcd prefix (`endpoints/<group>/<ip:port>`).
    pub discovery: Option<String>,
    /// One weight per endpoint (same order); all 1 when absent.
    pub weights: Option<Vec<i64>>,
    /// `round_robin` (default), `weighted`, `least_request`, `hash`.
    pub balancer: Option<String>,
    /// For `hash`: `client_ip`, `header:NAME` or `cookie:NAME`.
    pub hash_key: Option<String>,
    /// How often endpoints given as host names are resolved again.
    pub dns_refresh: Option<String>,
    pub breaker: Option<RawBreaker>,
    pub outlier: Option<RawOutlier>,
    pub retry: Option<RawRetry>,
    pub health: Option<RawHealth>,
    pub tls: Option<RawUpstreamTls>,
    /// `h1` (default), `h2` (HTTP/2 over TLS, by ALPN) or `h2c` (HTTP/2
    /// over cleartext, with prior knowledge).
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// The name sent in SNI and verified (default: each endpoint's host name).
    pub sni: Option<String>,
    /// CA bundle (PEM); the system's by default.
    pub ca: Option<String>,
    /// A client certificate and key (PEM) for upstreams that ask for one.
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    /// Passing statuses, e.g. `"200-399"` or `"200, 204"`.
    pub expect: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub max_concurrent: Option<i64>,
    pub error_percent: Option<i64>,
    pub min_requests: Option<i64>,
    pub window: Option<String>,
    pub sleep_window: Option<String>,
    pub half_open_requests: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_5xx: Option<i64>,
    pub consecutive_connect_failures: Option<i64>,
    pub base_ejection: Option<String>,
    pub max_ejection: Option<String>,
    pub max_ejected_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<i64>,
    /// `connect-failure`, `reset`, `timeout`, or a status code (`"503"`).
    pub on: Option<Vec<String>>,
    pub non_idempotent: Option<bool>,
    pub budget_percent: Option<i64>,
    /// Longest wait for each try's response head.
    pub per_try_timeout: Option<String>,
    /// Longest time for all tries together.
    pub deadline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// A full path pattern (`/users/:id`, `/static/*rest`).
    pub path: Option<String>,
    /// A path prefix matched at segment boundaries (`/api`).
    pub prefix: Option<String>,
    /// The upstream group; or `upstreams` for a weighted split.
    pub upstream: Option<String>,
    /// A weighted split across groups: `[{ name = "v1", weight = 70 }, ...]`.
    pub upstreams: Option<Vec<RawSplit>>,
    /// The tenant the route belongs to, by name.
    pub tenant: Option<String>,
    /// The route's own filters, in order (after its tenant's).
    #[serde(default)]
    pub filters: Vec<RawFilter>,
}

/// A tenant: its hosts, and the filters each of its routes runs first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub name: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub filters: Vec<RawFilter>,
}

/// One filter as written: a table with a `type` (a name in
/// `shardgate_filters::filter::REGISTRY`) and that filter's keys.
///
/// Kept as a table here and read by `validate` once the type is known, so
/// that an unknown type or key is reported with the filter's field path
/// (`routes[2].filters[1].type`) along with every other problem, rather than
/// stopping the parse at the first one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct RawFilter(pub toml::Table);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub name: String,
    pub weight: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: String,
    /// `Host` names the admin server answers besides loopback ones.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A bearer token every request but `GET /healthz` and `/ready` must carry.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: String,
    /// Query parameters never written to the log (beside every api-key
    /// filter's).
    #[serde(default)]
    pub redact_query: Vec<String>,
    pub format: Option<String>,
    pub buffer: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain_timeout: Option<String>,
}
