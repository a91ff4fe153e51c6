//! Filter tables → [`FilterSpec`]s. A table's `type` picks the filter from the
//! policy registry, its other keys override that filter's defaults, and the
//! result is built once against its route, so that every problem (an unknown
//! type or key, a bad value, a key file that cannot be read, a template
//! parameter the route does not capture) is reported with its field path.
//!
//! Key files (`pem_file`, `jwks_file`) are read here, when the configuration
//! is loaded; a relative path is relative to the current directory.

use super::Errors;
use crate::raw::RawFilter;
use crate::raw::filters::*;
use crate::units::{parse_base64, parse_duration};
use serde::de::DeserializeOwned;
use shardgate_policy::cors::CorsConfig;
use shardgate_policy::filter::{
    ApiKeyConfig, BodyLimitConfig, BuildContext, DirectResponseConfig, FilterSpec, HeadersConfig,
    IpFilterConfig, REGISTRY, RateKeySource, RateLimitConfig, RedirectConfig, RequestIdConfig,
    RewriteConfig, TraceContextConfig, lookup,
};
use shardgate_policy::headers::HeaderOpsConfig;
use shardgate_policy::jwt::{JwtConfig, KeyMaterial, KeySpec};
use std::time::Duration;

/// Where a chain is configured and what its filters may refer to.
pub(super) struct Scope<'a> {
    /// `routes[2]` or `tenants[0]`.
    pub path: &'a str,
    /// The parameters the route captures (none for a tenant's chain).
    pub params: &'a [&'a str],
    /// Whether requests through the chain have a tenant (`key = "tenant"`).
    pub tenant: bool,
}

/// Reads and checks a chain; every problem goes to `e`.
pub(super) fn chain(e: &mut Errors, scope: &Scope<'_>, raw: &[RawFilter]) -> Vec<FilterSpec> {
    let mut specs = Vec::new();
    for (j, table) in raw.iter().enumerate() {
        let path = format!("{}.filters[{j}]", scope.path);
        let before = e.0.len();
        let Some(spec) = spec(e, &path, scope, table) else {
            continue;
        };
        // A filter with refused fields is not built as well: that would report them twice.
        if e.0.len() == before
            && let Err(problems) = spec.build(&BuildContext {
                shards: 1,
                route_params: scope.params,
            })
        {
            for p in problems {
                e.push(&path, p.message);
            }
        }
        specs.push(spec);
    }
    specs
}

/// The registered filter names, for error messages.
fn known() -> String {
    let names: Vec<&str> = REGISTRY.iter().map(|(name, _, _)| *name).collect();
    names.join(", ")
}

