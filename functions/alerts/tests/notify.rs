//! The notifier against a real nats-server, through the real trigger, to a
//! real HTTP receiver: one signed POST per (record, channel); transient
//! failures retried within the batch; a redelivered record not posted
//! again; a refusing receiver's record parked in `PLANTD_DLQ` while the
//! rest of the batch is delivered; silenced, pending, filtered and
//! unrouted records never posted.
//!
//! "Nothing more arrived" is shown with a fence: a later record on the
//! same channel, published and waited for until the trigger's consumer
//! has acknowledged it and everything before it (its ack floor) — by then
//! every earlier record's handling, POSTs included, is over.

mod notify_common;

use notify_common::*;
use plantd_alerts::notify::{Markers, store};
use plantd_shared::streams;
use plantd_testkit::webhook::Receiver;
use plantd_testkit::{eventually, init_tracing};
use plantd_trigger::dlq;

/// The requests `receiver` got for record `id`.
fn posts_of(receiver: &Receiver, id: &str) -> usize {
    receiver
        .requests()
        .iter()
        .filter(|r| r.json()["record"]["id"] == id)
        .count()
}

/// Publishes a fence record routed to `channel` and waits until the
/// notifier's consumer has acknowledged it and everything before it.
async fn fence(js: &async_nats::jetstream::Context, receiver: &Receiver, channel: &str, n: u64) {
    let fence = firing("fence", n, &[channel]);
    let seq = publish(js, &fence).await;
    let durable = format!("{}_{}", plantd_alerts::NOTIFIER, streams::ALERTS);
    eventually(WAIT, "the notifier to settle the fence record", || async {
        let stream = js.get_stream(streams::ALERTS).await.ok()?;
        let info = stream.consumer_info(&durable).await.ok()?;
        (info.ack_floor.stream_sequence >= seq).then_some(())
    })
    .await;
    assert_eq!(
        posts_of(receiver, &fence.id),
        1,
        "the fence was posted once"
    );
}

#[tokio::test]
async fn a_firing_record_is_posted_once_and_signed() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;
    let (trigger, _) = bound(&js, notifier(&js).await).await;

    let record = firing("overheat", 1, &["ops"]);
    publish(&js, &record).await;
    let got = receiver.wait_for(1, WAIT).await;
    let post = &got[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert!(
        post.verify(SECRET),
        "the signature verifies with the channel's secret"
    );
    assert!(!post.verify("another secret of 32 characters!"));
    assert_eq!(
        post.header("plantd-notification-id"),
        Some("ops:overheat:k1:1")
    );
    let ts: i64 = post
        .header("plantd-timestamp")
        .expect("a timestamp")
        .parse()
        .expect("seconds");
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 60);
    let body = post.json();
    assert_eq!(body["version"], 1);
    assert_eq!(body["id"], "ops:overheat:k1:1");
    assert_eq!(body["channel"], "ops");
    assert_eq!(body["event"], "firing");
    assert_eq!(body["record"]["id"], "overheat:k1:1");
    assert_eq!(body["record"]["summary"], record.summary);
    assert_eq!(body["record"]["severity"], "critical");

    fence(&js, &receiver, "ops", 2).await;
    assert_eq!(posts_of(&receiver, &record.id), 1, "exactly one POST");
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_it_on_the_third_try_once() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;
    receiver.fail_next(2, 503);
    let (trigger, _) = bound(&js, notifier(&js).await).await;

    let record = firing("overheat", 1, &["ops"]);
    publish(&js, &record).await;
    let got = receiver.wait_for(3, WAIT).await;
    let answered: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answered, vec![503, 503, 200]);
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("plantd-notification-id").map(str::to_owned))
        .collect();
    assert!(
        ids.iter()
            .all(|i| i.as_deref() == Some("ops:overheat:k1:1")),
        "{ids:?}"
    );
    assert!(got.iter().all(|r| r.verify(SECRET)));

    fence(&js, &receiver, "ops", 2).await;
    assert_eq!(posts_of(&receiver, &record.id), 3, "no POST after the 200");
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_record_is_not_posted_again() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;
    let (trigger, durable) = bound(&js, notifier(&js).await).await;
    let record = firing("overheat", 1, &["ops"]);
    publish(&js, &record).await;
    receiver.wait_for(1, WAIT).await;
    let markers = Markers::open(&js).await.expect("markers");
    let key = store::marker_key(ORG, "ops", &record.id);
    let marker = eventually(WAIT, "the delivery marker", || async {
        markers.get(&key).await.expect("read the marker")
    })
    .await;
    assert_eq!(marker.receipt, "200");
    trigger.shutdown().await;

    // The consumer is gone (as after a wiped store): the trigger makes a
    // new one, which delivers the stream again from its first record.
    js.get_stream(streams::ALERTS)
        .await
        .expect("stream")
        .delete_consumer(&durable)
        .await
        .expect("delete the consumer");
    let (trigger, _) = bound(&js, notifier(&js).await).await;
    fence(&js, &receiver, "ops", 2).await;
    assert_eq!(
        posts_of(&receiver, &record.id),
        1,
        "the marker stopped a second POST"
    );
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_refused_record_is_parked_and_the_rest_of_its_batch_is_delivered() {
    init_tracing();
    let (_nats, js) = nats().await;
    let refusing = Receiver::start().await;
    refusing.fail_all(400);
    let good = Receiver::start().await;
    channel(&js, ORG, "bad", webhook(&refusing.url())).await;
    channel(&js, ORG, "good", webhook(&good.url())).await;
    // Stored before the notifier starts: they arrive in one batch.
    let before = firing("before", 1, &["good"]);
    let doomed = firing("doomed", 1, &["bad"]);
    let after = firing("after", 1, &["good"]);
    publish(&js, &before).await;
    let doomed_seq = publish(&js, &doomed).await;
    publish(&js, &after).await;
    let (trigger, durable) = bound(&js, notifier(&js).await).await;

    let parked = eventually(WAIT, "the refused record in PLANTD_DLQ", || async {
        let list = dlq::list(&js, Some(&durable), 10)
            .await
            .expect("read the DLQ");
        list.into_iter().next()
    })
    .await;
    assert_eq!(parked.stream, streams::ALERTS);
    assert_eq!(parked.sequence, doomed_seq);
    assert_eq!(parked.deliveries, 3);
    assert!(
        parked.error.contains("channel bad") && parked.error.contains("400"),
        "{}",
        parked.error
    );
    // A 400 is permanent: one attempt per delivery, no retries within it.
    assert_eq!(refusing.requests().len(), 3);
    assert_eq!(posts_of(&good, &before.id), 1);
    assert_eq!(posts_of(&good, &after.id), 1);
    trigger.shutdown().await;
}

