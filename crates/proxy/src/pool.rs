//! Per-shard upstream connection pools: one LIFO stack of idle connections
//! per endpoint. The most recently used connection is reused first (it is
//! the least likely to have been closed by the upstream); connections idle
//! longer than the idle timeout, or that served their share of requests,
//! are closed.

use monoio::net::TcpStream;
use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::snapshot::EndpointId;

pub(crate) struct Pooled {
    pub stream: TcpStream,
    /// Requests already sent on this connection.
    pub requests: u32,
    idle_since: Instant,
}

pub(crate) struct Pools {
    idle: RefCell<Vec<Vec<Pooled>>>,
}

impl Pools {
    pub(crate) fn new(endpoints: usize) -> Self {
        Pools {
            idle: RefCell::new((0..endpoints).map(|_| Vec::new()).collect()),
        }
    }

    /// The freshest idle connection to `ep` that is still within `idle_timeout`.
    pub(crate) fn checkout(
        &self,
        ep: EndpointId,
        idle_timeout: Duration,
        now: Instant,
    ) -> Option<Pooled> {
        let mut idle = self.idle.borrow_mut();
        let stack = idle.get_mut(ep)?;
        while let Some(c) = stack.pop() {
            if now.duration_since(c.idle_since) < idle_timeout {
                return Some(c);
            }
            // Too old: dropped (closed). Everything below it is older still.
            stack.clear();
        }
        None
    }

    /// Returns a connection after a complete exchange.
    pub(crate) fn checkin(
        &self,
        ep: EndpointId,
        stream: TcpStream,
        requests: u32,
        max_idle: usize,
        now: Instant,
    ) {
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
