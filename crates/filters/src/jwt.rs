//! JWT (JWS compact form) verification for bearer tokens: signature with a configured key,
//! then the registered claims with the wall clock passed in.
//!
//! **Keys** come inline (an HMAC secret, or a PEM public key) or from a JWKS document (the
//! caller reads the file and passes its text), or from an identity provider's `jwks_url`: the
//! gateway's control plane fetches that set and each shard puts it in the filter's
//! [`KeySlot`], which requests read without a lock; a token naming a `kid` the set lacks marks
//! the slot so the shard can ask for an early fetch. Each key carries an **allow-list of algorithms**,
//! all of one family; the token's `alg` is only ever used to pick among those, never trusted on
//! its own: `none` does not parse, an `alg` outside the key's list (an HS256 token presented to
//! an RSA key, the classic confusion) is refused before any cryptography runs. A token with a
//! `kid` is checked against the keys with that `kid` (and keys configured without one); a token
//! without one against every key whose list has its `alg`.
//!
//! **Claims**: `exp` (required unless configured otherwise) and `nbf` with a leeway for clock
//! skew, `iss` and `aud` against configured sets, other required claims by name. Chosen claims
//! are rendered as header values to forward upstream (strings as they are, numbers and booleans
//! in JSON form; a value with CR, LF or NUL fails the token rather than being forwarded).
//!
//! Signatures are checked by the `jsonwebtoken` crate on its RustCrypto backend (pure Rust:
//! HMAC-SHA2, RSA PKCS#1 v1.5 and PSS, ECDSA P-256/P-384, Ed25519). Every failure is a
//! [`JwtError`] that maps to 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750), except
//! a remote set that has not arrived yet: 503 with `Retry-After`.

use crate::chain::{Cx, Declare, Flow, line};
use crate::filter::{BuildContext, BuiltIn};
use crate::syntax::ParseCx;
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};

/// Default allowance for clock skew on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Longest token accepted (bytes), before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Where a key's material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An HMAC shared secret (raw bytes).
    Secret(Vec<u8>),
    /// A PEM public key (RSA, EC or Ed25519; the algorithms say which).
    Pem(String),
    /// A JWKS document (`{"keys": [...]}`); each key's `kid` and `alg` come from it.
    Jwks(String),
    /// A JWKS document an identity provider publishes, fetched and refreshed
    /// by the gateway's control plane (never a shard).
    Remote(JwksSource),
}

/// Default interval between fetches of a remote JWKS.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Default shortest interval between two fetches of one remote JWKS: an
/// unknown `kid` asks for an early refresh at most this often.
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);

/// Where a remote key set is published and how it is kept fresh. Two keys
/// with the same source share one fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwksSource {
    /// An `https` URL.
    pub url: String,
    /// The PEM bundle the provider's certificate is verified against (the
    /// text of the `ca` file); `None`: the system's roots.
    pub ca: Option<String>,
    /// The key's `algorithms` (they filter the set, as for `jwks`).
    pub algorithms: Vec<String>,
    pub refresh: Duration,
    pub min_refresh: Duration,
}

/// One configured key (or key set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The `kid` tokens name it by (inline keys); JWKS keys carry their own.
    pub kid: Option<String>,
    /// Allowed algorithms, by JOSE name (`HS256`, `RS256`, `ES256`, `EdDSA`, ...). For JWKS
    /// this filters the set; empty means whatever each JWK declares (or its curve implies).
    pub algorithms: Vec<String>,
    pub material: KeyMaterial,
}

/// The filter's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub keys: Vec<KeySpec>,
    /// Accepted `iss` values; empty accepts any (or none).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (a token's `aud` may be one string or a list); empty skips the
    /// check.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// Claims that must be present (any value).
    pub required_claims: Vec<String>,
    /// `(claim, header)`: top-level claims to forward upstream.
    pub forward_claims: Vec<(String, String)>,
    /// Realm in the challenge.
    pub realm: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            keys: Vec::new(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            require_exp: true,
            required_claims: Vec::new(),
            forward_claims: Vec::new(),
            realm: "shardgate".into(),
        }
    }
}

