//! [`Rule`]: an analytics rule as data — the JSON form every rule has (the
//! SQL form in [`crate::sql`] compiles to it), validated with errors naming
//! the field.
//!
//! ```json
//! { "name": "line1_temp",
//!   "from": "line1/+/temp",
//!   "where": { "field": "value", "op": "gt", "value": 0 },
//!   "group_by": "topic",
//!   "time": { "event_time": ["ts"], "delay": "0s", "lateness": "30s" },
//!   "operator": { "aggregate": {
//!       "window": { "tumbling": { "size": "1m" } },
//!       "select": [ { "name": "avg_value", "fn": "avg", "field": "value" } ] } } }
//! ```
//!
//! `operator` is the extension point: windowed aggregates
//! (`"aggregate"`), patterns (`"pattern"`: threshold held, sequence and
//! absence, rate of change, stale source) and anomaly detectors
//! (`"anomaly"`: z-score, CUSUM) — the last two in [`crate::pattern`].

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::duration::Millis;
use crate::field::{FieldPath, Payload, Scalar};
use crate::pattern::{Anomaly, Pattern};
use crate::topic::TopicFilter;

/// The most windows one reading may fall into (a hopping window's
/// `size / slide`): bounds the work per event.
pub const MAX_WINDOWS_PER_EVENT: i64 = 1_000;

/// An analytics rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name (per organisation): letters, digits, `_` and `-`; part of
    /// every output's id and subject.
    pub name: String,
    /// The MQTT topic filter the rule reads.
    pub from: TopicFilter,
    /// Only readings satisfying this count (SQL `WHERE`).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<Condition>,
    /// What separates the keys (one state and one result per key and window).
    #[serde(default)]
    pub group_by: GroupBy,
    /// Event time, watermark delay and allowed lateness.
    #[serde(default)]
    pub time: TimePolicy,
    /// What the rule computes.
    pub operator: Operator,
}

/// How readings are split into keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GroupBy {
    /// One key per topic (the usual case: one sensor, one key).
    #[default]
    Topic,
    /// One key per value of a payload field (e.g. a device id).
    Field(FieldPath),
    /// One key, `*`, for everything the filter matches.
    None,
    /// One key per value of a topic level, counted from 0: `{"level": 1}`
    /// keys `cmd/m3/start` and `status/m3` both as `m3` — so a pattern can
    /// follow one device across two topics. A topic with fewer levels is
    /// not read.
    Level(u32),
}

/// Event time and watermark (decision 0027).
///
/// The watermark of a rule is `max event time seen − delay`. A window
/// `[start, end)` is emitted (revision 0) once the watermark reaches `end`;
/// it is kept until the watermark reaches `end + lateness`: a reading for it
/// until then updates it and emits it again (revision + 1). Later readings
/// are dropped and counted (`dropped_late`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimePolicy {
    /// The payload field with the reading's time (milliseconds since the
    /// Unix epoch as a number, or RFC 3339 text); when absent or missing
    /// from a payload, the event's `received_at` (the edge's receive time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<FieldPath>,
    /// How far the watermark trails the latest event time: out-of-order
    /// readings within it are on time.
    #[serde(default)]
    pub delay: Millis,
    /// How long after its first emission a window still accepts readings.
    #[serde(default)]
    pub lateness: Millis,
}

/// What a rule computes.
///
/// Aggregates emit one [`crate::Output`] per key and window; patterns and
/// anomaly detectors emit `signal: fire` when their condition starts and
/// `signal: clear` when it ends (decision 0028).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Operator {
    /// Aggregates over windows.
    Aggregate(Aggregate),
    /// A pattern (CEP) per key.
    Pattern(Pattern),
    /// A streaming anomaly detector per key.
    Anomaly(Anomaly),
}

/// Windowed aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// The windows.
    pub window: Window,
    /// The values computed per key and window.
    pub select: Vec<Select>,
    /// A key silent longer than this (event time between two of its
    /// readings) makes the windows the silence reaches into *stale*: their
    /// results carry `stale: 1` and `gap_ms` (the longest such silence),
    /// so a mean over a disconnected device's last and first readings is
    /// not taken for a full window's (tumbling and hopping windows; a
    /// session window already ends at its gap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<Millis>,
}

/// A window kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// Back-to-back windows of `size`, aligned to the Unix epoch.
    Tumbling {
        /// The length of a window.
        size: Millis,
    },
    /// Windows of `size` starting every `slide` (aligned to the epoch): a
    /// reading is in `size / slide` of them.
    Hopping {
        /// The length of a window.
        size: Millis,
        /// The distance between two window starts.
        slide: Millis,
    },
    /// Readings closer than `gap` to each other form one window
    /// `[first reading, last reading + gap)`.
    Session {
        /// The silence that ends a session.
        gap: Millis,
    },
}

