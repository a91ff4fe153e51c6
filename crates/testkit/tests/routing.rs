//! The router in the proxy: hosts, methods, params, prefixes, and path
//! normalisation that cannot be used to slip past a more specific route.

use shardgate_config::Driver;
use shardgate_testkit::{DRIVERS, MockUpstream, RawClient, TestGateway};

fn driver_name(d: Driver) -> &'static str {
    if d == Driver::Uring {
        "uring"
    } else {
        "legacy"
    }
}

fn gateway(
    driver: Driver,
    admin: &MockUpstream,
    public: &MockUpstream,
    api: &MockUpstream,
) -> TestGateway {
    let text = format!(
        "workers = 1\ndriver = \"{}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [upstreams.admin]\nendpoints = [\"{}\"]\n[upstreams.public]\nendpoints = [\"{}\"]\n\
         [upstreams.api]\nendpoints = [\"{}\"]\n\
         [[routes]]\nname = \"admin\"\nprefix = \"/admin\"\nupstream = \"admin\"\n\
         [[routes]]\nname = \"public\"\nprefix = \"/\"\nupstream = \"public\"\n\
         [[routes]]\nname = \"user\"\npath = \"/users/:id\"\nmethods = [\"GET\"]\nupstream = \"api\"\n\
         [[routes]]\nname = \"tenant\"\nhosts = [\"*.tenant.example\"]\nprefix = \"/\"\nupstream = \"api\"\n",
        driver_name(driver),
        admin.addr(),
        public.addr(),
        api.addr()
    );
    TestGateway::start(shardgate_config::from_toml(&text).unwrap())
}

fn get(gw: &TestGateway, host: &str, target: &str) -> (u16, String) {
    let mut c = RawClient::connect(gw.addr());
    c.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    let r = c.read_response().expect("a response");
    (r.status, r.body_str())
}

#[test]
fn encoded_and_dotted_paths_cannot_bypass_a_route() {
    for driver in DRIVERS {
        let (admin, public, api) = (
            MockUpstream::ok("admin"),
            MockUpstream::ok("public"),
            MockUpstream::ok("api"),
        );
        let gw = gateway(driver, &admin, &public, &api);
        let cases: &[(&str, &str, &str)] = &[
            ("/admin/x", "admin", "/admin/x"),
            ("/%61dmin/x", "admin", "/admin/x"),
            ("/%61%64%6d%69%6e", "admin", "/admin"),
            ("/public/../admin/x", "admin", "/admin/x"),
            ("/public/%2e%2e/admin", "admin", "/admin"),
            ("//admin", "admin", "/admin"),
            ("/./admin?q=1", "admin", "/admin?q=1"),
            ("/adminx", "public", "/adminx"),
            ("/public/file", "public", "/public/file"),
        ];
        for (target, want, forwarded) in cases {
            let (status, body) = get(&gw, "a.example", target);
            assert_eq!((status, body.as_str()), (200, *want), "{driver:?} {target}");
            let last = if *want == "admin" {
                admin.requests()
            } else {
                public.requests()
            };
            let line = last.last().unwrap().request_line();
            assert_eq!(
                line,
                format!("GET {forwarded} HTTP/1.1"),
                "{driver:?}: the upstream sees what was routed"
            );
        }
        // Climbing above the root is refused.
        assert_eq!(get(&gw, "a.example", "/../etc/passwd").0, 400, "{driver:?}");
        assert_eq!(
            get(&gw, "a.example", "/a/%2e%2e/%2e%2e/x").0,
            400,
            "{driver:?}"
        );
    }
}

#[test]
fn params_methods_and_hosts() {
    for driver in DRIVERS {
        let (admin, public, api) = (
            MockUpstream::ok("admin"),
            MockUpstream::ok("public"),
            MockUpstream::ok("api"),
        );
        let gw = gateway(driver, &admin, &public, &api);
        assert_eq!(
            get(&gw, "a.example", "/users/42"),
            (200, "api".into()),
            "{driver:?}"
        );
        // A wildcard host has its own scope: no fall-through to the default routes.
        assert_eq!(get(&gw, "x.tenant.example", "/admin"), (200, "api".into()));
        assert_eq!(
            get(&gw, "X.Tenant.Example:8080", "/users/1"),
            (200, "api".into())
        );
        let mut c = RawClient::connect(gw.addr());
        c.send(b"DELETE /users/42 HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        // The most specific route decides: a method it does not take is a 405,
        // never the catch-all's.
        assert_eq!(r.status, 405, "{driver:?}");
        assert!(
            r.header("allow").is_some_and(|a| a.contains("GET")),
            "{driver:?}"
        );
        c.send(b"DELETE /elsewhere HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.read_response().unwrap();
        assert_eq!(
            r.status, 200,
            "the prefix route / takes other methods ({driver:?})"
        );
        assert_eq!(r.body_str(), "public");
    }
}
