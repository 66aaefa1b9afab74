//! Public-key logins: ed25519 challenge and response.
//!
//! A user may have ed25519 public keys in the store instead of, or beside, a password. The client
//! names its user and key, the server answers with a fresh nonce, and the client signs
//!
//! ```text
//! "besterd-login-v1" 0x00 <server name> 0x00 <username> 0x00 <nonce as sent>
//! ```
//!
//! The server's name and the user are inside what is signed, so a signature made for one server
//! or one user is worth nothing at another; the nonce is fresh for each connection, so a signature
//! seen once is worth nothing again. Signatures are checked with `verify_strict` (no small-order
//! keys, no malleable signatures). Keys travel as base64 of their 32 bytes; key files are PEM
//! (PKCS#8 private, SPKI public), which OpenSSL, Python's `cryptography`, Node's `crypto` and
//! Go's `x509` all read. Pure but for [`read_public_key_file`].

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// What every signed login message starts with.
pub const CONTEXT: &[u8] = b"besterd-login-v1";

/// A fresh nonce: 32 random bytes, base64url without padding.
pub fn new_nonce() -> String {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the system's random source");
    URL_SAFE_NO_PAD.encode(nonce)
}

/// The bytes a client signs to log in as `username` at `server` with `nonce`.
pub fn login_message(server: &str, username: &str, nonce: &str) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(CONTEXT.len() + 3 + server.len() + username.len() + nonce.len());
    message.extend_from_slice(CONTEXT);
    for part in [server, username, nonce] {
        message.push(0);
        message.extend_from_slice(part.as_bytes());
    }
    message
}

/// A public key from base64 of its 32 bytes (as sent in identify and kept in the store).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| "a public key must be base64".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not an ed25519 public key".to_string())
}

/// A public key as base64 of its 32 bytes.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Whether `signature` (base64 of 64 bytes) is `key`'s signature of the login message.
pub fn verify(
    key: &VerifyingKey,
    server: &str,
    username: &str,
    nonce: &str,
    signature: &str,
) -> bool {
    let Ok(bytes) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    let signature = Signature::from_bytes(&bytes);
    key.verify_strict(&login_message(server, username, nonce), &signature)
        .is_ok()
}

/// A public key file: SPKI PEM (`-----BEGIN PUBLIC KEY-----`), or one line of base64.
pub fn read_public_key_file(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = if text.contains("-----BEGIN PUBLIC KEY-----") {
        VerifyingKey::from_public_key_pem(&text)
            .map_err(|_| "not an ed25519 public key in PEM".to_string())
    } else {
        parse_public_key(&text)
    };
    key.map_err(|e| format!("{}: {e}", path.display()))
}

/// A new key pair as PEM: (private PKCS#8, public SPKI).
pub fn generate() -> (String, String) {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the system's random source");
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let private = key
        .to_pkcs8_pem(Default::default())
        .expect("an ed25519 key encodes")
        .to_string();
    let public = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .expect("an ed25519 key encodes");
    (private, public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;
    use ed25519_dalek::pkcs8::DecodePrivateKey;

    fn sign(key: &SigningKey, server: &str, user: &str, nonce: &str) -> String {
        STANDARD.encode(key.sign(&login_message(server, user, nonce)).to_bytes())
    }

    #[test]
    fn the_signed_message_is_exactly_the_documented_bytes() {
        assert_eq!(
            login_message("alpha", "alice", "n0nce"),
            b"besterd-login-v1\0alpha\0alice\0n0nce".to_vec()
        );
    }

    #[test]
    fn a_signature_is_good_for_its_server_user_and_nonce_only() {
        let (private, public) = generate();
        let key = SigningKey::from_pkcs8_pem(&private).unwrap();
        let public = VerifyingKey::from_public_key_pem(&public).unwrap();
        assert_eq!(public, key.verifying_key());
        let nonce = new_nonce();
        let good = sign(&key, "alpha", "alice", &nonce);
        assert!(verify(&public, "alpha", "alice", &nonce, &good));
        assert!(
            !verify(&public, "beta", "alice", &nonce, &good),
            "another server"
        );
        assert!(
            !verify(&public, "alpha", "bob", &nonce, &good),
            "another user"
        );
        assert!(
            !verify(&public, "alpha", "alice", &new_nonce(), &good),
            "a replay"
        );
        let other = SigningKey::from_bytes(&[7u8; 32]);
        let forged = sign(&other, "alpha", "alice", &nonce);
        assert!(
            !verify(&public, "alpha", "alice", &nonce, &forged),
            "another key"
        );
        for garbage in [
            "",
            "!!",
            &STANDARD.encode([0u8; 63]),
            &STANDARD.encode([0u8; 64]),
        ] {
            assert!(
                !verify(&public, "alpha", "alice", &nonce, garbage),
                "{garbage}"
            );
        }
    }

    #[test]
    fn public_keys_parse_from_base64_and_pem_files() {
        let (_, public_pem) = generate();
        let key = VerifyingKey::from_public_key_pem(&public_pem).unwrap();
        let b64 = encode_public_key(&key);
        assert_eq!(parse_public_key(&b64).unwrap(), key);
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("k.pub");
        std::fs::write(&pem, &public_pem).unwrap();
        assert_eq!(read_public_key_file(&pem).unwrap(), key);
        let line = dir.path().join("k.b64");
        std::fs::write(&line, format!("{b64}\n")).unwrap();
        assert_eq!(read_public_key_file(&line).unwrap(), key);
        assert_eq!(
            parse_public_key("not base64!").unwrap_err(),
            "a public key must be base64"
        );
        assert_eq!(
            parse_public_key(&STANDARD.encode([1u8; 31])).unwrap_err(),
            "an ed25519 public key is 32 bytes"
        );
        assert_eq!(new_nonce().len(), 43);
        assert_ne!(new_nonce(), new_nonce());
    }

    /// `protocol/vectors/key_login.json`: the signed bytes and the one signature of them.
    #[test]
    fn key_login_vector() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../protocol/vectors/key_login.json")).unwrap();
        let text = |k: &str| doc[k].as_str().unwrap().to_string();
        let (server, user, nonce) = (text("server"), text("username"), text("nonce"));
        let message: String = login_message(&server, &user, &nonce)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(message, text("message_hex"));
        let seed: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&text("seed_hex")[i..i + 2], 16).unwrap())
            .collect();
        let key = SigningKey::from_bytes(&seed.try_into().unwrap());
        assert_eq!(encode_public_key(&key.verifying_key()), text("public_key"));
        assert_eq!(sign(&key, &server, &user, &nonce), text("signature"));
        let public = parse_public_key(&text("public_key")).unwrap();
        assert!(verify(&public, &server, &user, &nonce, &text("signature")));
        assert_eq!(
            VerifyingKey::from_public_key_pem(&text("public_key_pem")).unwrap(),
            public
        );
    }
}
