//! One alert instance — a (rule, key) on one site — and its lifecycle:
//! inactive → pending → firing → inactive (resolved), and no-data, its own
//! state that is never "resolved". Pure logic: what an observation does to
//! the state ([`InstanceState::observe`]), what the clock does
//! ([`InstanceState::evaluate`]), and the records each transition puts in
//! the instance's outbox. [`crate::store`] keeps it in
//! `plantd_alert_state` under [`InstanceState::id`]; [`crate::engine`]
//! drives it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::record::{Ack, AlertRecord, AlertState, Evidence, RecordKind};
use crate::rule::{Condition, Measure, NoDataBehaviour, Rule};
use crate::silence::Silence;

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
    /// Whether the newest reading met the threshold.
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
    /// Records made and not yet confirmed stored in `PLANTD_ALERTS`.
    #[serde(default)]
    pub outbox: Vec<AlertRecord>,
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
            last_notice: None,
            outbox: Vec::new(),
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

    /// Whether the condition holds at `now`, the value it was judged on,
    /// and a line for people.
    fn condition(&mut self, rule: &Rule, now: OffsetDateTime) -> (bool, Option<f64>, String) {
        match &rule.condition {
            Condition::Threshold { op, value, .. } => {
                let reading = self.value;
                let what = self
                    .labels
                    .get("topic")
                    .cloned()
                    .unwrap_or_else(|| "reading".to_owned());
                let summary = match reading {
                    Some(r) => format!("{what} = {r} ({op} {value})"),
                    None => format!("{what}: no reading yet"),
                };
                (self.reading_holds, reading, summary)
            }
            Condition::Absence { topic, after }
            | Condition::LogAbsence {
                filter: topic,
                after,
            } => {
                let silent = self.last_match.map_or(time::Duration::ZERO, |t| now - t);
                let holds = silent >= after.to_time();
                let secs = silent.as_seconds_f64().floor();
                (
                    holds,
                    Some(secs),
                    format!("nothing matching {topic:?} for {secs}s (absence after {after})"),
                )
            }
            Condition::LogCount {
                filter,
                window,
                measure,
                op,
                threshold,
                windows,
            } => {
                let b = bucket_ms(rule);
                let w = window.as_millis().max(1);
                let n = windows.map_or(1, |x| x.n);
                let keep_from = (now_ms(now) - w * i64::from(n)) / b;
                self.buckets.retain(|k, _| *k > keep_from);
                let measure_of = |i: i64| {
                    let hi = (now_ms(now) - w * i) / b;
                    let lo = (now_ms(now) - w * (i + 1)) / b;
                    let count: u64 = self.buckets.range(lo + 1..=hi).map(|(_, c)| *c).sum();
                    #[allow(clippy::cast_precision_loss)]
                    let count = count as f64;
                    match measure {
                        Measure::Count => count,
                        #[allow(clippy::cast_precision_loss)]
                        Measure::Rate => count * 1000.0 / w as f64,
                    }
                };
                let current = measure_of(0);
                let unit = match measure {
                    Measure::Count => "lines",
                    Measure::Rate => "lines/s",
                };
                match windows {
                    None => (
                        op.holds(current, *threshold),
                        Some(current),
                        format!(
                            "{current} {unit} matching {filter:?} in {window} ({op} {threshold})"
                        ),
                    ),
                    Some(mn) => {
                        let hits = (0..i64::from(mn.n))
                            .filter(|i| op.holds(measure_of(*i), *threshold))
                            .count();
                        (
                            hits >= mn.m as usize,
                            Some(current),
                            format!(
                                "{hits} of the last {} windows of {window} had {unit} matching {filter:?} {op} {threshold} (need {})",
                                mn.n, mn.m
                            ),
                        )
                    }
                }
            }
        }
    }

    /// Evaluates the rule at `now`: moves the instance when its condition
    /// (or the lack of data) says so, and writes a `Repeat` when due. Every
    /// record made goes to the outbox. Returns true when anything changed.
    pub fn evaluate(&mut self, rule: &Rule, silences: &[Silence], now: OffsetDateTime) -> bool {
        let before = self.clone();
        self.refresh_labels(rule);
        let (mut holds, value, mut summary) = self.condition(rule, now);
        let no_data = rule.no_data.filter(|nd| {
            let quiet_since = self.last_seen.unwrap_or(self.since);
            now - quiet_since >= nd.after.to_time()
        });
        if let Some(nd) = no_data {
            match nd.behaviour {
                NoDataBehaviour::NoData => {
                    self.holds_since = None;
                    if self.state != AlertState::NoData {
                        let s = format!(
                            "no data for {} (no_data after {})",
                            quiet(self, now),
                            nd.after
                        );
                        self.transition(rule, AlertState::NoData, value, s, silences, now);
                    }
                    return *self != before;
                }
                NoDataBehaviour::Keep => return *self != before,
                NoDataBehaviour::Alert => {
                    holds = true;
                    summary = format!(
                        "no data for {} (no_data after {})",
                        quiet(self, now),
                        nd.after
                    );
                }
            }
        }
        if holds {
            let since = *self.holds_since.get_or_insert(now);
            match self.state {
                AlertState::Firing => {}
                _ if now - since >= rule.for_.to_time() => {
                    self.transition(rule, AlertState::Firing, value, summary, silences, now);
                }
                AlertState::Pending => {}
                _ => {
                    let s = format!("{summary}; firing after {}", rule.for_);
                    self.transition(rule, AlertState::Pending, value, s, silences, now);
                }
            }
        } else {
            self.holds_since = None;
            if self.state != AlertState::Inactive {
                let s = if self.state == AlertState::Firing {
                    format!("resolved: {summary}")
                } else {
                    summary
                };
                self.transition(rule, AlertState::Inactive, value, s, silences, now);
            }
        }
        if self.state == AlertState::Firing
            && self.ack.is_none()
            && let Some(every) = rule.repeat_interval
            && self.last_notice.is_some_and(|t| now - t >= every.to_time())
        {
            self.repeats += 1;
            let id = format!(
                "{}:{}:{}:r{}",
                self.rule,
                key_hash(&self.id),
                self.n,
                self.repeats
            );
            let s = format!("still firing: {}", self.condition(rule, now).2);
            let record = self.record(
                rule,
                id,
                RecordKind::Repeat,
                self.state,
                value,
                s,
                silences,
                now,
            );
            self.outbox.push(record);
            self.last_notice = Some(now);
        }
        *self != before
    }

    fn refresh_labels(&mut self, rule: &Rule) {
        for (k, v) in &rule.labels {
            self.labels.insert(k.clone(), v.clone());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn transition(
        &mut self,
        rule: &Rule,
        to: AlertState,
        value: Option<f64>,
        summary: String,
        silences: &[Silence],
        now: OffsetDateTime,
    ) {
        let from = self.state;
        self.n += 1;
        self.state = to;
        self.since = now;
        if to == AlertState::Firing {
            self.firing_since = Some(now);
            self.last_notice = Some(now);
            self.repeats = 0;
        }
        let id = format!("{}:{}:{}", self.rule, key_hash(&self.id), self.n);
        let mut record = self.record(
            rule,
            id,
            RecordKind::Transition,
            from,
            value,
            summary,
            silences,
            now,
        );
        record.to = to;
        self.outbox.push(record);
        if to != AlertState::Firing {
            self.firing_since = None;
            self.ack = None;
            self.last_notice = None;
        }
        if to == AlertState::Inactive {
            self.evidence.clear();
        }
    }

    /// A record about this instance, as it is now.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        rule: &Rule,
        id: String,
        kind: RecordKind,
        from: AlertState,
        value: Option<f64>,
        summary: String,
        silences: &[Silence],
        now: OffsetDateTime,
    ) -> AlertRecord {
        AlertRecord {
            id,
            kind,
            org: self.org.clone(),
            site: self.site.clone(),
            rule: self.rule.clone(),
            rule_name: rule.display_name().to_owned(),
            key: self.key.clone(),
            labels: self.labels.clone(),
            severity: rule.severity,
            from,
            to: self.state,
            n: self.n,
            at: now,
            firing_since: self.firing_since,
            value,
            summary,
            evidence: self.evidence.iter().cloned().collect(),
            notify: rule.notify.clone(),
            silenced: silences.iter().any(|s| s.silences(&self.labels, now)),
            ack: self.ack.clone(),
        }
    }

    /// Acknowledges the current firing: sets the ack and puts an `Ack`
    /// record (id `<rule>:<hash>:<n>:ack`) in the outbox.
    ///
    /// # Errors
    /// A message when the instance is not firing or is acknowledged
    /// already.
    pub fn acknowledge(
        &mut self,
        rule: &Rule,
        ack: Ack,
        silences: &[Silence],
        now: OffsetDateTime,
    ) -> Result<(), String> {
        if self.state != AlertState::Firing {
            return Err(format!("the alert is {:?}, not firing", self.state).to_lowercase());
        }
        if let Some(a) = &self.ack {
            return Err(format!("already acknowledged by {}", a.by));
        }
        self.ack = Some(ack.clone());
        let id = format!("{}:{}:{}:ack", self.rule, key_hash(&self.id), self.n);
        let summary = if ack.note.is_empty() {
            format!("acknowledged by {}", ack.by)
        } else {
            format!("acknowledged by {}: {}", ack.by, ack.note)
        };
        let record = self.record(
            rule,
            id,
            RecordKind::Ack,
            self.state,
            self.value,
            summary,
            silences,
            now,
        );
        self.outbox.push(record);
        Ok(())
    }
}

