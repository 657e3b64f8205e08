//! The logger's AWS path, proven rather than assumed: the real
//! `plantd-logger` binary, as built by this test run, runs under the
//! Lambda runtime API emulator of `cargo lambda watch --only-lambda-apis`
//! and receives SQS events — envelopes as `plantd-forwarder` writes them —
//! through the emulator's invoke endpoint (what `cargo lambda invoke
//! --data-file` does). A record that is not an envelope is the only one
//! listed in `batchItemFailures`; the parsed records are in CloudWatch Logs
//! (moto: `GetLogEvents`), in the site's group and the source's stream,
//! created on first use; the logger's per-minute aggregates (a real
//! nats-server) count each line once; a redelivered batch is not written
//! or counted twice.

use std::time::Duration;

use async_nats::HeaderMap;
use aws_sdk_cloudwatchlogs::config::{Credentials, Region};
use bytes::Bytes;
use plantd_logger::{AggregateSettings, Aggregates};
use plantd_shared::process::ManagedProcess;
use plantd_testkit::{LambdaWatch, Moto, Nats};
use plantd_trigger::Item;
use plantd_trigger::sqs::{Envelope, SqsBatchResponse};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The function name in the emulator: its invoke endpoint accepts only
/// names of the workspace's binaries.
const FUNCTION: &str = "plantd-logger";
const PREFIX: &str = "/plantd/test/sites";
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:plantd-test-logger";

fn item(sequence: u64, source: &str, payload: &str) -> Item {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("plant-1:j:{sequence}").as_str());
    Item {
        stream: "PLANTD_LOGS".into(),
        sequence,
        subject: format!("plantd.plant-1.log.{source}").into(),
        headers,
        payload: Bytes::from(payload.to_owned()),
        published: OffsetDateTime::now_utc(),
        delivered: 1,
        replay: None,
    }
}

/// An SQS event record as Lambda's event source mapping delivers it.
fn record(message_id: &str, body: &str, receive_count: u32) -> Value {
    json!({
        "messageId": message_id,
        "receiptHandle": format!("handle-{message_id}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": receive_count.to_string(),
            "SentTimestamp": "1765029600000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1765029600001"
        },
        "messageAttributes": {
            "plantd-stream": {"stringValue": "PLANTD_LOGS", "dataType": "String",
                              "stringListValues": [], "binaryListValues": []}
        },
        "md5OfBody": "0",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1"
    })
}

async fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let config = plantd_shared::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    aws_sdk_cloudwatchlogs::Client::new(&config)
}

/// The messages of `group`/`stream`, oldest first, as JSON.
async fn events(logs: &aws_sdk_cloudwatchlogs::Client, group: &str, stream: &str) -> Vec<Value> {
    let out = logs
        .get_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .start_from_head(true)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GetLogEvents {group} {stream}: {}",
                aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
            )
        });
    out.events()
        .iter()
        .map(|e| serde_json::from_str(e.message().unwrap_or_default()).expect("a JSON record"))
        .collect()
}

