//! The filter model: what a route's (or tenant's) filter chain is made of.
//!
//! Every built-in filter is **one file** in this crate holding all of it: its
//! config struct and TOML syntax, its validation, its compiled form and what
//! it does to a request ([`BuiltIn`]), and **one line** in `builtins!`
//! below, which generates [`FilterSpec`] (a configured filter), [`Filter`]
//! (its compiled, shard-cloneable form), the [`REGISTRY`] of names and the
//! dispatch between them. Static dispatch throughout: a `match` over an
//! enum, no boxing of the filters.
//!
//! # How to write a new built-in filter
//!
//! 1. **One file**, `src/my_filter.rs`: a config struct (plain data, with a
//!    `Default`), the logic with time passed in, table-driven tests, and
//!    `impl BuiltIn for MyFilter`:
//!    - `NAME` (its `type` in the configuration) and `ABOUT`;
//!    - `parse`: read its TOML table into the config struct, reporting every
//!      problem with its field through [`ParseCx`];
//!    - `build`: validate and compile (problems as messages starting with
//!      their field);
//!    - `on_request`: go on or answer, adding lines upstream or to the
//!      response, rewriting the path ([`Cx`], [`Flow`]);
//!    - where needed: `declare` (what it owns in the heads, its body limit,
//!      its rate limits: [`Declare`]), `names_consumer` / `needs_consumer`
//!      (authentication, or counting by who calls), `claims` / `before`
//!      (requests that are its alone; lines every answer carries).
//! 2. **One line** in the `builtins!` list: `MyFilter(crate::my_filter::MyFilter),`
//!    (and `pub mod my_filter;` in `lib.rs`).
//!
//! The configuration then knows its `type` and the proxy runs it; neither
//! names a filter. Two tests ask for every registered filter by name, on
//! purpose: `configs/example.toml` must show it and the configuration's
//! syntax test must cover it. Per-shard mutable state (rate-limit buckets, the id and
//! trace generator) is not in a [`Filter`]: the chain hands it over in [`Cx`].

use std::fmt;

use crate::chain::{Cx, Declare, Flow};
use crate::syntax::ParseCx;

/// A problem in one filter's config: `filter` is the registry name, `message` starts with the
/// field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfigError {
    pub filter: &'static str,
    pub message: String,
}

impl fmt::Display for FilterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter {:?}: {}", self.filter, self.message)
    }
}

impl std::error::Error for FilterConfigError {}

type Errors = Vec<FilterConfigError>;

/// What a filter is when it is built for a route.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// Shards sharing global limits.
    pub shards: usize,
    /// Parameter names the route captures (for templates).
    pub route_params: &'a [&'a str],
}

/// A built-in filter: everything about it, in its own file.
pub trait BuiltIn: Sized + Clone + fmt::Debug {
    /// Its configuration: plain data, compared on reload.
    type Spec: Clone + fmt::Debug + PartialEq + Default;
    /// Its `type` in the configuration.
    const NAME: &'static str;
    /// One line about what it does.
    const ABOUT: &'static str;

    /// Reads its TOML table (without `type`); every problem goes to `cx`.
    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<Self::Spec>;

