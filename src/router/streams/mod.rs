//! Client-to-client streams, sans-io (PROTOCOL.md §5, "Streams"): dials waiting for an answer,
//! open streams between two ends with the credit each writer has left, and what each connection
//! and peer link has, so that a close ends its streams. The server parses the frames
//! (`protocol/stream.rs`, `protocol/peer_stream.rs`) and carries out the [`Action::Send`]s that
//! come out. An end is a client connection of this server or a stream of a linked peer server
//! (`peer.rs`), which relays to its own client.
//!
//! Rules: only connections that negotiated `stream` are offered a dial (the server says which,
//! through `takes`); the presence rule (`[presence] visible`) decides who may dial whom, checked
//! before anything about the user's connections is told; a dial is answered once (accepted,
//! refused, offline, timed out); a stream's frames go to its other end only, in order; a writer
//! never has more than the window outstanding, so the bytes queued for a reader stay below what
//! it granted. It must not: queue for a reader past its grant, or tell a third connection anything
//! about a stream.

mod peer;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::deliver::Target;
use super::*;
use crate::protocol::message::{client_error, client_ok};
use crate::protocol::peer_stream;
use crate::protocol::stream::{self as wire, DialData, StreamFrame, StreamOp};

/// Streams ended lately that a connection still remembers: frames it sent for one of them before
/// it saw the end are dropped without an answer.
const REMEMBER_ENDED: usize = 32;

/// Streams open and dials waiting on one peer link, both ways.
pub const MAX_PER_LINK: usize = 4096;

/// `[streams]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Whether client sessions may negotiate `stream` (and peer links carry streams).
    pub enabled: bool,
    /// Bytes a writer may have outstanding on one stream (and the credit it starts with).
    pub window: u64,
    /// Streams open or being dialled per connection.
    pub max_per_connection: usize,
    /// How long a dial waits for an answer.
    pub dial_timeout: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            enabled: true,
            window: 256 * 1024,
            max_per_connection: 16,
            dial_timeout: Duration::from_secs(30),
        }
    }
}

/// Stream figures for the monitor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Dials made.
    pub dials: u64,
    /// Dials accepted.
    pub accepted: u64,
    /// Dials that failed (refused, offline, forbidden, timed out, the dialler gone).
    pub failed: u64,
    /// Data frames relayed.
    pub frames: u64,
    /// Bytes of `data` relayed.
    pub bytes: u64,
    /// Streams ended because a writer went past its credit.
    pub credit_exceeded: u64,
    /// Streams open now.
    pub open: u64,
}

/// One end of a dial or stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A client connection of this server.
    Conn(ConnId),
    /// A peer server over `link`, which knows the stream as `id`.
    Peer { link: ConnId, id: u64 },
}

impl End {
    /// The connection frames for this end go to.
    fn conn(self) -> ConnId {
        match self {
            End::Conn(c) | End::Peer { link: c, .. } => c,
        }
    }
}

#[derive(Debug)]
struct Dial {
    caller: End,
    /// The dialler: its user and server.
    from: (String, String),
    reply: Option<String>,
    name: String,
    /// Whom the dialler asked (its user here, or on `remote`'s server).
    callee: String,
    /// The connections sent `incoming`, not answered yet.
    offered: Vec<ConnId>,
    /// The window the stream will have.
    window: u64,
    /// The link the dial went out on, for a user of a peer server (with that server).
    remote: Option<(ConnId, String)>,
}

#[derive(Debug)]
struct Open {
    /// The dialler.
    a: End,
    /// The one that accepted.
    b: End,
    /// Bytes `a` may still send.
    credit_a: u64,
    /// Bytes `b` may still send.
    credit_b: u64,
    /// The window it opened with (a reload changes only the next streams').
    window: u64,
}

impl Open {
    /// The other end and the credit of `from` as a writer, and the credit of the other end.
    fn sides(&mut self, from: End) -> (End, &mut u64, &mut u64) {
        if from == self.a {
            (self.b, &mut self.credit_a, &mut self.credit_b)
        } else {
            (self.a, &mut self.credit_b, &mut self.credit_a)
        }
    }

