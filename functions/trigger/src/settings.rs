//! How one function consumes one stream: batch size and wait, retries and
//! backoff, when a consumer counts as stuck — and the names derived from
//! the (function, stream) pair.

use std::time::Duration;

use thiserror::Error;

/// Tunables of one (function, stream) consumer. `Default` is what
/// `plantd up` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSettings {
    /// Most items handed to the handler at once.
    pub batch_size: usize,
    /// Longest wait for a batch to fill: a batch is handed over when it is
    /// full or this has passed since the previous batch was handed over,
    /// whichever is first (bounds the latency an item waits for company;
    /// an item arriving after a quiet spell goes at once).
    pub max_wait: Duration,
    /// Deliveries before a failing item is parked in `PLANTD_DLQ` (the
    /// first delivery counts; at least 1).
    pub max_deliver: u32,
    /// Delay before redelivering a failed item, by delivery: the first
    /// failure waits `backoff[0]`, the second `backoff[1]`, …, the last
    /// entry repeats. Empty redelivers at once.
    pub backoff: Vec<Duration>,
    /// How long JetStream waits for an acknowledgement before redelivering
    /// (after a crash). While a handler runs, the trigger extends it every
    /// half of this, so a slow handler is not raced by a redelivery.
    pub ack_wait: Duration,
    /// Most items delivered and not yet acknowledged (including failed
    /// items waiting for their retry); JetStream stops delivering beyond it.
    pub max_ack_pending: i64,
    /// Only these subjects of the stream (empty: all of them).
    pub filter_subjects: Vec<String>,
    /// A consumer with pending items that completed none (acknowledged or
    /// parked) for this long is reported stuck. Keep it above the longest
    /// backoff, or an item waiting for its retry counts as stuck.
    pub stuck_after: Duration,
    /// How often the consumer's lag, the DLQ depth and the rate are read.
    pub watch_interval: Duration,
    /// How a batch's items are acknowledged.
    pub ack: AckMode,
}

/// How the trigger acknowledges the items a handler succeeded on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AckMode {
    /// Each item on its own (JetStream `AckPolicy::Explicit`): right for
    /// every handler.
    #[default]
    Each,
    /// One acknowledgement per batch, of the highest sequence the handler
    /// succeeded on; JetStream (`AckPolicy::All`) acknowledges every lower
    /// sequence with it, which halves nats-server's work per item
    /// (docs/performance.md, "Analytics end to end"; decision 0064).
    ///
    /// Only for a handler that succeeds on an item only once every lower
    /// sequence of the consumer is done — applied, or acknowledged before
    /// — like analytics, which admits items in stream order. Failed items
    /// are retried one by one as with [`AckMode::Each`]; an item is parked
    /// only once it is the lowest one pending (parking terminates it, which
    /// acknowledges every lower sequence too).
    Cumulative,
}

impl AckMode {
    /// The JetStream policy of a consumer acknowledged this way.
    pub fn policy(self) -> async_nats::jetstream::consumer::AckPolicy {
        match self {
            Self::Each => async_nats::jetstream::consumer::AckPolicy::Explicit,
            Self::Cumulative => async_nats::jetstream::consumer::AckPolicy::All,
        }
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            max_wait: Duration::from_millis(50),
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(60),
            ],
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            filter_subjects: Vec::new(),
            stuck_after: Duration::from_secs(120),
            watch_interval: Duration::from_secs(1),
            ack: AckMode::Each,
        }
    }
}

impl ConsumerSettings {
    /// The delay before the redelivery that follows delivery number
    /// `delivered` (1-based) failed.
    pub fn backoff_after(&self, delivered: u64) -> Duration {
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(i)
            .or_else(|| self.backoff.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// Checks the settings make sense together.
    ///
    /// # Errors
    /// [`SettingsError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.batch_size == 0 {
            return Err(SettingsError::new("batch_size", "must be at least 1"));
        }
        if self.max_wait < Duration::from_millis(1) {
            return Err(SettingsError::new("max_wait", "must be at least 1 ms"));
        }
        if self.max_deliver == 0 {
            return Err(SettingsError::new("max_deliver", "must be at least 1"));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return Err(SettingsError::new("ack_wait", "must be at least 100 ms"));
        }
        let batch = i64::try_from(self.batch_size).unwrap_or(i64::MAX);
        if self.max_ack_pending < batch {
            return Err(SettingsError::new(
                "max_ack_pending",
                "must be at least batch_size",
            ));
        }
        if self.watch_interval.is_zero() {
            return Err(SettingsError::new("watch_interval", "must not be zero"));
        }
        if self.stuck_after.is_zero() {
            return Err(SettingsError::new("stuck_after", "must not be zero"));
        }
        Ok(())
    }
}

