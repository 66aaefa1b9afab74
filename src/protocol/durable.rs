//! Frames of stored delivery (PROTOCOL.md §4, "Stored delivery"): the `sendClients` report with
//! `stored` and `refused` beside `delivered` and `offline`, to a client or a handler, and the
//! data of `bester.ack`. The pushes themselves are written in `write.rs`
//! ([`super::write::client_durable_push`]). Pure: no I/O.

use serde::{Deserialize, Serialize};

use super::ErrorCode;
use super::error::ErrorBody;
use super::peer::UserFailures;
use super::{pool, write};

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

/// A report or reply with these lists: the header's opening `head` (its `status` and `kind`),
/// then `id`, `type`, `delivered`, `offline`, `stored`, and `queued`, `refused` and `failed`
/// only when someone is in them; `,"data":D` when `data` is given (`null` for none). Written by hand into a pooled
/// buffer: one of these answers every storing push.
fn body(
    head: &'static [u8],
    id: Option<&str>,
    kind_of: Option<&str>,
    lists: &StoreLists<'_>,
    data: Option<Option<&str>>,
) -> Vec<u8> {
    let mut out = pool::take();
    out.extend_from_slice(head);
    write::optional(&mut out, "id", id);
    write::optional(&mut out, "type", kind_of);
    write::names(&mut out, "delivered", Some(lists.delivered));
    write::names(&mut out, "offline", Some(lists.offline));
    write::names(&mut out, "stored", Some(lists.stored));
    write::names(
        &mut out,
        "queued",
        (!lists.queued.is_empty()).then_some(lists.queued),
    );
    if !lists.refused.is_empty() {
        out.extend_from_slice(b",\"refused\":[");
        for (i, (user, r)) in lists.refused.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"user\":");
            write::string(&mut out, user);
            out.extend_from_slice(b",\"error\":");
            write::string(&mut out, &r.error);
            out.extend_from_slice(b",\"code\":");
            write::string(&mut out, r.code.as_str());
            out.push(b'}');
        }
        out.push(b']');
    }
    write::failures(&mut out, (!lists.failed.is_empty()).then_some(lists.failed));
    out.push(b'}');
    if let Some(data) = data {
        out.extend_from_slice(b",\"data\":");
        write::raw(&mut out, data);
    }
    out.push(b'}');
    out
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
    body(
        br#"{"header":{"status":"ok","kind":"reply""#,
        id,
        Some(kind_of),
        lists,
        Some(data),
    )
}

/// The report to a handler of its storing push:
/// `{"header":{"kind":"report","status":"ok","id":I,"delivered":[..],"offline":[..],"stored":[..],"refused":[..]}}`.
pub fn handler_store_report(id: Option<&str>, lists: &StoreLists<'_>) -> Vec<u8> {
    // `kind` first, as in the other reports.
    body(
        br#"{"header":{"kind":"report","status":"ok""#,
        id,
        None,
        lists,
        None,
    )
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
        assert_eq!(
            report,
            r#"{"header":{"kind":"report","status":"ok","delivered":["bob"],"offline":[],"stored":["bob"],"refused":[{"user":"carol","error":"full","code":"queue_full"}]}}"#
        );
    }

    #[test]
    fn reports_are_json_whatever_the_names() {
        let odd = ["a\"b\\c\u{1}€".to_string(), String::new()];
        let refused = [(
            "d\ne".to_string(),
            Refused::new(ErrorCode::StoreFailed, "disk \"full\""),
        )];
        let failed = UserFailures::from([("x\t@b".to_string(), "peer_unreachable".to_string())]);
        let lists = StoreLists {
            delivered: &odd[..1],
            offline: &odd[1..],
            stored: &[],
            queued: &odd,
            refused: &refused,
            failed: &failed,
        };
        let reply: serde_json::Value = serde_json::from_slice(&client_store_reply(
            Some("i\""),
            "t\\",
            &lists,
            Some("[1,{}]"),
        ))
        .unwrap();
        assert_eq!(
            reply,
            serde_json::json!({
                "header": {
                    "status": "ok", "kind": "reply", "id": "i\"", "type": "t\\",
                    "delivered": [odd[0]], "offline": [""], "stored": [], "queued": odd,
                    "refused": [{"user": "d\ne", "error": "disk \"full\"", "code": "store_failed"}],
                    "failed": {"x\t@b": "peer_unreachable"},
                },
                "data": [1, {}],
            })
        );
        let empty = StoreLists {
            delivered: &[],
            offline: &[],
            stored: &[],
            queued: &[],
            refused: &[],
            failed: &UserFailures::new(),
        };
        assert_eq!(
            client_store_reply(None, "t", &empty, None),
            br#"{"header":{"status":"ok","kind":"reply","type":"t","delivered":[],"offline":[],"stored":[]},"data":null}"#
        );
        assert_eq!(
            handler_store_report(Some("7"), &empty),
            br#"{"header":{"kind":"report","status":"ok","id":"7","delivered":[],"offline":[],"stored":[]}}"#
        );
    }
}
