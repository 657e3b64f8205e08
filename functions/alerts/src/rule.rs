//! Alert rules as data: what [`Rule`] holds, how it is read from JSON
//! ([`Rule::from_json`]) and checked ([`Rule::validate`]), with every
//! error naming the field (`for: must be ≥ 0s`, `condition.topic: …`).
//!
//! Stored per organisation in `plantd_alert_rules` under `<org>.<rule id>`
//! ([`crate::store`]).

use std::collections::BTreeMap;
use std::fmt;

use plantd_shared::subject::Site;
use plantd_shared::topic::validate_filter;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::duration::Dur;
use crate::record::Severity;

/// Longest rule id, in bytes.
pub const MAX_ID: usize = 64;
/// Most labels a rule may carry.
pub const MAX_LABELS: usize = 32;
/// Shortest log window or absence timeout the engine can honour (its
/// clock ticks about once a second).
pub const MIN_WINDOW: Dur = Dur::secs(1);

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema), schema(as = AlertRule))]
pub struct Rule {
    /// The id: 1–64 lowercase letters, digits, `-` or `_` (one subject
    /// token: records go to `plantd.<site>.alert.<id>`).
    pub id: String,
    /// For people (defaults to the id).
    #[serde(default)]
    pub name: String,
    /// What it watches and what to do about it.
    #[serde(default)]
    pub description: String,
    /// How bad it is when it fires.
    #[serde(default)]
    pub severity: Severity,
    /// Labels every instance carries (silences and routing match on them).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The notification channels it routes to (names in
    /// `plantd_alert_channels`).
    #[serde(default)]
    pub notify: Vec<String>,
    /// The labels that split the rule into instances. Every instance is
    /// per site; `topic` (telemetry) or `source` (logs) split further.
    #[serde(default)]
    pub group_by: Vec<GroupBy>,
    /// How long the condition must hold before the instance fires (it is
    /// pending meanwhile); `0s` fires at once.
    #[serde(default, rename = "for")]
    pub for_: Dur,
    /// While firing (and not acknowledged), write a `Repeat` record this
    /// often; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<Dur>,
    /// What happens when the input goes silent; nothing by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoData>,
    /// The sites it applies to; empty: every site of the organisation.
    #[serde(default)]
    pub sites: Vec<String>,
    /// When it holds.
    pub condition: Condition,
}

/// A label that splits a rule into instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum GroupBy {
    /// The site (always implied: every instance is per site).
    Site,
    /// The log source (log conditions).
    Source,
    /// The MQTT topic (telemetry conditions).
    Topic,
}

/// The stream a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// `PLANTD_TELEMETRY`: threshold and absence conditions.
    Telemetry,
    /// `PLANTD_LOGS`: log count and log absence conditions.
    Logs,
    /// `PLANTD_AGGREGATES`: analytics conditions.
    Aggregates,
}

impl GroupBy {
    /// The label name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Site => "site",
            Self::Source => "source",
            Self::Topic => "topic",
        }
    }
}

/// The no-data timeout and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct NoData {
    /// Silence on the rule's input for this long counts as no data.
    pub after: Dur,
    /// What the instance does then.
    #[serde(default)]
    pub behaviour: NoDataBehaviour,
}

/// What an instance does when its input has gone silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum NoDataBehaviour {
    /// Move to the `no_data` state (never shown as resolved).
    #[default]
    NoData,
    /// Stay as it is.
    Keep,
    /// Treat silence as the condition holding (pending, then firing).
    Alert,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Op {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    /// `left op right`.
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Self::Gt => left > right,
            Self::Ge => left >= right,
            Self::Lt => left < right,
            Self::Le => left <= right,
            Self::Eq => (left - right).abs() < f64::EPSILON,
            Self::Ne => (left - right).abs() >= f64::EPSILON,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Eq => "==",
            Self::Ne => "!=",
        })
    }
}

/// Count lines, or lines per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Measure {
    /// Matching lines in the window.
    #[default]
    Count,
    /// Matching lines per second over the window.
    Rate,
}

