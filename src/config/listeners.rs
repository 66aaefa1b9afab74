//! `[[listeners]]` (plain TCP, TLS, WebSocket, WebSocket over TLS) and the TLS keys of
//! `[peers.<name>]`, as written and validated. TLS files are parsed here once so that
//! `check-config` names a bad certificate or key; the server reads them again when it binds and on
//! reload.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use crate::net::tls::{self, CertMap, ClientAuth, Trust};
use crate::net::ws::Origins;

/// Placeholder for `static_dir`: the web client built into the binary.
pub const WEB_PLACEHOLDER: &str = "{web}";

/// `[[listeners]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub kind: Option<String>,
    /// `host:port`.
    pub address: Option<String>,
    /// A name for logs and socket activation (default: the kind and the index).
    pub name: Option<String>,
    /// PEM certificate chain (tls, wss).
    pub cert: Option<PathBuf>,
    /// PEM private key (tls, wss).
    pub key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate one of them issued directly.
    pub client_ca: Option<PathBuf>,
    /// PEM certificate revocation lists for the client certificates (with `client_ca`).
    pub client_crl: Option<Vec<PathBuf>>,
    /// What names the user of a client certificate: `"cn"` (default), `"email"` or `"uri"`.
    pub client_cert_map: Option<String>,
    /// With `client_cert_map = "email"`: the domain of the addresses; the local part is the user.
    pub client_cert_email_domain: Option<String>,
    /// With `client_cert_map = "uri"`: the prefix of the URIs; the rest is the user.
    pub client_cert_uri_prefix: Option<String>,
    /// Browser origins allowed to open a WebSocket (ws, wss); `["*"]` for any. Default: pages
    /// from the same host, and clients that send no Origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Files answered to plain HTTP GETs (ws, wss); `"{web}"` for the built-in web client.
    pub static_dir: Option<String>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a trusted proxy.
    pub proxy_protocol: Option<bool>,
    /// Addresses or CIDR ranges allowed to connect (and send the header) when `proxy_protocol`.
    pub trusted_proxies: Option<Vec<String>>,
    /// Host names this listener answers to (ws, wss), beside IP literals and `localhost`: the
    /// DNS-rebinding defence (`net/hosts.rs`).
    pub hosts: Option<Vec<String>>,
    /// Accept permessage-deflate (RFC 7692) from clients that offer it (ws, wss; default true).
    pub ws_deflate: Option<bool>,
}

/// An address range, `10.0.0.0/8` or `2001:db8::/32` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The first address.
    pub addr: IpAddr,
    /// Leading bits that must match.
    pub prefix: u8,
}

impl IpNet {
    /// Parse `addr` or `addr/prefix`.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |full: u32, n: u8| {
            if n == 0 {
                0
            } else {
                full >> (32 - u32::from(n))
            }
        };
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                bits(u32::from(net), self.prefix) == bits(u32::from(ip), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let shift = 128 - u32::from(self.prefix);
                let (net, ip) = (u128::from(net), u128::from(ip));
                shift == 128 || net >> shift == ip >> shift
            }
            _ => false,
        }
    }
}

/// A listener's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Frames over TCP.
    Tcp,
    /// Frames over TLS.
    Tls,
    /// WebSocket messages over TCP.
    Ws,
    /// WebSocket messages over TLS.
    Wss,
}

impl ListenerKind {
    /// Whether connections are encrypted.
    pub fn tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// Whether connections speak WebSocket.
    pub fn websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }

    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        }
    }
}

/// TLS files of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Client certificates: CA, CRLs and how a certificate names its user.
    pub client: Option<ClientAuth>,
}

/// Where a WebSocket listener's static files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticFiles {
    /// The web client built into the binary.
    Builtin,
    /// Files of this directory (read when the server binds or reloads).
    Dir(PathBuf),
}

/// One validated listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ListenerKind,
    /// Where it listens.
    pub address: SocketAddr,
    /// For tls and wss.
    pub tls: Option<TlsFiles>,
    /// For ws and wss.
    pub origins: Origins,
    /// For ws and wss.
    pub static_files: Option<StaticFiles>,
    /// `proxy_protocol = true`: the proxies that may connect (and must send the header).
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// For ws and wss: host names it answers to besides IP literals and `localhost`.
    pub hosts: Vec<String>,
    /// For ws and wss: accept permessage-deflate offers.
    pub ws_deflate: bool,
}

