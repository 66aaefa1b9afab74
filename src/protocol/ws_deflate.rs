//! The permessage-deflate negotiation (RFC 7692 §5, §7.1) of a WebSocket upgrade, pure: the
//! client's `Sec-WebSocket-Extensions` offers in, the answer header out.
//!
//! besterd accepts the first `permessage-deflate` offer it can honour and always answers with
//! `server_no_context_takeover` and `client_no_context_takeover`: every message is compressed
//! on its own, so no sliding window (32 KiB each way with zlib's defaults) is kept per
//! connection between messages, and the DEFLATE states are the loop thread's own
//! (`compress.rs`). The server compresses with the full 32 KiB window inside one message, so an
//! offer with `server_max_window_bits` below 15 is declined (the next offer is tried; with none
//! left the connection goes on uncompressed), as is one with an unknown, repeated or malformed
//! parameter. `client_max_window_bits` needs no answer: any window the client uses is inflated.
//!
//! It must not: refuse the connection over an offer (only the offer), or accept a parameter it
//! does not honour.

/// The extension's name.
pub const NAME: &str = "permessage-deflate";

/// The `Sec-WebSocket-Extensions` value of an accepted offer.
pub const ACCEPTED: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// The answer to the `Sec-WebSocket-Extensions` values of an upgrade request (each header's
/// value, in order): whether a `permessage-deflate` offer was accepted. Extensions other than
/// permessage-deflate are ignored (not accepted).
pub fn accept<'a>(headers: impl IntoIterator<Item = &'a str>) -> bool {
    headers
        .into_iter()
        .flat_map(split_list)
        .any(|offer| acceptable(offer).is_ok())
}

/// Why one `permessage-deflate` offer is declined (`Err`), or `Ok` if it can be honoured;
/// `Err("not permessage-deflate")` for another extension.
pub fn acceptable(offer: &str) -> Result<(), String> {
    let mut parts = split_params(offer);
    let name = parts.next().unwrap_or("").trim();
    if !name.eq_ignore_ascii_case(NAME) {
        return Err("not permessage-deflate".into());
    }
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
            None => (param.trim(), None),
        };
        let key = key.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(format!("{key} given twice"));
        }
        match (key.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v).ok_or_else(|| format!("client_max_window_bits={v}"))?;
            }
            ("server_max_window_bits", Some(v)) => match window_bits(v) {
                Some(15) => {}
                Some(bits) => {
                    return Err(format!(
                        "server_max_window_bits={bits}: besterd compresses with a window of 15 bits"
                    ));
                }
                None => return Err(format!("server_max_window_bits={v}")),
            },
            (key, _) => return Err(format!("parameter {key} not understood")),
        }
        seen.push(key);
    }
    Ok(())
}

/// 8 to 15, written as 1*DIGIT without a leading zero (RFC 7692 §7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// The comma-separated extensions of one header value (commas inside quotes kept).
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    split_outside_quotes(value, b',').filter(|s| !s.trim().is_empty())
}

/// An extension's name and parameters, split at semicolons outside quotes.
fn split_params(offer: &str) -> impl Iterator<Item = &str> {
    split_outside_quotes(offer, b';')
}

fn split_outside_quotes(text: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut pieces = Vec::new();
    for (i, b) in text.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b if b == sep && !quoted => {
                pieces.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_browsers_and_libraries_offer_is_accepted() {
        // Chromium, Firefox, Python websockets, Node ws.
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits",
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits=\"10\"",
            "x-webkit-deflate-frame, permessage-deflate",
            "PerMessage-Deflate ;client_max_window_bits",
        ] {
            assert!(accept([offer]), "{offer}");
        }
        assert!(accept(["x-other", "permessage-deflate"]), "a second header");
    }

    #[test]
    fn offers_that_cannot_be_honoured_are_declined_not_the_connection() {
        for offer in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=015",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert!(!accept([offer]), "{offer}");
        }
        assert_eq!(
            acceptable("permessage-deflate; server_max_window_bits=10"),
            Err("server_max_window_bits=10: besterd compresses with a window of 15 bits".into())
        );
        // The next offer is tried when one is declined (RFC 7692 §5).
        assert!(accept([
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ]));
    }
}
