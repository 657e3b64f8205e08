//! The lifecycle of an [`InstanceState`]: evaluating its rule at a time
//! ([`InstanceState::evaluate`]), the transitions and the records they put
//! in the outbox, acknowledgements.

use time::OffsetDateTime;

use super::Observation;
use super::{InstanceState, bucket_ms, key_hash, now_ms};
use crate::record::{Ack, AlertRecord, AlertState, Evidence, RecordKind};
use crate::rule::{Condition, Measure, NoDataBehaviour, Rule};
use crate::silence::Silence;

impl InstanceState {
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
                // Judged on the stored reading with the rule as it is now,
                // so a changed threshold applies at the next tick.
                let holds = reading.is_some_and(|r| op.holds(r, *value));
                (holds, reading, summary)
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
            Condition::Analytics { rule: name } => {
                let key = self
                    .labels
                    .get(crate::analytics::KEY_LABEL)
                    .map_or("*", String::as_str);
                let value = self.value.map(|v| format!(" ({v})")).unwrap_or_default();
                let summary = if self.reading_holds {
                    format!("analytics rule {name} signalled fire for {key}{value}")
                } else if self.signal_at.is_some() {
                    format!("analytics rule {name} signalled clear for {key}")
                } else {
                    format!("analytics rule {name}: no signal for {key} yet")
                };
                (self.reading_holds, self.value, summary)
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

    /// Applies one batch's items for this instance (`(sequence,
    /// observation, evidence)` in stream order) and evaluates the rule at
    /// `now`. Returns true when anything changed.
    ///
    /// Each item is its own step — observed, then evaluated when it may
    /// move the instance — so a batch does what its items one batch each
    /// would: a reading that trips and a later one that clears (or an
    /// analytics `fire` and its `clear`, as a `followed_by` match emits
    /// them, or as an edge delivers them after an outage) make a firing
    /// and a resolved record, never a transition collapsed away. Items
    /// applied before (by sequence) are skipped, so a redelivered batch
    /// changes nothing.
    ///
    /// A rule's `for` is measured at the step's time: an analytics signal's
    /// event time (its `window_end`), the wall clock `now` for everything
    /// else. So a `fire` whose `clear` came less than `for` later (in event
    /// time) goes pending → inactive and never fires, while one that held
    /// at least `for` fires and resolves even when both arrive together.
    /// Readings and log lines in one batch are all applied at `now`: with a
    /// `for`, a trip cleared within the same batch is pending → inactive.
    pub fn apply(
        &mut self,
        rule: &Rule,
        steps: &[(u64, Observation, Option<Evidence>)],
        silences: &[Silence],
        now: OffsetDateTime,
    ) -> bool {
        let mut changed = false;
        for (seq, obs, ev) in steps {
            if self.applied.contains(*seq) {
                continue;
            }
            let at = obs.event_time().unwrap_or(now);
            if matches!(obs, Observation::Signal { .. })
                && self.state == AlertState::Pending
                && self.reading_holds
            {
                // The fire pending so far held until this signal: it fires
                // first if it held for `for` by then.
                changed |= self.evaluate_at(rule, silences, now, at);
            }
            changed |= self.observe(rule, *seq, obs, ev.clone(), now);
            if self.may_move(rule, now) {
                changed |= self.evaluate_at(rule, silences, now, at);
            }
        }
        changed | self.evaluate(rule, silences, now)
    }

    /// Whether the condition now disagrees with the state (or the state
    /// waits on time): only then can a step's evaluation move it.
    fn may_move(&mut self, rule: &Rule, now: OffsetDateTime) -> bool {
        let (holds, ..) = self.condition(rule, now);
        match self.state {
            AlertState::Firing => !holds,
            AlertState::Inactive => holds,
            AlertState::Pending | AlertState::NoData => true,
        }
    }

    /// Evaluates the rule at `now`: moves the instance when its condition
    /// (or the lack of data) says so, and writes a `Repeat` when due. Every
    /// record made goes to the outbox. Returns true when anything changed.
    pub fn evaluate(&mut self, rule: &Rule, silences: &[Silence], now: OffsetDateTime) -> bool {
        self.evaluate_at(rule, silences, now, now)
    }

    /// [`InstanceState::evaluate`] with the condition's `for` measured up
    /// to `at` (an analytics signal's event time) instead of `now`.
    fn evaluate_at(
        &mut self,
        rule: &Rule,
        silences: &[Silence],
        now: OffsetDateTime,
        at: OffsetDateTime,
    ) -> bool {
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
            let since = *self.holds_since.get_or_insert(at);
            match self.state {
                AlertState::Firing => {}
                _ if at - since >= rule.for_.to_time() => {
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
        let repeat_due = rule
            .repeat_interval
            .is_some_and(|every| self.last_notice.is_some_and(|t| now - t >= every.to_time()));
        // A firing announced under a silence that has ended since: say it
        // again now rather than only at the next repeat (or never).
        let silence_ended =
            self.announced_silenced && !silences.iter().any(|s| s.silences(&self.labels, now));
        if self.state == AlertState::Firing && self.ack.is_none() && (repeat_due || silence_ended) {
            self.repeats += 1;
            let id = format!(
                "{}:{}:{}:r{}",
                self.rule,
                key_hash(&self.id),
                self.n,
                self.repeats
            );
            let s = if silence_ended {
                format!(
                    "silence ended, still firing: {}",
                    self.condition(rule, now).2
                )
            } else {
                format!("still firing: {}", self.condition(rule, now).2)
            };
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
            self.announced_silenced = record.silenced;
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
        self.announced_silenced = to == AlertState::Firing && record.silenced;
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
