//! Silences: label matchers (`=`, `!=`, `=~`) and a time window. A record
//! made while a silence matches its labels is stored with
//! `silenced: true` (the notifier skips it). Stored per organisation in
//! `plantd_alert_silences` under `<org>.<id>`.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum MatchOp {
    /// The label equals the value.
    #[serde(rename = "=")]
    Eq,
    /// The label does not equal the value.
    #[serde(rename = "!=")]
    Ne,
    /// The whole label matches the regex.
    #[serde(rename = "=~")]
    Re,
}

/// One label condition. A missing label reads as the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Matcher {
    /// The label name.
    pub label: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or regex.
    pub value: String,
}

/// A silence that cannot be used, naming the field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct SilenceError {
    /// The field (`matchers[0].value`, `ends`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Matcher {
    /// Whether `labels` satisfy it (a bad regex matches nothing; validated
    /// silences have none).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.label).map_or("", String::as_str);
        match self.op {
            MatchOp::Eq => got == self.value,
            MatchOp::Ne => got != self.value,
            MatchOp::Re => regex::Regex::new(&format!("^(?:{})$", self.value))
                .map(|re| re.is_match(got))
                .unwrap_or(false),
        }
    }
}

impl FromStr for Matcher {
    type Err = String;

    /// `label=value`, `label!=value` or `label=~regex`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (label, op, value) = if let Some((l, v)) = s.split_once("!=") {
            (l, MatchOp::Ne, v)
        } else if let Some((l, v)) = s.split_once("=~") {
            (l, MatchOp::Re, v)
        } else if let Some((l, v)) = s.split_once('=') {
            (l, MatchOp::Eq, v)
        } else {
            return Err(format!(
                "{s:?}: use label=value, label!=value or label=~regex"
            ));
        };
        Ok(Self {
            label: label.trim().to_owned(),
            op,
            value: value.trim().to_owned(),
        })
    }
}

/// A silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Silence {
    /// Its id (given by the server when created).
    #[serde(default)]
    pub id: String,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// From (default: now).
    #[serde(default = "now", with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub starts: OffsetDateTime,
    /// Until.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub ends: OffsetDateTime,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// Who made it (the token's subject; set by the server).
    #[serde(default)]
    pub created_by: String,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Silence {
    /// Whether it is in force at `at` and matches `labels`.
    pub fn silences(&self, labels: &BTreeMap<String, String>, at: OffsetDateTime) -> bool {
        self.starts <= at && at < self.ends && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Checks matchers and window.
    ///
    /// # Errors
    /// [`SilenceError`] naming the field.
    pub fn validate(&self) -> Result<(), SilenceError> {
        let err = |field: String, reason: &str| SilenceError {
            field,
            reason: reason.to_owned(),
        };
        if self.matchers.is_empty() {
            return Err(err(
                "matchers".into(),
                "at least one matcher (a silence of everything is a mistake)",
            ));
        }
        for (i, m) in self.matchers.iter().enumerate() {
            if m.label.is_empty() {
                return Err(err(format!("matchers[{i}].label"), "must not be empty"));
            }
            if m.op == MatchOp::Re && regex::Regex::new(&format!("^(?:{})$", m.value)).is_err() {
                return Err(err(format!("matchers[{i}].value"), "not a valid regex"));
            }
        }
        if self.ends <= self.starts {
            return Err(err("ends".into(), "must be after starts"));
        }
        if self.comment.len() > 1000 {
            return Err(err("comment".into(), "longer than 1000 bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_and_match() {
        let labels: BTreeMap<String, String> = [("site", "a"), ("topic", "line1/temp")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let m = |s: &str| s.parse::<Matcher>().expect(s);
        assert!(m("site=a").matches(&labels));
        assert!(!m("site!=a").matches(&labels));
        assert!(m("topic=~line1/.*").matches(&labels));
        assert!(!m("topic=~line1").matches(&labels));
        assert!(m("missing!=x").matches(&labels));
        assert!("nothing".parse::<Matcher>().is_err());
    }
}
