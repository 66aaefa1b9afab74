//! The checks, one function each, every one on a fresh instance of the program and every wait
//! bounded by the kit's timeout. Each returns an [`Outcome`]: `Ok` (with what was seen, maybe),
//! `Fail` with what the handler did, or `Skip` with why it does not apply (a dialled handler gets
//! one request per connection and no reports).
//!
//! [`Link`] hides the two ways of reaching a handler: one connection it makes to the kit's socket
//! (answers correlated by their `request` token, in any order), or a connection the kit dials for
//! every request (`connect`: the first frame back is the answer; a token, if any, must be right).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cases::{Case, Probe, sender};
use super::instance::{Conn, Frame, Instance, MAX_FRAME, Next, Program, canonical_json, excerpt};
use crate::protocol::ErrorCode;
use crate::protocol::encode_frame;
use crate::protocol::error::ErrorBody;
use crate::protocol::handler::{handler_delivery_report, handler_error_report};
use crate::protocol::write::handler_login_request;

/// How long after its answers a handler is watched for frames it must not send.
const GRACE: Duration = Duration::from_millis(300);
/// Why pipelining checks do not apply to a handler correlated by order.
const ONE_AT_A_TIME: &str = "besterd sends a handler correlated by order one request at a time";
/// The client address of the kit's login requests (as in `protocol/vectors/auth_handler.json`).
const LOGIN_FROM: &str = "192.0.2.10:50312";
/// How long besterd gives a handler between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the text (maybe empty) says what was seen.
    Ok(String),
    /// Failed: what the handler did.
    Fail(String),
    /// Does not apply, and why.
    Skip(String),
}

/// What every check needs.
pub struct Kit {
    /// The program under test.
    pub program: Program,
    /// The deadline of each wait.
    pub timeout: Duration,
    /// The request of the generic checks.
    pub probe: Probe,
}

impl Kit {
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    fn ms(&self) -> u128 {
        self.timeout.as_millis()
    }

    fn dialled(&self) -> bool {
        self.program.dial.is_some()
    }

    /// One encoded frame of the probe for `token`, with the data of request `seq`.
    fn frame(&self, token: &str, seq: usize) -> (Vec<u8>, String) {
        let data = self.probe.data_for(seq);
        let mut out = Vec::new();
        encode_frame(&self.probe.request(token, &data), &mut out);
        (out, data)
    }

    /// Compare answers with what the probe expects (when it knows).
    fn judge(&self, got: &BTreeMap<String, Frame>, sent: &[(String, String)]) -> Outcome {
        for (token, data) in sent {
            let Some(frame) = got.get(token) else {
                return Outcome::Fail(format!("no answer to request {token:?}"));
            };
            if let Some(want) = self.probe.expected(token, data).map(|w| canonical_json(&w))
                && frame.json != want
            {
                return Outcome::Fail(format!(
                    "answered request {token:?} with {}, expected {}",
                    excerpt(&frame.text),
                    excerpt(&want.to_string())
                ));
            }
        }
        Outcome::Ok(String::new())
    }
}

/// The kit's end of a running program.
struct Link {
    inst: Instance,
    /// Socket mode: the program's connection.
    conn: Option<Conn>,
    /// Dial mode: a connection per request not yet answered.
    dialled: Vec<(String, Conn)>,
}

impl Link {
    fn open(kit: &Kit, env: &BTreeMap<String, String>) -> Result<Link, String> {
        let mut inst = Instance::start(&kit.program, env)?;
        let conn = if inst.dialled() {
            None
        } else {
            Some(inst.connect()?)
        };
        Ok(Link {
            inst,
            conn,
            dialled: Vec::new(),
        })
    }

    /// Send request `token` as these pieces (one write each).
    fn send(&mut self, token: &str, pieces: &[&[u8]], timeout: Duration) -> Result<(), String> {
        match &mut self.conn {
            Some(conn) => conn.write_pieces(pieces, timeout),
            None => {
                let mut conn = self.inst.connect()?;
                conn.write_pieces(pieces, timeout)?;
                self.dialled.push((token.to_string(), conn));
                Ok(())
            }
        }
    }

