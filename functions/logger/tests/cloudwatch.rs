//! CloudWatch Logs forwarding against moto's CloudWatch Logs: a batch of
//! more than 10,000 records, out of time order and spread over days, is
//! written in full — sorted within each `PutLogEvents` as CloudWatch
//! demands, records outside CloudWatch's accepted window kept (stamped
//! with the forwarding time, their own time inside the JSON), one group
//! per site and one stream per source, created on first use.

use std::collections::BTreeMap;

use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use plantd_logger::cloudwatch::{CloudWatch, MAX_EVENTS};
use plantd_logger::{Format, Level, LogRecord};
use plantd_testkit::Moto;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

const PREFIX: &str = "/plantd/test/sites";

async fn client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let config = plantd_shared::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    aws_sdk_cloudwatchlogs::Client::new(&config)
}

fn record(sequence: u64, site: &str, source: &str, time: OffsetDateTime) -> LogRecord {
    LogRecord {
        stream: "PLANTD_LOGS".into(),
        sequence,
        time,
        site: site.into(),
        source: source.into(),
        level: Level::Warn,
        message: format!("line {sequence}"),
        fields: serde_json::Map::new(),
        format: Format::Text,
        parse_error: None,
    }
}

/// Every event of `group`/`stream`, oldest first: (timestamp, record JSON).
async fn all_events(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Vec<(i64, Value)> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "GetLogEvents {group} {stream}: {}",
                    aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
                )
            });
        if out.events().is_empty() {
            return events;
        }
        for e in out.events() {
            events.push((
                e.timestamp().unwrap_or_default(),
                serde_json::from_str(e.message().unwrap_or_default()).expect("a JSON record"),
            ));
        }
        let next = out.next_forward_token().map(str::to_owned);
        if next.is_none() || next == token {
            return events;
        }
        token = next;
    }
}

#[tokio::test]
async fn more_than_ten_thousand_records_spread_over_days_all_arrive() {
    plantd_testkit::init_tracing();
    let moto = Moto::start().await;
    let logs = client(&moto.endpoint()).await;
    let cloudwatch = CloudWatch::new(logs.clone(), PREFIX);
    let now = OffsetDateTime::now_utc();

    // Out of order, over three days, plus one too old and one too new for
    // CloudWatch; and a second source and a second site.
    let bulk = MAX_EVENTS + 50;
    let mut records: Vec<LogRecord> = (0..bulk)
        .map(|i| {
            let i = u64::try_from(i).expect("small");
            let back = Duration::minutes(i64::try_from((i * 7919) % (3 * 24 * 60)).expect("small"));
            record(i, "plant-1", "line1/plc", now - back)
        })
        .collect();
    let old = now - Duration::days(20);
    let ahead = now + Duration::hours(5);
    records.push(record(900_001, "plant-1", "line1/plc", old));
    records.push(record(900_002, "plant-1", "line1/plc", ahead));
    records.push(record(900_003, "plant-1", "line2/press", now));
    records.push(record(900_004, "plant-2", "line1/plc", now));

    let failures = cloudwatch.put_records(&records).await;
    assert!(failures.is_empty(), "{failures:?}");

    let line1 = all_events(&logs, &format!("{PREFIX}/plant-1"), "line1/plc").await;
    assert_eq!(line1.len(), bulk + 2, "every record, none rejected");
    let by_seq: BTreeMap<u64, &(i64, Value)> = line1
        .iter()
        .map(|e| (e.1["sequence"].as_u64().expect("a sequence"), e))
        .collect();
    assert_eq!(by_seq.len(), bulk + 2, "each once");
    // A record inside the window keeps its time as the event's timestamp.
    let some = by_seq.get(&5).expect("record 5");
    let own = records[5].time.unix_timestamp_nanos() / 1_000_000;
    assert_eq!(i128::from(some.0), own);
    // Outside the window: stamped when forwarded, its own time in the JSON.
    let forwarded = now.unix_timestamp_nanos() / 1_000_000;
    for (seq, time) in [(900_001, old), (900_002, ahead)] {
        let (ts, json) = by_seq.get(&seq).expect("kept");
        assert!(
            (i128::from(*ts) - forwarded).abs() < 60_000,
            "{seq} stamped now"
        );
        let own = OffsetDateTime::parse(
            json["time"].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339");
        assert_eq!(own, time);
    }
    let line2 = all_events(&logs, &format!("{PREFIX}/plant-1"), "line2/press").await;
    assert_eq!(line2.len(), 1);
    let site2 = all_events(&logs, &format!("{PREFIX}/plant-2"), "line1/plc").await;
    assert_eq!(site2.len(), 1);
    assert_eq!(site2[0].1["site"], "plant-2");
}
