//! The compact form the [`crate::LogIndex`] keeps a record in, and the
//! borrowed [`View`] that filters read — of a stored row or of a
//! [`LogRecord`] alike, so both are judged by the same code.
//!
//! A [`Row`] is the record without its owned labels and with its text in
//! one allocation:
//! - **stream and source** are ids into the index's [`Labels`] (each
//!   distinct name is held once), the **site** is the queue the row sits
//!   in;
//! - **message, parse error and fields** are one `Box<str>`, the body:
//!   `len message`, `0` or `len+1 parse_error`, `count` and then per
//!   field `len key` and a value. A value is a [`Tag`] byte and its
//!   content: a number as a varint (`i64` zigzagged, `f64` by its bits), a
//!   string as `len text`, an array as `count` values, an object as
//!   `count` key–value pairs.
//!
//! Every structure byte is ASCII — varints carry 6 bits per byte, `0x40`
//! marking "more" — so the body is valid UTF-8 and its strings are read
//! as `&str` slices without a check of their bytes. A query decodes only
//! what it looks at; a returned record is rebuilt whole
//! ([`Row::to_record`]), equal to the one inserted.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use time::OffsetDateTime;

use crate::record::{Format, Level, LogRecord};

/// The kind of a packed value (its byte in the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Tag {
    Null = b'n',
    False = b'f',
    True = b't',
    /// A number that fits `u64`.
    U64 = b'u',
    /// A negative number that fits `i64`.
    I64 = b'i',
    /// Any other number.
    F64 = b'd',
    Str = b's',
    Array = b'a',
    Object = b'o',
}

impl Tag {
    fn from_byte(b: u8) -> Option<Self> {
        [
            Self::Null,
            Self::False,
            Self::True,
            Self::U64,
            Self::I64,
            Self::F64,
            Self::Str,
            Self::Array,
            Self::Object,
        ]
        .into_iter()
        .find(|t| *t as u8 == b)
    }
}

/// Data bits per varint byte; the next bit says "more".
const VARINT_BITS: u32 = 6;
const VARINT_MORE: u8 = 1 << VARINT_BITS;
const VARINT_MASK: u64 = (1 << VARINT_BITS) - 1;

fn put_varint(out: &mut String, mut n: u64) {
    loop {
        let b = (n & VARINT_MASK) as u8;
        n >>= VARINT_BITS;
        if n == 0 {
            out.push(char::from(b));
            return;
        }
        out.push(char::from(b | VARINT_MORE));
    }
}

fn put_text(out: &mut String, s: &str) {
    put_varint(out, s.len() as u64);
    out.push_str(s);
}

fn put_value(out: &mut String, v: &Value) {
    let tag = |out: &mut String, t: Tag| out.push(char::from(t as u8));
    match v {
        Value::Null => tag(out, Tag::Null),
        Value::Bool(false) => tag(out, Tag::False),
        Value::Bool(true) => tag(out, Tag::True),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                tag(out, Tag::U64);
                put_varint(out, u);
            } else if let Some(i) = n.as_i64() {
                tag(out, Tag::I64);
                put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
            } else {
                tag(out, Tag::F64);
                put_varint(out, n.as_f64().unwrap_or(0.0).to_bits());
            }
        }
        Value::String(s) => {
            tag(out, Tag::Str);
            put_text(out, s);
        }
        Value::Array(a) => {
            tag(out, Tag::Array);
            put_varint(out, a.len() as u64);
            for x in a {
                put_value(out, x);
            }
        }
        Value::Object(o) => {
            tag(out, Tag::Object);
            put_object(out, o);
        }
    }
}

fn put_object(out: &mut String, o: &Map<String, Value>) {
    put_varint(out, o.len() as u64);
    for (k, v) in o {
        put_text(out, k);
        put_value(out, v);
    }
}

/// Reads a body from a position. Every read returns `None` past the end
/// or on bytes we did not write (never, for a body of [`Row::new`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    s: &'a str,
    pos: usize,
}