fn quiet(s: &InstanceState, now: OffsetDateTime) -> String {
    let since = s.last_seen.unwrap_or(s.since);
    let ms = i64::try_from((now - since).whole_milliseconds()).unwrap_or(i64::MAX);
    crate::duration::Dur::millis((ms / 1000) * 1000).to_string()
}

fn now_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The log-count bucket size of `rule`: a 60th of its window, at least a
/// second (so a window is at most ~60 buckets).
fn bucket_ms(rule: &Rule) -> i64 {
    match &rule.condition {
        Condition::LogCount { window, .. } => (window.as_millis() / 60).max(1000),
        _ => 1000,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rule(json: &str) -> Rule {
        Rule::from_json(json.as_bytes()).expect("rule")
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
    }

    fn states(s: &InstanceState) -> Vec<(AlertState, AlertState)> {
        s.outbox
            .iter()
            .filter(|r| r.kind == RecordKind::Transition)
            .map(|r| (r.from, r.to))
            .collect()
    }

    #[test]
    fn threshold_goes_pending_then_firing_after_for_then_resolves() {
        let r = rule(
            r#"{"id":"hot","for":"10s","condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#,
        );
        let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
        let hot = Observation::Reading {
            value: Some(90.0),
            holds: true,
        };
        assert!(s.observe(&r, 1, &hot, None, t0()));
        assert!(!s.observe(&r, 1, &hot, None, t0()), "applied once");
        s.evaluate(&r, &[], t0());
        assert_eq!(s.state, AlertState::Pending);
        s.evaluate(&r, &[], t0() + Duration::from_secs(9));
        assert_eq!(s.state, AlertState::Pending);
        s.evaluate(&r, &[], t0() + Duration::from_secs(10));
        assert_eq!(s.state, AlertState::Firing);
        let cool = Observation::Reading {
            value: Some(20.0),
            holds: false,
        };
        s.observe(&r, 2, &cool, None, t0() + Duration::from_secs(11));
        s.evaluate(&r, &[], t0() + Duration::from_secs(11));
        assert_eq!(
            states(&s),
            vec![
                (AlertState::Inactive, AlertState::Pending),
                (AlertState::Pending, AlertState::Firing),
                (AlertState::Firing, AlertState::Inactive)
            ]
        );
        assert!(s.outbox[2].is_resolution());
        let ids: Vec<_> = s.outbox.iter().map(|r| r.id.clone()).collect();
        assert!(ids[0].ends_with(":1") && ids[2].ends_with(":3"), "{ids:?}");
    }

    #[test]
    fn no_data_is_its_own_state() {
        let r = rule(
            r#"{"id":"hot","no_data":{"after":"30s"},"condition":{"kind":"threshold","topic":"t","op":">","value":80}}"#,
        );
        let mut s = InstanceState::new("o", &r, "a", "", &BTreeMap::new(), t0());
        s.observe(
            &r,
            1,
            &Observation::Reading {
                value: Some(90.0),
                holds: true,
            },
            None,
            t0(),
        );
        s.evaluate(&r, &[], t0());
        assert_eq!(s.state, AlertState::Firing);
        s.evaluate(&r, &[], t0() + Duration::from_secs(30));
        assert_eq!(s.state, AlertState::NoData);
        assert!(!s.outbox.iter().any(AlertRecord::is_resolution));
    }

    #[test]
    fn applied_folds_into_its_floor() {
        let mut a = Applied::default();
        for seq in 1..=(MAX_APPLIED as u64 + 10) {
            a.insert(seq);
        }
        assert_eq!(a.above.len(), MAX_APPLIED);
        assert!(a.contains(1) && a.contains(10) && !a.contains(MAX_APPLIED as u64 + 11));
    }
}
