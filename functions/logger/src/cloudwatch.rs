//! CloudWatch Logs forwarding (feature `aws`): in AWS the logger also
//! writes every parsed record to CloudWatch Logs, so Logs Insights works
//! for those who use it (docs/decisions/0026-trigger-on-aws.md).
//!
//! ## Where records go
//! - Log group **`<prefix>/<site>`** ([`group_name`]; prefix
//!   `PLANTD_CLOUDWATCH_PREFIX`, default [`DEFAULT_PREFIX`], the template
//!   sets `/plantd/<stage>/sites`), log stream **`<source>`**
//!   ([`stream_name`], e.g. `line1/plc`). A record whose subject named no
//!   site goes to `<prefix>/_unknown`.
//! - Each event is the [`LogRecord`] as one JSON line (`stream`, `sequence`,
//!   `time`, `site`, `source`, `level`, `message`, `fields`, `format`,
//!   `parse_error`), so Logs Insights discovers the fields; the event's
//!   timestamp is the record's time.
//! - Group and stream are created on first use (a `PutLogEvents` that
//!   answers `ResourceNotFoundException` creates both and is sent again);
//!   a group created here gets `PLANTD_CLOUDWATCH_RETENTION_DAYS` (if set).
//!
//! ## Limits honoured
//! Per `PutLogEvents` call ([`plan_puts`]): at most [`MAX_EVENTS`] events
//! and [`MAX_PUT_BYTES`] bytes (each event counts its message plus 26
//! bytes), sorted by timestamp, spanning at most 24 hours. An event is at
//! most [`MAX_EVENT_BYTES`]: a longer record is cut (its `message`
//! shortened, `fields` dropped, `"truncated": true` added — the full line
//! stays in `PLANTD_LOGS`). CloudWatch rejects events older than 14 days
//! or more than 2 hours ahead; such a record keeps its own time inside the
//! JSON but is stamped with the time it was forwarded.
//!
//! ## Redelivery
//! CloudWatch has no idempotent put: the same event sent twice is stored
//! twice. A warm function remembers the last [`RECENT_KEYS`]
//! `(stream, sequence)` keys it wrote and skips them, which absorbs SQS
//! redeliveries to the same instance; a redelivery to another instance
//! (or after a cold start) may appear twice. Each event carries `stream`
//! and `sequence`, so a query can remove those: `dedup stream, sequence`
//! in Logs Insights. The logger's own store is exact either way.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_cloudwatchlogs::error::DisplayErrorContext;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use plantd_trigger::{BatchOutcome, Handler, Item};
use time::{Duration, OffsetDateTime};

use crate::parse::parse;
use crate::record::LogRecord;

/// The default log group prefix (`PLANTD_CLOUDWATCH_PREFIX`).
pub const DEFAULT_PREFIX: &str = "/plantd/sites";
/// Most events in one `PutLogEvents`.
pub const MAX_EVENTS: usize = 10_000;
/// Most bytes in one `PutLogEvents` (messages plus 26 bytes per event).
pub const MAX_PUT_BYTES: usize = 1_048_576;
/// What CloudWatch adds to each event's message length.
pub const EVENT_OVERHEAD: usize = 26;
/// Most bytes of one event's message.
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
/// Longest span of timestamps in one `PutLogEvents`.
pub const MAX_SPAN: Duration = Duration::hours(24);
/// `(stream, sequence)` keys a warm instance remembers having written.
pub const RECENT_KEYS: usize = 100_000;
/// The group of records whose subject named no site.
pub const UNKNOWN: &str = "_unknown";

/// The log group of `site`'s records under `prefix`.
pub fn group_name(prefix: &str, site: &str) -> String {
    let site = if site.is_empty() { UNKNOWN } else { site };
    let name: String = format!("{}/{site}", prefix.trim_end_matches('/'))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-/#".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.chars().take(512).collect()
}

