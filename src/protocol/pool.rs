//! A small per-thread pool of frame-body buffers: [`super::message::to_body`] serializes into a
//! spare one, and the server hands each body back with [`recycle`] once it is queued, so that a
//! steady stream of frames allocates no new body buffers. Bounded: at most [`MAX_SPARE`] buffers
//! of at most [`MAX_KEPT`] bytes each are kept; larger ones are freed.

use std::cell::RefCell;

/// Most spare buffers kept per thread.
pub const MAX_SPARE: usize = 256;
/// Largest capacity kept; a buffer grown past it (a big frame) is freed.
pub const MAX_KEPT: usize = 4096;
/// Capacity of a new buffer: most bodies fit without growing.
const INITIAL: usize = 512;

/// A bounded set of spare buffers: at most `most` are kept, each with a capacity between `min`
/// and `max` bytes (others are freed). Also the loop's connection spares (`net/spare.rs`).
#[derive(Debug)]
pub struct Spares {
    bufs: Vec<Vec<u8>>,
    min: usize,
    max: usize,
    most: usize,
}

impl Spares {
    /// An empty set with these bounds.
    pub const fn new(min: usize, max: usize, most: usize) -> Self {
        Spares {
            bufs: Vec::new(),
            min,
            max,
            most,
        }
    }

    /// The most recently kept spare of at least `capacity` bytes, if any.
    pub fn take(&mut self, capacity: usize) -> Option<Vec<u8>> {
        let at = self.bufs.iter().rposition(|b| b.capacity() >= capacity)?;
        Some(self.bufs.swap_remove(at))
    }

    /// Keep `buf` (emptied) for reuse, if it is within the bounds and there is room.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity < self.min || capacity > self.max || self.bufs.len() >= self.most {
            return;
        }
        buf.clear();
        self.bufs.push(buf);
    }

    /// Spares kept now.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }
}

thread_local! {
    static SPARE: RefCell<Spares> = const { RefCell::new(Spares::new(1, MAX_KEPT, MAX_SPARE)) };
}

/// An empty buffer, spare if there is one.
pub fn take() -> Vec<u8> {
    SPARE
        .with_borrow_mut(|spare| spare.take(0))
        .unwrap_or_else(|| Vec::with_capacity(INITIAL))
}

/// Give a body back for reuse.
pub fn recycle(buf: Vec<u8>) {
    SPARE.with_borrow_mut(|spare| spare.give(buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let mut a = take();
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        recycle(a);
        let b = take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the recycled buffer comes back");
        recycle(Vec::with_capacity(MAX_KEPT + 1));
        let c = take();
        assert!(c.capacity() <= MAX_KEPT, "big buffers are not kept");
        for _ in 0..MAX_SPARE + 10 {
            recycle(Vec::with_capacity(16));
        }
        assert_eq!(SPARE.with_borrow(Spares::len), MAX_SPARE);
    }
}
