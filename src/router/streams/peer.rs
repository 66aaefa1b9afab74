//! Streams across a peer link (PROTOCOL.md §5, "Streams across servers"): a user of this
//! server dialling a user of a linked peer, and the other way round. Each server keeps its own
//! dial or stream with a [`End::Peer`] end; the frames between them (`protocol/peer_stream.rs`)
//! name a stream by their sender's id, and [`Streams::remote`] says which of ours that is.
//!
//! Both servers keep both credits, so each holds its own writer to the window, and a peer that
//! sends past what our reader granted (or grants past the window) gets the stream ended as a
//! client would. A peer speaks for its own users only: a dial's `from` is a user of the peer,
//! its `to` a user of this server (a stream crosses one link, never two). At most
//! [`MAX_PER_LINK`] dials and streams ride one link. A link going down ends them all: the ends
//! here are told `stream_closed`, the dials out there fail `peer_unavailable`.
//!
//! It must not: take a peer's word for a dial it did not make, pass a peer's frame to a stream
//! of another link, or let a peer's refusal carry a code a dial cannot end with.

use std::time::Instant;

use log::debug;

use super::*;
use crate::protocol::message::Sender;
use crate::protocol::peer_stream::{PeerOp, PeerStream};

/// The codes a dial across a link may fail with, as the other server said (anything else is
/// `dial_offline`).
const DIAL_ENDS: [ErrorCode; 6] = [
    ErrorCode::DialRefused,
    ErrorCode::DialOffline,
    ErrorCode::DialTimeout,
    ErrorCode::Forbidden,
    ErrorCode::LimitReached,
    ErrorCode::InvalidMessage,
];

impl Router {
    /// Whether peer `name`'s link carries streams (feature `stream` on its handshake).
    pub fn set_peer_streams(&mut self, name: &str, streams: bool) {
        if let Some(entry) = self.peers.get_mut(name) {
            entry.streams = streams;
        }
    }

    /// The link to dial `to`, a user of peer `server`, over.
    pub(super) fn stream_link(&self, server: &str, to: &str) -> Result<ConnId, ErrorBody> {
        let entry = self.peers.get(server);
        let Some(link) = entry.and_then(|e| e.link) else {
            return Err(error(
                ErrorCode::PeerUnavailable,
                format!("{to:?} is a user of server {server:?}, which is not linked now"),
            ));
        };
        if !entry.is_some_and(|e| e.streams) {
            return Err(error(
                ErrorCode::DialOffline,
                format!("{to:?} is a user of server {server:?}, whose link does not carry streams"),
            ));
        }
        if self.streams.count(link) >= MAX_PER_LINK {
            return Err(link_full());
        }
        Ok(link)
    }

