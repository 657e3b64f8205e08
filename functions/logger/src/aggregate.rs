//! Per-minute aggregates, counted exactly once despite redelivery.
//!
//! For every (site, minute of the record's time) the logger keeps one
//! [`MinuteAggregate`] in KV [`LOG_AGGREGATES_BUCKET`] under
//! `<site>.<YYYYMMDDHHMM>` (UTC, [`key`]): line counts by (source, level)
//! and the most frequent message [patterns](crate::pattern).
//!
//! ## Exactly once
//! Delivery is at least once: an item can come again after a crash, a lost
//! acknowledgement or a failed write, possibly after its successors. Each
//! aggregate therefore records which stream sequences it has applied
//! ([`Applied`]: per stream, sorted disjoint ranges — an applied-through
//! floor plus a few ranges above it). [`Aggregates::apply`] does, per key,
//! one read and one compare-and-set write on the revision it read (retried
//! on a conflict with another writer): items whose `(stream, sequence)` the
//! aggregate already holds are skipped, the others counted, and every
//! sequence of the batch is added to its ranges — sequences of items that
//! belong to other keys too, which never map to this key (the key is a
//! pure function of the item), so the ranges stay one per batch run. A
//! crash between the write and the acknowledgement is harmless: the
//! redelivered items are found in the ranges. Writes are batched: one
//! CAS per key per batch, whatever the number of items.
//!
//! An aggregate keeps at most [`AggregateSettings::max_ranges`] ranges per
//! stream; beyond, its oldest gap is closed (an item of that gap, never
//! applied and redelivered later still, would then not be counted — it
//! takes that many later batches of the same site and minute to happen).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::jetstream::kv;
use futures::StreamExt;
use plantd_shared::streams::LOG_AGGREGATES_BUCKET;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use crate::pattern::pattern_into;
use crate::record::{Level, LogRecord};

/// Most minutes one [`Aggregates::read_range`] reads (a day).
pub const MAX_RANGE_MINUTES: i64 = 24 * 60;

/// Limits of one aggregate.
#[derive(Debug, Clone)]
pub struct AggregateSettings {
    /// Patterns tracked per site-minute; the least frequent beyond are
    /// dropped (their lines count in [`MinuteAggregate::other_patterns`]).
    pub max_patterns: usize,
    /// (source, level) pairs counted per site-minute; lines of further
    /// sources count under source [`OTHER_SOURCE`].
    pub max_counts: usize,
    /// Applied-sequence ranges kept per stream (see the module docs).
    pub max_ranges: usize,
    /// Compare-and-set attempts per key per batch before the batch's items
    /// of that key fail (and are redelivered).
    pub cas_attempts: usize,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        Self {
            max_patterns: 100,
            max_counts: 1000,
            max_ranges: 256,
            cas_attempts: 20,
        }
    }
}

/// The source lines are counted under once a minute has
/// [`AggregateSettings::max_counts`] (source, level) pairs.
pub const OTHER_SOURCE: &str = "<other>";

