//! The shard's buffer pool. A request borrows its I/O buffers here and gives
//! them back when it ends, so an idle connection holds none.

use std::cell::RefCell;

/// A free list of equally sized byte buffers, owned by one shard.
pub(crate) struct BufferPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    /// Buffers kept at most; beyond this, returned buffers are freed.
    keep: usize,
}

impl BufferPool {
    pub(crate) fn new(size: usize, keep: usize) -> Self {
        BufferPool {
            free: RefCell::new(Vec::with_capacity(keep)),
            size,
            keep,
        }
    }

    /// An empty buffer with capacity for `size` bytes.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Returns a buffer. One that grew past twice the size is dropped so a
    /// rare large head cannot pin memory forever.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.size || buf.capacity() > 2 * self.size {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            buf.clear();
            free.push(buf);
        }
    }
}
