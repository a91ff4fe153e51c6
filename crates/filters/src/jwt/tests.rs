use super::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/ec_public.pem");
const ED_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/ed_private.pem");
const ED_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/ed_public.pem");
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hmac";

/// The tests' wall clock.
const NOW: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    encode(&header, claims, key).unwrap()
}

fn hmac_key() -> EncodingKey {
    EncodingKey::from_secret(SECRET)
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap()
}

fn claims() -> Value {
    json!({
        "sub": "user-7",
        "iss": "https://issuer.example",
        "aud": ["api", "other"],
        "exp": NOW + 600,
        "nbf": NOW - 10,
        "tier": "gold",
        "level": 3,
        "admin": false,
    })
}

fn spec(kid: Option<&str>, algs: &[&str], material: KeyMaterial) -> KeySpec {
    KeySpec {
        kid: kid.map(Into::into),
        algorithms: algs.iter().map(|a| a.to_string()).collect(),
        material,
    }
}

fn config(keys: Vec<KeySpec>) -> JwtConfig {
    JwtConfig {
        keys,
        issuers: vec!["https://issuer.example".into()],
        audiences: vec!["api".into()],
        forward_claims: vec![
            ("sub".into(), "X-User".into()),
            ("level".into(), "x-level".into()),
            ("admin".into(), "x-admin".into()),
            ("absent".into(), "x-absent".into()),
        ],
        ..JwtConfig::default()
    }
}

fn all_inline_keys() -> JwtVerifier {
    JwtVerifier::new(&config(vec![
        spec(
            None,
            &["HS256", "HS384", "HS512"],
            KeyMaterial::Secret(SECRET.to_vec()),
        ),
        spec(None, &["RS256"], KeyMaterial::Pem(RSA_PUBLIC.into())),
        spec(None, &["ES256"], KeyMaterial::Pem(EC_PUBLIC.into())),
        spec(None, &["EdDSA"], KeyMaterial::Pem(ED_PUBLIC.into())),
    ]))
    .unwrap()
}

#[test]
fn every_supported_algorithm_verifies_with_inline_keys() {
    let v = all_inline_keys();
    let c = claims();
    let tokens = [
        (
            Algorithm::HS256,
            sign(Algorithm::HS256, None, &hmac_key(), &c),
        ),
        (
            Algorithm::HS384,
            sign(Algorithm::HS384, None, &hmac_key(), &c),
        ),
        (
            Algorithm::HS512,
            sign(Algorithm::HS512, None, &hmac_key(), &c),
        ),
        (
            Algorithm::RS256,
            sign(Algorithm::RS256, None, &rsa_key(), &c),
        ),
        (
            Algorithm::ES256,
            sign(Algorithm::ES256, None, &ec_key(), &c),
        ),
        (
            Algorithm::EdDSA,
            sign(Algorithm::EdDSA, None, &ed_key(), &c),
        ),
    ];
    for (alg, token) in &tokens {
        let ok = v
            .verify(token.as_bytes(), now())
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(ok.claims["tier"], "gold");
        assert_eq!(
            ok.forward,
            vec![
                ("x-user", "user-7".to_string()),
                ("x-level", "3".to_string()),
                ("x-admin", "false".to_string())
            ],
            "{alg:?}"
        );
    }
}

