//! Test helpers for Shardgate (not published): an in-process gateway bound
//! to port 0, scriptable mock upstreams that record what reached them, and a
//! raw client that speaks bytes and parses responses. Everything is
//! blocking std I/O with timeouts, so a broken proxy fails a test instead of
//! hanging it.

mod client;
mod gateway;
mod upstream;

pub use client::{RawClient, Reply};
pub use gateway::{DRIVERS, TestGateway, config_for};
pub use upstream::{MockUpstream, Recorded, Script, closed_port};

use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
