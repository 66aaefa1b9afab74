//! Framing: a 4-byte little-endian unsigned length, then that many bytes of UTF-8 JSON.
//!
//! The decoder is pure: it looks at bytes already received and says "here is a frame", "need more"
//! or "this stream is broken". The declared length is checked against the limit from the header
//! alone, before any memory is reserved for the body, so a peer cannot make us allocate by lying.

use std::fmt;

use byteorder::{ByteOrder, LittleEndian};

use super::error::{ErrorBody, ErrorCode};

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a byte stream cannot be decoded any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix declares more than the connection allows.
    TooLarge {
        /// The declared body length.
        len: u32,
        /// The limit in force on this connection.
        max: usize,
    },
    /// A WebSocket text message is not UTF-8 (RFC 6455 §8.1: the connection fails, with 1007).
    InvalidUtf8,
    /// A compressed body (feature `compress`) inflates to more than the limit.
    InflatesTooLarge {
        /// The limit in force on this connection.
        max: usize,
    },
    /// A compressed body is not a valid DEFLATE stream.
    BadCompression,
}

impl FrameError {
    /// What to tell the peer before closing.
    pub fn to_body(self) -> ErrorBody {
        let code = match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::InvalidUtf8 => ErrorCode::InvalidUtf8,
            FrameError::InflatesTooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::BadCompression => ErrorCode::InvalidMessage,
        };
        ErrorBody::new(code, self.to_string())
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes is over the limit of {max} bytes")
            }
            FrameError::InvalidUtf8 => write!(f, "text message is not valid UTF-8"),
            FrameError::InflatesTooLarge { max } => {
                write!(
                    f,
                    "compressed frame inflates to over the limit of {max} bytes"
                )
            }
            FrameError::BadCompression => {
                write!(f, "compressed frame is not a valid DEFLATE stream")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits a byte stream into frame bodies, enforcing a maximum body length.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max: usize,
}

impl FrameDecoder {
    /// A decoder that rejects bodies longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder { max }
    }

    /// The body limit in force.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Change the limit (e.g. raise it once a connection has identified).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Look at the start of `buf`: `Ok(Some((consumed, body)))` when a whole frame is there,
    /// `Ok(None)` when more bytes are needed, `Err` when the declared length is over the limit
    /// (decided from the 4-byte header alone).
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(usize, &'a [u8])>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = LittleEndian::read_u32(&buf[..HEADER_LEN]);
        let body_len = usize::try_from(len).unwrap_or(usize::MAX);
        if body_len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let total = HEADER_LEN + body_len;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some((total, &buf[HEADER_LEN..total])))
    }

    /// How many bytes the frame at the start of `buf` still needs, if its header is complete.
    pub fn missing(&self, buf: &[u8]) -> Option<usize> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let len = LittleEndian::read_u32(&buf[..HEADER_LEN]) as usize;
        Some((HEADER_LEN + len).saturating_sub(buf.len()))
    }
}

