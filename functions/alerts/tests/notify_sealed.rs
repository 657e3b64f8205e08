//! Webhook secrets sealed at rest, against a real nats-server and a real
//! HTTP receiver: the bucket never holds the secret while deliveries are
//! still signed with it; a sealed secret copied to another organisation's
//! channel, or read with another key, does not open — a clear error naming
//! the channel, counted, and nothing sent unsigned; a record written in
//! clear by an older plantd still delivers and is sealed by the one-time
//! migration (`Channels::reseal`), as is one sealed with a previous key.

mod notify_common;

use std::sync::Arc;

use async_nats::jetstream;
use notify_common::*;
use plantd_alerts::notify::keys::{KeyDoc, SealError, generate_key};
use plantd_alerts::notify::{self, ChannelKeys, Channels, Resealed, StoreError};
use plantd_shared::streams;
use plantd_testkit::init_tracing;
use plantd_testkit::webhook::Receiver;

/// What `plantd_alert_channels` holds under `key`, as bytes.
async fn raw(js: &jetstream::Context, key: &str) -> Vec<u8> {
    js.get_key_value(streams::ALERT_CHANNELS_BUCKET)
        .await
        .expect("bucket")
        .get(key)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("nothing under {key}"))
        .to_vec()
}

/// Writes `bytes` under `key`, as someone with access to the bucket would.
async fn write_raw(js: &jetstream::Context, key: &str, bytes: Vec<u8>) {
    js.get_key_value(streams::ALERT_CHANNELS_BUCKET)
        .await
        .expect("bucket")
        .put(key, bytes.into())
        .await
        .expect("put");
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_bucket_never_holds_the_secret_and_deliveries_are_signed_with_it() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;

    let stored = raw(&js, "acme.ops").await;
    assert!(
        !contains(&stored, SECRET),
        "the secret is in the bucket: {}",
        String::from_utf8_lossy(&stored)
    );
    let value: serde_json::Value = serde_json::from_slice(&stored).expect("JSON");
    assert_eq!(value["webhook"]["secret"]["v"], 1, "{value:#}");
    assert_eq!(value["webhook"]["secret"]["kid"], keys().kid(), "{value:#}");

    let notifier = notifier(&js).await;
    let record = firing("hot", 1, &["ops"]);
    let done = notifier.notify(&record).await.expect("delivered");
    assert!(
        matches!(done.as_slice(), [(name, notify::Outcome::Sent(_))] if name == "ops"),
        "{done:?}"
    );
    let posts = receiver.requests();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].verify(SECRET),
        "signed with the secret that was sealed"
    );
}

#[tokio::test]
async fn a_secret_copied_to_another_organisations_channel_does_not_open() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;
    // Someone with write access to the bucket copies acme's record into
    // initech's channel of the same name.
    let mut copied: serde_json::Value =
        serde_json::from_slice(&raw(&js, "acme.ops").await).expect("JSON");
    copied["org"] = "initech".into();
    write_raw(
        &js,
        "initech.ops",
        serde_json::to_vec(&copied).expect("JSON"),
    )
    .await;

    let err = channels(&js)
        .await
        .get("initech", "ops")
        .await
        .expect_err("does not open");
    assert!(
        matches!(&err, StoreError::Sealed { key, reason: SealError::Rejected { .. } } if key == "initech.ops"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("channel initech.ops") && !msg.contains(SECRET),
        "{msg}"
    );

    let notifier = notifier(&js).await;
    let mut record = firing("hot", 1, &["ops"]);
    record.org = "initech".to_owned();
    let failed = notifier.notify(&record).await.expect_err("not sent");
    assert!(
        matches!(failed.as_slice(), [(name, e)] if name == "ops" && e.is_permanent()),
        "{failed:?}"
    );
    assert_eq!(notifier.unopened(), 1);
    assert!(
        receiver.requests().is_empty(),
        "nothing sent, signed or not"
    );
}

#[tokio::test]
async fn another_key_gives_a_clear_error_naming_the_channel_and_sends_nothing() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;

    let other = Arc::new(ChannelKeys::generate());
    let err = Channels::open(&js, other.clone())
        .await
        .expect("channels")
        .get(ORG, "ops")
        .await
        .expect_err("another key");
    let msg = err.to_string();
    assert!(
        msg.starts_with("channel acme.ops: its webhook secret does not open")
            && msg.contains(&format!("sealed with channel key {}", keys().kid()))
            && !msg.contains(SECRET),
        "{msg}"
    );

    let notifier = notify::notifier(&js, settings(), other)
        .await
        .expect("notifier");
    let failed = notifier
        .notify(&firing("hot", 1, &["ops"]))
        .await
        .expect_err("not sent");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].1.to_string().contains("channel acme.ops"),
        "{}",
        failed[0].1
    );
    assert_eq!(notifier.unopened(), 1);
    assert!(receiver.requests().is_empty(), "nothing sent unsigned");
    // The channel can still be deleted (and created again with a secret).
    assert!(
        notifier
            .channels()
            .delete(ORG, "ops")
            .await
            .expect("delete")
    );
}

#[tokio::test]
async fn a_clear_record_of_an_older_plantd_delivers_and_is_sealed_once() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    // As plantd wrote channels before sealing: the Channel as JSON.
    let legacy = plantd_alerts::notify::ChannelSpec::into_channel(
        serde_json::from_value(webhook(&receiver.url())).expect("spec"),
        ORG,
        "ops",
        None,
    )
    .expect("channel");
    write_raw(&js, "acme.ops", serde_json::to_vec(&legacy).expect("JSON")).await;
    assert!(contains(&raw(&js, "acme.ops").await, SECRET));

    let notifier = notifier(&js).await;
    notifier
        .notify(&firing("hot", 1, &["ops"]))
        .await
        .expect("delivered");
    assert!(receiver.requests()[0].verify(SECRET));

    let channels = channels(&js).await;
    assert_eq!(
        channels.reseal().await.expect("reseal"),
        Resealed {
            clear: 1,
            ..Resealed::default()
        }
    );
    assert!(!contains(&raw(&js, "acme.ops").await, SECRET));
    assert_eq!(
        channels.get(ORG, "ops").await.expect("get"),
        Some(legacy),
        "the same channel, its secret sealed"
    );
    assert_eq!(channels.reseal().await.expect("again"), Resealed::default());
    notifier
        .notify(&firing("hot", 2, &["ops"]))
        .await
        .expect("delivered");
    assert!(receiver.requests()[1].verify(SECRET));
}

#[tokio::test]
async fn a_new_key_opens_what_the_previous_sealed_and_reseals_it() {
    let (_nats, js) = nats().await;
    channel(&js, ORG, "ops", webhook("http://127.0.0.1:9/x")).await;
    let old = key_doc().channel_key.clone().expect("the test key");
    let rotated = Arc::new(
        ChannelKeys::from_doc(
            &KeyDoc {
                channel_key: Some(generate_key()),
                previous_channel_keys: vec![old],
            },
            "test",
        )
        .expect("keys"),
    );
    let channels = Channels::open(&js, rotated.clone())
        .await
        .expect("channels");
    let before = channels.get(ORG, "ops").await.expect("opens");
    assert_eq!(
        channels.reseal().await.expect("reseal"),
        Resealed {
            old_key: 1,
            ..Resealed::default()
        }
    );
    let value: serde_json::Value =
        serde_json::from_slice(&raw(&js, "acme.ops").await).expect("JSON");
    assert_eq!(value["webhook"]["secret"]["kid"], rotated.kid());
    assert_eq!(channels.get(ORG, "ops").await.expect("opens"), before);
}