    /// `closed the connection` plus how the process ended, if it did soon after.
    fn closed(&mut self, what: &str) -> String {
        let state = self.inst.wait_exit(Instant::now() + GRACE);
        match state {
            Some(_) => format!("{what}; it {}", self.inst.state()),
            None => what.to_string(),
        }
    }

    /// Wait for the answers to `tokens` (any order).
    fn answers(
        &mut self,
        tokens: &[String],
        deadline: Instant,
        ms: u128,
    ) -> Result<BTreeMap<String, Frame>, String> {
        let mut got = BTreeMap::new();
        if self.conn.is_none() {
            for (token, mut conn) in std::mem::take(&mut self.dialled) {
                match conn.next(deadline) {
                    Next::Frame(mut frame) => {
                        if let Some(r) = frame.request.as_deref().filter(|r| *r != token) {
                            return Err(format!("answered request {token:?} with the token {r:?}"));
                        }
                        frame.json["header"]["request"] = json!(token);
                        got.insert(token, frame);
                    }
                    Next::Closed => {
                        let what =
                            format!("closed the connection of request {token:?} without answering");
                        return Err(self.closed(&what));
                    }
                    Next::Silent => {
                        return Err(format!("did not answer request {token:?} within {ms} ms"));
                    }
                    Next::Broken(why) => return Err(why),
                }
                conn.close();
            }
            return Ok(got);
        }
        while got.len() < tokens.len() {
            let conn = self.conn.as_mut().expect("socket mode");
            match conn.next(deadline) {
                Next::Frame(frame) if frame.push => {}
                Next::Frame(mut frame) => {
                    let token = match (&frame.request, tokens) {
                        (Some(token), _) => token.clone(),
                        // Correlated by order: the answer to the one request in flight.
                        (None, [only]) => {
                            frame.json["header"]["request"] = json!(only);
                            only.clone()
                        }
                        (None, _) => String::new(),
                    };
                    if got.contains_key(&token) {
                        return Err(format!("answered request {token:?} twice"));
                    }
                    if !tokens.contains(&token) {
                        let waiting: Vec<&String> =
                            tokens.iter().filter(|t| !got.contains_key(*t)).collect();
                        return Err(match waiting.as_slice() {
                            [only] => format!("answered request {only:?} with the token {token:?}"),
                            _ => format!(
                                "answered with the token {token:?}, which no request in flight has \
                                 (besterd: bad_handler_reply)"
                            ),
                        });
                    }
                    got.insert(token, frame);
                }
                Next::Closed => {
                    let what = match tokens {
                        [only] => {
                            format!("closed the connection without answering request {only:?}")
                        }
                        _ => format!(
                            "closed the connection with {} of {} requests unanswered",
                            tokens.len() - got.len(),
                            tokens.len()
                        ),
                    };
                    return Err(self.closed(&what));
                }
                Next::Silent => {
                    let missing: Vec<&String> =
                        tokens.iter().filter(|t| !got.contains_key(*t)).collect();
                    return Err(match tokens {
                        [only] => format!("did not answer request {only:?} within {ms} ms"),
                        _ => format!(
                            "did not answer {} of {} requests within {ms} ms (first unanswered: {:?})",
                            missing.len(),
                            tokens.len(),
                            missing[0]
                        ),
                    });
                }
                Next::Broken(why) => return Err(why),
            }
        }
        Ok(got)
    }
}

/// Run `f` on a fresh program; a program that does not start fails the check.
fn with_link(
    kit: &Kit,
    env: &BTreeMap<String, String>,
    f: impl FnOnce(&mut Link) -> Outcome,
) -> Outcome {
    match Link::open(kit, env) {
        Ok(mut link) => f(&mut link),
        Err(why) => Outcome::Fail(why),
    }
}

/// Send each request whole and judge the answers (all in flight at once, unless besterd would
/// send them one at a time).
fn exchange(kit: &Kit, link: &mut Link, requests: &[(String, usize)]) -> Outcome {
    if kit.program.order {
        for request in requests {
            let outcome = exchange_all(kit, link, std::slice::from_ref(request));
            if outcome != Outcome::Ok(String::new()) {
                return outcome;
            }
        }
        return Outcome::Ok(String::new());
    }
    exchange_all(kit, link, requests)
}

