//! Frames of stored delivery (PROTOCOL.md §4, "Stored delivery"): the `sendClients` report with
//! `stored` and `refused` beside `delivered` and `offline`, to a client or a handler, and the
//! data of `bester.ack`. The pushes themselves are written in `write.rs`
//! ([`super::write::client_durable_push`]). Pure: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use std::collections::BTreeMap;

use super::ErrorCode;
use super::error::ErrorBody;
use super::peer::UserFailures;

/// Why one user's copy was not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// A sentence for people.
    pub error: String,
    /// `queue_full` or `store_failed`.
    pub code: ErrorCode,
}

impl Refused {
    /// A refusal with this code and text.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Refused {
        Refused {
            error: error.into(),
            code,
        }
    }
}

/// Users refused, in order, each with why.
pub type RefusedList = Vec<(String, Refused)>;

/// The lists of a storing `sendClients` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLists<'a> {
    /// Users with a connection here, sent the message.
    pub delivered: &'a [String],
    /// Users with no connection, not stored.
    pub offline: &'a [String],
    /// Users with no connection whose queue now holds it (durably).
    pub stored: &'a [String],
    /// Users of other servers whose delivery is in that server's outbound queue (durably),
    /// to be forwarded when the link is up.
    pub queued: &'a [String],
    /// Users whose queue would not take it.
    pub refused: &'a [(String, Refused)],
    /// Users of other servers not queued, with the code of why (`peer_unreachable`).
    pub failed: &'a UserFailures,
}

#[derive(Serialize)]
struct Header<'a> {
    status: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind_of: Option<&'a str>,
    delivered: &'a [String],
    offline: &'a [String],
    stored: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    queued: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    refused: Vec<RefusedEntry<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    failed: &'a UserFailures,
}

#[derive(Serialize)]
struct RefusedEntry<'a> {
    user: &'a str,
    error: &'a str,
    code: ErrorCode,
}

#[derive(Serialize)]
struct Frame<'a> {
    header: Header<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

fn body(
    kind: &'static str,
    id: Option<&str>,
    kind_of: Option<&str>,
    lists: &StoreLists<'_>,
    data: Option<Option<&str>>,
) -> Vec<u8> {
    let null = RawValue::from_string("null".into()).expect("null is JSON");
    let data_raw: Option<Box<RawValue>> = match data {
        Some(Some(text)) => RawValue::from_string(text.to_string()).ok(),
        _ => None,
    };
    let frame = Frame {
        header: Header {
            status: "ok",
            kind,
            id,
            kind_of,
            delivered: lists.delivered,
            offline: lists.offline,
            stored: lists.stored,
            queued: lists.queued,
            failed: lists.failed,
            refused: lists
                .refused
                .iter()
                .map(|(user, r)| RefusedEntry {
                    user,
                    error: &r.error,
                    code: r.code,
                })
                .collect(),
        },
        data: match data {
            Some(_) => Some(data_raw.as_deref().unwrap_or(&null)),
            None => None,
        },
    };
    serde_json::to_vec(&frame).expect("a report serialises")
}

/// The reply to a client whose request a handler answered with a storing `sendClients`:
/// `{"header":{"status":"ok","kind":"reply","id":I,"type":T,"delivered":[..],"offline":[..],"stored":[..],"queued":[..],"refused":[{"user","error","code"},..],"failed":{..}},"data":D}`
/// (`queued`, `refused` and `failed` only when someone is in them).
pub fn client_store_reply(
    id: Option<&str>,
    kind_of: &str,
    lists: &StoreLists<'_>,
    data: Option<&str>,
) -> Vec<u8> {
    body("reply", id, Some(kind_of), lists, Some(data))
}

