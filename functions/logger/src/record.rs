//! The normalised log record.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Severity, lowest first (so `level >= Level::Warn` filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Tracing detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (also what a line without a level gets).
    Info,
    /// Something to look at.
    Warn,
    /// Something failed.
    Error,
    /// The program cannot go on.
    Fatal,
}

impl Level {
    /// Reads a level name as programs write it, any case: `trace`,
    /// `debug`/`dbg`, `info`/`information`/`notice`, `warn`/`warning`,
    /// `error`/`err`, `fatal`/`critical`/`crit`/`panic`/`emerg`/`alert`,
    /// and syslog numbers 0–7.
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase();
        Some(match n.as_str() {
            "trace" | "7" => Self::Trace,
            "debug" | "dbg" => Self::Debug,
            "info" | "information" | "informational" | "notice" | "6" | "5" => Self::Info,
            "warn" | "warning" | "4" => Self::Warn,
            "error" | "err" | "3" => Self::Error,
            "fatal" | "critical" | "crit" | "panic" | "emerg" | "emergency" | "alert" | "0"
            | "1" | "2" => Self::Fatal,
            _ => return None,
        })
    }

    /// The lowercase name (`warn`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Fatal => "fatal",
        }
    }
}

/// How the line was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON object.
    Json,
    /// `key=value` pairs.
    Logfmt,
    /// Anything else (and every line that failed to parse).
    Text,
}

/// One log line, normalised.
///
/// Stream, site and source are shared text (`Arc<str>`): the lines of one
/// source share one copy of each instead of three allocations per line.
/// Build them with `.into()`; they read as `&str` (`&*r.site`,
/// `r.site.as_ref()`). The JSON shape is plain strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// The stream it came from (with `sequence`, its identity).
    pub stream: Arc<str>,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// When it happened: the line's own time if it has one, else when the
    /// edge received it, else when the stream stored it.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The site it came from.
    pub site: Arc<str>,
    /// Its source: the MQTT topic after `$plantd/log/` as the subject
    /// carries it (e.g. `line1/plc`).
    pub source: Arc<str>,
    /// Its severity (`info` when the line says none).
    pub level: Level,
    /// The message text (the whole line for a malformed one).
    pub message: String,
    /// Every other key of a JSON or logfmt line (values as JSON; logfmt
    /// values are strings, a bare key is `true`).
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// How the line was written.
    pub format: Format,
    /// Why the line could not be parsed as the format it looked like; it is
    /// then kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}
