//! Long-idle keep-alive connections, held without a task.
//!
//! A connection waiting for its next request holds its task (384 bytes), a
//! deadline in the timer wheel, a drain waiter and the driver's readiness
//! wait (on io_uring, a poll in flight). Most of an idle keep-alive
//! connection's life comes long after its last request, so once it has been
//! idle for [`PARK_AFTER`] its task hands the client to the shard's parking
//! lot and ends. The lot keeps a copy of a plain socket's descriptor (the
//! monoio stream and its driver state go) with the client's address in a
//! 40-byte slab slot, and the socket in an epoll set of its own
//! (level-triggered, one shot per parking). One task per
//! shard waits on that epoll descriptor through the driver, whichever it is;
//! when a parked socket turns readable the connection gets a new task that
//! goes on where the old one stopped. A client that closed while parked is
//! closed here, with no task and no buffer, so a mass close costs nothing
//! but the closes. Idle deadlines are swept every [`SWEEP`]; a drain hands
//! every parked connection back to a task for its grace period.

use crate::request::Client;
use crate::shard::Shard;
use crate::stream::Transport;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a connection waits for its next request in its own task before
/// it is parked. Longer than the gap between a client's requests in any
/// busy exchange, so a request path never pays for parking.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(1);

/// How often parked connections' idle deadlines are checked: a parked
/// connection closes at most this late.
const SWEEP: Duration = Duration::from_millis(100);

/// Readiness events taken from the epoll set per call.
const BATCH: usize = 64;

/// A slot's deadline when it holds no connection.
const EMPTY: u32 = u32::MAX;

/// How often a shard that parked connections gives freed memory back, for
/// [`TRIMS`] times after the last.
const TRIM_EVERY: Duration = Duration::from_millis(200);
const TRIMS: u8 = 5;

/// What gives a thread's freed memory back to the system (the binary's
/// allocator's own call), if the process set one.
static TRIM: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets the call that gives the calling thread's freed memory back to the
/// system, made by a shard after it has parked connections: their tasks are
/// freed then, and an idle shard makes no allocation that would let an
/// allocator purge what is due. Set once per process; later calls are
/// ignored.
pub fn set_memory_trim(trim: fn()) {
    let _ = TRIM.set(trim);
}

/// A parked connection: what its task needs to go on, in 40 bytes.
struct Parked {
    held: Held,
    addr: std::net::IpAddr,
    listener: u8,
    /// It has not sent its first request yet.
    fresh: bool,
}

/// A parked connection's socket.
enum Held {
    /// A plain connection's socket, on its own: its driver state (monoio's
    /// descriptor, 64 bytes, and on epoll its registration) is given up
    /// while it is parked, and made again when it comes back.
    Socket(OwnedFd),
    /// Anything else, whole: TLS, or a plain stream whose descriptor could
    /// not be copied (out of descriptors).
    Stream(Box<Transport>),
}

impl Parked {
    /// The socket the epoll set watches.
    fn fd(&mut self) -> Option<RawFd> {
        match &mut self.held {
            Held::Socket(fd) => Some(fd.as_raw_fd()),
            Held::Stream(t) => t.idle_socket().map(AsRawFd::as_raw_fd),
        }
    }

    /// The connection again, with its socket back in the driver.
    fn into_client(self) -> io::Result<Client> {
        let stream = match self.held {
            Held::Socket(fd) => Transport::Plain(monoio::net::TcpStream::from_std(
                std::net::TcpStream::from(fd),
            )?),
            Held::Stream(t) => *t,
        };
        Ok(Client {
            stream,
            addr: self.addr,
            listener: self.listener,
        })
    }
}

/// Why a parked connection gets its task back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Resume {
    /// Its socket is readable.
    Readable,
    /// The shard drains.
    Drain,
    /// The parking lot stopped working: wait in the task again.
    Wait,
}

