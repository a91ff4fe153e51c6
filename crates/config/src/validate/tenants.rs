//! Tenants: their names, hosts and filter defaults, and which route hosts are
//! whose. A tenant's hosts are its own: a host belongs to one tenant, and
//! only that tenant's routes may serve it.

use super::filters::{self, Scope};
use super::{Errors, host, valid_name};
use crate::model::{Route, Tenant, TenantId};
use crate::raw::RawTenant;
use shardgate_filters::filter::FilterSpec;

pub(super) fn tenants(e: &mut Errors, raw: &[RawTenant]) -> Vec<Tenant> {
    let mut tenants: Vec<Tenant> = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let path = format!("tenants[{i}]");
        let name = match &t.name {
            None => {
                e.push(format!("{path}.name"), "required");
                String::new()
            }
            Some(name) => {
                if !valid_name(name) {
                    e.push(
                        format!("{path}.name"),
                        format!("name {name:?} may only use letters, digits, '-', '_' and '.'"),
                    );
                } else if tenants.iter().any(|o| o.name == *name) {
                    e.push(
                        format!("{path}.name"),
                        format!("tenant name {name:?} is used twice"),
                    );
                }
                name.clone()
            }
        };
        if t.hosts.is_empty() {
            e.push(format!("{path}.hosts"), "at least one host is required");
        }
        let mut hosts = Vec::new();
        for (j, raw_host) in t.hosts.iter().enumerate() {
            let field = format!("{path}.hosts[{j}]");
            let h = host(e, &field, raw_host);
            let clash = tenants.iter().find_map(|o| {
                o.hosts
                    .iter()
                    .find(|oh| covers(oh, &h) || covers(&h, oh))
                    .map(|oh| (o, oh))
            });
            if let Some((other, theirs)) = clash {
                let message = if *theirs == h {
                    format!("{h:?} is already a host of tenant {:?}", other.name)
                } else {
                    format!(
                        "{h:?} overlaps {theirs:?} of tenant {:?}: a host belongs to one tenant",
                        other.name
                    )
                };
                e.push(field, message);
            } else if hosts.contains(&h) {
                e.push(field, format!("{h:?} is listed twice"));
            }
            hosts.push(h);
        }
        let scope = Scope {
            path: &path,
            params: &[],
            tenant: true,
        };
        let filters = filters::chain(e, &scope, &t.filters);
        tenants.push(Tenant {
            name,
            hosts,
            filters,
        });
    }
    tenants
}

/// Resolves the route at `path`'s `tenant` and settles its hosts: a tenant's
/// route without hosts takes the tenant's, and one with hosts may only name
/// the tenant's (or names under a tenant wildcard); a route of no tenant may
/// name none of a tenant's.
pub(super) fn assign(
    e: &mut Errors,
    path: &str,
    tenant: Option<&str>,
    hosts: &mut Vec<String>,
    tenants: &[Tenant],
) -> Option<TenantId> {
    let Some(name) = tenant else {
        for (j, h) in hosts.iter().enumerate() {
            if let Some(owner) = tenants.iter().find(|t| owns(t, h)) {
                e.push(
                    format!("{path}.hosts[{j}]"),
                    format!(
                        "{h:?} is a host of tenant {0:?}: only its routes (tenant = {0:?}) may serve it",
                        owner.name
                    ),
                );
            }
        }
        return None;
    };
    let Some(id) = tenants.iter().position(|t| t.name == name) else {
        e.push(format!("{path}.tenant"), format!("unknown tenant {name:?}"));
        return None;
    };
    let tenant = &tenants[id];
    if hosts.is_empty() {
        hosts.clone_from(&tenant.hosts);
    }
    for (j, h) in hosts.iter().enumerate() {
        if !owns(tenant, h) {
            e.push(
                format!("{path}.hosts[{j}]"),
                format!("{h:?} is not a host of tenant {name:?}"),
            );
        }
    }
    Some(id)
}

/// Whether `host` (a name or a `*.suffix` wildcard) is one of the tenant's
/// hosts or falls under one of its wildcards (`*.acme.example` covers
/// `api.acme.example`, `a.b.acme.example` and `*.eu.acme.example`).
fn owns(tenant: &Tenant, host: &str) -> bool {
    tenant.hosts.iter().any(|own| covers(own, host))
}

/// Whether `own` (a name or a `*.suffix` wildcard) is `host` or takes every
/// name `host` stands for.
fn covers(own: &str, host: &str) -> bool {
    own == host
        || own
            .strip_prefix('*')
            .is_some_and(|dot_suffix| host.ends_with(dot_suffix))
}

/// The registered filters that name the consumer, for messages.
fn naming() -> String {
    let names: Vec<&str> = shardgate_filters::filter::REGISTRY
        .iter()
        .filter(|(_, _, make)| make().names_consumer())
        .map(|(name, _, _)| *name)
        .collect();
    names.join(", ")
}

/// A rate limit keyed by consumer only means something after a filter that
/// names the consumer (`api-key`, `jwt`) has run; before one, every request
/// would share the bucket of the empty name. Chains run the tenant's filters
/// first, so a tenant's consumer limit needs its own authentication filter.
pub(super) fn consumer_limits_follow_auth(e: &mut Errors, tenants: &[Tenant], routes: &[Route]) {
    let check = |e: &mut Errors, mut authenticated: bool, path: &str, chain: &[FilterSpec]| {
        for (j, f) in chain.iter().enumerate() {
            if let Some(field) = f.needs_consumer().filter(|_| !authenticated) {
                e.push(
                    format!("{path}.filters[{j}].{field}"),
                    format!(
                        "needs a filter that names the consumer ({}) before it in the chain \
                         (a tenant's filters run before its routes')",
                        naming()
                    ),
                );
            }
            authenticated |= f.names_consumer();
        }
        authenticated
    };
    let tenant_auth: Vec<bool> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| check(e, false, &format!("tenants[{i}]"), &t.filters))
        .collect();
    for (i, r) in routes.iter().enumerate() {
        let after_tenant = r.tenant.is_some_and(|t| tenant_auth[t]);
        check(e, after_tenant, &format!("routes[{i}]"), &r.filters);
    }
}