/// Why an aggregate could not be read or written.
#[derive(Debug, Error)]
pub enum AggregateError {
    /// Reading the key failed.
    #[error("reading {key}: {source}")]
    Read {
        /// The key.
        key: String,
        /// Why.
        source: kv::EntryError,
    },
    /// Writing the key failed (not a conflict).
    #[error("writing {key}: {source}")]
    Write {
        /// The key.
        key: String,
        /// Why.
        source: kv::UpdateError,
    },
    /// Other writers kept winning.
    #[error("writing {key}: still conflicting after {attempts} attempts")]
    Contended {
        /// The key.
        key: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The stored value is not an aggregate.
    #[error("decoding {key}: {source}")]
    Decode {
        /// The key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A range asked for is not valid.
    #[error("{0}")]
    Range(String),
}

/// Stream sequences applied to one aggregate: per stream, sorted disjoint
/// inclusive ranges `[first, last]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub BTreeMap<String, Vec<[u64; 2]>>);

impl Applied {
    /// Whether `(stream, sequence)` has been applied.
    pub fn contains(&self, stream: &str, sequence: u64) -> bool {
        self.0.get(stream).is_some_and(|ranges| {
            let i = ranges.partition_point(|r| r[1] < sequence);
            ranges.get(i).is_some_and(|r| r[0] <= sequence)
        })
    }

    /// Adds sequences (any order), merging adjacent ranges, then closes the
    /// oldest gaps until at most `max_ranges` remain.
    pub fn insert(&mut self, stream: &str, sequences: &[u64], max_ranges: usize) {
        self.insert_ranges(stream, &ranges_of(sequences), max_ranges);
    }

    /// [`Self::insert`] of sequences already made into ranges
    /// ([`ranges_of`]): a batch's thousands of sequences are sorted and
    /// merged once, not once per key they are added to.
    fn insert_ranges(&mut self, stream: &str, added: &[[u64; 2]], max_ranges: usize) {
        let ranges = match self.0.get_mut(stream) {
            Some(ranges) => ranges,
            None => self.0.entry(stream.to_owned()).or_default(),
        };
        ranges.extend_from_slice(added);
        let mut merged = merge(std::mem::take(ranges));
        while merged.len() > max_ranges.max(1) {
            let second = merged.remove(1);
            merged[0][1] = second[1];
        }
        *ranges = merged;
    }
}

/// Sequences (any order) as sorted disjoint inclusive ranges.
fn ranges_of(sequences: &[u64]) -> Vec<[u64; 2]> {
    merge(sequences.iter().map(|&s| [s, s]).collect())
}

/// Inclusive ranges (any order, may overlap or touch) sorted and merged.
fn merge(mut ranges: Vec<[u64; 2]>) -> Vec<[u64; 2]> {
    ranges.sort_unstable();
    let mut merged: Vec<[u64; 2]> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r[0] <= last[1].saturating_add(1) => last[1] = last[1].max(r[1]),
            _ => merged.push(r),
        }
    }
    merged
}

/// Lines of one source at one level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCount {
    /// The source.
    pub source: String,
    /// The level.
    pub level: Level,
    /// Lines.
    pub count: u64,
}

/// Lines of one message pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternCount {
    /// The pattern ([`crate::pattern`]).
    pub pattern: String,
    /// Lines.
    pub count: u64,
    /// The highest level it was logged at.
    pub level: Level,
}

/// One site's lines in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteAggregate {
    /// The site.
    pub site: String,
    /// The minute (UTC, seconds zero).
    #[serde(with = "time::serde::rfc3339")]
    pub minute: OffsetDateTime,
    /// Every line counted.
    pub total: u64,
    /// Lines by (source, level), sorted.
    pub counts: Vec<LevelCount>,
    /// The most frequent patterns, most frequent first.
    pub patterns: Vec<PatternCount>,
    /// Lines whose pattern was dropped from [`Self::patterns`].
    #[serde(default)]
    pub other_patterns: u64,
    /// The stream sequences applied (exactly-once bookkeeping).
    pub applied: Applied,
}

impl MinuteAggregate {
    fn new(site: &str, minute: OffsetDateTime) -> Self {
        Self {
            site: site.to_owned(),
            minute,
            total: 0,
            counts: Vec::new(),
            patterns: Vec::new(),
            other_patterns: 0,
            applied: Applied::default(),
        }
    }

