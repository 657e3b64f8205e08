//! Flow control: a subscriber slower than its messages loses none. Its
//! queue holds [`LiveOptions::buffer`] messages; when it is full the
//! connection unsubscribes on the server and, once the reader has drained
//! half of it, subscribes again from the last sequence it yielded + 1 — so
//! a reader that stops for a while, and a replay of a backlog many times
//! the buffer read slowly, both get every number once and in order instead
//! of ending with `SlowConsumer`.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_client::{LiveOptions, Options, SubscribeOptions, Subscription};

use crate::common::{SITE, Stack, WAIT, next};

/// The topic the device counts on.
const TOPIC: &str = "sdk/backlog";

/// How many numbers: ten times the buffer.
const COUNT: u32 = 200;

/// Messages a subscription holds.
const BUFFER: usize = 20;

/// Reads `COUNT` numbers, pausing `every` so many for `pause` (a slow
/// consumer); asserts each is a message, not an error.
async fn numbers(sub: &mut Subscription, every: u32, pause: Duration) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < COUNT as usize {
        let m = next(sub, "the next number").await.unwrap_or_else(|e| {
            panic!(
                "a message, not an error, after {} numbers: {e:?}",
                got.len()
            )
        });
        assert!(!m.missed_before, "nothing was dropped by retention");
        got.push(m.text().expect("text").parse::<u32>().expect("a number"));
        if u32::try_from(got.len()).is_ok_and(|n| n.is_multiple_of(every)) {
            tokio::time::sleep(pause).await;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_slower_than_its_messages_or_a_replay_loses_none() {
    let stack = Stack::start_with(Options {
        live: LiveOptions {
            buffer: BUFFER,
            ..LiveOptions::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = stack.device("sdk-backlog", &[TOPIC], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let live = stack.admin.live();

    // A reader that stops while ten buffers' worth arrive.
    let mut stopped = live.subscribe(SITE, TOPIC);
    let start = tokio::time::timeout(WAIT, stopped.confirmed())
        .await
        .expect("confirmed in time")
        .expect("confirmed")
        .from_sequence;
    for n in 1..=COUNT {
        device.publish1(TOPIC, false, n.to_string()).await;
    }
    plantd_testkit::eventually(WAIT, "the reader that stopped is held back", || {
        let held = stopped.is_held();
        async move { held.then_some(()) }
    })
    .await;
    // A replay of the whole backlog, read slowly.
    let mut replay = live.subscribe_with(
        SITE,
        TOPIC,
        SubscribeOptions {
            from_sequence: Some(start),
        },
    );
    assert_eq!(
        numbers(&mut replay, 10, Duration::from_millis(20)).await,
        (1..=COUNT).collect::<Vec<_>>(),
        "the replay, read slowly"
    );
    assert_eq!(
        numbers(&mut stopped, COUNT, Duration::ZERO).await,
        (1..=COUNT).collect::<Vec<_>>(),
        "the reader that stopped"
    );
    // Held back and resumed: confirmed more than once.
    let latest = next(&mut stopped.confirmations(), "the latest confirmation").await;
    assert!(latest.count >= 2, "{latest:?}");
    assert!(!stopped.is_held() && !replay.is_held());
    // Nothing more: no repeat queued behind.
    for sub in [&mut stopped, &mut replay] {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sub.next())
                .await
                .is_err(),
            "a message after the last number"
        );
    }
}
