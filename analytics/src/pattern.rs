//! Patterns (CEP) and anomaly detectors as data: the JSON under
//! `"operator": {"pattern": …}` and `"operator": {"anomaly": …}` of a
//! [`crate::Rule`]. Each runs per key, in event time, on the same keys,
//! watermark, timers and checkpoints as the windowed aggregates, and emits
//! `signal: fire` when its condition starts and `signal: clear` when it
//! ends (decision 0028; user reference: `docs/analytics.md`).
//!
//! ```json
//! {"pattern": {"threshold": {"when": {"field": "value", "op": "gt", "value": 8}, "for": "30s"}}}
//! {"pattern": {"sequence": {"mode": "not_followed_by", "within": "10s",
//!     "first": {"from": "cmd/+/start"},
//!     "then":  {"from": "status/+", "when": {"field": ["state"], "op": "eq", "value": "running"}}}}}
//! {"pattern": {"rate_of_change": {"field": "value", "above": 2, "per": "1s", "direction": "up"}}}
//! {"pattern": {"stale": {"after": "5m"}}}
//! {"anomaly": {"zscore": {"field": "value", "alpha": 0.1, "threshold": 3, "min_samples": 10}}}
//! {"anomaly": {"cusum": {"field": "value", "drift": 0.5, "threshold": 5, "min_samples": 20}}}
//! ```

use serde::{Deserialize, Serialize};

use crate::duration::Millis;
use crate::field::FieldPath;
use crate::rule::{Condition, RuleError};
use crate::topic::TopicFilter;

/// A pattern over one key's readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pattern {
    /// A condition held for a duration.
    Threshold(Threshold),
    /// A reading followed by another within a time — or *not* followed.
    Sequence(Sequence),
    /// The change per unit of time between consecutive readings above a
    /// bound.
    RateOfChange(RateOfChange),
    /// A key silent for a time.
    Stale(Stale),
}

/// Fires when `when` has held on every reading of the key for `for`
/// (event time, from the first reading that satisfied it); clears at the
/// first reading that does not satisfy it. Fired by the watermark: no
/// further reading is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The condition (as in `where`; a reading without its field does not
    /// satisfy it).
    pub when: Condition,
    /// How long it must hold.
    #[serde(rename = "for")]
    pub held_for: Millis,
}

/// `first` followed by `then` within `within`, per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequence {
    /// Whether the match is the second step's arrival or its absence.
    pub mode: SequenceMode,
    /// The reading that starts the wait (A).
    pub first: Step,
    /// The reading that ends it (B).
    pub then: Step,
    /// How long after A a B counts (B at `A + within` or later does not).
    pub within: Millis,
}

/// What a [`Sequence`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceMode {
    /// A B within `within` of an A: fire and, at once, clear (a match is
    /// an event).
    FollowedBy,
    /// No B within `within` of an A: fire when the watermark passes
    /// `A + within`; clear at the next B.
    NotFollowedBy,
}

/// One step of a [`Sequence`]: a topic filter (inside the rule's `from`),
/// a condition, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Readings on topics matching this filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<TopicFilter>,
    /// Readings satisfying this condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
}

/// Which deviations count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Rises and falls (spikes and dips).
    #[default]
    Both,
    /// Rises (spikes) only.
    Up,
    /// Falls (dips) only.
    Down,
}

impl Direction {
    /// Whether a signed score is beyond `bound` in this direction.
    pub(crate) fn beyond(self, score: f64, bound: f64) -> bool {
        match self {
            Direction::Both => score.abs() > bound,
            Direction::Up => score > bound,
            Direction::Down => score < -bound,
        }
    }
}

/// Fires when `(v₂ − v₁) / ((t₂ − t₁) / per)` between two consecutive
/// readings of the key is beyond `above` (in `direction`); clears at the
/// first later pair within it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOfChange {
    /// The value read.
    #[serde(default = "value_path")]
    pub field: FieldPath,
    /// The bound, ≥ 0, in units of the field per `per`.
    pub above: f64,
    /// The unit of time (1 s unless given).
    #[serde(default = "one_second")]
    pub per: Millis,
    /// Rises, falls or both.
    #[serde(default)]
    pub direction: Direction,
}

/// Fires when a key that has sent a reading then sends none for `after`
/// (event time: the watermark passes `last reading + after`); clears at its
/// next reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stale {
    /// The silence that makes a key stale.
    pub after: Millis,
}

/// A streaming anomaly detector over one key's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Anomaly {
    /// Distance from an exponentially weighted mean, in exponentially
    /// weighted standard deviations.
    Zscore(Zscore),
    /// Cumulative sums of standardised deviations (change points).
    Cusum(Cusum),
}