impl JwtConfig {
    /// The key sets this filter fetches from identity providers.
    pub fn remote_sources(&self) -> impl Iterator<Item = &JwksSource> {
        self.keys.iter().filter_map(|k| match &k.material {
            KeyMaterial::Remote(s) => Some(s),
            _ => None,
        })
    }
}

/// A configuration problem, with its field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for JwtConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for JwtConfigError {}

/// Why a request's token was refused: a 401, except [`JwtError::KeysUnavailable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// No bearer token in the request.
    Missing,
    /// Not three base64url parts with a JSON header we understand (this includes `alg: none`).
    Malformed,
    /// The `kid` names no configured key.
    UnknownKey,
    /// The `alg` is not allowed for the key(s) it could be checked with.
    AlgorithmNotAllowed(Algorithm),
    BadSignature,
    /// The claims are not a JSON object, or a registered claim has the wrong type.
    BadClaims(&'static str),
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim(String),
    /// A claim to forward holds CR, LF or NUL.
    UnsafeClaimValue(String),
    /// The header names `crit` extensions, which the gateway implements none of
    /// (RFC 7515 §4.1.11: such a token must be refused).
    UnsupportedCritical,
    /// A remote key set has not been fetched yet, so no key can be trusted to
    /// refuse the token either: 503, not 401.
    KeysUnavailable,
}

impl JwtError {
    /// 401, except 503 while a remote key set has not arrived.
    pub fn status(&self) -> u16 {
        match self {
            JwtError::KeysUnavailable => 503,
            _ => 401,
        }
    }

    /// The `error_description`: short, fixed text (never echoes the token).
    pub fn description(&self) -> String {
        match self {
            JwtError::Missing => "no bearer token".into(),
            JwtError::Malformed => "malformed token".into(),
            JwtError::UnknownKey => "unknown signing key".into(),
            JwtError::AlgorithmNotAllowed(a) => format!("algorithm {a:?} not allowed"),
            JwtError::BadSignature => "invalid signature".into(),
            JwtError::BadClaims(c) => format!("invalid {c} claim"),
            JwtError::Expired => "token expired".into(),
            JwtError::NotYetValid => "token not yet valid".into(),
            JwtError::WrongIssuer => "issuer not accepted".into(),
            JwtError::WrongAudience => "audience not accepted".into(),
            JwtError::MissingClaim(c) => format!("missing {} claim", sanitize(c)),
            JwtError::UnsafeClaimValue(c) => format!("claim {} not forwardable", sanitize(c)),
            JwtError::UnsupportedCritical => "critical header extension not supported".into(),
            JwtError::KeysUnavailable => "signing keys not available yet".into(),
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(64)
        .collect()
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description())
    }
}

impl std::error::Error for JwtError {}

#[derive(Debug, Clone)]
struct Key {
    kid: Option<Box<str>>,
    algorithms: Vec<Algorithm>,
    validation: Validation,
    key: DecodingKey,
}

/// A token that passed: its claims, and the header values to forward (in config order).
#[derive(Debug, Clone)]
pub struct Verified<'a> {
    pub claims: Map<String, Value>,
    pub forward: Vec<(&'a str, String)>,
}

/// The `jwt` filter: a [`JwtVerifier`] (boxed: it is the largest filter).
#[derive(Debug, Clone)]
pub struct JwtFilter(pub Box<JwtVerifier>);

/// The TOML table: every field optional (defaults from [`JwtConfig`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    keys: Option<Vec<RawJwtKey>>,
    issuers: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
    leeway: Option<String>,
    require_exp: Option<bool>,
    required_claims: Option<Vec<String>>,
    /// Claim -> header, read in key order.
    forward_claims: Option<BTreeMap<String, String>>,
    realm: Option<String>,
}

/// One key: exactly one of the material fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtKey {
    kid: Option<String>,
    algorithms: Option<Vec<String>>,
    /// An HMAC secret, as UTF-8 text.
    secret: Option<String>,
    /// An HMAC secret, base64 (standard or URL-safe, padding optional).
    secret_base64: Option<String>,
    /// A PEM public key, inline.
    pem: Option<String>,
    pem_file: Option<String>,
    /// A JWKS document, inline JSON.
    jwks: Option<String>,
    jwks_file: Option<String>,
    /// A JWKS document fetched from an identity provider (`https`).
    jwks_url: Option<String>,
    /// With `jwks_url`: a PEM CA bundle for the provider (default: system roots).
    ca: Option<String>,
    /// With `jwks_url`: how often the set is fetched.
    refresh: Option<String>,
    /// With `jwks_url`: the shortest time between two fetches.
    min_refresh: Option<String>,
}

