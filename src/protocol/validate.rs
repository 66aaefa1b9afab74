//! Strict JSON checks that typed parsing cannot do for opaque `data`: no object may repeat a key (a
//! repeated key means two readers may disagree about the message, so it is refused, as BTP refuses
//! duplicate protocol names), and nesting is limited so that no peer can make a reader recurse
//! deeply. One pass over the text, allocation only for the keys of the object being checked.

use std::collections::HashSet;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

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
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            keys.insert(key);
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Check a JSON text for duplicate keys and excessive nesting. Syntax errors are reported too.
pub fn check(text: &str) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    Check { depth: 0 }.deserialize(&mut de)?;
    de.end()
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
}
