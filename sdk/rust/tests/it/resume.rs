//! Across a lost socket the subscriber gets every number exactly once and
//! in order: the device keeps publishing while the client is away, and the
//! resubscription starts at the last sequence seen + 1.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_client::{LinkState, LiveOptions, Options};

use crate::common::{SITE, Stack, next, until};

/// The next number the subscription yields (warm-up messages skipped).
async fn number(sub: &mut plantd_client::Subscription) -> u32 {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_cut_socket_every_number_arrives_exactly_once_in_order() {
    // A reconnect waits 0.5-1 s, long enough for the device to publish
    // while the client is away.
    let stack = Stack::start_with(Options {
        live: LiveOptions {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            ..LiveOptions::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = stack.device("sdk-counter", &["sdk/#"], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let live = stack.admin.live();
    let mut states = live.states();
    let mut sub = live.subscribe(SITE, "sdk/count");
    until(&mut states, LinkState::Connected).await;
    let mut warm = false;
    for i in 0..15 {
        device
            .publish1("sdk/count", false, format!("warmup-{i}"))
            .await;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
            m.expect("a message");
            warm = true;
            break;
        }
    }
    assert!(warm, "the subscription yields the device's publish");

    let mut got = Vec::new();
    for n in 1..=5 {
        device.publish1("sdk/count", false, n.to_string()).await;
    }
    while got.len() < 5 {
        got.push(number(&mut sub).await);
    }
    // The network drops the socket; the device goes on publishing.
    live.force_reconnect();
    until(&mut states, LinkState::Reconnecting).await;
    for n in 6..=12 {
        device.publish1("sdk/count", false, n.to_string()).await;
    }
    until(&mut states, LinkState::Connected).await;
    for n in 13..=15 {
        device.publish1("sdk/count", false, n.to_string()).await;
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
}
