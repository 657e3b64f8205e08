//! Reference load for benchmarks: async-nats publishing to JetStream
//! directly, the ceiling that plantd's own paths are compared with.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;

/// Publishes `n` messages of `payload` bytes to JetStream over `client` —
/// subjects `<prefix>.t<i % 16>`, headers from `headers(i)` (which should
/// carry a `Nats-Msg-Id`), at most `window` publishes awaiting their
/// acknowledgement — and returns the acknowledged rate in messages per
/// second. A stream must capture `<prefix>.>`.
///
/// # Panics
/// When a publish fails or is not acknowledged: a benchmark has nothing
/// to report then.
pub async fn jetstream_publish_rate(
    client: async_nats::Client,
    n: u64,
    prefix: &str,
    payload: usize,
    window: usize,
    headers: impl Fn(u64) -> HeaderMap,
) -> f64 {
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .max_ack_inflight(window.max(1) * 2)
        .build(client);
    let body = bytes::Bytes::from(vec![b'x'; payload]);
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    for i in 0..n {
        let ack = js
            .publish_with_headers(format!("{prefix}.t{}", i % 16), headers(i), body.clone())
            .await
            .expect("publish");
        pending.push_back(ack);
        if pending.len() >= window {
            pending.pop_front().expect("front").await.expect("ack");
        }
    }
    for ack in pending {
        ack.await.expect("ack");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Headers with only a message id `<tag>:<i>`: the reference publish.
pub fn msg_id_only(tag: &str, i: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("{tag}:{i}").as_str());
    h
}

/// Deletes plantd's streams and buckets and creates them again empty, so a
/// benchmark phase starts from nothing.
///
/// # Panics
/// When they cannot be created.
pub async fn fresh_streams(js: &async_nats::jetstream::Context) {
    use plantd_shared::streams;
    for s in streams::STREAMS {
        let _ = js.delete_stream(s).await;
    }
    streams::ensure(js, &streams::Settings::default())
        .await
        .expect("streams");
}

/// The raw consume rate plantd's event functions are measured against: a
/// durable pull consumer `durable` on `stream` (explicit acks, at most
/// `max_ack_pending` outstanding) fetching batches of `batch` and
/// acknowledging every message, until `n` were acknowledged. Returns the
/// time it took.
///
/// # Panics
/// When the consumer cannot be made or a message cannot be read or
/// acknowledged: a benchmark has nothing to report then.
pub async fn raw_consume(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
    max_ack_pending: i64,
    batch: usize,
    n: u64,
) -> Duration {
    use async_nats::jetstream::consumer;
    use futures::StreamExt as _;

    let c = js
        .get_stream(stream)
        .await
        .expect("stream")
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let start = Instant::now();
    let mut messages = c
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await
        .expect("messages");
    let mut got = 0;
    while got < n {
        let m = messages.next().await.expect("open").expect("message");
        m.ack().await.expect("ack");
        got += 1;
    }
    start.elapsed()
}
