//! The body of each filter table, by type, as written (the `type` key
//! removed). Every field is optional: what is left out keeps the filter's
//! default from `shardgate_policy::filter::lookup`. Maps (`set`, `add`,
//! `forward_claims`) are read in key order.

use super::RawSize;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `api-key`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    pub keys: Option<Vec<RawApiKeyEntry>>,
    /// `""`: no header (the query parameter only).
    pub header: Option<String>,
    pub query_param: Option<String>,
    pub consumer_header: Option<String>,
    pub realm: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKeyEntry {
    /// The key's SHA-256, 64 hex digits; never the key itself.
    pub sha256: String,
    pub consumer: String,
}

/// `jwt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    pub keys: Option<Vec<RawJwtKey>>,
    pub issuers: Option<Vec<String>>,
    pub audiences: Option<Vec<String>>,
    pub leeway: Option<String>,
    pub require_exp: Option<bool>,
    pub required_claims: Option<Vec<String>>,
    /// Claim -> header.
    pub forward_claims: Option<BTreeMap<String, String>>,
    pub realm: Option<String>,
}

/// One JWT key: exactly one of the material fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwtKey {
    pub kid: Option<String>,
    pub algorithms: Option<Vec<String>>,
    /// An HMAC secret, as UTF-8 text.
    pub secret: Option<String>,
    /// An HMAC secret, base64 (standard or URL-safe, padding optional).
    pub secret_base64: Option<String>,
    /// A PEM public key, inline.
    pub pem: Option<String>,
    pub pem_file: Option<String>,
    /// A JWKS document, inline JSON.
    pub jwks: Option<String>,
    pub jwks_file: Option<String>,
}

/// `rate-limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    /// Requests per `per`.
    pub rate: Option<f64>,
    /// A duration; one second when absent.
    pub per: Option<String>,
    pub burst: Option<f64>,
    /// `route`, `client-ip`, `consumer`, `tenant` or `header:NAME`.
    pub key: Option<String>,
    pub max_keys: Option<i64>,
}

/// `headers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaders {
    pub request: Option<RawHeaderOps>,
    pub response: Option<RawHeaderOps>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderOps {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `rewrite`: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRewrite {
    pub strip_prefix: Option<String>,
    pub replace_prefix: Option<RawReplacePrefix>,
    pub template: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReplacePrefix {
    pub from: String,
    pub to: String,
}

/// `redirect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedirect {
    pub status: Option<i64>,
    pub to: Option<String>,
    pub keep_query: Option<bool>,
}

/// `direct-response`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDirectResponse {
    pub status: Option<i64>,
    pub body: Option<String>,
    pub content_type: Option<String>,
}

/// `cors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    pub origins: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub credentials: Option<bool>,
    pub max_age: Option<String>,
}

/// `ip-filter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIpFilter {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// `body-limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBodyLimit {
    pub max: Option<RawSize>,
}

/// `request-id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequestId {
    pub header: Option<String>,
    pub in_response: Option<bool>,
}

/// `trace-context`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTraceContext {
    pub sample_new: Option<bool>,
}
