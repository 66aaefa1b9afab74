//! `[peers.<name>]`: the federation peers this server links with, their shared secrets (inline
//! or from a file), how to dial them, and which types they may send.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{MIN_SECRET, PeerTls, listeners, resolve, validate_server_name};
use crate::protocol::message::validate_type;

/// `[peers.<name>]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePeer {
    /// `host:port` to dial; without it this server only accepts the peer's connection.
    pub address: Option<String>,
    /// The secret shared with the peer.
    pub secret: Option<String>,
    /// A file holding the secret (e.g. from systemd `LoadCredential=`); trailing newline ignored.
    pub secret_file: Option<PathBuf>,
    /// Dial the peer over TLS (it must listen with a `tls` listener).
    pub tls: Option<bool>,
    /// With tls: trust peer certificates issued by the CAs in this PEM file.
    pub ca: Option<PathBuf>,
    /// With tls: trust exactly the certificate with this SHA-256 fingerprint.
    pub fingerprint: Option<String>,
    /// With tls and ca: the name the certificate must carry (default: the address's host).
    pub server_name: Option<String>,
    /// The payload types the peer may send this server (default: any).
    pub allow_types: Option<Vec<String>>,
}

/// One validated federation peer.
#[derive(Clone)]
pub struct PeerConfig {
    /// Where to dial it, if this server dials.
    pub address: Option<SocketAddr>,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// Where the secret was read from (`None`: written inline in the configuration).
    pub secret_file: Option<PathBuf>,
    /// Dial over TLS with these settings.
    pub tls: Option<PeerTls>,
    /// `allow_types`: the payload types the peer may send this server (`None`: any).
    pub allow_types: Option<Vec<String>>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("address", &self.address)
            .field("tls", &self.tls)
            .field("allow_types", &self.allow_types)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Check every `[peers.<name>]` of the server called `name`.
pub(super) fn validate_peers(
    file: BTreeMap<String, FilePeer>,
    name: &str,
    problems: &mut Vec<(String, String)>,
) -> BTreeMap<String, PeerConfig> {
    let mut peers = BTreeMap::new();
    for (peer, p) in file {
        let key = format!("peers.{peer}");
        if let Err(e) = validate_server_name(&peer) {
            problems.push((key.clone(), e));
        }
        if peer == name {
            problems.push((key.clone(), "a server cannot be its own peer".into()));
        }
        let address = p.address.as_deref().and_then(|a| match resolve(a) {
            Ok(addr) => Some(addr),
            Err(e) => {
                problems.push((format!("{key}.address"), e));
                None
            }
        });
        let secret = match (p.secret, &p.secret_file) {
            (Some(secret), None) => secret.into_bytes(),
            (None, Some(file)) => match std::fs::read(file) {
                Ok(mut bytes) => {
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                }
                Err(e) => {
                    problems.push((
                        format!("{key}.secret_file"),
                        format!("{}: {e}", file.display()),
                    ));
                    continue;
                }
            },
            _ => {
                problems.push((
                    key.clone(),
                    "give secret or secret_file (one of them)".into(),
                ));
                continue;
            }
        };
        if secret.len() < MIN_SECRET {
            problems.push((
                key.clone(),
                format!("the secret must be at least {MIN_SECRET} bytes"),
            ));
        }
        let tls = listeners::validate_peer_tls(
            &key,
            p.tls,
            p.ca,
            p.fingerprint,
            p.server_name,
            p.address.as_deref(),
            problems,
        );
        if let Some(types) = &p.allow_types {
            for kind in types {
                if let Err(e) = validate_type(kind) {
                    let text = e.error.replace("payload.type ", "");
                    problems.push((format!("{key}.allow_types"), text));
                }
            }
        }
        peers.insert(
            peer,
            PeerConfig {
                address,
                secret,
                secret_file: p.secret_file,
                tls,
                allow_types: p.allow_types,
            },
        );
    }
    peers
}
