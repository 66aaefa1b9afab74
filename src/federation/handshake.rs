//! Peer authentication by mutual challenge-response over a shared secret, so the secret never
//! crosses the wire. Pure: no sockets, no clock.
//!
//! ```text
//! initiator I                                   responder R
//!   identify {type:server, name:I, nonce:nI}  →
//!                                             ←  challenge {server:R, nonce:nR, proof:P_R}
//!   checks R is who it dialled and P_R
//!   proof {proof:P_I}                         →
//!                                             ←  ok {server:R}      (after checking P_I)
//! P_R = HMAC-SHA256(secret, "besterd-s2s-v1" 0 "responder" 0 I 0 R 0 nI 0 nR)
//! P_I = HMAC-SHA256(secret, "besterd-s2s-v1" 0 "initiator" 0 I 0 R 0 nI 0 nR)
//! ```
//!
//! Each side contributes a fresh random nonce, so no proof can be replayed on another connection,
//! and the role label keeps a responder's proof from being reflected back as an initiator's. What
//! it cannot stop on plain TCP is an on-path relay of a whole session: run federation links over a
//! private network or a tunnel.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Random bytes in a nonce (sent as 32 hex characters).
pub const NONCE_BYTES: usize = 16;

const LABEL: &[u8] = b"besterd-s2s-v1";

/// Which side of the handshake a proof is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server that dialled.
    Initiator,
    /// The server that was dialled.
    Responder,
}

/// The values both sides bind a proof to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript<'a> {
    /// The dialling server's name.
    pub initiator: &'a str,
    /// The dialled server's name.
    pub responder: &'a str,
    /// The initiator's nonce (hex).
    pub initiator_nonce: &'a str,
    /// The responder's nonce (hex).
    pub responder_nonce: &'a str,
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], side: Side) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
            .expect("HMAC takes keys of any length");
        let role: &[u8] = match side {
            Side::Initiator => b"initiator",
            Side::Responder => b"responder",
        };
        for (i, part) in [
            LABEL,
            role,
            self.initiator.as_bytes(),
            self.responder.as_bytes(),
            self.initiator_nonce.as_bytes(),
            self.responder_nonce.as_bytes(),
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(part);
        }
        mac
    }

    /// The proof `side` sends, as hex.
    pub fn proof(&self, secret: &[u8], side: Side) -> String {
        hex(&self.mac(secret, side).finalize().into_bytes())
    }

    /// Whether `proof` (hex) is `side`'s proof for this transcript; compared in constant time.
    pub fn verify(&self, secret: &[u8], side: Side, proof: &str) -> bool {
        match unhex(proof) {
            Some(bytes) => self.mac(secret, side).verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}

/// A fresh random nonce, as hex.
pub fn nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source");
    hex(&bytes)
}

/// Whether a peer's nonce has the right form (hex of [`NONCE_BYTES`] bytes).
pub fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == 2 * NONCE_BYTES && unhex(nonce).is_some()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(ni: &'a str, nr: &'a str) -> Transcript<'a> {
        Transcript {
            initiator: "a",
            responder: "b",
            initiator_nonce: ni,
            responder_nonce: nr,
        }
    }

    #[test]
    fn both_sides_prove_and_verify() {
        let (ni, nr) = (nonce(), nonce());
        assert!(valid_nonce(&ni) && valid_nonce(&nr));
        assert_ne!(ni, nr);
        let t = transcript(&ni, &nr);
        let secret = b"correct horse battery staple";
        let pr = t.proof(secret, Side::Responder);
        let pi = t.proof(secret, Side::Initiator);
        assert!(t.verify(secret, Side::Responder, &pr));
        assert!(t.verify(secret, Side::Initiator, &pi));
        assert_ne!(
            pr, pi,
            "a responder's proof cannot be reflected as an initiator's"
        );
        assert!(!t.verify(secret, Side::Initiator, &pr));
    }

    #[test]
    fn wrong_secret_names_or_nonces_fail() {
        let (ni, nr) = (nonce(), nonce());
        let t = transcript(&ni, &nr);
        let proof = t.proof(b"secret", Side::Initiator);
        assert!(!t.verify(b"other", Side::Initiator, &proof));
        let other_nonce = nonce();
        assert!(!transcript(&ni, &other_nonce).verify(b"secret", Side::Initiator, &proof));
        let renamed = Transcript {
            initiator: "c",
            ..t.clone()
        };
        assert!(!renamed.verify(b"secret", Side::Initiator, &proof));
        for garbage in ["", "zz", "0", &proof[..10]] {
            assert!(!t.verify(b"secret", Side::Initiator, garbage));
        }
    }

    #[test]
    fn known_answer() {
        // Computed independently with Python's hmac module: implementations in other languages
        // can check themselves against the same value.
        let t = transcript(
            "00112233445566778899aabbccddeeff",
            "ffeeddccbbaa99887766554433221100",
        );
        assert_eq!(
            t.proof(b"s3cret", Side::Responder),
            "0eb9e3dd1cd3bfd5002faece5ba3ae69cc663295212a2227f0ea33bbc24f2931"
        );
    }
}
