//! `plantd-logger`: the logger function. It consumes `PLANTD_LOGS` through
//! the trigger and turns every line — plain text, JSON or logfmt — into a
//! [`LogRecord`]: time, site, source, level, message, fields. A line that
//! cannot be parsed is never dropped: it is kept as text with
//! [`LogRecord::parse_error`] set.
//!
//! | module | what it holds |
//! |---|---|
//! | [`record`] | [`LogRecord`], [`Level`], [`Format`] — the normalised shape |
//! | [`parse`] | subject, headers and payload → [`LogRecord`] (format detection, JSON, plain text) |
//! | `logfmt` | the logfmt tokenizer (`key=value key2="quoted value"`) |
//! | [`query`] | the filter language: [`parse_filter`] → [`Filter`], [`Filter::matches`] |
//! | [`handler`] | [`Logger`], the [`plantd_trigger::Handler`] keeping the newest records, idempotent on `(stream, sequence)` |
//!
//! Not built yet (issue 13): per-minute aggregates, the `/v1/logs` query API,
//! live tail, CloudWatch forwarding.

pub mod handler;
mod logfmt;
pub mod parse;
pub mod query;
pub mod record;

pub use handler::Logger;
pub use parse::parse;
pub use query::{Filter, FilterError, parse_filter};
pub use record::{Format, Level, LogRecord};

/// The function name the logger binds to the trigger with.
pub const FUNCTION: &str = "logger";
