//! [`Track`]: one key's state for a pattern or anomaly operator — the
//! readings held until the watermark reaches them, the operator's state
//! machine ([`Machine`]) and the episode being reported (decision 0028).
//!
//! A key's readings are applied in event-time order: a reading is *held*
//! until the rule's watermark reaches its time (at once when `delay` is 0
//! and it is the newest), then applied. A reading earlier than what its key
//! has already acted on (a reading applied, a deadline passed) is late. A machine's own deadline (a
//! threshold's `start + for`, an absence's `A + within`, a stale key's
//! `last + after`) is a *due* time; [`Track::run_to`] interleaves held
//! readings and due times in time order, a due time first when both fall
//! on the same instant. The rule's timers (in `window.rs`) call `run_to`
//! when the watermark passes a held reading or a due time, so what a key
//! emits depends only on its readings and the watermark — never on when
//! its next reading arrives — and `run_to(a)` then `run_to(b)` equals
//! `run_to(b)`: extra timers change nothing, which is what lets a restored
//! engine rebuild its timers from the checkpoint.

mod anomaly;
mod patterns;
mod run;

use serde::{Deserialize, Serialize};

use crate::engine::{Output, Signal};
use crate::field::{FieldPath, Payload, Scalar};
use crate::pattern::{Anomaly, Pattern};
use crate::rule::{Condition, Operator};

pub(crate) use anomaly::{CusumState, Ewma};

/// The reading satisfied the threshold's condition, or a sequence's first
/// step.
pub(crate) const FIRST: u8 = 1;
/// The reading satisfied a sequence's second step.
pub(crate) const THEN: u8 = 2;

/// What a machine needs of one reading, taken from the payload on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Held {
    /// Event time.
    pub t: i64,
    /// The value read (the operator's field; a condition's first field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<f64>,
    /// [`FIRST`] and [`THEN`] bits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub m: u8,
}

fn is_zero(m: &u8) -> bool {
    *m == 0
}

/// One key's pattern or detector state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Track {
    /// Readings not yet reached by the watermark, by time (arrival order
    /// within an instant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    held: Vec<Held>,
    /// The operator's state.
    machine: Machine,
    /// The last episode reported: its start and the last revision emitted
    /// (a Fire is revision 0 of its start, its Clear revision 1; an episode
    /// starting at the same instant as the previous continues the count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    episode: Option<(i64, u32)>,
    /// The time of the last reading applied or deadline passed: a reading
    /// earlier than it is late for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upto: Option<i64>,
    /// The due time a rule timer is set for (rebuilt on restore).
    #[serde(skip)]
    pub armed: Option<i64>,
}

/// The state machines, one per operator kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Machine {
    /// Since when the condition has held, whether that fired, the latest
    /// value.
    Threshold {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
        #[serde(default)]
        fired: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
    },
    /// The A waiting for its B; the A whose absence fired.
    Sequence {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fired: Option<i64>,
    },
    /// The previous reading; the start of the episode above the bound.
    Rate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev: Option<(i64, f64)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
    },
    /// The last reading's time; whether it has been reported stale.
    Stale {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<i64>,
        #[serde(default)]
        stale: bool,
    },
    /// EWMA mean and variance.
    Zscore(Ewma),
    /// Baseline and cumulative sums.
    Cusum(CusumState),
}

/// Where a machine's results go.
pub(crate) struct Emit<'a> {
    /// The rule's name.
    pub rule: &'a str,
    /// The key.
    pub key: &'a str,
    /// The key's late readings so far.
    pub dropped_late: u64,
    /// The output buffer.
    pub out: &'a mut Vec<Output>,
    /// The rule's output counter.
    pub outputs: &'a mut u64,
}

