//! Notification channels: where an organisation's alerts go.
//!
//! A channel is stored in KV `plantd_alert_channels` under `<org>.<name>`
//! ([`Channel`]). People write a [`ChannelSpec`] (the API's body); what
//! they read back is a [`ChannelView`], which never carries the webhook's
//! secret. A rule names channels in its `notify` list; a channel's
//! [`Matcher`]s (the silences' matchers: `=`, `!=`, `=~`) narrow that
//! further: all must match the record's labels ([`routing_labels`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::record::AlertRecord;
pub use crate::silence::{MatchOp, Matcher};

/// Longest channel name (a KV key token).
pub const MAX_NAME: usize = 64;
/// The webhook timeout when the channel does not set one.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest webhook timeout a channel may set.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// The shortest webhook secret accepted (bytes).
pub const MIN_SECRET: usize = 16;
/// Headers a channel may not set: the notifier writes them.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "plantd-notification-id",
    "plantd-timestamp",
    "plantd-signature",
];

/// An invalid channel, naming the field (the API answers 400 with it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ChannelError {
    /// The field, as written in the JSON body (`webhook.url`, `matchers[1].value`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ChannelError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The labels a channel's [`Matcher`]s read: the record's labels, plus
/// `severity`, `site` and `rule` when the record's labels lack them.
pub fn routing_labels(record: &AlertRecord) -> BTreeMap<String, String> {
    let mut labels = record.labels.clone();
    let severity = serde_json::to_value(record.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    labels.entry("severity".to_owned()).or_insert(severity);
    labels
        .entry("site".to_owned())
        .or_insert_with(|| record.site.clone());
    labels
        .entry("rule".to_owned())
        .or_insert_with(|| record.rule.clone());
    labels
}

/// A webhook as stored: the secret included.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Where to POST (`http` or `https`).
    pub url: String,
    /// The HMAC-SHA256 key of `Plantd-Signature`. Write-only: never
    /// returned by the API.
    pub secret: String,
    /// Extra request headers (e.g. an `Authorization` the receiver wants).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How long one attempt may take, in milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl Webhook {
    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// An SNS topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Sns {
    /// The topic's ARN (`arn:aws:sns:<region>:<account>:<name>`).
    pub topic_arn: String,
    /// The region to call; default: the topic ARN's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Sns {
    /// The region to call: [`Sns::region`], else the ARN's.
    pub fn region(&self) -> Option<&str> {
        self.region
            .as_deref()
            .or_else(|| self.topic_arn.split(':').nth(3).filter(|r| !r.is_empty()))
    }
}

/// Where a channel delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// An HTTP POST, signed.
    Webhook(Webhook),
    /// An SNS Publish.
    Sns(Sns),
}

impl Target {
    /// `webhook` or `sns`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Sns(_) => "sns",
        }
    }
}

/// A channel as stored in `plantd_alert_channels` (`<org>.<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// Its name, unique in the organisation; rules name it in `notify`.
    pub name: String,
    /// The organisation owning it.
    pub org: String,
    /// Where it delivers (`"webhook": {…}` or `"sns": {…}` in JSON).
    #[serde(flatten)]
    pub target: Target,
    /// Whether resolutions (and data coming back after no-data) are sent.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// All must match a record's labels for it to be sent here.
    #[serde(default)]
    pub matchers: Vec<Matcher>,
}

fn yes() -> bool {
    true
}

impl Channel {
    /// Whether this channel takes `record`: its matchers all match, and a
    /// resolution only when `send_resolved`.
    pub fn accepts(&self, record: &AlertRecord, event: super::payload::Event) -> bool {
        if event.is_resolution() && !self.send_resolved {
            return false;
        }
        if self.matchers.is_empty() {
            return true;
        }
        let labels = routing_labels(record);
        self.matchers.iter().all(|m| m.matches(&labels))
    }

    /// What the API shows: everything but the secret.
    pub fn view(&self) -> ChannelView {
        let (webhook, sns) = match &self.target {
            Target::Webhook(w) => (
                Some(WebhookView {
                    url: w.url.clone(),
                    headers: w.headers.keys().cloned().collect(),
                    timeout_ms: w.timeout_ms,
                    secret_set: !w.secret.is_empty(),
                }),
                None,
            ),
            Target::Sns(s) => (None, Some(s.clone())),
        };
        ChannelView {
            name: self.name.clone(),
            kind: self.target.kind().to_owned(),
            webhook,
            sns,
            send_resolved: self.send_resolved,
            matchers: self.matchers.clone(),
        }
    }
}

/// A webhook as the API shows it: no secret, no header values (they may
/// carry credentials too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookView {
    /// Where it POSTs.
    pub url: String,
    /// The names of the extra headers it sends.
    pub headers: Vec<String>,
    /// Per-attempt timeout (ms).
    pub timeout_ms: u64,
    /// Always true for a stored webhook: a secret is set (never shown).
    pub secret_set: bool,
}

/// A channel as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ChannelView {
    /// Its name.
    pub name: String,
    /// `webhook` or `sns`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The webhook, for a webhook channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookView>,
    /// The topic, for an SNS channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<Sns>,
    /// Whether resolutions are sent.
    pub send_resolved: bool,
    /// Label matchers narrowing what it takes.
    pub matchers: Vec<Matcher>,
}

