//! Log conditions' matching: one place that turns a rule's `match` text
//! into the log filter of `plantd_logger::query` and a stream item into a
//! [`LogRecord`] (`plantd_logger::parse`).

use plantd_logger::LogRecord;
use plantd_logger::query::{Filter, parse_filter};
use plantd_trigger::Item;

/// A compiled log filter.
#[derive(Clone)]
pub struct LogMatcher(Filter);

impl std::fmt::Debug for LogMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogMatcher({:?})", self.0.text())
    }
}

impl LogMatcher {
    /// Parses the filter text.
    ///
    /// # Errors
    /// The filter's error (position, token, reason) as text.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_filter(text).map(Self).map_err(|e| e.to_string())
    }

    /// Whether `record` matches.
    pub fn matches(&self, record: &LogRecord) -> bool {
        self.0.matches(record)
    }
}

/// The log record of a `PLANTD_LOGS` item (never fails: a line that
/// cannot be parsed is kept as text with `parse_error`).
pub fn record(item: &Item) -> LogRecord {
    plantd_logger::parse(
        &item.stream,
        item.sequence,
        &item.subject,
        &item.headers,
        &item.payload,
        item.published,
    )
}
