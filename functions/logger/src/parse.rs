//! Subject, headers and payload → [`LogRecord`].
//!
//! - **Site and source** come from the subject `plantd.<site>.log.<tokens>`
//!   (tokens decoded back to the MQTT topic, e.g. `line1/plc`).
//! - **Format**: a line starting with `{` is JSON (an object); one whose
//!   first token is `key=value` is logfmt; anything else is plain text.
//! - **Well-known keys** of JSON and logfmt lines: time `time`/`ts`/
//!   `timestamp`/`@timestamp` (RFC 3339, or Unix seconds or milliseconds),
//!   level `level`/`lvl`/`severity`, message `msg`/`message`. Every other
//!   key goes to `fields`; a time or level that cannot be read stays in
//!   `fields` under its own key.
//! - **Plain text**: an optional leading RFC 3339 time, then an optional
//!   level word (`ERROR`, `[warn]`, `Info:`), then the message.
//! - **Level** when the line has none: MQTT 5 user property `level`
//!   (header `Plantd-User-level`), else `info`.
//! - **Time** when the line has none: the edge's `Plantd-Received`, else
//!   when the stream stored the item.
//! - **Malformed** (not UTF-8, a `{` line that is not a JSON object, a
//!   logfmt line that breaks): kept whole as a text message with
//!   `parse_error` saying why — never dropped.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_nats::header::IntoHeaderName as _;
use async_nats::{HeaderMap, HeaderName};
use plantd_shared::{headers, subject};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::logfmt::{self, LogfmtError};
use crate::record::{Format, Level, LogRecord};

const TIME_KEYS: [&str; 4] = ["time", "ts", "timestamp", "@timestamp"];
const LEVEL_KEYS: [&str; 3] = ["level", "lvl", "severity"];
const MESSAGE_KEYS: [&str; 2] = ["msg", "message"];

/// The header of MQTT 5 user property `level`, named once (a name looked
/// up as text is copied into a new `HeaderName` on every lookup; a clone
/// of this one shares its bytes).
static LEVEL_HEADER: LazyLock<HeaderName> =
    LazyLock::new(|| headers::user_property("level").into_header_name());

/// A header name looked up per line, made without allocating (a `&str`
/// key is copied into a new name on every lookup).
fn header_name(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// What the line itself said.
struct Parsed {
    time: Option<OffsetDateTime>,
    level: Option<Level>,
    message: String,
    fields: Map<String, Value>,
    format: Format,
    parse_error: Option<String>,
}

impl Parsed {
    fn malformed(text: String, why: String) -> Self {
        Self {
            time: None,
            level: None,
            message: text,
            fields: Map::new(),
            format: Format::Text,
            parse_error: Some(why),
        }
    }
}

/// Site, source, and why the subject could not be read.
type SubjectLabels = (Arc<str>, Arc<str>, Option<String>);

fn subject_labels(subject_name: &str) -> SubjectLabels {
    match subject::subject_to_topic(subject_name) {
        Ok(p) => (p.site.as_str().into(), p.topic.into_string().into(), None),
        Err(e) => (
            "".into(),
            subject_name.into(),
            Some(format!("subject {subject_name}: {e}")),
        ),
    }
}

/// The labels of subjects already read, so the lines of one source decode
/// their subject once, not once per line ([`parse_with`]).
#[derive(Debug, Default)]
pub(crate) struct Subjects(HashMap<String, SubjectLabels>);

impl Subjects {
    /// Most subjects remembered; past it they are forgotten at once.
    const MAX: usize = 4096;

    fn labels(&mut self, subject_name: &str) -> SubjectLabels {
        if let Some(known) = self.0.get(subject_name) {
            return known.clone();
        }
        let labels = subject_labels(subject_name);
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(subject_name.to_owned(), labels.clone());
        labels
    }
}

/// Normalises one stream item into a [`LogRecord`]. Never fails: what
/// cannot be parsed is kept as text with `parse_error` set.
pub fn parse(
    stream: &str,
    sequence: u64,
    subject_name: &str,
    headers: &HeaderMap,
    payload: &[u8],
    stored: OffsetDateTime,
) -> LogRecord {
    labelled(
        subject_labels(subject_name),
        stream.into(),
        sequence,
        headers,
        payload,
        stored,
    )
}

/// [`parse`], the subject read through `subjects`, the stream name shared.
pub(crate) fn parse_with(
    subjects: &mut Subjects,
    stream: &Arc<str>,
    sequence: u64,
    subject_name: &str,
    headers: &HeaderMap,
    payload: &[u8],
    stored: OffsetDateTime,
) -> LogRecord {
    labelled(
        subjects.labels(subject_name),
        stream.clone(),
        sequence,
        headers,
        payload,
        stored,
    )
}

fn labelled(
    (site, source, subject_error): SubjectLabels,
    stream: Arc<str>,
    sequence: u64,
    headers: &HeaderMap,
    payload: &[u8],
    stored: OffsetDateTime,
) -> LogRecord {
    let parsed = match std::str::from_utf8(payload) {
        Ok(text) => parse_line(text.trim_end_matches(['\n', '\r'])),
        Err(e) => Parsed::malformed(
            String::from_utf8_lossy(payload).into_owned(),
            format!("not UTF-8: {e}"),
        ),
    };
    let header_level = headers
        .get(LEVEL_HEADER.clone())
        .and_then(|v| Level::from_name(v.as_str()));
    let received = headers
        .get(header_name(headers::RECEIVED))
        .and_then(|v| OffsetDateTime::parse(v.as_str(), &Rfc3339).ok());
    LogRecord {
        stream,
        sequence,
        time: parsed.time.or(received).unwrap_or(stored),
        site,
        source,
        level: parsed.level.or(header_level).unwrap_or(Level::Info),
        message: parsed.message,
        fields: parsed.fields,
        format: parsed.format,
        parse_error: parsed.parse_error.or(subject_error),
    }
}

fn parse_line(line: &str) -> Parsed {
    let trimmed = line.trim_start();
    if trimmed.starts_with('{') {
        return match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(map)) => structured(map, Format::Json),
            Ok(_) => Parsed::malformed(line.to_owned(), "JSON line is not an object".into()),
            Err(e) => Parsed::malformed(line.to_owned(), format!("invalid JSON: {e}")),
        };
    }
    match logfmt::pairs(trimmed) {
        Ok(pairs) => {
            let map = pairs
                .into_iter()
                .map(|(k, v)| (k, v.map_or(Value::Bool(true), Value::String)))
                .collect();
            structured(map, Format::Logfmt)
        }
        Err(LogfmtError::Broken(why)) => {
            Parsed::malformed(line.to_owned(), format!("invalid logfmt: {why}"))
        }
        Err(LogfmtError::NotLogfmt) => plain(line),
    }
}

