//! API-key authentication: keys are configured as SHA-256 digests (hex), each naming the
//! consumer it belongs to; a request presents the key in a header or a query parameter.
//!
//! A presented key is hashed once, then compared with **every** configured digest in constant
//! time (no early exit, the matching index picked with constant-time selection), so neither the
//! position of the match nor the length of a common prefix shows in the timing. The gateway
//! never holds the keys themselves: `shardgate` can print the digest to paste into the config
//! with [`hash_key`].
//!
//! Outcomes map to statuses: no key → 401 with `WWW-Authenticate: ApiKey realm="..."`; a key
//! that matches nothing → 403; a match → the consumer name, which the proxy forwards upstream
//! in a header and which can key a rate limit.

use crate::chain::{Cx, Declare, Flow, line};
use crate::filter::{BuildContext, BuiltIn};
use crate::headers::{is_managed, is_token};
use crate::syntax::ParseCx;
use serde::Deserialize;
use std::fmt;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Default header carrying the key.
pub const DEFAULT_HEADER: &str = "x-api-key";
/// Default header the consumer name is forwarded upstream in.
pub const DEFAULT_CONSUMER_HEADER: &str = "x-consumer";
/// Default realm in the `WWW-Authenticate` challenge.
pub const DEFAULT_REALM: &str = "shardgate";
/// Longest key accepted from a query parameter once percent-decoded.
pub const MAX_KEY_LEN: usize = 512;

/// A SHA-256 digest.
pub type KeyDigest = [u8; 32];

/// The lowercase hex SHA-256 digest of `key`, as it goes into the config.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parse 64 hex digits (either case) into a digest.
pub fn parse_digest(hex: &str) -> Option<KeyDigest> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    Some(out)
}

/// A configuration problem, naming the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyError {
    /// `keys[index].sha256` is not 64 hex digits.
    BadDigest { index: usize, value: String },
    /// `keys[index].consumer` is empty or not a valid header value.
    BadConsumer { index: usize, value: String },
    /// Two entries carry the same digest.
    Duplicate { first: usize, second: usize },
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKeyError::BadDigest { index, value } => write!(
                f,
                "keys[{index}].sha256: expected 64 hex digits, got {value:?}"
            ),
            ApiKeyError::BadConsumer { index, value } => write!(
                f,
                "keys[{index}].consumer: must be a non-empty header value, got {value:?}"
            ),
            ApiKeyError::Duplicate { first, second } => {
                write!(f, "keys[{second}].sha256: same key as keys[{first}]")
            }
        }
    }
}

impl std::error::Error for ApiKeyError {}

/// Digests and the consumers they belong to.
#[derive(Debug, Clone)]
pub struct KeyStore {
    digests: Vec<KeyDigest>,
    consumers: Vec<Box<str>>,
}

impl KeyStore {
    /// Build from `(sha256 hex, consumer)` pairs; every bad entry is reported.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<KeyStore, Vec<ApiKeyError>> {
        let mut errors = Vec::new();
        let mut seen: Vec<(KeyDigest, usize)> = Vec::new();
        let mut store = KeyStore {
            digests: Vec::new(),
            consumers: Vec::new(),
        };
        for (index, (hex, consumer)) in entries.into_iter().enumerate() {
            let digest = parse_digest(hex.trim());
            if digest.is_none() {
                errors.push(ApiKeyError::BadDigest {
                    index,
                    value: hex.to_owned(),
                });
            }
            let consumer_ok = !consumer.is_empty()
                && consumer
                    .bytes()
                    .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
            if !consumer_ok {
                errors.push(ApiKeyError::BadConsumer {
                    index,
                    value: consumer.to_owned(),
                });
            }
            let Some(digest) = digest else { continue };
            if let Some(&(_, first)) = seen.iter().find(|(d, _)| *d == digest) {
                errors.push(ApiKeyError::Duplicate {
                    first,
                    second: index,
                });
            }
            seen.push((digest, index));
            store.digests.push(digest);
            store.consumers.push(consumer.into());
        }
        if errors.is_empty() {
            Ok(store)
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The consumer whose key this is, comparing against every digest in constant time.
    pub fn lookup(&self, presented: &[u8]) -> Option<&str> {
        let digest: KeyDigest = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, d) in self.digests.iter().enumerate() {
            let hit = d.ct_eq(&digest);
            index.conditional_assign(&(i as u32), hit);
            found |= hit;
        }
        bool::from(found).then(|| &*self.consumers[index as usize])
    }
}

