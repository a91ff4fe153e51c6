//! A shard's compiled view of one configuration: the routing table, upstream
//! groups with their round-robin cursors, limits and timeouts. Each shard
//! builds its own from the shared, immutable `Config`.

use crate::metrics::{GroupMetrics, NO_ROUTE, Registry, RouteMetrics};
use crate::pool::{EndpointId, Pools};
use crate::request::GroupState;
use crate::route::{self, RouteId};
use shardgate_config::Upstream;
use shardgate_config::{Config, Limits, PoolSettings, Timeouts};
use shardgate_filters::chain::{Chain, LimitSet, Limiters};
use shardgate_filters::filter::FilterSpec;
use shardgate_filters::global_rate::GlobalLimitConfig;
use shardgate_router::Router;
use shardgate_upstream::balance::HashKey;
use shardgate_upstream::{EndpointSpec, GroupConfig, WeightedSplit};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Why a configuration could not be compiled into a shard's snapshot
/// (validation catches these first; a shard refusing is a last line).
#[derive(Debug, Clone)]
pub enum BuildError {
    /// A group's balancer could not be built from its endpoints.
    Balancer {
        upstream: String,
        error: shardgate_upstream::BalanceError,
    },
    /// A tenant's or route's filter chain could not be built (the filter's
    /// own words).
    Chain { owner: String, message: String },
    /// The routing table could not be built.
    Routes(Vec<shardgate_router::BuildError>),
    /// A listener's TLS configuration could not be built.
    Tls { listener: usize, message: String },
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Balancer { upstream, error } => write!(f, "upstream {upstream:?}: {error}"),
            BuildError::Chain { owner, message } => write!(f, "{owner}: {message}"),
            BuildError::Tls { listener, message } => {
                write!(f, "listeners[{listener}].tls: {message}")
            }
            BuildError::Routes(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    write!(f, "{}{e}", if i > 0 { "; " } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// An upstream group on one shard: its endpoints' shard ids and its state
/// (the upstream crate's [`shardgate_upstream::Group`]: balancer, in-flight
/// counts, health verdicts, outlier ejections, breaker, retry budget).
/// Rebuilt, and so reset, by a reload.
pub(crate) struct Group {
    pub name: String,
    /// TLS to the endpoints: the client configuration and, by endpoint
    /// position, the name each is verified as.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        Vec<rustls_pki_types::ServerName<'static>>,
    )>,
    /// Shard endpoint ids; position `i` is the group's endpoint `i`.
    pub endpoints: Vec<EndpointId>,
    pub state: GroupState,
    pub hash_key: Option<HashKey>,
    /// The endpoints speak HTTP/2 (`h2` or `h2c`).
    pub http2: bool,
}

/// What a group's TLS connections offer by ALPN.
pub(crate) fn alpn(u: &Upstream) -> &'static [&'static [u8]] {
    if u.protocol.is_h2() {
        &[b"h2"]
    } else {
        &[b"http/1.1"]
    }
}

/// For a TLS group, the name each endpoint is verified as: the configured
/// `sni`, else the host name the endpoint came from, else its address.
pub(crate) fn tls_names(u: &Upstream) -> Option<Vec<rustls_pki_types::ServerName<'static>>> {
    let t = u.tls.as_ref()?;
    let name = |addr: &std::net::SocketAddr| {
        let host = t.sni.clone().or_else(|| {
            u.sources
                .iter()
                .find(|s| s.addrs.contains(addr))
                .and_then(|s| s.host.as_ref().map(|(h, _)| h.clone()))
        });
        match host.and_then(|h| rustls_pki_types::ServerName::try_from(h).ok()) {
            Some(n) => n,
            None => rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
        }
    };
    Some(u.endpoints.iter().map(name).collect())
}

impl Group {
    fn build(
        u: &Upstream,
        ids: Vec<EndpointId>,
        seed: u64,
        now: Instant,
    ) -> Result<Group, BuildError> {
        let names: Vec<String> = u.endpoints.iter().map(|a| a.to_string()).collect();
        let specs: Vec<EndpointSpec<'_>> = names
            .iter()
            .zip(&u.weights)
            .map(|(n, &w)| EndpointSpec::new(n, w))
            .collect();
        let state = shardgate_upstream::Group::new(
            GroupConfig {
                name: &u.name,
                endpoints: &specs,
                algorithm: &u.balancer,
                outlier: u.outlier.clone(),
                breaker: u.breaker.clone(),
                retry: u.retry.clone(),
                seed,
            },
            now,
        )
        .map_err(|error| BuildError::Balancer {
            upstream: u.name.clone(),
            error,
        })?;
        let hash_key = match &u.balancer {
            shardgate_upstream::Algorithm::ConsistentHash { key, .. } => Some(key.clone()),
            _ => None,
        };
        Ok(Group {
            tls: None,
            http2: u.protocol.is_h2(),
            name: u.name.clone(),
            state: Rc::new(RefCell::new(state)),
            hash_key,
            endpoints: ids,
        })
    }
}