/// A webhook as written to the API: the secret may be left out on an
/// update to keep the stored one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Where to POST.
    pub url: String,
    /// The signing secret (at least [`MIN_SECRET`] bytes); required when
    /// the channel is created or changes to a webhook.
    #[serde(default)]
    pub secret: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout in ms (default 5000, at most 60000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The body of `PUT /v1/alert-channels/{name}` (and one entry of
/// `plantd channels apply -f`): exactly one of `webhook` and `sns`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// The name; when present it must equal the path's.
    #[serde(default)]
    pub name: Option<String>,
    /// A webhook target.
    #[serde(default)]
    pub webhook: Option<WebhookSpec>,
    /// An SNS target.
    #[serde(default)]
    pub sns: Option<Sns>,
    /// Send resolutions too (default true).
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// Label matchers (all must match).
    #[serde(default)]
    pub matchers: Vec<Matcher>,
}

/// Checks a channel name: 1–64 lowercase letters, digits, `-` and `_`
/// (one KV key token, one subject-safe word).
///
/// # Errors
/// [`ChannelError`] on field `name`.
pub fn check_name(name: &str) -> Result<(), ChannelError> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ChannelError::new(
            "name",
            format!("{name:?}: use 1-{MAX_NAME} lowercase letters, digits, '-' or '_'"),
        ))
    }
}

impl ChannelSpec {
    /// The channel `name` of `org` this spec describes, validated.
    /// `existing` is the stored channel it replaces, if any: a webhook
    /// spec without a secret keeps the existing webhook's.
    ///
    /// # Errors
    /// [`ChannelError`] naming the first bad field.
    pub fn into_channel(
        self,
        org: &str,
        name: &str,
        existing: Option<&Channel>,
    ) -> Result<Channel, ChannelError> {
        check_name(name)?;
        if let Some(n) = &self.name
            && n != name
        {
            return Err(ChannelError::new(
                "name",
                format!("{n:?} differs from the name in the path ({name:?})"),
            ));
        }
        let target = match (self.webhook, self.sns) {
            (Some(w), None) => {
                let kept = match existing.map(|c| &c.target) {
                    Some(Target::Webhook(old)) => Some(old.secret.clone()),
                    _ => None,
                };
                Target::Webhook(webhook(w, kept)?)
            }
            (None, Some(s)) => Target::Sns(sns(s)?),
            (Some(_), Some(_)) => {
                return Err(ChannelError::new(
                    "sns",
                    "give either webhook or sns, not both",
                ));
            }
            (None, None) => {
                return Err(ChannelError::new(
                    "webhook",
                    "give a webhook {url, secret} or an sns {topic_arn}",
                ));
            }
        };
        for (i, m) in self.matchers.iter().enumerate() {
            if m.label.is_empty() || m.label.len() > 128 {
                return Err(ChannelError::new(
                    format!("matchers[{i}].label"),
                    "must be 1-128 characters",
                ));
            }
            if m.value.len() > 1024 {
                return Err(ChannelError::new(
                    format!("matchers[{i}].value"),
                    "must be at most 1024 characters",
                ));
            }
            if m.op == MatchOp::Re && regex::Regex::new(&format!("^(?:{})$", m.value)).is_err() {
                return Err(ChannelError::new(
                    format!("matchers[{i}].value"),
                    "not a valid regex",
                ));
            }
        }
        Ok(Channel {
            name: name.to_owned(),
            org: org.to_owned(),
            target,
            send_resolved: self.send_resolved.unwrap_or(true),
            matchers: self.matchers,
        })
    }
}

fn webhook(w: WebhookSpec, kept_secret: Option<String>) -> Result<Webhook, ChannelError> {
    let url = reqwest::Url::parse(&w.url)
        .map_err(|e| ChannelError::new("webhook.url", format!("{:?}: {e}", w.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ChannelError::new(
            "webhook.url",
            "must be an http:// or https:// URL with a host",
        ));
    }
    if link_local(&url) {
        return Err(ChannelError::new(
            "webhook.url",
            "link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services) are refused",
        ));
    }
    let secret = match (w.secret, kept_secret) {
        (Some(s), _) => s,
        (None, Some(kept)) => kept,
        (None, None) => {
            return Err(ChannelError::new(
                "webhook.secret",
                "required: the key receivers verify Plantd-Signature with",
            ));
        }
    };
    if secret.len() < MIN_SECRET {
        return Err(ChannelError::new(
            "webhook.secret",
            format!("must be at least {MIN_SECRET} bytes"),
        ));
    }
    for (name, value) in &w.headers {
        let field = format!("webhook.headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ChannelError::new(field, "not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ChannelError::new(field, "set by plantd itself"));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(ChannelError::new(field, "not a valid header value"));
        }
    }
    let timeout_ms = w.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(100..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ChannelError::new(
            "webhook.timeout_ms",
            format!("must be 100 to {MAX_TIMEOUT_MS}"),
        ));
    }
    Ok(Webhook {
        url: w.url,
        secret,
        headers: w.headers,
        timeout_ms,
    })
}

