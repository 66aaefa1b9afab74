//! Client-to-client streams on a client session (PROTOCOL.md §5, "Streams"): the built-ins
//! `bester.dial`, `bester.accept` and `bester.refuse`, and the stream frames of a session that
//! negotiated `stream`. Each reads its frame (`protocol/stream.rs`) and asks the router, where
//! the dials, the streams and their credit live (`router/streams.rs`); the frames the router
//! returns go out with the other actions.
//!
//! It must not: treat a frame of a session that did not negotiate `stream` as a stream frame
//! (such a session gets exactly the answers of a server without streams), or answer a stream
//! frame as a message.

use std::time::Instant;

use crate::protocol::message::{ClientMessage, client_ok};
use crate::protocol::peer_stream::PeerStream;
use crate::protocol::stream::{self, ACCEPT, AnswerData, DIAL, DialData, REFUSE};
use crate::router::ConnId;

use super::Server;
use super::conn::Conn;
use slab::Slab;

/// Whether connection `c` negotiated `stream`.
fn takes(conns: &Slab<Conn>, c: ConnId) -> bool {
    conns
        .get(c.slot)
        .filter(|x| x.id == c)
        .and_then(|x| x.features)
        .is_some_and(|f| f.stream)
}

/// Whether `kind` is one of the built-ins of this module.
pub(super) fn is_stream_builtin(kind: &str) -> bool {
    matches!(kind, DIAL | ACCEPT | REFUSE)
}

impl Server {
    /// Whether connection `id` negotiated `stream`.
    pub(super) fn takes_streams(&mut self, id: ConnId) -> bool {
        self.conn(id)
            .and_then(|c| c.features)
            .is_some_and(|f| f.stream)
    }

    /// A frame of a logged-in session that looks like a stream frame: if the session
    /// negotiated `stream`, handle it and say so (otherwise it is a message, refused as such).
    pub(super) fn stream_frame(&mut self, id: ConnId, body: &[u8]) -> bool {
        if !self.takes_streams(id) {
            return false;
        }
        match stream::parse(body) {
            Ok(frame) => self.router.stream_frame(id, frame, &mut self.actions),
            // Not a message: the error has no id to carry (PROTOCOL.md §9).
            Err(error) => self.reply_error(id, None, &error),
        }
        true
    }

    /// Answer `bester.dial`, `bester.accept` or `bester.refuse` (the session negotiated
    /// `stream`).
    pub(super) fn stream_builtin(&mut self, id: ConnId, msg: &ClientMessage, now: Instant) {
        let reply_id = msg.id.as_deref();
        let kind = &*msg.payload.kind;
        let answer = match kind {
            DIAL => msg.payload.data_as::<DialData>().and_then(|data| {
                let conns = &self.conns;
                let takes = |c: ConnId| takes(conns, c);
                self.router
                    .stream_dial(id, reply_id, &data, takes, now, &mut self.actions)
                    .map(|()| None)
            }),
            ACCEPT => msg.payload.data_as::<AnswerData>().and_then(|data| {
                self.router
                    .stream_accept(id, reply_id, data.stream, &mut self.actions)
                    .map(Some)
            }),
            _ => msg.payload.data_as::<AnswerData>().and_then(|data| {
                self.router
                    .stream_refuse(id, data.stream, &mut self.actions)
                    .map(|()| Some(client_ok(reply_id, Some(kind), &())))
            }),
        };
        match answer {
            // The dial is answered once a connection of the user asked does.
            Ok(None) => self.stats.messages.answered(true),
            Ok(Some(body)) => {
                self.stats.messages.answered(true);
                self.send(id, body);
            }
            Err(error) => self.reply_error(id, reply_id, &error),
        }
    }
}

impl Server {
    /// A stream frame from the peer on link `id`.
    pub(super) fn peer_stream(&mut self, id: ConnId, frame: PeerStream<'_>, now: Instant) {
        let conns = &self.conns;
        let takes = |c: ConnId| takes(conns, c);
        self.router
            .peer_stream(id, frame, takes, now, &mut self.actions);
    }
}
