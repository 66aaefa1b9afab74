//! Redirects (PROTOCOL.md §6, "Redirects"): the `commandData` of a handler's `redirect` answer,
//! checked, and the frame that tells the client where to go. Pure: the server mints the token and
//! closes the connection (`server/redirect.rs`).
//!
//! It must not: accept a URL of another scheme (a client would be sent to something it cannot
//! log in to), a URL with a user in it (the client logs in there with the token, never with the
//! credentials it used here), or anything unbounded.

use serde::{Deserialize, Serialize};

use super::message::to_body;

/// Longest redirect URL a handler may give, in bytes.
pub const MAX_REDIRECT_URL: usize = 512;
/// Longest redirect token a handler may give, in bytes.
pub const MAX_REDIRECT_TOKEN: usize = 8 * 1024;
/// The schemes a redirect may name.
pub const SCHEMES: [&str; 4] = [
    "bester://",
    "bester+tls://",
    "bester+ws://",
    "bester+wss://",
];

/// The token of a redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectToken {
    /// This token, as the handler gave it (a JWT, say).
    Given(String),
    /// `"mint"`: a resume token for the client's session, signed with this server's token key.
    Mint,
}

/// `commandData` of a redirect, as the handler sent it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectData {
    url: String,
    #[serde(default)]
    token: Option<String>,
}

impl RedirectData {
    /// The URL and token, checked; `Err` says what is wrong, for `bad_handler_reply`.
    pub fn check(self) -> Result<(String, Option<RedirectToken>), String> {
        check_url(&self.url)?;
        let token = match self.token {
            None => None,
            Some(t) if t == "mint" => Some(RedirectToken::Mint),
            Some(t) if t.is_empty() || t.len() > MAX_REDIRECT_TOKEN => {
                return Err(format!(
                    "a redirect token is 1 to {MAX_REDIRECT_TOKEN} bytes (this one is {})",
                    t.len()
                ));
            }
            Some(t) => Some(RedirectToken::Given(t)),
        };
        Ok((self.url, token))
    }
}

/// A redirect URL: one of [`SCHEMES`], then `host[:port]` (and maybe a path), printable ASCII
/// without spaces, no user, at most [`MAX_REDIRECT_URL`] bytes.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_REDIRECT_URL {
        return Err(format!(
            "a redirect url is at most {MAX_REDIRECT_URL} bytes (this one is {})",
            url.len()
        ));
    }
    let Some(rest) = SCHEMES.iter().find_map(|s| url.strip_prefix(s)) else {
        return Err(
            "a redirect url must be a bester://, bester+tls://, bester+ws:// or bester+wss:// URI"
                .into(),
        );
    };
    if url.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("a redirect url is printable ASCII without spaces".into());
    }
    if rest.contains('@') {
        return Err("a redirect url names no user: the client logs in there with the token".into());
    }
    if rest.is_empty() || rest.starts_with(['/', ':']) {
        return Err("a redirect url needs a host".into());
    }
    Ok(())
}

#[derive(Serialize)]
struct Header<'a> {
    status: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct Data<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

#[derive(Serialize)]
struct Frame<'a> {
    header: Header<'a>,
    data: Data<'a>,
}