fn spec(e: &mut Errors, path: &str, scope: &Scope<'_>, raw: &RawFilter) -> Option<FilterSpec> {
    let mut body = raw.0.clone();
    let type_path = format!("{path}.type");
    let name = match body.remove("type") {
        Some(toml::Value::String(name)) => name,
        Some(other) => {
            e.push(
                type_path,
                format!("expected a filter name, got {other}; known: {}", known()),
            );
            return None;
        }
        None => {
            e.push(type_path, format!("required; known: {}", known()));
            return None;
        }
    };
    let Some(default) = lookup(&name) else {
        e.push(
            type_path,
            format!("unknown filter {name:?}; known: {}", known()),
        );
        return None;
    };
    let body = toml::Value::Table(body);
    // One arm per policy filter: a filter added there needs its syntax here.
    let spec = match default {
        FilterSpec::ApiKey(d) => FilterSpec::ApiKey(api_key(read(e, path, body)?, d)),
        FilterSpec::Jwt(d) => {
            let r = read(e, path, body)?;
            FilterSpec::Jwt(jwt(e, path, r, d))
        }
        FilterSpec::RateLimit(d) => {
            let r = read(e, path, body)?;
            FilterSpec::RateLimit(rate_limit(e, path, scope, r, d))
        }
        FilterSpec::Headers(d) => FilterSpec::Headers(headers(read(e, path, body)?, d)),
        FilterSpec::Rewrite(d) => {
            let r = read(e, path, body)?;
            FilterSpec::Rewrite(rewrite(e, path, r, d))
        }
        FilterSpec::Redirect(d) => {
            let r: RawRedirect = read(e, path, body)?;
            FilterSpec::Redirect(RedirectConfig {
                status: status(e, &format!("{path}.status"), r.status, d.status),
                to: r.to.unwrap_or(d.to),
                keep_query: r.keep_query.unwrap_or(d.keep_query),
            })
        }
        FilterSpec::DirectResponse(d) => {
            let r: RawDirectResponse = read(e, path, body)?;
            FilterSpec::DirectResponse(DirectResponseConfig {
                status: status(e, &format!("{path}.status"), r.status, d.status),
                body: r.body.unwrap_or(d.body),
                content_type: r.content_type.unwrap_or(d.content_type),
            })
        }
        FilterSpec::Cors(d) => {
            let r = read(e, path, body)?;
            FilterSpec::Cors(cors(e, path, r, d))
        }
        FilterSpec::IpFilter(d) => {
            let r: RawIpFilter = read(e, path, body)?;
            FilterSpec::IpFilter(IpFilterConfig {
                allow: r.allow.unwrap_or(d.allow),
                deny: r.deny.unwrap_or(d.deny),
            })
        }
        FilterSpec::BodyLimit(d) => {
            let r: RawBodyLimit = read(e, path, body)?;
            FilterSpec::BodyLimit(BodyLimitConfig {
                max: e.size(&format!("{path}.max"), r.max.as_ref(), d.max),
            })
        }
        FilterSpec::RequestId(d) => {
            let r: RawRequestId = read(e, path, body)?;
            FilterSpec::RequestId(RequestIdConfig {
                header: r.header.unwrap_or(d.header),
                in_response: r.in_response.unwrap_or(d.in_response),
            })
        }
        FilterSpec::TraceContext(d) => {
            let r: RawTraceContext = read(e, path, body)?;
            FilterSpec::TraceContext(TraceContextConfig {
                sample_new: r.sample_new.unwrap_or(d.sample_new),
            })
        }
    };
    Some(spec)
}

/// The table (without `type`) as the filter's raw struct; unknown keys and
/// wrong types are reported against the filter, or the key when toml names it.
fn read<T: DeserializeOwned>(e: &mut Errors, path: &str, body: toml::Value) -> Option<T> {
    body.try_into()
        .map_err(|err: toml::de::Error| {
            // Without a span (a value, not text) the error reads "message" or
            // "message\nin `key.key`".
            let text = err.to_string();
            let text = text.trim_end();
            let keyed = text
                .rsplit_once("\nin `")
                .and_then(|(message, keys)| Some((message, keys.strip_suffix('`')?)));
            match keyed {
                Some((message, keys)) => e.push(format!("{path}.{keys}"), message),
                None => e.push(path, text),
            }
        })
        .ok()
}

