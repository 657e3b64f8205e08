//! The logger on the trigger against a real nats-server: lines of every
//! format published to `PLANTD_LOGS` come out parsed, a malformed one is
//! kept as text with its parse error, and a redelivery does not add a
//! second record.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use plantd_logger::{Format, Level, Logger};
use plantd_shared::{headers, streams};
use plantd_testkit::{Nats, eventually};
use plantd_trigger::{ConsumerSettings, Handler, Item, Trigger};

#[tokio::test]
async fn lines_of_every_format_are_parsed_through_the_trigger() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let lines: [(&str, &[u8]); 5] = [
        (
            "plantd.site1.log.line1.plc",
            br#"{"level":"error","msg":"overheat","temp":81.5}"#,
        ),
        (
            "plantd.site1.log.line1.plc",
            br#"level=warn msg="valve stuck" valve=3"#,
        ),
        (
            "plantd.site2.log.gateway",
            b"2026-12-06T08:00:00Z ERROR uplink lost",
        ),
        (
            "plantd.site2.log.gateway",
            b"{\"level\":\"error\",\"msg\":\"cut",
        ),
        ("plantd.site2.log.gateway", b"just a line"),
    ];
    for (subject, payload) in lines {
        let mut h = HeaderMap::new();
        h.insert(headers::user_property("level").as_str(), "debug");
        js.publish_with_headers(subject, h, Bytes::from_static(payload))
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let logger = Arc::new(Logger::new(1000));
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind(
            plantd_logger::FUNCTION,
            streams::LOGS,
            logger.clone(),
            ConsumerSettings::default(),
        )
        .await
        .expect("bind");
    assert_eq!(durable, "logger_PLANTD_LOGS");
    let records = eventually(Duration::from_secs(20), "5 parsed records", || async {
        let r = logger.records();
        (r.len() == 5).then_some(r)
    })
    .await;

    assert_eq!(records[0].format, Format::Json);
    assert_eq!(
        (&*records[0].site, &*records[0].source),
        ("site1", "line1/plc")
    );
    assert_eq!(
        (records[0].level, records[0].message.as_str()),
        (Level::Error, "overheat")
    );
    assert_eq!(records[0].fields["temp"], serde_json::json!(81.5));
    assert_eq!(records[1].format, Format::Logfmt);
    assert_eq!(
        (records[1].level, records[1].message.as_str()),
        (Level::Warn, "valve stuck")
    );
    assert_eq!(records[2].format, Format::Text);
    assert_eq!(
        (records[2].level, records[2].message.as_str()),
        (Level::Error, "uplink lost")
    );
    assert_eq!(&*records[2].source, "gateway");
    // Malformed: kept whole, flagged, level from the MQTT user property.
    assert_eq!(records[3].format, Format::Text);
    assert_eq!(records[3].message, "{\"level\":\"error\",\"msg\":\"cut");
    assert!(
        records[3]
            .parse_error
            .as_deref()
            .unwrap_or("")
            .starts_with("invalid JSON"),
        "{:?}",
        records[3].parse_error
    );
    assert_eq!(records[3].level, Level::Debug);
    assert_eq!(
        (records[4].level, records[4].parse_error.as_deref()),
        (Level::Debug, None)
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!((&*r.stream, r.sequence), (streams::LOGS, i as u64 + 1));
    }
    trigger.shutdown().await;

    // A redelivery of an item already handled replaces its record.
    let again = Item {
        stream: streams::LOGS.into(),
        sequence: 1,
        subject: "plantd.site1.log.line1.plc".into(),
        headers: HeaderMap::new(),
        payload: Bytes::from_static(br#"{"level":"error","msg":"overheat","temp":81.5}"#),
        published: records[0].time,
        delivered: 2,
        replay: None,
    };
    assert!(logger.handle(&[again]).await.is_success());
    assert_eq!(logger.records().len(), 5);
}
