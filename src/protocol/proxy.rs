//! The PROXY protocol header (HAProxy's text, versions 1 and 2) a load balancer sends before the
//! client's first byte, so that limits, logs and `from.address` see the real client address.
//! Pure: bytes in, a parsed header (and its length) out; no sockets.
//!
//! Strict on purpose, since the header decides which address the limits apply to: version 1 is
//! `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` (or `PROXY UNKNOWN…\r\n`) in at most
//! [`MAX_V1`] bytes, with addresses of the family named and ports without leading zeros;
//! version 2 is the 12-byte signature, version 2, command LOCAL or PROXY, family INET or INET6
//! (or UNSPEC with LOCAL) over STREAM, and a length that covers the addresses, with TLVs (skipped)
//! up to [`MAX_V2_BODY`] bytes in all. Anything else is an error and the connection is closed.
//! `UNKNOWN` and `LOCAL` (health checks of the balancer itself) keep the connection's own address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest version 1 header, CRLF included (the specification's limit).
pub const MAX_V1: usize = 107;
/// Longest version 2 header after its 16 fixed bytes (addresses and TLVs).
pub const MAX_V2_BODY: usize = 512;
/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The most bytes a header can take: read no further than this looking for one.
pub const MAX_HEADER: usize = 16 + MAX_V2_BODY;

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes: the client's own bytes start after it.
    pub len: usize,
    /// The client's address; `None` for `UNKNOWN` / `LOCAL` (use the connection's).
    pub source: Option<SocketAddr>,
}

