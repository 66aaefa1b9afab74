//! Client-to-client streams on the wire (PROTOCOL.md §5, "Streams"): the data of
//! `bester.dial`, `bester.accept` and `bester.refuse`, the stream frames a connection that
//! negotiated `stream` sends (`{"header":{"stream":N},"data":D}`, a credit grant
//! `{"header":{"stream":N,"credit":C}}`, an end `{"header":{"stream":N,"end":true}}`), and the
//! frames the server writes for them (`incoming`, `stream`, `credit`, `end`).
//!
//! Pure: which connection may dial whom and where a frame goes is the router's
//! (`router/streams.rs`). A stream frame is not a message: it has no id and gets no reply.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ErrorCode;
use super::error::ErrorBody;
use super::message::Sender;
use super::{pool, write};

/// Ask a user for a stream.
pub const DIAL: &str = "bester.dial";
/// Take a stream one was offered (`incoming`).
pub const ACCEPT: &str = "bester.accept";
/// Turn a stream one was offered down.
pub const REFUSE: &str = "bester.refuse";

/// Longest stream name a dialler may choose, in bytes.
pub const MAX_NAME: usize = 64;

/// What a data frame costs of its writer's credit besides the text of its `data`: at least the
/// rest of the frame the reader is sent, so that the bytes queued for a reader never exceed the
/// credit it granted.
pub const FRAME_COST: usize = 128;

/// `data` of `bester.dial`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialData {
    /// The user asked.
    pub to: String,
    /// The dialler's name for the stream.
    pub stream: String,
}

/// `data` of `bester.accept` and `bester.refuse`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerData {
    /// The stream id of the `incoming` answered.
    pub stream: u64,
}

/// A dialler's stream name: 1 to [`MAX_NAME`] bytes, no control characters.
pub fn check_name(name: &str) -> Result<(), ErrorBody> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ErrorBody::new(
            ErrorCode::InvalidMessage,
            format!(
                "bad data for \"bester.dial\": stream must be 1 to {MAX_NAME} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// What a stream frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOp<'a> {
    /// Relay `data` (its JSON text) to the other side.
    Data(&'a str),
    /// The reader grants its writer this many more bytes.
    Credit(u64),
    /// End the stream, both ways.
    End,
}

/// A parsed stream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFrame<'a> {
    /// The stream id, as this server numbered it.
    pub stream: u64,
    /// What it asks for.
    pub op: StreamOp<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    stream: u64,
    #[serde(default)]
    credit: Option<u64>,
    #[serde(default)]
    end: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Borrowed<'a> {
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

/// Whether a frame starts as the stream frames the libraries write (`{"header":{"stream":`):
/// the cheap test, before a frame is parsed as a message.
pub fn starts_as_stream(body: &[u8]) -> bool {
    body.starts_with(br#"{"header":{"stream":"#)
}

/// Whether a frame is meant as a stream frame: its header has a `stream` key (a lenient parse,
/// for frames that did not parse as a message).
pub fn is_stream_frame(body: &[u8]) -> bool {
    if starts_as_stream(body) {
        return true;
    }
    #[derive(Deserialize)]
    struct Probe {
        header: ProbeHeader,
    }
    #[derive(Deserialize)]
    struct ProbeHeader {
        #[serde(default)]
        stream: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.header.stream.is_some())
}

/// Parse a stream frame. Errors are exact, as for messages (PROTOCOL.md §9).
pub fn parse(body: &[u8]) -> Result<StreamFrame<'_>, ErrorBody> {
    let parsed = std::str::from_utf8(body).ok().and_then(|text| {
        let frame: Borrowed = serde_json::from_str(text).ok()?;
        match frame.data {
            Some(raw) if super::validate::check_at(raw.get(), 1).is_err() => None,
            _ => Some(frame),
        }
    });
    let frame = match parsed {
        Some(frame) => frame,
        None => {
            // The full path, for its exact error (it refuses what the fast one refused).
            super::message::parse_json::<Owned>(body)?;
            return Err(ErrorBody::new(
                ErrorCode::InvalidMessage,
                "a stream frame that could not be read",
            ));
        }
    };
    let RawHeader {
        stream,
        credit,
        end,
    } = frame.header;
    let op = match (frame.data, credit, end) {
        (Some(data), None, None) => StreamOp::Data(data.get()),
        (None, Some(0), None) => return Err(invalid("header.credit must be at least 1")),
        (None, Some(credit), None) => StreamOp::Credit(credit),
        (None, None, Some(true)) => StreamOp::End,
        (None, None, Some(false)) => return Err(invalid("header.end, when sent, is true")),
        (None, None, None) => {
            return Err(invalid(
                "a stream frame carries data, header.credit or header.end",
            ));
        }
        _ => {
            return Err(invalid(
                "a stream frame carries only one of data, header.credit and header.end",
            ));
        }
    };
    Ok(StreamFrame { stream, op })
}

fn invalid(text: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidMessage, text)
}

/// What a data frame with this `data` text costs its writer.
pub fn cost(data: &str) -> u64 {
    (data.len() + FRAME_COST) as u64
}

fn head(out: &mut Vec<u8>, status: &str, kind: &str, stream: u64) {
    out.extend_from_slice(b"{\"header\":{\"status\":\"");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"stream\":");
    number(out, stream);
}

