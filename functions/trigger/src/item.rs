//! What a function handler receives and what it answers: [`Item`],
//! [`BatchOutcome`], and the [`Handler`] trait.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use time::OffsetDateTime;

/// One stream message handed to a function.
///
/// `(stream, sequence)` identifies it for ever: a redelivery (after a
/// failure, a crash, or a replay from the dead-letter stream) carries the
/// same pair, so a handler that remembers what it has applied by this key
/// never applies anything twice.
///
/// Cheap to make and to clone: the stream name is shared by the items of
/// one binding, the subject and the payload are reference-counted views
/// of the delivery, and the headers are moved out of it (none is copied
/// per item). Build the names from text with `.into()`
/// (`stream: "PLANTD_LOGS".into()`, `subject: "plantd.s.log.app".into()`).
#[derive(Debug, Clone)]
pub struct Item {
    /// The stream the message is stored in (e.g. `PLANTD_LOGS`).
    pub stream: Arc<str>,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// The subject it was published on (`as_str()`, or `&*` as a `&str`).
    pub subject: Subject,
    /// Its headers, as published (message id, MQTT topic, properties).
    pub headers: HeaderMap,
    /// Its payload, byte for byte.
    pub payload: Bytes,
    /// When the stream stored it.
    pub published: OffsetDateTime,
    /// Which delivery this is: 1 the first time, more after failures or
    /// crashes (JetStream's count).
    pub delivered: u64,
    /// `Some(dlq sequence)` when this delivery is an operator's replay of a
    /// parked item (`plantd dlq replay`), `None` for a stream delivery.
    pub replay: Option<u64>,
}

impl Item {
    /// The idempotency key: `(stream, sequence)`.
    pub fn key(&self) -> (&str, u64) {
        (&self.stream, self.sequence)
    }
}

/// What a handler made of a batch: every item succeeded unless listed as
/// failed (by its index in the batch), so a partial failure is expressible
/// — the successes are acknowledged, only the failures are retried.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Index in the batch → why that item failed.
    failures: BTreeMap<usize, String>,
}

impl BatchOutcome {
    /// Every item succeeded.
    pub fn success() -> Self {
        Self::default()
    }

    /// Every one of `len` items failed with `error` (the handler could not
    /// do anything, e.g. its store is down).
    pub fn all_failed(len: usize, error: impl Into<String>) -> Self {
        let error = error.into();
        Self {
            failures: (0..len).map(|i| (i, error.clone())).collect(),
        }
    }

    /// This outcome with item `index` failed with `error`.
    #[must_use]
    pub fn fail(mut self, index: usize, error: impl Into<String>) -> Self {
        self.record_failure(index, error);
        self
    }

    /// Marks item `index` as failed with `error` (the last error wins).
    pub fn record_failure(&mut self, index: usize, error: impl Into<String>) {
        self.failures.insert(index, error.into());
    }

    /// Why item `index` failed, or `None` when it succeeded.
    pub fn failure(&self, index: usize) -> Option<&str> {
        self.failures.get(&index).map(String::as_str)
    }

    /// The failed items, by index, in order.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &str)> {
        self.failures.iter().map(|(i, e)| (*i, e.as_str()))
    }

    /// True when no item failed.
    pub fn is_success(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A function's entry point for stream events.
///
/// The trigger calls `handle` with up to `batch_size` items in stream order
/// (redeliveries may come later than their successors). It acknowledges
/// every item the outcome does not list as failed, and retries the failed
/// ones with backoff; after `max_deliver` deliveries an item is parked in
/// `PLANTD_DLQ`. Delivery is at least once: an item may be handed over
/// again after a crash or a lost acknowledgement, so the handler must be
/// idempotent on [`Item::key`]. When a call panics, each of its items is
/// handed over again alone, so only the item that panics fails.
///
/// Implement it with `async fn handle(&self, batch: &[Item]) -> BatchOutcome`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one batch and says which items failed.
    fn handle(&self, batch: &[Item]) -> impl Future<Output = BatchOutcome> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_lists_only_failures() {
        let o = BatchOutcome::success().fail(2, "bad").fail(0, "worse");
        assert!(!o.is_success());
        assert_eq!(o.failure(1), None);
        assert_eq!(o.failure(2), Some("bad"));
        assert_eq!(
            o.failures().collect::<Vec<_>>(),
            vec![(0, "worse"), (2, "bad")]
        );
        assert_eq!(BatchOutcome::all_failed(3, "x").failures().count(), 3);
        assert!(BatchOutcome::success().is_success());
    }
}