/// Makes key material from one field's value; problems are reported at `field`.
type Material = fn(&mut ParseCx<'_>, &str, String) -> Option<KeyMaterial>;

fn jwt_key(cx: &mut ParseCx<'_>, field: &str, k: RawJwtKey) -> Option<KeySpec> {
    let remote = remote_settings(cx, field, &k);
    let sources: [(&'static str, Option<String>, Material); 7] = [
        ("secret", k.secret, |_, _, v| {
            Some(KeyMaterial::Secret(v.into_bytes()))
        }),
        ("secret_base64", k.secret_base64, |cx, field, v| {
            let bytes = shardgate_common::units::parse_base64(&v);
            if bytes.is_none() {
                cx.push(field, "not base64 (standard or URL-safe alphabet)");
            }
            bytes.map(KeyMaterial::Secret)
        }),
        ("pem", k.pem, |_, _, v| Some(KeyMaterial::Pem(v))),
        ("pem_file", k.pem_file, |cx, field, v| {
            cx.read_file(field, &v).map(KeyMaterial::Pem)
        }),
        ("jwks", k.jwks, |_, _, v| Some(KeyMaterial::Jwks(v))),
        ("jwks_file", k.jwks_file, |cx, field, v| {
            cx.read_file(field, &v).map(KeyMaterial::Jwks)
        }),
        ("jwks_url", k.jwks_url, |cx, field, url| {
            check_jwks_url(&url).map_err(|e| cx.push(field, e)).ok()?;
            Some(KeyMaterial::Remote(JwksSource {
                url,
                ca: None,
                algorithms: Vec::new(),
                refresh: DEFAULT_JWKS_REFRESH,
                min_refresh: DEFAULT_JWKS_MIN_REFRESH,
            }))
        }),
    ];
    let given = sources
        .into_iter()
        .filter_map(|(name, value, make)| Some((name, (value?, make))))
        .collect();
    let (name, (value, make)) = cx.exactly_one(
        field,
        "secret, secret_base64, pem, pem_file, jwks, jwks_file, jwks_url",
        given,
    )?;
    let algorithms = k.algorithms.unwrap_or_default();
    let mut material = make(cx, &format!("{field}.{name}"), value)?;
    match (&mut material, remote) {
        (KeyMaterial::Remote(source), Some((ca, refresh, min_refresh))) => {
            source.ca = ca;
            source.refresh = refresh;
            source.min_refresh = min_refresh;
            source.algorithms.clone_from(&algorithms);
        }
        (KeyMaterial::Remote(_), None) => return None,
        (_, _) => {
            for (given, name) in [(&k.ca, "ca"), (&k.refresh, "refresh")]
                .into_iter()
                .chain([(&k.min_refresh, "min_refresh")])
            {
                if given.is_some() {
                    cx.push(&format!("{field}.{name}"), "only with jwks_url");
                }
            }
        }
    }
    Some(KeySpec {
        kid: k.kid,
        algorithms,
        material,
    })
}

/// `ca`, `refresh` and `min_refresh` of a key (read whether or not it has a
/// `jwks_url`); `None` when one of them is refused.
fn remote_settings(
    cx: &mut ParseCx<'_>,
    field: &str,
    k: &RawJwtKey,
) -> Option<(Option<String>, Duration, Duration)> {
    let before = cx.problems.len();
    let ca = match &k.ca {
        None => None,
        Some(path) => {
            let at = format!("{field}.ca");
            let text = cx.read_file(&at, path)?;
            let certs = rustls_pki_types::CertificateDer::pem_slice_iter(text.as_bytes());
            let mut count = 0;
            for c in certs {
                if let Err(e) = c {
                    cx.push(&at, format!("{path:?}: not a PEM certificate: {e}"));
                    return None;
                }
                count += 1;
            }
            if count == 0 {
                cx.push(&at, format!("{path:?}: no certificate in it"));
                return None;
            }
            Some(text)
        }
    };
    let refresh = cx.duration(
        &format!("{field}.refresh"),
        k.refresh.as_ref(),
        DEFAULT_JWKS_REFRESH,
    );
    let min_refresh = cx.duration(
        &format!("{field}.min_refresh"),
        k.min_refresh.as_ref(),
        DEFAULT_JWKS_MIN_REFRESH,
    );
    if min_refresh > refresh {
        cx.push(
            &format!("{field}.min_refresh"),
            "longer than refresh (it bounds early refreshes, which come between regular ones)",
        );
    }
    (cx.problems.len() == before).then_some((ca, refresh, min_refresh))
}

/// A JWKS URL must be `https` with a host: keys fetched in the clear could be
/// anyone's.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .get(..8)
        .filter(|s| s.eq_ignore_ascii_case("https://"))
        .map(|_| &url[8..])
    else {
        return Err(format!("{url:?}: must be an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: needs a host (and no user info)"));
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{url:?}: spaces or control characters"));
    }
    Ok(())
}

impl BuiltIn for JwtFilter {
    type Spec = JwtConfig;
    const NAME: &'static str = "jwt";
    const ABOUT: &'static str = "bearer JWT: signature, exp/nbf, iss, aud, claims as headers";

    fn parse(cx: &mut ParseCx<'_>, body: toml::Value) -> Option<JwtConfig> {
        let r: RawJwt = cx.read(body)?;
        let d = JwtConfig::default();
        let keys = match r.keys {
            None => d.keys,
            Some(keys) => keys
                .into_iter()
                .enumerate()
                .filter_map(|(k, key)| jwt_key(cx, &format!("keys[{k}]"), key))
                .collect(),
        };
        Some(JwtConfig {
            keys,
            issuers: r.issuers.unwrap_or(d.issuers),
            audiences: r.audiences.unwrap_or(d.audiences),
            leeway: cx.duration_or_zero("leeway", r.leeway, d.leeway),
            require_exp: r.require_exp.unwrap_or(d.require_exp),
            required_claims: r.required_claims.unwrap_or(d.required_claims),
            forward_claims: r
                .forward_claims
                .map_or(d.forward_claims, |m| m.into_iter().collect()),
            realm: r.realm.unwrap_or(d.realm),
        })
    }

    fn warnings(spec: &JwtConfig) -> Vec<String> {
        if spec.audiences.is_empty() {
            vec![
                "audiences: empty, so a token issued for any other service is accepted here; \
                 list this API's audience"
                    .into(),
            ]
        } else {
            Vec::new()
        }
    }

    fn build(c: &JwtConfig, _: &BuildContext<'_>) -> Result<JwtFilter, Vec<String>> {
        JwtVerifier::new(c)
            .map(|v| JwtFilter(Box::new(v)))
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    fn declare(&mut self, d: &mut Declare<'_>) {
        self.0.declare(d);
    }

    fn on_request<'f>(&'f self, cx: &mut Cx<'_, '_>) -> Flow<'f> {
        self.0.on_request(cx)
    }

    fn names_consumer(_: &JwtConfig) -> bool {
        true
    }
}

