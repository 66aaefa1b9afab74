//! permessage-deflate (RFC 7692) on a WebSocket connection that negotiated it
//! (`protocol/ws_deflate.rs`), beside tungstenite, which knows no extensions and fails any frame
//! with RSV1 set.
//!
//! Inbound, [`Rsv1`] looks at every byte tungstenite reads, in order, before it does, and
//! follows the frame headers: on the first frame of a data message it notes whether RSV1
//! ("compressed") is set and, if so, clears it and marks the frame binary (its payload is
//! DEFLATE, not UTF-8), so that tungstenite still does the masking, fragments, control frames
//! and size limits. `ws.rs` takes one note per message tungstenite returns and inflates the
//! compressed ones within the frame limit (`compress.rs`), checking a text message's UTF-8
//! after inflating it. RSV1 anywhere else (a continuation or a control frame) is left as it
//! came, and tungstenite fails the connection with 1002, as RFC 7692 §6.1 requires; so it does
//! on a connection that did not negotiate the extension, where nothing here runs.
//!
//! Outbound, [`frame_message`] frames a message compressed when that pays (RSV1 on its one
//! frame). Memory per connection: the notes of messages read ahead but not yet returned (one
//! byte each, given back when they run out) and the header state; no DEFLATE window.
//!
//! It must not: change a byte other than the first of a data message's first frame, or let a
//! note go out of step with tungstenite's messages.

use std::collections::VecDeque;

use crate::protocol::compress;

/// What the first frame of one data message said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Note {
    /// RSV1 was set: the payload is compressed.
    pub compressed: bool,
    /// It was a text message (checked for UTF-8 once inflated).
    pub text: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first byte of a frame header.
    Start,
    /// The second: mask bit and 7-bit length.
    Length,
    /// The 16- or 64-bit length, `left` bytes of it to come.
    Extended { left: u8, len: u64, masked: bool },
    /// The masking key.
    Mask { left: u8, len: u64 },
    /// Payload bytes to skip.
    Payload { left: u64 },
}

/// Follows frame headers in the byte stream (see the module doc).
#[derive(Debug)]
pub struct Rsv1 {
    state: State,
    notes: VecDeque<Note>,
}

/// Notes kept after they run out, at most (a burst of small messages read ahead grows more).
const KEEP_NOTES: usize = 16;

impl Default for Rsv1 {
    fn default() -> Self {
        Rsv1 {
            state: State::Start,
            notes: VecDeque::new(),
        }
    }
}

impl Rsv1 {
    /// Look at (and rewrite where needed) the next bytes of the stream.
    pub fn scan(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            self.state = match self.state {
                State::Start => {
                    let opcode = b & 0x0f;
                    if opcode == 1 || opcode == 2 {
                        let compressed = b & 0x40 != 0;
                        self.notes.push_back(Note {
                            compressed,
                            text: opcode == 1,
                        });
                        if compressed {
                            // FIN, RSV2 and RSV3 as they were (tungstenite fails those).
                            buf[i] = (b & 0xb0) | 0x02;
                        }
                    }
                    State::Length
                }
                State::Length => {
                    let masked = b & 0x80 != 0;
                    match b & 0x7f {
                        126 => State::Extended {
                            left: 2,
                            len: 0,
                            masked,
                        },
                        127 => State::Extended {
                            left: 8,
                            len: 0,
                            masked,
                        },
                        n => after_length(u64::from(n), masked),
                    }
                }
                State::Extended { left, len, masked } => {
                    let len = (len << 8) | u64::from(b);
                    if left == 1 {
                        after_length(len, masked)
                    } else {
                        State::Extended {
                            left: left - 1,
                            len,
                            masked,
                        }
                    }
                }
                State::Mask { left, len } => {
                    if left == 1 {
                        payload(len)
                    } else {
                        State::Mask {
                            left: left - 1,
                            len,
                        }
                    }
                }
                State::Payload { left } => {
                    let skip = (buf.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    i += skip;
                    self.state = payload(left - skip as u64);
                    continue;
                }
            };
            i += 1;
        }
    }

    /// The note of the next data message tungstenite returns (or fails).
    pub fn next_note(&mut self) -> Note {
        let note = self.notes.pop_front().unwrap_or_default();
        if self.notes.is_empty() && self.notes.capacity() > KEEP_NOTES {
            self.notes = VecDeque::new();
        }
        note
    }
}

fn after_length(len: u64, masked: bool) -> State {
    if masked {
        State::Mask { left: 4, len }
    } else {
        payload(len)
    }
}

fn payload(len: u64) -> State {
    if len == 0 {
        State::Start
    } else {
        State::Payload { left: len }
    }
}