/// One packed value, its content read when it is a scalar.
enum Packed<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(&'a str),
    /// An array of this many values (they follow).
    Array(u64),
    /// An object of this many pairs (they follow).
    Object(u64),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let b = *self.s.as_bytes().get(self.pos)?;
            self.pos += 1;
            if shift >= u64::BITS {
                return None;
            }
            n |= (u64::from(b) & VARINT_MASK) << shift;
            if b & VARINT_MORE == 0 {
                return Some(n);
            }
            shift += VARINT_BITS;
        }
    }

    fn text(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let t = self.s.get(self.pos..end)?;
        self.pos = end;
        Some(t)
    }

    fn value(&mut self) -> Option<Packed<'a>> {
        let tag = Tag::from_byte(*self.s.as_bytes().get(self.pos)?)?;
        self.pos += 1;
        Some(match tag {
            Tag::Null => Packed::Null,
            Tag::False => Packed::Bool(false),
            Tag::True => Packed::Bool(true),
            Tag::U64 => Packed::Num(Number::from(self.varint()?)),
            Tag::I64 => {
                let z = self.varint()?;
                Packed::Num(Number::from(((z >> 1) as i64) ^ -((z & 1) as i64)))
            }
            Tag::F64 => Packed::Num(Number::from_f64(f64::from_bits(self.varint()?))?),
            Tag::Str => Packed::Str(self.text()?),
            Tag::Array => Packed::Array(self.varint()?),
            Tag::Object => Packed::Object(self.varint()?),
        })
    }

    /// Reads past one value, nested ones included.
    fn skip_value(&mut self) -> Option<()> {
        match self.value()? {
            Packed::Array(n) => (0..n).try_for_each(|_| self.skip_value()),
            Packed::Object(n) => (0..n).try_for_each(|_| {
                self.text()?;
                self.skip_value()
            }),
            _ => Some(()),
        }
    }

    /// Whether the value here, or any value inside it, passes `hit`; the
    /// reader is past the value when it returns `Some(false)`.
    fn value_hits(&mut self, hit: &impl Fn(&str) -> bool) -> Option<bool> {
        Some(match self.value()? {
            Packed::Null => false,
            Packed::Bool(b) => hit(if b { "true" } else { "false" }),
            Packed::Num(n) => hit(&n.to_string()),
            Packed::Str(s) => hit(s),
            Packed::Array(n) => {
                for _ in 0..n {
                    if self.value_hits(hit)? {
                        return Some(true);
                    }
                }
                false
            }
            Packed::Object(n) => self.pairs_hit(n, hit)?,
        })
    }

    fn pairs_hit(&mut self, n: u64, hit: &impl Fn(&str) -> bool) -> Option<bool> {
        for _ in 0..n {
            self.text()?;
            if self.value_hits(hit)? {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Within an object of `n` pairs starting here: the reader at the
    /// value of `key`.
    fn find(mut self, n: u64, key: &str) -> Option<Self> {
        for _ in 0..n {
            if self.text()? == key {
                return Some(self);
            }
            self.skip_value()?;
        }
        None
    }

    fn decode(&mut self) -> Option<Value> {
        Some(match self.value()? {
            Packed::Null => Value::Null,
            Packed::Bool(b) => Value::Bool(b),
            Packed::Num(n) => Value::Number(n),
            Packed::Str(s) => Value::String(s.to_owned()),
            Packed::Array(n) => Value::Array((0..n).map(|_| self.decode()).collect::<Option<_>>()?),
            Packed::Object(n) => Value::Object(self.decode_pairs(n)?),
        })
    }

    fn decode_pairs(&mut self, n: u64) -> Option<Map<String, Value>> {
        (0..n)
            .map(|_| Some((self.text()?.to_owned(), self.decode()?)))
            .collect()
    }
}

/// A field's value as a filter compares it.
pub(crate) enum Got<'a> {
    /// A string (or a label's text).
    Str(&'a str),
    /// A number.
    Num(Number),
    /// A boolean.
    Bool(bool),
    /// Null, an array or an object: no text to compare.
    Other,
    /// No such field.
    Missing,
}

impl<'a> Got<'a> {
    fn of_json(v: &'a Value) -> Self {
        match v {
            Value::String(s) => Self::Str(s),
            Value::Number(n) => Self::Num(n.clone()),
            Value::Bool(b) => Self::Bool(*b),
            _ => Self::Other,
        }
    }

    fn of_packed(r: &mut Reader<'a>) -> Self {
        match r.value() {
            Some(Packed::Str(s)) => Self::Str(s),
            Some(Packed::Num(n)) => Self::Num(n),
            Some(Packed::Bool(b)) => Self::Bool(b),
            Some(_) => Self::Other,
            None => Self::Missing,
        }
    }
}

/// The fields of a record: a map, or packed in a row's body.
#[derive(Clone, Copy)]
pub(crate) enum Fields<'a> {
    Map(&'a Map<String, Value>),
    /// At the field count.
    Packed(Reader<'a>),
}

impl<'a> Fields<'a> {
    /// Whether any field value (nested ones included; numbers and booleans
    /// as their JSON text) passes `hit`.
    pub(crate) fn any_hits(self, hit: &impl Fn(&str) -> bool) -> bool {
        match self {
            Self::Map(m) => m.values().any(|v| json_hits(v, hit)),
            Self::Packed(mut r) => r
                .varint()
                .and_then(|n| r.pairs_hit(n, hit))
                .unwrap_or(false),
        }
    }

    /// The value of key `k`; a key not there with dots in it is a path
    /// into nested objects (`a.b`).
    pub(crate) fn lookup(self, k: &str) -> Got<'a> {
        match self {
            Self::Map(m) => {
                if let Some(v) = m.get(k) {
                    return Got::of_json(v);
                }
                let mut parts = k.split('.');
                let Some(first) = parts.next() else {
                    return Got::Missing;
                };
                let mut cur = m.get(first);
                for p in parts {
                    cur = cur.and_then(|v| v.get(p));
                }
                cur.map_or(Got::Missing, Got::of_json)
            }
            Self::Packed(mut r) => {
                let Some(n) = r.varint() else {
                    return Got::Missing;
                };
                if let Some(mut at) = r.find(n, k) {
                    return Got::of_packed(&mut at);
                }
                let mut parts = k.split('.');
                let Some(mut at) = parts.next().and_then(|first| r.find(n, first)) else {
                    return Got::Missing;
                };
                for p in parts {
                    let next = match at.value() {
                        Some(Packed::Object(n)) => at.find(n, p),
                        _ => None,
                    };
                    let Some(next) = next else {
                        return Got::Missing;
                    };
                    at = next;
                }
                Got::of_packed(&mut at)
            }
        }
    }
}

fn json_hits(v: &Value, hit: &impl Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => hit(s),
        Value::Number(n) => hit(&n.to_string()),
        Value::Bool(b) => hit(if *b { "true" } else { "false" }),
        Value::Null => false,
        Value::Array(a) => a.iter().any(|x| json_hits(x, hit)),
        Value::Object(o) => o.values().any(|x| json_hits(x, hit)),
    }
}

/// A record as filters read it: borrowed from a [`LogRecord`] or a [`Row`].
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) site: &'a str,
    pub(crate) source: &'a str,
    pub(crate) level: Level,
    pub(crate) format: Format,
    pub(crate) time: OffsetDateTime,
    pub(crate) message: &'a str,
    pub(crate) fields: Fields<'a>,
}

