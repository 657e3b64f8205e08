//! `Live::tail`: a device logs over MQTT (`$plantd/log/<source>`); the
//! tail yields its lines parsed and filtered by source and level, and
//! across a cut socket every line once, in order. Confirmations: each
//! time the server confirms a tail or subscription, after reconnects too;
//! a refused one is never confirmed.

use std::time::Duration;

use futures::StreamExt as _;
use plantd_client::{Confirmation, LinkState, LiveOptions, LogLine, Options, Tail, TailOptions};

use crate::common::{SITE, Stack, WAIT, next, until};

/// The next line the tail yields.
async fn line(tail: &mut Tail, what: &str) -> LogLine {
    next(tail, what).await.expect("a log line, not an error")
}

/// The next confirmation.
async fn confirmation(
    confirmations: &mut (impl futures::Stream<Item = Confirmation> + Unpin),
    what: &str,
) -> Confirmation {
    next(confirmations, what).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_yields_parsed_filtered_lines_and_every_one_once_in_order_across_a_cut_socket() {
    // A reconnect waits 0.5-1 s, long enough for the device to log while
    // the client is away.
    let stack = Stack::start_with(Options {
        live: LiveOptions {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            ..LiveOptions::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = stack.device("sdk-logger", &["$plantd/log/#"], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let live = stack.admin.live();
    let mut states = live.states();
    let mut tail = live.tail(
        SITE,
        TailOptions {
            source: Some("sdk-pump/*".to_owned()),
            level: Some("warn".to_owned()),
            ..TailOptions::default()
        },
    );
    let mut confirmations = tail.confirmations();
    let first = confirmation(&mut confirmations, "the tail is confirmed").await;
    assert_eq!(first.count, 1);
    assert!(!first.missed);
    assert!(first.from_sequence >= 1, "a sequenced tail: {first:?}");
    assert_eq!(tail.confirmed().await, Some(first));

    // Confirmed: from here on nothing logged is missed.
    device
        .publish1("$plantd/log/sdk-pump/motor", false, "INFO below the level")
        .await;
    device
        .publish1("$plantd/log/sdk-other", false, "ERROR another source")
        .await;
    device
        .publish1(
            "$plantd/log/sdk-pump/motor",
            false,
            r#"{"level":"error","msg":"tail 1","temp":95}"#,
        )
        .await;
    let one = line(&mut tail, "line 1").await;
    assert_eq!(
        (
            one.message.as_str(),
            one.level.as_str(),
            one.source.as_str()
        ),
        ("tail 1", "error", "sdk-pump/motor")
    );
    assert_eq!(one.format, "json");
    assert_eq!(one.fields["temp"], 95);
    assert_eq!(one.site, SITE);
    assert_eq!(one.stream, "PLANTD_LOGS");
    assert!(
        one.sequence >= first.from_sequence,
        "{one:?} after {first:?}"
    );

    for n in 2..=4 {
        device
            .publish1(
                "$plantd/log/sdk-pump/motor",
                false,
                format!("WARN tail {n}"),
            )
            .await;
    }
    let mut got = vec![one.clone()];
    while got.len() < 4 {
        got.push(line(&mut tail, "lines 2-4").await);
    }
    // The network drops the socket; the device goes on logging.
    live.force_reconnect();
    until(&mut states, LinkState::Reconnecting).await;
    for n in 5..=9 {
        device
            .publish1(
                "$plantd/log/sdk-pump/valve",
                false,
                format!("ERROR tail {n}"),
            )
            .await;
    }
    until(&mut states, LinkState::Connected).await;
    let again = confirmation(&mut confirmations, "the tail is confirmed again").await;
    assert_eq!(again.count, 2);
    assert_eq!(
        again.from_sequence,
        got[3].sequence + 1,
        "resumed after the last line yielded"
    );
    for n in 10..=12 {
        device
            .publish1(
                "$plantd/log/sdk-pump/valve",
                false,
                format!("WARN tail {n}"),
            )
            .await;
    }
    while got.len() < 12 {
        got.push(line(&mut tail, "lines 5-12").await);
    }
    let messages: Vec<&str> = got.iter().map(|l| l.message.as_str()).collect();
    let want: Vec<String> = (1..=12).map(|n| format!("tail {n}")).collect();
    assert_eq!(
        messages,
        want.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        got.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "in stream order"
    );
    assert_eq!(got[11].level, "warn");
    // Nothing more: no repeats queued behind.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), tail.next())
            .await
            .is_err(),
        "a line after the last one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_confirmed_before_its_messages_and_a_refused_one_never() {
    let stack = Stack::start().await;
    let (id, token) = stack.device("sdk-confirm", &["sdk/confirm/#"], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let live = stack.admin.live();
    let mut sub = live.subscribe(SITE, "sdk/confirm/#");
    let confirmed = tokio::time::timeout(WAIT, sub.confirmed())
        .await
        .expect("confirmed in time")
        .expect("confirmed, not ended");
    assert_eq!(confirmed.count, 1);
    device.publish1("sdk/confirm/a", false, "after").await;
    let m = next(&mut sub, "the message after the confirmation")
        .await
        .expect("a message");
    assert_eq!(m.text(), Some("after"));
    assert!(m.sequence >= confirmed.from_sequence);

    // A site the caller cannot read: refused, so never confirmed.
    let mut refused = live.subscribe("no-such-site", "sdk/#");
    let never = tokio::time::timeout(WAIT, refused.confirmed())
        .await
        .expect("the refusal in time");
    assert_eq!(never, None);
    let e = next(&mut refused, "the refusal")
        .await
        .expect_err("an error, not a message");
    assert!(
        matches!(e, plantd_client::Error::Live { .. }),
        "a typed refusal: {e:?}"
    );
    // A refused tail likewise: a bad level is the server's bad_request.
    let mut bad = live.tail(
        SITE,
        TailOptions {
            level: Some("loud".to_owned()),
            ..TailOptions::default()
        },
    );
    assert_eq!(bad.confirmed().await, None);
    let e = next(&mut bad, "the refused tail")
        .await
        .expect_err("an error, not a line");
    assert!(
        matches!(&e, plantd_client::Error::Live { code, .. } if code == "bad_request"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_whose_reader_falls_behind_is_paced_and_loses_no_line() {
    let stack = Stack::start_with(Options {
        live: LiveOptions {
            buffer: 2,
            ..LiveOptions::default()
        },
        ..Options::default()
    })
    .await;
    let (id, token) = stack.device("sdk-chatty", &["$plantd/log/#"], &[]).await;
    let mut device = stack.mqtt(&id, &token).await;
    let mut tail = stack.admin.live().tail(SITE, TailOptions::default());
    let mut confirmations = tail.confirmations();
    confirmation(&mut confirmations, "the tail is confirmed").await;
    // Nobody reads while five lines come: the third finds the buffer full
    // and the tail is held back on the server, not ended.
    for n in 1..=5 {
        device
            .publish1("$plantd/log/sdk-chatty", false, format!("INFO chatty {n}"))
            .await;
    }
    plantd_testkit::eventually(WAIT, "the tail is held back", || {
        let held = tail.is_held();
        async move { held.then_some(()) }
    })
    .await;
    for n in 1..=5 {
        let got = line(&mut tail, &format!("line {n}")).await;
        assert_eq!(got.message, format!("chatty {n}"));
    }
    // Resumed after the pause: confirmed again, from line 3.
    let again = confirmation(&mut confirmations, "the tail is confirmed again").await;
    assert!(again.count >= 2, "{again:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), tail.next())
            .await
            .is_err(),
        "a line after the fifth"
    );
}
