//! Typed calls for alerting — alert rules, alerts, acknowledgements,
//! silences and notification channels — and analytics rules, whose
//! answers the proxy's OpenAPI document does not type yet (the generated
//! operations return [`Raw`] for them).
//!
//! Each answer type names the fields a program reads and keeps every
//! other field the server sent in `other`, so a value printed back as
//! JSON loses nothing (a rule's condition, a channel's target, fields a
//! newer server adds). Calls are methods on [`Rest`]:
//!
//! ```no_run
//! # async fn demo(plantd: plantd_client::Plantd) -> Result<(), plantd_client::Error> {
//! use plantd_client::alerting::AlertFilter;
//! let firing = plantd
//!     .rest()
//!     .list_alerts(&AlertFilter { state: Some("firing".into()), ..Default::default() })
//!     .await?;
//! for a in &firing {
//!     println!("{} {} on {}", a.id, a.state, a.site);
//! }
//! # Ok(()) }
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::generated::proxy::{params, types};
use crate::rest::{Answer, Raw, Rest};

/// Fields of an answer that the type does not name, kept as they came.
pub type Other = Map<String, Value>;

/// A value the server created or replaced: `created` is true for a 201.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<T> {
    /// Whether it was new (201 Created) rather than replaced (200).
    pub created: bool,
    /// What the server stored.
    pub value: T,
}

/// Filters of [`Rest::list_alerts`] (all optional; the server checks the
/// values: a bad one is [`Error::Api`] 400).
pub type AlertFilter = params::GetAlertsParams;

/// An acknowledgement of a firing alert.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AckInfo {
    /// Who (the token's subject).
    pub by: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub at: String,
    /// Their note.
    #[serde(default)]
    pub note: String,
}

/// One alert instance (a rule on a site and group key).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Alert {
    /// `<rule>.<key hash>`.
    pub id: String,
    /// The rule's id.
    pub rule: String,
    /// The site.
    pub site: String,
    /// The group key (`topic=line1/temp`), empty for a rule without groups.
    #[serde(default)]
    pub key: String,
    /// `inactive`, `pending`, `firing` or `no_data`.
    pub state: String,
    /// `info`, `warning` or `critical`, when the rule says.
    #[serde(default)]
    pub severity: Option<String>,
    /// The last value the condition saw.
    #[serde(default)]
    pub value: Option<f64>,
    /// The acknowledgement, while firing and acknowledged.
    #[serde(default)]
    pub ack: Option<AckInfo>,
    /// Everything else (`labels`, `since`, `firing_since`, `transitions`, …).
    #[serde(flatten)]
    pub other: Other,
}

/// One record of an alert's history (`PLANTD_ALERTS`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertRecord {
    /// `transition`, `repeat`, `ack`, `resolved`, …
    pub kind: String,
    /// For a transition: the state before.
    #[serde(default)]
    pub from: Option<String>,
    /// For a transition: the state after.
    #[serde(default)]
    pub to: Option<String>,
    /// When (RFC 3339).
    #[serde(default)]
    pub at: Option<String>,
    /// For people.
    #[serde(default)]
    pub summary: Option<String>,
    /// A silence covered it (no notification was sent).
    #[serde(default)]
    pub silenced: bool,
    /// Everything else.
    #[serde(flatten)]
    pub other: Other,
}

/// [`Rest::alert_history`]: the alert and its records, oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertHistory {
    /// The alert now.
    pub alert: Alert,
    /// Its records.
    pub records: Vec<AlertRecord>,
}

/// One matcher of a silence or a channel: `label op value`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabelMatcher {
    /// The label.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// The value or regex.
    pub value: String,
}

impl std::fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.label, self.op, self.value)
    }
}

/// A silence: alerts whose labels match every matcher notify nobody
/// between `starts` and `ends`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Silence {
    /// Its id (chosen by the server).
    #[serde(default)]
    pub id: String,
    /// All must match.
    pub matchers: Vec<LabelMatcher>,
    /// From (RFC 3339).
    #[serde(default)]
    pub starts: String,
    /// Until (RFC 3339).
    pub ends: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
    /// In force now (lists only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Everything else (`created_by`, …).
    #[serde(flatten)]
    pub other: Other,
}

