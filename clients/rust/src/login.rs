//! Logging in: the identify stanza for each way a client proves who it is — a password, a token
//! (a JWT the application issued), a resume token a server issued, or an ed25519 key (the
//! server's challenge signed) — and what a successful login gives back.

use std::fmt;

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

use crate::client::Client;
use crate::error::Error;

/// How to log in.
#[derive(Clone)]
pub enum Login {
    /// A user and password.
    Password {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A JWT the application issued, or a resume token (`v1.…`).
    Token(String),
    /// A resume token a server issued (`data.resume` of a login's reply).
    Resume(String),
    /// An ed25519 key of the user's: the server's challenge is signed with it.
    Key {
        /// The user.
        user: String,
        /// The private key.
        key: Box<SigningKey>,
        /// The server name the challenge must carry (`[server] name`); `None` signs for the
        /// name the challenge gives.
        server: Option<String>,
    },
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Password { user, .. } => write!(f, "Password({user}, <redacted>)"),
            Login::Token(_) => f.write_str("Token(<redacted>)"),
            Login::Resume(_) => f.write_str("Resume(<redacted>)"),
            Login::Key { user, .. } => write!(f, "Key({user}, <redacted>)"),
        }
    }
}

/// What a successful login gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The session's user.
    pub user: String,
    /// The server's name.
    pub server: String,
    /// A resume token for this session, if the server gives them.
    pub resume: Option<String>,
    /// When it expires (seconds since the epoch).
    pub resume_expires: Option<u64>,
    /// When a token session ends, if it does.
    pub expires: Option<u64>,
    /// The features the server accepted (`data.features`; empty when none were offered).
    pub features: Vec<String>,
    /// The session's limits (`data.limits`: `max_frame_bytes`, `max_in_flight`,
    /// `idle_timeout_ms`), `Null` when none were offered.
    pub limits: Value,
}

/// The bytes an ed25519 login signs: `"besterd-login-v1" 0x00 server 0x00 user 0x00 nonce`.
pub fn login_message(server: &str, user: &str, nonce: &str) -> Vec<u8> {
    let mut out = b"besterd-login-v1\0".to_vec();
    for (i, part) in [server, user, nonce].iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Identify on a fresh connection. A refusal is [`Error::Refused`] with the server's code and
/// text (the server then closes the connection).
pub fn identify(client: &mut Client, login: &Login) -> Result<Identity, Error> {
    identify_offering(client, login, &[])
}

/// [`identify`], offering `features` (PROTOCOL.md §2 "Features and limits"; none: identify
/// carries no `features`, as a spec-v3 client's does). When the server accepts `compress`, the
/// client compresses from the next frame on ([`Client::set_compress`]).
pub fn identify_offering(
    client: &mut Client,
    login: &Login,
    features: &[&str],
) -> Result<Identity, Error> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let authentication = match login {
        Login::Password { user, password } => json!({"username": user, "password": password}),
        Login::Token(token) => json!({ "token": token }),
        Login::Resume(token) => json!({ "resume": token }),
        Login::Key { user, key, .. } => {
            json!({"username": user, "publicKey": b64.encode(key.verifying_key().as_bytes())})
        }
    };
    let mut stanza = json!({"type":"client","authentication":authentication});
    if !features.is_empty() {
        stanza["features"] = json!(features);
    }
    client.send(&json!({"header":{"identify":stanza}}))?;
    let mut reply = next(client)?;
    if let Login::Key { user, key, server } = login
        && reply["header"]["kind"] == "challenge"
    {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (nonce, named) = (
            text(&reply["data"]["nonce"]),
            text(&reply["data"]["server"]),
        );
        if let Some(server) = server
            && *server != named
        {
            return Err(Error::Protocol(format!(
                "the server says it is {named:?}, not {server:?}: not signing"
            )));
        }
        let signature = key.sign(&login_message(&named, user, &nonce));
        client.send(&json!({"header":{"signature": b64.encode(signature.to_bytes())}}))?;
        reply = next(client)?;
    }
    if let Some(error) = Error::of_frame(&reply) {
        return Err(error);
    }
    let data = &reply["data"];
    let (Some(user), Some(server)) = (data["user"].as_str(), data["server"].as_str()) else {
        return Err(Error::Protocol(format!("not a login reply: {reply}")));
    };
    let accepted: Vec<String> = data["features"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    client.set_compress(accepted.iter().any(|f| f == "compress"));
    Ok(Identity {
        user: user.to_string(),
        server: server.to_string(),
        resume: data["resume"].as_str().map(str::to_string),
        resume_expires: data["resume_expires"].as_u64(),
        expires: data["expires"].as_u64(),
        features: accepted,
        limits: data["limits"].clone(),
    })
}

fn next(client: &mut Client) -> Result<Value, Error> {
    client
        .recv()?
        .ok_or_else(|| Error::Protocol("the server closed the connection during login".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_message_is_the_protocols() {
        assert_eq!(
            login_message("besterd", "alice", "n1"),
            b"besterd-login-v1\0besterd\0alice\0n1"
        );
        let login = Login::Password {
            user: "a".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{login:?}").contains("s3cret"));
    }
}
