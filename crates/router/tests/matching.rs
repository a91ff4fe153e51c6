//! Table-driven lookups: every priority rule, host rule and method rule, one line each.

mod support {
    pub mod table;
}

use support::table::{Row, build, render};

const ROUTES: &[Row<'_>] = &[
    ("root", "", "GET", "= /"),
    ("users-list", "", "GET POST", "= /users"),
    ("users-slash", "", "GET", "= /users/"),
    ("users-new", "", "GET", "= /users/new"),
    ("users-get", "", "GET DELETE", "= /users/:id"),
    ("users-posts", "", "GET", "= /users/:id/posts/:post"),
    ("static", "", "GET", "= /static/*path"),
    ("static-favicon", "", "GET", "= /static/favicon.ico"),
    ("files-any", "", "*", "= /files/:name"),
    ("files-put", "", "PUT", "= /files/upload"),
    ("files-all", "", "GET", "= /files/*rest"),
    ("api", "", "*", "^ /api"),
    ("api-v2", "", "GET", "^ /api/v2/"),
    ("api-health", "", "GET", "= /api/health"),
    ("cache", "", "PURGE", "= /cache/:key"),
    ("admin-tree", "", "GET", "^ /admin"),
    ("colon", "", "POST", "= /v1/things:batchGet"),
    ("a-param-c", "", "GET", "= /a/:x/c"),
    ("a-b-param", "", "GET", "= /a/b/:y"),
    ("a-cat", "", "GET", "= /a/*rest"),
    ("tenant-users", "api.example.com", "GET", "= /users/:id"),
    ("wild", "*.example.com", "*", "^ /"),
    ("wild-eu", "*.eu.example.com", "*", "^ /"),
    (
        "shop",
        "shop.example.com SHOP.example.org",
        "GET",
        "= /cart",
    ),
];

#[test]
fn lookup_table() {
    let router = build(ROUTES);
    let cases: &[(&str, &str, &str, &str)] = &[
        // Static, trailing slash significant.
        ("", "GET", "/", "root"),
        ("", "GET", "/users", "users-list"),
        ("", "GET", "/users/", "users-slash"),
        ("", "GET", "/nothing", "404"),
        // static > param > catch-all, segment by segment from the left.
        ("", "GET", "/users/new", "users-new"),
        ("", "GET", "/users/42", "users-get id=42"),
        ("", "GET", "/users/42/posts/7", "users-posts id=42 post=7"),
        ("", "GET", "/users/42/posts", "404"),
        ("", "GET", "/users/42/posts/", "404"),
        ("", "GET", "/users/a%2Fb", "users-get id=a%2Fb"),
        (
            "",
            "GET",
            "/static/css/site.css",
            "static path=css/site.css",
        ),
        ("", "GET", "/static/favicon.ico", "static-favicon"),
        (
            "",
            "GET",
            "/static/favicon.ico/x",
            "static path=favicon.ico/x",
        ),
        ("", "GET", "/static/", "404"),
        ("", "GET", "/static", "404"),
        ("", "GET", "/a/b/c", "a-b-param y=c"),
        ("", "GET", "/a/z/c", "a-param-c x=z"),
        ("", "GET", "/a/z/d", "a-cat rest=z/d"),
        ("", "GET", "/a/b/c/d", "a-cat rest=b/c/d"),
        ("", "GET", "/a/b", "a-cat rest=b"),
        ("", "POST", "/v1/things:batchGet", "colon"),
        // Methods: 405 lists exactly the methods that would be found.
        ("", "HEAD", "/", "405 GET"),
        ("", "PUT", "/users", "405 GET, POST"),
        ("", "POST", "/users/new", "405 GET, DELETE"),
        ("", "GET", "/cache/k1", "405 PURGE"),
        ("", "PURGE", "/cache/k1", "cache key=k1"),
        ("", "purge", "/cache/k1", "405 PURGE"),
        // A higher-priority route without the method yields to a lower one with it.
        ("", "DELETE", "/users/new", "users-get id=new"),
        ("", "PUT", "/files/upload", "files-put"),
        ("", "GET", "/files/upload", "files-any name=upload"),
        ("", "BREW", "/files/x", "files-any name=x"),
        ("", "BREW", "/files/x/y", "405 GET"),
        // Prefixes: segment boundary, longest wins, any exact match beats them. The most
        // specific match decides the method too: a method it does not take is a 405, never
        // a shorter prefix's (which would bypass what the specific route guards).
        ("", "GET", "/api", "api"),
        ("", "GET", "/api/", "api"),
        ("", "GET", "/api/x/y", "api"),
        ("", "GET", "/apix", "404"),
        ("", "GET", "/api/v2", "api-v2"),
        ("", "GET", "/api/v2/", "api-v2"),
        ("", "GET", "/api/v2/x", "api-v2"),
        ("", "GET", "/api/v2x", "api"),
        ("", "POST", "/api/v2/x", "405 GET"),
        ("", "GET", "/api/health", "api-health"),
        ("", "POST", "/api/health", "405 GET"),
        ("", "GET", "/admin", "admin-tree"),
        ("", "GET", "/admin/users/1", "admin-tree"),
        ("", "POST", "/admin/x", "405 GET"),
        ("", "GET", "/adminx", "404"),
        // Hosts: exact > longest wildcard > default, any case, port and trailing dot ignored.
        ("api.example.com", "GET", "/users/7", "tenant-users id=7"),
        (
            "API.Example.COM:8443",
            "GET",
            "/users/7",
            "tenant-users id=7",
        ),
        ("api.example.com.", "GET", "/users/7", "tenant-users id=7"),
        ("x.example.com", "GET", "/users", "wild"),
        ("a.b.example.com", "DELETE", "/anything", "wild"),
        ("x.eu.example.com", "GET", "/", "wild-eu"),
        ("x.EU.example.com:80", "GET", "/", "wild-eu"),
        ("eu.example.com", "GET", "/", "wild"),
        ("example.com", "GET", "/users", "users-list"),
        ("shop.example.com", "GET", "/cart", "shop"),
        ("shop.example.org", "GET", "/cart", "shop"),
        ("other.org", "GET", "/users", "users-list"),
        ("[::1]:8080", "GET", "/", "root"),
        ("", "GET", "/cart", "404"),
        // No fall-through from a host's scope to a wildcard or the default.
        ("api.example.com", "GET", "/users", "404"),
        ("api.example.com", "POST", "/users/7", "405 GET"),
        ("shop.example.com", "GET", "/other", "404"),
    ];
    for (host, method, path, want) in cases {
        let got = render(router.lookup(host.as_bytes(), method.as_bytes(), path.as_bytes()));
        assert_eq!(got, *want, "{method} {host} {path}");
    }
}

