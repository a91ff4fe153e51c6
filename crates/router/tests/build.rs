//! Table-driven inserts: which routes a table accepts, which it rejects, and the message.

mod support {
    pub mod table;
}

use shardgate_router::{BuildError, Method, RouteSpec, RouterBuilder};
use support::table::{Row, spec};

/// Inserts `first` then `second`; the second insert's error message, or "ok".
fn second_insert(first: Row<'_>, second: Row<'_>) -> String {
    let mut b = RouterBuilder::new();
    b.insert(spec(first), 0)
        .unwrap_or_else(|e| panic!("first route: {e}"));
    match b.insert(spec(second), 1) {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn conflict_table() {
    let cases: &[(Row<'_>, Row<'_>, &str)] = &[
        // Same shape, shared method, shared scope: rejected, naming both.
        (
            ("users-a", "api.example.com", "GET", "= /users/:id"),
            ("users-b", "api.example.com", "GET", "= /users/:uid"),
            r#"route "users-b" conflicts with route "users-a": both match GET /users/:uid on host api.example.com"#,
        ),
        (
            ("a", "", "*", "= /x"),
            ("b", "", "*", "= /x"),
            r#"route "b" conflicts with route "a": both match any method /x on the default host"#,
        ),
        (
            ("a", "", "*", "= /x"),
            ("b", "", "POST PUT", "= /x"),
            r#"route "b" conflicts with route "a": both match POST, PUT /x on the default host"#,
        ),
        (
            ("a", "", "GET POST", "= /x"),
            ("b", "", "DELETE POST", "= /x"),
            r#"route "b" conflicts with route "a": both match POST /x on the default host"#,
        ),
        (
            ("a", "", "PURGE", "= /x"),
            ("b", "", "PURGE", "= /x"),
            r#"route "b" conflicts with route "a": both match PURGE /x on the default host"#,
        ),
        (
            ("a", "", "*", "= /s/*rest"),
            ("b", "", "GET", "= /s/*path"),
            r#"route "b" conflicts with route "a": both match GET /s/*path on the default host"#,
        ),
        (
            ("a", "", "*", "^ /api"),
            ("b", "", "*", "^ /api/"),
            r#"route "b" conflicts with route "a": both match any method prefix /api/ on the default host"#,
        ),
        (
            ("a", "*.example.com", "*", "^ /"),
            ("b", "*.EXAMPLE.com", "GET", "^ /"),
            r#"route "b" conflicts with route "a": both match GET prefix / on host *.example.com"#,
        ),
        (
            ("a", "x.com y.com", "*", "= /"),
            ("b", "z.com Y.com:", "*", "= /"),
            r#"route "b": host "Y.com:" is not a host name (letters, digits, '-', '_' in dot-separated labels, optionally a leading '*.'; no port)"#,
        ),
        (
            ("a", "x.com y.com", "*", "= /"),
            ("b", "z.com Y.com.", "*", "= /"),
            r#"route "b" conflicts with route "a": both match any method / on host y.com"#,
        ),
        // Not conflicts: another method, scope, shape or kind.
        (
            ("a", "", "GET", "= /users/:id"),
            ("b", "", "DELETE", "= /users/:uid"),
            "ok",
        ),
        (("a", "a.com", "*", "= /x"), ("b", "", "*", "= /x"), "ok"),
        (
            ("a", "a.com", "*", "= /x"),
            ("b", "*.a.com", "*", "= /x"),
            "ok",
        ),
        (
            ("a", "", "*", "= /users/:id"),
            ("b", "", "*", "= /users/new"),
            "ok",
        ),
        (
            ("a", "", "*", "= /users/:id"),
            ("b", "", "*", "= /users/*rest"),
            "ok",
        ),
        (
            ("a", "", "*", "= /users/:id"),
            ("b", "", "*", "= /:x/:y"),
            "ok",
        ),
        (("a", "", "*", "= /x"), ("b", "", "*", "= /x/"), "ok"),
        (("a", "", "*", "= /x"), ("b", "", "*", "^ /x"), "ok"),
        (("a", "", "*", "^ /x"), ("b", "", "*", "^ /x/y"), "ok"),
        (("a", "", "*", "^ /x"), ("b", "", "*", "^ /xy"), "ok"),
        (("a", "", "PURGE", "= /x"), ("b", "", "GET", "= /x"), "ok"),
        // Invalid routes.
        (
            ("a", "", "*", "= /x"),
            ("a", "", "*", "= /y"),
            r#"route "a" is defined twice"#,
        ),
        (
            ("a", "", "*", "= /x"),
            ("b", "", "*", "= /%61"),
            r#"route "b": path "/%61" is not a normalised path, so no request could match it; its normal form is "/a""#,
        ),
        (
            ("a", "", "*", "= /x"),
            ("b", "", "*", "^ /:v"),
            r#"route "b": path "/:v" a prefix route cannot have parameters"#,
        ),
        (
            ("a", "", "*", "= /x"),
            ("b", "*", "*", "= /y"),
            r#"route "b": host "*" is not a host name (letters, digits, '-', '_' in dot-separated labels, optionally a leading '*.'; no port)"#,
        ),
    ];
    for (first, second, want) in cases {
        assert_eq!(
            second_insert(*first, *second),
            *want,
            "{first:?} then {second:?}"
        );
    }
}

#[test]
fn build_reports_every_failed_insert() {
    let mut b = RouterBuilder::new();
    b.insert(RouteSpec::exact("a", "/x").host("b.com"), 0)
        .unwrap();
    let err = b
        .insert(RouteSpec::exact("b", "/x").host("a.com").host("b.com"), 1)
        .unwrap_err();
    assert!(matches!(err, BuildError::Conflict { .. }));
    b.insert(RouteSpec::exact("c", "nope"), 2).unwrap_err();
    let errors = b.build().unwrap_err();
    assert_eq!(errors.len(), 2);
    assert!(
        errors[1].to_string().contains("must start with '/'"),
        "{}",
        errors[1]
    );
}

#[test]
fn empty_method_list_and_bad_tokens_are_rejected() {
    let mut b: RouterBuilder<()> = RouterBuilder::new();
    let mut s = RouteSpec::exact("a", "/x");
    s.methods = Some(vec![]);
    assert_eq!(
        b.insert(s, ()),
        Err(BuildError::NoMethods { route: "a".into() })
    );
    let s = RouteSpec::exact("b", "/x").method(Method::Extension("BAD METHOD".into()));
    assert!(matches!(
        b.insert(s, ()),
        Err(BuildError::InvalidMethod { .. })
    ));
}

#[test]
fn too_many_extension_methods_is_an_error_not_a_wrap() {
    let mut b = RouterBuilder::new();
    let max = shardgate_router::MAX_EXTENSION_METHODS;
    for i in 0..max {
        b.insert(
            RouteSpec::exact(format!("r{i}"), format!("/m{i}"))
                .method(Method::Extension(format!("M{i}"))),
            i,
        )
        .unwrap();
    }
    let over = RouteSpec::exact("over", "/over").method(Method::Extension("ONE-MORE".into()));
    assert!(matches!(
        b.insert(over, max),
        Err(BuildError::TooManyExtensionMethods { .. })
    ));
    // Reusing a numbered extension method is still fine.
    b.insert(
        RouteSpec::exact("again", "/again").method(Method::Extension("M0".into())),
        0,
    )
    .unwrap();
}
