//! Compressed frame bodies (feature `compress`, PROTOCOL.md §1.2): a body whose first byte is
//! [`MARKER`] (0x00, which no JSON text starts with) is the rest of the body as raw DEFLATE
//! (RFC 1951), each frame on its own (no dictionary carried from one frame to the next).
//!
//! Pure: bytes in, bytes out. Inflating is bounded: the inflated body counts against the frame
//! limit, and output stops one byte past it, so a "zip bomb" costs at most the limit in memory
//! and is refused. The DEFLATE states (tens to hundreds of KiB each) are one per thread, reset
//! for every frame: a connection holds none of its own, however many negotiated compression.
//!
//! WebSocket messages under permessage-deflate (RFC 7692, negotiated in `ws_deflate.rs`) use
//! the same states and bounds: [`deflate_message`] and [`inflate_message`], without context
//! takeover, so each message stands alone as each `compress` frame does.

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
    inflate_bounded(compressed, max, out, false)
}

/// The four bytes a sync flush ends with, which a WebSocket message compressed with
/// permessage-deflate leaves out (RFC 7692 §7.2.1).
pub const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compress one WebSocket message for permessage-deflate (RFC 7692 §7.2.1) with no context
/// taken over from earlier messages: raw DEFLATE ending in a sync flush, without its last four
/// bytes ([`SYNC_TAIL`]). Appended to `out` if shorter than `body`; true if it was, else `out`
/// is left as it was (bodies under [`MIN_COMPRESS`], or ones that do not shrink).
pub fn deflate_message(body: &[u8], out: &mut Vec<u8>) -> bool {
    if body.len() < MIN_COMPRESS {
        return false;
    }
    let start = out.len();
    // At most one byte shorter than the body once the tail is cut off; a flush that does not
    // fit leaves room unused only if it finished, so a full buffer means "does not pay".
    let budget = body.len() - 1 + SYNC_TAIL.len();
    out.resize(start + budget, 0);
    let written = DEFLATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let deflate = cell.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        deflate.reset();
        match deflate.compress(body, &mut out[start..], FlushCompress::Sync) {
            Ok(_) if deflate.total_in() as usize == body.len() => {
                Some(deflate.total_out() as usize)
            }
            _ => None,
        }
    });
    match written {
        Some(n) if n < budget && n >= 4 && out[start + n - 4..start + n] == SYNC_TAIL => {
            out.truncate(start + n - SYNC_TAIL.len());
            true
        }
        _ => {
            out.truncate(start);
            false
        }
    }
}

/// Inflate one permessage-deflate message's payload, to which the caller appended
/// [`SYNC_TAIL`], into `out` (replacing its contents), refusing it once the output would pass
/// `max` bytes. No context is kept from one message to the next. A payload that ends with a
/// final block may be followed only by the tail.
pub fn inflate_message(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    inflate_bounded(payload, max, out, true)
}

/// The bounded inflate loop: a whole DEFLATE stream (`sync` false: it must end, with nothing
/// after it), or a permessage-deflate message (`sync`: done once all input is taken and the
/// output has room left).
fn inflate_bounded(
    compressed: &[u8],
    max: usize,
    out: &mut Vec<u8>,
    sync: bool,
) -> Result<(), InflateError> {
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
                // A message whose last block was final: only the tail the caller added after it.
                Status::StreamEnd if sync && rest <= SYNC_TAIL.len() => return Ok(()),
                // Bytes after the end of the stream.
                Status::StreamEnd => return Err(InflateError::Corrupt),
                // A message ends where its input does, once the output stopped short of room.
                _ if sync && rest == 0 && len - before < room => return Ok(()),
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

    fn message_inflate(packed: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
        let mut data = packed.to_vec();
        data.extend_from_slice(&SYNC_TAIL);
        inflate_message(&data, max, out)
    }

    #[test]
    fn websocket_messages_round_trip_without_their_tail() {
        let body = chat(2048);
        let mut packed = Vec::new();
        assert!(deflate_message(&body, &mut packed));
        assert!(packed.len() < body.len() / 2, "{} bytes", packed.len());
        assert_ne!(packed[packed.len() - 4..], SYNC_TAIL, "the tail is cut off");
        let mut back = Vec::new();
        message_inflate(&packed, body.len(), &mut back).unwrap();
        assert_eq!(back, body);
        // Each message stands alone: the same body packs the same way twice.
        let mut again = Vec::new();
        assert!(deflate_message(&body, &mut again));
        assert_eq!(again, packed);
        // A peer's message that ends in a final block (flate2's `finish`) is taken too.
        let mut whole = Vec::new();
        assert!(compress_into(&body, &mut whole));
        message_inflate(&whole[1..], body.len(), &mut back).unwrap();
        assert_eq!(back, body);
        let mut short = Vec::new();
        assert!(!deflate_message(b"{\"a\":1}", &mut short));
        assert!(short.is_empty());
    }

    #[test]
    fn websocket_message_bombs_stop_past_the_limit() {
        let zeros = vec![b' '; 8 << 20];
        let mut bomb = Vec::new();
        assert!(deflate_message(&zeros, &mut bomb));
        assert!(bomb.len() < 64 * 1024);
        let mut out = Vec::new();
        assert_eq!(
            message_inflate(&bomb, 1 << 20, &mut out),
            Err(InflateError::TooLarge { max: 1 << 20 })
        );
        assert!(out.capacity() <= (1 << 20) + 2 * STEP, "{}", out.capacity());
        let body = chat(4096);
        let mut packed = Vec::new();
        assert!(deflate_message(&body, &mut packed));
        message_inflate(&packed, 4096, &mut out).unwrap();
        assert_eq!(out.len(), 4096);
        assert_eq!(
            message_inflate(&packed, 4095, &mut out),
            Err(InflateError::TooLarge { max: 4095 })
        );
        assert_eq!(
            message_inflate(&[0xff, 0xff, 0xff], 1 << 20, &mut out),
            Err(InflateError::Corrupt)
        );
    }
}