/// Frame one outgoing text message into `out`: compressed (RSV1 set) when `compress` and
/// DEFLATE makes it shorter, else as it is. True if it went compressed.
pub fn frame_message(body: &[u8], compress: bool, out: &mut Vec<u8>) -> bool {
    if compress {
        let start = out.len();
        // Room for the longest header; the payload goes after it and moves up to the real one.
        out.extend_from_slice(&[0; 10]);
        if compress::deflate_message(body, out) {
            let len = out.len() - start - 10;
            let mut head = Vec::with_capacity(10);
            header(0xc1, len, &mut head);
            let gap = 10 - head.len();
            out[start + gap..start + 10].copy_from_slice(&head);
            out.drain(start..start + gap);
            return true;
        }
        out.truncate(start);
    }
    header(0x81, body.len(), out);
    out.extend_from_slice(body);
    false
}

/// A server frame header (unmasked) with this first byte and payload length.
pub fn header(first: u8, len: usize, out: &mut Vec<u8>) {
    out.push(first);
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: first byte, masked payload.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header(first, payload.len(), &mut out);
        out[1] |= 0x80;
        let key = [1u8, 2, 3, 4];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    #[test]
    fn rsv1_is_noted_and_cleared_on_first_frames_only() {
        let mut wire = Vec::new();
        wire.extend(frame(0xc1, &[7; 300])); // compressed text, 16-bit length
        wire.extend(frame(0x81, b"{}")); // plain text
        wire.extend(frame(0x89, b"ping")); // a ping
        wire.extend(frame(0x42, &[1; 70000])); // compressed binary, first fragment, 64-bit length
        wire.extend(frame(0xc0, b"x")); // a continuation with RSV1: left for tungstenite
        wire.extend(frame(0xc9, b"")); // a ping with RSV1: left too
        let starts = [0, 308, 316, 326, 70340, 70347];
        let original = wire.clone();
        let mut rsv = Rsv1::default();
        // One byte at a time, as a worst-case split.
        for chunk in wire.chunks_mut(1) {
            rsv.scan(chunk);
        }
        assert_eq!(rsv.state, State::Start);
        let firsts: Vec<u8> = starts.iter().map(|&s| wire[s]).collect();
        assert_eq!(firsts, [0x82, 0x81, 0x89, 0x02, 0xc0, 0xc9]);
        // Nothing else changed.
        let changed: Vec<usize> = (0..wire.len())
            .filter(|&i| wire[i] != original[i])
            .collect();
        assert_eq!(changed, [0, 326]);
        let notes: Vec<Note> = (0..3).map(|_| rsv.next_note()).collect();
        let note = |compressed, text| Note { compressed, text };
        assert_eq!(
            notes,
            [note(true, true), note(false, true), note(true, false)]
        );
        assert_eq!(rsv.next_note(), Note::default(), "none left");
    }

    #[test]
    fn outgoing_messages_carry_rsv1_only_when_compressed() {
        let body = br#"{"header":{"status":"ok"},"data":"hello hello hello"}"#.repeat(20);
        let mut out = Vec::new();
        assert!(frame_message(&body, true, &mut out));
        assert_eq!(out[0], 0xc1);
        let len = usize::from(out[1]);
        assert!(len < 126, "repeated text packs small: {len}");
        assert_eq!(out.len(), 2 + len);
        let mut payload = out[2..].to_vec();
        payload.extend_from_slice(&compress::SYNC_TAIL);
        let mut back = Vec::new();
        compress::inflate_message(&payload, 1 << 20, &mut back).unwrap();
        assert_eq!(back, body);
        // Longer ones get the 16-bit length, the payload moved up behind it.
        let long: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{i} ").into_bytes())
            .collect();
        let mut out = b"before".to_vec();
        assert!(frame_message(&long, true, &mut out));
        assert_eq!(&out[..8], b"before\xc1\x7e");
        let len = usize::from(u16::from_be_bytes([out[8], out[9]]));
        assert_eq!(out.len(), 10 + len);
        let mut payload = out[10..].to_vec();
        payload.extend_from_slice(&compress::SYNC_TAIL);
        compress::inflate_message(&payload, 1 << 20, &mut back).unwrap();
        assert_eq!(back, long);
        let mut out = Vec::new();
        assert!(!frame_message(&body, false, &mut out), "a secret");
        assert_eq!(out[0], 0x81);
        let mut out = Vec::new();
        assert!(!frame_message(b"{}", true, &mut out), "too short to pay");
        assert_eq!(out, b"\x81\x02{}");
    }
}
