//! Fast maps for the router's tables keyed by numbers the server hands out itself (request
//! tokens, connection ids), never by anything a client, handler or peer chooses: nobody outside
//! can pick the keys that are inserted, so the seeded SipHash of `HashMap` (a defence against
//! hash flooding, and ~10% of the broker's CPU at full load) buys nothing there. Maps keyed by
//! names (users, types, peers) keep the standard hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`IdHasher`].
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The multiply-rotate hash of rustc's FxHasher: one multiplication per word.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the top 7: fold the well
        // mixed high half into the low one.
        self.0 ^ (self.0 >> 32)
    }
}

/// A u64 written in decimal on the stack (request tokens go out as strings).
#[derive(Default)]
pub(crate) struct Digits([u8; 20]);

impl Digits {
    /// `n` in decimal, borrowed from this buffer.
    pub(crate) fn of(&mut self, mut n: u64) -> &str {
        let mut at = self.0.len();
        loop {
            at -= 1;
            self.0[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        std::str::from_utf8(&self.0[at..]).expect("ASCII digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits() {
        let mut d = Digits::default();
        for n in [0, 7, 10, 12345, u64::MAX] {
            assert_eq!(d.of(n), n.to_string());
        }
    }

    #[test]
    fn map_works_with_sequential_tokens() {
        let mut m: IdMap<u64, u64> = IdMap::default();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000).all(|i| m[&i] == i * 2));
    }
}
