//! Server-to-server frames: the handshake after `identify {type:"server"}`, messages a server sends
//! a peer (`scope:"server"`, numbered by `msg`), and the acknowledgement the peer returns once its
//! handler has dealt with one. Pure types, like [`super::message`]: a message and an ok ack in
//! their common shape are read by the fast lane (`scan/peer.rs`) and written by hand
//! ([`super::write`]); every other frame, and every refusal, takes serde.
//!
//! A *delivery* (`scope:"users"`) is a message for users of the receiving server, pushed to
//! their connections without a handler: what a `sendClients` naming `bob@node-b` becomes, one
//! frame per destination server (at most [`MAX_DELIVER_USERS`] users each).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{ErrorBody, ErrorCode};
use super::message::{Payload, PayloadRef, Sender, Status, parse_json, to_body, validate_type};

/// What happened to a message at one peer server, as reported to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerReport {
    /// ok: the peer's handler took it; error: see `code`.
    pub status: Status,
    /// Users the peer delivered to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<Vec<String>>,
    /// Users with no connection on the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<Vec<String>>,
    /// Why not, for errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Stable code, for errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What the servers the peer sent it on to did, if its handler did so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<ServerReports>,
    /// Users on further servers that could not be reached (`{"carol@c":"peer_unreachable"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<UserFailures>,
}

impl ServerReport {
    /// A failure with this code and text.
    pub fn failed(code: ErrorCode, error: impl Into<String>) -> Self {
        ServerReport {
            status: Status::Error,
            delivered: None,
            offline: None,
            error: Some(error.into()),
            code: Some(code.as_str().to_string()),
            servers: None,
            failed: None,
        }
    }
}

/// Per-server results of a `sendServers`.
pub type ServerReports = BTreeMap<String, ServerReport>;

/// Users a `sendClients` could not reach, as it named them, with the error code of each
/// (`{"bob@node-b":"peer_unreachable"}`).
pub type UserFailures = BTreeMap<String, String>;

/// Most users one delivery frame may name; a `sendClients` naming more users of one server
/// sends that server several frames.
pub const MAX_DELIVER_USERS: usize = 1000;

/// A delivery from a peer: push the payload to these users of this server (no handler).
#[derive(Debug, Clone)]
pub struct PeerDelivery<'a> {
    /// The peer's number for it, echoed in the ack.
    pub msg: Cow<'a, str>,
    /// Who it is from (the server must be the peer itself).
    pub from: Sender,
    /// The users, by their name on this server.
    pub users: Vec<String>,
    /// What to push.
    pub payload: PayloadRef<'a>,
    /// `"store":true,"origin":"<id>"` (store-and-forward, feature `store`): keep a copy for
    /// each user with no connection and ack only once it is durable; the sender's durable id
    /// of the delivery, the same on every redelivery.
    pub store: Option<u64>,
}

/// A message from a peer, borrowed from its frame where the fast lane read it.
#[derive(Debug, Clone)]
pub struct PeerMessage<'a> {
    /// The peer's number for it, echoed in the ack.
    pub msg: Cow<'a, str>,
    /// Who it is from (the server must be the peer itself).
    pub from: Sender,
    /// Servers it has crossed, this one included.
    pub hops: u32,
    /// What to dispatch.
    pub payload: PayloadRef<'a>,
}

/// A peer's acknowledgement of a message we sent.
#[derive(Debug, Clone)]
pub struct PeerAck<'a> {
    /// Our number for the message.
    pub msg: Cow<'a, str>,
    /// The peer's report (with the reports of servers it sent the message on to, if any).
    pub report: ServerReport,
    /// An ok ack's data: what the peer's handler answered with (JSON text; `None` for none or
    /// `null`). Passed on only to a `sendServers` that asked for replies.
    pub data: Option<Cow<'a, str>>,
}

