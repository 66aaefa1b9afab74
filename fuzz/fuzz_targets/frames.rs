//! Fuzz target `frames`: the input is what a peer writes on a socket.
//!
//! The first byte picks how the stream is cut into reads (0: one read; n: reads of n bytes); the
//! rest is fed to a [`FrameDecoder`] the way `net::Framed` does. Every frame body goes through
//! both parsers (`parse_inbound` for clients, `parse_handler_message` for handlers), and whatever
//! the broker would send back is built with its outbound helpers.
//!
//! Checked, besides "never panics":
//! - the decoder: `Ok(Some((used, body)))` has `used == body.len() + 4`, `used <= buffered`, and
//!   `body` is the bytes after the header; the frames and the outcome do not depend on the split;
//!   `Err` only for a header over the limit; `missing` agrees with `decode`;
//! - the parsers: each error has a code that parser documents; accepted messages obey the rules
//!   (type names, id length); `payload.data` is forwarded byte for byte; and the one-pass parse
//!   weakens nothing: whenever the full strict check (`validate::check`: duplicate keys anywhere,
//!   nesting over 64) refuses a body, both parsers refuse it with that check's exact text;
//! - the fast lane (`protocol::scan`): whenever it reads a body, the serde path alone
//!   (`parse_inbound_full`, `parse_handler_message_full`, `parse_peer_frame_full`) accepts it with
//!   the same value;
//! - every outbound body (error replies, requests to handlers, reports, pushes) is valid JSON and
//!   carries the code as `ErrorCode::as_str` spells it.
#![no_main]

use besterd::protocol::ErrorCode;
use besterd::protocol::error::ErrorBody;
use besterd::protocol::frame::{FrameDecoder, FrameError, HEADER_LEN};
use besterd::protocol::handler::{
    Command, handler_delivery_report, handler_error_report, parse_handler_message,
    parse_handler_message_full,
};
use besterd::protocol::login::Authentication;
use besterd::protocol::message::{
    ClientFrame, ClientHeader, Credentials, Inbound, MAX_ID_LEN, PayloadRef, Scope, Sender,
    client_error, client_ok, handler_request_token, inbound_id, parse_inbound, parse_inbound_full,
    parse_json, to_body, validate_type,
};
use besterd::protocol::peer::parse_peer_frame_full;
use besterd::protocol::scan;
use besterd::protocol::stream;
use besterd::protocol::validate;
use besterd::protocol::write::{client_push, client_reply, handler_request};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Frame limit for the run: small, so oversized headers are easy to hit.
const MAX_FRAME: usize = 4096;

/// Codes `parse_inbound` may answer with.
const INBOUND_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidUtf8,
    ErrorCode::InvalidJson,
    ErrorCode::InvalidMessage,
    ErrorCode::UnknownScope,
];

/// Codes `parse_handler_message` may answer with.
const HANDLER_CODES: &[ErrorCode] = &[
    ErrorCode::InvalidUtf8,
    ErrorCode::InvalidJson,
    ErrorCode::InvalidMessage,
    ErrorCode::BadHandlerReply,
];

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let split = if split == 0 {
        stream.len()
    } else {
        usize::from(split)
    };
    let chunked = decode_stream(stream, split);
    // The same bytes in one read must give the same frames and the same end.
    assert_eq!(
        chunked,
        decode_stream(stream, stream.len()),
        "split {split}"
    );
    for body in &chunked.frames {
        check_inbound(body);
        check_handler(body);
        check_strict(body);
        check_fast_lane(body);
        check_stream(body);
    }
});

/// A stream frame (PROTOCOL.md §5, "Streams"): its parse never panics, refuses what the strict
/// check refuses with the check's text, and what it accepts is relayed as valid JSON with its
/// `data` byte for byte.
fn check_stream(body: &[u8]) {
    let _ = stream::is_stream_frame(body);
    match stream::parse(body) {
        Ok(frame) => {
            if let stream::StreamOp::Data(data) = frame.op {
                let out = stream::data_frame(frame.stream, data);
                #[derive(Deserialize)]
                struct Relayed<'a> {
                    #[serde(borrow)]
                    data: &'a RawValue,
                }
                let relayed: Relayed = serde_json::from_slice(&out).expect("relayed frame is JSON");
                assert_eq!(relayed.data.get(), data);
            }
        }
        Err(e) => {
            if let Ok(text) = std::str::from_utf8(body)
                && validate::check(text).is_err()
            {
                let want = parse_json::<serde::de::IgnoredAny>(body).unwrap_err();
                assert_eq!((e.code, &e.error), (want.code, &want.error));
            }
        }
    }
}