pub(crate) struct Snapshot {
    pub routes: Router<RouteId>,
    /// Upstream group of each route (the first of a split).
    pub route_group: Vec<usize>,
    /// The weighted split across groups of each route that has one.
    pub route_split: Vec<Option<RefCell<WeightedSplit<usize>>>>,
    /// Name of each route (metrics and the access log).
    pub route_names: Vec<String>,
    pub groups: Vec<Group>,
    /// Every endpoint this configuration uses.
    pub endpoints: Vec<EndpointId>,
    /// Its version (1 for the first, +1 per successful reload).
    pub version: u64,
    /// Counters of each route (by route id), of requests no route took, and
    /// of each upstream group: shared by name across snapshots.
    pub route_metrics: Vec<Rc<RouteMetrics>>,
    pub no_route_metrics: Rc<RouteMetrics>,
    pub group_metrics: Vec<Rc<GroupMetrics>>,
    /// The filter chain of each route (its tenant's filters, then its own).
    pub chains: Vec<Chain>,
    /// The tenant of each route, and the tenants' names.
    pub route_tenant: Vec<Option<usize>>,
    pub tenant_names: Vec<String>,
    /// This shard's buckets of every rate limit, and each limit's settings
    /// (the same indices on every shard, for rebalancing).
    pub limiters: Limiters,
    pub limit_configs: Vec<GlobalLimitConfig>,
    pub limit_owners: Vec<String>,
    /// This shard's counts of every quota (by index, the same on every shard).
    pub quotas: shardgate_filters::chain::Quotas,
    /// The remote JWKS slots of every chain, filled by the shard.
    pub key_slots: Vec<Rc<shardgate_filters::jwt::KeySlot>>,
    pub limits: Limits,
    pub http_limits: shardgate_http::Limits,
    pub timeouts: Timeouts,
    pub pool: PoolSettings,
    /// Each listener's settings (path and header options), by index.
    pub listeners: Vec<shardgate_config::Listener>,
    /// Each listener's TLS configuration, if it terminates TLS: this
    /// shard's own (its session cache is the shard's; ticket keys are the
    /// process's).
    pub listener_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<shardgate_filters::cidr::Cidr>,
    /// Query parameters that carry secrets: every api-key filter's (on any
    /// route or tenant) and `access_log.redact_query`. Left out of every
    /// logged target and of redirects.
    pub query_secrets: Vec<Box<[u8]>>,
    /// Samples new traces when spans are exported (`[tracing]`).
    pub sampler: Option<shardgate_filters::traceparent::Sampler>,
}

impl Snapshot {
    /// Takes over `old`'s rate-limit buckets when this configuration has the
    /// same limits with the same owners (a reload that changed something
    /// else, such as a DNS refresh, must not refill every bucket).
    pub(crate) fn keep_limiters(&mut self, old: &Snapshot) {
        if self.limit_configs == old.limit_configs && self.limit_owners == old.limit_owners {
            self.limiters.clone_from(&old.limiters);
        }
        // Quotas with the same names and settings keep their counts (what was admitted since
        // the last report is not lost).
        let same = |a: &shardgate_filters::chain::Quotas, b: &shardgate_filters::chain::Quotas| {
            a.len() == b.len()
                && a.iter().zip(b).all(|(x, y)| {
                    let (x, y) = (x.borrow(), y.borrow());
                    (&x.name, x.limit, x.period) == (&y.name, y.limit, y.period)
                })
        };
        if same(&self.quotas, &old.quotas) {
            self.quotas.clone_from(&old.quotas);
        }
    }

    /// The name of a route's tenant (empty for none).
    pub(crate) fn tenant_of(&self, route: RouteId) -> &str {
        self.route_tenant[route].map_or("", |t| self.tenant_names[t].as_str())
    }

