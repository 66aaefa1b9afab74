//! Message types, as serde structs: what clients, handlers and peers send, and what we send back.
//!
//! Parsing goes bytes → `&str` (UTF-8 checked) → typed struct; any failure becomes an
//! [`ErrorBody`] with a stable code. `payload.data` stays JSON text: the broker forwards it
//! without parsing it again. A client's message and a handler's answer in their common shapes are
//! read by the fast lane in [`super::scan`], borrowing from the frame; every other frame, and every
//! frame the fast lane leaves alone, by serde. Everything outbound is serialized from borrowed
//! structs, the two hot frames by hand in [`super::write`].

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::error::{ErrorBody, ErrorCode};

/// Payload types starting with this prefix are built into the server.
pub const RESERVED_PREFIX: &str = "bester.";
/// Longest accepted `payload.type`.
pub const MAX_TYPE_LEN: usize = 64;
/// Longest accepted `header.id`.
pub const MAX_ID_LEN: usize = 128;

/// `header.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Success.
    Ok,
    /// Failure; `data` says why.
    Error,
}

/// By hand rather than derived, so that a status of the wrong JSON type is a data error naming
/// the field (`invalid_message`), not a syntax error (`invalid_json`).
impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"ok\" or \"error\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Status, E> {
                match v {
                    "ok" => Ok(Status::Ok),
                    "error" => Ok(Status::Error),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `header.kind` of what the server sends to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// The one direct answer to a frame this connection sent.
    Reply,
    /// A message for this user that is not an answer to this connection.
    Push,
}

/// `header.scope` of a message: who it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// From a user connected to a server.
    Client,
    /// From a federated peer server.
    Server,
}

impl Scope {
    fn parse(scope: &str) -> Result<Scope, ErrorBody> {
        match scope {
            "client" => Ok(Scope::Client),
            "server" => Ok(Scope::Server),
            other => Err(ErrorBody::new(
                ErrorCode::UnknownScope,
                format!("unknown scope {other:?}; expected \"client\""),
            )),
        }
    }
}

/// `payload`: a type name and opaque data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// The type the message is dispatched by.
    #[serde(rename = "type")]
    pub kind: String,
    /// Anything; forwarded untouched. Missing and `null` are the same.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

impl Payload {
    /// A payload of this type carrying already-serialized JSON data.
    pub fn new(kind: impl Into<String>, data: Option<Box<RawValue>>) -> Self {
        Payload {
            kind: kind.into(),
            data,
        }
    }

    /// The payload as the router forwards it, owning its text.
    pub fn into_ref(self) -> PayloadRef<'static> {
        PayloadRef {
            kind: Cow::Owned(self.kind),
            data: self
                .data
                .map(|d| Cow::Owned(Box::<str>::from(d).into_string())),
        }
    }

    /// The payload as the router forwards it.
    pub fn as_ref(&self) -> PayloadRef<'_> {
        PayloadRef {
            kind: Cow::Borrowed(&self.kind),
            data: self.data.as_deref().map(|d| Cow::Borrowed(d.get())),
        }
    }
}

/// JSON text that was checked when it came in, as a [`RawValue`] for serde-serialized frames:
/// parsed again (these frames are off the hot path), which cannot fail.
pub fn checked_json(text: &str) -> &RawValue {
    serde_json::from_str(text).expect("JSON text checked on the way in")
}

impl Serialize for PayloadRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut payload = s.serialize_struct("Payload", 2)?;
        payload.serialize_field("type", &*self.kind)?;
        payload.serialize_field("data", &self.raw_data())?;
        payload.end()
    }
}

/// `payload` as the router forwards it: the type and the data's JSON text (already checked),
/// borrowed from the frame they came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRef<'a> {
    /// The type the message is dispatched by.
    pub kind: Cow<'a, str>,
    /// The JSON text of `data`; `None` when missing or `null`.
    pub data: Option<Cow<'a, str>>,
}

impl PayloadRef<'_> {
    /// The same payload owning its text (to keep it past the frame).
    pub fn into_owned(self) -> PayloadRef<'static> {
        PayloadRef {
            kind: Cow::Owned(self.kind.into_owned()),
            data: self.data.map(|d| Cow::Owned(d.into_owned())),
        }
    }

    /// `data` as a [`RawValue`] for serde-serialized frames (peer messages, pushes).
    pub fn raw_data(&self) -> Option<&RawValue> {
        self.data.as_deref().map(checked_json)
    }

    /// Parse `data` as a built-in command's argument struct.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, ErrorBody> {
        let text = self.data.as_deref().unwrap_or("null");
        serde_json::from_str(text).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidMessage,
                format!(
                    "bad data for {:?}: {}",
                    self.kind,
                    plain_words(&strip_position(&e))
                ),
            )
        })
    }
}

