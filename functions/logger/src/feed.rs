//! Feeding a [`LogIndex`] from the logger's parsed records, so a process
//! that runs both parses (and reads from nats-server) every line once.
//!
//! Without a feeder the index's follower ([`crate::follow()`]) reads the
//! whole of `PLANTD_LOGS` on its own. With one ([`LogIndex::attach_feeder`],
//! done by [`crate::Logger::with_index`]) the logger [offers](LogIndex::offer)
//! every batch it parsed, and the follower reads only what the logger will
//! not bring:
//! - **hydration**: the lines before the logger's position (older than its
//!   durable consumer's acknowledgements) — the follower reads until it
//!   reaches the logger's position or the end of the stream, then stops;
//! - **gaps**: an offer is inserted only where it continues the index
//!   (sequence `last + 1`, …); when it does not — another host's logger
//!   handled the lines in between, an item waits for its retry, the
//!   logger is stuck — the index stops advancing while the stream has
//!   more, and the follower reads again from `last + 1` (checked every
//!   [`crate::follow::WATCH`]).
//!
//! The index stays gap-free and in stream order either way; what changes
//! is who parsed a record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::index::LogIndex;
use crate::record::LogRecord;

/// The follower stops reading when the logger's position is at most this
/// many sequences behind the index's next one: the logger is about to
/// bring those lines itself (it parses the few it shares with the follower
/// twice; beyond, the follower goes on, or the index would wait for a
/// logger far behind).
pub const CLOSE: u64 = 16_384;

/// What the index knows of the logger feeding it.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    /// A logger offers its records.
    attached: AtomicBool,
    /// The sequence after the highest one offered so far (0: none yet).
    next: AtomicU64,
    /// Records inserted from offers.
    pub(crate) inserted: AtomicU64,
}

impl LogIndex {
    /// Declares that a logger in this process [offers](Self::offer) every
    /// batch it parses: the follower then leaves the lines the logger
    /// brings to it (module docs of [`crate::feed`]).
    pub fn attach_feeder(&self) {
        self.feed.attached.store(true, Relaxed);
    }

    /// Whether a logger feeds this index.
    pub fn has_feeder(&self) -> bool {
        self.feed.attached.load(Relaxed)
    }

    /// Takes the records of a batch the logger parsed (in stream order):
    /// those that continue the index (sequence `last + 1`, then the next
    /// …) are inserted; those it holds already are skipped; from the first
    /// gap on they are left to the follower. Returns how many were
    /// inserted.
    pub fn offer(&self, records: Vec<LogRecord>) -> usize {
        self.offer_refs(records.iter())
    }

    /// [`Self::offer`] of borrowed records (the logger keeps its batch
    /// buffer for the next batch).
    pub(crate) fn offer_refs<'a>(
        &self,
        records: impl Iterator<Item = &'a LogRecord> + Clone,
    ) -> usize {
        if let Some(highest) = records.clone().map(|r| r.sequence).max() {
            self.feed.next.fetch_max(highest + 1, Relaxed);
        }
        let added = self.insert_where(records, true);
        self.feed.inserted.fetch_add(added as u64, Relaxed);
        added
    }

    /// Whether the follower should stop reading and leave the rest to the
    /// logger: it feeds this index and its position is at, or at most
    /// [`CLOSE`] before, the index's next sequence.
    pub(crate) fn feeder_is_close(&self) -> bool {
        if !self.has_feeder() {
            return false;
        }
        let fed = self.feed.next.load(Relaxed);
        let next = self.stats().last_sequence + 1;
        fed != 0 && fed <= next && fed + CLOSE >= next
    }
}
