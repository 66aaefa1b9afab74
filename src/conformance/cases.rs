//! What the kit sends and what it expects back: the cases of `protocol/vectors/handlers.json`
//! (built into the binary) for the type under test, and the **probe**, the one request whose answer
//! the generic checks (pipelining, splits, odd tokens…) know.
//!
//! The probe is `--request DATA` (with `--expect DATA`: the data of the ok `reply` it must get;
//! without, any answer besterd accepts will do), else the first request of the type's first
//! vector case with the answer that case gives it, else `{}` with any answer. When the expected
//! answer is an ok reply carrying the request's own payload (an echo handler), the probe is
//! *echo-compatible*: checks that pipeline many requests then give each one data of its own (the
//! probe's object plus `"seq": N`), so an answer swapped between requests is caught too.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::instance::SERVER;
use crate::protocol::message::{PayloadRef, Scope, Sender};
use crate::protocol::{validate, write};

/// The handler exchanges of `protocol/vectors/handlers.json`.
const HANDLER_VECTORS: &str = include_str!("../../protocol/vectors/handlers.json");

/// One case of `handlers.json`: feed `requests` in order to a fresh instance started with `env`;
/// the frames written back must equal `answers`, compared as parsed JSON.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// Extra environment for the program.
    pub env: BTreeMap<String, String>,
    /// Frames the broker sends (requests and reports), as JSON.
    pub requests: Vec<Value>,
    /// Frames the handler must write back, in order.
    pub answers: Vec<Value>,
}

