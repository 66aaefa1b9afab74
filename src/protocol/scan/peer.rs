//! The fast lane for peer links: a message from a peer server and an ok ack in their common
//! shapes, read in one strict pass that borrows `msg`, the payload's type and its `data` (and an
//! ack's data) from the frame.
//!
//! As for clients and handlers ([`super`]), it is never a second judge: it accepts only frames
//! [`crate::protocol::peer::parse_peer_frame_full`] accepts, with the same value, and returns
//! `None` for everything else, which then takes the serde path and its exact error. Left to that
//! path on purpose: error acks, acks with `servers` (a peer that sent the message on), `from`
//! with `info` or a `null` field, `hops` that is not a plain integer of at most 9 digits, any
//! `null` where a field is optional, and every other envelope field.

use std::borrow::Cow;

use super::{Scan, envelope, once};
use crate::protocol::message::{Sender, Status};
use crate::protocol::peer::{PeerAck, PeerDelivery, PeerFrame, PeerMessage, ServerReport};

impl<'a> Scan<'a> {
    /// A non-negative integer of at most 9 digits (so it fits a `u32`), no fraction or exponent.
    fn small_uint(&mut self) -> Option<u32> {
        self.peek()?;
        let start = self.pos;
        let len = self.digits();
        let text = &self.text[start..self.pos];
        if len == 0 || len > 9 || (len > 1 && text.starts_with('0')) {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.byte() {
            return None;
        }
        text.parse().ok()
    }

    /// `from`: `{"user":U,"server":S,"handler":H}` (`user` and `handler` optional, no `info`).
    fn sender(&mut self) -> Option<Sender> {
        let (mut user, mut server, mut handler) = (None, None, None);
        self.members(|s, key| match key {
            "user" => once(&mut user, s.plain_str()?),
            "server" => once(&mut server, s.plain_str()?),
            "handler" => once(&mut handler, s.plain_str()?),
            _ => None,
        })?;
        Some(Sender {
            user: user.map(str::to_string),
            server: server?.to_string(),
            handler: handler.map(str::to_string),
            info: None,
        })
    }
}

/// A message `{"header":{"scope":"server","msg":M,"from":F,"hops":H},"payload":P}` (any order,
/// `hops` optional), a delivery `{"header":{"scope":"users","msg":M,"from":F,"users":[..]},"payload":P}`
/// or an ok ack, or `None` for the full path.
pub fn peer_frame(text: &str) -> Option<PeerFrame<'_>> {
    message(text).or_else(|| ack(text))
}

fn message(text: &str) -> Option<PeerFrame<'_>> {
    let (mut scope, mut msg, mut from, mut hops, mut users) = (None, None, None, None, None);
    let payload = envelope(text, |s, key| match key {
        "scope" => once(
            &mut scope,
            s.plain_str().filter(|v| *v == "server" || *v == "users")?,
        ),
        "msg" => once(&mut msg, s.plain_str()?),
        "from" => once(&mut from, s.sender()?),
        "hops" => once(&mut hops, s.small_uint()?),
        "users" => once(&mut users, s.names()?),
        _ => None,
    })?;
    match (scope?, users) {
        ("server", None) => Some(PeerFrame::Message(PeerMessage {
            msg: Cow::Borrowed(msg?),
            from: from?,
            hops: hops.unwrap_or(1),
            payload: payload?,
        })),
        ("users", Some(users)) if hops.is_none() => Some(PeerFrame::Deliver(PeerDelivery {
            msg: Cow::Borrowed(msg?),
            from: from?,
            users,
            payload: payload?,
            store: None,
        })),
        _ => None,
    }
}

/// `{"header":{"kind":"ack","msg":M,"status":"ok","type":T,"delivered":[..],"offline":[..]},"data":D}`
/// (any order; all but `kind`, `msg` and `status` optional).
fn ack(text: &str) -> Option<PeerFrame<'_>> {
    let mut s = Scan::new(text);
    let (mut kind, mut msg, mut status, mut type_seen) = (None, None, None, false);
    let (mut delivered, mut offline) = (None, None);
    let (mut seen_header, mut data, mut seen_data): (bool, Option<&str>, bool) =
        (false, None, false);
    s.members(|s, key| match key {
        "header" if !seen_header => {
            seen_header = true;
            s.members(|s, key| match key {
                "kind" => once(&mut kind, s.plain_str().filter(|k| *k == "ack")?),
                "msg" => once(&mut msg, s.plain_str()?),
                "status" => once(&mut status, s.plain_str().filter(|k| *k == "ok")?),
                // Accepted whatever it is by the full path; here only as a plain string.
                "type" if !type_seen => {
                    type_seen = true;
                    s.plain_str().map(|_| ())
                }
                "delivered" => once(&mut delivered, s.names()?),
                "offline" => once(&mut offline, s.names()?),
                _ => None,
            })
        }
        "data" if !seen_data => {
            seen_data = true;
            data = s.raw(1)?;
            Some(())
        }
        _ => None,
    })?;
    s.end()?;
    kind?;
    status?;
    Some(PeerFrame::Ack(PeerAck {
        msg: Cow::Borrowed(msg?),
        report: ServerReport {
            status: Status::Ok,
            delivered,
            offline,
            error: None,
            code: None,
            servers: None,
            failed: None,
        },
        data: data.map(Cow::Borrowed),
    }))
}

