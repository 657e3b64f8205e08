//! `plantd functions` killed with SIGKILL at pseudo-random points of a run
//! and started again, over and over: the per-minute log aggregates, the
//! alert transitions in `PLANTD_ALERTS` and the webhook notifications each
//! happen exactly once — compared with a reference the test computes from
//! what it published.
//!
//! The run publishes a threshold crossing, then 40 log lines, and waits
//! for the crossing's record before the next one (so the reference does
//! not depend on how items were batched); meanwhile a killer task kills
//! the process every 150–650 ms (seeded, the seed is printed) and starts
//! it again. The run goes on until the host was killed at least five
//! times. A short `ack_wait` makes JetStream hand a killed host's items
//! to its successor within a second.

use crate::common;

use common::{Killer, Rng, channel_key_file, nats_with_site};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream;
use plantd_alerts::notify::Channels;
use plantd_alerts::notify::channel::ChannelSpec;
use plantd_alerts::{AlertRecord, AlertState, RecordKind, Rule, Stores};
use plantd_shared::streams;
use plantd_testkit::eventually;
use plantd_testkit::wait::consumer_backlog;
use plantd_testkit::webhook::Receiver;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const ORG: &str = "acme";
const SITE: &str = "plant1";
const SECRET: &str = "a crash test secret, 32 chars!!!";
/// Crossings at least (the run goes on until the host was killed
/// [`KILLS`] times).
const CROSSINGS: usize = 12;
/// Kills at least.
const KILLS: u32 = 5;
const LINES_PER_CROSSING: usize = 40;
const WAIT: Duration = Duration::from_secs(90);
/// The minute every log line claims (its own `time`), so the aggregate
/// key is known.
const MINUTE: &str = "2026-12-06T10:00:00Z";

/// Every record in `PLANTD_ALERTS`, in order.
async fn records(js: &jetstream::Context) -> Vec<AlertRecord> {
    let Ok(mut stream) = js.get_stream(streams::ALERTS).await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for seq in 1..=info.state.last_sequence {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&msg.payload).expect("an alert record"));
        }
    }
    out
}

/// Pending plus unacknowledged items of every consumer of the run.
async fn backlog(js: &jetstream::Context) -> Option<u64> {
    let mut total = 0;
    for (stream, durable) in [
        (streams::LOGS, "logger_PLANTD_LOGS"),
        (streams::LOGS, "alerts_PLANTD_LOGS"),
        (streams::TELEMETRY, "alerts_PLANTD_TELEMETRY"),
        (streams::ALERTS, "notifier_PLANTD_ALERTS"),
    ] {
        total += consumer_backlog(js, stream, durable).await?;
    }
    Some(total)
}

