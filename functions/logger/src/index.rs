//! [`LogIndex`]: the newest log records in memory, for `/v1/logs`.
//!
//! Bounded by lines and bytes ([`IndexSettings`]); the oldest record of any
//! site goes first. Records are kept per site in stream order, so a query
//! for one site never looks at another's lines. It is filled by
//! [`crate::follow()`] (an ordered consumer on `PLANTD_LOGS`: hydrated from
//! `now − retention` at start, then live) — see
//! `docs/decisions/0023-log-index.md` for why not a scan of the stream per
//! query.
//!
//! ## Query
//! [`LogQuery`] picks sites, source, minimum level, time range and a
//! [`Filter`], and pages in stream order: `Backward` (newest first, the
//! default) or `Forward`, `limit` records at a time. A page's
//! [`LogPage::next_cursor`] continues exactly after its last record, even
//! while new lines arrive or old ones are evicted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

use crate::query::Filter;
use crate::record::{Level, LogRecord};
#[cfg(test)]
use crate::row::ROW_OVERHEAD;
use crate::row::{Labels, Row, View};

/// Most records one page returns.
pub const MAX_LIMIT: usize = 5000;

/// Bounds of the index.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// Most records kept.
    pub max_lines: usize,
    /// Most bytes kept (an estimate: a stored row's packed message, parse
    /// error and fields, and a fixed per-row overhead; the names of
    /// streams, sites and sources are held once and not counted per row).
    pub max_bytes: usize,
    /// How far back [`crate::follow()`] hydrates at start.
    pub retention: std::time::Duration,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            max_lines: 1_000_000,
            max_bytes: 512 << 20,
            retention: std::time::Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Which way a page goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Newest first.
    #[default]
    Backward,
    /// Oldest first.
    Forward,
}

/// Where a page continues: after this stream sequence, in the page's
/// direction. Written as an opaque token ([`Cursor::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last sequence returned.
    pub after: u64,
}

/// A cursor token that is not one of ours.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid cursor {0:?}: pass the next_cursor of a previous page unchanged")]
pub struct CursorError(pub String);

impl Cursor {
    /// The opaque token.
    pub fn encode(self) -> String {
        format!("c1.{:x}", self.after)
    }

    /// Reads a token made by [`Cursor::encode`].
    pub fn decode(token: &str) -> Result<Self, CursorError> {
        token
            .strip_prefix("c1.")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .map(|after| Self { after })
            .ok_or_else(|| CursorError(token.to_owned()))
    }
}

/// What to read from the index.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// The sites to read; `None`: every site (superadmin only — the caller
    /// decides).
    pub sites: Option<Vec<String>>,
    /// Only this source (exact, or a glob with `*`/`?`).
    pub source: Option<String>,
    /// Only records at this level or above.
    pub min_level: Option<Level>,
    /// Only records at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Only records before this time.
    pub to: Option<OffsetDateTime>,
    /// The filter every record must match.
    pub filter: Filter,
    /// Which way to page.
    pub direction: Direction,
    /// Most records (1..=[`MAX_LIMIT`]).
    pub limit: usize,
    /// Continue after a previous page.
    pub cursor: Option<Cursor>,
}

/// One page of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    /// The records, in the page's direction.
    pub records: Vec<LogRecord>,
    /// Pass as `cursor` for the next page; `None` when this page reached
    /// the end.
    pub next_cursor: Option<String>,
}

/// A source matcher: exact or glob.
#[derive(Debug)]
pub(crate) enum SourceMatch {
    Any,
    Exact(String),
    Glob(regex::Regex),
}

impl SourceMatch {
    pub(crate) fn new(source: Option<&str>) -> Self {
        match source {
            None | Some("") => Self::Any,
            Some(s) if s.contains(['*', '?']) => {
                let mut re = String::from("^");
                for c in s.chars() {
                    match c {
                        '*' => re.push_str(".*"),
                        '?' => re.push('.'),
                        c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
                    }
                }
                re.push('$');
                regex::Regex::new(&re).map_or_else(|_| Self::Exact(s.to_owned()), Self::Glob)
            }
            Some(s) => Self::Exact(s.to_owned()),
        }
    }