#[tokio::test]
async fn silenced_pending_filtered_and_unrouted_records_are_not_posted() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;
    let mut quiet = webhook(&receiver.url());
    quiet["send_resolved"] = false.into();
    channel(&js, ORG, "quiet", quiet).await;
    let mut critical_only = webhook(&receiver.url());
    critical_only["matchers"] =
        serde_json::json!([{"label": "severity", "op": "=", "value": "critical"}]);
    channel(&js, ORG, "pager", critical_only).await;
    // Another organisation's channel of the same name is never used.
    channel(&js, "initech", "theirs", webhook(&receiver.url())).await;
    let (trigger, _) = bound(&js, notifier(&js).await).await;

    let mut silenced = firing("silenced", 1, &["ops"]);
    silenced.silenced = true;
    let mut pending = firing("pending", 1, &["ops"]);
    pending.from = plantd_alerts::AlertState::Inactive;
    pending.to = plantd_alerts::AlertState::Pending;
    let quiet_resolution = resolved(firing("quiet", 1, &["quiet"]), 2);
    let mut warning = firing("warning", 1, &["pager"]);
    warning.severity = plantd_alerts::Severity::Warning;
    let unknown = firing("unknown", 1, &["nowhere"]);
    let foreign = firing("foreign", 1, &["theirs"]);
    for r in [
        &silenced,
        &pending,
        &quiet_resolution,
        &warning,
        &unknown,
        &foreign,
    ] {
        publish(&js, r).await;
    }
    // What does go out: a resolution on a channel that wants them, and a
    // critical record on the matcher's channel.
    let ops_resolution = resolved(firing("loud", 1, &["ops"]), 2);
    publish(&js, &ops_resolution).await;
    let mut critical = firing("critical", 1, &["pager"]);
    critical.severity = plantd_alerts::Severity::Critical;
    publish(&js, &critical).await;

    fence(&js, &receiver, "ops", 9).await;
    let mut got: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.json()["id"].as_str().unwrap_or("?"),
                r.json()["event"].as_str().unwrap_or("?")
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            "ops:fence:k1:9 firing".to_owned(),
            "ops:loud:k1:2 resolved".to_owned(),
            "pager:critical:k1:1 firing".to_owned(),
        ]
    );
    trigger.shutdown().await;
}

#[tokio::test]
async fn channels_are_kept_per_organisation() {
    let (_nats, js) = nats().await;
    let ours = channel(&js, ORG, "ops", webhook("http://127.0.0.1:9/a")).await;
    channel(&js, "initech", "ops", webhook("http://127.0.0.1:9/b")).await;
    let channels = notify_common::channels(&js).await;
    assert_eq!(
        channels.get(ORG, "ops").await.expect("get"),
        Some(ours.clone())
    );
    let listed = channels.list(ORG).await.expect("list");
    assert_eq!(listed, vec![ours]);
    assert_eq!(channels.get("nobody", "ops").await.expect("get"), None);
    assert!(channels.delete(ORG, "ops").await.expect("delete"));
    assert!(!channels.delete(ORG, "ops").await.expect("delete again"));
    assert_eq!(channels.list("initech").await.expect("list").len(), 1);
}

#[tokio::test]
async fn records_of_one_alert_go_out_in_order_within_a_batch() {
    init_tracing();
    let (_nats, js) = nats().await;
    let receiver = Receiver::start().await;
    channel(&js, ORG, "ops", webhook(&receiver.url())).await;
    // Stored before the notifier starts: one batch, several instances.
    let mut expected = Vec::new();
    for rule in ["a", "b", "c", "d"] {
        let fired = firing(rule, 1, &["ops"]);
        let ack_like = firing(rule, 2, &["ops"]);
        let gone = resolved(firing(rule, 1, &["ops"]), 3);
        for r in [&fired, &ack_like, &gone] {
            publish(&js, r).await;
        }
        expected.push(vec![fired.id, ack_like.id, gone.id]);
    }
    let (trigger, _) = bound(&js, notifier(&js).await).await;
    let got = receiver.wait_for(12, WAIT).await;
    for ids in expected {
        let seen: Vec<String> = got
            .iter()
            .map(|r| r.json()["record"]["id"].as_str().unwrap_or("?").to_owned())
            .filter(|id| ids.contains(id))
            .collect();
        assert_eq!(seen, ids, "one instance's records in stream order");
    }
    trigger.shutdown().await;
}