    fn other(&self, end: End) -> End {
        if end == self.a { self.b } else { self.a }
    }
}

#[derive(Debug, Default)]
struct PerConn {
    /// Streams open and dials made (they count for the limit), with the dialler's name for
    /// the dials this connection made. For a link: every stream and dial on it.
    streams: Vec<(u64, Option<String>)>,
    /// Dials offered to it, not answered.
    offered: Vec<u64>,
    /// Streams ended lately.
    ended: VecDeque<u64>,
}

/// Every dial and stream of the server.
#[derive(Debug, Default)]
pub(super) struct Streams {
    config: StreamConfig,
    next: u64,
    dials: HashMap<u64, Dial>,
    open: HashMap<u64, Open>,
    conns: HashMap<ConnId, PerConn>,
    /// A peer's id on a link → ours.
    remote: HashMap<(ConnId, u64), u64>,
    stats: StreamStats,
}

impl Streams {
    /// Whether a dial is still waiting.
    pub(super) fn dialling(&self, id: u64) -> bool {
        self.dials.contains_key(&id)
    }

    fn per(&mut self, conn: ConnId) -> &mut PerConn {
        self.conns.entry(conn).or_default()
    }

    fn count(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |p| p.streams.len())
    }

    /// List `id` for `end`.
    fn list(&mut self, end: End, id: u64, name: Option<String>) {
        if let End::Peer { link, id: theirs } = end {
            self.remote.insert((link, theirs), id);
        }
        self.per(end.conn()).streams.push((id, name));
    }

    /// Forget `id` on `conn`; remember it as ended when it was a stream of `conn`'s.
    fn unlist(&mut self, conn: ConnId, id: u64, ended: bool) {
        let Some(per) = self.conns.get_mut(&conn) else {
            return;
        };
        per.streams.retain(|(s, _)| *s != id);
        per.offered.retain(|s| *s != id);
        if ended {
            if per.ended.len() == REMEMBER_ENDED {
                per.ended.pop_front();
            }
            per.ended.push_back(id);
        }
        if per.streams.is_empty() && per.offered.is_empty() && per.ended.is_empty() {
            self.conns.remove(&conn);
        }
    }

    /// Forget `id` on `end` (a peer's end is not remembered: its frames are dropped anyway).
    fn unlist_end(&mut self, end: End, id: u64, ended: bool) {
        match end {
            End::Conn(conn) => self.unlist(conn, id, ended),
            End::Peer { link, id: theirs } => {
                self.remote.remove(&(link, theirs));
                self.unlist(link, id, false);
            }
        }
    }

    /// Take a dial out, with every connection's note of it.
    fn take_dial(&mut self, id: u64) -> Option<Dial> {
        let dial = self.dials.remove(&id)?;
        self.unlist_end(dial.caller, id, false);
        for conn in &dial.offered {
            self.unlist(*conn, id, false);
        }
        if let Some((link, _)) = &dial.remote {
            self.unlist(*link, id, false);
        }
        Some(dial)
    }

    /// Take an open stream out; both ends remember it as ended.
    fn take_open(&mut self, id: u64) -> Option<Open> {
        let open = self.open.remove(&id)?;
        self.unlist_end(open.a, id, true);
        self.unlist_end(open.b, id, true);
        self.stats.open = self.open.len() as u64;
        Some(open)
    }

    /// Open stream `id` between the dialler and `b`.
    fn open(&mut self, id: u64, dial: &Dial, b: End, window: u64) {
        self.list(dial.caller, id, Some(dial.name.clone()));
        self.list(b, id, None);
        self.open.insert(
            id,
            Open {
                a: dial.caller,
                b,
                credit_a: window,
                credit_b: window,
                window,
            },
        );
        self.stats.accepted += 1;
        self.stats.open = self.open.len() as u64;
    }
}

#[derive(Serialize)]
struct Party<'a> {
    user: &'a str,
    server: &'a str,
}

