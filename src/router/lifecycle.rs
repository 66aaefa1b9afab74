//! The router's side of a reload or a drain: handler types added and removed, handler links
//! retired from their pool (they stay known, so the answers to their requests in flight are still
//! routed), limits changed, peers forgotten. Sans-io like the rest of the router.

use super::{Action, HandlerMode, Origin, Router, RouterConfig};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::peer::PeerMessage;
use crate::router::ConnId;

impl Router {
    /// New limits (request timeout, chain depth, frame limit); the server name stays.
    pub fn set_limits(&mut self, config: RouterConfig) {
        let server = std::mem::take(&mut self.config.server);
        self.config = RouterConfig { server, ..config };
    }

    /// Change the in-flight limit of a handler type's connections.
    pub fn set_max_inflight(&mut self, kind: &str, max_inflight: usize) {
        if let Some(pool) = self.pools.get_mut(kind) {
            pool.max_inflight = max_inflight;
            pool.mode.max_inflight = max_inflight;
        }
    }

    /// Change how a handler type's answers are correlated, and its limits; requests already in
    /// flight keep the rules they were sent under.
    pub fn set_mode(&mut self, kind: &str, mode: HandlerMode) {
        if let Some(pool) = self.pools.get_mut(kind) {
            pool.max_inflight = mode.max_inflight;
            pool.mode = mode;
        }
    }

    /// Forget a handler type: new messages for it get `unknown_type`. Its connections are returned;
    /// they stay known until closed, so requests already in flight are still answered.
    pub fn remove_type(&mut self, kind: &str) -> Vec<ConnId> {
        self.pools.remove(kind).map(|p| p.links).unwrap_or_default()
    }

    /// The connections serving a handler type, oldest first.
    pub fn links_of(&self, kind: &str) -> Vec<ConnId> {
        self.pools
            .get(kind)
            .map(|p| p.links.clone())
            .unwrap_or_default()
    }

    /// Take a handler connection out of its pool: it gets no new requests, and answers to the
    /// ones it has are still routed until it closes.
    pub fn retire_link(&mut self, conn: ConnId) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        if let Some(pool) = self.pools.get_mut(&link.kind) {
            pool.links.retain(|c| *c != conn);
            pool.next = 0;
        }
    }

    /// Requests in flight on a handler connection (`None` if it is not a handler link).
    pub fn inflight_of(&self, conn: ConnId) -> Option<usize> {
        self.links.get(&conn).map(|l| l.inflight)
    }

    /// A peer's message that arrives while the server drains: acked `shutting_down`, not run.
    pub fn refuse_peer_message(
        &mut self,
        link: ConnId,
        msg: PeerMessage<'_>,
        out: &mut Vec<Action>,
    ) {
        let Some(server) = self.peer_links.get(&link).cloned() else {
            return;
        };
        let origin = Origin::Peer {
            link,
            msg: msg.msg.into_owned(),
            server,
        };
        let text = "the server is shutting down and takes no new messages";
        self.fail(&origin, ErrorBody::new(ErrorCode::ShuttingDown, text), out);
    }

    /// Forget a peer server (its link, if any, must be closed first).
    pub fn remove_peer(&mut self, name: &str) {
        self.peers.remove(name);
    }

    /// Identified client connections.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Configured peer servers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(slot: usize) -> ConnId {
        ConnId {
            slot,
            generation: slot as u64,
        }
    }

    #[test]
    fn a_retired_link_gets_no_new_requests_but_stays_known() {
        let mut router = Router::new(RouterConfig {
            server: "s".into(),
            request_timeout: Duration::from_secs(1),
            max_chain_depth: 8,
            max_frame: 1 << 20,
            login_timeout: Duration::from_secs(1),
            max_logins: 1,
        });
        router.add_type("t", 4);
        router.handler_connected(id(1), "t");
        router.handler_connected(id(2), "t");
        router.retire_link(id(1));
        assert_eq!(router.links_of("t"), [id(2)]);
        assert_eq!(router.inflight_of(id(1)), Some(0));
        assert_eq!(router.remove_type("t"), [id(2)]);
        assert!(router.handler_counts().is_empty());
        assert_eq!(
            router.inflight_of(id(2)),
            Some(0),
            "still known until closed"
        );
    }
}