/// Signs `claims` with an HMAC-SHA256 `secret` into a compact token: for
/// the demo's ready-made token and for tests, not for a token service.
pub fn issue_hs256(secret: &[u8], claims: &Value) -> Option<String> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .ok()
}

/// The runtime verifier built from a [`JwtConfig`].
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    keys: Vec<Key>,
    /// Key sets fetched by the control plane, as this shard last heard of them.
    remote: Vec<Rc<KeySlot>>,
    issuers: Vec<Box<str>>,
    audiences: Vec<Box<str>>,
    leeway: u64,
    require_exp: bool,
    required: Vec<Box<str>>,
    forward: Vec<(Box<str>, Box<str>)>,
    realm: Box<str>,
}

fn cfg_err(field: impl Into<String>, message: impl fmt::Display) -> JwtConfigError {
    JwtConfigError {
        field: field.into(),
        message: message.to_string(),
    }
}

fn parse_algs(field: &str, names: &[String]) -> Result<Vec<Algorithm>, JwtConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Algorithm::from_str(n).map_err(|_| {
                cfg_err(
                    format!("{field}.algorithms[{i}]"),
                    format!("unknown algorithm {n:?}"),
                )
            })
        })
        .collect()
}

fn family_name(f: AlgorithmFamily) -> &'static str {
    match f {
        AlgorithmFamily::Hmac => "HMAC",
        AlgorithmFamily::Rsa => "RSA",
        AlgorithmFamily::Ec => "EC",
        AlgorithmFamily::Ed => "EdDSA",
    }
}

