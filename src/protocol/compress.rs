//! Compressed frame bodies (feature `compress`, PROTOCOL.md §1.2): a body whose first byte is
//! [`MARKER`] (0x00, which no JSON text starts with) is the rest of the body as raw DEFLATE
//! (RFC 1951), each frame on its own (no dictionary carried from one frame to the next).
//!
//! Pure: bytes in, bytes out. Inflating is bounded: the inflated body counts against the frame
//! limit, and output stops one byte past it, so a "zip bomb" costs at most the limit in memory
//! and is refused. The DEFLATE states (tens to hundreds of KiB each) are one per thread, reset
//! for every frame: a connection holds none of its own, however many negotiated compression.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The first byte of a compressed body.
pub const MARKER: u8 = 0x00;

/// Bodies shorter than this are sent as they are: DEFLATE's own overhead would eat the gain.
pub const MIN_COMPRESS: usize = 256;

/// The DEFLATE level the server sends with: the fastest, because compression runs on the
/// event-loop thread (`scripts/bench.sh compress` measures what it costs and saves).
const LEVEL: u32 = 1;

/// Output grows by at most this much per step while inflating.
const STEP: usize = 16 * 1024;

thread_local! {
    static DEFLATE: RefCell<Option<Compress>> = const { RefCell::new(None) };
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Why a compressed body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Inflated, it is over the frame limit (`max`).
    TooLarge {
        /// The frame limit in force.
        max: usize,
    },
    /// Not a complete, valid DEFLATE stream.
    Corrupt,
}

/// Whether a frame body is a compressed one.
pub fn is_compressed(body: &[u8]) -> bool {
    body.first() == Some(&MARKER)
}

/// Append `body` to `out` as a compressed body ([`MARKER`] then DEFLATE) if that is shorter;
/// true if it was. `out` is left as it was when compression does not pay.
pub fn compress_into(body: &[u8], out: &mut Vec<u8>) -> bool {
    if body.len() < MIN_COMPRESS {
        return false;
    }
    let start = out.len();
    // Worth sending only if shorter than the plain body: the output never grows past that, so
    // a body that does not shrink ends the attempt with its input unfinished.
    let budget = body.len() - 1;
    out.resize(start + 1 + budget, 0);
    out[start] = MARKER;
    let written = DEFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let deflate = cell.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        deflate.reset();
        match deflate.compress(body, &mut out[start + 1..], FlushCompress::Finish) {
            Ok(Status::StreamEnd) => Some(deflate.total_out() as usize),
            _ => None,
        }
    });
    match written {
        Some(n) => {
            out.truncate(start + 1 + n);
            true
        }
        None => {
            out.truncate(start);
            false
        }
    }
}

/// Inflate a compressed body (without its [`MARKER`]) into `out`, replacing its contents, and
/// refuse it once the output would pass `max` bytes.
pub fn inflate(compressed: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    out.clear();
    INFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let inflate = cell.get_or_insert_with(|| Decompress::new(false));
        inflate.reset(false);
        let mut len = 0;
        loop {
            // Room for one byte past the limit, so "exactly the limit" and "over it" differ.
            let room = (max + 1 - len).min(STEP.max(len));
            // Exactly this much more (not the doubling of `resize`): the buffer never holds
            // more than the limit and a byte.
            out.reserve_exact(room);
            out.resize(len + room, 0);
            let before_in = inflate.total_in();
            let input = &compressed[before_in as usize..];
            // `None`, not `Finish`: with `Finish` the backend wants all the output in one call
            // and fails on an output buffer that is only a step.
            let status = inflate.decompress(input, &mut out[len..], FlushDecompress::None);
            let before = len;
            len = inflate.total_out() as usize;
            out.truncate(len);
            let status = status.map_err(|_| InflateError::Corrupt)?;
            if len > max {
                return Err(InflateError::TooLarge { max });
            }
            let rest = compressed.len() - inflate.total_in() as usize;
            match status {
                Status::StreamEnd if rest == 0 => return Ok(()),
                // Bytes after the end of the stream.
                Status::StreamEnd => return Err(InflateError::Corrupt),
                // No progress: the stream was cut short.
                _ if len == before && inflate.total_in() == before_in => {
                    return Err(InflateError::Corrupt);
                }
                _ => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(len: usize) -> Vec<u8> {
        let mut text = String::from(
            r#"{"header":{"scope":"client","id":"1"},"payload":{"type":"chat","data":{"text":""#,
        );
        while text.len() < len - 4 {
            text.push_str("hello there, how is the weather today? ");
        }
        text.truncate(len - 4);
        text.push_str("\"}}}");
        text.into_bytes()
    }

    #[test]
    fn round_trip_and_marker() {
        let body = chat(2048);
        let mut out = Vec::new();
        assert!(compress_into(&body, &mut out));
        assert!(is_compressed(&out));
        assert!(out.len() < body.len() / 2, "{} bytes", out.len());
        let mut back = Vec::new();
        inflate(&out[1..], body.len(), &mut back).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn short_or_incompressible_bodies_stay_plain() {
        let mut out = b"kept".to_vec();
        assert!(!compress_into(b"{\"a\":1}", &mut out));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(!compress_into(&noise, &mut out));
        assert_eq!(out, b"kept", "left as it was");
    }

    #[test]
    fn inflating_stops_past_the_limit() {
        // 8 MiB of zeros compress to a few KiB: the bomb.
        let zeros = vec![b' '; 8 << 20];
        let mut bomb = Vec::new();
        assert!(compress_into(&zeros, &mut bomb));
        assert!(bomb.len() < 64 * 1024);
        let mut out = Vec::new();
        assert_eq!(
            inflate(&bomb[1..], 1 << 20, &mut out),
            Err(InflateError::TooLarge { max: 1 << 20 })
        );
        assert!(out.capacity() <= (1 << 20) + 2 * STEP, "{}", out.capacity());
        // Exactly the limit is fine.
        let body = chat(4096);
        let mut packed = Vec::new();
        assert!(compress_into(&body, &mut packed));
        inflate(&packed[1..], 4096, &mut out).unwrap();
        assert_eq!(out.len(), 4096);
        assert_eq!(
            inflate(&packed[1..], 4095, &mut out),
            Err(InflateError::TooLarge { max: 4095 })
        );
    }

    #[test]
    fn corrupt_or_cut_streams_are_refused() {
        let body = chat(2048);
        let mut packed = Vec::new();
        assert!(compress_into(&body, &mut packed));
        let mut out = Vec::new();
        let cut = &packed[1..packed.len() / 2];
        assert_eq!(inflate(cut, 1 << 20, &mut out), Err(InflateError::Corrupt));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff], 1 << 20, &mut out),
            Err(InflateError::Corrupt)
        );
        let mut trailing = packed[1..].to_vec();
        trailing.extend_from_slice(b"junk");
        assert_eq!(
            inflate(&trailing, 1 << 20, &mut out),
            Err(InflateError::Corrupt)
        );
        assert_eq!(inflate(&[], 1 << 20, &mut out), Err(InflateError::Corrupt));
    }
}
