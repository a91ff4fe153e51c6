//! Listening sockets (one per shard per address, `SO_REUSEPORT`) and the
//! accept loop.

use crate::conn;
use crate::drain::Accepting;
use crate::shard::Shard;
use monoio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Binds a non-blocking listening socket with `SO_REUSEPORT`, so every shard
/// can bind the same address and the kernel spreads connections over them.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// A blocking listener (with `SO_REUSEPORT`, so an upgraded process can
/// bind it too) for the admin server's thread.
pub(crate) fn bind_blocking(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// Stops listening on a draining shard's socket: it leaves the
/// `SO_REUSEPORT` group at once, and the connections queued on it move to
/// the group's other listeners (a new process's, during a binary upgrade)
/// when `net.ipv4.tcp_migrate_req` is on; the kernel resets them otherwise.
fn stop_listening(shard: &Shard, socket: &std::net::TcpListener) {
    if let Err(e) = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Read) {
        log::warn!("shard {}: cannot stop listening: {e}", shard.id);
    }
}

/// Accept errors that mean "out of a resource": back off instead of spinning.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts connections until the listener fails for good, spawning a task
/// per connection. When file descriptors (or memory) run out, the loop
/// sleeps with growing back-off (existing connections keep being served)
/// and logs at most once per interval.
///
/// When the shard drains, the loop stops listening (`stop` is a duplicate
/// of the listener's descriptor) and keeps the accept it has in flight
/// until the kernel completes it. Dropping that accept instead would lose a
/// connection: io_uring may already have accepted one for it, and the
/// completion of a dropped operation is discarded, so the client's request
/// would sit unanswered until the process exits and resets it.
pub(crate) async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    stop: std::net::TcpListener,
    index: u8,
    _running: Accepting,
) {
    const BACKOFF_MIN: Duration = Duration::from_millis(5);
    const BACKOFF_MAX: Duration = Duration::from_millis(500);
    const LOG_EVERY: Duration = Duration::from_secs(5);
    let mut backoff = BACKOFF_MIN;
    let mut last_log: Option<Instant> = None;
    let mut held_back = 0u64;
    let mut listening = true;
    loop {
        let mut accept = std::pin::pin!(listener.accept());
        let accepted = if listening {
            // The drain first: on epoll, readiness kept from the last accept
            // would otherwise let a full queue hold the drain off.
            monoio::select! {
                biased;
                () = shard.drain.wait() => {
                    stop_listening(&shard, &stop);
                    listening = false;
                    accept.await
                }
                r = &mut accept => r,
            }
        } else {
            accept.await
        };
        match accepted {
            // Accepted before or while the listener closed: served (and, on
            // a draining shard, answered with `Connection: close`).
            Ok((stream, peer)) => {
                backoff = BACKOFF_MIN;
                shard.stats.accepted.incr();
                let _ = stream.set_nodelay(true);
                // Counted open now, not when the task first runs: a drain
                // must not end between this accept and that first poll.
                shard.stats.open_connections.incr();
                monoio::spawn(conn::serve(shard.clone(), stream, peer, index));
            }
            // No longer listening: nothing more will come.
            Err(_) if !listening => return,
            Err(e) if is_resource_exhaustion(&e) => {
                shard.stats.accept_errors.incr();
                let now = Instant::now();
                if last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                    log::error!(
                        "shard {}: accept failed: {e}; backing off (existing connections are \
                         still served; {held_back} more failures since the last message)",
                        shard.id
                    );
                    last_log = Some(now);
                    held_back = 0;
                } else {
                    held_back += 1;
                }
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                // ECONNABORTED and friends: that one connection is gone.
                shard.stats.accept_errors.incr();
                log::debug!("shard {}: accept: {e}", shard.id);
            }
        }
    }
}