/// What the fast lane reads, the serde path alone reads the same.
fn check_fast_lane(body: &[u8]) {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if let Some(fast) = scan::client_message(text) {
        let Ok(Inbound::Message(full)) = parse_inbound_full(body) else {
            panic!("the fast lane read a client frame the full path refuses: {text}");
        };
        assert_eq!(
            (&fast.id, fast.scope, &fast.payload),
            (&full.id, full.scope, &full.payload)
        );
        assert!(full.authentication.is_none());
    }
    if let Some(fast) = scan::handler_message(text) {
        let full = parse_handler_message_full(body).unwrap_or_else(|e| {
            panic!("the fast lane read a handler frame the full path refuses ({e}): {text}")
        });
        assert_eq!(
            (
                fast.status,
                &fast.status_code,
                &fast.command,
                &fast.request,
                &fast.id,
                &fast.payload
            ),
            (
                full.status,
                &full.status_code,
                &full.command,
                &full.request,
                &full.id,
                &full.payload
            )
        );
        assert_eq!(fast.replies, full.replies);
    }
    if let Some(fast) = scan::peer::peer_frame(text) {
        let full = parse_peer_frame_full(body).unwrap_or_else(|e| {
            panic!("the fast lane read a peer frame the full path refuses ({e}): {text}")
        });
        assert_eq!(format!("{fast:?}"), format!("{full:?}"));
    }
}

/// A body the strict check refuses is refused by both parsers, with the check's text.
fn check_strict(body: &[u8]) {
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if validate::check(text).is_ok() {
        return;
    }
    // The full path's answer to the refusal (the strict check comes before any typed parse).
    let want = parse_json::<serde::de::IgnoredAny>(body).expect_err("the strict check refused it");
    let inbound = parse_inbound(body).expect_err("the strict check refused it");
    assert_eq!((inbound.code, &inbound.error), (want.code, &want.error));
    let handler = parse_handler_message(body).expect_err("the strict check refused it");
    assert_eq!((handler.code, &handler.error), (want.code, &want.error));
}

/// What a connection makes of a byte stream.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    frames: Vec<Vec<u8>>,
    /// The decode error that closed the connection, if any.
    error: Option<FrameError>,
    /// Bytes of an incomplete frame left when the stream ended.
    leftover: usize,
}

/// Feed `stream` in reads of `split` bytes, taking out every complete frame after each read.
fn decode_stream(stream: &[u8], split: usize) -> Decoded {
    let decoder = FrameDecoder::new(MAX_FRAME);
    let mut pending = Vec::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(split.max(1)) {
        pending.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            let buf = &pending[pos..];
            match decoder.decode(buf) {
                Ok(Some((used, body))) => {
                    assert_eq!(used, body.len() + HEADER_LEN);
                    assert!(used <= buf.len());
                    assert!(body.len() <= MAX_FRAME);
                    assert_eq!(body, &buf[HEADER_LEN..used]);
                    assert_eq!(decoder.missing(buf), Some(0));
                    frames.push(body.to_vec());
                    pos += used;
                }
                Ok(None) => {
                    match decoder.missing(buf) {
                        None => assert!(buf.len() < HEADER_LEN),
                        Some(missing) => {
                            assert!(missing > 0);
                            assert!(buf.len() + missing <= HEADER_LEN + MAX_FRAME);
                        }
                    }
                    break;
                }
                Err(error) => {
                    // Decided from the header alone, and only for a length over the limit.
                    let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
                    let len = u32::from_le_bytes(header);
                    assert_eq!(
                        error,
                        FrameError::TooLarge {
                            len,
                            max: MAX_FRAME
                        }
                    );
                    assert!(len as usize > MAX_FRAME);
                    let body = error.to_body();
                    assert_eq!(body.code, ErrorCode::FrameTooLarge);
                    check_error_reply(&client_error(None, &body), body.code);
                    return Decoded {
                        frames,
                        error: Some(error),
                        leftover: 0,
                    };
                }
            }
        }
        pending.drain(..pos);
    }
    Decoded {
        frames,
        error: None,
        leftover: pending.len(),
    }
}