/// EWMA z-score: each reading's `score = (x − mean) / stddev` against the
/// exponentially weighted mean and variance of the readings before it
/// (weight `alpha` for the newest). Fires when `|score| > threshold` (in
/// `direction`) once `min_samples` readings were seen; clears when a
/// reading is back within `clear` (default: `threshold`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zscore {
    /// The value read.
    #[serde(default = "value_path")]
    pub field: FieldPath,
    /// Weight of the newest reading, in (0, 1].
    pub alpha: f64,
    /// The score beyond which a reading is an anomaly, > 0.
    pub threshold: f64,
    /// Readings before any is scored (≥ 2).
    #[serde(default = "ten")]
    pub min_samples: u32,
    /// Spikes, dips or both.
    #[serde(default)]
    pub direction: Direction,
    /// The score within which the anomaly clears (hysteresis), at most
    /// `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
}

/// Two-sided tabular CUSUM on readings standardised by the mean and
/// standard deviation of the first `min_samples` readings (the baseline):
/// `hi = max(0, hi + z − drift)`, `lo = max(0, lo − z − drift)`. Fires when
/// a sum passes `threshold` (window start: when that sum last left 0, the
/// estimated change point); clears when it is back to 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cusum {
    /// The value read.
    #[serde(default = "value_path")]
    pub field: FieldPath,
    /// The slack per reading, in standard deviations (≥ 0; 0.5 detects a
    /// shift of about one standard deviation).
    pub drift: f64,
    /// The decision interval, in standard deviations (> 0; 4 to 5 is
    /// usual).
    pub threshold: f64,
    /// Readings that make the baseline (≥ 2).
    #[serde(default = "ten")]
    pub min_samples: u32,
    /// Rises, falls or both.
    #[serde(default)]
    pub direction: Direction,
}

fn value_path() -> FieldPath {
    FieldPath::Value
}

fn one_second() -> Millis {
    Millis(1_000)
}

fn ten() -> u32 {
    10
}

fn positive(field: &str, d: Millis) -> Result<(), RuleError> {
    if d.0 <= 0 {
        return Err(RuleError::new(field, "must be positive"));
    }
    Ok(())
}

fn number(field: &str, x: f64, ok: bool, what: &str) -> Result<(), RuleError> {
    if !x.is_finite() || !ok {
        return Err(RuleError::new(field, what));
    }
    Ok(())
}

impl Pattern {
    /// Checks what the types cannot.
    ///
    /// # Errors
    /// [`RuleError`] naming the field.
    pub fn validate(&self) -> Result<(), RuleError> {
        let at = "operator.pattern";
        match self {
            Pattern::Threshold(t) => positive(&format!("{at}.threshold.for"), t.held_for),
            Pattern::Sequence(s) => {
                positive(&format!("{at}.sequence.within"), s.within)?;
                for (name, step) in [("first", &s.first), ("then", &s.then)] {
                    if step.from.is_none() && step.when.is_none() {
                        return Err(RuleError::new(
                            format!("{at}.sequence.{name}"),
                            "a step needs a topic filter (from), a condition (when), or both",
                        ));
                    }
                }
                Ok(())
            }
            Pattern::RateOfChange(r) => {
                positive(&format!("{at}.rate_of_change.per"), r.per)?;
                number(
                    &format!("{at}.rate_of_change.above"),
                    r.above,
                    r.above >= 0.0,
                    "a number ≥ 0",
                )
            }
            Pattern::Stale(s) => positive(&format!("{at}.stale.after"), s.after),
        }
    }
}

impl Anomaly {
    /// Checks what the types cannot.
    ///
    /// # Errors
    /// [`RuleError`] naming the field.
    pub fn validate(&self) -> Result<(), RuleError> {
        match self {
            Anomaly::Zscore(z) => {
                let at = "operator.anomaly.zscore";
                number(
                    &format!("{at}.alpha"),
                    z.alpha,
                    z.alpha > 0.0 && z.alpha <= 1.0,
                    "a weight in (0, 1], e.g. 0.1",
                )?;
                number(
                    &format!("{at}.threshold"),
                    z.threshold,
                    z.threshold > 0.0,
                    "a score > 0, e.g. 3",
                )?;
                if let Some(c) = z.clear {
                    number(
                        &format!("{at}.clear"),
                        c,
                        c >= 0.0 && c <= z.threshold,
                        "a score between 0 and the threshold",
                    )?;
                }
                min_samples(&format!("{at}.min_samples"), z.min_samples)
            }
            Anomaly::Cusum(c) => {
                let at = "operator.anomaly.cusum";
                number(
                    &format!("{at}.drift"),
                    c.drift,
                    c.drift >= 0.0,
                    "standard deviations ≥ 0, e.g. 0.5",
                )?;
                number(
                    &format!("{at}.threshold"),
                    c.threshold,
                    c.threshold > 0.0,
                    "standard deviations > 0, e.g. 5",
                )?;
                min_samples(&format!("{at}.min_samples"), c.min_samples)
            }
        }
    }
}

fn min_samples(field: &str, n: u32) -> Result<(), RuleError> {
    if n < 2 {
        return Err(RuleError::new(field, "at least 2"));
    }
    Ok(())
}
