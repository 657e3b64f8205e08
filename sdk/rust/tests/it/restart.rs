//! Across a restart of the server itself — `plantd up` stopped (SIGTERM,
//! or SIGKILL as a crash) and started again on the same data directory and
//! ports while a subscription is live — the subscriber gets every number a
//! device published exactly once and in order: before the restart, right
//! after it (its client typically still reconnecting: from the stream's
//! history, resuming at the last sequence seen + 1) and after it is
//! connected again. `resume.rs` proves the same for a cut socket;
//! `refused.rs` that a revoked token ends the stream instead.

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