/// The one value given among several alternatives, or an error listing them.
fn exactly_one<T>(
    e: &mut Errors,
    path: &str,
    names: &str,
    given: Vec<(&'static str, T)>,
) -> Option<(&'static str, T)> {
    match <[_; 1]>::try_from(given) {
        Ok([one]) => Some(one),
        Err(given) if given.is_empty() => {
            e.push(path, format!("give one of {names}"));
            None
        }
        Err(given) => {
            let got: Vec<&str> = given.iter().map(|(name, _)| *name).collect();
            e.push(
                path,
                format!("give only one of {names}, not {}", got.join(" and ")),
            );
            None
        }
    }
}

fn api_key(r: RawApiKey, d: ApiKeyConfig) -> ApiKeyConfig {
    let unless_empty = |v: String| (!v.is_empty()).then_some(v);
    ApiKeyConfig {
        keys: r.keys.map_or(d.keys, |keys| {
            keys.into_iter().map(|k| (k.sha256, k.consumer)).collect()
        }),
        header: r.header.map_or(d.header, unless_empty),
        query_param: r.query_param.map_or(d.query_param, unless_empty),
        consumer_header: r.consumer_header.unwrap_or(d.consumer_header),
        realm: r.realm.unwrap_or(d.realm),
    }
}

fn jwt(e: &mut Errors, path: &str, r: RawJwt, d: JwtConfig) -> JwtConfig {
    let keys = match r.keys {
        None => d.keys,
        Some(keys) => keys
            .into_iter()
            .enumerate()
            .filter_map(|(k, key)| jwt_key(e, &format!("{path}.keys[{k}]"), key))
            .collect(),
    };
    JwtConfig {
        keys,
        issuers: r.issuers.unwrap_or(d.issuers),
        audiences: r.audiences.unwrap_or(d.audiences),
        leeway: duration_or_zero(e, &format!("{path}.leeway"), r.leeway, d.leeway),
        require_exp: r.require_exp.unwrap_or(d.require_exp),
        required_claims: r.required_claims.unwrap_or(d.required_claims),
        forward_claims: r
            .forward_claims
            .map_or(d.forward_claims, |m| m.into_iter().collect()),
        realm: r.realm.unwrap_or(d.realm),
    }
}

/// Makes key material from one field's value; problems are reported at `path`.
type Material = fn(&mut Errors, &str, String) -> Option<KeyMaterial>;

fn jwt_key(e: &mut Errors, path: &str, k: RawJwtKey) -> Option<KeySpec> {
    let sources: [(&'static str, Option<String>, Material); 6] = [
        ("secret", k.secret, |_, _, v| {
            Some(KeyMaterial::Secret(v.into_bytes()))
        }),
        ("secret_base64", k.secret_base64, |e, path, v| {
            let bytes = parse_base64(&v);
            if bytes.is_none() {
                e.push(path, "not base64 (standard or URL-safe alphabet)");
            }
            bytes.map(KeyMaterial::Secret)
        }),
        ("pem", k.pem, |_, _, v| Some(KeyMaterial::Pem(v))),
        ("pem_file", k.pem_file, |e, path, v| {
            read_file(e, path, &v).map(KeyMaterial::Pem)
        }),
        ("jwks", k.jwks, |_, _, v| Some(KeyMaterial::Jwks(v))),
        ("jwks_file", k.jwks_file, |e, path, v| {
            read_file(e, path, &v).map(KeyMaterial::Jwks)
        }),
    ];
    let given = sources
        .into_iter()
        .filter_map(|(field, value, make)| Some((field, (value?, make))))
        .collect();
    let (field, (value, make)) = exactly_one(
        e,
        path,
        "secret, secret_base64, pem, pem_file, jwks, jwks_file",
        given,
    )?;
    Some(KeySpec {
        kid: k.kid,
        algorithms: k.algorithms.unwrap_or_default(),
        material: make(e, &format!("{path}.{field}"), value)?,
    })
}

fn read_file(e: &mut Errors, path: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .map_err(|err| e.push(path, format!("cannot read {file:?}: {err}")))
        .ok()
}

fn rate_limit(
    e: &mut Errors,
    path: &str,
    scope: &Scope<'_>,
    r: RawRateLimit,
    d: RateLimitConfig,
) -> RateLimitConfig {
    let per = e.duration(
        &format!("{path}.per"),
        r.per.as_ref(),
        crate::defaults::RATE_LIMIT_PER,
    );
    let rate = match r.rate {
        None => d.rate,
        Some(n) if n.is_finite() && n > 0.0 => n,
        Some(n) => {
            e.push(
                format!("{path}.rate"),
                format!("must be a positive number of requests per `per`, got {n}"),
            );
            d.rate
        }
    } / per.as_secs_f64();
    RateLimitConfig {
        rate,
        burst: r.burst.unwrap_or_else(|| rate.ceil().max(1.0)),
        key: rate_key(e, &format!("{path}.key"), scope, r.key.as_deref(), d.key),
        max_keys: e.int_in(
            &format!("{path}.max_keys"),
            r.max_keys,
            d.max_keys as u64,
            1,
            u64::from(u32::MAX),
        ) as usize,
    }
}

fn rate_key(
    e: &mut Errors,
    path: &str,
    scope: &Scope<'_>,
    key: Option<&str>,
    default: RateKeySource,
) -> RateKeySource {
    let Some(key) = key else { return default };
    match key {
        "route" => RateKeySource::Route,
        "client-ip" => RateKeySource::ClientIp,
        "consumer" => RateKeySource::Consumer,
        "tenant" if scope.tenant => RateKeySource::Tenant,
        "tenant" => {
            e.push(
                path,
                format!(
                    "\"tenant\" needs the route to belong to a tenant ({}.tenant)",
                    scope.path
                ),
            );
            default
        }
        _ => match key.strip_prefix("header:") {
            Some(name) if !name.is_empty() => RateKeySource::Header(name.to_ascii_lowercase()),
            _ => {
                e.push(
                    path,
                    format!(
                        "expected route, client-ip, consumer, tenant or header:NAME, got {key:?}"
                    ),
                );
                default
            }
        },
    }
}

fn headers(r: RawHeaders, d: HeadersConfig) -> HeadersConfig {
    let ops = |o: RawHeaderOps| HeaderOpsConfig {
        add: o.add.into_iter().collect(),
        set: o.set.into_iter().collect(),
        remove: o.remove,
    };
    HeadersConfig {
        request: r.request.map_or(d.request, ops),
        response: r.response.map_or(d.response, ops),
    }
}

fn rewrite(e: &mut Errors, path: &str, r: RawRewrite, d: RewriteConfig) -> RewriteConfig {
    let given = [
        (
            "strip_prefix",
            r.strip_prefix.map(RewriteConfig::StripPrefix),
        ),
        (
            "replace_prefix",
            r.replace_prefix.map(|p| RewriteConfig::ReplacePrefix {
                from: p.from,
                to: p.to,
            }),
        ),
        ("template", r.template.map(RewriteConfig::Template)),
    ]
    .into_iter()
    .filter_map(|(field, c)| Some((field, c?)))
    .collect();
    exactly_one(e, path, "strip_prefix, replace_prefix, template", given).map_or(d, |(_, c)| c)
}

fn cors(e: &mut Errors, path: &str, r: RawCors, d: CorsConfig) -> CorsConfig {
    let max_age = match r.max_age {
        None => d.max_age,
        Some(t) => Some(duration_or_zero(
            e,
            &format!("{path}.max_age"),
            Some(t),
            Duration::ZERO,
        )),
    };
    CorsConfig {
        origins: r.origins.unwrap_or(d.origins),
        methods: r.methods.unwrap_or(d.methods),
        headers: r.headers.unwrap_or(d.headers),
        expose_headers: r.expose_headers.unwrap_or(d.expose_headers),
        credentials: r.credentials.unwrap_or(d.credentials),
        max_age,
    }
}

/// An HTTP status as written; which statuses a filter takes, it checks itself.
fn status(e: &mut Errors, path: &str, v: Option<i64>, default: u16) -> u16 {
    let Some(n) = v else { return default };
    u16::try_from(n).unwrap_or_else(|_| {
        e.push(path, format!("{n} is not an HTTP status"));
        default
    })
}

/// A duration where zero is meaningful (a leeway, a max age).
fn duration_or_zero(e: &mut Errors, path: &str, v: Option<String>, default: Duration) -> Duration {
    match v.map(|t| parse_duration(&t)) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(m)) => {
            e.push(path, m);
            default
        }
    }
}