/// One computed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// The name in the results (`avg_value` unless given).
    pub name: String,
    /// The function.
    #[serde(rename = "fn")]
    pub func: AggFn,
    /// The value it reads (`count` ignores it).
    #[serde(default = "value_path")]
    pub field: FieldPath,
}

fn value_path() -> FieldPath {
    FieldPath::Value
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AggFn {
    /// Readings in the window (`count(*)`), or readings with the field.
    Count,
    /// Sum.
    Sum,
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Population standard deviation.
    Stddev,
    /// The value with the earliest event time.
    First,
    /// The value with the latest event time.
    Last,
    /// (last − first) / seconds between them: the derivative per second.
    Rate,
    /// A quantile in `[0, 1]` from a DDSketch (1% relative accuracy).
    Percentile(f64),
    /// Distinct values (numbers or text), estimated with HyperLogLog++.
    DistinctCount,
    /// Every reading, including those without the field (`count(*)`).
    CountAll,
}

impl AggFn {
    /// The default output name's prefix.
    pub fn prefix(&self) -> String {
        match self {
            AggFn::Count | AggFn::CountAll => "count".into(),
            AggFn::Sum => "sum".into(),
            AggFn::Avg => "avg".into(),
            AggFn::Min => "min".into(),
            AggFn::Max => "max".into(),
            AggFn::Stddev => "stddev".into(),
            AggFn::First => "first".into(),
            AggFn::Last => "last".into(),
            AggFn::Rate => "rate".into(),
            AggFn::Percentile(q) => format!("p{}", (q * 1000.0).round() / 10.0).replace('.', "_"),
            AggFn::DistinctCount => "distinct".into(),
        }
    }
}

/// A `WHERE` condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    /// Every one holds.
    All {
        /// The conditions.
        all: Vec<Condition>,
    },
    /// At least one holds.
    Any {
        /// The conditions.
        any: Vec<Condition>,
    },
    /// It does not hold.
    Not {
        /// The condition.
        not: Box<Condition>,
    },
    /// A field compared with a constant.
    Compare {
        /// The field.
        field: FieldPath,
        /// The comparison.
        op: CmpOp,
        /// The constant: a number, a string or a boolean.
        value: Literal,
    },
}