/// A setting that makes no sense, naming the field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("trigger setting {field}: {reason}")]
pub struct SettingsError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SettingsError {
    fn new(field: &'static str, reason: &str) -> Self {
        Self {
            field,
            reason: reason.to_owned(),
        }
    }
}

/// Why a function or stream name cannot name a consumer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Function names are lowercase letters, digits and `-`, 1–32 long.
    #[error("function name {0:?}: use 1-32 lowercase letters, digits or '-'")]
    Function(String),
    /// Stream names are letters, digits, `_` and `-`, 1–64 long.
    #[error("stream name {0:?}: use 1-64 letters, digits, '_' or '-'")]
    Stream(String),
}

/// The durable consumer name of `function` on `stream`:
/// `<function>_<stream>`, e.g. `logger_PLANTD_LOGS`. A function name has no
/// `_`, so the first `_` splits the name back unambiguously; the name is
/// also the last token of the function's dead-letter subject.
///
/// # Errors
/// [`NameError`] when either name has characters a durable name or a
/// subject token cannot carry.
pub fn durable_name(function: &str, stream: &str) -> Result<String, NameError> {
    let function_ok = (1..=32).contains(&function.len())
        && function
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !function_ok {
        return Err(NameError::Function(function.to_owned()));
    }
    let stream_ok = (1..=64).contains(&stream.len())
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !stream_ok {
        return Err(NameError::Stream(stream.to_owned()));
    }
    Ok(format!("{function}_{stream}"))
}

/// `(function, stream)` of a durable name made by [`durable_name`].
pub fn split_durable(durable: &str) -> Option<(&str, &str)> {
    let (function, stream) = durable.split_once('_')?;
    durable_name(function, stream).ok()?;
    Some((function, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_round_trip_and_refuse_bad_tokens() {
        let d = durable_name("logger", "PLANTD_LOGS").expect("valid");
        assert_eq!(d, "logger_PLANTD_LOGS");
        assert_eq!(split_durable(&d), Some(("logger", "PLANTD_LOGS")));
        for bad in ["", "Logger", "log.ger", "log ger", "a_b", "log*", "x>"] {
            assert!(durable_name(bad, "S").is_err(), "{bad:?}");
        }
        for bad in ["", "A.B", "A B", "A*", "A>"] {
            assert!(durable_name("f", bad).is_err(), "{bad:?}");
        }
        assert_eq!(split_durable("nounderscore"), None);
    }

    #[test]
    fn backoff_repeats_its_last_step() {
        let s = ConsumerSettings {
            backoff: vec![Duration::from_millis(10), Duration::from_millis(20)],
            ..ConsumerSettings::default()
        };
        assert_eq!(s.backoff_after(1), Duration::from_millis(10));
        assert_eq!(s.backoff_after(2), Duration::from_millis(20));
        assert_eq!(s.backoff_after(9), Duration::from_millis(20));
        let none = ConsumerSettings {
            backoff: vec![],
            ..ConsumerSettings::default()
        };
        assert_eq!(none.backoff_after(1), Duration::ZERO);
    }

    #[test]
    fn validation_names_the_field() {
        let bad = ConsumerSettings {
            batch_size: 0,
            ..ConsumerSettings::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.field), Err("batch_size"));
        let bad = ConsumerSettings {
            max_ack_pending: 10,
            ..ConsumerSettings::default()
        };
        assert_eq!(bad.validate().map_err(|e| e.field), Err("max_ack_pending"));
        assert_eq!(ConsumerSettings::default().validate(), Ok(()));
    }
}
