//! A shard's compiled view of one configuration: the routing table, upstream
//! groups with their round-robin cursors, limits and timeouts. Each shard
//! builds its own from the shared, immutable `Config`.

use crate::metrics::{GroupMetrics, NO_ROUTE, Registry, RouteMetrics};
use crate::pool::{EndpointId, Pools};
use crate::route::{self, RouteId};
use shardgate_config::{Config, Limits, PoolSettings, Timeouts};
use shardgate_router::Router;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

pub(crate) struct Group {
    pub endpoints: Vec<EndpointId>,
    cursor: Cell<usize>,
}

impl Group {
    /// Round robin over the group's endpoints, skipping `avoid` when there
    /// is another choice (a retry goes elsewhere).
    pub(crate) fn pick(&self, avoid: Option<EndpointId>) -> EndpointId {
        let n = self.endpoints.len();
        let i = self.cursor.get();
        self.cursor.set(i.wrapping_add(1));
        let ep = self.endpoints[i % n];
        if Some(ep) == avoid && n > 1 {
            self.cursor.set(i.wrapping_add(2));
            return self.endpoints[(i + 1) % n];
        }
        ep
    }
}

pub(crate) struct Snapshot {
    pub routes: Router<RouteId>,
    /// Upstream group of each route.
    pub route_group: Vec<usize>,
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
    pub limits: Limits,
    pub http_limits: shardgate_http::Limits,
    pub timeouts: Timeouts,
    pub pool: PoolSettings,
}

impl Snapshot {
    /// Builds the shard's view of `config`, numbering its endpoints in `pools`.
    pub(crate) fn build(
        config: &Arc<Config>,
        version: u64,
        pools: &Pools,
        registry: &Registry,
    ) -> Result<Snapshot, String> {
        let mut endpoints = Vec::new();
        let groups = config
            .upstreams
            .iter()
            .map(|u| Group {
                endpoints: u
                    .endpoints
                    .iter()
                    .map(|a| {
                        let id = pools.id_for(*a);
                        endpoints.push(id);
                        id
                    })
                    .collect(),
                cursor: Cell::new(0),
            })
            .collect();
        let l = config.limits;
        Ok(Snapshot {
            routes: route::build(&config.routes)?,
            route_group: config.routes.iter().map(|r| r.upstream).collect(),
            route_names: config.routes.iter().map(|r| r.name.clone()).collect(),
            groups,
            endpoints,
            version,
            route_metrics: config
                .routes
                .iter()
                .map(|r| registry.route(&r.name))
                .collect(),
            no_route_metrics: registry.route(NO_ROUTE),
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