    /// A stream frame from the peer on `link`.
    pub fn peer_stream(
        &mut self,
        link: ConnId,
        frame: PeerStream<'_>,
        takes: impl Fn(ConnId) -> bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(server) = self.peer_of(link).map(str::to_string) else {
            return;
        };
        match frame {
            PeerStream::Dial {
                stream,
                from,
                to,
                name,
                window,
            } => {
                if self.streams.remote.contains_key(&(link, stream)) {
                    debug!("peer={server} dialled with stream id {stream} in use; dropped");
                    return;
                }
                self.streams.stats.dials += 1;
                let caller = End::Peer { link, id: stream };
                match self.peer_dial(link, &server, &from, &to, &name, window, &takes) {
                    Ok((callee, offered, window)) => self.offer(
                        caller,
                        (from, server),
                        callee,
                        name,
                        offered,
                        window,
                        now,
                        out,
                    ),
                    Err(e) => {
                        self.streams.stats.failed += 1;
                        self.stats.errors.count(e.code);
                        send(out, link, peer_stream::refuse_frame(stream, &e));
                    }
                }
            }
            PeerStream::Accept {
                stream,
                dial,
                window,
            } => {
                // None: withdrawn meanwhile (the end this server sent closes it there).
                let Some(dial_) = self.take_dial_sent_on(link, dial) else {
                    return;
                };
                let window = window.min(dial_.window);
                let b = End::Peer { link, id: stream };
                self.streams.open(dial, &dial_, b, window);
                if let End::Conn(caller) = dial_.caller {
                    let to = Opened {
                        stream: dial,
                        name: &dial_.name,
                        to: Some(Party {
                            user: &dial_.callee,
                            server: &server,
                        }),
                        from: None,
                        window,
                    };
                    send(
                        out,
                        caller,
                        client_ok(dial_.reply.as_deref(), Some(wire::DIAL), &to),
                    );
                }
            }
            PeerStream::Refuse { dial, error: e } => {
                // None: withdrawn meanwhile (the end this server sent closes it there).
                let Some(dial_) = self.take_dial_sent_on(link, dial) else {
                    return;
                };
                let code = DIAL_ENDS
                    .into_iter()
                    .find(|c| *c == e.code)
                    .unwrap_or(ErrorCode::DialOffline);
                let text = format!("server {server:?}: {}", e.error);
                self.stream_dial_failed(&dial_, error(code, text), out);
            }
            PeerStream::Frame { stream, op } => {
                let from = End::Peer { link, id: stream };
                let Some(id) = self.peer_stream_id(from) else {
                    return;
                };
                let op = match &op {
                    PeerOp::Data(data) => StreamOp::Data(data),
                    PeerOp::Credit(credit) => StreamOp::Credit(*credit),
                };
                self.relay(id, from, op, out);
            }
            PeerStream::End { stream, error: why } => {
                let from = End::Peer { link, id: stream };
                let Some(&id) = self.streams.remote.get(&(link, stream)) else {
                    return;
                };
                // Only these reach a client as the peer said; anything else is a close.
                let why = why.map(|e| match e.code {
                    ErrorCode::DialTimeout | ErrorCode::StreamClosed => e,
                    _ => error(ErrorCode::StreamClosed, e.error),
                });
                if let Some(open) = self.streams.open.get(&id)
                    && (open.a == from || open.b == from)
                {
                    let other = open.other(from);
                    self.streams.take_open(id);
                    tell_end(out, other, id, why.as_ref());
                } else if self
                    .streams
                    .dials
                    .get(&id)
                    .is_some_and(|d| d.caller == from)
                    && let Some(dial) = self.streams.take_dial(id)
                {
                    self.streams.stats.failed += 1;
                    let why = why.unwrap_or_else(|| {
                        error(ErrorCode::StreamClosed, "the dialler's connection closed")
                    });
                    for c in &dial.offered {
                        send(out, *c, wire::end_frame(id, Some(&why)));
                    }
                }
            }
        }
    }

    /// Take out dial `id` if it is one this server sent over `link`.
    fn take_dial_sent_on(&mut self, link: ConnId, id: u64) -> Option<Dial> {
        let ours = self.streams.dials.get(&id).and_then(|d| d.remote.as_ref());
        if ours.is_none_or(|(l, _)| *l != link) {
            return None;
        }
        self.streams.take_dial(id)
    }

    /// Our id of the open stream the peer's end `from` names, if it is one of that link's.
    fn peer_stream_id(&self, from: End) -> Option<u64> {
        let End::Peer { link, id: theirs } = from else {
            return None;
        };
        let id = *self.streams.remote.get(&(link, theirs))?;
        let open = self.streams.open.get(&id)?;
        (open.a == from || open.b == from).then_some(id)
    }

