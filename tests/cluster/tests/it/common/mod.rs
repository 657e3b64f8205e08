//! Helpers shared by the cluster tests: `plantd streams` against a region,
//! an MQTT device publishing QoS 1, and reading a stream back.

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use plantd_cluster_tests::{SuperCluster, User};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// How long a cluster may take to settle (elections, catch-up).
pub const SETTLE: Duration = Duration::from_secs(30);

/// `plantd streams --nats-url <region, user plantd> --tls-ca <ca>
/// --replicas <replicas> [--mirror-into <region>...]`, as the operator
/// runs it.
pub async fn plantd_streams(
    cluster: &SuperCluster,
    region: &str,
    replicas: usize,
    mirror_into: &[&str],
) -> plantd_cli::streams::Report {
    let options = plantd_cli::streams::Options {
        url: cluster.urls(region, User::Plantd),
        creds: None,
        ca: Some(cluster.pki.ca.clone()),
        replicas,
        mirror_into: mirror_into.iter().map(|s| (*s).to_owned()).collect(),
        retention: None,
        duplicate_window: None,
    };
    let client = plantd_cli::streams::connect(&options)
        .await
        .unwrap_or_else(|e| panic!("plantd streams connects: {e:#}"));
    plantd_cli::streams::ensure_with(&jetstream::new(client), &options)
        .await
        .unwrap_or_else(|e| panic!("plantd streams: {e:#}\n{}", cluster.tails()))
}

/// A device that publishes `count` QoS 1 messages `<prefix>-<i>` on
/// `topic`, one after the other, each after the PUBACK of the previous;
/// calls `at(i)` after the PUBACK of message `i`. Returns the payloads the
/// edge acknowledged (all of them, or the test fails).
pub async fn publish_acked(
    mqtt: SocketAddr,
    topic: &str,
    prefix: &str,
    count: usize,
    mut at: impl AsyncFnMut(usize),
) -> Vec<String> {
    let mut o = MqttOptions::new(format!("dev-{prefix}"), mqtt.ip().to_string(), mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 10);
    let mut acked = Vec::with_capacity(count);
    for i in 0..count {
        let payload = format!("{prefix}-{i}");
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("queue the publish");
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("MQTT connection: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("PUBACK of {payload} in time"));
        acked.push(payload);
        at(i).await;
    }
    let _ = client.disconnect().await;
    acked
}

/// Every payload in `stream` from sequence 1, read with direct gets (no
/// consumer: this works with only the stream's own replicas reachable).
/// Stops at the first sequence not found after `last`.
pub async fn payloads(js: &jetstream::Context, stream: &str, last: u64) -> Vec<String> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"));
    let mut out = Vec::new();
    for seq in 1..=last {
        match s.direct_get(seq).await {
            Ok(m) => out.push(String::from_utf8_lossy(&m.payload).into_owned()),
            Err(e) => panic!("{stream} seq {seq}: {e}"),
        }
    }
    out
}

/// The payloads of every message in `stream`, read by an ordered consumer
/// until `count` arrived (or the test fails after [`SETTLE`]).
pub async fn consume(js: &jetstream::Context, stream: &str, count: usize) -> Vec<String> {
    // Right after a node loss the cluster may still be electing leaders.
    let consumer = plantd_testkit::eventually(SETTLE, "an ordered consumer", || async move {
        js.get_stream(stream)
            .await
            .ok()?
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .ok()
    })
    .await;
    let mut msgs = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(count);
    tokio::time::timeout(SETTLE, async {
        while out.len() < count {
            let m = msgs
                .next()
                .await
                .expect("more messages")
                .expect("a message");
            out.push(String::from_utf8_lossy(&m.payload).into_owned());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{stream}: {} of {count} messages", out.len()));
    out
}

/// `expected` and `got` hold the same payloads, each once.
pub fn same_once(expected: &[String], got: &[String]) {
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a message is there twice");
    let want: BTreeSet<&String> = expected.iter().collect();
    let missing: Vec<_> = want.difference(&unique).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(unique, want);
}
