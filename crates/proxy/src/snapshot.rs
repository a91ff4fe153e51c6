//! A shard's compiled view of one configuration: the routing table, upstream
//! groups with their round-robin cursors, limits and timeouts. Each shard
//! builds its own from the shared, immutable `Config`.

use crate::route::{self, RouteId};
use shardgate_config::{Config, Limits, PoolSettings, Timeouts};
use shardgate_router::Router;
use std::cell::Cell;
use std::net::SocketAddr;

/// Index of an endpoint in the shard's pool table.
pub(crate) type EndpointId = usize;

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
    pub groups: Vec<Group>,
    pub endpoints: Vec<SocketAddr>,
    /// `ip:port` of each endpoint, sent as Host when a 1.0 client gave none.
    pub endpoint_hosts: Vec<String>,
    pub limits: Limits,
    pub http_limits: shardgate_http::Limits,
    pub timeouts: Timeouts,
    pub pool: PoolSettings,
}

impl Snapshot {
    pub(crate) fn build(config: &Config) -> Result<Snapshot, String> {
        let mut endpoints = Vec::new();
        let groups = config
            .upstreams
            .iter()
            .map(|u| Group {
                endpoints: u
                    .endpoints
                    .iter()
                    .map(|a| {
                        endpoints.push(*a);
                        endpoints.len() - 1
                    })
                    .collect(),
                cursor: Cell::new(0),
            })
            .collect();
        let l = config.limits;
        Ok(Snapshot {
            routes: route::build(&config.routes)?,
            route_group: config.routes.iter().map(|r| r.upstream).collect(),
            groups,
            endpoint_hosts: endpoints.iter().map(|a| a.to_string()).collect(),
            endpoints,
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