fn number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `{"header":{"status":"ok","kind":"stream","stream":N},"data":D}`: relayed data.
pub fn data_frame(stream: u64, data: &str) -> Vec<u8> {
    let mut out = pool::take();
    out.reserve(data.len() + 64);
    head(&mut out, "ok", "stream", stream);
    out.extend_from_slice(b"},\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    out
}

/// `{"header":{"status":"ok","kind":"credit","stream":N,"credit":C}}`: the reader granted more.
pub fn credit_frame(stream: u64, credit: u64) -> Vec<u8> {
    let mut out = pool::take();
    head(&mut out, "ok", "credit", stream);
    out.extend_from_slice(b",\"credit\":");
    number(&mut out, credit);
    out.extend_from_slice(b"}}");
    out
}

/// `{"header":{"status":"ok","kind":"end","stream":N},"data":null}`: the other side ended it;
/// with an error, `status` "error" and the error as `data`.
pub fn end_frame(stream: u64, error: Option<&ErrorBody>) -> Vec<u8> {
    let mut out = pool::take();
    head(
        &mut out,
        if error.is_some() { "error" } else { "ok" },
        "end",
        stream,
    );
    out.extend_from_slice(b"},\"data\":");
    match error {
        None => out.extend_from_slice(b"null"),
        Some(error) => {
            out.extend_from_slice(b"{\"error\":");
            write::string(&mut out, &error.error);
            out.extend_from_slice(b",\"code\":\"");
            out.extend_from_slice(error.code.as_str().as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b'}');
    out
}

/// `{"header":{"status":"ok","kind":"incoming","stream":N,"from":F},"data":{"name":S,"window":W}}`:
/// `from` asks this connection for a stream.
pub fn incoming_frame(stream: u64, from: &Sender, name: &str, window: u64) -> Vec<u8> {
    let mut out = pool::take();
    head(&mut out, "ok", "incoming", stream);
    out.extend_from_slice(b",\"from\":");
    out.extend_from_slice(write::sender_json(from).as_bytes());
    out.extend_from_slice(b"},\"data\":{\"name\":");
    write::string(&mut out, name);
    out.extend_from_slice(b",\"window\":");
    number(&mut out, window);
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn code(body: &str) -> (ErrorCode, String) {
        let e = parse(body.as_bytes()).unwrap_err();
        (e.code, e.error)
    }

    #[test]
    fn the_three_frames_parse() {
        let f = parse(br#"{"header":{"stream":7},"data":{"a":[1,2]}}"#).unwrap();
        assert_eq!(f.stream, 7);
        assert_eq!(f.op, StreamOp::Data(r#"{"a":[1,2]}"#));
        let f = parse(br#"{"header":{"stream":7,"credit":4096}}"#).unwrap();
        assert_eq!(f.op, StreamOp::Credit(4096));
        let f = parse(br#"{"data":"x","header":{"end":true,"stream":3}}"#);
        assert!(f.is_err());
        let f = parse(br#"{"header":{"end":true,"stream":3}}"#).unwrap();
        assert_eq!(f.op, StreamOp::End);
    }

    #[test]
    fn bad_frames_get_exact_errors() {
        assert_eq!(
            code(r#"{"header":{"stream":7}}"#).1,
            "a stream frame carries data, header.credit or header.end"
        );
        assert_eq!(
            code(r#"{"header":{"stream":7,"credit":0}}"#).1,
            "header.credit must be at least 1"
        );
        assert_eq!(
            code(r#"{"header":{"stream":7,"credit":5},"data":1}"#).1,
            "a stream frame carries only one of data, header.credit and header.end"
        );
        let (c, text) = code(r#"{"header":{"stream":"7"},"data":1}"#);
        assert_eq!(c, ErrorCode::InvalidMessage);
        assert_eq!(text, "header.stream: invalid type: string, expected u64");
        let (c, text) = code(r#"{"header":{"stream":7,"id":"x"},"data":1}"#);
        assert_eq!(c, ErrorCode::InvalidMessage);
        assert!(text.starts_with("header: unknown field `id`"), "{text}");
        let (c, text) = code(r#"{"header":{"stream":7},"data":{"k":1,"k":2}}"#);
        assert_eq!(c, ErrorCode::InvalidMessage);
        assert!(text.starts_with("duplicate key"), "{text}");
    }

    #[test]
    fn stream_frames_are_told_from_messages() {
        assert!(is_stream_frame(br#"{"header":{"stream":1},"data":1}"#));
        assert!(is_stream_frame(
            br#"{ "header" : {"end":true, "stream":1}}"#
        ));
        assert!(!is_stream_frame(
            br#"{"header":{"scope":"client"},"payload":{"type":"x"}}"#
        ));
        assert!(!is_stream_frame(b"not json"));
    }

    #[test]
    fn written_frames_are_json_of_the_documented_shape() {
        let parse = |body: Vec<u8>| serde_json::from_slice::<Value>(&body).unwrap();
        assert_eq!(
            parse(data_frame(18446744073709551615, r#"{"x":"y"}"#)),
            json!({"header":{"status":"ok","kind":"stream","stream":18446744073709551615u64},"data":{"x":"y"}})
        );
        assert!(data_frame(u64::MAX, "").len() <= FRAME_COST);
        assert_eq!(
            parse(credit_frame(0, 65536)),
            json!({"header":{"status":"ok","kind":"credit","stream":0,"credit":65536}})
        );
        assert_eq!(
            parse(end_frame(9, None)),
            json!({"header":{"status":"ok","kind":"end","stream":9},"data":null})
        );
        let e = ErrorBody::new(ErrorCode::InvalidMessage, "a \"quoted\"\ntext");
        assert_eq!(
            parse(end_frame(9, Some(&e))),
            json!({"header":{"status":"error","kind":"end","stream":9},"data":{"error":"a \"quoted\"\ntext","code":"invalid_message"}})
        );
        let from = Sender {
            user: Some("alice".into()),
            server: "s".into(),
            handler: None,
            info: None,
        };
        assert_eq!(
            parse(incoming_frame(4, &from, "s\"1", 1024)),
            json!({"header":{"status":"ok","kind":"incoming","stream":4,"from":{"user":"alice","server":"s"}},"data":{"name":"s\"1","window":1024}})
        );
    }

    #[test]
    fn names_are_bounded() {
        check_name("s1").unwrap();
        check_name(&"x".repeat(MAX_NAME)).unwrap();
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
        assert!(check_name("a\nb").is_err());
    }
}
