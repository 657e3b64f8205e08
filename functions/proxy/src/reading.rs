//! A number out of a telemetry payload, without allocating: the whole
//! payload as a number (`21.5`, `"-3e2"` is not one), or the number at a
//! JSON field path (`field=a.b`, `values.0` for an array element).
//!
//! Used by the downsampled series ([`crate::routes::series`]); a payload
//! that gives no finite number is skipped and counted there.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Most segments a field path may have.
pub const MAX_DEPTH: usize = 16;

/// A validated JSON field path: segments separated by `.`, each a key
/// (or, for an array, an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
}

/// Why a field path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    /// `a..b`, `.a`, `a.` or an empty path.
    #[error("field path {0:?} has an empty segment (write a.b)")]
    EmptySegment(String),
    /// More than [`MAX_DEPTH`] segments.
    #[error("field path {0:?} is deeper than {MAX_DEPTH} segments")]
    TooDeep(String),
}

impl FieldPath {
    /// Validates `text`.
    ///
    /// # Errors
    /// [`FieldPathError`].
    pub fn new(text: &str) -> Result<Self, FieldPathError> {
        if text.split('.').any(str::is_empty) {
            return Err(FieldPathError::EmptySegment(text.to_owned()));
        }
        if text.split('.').count() > MAX_DEPTH {
            return Err(FieldPathError::TooDeep(text.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The finite number `payload` holds: the whole payload (surrounding
/// white space allowed) when `field` is `None`, else the JSON number at
/// `field`. `None` for anything else (text, JSON that is not a number
/// there, bytes that are not UTF-8, NaN and infinities).
pub fn number(payload: &[u8], field: Option<&FieldPath>) -> Option<f64> {
    let v = match field {
        None => std::str::from_utf8(payload)
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            // Rust also parses "inf", "NaN": not numbers a chart can draw.
            .filter(|v| v.is_finite())?,
        Some(path) => {
            let mut de = serde_json::Deserializer::from_slice(payload);
            let v = Walk(path.as_str().split('.')).deserialize(&mut de).ok()??;
            de.end().ok()?;
            v
        }
    };
    v.is_finite().then_some(v)
}

/// Walks the remaining segments of a path; yields the number at its end.
struct Walk<'p>(std::str::Split<'p, char>);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some(want) = self.0.next() else {
            drain_map(&mut map)?;
            return Ok(None);
        };
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(want))? {
            if hit && found.is_none() {
                found = map.next_value_seed(Walk(self.0.clone()))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
        let index = self.0.next().and_then(|s| s.parse::<usize>().ok());
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(Walk(self.0.clone()))? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<Self::Value, E> {
        Ok(self.0.next().is_none().then_some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn drain_map<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Whether a map key equals the wanted segment, read without copying it
/// (an escaped key arrives as a transient `&str`, still no copy kept).
struct KeyIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(payload: &str, path: &str) -> Option<f64> {
        number(
            payload.as_bytes(),
            Some(&FieldPath::new(path).expect("path")),
        )
    }

    #[test]
    fn a_whole_payload_number() {
        assert_eq!(number(b"21.5", None), Some(21.5));
        assert_eq!(number(b" -3e2\n", None), Some(-300.0));
        assert_eq!(number(b"7", None), Some(7.0));
        for not in [
            &b"on"[..],
            b"",
            b"NaN",
            b"inf",
            b"\"1\"",
            b"{\"v\":1}",
            &[0xff, 0x31],
        ] {
            assert_eq!(number(not, None), None, "{not:?}");
        }
    }

    #[test]
    fn a_number_at_a_field_path() {
        let doc = r#"{"a": {"skip": [1, {"b": 2}], "b": 4.25, "c": "x"}, "values": [10, 20.5]}"#;
        assert_eq!(at(doc, "a.b"), Some(4.25));
        assert_eq!(at(doc, "values.1"), Some(20.5));
        assert_eq!(at(doc, "a.skip.1.b"), Some(2.0));
        assert_eq!(at(doc, "a.c"), None, "a string");
        assert_eq!(at(doc, "a"), None, "an object");
        assert_eq!(at(doc, "a.b.c"), None, "past a number");
        assert_eq!(at(doc, "nope"), None);
        assert_eq!(at(doc, "values.2"), None);
        assert_eq!(at(r#"{"a\u0062": 1}"#, "ab"), Some(1.0), "escaped key");
        assert_eq!(at(r#"{"a": 1} trailing"#, "a"), None, "not JSON");
        assert_eq!(at("21.5", "a"), None);
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", ".a", "a.", "a..b"] {
            assert!(matches!(
                FieldPath::new(bad),
                Err(FieldPathError::EmptySegment(_))
            ));
        }
        assert!(FieldPath::new(&["a"; 17].join(".")).is_err());
        assert!(FieldPath::new(&["a"; 16].join(".")).is_ok());
    }
}
