//! String enumerations: a Rust enum per `enum` schema, its variants named
//! by [`variant`].

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::pascal;

/// A string enumeration, with `as_str` and `Display` for query strings.
///
/// # Errors
/// When two values would get the same variant name ([`variant`]).
pub(crate) fn string_enum(out: &mut String, name: &str, values: &[Value]) -> Result<()> {
    let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
    let mut variants: Vec<(String, &str)> = Vec::with_capacity(values.len());
    for v in &values {
        let variant = variant(v);
        if let Some((_, other)) = variants.iter().find(|(n, _)| *n == variant) {
            bail!(
                "enum {name}: the values {other:?} and {v:?} would both be the variant {variant}"
            );
        }
        variants.push((variant, v));
    }
    writeln!(
        out,
        "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]"
    )?;
    writeln!(out, "pub enum {name} {{")?;
    for (variant, v) in &variants {
        writeln!(out, "/// `{v}`.")?;
        writeln!(out, "#[serde(rename = {v:?})]")?;
        writeln!(out, "{variant},")?;
    }
    writeln!(out, "}}")?;
    writeln!(out, "impl {name} {{")?;
    writeln!(out, "/// The value as the API writes it.")?;
    writeln!(out, "pub fn as_str(self) -> &'static str {{ match self {{")?;
    for (variant, v) in &variants {
        writeln!(out, "Self::{variant} => {v:?},")?;
    }
    writeln!(out, "}} }} }}")?;
    writeln!(out, "impl std::fmt::Display for {name} {{")?;
    writeln!(
        out,
        "fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{ f.write_str(self.as_str()) }}"
    )?;
    writeln!(out, "}}")?;
    Ok(())
}

/// Operators by their usual names, longest spelling first (`!=` before
/// `!`); [`variant`] reads a value of symbols with them.
const OPERATORS: [(&str, &str); 25] = [
    ("==", "Eq"),
    ("!=", "Ne"),
    ("<=", "Le"),
    (">=", "Ge"),
    ("=~", "Re"),
    ("!~", "NotRe"),
    ("=", "Eq"),
    ("<", "Lt"),
    (">", "Gt"),
    ("~", "Tilde"),
    ("!", "Not"),
    ("+", "Plus"),
    ("-", "Minus"),
    ("*", "Star"),
    ("/", "Slash"),
    ("%", "Percent"),
    ("&", "And"),
    ("|", "Or"),
    ("^", "Caret"),
    (".", "Dot"),
    (",", "Comma"),
    (":", "Colon"),
    ("?", "Question"),
    ("@", "At"),
    ("#", "Hash"),
];

/// The variant name of an enumeration value: `PascalCase` of its words
/// (`no_data` → `NoData`, `cancel-requested` → `CancelRequested`); a value
/// with no letter or digit is named after its operators (`=` → `Eq`, `!=`
/// → `Ne`, `=~` → `Re`, `!~` → `NotRe`, `>=` → `Ge`; a symbol outside
/// [`OPERATORS`] is `U` and its code point); a name that would start with
/// a digit gets a `V` in front (`5m` → `V5m`). The value itself stays the
/// serde rename.
fn variant(value: &str) -> String {
    let words = pascal(value);
    if words.is_empty() {
        let mut name = String::new();
        let mut rest = value;
        while let Some(c) = rest.chars().next() {
            if let Some((op, word)) = OPERATORS.iter().find(|(op, _)| rest.starts_with(op)) {
                name.push_str(word);
                rest = &rest[op.len()..];
            } else {
                if !c.is_whitespace() {
                    let _ = write!(name, "U{:04X}", u32::from(c));
                }
                rest = &rest[c.len_utf8()..];
            }
        }
        if name.is_empty() {
            "Empty".to_owned()
        } else {
            name
        }
    } else if words.starts_with(|c: char| c.is_ascii_digit()) {
        format!("V{words}")
    } else {
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_that_are_not_identifiers_name_their_variants() {
        assert_eq!(variant("="), "Eq");
        assert_eq!(variant("!="), "Ne");
        assert_eq!(variant("=~"), "Re");
        assert_eq!(variant("!~"), "NotRe");
        assert_eq!(variant(">="), "Ge");
        assert_eq!(variant("<"), "Lt");
        assert_eq!(variant("=="), "Eq");
        assert_eq!(variant("<>"), "LtGt");
        assert_eq!(variant("\u{2264}"), "U2264");
        assert_eq!(variant(""), "Empty");
        assert_eq!(variant("5m"), "V5m");
        assert_eq!(variant("no_data"), "NoData");
    }

    #[test]
    fn an_enumeration_of_operators_gets_named_variants() {
        let mut code = String::from("use serde::{Deserialize, Serialize};\n");
        let values = json!(["=", "!=", "=~", "!~"]);
        string_enum(&mut code, "MatchOp", values.as_array().expect("array")).expect("generates");
        for (value, variant) in [("=", "Eq"), ("!=", "Ne"), ("=~", "Re"), ("!~", "NotRe")] {
            assert!(
                code.contains(&format!("#[serde(rename = \"{value}\")]\n{variant},")),
                "{code}"
            );
            assert!(
                code.contains(&format!("Self::{variant} => \"{value}\",")),
                "{code}"
            );
        }
        crate::format(&code).expect("rustfmt parses the generated code");
    }

    #[test]
    fn values_with_one_variant_name_are_refused() {
        let values = json!(["=", "=="]);
        let err = string_enum(&mut String::new(), "Cmp", values.as_array().expect("array"))
            .expect_err("two values named Eq");
        assert!(err.to_string().contains("Cmp"), "{err}");
    }
}