    /// Builds shard `shard`'s (of `shards`) view of `config`, numbering its
    /// endpoints in `pools`. The shard's index seeds its balancers so shards
    /// do not move in lockstep.
    pub(crate) fn build(
        config: &Arc<Config>,
        version: u64,
        pools: &Pools,
        registry: &Registry,
        (shard, shards): (usize, usize),
    ) -> Result<Snapshot, BuildError> {
        let seed = shard as u64;
        let mut endpoints = Vec::new();
        let now = Instant::now();
        let mut groups = Vec::new();
        for u in &config.upstreams {
            let names = tls_names(u);
            let ids: Vec<EndpointId> = u
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, a)| pools.id_for(*a, names.as_ref().map(|n| n[i].to_str()).as_deref()))
                .collect();
            endpoints.extend_from_slice(&ids);
            let mut group = Group::build(u, ids, seed, now)?;
            if let (Some(t), Some(names)) = (&u.tls, names) {
                let config = shardgate_tls::client_config(&t.ca, t.identity.as_ref(), alpn(u))
                    .map_err(|message| BuildError::Chain {
                        owner: format!("upstream {:?} tls", u.name),
                        message,
                    })?;
                group.tls = Some((config, names));
            }
            groups.push(group);
        }
        let l = config.limits;
        let mut limits = LimitSet {
            shard,
            shards,
            now,
            limiters: Limiters::new(),
            configs: Vec::new(),
            owners: Vec::new(),
            key_slots: Vec::new(),
            quotas: Vec::new(),
        };
        let none = Chain::default();
        let mut tenant_chains = Vec::new();
        for t in &config.tenants {
            let owner = format!("tenant {}", t.name);
            let chain =
                Chain::build(&none, &t.filters, &[], &mut limits, &owner).map_err(|message| {
                    BuildError::Chain {
                        owner: format!("tenant {:?}", t.name),
                        message,
                    }
                })?;
            tenant_chains.push(chain);
        }
        let mut chains = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let base = r.tenant.map_or(&none, |t| &tenant_chains[t]);
            let owner = format!("route {}", r.name);
            // Exported spans need the trace carried upstream: a route whose
            // chain has no trace-context filter gets one, first.
            let traced = |specs: &[FilterSpec]| {
                specs
                    .iter()
                    .any(|f| matches!(f, FilterSpec::TraceContext(_)))
            };
            let tenant_traced = r.tenant.is_some_and(|t| traced(&config.tenants[t].filters));
            let mut own = std::borrow::Cow::Borrowed(r.filters.as_slice());
            if config.tracing.is_some() && !tenant_traced && !traced(&own) {
                own.to_mut()
                    .insert(0, FilterSpec::TraceContext(Default::default()));
            }
            let chain = Chain::build(base, &own, &r.path.params(), &mut limits, &owner).map_err(
                |message| BuildError::Chain {
                    owner: format!("route {:?}", r.name),
                    message,
                },
            )?;
            chains.push(chain);
        }
        let mut query_secrets: Vec<Box<[u8]>> = Vec::new();
        let named = config.access_log.iter().flat_map(|l| l.redact_query.iter());
        let keys = chains
            .iter()
            .chain(&tenant_chains)
            .filter_map(Chain::secret_param);
        for name in named.map(String::as_str).chain(keys) {
            if !query_secrets.iter().any(|s| **s == *name.as_bytes()) {
                query_secrets.push(name.as_bytes().into());
            }
        }
        let mut listener_tls = Vec::with_capacity(config.listeners.len());
        for (i, l) in config.listeners.iter().enumerate() {
            listener_tls.push(match &l.tls {
                Some(t) => Some(
                    shardgate_tls::server_config(
                        &t.certs,
                        t.unknown_name,
                        if l.http2 {
                            &[b"h2", b"http/1.1"]
                        } else {
                            &[b"http/1.1"]
                        },
                        4096,
                        t.client_auth.as_ref(),
                    )
                    .map_err(|message| BuildError::Tls {
                        listener: i,
                        message,
                    })?,
                ),
                None => None,
            });
        }
        Ok(Snapshot {
            listener_tls,
            query_secrets,
            chains,
            route_tenant: config.routes.iter().map(|r| r.tenant).collect(),
            tenant_names: config.tenants.iter().map(|t| t.name.clone()).collect(),
            limiters: limits.limiters,
            limit_configs: limits.configs,
            limit_owners: limits.owners,
            key_slots: limits.key_slots,
            quotas: limits.quotas,
            routes: route::build(&config.routes, &config.tenants).map_err(BuildError::Routes)?,
            route_group: config.routes.iter().map(|r| r.upstream).collect(),
            route_split: config
                .routes
                .iter()
                .map(|r| {
                    (!r.split.is_empty())
                        .then(|| RefCell::new(WeightedSplit::new(r.split.iter().copied())))
                })
                .collect(),
            route_names: config.routes.iter().map(|r| r.name.clone()).collect(),
            groups,
            endpoints,
            version,
            route_metrics: config
                .routes
                .iter()
                .map(|r| {
                    let tenant = r.tenant.map_or("", |t| config.tenants[t].name.as_str());
                    registry.route(tenant, &r.name)
                })
                .collect(),
            no_route_metrics: registry.route("", NO_ROUTE),
            group_metrics: config
                .upstreams
                .iter()
                .map(|u| registry.group(&u.name))
                .collect(),
            limits: l,
            http_limits: shardgate_http::Limits {
                max_request_line: l.max_request_line,
                max_head: l.max_head,
                max_headers: l.max_headers,
                max_body: l.max_body,
            },
            timeouts: config.timeouts,
            listeners: config.listeners.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            pool: config.pool,
            sampler: config
                .tracing
                .as_ref()
                .map(|t| shardgate_filters::traceparent::Sampler::new(t.sample_ratio)),
        })
    }
}
