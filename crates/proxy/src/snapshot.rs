//! A shard's compiled view of one configuration: the routing table, upstream
//! groups with their round-robin cursors, limits and timeouts. Each shard
//! builds its own from the shared, immutable `Config`.

use crate::metrics::{GroupMetrics, NO_ROUTE, Registry, RouteMetrics};
use crate::pool::{EndpointId, Pools};
use crate::route::{self, RouteId};
use shardgate_config::{Config, Limits, PoolSettings, Timeouts};
use shardgate_config::{RetrySettings, Upstream};
use shardgate_filters::chain::{Chain, LimitSet, Limiters};
use shardgate_filters::global_rate::GlobalLimitConfig;
use shardgate_router::Router;
use shardgate_upstream::balance::HashKey;
use shardgate_upstream::outlier::OutlierDetector;
use shardgate_upstream::retry_budget::RetryBudget;
use shardgate_upstream::{BalancerKind, Breaker, EndpointSpec, Outcome, PickHint, WeightedSplit};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// An upstream group on one shard: its endpoints and the shard's view of
/// them (balancer, in-flight counts, outlier ejections, circuit breaker,
/// retry budget). Rebuilt, and so reset, by a reload.
pub(crate) struct Group {
    pub name: String,
    /// Shard endpoint ids; position `i` is the balancer's endpoint `i`.
    pub endpoints: Vec<EndpointId>,
    balancer: RefCell<BalancerKind>,
    in_flight: RefCell<Vec<u32>>,
    /// Active health checks' verdict per endpoint (all up without checks).
    up: RefCell<Vec<bool>>,
    /// Passive detection: always on (the defaults route around a dead
    /// endpoint; `[outlier]` tunes it).
    outlier: RefCell<OutlierDetector>,
    pub breaker: Option<RefCell<Breaker>>,
    pub retry: RetrySettings,
    budget: RefCell<RetryBudget>,
    pub hash_key: Option<HashKey>,
}

impl Group {
    fn build(u: &Upstream, ids: Vec<EndpointId>, seed: u64, now: Instant) -> Result<Group, String> {
        let names: Vec<String> = u.endpoints.iter().map(|a| a.to_string()).collect();
        let specs: Vec<EndpointSpec<'_>> = names
            .iter()
            .zip(&u.weights)
            .map(|(n, &w)| EndpointSpec::new(n, w))
            .collect();
        let balancer = BalancerKind::new(&u.balancer, &specs, seed)
            .map_err(|e| format!("upstream {:?}: {e}", u.name))?;
        let hash_key = match &u.balancer {
            shardgate_upstream::Algorithm::ConsistentHash { key, .. } => Some(key.clone()),
            _ => None,
        };
        Ok(Group {
            name: u.name.clone(),
            balancer: RefCell::new(balancer),
            in_flight: RefCell::new(vec![0; ids.len()]),
            up: RefCell::new(vec![true; ids.len()]),
            outlier: RefCell::new(OutlierDetector::new(u.outlier.clone(), ids.len())),
            breaker: u
                .breaker
                .clone()
                .map(|c| RefCell::new(Breaker::new(&u.name, c, now))),
            retry: u.retry.clone(),
            budget: RefCell::new(RetryBudget::new(u.retry.budget.clone(), now)),
            hash_key,
            endpoints: ids,
        })
    }

    /// Picks an endpoint (its position in the group) for a try, honouring
    /// active health verdicts, ejections and probation (one request at a
    /// time on an endpoint back from ejection) and the `tried` set, as
    /// [`BalancerKind::choose`] orders them.
    pub(crate) fn pick(&self, key: Option<u64>, now: Instant, tried: &[usize]) -> usize {
        let in_flight = self.in_flight.borrow();
        let hint = PickHint {
            key,
            in_flight: &in_flight,
        };
        let up = self.up.borrow();
        let outlier = self.outlier.borrow();
        let out = |i: usize| {
            outlier.is_ejected(i, now)
                || (outlier.on_probation(i, now) && in_flight.get(i).is_some_and(|&n| n > 0))
        };
        let up = |i: usize| up.get(i).copied().unwrap_or(true);
        self.balancer.borrow_mut().choose(&hint, up, out, tried)
    }

