//! Worker threads: one monoio runtime per thread, pinned to a CPU, with the timer enabled.

use std::io;
use std::thread::JoinHandle;

use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::cli::Driver;

/// The runtime every worker runs: io_uring or epoll, both with monoio's timer.
pub type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Submission queue size for io_uring workers (enough for thousands of idle connections).
const URING_ENTRIES: u32 = 4096;

/// Resolves `auto` to the driver this kernel supports.
pub fn resolve_driver(driver: Driver) -> Driver {
    match driver {
        Driver::Auto if monoio::utils::detect_uring() => Driver::Uring,
        Driver::Auto => Driver::Legacy,
        d => d,
    }
}

/// Builds a runtime for a resolved driver.
pub fn build(driver: Driver) -> io::Result<Runtime> {
    match resolve_driver(driver) {
        Driver::Uring => RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
            .map(Into::into),
        _ => RuntimeBuilder::<LegacyDriver>::new()
            .with_entries(URING_ENTRIES)
            .enable_timer()
            .build()
            .map(Into::into),
    }
}

/// Driver name for reports.
pub fn driver_name(driver: Driver) -> &'static str {
    match resolve_driver(driver) {
        Driver::Uring => "uring",
        _ => "legacy",
    }
}

/// Starts a named worker thread pinned to the `index`-th CPU this process may use, running
/// `body` on its own runtime.
pub fn spawn_worker<T, F, Fut>(
    name: &str,
    index: usize,
    driver: Driver,
    body: F,
) -> io::Result<JoinHandle<Result<T, String>>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    std::thread::Builder::new()
        .name(format!("{name}-{index}"))
        .spawn(move || {
            if let Some(cores) = core_affinity::get_core_ids()
                && !cores.is_empty()
            {
                core_affinity::set_for_current(cores[index % cores.len()]);
            }
            let mut rt = build(driver)
                .map_err(|e| format!("worker {index}: cannot start the {driver:?} runtime: {e}"))?;
            Ok(rt.block_on(body()))
        })
}