/// Why bytes are not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither signature.
    NotProxy,
    /// Over [`MAX_V1`] or [`MAX_V2_BODY`].
    TooLong,
    /// A signature, then something this parser refuses.
    Malformed(&'static str),
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::NotProxy => write!(f, "no PROXY protocol header"),
            ProxyError::TooLong => write!(f, "PROXY protocol header too long"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

/// Parse the start of a connection: `Ok(None)` while more bytes are needed.
pub fn parse(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let v1 = b"PROXY ";
    let v2 = &V2_SIGNATURE[..];
    let n = input.len();
    if n < v1.len().max(v2.len()) {
        // Need more, unless what is there already matches neither.
        if v1.starts_with(&input[..n.min(v1.len())]) || v2.starts_with(input) {
            return Ok(None);
        }
        return Err(ProxyError::NotProxy);
    }
    if input.starts_with(v1) {
        parse_v1(input)
    } else if input.starts_with(v2) {
        parse_v2(input)
    } else {
        Err(ProxyError::NotProxy)
    }
}

fn parse_v1(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let window = &input[..input.len().min(MAX_V1)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if input.len() >= MAX_V1 {
            return Err(ProxyError::TooLong);
        }
        if window.contains(&b'\n') || window.contains(&0) {
            return Err(ProxyError::Malformed("a stray byte in the version 1 line"));
        }
        return Ok(None);
    };
    let len = end + 2;
    let line = std::str::from_utf8(&input[..end])
        .map_err(|_| ProxyError::Malformed("version 1 line is not text"))?;
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let family = words.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The rest is to be ignored (the balancer could not tell).
        return Ok(Some(Header { len, source: None }));
    }
    let parts: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return Err(ProxyError::Malformed(
            "version 1 needs source, destination and both ports",
        ));
    };
    let (src, _dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(v4(src).ok_or(ProxyError::Malformed("bad IPv4 source"))?),
            IpAddr::V4(v4(dst).ok_or(ProxyError::Malformed("bad IPv4 destination"))?),
        ),
        "TCP6" => (
            IpAddr::V6(
                src.parse::<Ipv6Addr>()
                    .map_err(|_| ProxyError::Malformed("bad IPv6 source"))?,
            ),
            IpAddr::V6(
                dst.parse::<Ipv6Addr>()
                    .map_err(|_| ProxyError::Malformed("bad IPv6 destination"))?,
            ),
        ),
        _ => {
            return Err(ProxyError::Malformed(
                "version 1 family is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let sport = port(sport).ok_or(ProxyError::Malformed("bad source port"))?;
    port(dport).ok_or(ProxyError::Malformed("bad destination port"))?;
    Ok(Some(Header {
        len,
        source: Some(SocketAddr::new(src, sport)),
    }))
}

/// A dotted IPv4 address (std's parser refuses leading zeros and other forms already).
fn v4(text: &str) -> Option<Ipv4Addr> {
    text.parse().ok()
}

/// A port: 1 to 5 digits, no leading zero (but "0" itself), at most 65535.
fn port(text: &str) -> Option<u16> {
    let ok = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if ok { text.parse().ok() } else { None }
}

fn parse_v2(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    if input.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = input[12];
    let family = input[13];
    let body = usize::from(u16::from_be_bytes([input[14], input[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed(
            "version 2 signature with another version",
        ));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => {
            return Err(ProxyError::Malformed(
                "version 2 command is not LOCAL or PROXY",
            ));
        }
    };
    if body > MAX_V2_BODY {
        return Err(ProxyError::TooLong);
    }
    let needed = match family {
        0x11 => 12,
        0x21 => 36,
        // LOCAL: whatever addresses follow are to be ignored.
        _ if local => 0,
        _ => {
            return Err(ProxyError::Malformed(
                "version 2 family is not TCP over IPv4 or IPv6",
            ));
        }
    };
    if body < needed {
        return Err(ProxyError::Malformed(
            "version 2 length too short for its addresses",
        ));
    }
    let len = 16 + body;
    if input.len() < len {
        return Ok(None);
    }
    if local {
        return Ok(Some(Header { len, source: None }));
    }
    let a = &input[16..len];
    let source = if family == 0x11 {
        let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
        SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([a[8], a[9]]))
    } else {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&a[..16]);
        let ip = Ipv6Addr::from(octets);
        SocketAddr::new(IpAddr::V6(ip), u16::from_be_bytes([a[32], a[33]]))
    };
    Ok(Some(Header {
        len,
        source: Some(source),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        let body = (addresses.len() + tlvs.len()) as u16;
        out.extend_from_slice(&body.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn inet4() -> Vec<u8> {
        let mut a = vec![192, 0, 2, 7, 10, 0, 0, 1];
        a.extend_from_slice(&51234u16.to_be_bytes());
        a.extend_from_slice(&2222u16.to_be_bytes());
        a
    }

    fn addr(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn version_1_lines() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 2222\r\n";
        let mut input = line.to_vec();
        input.extend_from_slice(b"\x10\x00\x00\x00{");
        assert_eq!(
            parse(&input),
            Ok(Some(Header {
                len: line.len(),
                source: addr("192.0.2.7:51234")
            }))
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
                .unwrap()
                .unwrap()
                .source,
            addr("[2001:db8::1]:1")
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Ok(Some(Header {
                len: 24,
                source: None
            }))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some(Header {
                len: 15,
                source: None
            }))
        );
    }

    #[test]
    fn version_1_byte_by_byte_needs_more_until_the_crlf() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 2222\r\n";
        for n in 0..line.len() {
            assert_eq!(parse(&line[..n]), Ok(None), "{n} bytes");
        }
        assert!(parse(line).unwrap().is_some());
    }

    #[test]
    fn version_1_refusals() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 2222 extra\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.007 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 01 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",
            b"PROXY TCP4 \xff\r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse(b), Err(ProxyError::Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(b),
                parse(b)
            );
        }
        let long = format!("PROXY TCP6 {} ::1 1 2\r\n", "f".repeat(120));
        assert_eq!(parse(long.as_bytes()), Err(ProxyError::TooLong));
        assert_eq!(parse(&[b'P'; 200][..]), Err(ProxyError::NotProxy));
    }

    #[test]
    fn not_a_header() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"\x10\x00\x00\x00"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROXX"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROX"), Ok(None));
        assert_eq!(parse(b"\r\n\r\n\0"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn version_2_inet_inet6_local_and_tlvs() {
        let h = v2(1, 0x11, &inet4(), &[]);
        assert_eq!(
            parse(&h),
            Ok(Some(Header {
                len: 28,
                source: addr("192.0.2.7:51234")
            }))
        );
        let mut a6 = Vec::new();
        a6.extend_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        a6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        a6.extend_from_slice(&443u16.to_be_bytes());
        a6.extend_from_slice(&2222u16.to_be_bytes());
        let tlv = [0x04, 0x00, 0x03, 1, 2, 3]; // PP2_TYPE_NOOP, skipped
        let h = v2(1, 0x21, &a6, &tlv);
        assert_eq!(
            parse(&h).unwrap().unwrap().source,
            addr("[2001:db8::9]:443")
        );
        assert_eq!(parse(&h).unwrap().unwrap().len, 16 + 36 + 6);
        // Byte by byte: more needed until the last byte.
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "{n}");
        }
        // LOCAL (the balancer's own check): the connection's address.
        assert_eq!(
            parse(&v2(0, 0x00, &[], &[])),
            Ok(Some(Header {
                len: 16,
                source: None
            }))
        );
    }

    #[test]
    fn version_2_refusals() {
        let mut wrong_version = v2(1, 0x11, &inet4(), &[]);
        wrong_version[12] = 0x11;
        assert!(matches!(
            parse(&wrong_version),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(2, 0x11, &inet4(), &[])),
            Err(ProxyError::Malformed(_))
        ));
        for family in [0x12, 0x31, 0x00, 0x22] {
            assert!(
                matches!(
                    parse(&v2(1, family, &inet4(), &[])),
                    Err(ProxyError::Malformed(_))
                ),
                "{family:#x}"
            );
        }
        assert!(matches!(
            parse(&v2(1, 0x11, &inet4()[..8], &[])),
            Err(ProxyError::Malformed(_))
        ));
        let big = v2(1, 0x11, &inet4(), &vec![0; MAX_V2_BODY]);
        assert_eq!(parse(&big[..16]), Err(ProxyError::TooLong));
    }
}
