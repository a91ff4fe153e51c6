//! A client connection's life: wait (holding no buffer) until the client
//! sends something, serve requests until one of them closes the connection,
//! tunnel if the protocol switches.
//!
//! An idle connection costs what its task's future holds while it waits, so
//! that state is kept small: the request future (large: it spans the whole
//! pipeline) lives in a heap slot borrowed from the shard for the length of
//! one request and reused by the next, never inline in this task.

use crate::park::{PARK_AFTER, Resume};
use crate::pipeline;
use crate::request::{Client, Next};
use crate::shard::Shard;
use crate::stream::{TlsStream, Transport};
use crate::tunnel;
use monoio::net::TcpStream;
use std::any::Any;
use std::future::Future;
use std::mem::take;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

/// Serves one accepted connection, which the accept loop has already
/// counted in `open_connections`.
///
/// Not an `async fn`: an `async fn` keeps its arguments in the task for its
/// whole life next to the locals made from them (120 bytes here, on every
/// idle connection); the block below holds only what it uses.
pub(crate) fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: u8,
) -> impl Future<Output = ()> {
    let client = Client {
        stream: Transport::Plain(stream),
        addr: peer.ip(),
        listener,
    };
    connection(shard, client, None)
}

/// Gives a parked connection (see [`crate::park`]) a task again.
pub(crate) fn resume(
    shard: Rc<Shard>,
    client: Client,
    fresh: bool,
    how: Resume,
) -> impl Future<Output = ()> {
    connection(shard, client, Some((fresh, how)))
}

