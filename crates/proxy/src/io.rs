//! Owned-buffer I/O with deadlines (see `timer`). monoio takes a buffer for the length of
//! an operation and hands it back; when a deadline cuts an operation short
//! the buffer stays with the kernel until it completes, so these helpers
//! return an empty `Vec` in its place (the buffer pool refills itself).

use crate::error::IoCause;
use crate::timer::Timers;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::time::Instant;

#[derive(Debug)]
pub(crate) enum IoFail {
    Timeout,
    /// The socket failed; what the kernel said.
    Io(IoCause),
}

impl IoFail {
    /// The socket error, if this was one.
    pub(crate) fn cause(&self) -> Option<IoCause> {
        match self {
            IoFail::Io(c) => Some(*c),
            IoFail::Timeout => None,
        }
    }
}

/// Reads whatever is available into the spare capacity of `buf` (after its
/// length), waiting until `deadline`. `Ok(0)` is end of stream.
pub(crate) async fn read_more(
    t: &Timers,
    stream: &mut TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
) -> (Result<usize, IoFail>, Vec<u8>) {
    let start = buf.len();
    let cap = buf.capacity();
    debug_assert!(start < cap, "read_more needs spare capacity");
    let slice = buf.slice_mut(start..cap);
    match t.within(deadline, stream.read(slice)).await {
        Ok((Ok(n), slice)) => (Ok(n), slice.into_inner()),
        Ok((Err(e), slice)) => (Err(IoFail::Io(IoCause::from(&e))), slice.into_inner()),
        Err(_) => (Err(IoFail::Timeout), Vec::new()),
    }
}

/// Writes `buf[from..]` in full before `deadline`.
pub(crate) async fn write_from(
    t: &Timers,
    stream: &mut TcpStream,
    buf: Vec<u8>,
    from: usize,
    deadline: Instant,
) -> (Result<(), IoFail>, Vec<u8>) {
    let end = buf.len();
    write_range(t, stream, buf, from, end, deadline).await
}

/// Writes `buf[from..end]` in full before `deadline`.
pub(crate) async fn write_range(
    t: &Timers,
    stream: &mut TcpStream,
    buf: Vec<u8>,
    from: usize,
    end: usize,
    deadline: Instant,
) -> (Result<(), IoFail>, Vec<u8>) {
    use monoio::buf::IoBuf;
    if from >= end {
        return (Ok(()), buf);
    }
    let slice = buf.slice(from..end);
    match t.within(deadline, stream.write_all(slice)).await {
        Ok((Ok(_), slice)) => (Ok(()), slice.into_inner()),
        Ok((Err(e), slice)) => (Err(IoFail::Io(IoCause::from(&e))), slice.into_inner()),
        Err(_) => (Err(IoFail::Timeout), Vec::new()),
    }
}

/// Writes a static message in full before `deadline`.
pub(crate) async fn write_static(
    t: &Timers,
    stream: &mut TcpStream,
    msg: &'static [u8],
    deadline: Instant,
) -> Result<(), IoFail> {
    match t.within(deadline, stream.write_all(msg)).await {
        Ok((Ok(_), _)) => Ok(()),
        Ok((Err(e), _)) => Err(IoFail::Io(IoCause::from(&e))),
        Err(_) => Err(IoFail::Timeout),
    }
}
