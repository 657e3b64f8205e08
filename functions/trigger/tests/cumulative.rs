//! `AckMode::Cumulative` against a real nats-server: one acknowledgement
//! per batch, a failure takes back only itself and what is above it, a
//! poison item is parked and nothing else is lost with it, and a
//! consumer made with explicit acknowledgements is replaced from its
//! floor — nothing acknowledged comes again, nothing else is skipped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::AckPolicy;
use bytes::Bytes;
use futures::StreamExt as _;
use plantd_shared::streams;
use plantd_testkit::wait::drained;
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{AckMode, BatchOutcome, ConsumerSettings, Handler, Item, Trigger, dlq};

const SUBJECT: &str = "plantd.site1.log.app";
const WAIT: Duration = Duration::from_secs(20);

/// Records (sequence, delivery, succeeded) and fails items whose payload
/// is `poison` while `broken`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(u64, u64, bool)>>,
    broken: AtomicBool,
}

impl Handler for Recorder {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let mut outcome = BatchOutcome::success();
        let mut seen = self.seen.lock().expect("lock");
        for (i, item) in batch.iter().enumerate() {
            let fail = self.broken.load(Ordering::SeqCst) && item.payload.as_ref() == b"poison";
            if fail {
                outcome.record_failure(i, format!("cannot parse item {}", item.sequence));
            }
            seen.push((item.sequence, item.delivered, !fail));
        }
        outcome
    }
}

impl Recorder {
    /// Sequence → the deliveries it was handed over in, and whether its
    /// last one succeeded.
    fn by_sequence(&self) -> BTreeMap<u64, (Vec<u64>, bool)> {
        let mut m: BTreeMap<u64, (Vec<u64>, bool)> = BTreeMap::new();
        for &(seq, delivered, ok) in self.seen.lock().expect("lock").iter() {
            let e = m.entry(seq).or_default();
            e.0.push(delivered);
            e.1 = ok;
        }
        m
    }
}

async fn publish(js: &jetstream::Context, payload: &str) -> u64 {
    js.publish(SUBJECT, Bytes::from(payload.to_owned()))
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

fn settings(ack: AckMode) -> ConsumerSettings {
    ConsumerSettings {
        batch_size: 20,
        max_wait: Duration::from_millis(50),
        max_deliver: 3,
        backoff: vec![Duration::from_millis(50)],
        ack_wait: Duration::from_secs(2),
        watch_interval: Duration::from_millis(100),
        ack,
        ..ConsumerSettings::default()
    }
}

/// The acknowledgement policy of durable `durable` on `PLANTD_LOGS`.
async fn ack_policy(js: &jetstream::Context, durable: &str) -> AckPolicy {
    js.get_stream(streams::LOGS)
        .await
        .expect("stream")
        .consumer_info(durable)
        .await
        .expect("consumer")
        .config
        .ack_policy
}

#[tokio::test]
async fn a_batch_is_acknowledged_once_and_nothing_comes_again() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    // Every acknowledgement the consumer gets is a message on its ack
    // subject: count them.
    let mut acks = nats
        .client()
        .await
        .subscribe("$JS.ACK.PLANTD_LOGS.recorder_PLANTD_LOGS.>")
        .await
        .expect("subscribe");
    for i in 1..=200u64 {
        publish(&js, &format!("line {i}")).await;
    }
    let handler = Arc::new(Recorder::default());
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind(
            "recorder",
            streams::LOGS,
            handler.clone(),
            settings(AckMode::Cumulative),
        )
        .await
        .expect("bind");
    drained(&js, streams::LOGS, &durable, WAIT).await;
    assert_eq!(ack_policy(&js, &durable).await, AckPolicy::All);
    let seen = handler.by_sequence();
    assert_eq!(seen.len(), 200, "every item handled");
    assert!(
        seen.values().all(|(d, ok)| d == &vec![1] && *ok),
        "each handled once: {seen:?}"
    );
    trigger.shutdown().await;
    let mut count = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), acks.next()).await {
        count += 1;
    }
    assert!(
        (10..=20).contains(&count),
        "one acknowledgement per batch of 20, not per item: {count}"
    );
}

