//! The `shardgate` binary: CLI, logging, signals. Everything else lives in
//! the library crates.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;
mod demo;
mod doctor;
mod logger;

use cli::Command;
use shardgate_config::{Config, ConfigErrors};
use shardgate_proxy::{Gateway, GatewayOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("shardgate: {msg}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    logger::init();
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("shardgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match shardgate_config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} listener(s), {} upstream group(s), {} route(s))",
                    config.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => config_failed(&config.display().to_string(), &errors),
        },
        Command::Run { config, overrides } => match shardgate_config::load(&config) {
            Ok(mut c) => {
                overrides.apply(&mut c);
                serve(c, None)
            }
            Err(errors) => config_failed(&config.display().to_string(), &errors),
        },
        Command::Proxy(p) => match p.to_config() {
            Ok(c) => serve(c, None),
            Err(errors) => config_failed("shardgate proxy", &errors),
        },
        Command::Doctor { connections } => ExitCode::from(doctor::run(connections) as u8),
        Command::Demo => demo::run(),
    }
}

fn config_failed(source: &str, errors: &ConfigErrors) -> ExitCode {
    eprint!("{source}: {errors}");
    ExitCode::from(1)
}

/// Runs a gateway until SIGINT or SIGTERM. `banner` is printed once it listens.
pub(crate) fn serve(config: Config, banner: Option<&dyn Fn(&Gateway)>) -> ExitCode {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let mut gateway = match Gateway::start(config, GatewayOptions::default()) {
        Ok(g) => g,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let addrs: Vec<String> = gateway
        .local_addrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    log::info!(
        "listening on {} with {} shard(s) on the {} driver",
        addrs.join(", "),
        gateway.shards(),
        gateway.driver().name()
    );
    if let Some(banner) = banner {
        banner(&gateway);
    }
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig}: stopping");
    }
    let stats = gateway.stats();
    gateway.shutdown();
    log::info!(
        "served {} requests; upstream connections: {} opened, {} reused (reuse ratio {:.3})",
        stats.requests,
        stats.upstream_connects,
        stats.upstream_reuses,
        stats.reuse_ratio()
    );
    ExitCode::SUCCESS
}
