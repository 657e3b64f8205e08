//! Notifications: what happens after an alert record is in
//! `PLANTD_ALERTS`.
//!
//! The [`Notifier`] is a trigger [`Handler`] bound to `PLANTD_ALERTS` as
//! function [`crate::NOTIFIER`] ([`bind`]). For each record it:
//! 1. skips it when `silenced`, or when it is nothing people are told
//!    about (pending; [`Event::of`]);
//! 2. for each channel named in the record's `notify`, looked up in the
//!    record's organisation (`plantd_alert_channels`, `<org>.<name>`; an
//!    unknown name is logged and skipped), skips it when the channel's
//!    matchers do not match or it is a resolution and `send_resolved` is
//!    off;
//! 3. skips the channel when its delivery marker exists
//!    (`plantd_notifications`, [`store::marker_key`]), else delivers
//!    (webhook: signed POST with retries; SNS: Publish) and writes the
//!    marker after the channel accepted it.
//!
//! A channel whose webhook secret does not open (another channel key, or
//! an altered record: [`StoreError::Sealed`]) is never sent unsigned: the
//! record fails on that channel (retried, then parked in `PLANTD_DLQ`),
//! the error names the channel, and [`Notifier::unopened`] counts it.
//!
//! Records of one alert instance (org, rule, key) in a batch are notified
//! in stream order, one after the other; different instances concurrently.
//!
//! A record whose delivery failed on some channel fails as a trigger item:
//! the trigger retries it with backoff (channels already notified are
//! skipped by their markers) and after `max_deliver` deliveries parks it in
//! `PLANTD_DLQ`; the other items of the batch proceed.
//!
//! **At least once, with an id.** A crash between a channel's 2xx and the
//! marker write sends that one notification again on redelivery; every
//! attempt carries the same `Plantd-Notification-Id` so receivers can drop
//! the repeat. See docs/decisions/0025-notifications.md.
//!
//! | module | what it holds |
//! |---|---|
//! | [`channel`] | [`Channel`], [`ChannelSpec`] (validated, errors name the field), [`ChannelView`] (no secret), [`Matcher`] |
//! | [`store`] | [`Channels`] and [`Markers`] on their KV buckets |
//! | [`keys`] | the channel key: webhook secrets sealed at rest, where the key lives |
//! | [`payload`] | [`Event`], the [`Notification`] body, the HMAC signature |
//! | [`webhook`] | the signed POST with retries ([`Retry`]) |
//! | [`sns`] | SNS Publish (feature `aws`) |

pub mod channel;
pub mod keys;
pub mod payload;
pub mod sns;
pub mod store;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream;
use futures::StreamExt as _;
use plantd_shared::streams;
use plantd_trigger::{BatchOutcome, ConsumerSettings, Handler, Item, Trigger, TriggerError};
use thiserror::Error;
use time::OffsetDateTime;

pub use channel::{Channel, ChannelError, ChannelSpec, ChannelView, MatchOp, Matcher, Target};
pub use keys::{ChannelKeys, KeyError, KeySource};
pub use payload::{Event, Notification};
pub use store::{Channels, Marker, Markers, Resealed, StoreError};
pub use webhook::Retry;

use crate::record::{AlertRecord, AlertState, RecordKind, Severity};

/// Tunables of the [`Notifier`]. `Default` is what `plantd up` uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Webhook attempts within one delivery.
    pub retry: Retry,
    /// Records of one batch notified at once.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            retry: Retry::default(),
            concurrency: 8,
        }
    }
}

/// Why the notifier could not start.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// A bucket is missing or JetStream is unreachable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No HTTP client (TLS set-up).
    #[error("webhook HTTP client: {0}")]
    Http(String),
}

/// A delivery to one channel that failed.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// The webhook refused or never answered.
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    /// SNS refused.
    #[error(transparent)]
    Sns(#[from] sns::SnsError),
    /// The marker store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeliveryError {
    /// True when trying again soon cannot help (the receiver refused it,
    /// or the channel's secret does not open with this process's keys).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Webhook(webhook::WebhookError::Refused { .. })
                | Self::Store(StoreError::Sealed { .. })
        )
    }
}

/// What one channel said to one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The HTTP status (webhook) or SNS message id.
    pub receipt: String,
    /// Attempts it took.
    pub attempts: u32,
}

/// What became of one record on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent now.
    Sent(Receipt),
    /// Its marker says it was sent before.
    AlreadySent,
    /// The channel's matchers or `send_resolved` leave it out.
    Filtered,
    /// The organisation has no channel by that name.
    NoChannel,
}