/// A connection's task: a new one (`resumed` is `None`) starts with the
/// listener's setup, a parked one (whether it had sent a request, and how it
/// came back) in its keep-alive loop. One future type for both, so the
/// setup's state shares the task's bytes with the loop's.
fn connection(
    shard: Rc<Shard>,
    mut client: Client,
    resumed: Option<(bool, Resume)>,
) -> impl Future<Output = ()> {
    let (mut fresh, mut resumed) = match resumed {
        Some((fresh, how)) => (fresh, Some(how)),
        None => (true, None),
    };
    async move {
        let mut carried = Vec::new();
        let setup = resumed.is_none()
            && shard
                .snapshot()
                .listeners
                .get(usize::from(client.listener))
                .is_some_and(|l| l.proxy_protocol || l.tls.is_some());
        if setup {
            // Once per connection, and boxed: it does not widen the task.
            match Box::pin(start(&shard, client)).await {
                Some((c, rest)) => (client, carried) = (c, rest),
                None => {
                    shard.stats.open_connections.decr();
                    return;
                }
            }
        }
        // TLS: the client chose HTTP/2 by ALPN (offered when `http2` is on).
        if matches!(&client.stream, Transport::Tls(t) if t.chose_h2()) {
            crate::h2::run(shard.clone(), client, carried).await;
            shard.stats.open_connections.decr();
            return;
        }
        let http2 = resumed.is_none()
            && shard
                .snapshot()
                .listeners
                .get(usize::from(client.listener))
                .is_some_and(|l| l.http2 && l.tls.is_none());
        if http2 && carried.is_empty() {
            // No buffer is held until the client sends something.
            let deadline = shard.timers.now() + shard.timeouts().idle;
            let woke = match client.stream.idle_socket() {
                Some(socket) => {
                    let wait = readable_or_drain(socket.readable(false), &shard.drain);
                    let woke = shard.timers.within(deadline, wait).await;
                    woke.map(|w| w.unwrap_or(true))
                }
                None => Ok(true),
            };
            if !matches!(woke, Ok(true)) {
                shard.stats.open_connections.decr();
                return;
            }
            // Once per connection, and boxed: it does not widen the task.
            let sniff = crate::h2::sniff(&shard, &mut client, shard.buffers.take());
            let (h2, first) = Box::pin(sniff).await;
            if h2 {
                crate::h2::run(shard.clone(), client, first).await;
                shard.stats.open_connections.decr();
                return;
            }
            if first.is_empty() {
                shard.buffers.give(first);
            } else {
                carried = first;
            }
        }
        loop {
            let buf = if carried.is_empty() {
                // Idle: no buffer is held while waiting.
                let mut may_park = shard.parking.is_some();
                let woke = loop {
                    let woke = match (resumed.take(), client.stream.idle_socket()) {
                        (Some(how), _) => Woke::from(how),
                        (None, None) => Woke::Readable, // bytes are waiting already (TLS)
                        (None, Some(socket)) => {
                            let until = shard.timers.now() + idle_wait(&shard, may_park).0;
                            let wait = readable_or_drain(socket.readable(false), &shard.drain);
                            match shard.timers.within(until, wait).await {
                                Ok(Some(true)) => Woke::Readable,
                                Ok(None) => Woke::Drain,
                                Err(_) if idle_wait(&shard, may_park).1 => Woke::Park,
                                Ok(Some(false)) | Err(_) => Woke::Close,
                            }
                        }
                    };
                    if woke != Woke::Park {
                        break woke;
                    }
                    let Some(parking) = shard.parking.as_ref() else {
                        break Woke::Close;
                    };
                    // It has waited PARK_AFTER of its idle timeout.
                    let deadline =
                        shard.timers.now() + shard.timeouts().idle.saturating_sub(PARK_AFTER);
                    // The parking lot holds the connection from here on.
                    match parking.park(&shard, client, fresh, deadline) {
                        Ok(()) => return,
                        Err(back) => {
                            client = back;
                            may_park = false;
                        }
                    }
                };
                match woke {
                    Woke::Readable => shard.buffers.take(),
                    // Draining: a request may be on its way (the client cannot
                    // know yet); give it a moment, answer it with
                    // `Connection: close`, else close. A connection that has
                    // not sent its first request was opened to send one: it
                    // gets longer.
                    Woke::Drain if shard.drain.is_on() => {
                        let grace = shard.timers.now()
                            + if fresh {
                                FIRST_REQUEST_GRACE
                            } else {
                                DRAIN_GRACE
                            };
                        let wait = async {
                            match client.stream.idle_socket() {
                                Some(socket) => socket.readable(false).await,
                                None => Ok(()),
                            }
                        };
                        match shard.timers.within(grace, wait).await {
                            Ok(Ok(())) => shard.buffers.take(),
                            _ => break,
                        }
                    }
                    _ => break,
                }
            } else {
                take(&mut carried)
            };
            if !fresh {
                let kept = &shard.handshakes.kept_alive;
                kept.set(kept.get() + 1);
            }
            // Built straight into its slot: the request future never becomes
            // part of this task's state.
            let mut slot = take_slot(&shard);
            slot.as_mut()
                .set(Some(pipeline::handle(shard.clone(), client, buf)));
            let (back, next) = run_in_slot(&mut slot).await;
            give_slot(&shard, slot);
            fresh = false;
            client = back;
            match next {
                Next::KeepAlive(rest) => {
                    if rest.is_empty() {
                        shard.buffers.give(rest);
                    } else {
                        carried = rest;
                    }
                }
                Next::Close => break,
                Next::Upgrade(up) => {
                    // Rare and long-lived: boxed so it does not widen this task.
                    Box::pin(tunnel::run(shard.clone(), client.stream, up)).await;
                    shard.stats.open_connections.decr();
                    return;
                }
            }
        }
        shard.stats.open_connections.decr();
    }
}

/// How long an idle connection waits in its task, and whether it parks
/// then: for [`PARK_AFTER`] when it may park and its idle timeout is longer,
/// else for the whole timeout. (A function: a `Duration` compared in the
/// task's body would be kept in the task.)
fn idle_wait(shard: &Shard, may_park: bool) -> (std::time::Duration, bool) {
    let idle = shard.timeouts().idle;
    if may_park && PARK_AFTER < idle {
        (PARK_AFTER, true)
    } else {
        (idle, false)
    }
}

/// How an idle connection's wait ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Woke {
    Readable,
    Drain,
    /// Idle for [`PARK_AFTER`], with more of its idle timeout to go.
    Park,
    /// The idle timeout passed, or the wait failed.
    Close,
}

impl From<Resume> for Woke {
    fn from(how: Resume) -> Woke {
        match how {
            Resume::Readable => Woke::Readable,
            Resume::Drain => Woke::Drain,
            // Not parked again: the parking lot stopped.
            Resume::Wait => Woke::Park,
        }
    }
}