/// Who a message comes from: the `from` object in requests and pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    /// The user, when a user sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The server the user is attached to (or that sent it).
    pub server: String,
    /// The handler type, for pushes a handler made on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// The session's authorisation data (a token login's `info` claim), in requests only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
}

/// A session's authorisation data: a JSON object, kept as its text and forwarded as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Info(pub Box<RawValue>);

impl PartialEq for Info {
    fn eq(&self, other: &Info) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Info {}

pub use super::login::{Authentication, Credentials, KeyCredentials, Opaque, Secret};

/// `header.identify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identify {
    /// `"client"` or `"server"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// How a client logs in.
    #[serde(default)]
    pub authentication: Option<Authentication>,
    /// A peer server's name.
    #[serde(default)]
    pub name: Option<String>,
    /// A peer server's handshake nonce.
    #[serde(default)]
    pub nonce: Option<String>,
    /// Optional features the sender supports (see [`super::features`]); `None` when it offered
    /// none (the reply then has neither `features` nor `limits`).
    #[serde(default)]
    pub features: Option<Vec<String>>,
}

/// A message from a client after identify, borrowed from its frame.
#[derive(Debug, Clone)]
pub struct ClientMessage<'a> {
    /// The client's correlation id, echoed in the reply.
    pub id: Option<Cow<'a, str>>,
    /// Always [`Scope::Client`] on a client connection.
    pub scope: Scope,
    /// What to dispatch.
    pub payload: PayloadRef<'a>,
    /// The original spec's per-message credentials (`header.authentication`), if given.
    pub authentication: Option<Credentials>,
    /// On a gateway's connection (feature `multiplex`): the attached user the message is sent
    /// as (`header.user`).
    pub user: Option<Cow<'a, str>>,
}

impl ClientMessage<'_> {
    /// The same message owning its text (to keep it past the frame).
    pub fn into_owned(self) -> ClientMessage<'static> {
        ClientMessage {
            id: self.id.map(|id| Cow::Owned(id.into_owned())),
            scope: self.scope,
            payload: self.payload.into_owned(),
            authentication: self.authentication,
            user: self.user.map(|user| Cow::Owned(user.into_owned())),
        }
    }
}

/// Any frame a client may send.
#[derive(Debug, Clone)]
pub enum Inbound<'a> {
    /// `{"header":{"identify":{...}}}`.
    Identify(Identify),
    /// `{"header":{"scope":"client",...},"payload":{...}}`.
    Message(ClientMessage<'a>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    header: RawInboundHeader,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInboundHeader {
    #[serde(default)]
    identify: Option<Identify>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    authentication: Option<Credentials>,
    #[serde(default)]
    user: Option<String>,
}

/// Check a frame body is UTF-8, well-formed JSON with no duplicate keys and bounded nesting, and
/// parse it as `T`, mapping failures to stable codes. Texts name protocol fields
/// (`header.scope: invalid type: integer, expected a string`), never Rust types or positions.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ErrorBody> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ErrorBody::new(
            ErrorCode::InvalidUtf8,
            format!(
                "frame body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    super::validate::check(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ErrorBody::new(ErrorCode::InvalidMessage, strip_position(&e))
        }
        _ => ErrorBody::new(ErrorCode::InvalidJson, e.to_string()),
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(ErrorBody::new(
            ErrorCode::InvalidMessage,
            "a frame must be a JSON object",
        ));
    }
    serde_json::from_str(text).map_err(|e| describe::<T>(text, &e))
}

/// [`parse_json`] in one pass for frames whose only opaque part is `payload.data` (see
/// [`super::validate::parse_one_pass`]); on any failure the full path gives the exact error.
pub(super) fn parse_frame<T: DeserializeOwned>(
    body: &[u8],
    data: impl FnOnce(&T) -> Option<&RawValue>,
) -> Result<T, ErrorBody> {
    if let Ok(text) = std::str::from_utf8(body)
        && let Some(value) = super::validate::parse_one_pass(text, data)
    {
        return Ok(value);
    }
    parse_json(body)
}

