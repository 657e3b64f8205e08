//! The log index against a real nats-server: hydrated from `PLANTD_LOGS`
//! at start, kept live, queried with the filter language; a malformed line
//! stays queryable as text; counts over time for charts.

use std::sync::Arc;
use std::time::Duration;

use plantd_logger::{
    Direction, GroupLabel, IndexSettings, Level, LogIndex, LogQuery, StatsFunction, StatsQuery,
    follow, parse_filter,
};
use plantd_testkit::{Nats, eventually};
use time::OffsetDateTime;

async fn publish(js: &async_nats::jetstream::Context, subject: &str, line: &str) {
    js.publish(subject.to_owned(), line.to_owned().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

#[tokio::test]
async fn hydrates_from_the_stream_then_follows_it_live() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for i in 0..20 {
        publish(
            &js,
            "plantd.plant1.log.line1.plc",
            &format!(
                r#"{{"level":"info","msg":"cycle {i}","temp":{}}}"#,
                60 + i * 2
            ),
        )
        .await;
    }
    publish(
        &js,
        "plantd.plant1.log.line1.plc",
        "{\"level\":\"error\",\"msg\":\"cut",
    )
    .await;
    publish(&js, "plantd.plant2.log.gw", "ERROR uplink lost").await;

    let index = Arc::new(LogIndex::new(IndexSettings::default()));
    let task = follow(index.clone(), js.clone());
    eventually(Duration::from_secs(20), "22 lines hydrated", || async {
        (index.len() == 22 && index.stats().hydrated).then_some(())
    })
    .await;

    let q = |filter: &str| LogQuery {
        sites: Some(vec!["plant1".into()]),
        filter: parse_filter(filter).expect("filter"),
        limit: 100,
        ..LogQuery::default()
    };
    let hot = index.query(&q("| temp > 90"));
    assert_eq!(hot.records.len(), 4, "temps 92..98");
    assert!(
        hot.records
            .iter()
            .all(|r| &*r.site == "plant1" && &*r.source == "line1/plc")
    );
    // The malformed line: kept whole as text, found by its text.
    let cut = index.query(&q(r#"|= "cut""#));
    assert_eq!(cut.records.len(), 1);
    assert!(cut.records[0].parse_error.is_some());
    assert_eq!(cut.records[0].message, "{\"level\":\"error\",\"msg\":\"cut");
    // Another site's line is never in plant1's answers.
    assert!(index.query(&q(r#"|= "uplink""#)).records.is_empty());

    // Live: a new line shows up without a restart.
    publish(&js, "plantd.plant1.log.line1.plc", "WARN overheat at 99C").await;
    let live = eventually(Duration::from_secs(20), "the live line", || async {
        let p = index.query(&q(r#"|= "overheat""#));
        (p.records.len() == 1).then_some(p)
    })
    .await;
    assert_eq!(live.records[0].level, Level::Warn);

    // Counts over time, per level, for a chart.
    let now = OffsetDateTime::now_utc();
    let series = index
        .stats_over_time(&StatsQuery {
            sites: Some(vec!["plant1".into()]),
            source: None,
            min_level: None,
            filter: parse_filter("").expect("all"),
            from: now - time::Duration::minutes(5),
            to: now + time::Duration::minutes(1),
            step: time::Duration::minutes(1),
            by: vec![GroupLabel::Level],
            function: StatsFunction::CountOverTime,
        })
        .expect("stats");
    let total = |level: &str| -> f64 {
        series
            .iter()
            .filter(|s| s.labels["level"] == level)
            .flat_map(|s| s.points.iter().map(|p| p.value))
            .sum()
    };
    // The malformed line has no level it could read: info.
    assert_eq!(
        (total("info"), total("error"), total("warn")),
        (21.0, 0.0, 1.0)
    );
    assert!(series.iter().all(|s| s.points.len() == 6));

    // A second index started now hydrates the same lines.
    task.abort();
    let again = Arc::new(LogIndex::new(IndexSettings::default()));
    let task = follow(again.clone(), js.clone());
    eventually(
        Duration::from_secs(20),
        "23 lines hydrated again",
        || async { (again.len() == 23).then_some(()) },
    )
    .await;
    let forward = again.query(&LogQuery {
        direction: Direction::Forward,
        limit: 1,
        ..LogQuery::default()
    });
    assert_eq!(forward.records[0].sequence, 1);
    assert!(forward.next_cursor.is_some());
    task.abort();
}

#[tokio::test]
async fn a_recreated_stream_is_read_again_from_its_start() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    for i in 0..5 {
        publish(&js, "plantd.plant1.log.a", &format!("INFO old {i}")).await;
    }
    let index = Arc::new(LogIndex::new(IndexSettings::default()));
    let task = follow(index.clone(), js.clone());
    eventually(Duration::from_secs(20), "5 old lines", || async {
        (index.len() == 5).then_some(())
    })
    .await;
    js.delete_stream(plantd_shared::streams::LOGS)
        .await
        .expect("delete");
    plantd_shared::streams::ensure(&js, &plantd_shared::streams::Settings::default())
        .await
        .expect("recreate");
    publish(&js, "plantd.plant1.log.a", "INFO new 0").await;
    let page = eventually(Duration::from_secs(30), "only the new line", || async {
        let p = index.query(&LogQuery {
            limit: 10,
            ..LogQuery::default()
        });
        (p.records.len() == 1 && p.records[0].message == "new 0").then_some(p)
    })
    .await;
    assert_eq!(page.records[0].sequence, 1);
    task.abort();
}

/// A logger bound to the trigger that feeds the index: every line is in the
/// index once, in stream order — the old ones hydrated by the follower,
/// the new ones brought by the logger — and when a second host's logger
/// takes some batches, the follower fills the gaps they leave.
#[tokio::test]
async fn a_feeding_logger_and_the_follower_leave_no_gap() {
    use plantd_logger::Logger;
    use plantd_trigger::{ConsumerSettings, Trigger};

    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let subject = "plantd.plant1.log.line1.plc";
    for i in 1..=20 {
        publish(&js, subject, &format!("INFO old {i}")).await;
    }
    let settings = ConsumerSettings {
        batch_size: 5,
        max_wait: Duration::from_millis(20),
        ..plantd_logger::consumer_settings()
    };
    let index = Arc::new(LogIndex::new(IndexSettings::default()));
    let task = follow(index.clone(), js.clone());
    let mut here = Trigger::new(js.clone());
    here.bind(
        plantd_logger::FUNCTION,
        plantd_shared::streams::LOGS,
        Arc::new(Logger::new(0).with_index(index.clone())),
        settings.clone(),
    )
    .await
    .expect("bind");
    let in_order = |n: u64| {
        let page = index.query(&LogQuery {
            direction: Direction::Forward,
            limit: 1000,
            ..LogQuery::default()
        });
        page.records.iter().map(|r| r.sequence).collect::<Vec<_>>() == (1..=n).collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(20), "20 old lines", || async {
        (in_order(20) && index.stats().hydrated).then_some(())
    })
    .await;

    // New lines: the logger brings them.
    let fed_before = index.stats().fed;
    for i in 21..=40 {
        publish(&js, subject, &format!("INFO new {i}")).await;
    }
    eventually(Duration::from_secs(20), "40 lines in order", || async {
        in_order(40).then_some(())
    })
    .await;
    assert!(
        index.stats().fed > fed_before,
        "the logger fed new lines: {:?}",
        index.stats()
    );

    // A second host shares the logger's consumer: the batches it takes
    // never reach this index through the logger; the follower reads them.
    let mut there = Trigger::new(js.clone());
    there
        .bind(
            plantd_logger::FUNCTION,
            plantd_shared::streams::LOGS,
            Arc::new(Logger::new(0)),
            settings,
        )
        .await
        .expect("bind the second host");
    for i in 41..=140 {
        publish(&js, subject, &format!("INFO shared {i}")).await;
    }
    eventually(Duration::from_secs(30), "140 lines in order", || async {
        in_order(140).then_some(())
    })
    .await;
    there.shutdown().await;
    here.shutdown().await;
    task.abort();
}