#[tokio::test]
async fn an_sqs_batch_is_parsed_into_cloudwatch_and_only_the_bad_record_fails() {
    plantd_testkit::init_tracing();
    let moto = Moto::start().await;
    let nats = Nats::start_with_streams().await;
    let emulator = LambdaWatch::start(env!("CARGO_MANIFEST_DIR")).await;
    let bin = std::env::var_os("PLANTD_LOGGER_BOOTSTRAP")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_plantd-logger").into());
    // A cluster's URL list, its first node down: the function connects
    // to the one that answers.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port();
    let urls = format!("nats://127.0.0.1:{down}, {}", nats.url());
    let mut cmd = emulator.function_command(bin, FUNCTION, &moto.endpoint());
    cmd.env("PLANTD_CLOUDWATCH_PREFIX", PREFIX)
        .env("PLANTD_CLOUDWATCH_RETENTION_DAYS", "30")
        .env("PLANTD_NATS_URL", urls);
    let _function = ManagedProcess::spawn(
        "plantd-logger (Lambda)",
        cmd,
        Duration::from_secs(60),
        |l| l.contains("logger serving SQS events through the Lambda runtime API"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let plain = Envelope::of(&item(11, "line1.plc", "ERROR motor 3 overheated")).to_json();
    let structured = Envelope::of(&item(
        12,
        "line1.plc",
        r#"{"level":"warn","msg":"temperature high","temp":81.5}"#,
    ))
    .to_json();
    let other_source = Envelope::of(&item(13, "line2.press", "level=info msg=started")).to_json();
    let event = json!({"Records": [
        record("msg-11", &plain, 1),
        record("msg-bad", "this is not an envelope", 1),
        record("msg-12", &structured, 1),
        record("msg-13", &other_source, 2),
    ]});

    let resp = emulator.invoke(FUNCTION, &event.to_string()).await;
    let answer: SqsBatchResponse =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert_eq!(answer.failed_ids(), ["msg-bad"], "{}", resp.text());
    assert_eq!(
        serde_json::from_slice::<Value>(&resp.body).expect("JSON"),
        json!({"batchItemFailures": [{"itemIdentifier": "msg-bad"}]})
    );

    let logs = logs_client(&moto.endpoint()).await;
    let group = format!("{PREFIX}/plant-1");
    let line1 = events(&logs, &group, "line1/plc").await;
    assert_eq!(line1.len(), 2, "{line1:#?}");
    let by_seq = |seq: u64| {
        line1
            .iter()
            .find(|e| e["sequence"] == seq)
            .unwrap_or_else(|| panic!("sequence {seq} in {line1:#?}"))
    };
    let e11 = by_seq(11);
    assert_eq!(
        (&e11["stream"], &e11["site"], &e11["source"], &e11["level"]),
        (
            &json!("PLANTD_LOGS"),
            &json!("plant-1"),
            &json!("line1/plc"),
            &json!("error")
        )
    );
    assert!(
        e11["message"]
            .as_str()
            .is_some_and(|m| m.contains("motor 3 overheated"))
    );
    let e12 = by_seq(12);
    assert_eq!(e12["level"], "warn");
    assert_eq!(e12["message"], "temperature high");
    assert_eq!(e12["fields"]["temp"], 81.5);
    assert_eq!(e12["format"], "json");
    let line2 = events(&logs, &group, "line2/press").await;
    assert_eq!(line2.len(), 1);
    assert_eq!(line2[0]["sequence"], 13);
    let groups = logs
        .describe_log_groups()
        .log_group_name_prefix(PREFIX)
        .send()
        .await
        .expect("DescribeLogGroups");
    let created = groups.log_groups().first().expect("the site's group");
    assert_eq!(created.log_group_name(), Some(group.as_str()));
    assert_eq!(created.retention_in_days(), Some(30));

    let aggregates = Aggregates::open(&nats.jetstream().await, AggregateSettings::default())
        .await
        .expect("plantd_log_aggregates");
    let counted = || async {
        let now = OffsetDateTime::now_utc();
        aggregates
            .read_range(
                "plant-1",
                now - time::Duration::minutes(30),
                now + time::Duration::minutes(2),
            )
            .await
            .expect("read the aggregates")
            .iter()
            .map(|m| m.total)
            .sum::<u64>()
    };
    assert_eq!(counted().await, 3, "each good line counted once");

    // SQS redelivers the good records (say the response was lost): they
    // are handled again without error and not written twice.
    let again = json!({"Records": [record("msg-11", &plain, 2), record("msg-12", &structured, 2)]});
    let resp = emulator.invoke(FUNCTION, &again.to_string()).await;
    let answer: SqsBatchResponse = serde_json::from_slice(&resp.body).expect("JSON");
    assert!(answer.batch_item_failures.is_empty(), "{}", resp.text());
    assert_eq!(events(&logs, &group, "line1/plc").await.len(), 2);
    assert_eq!(counted().await, 3, "and not counted twice");
}