/// "In at least `m` of the last `n` windows".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct MOfN {
    /// Windows that must exceed the threshold.
    pub m: u32,
    /// Windows looked at (the newest ending now).
    pub n: u32,
}

/// When a rule holds. JSON: `{"kind": "threshold", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Condition {
    /// Telemetry: the newest reading on a topic matching `topic` (MQTT
    /// wildcards) compared with `value`. The reading is the payload as a
    /// number, or the number at `field` (dotted JSON path, `a.b.0`).
    Threshold {
        /// MQTT topic filter.
        topic: String,
        /// JSON field path in the payload; none: the payload is the number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        /// The comparison.
        op: Op,
        /// The threshold.
        value: f64,
    },
    /// Telemetry: nothing on a topic matching `topic` for `after` (measured
    /// from the last message seen on it).
    Absence {
        /// MQTT topic filter.
        topic: String,
        /// Silence that counts as absence.
        after: Dur,
    },
    /// Logs: lines matching `match` (the log filter language of
    /// `plantd_logger::query`) counted over a sliding `window`, compared
    /// with `op` (default `>`) and `threshold`; with `windows`, it holds
    /// when at least `m` of the last `n` windows exceed it.
    LogCount {
        /// The log filter.
        #[serde(rename = "match")]
        filter: String,
        /// The window.
        window: Dur,
        /// Count, or lines per second.
        #[serde(default)]
        measure: Measure,
        /// The comparison (default `>`).
        #[serde(default = "default_op")]
        op: Op,
        /// The threshold.
        threshold: f64,
        /// M of N windows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        windows: Option<MOfN>,
    },
    /// Logs: no line matching `match` for `after` (from the last match, or
    /// from the first line the instance's site/source sent).
    LogAbsence {
        /// The log filter.
        #[serde(rename = "match")]
        filter: String,
        /// Silence that counts as absence.
        after: Dur,
    },
    /// Analytics: the pattern and anomaly results of the organisation's
    /// analytics rule `rule` in `PLANTD_AGGREGATES` — a result with
    /// `signal: fire` makes its (site, key) instance's condition hold,
    /// `clear` ends it ([`crate::analytics`]). Instances are always split
    /// by the result's key (label `key`).
    Analytics {
        /// The analytics rule's name (`plantd_analytics::Rule::name`).
        rule: String,
    },
}

fn default_op() -> Op {
    Op::Gt
}

impl Condition {
    /// True for conditions on `PLANTD_LOGS`.
    pub fn on_logs(&self) -> bool {
        self.input() == Input::Logs
    }

    /// The stream the condition reads.
    pub fn input(&self) -> Input {
        match self {
            Self::Threshold { .. } | Self::Absence { .. } => Input::Telemetry,
            Self::LogCount { .. } | Self::LogAbsence { .. } => Input::Logs,
            Self::Analytics { .. } => Input::Aggregates,
        }
    }

    /// True for the absence conditions.
    pub fn is_absence(&self) -> bool {
        matches!(self, Self::Absence { .. } | Self::LogAbsence { .. })
    }
}

/// A rule that cannot be used: the field and what is wrong with it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct RuleError {
    /// The field, e.g. `for`, `condition.topic`, `sites[1]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl RuleError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// True for an id that is one subject token and a KV key part:
