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
    /// `{"token"}`: a JWT the application issued, or a resume token (`v1.…`) besterd issued.
    Token(Secret),
    /// `{"resume"}`: a resume token besterd issued.
    Resume(Secret),
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
    token: Option<String>,
    resume: Option<String>,
}

impl<'de> Deserialize<'de> for Authentication {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw = RawAuthentication::deserialize(d)?;
        match raw {
            RawAuthentication {
                username: None,
                password: None,
                token: Some(token),
                resume: None,
            } => Ok(Authentication::Token(Secret(token))),
            RawAuthentication {
                username: None,
                password: None,
                token: None,
                resume: Some(resume),
            } => Ok(Authentication::Resume(Secret(resume))),
            RawAuthentication { token: Some(_), .. }
            | RawAuthentication {
                resume: Some(_), ..
            } => Err(D::Error::custom(
                "give one of {username, password}, {token} or {resume}",
            )),
            RawAuthentication {
                username, password, ..
            } => Ok(Authentication::Password(Credentials {
                username: username.ok_or_else(|| D::Error::missing_field("username"))?,
                password: password.ok_or_else(|| D::Error::missing_field("password"))?,
            })),
        }
    }
}
