//! Peer links: dialling configured peers (and redialling with backoff), the challenge-response
//! handshake on both sides (`federation::handshake`), keeping one link per peer when both dialled,
//! and handing an authenticated link's frames to the router.

use std::cmp::Reverse;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use log::{debug, info, warn};

use crate::config::PeerConfig;
use crate::federation::handshake::{self, Side, Transcript};
use crate::handler::supervisor::backoff;
use crate::net::tls::{self, TlsStream};
use crate::net::{Link, Stream, Transport};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::protocol::message::Identify;
use crate::protocol::peer::{
    PeerFrame, accepted_frame_with, challenge_frame, identify_frame_offering, parse_peer_frame,
    proof_frame,
};

use super::conn::{PeerConn, PeerState, Role};
use super::{Server, Timer};
use crate::router::ConnId;

/// TCP keepalive on peer links: probe after 10 s of silence, every 5 s, dead after 3 misses.
const KEEPALIVE: (i32, i32, i32) = (10, 5, 3);

/// One configured peer, as the dialler sees it.
#[derive(Debug)]
pub(super) struct PeerSlot {
    pub config: PeerConfig,
    /// Our outgoing connection attempt, while one is in progress.
    pub dialing: Option<ConnId>,
    /// It refused an identify that offered features (a server older than negotiation): later
    /// dials offer none.
    pub plain_handshake: bool,
    /// Attempts since the last time a link was up.
    pub failures: u32,
    /// Not before this time may we dial again.
    pub retry_at: Instant,
    /// When the link last went up or down (start time until then).
    pub since: Instant,
    /// With `tls = true`: how to check the peer's certificate, and the name it must carry.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// The TLS client configuration for dialling a peer with `tls = true` (read from its CA file, or
/// trusting its pinned fingerprint). The HMAC handshake still runs on top: a stolen certificate
/// alone does not make a peer.
pub(super) fn tls_for(
    name: &str,
    peer: &PeerConfig,
) -> io::Result<Option<(Arc<ClientConfig>, ServerName<'static>)>> {
    let Some(settings) = &peer.tls else {
        return Ok(None);
    };
    let fail = |e: String| io::Error::other(format!("peers.{name}: {e}"));
    let config = tls::client_config(&settings.trust, None).map_err(fail)?;
    let server_name = tls::server_name(&settings.server_name).map_err(fail)?;
    Ok(Some((config, server_name)))
}

impl Server {
    /// Dial every configured peer that has an address, no link and no attempt in progress.
    pub(super) fn dial_peers(&mut self, now: Instant) {
        let up = self.router.peers_up();
        let due: Vec<String> = self
            .peers
            .iter()
            .filter(|(name, slot)| {
                slot.config.address.is_some()
                    && slot.dialing.is_none()
                    && slot.retry_at <= now
                    && !up.contains(name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let slot = self.peers.get_mut(&name).expect("listed above");
            let addr = slot.config.address.expect("filtered above");
            let stream = match mio::net::TcpStream::connect(addr) {
                Ok(stream) => stream,
                Err(e) => {
                    self.peer_attempt_failed(&name, now, &format!("cannot connect to {addr}: {e}"));
                    continue;
                }
            };
            // As on accepted connections: a small frame (an ack, one message) goes out at once
            // instead of waiting for the peer's delayed ACK of the previous one (Nagle).
            if let Err(e) = stream.set_nodelay(true) {
                warn!("peer={name} cannot set TCP_NODELAY: {e}");
            }
            let transport = match &slot.tls {
                None => Transport::from(Stream::Tcp(stream)),
                Some((config, server_name)) => {
                    match TlsStream::client(stream, Arc::clone(config), server_name.clone()) {
                        Ok(tls) => Transport::from(Link::Tls(Box::new(tls))),
                        Err(e) => {
                            self.peer_attempt_failed(&name, now, &format!("TLS setup: {e}"));
                            continue;
                        }
                    }
                }
            };
            let role = Role::Peer(PeerConn {
                name: name.clone(),
                outgoing: true,
                state: PeerState::Connecting,
                complained: false,
            });
            let max = self.config.max_identify_frame;
            if let Some(id) = self.insert_conn(transport, addr.to_string(), None, role, max) {
                debug!("conn={id} peer={name} dialling {addr}");
                self.peers.get_mut(&name).expect("exists").dialing = Some(id);
                let deadline = now + self.config.identify_timeout;
                self.timers.push(Reverse((deadline, Timer::Handshake(id))));
            }
        }
    }

    /// When the next dial is due (for the poll timeout).
    pub(super) fn next_dial(&self) -> Option<Instant> {
        let up = self.router.peers_up();
        self.peers
            .iter()
            .filter(|(name, slot)| {
                slot.config.address.is_some() && slot.dialing.is_none() && !up.contains(name)
            })
            .map(|(_, slot)| slot.retry_at)
            .min()
    }

    fn peer_attempt_failed(&mut self, name: &str, now: Instant, why: &str) {
        let Some(slot) = self.peers.get_mut(name) else {
            return;
        };
        slot.dialing = None;
        slot.failures += 1;
        let delay = backoff(slot.failures);
        slot.retry_at = now + delay;
        warn!("peer={name} {why}; retrying in {} ms", delay.as_millis());
    }

    /// An outgoing connection became writable (or failed): finish connecting and send identify.
    pub(super) fn peer_connecting(&mut self, id: ConnId) {
        let Some(conn) = self.conn(id) else { return };
        let Role::Peer(peer) = &conn.role else { return };
        if peer.state != PeerState::Connecting {
            return;
        }
        let name = peer.name.clone();
        match conn.io.connect_result() {
            None => {}
            Some(Ok(())) => {
                let nonce = handshake::nonce();
                let offer = self.peer_offer(id, &name);
                let body = identify_frame_offering(&self.config.name, &nonce, offer.as_deref());
                if let Some(Role::Peer(peer)) = self.conn(id).map(|c| &mut c.role) {
                    peer.state = PeerState::AwaitChallenge { nonce };
                }
                self.send(id, body);
            }
            Some(Err(e)) => self.close(id, format!("connect to {name:?} failed: {e}")),
        }
    }

    /// `identify {type:"server"}` on an accepted connection: challenge the peer.
    pub(super) fn peer_identify(&mut self, id: ConnId, identify: Identify, now: Instant) {
        let ip = self.conn(id).and_then(|c| c.ip);
        let name = identify.name.unwrap_or_default();
        // Names that are not configured peers share one key (no key per garbage name).
        let key = if self.peers.contains_key(&name) {
            format!("server:{name}")
        } else {
            "server:?".to_string()
        };
        let refuse = |server: &mut Server, why: String| {
            warn!("conn={id} peer identify as {name:?} refused: {why}");
            server.logins.failed(ip, &key, now);
            let error = ErrorBody::new(ErrorCode::AuthFailed, "peer authentication failed");
            server.tell_error(id, &error);
            server.finish(id, now, "peer refused".into());
        };
        if !self.logins.allows(ip, &key, now) {
            let error = ErrorBody::new(
                ErrorCode::RateLimited,
                "too many failed peer logins; try again later",
            );
            self.tell_error(id, &error);
            return self.finish(id, now, "rate limited".into());
        }
        let Some(slot) = self.peers.get(&name) else {
            return refuse(self, "not a configured peer".into());
        };
        // A peer this server dials is accepted only from the address it dials: a failure from
        // anywhere else is the stranger's own, and cannot keep the real peer's link down.
        if let (Some(configured), Some(from)) = (slot.config.address, ip)
            && !same_host(configured.ip(), from)
        {
            return refuse(
                self,
                format!("comes from {from}, not from its configured address {configured}"),
            );
        }
        let Some(theirs) = identify.nonce.filter(|n| handshake::valid_nonce(n)) else {
            return refuse(self, "missing or malformed nonce".into());
        };
        let nonce = handshake::nonce();
        let transcript = Transcript {
            initiator: &name,
            responder: &self.config.name,
            initiator_nonce: &theirs,
            responder_nonce: &nonce,
        };
        let proof = transcript.proof(&slot.config.secret, Side::Responder);
        let body = challenge_frame(&self.config.name, &nonce, &proof);
        self.stats.became_peer();
        if let Some(conn) = self.conn(id) {
            conn.role = Role::Peer(PeerConn {
                name: name.clone(),
                outgoing: false,
                state: PeerState::AwaitProof { nonce, theirs },
                complained: false,
            });
        }
        self.offer_peer_features(id, identify.features.as_deref());
        self.timers.push(Reverse((
            now + self.config.identify_timeout,
            Timer::Handshake(id),
        )));
        self.send(id, body);
    }

    /// A frame on a server-to-server connection.
    pub(super) fn peer_frame(&mut self, id: ConnId, body: &[u8], now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        let Role::Peer(peer) = &mut conn.role else {
            return;
        };
        let name = peer.name.clone();
        let state = peer.state.clone();
        let frame = match parse_peer_frame(body) {
            Ok(frame) => frame,
            Err(e) if state == PeerState::Up => {
                if !peer.complained {
                    peer.complained = true;
                    warn!(
                        "peer={name} sent a bad frame: {e} (further ones are logged at debug level)"
                    );
                } else {
                    debug!("peer={name} bad frame: {e}");
                }
                return;
            }
            Err(e) => return self.close(id, format!("bad handshake frame: {e}")),
        };
        let Some(secret) = self.peers.get(&name).map(|s| s.config.secret.clone()) else {
            return self.close(id, "peer no longer configured".into());
        };
        match (state, frame) {
            (PeerState::Up, PeerFrame::Message(m)) if !self.life.accepting() => {
                self.router.refuse_peer_message(id, m, &mut self.actions)
            }
            (PeerState::Up, PeerFrame::Message(m)) => {
                self.router.peer_message(id, m, now, &mut self.actions)
            }
            (PeerState::Up, PeerFrame::Ack(a)) => {
                self.router.peer_ack(id, a, now, &mut self.actions)
            }
            (PeerState::Up, PeerFrame::Directory(d)) => {
                self.router.directory_received(id, body.len());
                self.router.directory_frame(id, d, now, &mut self.actions)
            }
            (PeerState::Up, PeerFrame::Stream(f)) => self.peer_stream(id, f, now),
            (PeerState::Up, PeerFrame::Deliver(d)) => {
                self.router.peer_deliver(id, d, &mut self.actions)
            }
            (
                PeerState::AwaitChallenge { nonce },
                PeerFrame::Challenge {
                    server,
                    nonce: theirs,
                    proof,
                },
            ) => {
                let transcript = Transcript {
                    initiator: &self.config.name,
                    responder: &name,
                    initiator_nonce: &nonce,
                    responder_nonce: &theirs,
                };
                if server != name {
                    return self
                        .close(id, format!("dialled {name:?} but it says it is {server:?}"));
                }
                if !handshake::valid_nonce(&theirs)
                    || !transcript.verify(&secret, Side::Responder, &proof)
                {
                    return self.close(id, "the peer's proof is wrong (secrets differ?)".into());
                }
                let body = proof_frame(&transcript.proof(&secret, Side::Initiator));
                self.set_peer_state(id, PeerState::AwaitAccept);
                self.send(id, body);
            }
            (PeerState::AwaitAccept, PeerFrame::Accepted { server, features })
                if server == name =>
            {
                self.peer_accepted_features(id, &name, features.as_deref());
                self.link_up(id, now)
            }
            (PeerState::AwaitProof { nonce, theirs }, PeerFrame::Proof(proof)) => {
                let transcript = Transcript {
                    initiator: &name,
                    responder: &self.config.name,
                    initiator_nonce: &theirs,
                    responder_nonce: &nonce,
                };
                if !transcript.verify(&secret, Side::Initiator, &proof) {
                    warn!("conn={id} peer {name:?} sent a wrong proof (secrets differ?)");
                    let ip = self.conn(id).and_then(|c| c.ip);
                    self.logins.failed(ip, &format!("server:{name}"), now);
                    let error = ErrorBody::new(ErrorCode::AuthFailed, "peer authentication failed");
                    self.tell_error(id, &error);
                    return self.finish(id, now, "peer proof wrong".into());
                }
                let features = self.peer_features(id, &name);
                let body = accepted_frame_with(&self.config.name, features.as_deref());
                self.send_secret(id, body);
                self.link_up(id, now);
            }
            (PeerState::AwaitChallenge { .. }, PeerFrame::Error(e))
                if e.code == ErrorCode::InvalidMessage =>
            {
                self.peer_refused_offer(id, &name);
                self.close(id, format!("refused by the peer: {e}"))
            }
            (_, PeerFrame::Error(e)) => self.close(id, format!("refused by the peer: {e}")),
            (state, frame) => {
                debug!("peer={name} unexpected {} frame in {state:?}", frame.kind());
                self.close(id, "unexpected frame during the handshake".into());
            }
        }
    }

    fn set_peer_state(&mut self, id: ConnId, state: PeerState) {
        if let Some(Role::Peer(peer)) = self.conn(id).map(|c| &mut c.role) {
            peer.state = state;
        }
    }

    /// Both sides proved themselves. If a link to the same peer is already up (both dialled), the
    /// one dialled by the server with the smaller name is kept: both ends reach the same choice.
    fn link_up(&mut self, id: ConnId, now: Instant) {
        let max_frame = self.config.max_frame;
        let Some(conn) = self.conn(id) else { return };
        let Role::Peer(peer) = &mut conn.role else {
            return;
        };
        let name = peer.name.clone();
        let outgoing = peer.outgoing;
        let keep_new = outgoing == (self.config.name < name);
        let existing = self.router.peer_link(&name);
        if let Some(old) = existing
            && old != id
        {
            if keep_new {
                self.close(old, "replaced by the link both sides keep".into());
            } else {
                return self.close(id, "a link to this peer is already up".into());
            }
        }
        self.set_peer_state(id, PeerState::Up);
        if let Some(conn) = self.conn(id) {
            conn.io.set_max_frame(max_frame);
            conn.last_seen = now;
            let (idle, interval, count) = KEEPALIVE;
            if let Err(e) = conn.io.set_keepalive(idle, interval, count) {
                warn!("conn={id} peer={name} cannot enable TCP keepalive: {e}");
            }
        }
        if let Some(slot) = self.peers.get_mut(&name) {
            slot.since = now;
            slot.failures = 0;
            if slot.dialing == Some(id) {
                slot.dialing = None;
            }
        }
        self.router.peer_up(&name, id);
        let negotiated = self.conn(id).and_then(|c| c.features);
        let features = negotiated.unwrap_or_default();
        let store = features.store;
        self.router.set_peer_streams(&name, features.stream);
        self.forward_link_up(&name, store);
        // A peer that negotiated without `directory` does not run it: it gets none of ours. One
        // that negotiated nothing is a server from before negotiation, which may.
        if negotiated.is_none_or(|f| f.directory) {
            self.router.directory_link_up(id, now, &mut self.actions);
        }
        info!(
            "conn={id} peer={name} link up ({})",
            if outgoing { "we dialled" } else { "it dialled" }
        );
    }

    /// A peer connection closed: tell the router; an outgoing one is redialled after a backoff.
    pub(super) fn peer_closed(&mut self, id: ConnId, peer: &PeerConn, reason: &str, now: Instant) {
        let was_up = self.router.peer_of(id).is_some();
        self.router.directory_link_down(id, &mut self.actions);
        self.router.peer_down(id, &mut self.actions);
        if was_up {
            self.forward_link_down(&peer.name);
            info!("conn={id} peer={} link down: {reason}", peer.name);
            if let Some(slot) = self.peers.get_mut(&peer.name) {
                slot.since = now;
            }
        }
        if let Some(slot) = self.peers.get_mut(&peer.name)
            && slot.dialing == Some(id)
        {
            self.peer_attempt_failed(&peer.name, now, reason);
        } else if was_up && let Some(slot) = self.peers.get_mut(&peer.name) {
            // Redial soon after losing a link that was up.
            slot.retry_at = now + backoff(1);
        }
    }

    /// A peer connection that is still not authenticated at its deadline is closed.
    pub(super) fn check_handshake(&mut self, id: ConnId) {
        if let Some(conn) = self.conn(id)
            && let Role::Peer(peer) = &conn.role
            && peer.state != PeerState::Up
        {
            self.close(id, "handshake not finished in time".into());
        }
    }
}

/// Whether two addresses are the same host (an IPv4-mapped IPv6 address is its IPv4 address).
fn same_host(a: std::net::IpAddr, b: std::net::IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}