    /// Check a peer's dial: `Ok` with the user asked, their connections to offer it to and the
    /// window; `Err`: the refusal.
    #[allow(clippy::too_many_arguments)]
    fn peer_dial(
        &self,
        link: ConnId,
        server: &str,
        from: &str,
        to: &str,
        name: &str,
        window: u64,
        takes: &impl Fn(ConnId) -> bool,
    ) -> Result<(String, Vec<ConnId>, u64), ErrorBody> {
        if !self.streams.config.enabled {
            return Err(error(
                ErrorCode::DialOffline,
                "this server takes no streams ([streams] enabled = false)",
            ));
        }
        wire::check_name(name)?;
        for user in [from, to] {
            crate::protocol::groups::check_member_name(user)
                .map_err(|e| error(ErrorCode::InvalidMessage, e))?;
        }
        if from.contains('@') {
            return Err(error(
                ErrorCode::ForgedOrigin,
                format!("a peer dials for its own users only, not for {from:?}"),
            ));
        }
        if self.streams.count(link) >= MAX_PER_LINK {
            return Err(link_full());
        }
        let caller = format!("{from}@{server}");
        if !self.sees_user(Some(&caller), to) {
            return Err(error(
                ErrorCode::Forbidden,
                format!(
                    "{caller:?} may not dial {to:?}: presence rules ([presence] visible) hide them"
                ),
            ));
        }
        let user = match self.send_target(to) {
            Target::Local(user) => user,
            Target::Remote { server, .. } => {
                return Err(error(
                    ErrorCode::DialOffline,
                    format!(
                        "{to:?} is a user of server {server:?}: a stream crosses one link only"
                    ),
                ));
            }
        };
        let offered: Vec<ConnId> = self
            .presence
            .conns(user)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|c| takes(*c))
            .collect();
        if offered.is_empty() {
            return Err(offline(user));
        }
        Ok((
            user.to_string(),
            offered,
            window.min(self.streams.config.window),
        ))
    }

    /// Offer a peer's dial to `offered`.
    #[allow(clippy::too_many_arguments)]
    fn offer(
        &mut self,
        caller: End,
        from: (String, String),
        callee: String,
        name: String,
        offered: Vec<ConnId>,
        window: u64,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.streams.next += 1;
        let id = self.streams.next;
        let sender = Sender {
            user: Some(from.0.clone()),
            server: from.1.clone(),
            handler: None,
            info: None,
        };
        for c in &offered {
            send(out, *c, wire::incoming_frame(id, &sender, &name, window));
            self.streams.per(*c).offered.push(id);
        }
        self.streams.list(caller, id, None);
        self.streams.dials.insert(
            id,
            Dial {
                caller,
                from,
                reply: None,
                name,
                callee,
                offered,
                window,
                remote: None,
            },
        );
        let at = now + self.streams.config.dial_timeout;
        self.deadlines.push(at, Due::Dial(id));
    }

    /// The link went down: its streams end (the ends here told `stream_closed`), dials it brought
    /// end for the connections offered them, dials sent over it fail `peer_unavailable`.
    pub(in crate::router) fn streams_link_down(&mut self, link: ConnId, out: &mut Vec<Action>) {
        let Some(per) = self.streams.conns.remove(&link) else {
            return;
        };
        let server = self.peer_of(link).unwrap_or_default().to_string();
        self.streams.remote.retain(|(l, _), _| *l != link);
        for (id, _) in per.streams {
            if let Some(open) = self.streams.take_open(id) {
                let here = if matches!(open.a, End::Peer { .. }) {
                    open.b
                } else {
                    open.a
                };
                let text = format!("the link to server {server:?} went down");
                tell_end(out, here, id, Some(&error(ErrorCode::StreamClosed, text)));
            } else if let Some(dial) = self.streams.take_dial(id) {
                if dial.remote.is_some() {
                    let text = format!(
                        "the link to server {server:?} went down before {:?} answered",
                        dial.callee
                    );
                    self.stream_dial_failed(&dial, error(ErrorCode::PeerUnavailable, text), out);
                } else {
                    self.streams.stats.failed += 1;
                    let text = format!("the link to the dialler's server {server:?} went down");
                    let e = error(ErrorCode::StreamClosed, text);
                    for c in &dial.offered {
                        send(out, *c, wire::end_frame(id, Some(&e)));
                    }
                }
            }
        }
    }
}