fn make_key(kid: Option<&str>, algorithms: Vec<Algorithm>, key: DecodingKey) -> Key {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.clone();
    // Claims are checked here, with the clock passed in; the crate checks the signature only.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    Key {
        kid: kid.map(Into::into),
        algorithms,
        validation,
        key,
    }
}

fn inline_key(field: &str, spec: &KeySpec) -> Result<Key, JwtConfigError> {
    let algs = parse_algs(field, &spec.algorithms)?;
    let Some(first) = algs.first() else {
        return Err(cfg_err(
            format!("{field}.algorithms"),
            "an inline key needs at least one algorithm",
        ));
    };
    let family = first.family();
    if let Some(other) = algs.iter().find(|a| a.family() != family) {
        return Err(cfg_err(
            format!("{field}.algorithms"),
            format!("{first:?} and {other:?} need different kinds of key"),
        ));
    }
    let key = match (&spec.material, family) {
        (KeyMaterial::Secret(s), AlgorithmFamily::Hmac) if s.len() >= 32 => {
            DecodingKey::from_secret(s)
        }
        (KeyMaterial::Secret(_), AlgorithmFamily::Hmac) => {
            return Err(cfg_err(
                format!("{field}.secret"),
                "an HMAC secret must be at least 32 bytes",
            ));
        }
        (KeyMaterial::Pem(pem), fam) if fam != AlgorithmFamily::Hmac => {
            let b = pem.as_bytes();
            let parsed = match fam {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(b),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(b),
                _ => DecodingKey::from_ed_pem(b),
            };
            parsed.map_err(|e| {
                cfg_err(
                    format!("{field}.pem"),
                    format!("not a {} public key: {e}", family_name(fam)),
                )
            })?
        }
        (KeyMaterial::Jwks(_) | KeyMaterial::Remote(_), _) => {
            unreachable!("handled by the caller")
        }
        (_, fam) => {
            return Err(cfg_err(
                format!("{field}.algorithms"),
                format!("{first:?} needs {} key material", family_name(fam)),
            ));
        }
    };
    Ok(make_key(spec.kid.as_deref(), algs, key))
}

fn jwks_keys(field: &str, algorithms: &[String], json: &str) -> Result<Vec<Key>, JwtConfigError> {
    let filter = parse_algs(field, algorithms)?;
    let set: JwkSet = serde_json::from_str(json)
        .map_err(|e| cfg_err(format!("{field}.jwks"), format!("not a JWKS document: {e}")))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            continue;
        }
        let declared = match jwk.common.key_algorithm {
            // An `alg` we cannot verify with (an encryption algorithm): not a signing key.
            Some(a) => match Algorithm::from_str(&a.to_string()) {
                Ok(a) => Some(a),
                Err(_) => continue,
            },
            None => None,
        };
        let implied: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[Algorithm::RS256],
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                &[Algorithm::ES256]
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                &[Algorithm::ES384]
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                &[Algorithm::EdDSA]
            }
            AlgorithmParameters::OctetKey(_) => &[Algorithm::HS256],
            _ => &[],
        };
        let mut algs: Vec<Algorithm> = match declared {
            Some(a) => vec![a],
            None if filter.is_empty() => implied.to_vec(),
            // No `alg` in the JWK: the configured list decides, within the key's family.
            None => implied
                .first()
                .map(|a| {
                    filter
                        .iter()
                        .copied()
                        .filter(|f| f.family() == a.family())
                        .collect()
                })
                .unwrap_or_default(),
        };
        if !filter.is_empty() {
            algs.retain(|a| filter.contains(a));
        }
        if algs.is_empty() {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| cfg_err(format!("{field}.jwks.keys[{i}]"), e))?;
        if key.family() != algs[0].family() {
            return Err(cfg_err(
                format!("{field}.jwks.keys[{i}]"),
                format!("alg {:?} does not fit the key type", algs[0]),
            ));
        }
        keys.push(make_key(jwk.common.key_id.as_deref(), algs, key));
    }
    if keys.is_empty() {
        return Err(cfg_err(
            format!("{field}.jwks"),
            "no usable signing key (supported: RSA, EC P-256/P-384, Ed25519, HMAC)",
        ));
    }
    Ok(keys)
}