/// What [`Rest::create_silence`] sends.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct NewSilence {
    /// All must match (at least one).
    pub matchers: Vec<LabelMatcher>,
    /// From (RFC 3339; default: now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts: Option<String>,
    /// Until (RFC 3339).
    pub ends: String,
    /// Why.
    pub comment: String,
}

/// A notification channel (its secrets are never sent back).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Channel {
    /// Its name.
    pub name: String,
    /// `webhook` or `sns`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Only alerts matching these (all) go to it.
    #[serde(default)]
    pub matchers: Vec<LabelMatcher>,
    /// Whether resolutions are sent too (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// Everything else (`webhook: {url, …}`, `sns: {topic_arn, …}`, …).
    #[serde(flatten)]
    pub other: Other,
}

impl Channel {
    /// Where it sends: the webhook's URL or the SNS topic's ARN.
    pub fn target(&self) -> Option<&str> {
        let (section, field) = match self.kind.as_str() {
            "webhook" => ("webhook", "url"),
            "sns" => ("sns", "topic_arn"),
            _ => return None,
        };
        self.other.get(section)?.get(field)?.as_str()
    }
}

/// [`Rest::test_channel`]: the receiver took the test notification.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChannelTest {
    /// What the receiver answered (status, message id).
    #[serde(default)]
    pub receipt: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub other: Other,
}

/// An alert rule's condition.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Condition {
    /// `threshold`, `absence`, `rate`, `log_match`, …
    #[serde(default)]
    pub kind: String,
    /// The telemetry topic filter it watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The log match it watches.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    /// Everything else (`op`, `value`, windows, …).
    #[serde(flatten)]
    pub other: Other,
}

impl Condition {
    /// What it watches: the topic filter or the log match.
    pub fn watches(&self) -> Option<&str> {
        self.topic.as_deref().or(self.matches.as_deref())
    }
}

/// An alert rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AlertRule {
    /// Its id.
    pub id: String,
    /// For people.
    #[serde(default)]
    pub name: String,
    /// `info`, `warning` or `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// How long the condition must hold (`5m`).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// What it watches.
    #[serde(default)]
    pub condition: Condition,
    /// Everything else (labels, notify, group_by, …).
    #[serde(flatten)]
    pub other: Other,
}

/// An analytics rule as the proxy shows it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AnalyticsRule {
    /// Its name.
    pub name: String,
    /// `cloud` or `edge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Running (true) or paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The sites it reads (empty: every site).
    #[serde(default)]
    pub sites: Vec<String>,
    /// The rule as SQL, when it was given so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The rule in its JSON form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Value>,
    /// The companion alert (`{severity, channels}`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Value>,
    /// Everything else (revision, …).
    #[serde(flatten)]
    pub other: Other,
}

impl AnalyticsRule {
    /// The companion alert's severity, if it has one.
    pub fn alert_severity(&self) -> Option<&str> {
        self.alert.as_ref()?.get("severity")?.as_str()
    }
}

/// `{<key>: [T, ..]}`: the list answers.
fn list_of<T: DeserializeOwned>(answer: &Answer<Raw>, key: &str) -> Result<Vec<T>, Error> {
    let mut v: Map<String, Value> = answer.value.json()?;
    let items = v.remove(key).unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(items).map_err(|e| Error::Decode(format!("{key}: {e}")))
}

fn one<T: DeserializeOwned>(answer: &Answer<Raw>) -> Result<T, Error> {
    answer.value.json()
}

fn applied<T: DeserializeOwned>(answer: &Answer<Raw>) -> Result<Applied<T>, Error> {
    Ok(Applied {
        created: answer.status == 201,
        value: one(answer)?,
    })
}