/// The log stream of `source`: the source with `:` and `*` (which a
/// stream name cannot hold) as `_`, at most 512 characters.
pub fn stream_name(source: &str) -> String {
    if source.is_empty() {
        return UNKNOWN.to_owned();
    }
    source
        .chars()
        .map(|c| if c == ':' || c == '*' { '_' } else { c })
        .take(512)
        .collect()
}

/// One event ready for CloudWatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The record as a JSON line.
    pub message: String,
}

impl Event {
    /// The bytes CloudWatch counts for it.
    pub fn size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// The event of `record`, forwarded at `now` (see the module's limits).
pub fn event_of(record: &LogRecord, now: OffsetDateTime) -> Event {
    let mut message = serde_json::to_string(record).unwrap_or_default();
    if message.len() > MAX_EVENT_BYTES {
        let mut cut = record.clone();
        cut.fields = serde_json::Map::new();
        cut.fields
            .insert("truncated".into(), serde_json::Value::Bool(true));
        let mut end = MAX_EVENT_BYTES.saturating_sub(4096).min(cut.message.len());
        while !cut.message.is_char_boundary(end) {
            end -= 1;
        }
        cut.message.truncate(end);
        message = serde_json::to_string(&cut).unwrap_or_default();
        if message.len() > MAX_EVENT_BYTES {
            // Only a pathological source or subject gets here.
            let mut end = MAX_EVENT_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
    }
    let accepted = (now - Duration::days(14) + Duration::hours(1))
        ..(now + Duration::hours(2) - Duration::minutes(5));
    let at = if accepted.contains(&record.time) {
        record.time
    } else {
        now
    };
    let timestamp = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
    Event { timestamp, message }
}

/// Splits events (sorted by timestamp) into `PutLogEvents` calls: ranges
/// of at most [`MAX_EVENTS`] events and [`MAX_PUT_BYTES`] bytes whose
/// timestamps span at most [`MAX_SPAN`].
pub fn plan_puts(events: &[Event]) -> Vec<std::ops::Range<usize>> {
    let span = i64::try_from(MAX_SPAN.whole_milliseconds()).unwrap_or(i64::MAX);
    let mut calls = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, e) in events.iter().enumerate() {
        let first = events.get(start).map_or(e.timestamp, |f| f.timestamp);
        let full = i - start == MAX_EVENTS
            || bytes + e.size() > MAX_PUT_BYTES
            || e.timestamp - first > span;
        if i > start && full {
            calls.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += e.size();
    }
    if start < events.len() {
        calls.push(start..events.len());
    }
    calls
}

/// Remembers the most recent keys written (FIFO eviction).
#[derive(Debug, Default)]
struct RecentKeys {
    /// For membership.
    set: HashSet<(Arc<str>, u64)>,
    /// For eviction, oldest first.
    order: VecDeque<(Arc<str>, u64)>,
}

impl RecentKeys {
    fn contains(&self, key: &(Arc<str>, u64)) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: (Arc<str>, u64)) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > RECENT_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// Writes records to CloudWatch Logs; as a [`Handler`] it parses each
/// item and forwards it, failing only the items whose put failed.
#[derive(Debug)]
pub struct CloudWatch {
    /// The CloudWatch Logs client.
    client: aws_sdk_cloudwatchlogs::Client,
    /// Log group prefix.
    prefix: String,
    /// Retention for groups created here, in days.
    retention_days: Option<i32>,
    /// Keys already written by this instance.
    recent: Mutex<RecentKeys>,
}

/// What one `(group, stream)` receives from a batch.
struct Destination {
    /// Its events, sorted by timestamp, with the index of their item.
    events: Vec<(usize, Event)>,
}

impl CloudWatch {
    /// Forwards with `client` to groups under `prefix`.
    pub fn new(client: aws_sdk_cloudwatchlogs::Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            retention_days: None,
            recent: Mutex::new(RecentKeys::default()),
        }
    }

    /// Groups created from now on keep events `days` days.
    #[must_use]
    pub fn with_retention_days(mut self, days: Option<i32>) -> Self {
        self.retention_days = days;
        self
    }

    /// Writes `records` (by their index in the batch); the indices that
    /// failed, with why. Records already written by this instance are
    /// skipped.
    pub async fn put_records(&self, records: &[LogRecord]) -> Vec<(usize, String)> {
        let now = OffsetDateTime::now_utc();
        let mut destinations: BTreeMap<(String, String), Destination> = BTreeMap::new();
        {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            for (i, r) in records.iter().enumerate() {
                if recent.contains(&(r.stream.clone(), r.sequence)) {
                    tracing::debug!(stream = %r.stream, stream_seq = r.sequence, "already in CloudWatch; skipped");
                    continue;
                }
                destinations
                    .entry((group_name(&self.prefix, &r.site), stream_name(&r.source)))
                    .or_insert_with(|| Destination { events: Vec::new() })
                    .events
                    .push((i, event_of(r, now)));
            }
        }
        let puts = destinations
            .into_iter()
            .map(|((group, stream), mut d)| async move {
                d.events.sort_by_key(|(_, e)| e.timestamp);
                let events: Vec<Event> = d.events.iter().map(|(_, e)| e.clone()).collect();
                let mut failures = Vec::new();
                let mut written = Vec::new();
                for call in plan_puts(&events) {
                    let indices = d.events[call.clone()].iter().map(|(i, _)| *i);
                    match self.put(&group, &stream, &events[call.clone()]).await {
                        Ok(()) => written.extend(indices),
                        Err(why) => failures.extend(indices.map(|i| (i, why.clone()))),
                    }
                }
                (written, failures)
            });
        let mut failures = Vec::new();
        for (written, failed) in futures::future::join_all(puts).await {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            for i in written {
                if let Some(r) = records.get(i) {
                    recent.insert((r.stream.clone(), r.sequence));
                }
            }
            failures.extend(failed);
        }
        failures
    }

    /// One `PutLogEvents`, creating the group and stream when missing.
    async fn put(&self, group: &str, stream: &str, events: &[Event]) -> Result<(), String> {
        let first = self.put_once(group, stream, events).await;
        match first {
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                self.create(group, stream).await?;
                self.put_once(group, stream, events).await.map_err(|e| {
                    format!("PutLogEvents {group} {stream}: {}", DisplayErrorContext(&e))
                })
            }
            Err(e) => Err(format!(
                "PutLogEvents {group} {stream}: {}",
                DisplayErrorContext(&e)
            )),
            Ok(()) => Ok(()),
        }
    }

