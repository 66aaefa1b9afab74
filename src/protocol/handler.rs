//! Frames from handlers, and the reports besterd sends them: where an answer goes ([`Command`]),
//! the answer itself ([`HandlerMessage`]) read by the fast lane in [`super::scan`] when it has its
//! common shape and by serde otherwise, and the delivery and error reports for a handler's push.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{ErrorBody, ErrorCode};
use super::message::{Payload, PayloadRef, Status, parse_frame, to_body, validate_type};
use super::redirect::{RedirectData, RedirectToken};

/// Where a handler's answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// To the client that sent the request, and nobody else.
    Reply,
    /// To these users, and the members of these groups, on this server.
    SendClients(super::groups::Recipients),
    /// To these peer servers.
    SendServers(Vec<String>),
    /// To the handler of this type, whose answer is routed in turn.
    SendHandler(String),
    /// Send the requesting client elsewhere: it is told `url` (and a token to log in with there)
    /// and its connection closes (PROTOCOL.md §6, "Redirects").
    Redirect {
        /// A `bester://`, `bester+tls://`, `bester+ws://` or `bester+wss://` URI.
        url: String,
        /// What the client logs in with there, if anything.
        token: Option<RedirectToken>,
    },
    /// A handler's push (no request): add these users to a group (PROTOCOL.md §6, "Groups").
    GroupAdd(super::groups::GroupChange),
    /// A handler's push (no request): remove these users from a group.
    GroupRemove(super::groups::GroupChange),
    /// A handler's push (no request): who of these users and groups is online (answered in the
    /// report).
    Presence(super::groups::Recipients),
}

/// A frame from a handler, borrowed from its frame.
#[derive(Debug, Clone)]
pub struct HandlerMessage<'a> {
    /// ok / error.
    pub status: Status,
    /// The original spec's numeric status when it was not `"0"` (success): the client is told it
    /// with `handler_error`.
    pub status_code: Option<String>,
    /// Where the payload goes.
    pub command: Cow<'a, Command>,
    /// The request this answers; `None` for a push (or an answer on a handler correlated by order
    /// or by connection).
    pub request: Option<Cow<'a, str>>,
    /// The handler's own id for a push, echoed in the delivery report.
    pub id: Option<Cow<'a, str>>,
    /// What to deliver.
    pub payload: Option<PayloadRef<'a>>,
    /// `"replies": true` on a `sendServers` answer: the peers' reply data comes back in the
    /// answer (PROTOCOL.md §7).
    pub replies: bool,
    /// `"store": true` on a `sendClients`: copies for users with no connection are kept in the
    /// delivery store (PROTOCOL.md §4, "Stored delivery").
    pub store: bool,
}

