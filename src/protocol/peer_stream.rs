//! Client-to-client streams across a peer link (PROTOCOL.md §5, "Streams across servers"): the
//! frames two linked servers that negotiated `stream` exchange to dial a user of the other, answer
//! the dial, and carry a stream's data, credit and end.
//!
//! Every frame names a stream by the id its *sender* gave it (each server numbers its own
//! streams); the receiver keeps which of its streams that is. An accept names both: the
//! accepter's id for the stream, and the dialler's id for the dial it answers.
//!
//! - `{"header":{"kind":"stream.dial","stream":X,"from":"alice","to":"bob","name":"s1","window":W}}`
//! - `{"header":{"kind":"stream.accept","stream":Y,"dial":X,"window":W}}`
//! - `{"header":{"kind":"stream.refuse","dial":X},"data":{"error":"…","code":"dial_refused"}}`
//! - `{"header":{"kind":"stream","stream":S},"data":D}`, `{…,"credit":C}`, `{…,"end":true}` (an
//!   end may carry `"data":{"error","code"}`: why the sender's side ended it)
//!
//! Pure: who may dial whom and the credit are the router's (`router/streams/peer.rs`).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ErrorCode;
use super::error::ErrorBody;
use super::message::parse_json;
use super::stream::StreamOp;
use super::{pool, write};

/// The prefix of every stream frame this server writes on a link: the cheap test.
const PREFIX: &[u8] = br#"{"header":{"kind":"stream"#;

/// A stream frame from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerStream<'a> {
    /// A user of the peer dials a user of this server.
    Dial {
        /// The peer's id for the dial (and the stream, if accepted).
        stream: u64,
        /// The dialler, a user of the peer.
        from: String,
        /// The user asked, as the dialler named them.
        to: String,
        /// The dialler's name for the stream.
        name: String,
        /// The dialling server's window.
        window: u64,
    },
    /// The peer's user accepted dial `dial` (this server's id); `stream` is the peer's id.
    Accept {
        /// The peer's id for the stream.
        stream: u64,
        /// This server's id of the dial.
        dial: u64,
        /// The window both ends use (at most the one offered).
        window: u64,
    },
    /// Dial `dial` (this server's id) failed on the peer.
    Refuse {
        /// This server's id of the dial.
        dial: u64,
        /// Why.
        error: ErrorBody,
    },
    /// Data or credit on the peer's stream `stream`.
    Frame {
        /// The peer's id.
        stream: u64,
        /// [`StreamOp::Data`] or [`StreamOp::Credit`].
        op: PeerOp<'a>,
    },
    /// The peer's side ended stream (or dial) `stream`, with why if it was not a plain end.
    End {
        /// The peer's id.
        stream: u64,
        /// Why.
        error: Option<ErrorBody>,
    },
}

/// Data or credit from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOp<'a> {
    /// The JSON text of `data`.
    Data(Cow<'a, str>),
    /// More credit for the writer at this end.
    Credit(u64),
}

impl PeerStream<'_> {
    /// The frame, owning its data.
    pub fn into_owned(self) -> PeerStream<'static> {
        match self {
            PeerStream::Dial {
                stream,
                from,
                to,
                name,
                window,
            } => PeerStream::Dial {
                stream,
                from,
                to,
                name,
                window,
            },
            PeerStream::Accept {
                stream,
                dial,
                window,
            } => PeerStream::Accept {
                stream,
                dial,
                window,
            },
            PeerStream::Refuse { dial, error } => PeerStream::Refuse { dial, error },
            PeerStream::Frame { stream, op } => PeerStream::Frame {
                stream,
                op: match op {
                    PeerOp::Data(d) => PeerOp::Data(Cow::Owned(d.into_owned())),
                    PeerOp::Credit(c) => PeerOp::Credit(c),
                },
            },
            PeerStream::End { stream, error } => PeerStream::End { stream, error },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame<'a> {
    header: RawHeader,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde on the error path, for the exact error
struct Owned {
    header: RawHeader,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    kind: String,
    #[serde(default)]
    stream: Option<u64>,
    #[serde(default)]
    dial: Option<u64>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    window: Option<u64>,
    #[serde(default)]
    credit: Option<u64>,
    #[serde(default)]
    end: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawError {
    error: String,
    code: String,
}

fn invalid(text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidMessage, text)
}

/// A peer's error code as ours (one this server does not know becomes `stream_closed`).
fn code(name: &str) -> ErrorCode {
    ErrorCode::ALL
        .into_iter()
        .find(|c| c.as_str() == name)
        .unwrap_or(ErrorCode::StreamClosed)
}

fn error_of(data: Option<&RawValue>) -> Result<Option<ErrorBody>, ErrorBody> {
    let Some(raw) = data else { return Ok(None) };
    let e: RawError =
        serde_json::from_str(raw.get()).map_err(|e| invalid(format!("bad stream error: {e}")))?;
    Ok(Some(ErrorBody::new(code(&e.code), e.error)))
}

/// Whether `body` is a stream frame of a peer (its `header.kind` is `stream` or starts with
/// `stream.`): `None` if not (another peer frame), else the frame or why it is malformed.
pub fn parse_peer_stream(body: &[u8]) -> Option<Result<PeerStream<'_>, ErrorBody>> {
    let ours = |kind: String| super::peer::of_family(&kind, "stream");
    if !body.starts_with(PREFIX) && !super::peer::frame_kind(body).is_some_and(ours) {
        return None;
    }
    Some(parse(body))
}