    async fn put_once(
        &self,
        group: &str,
        stream: &str,
        events: &[Event],
    ) -> Result<
        (),
        aws_sdk_cloudwatchlogs::error::SdkError<
            aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError,
        >,
    > {
        let mut input = Vec::with_capacity(events.len());
        for e in events {
            match InputLogEvent::builder()
                .timestamp(e.timestamp)
                .message(&e.message)
                .build()
            {
                Ok(ev) => input.push(ev),
                Err(err) => tracing::error!(error = %err, "cannot build a CloudWatch event"),
            }
        }
        let out = self
            .client
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(input))
            .send()
            .await?;
        if let Some(r) = out.rejected_log_events_info() {
            // Stamping keeps timestamps inside the accepted window, so this
            // is CloudWatch changing its mind; a retry would not help.
            tracing::warn!(group, stream, too_new_from = ?r.too_new_log_event_start_index(), too_old_to = ?r.too_old_log_event_end_index(), expired_to = ?r.expired_log_event_end_index(), "CloudWatch rejected some events");
        }
        Ok(())
    }

    /// Creates `group` (with the retention) and `stream`; either existing
    /// already is fine.
    async fn create(&self, group: &str, stream: &str) -> Result<(), String> {
        match self
            .client
            .create_log_group()
            .log_group_name(group)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(group, "CloudWatch log group created");
                if let Some(days) = self.retention_days
                    && let Err(e) = self
                        .client
                        .put_retention_policy()
                        .log_group_name(group)
                        .retention_in_days(days)
                        .send()
                        .await
                {
                    tracing::warn!(group, days, error = %DisplayErrorContext(&e), "cannot set the log group's retention");
                }
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
            Err(e) => {
                return Err(format!(
                    "CreateLogGroup {group}: {}",
                    DisplayErrorContext(&e)
                ));
            }
        }
        match self
            .client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "CreateLogStream {group} {stream}: {}",
                DisplayErrorContext(&e)
            )),
        }
    }
}