/// What a request's key amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyOutcome<'a> {
    /// No key presented: 401 with the challenge.
    Missing,
    /// A key that matches no consumer (or cannot be decoded): 403.
    Invalid,
    /// The consumer the key belongs to.
    Valid(&'a str),
}

impl ApiKeyOutcome<'_> {
    /// The status to answer with, or `None` to let the request through.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiKeyOutcome::Missing => Some(401),
            ApiKeyOutcome::Invalid => Some(403),
            ApiKeyOutcome::Valid(_) => None,
        }
    }
}

/// The filter's runtime form: where the key comes from, the store, and the canned challenge.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    pub store: KeyStore,
    /// Header carrying the key (lowercase), if keys may come in a header.
    pub header: Option<Box<str>>,
    /// Query parameter carrying the key, if keys may come in the query.
    pub query_param: Option<Box<str>>,
    /// Header the consumer name is forwarded in.
    pub consumer_header: Box<str>,
    challenge: Box<str>,
}

impl ApiKeyAuth {
    pub fn new(
        store: KeyStore,
        header: Option<&str>,
        query_param: Option<&str>,
        consumer_header: &str,
        realm: &str,
    ) -> ApiKeyAuth {
        let realm: String = realm
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        ApiKeyAuth {
            store,
            header: header.map(|h| h.to_ascii_lowercase().into()),
            query_param: query_param.map(Into::into),
            consumer_header: consumer_header.to_ascii_lowercase().into(),
            challenge: format!("ApiKey realm=\"{realm}\"").into(),
        }
    }

    /// The `WWW-Authenticate` value for a 401.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// Decide from the configured header's value (if the request has it) and the request's
    /// query string (after `?`, if any). The header wins when both are present.
    pub fn check(&self, header_value: Option<&[u8]>, query: Option<&[u8]>) -> ApiKeyOutcome<'_> {
        if let Some(v) = header_value.filter(|v| !v.is_empty()) {
            return self.judge(v);
        }
        let (Some(name), Some(q)) = (self.query_param.as_deref(), query) else {
            return ApiKeyOutcome::Missing;
        };
        let Some(raw) = find_query_param(q, name.as_bytes()).filter(|v| !v.is_empty()) else {
            return ApiKeyOutcome::Missing;
        };
        let mut buf = [0u8; MAX_KEY_LEN];
        match percent_decode(raw, &mut buf) {
            Some(key) => self.judge(key),
            None => ApiKeyOutcome::Invalid,
        }
    }

    fn judge(&self, key: &[u8]) -> ApiKeyOutcome<'_> {
        match self.store.lookup(key) {
            Some(consumer) => ApiKeyOutcome::Valid(consumer),
            None => ApiKeyOutcome::Invalid,
        }
    }
}

/// `api-key`: keys as SHA-256 hex digests with their consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// `(sha256 hex, consumer)`.
    pub keys: Vec<(String, String)>,
    pub header: Option<String>,
    pub query_param: Option<String>,
    pub consumer_header: String,
    pub realm: String,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        ApiKeyConfig {
            keys: Vec::new(),
            header: Some(DEFAULT_HEADER.into()),
            query_param: None,
            consumer_header: DEFAULT_CONSUMER_HEADER.into(),
            realm: DEFAULT_REALM.into(),
        }
    }
}

/// The TOML table: every field optional (defaults from [`ApiKeyConfig`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    keys: Option<Vec<RawApiKeyEntry>>,
    /// `""`: no header (the query parameter only).
    header: Option<String>,
    query_param: Option<String>,
    consumer_header: Option<String>,
    realm: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKeyEntry {
    /// The key's SHA-256, 64 hex digits; never the key itself.
    sha256: String,
    consumer: String,
}

