//! Feature negotiation on the server's side (the shapes are in [`crate::protocol::features`]):
//! what a client's identify or a peer's handshake offered, what this connection may have, and
//! turning accepted features on once the login or handshake succeeded.
//!
//! Compression (`compress`) is accepted on framed transports (TCP, TLS, peer links); WebSocket
//! connections compress with their own extension instead. Frames that carry a credential or a
//! token (login replies with their resume token, `bester.token`, a redirect's token) are always
//! sent uncompressed ([`Server::send_secret`]): a compressed size tells an attacker who chose
//! part of a frame how much of it matched a secret in the same frame (CRIME, BREACH).
//!
//! Streams (`stream`, `server/streams.rs`) are accepted on every client transport and on peer
//! links (users of the two servers dial each other) unless `[streams] enabled = false`. The
//! federation directory (`directory`) is offered and accepted on peer links by a server that
//! runs it, and sent only on links that accepted it or negotiated nothing (a server from before
//! negotiation, which may run it).
//!
//! It must not: accept a feature the connection's transport cannot carry, or turn compression
//! on before the frame that answers the negotiation is queued.

use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use log::info;

use crate::protocol::features::{self, Available, Features, Limits, Negotiated};
use crate::router::ConnId;

use super::Server;

impl Server {
    /// Keep what `offered` (an identify's `features`, if it had any) asks for and this
    /// connection may have. Unknown names are ignored.
    pub(super) fn offer_features(&mut self, id: ConnId, offered: Option<&[String]>) {
        let Some(offered) = offered else { return };
        let allowed = self.config.compression;
        let stream = self.config.streams.enabled;
        let Some(conn) = self.conn(id) else { return };
        let available = Available {
            compress: allowed && matches!(conn.io.kind(), "tcp" | "tls"),
            store: false,
            stream,
            // Kept only if the login turns out to be a gateway user's (`attach.rs`).
            multiplex: true,
            directory: false,
        };
        conn.features = Some(Features::accept(offered, available));
    }

    /// [`Server::offer_features`] for a peer's handshake: `store` too, when this server keeps a
    /// delivery store.
    pub(super) fn offer_peer_features(&mut self, id: ConnId, offered: Option<&[String]>) {
        let Some(offered) = offered else { return };
        let store = self.delivery.is_some();
        let compress = self.config.compression;
        let stream = self.config.streams.enabled;
        let directory = self.config.federation.enabled;
        let Some(conn) = self.conn(id) else { return };
        let available = Available {
            compress: compress && matches!(conn.io.kind(), "tcp" | "tls"),
            store,
            stream,
            multiplex: false,
            directory,
        };
        conn.features = Some(Features::accept(offered, available));
    }

    /// The `features` and `limits` for the reply that ends a negotiation (`None` when nothing
    /// was offered), turning the accepted features on for the frames after that reply.
    pub(super) fn negotiated(&mut self, id: ConnId, with_limits: bool) -> Option<Negotiated> {
        let limits = Limits {
            max_frame_bytes: self.config.max_frame,
            max_in_flight: self.config.max_pending_per_connection,
            idle_timeout_ms: u64::try_from(self.config.idle_timeout.as_millis())
                .unwrap_or(u64::MAX),
        };
        let conn = self.conn(id)?;
        let features = conn.features?;
        conn.io.set_compress(features.compress);
        Some(Negotiated {
            features: features.names(),
            limits: with_limits.then_some(limits),
        })
    }
}

impl Server {
    /// What a dial to peer `name` offers in its identify (kept on the connection, to hold the
    /// responder's answer to): `None` for a peer that refused an offer before, or when there is
    /// nothing to offer (`server.compression = false`, no delivery store, streams off, no
    /// directory).
    pub(super) fn peer_offer(&mut self, id: ConnId, name: &str) -> Option<Vec<&'static str>> {
        if self.peers.get(name).is_none_or(|slot| slot.plain_handshake) {
            return None;
        }
        let offer = Features {
            compress: self.config.compression,
            store: self.delivery.is_some(),
            stream: self.config.streams.enabled,
            multiplex: false,
            directory: self.config.federation.enabled,
        };
        let names = offer.names();
        if names.is_empty() {
            return None;
        }
        if let Some(conn) = self.conn(id) {
            conn.features = Some(offer);
        }
        Some(names)
    }

    /// The responder accepted `accepted` of what this dial offered: turn those on.
    pub(super) fn peer_accepted_features(
        &mut self,
        id: ConnId,
        name: &str,
        accepted: Option<&[String]>,
    ) {
        let Some(conn) = self.conn(id) else { return };
        let Some(offered) = conn.features else { return };
        let has = |name: &str| accepted.is_some_and(|names| names.iter().any(|n| n == name));
        let compress = offered.compress && has(features::COMPRESS);
        let features = Features {
            compress,
            store: offered.store && has(features::STORE),
            stream: offered.stream && has(features::STREAM),
            multiplex: false,
            directory: offered.directory && has(features::DIRECTORY),
        };
        conn.features = Some(features);
        conn.io.set_compress(compress);
        info!("conn={id} peer={name} features {:?}", features.names());
    }

    /// The features for the accept that ends a handshake this server answered (`None`: the
    /// initiator offered none), turned on for the frames after it.
    pub(super) fn peer_features(&mut self, id: ConnId, name: &str) -> Option<Vec<&'static str>> {
        let features = self.negotiated(id, false)?.features;
        info!("conn={id} peer={name} features {features:?}");
        Some(features)
    }

    /// A peer refused an identify that offered features as malformed: a server from before
    /// negotiation. The next dials offer nothing (until a restart).
    pub(super) fn peer_refused_offer(&mut self, id: ConnId, name: &str) {
        let offered = self.conn(id).is_some_and(|c| c.features.is_some());
        if let Some(slot) = self.peers.get_mut(name)
            && offered
            && !slot.plain_handshake
        {
            info!("conn={id} peer={name} refused the features offered; dialling without them");
            slot.plain_handshake = true;
        }
    }
}

/// The answer to a compressed frame from a connection that does not take them.
pub(super) fn not_negotiated() -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InvalidMessage,
        "compressed frame (first byte 0x00) on a session that did not negotiate \"compress\"",
    )
}
