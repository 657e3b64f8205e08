//! The checkpoint records in KV bucket `plantd_analytics_state` and the
//! raw reads and conditional writes on them.
//!
//! Per (site, rule), under the prefix `<site>.<rule>`:
//!
//! | key | value | written |
//! |---|---|---|
//! | `<site>.<rule>.h` | [`Head`]: the commit record — generation, rule definition, watermark (`max_event`), counters, an idle-advance intent | last in every commit |
//! | `<site>.<rule>.a.<key>` / `.b.<key>` | [`SlotRecord`]: one key's `KeyCheckpoint` (with the last stream sequence applied) at a generation | for the keys an event changed in the batch, into the slot that does not hold the key's committed state |
//!
//! `<key>` is the analytics key in base64url (keys are topics or payload
//! values; a KV key allows fewer characters). Every write is conditional
//! on the subject's last sequence (`Nats-Expected-Last-Subject-Sequence`),
//! so a second writer is noticed, never silently overwritten. Why two
//! slots: decision 0029.

use std::collections::HashMap;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer};
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use plantd_analytics::{KeyCheckpoint, Rule, RuleMetrics};
use plantd_shared::streams::ANALYTICS_STATE_BUCKET;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The commit record of one (site, rule).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Head {
    /// The generation committed: slot records with a higher one belong to
    /// a commit that did not finish.
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

/// One key's state at a generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SlotRecord {
    /// The generation of the commit that wrote it.
    pub generation: u64,
    /// The key's position in the engine's interning order (restored in
    /// that order, so results within one instant come in the same order).
    pub ord: u32,
    /// The engine's checkpoint of the key.
    pub ckpt: KeyCheckpoint,
}

/// One slot of one key as read: its subject's last sequence and, unless
/// empty, deleted or unreadable, its record.
#[derive(Debug)]
pub(crate) struct SlotEntry {
    /// The KV revision (the subject's last stream sequence).
    pub rev: u64,
    /// The record.
    pub record: Option<SlotRecord>,
}

/// Everything stored for one (site, rule).
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The commit record and its revision.
    pub head: Option<(Head, u64)>,
    /// The head's revision when it is deleted or unreadable (0: none).
    pub head_rev: u64,
    /// Encoded key → slots a and b.
    pub slots: HashMap<String, [Option<SlotEntry>; 2]>,
}

/// The KV key prefix of (site, rule).
pub(crate) fn prefix(site: &str, rule: &str) -> String {
    format!("{site}.{rule}")
}

/// The commit record's KV key.
pub(crate) fn head_key(prefix: &str) -> String {
    format!("{prefix}.h")
}

/// Slot `slot` (0 = a, 1 = b) of an encoded key.
pub(crate) fn slot_key(prefix: &str, slot: usize, encoded: &str) -> String {
    let s = if slot == 0 { 'a' } else { 'b' };
    format!("{prefix}.{s}.{encoded}")
}

/// An analytics key as a KV key token.
pub(crate) fn encode_key(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.as_bytes())
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
        } else if let Some((slot, encoded)) = key
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.split_once('.'))
        {
            let slot = match slot {
                "a" => 0,
                "b" => 1,
                _ => continue,
            };
            let record = if deleted {
                None
            } else {
                match serde_json::from_slice::<SlotRecord>(&m.payload) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "analytics: unreadable key checkpoint ignored");
                        None
                    }
                }
            };
            stored.slots.entry(encoded.to_owned()).or_default()[slot] =
                Some(SlotEntry { rev, record });
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
