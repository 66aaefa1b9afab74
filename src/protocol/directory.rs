//! The federation directory on the wire (`[federation] directory = true`, PROTOCOL.md §7
//! "Directory"): the frames linked servers send each other on their peer link to say which of
//! their users are online. Pure types and writers, no state; `router/directory.rs` keeps the
//! sequence numbers and the entries.
//!
//! ```text
//! {"header":{"kind":"directory","server":"b","seq":1,"part":1,"parts":2},"data":[["alice",1],["bob",2,"away"]]}
//! {"header":{"kind":"directory","server":"b","seq":3},"data":[["alice",0]]}
//! {"header":{"kind":"directory.resync"}}
//! {"header":{"kind":"directory.error","seq":3},"data":{"error":"…","code":"forged_origin"}}
//! ```
//!
//! An update is a part of a full snapshot (`part` of `parts`) or, without them, a delta. Each
//! entry is `[user, connections]` or `[user, connections, status]`; in a delta, 0 connections
//! means the user went offline.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{ErrorBody, ErrorCode};
use super::groups::MAX_STATUS_TEXT;
use super::message::{Status, parse_json, to_body};

/// Most entries one directory frame may carry (a snapshot is cut into parts of at most this).
pub const MAX_ENTRIES_PER_FRAME: usize = 1024;

/// One user's presence on the announcing server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The user (a name of the announcing server: no `@`).
    pub user: String,
    /// Their connections there; 0 in a delta: gone offline.
    pub connections: u32,
    /// Their `bester.status` text, if any.
    pub status: Option<String>,
}

impl<'de> Deserialize<'de> for DirEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DirEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[user, connections] or [user, connections, status]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DirEntry, A::Error> {
                let user: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let connections: u32 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let status: Option<String> = seq.next_element::<Option<String>>()?.flatten();
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(DirEntry {
                    user,
                    connections,
                    status,
                })
            }
        }
        d.deserialize_seq(V)
    }
}

impl DirEntry {
    /// Why the announcing server `server` may not announce this entry, if so: a name of another
    /// server's user (`bob@c`, where `is_server("c")`: the receiving server or one of its peers)
    /// is `forged_origin`; a name that is no user name, a status over [`MAX_STATUS_TEXT`] bytes,
    /// `invalid_message`. A name whose `@` suffix names no known server (`alice@example.com`)
    /// is the announcing server's user of that name.
    pub fn check(&self, server: &str, is_server: impl Fn(&str) -> bool) -> Result<(), ErrorBody> {
        if let Some((_, suffix)) = self.user.rsplit_once('@')
            && is_server(suffix)
        {
            return Err(ErrorBody::new(
                ErrorCode::ForgedOrigin,
                format!(
                    "peer {server:?} may announce only its own users, not {:?}",
                    self.user
                ),
            ));
        }
        super::groups::check_member_name(&self.user)
            .map_err(|e| ErrorBody::new(ErrorCode::InvalidMessage, e))?;
        if let Some(status) = &self.status
            && status.len() > MAX_STATUS_TEXT
        {
            return Err(ErrorBody::new(
                ErrorCode::InvalidMessage,
                format!(
                    "the status of {:?} is {} bytes, over {MAX_STATUS_TEXT}",
                    self.user,
                    status.len()
                ),
            ));
        }
        Ok(())
    }
}