/// `data` of the answer to `bester.dial` (for the dialler) and `bester.accept` (for the one who
/// accepted).
#[derive(Serialize)]
struct Opened<'a> {
    stream: u64,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Party<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<Party<'a>>,
    window: u64,
}

fn error(code: ErrorCode, text: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, text)
}

fn send(out: &mut Vec<Action>, to: ConnId, body: Vec<u8>) {
    out.push(Action::Send { to, body });
}

/// Tell `end` that stream (or dial) `id` ended, with why.
fn tell_end(out: &mut Vec<Action>, end: End, id: u64, why: Option<&ErrorBody>) {
    let body = match end {
        End::Conn(_) => wire::end_frame(id, why),
        End::Peer { .. } => peer_stream::end_frame(id, why),
    };
    send(out, end.conn(), body);
}

/// Pass data or credit of stream `id` to `end`.
fn tell_op(out: &mut Vec<Action>, end: End, id: u64, op: StreamOp<'_>) {
    let body = match (end, op) {
        (End::Peer { .. }, op) => peer_stream::op_frame(id, op),
        (End::Conn(_), StreamOp::Data(data)) => wire::data_frame(id, data),
        (End::Conn(_), StreamOp::Credit(credit)) => wire::credit_frame(id, credit),
        (End::Conn(_), StreamOp::End) => wire::end_frame(id, None),
    };
    send(out, end.conn(), body);
}

fn too_many(max: usize) -> ErrorBody {
    error(
        ErrorCode::LimitReached,
        format!(
            "this connection has {max} streams open or dialling, the most [streams] max_per_connection allows"
        ),
    )
}

impl Router {
    /// Set `[streams]` (dials and streams already made keep their window).
    pub fn set_streams(&mut self, config: StreamConfig) {
        self.streams.config = config;
    }

    /// The stream figures.
    pub fn stream_stats(&self) -> StreamStats {
        self.streams.stats
    }

    /// `bester.dial` from `conn` (which negotiated `stream`), answering `reply`: `to`'s
    /// connections that `takes` (those that negotiated `stream`) are sent `incoming` (through the
    /// peer link, for a user of a linked server), and the dialler is answered later, once
    /// ([`Action::Send`]). `Err`: the answer now.
    pub fn stream_dial(
        &mut self,
        conn: ConnId,
        reply: Option<&str>,
        data: &DialData,
        takes: impl Fn(ConnId) -> bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), ErrorBody> {
        wire::check_name(&data.stream)?;
        crate::protocol::groups::check_member_name(&data.to)
            .map_err(|e| error(ErrorCode::InvalidMessage, e))?;
        let from = match self.clients.get(&conn) {
            Some(client) => client.sender.clone(),
            None => return Err(error(ErrorCode::NotIdentified, "identify first")),
        };
        let caller = from.user.clone().unwrap_or_default();
        let max = self.streams.config.max_per_connection;
        let mine = self.streams.conns.get(&conn);
        if mine.is_some_and(|p| {
            p.streams
                .iter()
                .any(|(_, n)| n.as_deref() == Some(&data.stream))
        }) {
            return Err(error(
                ErrorCode::InvalidMessage,
                format!(
                    "stream name {:?} is in use on this connection already",
                    data.stream
                ),
            ));
        }
        if self.streams.count(conn) >= max {
            return Err(too_many(max));
        }
        self.streams.stats.dials += 1;
        if !self.sees_user(Some(&caller), &data.to) {
            self.streams.stats.failed += 1;
            return Err(error(
                ErrorCode::Forbidden,
                format!(
                    "{caller:?} may not dial {:?}: presence rules ([presence] visible) hide them",
                    data.to
                ),
            ));
        }
        let window = self.streams.config.window;
        let (callee, server) = match self.send_target(&data.to) {
            Target::Remote { server, user } => (user.to_string(), Some(server.to_string())),
            Target::Local(user) => (user.to_string(), None),
        };
        let remote = match server {
            Some(server) => match self.stream_link(&server, &callee) {
                Ok(link) => Some((link, server)),
                Err(e) => {
                    self.streams.stats.failed += 1;
                    return Err(e);
                }
            },
            None => None,
        };
        let offered: Vec<ConnId> = match remote {
            Some(_) => Vec::new(),
            None => {
                let offered: Vec<ConnId> = self
                    .presence
                    .conns(&callee)
                    .unwrap_or_default()
                    .iter()
                    .copied()
                    .filter(|c| *c != conn && takes(*c))
                    .collect();
                if offered.is_empty() {
                    self.streams.stats.failed += 1;
                    return Err(offline(&callee));
                }
                offered
            }
        };
        self.streams.next += 1;
        let id = self.streams.next;
        for c in &offered {
            send(
                out,
                *c,
                wire::incoming_frame(id, &from, &data.stream, window),
            );
            self.streams.per(*c).offered.push(id);
        }
        if let Some((link, _)) = &remote {
            let body = peer_stream::dial_frame(id, &caller, &callee, &data.stream, window);
            send(out, *link, body);
            self.streams.per(*link).streams.push((id, None));
        }
        self.streams
            .per(conn)
            .streams
            .push((id, Some(data.stream.clone())));
        self.streams.dials.insert(
            id,
            Dial {
                caller: End::Conn(conn),
                from: (caller, self.config.server.clone()),
                reply: reply.map(str::to_string),
                name: data.stream.clone(),
                callee,
                offered,
                window,
                remote,
            },
        );
        let at = now + self.streams.config.dial_timeout;
        self.deadlines.push(at, Due::Dial(id));
        Ok(())
    }

