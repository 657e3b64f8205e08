//! The trigger against a real nats-server: batches in order with their
//! (stream, sequence), partial failures retried then parked in
//! `PLANTD_DLQ`, replay once fixed, crash and restart without loss, and a
//! stuck consumer reported unhealthy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use plantd_shared::streams;
use plantd_testkit::wait::drained;
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{BatchOutcome, ConsumerSettings, ConsumerState, Handler, Item, Trigger, dlq};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

const SUBJECT: &str = "plantd.site1.log.app";
const WAIT: Duration = Duration::from_secs(20);

/// One delivery the handler saw.
#[derive(Debug, Clone)]
struct Seen {
    stream: String,
    sequence: u64,
    payload: Bytes,
    delivered: u64,
    replay: Option<u64>,
}

/// A handler that records every item, fails items whose payload is
/// `poison` while `broken`, and can be made to wait on `gate` (one permit
/// per batch) once `gated` is set.
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    batch_sizes: Mutex<Vec<usize>>,
    broken: AtomicBool,
    gated: AtomicBool,
    gate: Semaphore,
    entered: AtomicUsize,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            seen: Mutex::default(),
            batch_sizes: Mutex::default(),
            broken: AtomicBool::new(false),
            gated: AtomicBool::new(false),
            gate: Semaphore::new(0),
            entered: AtomicUsize::new(0),
        }
    }
}

impl Handler for Recorder {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        self.entered.fetch_add(1, Ordering::SeqCst);
        if self.gated.load(Ordering::SeqCst) {
            match self.gate.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return BatchOutcome::all_failed(batch.len(), "gate closed"),
            }
        }
        let mut outcome = BatchOutcome::success();
        let mut seen = self.seen.lock().expect("lock");
        self.batch_sizes.lock().expect("lock").push(batch.len());
        for (i, item) in batch.iter().enumerate() {
            seen.push(Seen {
                stream: item.stream.to_string(),
                sequence: item.sequence,
                payload: item.payload.clone(),
                delivered: item.delivered,
                replay: item.replay,
            });
            if self.broken.load(Ordering::SeqCst) && item.payload.as_ref() == b"poison" {
                outcome.record_failure(i, format!("cannot parse item {}", item.sequence));
            }
        }
        outcome
    }
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn publish(js: &jetstream::Context, payload: &str) -> u64 {
    let mut headers = HeaderMap::new();
    headers.insert("Plantd-Topic", "app/log");
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("test:{payload}").as_str(),
    );
    js.publish_with_headers(SUBJECT, headers, Bytes::from(payload.to_owned()))
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

fn fast() -> ConsumerSettings {
    ConsumerSettings {
        batch_size: 20,
        max_wait: Duration::from_millis(50),
        max_deliver: 3,
        backoff: vec![Duration::from_millis(50), Duration::from_millis(100)],
        ack_wait: Duration::from_secs(2),
        watch_interval: Duration::from_millis(100),
        ..ConsumerSettings::default()
    }
}

#[tokio::test]
async fn batches_arrive_once_in_order_with_stream_and_sequence() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for i in 1..=250u64 {
        assert_eq!(publish(&js, &format!("line {i}")).await, i);
    }
    let handler = Arc::new(Recorder::default());
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind("recorder", streams::LOGS, handler.clone(), fast())
        .await
        .expect("bind");
    assert_eq!(durable, "recorder_PLANTD_LOGS");
    eventually(WAIT, "250 items handled", || async {
        (handler.seen().len() >= 250).then_some(())
    })
    .await;
    drained(&js, streams::LOGS, &durable, WAIT).await;
    // Items published after the first pull arrive too, in the same order.
    for i in 251..=260u64 {
        publish(&js, &format!("line {i}")).await;
    }
    eventually(WAIT, "260 items handled", || async {
        (handler.seen().len() >= 260).then_some(())
    })
    .await;
    drained(&js, streams::LOGS, &durable, WAIT).await;

    let seen = handler.seen();
    assert_eq!(seen.len(), 260, "every item exactly once");
    for (i, s) in seen.iter().enumerate() {
        let want = i as u64 + 1;
        assert_eq!(s.sequence, want, "in stream order");
        assert_eq!(s.stream, streams::LOGS);
        assert_eq!(s.payload, Bytes::from(format!("line {want}")));
        assert_eq!(s.delivered, 1);
        assert_eq!(s.replay, None);
    }
    assert!(
        handler
            .batch_sizes
            .lock()
            .expect("lock")
            .iter()
            .all(|n| *n <= 20),
        "no batch larger than batch_size"
    );
    let text = trigger.status().prometheus();
    assert!(
        text.contains(
            "plantd_trigger_items_total{function=\"recorder\",stream=\"PLANTD_LOGS\",outcome=\"done\"} 260"
        ),
        "{text}"
    );
    trigger.shutdown().await;
}