fn exchange_all(kit: &Kit, link: &mut Link, requests: &[(String, usize)]) -> Outcome {
    let mut sent = Vec::new();
    for (token, seq) in requests {
        let (frame, data) = kit.frame(token, *seq);
        if let Err(why) = link.send(token, &[&frame], kit.timeout) {
            return Outcome::Fail(why);
        }
        sent.push((token.clone(), data));
    }
    let tokens: Vec<String> = sent.iter().map(|(t, _)| t.clone()).collect();
    match link.answers(&tokens, kit.deadline(), kit.ms()) {
        Ok(got) => kit.judge(&got, &sent),
        Err(why) => Outcome::Fail(why),
    }
}

/// A vector case: each request in turn (reports not awaited), then the frames compared in order.
pub fn vector(kit: &Kit, case: &Case) -> Outcome {
    with_link(kit, &case.env, |link| {
        let mut got: Vec<Value> = Vec::new();
        let deadline = kit.deadline();
        for request in &case.requests {
            let is_report = request["header"]["kind"] == "report";
            if is_report && link.conn.is_none() {
                continue; // a dialled connection never carries a report
            }
            let token = request["header"]["request"].as_str().unwrap_or_default();
            let mut frame = Vec::new();
            encode_frame(request.to_string().as_bytes(), &mut frame);
            if let Err(why) = link.send(token, &[&frame], kit.timeout) {
                return Outcome::Fail(why);
            }
            if is_report {
                continue;
            }
            if let Err(why) = collect_until(kit, link, token, deadline, &mut got) {
                return Outcome::Fail(why);
            }
        }
        // Frames that follow the last answer (a push after it).
        if let Some(conn) = link.conn.as_mut() {
            while got.len() < case.answers.len() {
                match conn.next(deadline) {
                    Next::Frame(frame) => got.push(frame.json),
                    _ => break,
                }
            }
        }
        compare_frames(&case.answers, &got)
    })
}

/// Read frames (into `got`, in order) until the answer to `token` is among them.
fn collect_until(
    kit: &Kit,
    link: &mut Link,
    token: &str,
    deadline: Instant,
    got: &mut Vec<Value>,
) -> Result<(), String> {
    if link.conn.is_none() {
        let answers = link.answers(&[token.to_string()], deadline, kit.ms())?;
        got.extend(answers.into_values().map(|f| f.json));
        return Ok(());
    }
    loop {
        match link.conn.as_mut().expect("socket mode").next(deadline) {
            Next::Frame(mut frame) => {
                let tokenless = kit.program.order && frame.request.is_none();
                if tokenless {
                    frame.json["header"]["request"] = json!(token);
                }
                let done = tokenless || frame.request.as_deref() == Some(token);
                got.push(frame.json);
                if done {
                    return Ok(());
                }
            }
            Next::Closed => {
                let what = format!("closed the connection before answering request {token:?}");
                return Err(link.closed(&what));
            }
            Next::Silent => {
                return Err(format!(
                    "did not answer request {token:?} within {} ms",
                    kit.ms()
                ));
            }
            Next::Broken(why) => return Err(why),
        }
    }
}

/// The first difference between the frames wanted and the frames got.
fn compare_frames(want: &[Value], got: &[Value]) -> Outcome {
    let want: Vec<Value> = want.iter().map(canonical_json).collect();
    for (i, w) in want.iter().enumerate() {
        match got.get(i) {
            Some(g) if g == w => {}
            Some(g) => {
                return Outcome::Fail(format!(
                    "frame {} is {}, expected {}",
                    i + 1,
                    excerpt(&g.to_string()),
                    excerpt(&w.to_string())
                ));
            }
            None => {
                return Outcome::Fail(format!(
                    "sent {} frames, expected {}; missing: {}",
                    got.len(),
                    want.len(),
                    excerpt(&w.to_string())
                ));
            }
        }
    }
    match got.get(want.len()) {
        Some(extra) => Outcome::Fail(format!(
            "sent a frame more than expected: {}",
            excerpt(&extra.to_string())
        )),
        None => Outcome::Ok(String::new()),
    }
}