/// Say where a typed parse failed: parse again (on this error path only) tracking the field path.
fn describe<T: DeserializeOwned>(text: &str, e: &serde_json::Error) -> ErrorBody {
    if e.classify() != serde_json::error::Category::Data {
        return ErrorBody::new(ErrorCode::InvalidJson, e.to_string());
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let (path, inner) = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(tracked) => (tracked.path().to_string(), strip_position(tracked.inner())),
        Ok(_) => (String::new(), strip_position(e)),
    };
    let text = plain_words(&inner);
    // An unknown field is reported where it sits: `payload: unknown field `dat``.
    let path = match path.rfind('.') {
        Some(at) if text.starts_with("unknown field") => path[..at].to_string(),
        None if text.starts_with("unknown field") => String::new(),
        _ => path,
    };
    if path.is_empty() || path == "." {
        ErrorBody::new(ErrorCode::InvalidMessage, text)
    } else {
        ErrorBody::new(ErrorCode::InvalidMessage, format!("{path}: {text}"))
    }
}

/// Replace serde's names of Rust types in an error text by what a protocol author knows.
fn plain_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("expected struct ") {
        out.push_str(&rest[..at]);
        out.push_str("expected an object");
        let after = &rest[at + "expected struct ".len()..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The `header.id` of a frame that failed to parse, when it can still be read: the body is a JSON
/// object whose `header` is an object with one `id`, a string of at most [`MAX_ID_LEN`] bytes.
/// Anything else (not JSON, no header, id missing, not a string, too long) gives `None`.
pub fn inbound_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer {
        header: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        id: Option<String>,
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    outer.header.id.filter(|id| id.len() <= MAX_ID_LEN)
}

/// The `header.request` token of a handler frame that failed to parse, when it can still be read
/// (a string in an object `header`), so the request it meant to answer can be failed at once.
pub fn handler_request_token(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer {
        header: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        request: Option<String>,
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    outer.header.request
}

/// serde_json appends " at line L column C"; data errors read better without it.
/// serde's text of `e` without its position and without the values it quotes (a password sent in
/// the wrong shape must not reach the log or the reply: see [`super::redact`]).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => &text,
    };
    super::redact::without_values(text)
}

/// Whether a payload type name is 1 to 64 bytes of `[A-Za-z0-9._-]`.
pub fn valid_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_TYPE_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Check a payload type name: 1 to 64 bytes of `[A-Za-z0-9._-]`.
pub fn validate_type(kind: &str) -> Result<(), ErrorBody> {
    if valid_type(kind) {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::InvalidMessage,
            format!(
                "payload.type {kind:?} must be 1 to {MAX_TYPE_LEN} characters of A-Z a-z 0-9 . _ -"
            ),
        ))
    }
}

/// Parse a frame from a client connection: the fast lane for a message in its common shape,
/// serde for everything else.
pub fn parse_inbound(body: &[u8]) -> Result<Inbound<'_>, ErrorBody> {
    if let Ok(text) = std::str::from_utf8(body)
        && let Some(msg) = super::scan::client_message(text)
    {
        return Ok(Inbound::Message(msg));
    }
    parse_inbound_full(body)
}

/// [`parse_inbound`] by serde alone: the exact error for every frame it refuses.
pub fn parse_inbound_full(body: &[u8]) -> Result<Inbound<'static>, ErrorBody> {
    let raw: RawInbound = parse_frame(body, |r: &RawInbound| r.payload.as_ref()?.data.as_deref())?;
    let invalid = |text: &str| Err(ErrorBody::new(ErrorCode::InvalidMessage, text));
    if let Some(id) = &raw.header.id
        && id.len() > MAX_ID_LEN
    {
        return invalid(&format!("header.id is longer than {MAX_ID_LEN} bytes"));
    }
    match (raw.header.identify, raw.header.scope, raw.payload) {
        (Some(identify), None, None)
            if raw.header.id.is_none()
                && raw.header.authentication.is_none()
                && raw.header.user.is_none() =>
        {
            Ok(Inbound::Identify(identify))
        }
        (Some(_), _, _) => invalid("an identify frame has only header.identify"),
        (None, Some(scope), Some(payload)) => {
            let scope = Scope::parse(&scope)?;
            validate_type(&payload.kind)?;
            Ok(Inbound::Message(ClientMessage {
                id: raw.header.id.map(Cow::Owned),
                scope,
                payload: payload.into_ref(),
                authentication: raw.header.authentication,
                user: raw.header.user.map(Cow::Owned),
            }))
        }
        (None, None, _) => invalid("header needs \"identify\" or \"scope\""),
        (None, Some(_), None) => invalid("missing field `payload`"),
    }
}