/// Publishes ten items, the fourth `poison`, to a handler broken for it,
/// and waits until it is parked. Returns the trigger, handler, durable
/// name and the DLQ record.
async fn park_one_poison(nats: &Nats) -> (Trigger, Arc<Recorder>, String, dlq::ParkedItem) {
    let js = nats.jetstream().await;
    for i in 1..=10u64 {
        let payload = if i == 4 {
            "poison".to_owned()
        } else {
            format!("ok {i}")
        };
        publish(&js, &payload).await;
    }
    let handler = Arc::new(Recorder::default());
    handler.broken.store(true, Ordering::SeqCst);
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind("recorder", streams::LOGS, handler.clone(), fast())
        .await
        .expect("bind");
    let parked = eventually(WAIT, "the poison item in PLANTD_DLQ", || async {
        dlq::list(&js, Some(&durable), 10)
            .await
            .expect("list")
            .into_iter()
            .next()
    })
    .await;
    drained(&js, streams::LOGS, &durable, WAIT).await;
    (trigger, handler, durable, parked)
}

#[tokio::test]
async fn a_failing_item_is_retried_then_parked_while_the_rest_proceeds() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let (trigger, handler, durable, parked) = park_one_poison(&nats).await;

    let seen = handler.seen();
    let mut per_seq: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for s in &seen {
        per_seq.entry(s.sequence).or_default().push(s.delivered);
    }
    for seq in (1..=10).filter(|s| *s != 4) {
        assert_eq!(per_seq.get(&seq), Some(&vec![1]), "item {seq} handled once");
    }
    assert_eq!(
        per_seq.get(&4),
        Some(&vec![1, 2, 3]),
        "poison tried max_deliver times"
    );

    assert_eq!(parked.consumer, durable);
    assert_eq!(parked.function, "recorder");
    assert_eq!(parked.stream, streams::LOGS);
    assert_eq!(parked.sequence, 4);
    assert_eq!(parked.subject, SUBJECT);
    assert_eq!(parked.error, "cannot parse item 4");
    assert_eq!(parked.deliveries, 3);
    assert_eq!(parked.payload, Bytes::from_static(b"poison"));
    assert_eq!(
        parked.headers.get("Plantd-Topic").map(|v| v.as_str()),
        Some("app/log")
    );
    assert_eq!(
        parked
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str()),
        Some("test:poison"),
        "the original message id comes back"
    );
    assert_eq!(dlq::depth(&js, &durable).await.expect("depth"), 1);

    let status = trigger.status();
    eventually(WAIT, "the DLQ depth in the metrics", || async {
        let text = status.prometheus();
        text.contains("plantd_trigger_dlq_depth{function=\"recorder\",stream=\"PLANTD_LOGS\"} 1")
            .then_some(())
    })
    .await;
    let text = status.prometheus();
    for want in [
        "outcome=\"done\"} 9",
        "outcome=\"failed\"} 3",
        "outcome=\"parked\"} 1",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    // Parked and terminated: nothing pending, so idle and healthy.
    eventually(WAIT, "the consumer idle", || async {
        let h = status.health();
        (h.healthy && h.consumers[0].state == ConsumerState::Idle).then_some(())
    })
    .await;
    trigger.shutdown().await;
}

