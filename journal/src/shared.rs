//! State shared by the handle, the writer thread and readers.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

/// One segment as the writer and readers know it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    /// Sequence of its first record.
    pub first_seq: u64,
    /// Sequence of its last record (`first_seq - 1` while empty).
    pub last_seq: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Newest append time in it.
    pub max_ts: u64,
    /// Its file.
    pub path: PathBuf,
}

/// Counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in segment files.
    pub bytes: u64,
    /// The size limit (0 = none).
    pub max_bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Oldest sequence still kept.
    pub first_seq: u64,
    /// Newest sequence appended.
    pub last_seq: u64,
    /// Newest durable sequence.
    pub durable_seq: u64,
    /// Acknowledged-upstream cursor.
    pub acked_seq: u64,
    /// Records appended since open.
    pub appends: u64,
    /// Bytes written to segment files since open (headers included): with
    /// payload bytes, gives the write amplification.
    pub bytes_written: u64,
    /// Payload bytes appended since open.
    pub payload_bytes: u64,
    /// fsync calls since open.
    pub fsyncs: u64,
    /// Unacknowledged records deleted by the drop-oldest policy.
    pub dropped_overflow: u64,
    /// Unacknowledged records deleted for being older than `max_age`.
    pub dropped_age: u64,
    /// Whether appends are currently held back because the journal is full.
    pub blocked: bool,
}

impl Stats {
    /// Records not yet acknowledged upstream.
    pub fn unacked(&self) -> u64 {
        self.last_seq.saturating_sub(self.acked_seq)
    }

    /// Fill ratio against the size limit (0 when unbounded).
    pub fn fill(&self) -> f64 {
        if self.max_bytes == 0 {
            0.0
        } else {
            self.bytes as f64 / self.max_bytes as f64
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appends: AtomicU64,
    pub bytes_written: AtomicU64,
    pub payload_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub dropped_overflow: AtomicU64,
    pub dropped_age: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// Largest payload accepted.
    pub max_record: usize,
    /// The size limit.
    pub max_bytes: u64,
    /// Acknowledged-upstream cursor.
    pub acked: AtomicU64,
    /// Records from this sequence on are not deleted for being
    /// acknowledged (`u64::MAX`: no hold).
    pub keep_from: AtomicU64,
    /// Newest appended sequence.
    pub last_seq: AtomicU64,
    /// Newest durable sequence; readers wait on it.
    pub durable: watch::Sender<u64>,
    /// The segments, oldest first.
    pub segments: Mutex<Vec<SegmentMeta>>,
    /// Wakes the writer for housekeeping (acks, close).
    pub wake: Notify,
    /// Set by close so a writer blocked on a full journal gives up.
    pub closing: AtomicBool,
    /// Whether appends are held back by a full journal.
    pub blocked: AtomicBool,
    /// Why the writer stopped, if it failed.
    pub failed: Mutex<Option<String>>,
    /// Counters.
    pub counters: Counters,
}

impl Shared {
    pub fn wake_writer(&self) {
        self.wake.notify_one();
    }

    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    /// The oldest sequence still on disk (the first segment's first).
    pub fn floor(&self) -> u64 {
        self.segments
            .lock()
            .ok()
            .and_then(|s| s.first().map(|m| m.first_seq))
            .unwrap_or(1)
    }

    pub fn stats(&self) -> Stats {
        let (bytes, segments, first_seq) = self
            .segments
            .lock()
            .map(|s| {
                (
                    s.iter().map(|m| m.bytes).sum(),
                    s.len(),
                    s.first().map(|m| m.first_seq).unwrap_or(0),
                )
            })
            .unwrap_or_default();
        let c = &self.counters;
        Stats {
            bytes,
            max_bytes: self.max_bytes,
            segments,
            first_seq,
            last_seq: self.last_seq.load(Ordering::Acquire),
            durable_seq: *self.durable.borrow(),
            acked_seq: self.acked.load(Ordering::Acquire),
            appends: c.appends.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            payload_bytes: c.payload_bytes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            dropped_overflow: c.dropped_overflow.load(Ordering::Relaxed),
            dropped_age: c.dropped_age.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
        }
    }
}
