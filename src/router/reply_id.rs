//! The id a client's reply must carry, kept while its request is in flight. Ids are up to 128
//! bytes but nearly always short (a counter, a UUID): those up to [`INLINE`] bytes are kept in
//! place, so a request in flight costs no allocation for its id.

use std::fmt;
use std::ops::Deref;

/// Longest id kept without an allocation (a UUID's 36 characters fit).
pub const INLINE: usize = 38;

/// A client's `header.id`.
#[derive(Clone, PartialEq, Eq)]
pub enum ReplyId {
    /// Short: the bytes in place.
    Inline {
        /// Bytes used.
        len: u8,
        /// The id's UTF-8 bytes, then zeros.
        bytes: [u8; INLINE],
    },
    /// Longer: on the heap.
    Heap(Box<str>),
}

impl ReplyId {
    /// Keep `id`.
    pub fn new(id: &str) -> ReplyId {
        if id.len() > INLINE {
            return ReplyId::Heap(id.into());
        }
        let mut bytes = [0u8; INLINE];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        ReplyId::Inline {
            len: id.len() as u8,
            bytes,
        }
    }
}

impl Deref for ReplyId {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // The bytes were a whole `&str`, so this cannot fail.
            ReplyId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("copied from a str")
            }
            ReplyId::Heap(id) => id,
        }
    }
}

impl fmt::Debug for ReplyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_ids_read_back() {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let long = "i".repeat(128);
        for id in ["", "7", "€😀", uuid, &"x".repeat(INLINE), &long] {
            let kept = ReplyId::new(id);
            assert_eq!(&*kept, id);
            assert_eq!(
                matches!(kept, ReplyId::Inline { .. }),
                id.len() <= INLINE,
                "{id}"
            );
            assert_eq!(format!("{kept:?}"), format!("{id:?}"));
        }
    }
}
