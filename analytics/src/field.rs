//! [`FieldPath`]: which number (or text) of a payload a rule reads, and
//! [`Payload`]: one event's payload, parsed as JSON at most once and only
//! when a rule needs a field of it.
//!
//! The convention (SQL and JSON alike): `value` is the payload itself — a
//! number written as text (`21.5`), or a JSON number, or `true`/`false`
//! (1/0); `payload.a.b` is the field `b` of the object `a` of a JSON
//! payload. A level with dots or spaces is quoted in SQL:
//! `payload."temp.c"`; in JSON the path is a list: `["temp.c"]`.

use std::cell::OnceCell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which value of a payload a rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldPath {
    /// The whole payload as one number (`value`).
    Value,
    /// A field of a JSON payload, one name per level (`payload.a.b`).
    Json(Vec<String>),
}

impl FieldPath {
    /// The path as written in SQL: `value`, `payload.a.b`, `payload."t.c"`.
    pub fn sql(&self) -> String {
        match self {
            FieldPath::Value => "value".to_owned(),
            FieldPath::Json(levels) => {
                let mut out = String::from("payload");
                for level in levels {
                    out.push('.');
                    if level.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !level.is_empty()
                    {
                        out.push_str(level);
                    } else {
                        out.push('"');
                        out.push_str(&level.replace('"', "\"\""));
                        out.push('"');
                    }
                }
                out
            }
        }
    }

    /// A name for outputs: `value`, `payload_a_b`.
    pub fn slug(&self) -> String {
        match self {
            FieldPath::Value => "value".to_owned(),
            FieldPath::Json(levels) => {
                let mut out = String::from("payload");
                for level in levels {
                    out.push('_');
                    out.extend(
                        level
                            .chars()
                            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
                    );
                }
                out
            }
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql())
    }
}

/// JSON form: `"value"`, or `["a", "b"]` for `payload.a.b`.
impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldPath::Value => s.serialize_str("value"),
            FieldPath::Json(levels) => levels.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Levels(Vec<String>),
        }
        match Form::deserialize(d)? {
            Form::Text(t) if t == "value" => Ok(FieldPath::Value),
            Form::Text(t) => Err(serde::de::Error::custom(format!(
                "{t:?}: a field is \"value\" (the payload) or a list of JSON levels, e.g. [\"temp\", \"c\"]"
            ))),
            Form::Levels(levels) if levels.is_empty() => Err(serde::de::Error::custom(
                "a JSON field path needs at least one level",
            )),
            Form::Levels(levels) => Ok(FieldPath::Json(levels)),
        }
    }
}

/// One value read from a payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// A number (booleans read as 1 and 0).
    Num(f64),
    /// A string (distinct counts, keys, `=` conditions).
    Str(&'a str),
}

impl Scalar<'_> {
    /// The number, if it is one.
    pub fn num(self) -> Option<f64> {
        match self {
            Scalar::Num(n) => Some(n),
            Scalar::Str(_) => None,
        }
    }
}

/// One event's payload. The JSON tree is built on first use of a JSON path
/// and shared by every rule reading that event.
pub struct Payload<'a> {
    /// The raw bytes.
    raw: &'a [u8],
    /// `None` inside: not JSON.
    json: OnceCell<Option<serde_json::Value>>,
}

impl<'a> Payload<'a> {
    /// Wraps raw bytes; nothing is parsed yet.
    pub fn new(raw: &'a [u8]) -> Self {
        Self {
            raw,
            json: OnceCell::new(),
        }
    }

    fn tree(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.raw).ok())
            .as_ref()
    }

    /// The value at `path`, or `None` when the payload does not have one.
    pub fn get(&self, path: &FieldPath) -> Option<Scalar<'_>> {
        match path {
            FieldPath::Value => {
                // Fast path: a number as text, which is what sensors publish.
                let text = std::str::from_utf8(self.raw).ok()?.trim();
                if let Ok(n) = text.parse::<f64>() {
                    return n.is_finite().then_some(Scalar::Num(n));
                }
                scalar(self.tree()?)
            }
            FieldPath::Json(levels) => {
                let mut node = self.tree()?;
                for level in levels {
                    node = node.as_object()?.get(level)?;
                }
                scalar(node)
            }
        }
    }
}

fn scalar(node: &serde_json::Value) -> Option<Scalar<'_>> {
    match node {
        serde_json::Value::Number(n) => n.as_f64().filter(|n| n.is_finite()).map(Scalar::Num),
        serde_json::Value::Bool(b) => Some(Scalar::Num(if *b { 1.0 } else { 0.0 })),
        serde_json::Value::String(s) => Some(Scalar::Str(s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_and_json_paths() {
        let p = Payload::new(b" 21.5\n");
        assert_eq!(p.get(&FieldPath::Value), Some(Scalar::Num(21.5)));
        let j = Payload::new(br#"{"temp":{"c":20,"ok":true},"id":"m1"}"#);
        let path = FieldPath::Json(vec!["temp".into(), "c".into()]);
        assert_eq!(j.get(&path), Some(Scalar::Num(20.0)));
        assert_eq!(
            j.get(&FieldPath::Json(vec!["temp".into(), "ok".into()])),
            Some(Scalar::Num(1.0))
        );
        assert_eq!(
            j.get(&FieldPath::Json(vec!["id".into()])),
            Some(Scalar::Str("m1"))
        );
        assert_eq!(j.get(&FieldPath::Value), None);
        assert_eq!(path.sql(), "payload.temp.c");
        assert_eq!(FieldPath::Json(vec!["t.c".into()]).sql(), "payload.\"t.c\"");
    }
}