impl Handler for CloudWatch {
    /// Parses every item (never fails: a malformed line is a text record)
    /// and writes the records; an item fails only when its put failed.
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let records: Vec<LogRecord> = batch
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
        let mut outcome = BatchOutcome::success();
        for (i, why) in self.put_records(&records).await {
            outcome.record_failure(i, why);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, time: OffsetDateTime, message: &str) -> LogRecord {
        LogRecord {
            stream: "PLANTD_LOGS".into(),
            sequence: seq,
            time,
            site: "plant-1".into(),
            source: "line1/plc".into(),
            level: crate::record::Level::Error,
            message: message.into(),
            fields: serde_json::Map::new(),
            format: crate::record::Format::Text,
            parse_error: None,
        }
    }

    #[test]
    fn names_are_valid_cloudwatch_names() {
        assert_eq!(
            group_name("/plantd/prod/sites/", "plant-1"),
            "/plantd/prod/sites/plant-1"
        );
        assert_eq!(group_name(DEFAULT_PREFIX, ""), "/plantd/sites/_unknown");
        assert_eq!(stream_name("line1/plc"), "line1/plc");
        assert_eq!(stream_name("a:b*c"), "a_b_c");
        assert_eq!(stream_name(""), "_unknown");
        assert_eq!(stream_name(&"x".repeat(600)).len(), 512);
    }

    #[test]
    fn events_keep_their_time_inside_the_window_and_fit_one_event() {
        let now = OffsetDateTime::now_utc();
        let recent = now - Duration::hours(3);
        let e = event_of(&record(1, recent, "boom"), now);
        assert_eq!(
            i128::from(e.timestamp),
            recent.unix_timestamp_nanos() / 1_000_000
        );
        let json: serde_json::Value = serde_json::from_str(&e.message).expect("JSON");
        assert_eq!(json["message"], "boom");
        assert_eq!(json["sequence"], 1);
        let old = event_of(&record(2, now - Duration::days(30), "old"), now);
        assert_eq!(
            i128::from(old.timestamp),
            now.unix_timestamp_nanos() / 1_000_000
        );
        let huge = event_of(&record(3, now, &"é".repeat(200_000)), now);
        assert!(huge.message.len() <= MAX_EVENT_BYTES);
        let json: serde_json::Value = serde_json::from_str(&huge.message).expect("still JSON");
        assert_eq!(json["fields"]["truncated"], true);
    }

    #[test]
    fn puts_respect_count_bytes_and_span() {
        let ev = |t: i64, n: usize| Event {
            timestamp: t,
            message: "x".repeat(n),
        };
        let many: Vec<Event> = (0..25_000).map(|i| ev(i, 10)).collect();
        let calls = plan_puts(&many);
        assert_eq!(calls, vec![0..10_000, 10_000..20_000, 20_000..25_000]);
        let big: Vec<Event> = (0..10).map(|i| ev(i, 200_000)).collect();
        let calls = plan_puts(&big);
        assert!(calls.iter().all(|c| c.len() <= 5), "{calls:?}");
        assert_eq!(calls.iter().map(|c| c.len()).sum::<usize>(), 10);
        let day = 24 * 3_600_000;
        let spread = vec![ev(0, 1), ev(day, 1), ev(day + 1, 1), ev(2 * day + 1, 1)];
        assert_eq!(plan_puts(&spread), vec![0..2, 2..4]);
        assert!(plan_puts(&[]).is_empty());
    }
}