    /// Validates and compiles; problems are messages starting with their
    /// field (`keys[0].sha256: ...`).
    fn build(spec: &Self::Spec, cx: &BuildContext<'_>) -> Result<Self, Vec<String>>;

    /// What it owns in the heads, its body limit, its rate limits.
    fn declare(&mut self, _d: &mut Declare<'_>) {}

    /// The request phase: go on, or answer.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f>;

    /// It says who the consumer is (sets [`Cx::consumer`]), for filters
    /// after it that need one (api-key, jwt).
    fn names_consumer(_spec: &Self::Spec) -> bool {
        false
    }

    /// It needs a filter that names the consumer before it in the chain; the
    /// field that asks for it (`key` of a rate limit keyed by consumer).
    fn needs_consumer(_spec: &Self::Spec) -> Option<&'static str> {
        None
    }

    /// Settings that are valid but probably not meant (`shardgate check`
    /// prints them): one message each, starting with the field.
    fn warnings(_spec: &Self::Spec) -> Vec<String> {
        Vec::new()
    }

    /// Some requests are this filter's alone (a CORS preflight): when one is,
    /// only the filters claiming it run.
    fn claims(&self, _cx: &Cx<'_, '_>) -> bool {
        false
    }

    /// Runs before any filter of the chain decides, for requests no filter
    /// claims, so that even another filter's answer carries what it adds (the
    /// CORS headers of an actual request).
    fn before(&self, _cx: &mut Cx<'_, '_>) {}
}

/// A registered built-in: its config name, one line of doc, and its default spec.
pub type Registered = (&'static str, &'static str, fn() -> FilterSpec);

/// Generates the filter enums, the registry and the dispatch from the list
/// of built-ins.
macro_rules! builtins {
    ($($variant:ident($ty:ty),)*) => {
        /// One configured filter.
        #[derive(Debug, Clone, PartialEq)]
        pub enum FilterSpec {
            $($variant(<$ty as BuiltIn>::Spec),)*
        }

        /// A compiled filter: immutable, cloned into each shard.
        #[derive(Debug, Clone)]
        pub enum Filter {
            $($variant($ty),)*
        }

        /// Every built-in filter, by config name.
        pub const REGISTRY: &[Registered] = &[
            $((<$ty as BuiltIn>::NAME, <$ty as BuiltIn>::ABOUT, || {
                FilterSpec::$variant(Default::default())
            }),)*
        ];

        impl FilterSpec {
            /// The registry name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(FilterSpec::$variant(_) => <$ty as BuiltIn>::NAME,)*
                }
            }

            /// Reads the table of the filter registered as `name` (without
            /// `type`); `None` for an unknown name, `Some(None)` when the
            /// table has problems (they are in `cx`).
            pub fn parse(
                name: &str,
                cx: &mut ParseCx<'_>,
                body: toml::Value,
            ) -> Option<Option<FilterSpec>> {
                $(if name == <$ty as BuiltIn>::NAME {
                    return Some(<$ty as BuiltIn>::parse(cx, body).map(FilterSpec::$variant));
                })*
                None
            }

            /// Compiles for a route.
            pub fn build(&self, cx: &BuildContext<'_>) -> Result<Filter, Errors> {
                let built = match self {
                    $(FilterSpec::$variant(s) => <$ty as BuiltIn>::build(s, cx).map(Filter::$variant),)*
                };
                built.map_err(|messages| {
                    messages
                        .into_iter()
                        .map(|message| FilterConfigError {
                            filter: self.name(),
                            message,
                        })
                        .collect()
                })
            }

            /// It says who the consumer is.
            pub fn names_consumer(&self) -> bool {
                match self {
                    $(FilterSpec::$variant(s) => <$ty as BuiltIn>::names_consumer(s),)*
                }
            }

            /// It needs a filter naming the consumer before it: the field
            /// that asks for one.
            pub fn needs_consumer(&self) -> Option<&'static str> {
                match self {
                    $(FilterSpec::$variant(s) => <$ty as BuiltIn>::needs_consumer(s),)*
                }
            }

            /// Settings that are valid but probably not meant.
            pub fn warnings(&self) -> Vec<String> {
                match self {
                    $(FilterSpec::$variant(s) => <$ty as BuiltIn>::warnings(s),)*
                }
            }
        }

        impl Filter {
            /// The registry name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Filter::$variant(_) => <$ty as BuiltIn>::NAME,)*
                }
            }

            /// What the filter owns in the heads, its body limit and rate
            /// limits (when its chain is built).
            pub fn declare(&mut self, d: &mut Declare<'_>) {
                match self {
                    $(Filter::$variant(f) => f.declare(d),)*
                }
            }

            /// The request phase: go on, or answer.
            pub fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
                match self {
                    $(Filter::$variant(f) => f.on_request(cx),)*
                }
            }

            /// The request is this filter's alone.
            pub fn claims(&self, cx: &Cx<'_, '_>) -> bool {
                match self {
                    $(Filter::$variant(f) => f.claims(cx),)*
                }
            }

            /// Runs before any filter of the chain decides.
            pub fn before(&self, cx: &mut Cx<'_, '_>) {
                match self {
                    $(Filter::$variant(f) => f.before(cx),)*
                }
            }
        }
    };
}

