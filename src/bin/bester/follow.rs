//! Following redirects (PROTOCOL.md §2, "Following a redirect"): where a redirect frame sends
//! `bester`, and what it may send there — the redirect's token, and nothing else. At most
//! [`MAX_HOPS`] redirects per command; a redirect without a token, to a URL naming a user, or
//! from TLS to clear text is a failure; `--ca` and `--timeout` cover every server.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde_json::Value;

use super::{Failure, Opened, Secret, Session, is_ok};
use besterd::client::Uri;

/// Most redirects `bester` follows for one command.
pub(super) const MAX_HOPS: u32 = 3;

/// A redirect frame's `data`: where to go, and what to log in with there.
pub(super) struct Redirect {
    pub(super) url: String,
    pub(super) token: Option<String>,
}

impl Redirect {
    /// The redirect this frame is, if it is one.
    pub(super) fn of(frame: &Value) -> Option<Redirect> {
        if !is_ok(frame) || frame["header"]["kind"] != "redirect" {
            return None;
        }
        Some(Redirect {
            url: frame["data"]["url"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            token: frame["data"]["token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }
}

/// The servers one command goes through: the first, then each it was redirected to. Only the
/// token a redirect gives is sent to the next server, never the password or a key's signature;
/// the whole exchange stays within `--timeout`, and TLS trust (`--ca`) is the same for every
/// server.
pub(super) struct Hops<'a> {
    hops: u32,
    /// Whether the server that redirected was reached over TLS (no redirect leaves TLS).
    tls: bool,
    ca: Option<&'a Path>,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl<'a> Hops<'a> {
    pub(super) fn new(first: &Uri, ca: Option<&'a Path>, timeout: Option<Duration>) -> Hops<'a> {
        Hops {
            hops: 0,
            tls: first.scheme.tls(),
            ca,
            timeout,
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// Log in at `uri`, following redirects that answer the login.
    pub(super) fn reach(
        &mut self,
        mut uri: Uri,
        secret: &Secret,
        mut tls: Option<Arc<ClientConfig>>,
    ) -> Result<Session, Failure> {
        let mut secret = secret;
        let mut next;
        loop {
            match Session::open(&uri, secret, tls, self.timeout, self.deadline)? {
                Opened::Session(session) => return Ok(session),
                Opened::Redirect(redirect) => {
                    (uri, next, tls) = self.follow(redirect)?;
                    secret = &next;
                }
            }
        }
    }

    /// Where a redirect sends us, and the token to log in with there.
    pub(super) fn follow(
        &mut self,
        redirect: Redirect,
    ) -> Result<(Uri, Secret, Option<Arc<ClientConfig>>), Failure> {
        self.hops += 1;
        if self.hops > MAX_HOPS {
            return Err(Failure::runtime(format!(
                "redirected more than {MAX_HOPS} times"
            )));
        }
        let url = redirect.url;
        let Some(token) = redirect.token else {
            return Err(Failure::runtime(format!(
                "redirected to {url} without a token"
            )));
        };
        let uri = match besterd::net::blocking::Scheme::split(&url) {
            Some((scheme, rest)) if !rest.is_empty() && !rest.contains('@') => {
                Uri::parse(&format!("{}@{rest}", scheme.prefix()))
                    .map_err(|e| Failure::runtime(format!("redirected to {url:?}: {e}")))?
            }
            _ => {
                return Err(Failure::runtime(format!(
                    "redirected to {url:?}, which is not a bester:// URL without a user"
                )));
            }
        };
        if self.tls && !uri.scheme.tls() {
            return Err(Failure::runtime(format!(
                "redirected from TLS to {url}: not sending the token unencrypted"
            )));
        }
        self.tls = uri.scheme.tls();
        let tls = if uri.scheme.tls() {
            Some(besterd::net::tls::client_trust(self.ca).map_err(Failure::usage)?)
        } else {
            None
        };
        Ok((uri, Secret::Token(token), tls))
    }
}