#[cfg(test)]
mod tests {
    use super::peer_frame;
    use crate::protocol::peer::parse_peer_frame_full;

    /// The fast lane takes these, with the full path's value.
    const COMMON: &[&str] = &[
        r#"{"header":{"scope":"server","msg":"7","from":{"user":"alice","server":"a"},"hops":1},"payload":{"type":"chat","data":{"t":1}}}"#,
        r#"{"payload":{"data":"x","type":"t"},"header":{"hops":4,"from":{"server":"a","handler":"h"},"msg":"1","scope":"server"}}"#,
        r#"{"header":{"scope":"server","msg":"2","from":{"server":"a"}},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"2","from":{"server":"a"},"hops":0},"payload":{"type":"t","data":null}}"#,
        r#"{"header":{"kind":"ack","msg":"7","status":"ok","type":"chat","delivered":["bob"],"offline":[]}}"#,
        r#"{"header":{"kind":"ack","msg":"7","status":"ok","type":"chat"},"data":{"x":[1,2]}}"#,
        r#"{"data":null,"header":{"status":"ok","msg":"7","kind":"ack"}}"#,
        r#"{"header":{"scope":"users","msg":"9","from":{"user":"alice","server":"a"},"users":["bob","carol"]},"payload":{"type":"chat","data":{"t":1}}}"#,
        r#"{"payload":{"type":"t"},"header":{"users":[],"from":{"server":"a","handler":"h"},"msg":"1","scope":"users"}}"#,
    ];

    /// Left to the full path (valid or not): the fast lane says `None`.
    const OTHERS: &[&str] = &[
        r#"{"header":{"kind":"ack","msg":"8","status":"error"},"data":{"error":"no","code":"unknown_type"}}"#,
        r#"{"header":{"kind":"ack","msg":"8","status":"ok","servers":{}}}"#,
        r#"{"header":{"kind":"ack","msg":"8","status":"ok","type":5}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a","info":{}}},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a","user":null}},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"hops":01},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"hops":1.0},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"hops":4294967295},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"hops":-1},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"proof":"p"},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"}}}"#,
        r#"{"header":{"scope":"server","msg":"1"},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"client","msg":"1","from":{"server":"a"}},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"msg":"2"},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a","admin":true}},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"}},"payload":{"type":"a b"}}"#,
        r#"{"header":{"scope":"server","msg":"\u0031","from":{"server":"a"}},"payload":{"type":"t"}}"#,
        r#"{"header":{"kind":"ack","status":"ok"}}"#,
        r#"{"header":{"kind":"ack","msg":"1","status":"ok"},"data":{"a":1,"a":2}}"#,
        r#"{"header":{"kind":"ack","msg":"1","status":"ok"}} x"#,
        r#"{"header":{"kind":"ack","msg":"1","status":"ok","delivered":["a",]}}"#,
        r#"{"header":{"status":"ok","kind":"challenge"},"data":{"server":"b","nonce":"n","proof":"p"}}"#,
        r#"{"header":{"scope":"users","msg":"1","from":{"server":"a"},"users":["b"],"hops":1},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"users","msg":"1","from":{"server":"a"}},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"users":["b"]},"payload":{"type":"t"}}"#,
        r#"{"header":{"scope":"users","msg":"1","from":{"server":"a"},"users":["b"],"users":[]},"payload":{"type":"t"}}"#,
        r#"{"header":{"kind":"ack","msg":"8","status":"ok","failed":{"x@c":"peer_unreachable"}}}"#,
    ];

    #[test]
    fn the_fast_lane_gives_what_the_full_path_gives() {
        for text in COMMON {
            let fast = peer_frame(text).unwrap_or_else(|| panic!("fast lane: {text}"));
            let full = parse_peer_frame_full(text.as_bytes()).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{text}");
        }
        for text in OTHERS {
            assert!(peer_frame(text).is_none(), "left to the full path: {text}");
        }
    }

    #[test]
    fn every_cut_and_every_byte_change_agrees_with_the_full_path() {
        for text in COMMON {
            for end in 0..text.len() {
                let cut = &text[..end];
                if let Some(fast) = peer_frame(cut) {
                    let full = parse_peer_frame_full(cut.as_bytes()).unwrap();
                    assert_eq!(format!("{fast:?}"), format!("{full:?}"));
                }
            }
            for at in 0..text.len() {
                for b in [b'"', b'{', b'}', b',', b':', b'1', b' ', b'\\', b'x'] {
                    let mut bytes = text.as_bytes().to_vec();
                    bytes[at] = b;
                    let Ok(changed) = std::str::from_utf8(&bytes) else {
                        continue;
                    };
                    if let Some(fast) = peer_frame(changed) {
                        let full = parse_peer_frame_full(changed.as_bytes())
                            .unwrap_or_else(|e| panic!("{changed}: fast took it, full: {e}"));
                        assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{changed}");
                    }
                }
            }
        }
    }
}
