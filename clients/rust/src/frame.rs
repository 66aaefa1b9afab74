//! Framing: a 4-byte little-endian unsigned length, then that many bytes of UTF-8 JSON. The
//! declared length is checked against the limit before anything is allocated for the body.

use std::io;

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
}