#[test]
fn claim_checks_table() {
    let v = all_inline_keys();
    let base = claims();
    let with = |k: &str, val: Value| {
        let mut c = base.clone();
        c[k] = val;
        c
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let leeway = DEFAULT_LEEWAY.as_secs();
    let cases: Vec<(&str, Value, Result<(), JwtError>)> = vec![
        ("valid", base.clone(), Ok(())),
        (
            "expired",
            with("exp", json!(NOW - leeway - 1)),
            Err(JwtError::Expired),
        ),
        (
            "expired at the leeway edge",
            with("exp", json!(NOW - leeway)),
            Err(JwtError::Expired),
        ),
        (
            "expired within leeway",
            with("exp", json!(NOW - leeway + 1)),
            Ok(()),
        ),
        (
            "fractional exp",
            with("exp", json!(NOW as f64 + 0.5)),
            Ok(()),
        ),
        (
            "exp not a number",
            with("exp", json!("soon")),
            Err(JwtError::BadClaims("exp")),
        ),
        (
            "no exp",
            without("exp"),
            Err(JwtError::MissingClaim("exp".into())),
        ),
        (
            "not yet valid",
            with("nbf", json!(NOW + leeway + 1)),
            Err(JwtError::NotYetValid),
        ),
        (
            "nbf within leeway",
            with("nbf", json!(NOW + leeway)),
            Ok(()),
        ),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example")),
            Err(JwtError::WrongIssuer),
        ),
        ("no issuer", without("iss"), Err(JwtError::WrongIssuer)),
        (
            "issuer not a string",
            with("iss", json!(5)),
            Err(JwtError::BadClaims("iss")),
        ),
        ("aud as a string", with("aud", json!("api")), Ok(())),
        (
            "wrong aud",
            with("aud", json!(["web"])),
            Err(JwtError::WrongAudience),
        ),
        ("no aud", without("aud"), Err(JwtError::WrongAudience)),
        (
            "aud not a string",
            with("aud", json!({"a": 1})),
            Err(JwtError::BadClaims("aud")),
        ),
        (
            "CRLF in a forwarded claim",
            with("sub", json!("a\r\nX-Admin: true")),
            Err(JwtError::UnsafeClaimValue("sub".into())),
        ),
    ];
    for (name, c, want) in cases {
        let token = sign(Algorithm::HS256, None, &hmac_key(), &c);
        let got = v.verify(token.as_bytes(), now()).map(|_| ());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn required_claims_and_optional_exp() {
    let mut cfg = config(vec![spec(
        None,
        &["HS256"],
        KeyMaterial::Secret(SECRET.to_vec()),
    )]);
    cfg.required_claims = vec!["tenant".into()];
    cfg.require_exp = false;
    cfg.audiences.clear();
    cfg.issuers.clear();
    let v = JwtVerifier::new(&cfg).unwrap();
    let token = sign(Algorithm::HS256, None, &hmac_key(), &json!({"sub": "x"}));
    assert_eq!(
        v.verify(token.as_bytes(), now()).map(|_| ()),
        Err(JwtError::MissingClaim("tenant".into()))
    );
    let token = sign(
        Algorithm::HS256,
        None,
        &hmac_key(),
        &json!({"tenant": "t1"}),
    );
    assert!(v.verify(token.as_bytes(), now()).is_ok(), "no exp needed");
}

#[test]
fn attacks_and_malformed_tokens_table() {
    let v = all_inline_keys();
    let c = claims();
    let good = sign(Algorithm::RS256, None, &rsa_key(), &c);
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |s: &str| base64url(s.as_bytes());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&json!({"sub": "admin", "exp": NOW + 600, "iss": "https://issuer.example", "aud": "api"}).to_string()),
        parts[2]
    );
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    // HS256 keyed with the RSA public key's bytes: must not reach any HMAC check.
    let confusion = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &c,
    );
    // Signed by an unknown HMAC secret.
    let foreign = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another secret that is long enough!!"),
        &c,
    );
    // Validly signed, with critical extensions nobody here implements.
    let critical = |crit: Vec<String>| {
        let mut header = Header::new(Algorithm::RS256);
        header.crit = Some(crit);
        encode(&header, &c, &rsa_key()).unwrap()
    };
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "crit extension",
            critical(vec!["b64".into()]),
            JwtError::UnsupportedCritical,
        ),
        (
            "empty crit",
            critical(Vec::new()),
            JwtError::UnsupportedCritical,
        ),
        ("tampered payload", tampered, JwtError::BadSignature),
        ("alg none", none, JwtError::Malformed),
        ("foreign secret", foreign, JwtError::BadSignature),
        (
            "two parts",
            format!("{}.{}", parts[0], parts[1]),
            JwtError::Malformed,
        ),
        ("garbage", "not.a.token".into(), JwtError::Malformed),
        ("empty", String::new(), JwtError::Malformed),
        ("huge", "a".repeat(MAX_TOKEN_LEN + 1), JwtError::Malformed),
    ];
    for (name, token, want) in cases {
        assert_eq!(
            v.verify(token.as_bytes(), now()).map(|_| ()),
            Err(want),
            "{name}"
        );
    }
    // Against a verifier with only the RSA key, the confused token is refused on its alg.
    let rsa_only = JwtVerifier::new(&config(vec![spec(
        None,
        &["RS256"],
        KeyMaterial::Pem(RSA_PUBLIC.into()),
    )]))
    .unwrap();
    assert_eq!(
        rsa_only.verify(confusion.as_bytes(), now()).map(|_| ()),
        Err(JwtError::AlgorithmNotAllowed(Algorithm::HS256))
    );
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=n {
            out.push(char::from(A[(v >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn jwks(entries: &[(&str, Algorithm, &EncodingKey)]) -> String {
    let keys: Vec<Jwk> = entries
        .iter()
        .map(|(kid, alg, key)| {
            let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
            jwk.common.key_id = Some(kid.to_string());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

#[test]
fn jwks_selects_by_kid() {
    let (rsa, ec, ed) = (rsa_key(), ec_key(), ed_key());
    let doc = jwks(&[
        ("r1", Algorithm::RS256, &rsa),
        ("e1", Algorithm::ES256, &ec),
        ("d1", Algorithm::EdDSA, &ed),
    ]);
    let v = JwtVerifier::new(&config(vec![spec(None, &[], KeyMaterial::Jwks(doc))])).unwrap();
    assert_eq!(v.key_count(), 3);
    let c = claims();
    for (kid, alg, key) in [
        ("r1", Algorithm::RS256, &rsa),
        ("e1", Algorithm::ES256, &ec),
        ("d1", Algorithm::EdDSA, &ed),
    ] {
        let token = sign(alg, Some(kid), key, &c);
        assert!(v.verify(token.as_bytes(), now()).is_ok(), "{kid}");
    }
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "unknown kid",
            sign(Algorithm::ES256, Some("zz"), &ec, &c),
            JwtError::UnknownKey,
        ),
        (
            "kid of another key type",
            sign(Algorithm::ES256, Some("r1"), &ec, &c),
            JwtError::AlgorithmNotAllowed(Algorithm::ES256),
        ),
        (
            "HS256 with the RSA kid",
            sign(
                Algorithm::HS256,
                Some("r1"),
                &EncodingKey::from_secret(b"x"),
                &c,
            ),
            JwtError::AlgorithmNotAllowed(Algorithm::HS256),
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(
            v.verify(token.as_bytes(), now()).map(|_| ()),
            Err(want),
            "{name}"
        );
    }
    // No kid in the token: every key allowing the alg is tried.
    let token = sign(Algorithm::EdDSA, None, &ed, &c);
    assert!(v.verify(token.as_bytes(), now()).is_ok());
}

#[test]
fn jwks_algorithm_filter_and_alg_less_keys() {
    let ec = ec_key();
    let mut jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    jwk.common.key_algorithm = None;
    jwk.common.key_id = Some("e1".into());
    let doc = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
    let v = JwtVerifier::new(&config(vec![spec(
        None,
        &[],
        KeyMaterial::Jwks(doc.clone()),
    )]))
    .unwrap();
    let token = sign(Algorithm::ES256, Some("e1"), &ec, &claims());
    assert!(
        v.verify(token.as_bytes(), now()).is_ok(),
        "alg implied by the curve"
    );
    let errs = JwtVerifier::new(&config(vec![spec(
        None,
        &["RS256"],
        KeyMaterial::Jwks(doc),
    )]))
    .unwrap_err();
    assert!(
        errs[0].to_string().starts_with("keys[0].jwks: no usable"),
        "{errs:?}"
    );
}

#[test]
fn config_errors_name_the_field() {
    let cases: Vec<(KeySpec, &str)> = vec![
        (
            spec(None, &["HS999"], KeyMaterial::Secret(SECRET.to_vec())),
            "keys[0].algorithms[0]: unknown algorithm \"HS999\"",
        ),
        (
            spec(None, &["none"], KeyMaterial::Secret(SECRET.to_vec())),
            "keys[0].algorithms[0]: unknown algorithm \"none\"",
        ),
        (
            spec(
                None,
                &["HS256", "RS256"],
                KeyMaterial::Secret(SECRET.to_vec()),
            ),
            "keys[0].algorithms: HS256 and RS256 need different kinds of key",
        ),
        (
            spec(None, &["HS256"], KeyMaterial::Secret(b"short".to_vec())),
            "keys[0].secret: an HMAC secret must be at least 32 bytes",
        ),
        (
            spec(None, &["HS256"], KeyMaterial::Pem(RSA_PUBLIC.into())),
            "keys[0].algorithms: HS256 needs HMAC key material",
        ),
        (
            spec(None, &["RS256"], KeyMaterial::Secret(SECRET.to_vec())),
            "keys[0].algorithms: RS256 needs RSA key material",
        ),
        (
            spec(None, &["RS256"], KeyMaterial::Pem("garbage".into())),
            "keys[0].pem: not a RSA public key",
        ),
        (
            spec(None, &[], KeyMaterial::Pem(EC_PUBLIC.into())),
            "keys[0].algorithms: an inline key needs at least one algorithm",
        ),
        (
            spec(None, &[], KeyMaterial::Jwks("{".into())),
            "keys[0].jwks: not a JWKS document",
        ),
    ];
    for (key, want) in cases {
        let errs = JwtVerifier::new(&config(vec![key])).unwrap_err();
        assert!(errs[0].to_string().starts_with(want), "{errs:?} vs {want}");
    }
    let mut cfg = config(vec![]);
    cfg.forward_claims = vec![("sub".into(), "bad header".into())];
    let errs = JwtVerifier::new(&cfg).unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "keys: at least one key is required",
            "forward_claims[0].header: \"bad header\" is not a header name"
        ]
    );
}

#[test]
fn challenge_and_bearer_extraction() {
    let v = all_inline_keys();
    assert_eq!(
        v.challenge(&JwtError::Missing),
        "Bearer realm=\"shardgate\""
    );
    assert_eq!(
        v.challenge(&JwtError::Expired),
        "Bearer realm=\"shardgate\", error=\"invalid_token\", error_description=\"token expired\""
    );
    assert_eq!(
        v.challenge(&JwtError::MissingClaim("a\"b\r\n".into())),
        "Bearer realm=\"shardgate\", error=\"invalid_token\", error_description=\"missing ab claim\""
    );
    let cases: &[(&[u8], Option<&[u8]>)] = &[
        (b"Bearer abc", Some(b"abc")),
        (b"bearer  abc ", Some(b"abc")),
        (b"BEARER x.y.z", Some(b"x.y.z")),
        (b"Bearer ", None),
        (b"Basic abc", None),
        (b"Bearer", None),
    ];
    for (value, want) in cases {
        assert_eq!(bearer_token(value), *want, "{value:?}");
    }
    assert_eq!(
        v.verify_authorization(None, now()).map(|_| ()),
        Err(JwtError::Missing)
    );
    let token = sign(Algorithm::HS256, None, &hmac_key(), &claims());
    let header = format!("Bearer {token}");
    assert!(
        v.verify_authorization(Some(header.as_bytes()), now())
            .is_ok()
    );
    assert_eq!(JwtError::Expired.status(), 401);
}

#[test]
fn issued_hs256_tokens_verify_with_the_same_secret_only() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let token = issue_hs256(secret, &claims()).unwrap();
    let with = |secret: &[u8]| {
        let mut cfg = config(vec![spec(
            None,
            &["HS256"],
            KeyMaterial::Secret(secret.to_vec()),
        )]);
        cfg.issuers.clear();
        cfg.audiences.clear();
        JwtVerifier::new(&cfg).unwrap()
    };
    assert!(with(secret).verify(token.as_bytes(), now()).is_ok());
    assert_eq!(
        with(b"another secret of at least 32 bytes!")
            .verify(token.as_bytes(), now())
            .unwrap_err(),
        JwtError::BadSignature
    );
}

#[test]
fn claims_cannot_be_forwarded_in_fields_the_proxy_owns() {
    let mut cfg = config(vec![spec(
        None,
        &["HS256"],
        KeyMaterial::Secret(SECRET.to_vec()),
    )]);
    cfg.forward_claims = vec![("tier".into(), "Transfer-Encoding".into())];
    let errors = JwtVerifier::new(&cfg).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "forward_claims[0].header: \"Transfer-Encoding\" is managed by the proxy and cannot be changed"
    );
}