    /// Counts records (not checking `applied`), keeping the limits.
    fn add<'a>(&mut self, records: impl Iterator<Item = &'a LogRecord>, s: &AggregateSettings) {
        // Looked up by `&str` (no allocation per line); (source, level)
        // pairs counted in `pairs` for the limit.
        let mut counts: BTreeMap<String, BTreeMap<Level, u64>> = BTreeMap::new();
        let mut pairs = 0usize;
        for c in self.counts.drain(..) {
            if counts
                .entry(c.source)
                .or_default()
                .insert(c.level, c.count)
                .is_none()
            {
                pairs += 1;
            }
        }
        let mut patterns: HashMap<String, (u64, Level)> = self
            .patterns
            .drain(..)
            .map(|p| (p.pattern, (p.count, p.level)))
            .collect();
        let mut p = String::new();
        for r in records {
            self.total += 1;
            let known = counts
                .get(&*r.source)
                .is_some_and(|levels| levels.contains_key(&r.level));
            let source = if known || pairs < s.max_counts {
                &*r.source
            } else {
                OTHER_SOURCE
            };
            match counts.get_mut(source) {
                Some(levels) => {
                    *levels.entry(r.level).or_insert_with(|| {
                        pairs += 1;
                        0
                    }) += 1;
                }
                None => {
                    counts.insert(source.to_owned(), BTreeMap::from([(r.level, 1)]));
                    pairs += 1;
                }
            }
            pattern_into(&r.message, &mut p);
            match patterns.get_mut(p.as_str()) {
                Some(known) => {
                    known.0 += 1;
                    known.1 = known.1.max(r.level);
                }
                None => {
                    patterns.insert(p.clone(), (1, r.level));
                }
            }
        }
        self.counts = counts
            .into_iter()
            .flat_map(|(source, levels)| {
                levels.into_iter().map(move |(level, count)| LevelCount {
                    source: source.clone(),
                    level,
                    count,
                })
            })
            .collect();
        let mut patterns: Vec<PatternCount> = patterns
            .into_iter()
            .map(|(pattern, (count, level))| PatternCount {
                pattern,
                count,
                level,
            })
            .collect();
        patterns.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        for dropped in patterns.drain(patterns.len().min(s.max_patterns)..) {
            self.other_patterns += dropped.count;
        }
        self.patterns = patterns;
    }
}

/// The minute `t` falls in (UTC).
pub fn minute_of(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0)
        .and_then(|t| t.replace_second(0))
        .unwrap_or(t)
}

/// The KV key of a site's minute: `<site>.<YYYYMMDDHHMM>`.
pub fn key(site: &str, minute: OffsetDateTime) -> String {
    let m = minute_of(minute);
    format!(
        "{site}.{:04}{:02}{:02}{:02}{:02}",
        m.year(),
        u8::from(m.month()),
        m.day(),
        m.hour(),
        m.minute()
    )
}

/// Writes aggregates to KV [`LOG_AGGREGATES_BUCKET`].
#[derive(Debug, Clone)]
pub struct Aggregates {
    kv: kv::Store,
    settings: AggregateSettings,
    /// What this process last wrote per key, with its revision: the next
    /// batch's compare-and-set starts from it without reading (a
    /// conflict — another writer — falls back to a read).
    written: Arc<Mutex<HashMap<String, (u64, MinuteAggregate)>>>,
}

/// Most keys [`Aggregates`] remembers its last write of (a minute per
/// site; beyond, it forgets them all and reads again).
const WRITTEN_KEYS: usize = 4096;

/// One record of a batch with its identity.
#[derive(Debug, Clone, Copy)]
pub struct Applying<'a> {
    /// Its index in the batch (reported back on failure).
    pub index: usize,
    /// The parsed record (carries `stream` and `sequence`).
    pub record: &'a LogRecord,
}

impl Aggregates {
    /// Aggregates in `kv` (the [`LOG_AGGREGATES_BUCKET`] store).
    pub fn new(kv: kv::Store, settings: AggregateSettings) -> Self {
        Self {
            kv,
            settings,
            written: Arc::default(),
        }
    }

