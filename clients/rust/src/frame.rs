//! Framing: a 4-byte little-endian unsigned length, then that many bytes of UTF-8 JSON. The
//! declared length is checked against the limit before anything is allocated for the body.
//!
//! On a session that negotiated `compress` (PROTOCOL.md §1.2) a body whose first byte is 0x00 is
//! raw DEFLATE of the JSON: [`inflate`] opens it within a limit, [`deflate`] makes one.

use std::io::{self, Read, Write};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

/// Bodies shorter than this are never compressed (the server's own threshold).
pub const COMPRESS_MIN: usize = 256;

/// `body` as a compressed body (0x00, then raw DEFLATE at level 1), or `None` when that is not
/// shorter.
pub fn deflate(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = DeflateEncoder::new(vec![0u8], Compression::fast());
    out.write_all(body).ok()?;
    let out = out.finish().ok()?;
    (out.len() < body.len()).then_some(out)
}

/// The JSON of a compressed body: over `max` bytes inflated is an error (at most one byte past
/// `max` is ever inflated), as is a body that is not one whole DEFLATE stream.
pub fn inflate(body: &[u8], max: usize) -> io::Result<Vec<u8>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let stream = body.get(1..).unwrap_or_default();
    let mut decoder = DeflateDecoder::new(stream);
    let mut out = Vec::new();
    (&mut decoder)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            bad(format!(
                "compressed frame is not a valid DEFLATE stream: {e}"
            ))
        })?;
    if out.len() > max {
        return Err(bad(format!(
            "compressed frame inflates to over the limit of {max} bytes"
        )));
    }
    if decoder.total_in() != stream.len() as u64 {
        return Err(bad(
            "compressed frame is not a valid DEFLATE stream: bytes after its end".into(),
        ));
    }
    Ok(out)
}

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Splits received bytes into frame bodies, refusing bodies longer than its limit.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder { max }
    }

    /// `Ok(Some((consumed, body)))` when a whole frame starts `buf`, `Ok(None)` when more bytes
    /// are needed, `Err` (`InvalidData`) when the declared length is over the limit.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> io::Result<Option<(usize, &'a [u8])>> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*header);
        let body_len = usize::try_from(len).unwrap_or(usize::MAX);
        if body_len > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame of {len} bytes is over the limit of {} bytes",
                    self.max
                ),
            ));
        }
        let total = HEADER_LEN + body_len;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some((total, &buf[HEADER_LEN..total])))
    }
}

/// Append one frame (header and body) to `out`.
///
/// # Panics
/// For a body of 4 GiB or more (no frame is near that: servers refuse far less).
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).expect("frame body over 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut wire = Vec::new();
        encode_frame(b"{\"a\":1}", &mut wire);
        encode_frame(b"[]", &mut wire);
        assert_eq!(&wire[..4], &[7, 0, 0, 0]);
        let d = FrameDecoder::new(16);
        let (used, body) = d.decode(&wire).unwrap().unwrap();
        assert_eq!((used, body), (11, &b"{\"a\":1}"[..]));
        assert_eq!(d.decode(&wire[used..]).unwrap().unwrap().1, b"[]");
        assert!(d.decode(&wire[..6]).unwrap().is_none());
        assert!(d.decode(&[17, 0, 0, 0]).is_err());
    }

    #[test]
    fn compressed_bodies_round_trip_and_are_bounded() {
        let body = format!(r#"{{"a":"{}"}}"#, "abc".repeat(300));
        let packed = deflate(body.as_bytes()).unwrap();
        assert_eq!(packed[0], 0);
        assert!(packed.len() < body.len());
        assert_eq!(inflate(&packed, 1 << 20).unwrap(), body.as_bytes());
        assert_eq!(deflate(b"{}"), None, "not shorter: left plain");
        let mut bomb = DeflateEncoder::new(vec![0u8], Compression::best());
        bomb.write_all(&vec![b' '; 2 << 20]).unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(bomb.len() < 4096);
        assert_eq!(
            inflate(&bomb, 4096).unwrap_err().to_string(),
            "compressed frame inflates to over the limit of 4096 bytes"
        );
        let mut trailing = packed.clone();
        trailing.extend_from_slice(b"junk");
        for broken in [
            &packed[..packed.len() - 2],
            &trailing[..],
            &[0, 0xff, 0xff][..],
        ] {
            let e = inflate(broken, 1 << 20).unwrap_err().to_string();
            assert!(
                e.starts_with("compressed frame is not a valid DEFLATE stream"),
                "{e}"
            );
        }
    }
}