/// A directory frame from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryFrame {
    /// Entries: a part of a full snapshot, or a delta.
    Update {
        /// The server whose users these are (must be the peer itself).
        server: String,
        /// The frame's number on this link (every update counts, from 1 after the link is up).
        seq: u64,
        /// `(part, parts)` of a full snapshot; `None`: a delta.
        part: Option<(u32, u32)>,
        /// The entries.
        entries: Vec<DirEntry>,
    },
    /// The peer lost track (a gap in the numbers): send it a full snapshot.
    Resync,
    /// The peer refused (some of) an update of ours.
    Error {
        /// The update's number.
        seq: Option<u64>,
        /// Why.
        error: String,
        /// The code.
        code: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame {
    header: RawHeader,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    kind: String,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    part: Option<u32>,
    #[serde(default)]
    parts: Option<u32>,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorData {
    error: String,
    code: String,
}

fn invalid(text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidMessage, text)
}

/// Whether `body` is a directory frame (its `header.kind` starts with `directory`): `None` if
/// not (another peer frame), else the frame or why it is malformed.
pub fn parse_directory_frame(body: &[u8]) -> Option<Result<DirectoryFrame, ErrorBody>> {
    if !super::peer::of_family(&super::peer::frame_kind(body)?, "directory") {
        return None;
    }
    Some(parse_full(body))
}

fn parse_full(body: &[u8]) -> Result<DirectoryFrame, ErrorBody> {
    let raw: RawFrame = parse_json(body)?;
    let h = raw.header;
    let data = raw.data.as_deref().map_or("null", RawValue::get);
    match (h.kind.as_str(), h.status) {
        ("directory", None) => {
            let (Some(server), Some(seq)) = (h.server, h.seq) else {
                return Err(invalid("a directory update needs server and seq"));
            };
            let part = match (h.part, h.parts) {
                (None, None) => None,
                (Some(part), Some(parts)) if part >= 1 && part <= parts => Some((part, parts)),
                _ => {
                    return Err(invalid(
                        "a snapshot part needs part and parts, 1 <= part <= parts",
                    ));
                }
            };
            let entries: Vec<DirEntry> = serde_json::from_str(data)
                .map_err(|e| invalid(format!("bad directory entries: {e}")))?;
            if entries.len() > MAX_ENTRIES_PER_FRAME {
                return Err(ErrorBody::new(
                    ErrorCode::LimitReached,
                    format!(
                        "a directory frame carries at most {MAX_ENTRIES_PER_FRAME} entries (this one {})",
                        entries.len()
                    ),
                ));
            }
            Ok(DirectoryFrame::Update {
                server,
                seq,
                part,
                entries,
            })
        }
        ("directory.resync", None) => Ok(DirectoryFrame::Resync),
        ("directory.error", Some(Status::Error)) => {
            let e: ErrorData = serde_json::from_str(data)
                .map_err(|e| invalid(format!("bad directory error: {e}")))?;
            Ok(DirectoryFrame::Error {
                seq: h.seq,
                error: e.error,
                code: e.code,
            })
        }
        _ => Err(invalid("not a directory frame")),
    }
}

/// Append one entry, `["bob",1]` or `["bob",1,"away"]`, to `out`.
pub fn write_entry(out: &mut Vec<u8>, user: &str, connections: usize, status: Option<&str>) {
    out.push(b'[');
    serde_json::to_writer(&mut *out, user).expect("a string");
    out.push(b',');
    out.extend_from_slice(connections.to_string().as_bytes());
    if let Some(status) = status {
        out.push(b',');
        serde_json::to_writer(&mut *out, status).expect("a string");
    }
    out.push(b']');
}

/// Bytes an update's header takes around its entries (at most), for cutting frames to the
/// frame limit.
pub fn update_overhead(server: &str) -> usize {
    update_frame(server, u64::MAX, Some((u32::MAX, u32::MAX)), b"").len()
}

/// An update: `entries` is the comma-separated entries (see [`write_entry`]).
pub fn update_frame(server: &str, seq: u64, part: Option<(u32, u32)>, entries: &[u8]) -> Vec<u8> {
    let mut out = super::pool::take();
    out.extend_from_slice(br#"{"header":{"kind":"directory","server":"#);
    serde_json::to_writer(&mut out, server).expect("a string");
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(seq.to_string().as_bytes());
    if let Some((part, parts)) = part {
        out.extend_from_slice(format!(r#","part":{part},"parts":{parts}"#).as_bytes());
    }
    out.extend_from_slice(br#"},"data":["#);
    out.extend_from_slice(entries);
    out.extend_from_slice(b"]}");
    out
}

/// Ask the peer for a full snapshot.
pub fn resync_frame() -> Vec<u8> {
    let mut out = super::pool::take();
    out.extend_from_slice(br#"{"header":{"kind":"directory.resync"}}"#);
    out
}

/// Refuse (some of) update `seq`.
pub fn error_frame(seq: Option<u64>, error: &ErrorBody) -> Vec<u8> {
    #[derive(Serialize)]
    struct H {
        kind: &'static str,
        status: Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    }
    #[derive(Serialize)]
    struct F<'a> {
        header: H,
        data: &'a ErrorBody,
    }
    to_body(&F {
        header: H {
            kind: "directory.error",
            status: Status::Error,
            seq,
        },
        data: error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, usize, Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (user, n, status)) in list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_entry(&mut out, user, *n, *status);
        }
        out
    }

    #[test]
    fn updates_round_trip() {
        let body = update_frame(
            "b",
            1,
            Some((1, 2)),
            &entries(&[("alice", 1, None), ("bob", 2, Some("away \"x\""))]),
        );
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"header":{"kind":"directory","server":"b","seq":1,"part":1,"parts":2},"data":[["alice",1],["bob",2,"away \"x\""]]}"#
        );
        let frame = parse_directory_frame(&body).unwrap().unwrap();
        assert_eq!(
            frame,
            DirectoryFrame::Update {
                server: "b".into(),
                seq: 1,
                part: Some((1, 2)),
                entries: vec![
                    DirEntry {
                        user: "alice".into(),
                        connections: 1,
                        status: None
                    },
                    DirEntry {
                        user: "bob".into(),
                        connections: 2,
                        status: Some("away \"x\"".into())
                    },
                ],
            }
        );
        let both = entries(&[("alice", 1, None), ("bob", 2, Some("away \"x\""))]);
        assert!(body.len() <= update_overhead("b") + both.len());
        let delta = update_frame("b", 3, None, &entries(&[("alice", 0, None)]));
        assert!(matches!(
            parse_directory_frame(&delta),
            Some(Ok(DirectoryFrame::Update {
                part: None,
                seq: 3,
                ..
            }))
        ));
        assert_eq!(
            parse_directory_frame(&resync_frame()),
            Some(Ok(DirectoryFrame::Resync))
        );
        let error = ErrorBody::new(ErrorCode::ForgedOrigin, "no");
        assert_eq!(
            String::from_utf8(error_frame(Some(3), &error)).unwrap(),
            r#"{"header":{"kind":"directory.error","status":"error","seq":3},"data":{"error":"no","code":"forged_origin"}}"#
        );
        assert_eq!(
            parse_directory_frame(&error_frame(Some(3), &error)),
            Some(Ok(DirectoryFrame::Error {
                seq: Some(3),
                error: "no".into(),
                code: "forged_origin".into()
            }))
        );
    }

    #[test]
    fn other_frames_and_bad_ones() {
        assert!(
            parse_directory_frame(br#"{"header":{"kind":"ack","msg":"1","status":"ok"}}"#)
                .is_none()
        );
        assert!(parse_directory_frame(b"not json").is_none());
        let bad = |text: &str| {
            parse_directory_frame(text.as_bytes())
                .expect("a directory frame")
                .unwrap_err()
        };
        assert_eq!(
            bad(r#"{"header":{"kind":"directory","server":"b"},"data":[]}"#).error,
            "a directory update needs server and seq"
        );
        assert_eq!(
            bad(r#"{"header":{"kind":"directory","server":"b","seq":1,"part":3,"parts":2},"data":[]}"#).code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            bad(r#"{"header":{"kind":"directory","server":"b","seq":1},"data":[["a",1,"s","x"]]}"#)
                .code,
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            bad(r#"{"header":{"kind":"directory","server":"b","seq":1,"junk":1},"data":[]}"#).code,
            ErrorCode::InvalidMessage
        );
        let many = vec![r#"["u",1]"#; MAX_ENTRIES_PER_FRAME + 1].join(",");
        let text =
            format!(r#"{{"header":{{"kind":"directory","server":"b","seq":1}},"data":[{many}]}}"#);
        assert_eq!(bad(&text).code, ErrorCode::LimitReached);
    }

    #[test]
    fn entries_speak_only_for_the_peer() {
        let e = |user: &str| DirEntry {
            user: user.into(),
            connections: 1,
            status: None,
        };
        // Servers the receiving server knows: itself (a) and its peers (b, c).
        let known = |s: &str| matches!(s, "a" | "b" | "c");
        let check = |entry: DirEntry| entry.check("b", known);
        assert!(check(e("bob")).is_ok());
        let forged = check(e("bob@c")).unwrap_err();
        assert_eq!(forged.code, ErrorCode::ForgedOrigin);
        assert_eq!(
            forged.error,
            "peer \"b\" may announce only its own users, not \"bob@c\""
        );
        assert_eq!(check(e("bob@a")).unwrap_err().code, ErrorCode::ForgedOrigin);
        // An `@` that names no known server is part of b's user's name (a token's `sub`).
        assert!(check(e("alice@example.com")).is_ok());
        assert_eq!(
            check(e("alice@example.com@c")).unwrap_err().code,
            ErrorCode::ForgedOrigin
        );
        assert_eq!(check(e("")).unwrap_err().code, ErrorCode::InvalidMessage);
        let long = DirEntry {
            status: Some("x".repeat(MAX_STATUS_TEXT + 1)),
            ..e("bob")
        };
        assert_eq!(check(long).unwrap_err().code, ErrorCode::InvalidMessage);
    }
}