/// The report to a handler of its storing push:
/// `{"header":{"kind":"report","status":"ok","id":I,"delivered":[..],"offline":[..],"stored":[..],"refused":[..]}}`.
pub fn handler_store_report(id: Option<&str>, lists: &StoreLists<'_>) -> Vec<u8> {
    let mut frame = body("report", id, None, lists, None);
    // The same header, with `kind` first as in the other reports.
    if let Ok(text) = std::str::from_utf8(&frame) {
        frame = text
            .replacen(
                "{\"header\":{\"status\":\"ok\",\"kind\":\"report\"",
                "{\"header\":{\"kind\":\"report\",\"status\":\"ok\"",
                1,
            )
            .into_bytes();
    }
    frame
}

/// `data` of `bester.ack`: `{"msgs":["…",…]}` or `{"upto":"…"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckData {
    msgs: Option<Vec<String>>,
    upto: Option<String>,
}

/// Most ids one `bester.ack` may name.
pub const MAX_ACK_IDS: usize = 4096;

/// What a `bester.ack` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRequest {
    /// These message ids.
    Ids(Vec<u64>),
    /// Every message up to this id.
    Upto(u64),
}

fn parse_id(text: &str) -> Result<u64, ErrorBody> {
    text.parse::<u64>().map_err(|_| {
        ErrorBody::new(
            ErrorCode::InvalidMessage,
            format!("bad data for \"bester.ack\": {text:?} is not a message id"),
        )
    })
}

/// Read the data of a `bester.ack`.
pub fn parse_ack(data: Option<&str>) -> Result<AckRequest, ErrorBody> {
    let bad = |why: String| {
        ErrorBody::new(
            ErrorCode::InvalidMessage,
            format!("bad data for \"bester.ack\": {why}"),
        )
    };
    let data: AckData =
        serde_json::from_str(data.unwrap_or("null")).map_err(|e| bad(e.to_string()))?;
    match (data.msgs, data.upto) {
        (Some(ids), None) => {
            if ids.len() > MAX_ACK_IDS {
                return Err(bad(format!(
                    "one ack names at most {MAX_ACK_IDS} messages (this one names {})",
                    ids.len()
                )));
            }
            let ids = ids.iter().map(|t| parse_id(t)).collect::<Result<_, _>>()?;
            Ok(AckRequest::Ids(ids))
        }
        (None, Some(upto)) => Ok(AckRequest::Upto(parse_id(&upto)?)),
        _ => Err(bad("give either \"msgs\" or \"upto\"".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_read_strictly() {
        assert_eq!(
            parse_ack(Some(r#"{"msgs":["4294967297","5"]}"#)).unwrap(),
            AckRequest::Ids(vec![4294967297, 5])
        );
        assert_eq!(
            parse_ack(Some(r#"{"upto":"9"}"#)).unwrap(),
            AckRequest::Upto(9)
        );
        for bad in [
            "null",
            "{}",
            r#"{"msgs":["1"],"upto":"2"}"#,
            r#"{"msgs":["x"]}"#,
            r#"{"upto":3}"#,
            r#"{"mgs":[]}"#,
        ] {
            let e = parse_ack(Some(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{bad}");
            assert!(
                e.error.starts_with("bad data for \"bester.ack\": "),
                "{}",
                e.error
            );
        }
    }

    #[test]
    fn reports_carry_every_list() {
        let users = ["bob".to_string()];
        let refused = [(
            "carol".to_string(),
            Refused {
                error: "full".into(),
                code: ErrorCode::QueueFull,
            },
        )];
        let failed = UserFailures::new();
        let lists = StoreLists {
            delivered: &users,
            offline: &[],
            stored: &users,
            queued: &[],
            refused: &refused,
            failed: &failed,
        };
        let reply = String::from_utf8(client_store_reply(Some("1"), "mail", &lists, None)).unwrap();
        assert_eq!(
            reply,
            r#"{"header":{"status":"ok","kind":"reply","id":"1","type":"mail","delivered":["bob"],"offline":[],"stored":["bob"],"refused":[{"user":"carol","error":"full","code":"queue_full"}]},"data":null}"#
        );
        let report = String::from_utf8(handler_store_report(None, &lists)).unwrap();
        assert!(
            report.starts_with(r#"{"header":{"kind":"report","status":"ok","delivered":["bob"]"#),
            "{report}"
        );
    }
}
