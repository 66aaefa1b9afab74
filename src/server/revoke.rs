//! Session revocation: every logged-in session remembers what it stands on (a [`Stamp`] from the
//! verifier): the stored hash for a password login, the user's pinned certificate (or that none
//! is pinned) for a certificate login. About once a second (and at once on SIGHUP) the verifier
//! pool is asked whether the user store changed; when it did, every session whose user is gone,
//! or whose part of the user's entry is no longer the one the session stands on, is sent
//! `session_revoked` and closed. A certificate session does not stand on the password, nor a
//! password session on the pin; a public-key session stands on its one key, so it is revoked when
//! that key is removed (or the user deleted), not when another key is added or removed. The connection that changed its own password with `bester.passwd`
//! stands on the new hash, so it stays; the user's other password connections are revoked.
//!
//! The store is only read on the verifier threads (a `stat`, and a read when it changed); the loop
//! compares digests.

use std::time::{Duration, Instant};

use log::info;

use super::Server;
use super::auth_tag::AuthTag;
use super::conn::{ClientState, Role};
use crate::auth::jobs::{AuthJob, Credential, Stamp, UserSnapshot};
use crate::protocol::ErrorCode;
use crate::protocol::error::ErrorBody;
use crate::router::ConnId;

/// How often the user store is checked for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the server knows of the user store (each session keeps its own stamp, in its
/// connection's state).
#[derive(Debug)]
pub(super) struct Sessions {
    latest: Option<UserSnapshot>,
    check_at: Instant,
    asked: bool,
}

impl Sessions {
    pub fn new(now: Instant) -> Sessions {
        Sessions {
            latest: None,
            check_at: now,
            asked: false,
        }
    }

    /// Check the store at the next loop iteration (SIGHUP).
    pub fn check_soon(&mut self, now: Instant) {
        self.check_at = now;
    }

    /// The store as last seen, if it was.
    pub fn latest(&self) -> Option<&UserSnapshot> {
        self.latest.as_ref()
    }

    /// When the next check is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        (!self.asked).then_some(self.check_at)
    }
}

/// Why a session with this stamp is no longer valid in `snapshot`, if it is not.
pub(super) fn revoked(snapshot: &UserSnapshot, user: &str, stamp: &Stamp) -> Option<&'static str> {
    if stamp.generation >= snapshot.generation {
        return None; // the session was checked against this store or a newer one
    }
    match snapshot.users.get(user) {
        None => Some("the user was deleted"),
        Some(d) => match stamp.credential {
            Credential::Password if d.password != stamp.digest => {
                Some("the password was changed elsewhere")
            }
            Credential::Certificate if d.certificate != stamp.digest => {
                Some("the user's pinned certificate was changed")
            }
            Credential::Key if !d.keys.contains(&stamp.digest) => {
                Some("the key it logged in with was removed")
            }
            _ => None,
        },
    }
}

impl Server {
    /// A session logged in (or changed its own password) standing on `stamp`.
    pub(super) fn session_started(&mut self, id: ConnId, user: &str, stamp: Option<Stamp>) {
        let Some(stamp) = stamp else { return };
        let why = self
            .sessions
            .latest
            .as_ref()
            .and_then(|snap| revoked(snap, user, &stamp));
        if let Some(conn) = self.conn(id)
            && let Role::Client(ClientState::Ready { stamp: kept, .. }) = &mut conn.role
        {
            *kept = Some(stamp);
        }
        if let Some(why) = why {
            self.revoke(id, user, why);
        }
    }

    /// Ask the verifier pool whether the store changed, when due.
    pub(super) fn users_tick(&mut self, now: Instant) {
        if self.sessions.asked || now < self.sessions.check_at {
            return;
        }
        self.sessions.check_at = now + CHECK_EVERY;
        let since = self.sessions.latest.as_ref().map_or(0, |s| s.generation);
        let job = AuthJob::Snapshot {
            tag: AuthTag::internal(),
            since,
        };
        // A full queue means logins are waiting: check again next time.
        self.sessions.asked = self.auth.submit(job).is_ok();
    }