    /// `bester.accept` of stream `id` by `conn`: the stream opens; the dialler gets its answer.
    /// `Ok`: the answer to `conn`'s accept (`reply` is its id).
    pub fn stream_accept(
        &mut self,
        conn: ConnId,
        reply: Option<&str>,
        id: u64,
        out: &mut Vec<Action>,
    ) -> Result<Vec<u8>, ErrorBody> {
        self.offered_to(conn, id)?;
        let max = self.streams.config.max_per_connection;
        if self.streams.count(conn) >= max {
            return Err(too_many(max));
        }
        let Some(dial) = self.streams.take_dial(id) else {
            return Err(not_offered(id));
        };
        let server = self.config.server.clone();
        answered_elsewhere(out, &dial, conn, id);
        let window = dial.window;
        self.streams.open(id, &dial, End::Conn(conn), window);
        match dial.caller {
            End::Conn(caller) => {
                let to_caller = Opened {
                    stream: id,
                    name: &dial.name,
                    to: Some(Party {
                        user: &dial.callee,
                        server: &server,
                    }),
                    from: None,
                    window,
                };
                let body = client_ok(dial.reply.as_deref(), Some(wire::DIAL), &to_caller);
                send(out, caller, body);
            }
            End::Peer { link, id: theirs } => {
                send(out, link, peer_stream::accept_frame(id, theirs, window));
            }
        }
        let to_callee = Opened {
            stream: id,
            name: &dial.name,
            to: None,
            from: Some(Party {
                user: &dial.from.0,
                server: &dial.from.1,
            }),
            window,
        };
        Ok(client_ok(reply, Some(wire::ACCEPT), &to_callee))
    }

    /// `bester.refuse` of stream `id` by `conn`: the dialler is answered `dial_refused`.
    pub fn stream_refuse(
        &mut self,
        conn: ConnId,
        id: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), ErrorBody> {
        self.offered_to(conn, id)?;
        let Some(dial) = self.streams.take_dial(id) else {
            return Err(not_offered(id));
        };
        answered_elsewhere(out, &dial, conn, id);
        let text = format!("{:?} refused the stream {:?}", dial.callee, dial.name);
        self.stream_dial_failed(&dial, error(ErrorCode::DialRefused, text), out);
        Ok(())
    }

    fn offered_to(&self, conn: ConnId, id: u64) -> Result<(), ErrorBody> {
        match self.streams.dials.get(&id) {
            Some(dial) if dial.offered.contains(&conn) => Ok(()),
            _ => Err(not_offered(id)),
        }
    }