    pub(crate) fn is_match(&self, source: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s == source,
            Self::Glob(re) => re.is_match(source),
        }
    }
}

/// The parts of a query tested per record (site already chosen).
pub(crate) struct RecordTest<'a> {
    pub(crate) source: SourceMatch,
    pub(crate) min_level: Option<Level>,
    pub(crate) from: Option<OffsetDateTime>,
    pub(crate) to: Option<OffsetDateTime>,
    pub(crate) filter: &'a Filter,
}

impl RecordTest<'_> {
    pub(crate) fn matches(&self, r: &View<'_>) -> bool {
        self.min_level.is_none_or(|l| r.level >= l)
            && self.from.is_none_or(|f| r.time >= f)
            && self.to.is_none_or(|t| r.time < t)
            && self.source.is_match(r.source)
            && self.filter.matches_view(r)
    }
}

/// One site's rows, in stream order.
#[derive(Debug)]
struct SiteRows {
    name: Arc<str>,
    rows: VecDeque<Row>,
}

/// A stored record as [`LogIndex::scan`] hands it out: decoded only as
/// far as it is read.
pub(crate) struct Stored<'a> {
    row: &'a Row,
    site: &'a str,
    labels: &'a Labels,
}

impl<'a> Stored<'a> {
    /// What filters and stats read.
    pub(crate) fn view(&self) -> View<'a> {
        self.row.view(self.site, self.labels)
    }

    /// The whole record, as inserted.
    pub(crate) fn to_record(&self) -> LogRecord {
        self.row.to_record(self.site, self.labels)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Rows per site, by site id (a site keeps its id while the index
    /// lives, also when its rows are all evicted).
    sites: Vec<SiteRows>,
    /// Site name → id.
    site_ids: HashMap<Arc<str>, u32>,
    /// Stream and source names, held once.
    labels: Labels,
    /// Every row's site id in stream order (for global eviction).
    order: VecDeque<u32>,
    /// Estimated bytes held.
    bytes: usize,
    /// The highest sequence inserted.
    last_sequence: u64,
    /// Records evicted so far.
    evicted: u64,
    /// When `labels` holds more names than this (and than
    /// [`LABELS_COMPACT_MIN`]), the names no row uses any more are freed.
    compact_labels_above: usize,
}

/// Stream and source names the index holds before it looks for unused
/// ones (then whenever their number doubles): a site whose sources come
/// and go does not grow the index without bound.
pub(crate) const LABELS_COMPACT_MIN: usize = 4096;

/// The in-memory log index. Share it as `Arc<LogIndex>`.
#[derive(Debug)]
pub struct LogIndex {
    inner: RwLock<Inner>,
    settings: IndexSettings,
    hydrated: std::sync::atomic::AtomicBool,
    /// The logger feeding it in this process, if any ([`crate::feed`]).
    pub(crate) feed: crate::feed::Feed,
}

/// Sizes of the index, for metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IndexStats {
    /// Records held.
    pub lines: usize,
    /// Estimated bytes held.
    pub bytes: usize,
    /// Records evicted since start.
    pub evicted: u64,
    /// The highest stream sequence held.
    pub last_sequence: u64,
    /// Whether hydration is done: the follower reached the end of the
    /// stream once, or the position of the logger feeding the index.
    pub hydrated: bool,
    /// Records the logger of this process fed (parsed once, not read by
    /// the follower: [`crate::feed`]).
    pub fed: u64,
}

