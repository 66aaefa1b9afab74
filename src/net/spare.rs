//! Spare connection buffers of the event-loop thread. A connection keeps no buffer while it has
//! nothing buffered (idle connections hold no memory, see [`super::framed`]); a burst of frames
//! would then cost a fresh allocation and a run of reallocations on every burst. Instead a buffer
//! that must grow past the small size takes a spare one of the loop's, and gives it back once
//! drained, so the next burst on any connection reuses it.
//!
//! Bounded: at most [`MAX_SPARE`] buffers of at most [`MAX_KEPT`] bytes are kept (1 MiB at
//! most); larger ones are freed.

use std::cell::RefCell;

use crate::protocol::pool::Spares;

/// Most spare buffers kept per thread.
pub const MAX_SPARE: usize = 8;
/// Largest capacity kept.
pub const MAX_KEPT: usize = 128 * 1024;
/// Capacity a buffer is given when it first needs a spare one.
pub const BURST: usize = 64 * 1024;
/// Capacity a buffer may keep after draining without giving it back.
pub const SMALL: usize = 4096;

thread_local! {
    static SPARE: RefCell<Spares> = const { RefCell::new(Spares::new(SMALL + 1, MAX_KEPT, MAX_SPARE)) };
}

/// Make room for `extra` more bytes in `buf`: past [`SMALL`], the contents move into a spare
/// buffer (or a new one of at least [`BURST`] bytes) and the old buffer is given back.
pub fn reserve(buf: &mut Vec<u8>, extra: usize) {
    let need = buf.len() + extra;
    if need <= buf.capacity() || need <= SMALL {
        return;
    }
    let spare = SPARE.with_borrow_mut(|spare| spare.take(need));
    let mut bigger = spare.unwrap_or_else(|| Vec::with_capacity(need.max(BURST)));
    bigger.extend_from_slice(buf);
    give(std::mem::replace(buf, bigger));
}

/// A buffer that was drained: keep it if small, else give it back.
pub fn drained(buf: &mut Vec<u8>) {
    debug_assert!(buf.is_empty());
    if buf.capacity() > SMALL {
        give(std::mem::take(buf));
    }
}

fn give(buf: Vec<u8>) {
    SPARE.with_borrow_mut(|spare| spare.give(buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_reuse_one_buffer_and_idle_buffers_hold_nothing() {
        let mut a = Vec::new();
        reserve(&mut a, 100);
        assert_eq!(a.capacity(), 0, "small needs are left to Vec");
        a.extend_from_slice(&[1; 100]);
        reserve(&mut a, 10_000);
        assert!(a.capacity() >= BURST);
        assert_eq!(a, [1; 100], "contents move with the buffer");
        let ptr = a.as_ptr();
        a.clear();
        drained(&mut a);
        assert_eq!(a.capacity(), 0, "a drained big buffer is given back");
        let mut b = vec![2u8; 10];
        reserve(&mut b, 20_000);
        assert_eq!(b.as_ptr(), ptr, "the next burst reuses it");
        assert_eq!(b, [2; 10]);
        // Bounded: huge buffers are not kept, nor more than MAX_SPARE.
        let kept = SPARE.with_borrow(Spares::len);
        let mut huge = Vec::with_capacity(MAX_KEPT + 1);
        drained(&mut huge);
        assert_eq!(
            SPARE.with_borrow(Spares::len),
            kept,
            "a huge buffer is freed"
        );
        for _ in 0..MAX_SPARE + 4 {
            let mut c = Vec::with_capacity(SMALL + 1);
            drained(&mut c);
        }
        assert_eq!(SPARE.with_borrow(Spares::len), MAX_SPARE);
    }
}