#[tokio::test]
async fn a_host_killed_at_random_points_still_does_everything_exactly_once() {
    let seed = Rng::run_seed();
    let (nats, js) = nats_with_site(SITE, ORG).await;
    let receiver = Receiver::start().await;
    let spec: ChannelSpec = serde_json::from_value(serde_json::json!({
        "webhook": { "url": receiver.url(), "secret": SECRET, "timeout_ms": 2000 }
    }))
    .expect("a channel spec");
    // Sealed with the key the hosts read (PLANTD_CHANNEL_KEY_FILE).
    let keys = plantd_alerts::notify::keys::open_file(&channel_key_file()).expect("channel key");
    Channels::open(&js, std::sync::Arc::new(keys))
        .await
        .expect("channels")
        .put(&spec.into_channel(ORG, "ops", None).expect("a channel"))
        .await
        .expect("store the channel");
    let rule = Rule::from_json(
        br#"{"id":"hot","name":"Line 1 too hot","severity":"critical","notify":["ops"],
            "condition":{"kind":"threshold","topic":"line1/temp","op":">","value":50}}"#,
    )
    .expect("a rule");
    Stores::open(&js)
        .await
        .expect("alert stores")
        .put_rule(ORG, &rule)
        .await
        .expect("store the rule");

    // The killer: kill, start again, wait a pseudo-random while, repeat —
    // until told to stop; then it leaves one host running.
    let killer = Killer::start(&nats.url(), &[], seed);

    let levels = ["error", "warn", "info", "debug"];
    let mut expected_counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut crossings = 0;
    while crossings < CROSSINGS || killer.kills() < KILLS {
        let i = crossings;
        crossings += 1;
        let value = if i % 2 == 0 { "90" } else { "10" };
        js.publish("plantd.plant1.up.line1.temp", value.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        for n in 0..LINES_PER_CROSSING {
            let level = levels[(i * LINES_PER_CROSSING + n) % levels.len()];
            let source = if n % 3 == 0 { "pump" } else { "press" };
            let line = format!(
                r#"{{"time":"2026-12-06T10:00:{:02}Z","level":"{level}","msg":"cycle {i} step {n}"}}"#,
                n % 60
            );
            js.publish(format!("plantd.plant1.log.{source}"), line.into())
                .await
                .expect("publish")
                .await
                .expect("stored");
            *expected_counts
                .entry((source.to_owned(), level.to_owned()))
                .or_default() += 1;
        }
        eventually(WAIT, &format!("alert record {}", i + 1), || async {
            (records(&js).await.len() > i).then_some(())
        })
        .await;
    }
    let (mut host, kills) = killer.stop().await;
    assert!(kills >= KILLS, "the run killed the host only {kills} times");

    // Quiet: every consumer has handled everything.
    eventually(WAIT, "every consumer caught up", || async {
        (backlog(&js).await == Some(0)).then_some(())
    })
    .await;

    // Alert transitions: exactly one per crossing, alternating.
    let records = records(&js).await;
    let transitions: Vec<(AlertState, AlertState)> = records
        .iter()
        .filter(|r| r.kind == RecordKind::Transition)
        .map(|r| (r.from, r.to))
        .collect();
    let want: Vec<(AlertState, AlertState)> = (0..crossings)
        .map(|i| {
            if i % 2 == 0 {
                (AlertState::Inactive, AlertState::Firing)
            } else {
                (AlertState::Firing, AlertState::Inactive)
            }
        })
        .collect();
    assert_eq!(transitions, want, "seed {seed}, {kills} kills");
    let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "a record id stored twice");

    // Notifications: one signed POST per record.
    let delivered = eventually(WAIT, "every record notified", || async {
        let d = receiver.delivered();
        (d.len() >= records.len()).then_some(d)
    })
    .await;
    let notified: Vec<String> = delivered
        .iter()
        .map(|r| {
            assert!(r.verify(SECRET), "a notification with a bad signature");
            r.header("plantd-notification-id")
                .expect("a notification id")
                .to_owned()
        })
        .collect();
    // What a receiver sees after dropping repeats by Plantd-Notification-Id
    // (docs/operations.md: a kill between a channel's 2xx and its marker
    // sends that one notification again, under the same id): every record
    // exactly once. A repeat is allowed only for that window — at most one
    // per kill — never a record notified under two ids or not at all.
    let distinct: BTreeSet<&String> = notified.iter().collect();
    assert_eq!(
        distinct.len(),
        records.len(),
        "every record notified exactly once after de-duplication (seed {seed}): {notified:?}"
    );
    let repeats = notified.len() - distinct.len();
    assert!(
        repeats <= kills as usize,
        "{repeats} repeated notifications for {kills} kills (seed {seed}): {notified:?}"
    );

    // Aggregates: every line counted once, by source and level.
    let minute = OffsetDateTime::parse(MINUTE, &Rfc3339).expect("minute");
    let aggregates = plantd_logger::Aggregates::open(&js, Default::default())
        .await
        .expect("aggregates");
    let got = aggregates
        .read_range(SITE, minute, minute + time::Duration::minutes(1))
        .await
        .expect("read the minute");
    assert_eq!(got.len(), 1, "one minute of aggregates");
    let counts: BTreeMap<(String, String), u64> = got[0]
        .counts
        .iter()
        .map(|c| ((c.source.clone(), c.level.as_str().to_owned()), c.count))
        .collect();
    assert_eq!(counts, expected_counts, "seed {seed}, {kills} kills");
    assert_eq!(got[0].total, (crossings * LINES_PER_CROSSING) as u64);
    let _ = host.kill().await;
}