/// What a listener does before the first request: read the PROXY protocol
/// header, then the TLS handshake, as it is configured. Returns the client
/// and the bytes read past the header, or `None` to close.
async fn start(shard: &Shard, mut client: Client) -> Option<(Client, Vec<u8>)> {
    let snap = shard.snapshot();
    let listener = usize::from(client.listener);
    let proxied = snap
        .listeners
        .get(listener)
        .is_some_and(|l| l.proxy_protocol);
    let tls = snap.listener_tls.get(listener).cloned().flatten();
    drop(snap);
    let mut carried = Vec::new();
    if proxied {
        carried = read_proxy_header(shard, &mut client).await?;
    }
    if let Some(config) = tls {
        client = handshake(shard, client, config, take(&mut carried)).await?;
    }
    Some((client, carried))
}

/// Reads the PROXY protocol header a load balancer sends first (within
/// `timeouts.request_header`) and makes the client the address it names.
/// Returns the bytes after it (the start of the first request), or `None`
/// when the connection is to be closed: no valid header, or the peer left.
async fn read_proxy_header(shard: &Shard, client: &mut Client) -> Option<Vec<u8>> {
    use shardgate_http::{ProxiedFrom, parse_proxy_header};
    let deadline = shard.timers.now() + shard.timeouts().request_header;
    let mut buf = shard.buffers.take();
    loop {
        match parse_proxy_header(&buf) {
            Ok(Some(h)) => {
                if let ProxiedFrom::Client(addr) = h.from {
                    client.addr = addr.ip();
                }
                buf.drain(..h.len);
                if buf.is_empty() {
                    shard.buffers.give(buf);
                    return Some(Vec::new());
                }
                return Some(buf);
            }
            Ok(None) if buf.len() < buf.capacity() => {}
            Ok(None) => break,
            Err(e) => {
                let peer = client.addr;
                shard.log_limited(|| format!("{peer}: {e} on a PROXY protocol listener; closed"));
                break;
            }
        }
        let (r, b) = crate::io::read_more(&shard.timers, &mut client.stream, buf, deadline).await;
        buf = b;
        if !matches!(r, Ok(n) if n > 0) {
            break;
        }
    }
    shard.buffers.give(buf);
    None
}

/// Runs the TLS handshake within the listener's `tls.handshake_timeout`;
/// `None` when it fails (logged at debug: scanners fail handshakes all day).
async fn handshake(
    shard: &Shard,
    client: Client,
    config: std::sync::Arc<rustls::ServerConfig>,
    early: Vec<u8>,
) -> Option<Client> {
    let Client {
        stream,
        addr,
        listener,
    } = client;
    let tcp = stream.take_plain().ok()?;
    let timeout = shard
        .snapshot()
        .listeners
        .get(usize::from(listener))
        .and_then(|l| l.tls.as_ref())
        .map_or(std::time::Duration::from_secs(10), |t| t.handshake_timeout);
    let deadline = shard.timers.now() + timeout;
    match shard
        .timers
        .within(
            deadline,
            shard
                .handshakes
                .meter(TlsStream::accept(tcp, config, early)),
        )
        .await
    {
        Ok(Ok(tls)) => Some(Client {
            stream: Transport::Tls(Box::new(tls)),
            addr,
            listener,
        }),
        Ok(Err(e)) => {
            log::debug!("shard {}: TLS handshake with {addr} failed: {e}", shard.id);
            None
        }
        Err(_) => {
            log::debug!("shard {}: TLS handshake with {addr} timed out", shard.id);
            None
        }
    }
}

/// How long an idle connection stays open once its shard drains, in case a
/// request is on its way: closing an idle HTTP/1.1 connection races the
/// client's next request, which then fails unless the client retries it. A
/// client looping over a kept-alive connection sends its next request within
/// microseconds, but one descheduled on a busy machine can take hundreds of
/// milliseconds (the likeliest cause of one reset in 24,000 requests in the
/// upgrade test on a loaded CI runner, with a 250 ms grace); a second
/// covers that and still lets an idle process drain quickly.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The same for a connection that has not sent its first request yet: it
/// was opened to send one.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Spare request-future slots a shard keeps.
const KEEP_SLOTS: usize = 256;