/// The cases whose `handler` is `kind`.
pub fn cases_for(kind: &str) -> Vec<Case> {
    let doc: Value = serde_json::from_str(HANDLER_VECTORS).expect("handlers.json is JSON");
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    doc["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["handler"] == kind)
        .map(|c| Case {
            name: c["name"].as_str().unwrap_or_default().to_string(),
            env: c["env"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            requests: list(&c["requests"]),
            answers: list(&c["answers"]),
        })
        .collect()
}

/// The request of the generic checks.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `payload.type` (the type under test).
    pub kind: String,
    /// `payload.data` as JSON text.
    pub data: String,
    /// The answer it must get, less `header.request`; `None`: any answer besterd accepts.
    pub expect: Option<Value>,
    /// The expected answer is the request's payload sent back.
    pub echo: bool,
    /// Where it comes from, for the report.
    pub source: String,
}

impl Probe {
    /// From `--request` / `--expect`, else the vectors of `kind`. An error is a usage error.
    pub fn new(kind: &str, request: Option<&str>, expect: Option<&str>) -> Result<Probe, String> {
        let checked = |flag: &str, text: &str| -> Result<Value, String> {
            validate::check(text).map_err(|e| format!("{flag}: not valid JSON: {e}"))?;
            serde_json::from_str(text).map_err(|e| format!("{flag}: not valid JSON: {e}"))
        };
        if let Some(text) = request {
            checked("--request", text)?;
            let expect = match expect {
                Some(want) => Some(json!({
                    "header": {"status": "ok", "command": "reply"},
                    "payload": {"type": kind, "data": checked("--expect", want)?},
                })),
                None => None,
            };
            return Ok(Probe::finish(kind, text.to_string(), expect, "--request"));
        }
        if expect.is_some() {
            return Err("--expect needs --request".to_string());
        }
        for case in cases_for(kind) {
            let Some(first) = case.requests.first() else {
                continue;
            };
            let token = &first["header"]["request"];
            if first["header"]["kind"] != "request" || !token.is_string() {
                continue;
            }
            let answer = case
                .answers
                .iter()
                .find(|a| &a["header"]["request"] == token);
            if let Some(answer) = answer {
                let mut expect = answer.clone();
                if let Some(header) = expect["header"].as_object_mut() {
                    header.remove("request");
                }
                let data = first["payload"].get("data").cloned().unwrap_or(Value::Null);
                let source = format!("vector {:?}", case.name);
                return Ok(Probe::finish(kind, data.to_string(), Some(expect), &source));
            }
        }
        Ok(Probe::finish(
            kind,
            "{}".to_string(),
            None,
            "none (any answer)",
        ))
    }

    fn finish(kind: &str, data: String, expect: Option<Value>, source: &str) -> Probe {
        let sent: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
        let echo = expect.as_ref().is_some_and(|e| {
            e["header"]["status"] == "ok"
                && e["header"].get("command").is_none_or(|c| c == "reply")
                && e["payload"]["type"] == kind
                && e["payload"].get("data").unwrap_or(&Value::Null) == &sent
        }) && sent.is_object();
        Probe {
            kind: kind.to_string(),
            data,
            expect,
            echo,
            source: source.to_string(),
        }
    }

    /// The data of request number `seq` of a pipelined batch: the probe's own, or (echo) the
    /// probe's object with `"seq": seq`.
    pub fn data_for(&self, seq: usize) -> String {
        if !self.echo {
            return self.data.clone();
        }
        let mut data: Value = serde_json::from_str(&self.data).unwrap_or(Value::Null);
        if let Some(object) = data.as_object_mut() {
            object.insert("seq".to_string(), json!(seq));
        }
        data.to_string()
    }

    /// The request frame body besterd would write for `token` with `data`.
    pub fn request(&self, token: &str, data: &str) -> Vec<u8> {
        let from = sender();
        let payload = PayloadRef {
            kind: self.kind.as_str().into(),
            data: (data != "null").then(|| data.into()),
        };
        write::handler_request(token, Scope::Client, &from, &[], &payload)
    }

    /// The answer expected for `token` and `data` (of [`Probe::data_for`]), if known.
    pub fn expected(&self, token: &str, data: &str) -> Option<Value> {
        let mut want = self.expect.clone()?;
        if self.echo {
            want["payload"]["data"] = serde_json::from_str(data).unwrap_or(Value::Null);
        }
        want["header"]["request"] = json!(token);
        Some(want)
    }
}

/// The sender of the kit's requests: `alice` on the kit's server.
pub fn sender() -> Sender {
    Sender {
        user: Some("alice".to_string()),
        server: SERVER.to_string(),
        handler: None,
        info: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_come_from_the_vectors_or_the_flags() {
        let echo = Probe::new("echo", None, None).unwrap();
        assert!(echo.echo);
        assert_eq!(echo.source, "vector \"echo object\"");
        assert_eq!(echo.data_for(3), r#"{"hello":"world","seq":3}"#);
        let upper = Probe::new("upper", None, None).unwrap();
        assert!(!upper.echo);
        assert_eq!(
            upper.expected("9", &upper.data_for(1)).unwrap(),
            json!({"header":{"status":"ok","command":"reply","request":"9"},
                   "payload":{"type":"upper","data":{"text":"HI"}}})
        );
        let none = Probe::new("nothing-known", None, None).unwrap();
        assert!(none.expect.is_none() && none.data == "{}");
        let flags = Probe::new("t", Some(r#"{"a":1}"#), Some(r#"{"b":2}"#)).unwrap();
        assert_eq!(
            flags.expected("1", "{}").unwrap()["payload"]["data"],
            json!({"b":2})
        );
        assert!(Probe::new("t", Some(r#"{"a":1,"a":2}"#), None).is_err());
        assert_eq!(
            Probe::new("t", None, Some("1")).unwrap_err(),
            "--expect needs --request"
        );
    }

    #[test]
    fn requests_are_what_besterd_writes() {
        let probe = Probe::new("echo", None, None).unwrap();
        let body = probe.request("17", &probe.data);
        let vectors = cases_for("echo");
        let want: Value = vectors[0].requests[0].clone();
        let mut got: Value = serde_json::from_slice(&body).unwrap();
        got["header"]["from"]["server"] = want["header"]["from"]["server"].clone();
        assert_eq!(got, want);
    }
}