/// The evidence of a result: name → value.
pub(crate) type Evidence<'a> = &'a [(&'a str, f64)];

impl Track {
    /// A fresh key; `None` for an aggregate (its keys hold windows).
    pub fn new(op: &Operator) -> Option<Self> {
        let machine = match op {
            Operator::Aggregate(_) => return None,
            Operator::Pattern(Pattern::Threshold(_)) => Machine::Threshold {
                since: None,
                fired: false,
                value: None,
            },
            Operator::Pattern(Pattern::Sequence(_)) => Machine::Sequence {
                waiting: None,
                fired: None,
            },
            Operator::Pattern(Pattern::RateOfChange(_)) => Machine::Rate {
                prev: None,
                since: None,
            },
            Operator::Pattern(Pattern::Stale(_)) => Machine::Stale {
                last: None,
                stale: false,
            },
            Operator::Anomaly(Anomaly::Zscore(_)) => Machine::Zscore(Ewma::default()),
            Operator::Anomaly(Anomaly::Cusum(_)) => Machine::Cusum(CusumState::default()),
        };
        Some(Self {
            held: Vec::new(),
            machine,
            episode: None,
            upto: None,
            armed: None,
        })
    }

    /// What `op` needs of a reading at `t`, or `None` when the reading
    /// means nothing to it (a sequence reading matching neither step, a
    /// detector's reading without a number).
    pub fn observe(op: &Operator, topic: &str, payload: &Payload<'_>, t: i64) -> Option<Held> {
        let num = |f: &FieldPath| payload.get(f).and_then(Scalar::num);
        let (v, m) = match op {
            Operator::Aggregate(_) => return None,
            Operator::Pattern(Pattern::Threshold(th)) => {
                let m = if th.when.holds(payload) { FIRST } else { 0 };
                (first_field(&th.when).and_then(num), m)
            }
            Operator::Pattern(Pattern::Sequence(s)) => {
                let step = |st: &crate::pattern::Step| {
                    st.from.as_ref().is_none_or(|f| f.matches(topic))
                        && st.when.as_ref().is_none_or(|c| c.holds(payload))
                };
                let m =
                    if step(&s.first) { FIRST } else { 0 } | if step(&s.then) { THEN } else { 0 };
                if m == 0 {
                    return None;
                }
                let cond = if m & THEN != 0 { &s.then } else { &s.first };
                (cond.when.as_ref().and_then(first_field).and_then(num), m)
            }
            Operator::Pattern(Pattern::RateOfChange(r)) => (Some(num(&r.field)?), 0),
            Operator::Pattern(Pattern::Stale(_)) => (None, 0),
            Operator::Anomaly(Anomaly::Zscore(z)) => (Some(num(&z.field)?), 0),
            Operator::Anomaly(Anomaly::Cusum(c)) => (Some(num(&c.field)?), 0),
        };
        Some(Held { t, v, m })
    }

    /// Whether readings are held, waiting for the watermark.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether a reading at `t` comes too late for this key: earlier than
    /// a reading it applied or a deadline it passed.
    pub fn too_late(&self, t: i64) -> bool {
        self.upto.is_some_and(|u| t < u)
    }

    /// Holds a reading until the watermark reaches it.
    pub fn hold(&mut self, h: Held) {
        let at = self.held.partition_point(|x| x.t <= h.t);
        self.held.insert(at, h);
    }

    /// The times a rule timer must wake this key at: held readings and the
    /// machine's due time (for a restore).
    pub fn wakes(&self, op: &Operator) -> impl Iterator<Item = i64> + '_ {
        self.held.iter().map(|h| h.t).chain(self.due(op))
    }

    /// The machine's next deadline, if any.
    pub fn due(&self, op: &Operator) -> Option<i64> {
        match (&self.machine, op) {
            (
                Machine::Threshold {
                    since: Some(s),
                    fired: false,
                    ..
                },
                Operator::Pattern(Pattern::Threshold(th)),
            ) => Some(s.saturating_add(th.held_for.0)),
            (
                Machine::Sequence {
                    waiting: Some(a), ..
                },
                Operator::Pattern(Pattern::Sequence(s)),
            ) => Some(a.saturating_add(s.within.0)),
            (
                Machine::Stale {
                    last: Some(l),
                    stale: false,
                },
                Operator::Pattern(Pattern::Stale(s)),
            ) => Some(l.saturating_add(s.after.0)),
            _ => None,
        }
    }

    /// Applies, in time order, every held reading and due time at or
    /// before `to` (a due time first within one instant).
    pub fn run_to(&mut self, op: &Operator, to: i64, emit: &mut Emit<'_>) {
        loop {
            let due = self.due(op).filter(|d| *d <= to);
            let next = self.held.first().map(|h| h.t).filter(|t| *t <= to);
            match (due, next) {
                (Some(d), Some(t)) if d <= t => self.on_due(op, d, emit),
                (Some(d), None) => self.on_due(op, d, emit),
                (_, Some(_)) => {
                    let h = self.held.remove(0);
                    self.step(op, h, emit);
                }
                (None, None) => return,
            }
        }
    }

    /// Applies a reading the watermark has reached, after the due times
    /// before it.
    pub fn apply(&mut self, op: &Operator, h: Held, emit: &mut Emit<'_>) {
        self.run_to(op, h.t, emit);
        self.step(op, h, emit);
    }

    /// A deadline passed.
    fn on_due(&mut self, op: &Operator, d: i64, emit: &mut Emit<'_>) {
        self.upto = self.upto.max(Some(d));
        match op {
            Operator::Pattern(Pattern::Threshold(_)) => {
                patterns::threshold_due(self, d, emit);
            }
            Operator::Pattern(Pattern::Sequence(s)) => patterns::sequence_due(self, s, d, emit),
            Operator::Pattern(Pattern::Stale(s)) => patterns::stale_due(self, s, d, emit),
            _ => {}
        }
    }

    /// One reading, in time order.
    fn step(&mut self, op: &Operator, h: Held, emit: &mut Emit<'_>) {
        self.upto = self.upto.max(Some(h.t));
        match op {
            Operator::Aggregate(_) => {}
            Operator::Pattern(Pattern::Threshold(_)) => patterns::threshold_step(self, h, emit),
            Operator::Pattern(Pattern::Sequence(s)) => patterns::sequence_step(self, s, h, emit),
            Operator::Pattern(Pattern::RateOfChange(r)) => patterns::rate_step(self, r, h, emit),
            Operator::Pattern(Pattern::Stale(_)) => patterns::stale_step(self, h, emit),
            Operator::Anomaly(Anomaly::Zscore(z)) => anomaly::zscore_step(self, z, h, emit),
            Operator::Anomaly(Anomaly::Cusum(c)) => anomaly::cusum_step(self, c, h, emit),
        }
    }

    /// Emits a signal for the episode that started at `start`, detected
    /// or ended at `end`.
    fn signal(
        &mut self,
        emit: &mut Emit<'_>,
        signal: Signal,
        start: i64,
        end: i64,
        evidence: Evidence<'_>,
    ) {
        let revision = match (self.episode, signal) {
            (Some((s, r)), _) if s == start => r + 1,
            _ => 0,
        };
        self.episode = Some((start, revision));
        *emit.outputs += 1;
        emit.out.push(Output {
            rule: emit.rule.to_owned(),
            key: emit.key.to_owned(),
            window_start: start,
            window_end: end,
            revision,
            values: evidence
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            dropped_late: emit.dropped_late,
            signal: Some(signal),
        });
    }
}

/// The first field a condition compares (a threshold's evidence value).
fn first_field(c: &Condition) -> Option<&FieldPath> {
    match c {
        Condition::Compare { field, .. } => Some(field),
        Condition::All { all: list } | Condition::Any { any: list } => {
            list.iter().find_map(first_field)
        }
        Condition::Not { not } => first_field(not),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Rule;

    fn op(sql: &str) -> Operator {
        Rule::from_sql("r", sql).expect("rule").operator
    }

    fn emit<'a>(out: &'a mut Vec<Output>, outputs: &'a mut u64) -> Emit<'a> {
        Emit {
            rule: "r",
            key: "k",
            dropped_late: 0,
            out,
            outputs,
        }
    }

    /// Running to `a` then to `b` is running to `b`: extra timer entries,
    /// and a restore that rebuilds them, change nothing.
    #[test]
    fn run_to_composes() {
        let op = op(r#"SELECT threshold(value > 1, 10s) FROM "t" GROUP BY topic"#);
        let held = [
            (0, 5.0),
            (4_000, 6.0),
            (12_000, 7.0),
            (15_000, 0.0),
            (16_000, 9.0),
        ];
        let fill = |track: &mut Track| {
            for (t, v) in held {
                let m = if v > 1.0 { FIRST } else { 0 };
                track.hold(Held { t, v: Some(v), m });
            }
        };
        let (mut once, mut n1) = (Vec::new(), 0);
        let mut a = Track::new(&op).expect("track");
        fill(&mut a);
        a.run_to(&op, 40_000, &mut emit(&mut once, &mut n1));
        let (mut steps, mut n2) = (Vec::new(), 0);
        let mut b = Track::new(&op).expect("track");
        fill(&mut b);
        for to in [-5, 0, 3_999, 9_999, 10_000, 10_000, 14_000, 30_000, 40_000] {
            b.run_to(&op, to, &mut emit(&mut steps, &mut n2));
        }
        assert_eq!(once, steps);
        let got: Vec<(Option<Signal>, i64, i64)> = once
            .iter()
            .map(|o| (o.signal, o.window_start, o.window_end))
            .collect();
        assert_eq!(
            got,
            [
                (Some(Signal::Fire), 0, 10_000),
                (Some(Signal::Clear), 0, 15_000),
                (Some(Signal::Fire), 16_000, 26_000),
            ]
        );
        assert_eq!(once[0].values["value"], 6.0, "the reading before the fire");
        assert_eq!(b.due(&op), None);
    }

    /// A deadline and a reading at the same instant: the deadline first.
    #[test]
    fn a_deadline_comes_before_a_reading_at_the_same_instant() {
        let op = op(r#"SELECT not_followed_by(value = 0, value = 9, 10s) FROM "t""#);
        let mut t = Track::new(&op).expect("track");
        t.hold(Held {
            t: 0,
            v: Some(0.0),
            m: FIRST,
        });
        t.hold(Held {
            t: 10_000,
            v: Some(9.0),
            m: THEN,
        });
        let (mut out, mut n) = (Vec::new(), 0);
        t.run_to(&op, 10_000, &mut emit(&mut out, &mut n));
        let got: Vec<(Option<Signal>, u32)> = out.iter().map(|o| (o.signal, o.revision)).collect();
        assert_eq!(got, [(Some(Signal::Fire), 0), (Some(Signal::Clear), 1)]);
        assert_eq!(n, 2);
    }
}
