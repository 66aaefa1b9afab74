//! Session digests: a keyed HMAC-SHA256 of the username and password a session logged in with,
//! under a random key that never leaves the process. The original spec's clients send their
//! credentials on every message; comparing them with the digest (in constant time) checks them
//! without argon2 and without keeping the password.

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::conn::PasswordDigest;

/// The per-process key of session digests: random, never leaves the process.
fn digest_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the system random source");
        key
    })
}

fn digest_mac(username: &str, password: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(digest_key()).expect("any key length");
    mac.update(username.as_bytes());
    mac.update(&[0]);
    mac.update(password.as_bytes());
    mac
}

/// The keyed digest of a session's credentials.
pub(super) fn password_digest(username: &str, password: &str) -> PasswordDigest {
    digest_mac(username, password)
        .finalize()
        .into_bytes()
        .into()
}

/// A random string nobody can send as a password.
pub(super) fn unguessable() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether credentials match a session's digest (constant-time comparison).
pub(super) fn digest_matches(digest: &PasswordDigest, username: &str, password: &str) -> bool {
    digest_mac(username, password).verify_slice(digest).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_matches_its_credentials_only() {
        let digest = password_digest("alice", "pw");
        assert!(digest_matches(&digest, "alice", "pw"));
        assert!(!digest_matches(&digest, "alice", "pw2"));
        assert!(!digest_matches(&digest, "bob", "pw"));
        // The separator keeps ("alice", "pw") apart from ("alicep", "w").
        assert!(!digest_matches(&digest, "alicep", "w"));
        assert_ne!(unguessable(), unguessable());
    }
}