impl BuiltIn for ApiKeyAuth {
    type Spec = ApiKeyConfig;
    const NAME: &'static str = "api-key";
    const ABOUT: &'static str = "API key from a header or query parameter -> consumer";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<ApiKeyConfig> {
        let r: RawApiKey = cx.read(body)?;
        let d = ApiKeyConfig::default();
        let unless_empty = |v: String| (!v.is_empty()).then_some(v);
        Some(ApiKeyConfig {
            keys: r.keys.map_or(d.keys, |keys| {
                keys.into_iter().map(|k| (k.sha256, k.consumer)).collect()
            }),
            header: r.header.map_or(d.header, unless_empty),
            query_param: r.query_param.map_or(d.query_param, unless_empty),
            consumer_header: r.consumer_header.unwrap_or(d.consumer_header),
            realm: r.realm.unwrap_or(d.realm),
        })
    }

    fn build(c: &ApiKeyConfig, _: &BuildContext<'_>) -> Result<ApiKeyAuth, Vec<String>> {
        let store = KeyStore::new(c.keys.iter().map(|(h, n)| (h.as_str(), n.as_str())))
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let mut problems = Vec::new();
        if c.keys.is_empty() {
            problems.push("keys: at least one key is required".to_string());
        }
        if c.header.is_none() && c.query_param.is_none() {
            problems.push("header, query_param: set at least one".to_string());
        }
        for (field, v) in [
            ("header", c.header.as_deref()),
            ("consumer_header", Some(&c.consumer_header)),
        ] {
            if let Some(v) = v.filter(|v| !is_token(v.as_bytes())) {
                problems.push(format!("{field}: {v:?} is not a header name"));
            } else if let Some(v) = v.filter(|v| is_managed(v)) {
                problems.push(format!(
                    "{field}: {v:?} is managed by the proxy and cannot be used"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ApiKeyAuth::new(
            store,
            c.header.as_deref(),
            c.query_param.as_deref(),
            &c.consumer_header,
            &c.realm,
        ))
    }

    /// The consumer is the gateway's to say, and the key stays at the
    /// gateway: a client's consumer field and the key field are not
    /// forwarded, nor is the key's query parameter.
    fn declare(&mut self, d: &mut Declare<'_>) {
        d.own_request(&self.consumer_header);
        if let Some(h) = &self.header {
            d.own_request(h);
        }
        if let Some(q) = &self.query_param {
            d.edits.secret_param = Some(q.clone());
        }
    }

    /// 401 without a key, 403 for a wrong one, 400 for a repeated key field;
    /// otherwise the consumer goes upstream and keys consumer rate limits.
    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        let presented = match self.header.as_deref() {
            Some(h) => match cx.single(h.as_bytes()) {
                Ok(v) => v,
                Err(_) => return Flow::answer(400),
            },
            None => None,
        };
        let query = cx
            .target
            .iter()
            .position(|&b| b == b'?')
            .map(|i| &cx.target[i + 1..]);
        match self.check(presented, query) {
            ApiKeyOutcome::Valid(name) => {
                line(
                    cx.upstream,
                    self.consumer_header.as_bytes(),
                    name.as_bytes(),
                );
                cx.set_consumer(name.as_bytes());
            }
            ApiKeyOutcome::Missing => {
                line(
                    cx.response,
                    b"WWW-Authenticate",
                    self.challenge().as_bytes(),
                );
                return Flow::answer(401);
            }
            ApiKeyOutcome::Invalid => return Flow::answer(403),
        }
        if let Some(name) = self.query_param.as_deref() {
            let stripped = if cx.rewritten {
                let current = cx.path.clone();
                strip_query_param(&current, name.as_bytes(), cx.path)
            } else {
                strip_query_param(cx.target, name.as_bytes(), cx.path)
            };
            cx.rewritten |= stripped;
        }
        Flow::Continue
    }

    fn names_consumer(_: &ApiKeyConfig) -> bool {
        true
    }
}

/// The raw (still percent-encoded) value of the first `name=value` pair in `query` whose name
/// matches exactly; a bare `name` gives an empty value.
pub fn find_query_param<'q>(query: &'q [u8], name: &[u8]) -> Option<&'q [u8]> {
    let query = query.split(|&b| b == b'#').next().unwrap_or(query);
    query.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        (k == name).then_some(v)
    })
}