builtins! {
    ApiKey(crate::api_key::ApiKeyAuth),
    Jwt(crate::jwt::JwtFilter),
    RateLimit(crate::rate_limit::RateLimit),
    Quota(crate::quota::Quota),
    Headers(crate::headers::HeaderRules),
    Rewrite(crate::rewrite::PathRewrite),
    Redirect(crate::rewrite::Redirect),
    DirectResponse(crate::direct_response::DirectResponse),
    Cors(crate::cors::Cors),
    IpFilter(crate::cidr::IpRules),
    BodyLimit(crate::body_limit::BodyLimit),
    RequestId(crate::request_id::RequestIdFilter),
    TraceContext(crate::traceparent::TraceContextFilter),
}

/// The default spec for a config name, or `None` for an unknown filter.
pub fn lookup(name: &str) -> Option<FilterSpec> {
    REGISTRY
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, make)| make())
}

impl FilterSpec {
    /// The name of the fleet-wide limit it takes part in (`scope = "fleet"`), if any.
    pub fn fleet_limit(&self) -> Option<&str> {
        match self {
            FilterSpec::RateLimit(c) => c.fleet.as_deref(),
            FilterSpec::Quota(c) => Some(&c.name),
            _ => None,
        }
    }

    /// Every problem in the config (route-independent checks).
    pub fn validate(&self) -> Result<(), Errors> {
        self.build(&BuildContext {
            shards: 1,
            route_params: &[],
        })
        .map(|_| ())
        .or_else(|e| {
            // Template parameters are checked against the route in `build`; without a route
            // they are not an error here.
            let rest: Errors = e
                .into_iter()
                .filter(|e| !e.message.contains("which the route does not capture"))
                .collect();
            if rest.is_empty() { Ok(()) } else { Err(rest) }
        })
    }
}

