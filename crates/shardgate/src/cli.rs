//! Command-line parsing (hand-written: a handful of flags).

use shardgate_config::raw::{RawAdmin, RawConfig, RawListener, RawRoute, RawUpstream, RawWorkers};
use shardgate_config::{Config, ConfigError, ConfigErrors, Driver, Workers};
use std::num::NonZeroUsize;
use std::path::PathBuf;

const HEADER: &str = "Shardgate: a shard-per-core HTTP edge proxy and API gateway.";

const FOOTER: &str = "Durations: 250ms, 10s, 5m, 1h. Logging: SHARDGATE_LOG=error|warn|info|debug.";

/// Each command's usage, in the order the full usage lists them.
const COMMANDS: [(&str, &str); 6] = [
    (
        "demo",
        "  shardgate                         run the demo: the gateway on 127.0.0.1:8080
                                    with the built-in configs/default.toml, three
                                    echo upstreams on 127.0.0.1:9001..9003, and a
                                    banner of curl commands (SHARDGATE_DEMO_PORT_BASE=N
                                    moves them to N and N+1..N+3; 0: free ports)",
    ),
    (
        "run",
        "  shardgate run -c FILE [--workers N] [--driver uring|legacy|auto] [--admin ADDR]
                                    run with a configuration file; the flags
                                    override the file's workers, driver and
                                    admin address
  shardgate run --etcd URL[,URL...] [--etcd-prefix P] [--state-dir DIR] [...]
  shardgate run --bootstrap FILE [...]
                                    run with the configuration in etcd at
                                    P + config (P: /shardgate/), following its
                                    changes and the endpoints registered at
                                    P + endpoints/GROUP/IP:PORT; the last good one
                                    is kept in DIR (/var/lib/shardgate) and served
                                    when etcd is unreachable. FILE gives [etcd]
                                    endpoints, prefix, state_dir, username,
                                    password or password_file, ca, cert, key",
    ),
    (
        "config",
        "  shardgate config push -c FILE (--etcd URL | --bootstrap FILE) [--etcd-prefix P]
                            [--revision N] [--force]
                                    validate FILE, then publish it to etcd unless
                                    etcd's is newer than the revision FILE was read
                                    at (its `config get` header, or --revision)
  shardgate config get (--etcd URL | --bootstrap FILE) [--etcd-prefix P]
                                    print etcd's configuration, headed by its revision",
    ),
    (
        "check",
        "  shardgate check -c FILE           validate a configuration file (exit 1 on errors)",
    ),
    (
        "proxy",
        "  shardgate proxy --listen ADDR --to ADDR[,ADDR...] [OPTIONS]
                                    a reverse proxy with no configuration file
      --workers N                   shards (default: one per core)
      --driver uring|legacy|auto    I/O driver (default: auto)
      --header-timeout DUR          client request head timeout (default 10s)
      --upstream-timeout DUR        upstream response timeout (default 60s)
      --connect-timeout DUR         upstream connect timeout (default 3s)
      --idle-timeout DUR            idle keep-alive timeout (default 60s)
      --max-body SIZE               request body limit, e.g. 10MiB (default: none)
      --pool-idle N                 idle upstream connections kept per endpoint per
                                    shard (default 1024; a cap: the pool keeps only
                                    what concurrent requests opened)
      --tls-cert FILE --tls-key FILE
                                    terminate TLS (PEM); give several pairs and SNI
                                    picks among them (the first is the default)
      --upstream-protocol h1|h2|h2c what the upstreams speak (default h1): h2 is
                                    HTTP/2 over TLS (verified with the system CAs,
                                    or --upstream-ca FILE), h2c over cleartext
      --upstream-ca FILE            CA bundle (PEM) upstream TLS is verified with
      --admin ADDR                  serve the admin API (metrics, /config, /ready)
                                    on ADDR, e.g. 127.0.0.1:9901
  The listener speaks HTTP/1.1 and HTTP/2 (h2c with prior knowledge; h2 by ALPN
  with --tls-cert).",
    ),
    (
        "doctor",
        "  shardgate doctor [--connections N]
                                    can this machine hold N connections? (default 10000)",
    ),
];

