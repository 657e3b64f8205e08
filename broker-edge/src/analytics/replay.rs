//! The journal as the engine's input: what a journal record is to the
//! analytics, and which results the journal already holds.
//!
//! The engine reads its readings from the journal (not from a queue beside
//! it), so after a crash it reads on from the position its checkpoint
//! recorded: the readings applied after the checkpoint are applied again,
//! and the live readings follow in the same sequence — one source, no gap
//! and no reading twice. The results those readings cause that were
//! journaled before the crash are found by [`journaled_results`] and not
//! journaled again. See `docs/decisions/0031-edge-analytics-exactly-once.md`.

use std::collections::HashSet;

use bytes::Bytes;
use plantd_analytics::Output;
use plantd_bridge::UplinkMessage;
use plantd_journal::{Journal, Record};
use plantd_shared::topic::AGG_PREFIX;
use tracing::warn;

use super::feed;

/// What one journal record is to the engine.
#[derive(Debug)]
pub enum Entry {
    /// A reading to apply.
    Reading {
        /// The topic it was published on.
        topic: String,
        /// The payload.
        payload: Bytes,
        /// When the edge accepted it (ms since the Unix epoch), as
        /// journaled: the same on every replay.
        received_at: i64,
    },
    /// One of the edge's own results (`$plantd/agg/…`).
    Result(Box<Output>),
    /// Anything else: a `$`-topic (log lines, alerts), or a record that
    /// does not decode (logged).
    Other,
}

/// Reads one journal record.
pub fn entry(record: &Record) -> Entry {
    let msg = match UplinkMessage::decode(record.payload.clone()) {
        Ok(m) => m,
        Err(e) => {
            warn!(seq = record.seq, error = %e, "journal record does not decode; not analysed");
            return Entry::Other;
        }
    };
    if feed::reads(&msg.topic) {
        return Entry::Reading {
            topic: msg.topic,
            payload: msg.payload,
            received_at: i64::try_from(msg.received_ms).unwrap_or(i64::MAX),
        };
    }
    if msg.topic.starts_with(AGG_PREFIX) {
        return match serde_json::from_slice::<Output>(&msg.payload) {
            Ok(out) => Entry::Result(Box::new(out)),
            Err(_) => Entry::Other,
        };
    }
    Entry::Other
}

/// The ids ([`Output::id`]) of the results journaled from sequence `from`
/// to `to` (inclusive): what the engine journaled after its checkpoint and
/// before it stopped. Records the journal no longer holds are not seen
/// (counted in the log).
pub fn journaled_results(journal: &Journal, from: u64, to: u64) -> HashSet<String> {
    let mut ids = HashSet::new();
    if from > to {
        return ids;
    }
    let mut reader = journal.reader(from);
    while reader.position() <= to {
        match reader.try_next() {
            Ok(Some(record)) => {
                if let Entry::Result(out) = entry(&record) {
                    ids.insert(out.id());
                }
            }
            Ok(None) => break,
            Err(e) => {
                warn!(seq = reader.position(), error = %e, "journal record unreadable while looking for journaled results; skipped");
                reader.seek(reader.position() + 1);
            }
        }
    }
    if reader.skipped() > 0 {
        warn!(
            skipped = reader.skipped(),
            "journal records after the analytics checkpoint were deleted (size or age limit): results in them may be journaled again"
        );
    }
    ids
}