/// Takes the well-known keys out of a JSON object or logfmt pairs.
fn structured(mut fields: Map<String, Value>, format: Format) -> Parsed {
    let mut time = None;
    for key in TIME_KEYS {
        if let Some(t) = fields.get(key).and_then(time_of) {
            time = Some(t);
            fields.remove(key);
            break;
        }
    }
    let mut level = None;
    for key in LEVEL_KEYS {
        if let Some(l) = fields
            .get(key)
            .and_then(Value::as_str)
            .and_then(Level::from_name)
        {
            level = Some(l);
            fields.remove(key);
            break;
        }
    }
    let mut message = String::new();
    for key in MESSAGE_KEYS {
        if matches!(fields.get(key), Some(Value::String(_))) {
            if let Some(Value::String(m)) = fields.remove(key) {
                message = m;
            }
            break;
        }
    }
    Parsed {
        time,
        level,
        message,
        fields,
        format,
        parse_error: None,
    }
}

/// A time value: RFC 3339 text, or Unix seconds / milliseconds (a number
/// or numeric text; above 10^11 it is milliseconds).
fn time_of(v: &Value) -> Option<OffsetDateTime> {
    let number = match v {
        Value::String(s) => {
            if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
                return Some(t);
            }
            s.parse::<f64>().ok()?
        }
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    let nanos = if number > 1e11 {
        number * 1e6
    } else {
        number * 1e9
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos as i128).ok()
}