/// The frame that answers request `id` with a redirect:
/// `{"header":{"status":"ok","kind":"redirect","id":…},"data":{"url":…,"token":…}}`.
pub fn client_redirect(id: Option<&str>, url: &str, token: Option<&str>) -> Vec<u8> {
    to_body(&Frame {
        header: Header {
            status: "ok",
            kind: "redirect",
            id,
        },
        data: Data { url, token },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handler::{Command, parse_handler_message};

    fn parse(command_data: &str) -> Result<Command, String> {
        let frame = format!(
            r#"{{"header":{{"status":"ok","command":"redirect","commandData":{command_data},"request":"1"}}}}"#
        );
        parse_handler_message(frame.as_bytes())
            .map(|m| m.command.into_owned())
            .map_err(|e| e.error)
    }

    #[test]
    fn a_redirect_names_url_and_token() {
        assert_eq!(
            parse(r#"{"url":"bester+wss://s1.example:443","token":"mint"}"#),
            Ok(Command::Redirect {
                url: "bester+wss://s1.example:443".into(),
                token: Some(RedirectToken::Mint)
            })
        );
        assert_eq!(
            parse(r#"{"url":"bester://10.0.0.2:2222","token":"eyJ.x.y"}"#),
            Ok(Command::Redirect {
                url: "bester://10.0.0.2:2222".into(),
                token: Some(RedirectToken::Given("eyJ.x.y".into()))
            })
        );
        assert_eq!(
            parse(r#"{"url":"bester+ws://h:1/ws"}"#),
            Ok(Command::Redirect {
                url: "bester+ws://h:1/ws".into(),
                token: None
            })
        );
    }

    #[test]
    fn bad_urls_and_tokens_are_refused_with_why() {
        let long = format!(r#"{{"url":"bester://{}:1"}}"#, "h".repeat(MAX_REDIRECT_URL));
        for (data, why) in [
            (
                r#"{"url":"http://evil.example/"}"#.to_string(),
                "a redirect url must be a bester://, bester+tls://, bester+ws:// or bester+wss:// URI",
            ),
            (
                r#"{"url":"bester://"}"#.into(),
                "a redirect url needs a host",
            ),
            (
                r#"{"url":"bester://a b:1"}"#.into(),
                "a redirect url is printable ASCII without spaces",
            ),
            (
                r#"{"url":"bester://alice:pw@h:1"}"#.into(),
                "a redirect url names no user: the client logs in there with the token",
            ),
            (
                long,
                "a redirect url is at most 512 bytes (this one is 523)",
            ),
            (
                format!(r#"{{"url":"bester://h:1","token":"{}"}}"#, "t".repeat(8193)),
                "a redirect token is 1 to 8192 bytes (this one is 8193)",
            ),
            (
                r#"{"url":"bester://h:1","token":""}"#.into(),
                "a redirect token is 1 to 8192 bytes (this one is 0)",
            ),
        ] {
            assert_eq!(parse(&data), Err(why.to_string()), "{data}");
        }
        assert!(
            parse(r#"{"url":"bester://h:1","port":2}"#)
                .unwrap_err()
                .contains("unknown field `port`")
        );
        assert_eq!(
            parse(r#""bester://h:1""#),
            Err("command \"redirect\" needs commandData: {\"url\":…,\"token\":…}".into())
        );
    }

    #[test]
    fn the_client_frame_is_byte_exact() {
        assert_eq!(
            String::from_utf8(client_redirect(Some("7"), "bester://h:1", Some("v1.a.b"))).unwrap(),
            r#"{"header":{"status":"ok","kind":"redirect","id":"7"},"data":{"url":"bester://h:1","token":"v1.a.b"}}"#
        );
        assert_eq!(
            String::from_utf8(client_redirect(None, "bester://h:1", None)).unwrap(),
            r#"{"header":{"status":"ok","kind":"redirect"},"data":{"url":"bester://h:1"}}"#
        );
    }
}

#[cfg(test)]
mod vectors {
    use serde_json::Value;

    use super::*;
    use crate::protocol::handler::{Command, parse_handler_message};

    fn vector() -> Value {
        serde_json::from_str(include_str!("../../protocol/vectors/redirect.json")).unwrap()
    }

    /// `protocol/vectors/redirect.json`: the handler's answer parses to the redirect whose client
    /// frame is exactly the vector's.
    #[test]
    fn redirect_json() {
        let v = vector();
        let frames = v["frames"].as_array().unwrap();
        let answer = frames[2]["json"].as_str().unwrap();
        let msg = parse_handler_message(answer.as_bytes()).unwrap();
        let Command::Redirect { url, token } = msg.command.into_owned() else {
            panic!("not a redirect: {answer}")
        };
        let Some(RedirectToken::Given(token)) = token else {
            panic!("no token")
        };
        let frame = client_redirect(msg.request.as_deref(), &url, Some(&token));
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            frames[3]["json"].as_str().unwrap()
        );
        for case in v["refused"].as_array().unwrap() {
            let frame = serde_json::json!({"header":{"status":"ok","command":"redirect",
                "commandData": case["commandData"], "request":"1"}});
            let error = parse_handler_message(frame.to_string().as_bytes()).unwrap_err();
            assert_eq!(error.code, crate::protocol::ErrorCode::BadHandlerReply);
            assert_eq!(error.error, case["error"].as_str().unwrap(), "{case}");
        }
    }
}
