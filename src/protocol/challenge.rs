//! The public-key login's second round: the server's challenge and the client's signature.
//!
//! After `identify` with `{"username":…,"publicKey":…}` the server sends
//! `{"header":{"status":"ok","kind":"challenge"},"data":{"nonce":"…","server":"…"}}` and the next frame must be
//! exactly `{"header":{"signature":"<base64>"}}`. What is signed is defined in `auth/keys.rs`;
//! this module only reads and writes the two frames. Pure.

use serde::{Deserialize, Serialize};

use super::ErrorCode;
use super::error::ErrorBody;
use super::message::{Status, parse_json, to_body};

/// Longest signature field read (base64 of 64 bytes is 88).
pub const MAX_SIGNATURE: usize = 256;

#[derive(Serialize)]
struct ChallengeHeader {
    status: Status,
    kind: &'static str,
}

#[derive(Serialize)]
struct ChallengeData<'a> {
    nonce: &'a str,
    server: &'a str,
}

#[derive(Serialize)]
struct ChallengeFrame<'a> {
    header: ChallengeHeader,
    data: ChallengeData<'a>,
}

/// The challenge frame carrying `nonce` and the name of the `server` the signature is for.
pub fn challenge(nonce: &str, server: &str) -> Vec<u8> {
    to_body(&ChallengeFrame {
        header: ChallengeHeader {
            status: Status::Ok,
            kind: "challenge",
        },
        data: ChallengeData { nonce, server },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFrame {
    header: SignatureHeader,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureHeader {
    signature: String,
}

/// The signature of a `{"header":{"signature":…}}` frame; any other frame is an error that says
/// what was expected.
pub fn parse_signature(body: &[u8]) -> Result<String, ErrorBody> {
    let expected = |detail: &str| {
        ErrorBody::new(
            ErrorCode::InvalidMessage,
            format!(
                "a challenge is pending: the next frame must be {{\"header\":{{\"signature\":\"<base64>\"}}}} ({detail})"
            ),
        )
    };
    let frame: SignatureFrame = parse_json(body).map_err(|e| expected(&e.error))?;
    if frame.header.signature.len() > MAX_SIGNATURE {
        return Err(expected(&format!(
            "header.signature is longer than {MAX_SIGNATURE} bytes"
        )));
    }
    Ok(frame.header.signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_byte_exact() {
        assert_eq!(
            challenge("abc", "alpha"),
            br#"{"header":{"status":"ok","kind":"challenge"},"data":{"nonce":"abc","server":"alpha"}}"#
        );
    }

    #[test]
    fn only_a_signature_frame_is_accepted() {
        assert_eq!(
            parse_signature(br#"{"header":{"signature":"c2ln"}}"#).unwrap(),
            "c2ln"
        );
        let err =
            parse_signature(br#"{"header":{"scope":"client","id":"1"},"payload":{}}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        assert!(
            err.error.starts_with(
                "a challenge is pending: the next frame must be {\"header\":{\"signature\":\"<base64>\"}} ("
            ),
            "{}",
            err.error
        );
        let long = format!(r#"{{"header":{{"signature":"{}"}}}}"#, "A".repeat(257));
        assert!(parse_signature(long.as_bytes()).is_err());
    }

    /// `protocol/vectors/key_login.json`: the frames of a public-key login.
    #[test]
    fn key_login_vector_frames() {
        use crate::protocol::message::{Authentication, Inbound, parse_inbound};
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../protocol/vectors/key_login.json")).unwrap();
        let frames = doc["frames"].as_array().unwrap();
        let body = |n: usize| frames[n]["json"].as_str().unwrap().as_bytes();
        let Ok(Inbound::Identify(identify)) = parse_inbound(body(0)) else {
            panic!("not an identify")
        };
        let Some(Authentication::PublicKey(credentials)) = identify.authentication else {
            panic!("not a public-key identify")
        };
        assert_eq!(credentials.username, doc["username"]);
        assert_eq!(credentials.public_key, doc["public_key"]);
        assert_eq!(
            challenge(
                doc["nonce"].as_str().unwrap(),
                doc["server"].as_str().unwrap()
            ),
            body(1)
        );
        assert_eq!(parse_signature(body(2)).unwrap(), doc["signature"]);
    }
}
