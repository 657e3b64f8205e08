//! The checkpoint records in KV bucket `plantd_analytics_state` and the
//! raw reads and conditional writes on them.
//!
//! Per (site, rule), under the prefix `<site>.<rule>`:
//!
//! | key | value | written |
//! |---|---|---|
//! | `<site>.<rule>.h` | [`Head`]: the commit record — generation, rule definition, watermark (`max_event`), counters, an idle-advance intent | last in every commit |
//! | `<site>.<rule>.s.<generation>.<part>` | [`SegmentRecord`]: the `KeyCheckpoint`s (each with the last stream sequence applied) of the keys the commit of that generation wrote — those an event changed in the batch, and those carried forward out of mostly superseded segments — in parts of at most [`PART_BYTES`] | once, by the commit of that generation, before its commit record |
//!
//! A segment of a generation above the commit record's belongs to a
//! commit that did not finish: a restore blanks it. A committed segment
//! whose every key was written again by a later committed one holds
//! nothing current and is purged. Every write is conditional on the
//! subject's last sequence (`Nats-Expected-Last-Subject-Sequence`), so a
//! second writer is noticed, never silently overwritten. Why segments:
//! decision 0029 ("One record per commit").

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt as _;
use plantd_analytics::{KeyCheckpoint, Rule, RuleMetrics};
use plantd_shared::streams::ANALYTICS_STATE_BUCKET;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The checkpoint layout this code writes; a commit record of another
/// layout is not read (the rule starts afresh).
pub(crate) const LAYOUT: u32 = 2;

/// Most bytes of one segment part (nats-server refuses messages above its
/// `max_payload`, 1 MiB by default). A single key larger than this is
/// written as a part of its own.
pub(crate) const PART_BYTES: usize = 512 * 1024;

/// The commit record of one (site, rule).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Head {
    /// The checkpoint layout ([`LAYOUT`]); absent in records of the first
    /// layout (two slots per key).
    #[serde(default)]
    pub layout: u32,
    /// The generation committed: segments of a higher one belong to a
    /// commit that did not finish.
    pub generation: u64,
    /// The definition the state belongs to (a changed rule starts afresh).
    pub rule: Rule,
    /// The rule's latest event time (its watermark plus the delay).
    pub max_event: Option<i64>,
    /// The engine's counters.
    pub metrics: RuleMetrics,
    /// Highest stream sequence applied to any key of the rule.
    pub through: u64,
    /// Set before an idle advance publishes its results: a restore
    /// advances to it again, so the results are the same ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance_to: Option<i64>,
}

/// One key in a segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentKey {
    /// The key's position in the engine's interning order (restored in
    /// that order, so results within one instant come in the same order).
    pub ord: u32,
    /// The engine's checkpoint of the key.
    pub ckpt: KeyCheckpoint,
}

/// One part of the segment a commit wrote (written as JSON by
/// `site_rule::commit::split_parts`, one key at a time).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SegmentRecord {
    /// The generation of the commit that wrote it.
    pub generation: u64,
    /// The keys, each at most once per segment.
    pub keys: Vec<SegmentKey>,
}

/// One segment part as read: its subject's last sequence and, unless
/// empty, deleted or unreadable, its record.
#[derive(Debug)]
pub(crate) struct PartEntry {
    /// The KV key.
    pub key: String,
    /// The KV revision (the subject's last stream sequence).
    pub rev: u64,
    /// The record.
    pub record: Option<SegmentRecord>,
}

/// Everything stored for one (site, rule).
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The commit record and its revision.
    pub head: Option<(Head, u64)>,
    /// The head's revision when it is deleted or unreadable (0: none).
    pub head_rev: u64,
    /// Segment parts by (generation, part).
    pub parts: BTreeMap<(u64, u32), PartEntry>,
    /// Records of another layout were found (they are not read).
    pub foreign: bool,
}

/// The KV key prefix of (site, rule).
pub(crate) fn prefix(site: &str, rule: &str) -> String {
    format!("{site}.{rule}")
}

/// The commit record's KV key.
pub(crate) fn head_key(prefix: &str) -> String {
    format!("{prefix}.h")
}

/// Part `part` of the segment of generation `generation`.
pub(crate) fn part_key(prefix: &str, generation: u64, part: u32) -> String {
    format!("{prefix}.s.{generation}.{part}")
}

/// The subject a KV key is stored on.
pub(crate) fn kv_subject(key: &str) -> String {
    format!("$KV.{ANALYTICS_STATE_BUCKET}.{key}")
}

/// The stream under the bucket.
fn kv_stream() -> String {
    format!("KV_{ANALYTICS_STATE_BUCKET}")
}