/// The notification handler on `PLANTD_ALERTS` (module docs). Cheap to
/// share behind an `Arc`.
#[derive(Debug)]
pub struct Notifier {
    /// Channels by `<org>.<name>`.
    channels: Channels,
    /// Delivery markers.
    markers: Markers,
    /// The webhook client.
    http: reqwest::Client,
    /// SNS.
    sns: sns::Publisher,
    /// Tunables.
    settings: Settings,
    /// Deliveries not attempted because the channel's secret did not open.
    unopened: AtomicU64,
}

/// The notifier over `js` (its buckets must exist), opening webhook
/// secrets with `keys` ([`keys::KeySource::load`]), with SNS configured
/// from the environment.
///
/// # Errors
/// [`NotifyError`] when a bucket is missing or no HTTP client can be made.
pub async fn notifier(
    js: &jetstream::Context,
    settings: Settings,
    keys: Arc<ChannelKeys>,
) -> Result<Notifier, NotifyError> {
    Ok(Notifier {
        channels: Channels::open(js, keys).await?,
        markers: Markers::open(js).await?,
        http: webhook::client().map_err(|e| NotifyError::Http(e.to_string()))?,
        sns: sns::Publisher::from_env(),
        settings,
        unopened: AtomicU64::new(0),
    })
}

/// Binds `notifier` to `PLANTD_ALERTS` on `trigger` as
/// [`crate::NOTIFIER`]; the durable consumer's name
/// (`notifier_PLANTD_ALERTS`).
///
/// # Errors
/// [`TriggerError`] as [`Trigger::bind`].
pub async fn bind(
    trigger: &mut Trigger,
    notifier: Arc<Notifier>,
    settings: ConsumerSettings,
) -> Result<String, TriggerError> {
    trigger
        .bind(crate::NOTIFIER, streams::ALERTS, notifier, settings)
        .await
}

impl Notifier {
    /// This notifier publishing to SNS with `publisher` (tests point it at
    /// moto).
    #[must_use]
    pub fn with_sns(mut self, publisher: sns::Publisher) -> Self {
        self.sns = publisher;
        self
    }

    /// The channels store this notifier reads.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// How many deliveries were not attempted because the channel's
    /// webhook secret did not open ([`StoreError::Sealed`]) since start.
    pub fn unopened(&self) -> u64 {
        self.unopened.load(Ordering::Relaxed)
    }

    /// Notifies every channel `record` routes to, each at most once
    /// (module docs); what became of each, by channel name.
    ///
    /// # Errors
    /// The channels that failed, each with its error (the others were
    /// notified and marked).
    pub async fn notify(
        &self,
        record: &AlertRecord,
    ) -> Result<Vec<(String, Outcome)>, Vec<(String, DeliveryError)>> {
        let Some(event) = Event::of(record) else {
            return Ok(Vec::new());
        };
        if record.silenced {
            return Ok(Vec::new());
        }
        let mut names: Vec<&String> = record.notify.iter().collect();
        names.sort_unstable();
        names.dedup();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for name in names {
            match self.notify_channel(record, event, name).await {
                Ok(outcome) => done.push((name.clone(), outcome)),
                Err(e) => {
                    tracing::warn!(record = %record.id, org = %record.org, channel = %name, error = %e, permanent = e.is_permanent(), "notification failed");
                    failed.push((name.clone(), e));
                }
            }
        }
        if failed.is_empty() {
            Ok(done)
        } else {
            Err(failed)
        }
    }

