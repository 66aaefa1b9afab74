//! Strict JSON checks that typed parsing cannot do for opaque `data`: no object may repeat a key (a
//! repeated key means two readers may disagree about the message, so it is refused, as BTP refuses
//! duplicate protocol names), and nesting is limited so that no peer can make a reader recurse
//! deeply.
//!
//! [`check`] is one pass over the text that allocates nothing for ordinary input: keys are
//! borrowed from the text (only a key with escapes is copied), the keys of an object with up to
//! [`INLINE_KEYS`] keys are compared in place on the stack, and only a larger object gets a hash
//! set (randomly seeded: its keys come from the peer). [`parse_one_pass`] is the serde path's
//! first try for the frames the fast lane (`scan.rs`) leaves to it: the typed parse of the
//! envelope (whose derived structs refuse repeated and unknown fields themselves) plus this check
//! of `data` alone, equivalent to checking the whole text first; the parsers fall back to the
//! full two-pass path for its exact error whenever it fails.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Deepest nesting of arrays and objects accepted in a frame (the envelope counts).
pub const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy)]
struct Check {
    depth: usize,
}

impl Check {
    fn deeper<E: de::Error>(self) -> Result<Check, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "JSON nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Check {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        let mut keys = Keys::new();
        while let Some(Key(key)) = map.next_key()? {
            if let Err(key) = keys.insert(key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Objects with up to this many keys are checked for repeats without allocating.
pub const INLINE_KEYS: usize = 16;

/// The keys of one object seen so far.
struct Keys<'de> {
    inline: [Cow<'de, str>; INLINE_KEYS],
    len: usize,
    spilled: Option<HashSet<Cow<'de, str>>>,
}

impl<'de> Keys<'de> {
    fn new() -> Self {
        Keys {
            inline: [const { Cow::Borrowed("") }; INLINE_KEYS],
            len: 0,
            spilled: None,
        }
    }

    /// Add a key; a key that was already there is handed back.
    fn insert(&mut self, key: Cow<'de, str>) -> Result<(), Cow<'de, str>> {
        if let Some(set) = &mut self.spilled {
            if set.contains(&key) {
                return Err(key);
            }
            set.insert(key);
            return Ok(());
        }
        if self.inline[..self.len].contains(&key) {
            return Err(key);
        }
        if self.len < INLINE_KEYS {
            self.inline[self.len] = key;
            self.len += 1;
            return Ok(());
        }
        let mut set: HashSet<Cow<'de, str>> = self.inline.iter_mut().map(std::mem::take).collect();
        set.insert(key);
        self.spilled = Some(set);
        Ok(())
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Check a JSON text for duplicate keys and excessive nesting. Syntax errors are reported too.
pub fn check(text: &str) -> Result<(), serde_json::Error> {
    check_at(text, 0)
}

/// [`check`] for a value that sits inside `depth` enclosing arrays or objects of a frame (the
/// limit counts them).
pub fn check_at(text: &str, depth: usize) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    Check { depth }.deserialize(&mut de)?;
    de.end()
}

/// Depth of `payload.data` in client and handler frames: inside the frame object and `payload`.
pub const DATA_DEPTH: usize = 2;

/// The one-pass parse of a frame whose only part that typed parsing does not check is its
/// `data` (found by `data`, at [`DATA_DEPTH`]): `Some` exactly when checking the whole text with
/// [`check`] and then parsing it as `T` would succeed, with the same value; `None` otherwise
/// (the caller then takes the full path for the exact error).
///
/// Why it is equivalent, for `T` made only of derived structs with `deny_unknown_fields` (which
/// refuse a repeated field: `serde` reports `duplicate_field`), strings, numbers, enums of unit
/// variants, arrays of those, and `data`: the typed parse consumes the whole text, so its syntax
/// is valid; every object in it is either one of those structs or inside `data`, so a repeated
/// key anywhere fails the typed parse or the check of `data`; and the only nesting beyond the
/// structs' own fixed depth is inside `data`, which is checked at its depth.
pub fn parse_one_pass<T: DeserializeOwned>(
    text: &str,
    data: impl FnOnce(&T) -> Option<&RawValue>,
) -> Option<T> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let value: T = serde_json::from_str(text).ok()?;
    match data(&value) {
        Some(raw) if check_at(raw.get(), DATA_DEPTH).is_err() => None,
        _ => Some(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        check(r#"{"a":[1,{"b":null,"c":"x"}],"d":{"a":1}}"#).unwrap();
        check("5").unwrap();
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        for text in [r#"{"a":1,"a":2}"#, r#"{"x":[{"k":1,"k":1}]}"#] {
            let e = check(text).unwrap_err();
            assert!(e.to_string().starts_with("duplicate key"), "{e}");
            assert_eq!(e.classify(), serde_json::error::Category::Data);
        }
    }

    #[test]
    fn refuses_deep_nesting_but_not_the_limit() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        check(&ok).unwrap();
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(
            check(&deep)
                .unwrap_err()
                .to_string()
                .contains("nested deeper than 64")
        );
        // Far beyond serde_json's own recursion limit: still an error, not a stack overflow.
        let very = "[".repeat(100_000);
        assert!(check(&very).is_err());
    }

    #[test]
    fn large_objects_and_escaped_keys() {
        // Past the inline keys: the repeat is found in the spilled set, wherever it is.
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        check(&format!("{{{}}}", keys.join(","))).unwrap();
        for at in [0, 15, 16, 39] {
            let text = format!("{{{},\"k{at}\":0}}", keys.join(","));
            let e = check(&text).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("duplicate key \"k{at}\"")),
                "{e}"
            );
        }
        // An escaped key is the same key as its plain spelling.
        let e = check(r#"{"a":1,"\u0061":2}"#).unwrap_err();
        assert!(e.to_string().starts_with("duplicate key \"a\""), "{e}");
        check(r#"{"a\"b":1,"a":2,"":3}"#).unwrap();
        assert!(check(r#"{"":1,"":2}"#).is_err());
    }

    /// The one-pass parsers refuse exactly what the full check refuses, with its very text.
    #[test]
    fn frame_parsers_refuse_what_check_refuses_with_its_text() {
        use crate::protocol::ErrorCode;
        use crate::protocol::handler::parse_handler_message;
        use crate::protocol::message::{parse_inbound, parse_json};
        use serde::de::IgnoredAny;
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let client = [
            r#"{"header":{"scope":"client","scope":"client"},"payload":{"type":"echo"}}"#.to_string(),
            r#"{"header":{"scope":"client","id":"1","id":"1"},"payload":{"type":"echo"}}"#.into(),
            r#"{"header":{"scope":"client"},"payload":{"type":"echo","type":"echo"}}"#.into(),
            r#"{"header":{"scope":"client"},"payload":{"type":"echo","data":{"a":1,"a":2}}}"#.into(),
            r#"{"header":{"scope":"client"},"payload":{"type":"echo","data":[{"b":{"c":1,"\u0063":1}}]}}"#.into(),
            r#"{"header":{"identify":{"type":"client","authentication":{"username":"a","username":"a","password":"p"}}}}"#.into(),
            r#"{"header":{"scope":7},"payload":{"type":"e","data":{"x":1,"x":1}}}"#.into(),
            format!(r#"{{"header":{{"scope":"client"}},"payload":{{"type":"echo","data":{}}}}}"#, deep(63)),
            format!(r#"{{"header":{{"scope":"client"}},"payload":["echo",{}]}}"#, deep(63)),
        ];
        // What the full path says of the strict check's refusal (any type parses after it).
        let refusal = |text: &str| {
            assert!(check(text).is_err(), "{text}");
            let e = parse_json::<IgnoredAny>(text.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{text}");
            e.error
        };
        for text in &client {
            let got = parse_inbound(text.as_bytes()).unwrap_err();
            assert_eq!(
                (got.code, got.error),
                (ErrorCode::InvalidMessage, refusal(text))
            );
        }
        let handler = [
            r#"{"header":{"status":"ok","status":"ok","request":"1"},"payload":{"type":"t"}}"#.to_string(),
            r#"{"header":{"status":"ok","request":"1"},"payload":{"type":"t","data":{"k":[{"z":0,"z":0}]}}}"#.into(),
            format!(r#"{{"header":{{"status":"ok","request":"1"}},"payload":{{"type":"t","data":{}}}}}"#, deep(63)),
        ];
        for text in &handler {
            let got = parse_handler_message(text.as_bytes()).unwrap_err();
            assert_eq!(
                (got.code, got.error),
                (ErrorCode::InvalidMessage, refusal(text))
            );
        }
        // At the limit: accepted by both.
        let at_limit = format!(
            r#"{{"header":{{"scope":"client"}},"payload":{{"type":"echo","data":{}}}}}"#,
            deep(62)
        );
        check(&at_limit).unwrap();
        parse_inbound(at_limit.as_bytes()).unwrap();
    }

    #[test]
    fn check_at_counts_the_enclosing_levels() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        check_at(&nested(MAX_DEPTH - DATA_DEPTH), DATA_DEPTH).unwrap();
        assert!(check_at(&nested(MAX_DEPTH - DATA_DEPTH + 1), DATA_DEPTH).is_err());
    }
}