    /// The answer to a store check: revoke what the new store no longer backs.
    pub(super) fn users_checked(&mut self, snapshot: Option<UserSnapshot>) {
        self.sessions.asked = false;
        let Some(snapshot) = snapshot else { return };
        let mut gone: Vec<(ConnId, String, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(_, conn)| match &conn.role {
                Role::Client(ClientState::Ready {
                    user,
                    stamp: Some(stamp),
                    ..
                }) => revoked(&snapshot, user, stamp).map(|why| (conn.id, user.clone(), why)),
                _ => None,
            })
            .collect();
        gone.sort_unstable();
        self.attached_checked(&snapshot);
        self.sessions.latest = Some(snapshot);
        for (id, user, why) in gone {
            self.revoke(id, &user, why);
        }
    }

    fn revoke(&mut self, id: ConnId, user: &str, why: &str) {
        let Some(conn) = self.conn(id).filter(|c| c.user() == Some(user)) else {
            return; // logged out, switched user or gone meanwhile
        };
        if let Role::Client(ClientState::Ready { stamp, .. }) = &mut conn.role {
            *stamp = None; // revoked once
        }
        info!("conn={id} user={user} session revoked: {why}");
        self.router.client_gone(id, &mut self.actions);
        let error = ErrorBody::new(
            ErrorCode::SessionRevoked,
            format!("session revoked: {why}; log in again"),
        );
        self.tell_error(id, &error);
        self.finish(id, Instant::now(), "session revoked".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::auth::jobs::EntryDigests;

    fn snapshot(generation: u64, users: &[(&str, u64)]) -> UserSnapshot {
        let digests = |d: u64| EntryDigests {
            password: d,
            certificate: d + 100,
            keys: vec![d + 200, d + 300],
            gateway: false,
        };
        UserSnapshot {
            generation,
            users: users
                .iter()
                .map(|(u, d)| (u.to_string(), digests(*d)))
                .collect(),
        }
    }

    #[test]
    fn certificate_sessions_stand_on_the_pin_not_the_password() {
        let stamp = Stamp {
            generation: 1,
            digest: 107,
            credential: Credential::Certificate,
        };
        assert_eq!(
            revoked(&snapshot(2, &[("alice", 7)]), "alice", &stamp),
            None
        );
        // The password changed (digest 8), the pin did not (108 would be a new pin).
        let password_changed = UserSnapshot {
            generation: 2,
            users: [(
                "alice".to_string(),
                EntryDigests {
                    password: 8,
                    certificate: 107,
                    keys: Vec::new(),
                    gateway: false,
                },
            )]
            .into(),
        };
        assert_eq!(revoked(&password_changed, "alice", &stamp), None);
        assert_eq!(
            revoked(&snapshot(2, &[("alice", 8)]), "alice", &stamp),
            Some("the user's pinned certificate was changed")
        );
        assert_eq!(
            revoked(&snapshot(2, &[]), "alice", &stamp),
            Some("the user was deleted")
        );
    }

    #[test]
    fn deleted_and_changed_users_are_revoked_only_by_a_newer_store() {
        let stamp = Stamp {
            generation: 1,
            digest: 7,
            credential: Credential::Password,
        };
        let same = snapshot(2, &[("alice", 7)]);
        assert_eq!(revoked(&same, "alice", &stamp), None);
        let changed = snapshot(2, &[("alice", 8)]);
        assert_eq!(
            revoked(&changed, "alice", &stamp),
            Some("the password was changed elsewhere")
        );
        let deleted = snapshot(2, &[("bob", 7)]);
        assert_eq!(
            revoked(&deleted, "alice", &stamp),
            Some("the user was deleted")
        );
        // A session checked against generation 2 is not judged by a generation-2 snapshot.
        let newer = Stamp {
            generation: 2,
            digest: 9,
            credential: Credential::Password,
        };
        assert_eq!(revoked(&changed, "alice", &newer), None);
    }

    #[test]
    fn key_sessions_stand_on_their_own_key() {
        let stamp = Stamp {
            generation: 1,
            digest: 207,
            credential: Credential::Key,
        };
        // Password, pin and the other key changed: the session's key is still there.
        let mut others_changed = snapshot(2, &[("alice", 8)]);
        others_changed.users.get_mut("alice").unwrap().keys = vec![1, 207];
        assert_eq!(revoked(&others_changed, "alice", &stamp), None);
        assert_eq!(
            revoked(&snapshot(2, &[("alice", 8)]), "alice", &stamp),
            Some("the key it logged in with was removed")
        );
        assert_eq!(
            revoked(&snapshot(2, &[]), "alice", &stamp),
            Some("the user was deleted")
        );
    }
}