/// 1–[`MAX_ID`] lowercase letters, digits, `-`, `_`.
pub fn valid_id(id: &str) -> bool {
    (1..=MAX_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Rule {
    /// Reads a rule from JSON and validates it.
    ///
    /// # Errors
    /// [`RuleError`] naming the field: a JSON shape error (unknown field,
    /// wrong type, bad duration) or a failed check of [`Rule::validate`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, RuleError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let rule: Rule = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "rule".to_owned() } else { path };
            RuleError::new(field, e.into_inner().to_string())
        })?;
        rule.validate()?;
        Ok(rule)
    }

    /// The name for people: `name`, or the id.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }

    /// True when the rule applies to `site`.
    pub fn covers(&self, site: &str) -> bool {
        self.sites.is_empty() || self.sites.iter().any(|s| s == site)
    }

    /// Checks what JSON cannot: ids, durations, filters, labels.
    ///
    /// # Errors
    /// [`RuleError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), RuleError> {
        if !valid_id(&self.id) {
            return Err(RuleError::new(
                "id",
                format!("use 1-{MAX_ID} lowercase letters, digits, '-' or '_'"),
            ));
        }
        if self.name.len() > 200 {
            return Err(RuleError::new("name", "longer than 200 bytes"));
        }
        if self.description.len() > 2000 {
            return Err(RuleError::new("description", "longer than 2000 bytes"));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(RuleError::new(
                "labels",
                format!("more than {MAX_LABELS} labels"),
            ));
        }
        for (k, v) in &self.labels {
            let ok = !k.is_empty()
                && k.len() <= 64
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(RuleError::new(
                    format!("labels.{k}"),
                    "label names are 1-64 letters, digits or '_'",
                ));
            }
            if v.len() > 256 {
                return Err(RuleError::new(
                    format!("labels.{k}"),
                    "longer than 256 bytes",
                ));
            }
        }
        for (i, channel) in self.notify.iter().enumerate() {
            if !valid_id(channel) {
                return Err(RuleError::new(
                    format!("notify[{i}]"),
                    "channel names are 1-64 lowercase letters, digits, '-' or '_'",
                ));
            }
        }
        for (i, g) in self.group_by.iter().enumerate() {
            let fits = match g {
                GroupBy::Site => true,
                GroupBy::Source => self.condition.input() == Input::Logs,
                GroupBy::Topic => self.condition.input() == Input::Telemetry,
            };
            if !fits {
                return Err(RuleError::new(
                    format!("group_by[{i}]"),
                    format!(
                        "{} does not apply to this condition (logs group by site/source, telemetry by site/topic, analytics by site and always by the result's key)",
                        g.label()
                    ),
                ));
            }
        }
        non_negative("for", self.for_)?;
        if let Some(r) = self.repeat_interval
            && r < Dur::secs(1)
        {
            return Err(RuleError::new("repeat_interval", "must be ≥ 1s"));
        }
        if let Some(nd) = &self.no_data {
            if self.condition.is_absence() {
                return Err(RuleError::new(
                    "no_data",
                    "an absence condition is about silence already; remove no_data",
                ));
            }
            at_least("no_data.after", nd.after, MIN_WINDOW)?;
        }
        for (i, site) in self.sites.iter().enumerate() {
            Site::new(site.as_str())
                .map_err(|e| RuleError::new(format!("sites[{i}]"), e.to_string()))?;
        }
        match &self.condition {
            Condition::Threshold {
                topic,
                field,
                value,
                ..
            } => {
                filter("condition.topic", topic)?;
                if let Some(f) = field
                    && (f.is_empty() || f.split('.').any(str::is_empty))
                {
                    return Err(RuleError::new(
                        "condition.field",
                        "a dotted JSON path like temp or reading.value",
                    ));
                }
                if !value.is_finite() {
                    return Err(RuleError::new("condition.value", "must be a finite number"));
                }
            }
            Condition::Absence { topic, after } => {
                filter("condition.topic", topic)?;
                at_least("condition.after", *after, MIN_WINDOW)?;
            }
            Condition::LogCount {
                filter,
                window,
                threshold,
                windows,
                ..
            } => {
                log_filter("condition.match", filter)?;
                at_least("condition.window", *window, MIN_WINDOW)?;
                if !threshold.is_finite() {
                    return Err(RuleError::new(
                        "condition.threshold",
                        "must be a finite number",
                    ));
                }
                if let Some(w) = windows
                    && (w.m == 0 || w.n == 0 || w.m > w.n || w.n > 60)
                {
                    return Err(RuleError::new("condition.windows", "need 1 ≤ m ≤ n ≤ 60"));
                }
            }
            Condition::LogAbsence { filter, after } => {
                log_filter("condition.match", filter)?;
                at_least("condition.after", *after, MIN_WINDOW)?;
            }
            Condition::Analytics { rule } => {
                if !crate::analytics::valid_rule_name(rule) {
                    return Err(RuleError::new(
                        "condition.rule",
                        "an analytics rule name: 1-64 letters, digits, '_' or '-'",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn non_negative(field: &str, d: Dur) -> Result<(), RuleError> {
    if d.is_negative() {
        return Err(RuleError::new(field, "must be ≥ 0s"));
    }
    Ok(())
}

fn at_least(field: &str, d: Dur, min: Dur) -> Result<(), RuleError> {
    if d < min {
        return Err(RuleError::new(field, format!("must be ≥ {min}")));
    }
    Ok(())
}

fn filter(field: &str, topic: &str) -> Result<(), RuleError> {
    validate_filter(topic).map_err(|e| RuleError::new(field, e.to_string()))
}

fn log_filter(field: &str, text: &str) -> Result<(), RuleError> {
    crate::logs::LogMatcher::parse(text)
        .map(|_| ())
        .map_err(|e| RuleError::new(field, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Rule::from_json(json.as_bytes())
            .expect_err("invalid")
            .to_string()
    }

    const OK: &str = r#"{"id":"hot","for":"10s","condition":{"kind":"threshold","topic":"line1/+/temp","op":">","value":80}}"#;

    #[test]
    fn a_rule_round_trips() {
        let rule = Rule::from_json(OK.as_bytes()).expect("valid");
        assert_eq!(rule.for_, Dur::secs(10));
        assert_eq!(rule.display_name(), "hot");
        let back = serde_json::to_vec(&rule).expect("json");
        assert_eq!(Rule::from_json(&back).expect("again"), rule);
    }

    #[test]
    fn errors_name_the_field() {
        let negative = OK.replace("\"10s\"", "\"-5s\"");
        assert_eq!(err(&negative), "for: must be ≥ 0s");
        let bad_id = OK.replace("\"hot\"", "\"Hot.1\"");
        assert!(err(&bad_id).starts_with("id: "), "{}", err(&bad_id));
        let bad_topic = OK.replace("line1/+/temp", "line1/#/temp");
        assert!(err(&bad_topic).starts_with("condition.topic: "));
        let bad_dur = OK.replace("\"10s\"", "\"ten\"");
        assert!(err(&bad_dur).starts_with("for: "), "{}", err(&bad_dur));
        let bad_op = OK.replace("\">\"", "\"~\"");
        // A tagged condition is read whole: the error names the condition.
        assert!(err(&bad_op).starts_with("condition: "), "{}", err(&bad_op));
        let unknown = OK.replace("\"for\"", "\"fro\"");
        assert!(
            err(&unknown).starts_with("fro: ") || err(&unknown).starts_with("rule: "),
            "{}",
            err(&unknown)
        );
        let group = OK.replace("\"for\"", "\"group_by\":[\"source\"],\"for\"");
        assert!(err(&group).starts_with("group_by[0]: "), "{}", err(&group));
        let site = OK.replace("\"for\"", "\"sites\":[\"ok\",\"a.b\"],\"for\"");
        assert!(err(&site).starts_with("sites[1]: "), "{}", err(&site));
    }

    #[test]
    fn analytics_conditions_name_a_rule_and_group_by_key_only() {
        let ok = r#"{"id":"analytics-press","condition":{"kind":"analytics","rule":"press_held"}}"#;
        let rule = Rule::from_json(ok.as_bytes()).expect("valid");
        assert_eq!(rule.condition.input(), Input::Aggregates);
        let bad = ok.replace("press_held", "press.held");
        assert!(err(&bad).starts_with("condition.rule: "), "{}", err(&bad));
        let topic = ok.replace("\"condition\"", "\"group_by\":[\"topic\"],\"condition\"");
        assert!(err(&topic).starts_with("group_by[0]: "), "{}", err(&topic));
    }

    #[test]
    fn ops_compare() {
        assert!(Op::Gt.holds(2.0, 1.0));
        assert!(!Op::Gt.holds(1.0, 1.0));
        assert!(Op::Ge.holds(1.0, 1.0));
        assert!(Op::Ne.holds(1.0, 2.0));
        assert!(Op::Eq.holds(2.0, 2.0));
    }
}