/// A remote JWKS document, parsed (on the control plane's thread) into the
/// keys it holds that can verify tokens.
#[derive(Debug)]
pub struct RemoteKeys {
    keys: Vec<Key>,
}

impl RemoteKeys {
    /// Parses a fetched document the way `jwks` is parsed; the problem, if
    /// any, in the provider's words or the parser's.
    pub fn parse(source: &JwksSource, json: &str) -> Result<RemoteKeys, String> {
        jwks_keys("jwks_url", &source.algorithms, json)
            .map(|keys| RemoteKeys { keys })
            .map_err(|e| e.message)
    }

    /// Usable keys in the set.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One shard's view of a remote key set: filled by the shard from what the
/// control plane fetched, read by this shard's requests with no lock or
/// atomic. A token naming a `kid` the set lacks marks the slot, and the
/// shard passes the wish for an early refresh on at its next tick.
#[derive(Debug)]
pub struct KeySlot {
    pub source: JwksSource,
    keys: RefCell<Option<Arc<RemoteKeys>>>,
    wanted: Cell<bool>,
    /// When this shard last asked for an early refresh.
    asked: Cell<Option<Instant>>,
}

impl KeySlot {
    pub fn new(source: JwksSource) -> KeySlot {
        KeySlot {
            source,
            keys: RefCell::new(None),
            wanted: Cell::new(false),
            asked: Cell::new(None),
        }
    }

    /// Adopts a newly fetched set.
    pub fn set(&self, keys: Arc<RemoteKeys>) {
        *self.keys.borrow_mut() = Some(keys);
    }

    /// The set in use, if one has arrived.
    pub fn keys(&self) -> Option<Arc<RemoteKeys>> {
        self.keys.borrow().clone()
    }

