//! A live subscription outlives its access token: `plantd up` issues
//! tokens that last [`TTL_SECS`] seconds, the proxy closes the socket
//! (1008 `token expired`) each time the subscriber's token runs out, and
//! the password session renews it (refresh-token rotation) and resumes
//! every subscription at the last sequence seen + 1 — while a device
//! publishes numbered messages across several expiries, the subscriber
//! gets every number exactly once and in order.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_client::{LinkState, LiveOptions, Options};

use crate::common::{SITE, Stack, next};

/// Access token lifetime of this stack, in seconds.
const TTL_SECS: u64 = 3;

/// The topic the device counts on.
const TOPIC: &str = "sdk/expiry";

/// How many numbers the device publishes, one per [`PACE`]: about three
/// token lifetimes.
const COUNT: u32 = 90;

/// The device's pace (its rate, not a synchronisation).
const PACE: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_stream_is_renewed_and_every_number_arrives_once_in_order() {
    let ttl = TTL_SECS.to_string();
    let stack = Stack::start_with_env(
        Options {
            live: LiveOptions {
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(200),
                ..LiveOptions::default()
            },
            ..Options::default()
        },
        &[("PLANTD_HTTP__ACCESS_TOKEN_TTL_SECS", ttl.as_str())],
    )
    .await;
    // The device's token is as short-lived; the edge lets a connection
    // run 30 s past it (clock-skew leeway), longer than this test.
    let (id, token) = stack.device("sdk-expiry", &[TOPIC], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let live = stack.admin.live();
    let mut states = live.states();
    let mut sub = live.subscribe(SITE, TOPIC);
    let first = tokio::time::timeout(crate::common::WAIT, sub.confirmed())
        .await
        .expect("confirmed in time")
        .expect("the subscription is confirmed");
    assert_eq!(first.count, 1);

    let publisher = tokio::spawn(async move {
        for n in 1..=COUNT {
            device.publish1(TOPIC, false, n.to_string()).await;
            tokio::time::sleep(PACE).await;
        }
        device
    });
    let mut got = Vec::new();
    while got.len() < COUNT as usize {
        let m = next(&mut sub, "the next number")
            .await
            .unwrap_or_else(|e| panic!("a message, not an error, after {got:?}: {e:?}"));
        assert!(!m.missed_before, "nothing was dropped by retention");
        got.push(m.text().expect("text").parse::<u32>().expect("a number"));
    }
    let _device = publisher.await.expect("the device published");
    assert_eq!(got, (1..=COUNT).collect::<Vec<_>>());
    // Nothing more: no repeat queued behind.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "a message after the last number"
    );

    // The socket really was closed and resumed (at least twice in about
    // three lifetimes), and the link never ended up refused.
    let latest = next(&mut sub.confirmations(), "the latest confirmation").await;
    assert!(
        latest.count >= 3,
        "the subscription was confirmed {} time(s) over {} token lifetimes: the token did not expire mid-stream",
        latest.count,
        COUNT as u64 * PACE.as_millis() as u64 / 1000 / TTL_SECS
    );
    let mut seen = Vec::new();
    while let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(50), states.next()).await {
        seen.push(s);
    }
    assert!(seen.contains(&LinkState::Reconnecting), "{seen:?}");
    assert!(!seen.contains(&LinkState::Refused), "{seen:?}");
    assert_eq!(live.state(), LinkState::Connected);
}