/// The header of a frame sent to a client.
#[derive(Debug, Serialize)]
pub struct ClientHeader<'a> {
    /// ok / error.
    pub status: Status,
    /// reply / push.
    pub kind: ClientKind,
    /// The id of the frame this replies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// The payload type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind_of: Option<&'a str>,
    /// Who sent a push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a Sender>,
    /// Delivery report: users that were sent the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered: Option<&'a [String]>,
    /// Delivery report: users with no connection on this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline: Option<&'a [String]>,
    /// Delivery report of a `sendServers`: what each peer server did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<&'a super::peer::ServerReports>,
}

impl<'a> ClientHeader<'a> {
    /// A reply header with nothing but status and id.
    pub fn reply(status: Status, id: Option<&'a str>) -> Self {
        ClientHeader {
            status,
            kind: ClientKind::Reply,
            id,
            kind_of: None,
            from: None,
            delivered: None,
            offline: None,
            servers: None,
        }
    }

    /// A push header.
    pub fn push(kind_of: &'a str, from: &'a Sender) -> Self {
        ClientHeader {
            status: Status::Ok,
            kind: ClientKind::Push,
            id: None,
            kind_of: Some(kind_of),
            from: Some(from),
            delivered: None,
            offline: None,
            servers: None,
        }
    }
}

/// A frame to a client: `{"header":{...},"data":...}`.
#[derive(Debug, Serialize)]
pub struct ClientFrame<'a, D: Serialize + ?Sized> {
    /// Status, kind, id, routing facts.
    pub header: ClientHeader<'a>,
    /// The payload data, or an [`ErrorBody`].
    pub data: &'a D,
}

/// Serialize a frame body. Serializing our own structs cannot fail.
pub fn to_body<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut body = super::pool::take();
    serde_json::to_writer(&mut body, value).expect("serializing a protocol struct");
    body
}

/// The body of an error reply to a client.
pub fn client_error<E: Serialize + ?Sized>(id: Option<&str>, error: &E) -> Vec<u8> {
    to_body(&ClientFrame {
        header: ClientHeader::reply(Status::Error, id),
        data: error,
    })
}