/// Validate `[[listeners]]`, pushing `(key, problem)` pairs.
pub fn validate_listeners(
    listeners: Vec<FileListener>,
    problems: &mut Vec<(String, String)>,
    resolve: impl Fn(&str) -> Result<SocketAddr, String>,
) -> Vec<ListenerConfig> {
    let mut out = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let key = format!("listeners[{i}]");
        let kind = match l.kind.as_deref() {
            Some("tcp") => ListenerKind::Tcp,
            Some("tls") => ListenerKind::Tls,
            Some("ws") => ListenerKind::Ws,
            Some("wss") => ListenerKind::Wss,
            Some(other) => {
                problems.push((
                    format!("{key}.kind"),
                    format!("{other:?} is not one of \"tcp\", \"tls\", \"ws\", \"wss\""),
                ));
                continue;
            }
            None => {
                problems.push((
                    format!("{key}.kind"),
                    "missing: \"tcp\", \"tls\", \"ws\" or \"wss\"".into(),
                ));
                continue;
            }
        };
        let Some(address) = l.address.as_deref() else {
            problems.push((format!("{key}.address"), "missing (host:port)".into()));
            continue;
        };
        let address = match resolve(address) {
            Ok(a) => a,
            Err(e) => {
                problems.push((format!("{key}.address"), e));
                continue;
            }
        };
        let client = client_auth(&key, &l, problems);
        let name = l.name.unwrap_or_else(|| format!("{}{i}", kind.as_str()));
        let has_client_keys = l.client_ca.is_some()
            || l.client_crl.is_some()
            || l.client_cert_map.is_some()
            || l.client_cert_email_domain.is_some()
            || l.client_cert_uri_prefix.is_some();
        let tls = match (kind.tls(), l.cert, l.key) {
            (true, Some(cert), Some(key_file)) => {
                if let Err(e) = tls::server_config(&cert, &key_file, client.as_ref(), i) {
                    problems.push((format!("{key}.cert"), e));
                }
                Some(TlsFiles {
                    cert,
                    key: key_file,
                    client,
                })
            }
            (true, _, _) => {
                problems.push((
                    key.clone(),
                    format!("a {} listener needs cert and key", kind.as_str()),
                ));
                None
            }
            (false, None, None) if !has_client_keys => None,
            (false, _, _) => {
                problems.push((
                    key.clone(),
                    "cert, key and client_ca only go with kind \"tls\" or \"wss\"".into(),
                ));
                None
            }
        };
        if kind == ListenerKind::Wss
            && l.client_ca.is_some()
            && l.allowed_origins
                .as_ref()
                .is_some_and(|list| list.iter().any(|o| o == "*"))
        {
            problems.push((
                format!("{key}.allowed_origins"),
                "[\"*\"] cannot go with client_ca: any web page could log its visitors in with \
                 their browser certificates; list the origins allowed"
                    .into(),
            ));
        }
        if !kind.websocket()
            && (l.allowed_origins.is_some() || l.static_dir.is_some() || l.hosts.is_some())
        {
            problems.push((
                key.clone(),
                "allowed_origins, static_dir and hosts only go with kind \"ws\" or \"wss\"".into(),
            ));
        }
        if !kind.websocket() && l.ws_deflate.is_some() {
            problems.push((
                format!("{key}.ws_deflate"),
                "only goes with kind \"ws\" or \"wss\" (TCP and TLS clients negotiate \
                 \"compress\" instead)"
                    .into(),
            ));
        }
        let hosts = l.hosts.unwrap_or_default();
        for (j, host) in hosts.iter().enumerate() {
            if !crate::net::hosts::valid_name(host) || host.parse::<std::net::IpAddr>().is_ok() {
                problems.push((
                    format!("{key}.hosts[{j}]"),
                    format!("{host:?} is not a host name (IP addresses are always answered)"),
                ));
            }
        }
        let origins = match l.allowed_origins {
            None => Origins::SameHost,
            Some(list) if list.iter().any(|o| o == "*") => Origins::Any,
            Some(list) => Origins::List(list),
        };
        let static_files = match l.static_dir {
            None => None,
            Some(dir) if dir == WEB_PLACEHOLDER => Some(StaticFiles::Builtin),
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if !kind.websocket() {
                    // Reported above.
                } else if let Err(e) = crate::net::ws::load_static_dir(&dir) {
                    problems.push((format!("{key}.static_dir"), e));
                }
                Some(StaticFiles::Dir(dir))
            }
        };
        let trusted_proxies = match (l.proxy_protocol, l.trusted_proxies) {
            (Some(true), Some(list)) if !list.is_empty() => {
                let mut nets = Vec::new();
                for (j, text) in list.iter().enumerate() {
                    match IpNet::parse(text) {
                        Ok(net) => nets.push(net),
                        Err(e) => problems.push((format!("{key}.trusted_proxies[{j}]"), e)),
                    }
                }
                Some(nets)
            }
            (Some(true), _) => {
                problems.push((
                    format!("{key}.trusted_proxies"),
                    "proxy_protocol = true needs the proxies' addresses (e.g. [\"10.0.0.0/8\"]): \
                     only they may send the header"
                        .into(),
                ));
                None
            }
            (_, Some(_)) => {
                problems.push((
                    format!("{key}.trusted_proxies"),
                    "only goes with proxy_protocol = true".into(),
                ));
                None
            }
            (_, None) => None,
        };
        out.push(ListenerConfig {
            name,
            kind,
            address,
            tls,
            origins,
            static_files,
            trusted_proxies,
            hosts,
            ws_deflate: l.ws_deflate.unwrap_or(true),
        });
    }
    out
}