/// The usage of one command (`Some("proxy")`), or of them all.
pub fn usage(command: Option<&str>) -> String {
    let body: Vec<&str> = COMMANDS
        .iter()
        .filter(|(name, _)| command.is_none_or(|c| c == *name))
        .map(|(_, text)| *text)
        .collect();
    let more = if command.is_none() {
        "\n  shardgate --help | --version\n  shardgate COMMAND --help"
    } else {
        ""
    };
    format!("{HEADER}\n\nUSAGE:\n{}{more}\n\n{FOOTER}", body.join("\n"))
}

pub enum Command {
    /// The usage of one command, or of all.
    Help(Option<&'static str>),
    Version,
    Demo,
    Check {
        config: PathBuf,
    },
    Run {
        config: PathBuf,
        overrides: Overrides,
    },
    /// `run --etcd` / `run --bootstrap`.
    RunEtcd {
        etcd: crate::fleet::EtcdArgs,
        overrides: Overrides,
    },
    ConfigPush {
        file: PathBuf,
        etcd: crate::fleet::EtcdArgs,
        revision: Option<i64>,
        force: bool,
    },
    ConfigGet {
        etcd: crate::fleet::EtcdArgs,
    },
    Proxy(Box<ProxyArgs>),
    Doctor {
        connections: u64,
    },
}

/// `run` flags that override the file.
#[derive(Default)]
pub struct Overrides {
    workers: Option<Workers>,
    driver: Option<Driver>,
    admin: Option<std::net::SocketAddr>,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        if let Some(address) = self.admin {
            match &mut c.admin {
                Some(a) => a.address = address,
                None => {
                    c.admin = Some(shardgate_config::Admin {
                        address,
                        hosts: Vec::new(),
                        token: None,
                    })
                }
            }
        }
        if let Some(w) = self.workers {
            c.workers = w;
        }
        if let Some(d) = self.driver {
            c.driver = d;
        }
    }
}

#[derive(Default)]
pub struct ProxyArgs {
    listen: Option<String>,
    to: Vec<String>,
    workers: Option<String>,
    driver: Option<String>,
    header_timeout: Option<String>,
    upstream_timeout: Option<String>,
    connect_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_body: Option<String>,
    pool_idle: Option<String>,
    tls_certs: Vec<String>,
    tls_keys: Vec<String>,
    admin: Option<String>,
    upstream_protocol: Option<String>,
    upstream_ca: Option<String>,
}