    /// Answer a dial with an error (it has been taken out).
    fn stream_dial_failed(&mut self, dial: &Dial, error: ErrorBody, out: &mut Vec<Action>) {
        self.streams.stats.failed += 1;
        self.stats.errors.count(error.code);
        let (to, body) = match dial.caller {
            End::Conn(caller) => (caller, client_error(dial.reply.as_deref(), &error)),
            End::Peer { link, id } => (link, peer_stream::refuse_frame(id, &error)),
        };
        send(out, to, body);
    }

    /// A dial's deadline passed.
    pub(super) fn stream_dial_timed_out(&mut self, id: u64, out: &mut Vec<Action>) {
        let Some(dial) = self.streams.take_dial(id) else {
            return;
        };
        let ms = self.streams.config.dial_timeout.as_millis();
        let e = error(ErrorCode::DialTimeout, "the dial was not answered in time");
        for conn in &dial.offered {
            send(out, *conn, wire::end_frame(id, Some(&e)));
        }
        if let Some((link, _)) = &dial.remote {
            send(out, *link, peer_stream::end_frame(id, Some(&e)));
        }
        let text = format!("{:?} did not answer the dial within {ms} ms", dial.callee);
        self.stream_dial_failed(&dial, error(ErrorCode::DialTimeout, text), out);
    }

    /// A stream frame from `conn` (which negotiated `stream`).
    pub fn stream_frame(&mut self, conn: ConnId, frame: StreamFrame<'_>, out: &mut Vec<Action>) {
        let id = frame.stream;
        let from = End::Conn(conn);
        let mine = self
            .streams
            .open
            .get(&id)
            .is_some_and(|o| o.a == from || o.b == from);
        if !mine {
            let ended = self
                .streams
                .conns
                .get(&conn)
                .is_some_and(|p| p.ended.contains(&id));
            if !ended {
                let text = format!("no open stream {id} on this connection");
                let e = error(ErrorCode::UnknownStream, text);
                self.stats.errors.count(e.code);
                send(out, conn, wire::end_frame(id, Some(&e)));
            }
            return;
        }
        self.relay(id, from, frame.op, out);
    }

    /// Carry out `op` of `from` on open stream `id`.
    fn relay(&mut self, id: u64, from: End, op: StreamOp<'_>, out: &mut Vec<Action>) {
        let Some(open) = self.streams.open.get_mut(&id) else {
            return;
        };
        let window = open.window;
        let (peer, mine, theirs) = open.sides(from);
        match op {
            StreamOp::Data(data) => {
                let cost = wire::cost(data);
                if cost > *mine {
                    let text = format!(
                        "a frame costing {cost} bytes is over the credit left on stream {id}, {} bytes",
                        *mine
                    );
                    self.streams.stats.credit_exceeded += 1;
                    let told = "the other side sent past its credit";
                    let code = ErrorCode::StreamCreditExceeded;
                    return self.break_stream(id, from, error(code, text), told, out);
                }
                *mine -= cost;
                self.streams.stats.frames += 1;
                self.streams.stats.bytes += data.len() as u64;
                tell_op(out, peer, id, op);
            }
            StreamOp::Credit(credit) => {
                // The reader grants its writer (the other end) more.
                match theirs.checked_add(credit).filter(|c| *c <= window) {
                    Some(total) => {
                        *theirs = total;
                        tell_op(out, peer, id, op);
                    }
                    None => {
                        let text = format!(
                            "a credit of {credit} would give stream {id}'s writer over the window of {window} bytes"
                        );
                        let told = "the other side granted credit past the window";
                        let e = error(ErrorCode::InvalidMessage, text);
                        self.break_stream(id, from, e, told, out);
                    }
                }
            }
            StreamOp::End => {
                self.streams.take_open(id);
                tell_end(out, peer, id, None);
            }
        }
    }