/// `client_ca`, `client_crl` and `client_cert_map` (with its domain or prefix) of a listener.
fn client_auth(
    key: &str,
    l: &FileListener,
    problems: &mut Vec<(String, String)>,
) -> Option<ClientAuth> {
    let Some(ca) = &l.client_ca else {
        if l.client_crl.is_some()
            || l.client_cert_map.is_some()
            || l.client_cert_email_domain.is_some()
            || l.client_cert_uri_prefix.is_some()
        {
            problems.push((
                key.to_string(),
                "client_crl and client_cert_map (with its domain or prefix) only go with client_ca"
                    .into(),
            ));
        }
        return None;
    };
    let domain = l.client_cert_email_domain.clone();
    let prefix = l.client_cert_uri_prefix.clone();
    let map = match (l.client_cert_map.as_deref(), domain, prefix) {
        (None | Some("cn"), None, None) => CertMap::Cn,
        (Some("email"), Some(domain), None) if !domain.is_empty() => CertMap::Email(domain),
        (Some("uri"), None, Some(prefix)) if !prefix.is_empty() => CertMap::Uri(prefix),
        (Some("email"), _, _) => {
            problems.push((
                format!("{key}.client_cert_email_domain"),
                "client_cert_map = \"email\" needs client_cert_email_domain (e.g. \"example.org\"), and no client_cert_uri_prefix".into(),
            ));
            return None;
        }
        (Some("uri"), _, _) => {
            problems.push((
                format!("{key}.client_cert_uri_prefix"),
                "client_cert_map = \"uri\" needs client_cert_uri_prefix (e.g. \"spiffe://example.org/user/\"), and no client_cert_email_domain".into(),
            ));
            return None;
        }
        (None | Some("cn"), _, _) => {
            problems.push((
                key.to_string(),
                "client_cert_email_domain and client_cert_uri_prefix go with client_cert_map = \"email\" or \"uri\"".into(),
            ));
            return None;
        }
        (Some(other), _, _) => {
            problems.push((
                format!("{key}.client_cert_map"),
                format!("{other:?} is not one of \"cn\", \"email\", \"uri\""),
            ));
            return None;
        }
    };
    Some(ClientAuth {
        ca: ca.clone(),
        crls: l.client_crl.clone().unwrap_or_default(),
        map,
    })
}

/// The TLS settings of a peer link we dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    /// How the peer's certificate is trusted.
    pub trust: Trust,
    /// The name its certificate must carry (CA trust only).
    pub server_name: String,
}