/// Any frame on a server-to-server connection.
#[derive(Debug, Clone)]
pub enum PeerFrame<'a> {
    /// Initiator ← responder: the responder's nonce and proof.
    Challenge {
        /// The responder's name.
        server: String,
        /// The responder's nonce.
        nonce: String,
        /// The responder's proof.
        proof: String,
    },
    /// Responder ← initiator: the initiator's proof.
    Proof(String),
    /// Initiator ← responder: the link is up.
    Accepted {
        /// The responder's name.
        server: String,
        /// The features it accepted, when the initiator offered some (`super::features`).
        features: Option<Vec<String>>,
    },
    /// A refusal (handshake) or an error about the last frame.
    Error(ErrorBody),
    /// A message to dispatch.
    Message(PeerMessage<'a>),
    /// An acknowledgement.
    Ack(PeerAck<'a>),
    /// A federation directory frame (`super::directory`).
    Directory(super::directory::DirectoryFrame),
    /// A client-to-client stream frame (`super::peer_stream`).
    Stream(super::peer_stream::PeerStream<'a>),
    /// Users of this server to push a payload to.
    Deliver(PeerDelivery<'a>),
}

impl PeerFrame<'_> {
    /// What kind of frame this is, for log lines: never its nonce, proof or data.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerFrame::Challenge { .. } => "challenge",
            PeerFrame::Proof(_) => "proof",
            PeerFrame::Accepted { .. } => "accepted",
            PeerFrame::Error(_) => "error",
            PeerFrame::Message(_) => "message",
            PeerFrame::Ack(_) => "ack",
            PeerFrame::Directory(_) => "directory",
            PeerFrame::Stream(_) => "stream",
            PeerFrame::Deliver(_) => "deliver",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeerFrame {
    header: RawPeerHeader,
    #[serde(default)]
    payload: Option<Payload>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeerHeader {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    from: Option<Sender>,
    #[serde(default)]
    hops: Option<u32>,
    #[serde(default)]
    proof: Option<String>,
    /// Sent with the data of a `reply` answer; accepted whatever it is, not used.
    #[serde(default, rename = "type")]
    _kind_of: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    delivered: Option<Vec<String>>,
    #[serde(default)]
    offline: Option<Vec<String>>,
    #[serde(default)]
    servers: Option<ServerReports>,
    #[serde(default)]
    failed: Option<UserFailures>,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    origin: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeData {
    server: String,
    nonce: String,
    proof: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptedData {
    server: String,
    #[serde(default)]
    features: Option<Vec<String>>,
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

fn data_as<T: serde::de::DeserializeOwned>(data: &Option<Box<RawValue>>) -> Result<T, ErrorBody> {
    let text = data.as_deref().map_or("null", RawValue::get);
    serde_json::from_str(text).map_err(|e| invalid(format!("bad data: {e}")))
}

/// The `header.kind` a peer frame names, if it parses that far (which family of frames it is).
pub(super) fn frame_kind(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        header: ProbeHeader,
    }
    #[derive(Deserialize)]
    struct ProbeHeader {
        #[serde(default)]
        kind: Option<String>,
    }
    serde_json::from_slice::<Probe>(body).ok()?.header.kind
}

/// Whether `kind` is `family` or `family.` something.
pub(super) fn of_family(kind: &str, family: &str) -> bool {
    kind.strip_prefix(family)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Parse a frame from a peer server: the fast lane for a message or an ok ack in its common
/// shape, serde for everything else.
pub fn parse_peer_frame(body: &[u8]) -> Result<PeerFrame<'_>, ErrorBody> {
    if let Ok(text) = std::str::from_utf8(body)
        && let Some(frame) = super::scan::peer::peer_frame(text)
    {
        return Ok(frame);
    }
    if let Some(frame) = super::peer_stream::parse_peer_stream(body) {
        return frame.map(PeerFrame::Stream);
    }
    parse_peer_frame_full(body)
}

/// [`parse_peer_frame`] by serde alone: the exact error for every frame it refuses.
pub fn parse_peer_frame_full(body: &[u8]) -> Result<PeerFrame<'static>, ErrorBody> {
    if let Some(frame) = super::directory::parse_directory_frame(body) {
        return frame.map(PeerFrame::Directory);
    }
    if let Some(frame) = super::peer_stream::parse_peer_stream(body) {
        return frame.map(|f| PeerFrame::Stream(f.into_owned()));
    }
    let raw: RawPeerFrame = parse_json(body)?;
    let h = raw.header;
    if let Some(proof) = h.proof {
        return Ok(PeerFrame::Proof(proof));
    }
    if (h.users.is_some() || h.store.is_some() || h.origin.is_some())
        && h.scope.as_deref() != Some("users")
    {
        return Err(invalid("users goes with scope \"users\" only"));
    }
    match (h.kind.as_deref(), h.status, h.scope.as_deref()) {
        (None, None, Some("users")) => {
            let (Some(msg), Some(from), Some(users), Some(payload)) =
                (h.msg, h.from, h.users, raw.payload)
            else {
                return Err(invalid("a delivery needs msg, from, users and payload"));
            };
            if h.hops.is_some() {
                return Err(invalid("a delivery goes no further: it has no hops"));
            }
            let store = match (h.store, h.origin) {
                (None, None) => None,
                (Some(true), Some(origin)) => Some(origin.parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "a stored delivery's origin {origin:?} is not an id"
                    ))
                })?),
                _ => {
                    return Err(invalid(
                        "a stored delivery carries \"store\":true with its \"origin\" id",
                    ));
                }
            };
            validate_type(&payload.kind)?;
            Ok(PeerFrame::Deliver(PeerDelivery {
                msg: Cow::Owned(msg),
                from,
                users,
                payload: payload.into_ref(),
                store,
            }))
        }
        (None, None, Some("server")) => {
            let (Some(msg), Some(from), Some(payload)) = (h.msg, h.from, raw.payload) else {
                return Err(invalid("a server message needs msg, from and payload"));
            };
            validate_type(&payload.kind)?;
            Ok(PeerFrame::Message(PeerMessage {
                msg: Cow::Owned(msg),
                from,
                hops: h.hops.unwrap_or(1),
                payload: payload.into_ref(),
            }))
        }
        (Some("ack"), Some(status), None) => {
            let msg = h.msg.ok_or_else(|| invalid("an ack needs msg"))?;
            let (error, code, data) = match status {
                Status::Error => {
                    let e: ErrorData = data_as(&raw.data)?;
                    (Some(e.error), Some(e.code), None)
                }
                Status::Ok => {
                    let data = raw.data.map(|d| Box::<str>::from(d).into_string());
                    (None, None, data.filter(|d| d != "null").map(Cow::Owned))
                }
            };
            Ok(PeerFrame::Ack(PeerAck {
                msg: Cow::Owned(msg),
                data,
                report: ServerReport {
                    status,
                    delivered: h.delivered,
                    offline: h.offline,
                    error,
                    code,
                    servers: h.servers,
                    failed: h.failed,
                },
            }))
        }
        (Some("challenge"), Some(Status::Ok), None) => {
            let c: ChallengeData = data_as(&raw.data)?;
            Ok(PeerFrame::Challenge {
                server: c.server,
                nonce: c.nonce,
                proof: c.proof,
            })
        }
        (Some("reply"), Some(Status::Ok), None) => {
            let a: AcceptedData = data_as(&raw.data)?;
            Ok(PeerFrame::Accepted {
                server: a.server,
                features: a.features,
            })
        }
        (Some("reply"), Some(Status::Error), None) => {
            let e: ErrorData = data_as(&raw.data)?;
            Ok(PeerFrame::Error(ErrorBody::new(
                peer_code(&e.code),
                format!("{} ({})", e.error, e.code),
            )))
        }
        _ => Err(invalid("not a server-to-server frame")),
    }
}

/// Map a peer's error code string back to ours (unknown ones become `internal_error`).
fn peer_code(code: &str) -> ErrorCode {
    match code {
        "auth_failed" => ErrorCode::AuthFailed,
        "bad_identify_type" => ErrorCode::BadIdentifyType,
        "invalid_message" => ErrorCode::InvalidMessage,
        _ => ErrorCode::InternalError,
    }
}

#[derive(Serialize)]
struct IdentifyFrame<'a> {
    header: IdentifyHeader<'a>,
}

