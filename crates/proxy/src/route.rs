//! The shard's routing table: `shardgate-router` built from the routes of
//! one configuration, each shard holding its own immutable copy.

use shardgate_config::{Route, Tenant};
use shardgate_router::{BuildError, Router, RouterBuilder};

/// Index of a route in the configuration.
pub(crate) type RouteId = usize;

/// Builds the table. The configuration was validated with the same builder,
/// so this cannot fail for a validated `Config`; if it somehow does, the
/// error is returned for the caller to report. Every tenant host gets a scope
/// even if no route names it, so a request for it is answered by the
/// tenant's routes or 404, never by routes outside the tenant.
pub(crate) fn build(
    routes: &[Route],
    tenants: &[Tenant],
) -> Result<Router<RouteId>, Vec<BuildError>> {
    let mut builder = RouterBuilder::new();
    for (id, r) in routes.iter().enumerate() {
        builder.insert(r.router_spec(), id).map_err(|e| vec![e])?;
    }
    for host in tenants.iter().flat_map(|t| &t.hosts) {
        builder.reserve_host(host).map_err(|e| vec![e])?;
    }
    builder.build()
}
