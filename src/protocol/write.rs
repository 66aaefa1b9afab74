//! The hot-path writer: the frames a broker sends most, a request to a handler, the reply to a
//! client, a push to a user (`sendClients`), and a message to a peer server and its ok ack,
//! written by hand into a pooled body buffer, with `data` copied as the text it came
//! in. The bytes are exactly what serde writes for the same frame (the tests compare them), so
//! every other frame can stay serde-serialized beside these.

use super::message::{PayloadRef, Scope, Sender};
use super::pool;

/// JSON string escapes as serde_json writes them: `\"`, `\\`, the short forms of five control
/// characters, and `\u00XX` (lowercase hex) for the other control characters; 0 = copied as is.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = b'u';
        c += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Append `s` as a JSON string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Append `"key":` (keys are our own field names: nothing to escape).
pub(super) fn key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Append `,"key":"value"` when there is a value.
pub(super) fn optional(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        out.push(b',');
        key(out, name);
        string(out, value);
    }
}

/// Append JSON text as it is, or `null`.
pub(super) fn raw(out: &mut Vec<u8>, json: Option<&str>) {
    out.extend_from_slice(json.unwrap_or("null").as_bytes());
}

/// `from`; its `info` only in requests to handlers (`with_info`), never in pushes to clients.
fn sender(out: &mut Vec<u8>, from: &Sender, with_info: bool) {
    out.push(b'{');
    if let Some(user) = &from.user {
        key(out, "user");
        string(out, user);
        out.push(b',');
    }
    key(out, "server");
    string(out, &from.server);
    optional(out, "handler", from.handler.as_deref());
    if with_info && let Some(info) = &from.info {
        out.push(b',');
        key(out, "info");
        raw(out, Some(info.0.get()));
    }
    out.push(b'}');
}

/// The body of a request to a handler:
/// `{"header":{"kind":"request","request":R,"scope":S,"from":F,"via":[..]},"payload":P}`, `via`
/// only when the request came through a `sendHandler` chain.
pub fn handler_request(
    request: &str,
    scope: Scope,
    from: &Sender,
    via: &[String],
    payload: &PayloadRef<'_>,
) -> Vec<u8> {
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"kind\":\"request\",\"request\":");
    string(&mut out, request);
    out.extend_from_slice(match scope {
        Scope::Client => b",\"scope\":\"client\",\"from\":".as_slice(),
        Scope::Server => b",\"scope\":\"server\",\"from\":",
    });
    sender(&mut out, from, true);
    if !via.is_empty() {
        out.extend_from_slice(b",\"via\":[");
        for (i, kind) in via.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(&mut out, kind);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"payload\":{\"type\":");
    string(&mut out, &payload.kind);
    out.extend_from_slice(b",\"data\":");
    raw(&mut out, payload.data.as_deref());
    out.extend_from_slice(b"}}");
    out
}

/// The body of a login request to an auth handler:
/// `{"header":{"kind":"login","request":R,"from":{"address":A,"listener":L,"transport":T}},"payload":{"type":"bester.login","data":D}}`,
/// `D` being the client's `authentication` object as JSON text.
pub fn handler_login_request(
    request: &str,
    address: &str,
    (listener, transport): (&str, &str),
    authentication: &str,
) -> Vec<u8> {
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"kind\":\"login\",\"request\":");
    string(&mut out, request);
    out.extend_from_slice(b",\"from\":{\"address\":");
    string(&mut out, address);
    out.extend_from_slice(b",\"listener\":");
    string(&mut out, listener);
    out.extend_from_slice(b",\"transport\":");
    string(&mut out, transport);
    out.extend_from_slice(b"}},\"payload\":{\"type\":\"bester.login\",\"data\":");
    raw(&mut out, Some(authentication));
    out.extend_from_slice(b"}}");
    out
}

/// The body of a plain ok reply to a client:
/// `{"header":{"status":"ok","kind":"reply","id":I,"type":T},"data":D}`.
pub fn client_reply(id: Option<&str>, kind_of: Option<&str>, data: Option<&str>) -> Vec<u8> {
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"status\":\"ok\",\"kind\":\"reply\"");
    optional(&mut out, "id", id);
    optional(&mut out, "type", kind_of);
    out.extend_from_slice(b"},\"data\":");
    raw(&mut out, data);
    out.push(b'}');
    out
}

