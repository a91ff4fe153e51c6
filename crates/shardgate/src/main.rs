//! The `shardgate` binary: CLI, logging, signals. Everything else lives in
//! the library crates.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Memory settings the binary makes for itself, so that users need no environment variable.
#[allow(unsafe_code)]
mod memory {
    /// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`, inherited
    /// across a binary upgrade's exec). mimalloc asks for huge pages on its arenas
    /// (`madvise`), and the kernel then backs the first touch of each 2 MiB with a whole huge
    /// page: a gateway's many small per-connection allocations, spread over those pages,
    /// made an idle keep-alive connection cost 2.3 KiB of resident memory instead of 1.1
    /// (README, Benchmarks). `MIMALLOC_ALLOW_THP=1` keeps them for whoever wants them.
    ///
    /// And it has mimalloc give freed memory back to the system after 10 ms rather than its
    /// default of 1 s (10 s for whole arenas): an idle shard makes no allocation that would
    /// run a purge that is due, so what a burst of requests borrowed stayed resident while
    /// its connections sat idle (0.80 KiB per idle connection against 0.74; README,
    /// Benchmarks). `MIMALLOC_PURGE_DELAY` still chooses for whoever sets it.
    pub fn tune() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: mi_option_set takes two integers and sets one of the allocator's
            // options, which it reads when it next purges.
            unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v == "1") {
            return;
        }
        // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) takes no pointers; it sets a flag
        // of this process. A kernel without it refuses, and nothing else changes.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }

    /// Gives what the calling thread freed back to the system now (`mi_collect`): a shard
    /// calls it after it has parked connections (their tasks freed), since an idle shard
    /// makes no call that would run a purge that is due.
    pub fn trim() {
        // SAFETY: mi_collect takes a flag; it works on the calling thread's heap.
        unsafe { mi_collect(false) };
    }

    /// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (libmimalloc-sys names no
    /// constant for it); the test below checks that it is the option whose default is 1 s.
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

    unsafe extern "C" {
        // mimalloc's own, linked in with the allocator.
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
        fn mi_collect(force: bool);
        #[cfg(test)]
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    #[cfg(test)]
    #[test]
    fn the_purge_delay_is_the_option_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: as in `tune`; mi_option_get reads an option.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        tune();
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 10);
    }
}

mod cli;
mod demo;
mod doctor;
mod fleet;
mod logger;
mod watch;

use cli::Command;
use shardgate_config::{Config, ConfigErrors};
use shardgate_proxy::{Gateway, GatewayOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    memory::tune();
    shardgate_proxy::set_memory_trim(memory::trim);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("shardgate: {msg}\n\n{}", cli::usage(None));
            return ExitCode::from(2);
        }
    };
    logger::init();
    match command {
        Command::Help(command) => {
            println!("{}", cli::usage(command));
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("shardgate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match shardgate_config::check(&config) {
            Ok(c) => {
                println!(
                    "{}: OK ({} listener(s), {} upstream group(s), {} route(s))",
                    config.display(),
                    c.listeners.len(),
                    c.upstreams.len(),
                    c.routes.len()
                );
                // Checked offline: names are resolved when the gateway starts.
                for (upstream, host) in shardgate_config::resolve::unresolved(&c) {
                    println!("  upstream {upstream:?}: {host} is resolved at start");
                }
                for (i, l) in c.listeners.iter().enumerate() {
                    for cert in l.tls.iter().flat_map(|t| &t.certs) {
                        let expires = shardgate_proxy::civil_time(cert.not_after.max(0) as u64);
                        println!(
                            "  listeners[{i}] ({}): TLS certificate {} for {}, expires {}Z",
                            l.address,
                            cert.paths.cert.display(),
                            cert.names.join(", "),
                            String::from_utf8_lossy(&expires)
                        );
                    }
                }
                for w in c.warnings() {
                    println!("  warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(errors) => config_failed(&config.display().to_string(), &errors),
        },
        Command::Run { config, overrides } => {
            let text = match shardgate_config::read_text(&config, shardgate_config::MAX_CONFIG_FILE)
            {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: cannot read the file: {e}", config.display());
                    return ExitCode::from(1);
                }
            };
            match shardgate_config::from_toml(&text) {
                Ok(mut c) => {
                    overrides.apply(&mut c);
                    let options = GatewayOptions {
                        config_path: Some(config.clone()),
                        config_hash: shardgate_proxy::config_hash(&text),
                        config_text: Some(text),
                        adjust: Some(std::sync::Arc::new(
                            move |c: &mut shardgate_config::Config| overrides.apply(c),
                        )),
                        ..GatewayOptions::default()
                    };
                    serve(c, options, None)
                }
                Err(errors) => config_failed(&config.display().to_string(), &errors),
            }
        }
        Command::RunEtcd { etcd, overrides } => fleet::run(&etcd, overrides),
        Command::ConfigPush {
            file,
            etcd,
            revision,
            force,
        } => fleet::push(&etcd, &file, revision, force),
        Command::ConfigGet { etcd } => fleet::get(&etcd),
        Command::Proxy(p) => match p.to_config() {
            Ok(c) => {
                let options = GatewayOptions {
                    source_name: "command line",
                    ..GatewayOptions::default()
                };
                serve(c, options, None)
            }
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

/// Runs a gateway until SIGINT or SIGTERM (graceful drain; a second one
/// stops at once) or SIGQUIT (at once). SIGHUP reloads the configuration
/// file; so does a change to it (checked every second). SIGUSR1 reopens the
/// access log. `banner` is printed
/// once the gateway listens.
pub(crate) fn serve(
    config: Config,
    options: GatewayOptions,
    banner: Option<&dyn Fn(&Gateway)>,
) -> ExitCode {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
    let mut signals =
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1]) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
    let drain_timeout = config.drain_timeout;
    let mut gateway = match Gateway::start(config, options) {
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
        "listening on {} with {} shard(s) on the {} driver (pid {})",
        addrs.join(", "),
        gateway.shards(),
        gateway.driver().name(),
        std::process::id()
    );
    if let Some(banner) = banner {
        banner(&gateway);
    }
    let handle = gateway.handle();
    let watcher = handle
        .config_path()
        .map(|path| watch::spawn(path, handle.clone()));
    let mut graceful = true;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                log::info!("SIGHUP: reloading the configuration");
                if let Err(shardgate_proxy::ReloadError::NotFromFile) = handle.reload_from_file() {
                    log::warn!(
                        "SIGHUP: the configuration does not come from a file; nothing to reload \
                         (with --etcd, publish a change with `shardgate config push`)"
                    );
                }
            }
            SIGUSR1 => {
                log::info!("SIGUSR1: reopening the access log");
                handle.reopen_logs();
            }
            SIGQUIT => {
                graceful = false;
                break;
            }
            _ => break,
        }
    }
    if let Some(w) = watcher {
        w.stop();
    }
    let stats = gateway.stats();
    if graceful {
        log::info!(
            "draining: no new connections; in-flight requests get {drain_timeout:?} to finish (signal again to stop now)"
        );
        let h = handle.clone();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                log::warn!("second signal: stopping now");
                h.stop();
            }
        });
        gateway.drain(drain_timeout);
    } else {
        gateway.shutdown();
    }
    log::info!(
        "stopped after {} requests; upstream connections: {} opened, {} reused (reuse ratio {:.3})",
        stats.requests,
        stats.upstream_connects,
        stats.upstream_reuses,
        stats.reuse_ratio()
    );
    ExitCode::SUCCESS
}