/// One request, answered as the probe expects.
pub fn one_request(kit: &Kit) -> Outcome {
    with_link(kit, &BTreeMap::new(), |link| {
        exchange(kit, link, &[("41".to_string(), 0)])
    })
}

/// Many requests in flight at once (socket: in one write; dial: a connection each).
pub fn pipelined(kit: &Kit, count: usize) -> Outcome {
    if kit.program.order {
        return Outcome::Skip(ONE_AT_A_TIME.to_string());
    }
    with_link(kit, &BTreeMap::new(), |link| {
        let requests: Vec<(String, usize)> =
            (0..count).map(|i| ((100 + i).to_string(), i)).collect();
        if link.conn.is_none() {
            return exchange(kit, link, &requests);
        }
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for (token, seq) in &requests {
            let (frame, data) = kit.frame(token, *seq);
            wire.extend_from_slice(&frame);
            sent.push((token.clone(), data));
        }
        if let Err(why) = link.send("", &[&wire], kit.timeout) {
            return Outcome::Fail(why);
        }
        let tokens: Vec<String> = sent.iter().map(|(t, _)| t.clone()).collect();
        let outcome = match link.answers(&tokens, kit.deadline(), kit.ms()) {
            Ok(got) => kit.judge(&got, &sent),
            Err(why) => return Outcome::Fail(why),
        };
        // Every request answered: any further answer is one too many.
        let conn = link.conn.as_mut().expect("socket mode");
        let grace = Instant::now() + GRACE;
        loop {
            match conn.next(grace) {
                Next::Frame(f) if f.push => {}
                Next::Frame(f) => {
                    let token = f.request.unwrap_or_default();
                    return Outcome::Fail(if tokens.contains(&token) {
                        format!("answered request {token:?} twice")
                    } else {
                        format!("answered with the token {token:?}, which no request in flight has")
                    });
                }
                Next::Broken(why) => return Outcome::Fail(why),
                Next::Closed | Next::Silent => return outcome,
            }
        }
    })
}

/// Tokens that do not count up: descending, each in a write of its own, all in flight at once.
pub fn out_of_order(kit: &Kit) -> Outcome {
    with_link(kit, &BTreeMap::new(), |link| {
        let requests: Vec<(String, usize)> =
            (0..16).rev().map(|i| ((200 + i).to_string(), i)).collect();
        exchange(kit, link, &requests)
    })
}

/// One request split at every byte position (two writes), then one byte per write.
pub fn split_frames(kit: &Kit) -> Outcome {
    with_link(kit, &BTreeMap::new(), |link| {
        let (sample, _) = kit.frame("30000", 0);
        let len = sample.len();
        for k in 1..len {
            let token = format!("3{k:04}");
            let (frame, data) = kit.frame(&token, k);
            if let Err(why) = link.send(&token, &[&frame[..k], &frame[k..]], kit.timeout) {
                return Outcome::Fail(why);
            }
            let outcome = answered(kit, link, &token, data, &format!("split after byte {k}"));
            if outcome != Outcome::Ok(String::new()) {
                return outcome;
            }
        }
        let token = "39999".to_string();
        let (frame, data) = kit.frame(&token, 0);
        let bytes: Vec<&[u8]> = frame.chunks(1).collect();
        if let Err(why) = link.send(&token, &bytes, kit.timeout) {
            return Outcome::Fail(why);
        }
        match answered(kit, link, &token, data, "sent one byte per write") {
            Outcome::Ok(_) => Outcome::Ok(format!("{} splits, then one byte per write", len - 1)),
            other => other,
        }
    })
}

/// Wait for one answer; a failure says which split it was.
fn answered(kit: &Kit, link: &mut Link, token: &str, data: String, what: &str) -> Outcome {
    let sent = [(token.to_string(), data)];
    match link.answers(&[token.to_string()], kit.deadline(), kit.ms()) {
        Ok(got) => match kit.judge(&got, &sent) {
            Outcome::Fail(why) => Outcome::Fail(format!("{what}: {why}")),
            other => other,
        },
        Err(why) => Outcome::Fail(format!("{what}: {why}")),
    }
}

