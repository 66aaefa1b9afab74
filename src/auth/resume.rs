//! Resume tokens: what besterd hands a client after any login so that logging in again (after a
//! restart, a lost connection or a redirect) costs no argon2.
//!
//! `v1.<claims>.<mac>`, both base64url without padding: the claims are JSON
//! (`{"u":user,"f":fingerprint,"e":expires,"s":session}`, plus `"x"`: the session's own expiry and
//! `"i"`: its authorisation data, when it has them, so a resumed session is worth no more than the
//! one it came from), the MAC is HMAC-SHA256 under the
//! server's token key over `besterd-resume-v1`, a NUL byte and the claims part as sent. Servers
//! that share the key (`[auth] token_secret_file`: a greeter and its session servers, or a
//! federation) accept each other's tokens.
//!
//! A token dies when it expires, when its session logs out (the [`Revoked`] list, kept until the
//! token would have expired anyway), and when the user's stored entry changes: the fingerprint is
//! a MAC of the stored password hash (or of the empty string for users without one), so a new
//! password, or the user's deletion, leaves no entry that matches it. Checking that is the
//! caller's job: it holds the store. Pure: no clock, no files but [`TokenKey::from_file`].

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The token's version prefix.
const PREFIX: &str = "v1.";
/// What the MAC covers before the claims: the purpose, so no other MAC of this key can pass.
const CONTEXT: &[u8] = b"besterd-resume-v1\0";
/// What a fingerprint covers before the stored hash.
const FINGERPRINT_CONTEXT: &[u8] = b"besterd-fingerprint-v1\0";
/// Shortest token key accepted from a file.
pub const MIN_KEY: usize = 32;
/// Longest resume token read (room for an `info` of [`super::jwt::MAX_INFO`] bytes).
pub const MAX_TOKEN: usize = 8 * 1024;

/// The key that signs and checks resume tokens.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// What a resume token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// The user.
    #[serde(rename = "u")]
    pub user: String,
    /// [`TokenKey::fingerprint`] of the user's stored entry when the token was made.
    #[serde(rename = "f")]
    pub fingerprint: String,
    /// Seconds since the epoch after which the token is refused.
    #[serde(rename = "e")]
    pub expires: u64,
    /// The session it was issued to (what `bester.logout` revokes).
    #[serde(rename = "s")]
    pub session: String,
    /// When the session itself ends (a token login's `exp`), if it does.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub session_expires: Option<u64>,
    /// The session's authorisation data (a JSON object's text), if it has any.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

/// Why a resume token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeError {
    /// Not a resume token.
    Malformed,
    /// Its MAC does not verify under this server's key.
    BadSignature,
    /// It has expired.
    Expired,
    /// Its session logged out.
    Revoked,
}

impl std::fmt::Display for ResumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResumeError::Malformed => "not a resume token",
            ResumeError::BadSignature => "the resume token was not issued with this server's key",
            ResumeError::Expired => "the resume token has expired",
            ResumeError::Revoked => "the resume token's session logged out",
        })
    }
}