/// Writes `target` (a path with an optional query) into `out` (cleared
/// first) without any `name=...` pair of its query, so a key given in the
/// query goes neither upstream nor into a log. Returns whether one was
/// removed; `out` is only written when it was.
pub fn strip_query_param(target: &[u8], name: &[u8], out: &mut Vec<u8>) -> bool {
    strip_query_params(target, |n| n == name, out)
}

/// [`strip_query_param`] for every parameter whose name `secret` holds for.
pub fn strip_query_params(
    target: &[u8],
    secret: impl Fn(&[u8]) -> bool,
    out: &mut Vec<u8>,
) -> bool {
    let Some(q) = target.iter().position(|&b| b == b'?') else {
        return false;
    };
    let is_key = |pair: &[u8]| pair.split(|&b| b == b'=').next().is_some_and(&secret);
    let query = &target[q + 1..];
    if !query.split(|&b| b == b'&').any(is_key) {
        return false;
    }
    out.clear();
    out.extend_from_slice(&target[..q]);
    let mut sep = b'?';
    for pair in query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty() && !is_key(p))
    {
        out.push(sep);
        out.extend_from_slice(pair);
        sep = b'&';
    }
    true
}

/// Percent-decode `raw` into `buf`; `None` when an escape is malformed or the result does not
/// fit. `+` stays `+` (query strings are not form bodies here).
pub fn percent_decode<'b>(raw: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut n = 0;
    let mut i = 0;
    while i < raw.len() {
        let b = if raw[i] == b'%' {
            let hi = hex_val(*raw.get(i + 1)?)?;
            let lo = hex_val(*raw.get(i + 2)?)?;
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            raw[i - 1]
        };
        *buf.get_mut(n)? = b;
        n += 1;
    }
    Some(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_are_stripped_from_targets() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/a?api_key=s&x=1", Some("/a?x=1")),
            ("/a?x=1&api_key=s", Some("/a?x=1")),
            ("/a?api_key=s", Some("/a")),
            ("/a?api_key", Some("/a")),
            ("/a?x=1&api_key=s&api_key=t&y=2", Some("/a?x=1&y=2")),
            ("/a?api_keys=s", None),
            ("/a?x=api_key", None),
            ("/a", None),
        ];
        for (target, want) in cases {
            let mut out = b"junk".to_vec();
            let stripped = strip_query_param(target.as_bytes(), b"api_key", &mut out);
            match want {
                Some(w) => assert_eq!((stripped, out.as_slice()), (true, w.as_bytes()), "{target}"),
                None => assert!(!stripped, "{target}"),
            }
        }
    }

    fn auth() -> ApiKeyAuth {
        let (a, b) = (hash_key("alpha-secret"), hash_key("beta secret/+"));
        let store = KeyStore::new([(a.as_str(), "alpha"), (b.as_str(), "beta")]).unwrap();
        ApiKeyAuth::new(
            store,
            Some("X-Api-Key"),
            Some("api_key"),
            DEFAULT_CONSUMER_HEADER,
            "edge \"1\"",
        )
    }

    #[test]
    fn hash_key_matches_the_sha256_test_vector() {
        // FIPS 180-2 example "abc".
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let upper = hash_key("abc").to_ascii_uppercase();
        assert_eq!(parse_digest(&upper), parse_digest(&hash_key("abc")));
    }

    #[test]
    fn check_table() {
        let a = auth();
        type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, ApiKeyOutcome<'a>);
        let cases: &[Case] = &[
            (Some(b"alpha-secret"), None, ApiKeyOutcome::Valid("alpha")),
            (Some(b"beta secret/+"), None, ApiKeyOutcome::Valid("beta")),
            (Some(b"alpha-secreT"), None, ApiKeyOutcome::Invalid),
            (Some(b""), None, ApiKeyOutcome::Missing),
            (None, None, ApiKeyOutcome::Missing),
            (None, Some(b"a=1&b=2"), ApiKeyOutcome::Missing),
            (
                None,
                Some(b"x=1&api_key=alpha-secret"),
                ApiKeyOutcome::Valid("alpha"),
            ),
            (
                None,
                Some(b"api_key=beta%20secret%2F+&x"),
                ApiKeyOutcome::Valid("beta"),
            ),
            (None, Some(b"api_key=beta+secret"), ApiKeyOutcome::Invalid),
            (None, Some(b"api_key=%zz"), ApiKeyOutcome::Invalid),
            (None, Some(b"api_key="), ApiKeyOutcome::Missing),
            (None, Some(b"xapi_key=alpha-secret"), ApiKeyOutcome::Missing),
            (
                Some(b"nope"),
                Some(b"api_key=alpha-secret"),
                ApiKeyOutcome::Invalid,
            ),
        ];
        for (header, query, want) in cases {
            let got = a.check(*header, *query);
            assert_eq!(got, *want, "header {header:?} query {query:?}");
        }
        assert_eq!(ApiKeyOutcome::Missing.status(), Some(401));
        assert_eq!(ApiKeyOutcome::Invalid.status(), Some(403));
        assert_eq!(ApiKeyOutcome::Valid("x").status(), None);
    }

    #[test]
    fn challenge_names_the_realm_without_breaking_quotes() {
        assert_eq!(auth().challenge(), "ApiKey realm=\"edge 1\"");
        assert_eq!(auth().header.as_deref(), Some("x-api-key"));
    }

    #[test]
    fn store_reports_every_bad_entry() {
        let good = hash_key("k");
        let errs = KeyStore::new([
            ("abc", "x"),
            (good.as_str(), ""),
            (good.as_str(), "y\r\n"),
            (good.as_str(), "ok"),
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs[0].to_string().starts_with("keys[0].sha256"));
        assert!(errs[1].to_string().starts_with("keys[1].consumer"));
        assert!(errs.contains(&ApiKeyError::Duplicate {
            first: 1,
            second: 3
        }));
    }

    #[test]
    fn lookup_finds_any_position() {
        let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
        let hashes: Vec<String> = keys.iter().map(|k| hash_key(k)).collect();
        let names: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
        let store = KeyStore::new(
            hashes
                .iter()
                .map(|h| h.as_str())
                .zip(names.iter().map(|n| n.as_str())),
        )
        .unwrap();
        for (k, n) in keys.iter().zip(&names) {
            assert_eq!(store.lookup(k.as_bytes()), Some(n.as_str()));
        }
        assert_eq!(store.lookup(b"key-50"), None);
    }

    #[test]
    fn percent_decode_table() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"abc", Some(b"abc")),
            (b"a%20b", Some(b"a b")),
            (b"%2f%2F", Some(b"//")),
            (b"%", None),
            (b"%2", None),
            (b"%g0", None),
            (b"", Some(b"")),
        ];
        for (raw, want) in cases {
            let mut buf = [0u8; 8];
            assert_eq!(percent_decode(raw, &mut buf), *want, "{raw:?}");
        }
        let mut tiny = [0u8; 2];
        assert_eq!(percent_decode(b"abc", &mut tiny), None);
    }

    #[test]
    fn find_query_param_table() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"api_key=1", Some(b"1")),
            (b"a=2&api_key=1&api_key=3", Some(b"1")),
            (b"api_key", Some(b"")),
            (b"api_key=1#frag", Some(b"1")),
            (b"api_keyx=1", None),
            (b"", None),
        ];
        for (q, want) in cases {
            assert_eq!(find_query_param(q, b"api_key"), *want, "{q:?}");
        }
    }
}