/// Frame boundaries that do not match writes: three frames and half of a fourth in one write, the
/// rest of it and a fifth in the next.
pub fn several_per_write(kit: &Kit) -> Outcome {
    if kit.dialled() {
        return Outcome::Skip("a dialled handler gets one request per connection".to_string());
    }
    if kit.program.order {
        return Outcome::Skip(ONE_AT_A_TIME.to_string());
    }
    with_link(kit, &BTreeMap::new(), |link| {
        let mut sent = Vec::new();
        let mut wire = Vec::new();
        for i in 0..5 {
            let token = (600 + i).to_string();
            let (frame, data) = kit.frame(&token, i);
            wire.extend_from_slice(&frame);
            sent.push((token, data));
        }
        let (first_three, _) = kit.frame("600", 0);
        let cut = first_three.len() * 3 + first_three.len() / 2;
        if let Err(why) = link.send("", &[&wire[..cut], &wire[cut..]], kit.timeout) {
            return Outcome::Fail(why);
        }
        let tokens: Vec<String> = sent.iter().map(|(t, _)| t.clone()).collect();
        match link.answers(&tokens, kit.deadline(), kit.ms()) {
            Ok(got) => kit.judge(&got, &sent),
            Err(why) => Outcome::Fail(why),
        }
    })
}

/// Reports (a push's delivery report, an error report) get no answer; a request after them does.
pub fn reports(kit: &Kit) -> Outcome {
    if kit.dialled() {
        return Outcome::Skip(
            "a dialled connection carries one request and its answer, no push to report on"
                .to_string(),
        );
    }
    with_link(kit, &BTreeMap::new(), |link| {
        let delivered = ["bob".to_string()];
        let offline = ["carol".to_string()];
        let error = ErrorBody::new(
            ErrorCode::BadHandlerReply,
            "no request \"9\" is waiting for an answer from this handler",
        );
        let mut wire = Vec::new();
        encode_frame(
            &handler_delivery_report(Some("p1"), Some(&delivered), Some(&offline), None),
            &mut wire,
        );
        encode_frame(&handler_error_report(Some("9"), None, &error), &mut wire);
        let (probe, data) = kit.frame("400", 0);
        wire.extend_from_slice(&probe);
        if let Err(why) = link.send("400", &[&wire], kit.timeout) {
            return Outcome::Fail(why);
        }
        let deadline = kit.deadline();
        let mut answer = None;
        while answer.is_none() {
            match link.conn.as_mut().expect("socket mode").next(deadline) {
                Next::Frame(mut f)
                    if f.request.as_deref() == Some("400")
                        || (kit.program.order && f.request.is_none()) =>
                {
                    f.json["header"]["request"] = json!("400");
                    answer = Some(f);
                }
                Next::Frame(f) => {
                    return Outcome::Fail(format!("answered a report: {}", excerpt(&f.text)));
                }
                Next::Closed => {
                    return Outcome::Fail(link.closed("closed the connection after the reports"));
                }
                Next::Silent => {
                    return Outcome::Fail(format!(
                        "did not answer the request after the reports within {} ms",
                        kit.ms()
                    ));
                }
                Next::Broken(why) => return Outcome::Fail(why),
            }
        }
        match link
            .conn
            .as_mut()
            .expect("socket mode")
            .next(Instant::now() + GRACE)
        {
            Next::Frame(f) => {
                return Outcome::Fail(format!("answered a report: {}", excerpt(&f.text)));
            }
            Next::Broken(why) => return Outcome::Fail(why),
            Next::Closed | Next::Silent => {}
        }
        let mut got = BTreeMap::new();
        got.insert("400".to_string(), answer.expect("set above"));
        kit.judge(&got, &[("400".to_string(), data)])
    })
}