    /// Active health checks' verdict for every endpoint.
    pub(crate) fn set_up(&self, up: &[bool]) {
        let mut mine = self.up.borrow_mut();
        if mine.len() == up.len() {
            mine.copy_from_slice(up);
        }
    }

    /// Endpoints active health checks hold down now.
    pub(crate) fn down(&self) -> usize {
        self.up.borrow().iter().filter(|u| !**u).count()
    }

    /// A request starts (`+1`) or ends (`-1`) on endpoint `i`.
    pub(crate) fn in_flight(&self, i: usize, delta: i32) {
        let mut f = self.in_flight.borrow_mut();
        if let Some(n) = f.get_mut(i) {
            *n = n.saturating_add_signed(delta);
        }
    }

    /// Feeds a try's outcome to outlier detection (logging ejections).
    pub(crate) fn record(&self, i: usize, outcome: Outcome, now: Instant, shard: usize) {
        if let Some(event) = self.outlier.borrow_mut().record(i, outcome, now) {
            log::warn!("shard {shard}: upstream {:?}: {event}", self.name);
        }
    }

    /// Counts a request towards the retry budget.
    pub(crate) fn request_started(&self, now: Instant) {
        self.budget.borrow_mut().record_request(now);
    }

    /// Takes a retry from the budget, if any is left.
    pub(crate) fn take_retry(&self, now: Instant) -> bool {
        self.budget.borrow_mut().try_withdraw(now)
    }

    /// Endpoints ejected now.
    pub(crate) fn ejected(&self, now: Instant) -> usize {
        self.outlier.borrow().ejected_count(now)
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
    pub limits: Limits,
    pub http_limits: shardgate_http::Limits,
    pub timeouts: Timeouts,
    pub pool: PoolSettings,
}

impl Snapshot {
    /// Takes over `old`'s rate-limit buckets when this configuration has the
    /// same limits with the same owners (a reload that changed something
    /// else, such as a DNS refresh, must not refill every bucket).
    pub(crate) fn keep_limiters(&mut self, old: &Snapshot) {
        if self.limit_configs == old.limit_configs && self.limit_owners == old.limit_owners {
            self.limiters.clone_from(&old.limiters);
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
    ) -> Result<Snapshot, String> {
        let seed = shard as u64;
        let mut endpoints = Vec::new();
        let now = Instant::now();
        let mut groups = Vec::new();
        for u in &config.upstreams {
            let ids: Vec<EndpointId> = u.endpoints.iter().map(|a| pools.id_for(*a)).collect();
            endpoints.extend_from_slice(&ids);
            groups.push(Group::build(u, ids, seed, now)?);
        }
        let l = config.limits;
        let mut limits = LimitSet {
            shard,
            shards,
            now,
            limiters: Limiters::new(),
            configs: Vec::new(),
            owners: Vec::new(),
        };
        let none = Chain::default();
        let mut tenant_chains = Vec::new();
        for t in &config.tenants {
            let owner = format!("tenant {}", t.name);
            let chain = Chain::build(&none, &t.filters, &[], &mut limits, &owner)
                .map_err(|e| format!("tenant {:?}: {e}", t.name))?;
            tenant_chains.push(chain);
        }
        let mut chains = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let base = r.tenant.map_or(&none, |t| &tenant_chains[t]);
            let owner = format!("route {}", r.name);
            let chain = Chain::build(base, &r.filters, &r.path.params(), &mut limits, &owner)
                .map_err(|e| format!("route {:?}: {e}", r.name))?;
            chains.push(chain);
        }
        Ok(Snapshot {
            chains,
            route_tenant: config.routes.iter().map(|r| r.tenant).collect(),
            tenant_names: config.tenants.iter().map(|t| t.name.clone()).collect(),
            limiters: limits.limiters,
            limit_configs: limits.configs,
            limit_owners: limits.owners,
            routes: route::build(&config.routes, &config.tenants)?,
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
            pool: config.pool,
        })
    }
}