type Slot<F> = Pin<Box<Option<F>>>;

/// An empty slot from the shard's free list (allocated when it is empty).
fn take_slot<F: 'static>(shard: &Shard) -> Slot<F> {
    with_slots(shard, |list: &mut Vec<Slot<F>>| list.pop()).unwrap_or_else(|| Box::pin(None))
}

/// Polls the future in `slot` to completion and empties the slot.
async fn run_in_slot<F: Future>(slot: &mut Slot<F>) -> F::Output {
    let out = std::future::poll_fn(|cx| match slot.as_mut().as_pin_mut() {
        Some(f) => f.poll(cx),
        None => Poll::Pending,
    })
    .await;
    slot.as_mut().set(None);
    out
}

/// Returns an empty slot to the shard's free list.
fn give_slot<F: 'static>(shard: &Shard, slot: Slot<F>) {
    with_slots(shard, |list: &mut Vec<Slot<F>>| {
        if list.len() < KEEP_SLOTS {
            list.push(slot);
        }
    });
}

/// The shard's free list of slots for futures of type `F` (one type in
/// practice: the request future). Type-erased so the shard need not name it.
fn with_slots<F: 'static, R>(shard: &Shard, f: impl FnOnce(&mut Vec<Slot<F>>) -> R) -> R {
    let mut any = shard.future_slots.borrow_mut();
    let list = any.get_or_insert_with(|| Box::new(Vec::<Slot<F>>::new()) as Box<dyn Any>);
    match list.downcast_mut::<Vec<Slot<F>>>() {
        Some(list) => f(list),
        None => f(&mut Vec::new()),
    }
}

pin_project_lite::pin_project! {
    /// An idle connection's wait, holding no buffer: `Some(true)` once its
    /// socket is readable (`Some(false)` if the wait failed), `None` once the
    /// shard drains; readability first. A `select!` of the two would hold 56
    /// more bytes in every idle connection's task.
    pub(crate) struct ReadableOrDrain<'a, R> {
        #[pin]
        readable: R,
        drain: crate::drain::DrainWait<'a>,
    }
}

/// See [`ReadableOrDrain`]. Pass a socket's `readable(false)`: on the
/// epoll driver a relaxed wait trusts readiness left over from the last
/// read, and would pin a buffer on an idle connection.
pub(crate) fn readable_or_drain<R: Future<Output = std::io::Result<()>>>(
    readable: R,
    drain: &crate::drain::Drain,
) -> ReadableOrDrain<'_, R> {
    ReadableOrDrain {
        readable,
        drain: drain.wait(),
    }
}

impl<R: Future<Output = std::io::Result<()>>> Future for ReadableOrDrain<'_, R> {
    type Output = Option<bool>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<bool>> {
        let this = self.project();
        if let Poll::Ready(r) = this.readable.poll(cx) {
            return Poll::Ready(Some(r.is_ok()));
        }
        Pin::new(this.drain).poll(cx).map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ShardStats;

    /// An idle connection costs its task's future: keep it small. This is
    /// the state every idle keep-alive connection pins.
    #[test]
    fn connection_future_is_small() {
        let config = shardgate_config::from_toml(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"u\"\n",
        )
        .unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let size = rt.block_on(async move {
            let stats: std::sync::Arc<ShardStats> = Default::default();
            let shard = Rc::new(
                Shard::new(
                    (0, 1),
                    &std::sync::Arc::new(config),
                    stats,
                    (None, None, crate::jwks::JwksStore::new().0, None),
                )
                .unwrap(),
            );
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = monoio::net::TcpStream::connect(addr).await.unwrap();
            let fut = serve(shard, stream, addr, 0);
            std::mem::size_of_val(&fut)
        });
        println!("connection future: {size} bytes");
        // 336 bytes in the debug build the tests run in and in a release
        // build, whose task (the future and monoio's 48-byte header) then
        // fills mimalloc's 384-byte size class exactly: 8 bytes more cost
        // every idle connection 64.
        assert!(size <= 336, "connection future grew to {size} bytes");
    }
}