fn link_full() -> ErrorBody {
    error(
        ErrorCode::LimitReached,
        format!("the peer link carries {MAX_PER_LINK} streams and dials, the most one link may"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peer_stream::parse_peer_stream;
    use serde_json::Value;

    const ALICE: ConnId = ConnId {
        slot: 1,
        generation: 1,
    };
    const LINK_B: ConnId = ConnId {
        slot: 8,
        generation: 8,
    };
    const LINK_C: ConnId = ConnId {
        slot: 9,
        generation: 9,
    };

    fn router() -> Router {
        let mut r = Router::new(RouterConfig {
            server: "a".into(),
            request_timeout: Duration::from_secs(5),
            max_chain_depth: 8,
            max_frame: 1 << 20,
            login_timeout: Duration::from_secs(5),
            max_logins: 16,
        });
        r.set_streams(StreamConfig {
            window: 1000,
            ..StreamConfig::default()
        });
        for (name, link) in [("b", LINK_B), ("c", LINK_C)] {
            r.add_peer(name);
            r.peer_up(name, link);
            r.set_peer_streams(name, true);
        }
        let mut out = Vec::new();
        r.client_identified(ALICE, "alice", &mut out);
        r
    }

    fn frames(out: &mut Vec<Action>) -> Vec<(ConnId, Value)> {
        out.drain(..)
            .map(|a| match a {
                Action::Send { to, body } => (to, serde_json::from_slice(&body).unwrap()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn from_peer(r: &mut Router, link: ConnId, frame: &str, out: &mut Vec<Action>) {
        let f = parse_peer_stream(frame.as_bytes()).unwrap().unwrap();
        r.peer_stream(link, f, |_| true, Instant::now(), out);
    }

    #[test]
    fn a_peers_frames_reach_only_streams_of_its_own_link() {
        let mut r = router();
        let mut out = Vec::new();
        from_peer(
            &mut r,
            LINK_B,
            r#"{"header":{"kind":"stream.dial","stream":5,"from":"bob","to":"alice","name":"s","window":5000}}"#,
            &mut out,
        );
        let sent = frames(&mut out);
        assert_eq!(sent[0].0, ALICE);
        assert_eq!(sent[0].1["data"]["window"], 1000, "the smaller window");
        let id = sent[0].1["header"]["stream"].as_u64().unwrap();
        r.stream_accept(ALICE, None, id, &mut out).unwrap();
        assert_eq!(
            frames(&mut out)[0],
            (
                LINK_B,
                serde_json::json!({"header":{"kind":"stream.accept","stream":id,"dial":5,"window":1000}})
            )
        );
        // c names b's stream id (and ours): nothing happens.
        for theirs in [5, id] {
            let data = format!(r#"{{"header":{{"kind":"stream","stream":{theirs}}},"data":1}}"#);
            from_peer(&mut r, LINK_C, &data, &mut out);
            let end = format!(r#"{{"header":{{"kind":"stream","stream":{theirs},"end":true}}}}"#);
            from_peer(&mut r, LINK_C, &end, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // b's own frame goes through.
        from_peer(
            &mut r,
            LINK_B,
            r#"{"header":{"kind":"stream","stream":5},"data":1}"#,
            &mut out,
        );
        assert_eq!(frames(&mut out)[0].0, ALICE);
        // b's link goes down: alice is told, and nothing of b is left.
        r.peer_down(LINK_B, &mut out);
        let sent = frames(&mut out);
        assert_eq!(sent[0].0, ALICE);
        assert_eq!(sent[0].1["data"]["code"], "stream_closed");
        assert!(r.streams.remote.is_empty());
        assert!(!r.streams.conns.contains_key(&LINK_B));
    }

    #[test]
    fn one_link_carries_at_most_max_per_link_dials() {
        let mut r = router();
        let mut out = Vec::new();
        for n in 0..MAX_PER_LINK + 1 {
            let dial = format!(
                r#"{{"header":{{"kind":"stream.dial","stream":{n},"from":"bob","to":"alice","name":"s","window":1000}}}}"#
            );
            from_peer(&mut r, LINK_B, &dial, &mut out);
        }
        let last = frames(&mut out).pop().unwrap();
        assert_eq!(last.0, LINK_B);
        assert_eq!(last.1["header"]["kind"], "stream.refuse");
        assert_eq!(last.1["data"]["code"], "limit_reached");
        assert_eq!(r.streams.count(LINK_B), MAX_PER_LINK);
        // Another link is not affected.
        from_peer(
            &mut r,
            LINK_C,
            r#"{"header":{"kind":"stream.dial","stream":1,"from":"carl","to":"alice","name":"s","window":1000}}"#,
            &mut out,
        );
        assert_eq!(frames(&mut out)[0].0, ALICE);
    }
}