impl LogIndex {
    /// An empty index.
    pub fn new(settings: IndexSettings) -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            settings,
            hydrated: std::sync::atomic::AtomicBool::new(false),
            feed: crate::feed::Feed::default(),
        }
    }

    /// Its bounds.
    pub fn settings(&self) -> &IndexSettings {
        &self.settings
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds records in stream order; a record whose sequence is not above
    /// the last one held is ignored (already there). Evicts the oldest
    /// while over a bound.
    pub fn insert(&self, records: impl IntoIterator<Item = LogRecord>) {
        self.insert_where(records, false);
    }

    /// [`Self::insert`]; with `contiguous`, stops at the first record that
    /// is not the sequence right after the last one held (a gap). Returns
    /// how many records were added.
    pub(crate) fn insert_where<R: std::borrow::Borrow<LogRecord>>(
        &self,
        records: impl IntoIterator<Item = R>,
        contiguous: bool,
    ) -> usize {
        let mut g = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inner = &mut *g;
        let mut added = 0;
        let mut scratch = String::new();
        for r in records {
            let r = r.borrow();
            if r.sequence <= inner.last_sequence {
                continue;
            }
            if contiguous && r.sequence != inner.last_sequence + 1 {
                break;
            }
            added += 1;
            inner.last_sequence = r.sequence;
            let site = match inner.site_ids.get(&*r.site) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(inner.sites.len()).unwrap_or(u32::MAX);
                    let name: Arc<str> = r.site.clone();
                    inner.sites.push(SiteRows {
                        name: name.clone(),
                        rows: VecDeque::new(),
                    });
                    inner.site_ids.insert(name, id);
                    id
                }
            };
            let row = Row::new(r, &mut inner.labels, &mut scratch);
            inner.bytes += row.bytes();
            inner.order.push_back(site);
            if let Some(q) = inner.sites.get_mut(site as usize) {
                q.rows.push_back(row);
            }
        }
        while inner.order.len() > self.settings.max_lines
            || (inner.bytes > self.settings.max_bytes && !inner.order.is_empty())
        {
            let Some(site) = inner.order.pop_front() else {
                break;
            };
            if let Some(r) = inner
                .sites
                .get_mut(site as usize)
                .and_then(|q| q.rows.pop_front())
            {
                inner.bytes = inner.bytes.saturating_sub(r.bytes());
                inner.evicted += 1;
            }
        }
        if inner.labels.len() > inner.compact_labels_above.max(LABELS_COMPACT_MIN) {
            let Inner { sites, labels, .. } = &mut *inner;
            labels.compact(sites.iter_mut().flat_map(|s| s.rows.iter_mut()));
            inner.compact_labels_above = 2 * inner.labels.len();
        }
        added
    }

    /// Forgets every record (the stream was recreated: its sequences
    /// start again).
    pub fn clear(&self) {
        let mut g = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let evicted = g.evicted + g.order.len() as u64;
        *g = Inner {
            evicted,
            ..Inner::default()
        };
    }

    /// Marks hydration done (the follower reached the end of the stream).
    pub fn set_hydrated(&self) {
        self.hydrated
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Its sizes.
    pub fn stats(&self) -> IndexStats {
        let g = self.read();
        IndexStats {
            lines: g.order.len(),
            bytes: g.bytes,
            evicted: g.evicted,
            last_sequence: g.last_sequence,
            hydrated: self.hydrated.load(std::sync::atomic::Ordering::Relaxed),
            fed: self
                .feed
                .inserted
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Records held (all sites).
    pub fn len(&self) -> usize {
        self.read().order.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with every record of the chosen sites that passes `test`,
    /// in stream order (`Forward`) or newest first, after `cursor`, until
    /// `f` returns false.
    pub(crate) fn scan(
        &self,
        sites: Option<&[String]>,
        test: &RecordTest<'_>,
        direction: Direction,
        cursor: Option<Cursor>,
        mut f: impl FnMut(&Stored<'_>) -> bool,
    ) {
        let g = self.read();
        let queues: Vec<&SiteRows> = match sites {
            Some(list) => list
                .iter()
                .filter_map(|s| g.site_ids.get(s.as_str()))
                .filter_map(|&id| g.sites.get(id as usize))
                .collect(),
            None => g.sites.iter().collect(),
        };
        // Per queue, the position to start from; then a k-way merge by
        // sequence (usually one queue: one site).
        let mut pos: Vec<isize> = queues
            .iter()
            .map(|q| {
                let q = &q.rows;
                let start = match (direction, cursor) {
                    (Direction::Forward, None) => 0,
                    (Direction::Forward, Some(c)) => q.partition_point(|r| r.sequence <= c.after),
                    (Direction::Backward, None) => q.len(),
                    (Direction::Backward, Some(c)) => q.partition_point(|r| r.sequence < c.after),
                };
                match direction {
                    Direction::Forward => start as isize,
                    Direction::Backward => start as isize - 1,
                }
            })
            .collect();
        loop {
            let mut best: Option<(usize, u64)> = None;
            for (i, q) in queues.iter().enumerate() {
                let p = pos[i];
                let Some(row) = usize::try_from(p).ok().and_then(|p| q.rows.get(p)) else {
                    continue;
                };
                let seq = row.sequence;
                let better = match (best, direction) {
                    (None, _) => true,
                    (Some((_, b)), Direction::Forward) => seq < b,
                    (Some((_, b)), Direction::Backward) => seq > b,
                };
                if better {
                    best = Some((i, seq));
                }
            }
            let Some((i, _)) = best else { return };
            let q = queues[i];
            let Some(row) = usize::try_from(pos[i]).ok().and_then(|p| q.rows.get(p)) else {
                return;
            };
            pos[i] += match direction {
                Direction::Forward => 1,
                Direction::Backward => -1,
            };
            let r = Stored {
                row,
                site: &q.name,
                labels: &g.labels,
            };
            if test.matches(&r.view()) && !f(&r) {
                return;
            }
        }
    }

    /// One page of records.
    pub fn query(&self, q: &LogQuery) -> LogPage {
        let limit = q.limit.clamp(1, MAX_LIMIT);
        let test = RecordTest {
            source: SourceMatch::new(q.source.as_deref()),
            min_level: q.min_level,
            from: q.from,
            to: q.to,
            filter: &q.filter,
        };
        let mut records = Vec::with_capacity(limit.min(256));
        let mut more = false;
        self.scan(q.sites.as_deref(), &test, q.direction, q.cursor, |r| {
            if records.len() == limit {
                more = true;
                return false;
            }
            records.push(r.to_record());
            true
        });
        let next_cursor = more
            .then(|| {
                records
                    .last()
                    .map(|r| Cursor { after: r.sequence }.encode())
            })
            .flatten();
        LogPage {
            records,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use crate::query::parse_filter;

    fn line(seq: u64, site: &str, source: &str, text: &str) -> LogRecord {
        parse(
            "PLANTD_LOGS",
            seq,
            &format!("plantd.{site}.log.{source}"),
            &async_nats::HeaderMap::new(),
            text.as_bytes(),
            OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seq as i64),
        )
    }

    fn seqs(page: &LogPage) -> Vec<u64> {
        page.records.iter().map(|r| r.sequence).collect()
    }

    #[test]
    fn names_of_evicted_sources_are_freed_and_live_ones_kept() {
        let idx = LogIndex::new(IndexSettings {
            max_lines: 100,
            ..IndexSettings::default()
        });
        let n = 3 * LABELS_COMPACT_MIN as u64;
        for i in 1..=n {
            idx.insert([line(i, "a", &format!("src{i}"), "m")]);
        }
        let held = idx.read().labels.len();
        assert!(
            held <= LABELS_COMPACT_MIN + 1,
            "{held} names held for 100 lines of {n} sources"
        );
        let page = idx.query(&LogQuery {
            limit: 200,
            ..LogQuery::default()
        });
        assert_eq!(page.records.len(), 100);
        for r in &page.records {
            assert_eq!(*r.source, format!("src{}", r.sequence), "{r:?}");
            assert_eq!(&*r.stream, "PLANTD_LOGS");
        }
    }

    #[test]
    fn the_oldest_lines_go_first_past_either_bound() {
        let idx = LogIndex::new(IndexSettings {
            max_lines: 3,
            ..IndexSettings::default()
        });
        idx.insert((1..=5).map(|i| line(i, if i % 2 == 0 { "a" } else { "b" }, "x", "m")));
        let all = idx.query(&LogQuery {
            limit: 10,
            ..LogQuery::default()
        });
        assert_eq!(seqs(&all), vec![5, 4, 3]);
        assert_eq!(idx.stats().evicted, 2);
        // Bytes: each row is at least ROW_OVERHEAD.
        let idx = LogIndex::new(IndexSettings {
            max_bytes: 3 * ROW_OVERHEAD + 3 * 100,
            ..IndexSettings::default()
        });
        idx.insert((1..=10).map(|i| line(i, "a", "x", &"y".repeat(50))));
        let s = idx.stats();
        assert!(s.lines < 10 && s.lines >= 1, "{s:?}");
        assert!(s.bytes <= 3 * ROW_OVERHEAD + 300, "{s:?}");
        assert_eq!(s.last_sequence, 10);
        // A sequence already held (or older) is not added again.
        idx.insert([line(10, "a", "x", "again")]);
        assert_eq!(idx.stats().lines, s.lines);
    }

    #[test]
    fn pages_follow_cursors_both_ways_across_sites() {
        let idx = LogIndex::new(IndexSettings::default());
        idx.insert((1..=9).map(|i| line(i, ["a", "b", "c"][(i % 3) as usize], "x", "m")));
        let q = |sites: Option<Vec<&str>>, direction, cursor| LogQuery {
            sites: sites.map(|v| v.into_iter().map(str::to_owned).collect()),
            direction,
            limit: 2,
            cursor,
            ..LogQuery::default()
        };
        let p1 = idx.query(&q(Some(vec!["a", "b"]), Direction::Backward, None));
        assert_eq!(seqs(&p1), vec![9, 7]);
        let c = Cursor::decode(p1.next_cursor.as_deref().expect("more")).expect("cursor");
        let p2 = idx.query(&q(Some(vec!["a", "b"]), Direction::Backward, Some(c)));
        assert_eq!(seqs(&p2), vec![6, 4]);
        let f1 = idx.query(&q(None, Direction::Forward, None));
        assert_eq!(seqs(&f1), vec![1, 2]);
        let c = Cursor::decode(f1.next_cursor.as_deref().expect("more")).expect("cursor");
        assert_eq!(
            seqs(&idx.query(&q(None, Direction::Forward, Some(c)))),
            vec![3, 4]
        );
        let last = idx.query(&LogQuery {
            sites: Some(vec!["c".into()]),
            limit: 3,
            ..LogQuery::default()
        });
        assert_eq!((seqs(&last), last.next_cursor), (vec![8, 5, 2], None));
        assert!(Cursor::decode("nonsense").is_err());
    }

    #[test]
    fn filters_levels_sources_and_time_narrow_a_query() {
        let idx = LogIndex::new(IndexSettings::default());
        idx.insert([
            line(
                1,
                "a",
                "line1.plc",
                r#"{"level":"error","msg":"overheat","temp":91}"#,
            ),
            line(
                2,
                "a",
                "line1.plc",
                r#"{"level":"error","msg":"overheat","temp":70}"#,
            ),
            line(3, "a", "line2.plc", "WARN overheat soon"),
            line(4, "a", "gw", "{\"msg\": \"cut"),
            line(5, "a", "gw", "INFO fine"),
        ]);
        let run = |q: LogQuery| seqs(&idx.query(&LogQuery { limit: 10, ..q }));
        let f = |t: &str| parse_filter(t).expect("filter");
        assert_eq!(
            run(LogQuery {
                filter: f(r#"|= "overheat""#),
                ..Default::default()
            }),
            vec![3, 2, 1]
        );
        assert_eq!(
            run(LogQuery {
                filter: f(r#"|= "overheat" | temp > 80"#),
                ..Default::default()
            }),
            vec![1]
        );
        assert_eq!(
            run(LogQuery {
                source: Some("line*".into()),
                min_level: Some(Level::Warn),
                ..Default::default()
            }),
            vec![3, 2, 1]
        );
        assert_eq!(
            run(LogQuery {
                min_level: Some(Level::Error),
                ..Default::default()
            }),
            vec![2, 1]
        );
        let t = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
        assert_eq!(
            run(LogQuery {
                from: Some(t(2)),
                to: Some(t(4)),
                ..Default::default()
            }),
            vec![3, 2]
        );
        // The malformed line is kept as text and found by its text.
        let page = idx.query(&LogQuery {
            filter: f(r#"|= "cut""#),
            limit: 10,
            ..Default::default()
        });
        assert_eq!(seqs(&page), vec![4]);
        assert!(
            page.records[0]
                .parse_error
                .as_deref()
                .unwrap_or("")
                .starts_with("invalid JSON")
        );
    }
}