/// The body of a push to a client:
/// `{"header":{"status":"ok","kind":"push","type":T,"from":F},"data":D}`.
pub fn client_push(kind_of: &str, from: &Sender, data: Option<&str>) -> Vec<u8> {
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"status\":\"ok\",\"kind\":\"push\",\"type\":");
    string(&mut out, kind_of);
    out.extend_from_slice(b",\"from\":");
    sender(&mut out, from, false);
    out.extend_from_slice(b"},\"data\":");
    raw(&mut out, data);
    out.push(b'}');
    out
}

/// `from` of a push as JSON text (`{"user","server"[,"handler"]}`), as a stored push keeps it.
pub fn sender_json(from: &Sender) -> String {
    let mut out = Vec::new();
    sender(&mut out, from, false);
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// The body of a push that the delivery store keeps (PROTOCOL.md §4, "Stored delivery"):
/// `{"header":{"status":"ok","kind":"push","type":T,"from":F,"msg":M,"time":MS[,"stored":true]},"data":D}`
/// with `from` JSON text from [`sender_json`]; `stored` when it comes from the store (on login).
pub fn client_durable_push(
    kind_of: &str,
    from_json: &str,
    data: Option<&str>,
    (msg, time_ms): (u64, u64),
    stored: bool,
) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"status\":\"ok\",\"kind\":\"push\",\"type\":");
    string(&mut out, kind_of);
    out.extend_from_slice(b",\"from\":");
    out.extend_from_slice(from_json.as_bytes());
    write!(out, ",\"msg\":\"{msg}\",\"time\":{time_ms}").expect("writing to a Vec");
    if stored {
        out.extend_from_slice(b",\"stored\":true");
    }
    out.extend_from_slice(b"},\"data\":");
    raw(&mut out, data);
    out.push(b'}');
    out
}

/// The body of a message to a peer server:
/// `{"header":{"scope":"server","msg":M,"from":F,"hops":H},"payload":{"type":T,"data":D}}`.
pub fn peer_message(msg: u64, from: &Sender, hops: u32, payload: &PayloadRef<'_>) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"scope\":\"server\",\"msg\":\"");
    write!(out, "{msg}\",\"from\":").expect("writing to a Vec");
    sender(&mut out, from, true);
    write!(out, ",\"hops\":{hops}}},\"payload\":{{\"type\":").expect("writing to a Vec");
    string(&mut out, &payload.kind);
    out.extend_from_slice(b",\"data\":");
    raw(&mut out, payload.data.as_deref());
    out.extend_from_slice(b"}}");
    out
}

/// The body of a delivery to users of a peer server:
/// `{"header":{"scope":"users","msg":M,"from":F,"users":[..]},"payload":{"type":T,"data":D}}`.
pub fn peer_deliver<'u>(
    msg: u64,
    from: &Sender,
    users: impl IntoIterator<Item = &'u str>,
    payload: &PayloadRef<'_>,
    store: Option<u64>,
) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"scope\":\"users\",\"msg\":\"");
    write!(out, "{msg}\",\"from\":").expect("writing to a Vec");
    sender(&mut out, from, true);
    out.extend_from_slice(b",\"users\":[");
    for (i, user) in users.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(&mut out, user);
    }
    out.push(b']');
    if let Some(origin) = store {
        write!(out, ",\"store\":true,\"origin\":\"{origin}\"").expect("writing to a Vec");
    }
    out.extend_from_slice(b"},\"payload\":{\"type\":");
    string(&mut out, &payload.kind);
    out.extend_from_slice(b",\"data\":");
    raw(&mut out, payload.data.as_deref());
    out.extend_from_slice(b"}}");
    out
}

/// Append `,"failed":{"bob@b":"peer_unreachable",..}` when there are failures.
pub(super) fn failures(out: &mut Vec<u8>, failed: Option<&super::peer::UserFailures>) {
    if let Some(failed) = failed {
        out.extend_from_slice(b",\"failed\":{");
        for (i, (user, code)) in failed.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, user);
            out.push(b':');
            string(out, code);
        }
        out.push(b'}');
    }
}

/// Append `,"key":["a","b"]` when there is a list.
pub(super) fn names(out: &mut Vec<u8>, name: &str, list: Option<&[String]>) {
    if let Some(list) = list {
        out.push(b',');
        key(out, name);
        out.push(b'[');
        for (i, item) in list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, item);
        }
        out.push(b']');
    }
}