impl ProxyArgs {
    /// The one-line proxy as a configuration, validated like a file; errors
    /// name the flag at fault.
    pub fn to_config(&self) -> Result<Config, ConfigErrors> {
        let mut missing = Vec::new();
        if self.listen.is_none() {
            missing.push(ConfigError::new("--listen", "is required"));
        }
        if self.to.is_empty() {
            missing.push(ConfigError::new("--to", "is required"));
        }
        let pool_idle = match self.pool_idle.as_deref().map(str::parse::<i64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                missing.push(ConfigError::new(
                    "--pool-idle",
                    format!(
                        "expected a number, got {:?}",
                        self.pool_idle.as_deref().unwrap_or_default()
                    ),
                ));
                None
            }
        };
        if self.tls_certs.len() != self.tls_keys.len() {
            missing.push(ConfigError::new(
                "--tls-cert",
                format!(
                    "{} --tls-cert for {} --tls-key: give them in pairs",
                    self.tls_certs.len(),
                    self.tls_keys.len()
                ),
            ));
        }
        if !missing.is_empty() {
            return Err(ConfigErrors(missing));
        }
        let mut raw = RawConfig {
            workers: self.workers.as_ref().map(|w| match w.parse::<i64>() {
                Ok(n) => RawWorkers::Count(n),
                Err(_) => RawWorkers::Word(w.clone()),
            }),
            driver: self.driver.clone(),
            admin: self.admin.clone().map(|address| RawAdmin {
                address,
                hosts: Vec::new(),
                token: None,
            }),
            ..RawConfig::default()
        };
        let tls = (!self.tls_certs.is_empty()).then(|| shardgate_config::raw::RawListenerTls {
            certificates: self
                .tls_certs
                .iter()
                .zip(&self.tls_keys)
                .map(|(cert, key)| shardgate_config::raw::RawCertPair {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .collect(),
            ..Default::default()
        });
        // HTTP/2 beside HTTP/1.1: h2c with prior knowledge, h2 by ALPN.
        raw.listeners.push(RawListener {
            address: self.listen.clone().unwrap_or_default(),
            tls,
            http2: Some(true),
            ..RawListener::default()
        });
        raw.timeouts.request_header = self.header_timeout.clone();
        raw.timeouts.upstream_response = self.upstream_timeout.clone();
        raw.timeouts.connect = self.connect_timeout.clone();
        raw.timeouts.idle = self.idle_timeout.clone();
        raw.pool.max_idle_per_endpoint = pool_idle;
        raw.limits.max_body = self
            .max_body
            .clone()
            .map(shardgate_config::raw::RawSize::Text);
        raw.upstreams.insert(
            "backend".into(),
            RawUpstream {
                endpoints: self.to.clone(),
                protocol: self.upstream_protocol.clone(),
                tls: (self.upstream_protocol.as_deref() == Some("h2")
                    || self.upstream_ca.is_some())
                .then(|| shardgate_config::raw::RawUpstreamTls {
                    ca: self.upstream_ca.clone(),
                    ..Default::default()
                }),
                ..RawUpstream::default()
            },
        );
        raw.routes.push(RawRoute {
            name: Some("all".into()),
            hosts: Vec::new(),
            methods: Vec::new(),
            path: None,
            prefix: Some("/".into()),
            upstream: Some("backend".into()),
            upstreams: None,
            tenant: None,
            filters: Vec::new(),
        });
        shardgate_config::from_raw(raw).map_err(|ConfigErrors(errs)| {
            ConfigErrors(
                errs.into_iter()
                    .map(|e| ConfigError::new(flag_for(&e.path), e.message))
                    .collect(),
            )
        })
    }
}

/// The flag behind a configuration path, for the one-line proxy's errors.
fn flag_for(path: &str) -> String {
    let flag = match path {
        "workers" => "--workers",
        "driver" => "--driver",
        "timeouts.request_header" => "--header-timeout",
        "timeouts.upstream_response" => "--upstream-timeout",
        "timeouts.connect" => "--connect-timeout",
        "timeouts.idle" => "--idle-timeout",
        "limits.max_body" => "--max-body",
        "pool.max_idle_per_endpoint" => "--pool-idle",
        p if p.starts_with("admin") => "--admin",
        p if p.starts_with("listeners[0].tls") => "--tls-cert/--tls-key",
        p if p.starts_with("listeners") => "--listen",
        p if p.ends_with(".protocol") => "--upstream-protocol",
        p if p.contains(".tls") => "--upstream-ca",
        p if p.starts_with("upstreams") => "--to",
        p => p,
    };
    flag.to_string()
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Ok(Command::Demo);
    };
    let rest = &args[1..];
    if let Some((name, _)) = COMMANDS.iter().find(|(name, _)| name == first)
        && rest.iter().any(|a| a == "-h" || a == "--help")
    {
        return Ok(Command::Help(Some(name)));
    }
    match first.as_str() {
        "-h" | "--help" => Ok(Command::Help(None)),
        "help" => Ok(Command::Help(match rest.first() {
            None => None,
            Some(c) => Some(
                COMMANDS
                    .iter()
                    .find(|(name, _)| name == c)
                    .map(|(name, _)| *name)
                    .ok_or_else(|| format!("unknown command {c:?}"))?,
            ),
        })),
        "-V" | "--version" => Ok(Command::Version),
        "check" => {
            let mut config = None;
            flags(rest, |flag, value| match flag {
                "-c" | "--config" => {
                    config = Some(PathBuf::from(value()?));
                    Ok(())
                }
                _ => Err(format!("unknown option {flag} for check")),
            })?;
            Ok(Command::Check {
                config: config.ok_or("check needs -c FILE")?,
            })
        }
        "run" => {
            let mut config = None;
            let mut overrides = Overrides::default();
            let mut etcd = crate::fleet::EtcdArgs::default();
            flags(rest, |flag, value| {
                if etcd.flag(flag, value)? {
                    return Ok(());
                }
                match flag {
                    "-c" | "--config" => config = Some(PathBuf::from(value()?)),
                    "--workers" => {
                        let v = value()?;
                        overrides.workers = Some(if v == "auto" {
                            Workers::Auto
                        } else {
                            Workers::Count(v.parse::<NonZeroUsize>().map_err(|_| {
                                format!("--workers: expected a number or auto, got {v:?}")
                            })?)
                        });
                    }
                    "--driver" => {
                        let v = value()?;
                        overrides.driver = Some(Driver::parse(&v).ok_or(format!(
                            "--driver: expected uring, legacy or auto, got {v:?}"
                        ))?);
                    }
                    "--admin" => {
                        let v = value()?;
                        overrides.admin = Some(v.parse().map_err(|_| {
                            format!(
                                "--admin: expected an address such as 127.0.0.1:9901, got {v:?}"
                            )
                        })?);
                    }
                    _ => return Err(format!("unknown option {flag} for run")),
                }
                Ok(())
            })?;
            match (config, etcd.given()) {
                (Some(_), true) => {
                    Err("run takes -c FILE or etcd (--etcd, --bootstrap), not both".into())
                }
                (Some(config), false) => Ok(Command::Run { config, overrides }),
                (None, true) => Ok(Command::RunEtcd { etcd, overrides }),
                (None, false) => Err("run needs -c FILE, or --etcd URL".into()),
            }
        }
        "config" => {
            let (action, rest) = match rest.split_first() {
                Some((a, rest)) => (a.as_str(), rest),
                None => return Err("config needs push or get".into()),
            };
            let mut file = None;
            let mut revision = None;
            let mut force = false;
            let mut etcd = crate::fleet::EtcdArgs::default();
            flags(rest, |flag, value| {
                if etcd.flag(flag, value)? {
                    return Ok(());
                }
                match (action, flag) {
                    ("push", "-c" | "--config") => file = Some(PathBuf::from(value()?)),
                    ("push", "--revision") => {
                        let v = value()?;
                        revision =
                            Some(v.parse::<i64>().map_err(|_| {
                                format!("--revision: expected a number, got {v:?}")
                            })?);
                    }
                    ("push", "--force") => force = true,
                    _ => return Err(format!("unknown option {flag} for config {action}")),
                }
                Ok(())
            })?;
            if !etcd.given() {
                return Err(format!(
                    "config {action} needs --etcd URL or --bootstrap FILE"
                ));
            }
            if etcd.state_dir.is_some() {
                return Err(format!("config {action} takes no --state-dir"));
            }
            match action {
                "push" => Ok(Command::ConfigPush {
                    file: file.ok_or("config push needs -c FILE")?,
                    etcd,
                    revision,
                    force,
                }),
                "get" => Ok(Command::ConfigGet { etcd }),
                other => Err(format!("unknown config action {other:?}: push or get")),
            }
        }
        "proxy" => {
            let mut p = ProxyArgs::default();
            flags(rest, |flag, value| {
                let slot = match flag {
                    "--listen" => &mut p.listen,
                    "--to" => {
                        p.to.extend(
                            value()?
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string),
                        );
                        return Ok(());
                    }
                    "--workers" => &mut p.workers,
                    "--driver" => &mut p.driver,
                    "--header-timeout" => &mut p.header_timeout,
                    "--upstream-timeout" => &mut p.upstream_timeout,
                    "--connect-timeout" => &mut p.connect_timeout,
                    "--idle-timeout" => &mut p.idle_timeout,
                    "--max-body" => &mut p.max_body,
                    "--pool-idle" => &mut p.pool_idle,
                    "--admin" => &mut p.admin,
                    "--upstream-protocol" => &mut p.upstream_protocol,
                    "--upstream-ca" => &mut p.upstream_ca,
                    "--tls-cert" => {
                        p.tls_certs.push(value()?);
                        return Ok(());
                    }
                    "--tls-key" => {
                        p.tls_keys.push(value()?);
                        return Ok(());
                    }
                    _ => return Err(format!("unknown option {flag} for proxy")),
                };
                *slot = Some(value()?);
                Ok(())
            })?;
            Ok(Command::Proxy(Box::new(p)))
        }
        "doctor" => {
            let mut connections = 10_000;
            flags(rest, |flag, value| match flag {
                "--connections" | "-n" => {
                    let v = value()?;
                    connections = v
                        .parse()
                        .map_err(|_| format!("--connections: expected a number, got {v:?}"))?;
                    Ok(())
                }
                _ => Err(format!("unknown option {flag} for doctor")),
            })?;
            Ok(Command::Doctor { connections })
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Walks `--flag value` and `--flag=value` pairs.
fn flags(
    args: &[String],
    mut on: impl FnMut(&str, &mut dyn FnMut() -> Result<String, String>) -> Result<(), String>,
) -> Result<(), String> {
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if !flag.starts_with('-') {
            return Err(format!("unexpected argument {arg:?}"));
        }
        let mut used_next = false;
        let mut value = || -> Result<String, String> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            used_next = true;
            args.get(i + 1)
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        on(&flag, &mut value)?;
        i += if used_next { 2 } else { 1 };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn proxy_flags_become_a_config() {
        let Ok(Command::Proxy(p)) = parse(&args(
            "proxy --listen 127.0.0.1:0 --to 127.0.0.1:1,127.0.0.1:2 --workers 1 --header-timeout 5s --upstream-timeout=4s",
        )) else {
            panic!("not a proxy command");
        };
        let c = p.to_config().unwrap();
        assert_eq!(c.upstreams[0].endpoints.len(), 2);
        assert_eq!(c.timeouts.request_header, std::time::Duration::from_secs(5));
        assert_eq!(
            c.timeouts.upstream_response,
            std::time::Duration::from_secs(4)
        );
        assert_eq!(c.workers.resolve(), 1);
    }

    #[test]
    fn proxy_errors_name_flags() {
        let Ok(Command::Proxy(p)) =
            parse(&args("proxy --listen nowhere --to x --header-timeout 5"))
        else {
            panic!("not a proxy command");
        };
        let errs = p.to_config().unwrap_err().to_string();
        for flag in ["--listen", "--to", "--header-timeout"] {
            assert!(errs.contains(flag), "{flag} missing in {errs}");
        }
        let Ok(Command::Proxy(p)) = parse(&args("proxy")) else {
            panic!("not a proxy command");
        };
        let errs = p.to_config().unwrap_err().to_string();
        assert!(
            errs.contains("--listen: is required") && errs.contains("--to: is required"),
            "{errs}"
        );
    }

    #[test]
    fn every_command_has_its_own_help() {
        for (name, _) in COMMANDS {
            let line = if name == "demo" {
                "help demo".to_string()
            } else {
                format!("{name} --help")
            };
            let Ok(Command::Help(Some(c))) = parse(&args(&line)) else {
                panic!("{line}: not help");
            };
            assert_eq!(c, name);
            let text = usage(Some(c));
            assert!(text.contains("USAGE:"), "{text}");
            for (other, _) in COMMANDS.iter().filter(|(o, _)| *o != name && *o != "demo") {
                assert!(
                    !text.contains(&format!("shardgate {other}")),
                    "{line} shows {other}: {text}"
                );
            }
        }
        assert!(matches!(
            parse(&args("proxy -h --listen x")),
            Ok(Command::Help(Some("proxy")))
        ));
        assert!(matches!(parse(&args("--help")), Ok(Command::Help(None))));
        assert!(parse(&args("help frobnicate")).is_err());
        let all = usage(None);
        for (_, text) in COMMANDS {
            assert!(all.contains(text));
        }
    }

    #[test]
    fn admin_flag_serves_the_admin_api_and_errors_name_it() {
        let config = |flags: &str| {
            let Ok(Command::Proxy(p)) = parse(&args(&format!(
                "proxy --listen 127.0.0.1:0 --to 127.0.0.1:1 {flags}"
            ))) else {
                panic!("not a proxy command");
            };
            p.to_config()
        };
        let c = config("--admin 127.0.0.1:9901").unwrap();
        assert_eq!(
            c.admin.map(|a| a.address.to_string()).as_deref(),
            Some("127.0.0.1:9901")
        );
        assert!(config("").unwrap().admin.is_none());
        let errs = config("--admin nowhere").unwrap_err().to_string();
        assert!(errs.contains("--admin"), "{errs}");
    }

    #[test]
    fn pool_idle_flag_sets_the_cap_and_errors_name_it() {
        let Ok(Command::Proxy(p)) = parse(&args(
            "proxy --listen 127.0.0.1:0 --to 127.0.0.1:1 --pool-idle 7",
        )) else {
            panic!("not a proxy command");
        };
        assert_eq!(p.to_config().unwrap().pool.max_idle_per_endpoint, 7);
        for bad in ["many", "-1"] {
            let Ok(Command::Proxy(p)) = parse(&args(&format!(
                "proxy --listen 127.0.0.1:0 --to 127.0.0.1:1 --pool-idle {bad}"
            ))) else {
                panic!("not a proxy command");
            };
            let errs = p.to_config().unwrap_err().to_string();
            assert!(errs.contains("--pool-idle"), "{bad}: {errs}");
        }
    }

    #[test]
    fn tls_flags_come_in_pairs_and_errors_name_them() {
        let Ok(Command::Proxy(p)) = parse(&args(
            "proxy --listen 127.0.0.1:0 --to 127.0.0.1:1 --tls-cert a.crt --tls-cert b.crt --tls-key a.key",
        )) else {
            panic!("not a proxy command");
        };
        let errs = p.to_config().unwrap_err().to_string();
        assert!(
            errs.contains("--tls-cert") && errs.contains("pairs"),
            "{errs}"
        );
        let Ok(Command::Proxy(p)) = parse(&args(
            "proxy --listen 127.0.0.1:0 --to 127.0.0.1:1 --tls-cert /nonexistent.crt --tls-key /nonexistent.key",
        )) else {
            panic!("not a proxy command");
        };
        let errs = p.to_config().unwrap_err().to_string();
        assert!(
            errs.contains("--tls-cert/--tls-key") && errs.contains("/nonexistent.crt"),
            "{errs}"
        );
    }

    #[test]
    fn bad_usage() {
        assert!(parse(&args("frobnicate")).is_err());
        assert!(parse(&args("run")).is_err());
        assert!(parse(&args("run -c")).is_err());
        assert!(parse(&args("run -c x --driver kqueue")).is_err());
        assert!(parse(&args("doctor --connections many")).is_err());
        assert!(matches!(parse(&[]), Ok(Command::Demo)));
        assert!(matches!(
            parse(&args("doctor -n 5")),
            Ok(Command::Doctor { connections: 5 })
        ));
    }

    #[test]
    fn etcd_commands_and_their_mistakes() {
        let err = |s: &str| {
            parse(&args(s))
                .err()
                .unwrap_or_else(|| panic!("{s} parsed"))
        };
        match parse(&args(
            "run --etcd http://a:2379,http://b:2379 --etcd-prefix /p/ --workers 2",
        )) {
            Ok(Command::RunEtcd { etcd, .. }) => {
                assert_eq!(etcd.endpoints, ["http://a:2379", "http://b:2379"]);
                assert_eq!(etcd.prefix.as_deref(), Some("/p/"));
            }
            _ => panic!("run --etcd"),
        }
        assert!(err("run -c x --etcd http://a:2379").contains("not both"));
        assert!(err("run --admin nowhere -c x").contains("--admin"));
        match parse(&args(
            "config push -c f.toml --bootstrap b.toml --revision 7 --force",
        )) {
            Ok(Command::ConfigPush {
                revision, force, ..
            }) => assert_eq!((revision, force), (Some(7), true)),
            _ => panic!("config push"),
        }
        assert!(matches!(
            parse(&args("config get --etcd http://a:2379")),
            Ok(Command::ConfigGet { .. })
        ));
        assert!(err("config").contains("push or get"));
        assert!(err("config push -c f.toml").contains("--etcd"));
        assert!(err("config push --etcd http://a:2379").contains("-c FILE"));
        assert!(err("config get --etcd http://a:2379 --force").contains("--force"));
        assert!(err("config push -c f --etcd http://a:2379 --revision x").contains("--revision"));
        assert!(err("config get --etcd http://a:2379 --state-dir /x").contains("--state-dir"));
    }
}
