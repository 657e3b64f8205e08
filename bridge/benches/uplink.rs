//! Uplink and journal throughput against a real nats-server (file storage),
//! all in one run so the figures compare:
//!
//! 1. raw async-nats JetStream publishing (64-byte payloads, message ids,
//!    a window of 4096 unacknowledged publishes) — the ceiling;
//! 2. the journal alone: QoS-1-style appends that wait for durability under
//!    `fsync batch`, from 256 concurrent publishers;
//! 3. the uplink draining a pre-filled journal to JetStream, with 1 topic
//!    and with 256 topics (it keeps one publish in flight per topic).
//!
//! Run: `cargo bench -p plantd-bridge --bench uplink` (release build; needs
//! `scripts/setup` for nats-server). `PLANTD_BENCH_N` sets the message count.

use std::time::{Duration, Instant};

use bytes::Bytes;
use plantd_bridge::{Uplink, UplinkConfig, UplinkConnector, UplinkMessage};
use plantd_journal::{Journal, Options};
use plantd_shared::subject::Site;
use plantd_testkit::{Nats, load};

fn n() -> u64 {
    std::env::var("PLANTD_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000)
}

fn rate(count: u64, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64()
}

async fn fresh_streams(nats: &Nats) -> async_nats::jetstream::Context {
    let js = nats.jetstream().await;
    load::fresh_streams(&js).await;
    js
}

async fn raw_jetstream(nats: &Nats, n: u64) -> f64 {
    let client = nats.client().await;
    load::jetstream_publish_rate(client, n, "plantd.bench.up", 64, 4096, |i| {
        load::msg_id_only("raw", i)
    })
    .await
}

/// The reference publish with the headers the uplink sends (topic, QoS,
/// retain, receive time, site, client id): what JetStream itself costs for
/// plantd's messages.
async fn raw_with_uplink_headers(nats: &Nats, n: u64) -> f64 {
    fresh_streams(nats).await;
    let site = Site::new("bench").expect("site");
    let m = UplinkMessage::decode(message(0, 16)).expect("decode");
    let client = nats.client().await;
    load::jetstream_publish_rate(client, n, "plantd.bench.up", 64, 4096, |i| {
        m.headers(&site, "4f1c0a9e7b2d3c58", i + 1)
    })
    .await
}

fn message(i: u64, topics: u64) -> Bytes {
    UplinkMessage {
        topic: format!("line/{}/temp", i % topics),
        payload: Bytes::from(vec![b'x'; 64]),
        qos: 1,
        retain: false,
        received_ms: 0,
        client_id: "bench".into(),
        payload_format: None,
        message_expiry: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    }
    .encode()
    .expect("encode")
}

async fn journal_appends(n: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir_in(".").expect("tmp on the project's disk");
    let (j, _) = Journal::open(dir.path(), Options::default()).expect("journal");
    let publishers = 256u64;
    let per = n / publishers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let j = j.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    j.append(message(p * per + i, 16)).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    let elapsed = start.elapsed();
    let s = j.stats();
    j.close().await.expect("close");
    let amplification = s.bytes_written as f64 / (per * publishers * 64) as f64;
    (
        rate(per * publishers, elapsed),
        s.fsyncs as f64 / elapsed.as_secs_f64(),
        amplification,
    )
}

async fn uplink_drain(nats: &Nats, n: u64, topics: u64) -> f64 {
    fresh_streams(nats).await;
    let dir = tempfile::tempdir_in(".").expect("tmp");
    let (j, _) = Journal::open(
        dir.path(),
        Options {
            fsync: plantd_journal::FsyncPolicy::Never,
            ..Options::default()
        },
    )
    .expect("journal");
    for i in 0..n {
        j.append_nowait(message(i, topics)).await.expect("append");
    }
    let last = loop {
        let s = j.stats();
        if s.durable_seq >= n {
            break s.durable_seq;
        }
        tokio::task::yield_now().await;
    };
    let mut cfg = UplinkConfig::new(Site::new("bench").expect("site"));
    cfg.window = 8192;
    let up = Uplink::new(
        j.clone(),
        UplinkConnector::new(&nats.url(), async_nats::ConnectOptions::new()),
        cfg,
    );
    let mut status = up.status();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let task = tokio::spawn(up.run(async move {
        let _ = rx.await;
    }));
    status
        .wait_for(|s| s.acked_seq >= last)
        .await
        .expect("drained");
    let elapsed = start.elapsed();
    let _ = stop.send(());
    task.await.expect("uplink");
    j.close().await.expect("close");
    rate(n, elapsed)
}

#[tokio::main]
async fn main() {
    let n = n();
    let nats = Nats::start().await;
    fresh_streams(&nats).await;
    let raw = raw_jetstream(&nats, n).await;
    println!("raw async-nats JetStream publish (64 B, msg ids, window 4096): {raw:>10.0} msg/s");
    let with_headers = raw_with_uplink_headers(&nats, n).await;
    println!(
        "raw publish with the uplink's headers:                          {with_headers:>10.0} msg/s ({:.0}% of raw)",
        100.0 * with_headers / raw
    );
    let (appends, fsyncs, amp) = journal_appends(n).await;
    println!(
        "journal appends, fsync batch, 256 publishers awaiting durability: {appends:>10.0} msg/s ({fsyncs:.0} fsyncs/s, write amplification {amp:.2} bytes per payload byte)"
    );
    for topics in [1, 16, 256] {
        let up = uplink_drain(&nats, n.min(100_000), topics).await;
        println!(
            "uplink drain, {topics:>3} topic(s): {up:>10.0} msg/s ({:.0}% of raw)",
            100.0 * up / raw
        );
    }
}