impl HandlerMessage<'_> {
    /// The same message owning its text (to keep it past the frame).
    pub fn into_owned(self) -> HandlerMessage<'static> {
        let owned = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        HandlerMessage {
            status: self.status,
            status_code: self.status_code,
            command: Cow::Owned(self.command.into_owned()),
            request: owned(self.request),
            id: owned(self.id),
            payload: self.payload.map(PayloadRef::into_owned),
            replies: self.replies,
            store: self.store,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandlerMessage {
    header: RawHandlerHeader,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandlerHeader {
    status: HandlerStatus,
    #[serde(default)]
    command: Option<CommandField>,
    #[serde(rename = "commandData", default)]
    command_data: Option<CommandData>,
    #[serde(default)]
    request: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    replies: Option<bool>,
    #[serde(default)]
    store: Option<bool>,
}

/// `header.status` of a handler frame: `"ok"`, `"error"`, or the original spec's numeric codes
/// (`"0"` or `0` is success, any other number an error).
struct HandlerStatus {
    status: Status,
    code: Option<String>,
}

impl<'de> Deserialize<'de> for HandlerStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HandlerStatus;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"ok\", \"error\" or a numeric status (\"0\" is success)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HandlerStatus, E> {
                let numeric =
                    !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit());
                match v {
                    "ok" => Ok(HandlerStatus {
                        status: Status::Ok,
                        code: None,
                    }),
                    "error" => Ok(HandlerStatus {
                        status: Status::Error,
                        code: None,
                    }),
                    _ if numeric && v.bytes().all(|b| b == b'0') => Ok(HandlerStatus {
                        status: Status::Ok,
                        code: None,
                    }),
                    _ if numeric => Ok(HandlerStatus {
                        status: Status::Error,
                        code: Some(v.to_string()),
                    }),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HandlerStatus, E> {
                if v > 999_999_999 {
                    return Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self));
                }
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// `header.command`: a name, or the earlier object form `{"type":"sendClients","data":[..]}`.
enum CommandField {
    Name(String),
    Object {
        kind: String,
        data: Option<CommandData>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandObject {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<CommandData>,
}

impl<'de> Deserialize<'de> for CommandField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CommandField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command name or {\"type\":NAME,\"data\":..}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CommandField, E> {
                Ok(CommandField::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CommandField, A::Error> {
                let object =
                    CommandObject::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(CommandField::Object {
                    kind: object.kind,
                    data: object.data,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `commandData`: one name (`sendHandler`), an array of names (`sendClients`, `sendServers`), or
/// an object (`redirect`).
enum CommandData {
    Names(Vec<String>),
    Name(String),
    /// An object: the data of a `redirect` (read once the command is known).
    Object(serde_json::Map<String, serde_json::Value>),
}

impl<'de> Deserialize<'de> for CommandData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CommandData;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name or an array of names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CommandData, E> {
                Ok(CommandData::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CommandData, A::Error> {
                serde_json::Map::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(CommandData::Object)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CommandData, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(CommandData::Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse a frame from a handler: the fast lane for a reply in its common shape, serde for
/// everything else.
pub fn parse_handler_message(body: &[u8]) -> Result<HandlerMessage<'_>, ErrorBody> {
    if let Ok(text) = std::str::from_utf8(body)
        && let Some(msg) = super::scan::handler_message(text)
    {
        return Ok(msg);
    }
    parse_handler_message_full(body)
}

/// [`parse_handler_message`] by serde alone: the exact error for every frame it refuses.
pub fn parse_handler_message_full(body: &[u8]) -> Result<HandlerMessage<'static>, ErrorBody> {
    let raw: RawHandlerMessage = parse_frame(body, |r: &RawHandlerMessage| {
        r.payload.as_ref()?.data.as_deref()
    })?;
    let bad = |text: String| ErrorBody::new(ErrorCode::BadHandlerReply, text);
    let header = raw.header;
    let (name, data) = match (header.command, header.command_data) {
        (None, data) => ("reply".to_string(), data),
        (Some(CommandField::Name(name)), data) => (name, data),
        (Some(CommandField::Object { kind, data }), None) => (kind, data),
        (Some(CommandField::Object { data: Some(_), .. }), Some(_)) => {
            return Err(bad(
                "give command data in command.data or in commandData, not both".into(),
            ));
        }
        (Some(CommandField::Object { kind, data: None }), Some(data)) => (kind, Some(data)),
    };
    let object = |data: serde_json::Map<String, serde_json::Value>| serde_json::Value::Object(data);
    let command = match (name.as_str(), data) {
        ("sendClients", Some(CommandData::Object(data))) => Command::SendClients(
            Deserialize::deserialize(object(data))
                .map_err(|e| bad(format!("header.commandData: {e}")))?,
        ),
        (cmd @ ("groupAdd" | "groupRemove"), Some(CommandData::Object(data))) => {
            let change: super::groups::GroupChange = Deserialize::deserialize(object(data))
                .map_err(|e| bad(format!("header.commandData: {e}")))?;
            if cmd == "groupAdd" {
                Command::GroupAdd(change)
            } else {
                Command::GroupRemove(change)
            }
        }
        ("presence", Some(CommandData::Object(data))) => Command::Presence(
            Deserialize::deserialize(object(data))
                .map_err(|e| bad(format!("header.commandData: {e}")))?,
        ),
        (cmd @ ("groupAdd" | "groupRemove"), _) => {
            return Err(bad(format!(
                "command {cmd:?} needs commandData: {{\"group\":…,\"users\":[…]}}"
            )));
        }
        ("presence", _) => {
            return Err(bad(
                "command \"presence\" needs commandData: {\"users\":[…],\"groups\":[…]}".into(),
            ));
        }
        (name, Some(CommandData::Object(_))) if name != "redirect" => {
            return Err(ErrorBody::new(
                ErrorCode::InvalidMessage,
                "header.commandData: invalid type: map, expected a name or an array of names",
            ));
        }
        ("reply", None) => Command::Reply,
        ("reply", Some(_)) => return Err(bad("command \"reply\" takes no commandData".into())),
        ("sendClients", Some(CommandData::Names(users))) => {
            Command::SendClients(super::groups::Recipients::users(users))
        }
        ("sendServers", Some(CommandData::Names(servers))) => Command::SendServers(servers),
        ("sendHandler", Some(CommandData::Name(kind))) => {
            validate_type(&kind).map_err(|e| bad(e.error))?;
            Command::SendHandler(kind)
        }
        (cmd @ ("sendClients" | "sendServers"), _) => {
            return Err(bad(format!(
                "command {cmd:?} needs commandData: an array of names"
            )));
        }
        ("sendHandler", _) => {
            return Err(bad(
                "command \"sendHandler\" needs commandData: a type name".into(),
            ));
        }
        ("redirect", Some(CommandData::Object(data))) => {
            let data = RedirectData::deserialize(serde_json::Value::Object(data))
                .map_err(|e| bad(format!("header.commandData: {e}")))?;
            let (url, token) = data.check().map_err(bad)?;
            Command::Redirect { url, token }
        }
        ("redirect", _) => {
            return Err(bad(
                "command \"redirect\" needs commandData: {\"url\":…,\"token\":…}".into(),
            ));
        }
        (other, _) => return Err(bad(format!("unknown command {other:?}"))),
    };
    if header.replies.is_some() && !matches!(command, Command::SendServers(_)) {
        return Err(bad(
            "\"replies\" goes with command \"sendServers\" only".into()
        ));
    }
    if header.store.is_some() && !matches!(command, Command::SendClients(_)) {
        return Err(bad(
            "\"store\" goes with command \"sendClients\" only".into()
        ));
    }
    if let Some(payload) = &raw.payload {
        validate_type(&payload.kind).map_err(|e| bad(e.error))?;
    }
    Ok(HandlerMessage {
        status: header.status.status,
        status_code: header.status.code,
        command: Cow::Owned(command),
        request: header.request.map(Cow::Owned),
        id: header.id.map(Cow::Owned),
        payload: raw.payload.map(Payload::into_ref),
        replies: header.replies.unwrap_or(false),
        store: header.store.unwrap_or(false),
    })
}

/// The header of a report to a handler.
#[derive(Debug, Serialize)]
struct ReportHeader<'a> {
    kind: &'static str,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offline: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    servers: Option<&'a super::peer::ServerReports>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<&'a super::peer::UserFailures>,
}

#[derive(Debug, Serialize)]
struct ReportFrame<'a, E: Serialize + ?Sized> {
    header: ReportHeader<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a E>,
}

/// The body of a delivery report for a handler's push (users, or servers for `sendServers`).
pub fn handler_delivery_report(
    id: Option<&str>,
    delivered: Option<&[String]>,
    offline: Option<&[String]>,
    servers: Option<&super::peer::ServerReports>,
) -> Vec<u8> {
    handler_delivery_report_with(id, (delivered, offline, None), servers)
}

/// [`handler_delivery_report`] with the users that could not be reached on other servers
/// (`"failed":{"bob@node-b":"peer_unreachable"}`).
pub fn handler_delivery_report_with(
    id: Option<&str>,
    (delivered, offline, failed): (
        Option<&[String]>,
        Option<&[String]>,
        Option<&super::peer::UserFailures>,
    ),
    servers: Option<&super::peer::ServerReports>,
) -> Vec<u8> {
    to_body(&ReportFrame::<ErrorBody> {
        header: ReportHeader {
            kind: "report",
            status: Status::Ok,
            request: None,
            id,
            delivered,
            offline,
            servers,
            failed,
        },
        data: None,
    })
}

/// The body of an error report for a frame a handler sent.
pub fn handler_error_report<E: Serialize + ?Sized>(
    request: Option<&str>,
    id: Option<&str>,
    error: &E,
) -> Vec<u8> {
    to_body(&ReportFrame {
        header: ReportHeader {
            kind: "report",
            status: Status::Error,
            request,
            id,
            delivered: None,
            offline: None,
            servers: None,
            failed: None,
        },
        data: Some(error),
    })
}