impl TokenKey {
    /// A fresh random key (tokens then die with the process).
    pub fn random() -> TokenKey {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).expect("the system's random source");
        TokenKey(key)
    }

    /// The key in a file (trailing newline ignored), at least [`MIN_KEY`] bytes.
    pub fn from_file(path: &Path) -> Result<TokenKey, String> {
        let mut key = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        if key.len() < MIN_KEY {
            return Err(format!(
                "{}: a token key must be at least {MIN_KEY} bytes",
                path.display()
            ));
        }
        Ok(TokenKey(key))
    }

    /// The key itself (for the new process of a hot upgrade only: never logged or written).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key handed over by the process before a hot upgrade.
    pub(crate) fn from_bytes(key: Vec<u8>) -> TokenKey {
        TokenKey(key)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// The fingerprint of a user's stored entry (its password hash, or `""`): 16 hex digits of a
    /// MAC, so the token tells nothing about the hash.
    pub fn fingerprint(&self, stored: &str) -> String {
        let mut mac = self.mac();
        mac.update(FINGERPRINT_CONTEXT);
        mac.update(stored.as_bytes());
        let out = mac.finalize().into_bytes();
        out[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A token saying `resume`.
    pub fn mint(&self, resume: &Resume) -> String {
        let claims = B64.encode(serde_json::to_vec(resume).expect("claims serialize"));
        let mut mac = self.mac();
        mac.update(CONTEXT);
        mac.update(claims.as_bytes());
        let tag = B64.encode(mac.finalize().into_bytes());
        format!("{PREFIX}{claims}.{tag}")
    }

    /// What `token` says, if this key made it and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: u64) -> Result<Resume, ResumeError> {
        if token.len() > MAX_TOKEN {
            return Err(ResumeError::Malformed);
        }
        let rest = token.strip_prefix(PREFIX).ok_or(ResumeError::Malformed)?;
        let (claims, tag) = rest.split_once('.').ok_or(ResumeError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| ResumeError::Malformed)?;
        let mut mac = self.mac();
        mac.update(CONTEXT);
        mac.update(claims.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&tag)
            .map_err(|_| ResumeError::BadSignature)?;
        let bytes = B64.decode(claims).map_err(|_| ResumeError::Malformed)?;
        let resume: Resume = serde_json::from_slice(&bytes).map_err(|_| ResumeError::Malformed)?;
        if resume.expires <= now {
            return Err(ResumeError::Expired);
        }
        Ok(resume)
    }
}

/// A fresh session id: 16 random bytes in hex.
pub fn new_session() -> String {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("the system's random source");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sessions that logged out, each kept until its tokens would have expired anyway. Bounded: past
/// `max` entries the expired ones are dropped, and if none has expired the one that expires
/// soonest goes, and with it every token that expires no later (the floor): a logged-out
/// session's tokens are never taken again, however many logouts come after it. What the floor
/// costs is that other sessions' oldest tokens end early (a client renews its token well
/// before it expires, so a session in use holds a newer one).
#[derive(Debug)]
pub struct Revoked {
    sessions: HashMap<String, u64>,
    max: usize,
    floor: u64,
}

impl Revoked {
    /// An empty list holding at most `max` sessions.
    pub fn new(max: usize) -> Revoked {
        Revoked {
            sessions: HashMap::new(),
            max: max.max(1),
            floor: 0,
        }
    }

    /// `session`'s tokens, valid until `expires`, are refused from now on.
    pub fn revoke(&mut self, session: &str, expires: u64, now: u64) {
        if self.sessions.len() >= self.max {
            self.sessions.retain(|_, e| *e > now);
        }
        if self.sessions.len() >= self.max
            && let Some((oldest, until)) = self
                .sessions
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(s, e)| (s.clone(), *e))
        {
            self.sessions.remove(&oldest);
            self.floor = self.floor.max(until);
        }
        self.sessions.insert(session.to_string(), expires);
    }

    /// Whether a resume token of `session` that expires at `token_expires` is refused: its
    /// session logged out, or the token expires no later than one that was forgotten.
    pub fn refuses(&self, session: &str, token_expires: u64) -> bool {
        token_expires <= self.floor || self.sessions.contains_key(session)
    }

    /// Refuse every token that expires no later than `until` (a floor handed over by an
    /// upgrade's old process).
    pub fn raise_floor(&mut self, until: u64) {
        self.floor = self.floor.max(until);
    }

    /// The floor: tokens that expire no later are refused.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The listed sessions and until when each is kept.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64)> {
        self.sessions.iter().map(|(s, e)| (s.as_str(), *e))
    }

    /// Whether `session` logged out (and is still listed).
    pub fn contains(&self, session: &str) -> bool {
        self.sessions.contains_key(session)
    }

    /// How many sessions are listed.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &TokenKey) -> Resume {
        Resume {
            user: "alice".into(),
            fingerprint: key.fingerprint("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
            expires: 1_000,
            session: new_session(),
            session_expires: None,
            info: Some(r#"{"role":"x"}"#.into()),
        }
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let key = TokenKey::random();
        let resume = sample(&key);
        let token = key.mint(&resume);
        assert!(token.starts_with("v1."), "{token}");
        assert_eq!(key.verify(&token, 999), Ok(resume));
        assert_eq!(key.verify(&token, 1_000), Err(ResumeError::Expired));
    }

    #[test]
    fn another_key_a_changed_claim_or_garbage_is_refused() {
        let key = TokenKey::random();
        let token = key.mint(&sample(&key));
        assert_eq!(
            TokenKey::random().verify(&token, 0),
            Err(ResumeError::BadSignature)
        );
        let (claims, tag) = token["v1.".len()..].split_once('.').unwrap();
        let mut changed: Resume = serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap();
        changed.user = "root".into();
        let forged = format!(
            "v1.{}.{tag}",
            B64.encode(serde_json::to_vec(&changed).unwrap())
        );
        assert_eq!(key.verify(&forged, 0), Err(ResumeError::BadSignature));
        for garbage in ["", "v1.", "v1.a", "v2.a.b", "v1.a.!!", &"v1.".repeat(3000)] {
            assert_eq!(
                key.verify(garbage, 0),
                Err(ResumeError::Malformed),
                "{garbage}"
            );
        }
    }

    #[test]
    fn fingerprints_tell_entries_apart_and_depend_on_the_key() {
        let key = TokenKey::random();
        let a = key.fingerprint("hash-1");
        assert_eq!(a.len(), 16);
        assert_eq!(a, key.fingerprint("hash-1"));
        assert_ne!(a, key.fingerprint("hash-2"));
        assert_ne!(a, TokenKey::random().fingerprint("hash-1"));
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "too short\n").unwrap();
        assert!(
            TokenKey::from_file(&short)
                .unwrap_err()
                .ends_with("at least 32 bytes")
        );
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\n", "k".repeat(32))).unwrap();
        let one = TokenKey::from_file(&good).unwrap();
        let two = TokenKey::from_file(&good).unwrap();
        let token = one.mint(&sample(&one));
        assert!(
            two.verify(&token, 0).is_ok(),
            "servers sharing the file share tokens"
        );
        assert_eq!(format!("{one:?}"), "TokenKey(<redacted>)");
    }

    #[test]
    fn the_revoked_list_is_bounded_and_drops_expired_sessions_first() {
        let mut revoked = Revoked::new(2);
        revoked.revoke("a", 10, 0);
        revoked.revoke("b", 20, 0);
        revoked.revoke("c", 30, 15);
        assert!(!revoked.contains("a"), "expired, dropped first");
        assert!(revoked.contains("b") && revoked.contains("c"));
        revoked.revoke("d", 40, 16);
        assert_eq!(revoked.len(), 2);
        assert!(!revoked.contains("b"), "the soonest to expire goes");
        assert!(revoked.contains("c") && revoked.contains("d"));
    }

    #[test]
    fn a_forgotten_session_stays_refused_through_the_floor() {
        // An attacker with an account logs out over and over to push a victim's logged-out
        // session off the list: the victim's tokens stay refused.
        let mut revoked = Revoked::new(2);
        revoked.revoke("victim", 100, 0);
        for n in 0..10 {
            revoked.revoke(&format!("attacker-{n}"), 200 + n, 1);
        }
        assert!(!revoked.contains("victim"), "pushed off the list");
        assert!(revoked.refuses("victim", 100), "its tokens expire by 100");
        assert!(revoked.refuses("victim", 40), "and older ones");
        // Tokens that expire later than anything forgotten are taken, unless listed.
        assert!(!revoked.refuses("bystander", 300));
        assert!(revoked.refuses("attacker-9", 300));
        // The floor is the latest expiry forgotten so far, not the first.
        assert!(revoked.refuses("bystander", 207));
        assert!(!revoked.refuses("bystander", 209));
    }
}
