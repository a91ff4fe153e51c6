//! Owned-buffer I/O with deadlines (see `timer`). monoio takes a buffer for the length of
//! an operation and hands it back; when a deadline cuts an operation short
//! the buffer stays with the kernel until it completes, so these helpers
//! return an empty `Vec` in its place (the buffer pool refills itself).

use crate::error::IoCause;
use crate::stream::Stream;
use crate::timer::Timers;
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
pub(crate) async fn read_more<S: Stream>(
    t: &Timers,
    stream: &mut S,
    buf: Vec<u8>,
    deadline: Instant,
) -> (Result<usize, IoFail>, Vec<u8>) {
    debug_assert!(buf.len() < buf.capacity(), "read_more needs spare capacity");
    match t.within(deadline, stream.read_at(buf)).await {
        Ok((Ok(n), buf)) => (Ok(n), buf),
        Ok((Err(e), buf)) => (Err(IoFail::Io(IoCause::from(&e))), buf),
        Err(_) => (Err(IoFail::Timeout), Vec::new()),
    }
}

/// Writes `buf[from..]` in full before `deadline`.
pub(crate) async fn write_from<S: Stream>(
    t: &Timers,
    stream: &mut S,
    buf: Vec<u8>,
    from: usize,
    deadline: Instant,
) -> (Result<(), IoFail>, Vec<u8>) {
    let end = buf.len();
    write_range(t, stream, buf, from, end, deadline).await
}

/// Writes `buf[from..end]` in full before `deadline`.
pub(crate) async fn write_range<S: Stream>(
    t: &Timers,
    stream: &mut S,
    buf: Vec<u8>,
    from: usize,
    end: usize,
    deadline: Instant,
) -> (Result<(), IoFail>, Vec<u8>) {
    if from >= end {
        return (Ok(()), buf);
    }
    match t.within(deadline, stream.write_range(buf, from, end)).await {
        Ok((Ok(()), buf)) => (Ok(()), buf),
        Ok((Err(e), buf)) => (Err(IoFail::Io(IoCause::from(&e))), buf),
        Err(_) => (Err(IoFail::Timeout), Vec::new()),
    }
}

/// Writes a static message in full before `deadline`.
pub(crate) async fn write_static<S: Stream>(
    t: &Timers,
    stream: &mut S,
    msg: &'static [u8],
    deadline: Instant,
) -> Result<(), IoFail> {
    match t.within(deadline, stream.write_static(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(IoFail::Io(IoCause::from(&e))),
        Err(_) => Err(IoFail::Timeout),
    }
}
