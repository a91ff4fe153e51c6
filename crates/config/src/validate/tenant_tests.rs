//! Tenants: their hosts are their own, their routes are within them, and their
//! filters are checked like a route's.

use crate::from_toml;
use shardgate_filters::filter::FilterSpec;
use shardgate_filters::rate_limit::{RateKeySource, RateLimitConfig};

const BASE: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.app]
endpoints = ["127.0.0.1:9000"]

[[tenants]]
name = "acme"
hosts = ["acme.localhost", "*.acme.example"]
filters = [{ type = "rate-limit", rate = 50, key = "tenant" }]

[[tenants]]
name = "beta"
hosts = ["beta.localhost"]

[[routes]]
prefix = "/"
upstream = "app"
"#;

/// `BASE` plus these lines (more routes or tenants).
fn config(extra: &str) -> String {
    format!("{BASE}\n{extra}\n")
}

#[test]
fn tenant_routes_take_the_tenant_hosts_and_keep_their_own_filters() {
    let c = from_toml(&config(
        r#"
[[routes]]
name = "acme-all"
tenant = "acme"
prefix = "/api"
upstream = "app"
filters = [{ type = "rate-limit", rate = 5, key = "tenant" }]

[[routes]]
name = "acme-one"
tenant = "acme"
hosts = ["API.acme.example", "*.eu.acme.example", "acme.localhost"]
prefix = "/one"
upstream = "app"

[[routes]]
name = "beta"
tenant = "beta"
prefix = "/api"
upstream = "app"
"#,
    ))
    .unwrap();
    let names: Vec<&str> = c.tenants.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["acme", "beta"]);
    assert_eq!(c.tenants[0].hosts, ["acme.localhost", "*.acme.example"]);
    assert_eq!(
        c.tenants[0].filters,
        [FilterSpec::RateLimit(RateLimitConfig {
            rate: 50.0,
            burst: 50.0,
            key: RateKeySource::Tenant,
            ..Default::default()
        })]
    );
    assert!(c.tenants[1].filters.is_empty());

    let route = |name: &str| c.routes.iter().find(|r| r.name == name).unwrap();
    assert_eq!(route("route-0").tenant, None);
    assert_eq!(route("acme-all").tenant, Some(0));
    assert_eq!(route("acme-all").hosts, c.tenants[0].hosts);
    // The route keeps only its own filters; the tenant's stay with the tenant.
    assert_eq!(route("acme-all").filters.len(), 1);
    assert_eq!(
        route("acme-one").hosts,
        ["api.acme.example", "*.eu.acme.example", "acme.localhost"]
    );
    assert_eq!(route("beta").tenant, Some(1));
    assert_eq!(route("beta").hosts, ["beta.localhost"]);
}

/// Each broken config must give an error that reads exactly as the start of
/// the expected text.
#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "[[routes]]\ntenant = \"gamma\"\nprefix = \"/g\"\nupstream = \"app\"",
            "routes[1].tenant: unknown tenant \"gamma\"",
        ),
        (
            "[[routes]]\ntenant = \"acme\"\nhosts = [\"api.acme.example\", \"beta.localhost\"]\nprefix = \"/g\"\nupstream = \"app\"",
            "routes[1].hosts[1]: \"beta.localhost\" is not a host of tenant \"acme\"",
        ),
        (
            // A wildcard does not cover its own bare domain.
            "[[routes]]\ntenant = \"acme\"\nhosts = [\"acme.example\"]\nprefix = \"/g\"\nupstream = \"app\"",
            "routes[1].hosts[0]: \"acme.example\" is not a host of tenant \"acme\"",
        ),
        (
            "[[routes]]\nhosts = [\"www.example\", \"Acme.localhost\"]\nprefix = \"/g\"\nupstream = \"app\"",
            "routes[1].hosts[1]: \"acme.localhost\" is a host of tenant \"acme\": only its routes (tenant = \"acme\") may serve it",
        ),
        (
            "[[routes]]\nhosts = [\"shop.acme.example\"]\nprefix = \"/g\"\nupstream = \"app\"",
            "routes[1].hosts[0]: \"shop.acme.example\" is a host of tenant \"acme\"",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"gamma.localhost\", \"beta.localhost\"]",
            "tenants[2].hosts[1]: \"beta.localhost\" is already a host of tenant \"beta\"",
        ),
        (
            "[[routes]]\nprefix = \"/c\"\nupstream = \"app\"\n\
             filters = [{ type = \"rate-limit\", key = \"consumer\" }, { type = \"api-key\", keys = [] }]",
            "routes[1].filters[0].key: needs a filter that names the consumer (api-key, jwt) before it",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"g.localhost\"]\n\
             filters = [{ type = \"rate-limit\", key = \"consumer\" }]",
            "tenants[2].filters[0].key: needs a filter that names the consumer (api-key, jwt) before it",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"shop.acme.example\"]",
            "tenants[2].hosts[0]: \"shop.acme.example\" overlaps \"*.acme.example\" of tenant \"acme\": a host belongs to one tenant",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"*.example\"]",
            "tenants[2].hosts[0]: \"*.example\" overlaps \"*.acme.example\" of tenant \"acme\"",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"g.localhost\", \"G.localhost\"]",
            "tenants[2].hosts[1]: \"g.localhost\" is listed twice",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"bad host\"]",
            "tenants[2].hosts[0]: \"bad host\" is not a host name or *.suffix wildcard",
        ),
        (
            "[[tenants]]\nname = \"gamma\"",
            "tenants[2].hosts: at least one host is required",
        ),
        (
            "[[tenants]]\nhosts = [\"g.localhost\"]",
            "tenants[2].name: required",
        ),
        (
            "[[tenants]]\nname = \"acme\"\nhosts = [\"g.localhost\"]",
            "tenants[2].name: tenant name \"acme\" is used twice",
        ),
        (
            "[[tenants]]\nname = \"a b\"\nhosts = [\"g.localhost\"]",
            "tenants[2].name: name \"a b\" may only use",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"g.localhost\"]\nfilters = [{ type = \"rewrite\", template = \"/{id}\" }]",
            "tenants[2].filters[0]: template: template \"/{id}\" uses {id}, which the route does not capture",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"g.localhost\"]\nfilters = [{ type = \"nope\" }]",
            "tenants[2].filters[0].type: unknown filter \"nope\"",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"g.localhost\"]\nfilters = [{ type = \"body-limit\", max = -1 }]",
            "tenants[2].filters[0].max: must not be negative",
        ),
        (
            "[[tenants]]\nname = \"gamma\"\nhosts = [\"g.localhost\"]\nowner = \"me\"",
            "line ",
        ),
    ];
    for (extra, want) in cases {
        let errs = from_toml(&config(extra)).expect_err(extra);
        assert!(
            errs.0.iter().any(|e| e.to_string().starts_with(want)),
            "{extra}\n  want: {want}\n  got: {errs}"
        );
    }
}

#[test]
fn tenant_routes_may_share_paths_across_tenants_but_not_within_one() {
    let route = |tenant: &str| {
        format!("[[routes]]\ntenant = \"{tenant}\"\nprefix = \"/api\"\nupstream = \"app\"\n")
    };
    assert!(from_toml(&config(&(route("acme") + &route("beta")))).is_ok());
    let errs = from_toml(&config(&(route("acme") + &route("acme")))).unwrap_err();
    assert!(errs.0.iter().any(|e| e.path == "routes[2]"), "{errs}");
}
