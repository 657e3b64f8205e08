//! Per-minute aggregates against a real nats-server: exactly once when a
//! batch comes again (a redelivery, or a crash between the KV write and the
//! acknowledgement), when batches overlap, and when two loggers race on the
//! same key; through the trigger end to end.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use plantd_logger::aggregate::{AggregateSettings, Aggregates, MinuteAggregate, key};
use plantd_logger::{Level, Logger};
use plantd_shared::streams;
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{ConsumerSettings, Handler, Item, Trigger};
use time::OffsetDateTime;
use time::macros::datetime;

const MINUTE: OffsetDateTime = datetime!(2026-12-06 10:15:00 UTC);

fn item(sequence: u64, subject: &str, line: &str, second: i64) -> Item {
    Item {
        stream: streams::LOGS.into(),
        sequence,
        subject: subject.into(),
        headers: HeaderMap::new(),
        payload: Bytes::from(line.to_owned()),
        published: MINUTE + time::Duration::seconds(second),
        delivered: 1,
        replay: None,
    }
}

/// Ten lines of site1 in one minute (6 error overheats, 4 info starts) and
/// two of site2.
fn batch() -> Vec<Item> {
    let mut items = Vec::new();
    for i in 0..10u64 {
        let line = if i % 5 < 3 {
            format!("ERROR pump {i} overheat at {}C", 80 + i)
        } else {
            format!("motor {i} started")
        };
        items.push(item(i + 1, "plantd.site1.log.line1.plc", &line, i as i64));
    }
    items.push(item(11, "plantd.site2.log.gw", "WARN uplink lost", 1));
    items.push(item(12, "plantd.site2.log.gw", "WARN uplink lost", 2));
    items
}

async fn aggregate(agg: &Aggregates, site: &str) -> MinuteAggregate {
    let got = agg
        .read_range(site, MINUTE, MINUTE + time::Duration::minutes(1))
        .await
        .expect("read");
    assert_eq!(got.len(), 1, "{got:?}");
    got.into_iter().next().expect("one minute")
}

fn count(a: &MinuteAggregate, source: &str, level: Level) -> u64 {
    a.counts
        .iter()
        .find(|c| c.source == source && c.level == level)
        .map_or(0, |c| c.count)
}

#[tokio::test]
async fn a_batch_handled_twice_is_counted_once() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let agg = Aggregates::open(&js, AggregateSettings::default())
        .await
        .expect("bucket");
    let logger = Logger::new(0).with_aggregates(agg.clone());
    let items = batch();

    assert!(logger.handle(&items).await.is_success());
    let first = aggregate(&agg, "site1").await;
    assert_eq!(first.total, 10);
    assert_eq!(count(&first, "line1/plc", Level::Error), 6);
    assert_eq!(count(&first, "line1/plc", Level::Info), 4);
    assert_eq!(first.patterns[0].pattern, "pump <num> overheat at <num>C");
    assert_eq!(
        (first.patterns[0].count, first.patterns[0].level),
        (6, Level::Error)
    );
    assert_eq!(first.patterns[1].pattern, "motor <num> started");
    assert_eq!(aggregate(&agg, "site2").await.total, 2);

    // The trigger crashed after the KV write and before the ack: the same
    // items come again (one redelivered with a higher delivery count).
    let mut again = batch();
    for i in &mut again {
        i.delivered = 2;
    }
    assert!(logger.handle(&again).await.is_success());
    // And a later batch overlapping the first one.
    let mut overlap: Vec<Item> = batch().into_iter().skip(8).collect();
    overlap.push(item(
        13,
        "plantd.site1.log.line1.plc",
        "motor 9 started",
        30,
    ));
    assert!(logger.handle(&overlap).await.is_success());

    let after = aggregate(&agg, "site1").await;
    assert_eq!(after.total, 11, "only item 13 is new");
    assert_eq!(count(&after, "line1/plc", Level::Error), 6);
    assert_eq!(count(&after, "line1/plc", Level::Info), 5);
    assert_eq!(after.applied.0[streams::LOGS], vec![[1, 13]]);
    assert_eq!(aggregate(&agg, "site2").await.total, 2);
}

#[tokio::test]
async fn two_loggers_racing_on_one_key_count_each_item_once() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    // Two stores, as two processes would have (each remembers its own
    // last writes).
    let open = || Aggregates::open(&js, AggregateSettings::default());
    let agg = open().await.expect("bucket");
    let a = Logger::new(0).with_aggregates(open().await.expect("bucket"));
    let b = Logger::new(0).with_aggregates(open().await.expect("bucket"));
    let items = batch();
    let (first, second) = (&items[..7], &items[4..]);
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(a.handle(first));
        runs.push(b.handle(second));
    }
    for outcome in futures::future::join_all(runs).await {
        assert!(outcome.is_success());
    }
    assert_eq!(aggregate(&agg, "site1").await.total, 10);
    assert_eq!(aggregate(&agg, "site2").await.total, 2);
}

#[tokio::test]
async fn lines_through_the_trigger_land_in_their_minute() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let agg = Aggregates::open(&js, AggregateSettings::default())
        .await
        .expect("bucket");
    let now = OffsetDateTime::now_utc();
    for i in 0..50 {
        let ts = (MINUTE + time::Duration::seconds(i % 60))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("rfc3339");
        let line = format!(r#"{{"level":"warn","msg":"valve {i} stuck","ts":"{ts}"}}"#);
        js.publish("plantd.plant7.log.valves", line.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    js.publish("plantd.plant7.log.valves", "no time on this line".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let logger = Arc::new(Logger::new(0).with_aggregates(agg.clone()));
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            plantd_logger::FUNCTION,
            streams::LOGS,
            logger,
            ConsumerSettings::default(),
        )
        .await
        .expect("bind");
    let got = eventually(
        Duration::from_secs(20),
        "50 lines in the 10:15 aggregate",
        || async {
            let a = agg
                .read_range("plant7", MINUTE, MINUTE + time::Duration::minutes(1))
                .await
                .ok()?;
            a.first().filter(|a| a.total == 50).cloned()
        },
    )
    .await;
    assert_eq!(count(&got, "valves", Level::Warn), 50);
    assert_eq!(got.patterns.len(), 1);
    let current = eventually(
        Duration::from_secs(20),
        "the line without a time in the current minute",
        || async {
            agg.read_range("plant7", now, now + time::Duration::minutes(2))
                .await
                .ok()
                .filter(|a| a.iter().map(|a| a.total).sum::<u64>() == 1)
        },
    )
    .await;
    assert_eq!(current[0].patterns[0].pattern, "no time on this line");
    assert!(key("plant7", MINUTE).ends_with(".202612061015"));
    trigger.shutdown().await;
}
