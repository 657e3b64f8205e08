//! [`Logger`]: the trigger handler that parses every line of `PLANTD_LOGS`
//! and keeps the newest records (the query API and aggregates will read
//! them from a store; issue 13).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use plantd_trigger::{BatchOutcome, Handler, Item};

use crate::parse::parse;
use crate::record::LogRecord;

/// Parses log items and keeps the newest `capacity` records, keyed by
/// `(stream, sequence)`: a redelivered or replayed item replaces its own
/// record instead of adding a second one (idempotent).
#[derive(Debug)]
pub struct Logger {
    /// Records by `(stream, sequence)`, oldest first.
    records: Mutex<BTreeMap<(String, u64), LogRecord>>,
    /// Most records kept; the oldest go first.
    capacity: usize,
}

impl Logger {
    /// A logger keeping at most `capacity` records (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            records: Mutex::new(BTreeMap::new()),
            capacity: capacity.max(1),
        }
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
    /// `parse_error` — so every item succeeds.
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let parsed: Vec<LogRecord> = batch
            .iter()
            .map(|i| {
                parse(
                    &i.stream,
                    i.sequence,
                    &i.subject,
                    &i.headers,
                    &i.payload,
                    i.published,
                )
            })
            .collect();
        for r in &parsed {
            if let Some(why) = &r.parse_error {
                tracing::debug!(stream = %r.stream, stream_seq = r.sequence, site = %r.site, source = %r.source, error = %why, "log line kept as text");
            }
        }
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        for r in parsed {
            records.insert((r.stream.clone(), r.sequence), r);
        }
        while records.len() > self.capacity {
            records.pop_first();
        }
        BatchOutcome::success()
    }
}