fn to_value<T: Serialize + ?Sized>(body: &T) -> Result<Value, Error> {
    serde_json::to_value(body).map_err(|e| Error::Invalid(format!("JSON body: {e}")))
}

impl Rest {
    /// The organisation's alert instances matching `filter`
    /// (`GET /v1/alerts`; `alerts:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 400 for a bad filter value, 401, 403, 503.
    pub async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<Alert>, Error> {
        list_of(&self.get_alerts(filter).await?, "alerts")
    }

    /// Acknowledges a firing alert (`POST /v1/alerts/{id}/ack`;
    /// `alerts:write`): repeats stop until it fires again. Returns the
    /// `ack` record.
    ///
    /// # Errors
    /// [`Error::Api`] 404 (no such alert in the caller's organisation),
    /// 409 (not firing, or acknowledged already), 401, 403, 503.
    pub async fn ack_alert(&self, id: &str, note: &str) -> Result<AlertRecord, Error> {
        let body = types::AckBody {
            note: Some(note.to_owned()),
        };
        one(&self.post_alerts_id_ack(id, &body).await?)
    }

    /// An alert and its records, oldest first
    /// (`GET /v1/alerts/{id}/history`; `alerts:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn alert_history(&self, id: &str) -> Result<AlertHistory, Error> {
        one(&self.get_alerts_id_history(id).await?)
    }

    /// The organisation's silences, expired ones included, each with
    /// `active` (`GET /v1/silences`; `alerts:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_silences(&self) -> Result<Vec<Silence>, Error> {
        list_of(&self.get_silences().await?, "silences")
    }

    /// Creates a silence (`POST /v1/silences`; `alerts:write`).
    ///
    /// # Errors
    /// [`Error::Api`] 400 naming the field (`matchers[0].value`, `ends`),
    /// 401, 403, 503.
    pub async fn create_silence(&self, silence: &NewSilence) -> Result<Silence, Error> {
        one(&self.post_silences(&to_value(silence)?).await?)
    }

    /// Ends a silence now (`DELETE /v1/silences/{id}`; `alerts:write`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn delete_silence(&self, id: &str) -> Result<(), Error> {
        self.delete_silences_id(id).await.map(|_| ())
    }

    /// The organisation's notification channels, without their secrets
    /// (`GET /v1/alert-channels`; `alerts:admin`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_channels(&self) -> Result<Vec<Channel>, Error> {
        list_of(&self.get_alert_channels().await?, "channels")
    }

    /// One channel (`GET /v1/alert-channels/{name}`).
    ///
    /// # Errors
    /// [`Error::Api`] 400 (malformed name), 404, 401, 403, 503.
    pub async fn get_channel(&self, name: &str) -> Result<Channel, Error> {
        one(&self.get_alert_channels_name(name).await?)
    }

    /// Creates or replaces a channel (`PUT /v1/alert-channels/{name}`);
    /// `channel` is its JSON (`{"webhook": {"url": …}}`; a webhook without
    /// `secret` keeps the stored one).
    ///
    /// # Errors
    /// [`Error::Api`] 400 naming the field, 401, 403, 503.
    pub async fn put_channel(
        &self,
        name: &str,
        channel: &Value,
    ) -> Result<Applied<Channel>, Error> {
        applied(&self.put_alert_channels_name(name, channel).await?)
    }

    /// Deletes a channel (`DELETE /v1/alert-channels/{name}`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn delete_channel(&self, name: &str) -> Result<(), Error> {
        self.delete_alert_channels_name(name).await.map(|_| ())
    }

    /// Sends one test notification on a channel
    /// (`POST /v1/alert-channels/{name}/test`).
    ///
    /// # Errors
    /// [`Error::Api`] 502 with the receiver's answer when it refused or
    /// could not be reached; 404, 401, 403, 503.
    pub async fn test_channel(&self, name: &str) -> Result<ChannelTest, Error> {
        one(&self.post_alert_channels_name_test(name).await?)
    }

    /// The organisation's alert rules (`GET /v1/alert-rules`;
    /// `alerts:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_alert_rules(&self) -> Result<Vec<AlertRule>, Error> {
        list_of(&self.get_alert_rules().await?, "rules")
    }

    /// One alert rule (`GET /v1/alert-rules/{id}`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn get_alert_rule(&self, id: &str) -> Result<AlertRule, Error> {
        one(&self.get_alert_rules_id(id).await?)
    }

    /// Creates or replaces an alert rule (`PUT /v1/alert-rules/{id}`;
    /// `alerts:write`); `rule` is its JSON.
    ///
    /// # Errors
    /// [`Error::Api`] 400 naming the field, 401, 403, 503.
    pub async fn put_alert_rule<T: Serialize + ?Sized>(
        &self,
        id: &str,
        rule: &T,
    ) -> Result<Applied<AlertRule>, Error> {
        applied(&self.put_alert_rules_id(id, &to_value(rule)?).await?)
    }

    /// Deletes an alert rule (`DELETE /v1/alert-rules/{id}`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn delete_alert_rule(&self, id: &str) -> Result<(), Error> {
        self.delete_alert_rules_id(id).await.map(|_| ())
    }

    /// The organisation's analytics rules (`GET /v1/analytics/rules`;
    /// `analytics:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_analytics_rules(&self) -> Result<Vec<AnalyticsRule>, Error> {
        list_of(&self.get_analytics_rules().await?, "rules")
    }

    /// One analytics rule (`GET /v1/analytics/rules/{name}`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn get_analytics_rule(&self, name: &str) -> Result<AnalyticsRule, Error> {
        one(&self.get_analytics_rules_name(name).await?)
    }

    /// Creates or replaces an analytics rule (and its companion alert rule
    /// `analytics-<name>`) (`PUT /v1/analytics/rules/{name}`); `body` is
    /// `{sql | rule, sites, at, enabled, alert}`.
    ///
    /// # Errors
    /// [`Error::Api`] 400 naming the field (and the SQL's line and
    /// column), 409 (a hand-written alert rule in the companion's place, a
    /// concurrent write), 401, 403, 503.
    pub async fn put_analytics_rule(
        &self,
        name: &str,
        body: &Value,
    ) -> Result<Applied<AnalyticsRule>, Error> {
        let p = params::PutAnalyticsRulesNameParams::default();
        applied(&self.put_analytics_rules_name(name, &p, body).await?)
    }

    /// Deletes an analytics rule and its companion alert rule
    /// (`DELETE /v1/analytics/rules/{name}`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn delete_analytics_rule(&self, name: &str) -> Result<(), Error> {
        let p = params::DeleteAnalyticsRulesNameParams::default();
        self.delete_analytics_rules_name(name, &p).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_fields_survive_a_round_trip() {
        let text = r#"{"id":"hot","name":"Hot","for":"1m","severity":"critical",
            "condition":{"kind":"threshold","topic":"line1/temp","op":">","value":80},
            "labels":{"team":"ops"},"notify":["ops"]}"#;
        let rule: AlertRule = serde_json::from_str(text).expect("rule");
        assert_eq!(rule.condition.watches(), Some("line1/temp"));
        assert_eq!(rule.hold.as_deref(), Some("1m"));
        let back = serde_json::to_value(&rule).expect("json");
        let orig: Value = serde_json::from_str(text).expect("json");
        assert_eq!(back, orig);
    }

    #[test]
    fn a_channel_names_its_target() {
        let c: Channel = serde_json::from_str(
            r#"{"name":"ops","type":"webhook","webhook":{"url":"http://x/hook"},"send_resolved":false}"#,
        )
        .expect("channel");
        assert_eq!(c.target(), Some("http://x/hook"));
        assert_eq!(c.send_resolved, Some(false));
        let m = LabelMatcher {
            label: "site".into(),
            op: "=~".into(),
            value: "plant.*".into(),
        };
        assert_eq!(m.to_string(), "site=~plant.*");
    }
}
