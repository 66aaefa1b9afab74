//! Several users on one connection (PROTOCOL.md §2 "Several users on one connection"), the pure
//! parts: the `data` of `bester.attach` and `bester.detach`, and the `header.user` that frames to
//! a gateway carry when they are for one of its attached users.
//!
//! It must not: accept an attach without a credential, show a password or token in `Debug` or
//! in an error text, or parse a frame again to tag it (the tag is spliced into the header).

use std::fmt;

use serde::Deserialize;

use super::ErrorCode;
use super::error::ErrorBody;
use super::message::PayloadRef;

/// Attach a user to this (gateway) connection.
pub const ATTACH: &str = "bester.attach";
/// Detach an attached user.
pub const DETACH: &str = "bester.detach";

/// What `bester.attach` logs the user in with.
#[derive(Clone, PartialEq, Eq)]
pub enum AttachCredential {
    /// `{"user","password"}`: checked with argon2 as a password login.
    Password {
        /// The user.
        user: String,
        /// The password in clear.
        password: String,
    },
    /// `{"resume"}` (or a `{"token"}` that starts with `v1.`): a resume token besterd issued.
    /// `user`, when given, must be the token's.
    Resume {
        /// The user the gateway means, if it said.
        user: Option<String>,
        /// The token.
        token: String,
    },
    /// `{"token"}`: a JWT, checked as a token login (`[auth.jwt]`).
    Jwt {
        /// The user the gateway means, if it said.
        user: Option<String>,
        /// The token.
        token: String,
    },
}

impl fmt::Debug for AttachCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shape, user) = match self {
            AttachCredential::Password { user, .. } => ("password", Some(user)),
            AttachCredential::Resume { user, .. } => ("resume", user.as_ref()),
            AttachCredential::Jwt { user, .. } => ("token", user.as_ref()),
        };
        write!(f, "AttachCredential({shape}, user {user:?}, <redacted>)")
    }
}

/// `data` of `bester.attach`, as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttach {
    user: Option<String>,
    password: Option<String>,
    resume: Option<String>,
    token: Option<String>,
}

/// `data` of `bester.detach`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachData {
    /// The attached user to let go.
    pub user: String,
}

fn bad(text: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::InvalidMessage,
        format!("bad data for \"{ATTACH}\": {text}"),
    )
}

/// The credential a `bester.attach` carries: exactly one of `password` (with `user`), `resume`
/// or `token`. Anything else is `invalid_message` with the reason.
pub fn attach_credential(payload: &PayloadRef<'_>) -> Result<AttachCredential, ErrorBody> {
    let raw: RawAttach = payload.data_as()?;
    match (raw.user, raw.password, raw.resume, raw.token) {
        (Some(user), Some(password), None, None) => {
            Ok(AttachCredential::Password { user, password })
        }
        (None, Some(_), None, None) => Err(bad("a password needs its \"user\"")),
        (user, None, Some(token), None) => Ok(AttachCredential::Resume { user, token }),
        (user, None, None, Some(token)) if token.starts_with("v1.") => {
            Ok(AttachCredential::Resume { user, token })
        }
        (user, None, None, Some(token)) => Ok(AttachCredential::Jwt { user, token }),
        (_, None, None, None) => Err(bad(
            "a credential is needed: \"password\" (with \"user\"), \"resume\" or \"token\"",
        )),
        _ => Err(bad(
            "exactly one of \"password\", \"resume\" and \"token\" is given",
        )),
    }
}

