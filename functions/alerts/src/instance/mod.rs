//! One alert instance — a (rule, key) on one site — and its lifecycle:
//! inactive → pending → firing → inactive (resolved), and no-data, its own
//! state that is never "resolved". Pure logic: what an observation does to
//! the state ([`InstanceState::observe`]), what the clock does
//! ([`InstanceState::evaluate`]), and the records each transition puts in
//! the instance's outbox. [`crate::store`] keeps it in
//! `plantd_alert_state` under [`InstanceState::id`]; [`crate::engine`]
//! drives it.
//!
//! `lifecycle` holds the evaluation and the records it makes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::record::{Ack, AlertRecord, AlertState, Evidence};
use crate::rule::{Condition, Rule};

/// Evidence kept per instance (newest last).
pub const MAX_EVIDENCE: usize = 20;
/// Stream sequences remembered above the applied floor.
pub const MAX_APPLIED: usize = 512;
/// Longest evidence text, in bytes.
pub const MAX_TEXT: usize = 1024;

/// Which stream items an instance has applied: every sequence at or below
/// `floor`, and those in `above`. An instance reads one stream, so the
/// sequence alone identifies an item. When `above` grows past
/// [`MAX_APPLIED`], its smallest entries fold into `floor` (an item that
/// old is not redelivered for the first time).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Every sequence ≤ this is applied.
    pub floor: u64,
    /// Applied sequences above `floor`.
    #[serde(default)]
    pub above: BTreeSet<u64>,
}

impl Applied {
    /// Whether `seq` was applied.
    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.floor || self.above.contains(&seq)
    }

    /// Marks `seq` applied.
    pub fn insert(&mut self, seq: u64) {
        if seq <= self.floor {
            return;
        }
        self.above.insert(seq);
        while self.above.len() > MAX_APPLIED {
            if let Some(low) = self.above.pop_first() {
                self.floor = self.floor.max(low);
            }
        }
    }
}

/// What one stream item tells an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A telemetry reading on a matching topic: the number read (`None`
    /// when the payload had none) and whether it meets the threshold.
    Reading {
        /// The number read.
        value: Option<f64>,
        /// Whether the threshold condition holds for it.
        holds: bool,
    },
    /// Input that keeps the instance alive (telemetry on the topic for an
    /// absence rule, any log line of the group for log rules), and
    /// whether it matched the rule's log filter / topic.
    Seen {
        /// Whether it is a matching line (log rules) or message (absence).
        matched: bool,
    },
    /// An analytics result with a signal (analytics conditions): `fire`
    /// makes the condition hold, `clear` ends it.
    Signal {
        /// True for `fire`, false for `clear`.
        fire: bool,
        /// The result's main value (`score` when it has one, else its
        /// first), for the records.
        value: Option<f64>,
        /// When the result was detected (its `window_end`, ms since the
        /// epoch): a signal older than the newest applied (a retried item
        /// arriving late) does not overturn it. It is also the signal's
        /// event time, against which a rule's `for` is measured.
        at: i64,
        /// The episode the signal belongs to (its `window_start`) and its
        /// revision in it: signals detected at the same `at` (a
        /// `followed_by` match's fire and clear) are ordered by these.
        episode: (i64, u32),
    },
}

impl Observation {
    /// The observation's event time, when it carries one (analytics
    /// signals: their `window_end`); other input is judged at the time it
    /// is applied.
    pub fn event_time(&self) -> Option<OffsetDateTime> {
        match self {
            Self::Signal { at, .. } => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(*at) * 1_000_000).ok()
            }
            Self::Reading { .. } | Self::Seen { .. } => None,
        }
    }
}

