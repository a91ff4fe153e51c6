//! The loader's one network step: host names in upstream endpoints become
//! addresses. Validation ([`crate::validate`]) does no DNS, so `shardgate
//! check` works offline and judges only the file; the gateway resolves at
//! start and on reload through here, and its refresher keeps the answers
//! current afterwards (`upstreams.<name>.dns_refresh`).

use crate::{Config, ConfigError, ConfigErrors};
use std::net::{SocketAddr, ToSocketAddrs};

/// How a host name becomes addresses (the system resolver, or a test's).
pub type Resolver<'a> = &'a dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>;

/// The system resolver (`getaddrinfo`).
pub fn system(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Resolves every endpoint given as `host:port`, so each upstream has
/// addresses to connect to. Every failure is reported, with the field of
/// the endpoint at fault.
pub fn resolve_hosts(config: &mut Config, resolver: Resolver<'_>) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for u in &mut config.upstreams {
        for (j, source) in u.sources.iter_mut().enumerate() {
            let Some((host, port)) = &source.host else {
                continue;
            };
            let field = format!("upstreams.{}.endpoints[{j}]", u.name);
            match resolver(host, *port) {
                Ok(mut addrs) => {
                    addrs.sort();
                    addrs.dedup();
                    if addrs.is_empty() {
                        errors.push(ConfigError::new(
                            field,
                            format!("{:?} resolved to no address", source.text),
                        ));
                    }
                    source.addrs = addrs;
                }
                Err(e) => errors.push(ConfigError::new(
                    field,
                    format!("cannot resolve {:?}: {e}", source.text),
                )),
            }
        }
        u.flatten();
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The host names a configuration leaves to resolve (`(upstream, host:port)`).
pub fn unresolved(config: &Config) -> Vec<(&str, &str)> {
    config
        .upstreams
        .iter()
        .flat_map(|u| {
            u.sources
                .iter()
                .filter(|s| s.host.is_some() && s.addrs.is_empty())
                .map(|s| (u.name.as_str(), s.text.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: &str) -> Config {
        crate::check_toml(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.app]\nendpoints = [{endpoints}]\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n"
        ))
        .expect("valid")
    }

    #[test]
    fn validation_leaves_host_names_to_the_loader() {
        let c = config("\"10.0.0.1:80\", \"api.internal:8080\"");
        assert_eq!(unresolved(&c), [("app", "api.internal:8080")]);
        assert_eq!(c.upstreams[0].endpoints, ["10.0.0.1:80".parse().unwrap()]);
    }

    #[test]
    fn the_loader_resolves_and_names_the_field_of_each_failure() {
        let answer = |host: &str, port: u16| -> std::io::Result<Vec<SocketAddr>> {
            match host {
                "api.internal" => Ok(vec![
                    SocketAddr::from(([10, 0, 0, 3], port)),
                    SocketAddr::from(([10, 0, 0, 2], port)),
                ]),
                "empty.internal" => Ok(Vec::new()),
                _ => Err(std::io::Error::other("no such host")),
            }
        };
        let mut c = config("\"10.0.0.1:80\", \"api.internal:8080\"");
        resolve_hosts(&mut c, &answer).unwrap();
        let eps: Vec<String> = c.upstreams[0]
            .endpoints
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(eps, ["10.0.0.1:80", "10.0.0.2:8080", "10.0.0.3:8080"]);
        let mut bad = config("\"gone.internal:80\", \"empty.internal:80\"");
        let errs = resolve_hosts(&mut bad, &answer).unwrap_err().to_string();
        assert!(
            errs.contains(
                "upstreams.app.endpoints[0]: cannot resolve \"gone.internal:80\": no such host"
            ) && errs.contains(
                "upstreams.app.endpoints[1]: \"empty.internal:80\" resolved to no address"
            ),
            "{errs}"
        );
    }
}