    /// End stream `id` because `by` broke its rules: `by` is told `error`, the other end
    /// `stream_closed` with `told`.
    fn break_stream(
        &mut self,
        id: u64,
        by: End,
        error: ErrorBody,
        told: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(open) = self.streams.take_open(id) else {
            return;
        };
        self.stats.errors.count(error.code);
        tell_end(out, by, id, Some(&error));
        let closed = ErrorBody::new(ErrorCode::StreamClosed, told);
        tell_end(out, open.other(by), id, Some(&closed));
    }

    /// `conn` closed (or changed its user): its streams end, the other ends told
    /// `stream_closed`; its dials end; dials offered only to it fail `dial_offline`.
    pub(super) fn streams_gone(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(per) = self.streams.conns.remove(&conn) else {
            return;
        };
        for (id, _) in per.streams {
            if let Some(open) = self.streams.take_open(id) {
                let e = error(
                    ErrorCode::StreamClosed,
                    "the other side's connection closed",
                );
                tell_end(out, open.other(End::Conn(conn)), id, Some(&e));
            } else if let Some(dial) = self.streams.take_dial(id) {
                self.streams.stats.failed += 1;
                let e = error(ErrorCode::StreamClosed, "the dialler's connection closed");
                for c in &dial.offered {
                    send(out, *c, wire::end_frame(id, Some(&e)));
                }
                if let Some((link, _)) = &dial.remote {
                    send(out, *link, peer_stream::end_frame(id, Some(&e)));
                }
            }
        }
        for id in per.offered {
            let Some(dial) = self.streams.dials.get_mut(&id) else {
                continue;
            };
            dial.offered.retain(|c| *c != conn);
            if dial.offered.is_empty()
                && let Some(dial) = self.streams.take_dial(id)
            {
                let e = offline(&dial.callee);
                self.stream_dial_failed(&dial, e, out);
            }
        }
    }
}

/// The other connections offered dial `id` are told that `by` answered it.
fn answered_elsewhere(out: &mut Vec<Action>, dial: &Dial, by: ConnId, id: u64) {
    for other in dial.offered.iter().filter(|c| **c != by) {
        let text = format!("another connection of {:?} answered", dial.callee);
        send(
            out,
            *other,
            wire::end_frame(id, Some(&error(ErrorCode::DialAnswered, text))),
        );
    }
}

fn offline(user: &str) -> ErrorBody {
    error(
        ErrorCode::DialOffline,
        format!("{user:?} has no connection here that takes streams"),
    )
}

