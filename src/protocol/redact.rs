//! Error texts without the values they quote.
//!
//! serde's messages quote what they found: `invalid type: string "alice:secret", expected an
//! object`. Those texts reach the log and the peer, and the value may be a password sent in the
//! wrong shape. [`without_values`] keeps the path, the kind of value and what was expected, and
//! drops the value itself: `invalid type: string, expected an object`. Field and key names are
//! kept (they are the protocol's words, or the sender's own keys); only values are dropped.

/// `text` with every value serde quotes in it dropped:
///
/// - `invalid type: string "…"` and `invalid value: string "…"` become `… string`;
/// - `` boolean `true` ``, `` integer `5` ``, `` floating point `1.5` ``, `` character `c` ``
///   after `invalid type:` / `invalid value:` lose their value;
/// - `` unknown variant `…`, expected … `` becomes `unknown variant, expected …`.
pub fn without_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["invalid type: ", "invalid value: ", "unknown variant `"]
            .iter()
            .filter_map(|marker| rest.find(marker).map(|at| (at, *marker)))
            .min_by_key(|(at, _)| *at);
        let Some((at, marker)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let after = &rest[at + marker.len()..];
        if marker == "unknown variant `" {
            out.push_str("unknown variant");
            // The variant is quoted raw; what follows it is serde's own `, expected …` (whose
            // list of variants never holds "`, expected "), or `, there are no variants`.
            rest = match after
                .rfind("`, expected ")
                .or_else(|| after.rfind("`, there are no variants"))
            {
                Some(end) => &after[end + 1..],
                None => "",
            };
            continue;
        }
        out.push_str(marker);
        rest = skip_value(after, &mut out);
    }
}

/// After `invalid type: ` or `invalid value: `: write the kind of value to `out` and return what
/// follows the quoted value.
fn skip_value<'a>(text: &'a str, out: &mut String) -> &'a str {
    if let Some(quoted) = text.strip_prefix("string \"") {
        out.push_str("string");
        return after_debug_string(quoted);
    }
    for kind in ["boolean `", "integer `", "floating point `", "character `"] {
        if let Some(value) = text.strip_prefix(kind) {
            out.push_str(&kind[..kind.len() - 2]);
            // Numbers and booleans hold no backquote; a character may be one: skip at least it.
            let skip = value.chars().next().map_or(0, char::len_utf8);
            return match value[skip..].find('`') {
                Some(end) => &value[skip + end + 1..],
                None => "",
            };
        }
    }
    text
}

/// The rest of a text after a string in Rust's `Debug` form whose opening quote is already gone.
fn after_debug_string(text: &str) -> &str {
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => return &text[i + 1..],
            _ => {}
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::without_values;

    #[test]
    fn strings_numbers_and_booleans_lose_their_values() {
        let cases = [
            (
                "header.authentication: invalid type: string \"alice:secret\", expected an object",
                "header.authentication: invalid type: string, expected an object",
            ),
            (
                "header.scope: invalid type: integer `5`, expected a string",
                "header.scope: invalid type: integer, expected a string",
            ),
            (
                "header.status: invalid value: string \"maybe\", expected \"ok\" or \"error\"",
                "header.status: invalid value: string, expected \"ok\" or \"error\"",
            ),
            (
                "x: invalid type: boolean `true`, expected a string",
                "x: invalid type: boolean, expected a string",
            ),
            (
                "x: invalid type: floating point `1.5`, expected a string",
                "x: invalid type: floating point, expected a string",
            ),
            (
                "x: invalid type: character ```, expected a string",
                "x: invalid type: character, expected a string",
            ),
            (
                "header.identify.type: unknown variant `s3cret`, expected `client` or `server`",
                "header.identify.type: unknown variant, expected `client` or `server`",
            ),
            (
                "t: unknown variant `x`, expected one of `a`, `b`, `c`",
                "t: unknown variant, expected one of `a`, `b`, `c`",
            ),
            (
                "t: unknown variant `x`, there are no variants",
                "t: unknown variant, there are no variants",
            ),
            (
                "header: invalid type: map, expected a string",
                "header: invalid type: map, expected a string",
            ),
            ("unknown field `pasword`", "unknown field `pasword`"),
        ];
        for (text, want) in cases {
            assert_eq!(without_values(text), want, "{text}");
        }
    }

    #[test]
    fn a_string_that_imitates_serde_cannot_smuggle_itself_out() {
        // The value holds an escaped quote, serde's own words and a backquote.
        let text = "p: invalid type: string \"pw\\\", expected `x` invalid type: string \\\"leak\", expected an object";
        assert_eq!(
            without_values(text),
            "p: invalid type: string, expected an object"
        );
        let variant = "t: unknown variant `a`, expected `b` leak`, expected `client`";
        assert_eq!(
            without_values(variant),
            "t: unknown variant, expected `client`"
        );
        // Unterminated: nothing after the opening quote survives.
        assert_eq!(
            without_values("p: invalid type: string \"secret"),
            "p: invalid type: string"
        );
        assert_eq!(
            without_values("p: invalid type: integer `5"),
            "p: invalid type: integer"
        );
    }
}