/// A frame body from a client: parse it and build what the server would send for it.
fn check_inbound(body: &[u8]) {
    match parse_inbound(body) {
        Ok(Inbound::Identify(identify)) => {
            let error = ErrorBody::new(
                ErrorCode::BadIdentifyType,
                format!("unknown identify type {:?}", identify.kind),
            );
            check_error_reply(&client_error(None, &error), error.code);
            // Debug never shows a password, a token or an opaque login object.
            match identify.authentication {
                Some(Authentication::Password(creds)) => {
                    let want = format!(
                        "Credentials {{ username: {:?}, password: \"<redacted>\" }}",
                        creds.username
                    );
                    assert_eq!(format!("{creds:?}"), want, "Debug shows the password");
                }
                Some(Authentication::Token(secret) | Authentication::Resume(secret)) => {
                    assert_eq!(format!("{secret:?}"), "<redacted>", "Debug shows the token");
                }
                _ => {}
            }
        }
        Ok(Inbound::Message(msg)) => {
            assert!(validate_type(&msg.payload.kind).is_ok());
            assert!(msg.id.as_ref().is_none_or(|id| id.len() <= MAX_ID_LEN));
            // The lenient id reader used for errors agrees with the parser on every good frame.
            assert_eq!(inbound_id(body).as_deref(), msg.id.as_deref());
            let from = Sender {
                user: Some("fuzz".into()),
                server: "local".into(),
                handler: None,
                info: None,
            };
            let request = handler_request("1", msg.scope, &from, &[], &msg.payload);
            check_forwarded(&request, "payload", &msg.payload);
            let error = ErrorBody::new(
                ErrorCode::UnknownType,
                format!("no handler for {:?}", msg.payload.kind),
            );
            check_error_reply(&client_error(msg.id.as_deref(), &error), error.code);
            let ok = client_ok(
                msg.id.as_deref(),
                Some(&msg.payload.kind),
                &msg.payload.raw_data(),
            );
            check_forwarded(&ok, "data", &msg.payload);
            let fast = client_reply(
                msg.id.as_deref(),
                Some(&msg.payload.kind),
                msg.payload.data.as_deref(),
            );
            assert_eq!(fast, ok, "the hand-written reply is what serde writes");
            // Built-ins parse their data; failing that is invalid_message, never a panic.
            if let Err(error) = msg.payload.data_as::<Credentials>() {
                assert_eq!(error.code, ErrorCode::InvalidMessage);
                check_error_reply(&client_error(msg.id.as_deref(), &error), error.code);
            }
        }
        Err(error) => {
            assert!(INBOUND_CODES.contains(&error.code), "{error}");
            let id = inbound_id(body);
            assert!(id.as_ref().is_none_or(|id| id.len() <= MAX_ID_LEN));
            check_error_reply(&client_error(id.as_deref(), &error), error.code);
        }
    }
}