impl<'a> View<'a> {
    /// The view of a whole record.
    pub(crate) fn of(r: &'a LogRecord) -> Self {
        Self {
            site: &r.site,
            source: &r.source,
            level: r.level,
            format: r.format,
            time: r.time,
            message: &r.message,
            fields: Fields::Map(&r.fields),
        }
    }
}

/// Distinct names (streams, sources) held once, by id.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Labels {
    /// The id of `name`, added when new.
    pub(crate) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The name of `id` (empty for an id not given out).
    pub(crate) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }

    /// Names held.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Keeps only the names `rows` use and renumbers the rows' ids: the
    /// names of streams and sources whose every line was evicted are
    /// freed. Costs one pass over the rows.
    pub(crate) fn compact<'a>(&mut self, rows: impl Iterator<Item = &'a mut Row>) {
        let mut kept = Labels::default();
        let mut renumbered = vec![u32::MAX; self.names.len()];
        for row in rows {
            for id in [&mut row.stream, &mut row.source] {
                let Some(slot) = renumbered.get_mut(*id as usize) else {
                    continue;
                };
                if *slot == u32::MAX {
                    *slot = kept.id(self.name(*id));
                }
                *id = *slot;
            }
        }
        *self = kept;
    }
}

/// One stored record (module docs).
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) sequence: u64,
    pub(crate) time: OffsetDateTime,
    body: Box<str>,
    stream: u32,
    source: u32,
    pub(crate) level: Level,
    format: Format,
}

