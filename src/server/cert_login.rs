//! Logins by client certificate: `identify` as a client without `authentication` on a listener
//! with `client_ca`. TLS has already verified the certificate (issued directly by a `client_ca`
//! certificate, clientAuth EKU, not in a `client_crl`: see `net/tls.rs`); here the certificate
//! names its user (`client_cert_map`: the one subject CN, or the one email or URI SAN), the name
//! must be a valid user name, and then the verifier threads look it up in the user store (a store
//! read, no argon2, never on the loop): the user must exist, and if their entry pins a
//! certificate it must be this one. The session then carries a stamp like a password session, so
//! it is revoked when the user is deleted or their pin changes.
//!
//! Refusals look exactly like an unknown user's password login (`auth_failed`, "invalid username
//! or password"); the reason is logged. A WebSocket upgrade from another origin (a page elsewhere,
//! even one `allowed_origins` admits) never logs in by certificate: the browser would present its
//! user's certificate to any page that asks.
//!
//! After a reload (SIGHUP), every open connection's client certificate is checked again against
//! its listener's new settings (CA file, CRLs, validity dates): one the listener would now refuse
//! ends its connection, a logged-in session with `session_revoked`.
//!
//! It must not: accept a name the store does not hold, fold case, or log anything secret (a
//! certificate holds none; its fingerprint is public).

use std::time::Instant;

use log::info;

use super::Server;
use super::auth_tag::AuthTag;
use super::client::login_error;
use super::conn::{ClientState, Role};
use crate::auth::jobs::{AuthJob, AuthOutcome};
use crate::auth::user_store::validate_username;
use crate::net::Link;
use crate::net::tls::{self, CertMap};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::router::ConnId;

/// What a connection's transport offers for a certificate login.
enum Offer {
    /// No verified client certificate (not a `client_ca` listener).
    None,
    /// A WebSocket upgrade from a page of another origin.
    CrossOrigin,
    /// The name the certificate gives (or why it gives none), and its fingerprint.
    Certificate(Result<String, String>, [u8; 32]),
}

fn offer(link: &Link, same_origin: bool) -> Offer {
    let Link::Tls(tls) = link else {
        return Offer::None;
    };
    let (Some(map), Some(cert)) = (
        tls.cert_map(),
        tls.peer_certificates().and_then(|c| c.first()),
    ) else {
        return Offer::None;
    };
    if !same_origin {
        return Offer::CrossOrigin;
    }
    let name = tls::certificate_user(cert, map);
    Offer::Certificate(name, tls::fingerprint(cert))
}

/// The name rule of a mapping, for the log.
fn describe(map: Option<&CertMap>) -> &'static str {
    match map {
        Some(CertMap::Email(_)) => "email SAN",
        Some(CertMap::Uri(_)) => "URI SAN",
        _ => "subject CN",
    }
}

impl Server {
    /// `identify` as a client without a password: log in by the connection's verified client
    /// certificate (the store lookup runs on the verifier threads; the answer comes back as an
    /// auth result). `Err` is the refusal to send before closing.
    pub(super) fn certificate_login(&mut self, id: ConnId) -> Result<(), ErrorBody> {
        let Some(conn) = self.conn(id) else {
            return Ok(());
        };
        let transport = conn.io.transport();
        let same_origin = transport.ws.as_ref().is_none_or(|ws| ws.same_origin());
        let rule = match &transport.link {
            Link::Tls(tls) => describe(tls.cert_map()),
            Link::Plain(_) => "",
        };
        let ip = conn.ip;
        let needs_password = |extra: &str| {
            ErrorBody::new(
                ErrorCode::InvalidMessage,
                format!("identify as a client needs authentication{extra}"),
            )
        };
        let (name, fingerprint) = match offer(&transport.link, same_origin) {
            Offer::None => return Err(needs_password("")),
            Offer::CrossOrigin => {
                info!("conn={id} no certificate login for a page of another origin");
                return Err(needs_password(
                    " (a page of another origin cannot log in by client certificate)",
                ));
            }
            Offer::Certificate(name, fingerprint) => (name, fingerprint),
        };
        let refused = |server: &mut Server, why: String| {
            info!("conn={id} certificate login refused: {why}");
            server.stats.logins.failed += 1;
            Err(login_error(&AuthOutcome::BadCredentials))
        };
        let user = match name {
            Ok(user) => user,
            Err(why) => return refused(self, why),
        };
        if let Err(e) = validate_username(&user) {
            return refused(self, format!("the certificate's {rule}: {e}"));
        }
        let job = AuthJob::Lookup {
            tag: AuthTag::certificate(id, ip, &user),
            username: user,
            fingerprint,
        };
        self.submit_login(id, "certificate login", job)?;
        if let Some(conn) = self.conn(id) {
            conn.role = Role::Client(ClientState::Verifying);
        }
        Ok(())
    }

    /// After a reload: end the connections whose client certificate their listener would now
    /// refuse (revoked by a new CRL, expired, or its CA no longer listed).
    pub(super) fn recheck_client_certificates(&mut self) {
        let mut refused = Vec::new();
        for (_, conn) in self.conns.iter() {
            let Link::Tls(tls) = &conn.io.transport().link else {
                continue;
            };
            let (Some(accepted_by), Some(cert)) = (
                tls.server_tls(),
                tls.peer_certificates().and_then(|c| c.first()),
            ) else {
                continue;
            };
            let Some(now) = self.listeners.tls_of(accepted_by.listener) else {
                continue;
            };
            if let Err(e) = now.accepts_client_cert(cert) {
                refused.push((conn.id, conn.user().map(str::to_string), e));
            }
        }
        for (id, user, e) in refused {
            info!(
                "conn={id} user={} client certificate no longer accepted ({e}); closing",
                user.as_deref().unwrap_or("-")
            );
            if user.is_some() {
                self.router.client_gone(id, &mut self.actions);
                let error = ErrorBody::new(
                    ErrorCode::SessionRevoked,
                    "session revoked: the client certificate is no longer accepted; log in again",
                );
                self.tell_error(id, &error);
            }
            self.finish(
                id,
                Instant::now(),
                "client certificate no longer accepted".into(),
            );
        }
    }
}
