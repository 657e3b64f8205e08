//! The readings of recently charted topics, kept as columns in the
//! process so a series request folds memory instead of reading every
//! message of its range out of JetStream again (≈ 2 s per million
//! messages, docs/performance.md "Downsampled history").
//!
//! One [`Column`] per (subject, field path): the stream time and the
//! number (NaN when the payload had none) of every message of the subject
//! from the column's start on, and the stream sequence to read from next.
//! A request locks its column, reads only what the stream stored since
//! (an ordered consumer from that sequence), then folds the slice of its
//! range. A request starting before the column starts rebuilds it from
//! there. At most [`MAX_POINTS`] readings are kept in all (16 bytes
//! each); past that the least recently used columns are dropped.
//!
//! Stream times are taken to grow with the sequence (JetStream stamps a
//! message when it stores it), which is what lets a range be found by
//! binary search.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most readings kept over all columns (16 bytes each: 128 MiB).
pub const MAX_POINTS: usize = 8 << 20;

/// One subject's readings from `start_ms` on.
#[derive(Debug, Default)]
pub struct Column {
    /// The time the column was first read from (ms); `None` when empty.
    pub start_ms: Option<u64>,
    /// The sequence after the last message read.
    pub next_sequence: u64,
    /// Stream times, ms, in stream order.
    pub times: Vec<u64>,
    /// The numbers, NaN where the payload gave none.
    pub values: Vec<f64>,
}

impl Column {
    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The index range of readings stored in `[from, to]`.
    pub fn range(&self, from: u64, to: u64) -> std::ops::Range<usize> {
        let lo = self.times.partition_point(|t| *t < from);
        let hi = self.times.partition_point(|t| *t <= to);
        lo..hi.max(lo)
    }
}

struct Entry {
    column: Arc<tokio::sync::Mutex<Column>>,
    used: Instant,
    points: usize,
}

/// The columns, by (subject, field path).
#[derive(Default)]
pub struct SeriesCache {
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl std::fmt::Debug for SeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesCache").finish_non_exhaustive()
    }
}

impl SeriesCache {
    /// The column of `subject` read at `field` (`""` for whole payloads),
    /// created empty if there is none.
    pub fn column(&self, subject: &str, field: &str) -> Arc<tokio::sync::Mutex<Column>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries
            .entry((subject.to_owned(), field.to_owned()))
            .or_insert_with(|| Entry {
                column: Arc::default(),
                used: Instant::now(),
                points: 0,
            });
        entry.used = Instant::now();
        entry.column.clone()
    }

    /// Records that the column of (`subject`, `field`) now holds `points`
    /// readings, and drops the least recently used columns while more
    /// than [`MAX_POINTS`] are held (never the one just used).
    pub fn resized(&self, subject: &str, field: &str, points: usize) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (subject.to_owned(), field.to_owned());
        if let Some(e) = entries.get_mut(&key) {
            e.points = points;
        }
        while entries.values().map(|e| e.points).sum::<usize>() > MAX_POINTS {
            let oldest = entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    tracing::debug!(subject = %k.0, field = %k.1, "series column dropped");
                    entries.remove(&k);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_found_by_time() {
        let c = Column {
            start_ms: Some(10),
            next_sequence: 6,
            times: vec![10, 20, 20, 30, 40],
            values: vec![1.0; 5],
        };
        assert_eq!(c.range(20, 30), 1..4);
        assert_eq!(c.range(0, 5), 0..0);
        assert_eq!(c.range(41, 50), 5..5);
        assert_eq!(c.range(0, 100), 0..5);
    }

    #[test]
    fn the_least_recently_used_columns_go_first() {
        let cache = SeriesCache::default();
        cache.column("a", "");
        cache.column("b", "");
        cache.resized("a", "", MAX_POINTS / 2);
        cache.resized("b", "", MAX_POINTS / 2);
        cache.column("c", "");
        cache.resized("c", "", 10);
        let entries = cache.entries.lock().expect("lock");
        assert!(!entries.contains_key(&("a".to_owned(), String::new())));
        assert!(entries.contains_key(&("b".to_owned(), String::new())));
        assert!(entries.contains_key(&("c".to_owned(), String::new())));
    }
}
