//! Feature negotiation (PROTOCOL.md §2 "Features and limits"): identify may carry
//! `"features":[…]`, names of optional protocol features the sender supports; the identify
//! reply names those the server accepted (`data.features`) and the limits of the session
//! (`data.limits`). Names the server does not know are ignored, never an error, so clients and
//! servers of different versions meet; a sender that offers nothing gets exactly the reply of a
//! server without negotiation. Pure: which features a connection may have is the server's call.

use serde::Serialize;

/// Frames may be sent compressed, both ways (`protocol/compress.rs`).
pub const COMPRESS: &str = "compress";

/// Deliveries may carry `"store":true` (store-and-forward, PROTOCOL.md §7): offered and
/// accepted on peer links by servers that keep a delivery store.
pub const STORE: &str = "store";

/// Client-to-client streams: `bester.dial`, `incoming`, stream frames (`protocol/stream.rs`).
pub const STREAM: &str = "stream";
/// The federation directory (`[federation] directory = true`, `router/directory.rs`): offered
/// and accepted on peer links by servers that run it; its updates go only to peers that
/// accepted it (or that negotiated nothing, servers from before negotiation).
pub const DIRECTORY: &str = "directory";
/// Several users on one connection (`bester.attach`, `header.user`): offered by a client,
/// accepted only for a user with the `gateway` right.
pub const MULTIPLEX: &str = "multiplex";

/// At most this many names in one offer are looked at (the identify frame is small anyway).
pub const MAX_OFFERED: usize = 32;

/// What the other side offered and this server accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `compress`.
    pub compress: bool,
    /// `store` (peer links only).
    pub store: bool,
    /// `stream` (client sessions only).
    pub stream: bool,
    /// `multiplex` (client sessions of a gateway user only).
    pub multiplex: bool,
    /// `directory` (peer links only).
    pub directory: bool,
}

/// Which features the server may accept on a connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Available {
    /// `compress` (framed transports: TCP, TLS, and peer links).
    pub compress: bool,
    /// `store` (peer links of a server with a delivery store).
    pub store: bool,
    /// `stream` (client sessions, unless `[streams] enabled = false`).
    pub stream: bool,
    /// `multiplex` (client connections: kept only if the login is a gateway user's).
    pub multiplex: bool,
    /// `directory` (peer links of a server that runs the federation directory).
    pub directory: bool,
}

impl Features {
    /// The features of `offered` that are `available`; unknown names are ignored.
    pub fn accept(offered: &[String], available: Available) -> Features {
        let mut features = Features::default();
        for name in offered.iter().take(MAX_OFFERED) {
            if name == COMPRESS && available.compress {
                features.compress = true;
            }
            if name == STORE && available.store {
                features.store = true;
            }
            if name == STREAM && available.stream {
                features.stream = true;
            }
            if name == MULTIPLEX && available.multiplex {
                features.multiplex = true;
            }
            if name == DIRECTORY && available.directory {
                features.directory = true;
            }
        }
        features
    }

    /// The accepted names, in a stable order (for `data.features`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.compress {
            names.push(COMPRESS);
        }
        if self.store {
            names.push(STORE);
        }
        if self.stream {
            names.push(STREAM);
        }
        if self.multiplex {
            names.push(MULTIPLEX);
        }
        if self.directory {
            names.push(DIRECTORY);
        }
        names
    }
}

/// `data.limits` of an identify reply: the bounds this session runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest frame body (after decompression), in bytes.
    pub max_frame_bytes: usize,
    /// Requests in flight before the server stops reading from the connection.
    pub max_in_flight: usize,
    /// Silence before the server closes the connection, in milliseconds.
    pub idle_timeout_ms: u64,
}

/// `features` and `limits`, as added to the `data` of an identify reply (or a peer's accept)
/// when features were offered.
#[derive(Debug, Clone, Serialize)]
pub struct Negotiated {
    /// The accepted features.
    pub features: Vec<&'static str>,
    /// The session's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_names_are_ignored_and_known_ones_need_availability() {
        let on = Available {
            compress: true,
            store: false,
            stream: false,
            multiplex: false,
            directory: false,
        };
        let offered = names(&["stream", "compress", "x-future", "compress", "directory"]);
        assert_eq!(Features::accept(&offered, on).names(), vec!["compress"]);
        assert_eq!(
            Features::accept(&offered, Available::default()).names(),
            Vec::<&str>::new()
        );
        assert_eq!(Features::accept(&[], on), Features::default());
        let streams = Available {
            stream: true,
            ..Available::default()
        };
        assert_eq!(Features::accept(&offered, streams).names(), vec!["stream"]);
        let directory = Available {
            directory: true,
            ..on
        };
        assert_eq!(
            Features::accept(&offered, directory).names(),
            vec!["compress", "directory"]
        );
    }

    #[test]
    fn multiplex_is_accepted_where_available_and_named_last() {
        let client = Available {
            compress: true,
            store: false,
            stream: false,
            multiplex: true,
            directory: false,
        };
        let offered = names(&["multiplex", "compress"]);
        let accepted = Features::accept(&offered, client);
        assert!(accepted.multiplex && accepted.compress);
        assert_eq!(accepted.names(), vec!["compress", "multiplex"]);
        let peer = Available {
            multiplex: false,
            directory: true,
            ..client
        };
        assert!(!Features::accept(&offered, peer).multiplex);
        let offered = names(&["directory", "multiplex"]);
        assert_eq!(Features::accept(&offered, peer).names(), vec!["directory"]);
    }
}
