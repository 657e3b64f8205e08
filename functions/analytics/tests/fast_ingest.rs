//! Results as fast-ingest batches against a real nats-server: every result
//! stored once and in order, a batch published again after a crash stores
//! only what was missing, and a stream that does not allow fast batches
//! gets its results one by one — nothing lost, the fall-back counted.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt as _;
use plantd_analytics::Output;
use plantd_analytics_function::fast_ingest::{self, FastError};
use plantd_analytics_function::metrics::Metrics;
use plantd_analytics_function::publish::{self, FastIngest};
use plantd_shared::streams;
use plantd_shared::subject::Site;
use plantd_testkit::Nats;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A stream `name` on `<name>.>`, fast batches allowed or not.
async fn stream_of(js: &jetstream::Context, name: &str, allow_batched: bool) -> stream::Stream {
    js.create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        allow_batch_publish: allow_batched,
        max_message_size: 1024,
        ..Default::default()
    })
    .await
    .expect("stream")
}

/// Messages `from..to` on `<name>.k<i % 7>`, id `m<i>`, body `<i>`.
fn messages(name: &str, from: u32, to: u32) -> Vec<(String, HeaderMap, Bytes)> {
    (from..to)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("m{i}").as_str(),
            );
            (format!("{name}.k{}", i % 7), h, Bytes::from(i.to_string()))
        })
        .collect()
}

/// The bodies stored in `name`, in stream order.
async fn bodies(js: &jetstream::Context, name: &str) -> Vec<u32> {
    let s = js.get_stream(name).await.expect("stream");
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let total = consumer.cached_info().num_pending;
    let mut out = Vec::new();
    let mut messages = consumer.messages().await.expect("messages");
    while (out.len() as u64) < total {
        let m = messages.next().await.expect("open").expect("message");
        out.push(
            std::str::from_utf8(&m.payload)
                .expect("utf-8")
                .parse()
                .expect("a number"),
        );
    }
    out
}

#[tokio::test]
async fn a_fast_batch_stores_each_message_once_and_a_repeat_only_what_was_missing() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    stream_of(&js, "fast", true).await;
    let client = js.client();

    let first = fast_ingest::publish(&client, &messages("fast", 0, 1200), TIMEOUT)
        .await
        .expect("a fast batch");
    assert_eq!(first, 1200);
    assert_eq!(bodies(&js, "fast").await, (0..1200).collect::<Vec<_>>());

    // After a crash the same ids come again with new ones: the stream
    // keeps one of each (an atomic batch would refuse it whole).
    let again = fast_ingest::publish(&client, &messages("fast", 600, 1800), TIMEOUT)
        .await
        .expect("a fast batch with duplicates");
    assert_eq!(again, 1200, "the batch held 1,200 messages");
    assert_eq!(bodies(&js, "fast").await, (0..1800).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stream_without_fast_batches_or_a_refused_message_is_an_error_not_a_loss() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    stream_of(&js, "plain", false).await;
    stream_of(&js, "fast", true).await;
    let client = js.client();

    let refused = fast_ingest::publish(&client, &messages("plain", 0, 100), TIMEOUT).await;
    assert!(
        matches!(refused, Err(FastError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(bodies(&js, "plain").await.is_empty());

    // Message 50 is over the stream's 1 KiB: the batch fails (the caller
    // then publishes them one by one and gets the refusal itself); what
    // was stored is a prefix of the batch.
    let mut batch = messages("fast", 0, 100);
    batch[50].2 = Bytes::from(vec![b'x'; 2048]);
    let failed = fast_ingest::publish(&client, &batch, TIMEOUT).await;
    assert!(matches!(failed, Err(FastError::Failed(_))), "{failed:?}");
    let stored = bodies(&js, "fast").await;
    assert_eq!(stored, (0..stored.len() as u32).collect::<Vec<_>>());
    assert!(stored.len() <= 50, "stored {stored:?}");
}

/// `n` results of rule `r` on keys `k0..`.
fn outputs(n: usize) -> Vec<Output> {
    (0..n)
        .map(|i| Output {
            rule: "r".into(),
            key: format!("k{i}"),
            window_start: 0,
            window_end: 10_000,
            revision: 0,
            values: BTreeMap::from([("avg".to_owned(), i as f64)]),
            dropped_late: 0,
            signal: None,
        })
        .collect()
}

#[tokio::test]
async fn results_fall_back_to_one_by_one_when_the_stream_refuses_fast_batches() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    // PLANTD_AGGREGATES as an older plantd created it: no fast batches.
    js.create_stream(stream::Config {
        name: streams::AGGREGATES.to_owned(),
        subjects: vec!["plantd.*.agg.>".to_owned()],
        ..Default::default()
    })
    .await
    .expect("stream");
    let site = Site::new("plant1").expect("site");
    let switch = FastIngest::default();
    let metrics = Metrics::default();

    let encoded = publish::encode(&site, &outputs(100)).expect("encode");
    let done = publish::send(&js, encoded, Some((&switch, &metrics)))
        .await
        .expect("stored one by one");
    assert_eq!((done.stored, done.duplicates), (100, 0));
    assert!(!switch.enabled(), "not tried again");
    assert_eq!(
        metrics
            .fast_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        metrics
            .prometheus()
            .contains("plantd_analytics_fast_fallbacks_total 1")
    );

    // What plantd creates now allows them: the next results go fast.
    streams::ensure(&js, &streams::Settings::default())
        .await
        .expect("streams updated");
    let switch = FastIngest::default();
    let encoded = publish::encode(&site, &outputs(150)).expect("encode");
    let done = publish::send(&js, encoded, Some((&switch, &metrics)))
        .await
        .expect("stored");
    assert_eq!(done.stored, 150);
    assert!(switch.enabled());
    assert_eq!(
        metrics
            .fast_batches
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let stored = plantd_testkit::stream_messages(&js, streams::AGGREGATES).await;
    assert_eq!(
        stored, 150,
        "100 one by one, then 50 new of 150 (100 ids known)"
    );
}