/// A shard's parked connections.
pub(crate) struct Parking {
    epoll: OwnedFd,
    slots: RefCell<Slots>,
    /// Whether the task that waits on the epoll set runs.
    watching: Cell<bool>,
    /// Set once waiting on the epoll set failed: nothing is parked after.
    broken: Cell<bool>,
    /// Connections parked or closed here since memory was last trimmed.
    freed: Cell<usize>,
    /// Deadlines are kept in [`SWEEP`]s since this instant.
    origin: Instant,
}

/// Parallel arrays, so a sweep scans 4 bytes per connection.
#[derive(Default)]
struct Slots {
    parked: Vec<Option<Parked>>,
    /// Bumped each time a slot is emptied: an epoll event carries it, so a
    /// late event for a connection already gone is told apart.
    generation: Vec<u32>,
    /// The idle deadline, in sweeps since `origin`; [`EMPTY`] when free.
    deadline: Vec<u32>,
    free: Vec<u32>,
}

impl Parking {
    pub(crate) fn new() -> io::Result<Parking> {
        #[allow(unsafe_code)]
        // SAFETY: epoll_create1 takes no pointers; a descriptor it returns
        // is new and owned by nobody else.
        let epoll = unsafe {
            let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        Ok(Parking {
            epoll,
            slots: RefCell::default(),
            watching: Cell::new(false),
            broken: Cell::new(false),
            freed: Cell::new(0),
            origin: Instant::now(),
        })
    }

    fn sweeps(&self, at: Instant) -> u32 {
        let n = at.saturating_duration_since(self.origin).as_nanos() / SWEEP.as_nanos();
        u32::try_from(n).unwrap_or(EMPTY - 1).min(EMPTY - 1)
    }

    /// Parks `client` (whose socket must have nothing buffered in user
    /// space) until its socket turns readable, the shard drains, or
    /// `deadline` passes. Gives it back when it cannot be parked: the shard
    /// drains, or the kernel refused the socket.
    pub(crate) fn park(
        &self,
        shard: &Rc<Shard>,
        mut client: Client,
        fresh: bool,
        deadline: Instant,
    ) -> Result<(), Client> {
        if self.broken.get() || shard.drain.is_on() {
            return Err(client);
        }
        let plain = matches!(client.stream, Transport::Plain(_));
        let Some(socket) = client.stream.idle_socket().map(AsRawFd::as_raw_fd) else {
            return Err(client);
        };
        // A plain socket is kept as a copy of its descriptor, so that the
        // stream and its driver state can go; the copy is what is watched.
        let copy = if plain {
            #[allow(unsafe_code)]
            // SAFETY: `socket` is the client's open descriptor, which the
            // client (held here) keeps open while this borrow lives.
            let fd = unsafe { BorrowedFd::borrow_raw(socket) };
            fd.try_clone_to_owned().ok()
        } else {
            None
        };
        let fd = copy.as_ref().map_or(socket, AsRawFd::as_raw_fd);
        let mut slots = self.slots.borrow_mut();
        let index = match slots.free.pop() {
            Some(i) => i,
            None => {
                let Ok(i) = u32::try_from(slots.parked.len()) else {
                    return Err(client);
                };
                slots.parked.push(None);
                slots.generation.push(0);
                slots.deadline.push(EMPTY);
                i
            }
        };
        let i = index as usize;
        let key = u64::from(slots.generation[i]) << 32 | u64::from(index);
        if let Err(e) = self.arm(fd, key) {
            slots.free.push(index);
            drop(slots);
            shard.log_limited(|| {
                format!("could not park an idle connection ({e}); it waits in its task")
            });
            return Err(client);
        }
        let held = match copy {
            // The stream goes (its descriptor closes; the copy stays open).
            Some(fd) => Held::Socket(fd),
            None => {
                if monoio::utils::is_legacy()
                    && let Some(socket) = client.stream.idle_socket()
                {
                    forget_waker(socket);
                }
                Held::Stream(Box::new(client.stream))
            }
        };
        slots.parked[i] = Some(Parked {
            held,
            addr: client.addr,
            listener: client.listener,
            fresh,
        });
        slots.deadline[i] = self.sweeps(deadline);
        drop(slots);
        self.freed.set(self.freed.get() + 1);
        shard.stats.parked_connections.incr();
        if !self.watching.get() {
            self.watching.set(true);
            monoio::spawn(watch(shard.clone()));
        }
        Ok(())
    }

    /// Adds `fd` to the epoll set for one readiness event (or re-arms it,
    /// should it be there still).
    fn arm(&self, fd: RawFd, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: key,
        };
        let ctl = |op, ev: &mut libc::epoll_event| {
            #[allow(unsafe_code)]
            // SAFETY: `ev` is a valid epoll_event for the call's length.
            let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, ev) };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        match ctl(libc::EPOLL_CTL_ADD, &mut ev) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => ctl(libc::EPOLL_CTL_MOD, &mut ev),
            r => r,
        }
    }

    /// Gives a parked connection back to a task. Its socket leaves the
    /// epoll set first: a descriptor copied at the next parking would
    /// otherwise leave this one's entry behind, for as long as the socket
    /// is open.
    fn wake(&self, shard: &Rc<Shard>, mut parked: Parked, how: Resume) {
        if let Some(fd) = parked.fd() {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            #[allow(unsafe_code)]
            // SAFETY: `fd` is open (this connection owns it); `ev` is valid.
            unsafe {
                libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev)
            };
        }
        let fresh = parked.fresh;
        match parked.into_client() {
            Ok(client) => {
                monoio::spawn(crate::conn::resume(shard.clone(), client, fresh, how));
            }
            Err(e) => {
                shard.log_limited(|| format!("a parked connection could not resume ({e}); closed"));
                shard.stats.open_connections.decr();
            }
        }
    }

    /// Empties slot `index`, returning what it held.
    fn take(&self, shard: &Shard, index: usize) -> Option<Parked> {
        let mut slots = self.slots.borrow_mut();
        let parked = slots.parked.get_mut(index)?.take()?;
        slots.generation[index] = slots.generation[index].wrapping_add(1);
        slots.deadline[index] = EMPTY;
        slots.free.push(index as u32);
        drop(slots);
        shard.stats.parked_connections.decr();
        Some(parked)
    }

    /// The slot an epoll event names, if it still holds the connection the
    /// event is for.
    fn take_key(&self, shard: &Shard, key: u64) -> Option<Parked> {
        let index = (key & u64::from(u32::MAX)) as usize;
        let generation = (key >> 32) as u32;
        if self.slots.borrow().generation.get(index) != Some(&generation) {
            return None;
        }
        self.take(shard, index)
    }

    /// Takes what the epoll set reports ready; returns how many events.
    fn ready(&self, shard: &Rc<Shard>) -> io::Result<usize> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        #[allow(unsafe_code)]
        // SAFETY: the buffer holds BATCH events; a zero timeout never blocks.
        let n = unsafe {
            libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), BATCH as i32, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(BATCH)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        for ev in &events[..n] {
            let (flags, key) = (ev.events, ev.u64);
            let Some(mut parked) = self.take_key(shard, key) else {
                continue;
            };
            let hangup = flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
            if hangup && parked.fd().is_some_and(closed) {
                // Gone while parked, nothing sent: closed with no task.
                shard.stats.open_connections.decr();
                drop(parked);
                continue;
            }
            self.wake(shard, parked, Resume::Readable);
        }
        Ok(n)
    }

    /// Closes the parked connections whose idle deadline has passed.
    fn sweep(&self, shard: &Shard, now: Instant) {
        let now = self.sweeps(now);
        let expired: Vec<usize> = {
            let slots = self.slots.borrow();
            slots
                .deadline
                .iter()
                .enumerate()
                .filter(|&(_, &d)| d <= now)
                .map(|(i, _)| i)
                .collect()
        };
        for i in expired {
            if let Some(parked) = self.take(shard, i) {
                // Counted as closed before the client can see it closed.
                shard.stats.open_connections.decr();
                self.freed.set(self.freed.get() + 1);
                drop(parked);
            }
        }
    }

    /// Gives every parked connection back to a task: for its grace period
    /// when the shard drains, else to wait there.
    fn resume_all(&self, shard: &Rc<Shard>) {
        let how = if shard.drain.is_on() {
            Resume::Drain
        } else {
            Resume::Wait
        };
        let held = self.slots.borrow().parked.len();
        for i in 0..held {
            if let Some(parked) = self.take(shard, i) {
                self.wake(shard, parked, how);
            }
        }
    }
}