#[derive(Serialize)]
struct IdentifyHeader<'a> {
    identify: ServerIdentify<'a>,
}

#[derive(Serialize)]
struct ServerIdentify<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    nonce: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<&'a [&'a str]>,
}

/// Initiator → responder: `identify` as a server.
pub fn identify_frame(name: &str, nonce: &str) -> Vec<u8> {
    identify_frame_offering(name, nonce, None)
}

/// [`identify_frame`] offering `features` (none: the original frame, for a responder that
/// refused an offer before).
pub fn identify_frame_offering(name: &str, nonce: &str, features: Option<&[&str]>) -> Vec<u8> {
    to_body(&IdentifyFrame {
        header: IdentifyHeader {
            identify: ServerIdentify {
                kind: "server",
                name,
                nonce,
                features,
            },
        },
    })
}

#[derive(Serialize)]
struct KindHeader<'a> {
    status: Status,
    kind: &'a str,
}

#[derive(Serialize)]
struct WithData<'a, D: Serialize> {
    header: KindHeader<'a>,
    data: D,
}

#[derive(Serialize)]
struct Challenge<'a> {
    server: &'a str,
    nonce: &'a str,
    proof: &'a str,
}

/// Responder → initiator: the challenge.
pub fn challenge_frame(server: &str, nonce: &str, proof: &str) -> Vec<u8> {
    to_body(&WithData {
        header: KindHeader {
            status: Status::Ok,
            kind: "challenge",
        },
        data: Challenge {
            server,
            nonce,
            proof,
        },
    })
}