/// Heap and queue bytes a row takes besides its body: the row itself, its
/// entry in the eviction order, the body's allocation overhead.
pub(crate) const ROW_OVERHEAD: usize = std::mem::size_of::<Row>() + 4 + 16;

impl Row {
    /// Packs `r`, its stream and source named in `labels` (its site is
    /// the caller's). The body is packed in `scratch` (emptied first; kept
    /// by the caller for the next row) and then copied into an allocation
    /// of its exact size: one allocation per row, none grown or shrunk.
    pub(crate) fn new(r: &LogRecord, labels: &mut Labels, scratch: &mut String) -> Self {
        let body = scratch;
        body.clear();
        put_text(body, &r.message);
        match &r.parse_error {
            None => put_varint(body, 0),
            Some(e) => {
                put_varint(body, e.len() as u64 + 1);
                body.push_str(e);
            }
        }
        put_object(body, &r.fields);
        Self {
            sequence: r.sequence,
            time: r.time,
            body: Box::from(body.as_str()),
            stream: labels.id(&r.stream),
            source: labels.id(&r.source),
            level: r.level,
            format: r.format,
        }
    }

    /// The bytes it takes (counted against the index's byte bound).
    pub(crate) fn bytes(&self) -> usize {
        ROW_OVERHEAD + self.body.len()
    }

    /// Message, parse error, and a reader at the fields.
    fn parts(&self) -> (&str, Option<&str>, Reader<'_>) {
        let mut r = Reader {
            s: &self.body,
            pos: 0,
        };
        let message = r.text().unwrap_or_default();
        let parse_error = match r.varint() {
            Some(n) if n > 0 => {
                let start = r.pos;
                let end = start.saturating_add(n as usize - 1);
                r.pos = end;
                self.body.get(start..end)
            }
            _ => None,
        };
        (message, parse_error, r)
    }

    /// Its view, `site` being the queue it is in.
    pub(crate) fn view<'a>(&'a self, site: &'a str, labels: &'a Labels) -> View<'a> {
        let (message, _, fields) = self.parts();
        View {
            site,
            source: labels.name(self.source),
            level: self.level,
            format: self.format,
            time: self.time,
            message,
            fields: Fields::Packed(fields),
        }
    }

    /// The record it was made from.
    pub(crate) fn to_record(&self, site: &str, labels: &Labels) -> LogRecord {
        let (message, parse_error, mut r) = self.parts();
        let fields = r
            .varint()
            .and_then(|n| r.decode_pairs(n))
            .unwrap_or_default();
        LogRecord {
            stream: labels.name(self.stream).into(),
            sequence: self.sequence,
            time: self.time,
            site: site.into(),
            source: labels.name(self.source).into(),
            level: self.level,
            message: message.to_owned(),
            fields,
            format: self.format,
            parse_error: parse_error.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_gives_back_the_record_it_was_made_from() {
        let fields = json!({
            "big": u64::MAX, "neg": i64::MIN, "f": -81.5, "tiny": 5e-324, "zero": 0,
            "s": "ünïcode \u{1F600} \"quoted\"", "empty": "", "n": null, "t": true, "no": false,
            "a": [1, "x", [], {}, [null, {"deep": {"er": 2}}]],
            "o": {"k": {"l": "v"}, "": 1},
            "long": "x".repeat(5000),
        });
        let mut labels = Labels::default();
        for parse_error in [None, Some(String::new()), Some("invalid JSON: eof".into())] {
            let r = LogRecord {
                stream: "PLANTD_LOGS".into(),
                sequence: 42,
                time: OffsetDateTime::UNIX_EPOCH,
                site: "s1".into(),
                source: "line1/plc".into(),
                level: Level::Warn,
                message: "m".repeat(300),
                fields: fields.as_object().cloned().unwrap_or_default(),
                format: Format::Logfmt,
                parse_error,
            };
            let row = Row::new(&r, &mut labels, &mut String::new());
            assert_eq!(row.to_record("s1", &labels), r);
            assert!(row.bytes() < 300 + 5000 + 400, "{}", row.bytes());
        }
        assert_eq!(labels.len(), 2, "stream and source, once each");
    }
}