/// Append one frame (header + body) to `out`.
///
/// # Panics
/// Never for bodies under 4 GiB; bodies are serialized by us and bounded well below that.
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(body.len()).expect("frame body over 4 GiB");
    let mut header = [0u8; HEADER_LEN];
    LittleEndian::write_u32(&mut header, len);
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(body, &mut out);
        out
    }

    /// Feed `input` in pieces of `split` bytes, the way a socket would hand it over.
    fn decode_in_pieces(input: &[u8], split: usize, max: usize) -> Vec<Vec<u8>> {
        let decoder = FrameDecoder::new(max);
        let mut pending = Vec::new();
        let mut frames = Vec::new();
        for piece in input.chunks(split.max(1)) {
            pending.extend_from_slice(piece);
            while let Some((used, body)) = decoder.decode(&pending).unwrap() {
                frames.push(body.to_vec());
                pending.drain(..used);
            }
        }
        assert!(pending.is_empty(), "bytes left over: {pending:?}");
        frames
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = frame(b"{\"a\":1}");
        assert_eq!(decode_in_pieces(&input, 1, 64), vec![b"{\"a\":1}".to_vec()]);
    }

    #[test]
    fn two_frames_in_one_read() {
        let mut input = frame(b"{}");
        input.extend(frame(b"[1,2]"));
        let decoder = FrameDecoder::new(64);
        let (used, first) = decoder.decode(&input).unwrap().unwrap();
        assert_eq!(first, b"{}");
        let (used2, second) = decoder.decode(&input[used..]).unwrap().unwrap();
        assert_eq!(second, b"[1,2]");
        assert_eq!(used + used2, input.len());
    }

    #[test]
    fn incomplete_header_and_body_need_more() {
        let decoder = FrameDecoder::new(64);
        assert_eq!(decoder.decode(&[5, 0, 0]).unwrap(), None);
        assert_eq!(decoder.decode(&[5, 0, 0, 0, b'{']).unwrap(), None);
        assert_eq!(decoder.missing(&[5, 0, 0, 0, b'{']), Some(4));
    }

    #[test]
    fn zero_length_is_a_frame_with_an_empty_body() {
        let decoder = FrameDecoder::new(64);
        assert_eq!(decoder.decode(&[0, 0, 0, 0]).unwrap(), Some((4, &b""[..])));
    }

    #[test]
    fn max_is_accepted_and_max_plus_one_rejected_from_the_header_alone() {
        let decoder = FrameDecoder::new(10);
        let ok = frame(&[b' '; 10]);
        assert_eq!(decoder.decode(&ok).unwrap().unwrap().0, 14);
        // Only the header of the oversized frame is present: rejected before any body arrives.
        assert_eq!(
            decoder.decode(&11u32.to_le_bytes()),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        );
        assert_eq!(
            decoder.decode(&u32::MAX.to_le_bytes()),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: 10
            })
        );
    }

    #[test]
    fn random_splits_round_trip() {
        // A small deterministic generator: the test must be reproducible, not flaky.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let count = (next() % 8) as usize;
            let bodies: Vec<Vec<u8>> = (0..count)
                .map(|_| (0..(next() % 300)).map(|_| next() as u8).collect())
                .collect();
            let mut input = Vec::new();
            for body in &bodies {
                encode_frame(body, &mut input);
            }
            let split = 1 + (next() % 97) as usize;
            assert_eq!(decode_in_pieces(&input, split, 300), bodies);
        }
    }
}

/// The shared vectors in `protocol/vectors/frames.json`, which the example handlers' codecs are
/// tested against too.
#[cfg(test)]
mod vectors {
    use serde_json::Value;

    use super::*;
    use crate::protocol::message::parse_json;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn frames_json() {
        let doc: Value =
            serde_json::from_str(include_str!("../../protocol/vectors/frames.json")).unwrap();
        let max = doc["max_frame"].as_u64().unwrap() as usize;
        let decoder = FrameDecoder::new(max);
        let valid = doc["valid"].as_array().unwrap();
        for case in valid {
            let json = case["json"].as_str().unwrap();
            let mut encoded = Vec::new();
            encode_frame(json.as_bytes(), &mut encoded);
            assert_eq!(
                encoded,
                hex(case["hex"].as_str().unwrap()),
                "{}",
                case["name"]
            );
            let (used, body) = decoder.decode(&encoded).unwrap().unwrap();
            assert_eq!((used, body), (encoded.len(), json.as_bytes()));
        }
        let stream = hex(doc["stream"]["hex"].as_str().unwrap());
        for split in [1, 2, 3, 7, 64, stream.len()] {
            let mut pending = Vec::new();
            let mut got = Vec::new();
            for piece in stream.chunks(split) {
                pending.extend_from_slice(piece);
                while let Some((used, body)) = decoder.decode(&pending).unwrap() {
                    got.push(String::from_utf8(body.to_vec()).unwrap());
                    pending.drain(..used);
                }
            }
            let want: Vec<&str> = valid.iter().map(|c| c["json"].as_str().unwrap()).collect();
            assert_eq!(got, want, "split {split}");
        }
        for case in doc["invalid"].as_array().unwrap() {
            let bytes = hex(case["hex"].as_str().unwrap());
            let code = match decoder.decode(&bytes) {
                Err(e) => e.to_body().code,
                Ok(Some((_, body))) => parse_json::<Value>(body).unwrap_err().code,
                Ok(None) => panic!("{}: incomplete", case["name"]),
            };
            assert_eq!(
                code.as_str(),
                case["code"].as_str().unwrap(),
                "{}",
                case["name"]
            );
        }
    }
}