/// Reads every record under `prefix` (latest value per key).
///
/// # Errors
/// [`Error::Nats`] when the bucket cannot be read.
pub(crate) async fn load(js: &jetstream::Context, prefix: &str) -> Result<Stored, Error> {
    let stream = js
        .get_stream(kv_stream())
        .await
        .map_err(|e| Error::nats("open the checkpoint bucket", e))?;
    let filter = kv_subject(&format!("{prefix}.>"));
    let c = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: filter,
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            replay_policy: consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::nats("read the checkpoints", e))?;
    let mut stored = Stored::default();
    if c.cached_info().num_pending == 0 {
        return Ok(stored);
    }
    let mut messages = c
        .messages()
        .await
        .map_err(|e| Error::nats("read the checkpoints", e))?;
    let head = head_key(prefix);
    let strip = kv_subject("");
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| Error::nats("read the checkpoints", e))?;
        let info = m
            .info()
            .map_err(|e| Error::nats("read the checkpoints", e))?;
        let (rev, pending) = (info.stream_sequence, info.pending);
        let key = m.subject.strip_prefix(strip.as_str()).unwrap_or_default();
        let deleted = is_deletion(m.headers.as_ref()) || m.payload.is_empty();
        if key == head {
            match serde_json::from_slice::<Head>(&m.payload) {
                Ok(h) if !deleted => stored.head = Some((h, rev)),
                Ok(_) => stored.head_rev = rev,
                Err(e) => {
                    tracing::warn!(key, error = %e, "analytics: unreadable commit record; the rule starts afresh");
                    stored.head_rev = rev;
                }
            }
        } else if let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
            let Some((generation, part)) = rest
                .strip_prefix("s.")
                .and_then(|r| r.split_once('.'))
                .and_then(|(g, p)| Some((g.parse::<u64>().ok()?, p.parse::<u32>().ok()?)))
            else {
                // `.a.<key>` / `.b.<key>`: the first layout's slots.
                stored.foreign |= !deleted;
                if pending == 0 {
                    break;
                }
                continue;
            };
            let record = if deleted {
                None
            } else {
                match serde_json::from_slice::<SegmentRecord>(&m.payload) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "analytics: unreadable checkpoint segment ignored");
                        None
                    }
                }
            };
            stored.parts.insert(
                (generation, part),
                PartEntry {
                    key: key.to_owned(),
                    rev,
                    record,
                },
            );
        }
        if pending == 0 {
            break;
        }
    }
    Ok(stored)
}

/// Whether a KV message is a delete or purge marker.
fn is_deletion(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|v| matches!(v.as_str(), "DEL" | "PURGE"))
}

/// Removes everything under `prefix` (a deleted or changed rule).
///
/// # Errors
/// [`Error::Nats`] when the purge fails.
pub(crate) async fn purge(js: &jetstream::Context, prefix: &str) -> Result<(), Error> {
    let stream = js
        .get_stream(kv_stream())
        .await
        .map_err(|e| Error::nats("open the checkpoint bucket", e))?;
    stream
        .purge()
        .filter(kv_subject(&format!("{prefix}.>")))
        .await
        .map_err(|e| Error::nats("purge a rule's checkpoints", e))?;
    Ok(())
}

/// Removes the parts of the segment of `generation` under `prefix` (a
/// segment every key of which a later commit wrote again) stored before
/// stream sequence `before` (the revision of the commit record that
/// superseded it): a purge that arrives late never removes a part written
/// after that commit record.
///
/// # Errors
/// [`Error::Nats`] when the purge fails.
pub(crate) async fn purge_segment(
    js: &jetstream::Context,
    prefix: &str,
    generation: u64,
    before: u64,
) -> Result<(), Error> {
    let stream = js
        .get_stream_no_info(kv_stream())
        .await
        .map_err(|e| Error::nats("open the checkpoint bucket", e))?;
    stream
        .purge()
        .filter(kv_subject(&format!("{prefix}.s.{generation}.>")))
        .sequence(before)
        .await
        .map_err(|e| Error::nats("purge a superseded checkpoint segment", e))?;
    Ok(())
}

/// Conditional writes, sent together and acknowledged together.
#[derive(Default)]
pub(crate) struct Writes {
    /// (KV key, expected revision, value).
    items: Vec<(String, u64, Bytes)>,
}

impl Writes {
    /// Adds a write of `value` to `key`, expecting the key's last revision
    /// to be `rev` (0: never written).
    pub fn push(&mut self, key: String, rev: u64, value: Bytes) {
        self.items.push((key, rev, value));
    }

    /// How many writes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Sends every write, then waits for every acknowledgement; returns the
    /// new revisions in order.
    ///
    /// # Errors
    /// [`Error::Conflict`] when a key was written by someone else,
    /// [`Error::Nats`] when a write was not acknowledged.
    pub async fn send(self, js: &jetstream::Context) -> Result<Vec<u64>, Error> {
        let mut acks = Vec::with_capacity(self.items.len());
        for (key, rev, value) in self.items {
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                rev.to_string().as_str(),
            );
            let ack = js
                .publish_with_headers(kv_subject(&key), headers, value)
                .await
                .map_err(|e| Error::nats("write a checkpoint", e))?;
            acks.push((key, ack));
        }
        let mut revs = Vec::with_capacity(acks.len());
        for (key, ack) in acks {
            match ack.await {
                Ok(a) => revs.push(a.sequence),
                Err(e) => {
                    let text = e.to_string();
                    if text.contains("wrong last sequence") {
                        return Err(Error::Conflict(key));
                    }
                    return Err(Error::nats("write a checkpoint", e));
                }
            }
        }
        Ok(revs)
    }
}