/// A frame body for a gateway, tagged with the attached user it is for: `"user":<name>` first
/// in its header. Every frame besterd sends a client starts `{"header":{`; one that does not
/// (none does) is tagged through a parse.
pub fn tag_user(body: &[u8], user: &str) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"header\":{";
    let name = serde_json::to_string(user).unwrap_or_else(|_| "\"\"".into());
    if let Some(rest) = body.strip_prefix(HEAD) {
        let mut out = Vec::with_capacity(body.len() + name.len() + 8);
        out.extend_from_slice(HEAD);
        out.extend_from_slice(b"\"user\":");
        out.extend_from_slice(name.as_bytes());
        if rest.first() != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        return out;
    }
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    if let Some(header) = value.get_mut("header").and_then(|h| h.as_object_mut()) {
        header.insert("user".into(), serde_json::Value::String(user.to_string()));
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::{Inbound, parse_inbound};

    fn attach(data: &str) -> Result<AttachCredential, ErrorBody> {
        let frame = format!(
            r#"{{"header":{{"scope":"client","id":"a"}},"payload":{{"type":"bester.attach","data":{data}}}}}"#
        );
        let Ok(Inbound::Message(msg)) = parse_inbound(frame.as_bytes()) else {
            panic!("{frame} does not parse");
        };
        attach_credential(&msg.payload)
    }

    #[test]
    fn each_credential_shape_and_each_refusal() {
        assert_eq!(
            attach(r#"{"user":"bob","password":"pw"}"#).unwrap(),
            AttachCredential::Password {
                user: "bob".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            attach(r#"{"resume":"v1.x.y"}"#).unwrap(),
            AttachCredential::Resume {
                user: None,
                token: "v1.x.y".into()
            }
        );
        assert_eq!(
            attach(r#"{"user":"bob","token":"v1.x.y"}"#).unwrap(),
            AttachCredential::Resume {
                user: Some("bob".into()),
                token: "v1.x.y".into()
            }
        );
        assert_eq!(
            attach(r#"{"token":"eyJ.a.b"}"#).unwrap(),
            AttachCredential::Jwt {
                user: None,
                token: "eyJ.a.b".into()
            }
        );
        let refused = |data: &str| attach(data).unwrap_err().error;
        assert_eq!(
            refused(r#"{"user":"bob"}"#),
            "bad data for \"bester.attach\": a credential is needed: \"password\" (with \"user\"), \"resume\" or \"token\""
        );
        assert_eq!(
            refused(r#"{"password":"pw"}"#),
            "bad data for \"bester.attach\": a password needs its \"user\""
        );
        assert_eq!(
            refused(r#"{"user":"bob","password":"pw","resume":"v1.x"}"#),
            "bad data for \"bester.attach\": exactly one of \"password\", \"resume\" and \"token\" is given"
        );
        assert_eq!(attach("null").unwrap_err().code, ErrorCode::InvalidMessage);
        let unknown = refused(r#"{"user":"bob","pass":"pw"}"#);
        assert!(unknown.contains("unknown field `pass`"), "{unknown}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let credential = attach(r#"{"user":"bob","password":"hunter2"}"#).unwrap();
        let shown = format!("{credential:?}");
        assert!(
            shown.contains("bob") && !shown.contains("hunter2"),
            "{shown}"
        );
        let wrong_type = attach(r#"{"user":"bob","password":12345}"#).unwrap_err();
        assert!(!wrong_type.error.contains("12345"), "{}", wrong_type.error);
    }

    #[test]
    fn tags_go_first_in_the_header() {
        let reply = br#"{"header":{"status":"ok","kind":"reply","id":"1"},"data":null}"#;
        let tagged = tag_user(reply, "bob");
        assert_eq!(
            String::from_utf8(tagged).unwrap(),
            r#"{"header":{"user":"bob","status":"ok","kind":"reply","id":"1"},"data":null}"#
        );
        assert_eq!(
            tag_user(br#"{"header":{},"data":1}"#, "b\"o"),
            br#"{"header":{"user":"b\"o"},"data":1}"#.to_vec()
        );
        // Another shape (none is sent today) goes through a parse.
        let spaced = br#"{ "data": 1, "header": {"kind":"push"} }"#;
        let value: serde_json::Value = serde_json::from_slice(&tag_user(spaced, "bob")).unwrap();
        assert_eq!(value["header"]["user"], "bob");
        assert_eq!(value["header"]["kind"], "push");
        let push = br#"{"header":{"status":"ok","kind":"push","type":"t","from":{"user":"a","server":"s"}},"data":{"x":[1,2]}}"#;
        let v: serde_json::Value = serde_json::from_slice(push).unwrap();
        let t: serde_json::Value = serde_json::from_slice(&tag_user(push, "carol")).unwrap();
        assert_eq!(t["header"]["user"], "carol");
        assert_eq!(t["header"]["from"]["user"], "a");
        assert_eq!(t["data"], v["data"]);
    }
}