/// Tokens besterd never makes but the protocol allows (it is an opaque string): each must come
/// back exactly as sent.
pub fn odd_tokens(kit: &Kit) -> Outcome {
    let tokens = [
        "007".to_string(),
        "0".to_string(),
        "18446744073709551616".to_string(),
        "é ✓ 😀 \"q\" \\ /".to_string(),
        "t".repeat(200),
    ];
    with_link(kit, &BTreeMap::new(), |link| {
        for token in &tokens {
            let (frame, data) = kit.frame(token, 0);
            if let Err(why) = link.send(token, &[&frame], kit.timeout) {
                return Outcome::Fail(why);
            }
            let outcome = match link.answers(std::slice::from_ref(token), kit.deadline(), kit.ms())
            {
                Ok(got) => kit.judge(&got, &[(token.clone(), data)]),
                Err(why) => Outcome::Fail(why),
            };
            if outcome != Outcome::Ok(String::new()) {
                return outcome;
            }
        }
        Outcome::Ok(String::new())
    })
}

/// A request whose header carries fields the handler does not know (and `via`).
pub fn unknown_fields(kit: &Kit) -> Outcome {
    with_link(kit, &BTreeMap::new(), |link| {
        let data = kit.probe.data_for(0);
        let body = json!({
            "header": {
                "kind": "request",
                "request": "700",
                "scope": "client",
                "from": sender(),
                "via": ["upper"],
                "future": {"x": 1},
                "priority": 5,
            },
            "payload": {"type": kit.probe.kind, "data": serde_json::from_str::<Value>(&data).unwrap_or(Value::Null)},
        });
        let mut frame = Vec::new();
        encode_frame(body.to_string().as_bytes(), &mut frame);
        if let Err(why) = link.send("700", &[&frame], kit.timeout) {
            return Outcome::Fail(why);
        }
        match link.answers(&["700".to_string()], kit.deadline(), kit.ms()) {
            Ok(got) => kit.judge(&got, &[("700".to_string(), data)]),
            Err(why) => Outcome::Fail(why),
        }
    })
}

/// A frame over 1 MiB, then (on a handler's own connection correlated by token) a valid request.
/// besterd never sends such a frame (PROTOCOL.md §1: the limit holds both ways) and
/// handlers/README.md says a handler closes the socket when it gets one. Passed: the handler
/// closes the connection, or refuses the frame (no answer to it) and answers the request after
/// it; failed: it answers the oversized frame, does neither within the deadline, or is killed by
/// a signal.
pub fn oversized(kit: &Kit) -> Outcome {
    with_link(kit, &BTreeMap::new(), |link| {
        let token = "500";
        let prefix = String::from_utf8(kit.probe.request(token, "\"\"")).unwrap_or_default();
        let Some(head) = prefix.strip_suffix("\"\"}}") else {
            return Outcome::Fail("the kit cannot build its request".to_string());
        };
        let len = MAX_FRAME + 1;
        let mut body = head.as_bytes().to_vec();
        body.push(b'"');
        body.resize(len - 3, b'x');
        body.extend_from_slice(b"\"}}");
        let mut frame = Vec::new();
        encode_frame(&body, &mut frame);
        // The request after it, where an answer can be told apart (a token of its own).
        let follow = link.conn.is_some() && !kit.program.order;
        if follow {
            frame.extend_from_slice(&kit.frame("501", 0).0);
        }
        // A writer of its own: a handler that closes at the header makes the rest fail, one that
        // stops reading must not block the kit (the write gives up after the timeout).
        let writer = match &link.conn {
            Some(conn) => conn.try_clone().map_err(|e| e.to_string()),
            None => link.inst.connect().and_then(|c| {
                let clone = c.try_clone().map_err(|e| e.to_string());
                link.dialled.push((token.to_string(), c));
                clone
            }),
        };
        let mut writer = match writer {
            Ok(writer) => writer,
            Err(why) => return Outcome::Fail(why),
        };
        let _ = writer.set_write_timeout(Some(kit.timeout));
        std::thread::spawn(move || std::io::Write::write_all(&mut writer, &frame));
        let deadline = kit.deadline();
        loop {
            let next = match &mut link.conn {
                Some(conn) => conn.next(deadline),
                None => link.dialled[0].1.next(deadline),
            };
            return match next {
                Next::Frame(f) if f.push => continue,
                Next::Frame(f) if follow && f.request.as_deref() == Some("501") => {
                    Outcome::Ok("refused it (no answer) and answered the next request".to_string())
                }
                Next::Closed => {
                    let text = link.closed("closed the connection");
                    let signal = link.inst.exited().and_then(|s| s.signal());
                    if signal.is_some() {
                        Outcome::Fail(text)
                    } else {
                        Outcome::Ok(text)
                    }
                }
                Next::Frame(f) => Outcome::Fail(format!(
                    "answered a frame of {len} bytes (over the limit of {MAX_FRAME}) instead of \
                     closing the connection: {}",
                    excerpt(&f.text)
                )),
                Next::Silent => Outcome::Fail(format!(
                    "neither closed the connection nor answered within {} ms of a frame of {len} \
                     bytes (over the limit of {MAX_FRAME})",
                    kit.ms()
                )),
                Next::Broken(why) => Outcome::Fail(why),
            };
        }
    })
}