fn not_offered(id: u64) -> ErrorBody {
    error(
        ErrorCode::UnknownStream,
        format!("no dial {id} is waiting for this connection's answer"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stream::parse;
    use serde_json::Value;

    fn conn(slot: usize) -> ConnId {
        ConnId {
            slot,
            generation: slot as u64,
        }
    }

    fn router() -> Router {
        let mut r = Router::new(RouterConfig {
            server: "s".into(),
            request_timeout: Duration::from_secs(5),
            max_chain_depth: 8,
            max_frame: 1 << 20,
            login_timeout: Duration::from_secs(5),
            max_logins: 16,
        });
        r.set_streams(StreamConfig {
            window: 1000,
            max_per_connection: 2,
            ..StreamConfig::default()
        });
        let mut out = Vec::new();
        r.client_identified(conn(1), "alice", &mut out);
        r.client_identified(conn(2), "bob", &mut out);
        r.client_identified(conn(3), "bob", &mut out);
        r
    }

    fn frames(out: &mut Vec<Action>) -> Vec<(usize, Value)> {
        out.drain(..)
            .map(|a| match a {
                Action::Send { to, body } => (to.slot, serde_json::from_slice(&body).unwrap()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn dial(r: &mut Router, out: &mut Vec<Action>, name: &str) -> Result<(), ErrorBody> {
        let data = DialData {
            to: "bob".into(),
            stream: name.into(),
        };
        r.stream_dial(conn(1), Some("d"), &data, |_| true, Instant::now(), out)
    }

    #[test]
    fn a_dial_is_offered_to_every_taker_and_answered_once() {
        let mut r = router();
        let mut out = Vec::new();
        dial(&mut r, &mut out, "s1").unwrap();
        let sent = frames(&mut out);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].1["header"]["kind"], "incoming");
        assert_eq!(sent[1].0, 3);
        r.stream_accept(conn(3), Some("a"), 1, &mut out).unwrap();
        let sent = frames(&mut out);
        assert_eq!(sent[0].0, 2);
        assert_eq!(sent[0].1["data"]["code"], "dial_answered");
        assert_eq!(sent[1].0, 1);
        assert_eq!(sent[1].1["data"]["stream"], 1);
        assert_eq!(sent[1].1["header"]["id"], "d");
        // Too late for the other connection.
        let e = r.stream_accept(conn(2), None, 1, &mut out).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownStream);
    }

    #[test]
    fn credit_bounds_what_a_writer_sends() {
        let mut r = router();
        let mut out = Vec::new();
        dial(&mut r, &mut out, "s1").unwrap();
        r.stream_accept(conn(2), None, 1, &mut out).unwrap();
        out.clear();
        let data = "x".repeat(500 - wire::FRAME_COST - 2);
        let frame = format!(r#"{{"header":{{"stream":1}},"data":"{data}"}}"#);
        r.stream_frame(conn(1), parse(frame.as_bytes()).unwrap(), &mut out);
        r.stream_frame(conn(1), parse(frame.as_bytes()).unwrap(), &mut out);
        assert_eq!(frames(&mut out).len(), 2);
        // The window is spent: one byte more ends the stream.
        r.stream_frame(
            conn(1),
            parse(br#"{"header":{"stream":1},"data":1}"#).unwrap(),
            &mut out,
        );
        let sent = frames(&mut out);
        assert_eq!(sent[0].0, 1);
        assert_eq!(sent[0].1["data"]["code"], "stream_credit_exceeded");
        assert_eq!(sent[1].0, 2);
        assert_eq!(sent[1].1["data"]["code"], "stream_closed");
        // Frames the writer had in flight are dropped without a word.
        r.stream_frame(
            conn(1),
            parse(br#"{"header":{"stream":1},"data":1}"#).unwrap(),
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_grant_comes_back_to_the_writer_and_may_not_pass_the_window() {
        let mut r = router();
        let mut out = Vec::new();
        dial(&mut r, &mut out, "s1").unwrap();
        r.stream_accept(conn(2), None, 1, &mut out).unwrap();
        out.clear();
        r.stream_frame(
            conn(1),
            parse(br#"{"header":{"stream":1},"data":1}"#).unwrap(),
            &mut out,
        );
        r.stream_frame(
            conn(2),
            parse(br#"{"header":{"stream":1,"credit":129}}"#).unwrap(),
            &mut out,
        );
        let sent = frames(&mut out);
        assert_eq!(sent[1].0, 1);
        assert_eq!(sent[1].1["header"]["credit"], 129);
        r.stream_frame(
            conn(2),
            parse(br#"{"header":{"stream":1,"credit":1}}"#).unwrap(),
            &mut out,
        );
        let sent = frames(&mut out);
        assert_eq!(sent[0].0, 2);
        assert_eq!(sent[0].1["data"]["code"], "invalid_message");
    }

    #[test]
    fn limits_names_and_closes() {
        let mut r = router();
        let mut out = Vec::new();
        dial(&mut r, &mut out, "s1").unwrap();
        let e = dial(&mut r, &mut out, "s1").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidMessage);
        dial(&mut r, &mut out, "s2").unwrap();
        let e = dial(&mut r, &mut out, "s3").unwrap_err();
        assert_eq!(e.code, ErrorCode::LimitReached);
        out.clear();
        // Both of bob's connections go: the dials fail offline, once each.
        r.client_gone(conn(2), &mut out);
        r.client_gone(conn(3), &mut out);
        let sent: Vec<_> = frames(&mut out)
            .into_iter()
            .filter(|(to, _)| *to == 1)
            .collect();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(
            sent.iter()
                .all(|(_, f)| f["data"]["code"] == "dial_offline")
        );
        assert!(r.streams.conns.is_empty(), "{:?}", r.streams.conns);
        assert!(r.streams.dials.is_empty());
    }
}