/// The body of an ok reply to a client with this data.
pub fn client_ok<D: Serialize + ?Sized>(
    id: Option<&str>,
    kind_of: Option<&str>,
    data: &D,
) -> Vec<u8> {
    let mut header = ClientHeader::reply(Status::Ok, id);
    header.kind_of = kind_of;
    to_body(&ClientFrame { header, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handler::*;

    fn code_of(body: &str) -> ErrorCode {
        parse_inbound(body.as_bytes()).unwrap_err().code
    }

    #[test]
    fn identify_parses() {
        let frame = br#"{"header":{"identify":{"type":"client","authentication":{"username":"a","password":"p"}}}}"#;
        let Inbound::Identify(identify) = parse_inbound(frame).unwrap() else {
            panic!("not an identify")
        };
        assert_eq!(identify.kind, "client");
        let Some(Authentication::Password(creds)) = identify.authentication else {
            panic!("not a password")
        };
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("a", "p")
        );
        assert!(
            !format!("{creds:?}").contains("\"p\""),
            "password must not be in Debug output"
        );
    }

    #[test]
    fn identify_takes_a_token_or_a_resume_token_and_nothing_mixed() {
        let auth = |a: &str| {
            let frame =
                format!(r#"{{"header":{{"identify":{{"type":"client","authentication":{a}}}}}}}"#);
            match parse_inbound(frame.as_bytes()) {
                Ok(Inbound::Identify(identify)) => Ok(identify.authentication),
                Ok(_) => panic!("not an identify"),
                Err(e) => Err(e.error),
            }
        };
        let Ok(Some(Authentication::Token(t))) = auth(r#"{"token":"a.b.c"}"#) else {
            panic!()
        };
        assert_eq!(t.0, "a.b.c");
        assert_eq!(format!("{t:?}"), "<redacted>");
        assert!(matches!(
            auth(r#"{"resume":"v1.x.y"}"#),
            Ok(Some(Authentication::Resume(r))) if r.0 == "v1.x.y"
        ));
        // Any other object is kept whole for an auth handler, with why no built-in shape took it.
        let other = |a: &str| match auth(a) {
            Ok(Some(Authentication::Other(opaque))) => (opaque.json, opaque.why),
            other => panic!("{a}: {other:?}"),
        };
        assert_eq!(
            other(r#"{"token":"a","password":"p"}"#),
            (
                r#"{"token":"a","password":"p"}"#.to_string(),
                "give one of {username, password}, {username, publicKey}, {token} or {resume}"
                    .to_string()
            )
        );
        assert_eq!(
            other(r#"{"username":"alice"}"#).1,
            "missing field `password`"
        );
        let (json, why) = other(r#"{"apiKey":"k-secret","n":[1]}"#);
        assert_eq!(json, r#"{"apiKey":"k-secret","n":[1]}"#);
        assert!(why.starts_with("unknown field `apiKey`"), "{why}");
        assert!(!format!("{:?}", auth(r#"{"apiKey":"k-secret"}"#)).contains("k-secret"));
        assert_eq!(
            auth(r#""alice:secret""#).unwrap_err(),
            "header.identify.authentication: invalid type: string, expected an object"
        );
        assert_eq!(
            auth(r#"{"token":"a","token":"b"}"#).unwrap_err(),
            "duplicate key \"token\""
        );
        assert_eq!(
            other(r#"{"token":5}"#).1,
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            auth(r#"{"username":"a","username":"b","password":"p"}"#).unwrap_err(),
            "duplicate key \"username\""
        );
        assert!(auth("[1]").is_err() && auth("null").is_ok());
    }

    #[test]
    fn message_keeps_data_raw() {
        let frame = br#"{"header":{"scope":"client","id":"7"},"payload":{"type":"echo","data":{"b": [1, 2]}}}"#;
        let Inbound::Message(msg) = parse_inbound(frame).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(msg.id.as_deref(), Some("7"));
        assert_eq!(msg.payload.kind, "echo");
        assert_eq!(msg.payload.data.as_deref(), Some(r#"{"b": [1, 2]}"#));
    }

    #[test]
    fn bad_inputs_get_stable_codes() {
        assert_eq!(code_of(""), ErrorCode::InvalidJson);
        assert_eq!(code_of("{"), ErrorCode::InvalidJson);
        assert_eq!(code_of("[1]"), ErrorCode::InvalidMessage);
        assert_eq!(code_of("{}"), ErrorCode::InvalidMessage);
        assert_eq!(
            code_of(r#"{"header":{"scope":"client"},"payload":{"type":"e"},"header":{}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(r#"{"header":{"scope":7},"payload":{"type":"e"}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code_of(r#"{"header":{"scope":"galaxy"},"payload":{"type":"e"}}"#),
            ErrorCode::UnknownScope
        );
        assert_eq!(
            code_of(r#"{"header":{"scope":"client"},"payload":{"type":"a b"}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            parse_inbound(b"\xff\xfe").unwrap_err().code,
            ErrorCode::InvalidUtf8
        );
    }

    #[test]
    fn handler_commands() {
        let parse = |s: &'static str| parse_handler_message(s.as_bytes());
        let msg = parse(r#"{"header":{"status":"ok","command":"sendClients","commandData":["a","b"],"request":"1"},"payload":{"type":"t","data":1}}"#).unwrap();
        assert_eq!(
            msg.command,
            Cow::<Command>::Owned(Command::SendClients(
                super::super::groups::Recipients::users(vec!["a".into(), "b".into()])
            ))
        );
        assert_eq!(msg.request.as_deref(), Some("1"));
        let msg =
            parse(r#"{"header":{"status":"ok","request":"1"},"payload":{"type":"t"}}"#).unwrap();
        assert_eq!(*msg.command, Command::Reply);
        let msg = parse(r#"{"header":{"status":"ok","command":"sendHandler","commandData":"echo"},"payload":{"type":"t"}}"#).unwrap();
        assert_eq!(*msg.command, Command::SendHandler("echo".into()));
        let err = parse(r#"{"header":{"status":"ok","command":"sendAll"}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadHandlerReply);
        assert_eq!(err.error, "unknown command \"sendAll\"");
        let err =
            parse(r#"{"header":{"status":"ok","command":"sendClients","commandData":"bob"}}"#)
                .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadHandlerReply);
        let err = parse(r#"{"header":{"status":"maybe"}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
    }

    #[test]
    fn builtin_data_errors_name_no_rust_types() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct PasswdData {
            old: String,
        }
        let payload = Payload::new(
            "bester.passwd",
            Some(RawValue::from_string("5".into()).unwrap()),
        );
        assert_eq!(
            payload.as_ref().data_as::<PasswdData>().unwrap_err().error,
            "bad data for \"bester.passwd\": invalid type: integer, expected an object"
        );
    }

    #[test]
    fn outbound_shapes() {
        let body = client_error(Some("9"), &ErrorBody::new(ErrorCode::UnknownType, "no"));
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"header":{"status":"error","kind":"reply","id":"9"},"data":{"error":"no","code":"unknown_type"}}"#
        );
        let from = Sender {
            user: Some("alice".into()),
            server: "a".into(),
            handler: None,
            info: None,
        };
        let payload = Payload::new("echo", Some(RawValue::from_string("[1]".into()).unwrap()));
        let body =
            super::super::write::handler_request("5", Scope::Client, &from, &[], &payload.as_ref());
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"header":{"kind":"request","request":"5","scope":"client","from":{"user":"alice","server":"a"}},"payload":{"type":"echo","data":[1]}}"#
        );
    }
}

/// The shared vectors in `protocol/vectors/messages.json`.
#[cfg(test)]
mod vectors {
    use serde_json::Value;

    use super::*;
    use crate::protocol::handler::*;
    use crate::protocol::peer::parse_peer_frame;

    #[test]
    fn messages_json() {
        let doc: Value =
            serde_json::from_str(include_str!("../../protocol/vectors/messages.json")).unwrap();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 40);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let body = case["json"].as_str().unwrap().as_bytes();
            let direction = case["direction"].as_str().unwrap();
            if direction == "server_to_client" {
                server_to_client(name, case);
                continue;
            }
            let error = match direction {
                // Without an auth handler, an object of no built-in shape is refused as this.
                "client_to_server" => match parse_inbound(body) {
                    Ok(Inbound::Identify(Identify {
                        authentication: Some(Authentication::Other(opaque)),
                        ..
                    })) => Some(opaque.refusal()),
                    parsed => parsed.err(),
                },
                "handler_to_server" => match parse_handler_message(body) {
                    Ok(msg) => {
                        if let Some(status) = case.get("status") {
                            let want = if status == "ok" {
                                Status::Ok
                            } else {
                                Status::Error
                            };
                            assert_eq!(msg.status, want, "{name}");
                            assert_eq!(
                                msg.status_code.as_deref(),
                                case["status_code"].as_str(),
                                "{name}"
                            );
                        }
                        None
                    }
                    Err(e) => Some(e),
                },
                "server_to_server" => parse_peer_frame(body).err(),
                other => panic!("{name}: unknown direction {other}"),
            };
            if case["valid"].as_bool().unwrap() {
                assert_eq!(error, None, "{name} should be accepted");
                continue;
            }
            let error = error.unwrap_or_else(|| panic!("{name} should be refused"));
            assert_eq!(Some(error.code.as_str()), case["code"].as_str(), "{name}");
            if let Some(text) = case.get("error") {
                assert_eq!(Some(error.error.as_str()), text.as_str(), "{name}");
            }
            if let Some(id) = case.get("id") {
                assert_eq!(inbound_id(body).as_deref(), id.as_str(), "{name}: id");
            }
        }
    }

    /// A frame the server sends: our builders make exactly it, and the original spec's reply
    /// shape `{"header":{"status":..},"data":..}` is a subset of it.
    fn server_to_client(name: &str, case: &Value) {
        let text = case["json"].as_str().unwrap();
        let frame: Value = serde_json::from_str(text).unwrap();
        let id = frame["header"]["id"].as_str();
        let built = if frame["header"]["status"] == "ok" {
            let data = RawValue::from_string(frame["data"].to_string()).unwrap();
            client_ok(id, frame["header"]["type"].as_str(), &data)
        } else {
            let error = ErrorBody::new(
                ErrorCode::UnknownType,
                frame["data"]["error"].as_str().unwrap(),
            );
            assert_eq!(frame["data"]["code"], error.code.as_str(), "{name}");
            client_error(id, &error)
        };
        assert_eq!(std::str::from_utf8(&built).unwrap(), text, "{name}");
        if case["original_shape"] == true {
            let status = frame["header"]["status"].as_str();
            assert!(
                matches!(status, Some("ok" | "error")),
                "{name}: header.status"
            );
            assert!(frame.get("data").is_some(), "{name}: data");
        }
    }
}