/// Socket: after an answer, the broker closes the socket; the program exits 0 within the
/// deadline. Dial: a connection closed without a request leaves it serving, and SIGTERM stops it
/// within the 2 s besterd waits before SIGKILL.
pub fn end_of_stream(kit: &Kit) -> Outcome {
    with_link(kit, &BTreeMap::new(), |link| {
        if link.conn.is_none() {
            match link.inst.connect() {
                Ok(conn) => conn.close(),
                Err(why) => return Outcome::Fail(why),
            }
            let outcome = exchange(kit, link, &[("800".to_string(), 0)]);
            if let Outcome::Fail(why) = outcome {
                return Outcome::Fail(format!(
                    "after a connection closed without a request: {why}"
                ));
            }
            link.inst.terminate();
            return match link.inst.wait_exit(Instant::now() + TERM_GRACE) {
                Some(_) => Outcome::Ok(format!("on SIGTERM it {}", link.inst.state())),
                None => Outcome::Fail(format!(
                    "still running {} ms after SIGTERM (besterd then kills it)",
                    TERM_GRACE.as_millis()
                )),
            };
        }
        let outcome = exchange(kit, link, &[("800".to_string(), 0)]);
        if let Outcome::Fail(why) = outcome {
            return Outcome::Fail(why);
        }
        link.conn.take().expect("socket mode").close();
        match link.inst.wait_exit(kit.deadline()) {
            Some(status) if status.success() => Outcome::Ok(String::new()),
            Some(_) => Outcome::Fail(format!(
                "{} when the broker closed the socket",
                link.inst.state()
            )),
            None => Outcome::Fail(format!(
                "still running {} ms after the broker closed the socket",
                kit.ms()
            )),
        }
    })
}

/// With `--login`: a login request (`kind:"login"`, PROTOCOL.md §2 "Auth handler"), exactly as
/// besterd writes it, is answered with a `reply` carrying its token (besterd refuses any other
/// command for a login).
pub fn login(kit: &Kit, authentication: &str) -> Outcome {
    with_link(kit, &BTreeMap::new(), |link| {
        let token = "7";
        let body = handler_login_request(token, LOGIN_FROM, ("main", "tcp"), authentication);
        let mut frame = Vec::new();
        encode_frame(&body, &mut frame);
        if let Err(why) = link.send(token, &[&frame], kit.timeout) {
            return Outcome::Fail(why);
        }
        let got = match link.answers(&[token.to_string()], kit.deadline(), kit.ms()) {
            Ok(got) => got,
            Err(why) => return Outcome::Fail(why),
        };
        let answer = &got[token];
        if !answer.reply {
            return Outcome::Fail(format!(
                "answered a login with a command other than \"reply\" (besterd: \
                 bad_handler_reply): {}",
                excerpt(&answer.text)
            ));
        }
        let data = answer.json["payload"]
            .get("data")
            .cloned()
            .unwrap_or(Value::Null);
        let verdict = if answer.json["header"]["status"] == "error" {
            "refused"
        } else {
            "accepted"
        };
        Outcome::Ok(format!("{verdict}: {}", excerpt(&data.to_string())))
    })
}