#[tokio::test]
async fn replay_delivers_a_parked_item_once_the_handler_is_fixed() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let (trigger, handler, durable, parked) = park_one_poison(&nats).await;
    let before = handler.seen().len();

    // Still broken: the replay answers with the error and the record stays.
    let reply = dlq::request_replay(&js, parked.dlq_sequence, WAIT)
        .await
        .expect("replay answered");
    assert!(!reply.ok);
    assert_eq!(reply.error.as_deref(), Some("cannot parse item 4"));
    assert_eq!(
        dlq::list(&js, Some(&durable), 10)
            .await
            .expect("list")
            .len(),
        1
    );

    handler.broken.store(false, Ordering::SeqCst);
    let reply = dlq::request_replay(&js, parked.dlq_sequence, WAIT)
        .await
        .expect("replay answered");
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.stream.as_deref(), Some(streams::LOGS));
    assert_eq!(reply.sequence, Some(4));

    let replays: Vec<Seen> = handler.seen()[before..].to_vec();
    assert_eq!(replays.len(), 2, "one failed and one good replay");
    for r in &replays {
        assert_eq!(
            (r.stream.as_str(), r.sequence),
            (streams::LOGS, 4),
            "original key"
        );
        assert_eq!(r.replay, Some(parked.dlq_sequence));
        assert_eq!(r.payload, Bytes::from_static(b"poison"));
    }
    assert!(
        dlq::list(&js, Some(&durable), 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(matches!(
        dlq::request_replay(&js, parked.dlq_sequence, WAIT).await,
        Err(dlq::DlqError::NotFound(_))
    ));
    // The source stream was not touched: no new items, nothing redelivered.
    let info = js
        .get_stream(streams::LOGS)
        .await
        .expect("stream")
        .get_info()
        .await
        .expect("info");
    assert_eq!(info.state.messages, 10);
    assert_eq!(handler.seen().len(), before + 2);
    trigger.shutdown().await;

    // With no trigger running, a replay says so (and the record stays).
    let mut other = parked.to_item();
    other.sequence = 99;
    let dlq_seq = dlq::park(&js, &durable, "recorder", &other, "again", 3)
        .await
        .expect("parked");
    match dlq::request_replay(&js, dlq_seq, Duration::from_secs(5)).await {
        Err(dlq::DlqError::NoTrigger(c)) => assert_eq!(c, durable),
        other => panic!("expected NoTrigger, got {other:?}"),
    }
    assert_eq!(dlq::get(&js, dlq_seq).await.expect("kept").sequence, 99);
}

#[tokio::test]
async fn a_crashed_consumer_restarts_and_redelivers_what_was_unacknowledged() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for i in 1..=100u64 {
        publish(&js, &format!("line {i}")).await;
    }
    let settings = ConsumerSettings {
        batch_size: 10,
        ack_wait: Duration::from_secs(1),
        ..fast()
    };
    // First run: two batches go through, the third hangs in the handler.
    let first = Arc::new(Recorder::default());
    first.gated.store(true, Ordering::SeqCst);
    first.gate.add_permits(2);
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind("recorder", streams::LOGS, first.clone(), settings.clone())
        .await
        .expect("bind");
    eventually(WAIT, "the third batch in the handler", || async {
        (first.entered.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    let handled_first: Vec<u64> = first.seen().iter().map(|s| s.sequence).collect();
    assert_eq!(handled_first, (1..=20).collect::<Vec<_>>());
    drop(trigger); // a crash: tasks aborted, the batch in hand never acknowledged

    // More items arrive while it is down.
    for i in 101..=150u64 {
        publish(&js, &format!("line {i}")).await;
    }
    let second = Arc::new(Recorder::default());
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind("recorder", streams::LOGS, second.clone(), settings)
        .await
        .expect("bind again");
    eventually(WAIT, "items 21..=150 handled after the restart", || async {
        let got: std::collections::BTreeSet<u64> =
            second.seen().iter().map(|s| s.sequence).collect();
        (21..=150).all(|s| got.contains(&s)).then_some(())
    })
    .await;
    drained(&js, streams::LOGS, &durable, WAIT).await;
    let seen = second.seen();
    assert!(
        seen.iter().all(|s| s.sequence > 20),
        "acknowledged items are not delivered again"
    );
    let redelivered: Vec<u64> = seen
        .iter()
        .filter(|s| s.delivered > 1)
        .map(|s| s.sequence)
        .collect();
    // The batch in hand at the crash comes back, marked as a redelivery —
    // and what was received behind it: the batch held ahead and the
    // deliveries of the subscription's outstanding pull requests (a batch
    // and a half at most), so never more than four batches in all.
    let last = redelivered.last().copied().unwrap_or(0);
    assert!(
        (30..=60).contains(&last) && redelivered == (21..=last).collect::<Vec<_>>(),
        "the items held at the crash come back as redeliveries: {redelivered:?}"
    );
    let mut seqs: Vec<u64> = seen.iter().map(|s| s.sequence).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (21..=150).collect::<Vec<_>>(), "nothing lost");
    trigger.shutdown().await;
}

#[tokio::test]
async fn a_stuck_consumer_is_reported_unhealthy_until_it_moves() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let handler = Arc::new(Recorder::default());
    handler.gated.store(true, Ordering::SeqCst);
    let settings = ConsumerSettings {
        ack_wait: Duration::from_secs(30),
        stuck_after: Duration::from_millis(500),
        ..fast()
    };
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind("recorder", streams::LOGS, handler.clone(), settings)
        .await
        .expect("bind");
    let status = trigger.status();
    let app = plantd_trigger::http::routes(status.clone());

    eventually(WAIT, "an idle consumer", || async {
        (status.health().consumers[0].state == ConsumerState::Idle).then_some(())
    })
    .await;
    assert_eq!(get(&app, "/healthz/trigger").await.0, 200);

    for i in 1..=3u64 {
        publish(&js, &format!("line {i}")).await;
    }
    let stuck = eventually(WAIT, "the consumer reported stuck", || async {
        let h = status.health();
        (h.consumers[0].state == ConsumerState::Stuck).then_some(h)
    })
    .await;
    assert!(!stuck.healthy);
    let reason = stuck.consumers[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("3 items pending"), "{reason}");
    let (code, body) = get(&app, "/healthz/trigger").await;
    assert_eq!(code, 503);
    assert!(body.contains("\"stuck\""), "{body}");
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(
        metrics.contains("plantd_trigger_healthy{function=\"recorder\",stream=\"PLANTD_LOGS\"} 0"),
        "{metrics}"
    );

    handler.gate.add_permits(100);
    eventually(WAIT, "the consumer healthy again", || async {
        let h = status.health();
        (h.healthy && h.consumers[0].state == ConsumerState::Idle).then_some(())
    })
    .await;
    assert_eq!(get(&app, "/healthz/trigger").await.0, 200);
    trigger.shutdown().await;
}

async fn get(app: &axum::Router, path: &str) -> (u16, String) {
    let response = app
        .clone()
        .oneshot(
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    let code = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_deleted_consumer_is_created_again_and_nothing_is_lost() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for i in 1..=5u64 {
        publish(&js, &format!("line {i}")).await;
    }
    let handler = Arc::new(Recorder::default());
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind("recorder", streams::LOGS, handler.clone(), fast())
        .await
        .expect("bind");
    drained(&js, streams::LOGS, &durable, WAIT).await;
    assert_eq!(handler.seen().len(), 5);
    // Gone, as after nats-server came back with a wiped store.
    let stream = js.get_stream(streams::LOGS).await.expect("stream");
    assert!(
        stream
            .delete_consumer(&durable)
            .await
            .expect("delete")
            .success
    );
    for i in 6..=10u64 {
        publish(&js, &format!("line {i}")).await;
    }
    eventually(
        WAIT,
        "items 6..=10 handled by a re-created consumer",
        || async {
            let got: Vec<u64> = handler.seen().iter().map(|s| s.sequence).collect();
            (6..=10).all(|s| got.contains(&s)).then_some(())
        },
    )
    .await;
    drained(&js, streams::LOGS, &durable, WAIT).await;
    trigger.shutdown().await;
}

/// Panics on `boom`, records everything else.
#[derive(Default)]
struct Panicky {
    done: Mutex<Vec<u64>>,
}

impl Handler for Panicky {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        if batch.iter().any(|i| i.payload.as_ref() == b"boom") {
            panic!("boom in item");
        }
        let mut done = self.done.lock().expect("lock");
        done.extend(batch.iter().map(|i| i.sequence));
        BatchOutcome::success()
    }
}

#[tokio::test]
async fn a_panicking_item_is_parked_alone_and_its_batch_mates_proceed() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for i in 1..=6u64 {
        let payload = if i == 3 {
            "boom".to_owned()
        } else {
            format!("ok {i}")
        };
        publish(&js, &payload).await;
    }
    let handler = Arc::new(Panicky::default());
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind("panicky", streams::LOGS, handler.clone(), fast())
        .await
        .expect("bind");
    let parked = eventually(WAIT, "the panicking item parked", || async {
        dlq::list(&js, Some(&durable), 10)
            .await
            .expect("list")
            .into_iter()
            .next()
    })
    .await;
    drained(&js, streams::LOGS, &durable, WAIT).await;
    assert_eq!(parked.sequence, 3);
    assert_eq!(parked.error, "handler panicked: boom in item");
    let mut done = handler.done.lock().expect("lock").clone();
    done.sort_unstable();
    assert_eq!(done, vec![1, 2, 4, 5, 6], "batch-mates handled once each");
    assert_eq!(dlq::list(&js, None, 10).await.expect("list").len(), 1);
    trigger.shutdown().await;
}
