//! What the notifier tests share: a nats-server with plantd's streams and
//! buckets, alert records, channels, and a notifier bound to
//! `PLANTD_ALERTS` through the real trigger.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream;
use plantd_alerts::notify::keys::{KeyDoc, generate_key};
use plantd_alerts::notify::{
    self, Channel, ChannelKeys, ChannelSpec, Channels, Notifier, Retry, Settings,
};
use plantd_alerts::{AlertRecord, AlertState, RecordKind, Severity};
use plantd_shared::streams;
use plantd_testkit::Nats;
use plantd_trigger::{ConsumerSettings, Trigger};
use time::OffsetDateTime;

/// The organisation most tests act in.
pub const ORG: &str = "acme";
/// The webhook secret of test channels.
pub const SECRET: &str = "a test secret of 32 characters!!";
/// How long a test waits for something to happen.
pub const WAIT: Duration = Duration::from_secs(20);

/// The channel key document of this test binary (a random key, made
/// once): what the alerts secret holds in the Lambda tests.
pub fn key_doc() -> &'static KeyDoc {
    static DOC: OnceLock<KeyDoc> = OnceLock::new();
    DOC.get_or_init(|| KeyDoc {
        channel_key: Some(generate_key()),
        previous_channel_keys: Vec::new(),
    })
}

/// The channel keys of [`key_doc`]: what [`channel`] seals with and
/// [`notifier`] opens with.
pub fn keys() -> Arc<ChannelKeys> {
    static KEYS: OnceLock<Arc<ChannelKeys>> = OnceLock::new();
    KEYS.get_or_init(|| Arc::new(ChannelKeys::from_doc(key_doc(), "test").expect("keys")))
        .clone()
}

/// The channels store over `js`, with [`keys`].
pub async fn channels(js: &jetstream::Context) -> Channels {
    Channels::open(js, keys()).await.expect("channels bucket")
}

/// Notifier settings with short in-batch retry delays.
pub fn settings() -> Settings {
    Settings {
        retry: Retry {
            attempts: 3,
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        concurrency: 8,
    }
}

/// Trigger settings with three deliveries and short backoffs.
pub fn consumer() -> ConsumerSettings {
    ConsumerSettings {
        batch_size: 20,
        max_wait: Duration::from_millis(50),
        max_deliver: 3,
        backoff: vec![Duration::from_millis(50), Duration::from_millis(100)],
        ack_wait: Duration::from_secs(5),
        watch_interval: Duration::from_millis(100),
        ..ConsumerSettings::default()
    }
}

/// A fresh nats-server with every stream and bucket.
pub async fn nats() -> (Nats, jetstream::Context) {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    (nats, js)
}

/// A firing record of rule `rule` on site `plant-1` in [`ORG`], routed to
/// `channels`; `n` makes its id unique.
pub fn firing(rule: &str, n: u64, channels: &[&str]) -> AlertRecord {
    AlertRecord {
        id: format!("{rule}:k1:{n}"),
        kind: RecordKind::Transition,
        org: ORG.to_owned(),
        site: "plant-1".to_owned(),
        rule: rule.to_owned(),
        rule_name: format!("Rule {rule}"),
        key: String::new(),
        labels: BTreeMap::from([("site".to_owned(), "plant-1".to_owned())]),
        severity: Severity::Critical,
        from: AlertState::Pending,
        to: AlertState::Firing,
        n,
        at: OffsetDateTime::now_utc(),
        firing_since: Some(OffsetDateTime::now_utc()),
        value: Some(12.0),
        summary: "12 lines matching \"overheat\" in 1m (> 5)".to_owned(),
        evidence: Vec::new(),
        notify: channels.iter().map(|c| (*c).to_owned()).collect(),
        silenced: false,
        ack: None,
    }
}

/// `record` turned into its resolution (firing → inactive), transition
/// `n`.
pub fn resolved(mut record: AlertRecord, n: u64) -> AlertRecord {
    record.id = format!("{}:k1:{n}", record.rule);
    record.from = AlertState::Firing;
    record.to = AlertState::Inactive;
    record.n = n;
    record.firing_since = None;
    record
}

/// Publishes `record` to `PLANTD_ALERTS` as the engine does (subject
/// `plantd.<site>.alert.<rule>`, `Nats-Msg-Id` the record id); its
/// sequence.
pub async fn publish(js: &jetstream::Context, record: &AlertRecord) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, record.id.as_str());
    js.publish_with_headers(
        record.subject(),
        headers,
        serde_json::to_vec(record).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored")
    .sequence
}

/// Stores channel `name` of `org` from a JSON spec.
pub async fn channel(
    js: &jetstream::Context,
    org: &str,
    name: &str,
    spec: serde_json::Value,
) -> Channel {
    let spec: ChannelSpec = serde_json::from_value(spec).expect("a channel spec");
    let channel = spec.into_channel(org, name, None).expect("a valid channel");
    channels(js)
        .await
        .put(&channel)
        .await
        .expect("store the channel");
    channel
}

/// A webhook channel spec to `url`.
pub fn webhook(url: &str) -> serde_json::Value {
    serde_json::json!({ "webhook": { "url": url, "secret": SECRET, "timeout_ms": 2000 } })
}

/// A notifier over `js` with [`settings`].
pub async fn notifier(js: &jetstream::Context) -> Notifier {
    notify::notifier(js, settings(), keys())
        .await
        .expect("notifier")
}

/// `notifier` bound to `PLANTD_ALERTS` on a new trigger.
pub async fn bound(js: &jetstream::Context, notifier: Notifier) -> (Trigger, String) {
    let mut trigger = Trigger::new(js.clone());
    let durable = notify::bind(&mut trigger, Arc::new(notifier), consumer())
        .await
        .expect("bind the notifier");
    assert_eq!(durable, format!("notifier_{}", streams::ALERTS));
    (trigger, durable)
}