/// One alert instance as stored in `plantd_alert_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    /// `<rule>.<key hash>`: its KV key and the id the API uses.
    pub id: String,
    /// The rule's organisation.
    pub org: String,
    /// The site.
    pub site: String,
    /// The rule id.
    pub rule: String,
    /// The group-by key (`topic=line1/temp`; empty: one per site).
    pub key: String,
    /// Rule labels plus `rule`, `severity`, `site` and the group-by values.
    pub labels: BTreeMap<String, String>,
    /// Where it is.
    pub state: AlertState,
    /// Transitions so far.
    pub n: u64,
    /// When it entered `state`.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Since when the condition has held without a break.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub holds_since: Option<OffsetDateTime>,
    /// When it started firing, while it fires.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub firing_since: Option<OffsetDateTime>,
    /// The last input (for no-data).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// The last matching input (for absence), or when the instance began.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_match: Option<OffsetDateTime>,
    /// The newest reading (threshold), or the last count/rate evaluated.
    #[serde(default)]
    pub value: Option<f64>,
    /// Whether the newest reading met the threshold when it arrived (the
    /// lifecycle judges the stored `value` with the current rule).
    #[serde(default)]
    pub reading_holds: bool,
    /// Log counts: bucket number (ms since the epoch / bucket size) →
    /// matching lines.
    #[serde(default)]
    pub buckets: BTreeMap<i64, u64>,
    /// What caused the condition to hold (newest last).
    #[serde(default)]
    pub evidence: VecDeque<Evidence>,
    /// Items applied.
    #[serde(default)]
    pub applied: Applied,
    /// The acknowledgement of the current firing.
    #[serde(default)]
    pub ack: Option<Ack>,
    /// Repeat records written during the current firing.
    #[serde(default)]
    pub repeats: u64,
    /// When a record was last written for the current firing (for
    /// repeats).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_notice: Option<OffsetDateTime>,
    /// True when the current firing was last announced under a silence (its
    /// firing or repeat record was `silenced`): when the silence ends while
    /// it still fires, a `Repeat` announces it, as Alertmanager does.
    #[serde(default)]
    pub announced_silenced: bool,
    /// Records made and not yet confirmed stored in `PLANTD_ALERTS`.
    #[serde(default)]
    pub outbox: Vec<AlertRecord>,
    /// Analytics conditions: the detection time (ms) of the newest signal
    /// applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_at: Option<i64>,
    /// Analytics conditions: the episode (`window_start`) and revision of
    /// the newest signal applied, ordering signals with the same
    /// `signal_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_episode: Option<(i64, u32)>,
}

/// FNV-1a, 64 bits: a stable hash across processes and versions.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The id of the instance of `rule` (in `org`) on `site` with group key
/// `key`: `<rule>.<16 hex digits>`.
pub fn instance_id(org: &str, rule: &str, site: &str, key: &str) -> String {
    format!("{rule}.{:016x}", fnv1a(&[org, site, key]))
}