impl Condition {
    /// Whether it holds for a payload. A missing field or a comparison
    /// between a number and text is false (so `NOT` of it is true).
    pub(crate) fn holds(&self, payload: &Payload<'_>) -> bool {
        match self {
            Condition::All { all } => all.iter().all(|c| c.holds(payload)),
            Condition::Any { any } => any.iter().any(|c| c.holds(payload)),
            Condition::Not { not } => !not.holds(payload),
            Condition::Compare { field, op, value } => {
                let Some(found) = payload.get(field) else {
                    return false;
                };
                let ord = match (found, value) {
                    (Scalar::Num(a), Literal::Num(b)) => a.partial_cmp(b),
                    (Scalar::Str(a), Literal::Str(b)) => Some(a.cmp(b.as_str())),
                    _ => None,
                };
                let Some(ord) = ord else { return false };
                match op {
                    CmpOp::Eq => ord.is_eq(),
                    CmpOp::Ne => ord.is_ne(),
                    CmpOp::Gt => ord.is_gt(),
                    CmpOp::Ge => ord.is_ge(),
                    CmpOp::Lt => ord.is_lt(),
                    CmpOp::Le => ord.is_le(),
                }
            }
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A constant in a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// A number (booleans are 1 and 0).
    Num(f64),
    /// Text.
    Str(String),
}

/// A rule refused, naming the field (a JSON path such as
/// `operator.aggregate.select[1].fn`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct RuleError {
    /// The JSON path of the offending field (`.` for the whole rule).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl RuleError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Rule {
    /// Parses and validates the JSON form.
    ///
    /// # Errors
    /// [`RuleError`] naming the field that is malformed or invalid.
    pub fn from_json(bytes: &[u8]) -> Result<Rule, RuleError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let rule: Rule = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            RuleError::new(path, e.inner().to_string())
        })?;
        rule.validate()?;
        Ok(rule)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        // A Rule is plain data with string keys: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The windowed aggregate this rule computes, if it is one.
    pub fn aggregate(&self) -> Option<&Aggregate> {
        match &self.operator {
            Operator::Aggregate(a) => Some(a),
            Operator::Pattern(_) | Operator::Anomaly(_) => None,
        }
    }

    /// Checks what the types cannot: names, sizes, quantiles.
    ///
    /// # Errors
    /// [`RuleError`] naming the field.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(RuleError::new(
                "name",
                "1 to 64 letters, digits, '_' or '-'",
            ));
        }
        for (label, d) in [
            ("time.delay", self.time.delay),
            ("time.lateness", self.time.lateness),
        ] {
            if d.0 < 0 {
                return Err(RuleError::new(label, "must not be negative"));
            }
        }
        if let GroupBy::Level(n) = self.group_by
            && n > 64
        {
            return Err(RuleError::new(
                "group_by.level",
                "a topic level from 0 to 64",
            ));
        }
        let agg = match &self.operator {
            Operator::Aggregate(agg) => agg,
            Operator::Pattern(p) => return self.validate_signals(|| p.validate()),
            Operator::Anomaly(a) => return self.validate_signals(|| a.validate()),
        };
        let w = "operator.aggregate.window";
        match agg.window {
            Window::Tumbling { size } if size.0 <= 0 => {
                return Err(RuleError::new(
                    format!("{w}.tumbling.size"),
                    "must be positive",
                ));
            }
            Window::Hopping { size, slide } => {
                if size.0 <= 0 {
                    return Err(RuleError::new(
                        format!("{w}.hopping.size"),
                        "must be positive",
                    ));
                }
                if slide.0 <= 0 || slide > size {
                    return Err(RuleError::new(
                        format!("{w}.hopping.slide"),
                        "must be positive and at most the size",
                    ));
                }
                if (size.0 + slide.0 - 1) / slide.0 > MAX_WINDOWS_PER_EVENT {
                    return Err(RuleError::new(
                        format!("{w}.hopping.slide"),
                        format!("size / slide must be at most {MAX_WINDOWS_PER_EVENT}"),
                    ));
                }
            }
            Window::Session { gap } if gap.0 <= 0 => {
                return Err(RuleError::new(
                    format!("{w}.session.gap"),
                    "must be positive",
                ));
            }
            _ => {}
        }
        match (agg.stale_after, agg.window) {
            (Some(_), Window::Session { .. }) => {
                return Err(RuleError::new(
                    "operator.aggregate.stale_after",
                    "a session window already ends at its gap: use the gap",
                ));
            }
            (Some(d), _) if d.0 <= 0 => {
                return Err(RuleError::new(
                    "operator.aggregate.stale_after",
                    "must be positive",
                ));
            }
            _ => {}
        }
        if agg.select.is_empty() {
            return Err(RuleError::new(
                "operator.aggregate.select",
                "at least one aggregate",
            ));
        }
        let mut names = HashSet::new();
        for (i, s) in agg.select.iter().enumerate() {
            let at = format!("operator.aggregate.select[{i}]");
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return Err(RuleError::new(
                    format!("{at}.name"),
                    format!("{:?} is empty or used twice; give it an alias", s.name),
                ));
            }
            if let AggFn::Percentile(q) = s.func
                && !(0.0..=1.0).contains(&q)
            {
                return Err(RuleError::new(
                    format!("{at}.fn"),
                    "a percentile's quantile is between 0 and 1",
                ));
            }
        }
        Ok(())
    }

    /// Patterns and detectors: no allowed lateness (a signal is not
    /// revised; `time.delay` waits for out-of-order readings instead).
    fn validate_signals(
        &self,
        operator: impl FnOnce() -> Result<(), RuleError>,
    ) -> Result<(), RuleError> {
        if self.time.lateness.0 != 0 {
            return Err(RuleError::new(
                "time.lateness",
                "patterns and detectors do not revise a signal: use time.delay to wait for out-of-order readings",
            ));
        }
        operator()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"name":"t","from":"a/+/temp",
        "operator":{"aggregate":{"window":{"tumbling":{"size":"1m"}},
        "select":[{"name":"avg_value","fn":"avg","field":"value"},
                  {"name":"p95","fn":{"percentile":0.95},"field":["temp","c"]}]}}}"#;

    #[test]
    fn json_round_trip() {
        let rule = Rule::from_json(GOOD.as_bytes()).expect("ok");
        assert_eq!(rule.group_by, GroupBy::Topic);
        let again = Rule::from_json(rule.to_json().as_bytes()).expect("ok");
        assert_eq!(rule, again);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = GOOD.replace("\"avg\"", "\"mean\"");
        let e = Rule::from_json(bad.as_bytes()).expect_err("refused");
        assert_eq!(e.field, "operator.aggregate.select[0].fn", "{e}");
        let bad = GOOD.replace("\"1m\"", "\"1 minute\"");
        let e = Rule::from_json(bad.as_bytes()).expect_err("refused");
        assert_eq!(e.field, "operator.aggregate.window.tumbling.size", "{e}");
        let bad = GOOD.replace("0.95", "95");
        let e = Rule::from_json(bad.as_bytes()).expect_err("refused");
        assert_eq!(e.field, "operator.aggregate.select[1].fn", "{e}");
        let bad = GOOD.replace("\"t\"", "\"a:b\"");
        assert_eq!(
            Rule::from_json(bad.as_bytes()).expect_err("refused").field,
            "name"
        );
    }
}
