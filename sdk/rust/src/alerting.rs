//! Calls for alerting — alert rules, alerts, acknowledgements, silences
//! and notification channels — and analytics rules.
//!
//! The answers are the proxy document's types (decision 0050), named here
//! for programs: [`Alert`] is [`types::AlertView`], [`Silence`] is
//! [`types::SilenceView`], [`Channel`] is [`types::ChannelView`], and so
//! on. A rule's `condition` is a `serde_json::Value` (the generator maps
//! `oneOf`s to it, decision 0041); [`AlertRule::condition_kind`] and
//! [`AlertRule::watches`] read what a listing shows. Calls are methods on
//! [`Rest`]:
//!
//! ```no_run
//! # async fn demo(plantd: plantd_client::Plantd) -> Result<(), plantd_client::Error> {
//! use plantd_client::alerting::AlertFilter;
//! use plantd_client::proxy::types::AlertState;
//! let firing = plantd
//!     .rest()
//!     .list_alerts(&AlertFilter { state: Some("firing".into()), ..Default::default() })
//!     .await?;
//! for a in firing.iter().filter(|a| a.state == AlertState::Firing) {
//!     println!("{} {} on {}", a.id, a.state, a.site);
//! }
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::generated::proxy::{params, types};
use crate::rest::{Answer, Rest};

/// A value the server created or replaced: `created` is true for a 201.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<T> {
    /// Whether it was new (201 Created) rather than replaced (200).
    pub created: bool,
    /// What the server stored.
    pub value: T,
}

impl<T> From<Answer<T>> for Applied<T> {
    fn from(answer: Answer<T>) -> Self {
        Self {
            created: answer.status == 201,
            value: answer.value,
        }
    }
}

/// Filters of [`Rest::list_alerts`] (all optional; the server checks the
/// values: a bad one is [`Error::Api`] 400).
pub type AlertFilter = params::GetAlertsParams;

/// One alert instance (a rule on a site and group key).
pub type Alert = types::AlertView;

/// One record of an alert's history (`PLANTD_ALERTS`); an
/// acknowledgement's record too.
pub type AlertRecord = types::AlertRecord;

/// [`Rest::alert_history`]: the alert and its records, oldest first.
pub type AlertHistory = types::AlertHistory;

/// One matcher of a silence or a channel: `label op value`.
pub type LabelMatcher = types::Matcher;

impl std::fmt::Display for types::Matcher {
    /// `label op value`, as `plantd alerts silence --match` takes it
    /// (`site=~plant.*`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.label, self.op, self.value)
    }
}

/// A silence as listed, with whether it is in force now.
pub type Silence = types::SilenceView;

/// What [`Rest::create_silence`] sends and answers (`id` and
/// `created_by` are the server's: leave them `None`).
pub type NewSilence = types::Silence;

/// A notification channel (its secrets are never sent back).
pub type Channel = types::ChannelView;

impl types::ChannelView {
    /// Where it sends: the webhook's URL or the SNS topic's ARN.
    pub fn target(&self) -> Option<&str> {
        match (&self.webhook, &self.sns) {
            (Some(w), _) => Some(&w.url),
            (None, Some(s)) => Some(&s.topic_arn),
            (None, None) => None,
        }
    }
}

/// [`Rest::test_channel`]: the receiver took the test notification.
pub type ChannelTest = types::TestSent;

/// An alert rule.
pub type AlertRule = types::AlertRule;

impl types::AlertRule {
    /// The condition's kind: `threshold`, `absence`, `log_rate`, …
    pub fn condition_kind(&self) -> Option<&str> {
        self.condition.get("kind")?.as_str()
    }

    /// What it watches: the telemetry topic filter, the log match or the
    /// analytics rule.
    pub fn watches(&self) -> Option<&str> {
        ["topic", "match", "rule"]
            .iter()
            .find_map(|k| self.condition.get(*k)?.as_str())
    }
}

/// An analytics rule as the proxy shows it.
pub type AnalyticsRule = types::AnalyticsRule;