/// One server's report of a `sendServers` (`{"status":..,"delivered":..,"offline":..,"error":..,"code":..,"servers":..}`,
/// each but `status` only when there is one).
fn report(out: &mut Vec<u8>, report: &super::peer::ServerReport) {
    out.extend_from_slice(match report.status {
        super::message::Status::Ok => b"{\"status\":\"ok\"".as_slice(),
        super::message::Status::Error => b"{\"status\":\"error\"",
    });
    names(out, "delivered", report.delivered.as_deref());
    names(out, "offline", report.offline.as_deref());
    optional(out, "error", report.error.as_deref());
    optional(out, "code", report.code.as_deref());
    if let Some(servers) = &report.servers {
        out.extend_from_slice(b",\"servers\":");
        reports(out, servers);
    }
    failures(out, report.failed.as_ref());
    out.push(b'}');
}

/// Per-server reports: `{"b":{..},"c":{..}}`.
fn reports(out: &mut Vec<u8>, servers: &super::peer::ServerReports) {
    out.push(b'{');
    for (i, (server, r)) in servers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, server);
        out.push(b':');
        report(out, r);
    }
    out.push(b'}');
}

/// The body of an ok reply to a client that carries a delivery report:
/// `{"header":{"status":"ok","kind":"reply","id":I,"type":T,"delivered":[..],"offline":[..],"servers":{..},"failed":{..}},"data":D}`
/// (each of `id` … `failed` only when there is one).
pub fn client_report_reply(
    id: Option<&str>,
    kind_of: Option<&str>,
    (delivered, offline, failed): (
        Option<&[String]>,
        Option<&[String]>,
        Option<&super::peer::UserFailures>,
    ),
    servers: Option<&super::peer::ServerReports>,
    data: Option<&str>,
) -> Vec<u8> {
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"status\":\"ok\",\"kind\":\"reply\"");
    optional(&mut out, "id", id);
    optional(&mut out, "type", kind_of);
    names(&mut out, "delivered", delivered);
    names(&mut out, "offline", offline);
    if let Some(servers) = servers {
        out.extend_from_slice(b",\"servers\":");
        reports(&mut out, servers);
    }
    failures(&mut out, failed);
    out.extend_from_slice(b"},\"data\":");
    raw(&mut out, data);
    out.push(b'}');
    out
}

