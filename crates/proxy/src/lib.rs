//! Shardgate's data path: the only crate that does I/O.
//!
//! A [`Gateway`] runs one *shard* per worker: a named OS thread pinned to a
//! core, with its own monoio runtime (io_uring, or epoll when io_uring is not
//! available), its own `SO_REUSEPORT` listeners, routing table, upstream
//! connection pools, buffers and counters. From accept to the last byte of
//! the response a request stays on its shard and touches no lock.
//!
//! The request path reads top to bottom in [`pipeline`]: route, pick an
//! endpoint, forward the head and stream the body, read the response head,
//! stream the response back. The wire rules live in `shardgate-http`.

mod access_log;
mod admin;
mod body;
mod buffers;
mod conn;
mod control;
mod dashboard;
mod dns;
mod downstream;
mod drain;
mod driver;
mod error;
pub mod etcd_source;
mod fleet;
mod h2;
mod handshakes;
mod health;
mod io;
mod jwks;
mod limit;
mod listener;
pub mod metrics;
mod park;
mod pipeline;
mod pool;
mod rates;
mod request;
mod route;
mod shard;
mod snapshot;
mod stats;
mod stream;
mod supervisor;
mod timer;
mod tracing;
mod tunnel;
mod upstream;

pub use access_log::civil_time;
pub use control::{Adjust, ConfigInfo, GatewayHandle, ReloadError, config_hash};
pub use dns::{Resolver, system_resolver};
pub use driver::{DriverChoice, DriverError, resolve_driver};
pub use park::set_memory_trim;
pub use stats::StatsSnapshot;

/// The HTTP/2-to-HTTP/1.1 request translation, for its fuzz target
/// (`crates/proxy/fuzz`): the HTTP/1.1 head of an HTTP/2 request (`chunked`:
/// its body had no length), or why it is refused.
#[doc(hidden)]
pub fn translate_h2_request(
    parts: &http::request::Parts,
    chunked: bool,
) -> Result<Vec<u8>, &'static str> {
    let framing = if chunked {
        h2::translate::InBody::Chunked
    } else {
        h2::translate::InBody::None
    };
    let mut out = Vec::new();
    h2::translate::translate(parts, &framing, &mut out).map(|()| out)
}
pub use supervisor::{Gateway, GatewayError, GatewayOptions, ShardStartError};