impl types::AnalyticsRule {
    /// The companion alert's severity, if it has one.
    pub fn alert_severity(&self) -> Option<types::Severity> {
        self.alert.as_ref()?.severity
    }
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
        Ok(self.get_alerts(filter).await?.value.alerts)
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
        Ok(self.post_alerts_id_ack(id, &body).await?.value)
    }

    /// An alert and its records, oldest first
    /// (`GET /v1/alerts/{id}/history`; `alerts:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn alert_history(&self, id: &str) -> Result<AlertHistory, Error> {
        Ok(self.get_alerts_id_history(id).await?.value)
    }

    /// The organisation's silences, expired ones included, each with
    /// `active` (`GET /v1/silences`; `alerts:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_silences(&self) -> Result<Vec<Silence>, Error> {
        Ok(self.get_silences().await?.value.silences)
    }

    /// Creates a silence (`POST /v1/silences`; `alerts:write`).
    ///
    /// # Errors
    /// [`Error::Api`] 400 naming the field (`matchers[0].value`, `ends`),
    /// 401, 403, 503.
    pub async fn create_silence(&self, silence: &NewSilence) -> Result<NewSilence, Error> {
        Ok(self.post_silences(&to_value(silence)?).await?.value)
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
        Ok(self.get_alert_channels().await?.value.channels)
    }

    /// One channel (`GET /v1/alert-channels/{name}`).
    ///
    /// # Errors
    /// [`Error::Api`] 400 (malformed name), 404, 401, 403, 503.
    pub async fn get_channel(&self, name: &str) -> Result<Channel, Error> {
        Ok(self.get_alert_channels_name(name).await?.value)
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
        Ok(self.put_alert_channels_name(name, channel).await?.into())
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
        Ok(self.post_alert_channels_name_test(name).await?.value)
    }

    /// The organisation's alert rules (`GET /v1/alert-rules`;
    /// `alerts:read`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_alert_rules(&self) -> Result<Vec<AlertRule>, Error> {
        Ok(self.get_alert_rules().await?.value.rules)
    }

    /// One alert rule (`GET /v1/alert-rules/{id}`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn get_alert_rule(&self, id: &str) -> Result<AlertRule, Error> {
        Ok(self.get_alert_rules_id(id).await?.value)
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
        Ok(self.put_alert_rules_id(id, &to_value(rule)?).await?.into())
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
        Ok(self.get_analytics_rules().await?.value.rules)
    }

    /// One analytics rule (`GET /v1/analytics/rules/{name}`).
    ///
    /// # Errors
    /// [`Error::Api`] 404, 401, 403, 503.
    pub async fn get_analytics_rule(&self, name: &str) -> Result<AnalyticsRule, Error> {
        Ok(self.get_analytics_rules_name(name).await?.value)
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
        Ok(self.put_analytics_rules_name(name, &p, body).await?.into())
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
    fn a_rule_names_what_it_watches() {
        let text = r#"{"id":"hot","name":"Hot","for":"1m","severity":"critical",
            "condition":{"kind":"threshold","topic":"line1/temp","op":">","value":80},
            "labels":{"team":"ops"},"notify":["ops"]}"#;
        let rule: AlertRule = serde_json::from_str(text).expect("rule");
        assert_eq!(rule.condition_kind(), Some("threshold"));
        assert_eq!(rule.watches(), Some("line1/temp"));
        assert_eq!(rule.r#for.as_deref(), Some("1m"));
        let back = serde_json::to_value(&rule).expect("json");
        let orig: Value = serde_json::from_str(text).expect("json");
        assert_eq!(back, orig, "the document's fields survive a round trip");
    }

    #[test]
    fn a_channel_names_its_target_and_a_matcher_prints_as_typed() {
        let c: Channel = serde_json::from_str(
            r#"{"name":"ops","type":"webhook","matchers":[{"label":"site","op":"=~","value":"plant.*"}],
                "send_resolved":false,
                "webhook":{"url":"http://x/hook","headers":[],"secret_set":true,"timeout_ms":5000}}"#,
        )
        .expect("channel");
        assert_eq!(c.target(), Some("http://x/hook"));
        assert!(!c.send_resolved);
        assert_eq!(c.matchers[0].op, types::MatchOp::Re);
        assert_eq!(c.matchers[0].to_string(), "site=~plant.*");
    }
}
