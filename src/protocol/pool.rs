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

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer, spare if there is one.
pub fn take() -> Vec<u8> {
    SPARE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(INITIAL))
}

/// Give a body back for reuse.
pub fn recycle(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > MAX_KEPT {
        return;
    }
    buf.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE {
            spare.push(buf);
        }
    });
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
        assert_eq!(SPARE.with_borrow(Vec::len), MAX_SPARE);
    }
}