/// Validate `tls`, `ca`, `fingerprint` and `server_name` of `[peers.<name>]`.
pub fn validate_peer_tls(
    key: &str,
    tls: Option<bool>,
    ca: Option<PathBuf>,
    fingerprint: Option<String>,
    server_name: Option<String>,
    address: Option<&str>,
    problems: &mut Vec<(String, String)>,
) -> Option<PeerTls> {
    if tls != Some(true) {
        if ca.is_some() || fingerprint.is_some() || server_name.is_some() {
            problems.push((
                key.to_string(),
                "ca, fingerprint and server_name only go with tls = true".into(),
            ));
        }
        return None;
    }
    let trust = match (ca, fingerprint) {
        (Some(ca), None) => {
            if let Err(e) = tls::load_roots(&ca) {
                problems.push((format!("{key}.ca"), e));
            }
            Trust::CaFile(ca)
        }
        (None, Some(fp)) => match tls::parse_fingerprint(&fp) {
            Ok(fp) => Trust::Pinned(fp),
            Err(e) => {
                problems.push((format!("{key}.fingerprint"), e));
                return None;
            }
        },
        _ => {
            problems.push((
                key.to_string(),
                "tls = true needs ca (a PEM file) or fingerprint (the peer certificate's SHA-256), one of them".into(),
            ));
            return None;
        }
    };
    let host = address
        .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        .unwrap_or_default();
    let server_name = server_name.unwrap_or(host);
    if let Err(e) = tls::server_name(&server_name) {
        problems.push((format!("{key}.server_name"), e));
    }
    Some(PeerTls { trust, server_name })
}

#[cfg(test)]
mod proxy_tests {
    use super::*;

    #[test]
    fn ranges() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(
            IpNet::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/", "::1/129", "10.0.0.0/-1"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    fn problems(entry: &str) -> Vec<(String, String)> {
        let text = format!("[[listeners]]\nkind = \"tcp\"\naddress = \"127.0.0.1:0\"\n{entry}");
        crate::config::Config::parse(&text, "test")
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
    }

    #[test]
    fn proxy_keys_are_validated() {
        let ok = problems("proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n");
        assert!(ok.is_empty(), "{ok:?}");
        let p = problems("proxy_protocol = true\n");
        assert_eq!(p[0].0, "listeners[0].trusted_proxies");
        let p = problems("proxy_protocol = true\ntrusted_proxies = []\n");
        assert_eq!(p[0].0, "listeners[0].trusted_proxies");
        let p = problems("trusted_proxies = [\"10.0.0.1\"]\n");
        assert_eq!(
            p[0],
            (
                "listeners[0].trusted_proxies".into(),
                "only goes with proxy_protocol = true".into()
            )
        );
        let p = problems("proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/40\"]\n");
        assert_eq!(p[0].0, "listeners[0].trusted_proxies[0]");
    }

    #[test]
    fn ws_deflate_defaults_on_and_goes_only_with_websocket_listeners() {
        let p = problems("ws_deflate = false\n");
        assert_eq!(p[0].0, "listeners[0].ws_deflate");
        let parse = |entry: &str| {
            let text = format!("[[listeners]]\nkind = \"ws\"\naddress = \"127.0.0.1:0\"\n{entry}");
            crate::config::Config::parse(&text, "test")
                .unwrap()
                .listeners[0]
                .ws_deflate
        };
        assert!(parse(""));
        assert!(!parse("ws_deflate = false\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(l: FileListener) -> (Option<ClientAuth>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let auth = client_auth("listeners[0]", &l, &mut problems);
        (auth, problems)
    }

    #[test]
    fn certificate_mappings_need_their_domain_or_prefix() {
        let ca = || Some(PathBuf::from("ca.pem"));
        let (auth, problems) = problems_of(FileListener {
            client_ca: ca(),
            ..Default::default()
        });
        assert_eq!(auth.unwrap().map, CertMap::Cn);
        assert!(problems.is_empty());
        let (auth, _) = problems_of(FileListener {
            client_ca: ca(),
            client_cert_map: Some("email".into()),
            client_cert_email_domain: Some("example.org".into()),
            client_crl: Some(vec!["a.crl".into()]),
            ..Default::default()
        });
        let auth = auth.unwrap();
        assert_eq!(auth.map, CertMap::Email("example.org".into()));
        assert_eq!(auth.crls, [PathBuf::from("a.crl")]);
        let (auth, problems) = problems_of(FileListener {
            client_ca: ca(),
            client_cert_map: Some("uri".into()),
            ..Default::default()
        });
        assert!(auth.is_none());
        assert_eq!(problems[0].0, "listeners[0].client_cert_uri_prefix");
        let (_, problems) = problems_of(FileListener {
            client_ca: ca(),
            client_cert_map: Some("dn".into()),
            ..Default::default()
        });
        assert_eq!(
            problems,
            [(
                "listeners[0].client_cert_map".to_string(),
                "\"dn\" is not one of \"cn\", \"email\", \"uri\"".to_string()
            )]
        );
        let (_, problems) = problems_of(FileListener {
            client_crl: Some(vec![]),
            ..Default::default()
        });
        assert_eq!(problems[0].0, "listeners[0]");
    }
}