/// Validate a whole chain, prefixing each message with its position (`filters[2]`).
pub fn validate_chain(chain: &[FilterSpec]) -> Result<(), Errors> {
    let mut all = Errors::new();
    for (i, f) in chain.iter().enumerate() {
        if let Err(e) = f.validate() {
            all.extend(e.into_iter().map(|mut e| {
                e.message = format!("filters[{i}].{}", e.message);
                e
            }));
        }
    }
    if all.is_empty() { Ok(()) } else { Err(all) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::ApiKeyConfig;
    use crate::body_limit::BodyLimitConfig;
    use crate::cidr::IpFilterConfig;
    use crate::direct_response::DirectResponseConfig;
    use crate::headers::{HeaderOpsConfig, HeadersConfig};
    use crate::jwt::JwtConfig;
    use crate::rate_limit::{RateKeySource, RateLimitConfig};
    use crate::request_id::RequestIdConfig;
    use crate::rewrite::{RedirectConfig, RewriteConfig};

    #[test]
    fn registry_names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = REGISTRY.iter().map(|(n, _, _)| *n).collect();
        for n in &names {
            assert_eq!(lookup(n).unwrap().name(), *n);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        assert!(lookup("no-such-filter").is_none());
    }

    #[test]
    fn defaults_that_need_no_input_are_valid() {
        // Filters whose defaults are complete on their own; the rest need keys or origins.
        for name in [
            "rate-limit",
            "headers",
            "redirect",
            "direct-response",
            "ip-filter",
            "body-limit",
            "request-id",
            "trace-context",
        ] {
            let spec = lookup(name).unwrap();
            assert!(spec.validate().is_ok(), "{name}: {:?}", spec.validate());
        }
        for name in ["api-key", "jwt", "cors"] {
            assert!(lookup(name).unwrap().validate().is_err(), "{name}");
        }
    }

    #[test]
    fn errors_name_the_filter_and_field() {
        let cases: Vec<(FilterSpec, &str)> = vec![
            (
                FilterSpec::RateLimit(RateLimitConfig {
                    rate: 0.0,
                    ..Default::default()
                }),
                "filter \"rate-limit\": rate: rate must be a positive number, got 0",
            ),
            (
                FilterSpec::RateLimit(RateLimitConfig {
                    key: RateKeySource::Header("x y".into()),
                    ..Default::default()
                }),
                "filter \"rate-limit\": key.header: \"x y\" is not a header name",
            ),
            (
                FilterSpec::ApiKey(ApiKeyConfig {
                    keys: vec![("zz".into(), "c".into())],
                    ..Default::default()
                }),
                "filter \"api-key\": keys[0].sha256: expected 64 hex digits",
            ),
            (
                FilterSpec::DirectResponse(DirectResponseConfig {
                    status: 99,
                    ..Default::default()
                }),
                "filter \"direct-response\": status: 99 is not 200..=599",
            ),
            (
                FilterSpec::Redirect(RedirectConfig {
                    status: 303,
                    ..Default::default()
                }),
                "filter \"redirect\": redirect status 303",
            ),
            (
                FilterSpec::IpFilter(IpFilterConfig {
                    allow: vec!["10.0.0.1/8".into()],
                    ..Default::default()
                }),
                "filter \"ip-filter\": allow[0]: \"10.0.0.1/8\" has host bits set",
            ),
            (
                FilterSpec::Headers(HeadersConfig {
                    response: HeaderOpsConfig {
                        remove: vec!["Connection".into()],
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                "filter \"headers\": response.remove[0]: \"Connection\" is managed",
            ),
            (
                FilterSpec::Jwt(JwtConfig::default()),
                "filter \"jwt\": keys: at least one key is required",
            ),
            (
                FilterSpec::ApiKey(ApiKeyConfig {
                    keys: vec![(crate::api_key::hash_key("k"), "c".into())],
                    consumer_header: "Transfer-Encoding".into(),
                    ..Default::default()
                }),
                "filter \"api-key\": consumer_header: \"Transfer-Encoding\" is managed",
            ),
            (
                FilterSpec::RequestId(RequestIdConfig {
                    header: "host".into(),
                    in_response: true,
                }),
                "filter \"request-id\": header: \"host\" is managed",
            ),
            (
                FilterSpec::Headers(HeadersConfig {
                    request: HeaderOpsConfig {
                        add: vec![("X-Forwarded-For".into(), "1.2.3.4".into())],
                        ..Default::default()
                    },
                    ..Default::default()
                }),
                "filter \"headers\": request.add[0]: \"X-Forwarded-For\" is managed",
            ),
        ];
        for (spec, want) in cases {
            let e = spec.validate().unwrap_err();
            assert!(e[0].to_string().starts_with(want), "{e:?}");
        }
    }

    #[test]
    fn templates_are_checked_against_the_route_at_build() {
        let spec = FilterSpec::Rewrite(RewriteConfig::Template("/v2/users/{id}".into()));
        assert!(spec.validate().is_ok());
        let ok = BuildContext {
            shards: 2,
            route_params: &["id"],
        };
        assert!(matches!(spec.build(&ok), Ok(Filter::Rewrite(_))));
        let none = BuildContext {
            shards: 2,
            route_params: &[],
        };
        let e = spec.build(&none).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "filter \"rewrite\": template: template \"/v2/users/{id}\" uses {id}, which the route does not capture"
        );
    }

    #[test]
    fn chain_validation_prefixes_positions() {
        let chain = vec![
            FilterSpec::RequestId(Default::default()),
            FilterSpec::BodyLimit(Default::default()),
            FilterSpec::RequestId(RequestIdConfig {
                header: "bad header".into(),
                in_response: false,
            }),
        ];
        let e = validate_chain(&chain).unwrap_err();
        assert_eq!(
            e.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["filter \"request-id\": filters[2].header: \"bad header\" is not a header name"]
        );
        assert!(validate_chain(&chain[..2]).is_ok());
    }

    #[test]
    fn rate_limit_build_shares_over_the_shards() {
        let spec = FilterSpec::RateLimit(RateLimitConfig {
            rate: 1000.0,
            burst: 50.0,
            key: RateKeySource::Tenant,
            max_keys: 10,
            fleet: None,
        });
        let Ok(Filter::RateLimit(r)) = spec.build(&BuildContext {
            shards: 4,
            route_params: &[],
        }) else {
            panic!("build failed");
        };
        assert_eq!(
            (r.limit.shards, r.limit.max_keys, r.key),
            (4, 10, RateKeySource::Tenant)
        );
        assert_eq!(
            spec.needs_consumer(),
            None,
            "a tenant key needs no consumer"
        );
        assert!(!spec.names_consumer());
        assert!(FilterSpec::ApiKey(ApiKeyConfig::default()).names_consumer());
        assert_eq!(
            FilterSpec::BodyLimit(BodyLimitConfig { max: 7 }).name(),
            "body-limit"
        );
    }
}
