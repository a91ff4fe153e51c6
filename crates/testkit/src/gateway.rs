//! An in-process gateway on 127.0.0.1:0.

use shardgate_config::{Config, Driver};
use shardgate_proxy::{Gateway, GatewayOptions, StatsSnapshot};
use std::net::SocketAddr;

/// Both I/O drivers; I/O tests run once on each.
pub const DRIVERS: [Driver; 2] = [Driver::Uring, Driver::Legacy];

/// A configuration with one listener on port 0, one shard, the given
/// driver, one upstream group `backend` of `upstreams` and a catch-all
/// route, plus `extra` TOML (tables such as `[timeouts]`).
pub fn config_for(driver: Driver, upstreams: &[SocketAddr], extra: &str) -> Config {
    let endpoints: Vec<String> = upstreams.iter().map(|a| format!("\"{a}\"")).collect();
    let driver = match driver {
        Driver::Uring => "uring",
        Driver::Legacy => "legacy",
        Driver::Auto => "auto",
    };
    let text = format!(
        "workers = 1\ndriver = \"{driver}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
         [upstreams.backend]\nendpoints = [{}]\n[[routes]]\nname = \"all\"\nprefix = \"/\"\n\
         upstream = \"backend\"\n{extra}\n",
        endpoints.join(", ")
    );
    shardgate_config::from_toml(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

/// A running gateway; stopped on drop.
pub struct TestGateway {
    gateway: Gateway,
}

impl TestGateway {
    pub fn start(config: Config) -> TestGateway {
        let gateway = Gateway::start(
            config,
            GatewayOptions {
                pin_cores: false,
                ..GatewayOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("gateway failed to start: {e}"));
        TestGateway { gateway }
    }

    /// With process options (e.g. a test resolver); cores are never pinned.
    pub fn start_with(config: Config, options: GatewayOptions) -> TestGateway {
        let options = GatewayOptions {
            pin_cores: false,
            ..options
        };
        let gateway = Gateway::start(config, options)
            .unwrap_or_else(|e| panic!("gateway failed to start: {e}"));
        TestGateway { gateway }
    }

    /// The simple case: one upstream group, a catch-all route.
    pub fn proxy(driver: Driver, upstreams: &[SocketAddr], extra: &str) -> TestGateway {
        TestGateway::start(config_for(driver, upstreams, extra))
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway.local_addrs()[0]
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.gateway.stats()
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }
}
