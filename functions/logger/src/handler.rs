//! [`Logger`]: the trigger handler that parses every line of `PLANTD_LOGS`,
//! counts it in the per-minute aggregates exactly once
//! ([`crate::aggregate`]) and optionally keeps the newest records in memory.
//! Queries read the [`crate::index::LogIndex`], which follows the stream on
//! its own — or, in a process that runs both, is fed the records the
//! logger parsed ([`Logger::with_index`], [`crate::feed`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use plantd_shared::streams::LOGS;
use plantd_trigger::{BatchOutcome, Handler, Item};

use crate::aggregate::{Aggregates, Applying};
use crate::index::LogIndex;
use crate::parse::{Subjects, parse_with};
use crate::record::LogRecord;

/// Parses log items, applies them to the per-minute aggregates when given
/// some ([`Logger::with_aggregates`]), and keeps the newest `capacity`
/// records keyed by `(stream, sequence)`: a redelivered or replayed item
/// replaces its own record instead of adding a second one (idempotent).
#[derive(Debug)]
pub struct Logger {
    /// Records by `(stream, sequence)`, oldest first.
    records: Mutex<BTreeMap<(Arc<str>, u64), LogRecord>>,
    /// Most records kept; the oldest go first (0: none).
    capacity: usize,
    /// The previous batch's emptied record buffer, for the next batch (a
    /// batch of thousands of records is megabytes, fresh memory — page
    /// faults — when allocated per batch), and the subjects read so far.
    scratch: Mutex<(Vec<LogRecord>, Subjects)>,
    /// Where the per-minute aggregates go.
    aggregates: Option<Aggregates>,
    /// The index this process's queries read, fed every parsed batch.
    index: Option<Arc<LogIndex>>,
}

/// The logger's consumer settings: the trigger's defaults with batches of
/// [`BATCH_SIZE`] — the per-minute aggregates cost one compare-and-set per
/// key per batch, so bigger batches mean fewer writes per line (measured
/// in docs/performance.md, "Logs").
pub fn consumer_settings() -> plantd_trigger::ConsumerSettings {
    plantd_trigger::ConsumerSettings {
        batch_size: BATCH_SIZE,
        max_ack_pending: 10 * BATCH_SIZE as i64,
        ..plantd_trigger::ConsumerSettings::default()
    }
}

/// Items per batch the logger takes ([`consumer_settings`]).
pub const BATCH_SIZE: usize = 5000;

impl Logger {
    /// A logger keeping at most `capacity` records (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            records: Mutex::new(BTreeMap::new()),
            capacity,
            scratch: Mutex::new((Vec::new(), Subjects::default())),
            aggregates: None,
            index: None,
        }
    }

    /// Also offers every parsed batch to `index` (the one this process's
    /// `/v1/logs` reads), so its follower does not read and parse the same
    /// lines again: it only hydrates and fills gaps ([`crate::feed`]).
    pub fn with_index(mut self, index: Arc<LogIndex>) -> Self {
        index.attach_feeder();
        self.index = Some(index);
        self
    }

    /// Also counts every item in the per-minute aggregates, exactly once;
    /// the items of a key that cannot be written fail (and come again).
    pub fn with_aggregates(mut self, aggregates: Aggregates) -> Self {
        self.aggregates = Some(aggregates);
        self
    }

    /// The records kept, in stream order.
    pub fn records(&self) -> Vec<LogRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

impl Handler for Logger {
    /// Parsing never fails — a malformed line becomes a text record with
    /// `parse_error` — so an item fails only when its aggregate cannot be
    /// written.
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let (mut parsed, mut subjects) =
            std::mem::take(&mut *self.scratch.lock().unwrap_or_else(PoisonError::into_inner));
        parsed.clear();
        parsed.extend(batch.iter().map(|i| {
            parse_with(
                &mut subjects,
                &i.stream,
                i.sequence,
                &i.subject,
                &i.headers,
                &i.payload,
                i.published,
            )
        }));
        for r in &parsed {
            if let Some(why) = &r.parse_error {
                tracing::debug!(stream = %r.stream, stream_seq = r.sequence, site = %r.site, source = %r.source, error = %why, "log line kept as text");
            }
        }
        let mut outcome = BatchOutcome::success();
        if let Some(aggregates) = &self.aggregates {
            let applying: Vec<Applying<'_>> = parsed
                .iter()
                .enumerate()
                .map(|(index, record)| Applying { index, record })
                .collect();
            for (index, why) in aggregates.apply(&applying).await {
                outcome.record_failure(index, why);
            }
        }
        if self.capacity > 0 {
            let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
            for r in &parsed {
                records.insert((r.stream.clone(), r.sequence), r.clone());
            }
            while records.len() > self.capacity {
                records.pop_first();
            }
        }
        if let Some(index) = &self.index {
            // Replays are not in stream order; the index already has them
            // (or its follower brings them).
            if batch.iter().all(|i| i.replay.is_none()) {
                index.offer_refs(parsed.iter().filter(|r| &*r.stream == LOGS));
            }
        }
        parsed.clear();
        *self.scratch.lock().unwrap_or_else(PoisonError::into_inner) = (parsed, subjects);
        outcome
    }
}