/// On epoll, monoio keeps the waker of a readiness wait that was dropped
/// until the socket turns readable, and with it the task that ended: that
/// would keep every parked connection's task. One more wait, polled once
/// with a waker that does nothing, puts that waker in its place.
fn forget_waker(socket: &monoio::net::TcpStream) {
    use std::future::Future;
    let wait = std::pin::pin!(socket.readable(false));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Readable already: the epoll set reports it as soon as it is armed.
    let _ = wait.poll(&mut cx);
}

/// Whether a parked socket is at end of stream with nothing to read before
/// it: a one-byte peek, which never blocks.
fn closed(fd: RawFd) -> bool {
    let mut byte = 0u8;
    #[allow(unsafe_code)]
    // SAFETY: one byte of writable memory; MSG_PEEK leaves the socket as is.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    // 0: the peer's FIN with nothing before it. An error other than "no data
    // yet" (a reset) closes as well.
    n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
}

/// The shard's task that waits on the epoll set: wakes parked connections as
/// their sockets turn readable, sweeps deadlines, and hands everything back
/// when the shard drains.
async fn watch(shard: Rc<Shard>) {
    let Some(parking) = shard.parking.as_ref() else {
        return;
    };
    // The driver waits on a socket's readiness; an epoll descriptor is
    // readable while it has events, so a copy of it stands in for one. Only
    // readiness is ever asked of it.
    let waiter =
        match parking.epoll.try_clone().and_then(|fd| {
            monoio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
        }) {
            Ok(w) => w,
            Err(e) => {
                log::error!(
                    "shard {}: cannot wait on parked connections ({e}); none are parked",
                    shard.id
                );
                parking.broken.set(true);
                parking.resume_all(&shard);
                parking.watching.set(false);
                return;
            }
        };
    let mut next_sweep = shard.timers.now() + SWEEP;
    let mut next_trim = shard.timers.now();
    let mut trims = 0u8;
    loop {
        let wait = crate::conn::readable_or_drain(waiter.readable(false), &shard.drain);
        let woke = shard.timers.within(next_sweep, wait).await;
        match woke {
            Ok(Some(true)) => loop {
                match parking.ready(&shard) {
                    Ok(n) if n == BATCH => {
                        // More may be ready: let the connections just woken
                        // run (and give their buffers back) first.
                        yield_once().await;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        log::error!(
                            "shard {}: parked connections: epoll_wait failed ({e})",
                            shard.id
                        );
                        parking.broken.set(true);
                        break;
                    }
                }
            },
            Ok(Some(false)) => {
                log::error!(
                    "shard {}: cannot wait on parked connections; none are parked",
                    shard.id
                );
                parking.broken.set(true);
            }
            Ok(None) | Err(_) => {}
        }
        if shard.drain.is_on() || parking.broken.get() {
            parking.resume_all(&shard);
            parking.watching.set(false);
            return;
        }
        let now = shard.timers.now();
        if now >= next_sweep {
            parking.sweep(&shard, now);
            next_sweep = now + SWEEP;
            if parking.freed.get() > 0 {
                // Several times, for a second: the allocator gives back
                // only what was freed longer ago than its purge delay, and
                // a little at a time.
                parking.freed.set(0);
                trims = TRIMS;
            }
            if trims > 0 && now >= next_trim {
                trims -= 1;
                next_trim = now + TRIM_EVERY;
                if let Some(trim) = TRIM.get() {
                    trim();
                }
            }
        }
    }
}

/// Lets every other task that is ready run before this one goes on.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parked connection costs its slot (and 8 bytes beside it): keep it
    /// small.
    #[test]
    fn a_parked_connection_is_small() {
        let size = std::mem::size_of::<Option<Parked>>();
        println!("parked connection: {size} bytes");
        assert!(size <= 40, "a parked connection grew to {size} bytes");
    }
}