    /// Whether to ask for an early refresh now: a token named an unknown
    /// `kid` since the last ask, and the last ask is `min_refresh` old.
    pub fn take_wanted(&self, now: Instant) -> bool {
        if !self.wanted.get() {
            return false;
        }
        let due = self
            .asked
            .get()
            .is_none_or(|t| now.duration_since(t) >= self.source.min_refresh);
        if due {
            self.wanted.set(false);
            self.asked.set(Some(now));
        }
        due
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl JwtVerifier {
    /// Validate the whole configuration, reporting every problem.
    pub fn new(cfg: &JwtConfig) -> Result<JwtVerifier, Vec<JwtConfigError>> {
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        let mut remote = Vec::new();
        if cfg.keys.is_empty() {
            errors.push(cfg_err("keys", "at least one key is required"));
        }
        for (i, spec) in cfg.keys.iter().enumerate() {
            let field = format!("keys[{i}]");
            let built = match &spec.material {
                KeyMaterial::Jwks(json) => jwks_keys(&field, &spec.algorithms, json),
                KeyMaterial::Remote(source) => {
                    // The set arrives later; its algorithm names are checked now.
                    match parse_algs(&field, &source.algorithms) {
                        Ok(_) => {
                            remote.push(Rc::new(KeySlot::new(source.clone())));
                            Ok(Vec::new())
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => inline_key(&field, spec).map(|k| vec![k]),
            };
            match built {
                Ok(k) => keys.extend(k),
                Err(e) => errors.push(e),
            }
        }
        for (i, (claim, header)) in cfg.forward_claims.iter().enumerate() {
            if claim.is_empty() {
                errors.push(cfg_err(format!("forward_claims[{i}].claim"), "empty"));
            }
            if !is_token(header) {
                errors.push(cfg_err(
                    format!("forward_claims[{i}].header"),
                    format!("{header:?} is not a header name"),
                ));
            } else if crate::headers::is_managed(header) {
                errors.push(cfg_err(
                    format!("forward_claims[{i}].header"),
                    format!("{header:?} is managed by the proxy and cannot be changed"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let boxed = |v: &[String]| v.iter().map(|s| s.as_str().into()).collect();
        Ok(JwtVerifier {
            keys,
            remote,
            issuers: boxed(&cfg.issuers),
            audiences: boxed(&cfg.audiences),
            leeway: cfg.leeway.as_secs(),
            require_exp: cfg.require_exp,
            required: boxed(&cfg.required_claims),
            forward: cfg
                .forward_claims
                .iter()
                .map(|(c, h)| (c.as_str().into(), h.to_ascii_lowercase().into()))
                .collect(),
            realm: sanitize(&cfg.realm).into(),
        })
    }

    /// The headers claims are forwarded in (config order).
    pub fn forwarded_headers(&self) -> impl Iterator<Item = &str> {
        self.forward.iter().map(|(_, header)| &**header)
    }

    /// Keys loaded (a JWKS counts each usable key; a remote set, what this
    /// shard has of it).
    pub fn key_count(&self) -> usize {
        let remote: usize = self
            .remote
            .iter()
            .map(|s| s.keys.borrow().as_ref().map_or(0, |k| k.len()))
            .sum();
        self.keys.len() + remote
    }

    /// The remote key sets this verifier reads.
    pub fn key_slots(&self) -> &[Rc<KeySlot>] {
        &self.remote
    }

    /// `f` on each key, inline ones first, until it returns something.
    fn find_key<R>(&self, mut f: impl FnMut(&Key) -> Option<R>) -> Option<R> {
        if let Some(r) = self.keys.iter().find_map(&mut f) {
            return Some(r);
        }
        for slot in &self.remote {
            let held = slot.keys.borrow();
            if let Some(r) = held.iter().flat_map(|s| s.keys.iter()).find_map(&mut f) {
                return Some(r);
            }
        }
        None
    }

    /// The `WWW-Authenticate` value for a refusal (RFC 6750: no error code when no token came).
    pub fn challenge(&self, err: &JwtError) -> String {
        match err {
            JwtError::Missing => format!("Bearer realm=\"{}\"", self.realm),
            e => format!(
                "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
                self.realm,
                e.description()
            ),
        }
    }

    /// Forwarded claims are the gateway's to say: a client's copies of their
    /// fields are not forwarded.
    pub fn declare(&self, d: &mut Declare<'_>) {
        for h in self.forwarded_headers() {
            d.own_request(h);
        }
        for slot in &self.remote {
            d.key_slot(slot.clone());
        }
    }

    /// 401 with an RFC 6750 challenge for a missing or bad token, 400 for two
    /// `Authorization` fields; otherwise the chosen claims go upstream and
    /// `sub` keys consumer rate limits.
    pub fn on_request(&self, cx: &mut Cx<'_, '_>) -> Flow<'static> {
        let Ok(auth) = cx.single(b"authorization") else {
            return Flow::answer(400);
        };
        match self.verify_authorization(auth, SystemTime::now()) {
            Ok(v) => {
                for (name, value) in &v.forward {
                    // Refused if they hold CR/LF/NUL; other controls are left out.
                    if crate::headers::is_value(value.as_bytes()) {
                        line(cx.upstream, name.as_bytes(), value.as_bytes());
                    }
                }
                if let Some(sub) = v.claims.get("sub").and_then(Value::as_str) {
                    cx.set_consumer(sub.as_bytes());
                }
                Flow::Continue
            }
            Err(e) if e.status() == 401 => {
                line(
                    cx.response,
                    b"WWW-Authenticate",
                    self.challenge(&e).as_bytes(),
                );
                Flow::answer(401)
            }
            Err(e) => {
                line(cx.response, b"Retry-After", b"1");
                Flow::answer(e.status())
            }
        }
    }

    /// Verify the token from an `Authorization` header value (`Bearer <token>`), if any.
    pub fn verify_authorization(
        &self,
        authorization: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Verified<'_>, JwtError> {
        let token = authorization
            .and_then(bearer_token)
            .ok_or(JwtError::Missing)?;
        self.verify(token, now)
    }

    /// Verify a compact JWS token at wall-clock time `now`.
    pub fn verify(&self, token: &[u8], now: SystemTime) -> Result<Verified<'_>, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        // No extension is understood here, so any `crit` (even an empty list,
        // which producers must not send) refuses the token.
        if header.crit.is_some() {
            return Err(JwtError::UnsupportedCritical);
        }
        let alg = header.alg;
        let by_kid = |k: &Key| match (&header.kid, &k.kid) {
            (Some(want), Some(have)) => **have == **want,
            _ => true,
        };
        let mut named = false;
        let allowed = self
            .find_key(|k| {
                named |= by_kid(k);
                (by_kid(k) && k.algorithms.contains(&alg)).then_some(())
            })
            .is_some();
        if !named {
            // A remote set not fetched yet: the gateway cannot tell, which
            // is its problem, not the token's.
            if self.remote.iter().any(|s| s.keys.borrow().is_none()) {
                return Err(JwtError::KeysUnavailable);
            }
            if header.kid.is_some() {
                for slot in &self.remote {
                    slot.wanted.set(true);
                }
            }
            return Err(JwtError::UnknownKey);
        }
        if !allowed {
            return Err(JwtError::AlgorithmNotAllowed(alg));
        }
        use jsonwebtoken::errors::ErrorKind;
        let decoded = self.find_key(|key| {
            if !by_kid(key) || !key.algorithms.contains(&alg) {
                return None;
            }
            match jsonwebtoken::decode::<Value>(token, &key.key, &key.validation) {
                Ok(data) => Some(Ok(data.claims)),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_) => None,
                    ErrorKind::InvalidAlgorithm => Some(Err(JwtError::AlgorithmNotAllowed(alg))),
                    _ => Some(Err(JwtError::Malformed)),
                },
            }
        });
        let claims = match decoded {
            None => return Err(JwtError::BadSignature),
            Some(Err(e)) => return Err(e),
            Some(Ok(Value::Object(claims))) => claims,
            Some(Ok(_)) => return Err(JwtError::BadClaims("payload")),
        };
        self.check_claims(&claims, now)?;
        let mut forward = Vec::with_capacity(self.forward.len());
        for (claim, header) in &self.forward {
            let Some(v) = claims.get(&**claim) else {
                continue;
            };
            let rendered = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            if rendered.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(JwtError::UnsafeClaimValue(claim.to_string()));
            }
            forward.push((&**header, rendered));
        }
        Ok(Verified { claims, forward })
    }

    fn check_claims(&self, c: &Map<String, Value>, now: SystemTime) -> Result<(), JwtError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let leeway = self.leeway as f64;
        let numeric = |name: &'static str| -> Result<Option<f64>, JwtError> {
            match c.get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(JwtError::BadClaims(name)),
                Some(_) => Err(JwtError::BadClaims(name)),
            }
        };
        match numeric("exp")? {
            None if self.require_exp => return Err(JwtError::MissingClaim("exp".into())),
            Some(exp) if now >= exp + leeway => return Err(JwtError::Expired),
            _ => {}
        }
        if let Some(nbf) = numeric("nbf")?
            && now + leeway < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if !self.issuers.is_empty() {
            match c.get("iss") {
                Some(Value::String(iss)) if self.issuers.iter().any(|i| **i == **iss) => {}
                Some(Value::String(_)) | None => return Err(JwtError::WrongIssuer),
                Some(_) => return Err(JwtError::BadClaims("iss")),
            }
        }
        if !self.audiences.is_empty() {
            let accepted = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| self.audiences.iter().any(|x| **x == *a))
            };
            let ok = match c.get("aud") {
                Some(v @ Value::String(_)) => accepted(v),
                Some(Value::Array(list)) => list.iter().any(accepted),
                Some(_) => return Err(JwtError::BadClaims("aud")),
                None => false,
            };
            if !ok {
                return Err(JwtError::WrongAudience);
            }
        }
        if let Some(missing) = self.required.iter().find(|r| !c.contains_key(&***r)) {
            return Err(JwtError::MissingClaim(missing.to_string()));
        }
        Ok(())
    }
}

/// The token in an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
#[path = "jwt/tests.rs"]
mod tests;