/// True when `url`'s host is a link-local IP literal, where cloud
/// metadata services answer (169.254.169.254, fd00:ec2::254 is not
/// link-local but is refused too). Names resolving there are not caught:
/// docs/security.md says so.
fn link_local(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
        Err(_) => false,
    }
}

fn sns(s: Sns) -> Result<Sns, ChannelError> {
    let parts: Vec<&str> = s.topic_arn.split(':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "sns"
        && parts[5]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !parts[5].is_empty();
    if !ok {
        return Err(ChannelError::new(
            "sns.topic_arn",
            format!(
                "{:?}: not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)",
                s.topic_arn
            ),
        ));
    }
    if let Some(r) = &s.region
        && (r.is_empty()
            || !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        return Err(ChannelError::new(
            "sns.region",
            format!("{r:?}: not a region name"),
        ));
    }
    if s.region().is_none() {
        return Err(ChannelError::new(
            "sns.region",
            "required when the topic ARN names no region",
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> ChannelSpec {
        serde_json::from_value(v).expect("a spec")
    }

    fn field(v: serde_json::Value) -> String {
        spec(v)
            .into_channel("acme", "ops", None)
            .expect_err("invalid")
            .field
    }

    #[test]
    fn a_webhook_is_validated_field_by_field() {
        let ok = spec(
            json!({"webhook": {"url": "https://hooks.example/x", "secret": "0123456789abcdef"}}),
        )
        .into_channel("acme", "ops", None)
        .expect("valid");
        assert!(ok.send_resolved);
        assert_eq!(ok.target.kind(), "webhook");
        assert_eq!(field(json!({})), "webhook");
        assert_eq!(
            field(json!({"webhook": {"url": "ftp://x", "secret": "0123456789abcdef"}})),
            "webhook.url"
        );
        for metadata in [
            "http://169.254.169.254/latest/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
        ] {
            assert_eq!(
                field(json!({"webhook": {"url": metadata, "secret": "0123456789abcdef"}})),
                "webhook.url",
                "{metadata}"
            );
        }
        assert_eq!(
            field(json!({"webhook": {"url": "http://x"}})),
            "webhook.secret"
        );
        assert_eq!(
            field(json!({"webhook": {"url": "http://x", "secret": "short"}})),
            "webhook.secret"
        );
        assert_eq!(
            field(
                json!({"webhook": {"url": "http://x", "secret": "0123456789abcdef", "timeout_ms": 5}})
            ),
            "webhook.timeout_ms"
        );
        assert_eq!(
            field(
                json!({"webhook": {"url": "http://x", "secret": "0123456789abcdef",
                "headers": {"Plantd-Signature": "x"}}})
            ),
            "webhook.headers.Plantd-Signature"
        );
        assert_eq!(
            field(
                json!({"webhook": {"url": "http://x", "secret": "0123456789abcdef"},
                "sns": {"topic_arn": "arn:aws:sns:us-east-1:1:t"}})
            ),
            "sns"
        );
        assert_eq!(
            field(
                json!({"name": "other", "webhook": {"url": "http://x", "secret": "0123456789abcdef"}})
            ),
            "name"
        );
        assert_eq!(
            field(json!({"sns": {"topic_arn": "arn:aws:sqs:us-east-1:1:t"}})),
            "sns.topic_arn"
        );
        assert_eq!(
            field(json!({"sns": {"topic_arn": "arn:aws:sns::1:t"}})),
            "sns.region"
        );
        assert!(serde_json::from_value::<ChannelSpec>(json!({"webhok": {}})).is_err());
        assert_eq!(
            check_name("Ops").map_err(|e| e.field),
            Err("name".to_owned())
        );
    }

    #[test]
    fn an_update_without_a_secret_keeps_the_stored_one() {
        let first = spec(json!({"webhook": {"url": "http://a", "secret": "0123456789abcdef"}}))
            .into_channel("acme", "ops", None)
            .expect("valid");
        let second = spec(json!({"webhook": {"url": "http://b"}}))
            .into_channel("acme", "ops", Some(&first))
            .expect("valid");
        match second.target {
            Target::Webhook(w) => {
                assert_eq!(w.secret, "0123456789abcdef");
                assert_eq!(w.url, "http://b");
            }
            Target::Sns(_) => panic!("a webhook"),
        }
    }

    #[test]
    fn the_view_and_debug_never_show_the_secret() {
        let c = spec(
            json!({"webhook": {"url": "http://a", "secret": "0123456789abcdef",
            "headers": {"Authorization": "Bearer hidden"}}}),
        )
        .into_channel("acme", "ops", None)
        .expect("valid");
        let shown = serde_json::to_string(&c.view()).expect("json");
        assert!(
            !shown.contains("0123456789abcdef") && !shown.contains("hidden"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        let stored = serde_json::to_value(&c).expect("json");
        assert_eq!(stored["webhook"]["secret"], "0123456789abcdef");
        let back: Channel = serde_json::from_value(stored).expect("round trip");
        assert_eq!(back, c);
    }
}
