//! How a client logs in: the shapes of `identify.authentication` (a username and password, a
//! token, a resume token), told apart by their fields. Pure: what each shape proves is decided
//! elsewhere (`auth/`, `server/`). Secrets are never shown by `Debug`.

use std::fmt;

use serde::Deserialize;

/// Username and password, as sent in identify and `bester.authenticate`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The user's name.
    pub username: String,
    /// The password in clear (the connection is expected to be protected by its transport).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `identify.authentication`: how a client logs in. Each shape is told apart by its fields; any
/// other shape is refused as the username/password shape would refuse it (`missing field`).
#[derive(Debug, Clone)]
pub enum Authentication {
    /// `{"username","password"}`.
    Password(Credentials),
    /// `{"username","publicKey"}` (a challenge follows, see [`super::challenge`]).
    PublicKey(KeyCredentials),
    /// `{"token"}`: a JWT the application issued, or a resume token (`v1.…`) besterd issued.
    Token(Secret),
    /// `{"resume"}`: a resume token besterd issued.
    Resume(Secret),
}

/// Username and ed25519 public key (base64 of its 32 bytes, checked by the server), as sent in
/// identify.
#[derive(Debug, Clone)]
pub struct KeyCredentials {
    /// The user's name.
    pub username: String,
    /// The key, base64 as sent.
    pub public_key: String,
}

/// A token as a client sent it: never shown by `Debug`.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every field any shape of `authentication` has (serde rejects unknown and duplicate ones).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthentication {
    username: Option<String>,
    password: Option<String>,
    #[serde(rename = "publicKey")]
    public_key: Option<String>,
    token: Option<String>,
    resume: Option<String>,
}

impl<'de> Deserialize<'de> for Authentication {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawAuthentication::deserialize(d)?;
        let by_name = raw.username.is_some() || raw.password.is_some() || raw.public_key.is_some();
        match (by_name, raw.token, raw.resume) {
            (false, Some(token), None) => return Ok(Authentication::Token(Secret(token))),
            (false, None, Some(resume)) => return Ok(Authentication::Resume(Secret(resume))),
            (_, None, None) => {}
            _ => {
                return Err(D::Error::custom(
                    "give one of {username, password}, {username, publicKey}, {token} or {resume}",
                ));
            }
        }
        let username = raw
            .username
            .ok_or_else(|| D::Error::missing_field("username"))?;
        match (raw.password, raw.public_key) {
            (Some(password), None) => {
                Ok(Authentication::Password(Credentials { username, password }))
            }
            (None, Some(public_key)) => Ok(Authentication::PublicKey(KeyCredentials {
                username,
                public_key,
            })),
            (None, None) => Err(D::Error::missing_field("password")),
            (Some(_), Some(_)) => Err(D::Error::custom(
                "give either `password` or `publicKey`, not both",
            )),
        }
    }
}