/// The body of an ok ack to a peer server (see [`super::peer::ack_ok`]).
pub fn peer_ack_ok(msg: &str, content: &super::peer::AckContent<'_>) -> Vec<u8> {
    let mut out = pool::take();
    out.extend_from_slice(b"{\"header\":{\"kind\":\"ack\",\"msg\":");
    string(&mut out, msg);
    out.extend_from_slice(b",\"status\":\"ok\"");
    optional(&mut out, "type", content.kind_of);
    names(&mut out, "delivered", content.delivered);
    names(&mut out, "offline", content.offline);
    if let Some(servers) = content.servers {
        out.extend_from_slice(b",\"servers\":");
        reports(&mut out, servers);
    }
    failures(&mut out, content.failed);
    out.push(b'}');
    if let Some(data) = content.data {
        out.extend_from_slice(b",\"data\":");
        raw(&mut out, Some(data));
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::value::RawValue;

    use super::*;
    use crate::protocol::message::{ClientFrame, ClientHeader, Payload, Status, to_body};

    /// Strings with every byte that needs escaping, and some that do not.
    fn strings() -> Vec<String> {
        let mut all: Vec<String> = (0u8..0x80).map(|b| format!("a{}z", b as char)).collect();
        all.extend(
            [
                "",
                "plain",
                "€😀",
                "\"\\\u{7f}/",
                "line\nline\r\t\u{8}\u{c}",
            ]
            .map(String::from),
        );
        all
    }

    #[test]
    fn strings_are_escaped_as_serde_does() {
        for s in strings() {
            let mut out = Vec::new();
            string(&mut out, &s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&s).unwrap()
            );
        }
    }

    #[test]
    fn peer_messages_and_acks_are_what_serde_writes() {
        use crate::protocol::peer::{AckContent, ServerReport, ServerReports};
        #[derive(serde::Serialize)]
        struct MessageHeader<'a> {
            scope: &'static str,
            msg: &'a str,
            from: &'a Sender,
            hops: u32,
        }
        #[derive(serde::Serialize)]
        struct Message<'a> {
            header: MessageHeader<'a>,
            payload: &'a Payload,
        }
        #[derive(serde::Serialize)]
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
        }
        #[derive(serde::Serialize)]
        struct Ack<'a> {
            header: AckHeader<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            data: Option<&'a RawValue>,
        }
        let from = Sender {
            user: Some("al\"ice".into()),
            server: "a".into(),
            handler: None,
            info: None,
        };
        for data in [None, Some("{\"t\":[1,\"\\n\"]}"), Some("\"s\"")] {
            let payload = Payload::new(
                "ch\tat",
                data.map(|d| RawValue::from_string(d.into()).unwrap()),
            );
            let expected = serde_json::to_string(&Message {
                header: MessageHeader {
                    scope: "server",
                    msg: "7",
                    from: &from,
                    hops: 3,
                },
                payload: &payload,
            })
            .unwrap();
            let got = peer_message(7, &from, 3, &payload.as_ref());
            assert_eq!(String::from_utf8(got).unwrap(), expected);
        }
        let users = ["bob".to_string(), "c\"d".to_string()];
        let mut servers = ServerReports::new();
        servers.insert(
            "c".into(),
            ServerReport::failed(crate::protocol::ErrorCode::PeerTimeout, "late"),
        );
        let raw = RawValue::from_string("{\"x\":1}".into()).unwrap();
        for (kind_of, data, lists, servers) in [
            (None, None, false, None),
            (Some("chat"), Some(&*raw), true, None),
            (Some("chat"), None, false, Some(&servers)),
        ] {
            let content = AckContent {
                kind_of,
                data: data.map(RawValue::get),
                delivered: lists.then_some(&users[..1]),
                offline: lists.then_some(&users[1..]),
                servers,
                failed: None,
            };
            let expected = serde_json::to_string(&Ack {
                header: AckHeader {
                    kind: "ack",
                    msg: "9",
                    status: Status::Ok,
                    kind_of,
                    delivered: content.delivered,
                    offline: content.offline,
                    servers,
                },
                data,
            })
            .unwrap();
            let got = peer_ack_ok("9", &content);
            assert_eq!(String::from_utf8(got).unwrap(), expected);
        }
    }

    #[test]
    fn client_replies_with_reports_are_what_serde_writes() {
        use crate::protocol::peer::{ServerReport, ServerReports};
        let users = ["bob".to_string(), "c\"d".to_string()];
        let mut inner = ServerReports::new();
        inner.insert(
            "c\n".into(),
            ServerReport::failed(crate::protocol::ErrorCode::PeerTimeout, "la\"te"),
        );
        let mut servers = ServerReports::new();
        servers.insert(
            "b".into(),
            ServerReport {
                status: Status::Ok,
                delivered: Some(users.to_vec()),
                offline: Some(vec![]),
                error: None,
                code: None,
                servers: Some(inner.clone()),
                failed: None,
            },
        );
        servers.insert(
            "d".into(),
            ServerReport::failed(crate::protocol::ErrorCode::UnknownPeer, "no"),
        );
        let raw = RawValue::from_string("{\"b\":[1]}".into()).unwrap();
        for (id, kind_of, lists, servers, data) in [
            (Some("1"), Some("chat"), false, Some(&servers), None),
            (None, Some("t"), true, None, Some(&*raw)),
            (Some("x\"y"), None, true, Some(&inner), Some(&*raw)),
            (None, None, false, Some(&ServerReports::new()), None),
        ] {
            let (delivered, offline) = if lists {
                (Some(&users[..1]), Some(&users[1..]))
            } else {
                (None, None)
            };
            let mut header = ClientHeader::reply(Status::Ok, id);
            header.kind_of = kind_of;
            header.delivered = delivered;
            header.offline = offline;
            header.servers = servers;
            let expected = to_body(&ClientFrame {
                header,
                data: &data,
            });
            let got = client_report_reply(
                id,
                kind_of,
                (delivered, offline, None),
                servers,
                data.map(RawValue::get),
            );
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    /// `protocol/vectors/auth_handler.json`: the login request, byte-exact.
    #[test]
    fn the_vectors_login_request() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../protocol/vectors/auth_handler.json")).unwrap();
        let identify: serde_json::Value =
            serde_json::from_str(vectors["identify"].as_str().unwrap()).unwrap();
        let auth = identify["header"]["identify"]["authentication"].to_string();
        let got = handler_login_request("7", "192.0.2.10:50312", ("main", "tcp"), &auth);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            vectors["request"].as_str().unwrap()
        );
    }

    #[test]
    fn login_requests_are_what_serde_writes() {
        for (address, listener) in [("127.0.0.1:5000", "tcp"), ("[::1]:7", "w\"s\n")] {
            let auth = r#"{"apiKey":"k\"1","n":[1]}"#;
            let got = handler_login_request("9", address, (listener, "wss"), auth);
            let expected = serde_json::json!({
                "header": {"kind": "login", "request": "9",
                           "from": {"address": address, "listener": listener, "transport": "wss"}},
                "payload": {"type": "bester.login", "data": {"apiKey": "k\"1", "n": [1]}},
            });
            let got: serde_json::Value = serde_json::from_slice(&got).unwrap();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn requests_are_what_serde_writes() {
        #[derive(serde::Serialize)]
        struct Header<'a> {
            kind: &'static str,
            request: &'a str,
            scope: Scope,
            from: &'a Sender,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            via: &'a [String],
        }
        #[derive(serde::Serialize)]
        struct Frame<'a> {
            header: Header<'a>,
            payload: &'a Payload,
        }
        let senders = [
            Sender {
                user: Some("al\"ice".into()),
                server: "s1".into(),
                handler: None,
                info: None,
            },
            Sender {
                user: None,
                server: "s\n2".into(),
                handler: Some("chat".into()),
                info: None,
            },
            Sender {
                user: Some("bob".into()),
                server: "s".into(),
                handler: None,
                info: Some(crate::protocol::message::Info(
                    RawValue::from_string(r#"{"role":"admin","n":[1]}"#.into()).unwrap(),
                )),
            },
        ];
        let vias: [Vec<String>; 3] = [vec![], vec!["a".into()], vec!["a".into(), "b.c".into()]];
        let datas = [
            None,
            Some("{\"x\":[1,2.5,\"\\n\"]}"),
            Some("\"s\""),
            Some("null"),
        ];
        for (i, from) in senders.iter().enumerate() {
            for via in &vias {
                for data in datas {
                    let scope = [Scope::Client, Scope::Server][i % 2];
                    let payload = Payload::new(
                        "echo",
                        data.map(|d| RawValue::from_string(d.into()).unwrap()),
                    );
                    let expected = serde_json::to_vec(&Frame {
                        header: Header {
                            kind: "request",
                            request: "42",
                            scope,
                            from,
                            via,
                        },
                        payload: &payload,
                    })
                    .unwrap();
                    let got = handler_request("42", scope, from, via, &payload.as_ref());
                    assert_eq!(
                        String::from_utf8(got).unwrap(),
                        String::from_utf8(expected).unwrap()
                    );
                }
            }
        }
        // `data: null` in a frame is no data: written as `null` either way.
        let payload = PayloadRef {
            kind: Cow::Borrowed("t"),
            data: None,
        };
        let got = handler_request("1", Scope::Client, &senders[0], &[], &payload);
        assert!(got.ends_with(b"\"data\":null}}"));
    }

    #[test]
    fn pushes_are_what_serde_writes() {
        let senders = [
            Sender {
                user: Some("a\u{1}lice".into()),
                server: "s".into(),
                handler: None,
                info: None,
            },
            Sender {
                user: None,
                server: "s".into(),
                handler: Some("chat".into()),
                info: None,
            },
        ];
        for from in &senders {
            for data in [None, Some("{\"text\":\"hi\\n\"}")] {
                let raw = data.map(|d| RawValue::from_string(d.into()).unwrap());
                let expected = to_body(&ClientFrame {
                    header: ClientHeader::push("chat", from),
                    data: &raw,
                });
                assert_eq!(
                    String::from_utf8(client_push("chat", from, data)).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
    }

    #[test]
    fn replies_are_what_serde_writes() {
        for id in [None, Some("7"), Some("a\"b\u{1}")] {
            for kind in [None, Some("echo")] {
                for data in [None, Some("{\"k\":\"v\"}"), Some("[]")] {
                    let raw = data.map(|d| RawValue::from_string(d.into()).unwrap());
                    let mut header = ClientHeader::reply(Status::Ok, id);
                    header.kind_of = kind;
                    let expected = to_body(&ClientFrame { header, data: &raw });
                    assert_eq!(
                        String::from_utf8(client_reply(id, kind, data)).unwrap(),
                        String::from_utf8(expected).unwrap()
                    );
                }
            }
        }
    }
}