/// The group key of `group` labels: `k=v` joined by `,`, in label order
/// (empty when the rule groups by site only).
pub fn group_key(group: &BTreeMap<String, String>) -> String {
    group
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether an instance key was made by `rule`'s current `group_by` (a
/// rule whose grouping changed leaves instances no item reaches any more).
///
/// Every group label of an instance holds the same value — the item's
/// topic, log source or analytics result key — and that value may itself
/// hold ',' or '=' (`topic=line1/a=b,c`), so the key is matched as the
/// labels the rule wants with one common value, never split on ','.
pub fn key_fits(rule: &Rule, key: &str) -> bool {
    let mut want: Vec<&str> = rule
        .group_by
        .iter()
        .filter(|g| **g != crate::rule::GroupBy::Site)
        .map(|g| g.label())
        .collect();
    if let Condition::Analytics { .. } = rule.condition {
        want.push(crate::analytics::KEY_LABEL);
    }
    want.sort_unstable();
    want.dedup();
    let Some(first) = want.first() else {
        return key.is_empty();
    };
    // `l1=v,l2=v,…`: the labels, '=' each, ',' between, and n copies of v.
    let fixed: usize = want.iter().map(|l| l.len() + 1).sum::<usize>() + want.len() - 1;
    let Some(values) = key.len().checked_sub(fixed) else {
        return false;
    };
    if values % want.len() != 0 {
        return false;
    }
    let start = first.len() + 1;
    let Some(value) = key.get(start..start + values / want.len()) else {
        return false;
    };
    let mut expect = String::with_capacity(key.len());
    for (i, l) in want.iter().enumerate() {
        if i > 0 {
            expect.push(',');
        }
        expect.push_str(l);
        expect.push('=');
        expect.push_str(value);
    }
    expect == key
}

/// The `<key hash>` part of an instance id.
pub fn key_hash(id: &str) -> &str {
    id.rsplit_once('.').map_or(id, |(_, h)| h)
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Evidence from one item.
pub fn evidence(
    stream: &str,
    sequence: u64,
    time: OffsetDateTime,
    topic: &str,
    value: Option<f64>,
    text: Option<String>,
) -> Evidence {
    Evidence {
        stream: stream.to_owned(),
        sequence,
        time,
        topic: topic.to_owned(),
        value,
        text: text.map(truncate),
    }
}

impl InstanceState {
    /// A new inactive instance of `rule` on `site`.
    pub fn new(
        org: &str,
        rule: &Rule,
        site: &str,
        key: &str,
        group: &BTreeMap<String, String>,
        now: OffsetDateTime,
    ) -> Self {
        let mut labels = rule.labels.clone();
        labels.insert("rule".into(), rule.id.clone());
        labels.insert(
            "severity".into(),
            serde_json::to_value(rule.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        );
        labels.insert("site".into(), site.to_owned());
        labels.extend(group.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self {
            id: instance_id(org, &rule.id, site, key),
            org: org.to_owned(),
            site: site.to_owned(),
            rule: rule.id.clone(),
            key: key.to_owned(),
            labels,
            state: AlertState::Inactive,
            n: 0,
            since: now,
            holds_since: None,
            firing_since: None,
            last_seen: None,
            last_match: Some(now),
            value: None,
            reading_holds: false,
            buckets: BTreeMap::new(),
            evidence: VecDeque::new(),
            applied: Applied::default(),
            ack: None,
            repeats: 0,
            announced_silenced: false,
            last_notice: None,
            outbox: Vec::new(),
            signal_at: None,
            signal_episode: None,
        }
    }

    /// Applies one item (sequence `seq` of the rule's stream) at `now`;
    /// `false` when it was applied before (nothing changes).
    pub fn observe(
        &mut self,
        rule: &Rule,
        seq: u64,
        obs: &Observation,
        ev: Option<Evidence>,
        now: OffsetDateTime,
    ) -> bool {
        if self.applied.contains(seq) {
            return false;
        }
        self.applied.insert(seq);
        self.last_seen = Some(now);
        match obs {
            Observation::Reading { value, holds } => {
                if value.is_some() {
                    self.value = *value;
                    self.reading_holds = *holds;
                    if *holds {
                        self.push_evidence(ev);
                    } else if self.state == AlertState::Inactive {
                        self.evidence.clear();
                    }
                }
            }
            Observation::Seen { matched } => {
                if *matched {
                    self.last_match = Some(now);
                    if let Condition::LogCount { .. } = rule.condition {
                        let b = bucket_ms(rule);
                        *self.buckets.entry(now_ms(now) / b).or_default() += 1;
                        self.push_evidence(ev);
                    }
                }
            }
            Observation::Signal {
                fire,
                value,
                at,
                episode,
            } => {
                if let Some(newest) = self.signal_at {
                    let newest = (newest, self.signal_episode.unwrap_or((i64::MIN, 0)));
                    if (*at, *episode) < newest {
                        return true;
                    }
                }
                self.signal_at = Some(*at);
                self.signal_episode = Some(*episode);
                self.value = *value;
                self.reading_holds = *fire;
                if *fire {
                    self.push_evidence(ev);
                } else if self.state == AlertState::Inactive {
                    self.evidence.clear();
                }
            }
        }
        true
    }

    fn push_evidence(&mut self, ev: Option<Evidence>) {
        if let Some(ev) = ev {
            self.evidence.push_back(ev);
            while self.evidence.len() > MAX_EVIDENCE {
                self.evidence.pop_front();
            }
        }
    }
}

mod lifecycle;
#[cfg(test)]
mod tests;

pub(crate) fn now_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The log-count bucket size of `rule`: a 60th of its window, at least a
/// second (so a window is at most ~60 buckets).
pub(crate) fn bucket_ms(rule: &Rule) -> i64 {
    match &rule.condition {
        Condition::LogCount { window, .. } => (window.as_millis() / 60).max(1000),
        _ => 1000,
    }
}