/// Ten items, the fourth `poison`, and a cumulative binding whose handler
/// fails it (until told otherwise).
async fn poison_at_four(js: &jetstream::Context) -> (Trigger, Arc<Recorder>, String) {
    for i in 1..=10u64 {
        publish(js, if i == 4 { "poison" } else { "ok" }).await;
    }
    let handler = Arc::new(Recorder::default());
    handler.broken.store(true, Ordering::SeqCst);
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind(
            "recorder",
            streams::LOGS,
            handler.clone(),
            settings(AckMode::Cumulative),
        )
        .await
        .expect("bind");
    (trigger, handler, durable)
}

#[tokio::test]
async fn a_failure_takes_back_only_itself_and_what_is_above_it() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let (trigger, handler, durable) = poison_at_four(&js).await;
    eventually(WAIT, "item 4 failed once", || async {
        handler.by_sequence().get(&4).map(|_| ())
    })
    .await;
    handler.broken.store(false, Ordering::SeqCst);
    drained(&js, streams::LOGS, &durable, WAIT).await;
    let seen = handler.by_sequence();
    for seq in 1..=3 {
        assert_eq!(
            seen[&seq],
            (vec![1], true),
            "item {seq} below the failure: once"
        );
    }
    assert!(
        seen[&4].0.len() >= 2 && seen[&4].1,
        "item 4 retried: {seen:?}"
    );
    for seq in 5..=10 {
        assert_eq!(
            seen[&seq],
            (vec![1, 2], true),
            "item {seq} above the failure came again (after ack_wait) and succeeded: {seen:?}"
        );
    }
    assert_eq!(dlq::depth(&js, &durable).await.expect("depth"), 0);
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_poison_item_is_parked_and_every_other_item_is_handled() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let (trigger, handler, durable) = poison_at_four(&js).await;
    let parked = eventually(WAIT, "the poison item in PLANTD_DLQ", || async {
        dlq::list(&js, Some(&durable), 10)
            .await
            .expect("list")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(parked.sequence, 4);
    drained(&js, streams::LOGS, &durable, WAIT).await;
    let seen = handler.by_sequence();
    for seq in (1..=10).filter(|s| *s != 4) {
        assert!(
            seen.get(&seq).is_some_and(|(_, ok)| *ok),
            "item {seq} handled, not acknowledged with the parked one: {seen:?}"
        );
    }
    assert_eq!(dlq::depth(&js, &durable).await.expect("depth"), 1);
    trigger.shutdown().await;
}

#[tokio::test]
async fn an_explicit_consumer_is_replaced_from_its_floor() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for i in 1..=50u64 {
        publish(&js, &format!("first {i}")).await;
    }
    let before = Arc::new(Recorder::default());
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind(
            "recorder",
            streams::LOGS,
            before.clone(),
            settings(AckMode::Each),
        )
        .await
        .expect("bind");
    drained(&js, streams::LOGS, &durable, WAIT).await;
    trigger.shutdown().await;
    assert_eq!(ack_policy(&js, &durable).await, AckPolicy::Explicit);
    for i in 51..=80u64 {
        publish(&js, &format!("second {i}")).await;
    }
    let after = Arc::new(Recorder::default());
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            "recorder",
            streams::LOGS,
            after.clone(),
            settings(AckMode::Cumulative),
        )
        .await
        .expect("bind again");
    drained(&js, streams::LOGS, &durable, WAIT).await;
    assert_eq!(ack_policy(&js, &durable).await, AckPolicy::All);
    let seen: Vec<u64> = after.by_sequence().into_keys().collect();
    assert_eq!(
        seen,
        (51..=80).collect::<Vec<_>>(),
        "only what the old consumer had not acknowledged"
    );
    trigger.shutdown().await;
    // Bound again with the same mode: the consumer (and its start) stays.
    let again = Arc::new(Recorder::default());
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            "recorder",
            streams::LOGS,
            again.clone(),
            settings(AckMode::Cumulative),
        )
        .await
        .expect("bind a third time");
    publish(&js, "third").await;
    drained(&js, streams::LOGS, &durable, WAIT).await;
    eventually(WAIT, "the new item handled", || async {
        (!again.by_sequence().is_empty()).then_some(())
    })
    .await;
    let seen: Vec<u64> = again.by_sequence().into_keys().collect();
    assert_eq!(seen, vec![81], "nothing acknowledged comes again");
    trigger.shutdown().await;
}
