//! The alert record: one JSON document per message in `PLANTD_ALERTS`.
//!
//! Subject `plantd.<site>.alert.<rule>` (the rule id is one subject token:
//! lowercase letters, digits, `-` and `_`). `Nats-Msg-Id` is
//! [`AlertRecord::id`] — `<rule>:<key hash>:<n>` for the n-th transition of
//! an alert instance, with a suffix for records that are not transitions
//! (`:ack`, `:r<k>` for the k-th repeat notice) — so a record re-published
//! after a crash is stored once.
//!
//! Every consumer (notifier, proxy, CLI, app) reads this shape; add fields
//! as `Option`/defaulted so old records stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where an alert instance is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum AlertState {
    /// The condition does not hold (never fired, or resolved).
    Inactive,
    /// The condition holds, not yet for the rule's `for` duration.
    Pending,
    /// The condition has held for the rule's `for` duration.
    Firing,
    /// The rule's input has been silent longer than its no-data timeout:
    /// the condition cannot be evaluated. Never shown as resolved.
    NoData,
}

/// What a record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum RecordKind {
    /// The instance moved from [`AlertRecord::from`] to [`AlertRecord::to`].
    /// `to == Inactive` after `Firing` is a resolution.
    Transition,
    /// An operator acknowledged the firing instance ([`AlertRecord::ack`]).
    Ack,
    /// The instance is still firing after the rule's repeat interval: notify
    /// again.
    Repeat,
}

/// How bad it is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Severity {
    /// For information.
    Info,
    /// Someone should look.
    #[default]
    Warning,
    /// Someone must act now.
    Critical,
}

/// One line or value that made the condition hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Evidence {
    /// The stream it came from (`PLANTD_LOGS`, `PLANTD_TELEMETRY`).
    pub stream: String,
    /// Its sequence there.
    pub sequence: u64,
    /// Its time (event time when known, else the stream's).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub time: OffsetDateTime,
    /// The MQTT topic (telemetry) or log source (logs).
    pub topic: String,
    /// The numeric value the rule read, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The log message or the payload as text (truncated to 1 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// An operator's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Ack {
    /// Who (the token's subject).
    pub by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub at: OffsetDateTime,
    /// Their note.
    #[serde(default)]
    pub note: String,
}

/// One message in `PLANTD_ALERTS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AlertRecord {
    /// `Nats-Msg-Id`: `<rule>:<key hash>:<n>[:ack|:r<k>]` (module docs).
    pub id: String,
    /// What happened.
    pub kind: RecordKind,
    /// The organisation owning the rule (and the site).
    pub org: String,
    /// The site the alert is about.
    pub site: String,
    /// The rule's id.
    pub rule: String,
    /// The rule's name, for people.
    pub rule_name: String,
    /// The instance key: the rule's group-by labels, `k=v` joined by `,`
    /// in key order (empty for a rule with one instance per site).
    pub key: String,
    /// The instance's labels (rule labels plus group-by values: `site`,
    /// `source`, `topic`, …); silences and routing match on these.
    pub labels: BTreeMap<String, String>,
    /// Severity from the rule.
    pub severity: Severity,
    /// State before.
    pub from: AlertState,
    /// State after (equal to `from` for `Ack` and `Repeat`).
    pub to: AlertState,
    /// This instance's transition count (1 for its first transition).
    pub n: u64,
    /// When it happened: the engine's clock when it applied the item or
    /// ticked (decision 0024: lifecycle times are the engine's, not the
    /// items'; an item's own time is in its [`Evidence::time`]).
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub at: OffsetDateTime,
    /// When the instance started firing, while it fires.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub firing_since: Option<OffsetDateTime>,
    /// The value the condition was evaluated on (count, rate, reading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// One line for people: what holds, e.g. "12 lines matching
    /// \"overheat\" in 1m (> 5)".
    pub summary: String,
    /// The lines or values that caused it (newest last, at most 20).
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    /// The notification channels the rule routes to.
    #[serde(default)]
    pub notify: Vec<String>,
    /// True when a silence matched at the time: stored, not notified.
    #[serde(default)]
    pub silenced: bool,
    /// The acknowledgement, on `Ack` records (and on later records of an
    /// acknowledged instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
}

impl AlertRecord {
    /// The subject this record is published on:
    /// `plantd.<site>.alert.<rule>`.
    pub fn subject(&self) -> String {
        format!("plantd.{}.alert.{}", self.site, self.rule)
    }

    /// True when this record is a resolution (firing → inactive).
    pub fn is_resolution(&self) -> bool {
        self.kind == RecordKind::Transition
            && self.from == AlertState::Firing
            && self.to == AlertState::Inactive
    }
}
