//! Logins by ed25519 public key: `identify` with `{"username":…,"publicKey":…}`, answered by a
//! challenge carrying a fresh nonce; the client's next frame must be its signature
//! (`{"header":{"signature":…}}`) over the login message of `auth/keys.rs` (this server's name,
//! the user, the nonce). The signature and the user's keys are checked on the verifier threads
//! (one ed25519 verification and a store read, never on the loop); the answer comes back as an
//! auth result like a password's, and the session stands on that one key (`revoke.rs`).
//!
//! A challenge is sent for any user, known or not, with keys or without, so the answer to
//! identify tells nothing about the store; the refusal after the signature is a wrong password's
//! (`auth_failed`, "invalid username or password"). The nonce is used once: it leaves the
//! connection's state when the next frame arrives, whatever that frame is, and dies with the
//! identify deadline armed when the connection was accepted. Every attempt passes the login rate
//! limits first, and a refusal counts as a failed login.
//!
//! It must not: verify on the loop, keep a nonce past one frame, or answer differently for a user
//! who does not exist.

use std::time::Instant;

use log::{debug, info};

use super::Server;
use super::auth_tag::AuthTag;
use super::client::rate_limited;
use super::conn::{Challenge, ClientState, Role};
use crate::auth::jobs::AuthJob;
use crate::auth::keys;
use crate::protocol::ErrorCode;
use crate::protocol::challenge;
use crate::protocol::error::ErrorBody;
use crate::protocol::message::{KeyCredentials, inbound_id};
use crate::router::ConnId;

impl Server {
    /// `identify` with a public key: within the rate limits, send a challenge and wait for the
    /// signature. `Err` is the refusal to send before closing.
    pub(super) fn key_identify(
        &mut self,
        id: ConnId,
        credentials: KeyCredentials,
    ) -> Result<(), ErrorBody> {
        let KeyCredentials {
            username,
            public_key,
        } = credentials;
        let key = keys::parse_public_key(&public_key).map_err(|e| {
            ErrorBody::new(
                ErrorCode::InvalidMessage,
                format!("header.identify.authentication.publicKey: {e}"),
            )
        })?;
        let ip = self.conn(id).and_then(|c| c.ip);
        if !self.logins.allows(ip, &username, Instant::now()) {
            self.stats.logins.rate_limited += 1;
            return Err(rate_limited());
        }
        let nonce = keys::new_nonce();
        let Some(conn) = self.conn(id) else {
            return Ok(());
        };
        debug!("conn={id} public-key login as {username:?}: challenge sent");
        conn.role = Role::Client(ClientState::Challenged(Box::new(Challenge {
            username,
            key,
            nonce: nonce.clone(),
        })));
        self.send(id, challenge::challenge(&nonce, &self.config.name));
        Ok(())
    }

    /// The frame after a challenge: the signature goes to the verifier threads; anything else
    /// ends the connection with an error saying what was expected.
    pub(super) fn key_signature(&mut self, id: ConnId, body: &[u8], now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        let ip = conn.ip;
        // The nonce is taken out whatever the frame is: it can be answered once.
        let Role::Client(ClientState::Challenged(challenge)) =
            std::mem::replace(&mut conn.role, Role::Client(ClientState::Verifying))
        else {
            return;
        };
        let Challenge {
            username,
            key,
            nonce,
        } = *challenge;
        let signature = match challenge::parse_signature(body) {
            Ok(signature) => signature,
            Err(error) => {
                info!(
                    "conn={id} public-key login as {username:?}: no signature ({error}); closing"
                );
                self.tell_error_id(id, inbound_id(body).as_deref(), &error);
                self.finish(id, now, "no signature for the challenge".into());
                return;
            }
        };
        let job = AuthJob::KeyLogin {
            tag: AuthTag::public_key(id, ip, &username),
            username,
            key: Box::new(key),
            server: self.config.name.clone(),
            nonce,
            signature,
        };
        if let Err(error) = self.submit_login(id, "public-key login", job) {
            self.tell_error(id, &error);
            self.finish(id, now, "login refused".into());
        }
    }
}