/// A frame body from a handler: parse it and build what the server would send for it.
fn check_handler(body: &[u8]) {
    match parse_handler_message(body) {
        Ok(msg) => {
            let via: Vec<String> = match &*msg.command {
                Command::SendHandler(kind) => {
                    assert!(validate_type(kind).is_ok());
                    vec![kind.clone()]
                }
                Command::SendClients(to) => {
                    // What the fan-out reads of it: users and groups, each bounded by the frame.
                    let report = handler_delivery_report(
                        msg.id.as_deref(),
                        Some(&to.users),
                        Some(&to.groups),
                        None,
                    );
                    expect_json(&report);
                    Vec::new()
                }
                Command::GroupAdd(change) | Command::GroupRemove(change) => {
                    // The router checks the names; checking any string must not panic.
                    let _ = besterd::protocol::groups::check_group_name(&change.group);
                    for user in &change.users {
                        let _ = besterd::protocol::groups::check_member_name(user);
                    }
                    Vec::new()
                }
                Command::Presence(to) => {
                    let report = besterd::protocol::groups::handler_report(
                        msg.id.as_deref(),
                        Some(&serde_json::json!({"users": to.users, "groups": to.groups})),
                    );
                    expect_json(&report);
                    Vec::new()
                }
                Command::SendServers(names) => {
                    let report =
                        handler_delivery_report(msg.id.as_deref(), Some(names), Some(&[]), None);
                    expect_json(&report);
                    Vec::new()
                }
                Command::Reply => Vec::new(),
                Command::Redirect { url, token } => {
                    assert!(besterd::protocol::redirect::check_url(url).is_ok());
                    let token = match token {
                        Some(besterd::protocol::redirect::RedirectToken::Given(t)) => {
                            Some(t.as_str())
                        }
                        _ => None,
                    };
                    let frame =
                        besterd::protocol::redirect::client_redirect(msg.id.as_deref(), url, token);
                    expect_json(&frame);
                    Vec::new()
                }
            };
            let error = ErrorBody::new(ErrorCode::HandlerLoop, "fuzz");
            let report = handler_error_report(msg.request.as_deref(), msg.id.as_deref(), &error);
            check_error_reply(&report, error.code);
            if let Some(payload) = &msg.payload {
                assert!(validate_type(&payload.kind).is_ok());
                let sender = Sender {
                    user: None,
                    server: "local".into(),
                    handler: Some(payload.kind.to_string()),
                    info: None,
                };
                let push = to_body(&ClientFrame {
                    header: ClientHeader::push(&payload.kind, &sender),
                    data: &payload.raw_data(),
                });
                check_forwarded(&push, "data", payload);
                assert_eq!(
                    client_push(&payload.kind, &sender, payload.data.as_deref()),
                    push,
                    "the hand-written push is what serde writes"
                );
                let reply = client_ok(
                    msg.request.as_deref(),
                    Some(&payload.kind),
                    &payload.raw_data(),
                );
                check_forwarded(&reply, "data", payload);
                let next = handler_request("2", Scope::Client, &sender, &via, payload);
                check_forwarded(&next, "payload", payload);
            }
        }
        Err(error) => {
            assert!(HANDLER_CODES.contains(&error.code), "{error}");
            let token = handler_request_token(body);
            check_error_reply(
                &handler_error_report(token.as_deref(), None, &error),
                error.code,
            );
        }
    }
}

/// Check an outbound body is one JSON value and return it unparsed. `RawValue` checks the syntax
/// without serde_json's nesting limit of 128, which forwarded `payload.data` may exceed.
fn expect_json(body: &[u8]) -> &RawValue {
    let text = std::str::from_utf8(body).expect("outbound body is not UTF-8");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("outbound body is not JSON: {e}: {text}"))
}

/// The parts of an outbound body these checks look at; other fields are ignored.
#[derive(Deserialize)]
struct Outbound<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    payload: Option<ForwardedPayload<'a>>,
}

#[derive(Deserialize)]
struct ForwardedPayload<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct WireError {
    error: String,
    code: String,
}

/// An error reply or report: valid JSON whose `data.code` is the code as documented.
fn check_error_reply(body: &[u8], code: ErrorCode) {
    let outbound: Outbound = serde_json::from_str(expect_json(body).get()).unwrap();
    let error: WireError = serde_json::from_str(outbound.data.expect("no data").get()).unwrap();
    assert_eq!(error.code, code.as_str());
    assert!(!error.error.is_empty());
}

/// A body that forwards `payload`: valid JSON, with the data byte for byte as received
/// (`null` when there was none), under `payload.data` or `data`.
fn check_forwarded(body: &[u8], field: &str, payload: &PayloadRef<'_>) {
    let outbound: Outbound = serde_json::from_str(expect_json(body).get()).unwrap();
    let sent = match field {
        "payload" => {
            let forwarded = outbound.payload.expect("no payload");
            assert_eq!(forwarded.kind, payload.kind);
            Some(forwarded.data)
        }
        _ => outbound.data,
    };
    let received = payload.data.as_deref().unwrap_or("null");
    assert_eq!(sent.map_or("null", RawValue::get), received);
}