fn parse(body: &[u8]) -> Result<PeerStream<'_>, ErrorBody> {
    let raw: RawFrame = match std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
    {
        Some(raw) => raw,
        None => {
            // The full path, for its exact error.
            parse_json::<Owned>(body)?;
            return Err(invalid("a stream frame that could not be read"));
        }
    };
    let h = raw.header;
    let named = |what: &str| invalid(format!("a {:?} frame needs {what}", h.kind));
    match h.kind.as_str() {
        "stream.dial" => {
            let (Some(stream), Some(from), Some(to), Some(name), Some(window)) = (
                h.stream,
                h.from.clone(),
                h.to.clone(),
                h.name.clone(),
                h.window,
            ) else {
                return Err(named("stream, from, to, name and window"));
            };
            if raw.data.is_some() || h.dial.is_some() || h.credit.is_some() || h.end.is_some() {
                return Err(invalid("a dial carries no data, dial, credit or end"));
            }
            Ok(PeerStream::Dial {
                stream,
                from,
                to,
                name,
                window,
            })
        }
        "stream.accept" => match (h.stream, h.dial, h.window) {
            (Some(stream), Some(dial), Some(window)) => Ok(PeerStream::Accept {
                stream,
                dial,
                window,
            }),
            _ => Err(named("stream, dial and window")),
        },
        "stream.refuse" => match (h.dial, error_of(raw.data)?) {
            (Some(dial), Some(error)) => Ok(PeerStream::Refuse { dial, error }),
            _ => Err(named("dial and the error as data")),
        },
        "stream" => {
            let Some(stream) = h.stream else {
                return Err(named("stream"));
            };
            match (raw.data, h.credit, h.end) {
                (data, None, Some(true)) => Ok(PeerStream::End {
                    stream,
                    error: error_of(data)?,
                }),
                (Some(data), None, None) => {
                    super::validate::check_at(data.get(), 1)
                        .map_err(|e| invalid(format!("bad stream data: {e}")))?;
                    Ok(PeerStream::Frame {
                        stream,
                        op: PeerOp::Data(Cow::Borrowed(data.get())),
                    })
                }
                (None, Some(credit), None) if credit > 0 => Ok(PeerStream::Frame {
                    stream,
                    op: PeerOp::Credit(credit),
                }),
                _ => Err(invalid(
                    "a stream frame carries one of data, a credit of at least 1, or end",
                )),
            }
        }
        other => Err(invalid(format!("{other:?} is not a stream frame"))),
    }
}

