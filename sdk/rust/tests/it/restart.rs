//! Across a restart of the server itself — `plantd up` stopped (SIGTERM,
//! or SIGKILL as a crash) and started again on the same data directory and
//! ports while a subscription is live — the subscriber gets every number a
//! device published exactly once and in order: before the restart, right
//! after it (its client typically still reconnecting: from the stream's
//! history, resuming at the last sequence seen + 1) and after it is
//! connected again; and a device that keeps publishing through the
//! restart loses no number the edge acknowledged and repeats none (the one
//! in flight when the server stopped arrives at most once). `resume.rs`
//! proves the same for a cut socket; `refused.rs` that a revoked token
//! ends the stream instead.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_client::{LinkState, LiveOptions, Options, Subscription};
use plantd_testkit::up::Stop;

use crate::common::{SITE, Stack, next, until};

/// The topic the device counts on.
const TOPIC: &str = "sdk/restart";

/// The next number the subscription yields (warm-up messages skipped).
async fn number(sub: &mut Subscription) -> u32 {
    loop {
        let m = next(sub, "the next number")
            .await
            .expect("a message, not an error");
        let text = m.text().expect("text");
        if !text.starts_with("warmup") {
            return text.parse().expect("a number");
        }
    }
}

/// The device publishes 1..=5, the server restarts (`stop`), the device
/// reconnects and publishes 6..=10 at once — its subscriber is still
/// away — and 11..=15 once the subscriber is connected again.
async fn every_number_once_in_order_across(stop: Stop) {
    // Reconnect attempts every 0.5-1 s while the server is down.
    let mut stack = Stack::start_with(Options {
        live: LiveOptions {
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(1),
            ..LiveOptions::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = stack.device("sdk-restart-counter", &["sdk/#"], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let live = stack.admin.live();
    let mut states = live.states();
    let mut sub = live.subscribe(SITE, TOPIC);
    until(&mut states, LinkState::Connected).await;
    // `Connected` is the socket; the subscription is in place once a
    // publish comes through.
    let mut warm = false;
    for i in 0..15 {
        device.publish1(TOPIC, false, format!("warmup-{i}")).await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            m.expect("a message");
            warm = true;
            break;
        }
    }
    assert!(warm, "the subscription yields the device's publish");

    let mut got = Vec::new();
    for n in 1..=5 {
        device.publish1(TOPIC, false, n.to_string()).await;
    }
    while got.len() < 5 {
        got.push(number(&mut sub).await);
    }

    stack.up.restart_with(stop).await;
    until(&mut states, LinkState::Reconnecting).await;
    drop(device);
    let mut device = stack.mqtt(&id, &token).await;
    for n in 6..=10 {
        device.publish1(TOPIC, false, n.to_string()).await;
    }
    until(&mut states, LinkState::Connected).await;
    for n in 11..=15 {
        device.publish1(TOPIC, false, n.to_string()).await;
    }
    while got.len() < 15 {
        got.push(number(&mut sub).await);
    }
    assert_eq!(got, (1..=15).collect::<Vec<_>>());
    // Nothing more: no repeats queued behind.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "a message after the last number"
    );
    assert_eq!(live.state(), LinkState::Connected, "no reconnect loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_server_restart_every_number_arrives_exactly_once_in_order() {
    every_number_once_in_order_across(Stop::Graceful).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_server_crash_every_number_arrives_exactly_once_in_order() {
    every_number_once_in_order_across(Stop::Kill).await;
}

/// Publishes `n` at QoS 1 on [`TOPIC`]; whether the edge acknowledged it
/// (`false` once the connection is gone: stored or not, unknown).
async fn try_publish(device: &mut plantd_testkit::mqtt::V4, n: u32) -> bool {
    if device
        .client
        .publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, n.to_string())
        .await
        .is_err()
    {
        return false;
    }
    loop {
        match device.incoming().await {
            Ok(rumqttc::Packet::PubAck(_)) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// The device publishes without pause, each number once (no resend), and
/// the server restarts under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishing_through_a_restart_loses_and_repeats_no_acknowledged_number() {
    let mut stack = Stack::start_with(Options {
        live: LiveOptions {
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(1),
            ..LiveOptions::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = stack.device("sdk-restart-stream", &["sdk/#"], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let live = stack.admin.live();
    let mut sub = live.subscribe(SITE, TOPIC);
    let mut warm = false;
    for i in 0..15 {
        device.publish1(TOPIC, false, format!("warmup-{i}")).await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            m.expect("a message");
            warm = true;
            break;
        }
    }
    assert!(warm, "the subscription yields the device's publish");

    // The device publishes one number after another, each acknowledged,
    // until the server going down ends its connection; the number in
    // flight then may or may not have been stored.
    let (acks, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let publisher = tokio::spawn(async move {
        let mut n = 1;
        while try_publish(&mut device, n).await {
            let _ = acks.send(n);
            n += 1;
        }
        n
    });
    // Some numbers in, the server restarts under the device.
    const BEFORE: u32 = 20;
    for _ in 0..BEFORE {
        acked_rx.recv().await.expect("an acknowledged number");
    }
    stack.up.restart().await;
    let in_flight = publisher.await.expect("the publisher");
    let mut acked = Vec::new();
    while let Ok(n) = acked_rx.try_recv() {
        acked.push(n);
    }
    let mut device = stack.mqtt(&id, &token).await;
    let after: Vec<u32> = (in_flight + 1..=in_flight + 5).collect();
    for n in &after {
        device.publish1(TOPIC, false, n.to_string()).await;
    }

    let last = in_flight + 5;
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        got.push(number(&mut sub).await);
    }
    let expected: Vec<u32> = (1..=BEFORE).chain(acked).chain(after).collect();
    let with_in_flight = {
        let mut e = expected.clone();
        e.insert(in_flight as usize - 1, in_flight);
        e
    };
    assert!(
        got == expected || got == with_in_flight,
        "every acknowledged number once and in order (and {in_flight}, in flight when the server stopped, at most once): got {got:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "a message after the last number"
    );
}
