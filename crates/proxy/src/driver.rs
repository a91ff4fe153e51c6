//! Choosing and starting monoio's driver: io_uring by default, epoll
//! ("legacy") when io_uring cannot be used.

use shardgate_config::Driver;
use std::future::Future;
use std::io;

/// The driver a gateway actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    Uring,
    Legacy,
}

impl DriverChoice {
    pub fn name(self) -> &'static str {
        match self {
            DriverChoice::Uring => "io_uring",
            DriverChoice::Legacy => "legacy (epoll)",
        }
    }
}

/// Why io_uring is unusable, if it is.
fn uring_unavailable() -> Option<String> {
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        && v.trim() != "0"
    {
        return Some(format!("kernel.io_uring_disabled = {}", v.trim()));
    }
    if !monoio::utils::detect_uring() {
        return Some("io_uring_setup is not permitted or not supported".into());
    }
    None
}

/// Why the configured driver cannot run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// `driver = "uring"` was asked for and io_uring cannot be used (why).
    UringUnavailable(String),
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DriverError::UringUnavailable(why) => write!(
                f,
                "driver \"uring\" requested but io_uring is unavailable: {why}"
            ),
        }
    }
}

impl std::error::Error for DriverError {}

/// Resolves the configured driver against what this machine allows.
/// `Auto` falls back to epoll with one log line; an explicit `Uring` that
/// cannot work is an error.
pub fn resolve_driver(d: Driver) -> Result<DriverChoice, DriverError> {
    match d {
        Driver::Legacy => Ok(DriverChoice::Legacy),
        Driver::Uring => match uring_unavailable() {
            None => Ok(DriverChoice::Uring),
            Some(why) => Err(DriverError::UringUnavailable(why)),
        },
        Driver::Auto => match uring_unavailable() {
            None => Ok(DriverChoice::Uring),
            Some(why) => {
                log::warn!("io_uring unavailable ({why}); using the legacy (epoll) driver");
                Ok(DriverChoice::Legacy)
            }
        },
    }
}

/// Submission queue depth for io_uring shards.
const URING_ENTRIES: u32 = 4096;

/// The ring's setup: only the shard's own thread submits
/// (`IORING_SETUP_SINGLE_ISSUER`), and the kernel runs completion work at
/// the shard's next system call instead of interrupting it for each one
/// (`COOP_TASKRUN`; the shard enters the kernel at every turn of its loop
/// anyway, and `TASKRUN_FLAG` tells it when work waits). Measured with wrk
/// and an nginx backend at 64 connections: 24.0 to 18.2 µs of proxy CPU per
/// request (README, Benchmarks).
fn ring_setup() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer();
    b
}

/// Runs `make()`'s future to completion on a new runtime of this thread.
pub(crate) fn block_on<F: Future>(
    choice: DriverChoice,
    make: impl FnOnce() -> F,
) -> io::Result<F::Output> {
    match choice {
        DriverChoice::Uring => {
            let build = |setup: io_uring::Builder| {
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .uring_builder(setup)
                    .with_entries(URING_ENTRIES)
                    .enable_timer()
                    .build()
            };
            // The flags need Linux 6.0; an older kernel refuses them (EINVAL)
            // and gets a ring without them.
            let mut rt = match build(ring_setup()) {
                Ok(rt) => rt,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::warn!(
                        "io_uring: this kernel refuses COOP_TASKRUN or SINGLE_ISSUER; \
                         running without them (slower)"
                    );
                    build(io_uring::IoUring::builder())?
                }
                Err(e) => return Err(e),
            };
            Ok(rt.block_on(make()))
        }
        DriverChoice::Legacy => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?;
            Ok(rt.block_on(make()))
        }
    }
}