/// Plain text: `[<RFC 3339 time>] [<level>] <message>`.
fn plain(line: &str) -> Parsed {
    let mut rest = line.trim_start();
    let mut time = None;
    if let Some((first, after)) = rest.split_once(char::is_whitespace)
        && let Ok(t) = OffsetDateTime::parse(first, &Rfc3339)
    {
        time = Some(t);
        rest = after.trim_start();
    }
    let mut level = None;
    if let Some(first) = rest.split(char::is_whitespace).next() {
        let word = first
            .trim_start_matches(['[', '<', '('])
            .trim_end_matches([']', '>', ')', ':']);
        // Only a word that was written as a level: all capitals, or
        // bracketed / followed by a colon, so "error counts reset" stays a
        // message.
        let marked = first != word || word.chars().all(|c| c.is_ascii_uppercase());
        if marked && let Some(l) = Level::from_name(word) {
            level = Some(l);
            rest = rest[first.len()..].trim_start();
        }
    }
    Parsed {
        time,
        level,
        message: rest.to_owned(),
        fields: Map::new(),
        format: Format::Text,
        parse_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).expect("time")
    }

    fn record(payload: &[u8]) -> LogRecord {
        parse(
            "PLANTD_LOGS",
            7,
            "plantd.site1.log.line1.plc",
            &HeaderMap::new(),
            payload,
            at("2026-12-06T10:00:00Z"),
        )
    }

    #[test]
    fn json_lines_give_their_known_keys_and_keep_the_rest() {
        let r = record(
            br#"{"ts":"2026-12-06T09:59:58.5Z","level":"ERROR","msg":"overheat","temp":81.5,"zone":"a"}"#,
        );
        assert_eq!(r.format, Format::Json);
        assert_eq!(r.time, at("2026-12-06T09:59:58.5Z"));
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.message, "overheat");
        assert_eq!(r.fields["temp"], serde_json::json!(81.5));
        assert_eq!(r.fields["zone"], "a");
        assert!(!r.fields.contains_key("msg"));
        assert_eq!((&*r.site, &*r.source), ("site1", "line1/plc"));
        assert_eq!((&*r.stream, r.sequence), ("PLANTD_LOGS", 7));
        assert_eq!(r.parse_error, None);
        let epoch = record(br#"{"time":1765015200123,"message":"m"}"#);
        assert_eq!(epoch.time.unix_timestamp(), 1_765_015_200);
        assert_eq!(epoch.level, Level::Info);
    }

    #[test]
    fn logfmt_lines_are_pairs() {
        let r = record(br#"time=2026-12-06T09:00:00Z lvl=warn msg="valve 3 stuck" valve=3 manual"#);
        assert_eq!(r.format, Format::Logfmt);
        assert_eq!(r.time, at("2026-12-06T09:00:00Z"));
        assert_eq!(r.level, Level::Warn);
        assert_eq!(r.message, "valve 3 stuck");
        assert_eq!(r.fields["valve"], "3");
        assert_eq!(r.fields["manual"], true);
    }

    #[test]
    fn plain_text_takes_a_leading_time_and_level() {
        let r = record(b"2026-12-06T08:00:00Z [ERROR] pump 2 tripped\n");
        assert_eq!(r.format, Format::Text);
        assert_eq!(r.time, at("2026-12-06T08:00:00Z"));
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.message, "pump 2 tripped");
        let r = record(b"WARN: low pressure");
        assert_eq!((r.level, r.message.as_str()), (Level::Warn, "low pressure"));
        let r = record(b"error counts reset");
        assert_eq!(
            (r.level, r.message.as_str()),
            (Level::Info, "error counts reset")
        );
        assert_eq!(r.time, at("2026-12-06T10:00:00Z"), "the stream's time");
    }

    #[test]
    fn malformed_lines_are_kept_as_text_with_the_reason() {
        for (payload, why) in [
            (&b"{\"msg\": \"cut off"[..], "invalid JSON"),
            (&b"[1,2]"[..], ""),
            (&b"{\"a\":1} trailing"[..], "invalid JSON"),
            (&b"msg=\"never closed"[..], "invalid logfmt"),
            (&b"\xff\xfe broken"[..], "not UTF-8"),
            (&b"[\"x\"]"[..], ""),
        ] {
            let r = record(payload);
            assert_eq!(r.format, Format::Text, "{payload:?}");
            if why.is_empty() {
                continue;
            }
            let err = r.parse_error.clone().unwrap_or_default();
            assert!(err.starts_with(why), "{payload:?}: {err}");
            assert!(!r.message.is_empty(), "kept: {payload:?}");
        }
        let r = record(b"42");
        assert_eq!((r.format, r.parse_error), (Format::Text, None));
        let r = record(b"{\"not\":\"obj\"");
        assert_eq!(r.message, "{\"not\":\"obj\"");
    }

    #[test]
    fn header_level_and_received_time_fill_gaps() {
        let mut h = HeaderMap::new();
        h.insert(headers::user_property("level").as_str(), "warning");
        h.insert(headers::RECEIVED, "2026-12-06T09:30:00.000Z");
        let r = parse(
            "PLANTD_LOGS",
            1,
            "plantd.s.log.app",
            &h,
            b"disk 91% full",
            at("2026-12-06T10:00:00Z"),
        );
        assert_eq!(r.level, Level::Warn);
        assert_eq!(r.time, at("2026-12-06T09:30:00Z"));
        assert_eq!(&*r.source, "app");
        assert_eq!(LEVEL_HEADER.to_string(), headers::user_property("level"));
    }
}
