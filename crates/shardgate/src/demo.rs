//! `shardgate` with no arguments: the gateway with the embedded
//! `configs/default.toml`, three demo upstreams that echo what they received
//! as JSON ([`echo`]), and a banner of commands to try, one group per
//! feature: routing, resilience and limits, API keys and JWTs, CORS, tenants.
//!
//! **Ports.** The configuration's own: the gateway on 127.0.0.1:8080, the
//! upstreams blue, green and flaky on 9001, 9002 and 9003. With
//! `SHARDGATE_DEMO_PORT_BASE=N` the gateway listens on N and the upstreams on
//! N+1, N+2 and N+3; with `0`, every one takes a free port (the tests do),
//! and the banner shows the ports taken.

mod echo;

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEFAULT_CONFIG: &str = include_str!("../../../configs/default.toml");
/// Moves the demo's ports: see the module doc.
const PORT_BASE_VAR: &str = "SHARDGATE_DEMO_PORT_BASE";
/// The gateway's listener as `configs/default.toml` writes it.
const GATEWAY_ADDR: &str = "127.0.0.1:8080";
/// The demo upstreams, with their addresses as `configs/default.toml` writes them.
const UPSTREAMS: [(&str, &str); 3] = [
    ("blue", "127.0.0.1:9001"),
    ("green", "127.0.0.1:9002"),
    ("flaky", "127.0.0.1:9003"),
];
/// The key of the `keyed` route's consumer `demo-app` (the configuration
/// holds its SHA-256).
const DEMO_KEY: &str = "demo-key";
/// The key of tenant globex's consumer `globex-ci`.
const GLOBEX_KEY: &str = "globex-key";
/// The route whose JWT key signs the banner's token.
const JWT_ROUTE: &str = "jwt";
/// The `sub` of the banner's token, forwarded upstream as `x-user`.
const TOKEN_SUBJECT: &str = "alice";
/// How long the banner's token stays valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Banner comments start in this column, or on the next line when the
/// command is longer.
const COMMENT_COLUMN: usize = 60;

pub fn run() -> ExitCode {
    let base = match std::env::var(PORT_BASE_VAR) {
        Err(_) => None,
        Ok(text) => match parse_port_base(&text) {
            Ok(base) => Some(base),
            Err(msg) => {
                eprintln!("shardgate demo: {msg}");
                return ExitCode::from(2);
            }
        },
    };
    // The upstreams first: with a base of 0 their ports are known only once bound.
    let mut addrs = Vec::with_capacity(UPSTREAMS.len() + 1);
    for (i, (name, configured)) in UPSTREAMS.into_iter().enumerate() {
        let want = base.map_or(configured.to_string(), |b| local(b, i + 1));
        let listener = match TcpListener::bind(&want) {
            Ok(l) => l,
            Err(e) => {
                log::error!(
                    "demo upstream {name} cannot listen on {want}: {e} \
                     ({PORT_BASE_VAR}=N moves the demo to ports N to N+3, 0 to free ones)"
                );
                return ExitCode::from(1);
            }
        };
        let bound = listener
            .local_addr()
            .map_or(want, |a: SocketAddr| a.to_string());
        addrs.push((configured, bound));
        std::thread::Builder::new()
            .name(format!("demo-{name}"))
            .spawn(move || echo::accept(listener, name))
            .expect("spawning a demo thread");
    }
    addrs.push((
        GATEWAY_ADDR,
        base.map_or(GATEWAY_ADDR.to_string(), |b| local(b, 0)),
    ));
    let text = substitute(DEFAULT_CONFIG, &addrs);
    let config = match shardgate_config::from_toml(&text) {
        Ok(c) => c,
        Err(e) => {
            eprint!("built-in configuration: {e}");
            return ExitCode::from(1);
        }
    };
    let token = match mint_token(&config) {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("built-in configuration: {msg}");
            return ExitCode::from(1);
        }
    };
    let upstreams: Vec<(&str, &str)> = UPSTREAMS
        .iter()
        .zip(&addrs)
        .map(|((name, _), (_, bound))| (*name, bound.as_str()))
        .collect();
    let options = shardgate_proxy::GatewayOptions {
        config_hash: shardgate_proxy::config_hash(&text),
        ..Default::default()
    };
    crate::serve(
        config,
        options,
        Some(&|g| print!("{}", banner(g.local_addrs()[0], &upstreams, &token))),
    )
}