/// Initiator → responder: the proof.
pub fn proof_frame(proof: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct H<'a> {
        proof: &'a str,
    }
    #[derive(Serialize)]
    struct F<'a> {
        header: H<'a>,
    }
    to_body(&F {
        header: H { proof },
    })
}

/// Responder → initiator: the link is up.
pub fn accepted_frame(server: &str) -> Vec<u8> {
    accepted_frame_with(server, None)
}

/// [`accepted_frame`] naming the features accepted of those the initiator offered (only when
/// it offered some: an initiator that offered none reads the original frame).
pub fn accepted_frame_with(server: &str, features: Option<&[&str]>) -> Vec<u8> {
    #[derive(Serialize)]
    struct D<'a> {
        server: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        features: Option<&'a [&'a str]>,
    }
    to_body(&WithData {
        header: KindHeader {
            status: Status::Ok,
            kind: "reply",
        },
        data: D { server, features },
    })
}

/// A message to a peer:
/// `{"header":{"scope":"server","msg":M,"from":F,"hops":H},"payload":{"type":T,"data":D}}`.
pub fn message_frame(msg: u64, from: &Sender, hops: u32, payload: &PayloadRef<'_>) -> Vec<u8> {
    super::write::peer_message(msg, from, hops, payload)
}

/// A delivery to users of a peer:
/// `{"header":{"scope":"users","msg":M,"from":F,"users":[..]},"payload":{"type":T,"data":D}}`,
/// with `"store":true,"origin":"<id>"` after `users` for a stored one (`store`: its durable id).
pub fn deliver_frame<'u>(
    msg: u64,
    from: &Sender,
    users: impl IntoIterator<Item = &'u str>,
    payload: &PayloadRef<'_>,
    store: Option<u64>,
) -> Vec<u8> {
    super::write::peer_deliver(msg, from, users, payload, store)
}

#[derive(Serialize)]
struct AckHeader<'a> {
    kind: &'static str,
    msg: &'a str,
    status: Status,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind_of: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offline: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    servers: Option<&'a ServerReports>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<&'a UserFailures>,
}

#[derive(Serialize)]
struct AckFrame<'a, D: Serialize + ?Sized> {
    header: AckHeader<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

/// What an ok ack carries.
#[derive(Debug, Default)]
pub struct AckContent<'a> {
    /// The payload type of a reply.
    pub kind_of: Option<&'a str>,
    /// The reply's data (JSON text, checked when it came in).
    pub data: Option<&'a str>,
    /// Users delivered to.
    pub delivered: Option<&'a [String]>,
    /// Users offline.
    pub offline: Option<&'a [String]>,
    /// Results of a further sendServers.
    pub servers: Option<&'a ServerReports>,
    /// Users on further servers that could not be reached.
    pub failed: Option<&'a UserFailures>,
}

/// An ok acknowledgement:
/// `{"header":{"kind":"ack","msg":M,"status":"ok","type":T,"delivered":[..],"offline":[..],"servers":{..}},"data":D}`
/// (each of `type` … `data` only when there is one).
pub fn ack_ok(msg: &str, content: &AckContent<'_>) -> Vec<u8> {
    super::write::peer_ack_ok(msg, content)
}