#[test]
fn without_default_scope_unknown_hosts_are_not_found() {
    let router = build(&[("a", "a.com", "*", "^ /"), ("b", "*.b.com", "*", "^ /")]);
    let cases: &[(&str, &str)] = &[
        ("a.com", "a"),
        ("x.b.com", "b"),
        ("b.com", "404"),
        ("c.com", "404"),
        ("", "404"),
        ("xa.com", "404"),
    ];
    for (host, want) in cases {
        assert_eq!(
            render(router.lookup(host.as_bytes(), b"GET", b"/x")),
            *want,
            "{host}"
        );
    }
}

#[test]
fn a_reserved_host_without_routes_never_falls_back_to_the_default_scope() {
    use shardgate_router::{RouteSpec, RouterBuilder};
    let mut b = RouterBuilder::new();
    b.insert(RouteSpec::prefix("all", "/"), "all").unwrap();
    b.insert(
        RouteSpec {
            hosts: vec!["shop.example".into()],
            ..RouteSpec::prefix("shop", "/")
        },
        "shop",
    )
    .unwrap();
    for host in ["legacy.example", "*.tenant.example", "shop.example"] {
        b.reserve_host(host).unwrap();
    }
    assert!(b.reserve_host("bad host").is_err());
    let router = b.build().unwrap();
    let cases: &[(&str, &str)] = &[
        ("other.example", "all"),
        ("shop.example", "shop"),
        ("legacy.example", "404"),
        ("LEGACY.example:8080", "404"),
        ("a.tenant.example", "404"),
        ("tenant.example", "all"),
    ];
    for (host, want) in cases {
        let got = match router.lookup(host.as_bytes(), b"GET", b"/x") {
            shardgate_router::Lookup::Found(m) => *m.value,
            shardgate_router::Lookup::MethodNotAllowed(_) => "405",
            shardgate_router::Lookup::NotFound => "404",
        };
        assert_eq!(got, *want, "{host}");
    }
}

#[test]
fn root_prefix_takes_everything_and_loses_to_any_exact_route() {
    let router = build(&[
        ("all", "", "*", "^ /"),
        ("deep", "", "*", "= /a/*rest"),
        ("param", "", "*", "= /:p"),
    ]);
    let cases: &[(&str, &str)] = &[
        ("/", "all"),
        ("/x", "param p=x"),
        ("/x/", "all"),
        ("/a/b", "deep rest=b"),
        ("/a/", "all"),
        ("/b/c", "all"),
    ];
    for (path, want) in cases {
        assert_eq!(
            render(router.lookup(b"", b"GET", path.as_bytes())),
            *want,
            "{path}"
        );
    }
}

#[test]
fn extension_methods_are_numbered_per_table() {
    let router = build(&[
        ("purge", "", "PURGE", "= /x"),
        ("link", "", "LINK UNLINK GET", "= /y"),
    ]);
    let cases: &[(&str, &str, &str)] = &[
        ("PURGE", "/x", "purge"),
        ("LINK", "/x", "405 PURGE"),
        ("GET", "/y", "link"),
        ("UNLINK", "/y", "link"),
        ("PURGE", "/y", "405 GET, LINK, UNLINK"),
        ("FOO", "/y", "405 GET, LINK, UNLINK"),
    ];
    for (method, path, want) in cases {
        assert_eq!(
            render(router.lookup(b"", method.as_bytes(), path.as_bytes())),
            *want,
            "{method} {path}"
        );
    }
}

#[test]
fn same_shape_different_param_names_on_disjoint_methods() {
    let router = build(&[
        ("get", "", "GET", "= /u/:id"),
        ("del", "", "DELETE", "= /u/:uid"),
    ]);
    assert_eq!(render(router.lookup(b"", b"GET", b"/u/1")), "get id=1");
    assert_eq!(render(router.lookup(b"", b"DELETE", b"/u/1")), "del uid=1");
    assert_eq!(
        render(router.lookup(b"", b"PUT", b"/u/1")),
        "405 GET, DELETE"
    );
}

#[test]
fn params_get_and_spans_point_into_the_path() {
    let router = build(&[("r", "", "*", "= /repos/:owner/:repo/contents/*path")]);
    let path = b"/repos/o/r/contents/a/b.txt";
    let shardgate_router::Lookup::Found(m) = router.lookup(b"", b"GET", path) else {
        panic!("not found")
    };
    assert_eq!(m.params.len(), 3);
    assert_eq!(m.params.get("owner"), Some(&b"o"[..]));
    assert_eq!(m.params.get("path"), Some(&b"a/b.txt"[..]));
    assert_eq!(m.params.get("nope"), None);
    let spans: Vec<_> = m.params.spans().collect();
    assert_eq!(spans, vec![7..8, 9..10, 20..27]);
    assert_eq!(*m.value, 0);
}