    async fn notify_channel(
        &self,
        record: &AlertRecord,
        event: Event,
        name: &str,
    ) -> Result<Outcome, DeliveryError> {
        let channel = match self.channels.get(&record.org, name).await {
            Ok(c) => c,
            Err(e @ StoreError::Sealed { .. }) => {
                self.unopened.fetch_add(1, Ordering::Relaxed);
                tracing::error!(record = %record.id, org = %record.org, channel = %name, error = %e, "not sent: the channel's webhook secret does not open (never sent unsigned)");
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let Some(channel) = channel else {
            tracing::warn!(record = %record.id, org = %record.org, channel = %name, "the rule names a channel the organisation does not have; skipped");
            return Ok(Outcome::NoChannel);
        };
        if !channel.accepts(record, event) {
            return Ok(Outcome::Filtered);
        }
        let key = store::marker_key(&record.org, name, &record.id);
        if self.markers.get(&key).await?.is_some() {
            return Ok(Outcome::AlreadySent);
        }
        let notification = Notification::new(name, event, record.clone());
        let receipt = self.deliver(&channel, &notification).await?;
        self.markers
            .put(
                &key,
                &Marker {
                    at: OffsetDateTime::now_utc(),
                    receipt: receipt.receipt.clone(),
                    attempts: receipt.attempts,
                },
            )
            .await?;
        tracing::info!(record = %record.id, org = %record.org, channel = %name, event = event.as_str(), attempts = receipt.attempts, "notified");
        Ok(Outcome::Sent(receipt))
    }

    /// Sends `notification` on `channel` once (with the webhook's
    /// retries), no marker involved.
    ///
    /// # Errors
    /// [`DeliveryError`].
    pub async fn deliver(
        &self,
        channel: &Channel,
        notification: &Notification,
    ) -> Result<Receipt, DeliveryError> {
        match &channel.target {
            Target::Webhook(w) => {
                let d = webhook::deliver(&self.http, w, notification, &self.settings.retry).await?;
                Ok(Receipt {
                    receipt: d.status.to_string(),
                    attempts: d.attempts,
                })
            }
            Target::Sns(s) => {
                let id = self.sns.publish(s, notification).await?;
                Ok(Receipt {
                    receipt: id,
                    attempts: 1,
                })
            }
        }
    }

    /// Sends a test notification (event `test`, a made-up info record
    /// of site `test`, rule `test`) on `channel`: what
    /// `POST /v1/alert-channels/{name}/test` does. No marker is written.
    ///
    /// # Errors
    /// [`DeliveryError`].
    pub async fn send_test(&self, channel: &Channel) -> Result<Receipt, DeliveryError> {
        let now = OffsetDateTime::now_utc();
        let record = AlertRecord {
            id: format!("test:{}", now.unix_timestamp_nanos()),
            kind: RecordKind::Transition,
            org: channel.org.clone(),
            site: "test".to_owned(),
            rule: "test".to_owned(),
            rule_name: "Test notification".to_owned(),
            key: String::new(),
            labels: Default::default(),
            severity: Severity::Info,
            from: AlertState::Inactive,
            to: AlertState::Firing,
            n: 0,
            at: now,
            firing_since: None,
            value: None,
            summary: format!(
                "a test notification on channel {} (POST /v1/alert-channels/{}/test)",
                channel.name, channel.name
            ),
            evidence: Vec::new(),
            notify: vec![channel.name.clone()],
            silenced: false,
            ack: None,
        };
        let notification = Notification::new(&channel.name, Event::Test, record);
        self.deliver(channel, &notification).await
    }
}

impl Handler for Notifier {
    /// Records of one alert instance (org, rule, key) are notified in
    /// stream order, one after the other, so a receiver never gets a
    /// resolution before the firing it resolves from one batch; different
    /// instances go out concurrently (`concurrency` at a time).
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let mut outcome = BatchOutcome::success();
        let mut instances: BTreeMap<(String, String, String), Vec<(usize, AlertRecord)>> =
            BTreeMap::new();
        for (i, item) in batch.iter().enumerate() {
            match serde_json::from_slice::<AlertRecord>(&item.payload) {
                Ok(r) => instances
                    .entry((r.org.clone(), r.rule.clone(), r.key.clone()))
                    .or_default()
                    .push((i, r)),
                Err(e) => {
                    tracing::error!(stream = %item.stream, sequence = item.sequence, error = %e, "not an alert record");
                    outcome.record_failure(i, format!("not an alert record: {e}"));
                }
            }
        }
        // The futures are made first: a stream of closures over borrowed
        // data trips the compiler's higher-ranked Send check.
        let calls: Vec<_> = instances
            .into_values()
            .map(|records| self.notify_in_order(records))
            .collect();
        let results: Vec<Vec<(usize, Option<String>)>> = futures::stream::iter(calls)
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        for (i, error) in results.into_iter().flatten() {
            if let Some(e) = error {
                outcome.record_failure(i, e);
            }
        }
        outcome
    }
}

impl Notifier {
    /// Notifies `records` (batch index, record) one after the other; each
    /// one's error, if any.
    async fn notify_in_order(
        &self,
        records: Vec<(usize, AlertRecord)>,
    ) -> Vec<(usize, Option<String>)> {
        let mut out = Vec::with_capacity(records.len());
        for (i, record) in records {
            let error = self.notify(&record).await.err().map(|failed| {
                failed
                    .iter()
                    .map(|(name, e)| format!("channel {name}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            out.push((i, error));
        }
        out
    }
}