/// An error acknowledgement.
pub fn ack_error<E: Serialize + ?Sized>(msg: &str, error: &E) -> Vec<u8> {
    to_body(&AckFrame {
        header: AckHeader {
            kind: "ack",
            msg,
            status: Status::Error,
            kind_of: None,
            delivered: None,
            offline: None,
            servers: None,
            failed: None,
        },
        data: Some(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse by both paths; they must give the same value.
    fn round(body: Vec<u8>) -> PeerFrame<'static> {
        let full = parse_peer_frame_full(&body).unwrap();
        let fast = parse_peer_frame(&body).unwrap();
        assert_eq!(format!("{fast:?}"), format!("{full:?}"));
        full
    }

    #[test]
    fn handshake_frames_round_trip() {
        let PeerFrame::Challenge {
            server,
            nonce,
            proof,
        } = round(challenge_frame("b", "n", "p"))
        else {
            panic!()
        };
        assert_eq!(
            (server.as_str(), nonce.as_str(), proof.as_str()),
            ("b", "n", "p")
        );
        assert!(matches!(round(proof_frame("xyz")), PeerFrame::Proof(p) if p == "xyz"));
        assert!(
            matches!(round(accepted_frame("b")), PeerFrame::Accepted { server, features: None } if server == "b")
        );
        assert_eq!(
            String::from_utf8(accepted_frame_with("b", Some(&["compress"]))).unwrap(),
            r#"{"header":{"status":"ok","kind":"reply"},"data":{"server":"b","features":["compress"]}}"#
        );
        assert!(matches!(
            round(accepted_frame_with("b", Some(&["compress"]))),
            PeerFrame::Accepted { features: Some(f), .. } if f == ["compress"]
        ));
        assert_eq!(
            String::from_utf8(identify_frame_offering("a", "n1", Some(&["compress"]))).unwrap(),
            r#"{"header":{"identify":{"type":"server","name":"a","nonce":"n1","features":["compress"]}}}"#
        );
        assert_eq!(
            String::from_utf8(identify_frame("a", "n1")).unwrap(),
            r#"{"header":{"identify":{"type":"server","name":"a","nonce":"n1"}}}"#
        );
    }

    #[test]
    fn messages_and_acks_round_trip() {
        let from = Sender {
            user: Some("alice".into()),
            server: "a".into(),
            handler: None,
            info: None,
        };
        let payload = Payload::new(
            "chat",
            Some(RawValue::from_string("{\"t\":1}".into()).unwrap()),
        );
        let body = message_frame(7, &from, 1, &payload.as_ref());
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"header":{"scope":"server","msg":"7","from":{"user":"alice","server":"a"},"hops":1},"payload":{"type":"chat","data":{"t":1}}}"#
        );
        let PeerFrame::Message(m) = round(body) else {
            panic!()
        };
        assert_eq!((&*m.msg, m.hops, m.from), ("7", 1, from));

        let delivered = vec!["bob".to_string()];
        let content = AckContent {
            delivered: Some(&delivered),
            offline: Some(&[]),
            ..AckContent::default()
        };
        let PeerFrame::Ack(ack) = round(ack_ok("7", &content)) else {
            panic!()
        };
        assert_eq!(ack.report.status, Status::Ok);
        assert_eq!(ack.report.delivered, Some(delivered));
        let PeerFrame::Ack(ack) = round(ack_error(
            "8",
            &ErrorBody::new(ErrorCode::UnknownType, "no"),
        )) else {
            panic!()
        };
        assert_eq!(
            ack.report,
            ServerReport::failed(ErrorCode::UnknownType, "no")
        );
    }

    #[test]
    fn stored_deliveries_carry_their_origin_id() {
        let from = Sender {
            user: Some("alice".into()),
            server: "a".into(),
            handler: None,
            info: None,
        };
        let payload = Payload::new("mail", None);
        let body = deliver_frame(3, &from, ["bob"], &payload.as_ref(), Some(8589934593));
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            r#"{"header":{"scope":"users","msg":"3","from":{"user":"alice","server":"a"},"users":["bob"],"store":true,"origin":"8589934593"},"payload":{"type":"mail","data":null}}"#
        );
        let PeerFrame::Deliver(d) = round(body) else {
            panic!()
        };
        assert_eq!(d.store, Some(8589934593));
        for bad in [
            r#"{"header":{"scope":"users","msg":"1","from":{"server":"a"},"users":["b"],"store":true},"payload":{"type":"t"}}"#,
            r#"{"header":{"scope":"users","msg":"1","from":{"server":"a"},"users":["b"],"origin":"5"},"payload":{"type":"t"}}"#,
            r#"{"header":{"scope":"users","msg":"1","from":{"server":"a"},"users":["b"],"store":true,"origin":"x"},"payload":{"type":"t"}}"#,
            r#"{"header":{"scope":"server","msg":"1","from":{"server":"a"},"store":true,"origin":"5"},"payload":{"type":"t"}}"#,
        ] {
            assert_eq!(
                parse_peer_frame(bad.as_bytes()).unwrap_err().code,
                ErrorCode::InvalidMessage,
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_peer_frames() {
        for bad in [
            r#"{"header":{"scope":"server","msg":"1"},"payload":{"type":"t"}}"#,
            r#"{"header":{"kind":"ack","status":"ok"}}"#,
            r#"{"header":{"kind":"dance","status":"ok"}}"#,
            r#"{"header":{"scope":"server","msg":"1","from":{"server":"a","admin":true}},"payload":{"type":"t"}}"#,
        ] {
            assert_eq!(
                parse_peer_frame(bad.as_bytes()).unwrap_err().code,
                ErrorCode::InvalidMessage,
                "{bad}"
            );
        }
    }
}