/// `SHARDGATE_DEMO_PORT_BASE`: a port with room for three more above it, or 0.
fn parse_port_base(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(b) if b <= u16::MAX - 3 => Ok(b),
        _ => Err(format!(
            "{PORT_BASE_VAR}={text:?}: expected a port from 1 to {} (the upstreams take the \
             next three) or 0 for free ports",
            u16::MAX - 3
        )),
    }
}

/// The loopback address of port `base + offset`, or of a free port when `base` is 0.
fn local(base: u16, offset: usize) -> String {
    let port = if base == 0 {
        0
    } else {
        usize::from(base) + offset
    };
    format!("127.0.0.1:{port}")
}

/// `text` with every `from` replaced by its `to`, in one pass (so a `to`
/// that is another pair's `from` is not replaced again).
fn substitute(text: &str, pairs: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in pairs {
            if let Some(after) = rest.strip_prefix(from) {
                out.push_str(to);
                rest = after;
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A token the `jwt` route accepts: signed with the route's HS256 secret,
/// issued by its first accepted issuer, for [`TOKEN_SUBJECT`], valid for
/// [`TOKEN_LIFETIME`] from now.
fn mint_token(config: &shardgate_config::Config) -> Result<String, String> {
    use shardgate_filters::filter::FilterSpec;
    use shardgate_filters::jwt::KeyMaterial;
    let jwt = config
        .routes
        .iter()
        .filter(|r| r.name == JWT_ROUTE)
        .flat_map(|r| &r.filters)
        .find_map(|f| match f {
            FilterSpec::Jwt(j) => Some(j),
            _ => None,
        })
        .ok_or_else(|| format!("no jwt filter on a route named {JWT_ROUTE:?}"))?;
    let secret = jwt
        .keys
        .iter()
        .find_map(|k| match &k.material {
            KeyMaterial::Secret(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| format!("the jwt filter of route {JWT_ROUTE:?} has no HMAC secret"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = serde_json::json!({
        "sub": TOKEN_SUBJECT,
        "exp": now + TOKEN_LIFETIME.as_secs(),
    });
    if let Some(issuer) = jwt.issuers.first() {
        claims["iss"] = issuer.as_str().into();
    }
    shardgate_filters::jwt::issue_hs256(secret, &claims)
        .ok_or_else(|| format!("cannot sign a token with the secret of route {JWT_ROUTE:?}"))
}

/// The banner: where everything listens, then each group's commands with
/// what they show.
fn banner(addr: SocketAddr, upstreams: &[(&str, &str)], token: &str) -> String {
    let b = format!("http://{addr}");
    let loop_of =
        |n: u32, curl: &str, tail: &str| format!("for i in $(seq {n}); do {curl}; done{tail}");
    let codes = "curl -s -o /dev/null -w '%{http_code} '";
    let groups: [(&str, Vec<(String, String)>); 5] = [
        (
            "Routing",
            vec![
                (
                    format!("curl -i {b}/api/hello"),
                    "again: blue and green take turns; see X-Request-Id".into(),
                ),
                (
                    format!("curl -i {b}/status"),
                    "GET-only route to blue".into(),
                ),
                (
                    format!("curl -i -X POST {b}/status"),
                    "405 with an Allow header".into(),
                ),
                (
                    format!("curl -i -H 'Host: green.localhost' {b}/"),
                    "host routing: always green".into(),
                ),
                (format!("curl -i {b}/nowhere"), "404: no route".into()),
                (
                    format!("curl -i -d 'hello' {b}/api/echo"),
                    "a body goes through".into(),
                ),
                (
                    format!("curl -i {b}/old/docs"),
                    "301, Location: /api/docs (-L follows it)".into(),
                ),
            ],
        ),
        (
            "Resilience and limits",
            vec![
                (
                    loop_of(
                        20,
                        &format!("curl -s {b}/canary | grep -o 'blue\\|green'"),
                        " | sort | uniq -c",
                    ),
                    "canary split 70/30: 14 blue, 6 green".into(),
                ),
                (
                    loop_of(12, &format!("{codes} {b}/flaky"), "; echo"),
                    "500s from the flaky upstream, then 503s: the breaker opened".into(),
                ),
                (
                    loop_of(8, &format!("{codes} {b}/limited"), "; echo"),
                    "5 per 10 s per client IP: five 200s, then 429s".into(),
                ),
            ],
        ),
        (
            "Authentication",
            vec![
                (format!("curl -i {b}/keyed/hello"), "401: no API key".into()),
                (
                    format!("curl -i -H 'X-Api-Key: {DEMO_KEY}' {b}/keyed/hello"),
                    "200: the echo shows x-consumer: demo-app, not the key".into(),
                ),
                (
                    format!("curl -i -H 'X-Api-Key: wrong' {b}/keyed/hello"),
                    "403: unknown key".into(),
                ),
                (
                    format!("curl -i {b}/jwt/hello"),
                    "401 with WWW-Authenticate: Bearer".into(),
                ),
                (
                    format!("curl -i -H \"Authorization: Bearer {token}\" {b}/jwt/hello"),
                    format!(
                        "200: a token for {TOKEN_SUBJECT}, valid {} h; the echo shows x-user: {TOKEN_SUBJECT}",
                        TOKEN_LIFETIME.as_secs() / 3600
                    ),
                ),
            ],
        ),
        (
            "CORS",
            vec![(
                format!(
                    "curl -i -X OPTIONS -H 'Origin: http://localhost:3000' \
                     -H 'Access-Control-Request-Method: PUT' {b}/api/hello"
                ),
                "preflight: 204 with Access-Control-Allow-Origin".into(),
            )],
        ),
        (
            "Tenants, by host",
            vec![
                (
                    format!("curl -i -H 'Host: acme.localhost' {b}/hello"),
                    "acme: X-Tenant: acme both ways; 20 a minute for the whole tenant".into(),
                ),
                (
                    format!(
                        "curl -i -H 'Host: globex.localhost' -H 'X-Api-Key: {GLOBEX_KEY}' {b}/hello"
                    ),
                    "globex: its own API key (without: 401)".into(),
                ),
            ],
        ),
    ];
    let names: Vec<String> = upstreams
        .iter()
        .map(|(name, addr)| format!("{name} ({addr})"))
        .collect();
    let (last, others) = names.split_last().expect("the demo has upstreams");
    let mut out = format!(
        "\nShardgate demo on {b} (one shard). The upstreams {} and {}\n\
         echo back what reached them, headers included.\n",
        others.join(", "),
        last
    );
    for (title, lines) in groups {
        out.push_str(&format!("\n{title}\n"));
        for (command, comment) in lines {
            if command.len() < COMMENT_COLUMN {
                out.push_str(&format!("  {command:<w$}# {comment}\n", w = COMMENT_COLUMN));
            } else {
                out.push_str(&format!(
                    "  {command}\n  {:w$}# {comment}\n",
                    "",
                    w = COMMENT_COLUMN
                ));
            }
        }
    }
    out.push_str(&format!(
        "\nPorts: {PORT_BASE_VAR}=N puts the gateway on N and the upstreams on N+1..N+3 \
         (0: free ports).\nCtrl-C stops it.\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_is_one_pass() {
        let pairs = [("a:1", "a:2".to_string()), ("a:2", "a:3".to_string())];
        assert_eq!(substitute("x a:1 a:2 ü", &pairs), "x a:2 a:3 ü");
    }

    #[test]
    fn port_base_leaves_room_for_the_upstreams() {
        assert_eq!(parse_port_base("0"), Ok(0));
        assert_eq!(parse_port_base("18080"), Ok(18080));
        assert_eq!(parse_port_base("65532"), Ok(65532));
        for bad in ["65533", "-1", "x", ""] {
            assert!(parse_port_base(bad).is_err(), "{bad}");
        }
        assert_eq!(local(18080, 3), "127.0.0.1:18083");
        assert_eq!(local(0, 3), "127.0.0.1:0");
    }

    #[test]
    fn the_configuration_holds_the_demo_keys_and_a_jwt_secret() {
        assert!(DEFAULT_CONFIG.contains(&shardgate_filters::api_key::hash_key(DEMO_KEY)));
        assert!(DEFAULT_CONFIG.contains(&shardgate_filters::api_key::hash_key(GLOBEX_KEY)));
        let config = shardgate_config::from_toml(DEFAULT_CONFIG).expect("valid");
        assert!(mint_token(&config).is_ok());
    }
}