fn head(out: &mut Vec<u8>, kind: &str) {
    out.extend_from_slice(br#"{"header":{"kind":""#);
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
}

fn field(out: &mut Vec<u8>, name: &str, n: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(n.to_string().as_bytes());
}

fn text(out: &mut Vec<u8>, name: &str, s: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write::string(out, s);
}

fn error_data(out: &mut Vec<u8>, error: &ErrorBody) {
    out.extend_from_slice(br#","data":{"error":"#);
    write::string(out, &error.error);
    out.extend_from_slice(br#","code":""#);
    out.extend_from_slice(error.code.as_str().as_bytes());
    out.extend_from_slice(b"\"}");
}

/// Dial `to` (a user of the peer) for `from` (a user of this server) as this server's `stream`.
pub fn dial_frame(stream: u64, from: &str, to: &str, name: &str, window: u64) -> Vec<u8> {
    let mut out = pool::take();
    head(&mut out, "stream.dial");
    field(&mut out, "stream", stream);
    text(&mut out, "from", from);
    text(&mut out, "to", to);
    text(&mut out, "name", name);
    field(&mut out, "window", window);
    out.extend_from_slice(b"}}");
    out
}

/// The peer's dial `dial` is accepted as this server's `stream`, with `window`.
pub fn accept_frame(stream: u64, dial: u64, window: u64) -> Vec<u8> {
    let mut out = pool::take();
    head(&mut out, "stream.accept");
    field(&mut out, "stream", stream);
    field(&mut out, "dial", dial);
    field(&mut out, "window", window);
    out.extend_from_slice(b"}}");
    out
}

/// The peer's dial `dial` failed here.
pub fn refuse_frame(dial: u64, error: &ErrorBody) -> Vec<u8> {
    let mut out = pool::take();
    head(&mut out, "stream.refuse");
    field(&mut out, "dial", dial);
    out.push(b'}');
    error_data(&mut out, error);
    out.push(b'}');
    out
}

/// Data (its JSON text) or credit on this server's `stream`.
pub fn op_frame(stream: u64, op: StreamOp<'_>) -> Vec<u8> {
    let mut out = pool::take();
    head(&mut out, "stream");
    field(&mut out, "stream", stream);
    match op {
        StreamOp::Data(data) => {
            out.reserve(data.len() + 12);
            out.extend_from_slice(br#"},"data":"#);
            out.extend_from_slice(data.as_bytes());
            out.push(b'}');
        }
        StreamOp::Credit(credit) => {
            field(&mut out, "credit", credit);
            out.extend_from_slice(b"}}");
        }
        StreamOp::End => {
            out.extend_from_slice(br#","end":true}}"#);
        }
    }
    out
}

/// This server's side ended `stream` (or withdrew dial `stream`), with why.
pub fn end_frame(stream: u64, error: Option<&ErrorBody>) -> Vec<u8> {
    let mut out = pool::take();
    head(&mut out, "stream");
    field(&mut out, "stream", stream);
    out.extend_from_slice(br#","end":true}"#);
    if let Some(error) = error {
        error_data(&mut out, error);
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(body: Vec<u8>) -> PeerStream<'static> {
        parse_peer_stream(&body).unwrap().unwrap().into_owned()
    }

    #[test]
    fn every_frame_round_trips() {
        assert_eq!(
            round(dial_frame(7, "alice", "bob", "s\"1", 4096)),
            PeerStream::Dial {
                stream: 7,
                from: "alice".into(),
                to: "bob".into(),
                name: "s\"1".into(),
                window: 4096,
            }
        );
        assert_eq!(
            round(accept_frame(3, 7, 1024)),
            PeerStream::Accept {
                stream: 3,
                dial: 7,
                window: 1024
            }
        );
        let e = ErrorBody::new(ErrorCode::DialRefused, "no");
        assert_eq!(
            round(refuse_frame(7, &e)),
            PeerStream::Refuse { dial: 7, error: e }
        );
        assert_eq!(
            round(op_frame(3, StreamOp::Data(r#"{"a":[1]}"#))),
            PeerStream::Frame {
                stream: 3,
                op: PeerOp::Data(r#"{"a":[1]}"#.into())
            }
        );
        assert_eq!(
            round(op_frame(3, StreamOp::Credit(9))),
            PeerStream::Frame {
                stream: 3,
                op: PeerOp::Credit(9)
            }
        );
        assert_eq!(
            round(op_frame(3, StreamOp::End)),
            PeerStream::End {
                stream: 3,
                error: None
            }
        );
        let e = ErrorBody::new(ErrorCode::StreamClosed, "gone");
        assert_eq!(
            round(end_frame(3, Some(&e))),
            PeerStream::End {
                stream: 3,
                error: Some(e)
            }
        );
    }

    #[test]
    fn other_frames_are_not_stream_frames_and_bad_ones_get_exact_errors() {
        assert!(parse_peer_stream(br#"{"header":{"kind":"directory"}}"#).is_none());
        assert!(parse_peer_stream(br#"{"header":{"msg":"1"}}"#).is_none());
        // Another key order is still a stream frame.
        let f = parse_peer_stream(br#"{"data":1,"header":{"stream":2,"kind":"stream"}}"#);
        assert!(matches!(f, Some(Ok(PeerStream::Frame { stream: 2, .. }))));
        let bad = |body: &str| parse_peer_stream(body.as_bytes()).unwrap().unwrap_err();
        assert_eq!(
            bad(r#"{"header":{"kind":"stream.dial","stream":1}}"#).error,
            r#"a "stream.dial" frame needs stream, from, to, name and window"#
        );
        assert_eq!(
            bad(r#"{"header":{"kind":"stream","stream":1,"credit":0}}"#).error,
            "a stream frame carries one of data, a credit of at least 1, or end"
        );
        assert_eq!(
            bad(r#"{"header":{"kind":"stream.other"}}"#).error,
            r#""stream.other" is not a stream frame"#
        );
        assert_eq!(
            bad(r#"{"header":{"kind":"stream","stream":1,"x":1}}"#).code,
            ErrorCode::InvalidMessage
        );
        // An unknown code in a peer's error is a plain close.
        let f = round(br#"{"header":{"kind":"stream","stream":1,"end":true},"data":{"error":"e","code":"what"}}"#.to_vec());
        assert_eq!(
            f,
            PeerStream::End {
                stream: 1,
                error: Some(ErrorBody::new(ErrorCode::StreamClosed, "e"))
            }
        );
    }
}
