//! How a client logs in: the shapes of `identify.authentication` (a username and password, a
//! public key, a token, a resume token), told apart by their fields, and any other object kept
//! whole for an auth handler (`[auth] handler`). Pure: what each shape proves is decided
//! elsewhere (`auth/`, `server/`). Secrets are never shown by `Debug`.

use std::fmt;

use serde::Deserialize;

use super::ErrorCode;
use super::error::ErrorBody;

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
    /// An object of no built-in shape: only an auth handler can judge it.
    Other(Opaque),
}

/// An `authentication` object of no built-in shape: its JSON text (for an auth handler, never
/// shown by `Debug`: it may hold an API key or a password) and why no built-in shape takes it
/// (the refusal when no auth handler is configured; it quotes no values).
#[derive(Clone)]
pub struct Opaque {
    /// The object, as JSON text.
    pub json: String,
    /// The field the refusal is about (`password`), if one.
    pub field: Option<String>,
    /// Why it is none of the built-in shapes.
    pub why: String,
}

impl Opaque {
    /// How it is refused when no auth handler takes it.
    pub fn refusal(&self) -> ErrorBody {
        let text = match &self.field {
            Some(field) => format!("header.identify.authentication.{field}: {}", self.why),
            None => format!("header.identify.authentication: {}", self.why),
        };
        ErrorBody::new(ErrorCode::InvalidMessage, text)
    }
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opaque")
            .field("json", &"<redacted>")
            .field("field", &self.field)
            .field("why", &self.why)
            .finish()
    }
}

impl Authentication {
    /// The object as JSON text, to send to an auth handler (`handle = "all"` sends the
    /// built-in shapes too).
    pub fn to_json(&self) -> String {
        let object = match self {
            Authentication::Other(opaque) => return opaque.json.clone(),
            Authentication::Password(c) => {
                serde_json::json!({"username": c.username, "password": c.password})
            }
            Authentication::PublicKey(k) => {
                serde_json::json!({"username": k.username, "publicKey": k.public_key})
            }
            Authentication::Token(t) => serde_json::json!({"token": t.0}),
            Authentication::Resume(t) => serde_json::json!({"resume": t.0}),
        };
        object.to_string()
    }
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
        // Anything but an object is refused by the visitor, as the typed parse did.
        let value = d.deserialize_any(NoDuplicates)?;
        match builtin(&value) {
            Ok(shape) => Ok(shape),
            Err((field, why)) => Ok(Authentication::Other(Opaque {
                json: value.to_string(),
                field,
                why: super::redact::without_values(&why),
            })),
        }
    }
}

/// A JSON object, refusing one with a key twice (as the typed parse of the built-in
/// shapes did): `{"username":"a","username":"b",…}` must not be read two ways.
struct NoDuplicates;

impl<'de> serde::de::Visitor<'de> for NoDuplicates {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate field `{key}`"
                )));
            }
            let value: serde_json::Value = map.next_value()?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// The built-in shape of an `authentication` object, or why it is none of them (and the field
/// that says so, if one).
fn builtin(value: &serde_json::Value) -> Result<Authentication, (Option<String>, String)> {
    let raw: RawAuthentication = serde_path_to_error::deserialize(value).map_err(|e| {
        let text = e.inner().to_string();
        // An unknown field is reported where it sits: the object itself.
        let field = e.path().to_string();
        let field = (field != "." && !text.starts_with("unknown field")).then_some(field);
        (field, text)
    })?;
    let plain = |why: &str| (None, why.to_string());
    let by_name = raw.username.is_some() || raw.password.is_some() || raw.public_key.is_some();
    match (by_name, raw.token, raw.resume) {
        (false, Some(token), None) => return Ok(Authentication::Token(Secret(token))),
        (false, None, Some(resume)) => return Ok(Authentication::Resume(Secret(resume))),
        (_, None, None) => {}
        _ => {
            return Err(plain(
                "give one of {username, password}, {username, publicKey}, {token} or {resume}",
            ));
        }
    }
    let username = raw
        .username
        .ok_or_else(|| plain("missing field `username`"))?;
    match (raw.password, raw.public_key) {
        (Some(password), None) => Ok(Authentication::Password(Credentials { username, password })),
        (None, Some(public_key)) => Ok(Authentication::PublicKey(KeyCredentials {
            username,
            public_key,
        })),
        (None, None) => Err(plain("missing field `password`")),
        (Some(_), Some(_)) => Err(plain("give either `password` or `publicKey`, not both")),
    }
}
