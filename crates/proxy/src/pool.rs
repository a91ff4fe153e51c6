//! Per-shard upstream connection pools: one LIFO stack of idle connections
//! per endpoint. The most recently used connection is reused first (it is
//! the least likely to have been closed by the upstream); connections idle
//! longer than the idle timeout, or that served their share of requests,
//! are closed.
//!
//! Endpoints are numbered by address once per shard and keep their number
//! across configuration reloads, so a request that started on an older
//! snapshot returns its connection to the right stack, pools of endpoints
//! that survive a reload are kept, and those removed are drained.

use crate::stream::Transport;
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A shard's number for an upstream address, stable across reloads.
pub(crate) type EndpointId = usize;

/// The shard's endpoints: address, the `Host` to send a 1.0 client's
/// request with, and whether the current configuration still uses it.
struct Endpoint {
    addr: SocketAddr,
    host: String,
    live: bool,
}

/// An endpoint's address and, for TLS, the name it is verified as.
type EndpointKey = (SocketAddr, Option<Box<str>>);

pub(crate) struct Pooled {
    pub stream: Transport,
    /// Requests already sent on this connection.
    pub requests: u32,
    idle_since: Instant,
}

pub(crate) struct Pools {
    idle: RefCell<Vec<Vec<Pooled>>>,
    endpoints: RefCell<Vec<Endpoint>>,
    /// By address and, for TLS endpoints, the name verified: a TLS
    /// connection is never handed to a plain group, nor one for another name.
    by_addr: RefCell<HashMap<EndpointKey, EndpointId>>,
}

impl Pools {
    pub(crate) fn new() -> Self {
        Pools {
            idle: RefCell::new(Vec::new()),
            endpoints: RefCell::new(Vec::new()),
            by_addr: RefCell::new(HashMap::new()),
        }
    }

    /// The number for `addr` (spoken to over TLS as `tls`, if so),
    /// registering it on first sight.
    pub(crate) fn id_for(&self, addr: SocketAddr, tls: Option<&str>) -> EndpointId {
        let key: EndpointKey = (addr, tls.map(Box::from));
        if let Some(&id) = self.by_addr.borrow().get(&key) {
            self.endpoints.borrow_mut()[id].live = true;
            return id;
        }
        let mut eps = self.endpoints.borrow_mut();
        eps.push(Endpoint {
            addr,
            host: addr.to_string(),
            live: true,
        });
        self.idle.borrow_mut().push(Vec::new());
        let id = eps.len() - 1;
        self.by_addr.borrow_mut().insert(key, id);
        id
    }

    /// Keeps only the endpoints in `keep` live; the idle connections of the
    /// others are closed now and their busy ones when they come back.
    pub(crate) fn retain(&self, keep: &[EndpointId]) {
        let mut eps = self.endpoints.borrow_mut();
        let mut idle = self.idle.borrow_mut();
        for (id, ep) in eps.iter_mut().enumerate() {
            ep.live = keep.contains(&id);
            if !ep.live {
                idle[id].clear();
            }
        }
    }

    pub(crate) fn addr(&self, id: EndpointId) -> SocketAddr {
        self.endpoints.borrow()[id].addr
    }

    /// Calls `f` with the endpoint's `ip:port` text.
    pub(crate) fn with_host<R>(&self, id: EndpointId, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.endpoints.borrow()[id].host.as_bytes())
    }

    /// (address, idle connections) of every live endpoint.
    pub(crate) fn idle_counts(&self) -> Vec<(SocketAddr, usize)> {
        let eps = self.endpoints.borrow();
        let idle = self.idle.borrow();
        eps.iter()
            .zip(idle.iter())
            .filter(|(e, _)| e.live)
            .map(|(e, i)| (e.addr, i.len()))
            .collect()
    }

    /// The freshest idle connection to `ep` that is still within `idle_timeout`
    /// and has stayed quiet while idle.
    pub(crate) fn checkout(
        &self,
        ep: EndpointId,
        idle_timeout: Duration,
        now: Instant,
    ) -> Option<Pooled> {
        let mut idle = self.idle.borrow_mut();
        let stack = idle.get_mut(ep)?;
        while let Some(c) = stack.pop() {
            if now.duration_since(c.idle_since) >= idle_timeout {
                // Too old: dropped (closed). Everything below it is older still.
                stack.clear();
                break;
            }
            if c.stream.socket().is_some_and(quiet) {
                return Some(c);
            }
            // Bytes arrived while it was idle (a late body after a HEAD, 204 or
            // 304 answer, an early response) or the upstream closed it: those
            // bytes belong to no request, so the connection closes and the
            // next one is tried.
            log::debug!("pooled connection to endpoint {ep} was not quiet; closed");
        }
        None
    }

    /// Returns a connection after a complete exchange.
    pub(crate) fn checkin(
        &self,
        ep: EndpointId,
        stream: Transport,
        requests: u32,
        max_idle: usize,
        now: Instant,
    ) {
        if !self.endpoints.borrow().get(ep).is_some_and(|e| e.live) {
            return; // removed by a reload: the connection closes
        }
        if matches!(stream, Transport::H2Up(_)) {
            return; // a stream: its connection stays with `h2::client::Conns`
        }
        let mut idle = self.idle.borrow_mut();
        let Some(stack) = idle.get_mut(ep) else {
            return;
        };
        if stack.len() >= max_idle {
            // Full: close the oldest so the stack keeps the freshest.
            if max_idle == 0 {
                return;
            }
            stack.remove(0);
        }
        stack.push(Pooled {
            stream,
            requests,
            idle_since: now,
        });
    }

    /// Closes connections idle longer than `idle_timeout`; run periodically.
    pub(crate) fn sweep(&self, idle_timeout: Duration) {
        let now = Instant::now();
        for stack in self.idle.borrow_mut().iter_mut() {
            stack.retain(|c| now.duration_since(c.idle_since) < idle_timeout);
        }
    }
}

/// Whether nothing arrived on an idle connection: no byte and no end of
/// stream. One non-blocking peek, which never consumes anything.
#[allow(unsafe_code)]
fn quiet(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: the descriptor is the stream's and stays open while `stream` is
    // borrowed; recv(2) writes at most one byte into `byte`, which lives for
    // the call; MSG_DONTWAIT makes it return at once, MSG_PEEK leaves the data.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN | libc::EINTR)
        )
}