    fn remembered(&self, k: &str) -> Option<(u64, MinuteAggregate)> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(k)
            .cloned()
    }

    fn remember(&self, k: &str, revision: Option<(u64, MinuteAggregate)>) {
        let mut w = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        match revision {
            Some(r) => {
                if w.len() >= WRITTEN_KEYS && !w.contains_key(k) {
                    w.clear();
                }
                w.insert(k.to_owned(), r);
            }
            None => {
                w.remove(k);
            }
        }
    }

    /// Opens [`LOG_AGGREGATES_BUCKET`] (created by `streams::ensure`).
    pub async fn open(
        js: &async_nats::jetstream::Context,
        settings: AggregateSettings,
    ) -> Result<Self, async_nats::jetstream::context::KeyValueError> {
        Ok(Self::new(
            js.get_key_value(LOG_AGGREGATES_BUCKET).await?,
            settings,
        ))
    }

    /// Applies one batch, exactly once per `(stream, sequence)`: one CAS per
    /// key. Records without a site are not aggregated. Returns the indices
    /// of the records whose key could not be written, with why.
    pub async fn apply(&self, batch: &[Applying<'_>]) -> Vec<(usize, String)> {
        // By (site, UTC minute number): the key text is made once per key,
        // not once per line.
        let mut by_minute: HashMap<(&str, i64), Vec<Applying<'_>>> = HashMap::new();
        let mut sequences: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for a in batch {
            sequences
                .entry(&*a.record.stream)
                .or_default()
                .push(a.record.sequence);
            if a.record.site.is_empty() {
                continue;
            }
            by_minute
                .entry((
                    &*a.record.site,
                    a.record.time.unix_timestamp().div_euclid(60),
                ))
                .or_default()
                .push(*a);
        }
        let sequences: BTreeMap<&str, Vec<[u64; 2]>> = sequences
            .into_iter()
            .map(|(stream, seqs)| (stream, ranges_of(&seqs)))
            .collect();
        let by_key: Vec<(String, Vec<Applying<'_>>)> = by_minute
            .into_values()
            .filter_map(|items| {
                let first = items.first()?.record;
                Some((key(&first.site, first.time), items))
            })
            .collect();
        let mut writes = Vec::with_capacity(by_key.len());
        for (k, items) in &by_key {
            writes.push(self.write_key(k, items, &sequences));
        }
        futures::future::join_all(writes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// [`Self::apply_key`], failures as the items' indices.
    async fn write_key(
        &self,
        k: &str,
        items: &[Applying<'_>],
        sequences: &BTreeMap<&str, Vec<[u64; 2]>>,
    ) -> Vec<(usize, String)> {
        match self.apply_key(k, items, sequences).await {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::warn!(key = %k, error = %e, items = items.len(), "log aggregate not written; the items will be redelivered");
                items.iter().map(|a| (a.index, e.to_string())).collect()
            }
        }
    }

    async fn apply_key(
        &self,
        k: &str,
        items: &[Applying<'_>],
        sequences: &BTreeMap<&str, Vec<[u64; 2]>>,
    ) -> Result<(), AggregateError> {
        let Some(first) = items.first() else {
            return Ok(());
        };
        let mut cached = self.remembered(k);
        for _ in 0..self.settings.cas_attempts.max(1) {
            let entry = match cached.take() {
                Some((revision, agg)) => Ok((agg, Some(revision))),
                None => self
                    .kv
                    .entry(k)
                    .await
                    .map(Err)
                    .map_err(|source| AggregateError::Read {
                        key: k.to_owned(),
                        source,
                    })?,
            };
            let (mut agg, revision) = match entry {
                Ok(known) => known,
                Err(entry) => match entry {
                    Some(e) if e.operation == kv::Operation::Put => (
                        serde_json::from_slice::<MinuteAggregate>(&e.value).map_err(|source| {
                            AggregateError::Decode {
                                key: k.to_owned(),
                                source,
                            }
                        })?,
                        Some(e.revision),
                    ),
                    Some(e) => (
                        MinuteAggregate::new(&first.record.site, minute_of(first.record.time)),
                        Some(e.revision),
                    ),
                    None => (
                        MinuteAggregate::new(&first.record.site, minute_of(first.record.time)),
                        None,
                    ),
                },
            };
            let fresh: Vec<&LogRecord> = items
                .iter()
                .map(|a| a.record)
                .filter(|r| !agg.applied.contains(&r.stream, r.sequence))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            agg.add(fresh.into_iter(), &self.settings);
            for (stream, ranges) in sequences {
                agg.applied
                    .insert_ranges(stream, ranges, self.settings.max_ranges);
            }
            let value = match serde_json::to_vec(&agg) {
                Ok(v) => v,
                Err(source) => {
                    return Err(AggregateError::Decode {
                        key: k.to_owned(),
                        source,
                    });
                }
            };
            let written = match revision {
                Some(rev) => self.kv.update(k, value.into(), rev).await,
                None => self
                    .kv
                    .create(k, value.into())
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => {
                            kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision)
                        }
                        _ => kv::UpdateError::with_source(kv::UpdateErrorKind::Other, e),
                    }),
            };
            match written {
                Ok(revision) => {
                    self.remember(k, Some((revision, agg)));
                    return Ok(());
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::debug!(key = %k, "log aggregate changed under us; reading again");
                }
                Err(source) => {
                    self.remember(k, None);
                    return Err(AggregateError::Write {
                        key: k.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(AggregateError::Contended {
            key: k.to_owned(),
            attempts: self.settings.cas_attempts.max(1),
        })
    }

    /// A site's aggregates for the minutes that overlap `[from, to)`, oldest first
    /// (minutes without lines are left out). At most
    /// [`MAX_RANGE_MINUTES`] minutes.
    pub async fn read_range(
        &self,
        site: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<MinuteAggregate>, AggregateError> {
        let first = minute_of(from);
        // Every minute that starts before `to` (the one `to` falls in too).
        let span = to - first;
        let minutes = span.whole_minutes()
            + i64::from(span.whole_seconds() % 60 != 0 || span.subsec_nanoseconds() != 0);
        if minutes > MAX_RANGE_MINUTES {
            return Err(AggregateError::Range(format!(
                "at most {MAX_RANGE_MINUTES} minutes at once (asked {minutes})"
            )));
        }
        let keys: Vec<String> = (0..minutes.max(0))
            .map(|i| key(site, first + time::Duration::minutes(i)))
            .collect();
        let got: Vec<Result<Option<MinuteAggregate>, AggregateError>> =
            futures::stream::iter(keys.into_iter().map(|k| async move {
                let Some(v) = self
                    .kv
                    .get(&k)
                    .await
                    .map_err(|source| AggregateError::Read {
                        key: k.clone(),
                        source,
                    })?
                else {
                    return Ok(None);
                };
                serde_json::from_slice(&v)
                    .map(Some)
                    .map_err(|source| AggregateError::Decode { key: k, source })
            }))
            .buffered(32)
            .collect()
            .await;
        got.into_iter().filter_map(Result::transpose).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_ranges_merge_and_stay_bounded() {
        let mut a = Applied::default();
        a.insert("S", &[5, 3, 4, 10], 8);
        assert_eq!(a.0["S"], vec![[3, 5], [10, 10]]);
        assert!(a.contains("S", 4) && a.contains("S", 10));
        assert!(!a.contains("S", 6) && !a.contains("S", 2) && !a.contains("T", 4));
        a.insert("S", &[6, 7, 8, 9], 8);
        assert_eq!(a.0["S"], vec![[3, 10]]);
        a.insert("S", &[20, 30, 40], 2);
        assert_eq!(a.0["S"], vec![[3, 30], [40, 40]], "the oldest gap closes");
    }

    #[test]
    fn keys_are_site_and_utc_minute() {
        let t = OffsetDateTime::from_unix_timestamp(1_765_015_259).expect("t");
        assert_eq!(key("plant1", t), "plant1.202512061000");
        assert_eq!(minute_of(t).unix_timestamp(), 1_765_015_200);
    }
}
