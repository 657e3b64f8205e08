//! The whole AWS event path, end to end with real parts: log lines
//! published to `PLANTD_LOGS` (nats-server) → the forwarder (the trigger's
//! consumer with `plantd_trigger::forward::Forwarder`) → the logger's SQS
//! queue (moto) → an SQS event built from the messages as the queue hands
//! them out → the `plantd-logger` binary under `cargo lambda watch` →
//! CloudWatch Logs (moto). The test plays the event source mapping: it
//! receives from the queue, invokes the function, and deletes what the
//! function did not report failed. A foreign message in the queue is the
//! only failure and the only message left; the forwarder's consumer has
//! acknowledged everything.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use plantd_shared::process::ManagedProcess;
use plantd_shared::streams;
use plantd_testkit::{LambdaWatch, Moto, Nats, eventually};
use plantd_trigger::forward::Forwarder;
use plantd_trigger::sqs::SqsBatchResponse;
use plantd_trigger::{ConsumerSettings, Trigger};
use serde_json::{Value, json};

const FUNCTION: &str = "plantd-logger";
const PREFIX: &str = "/plantd/e2e/sites";
const WAIT: Duration = Duration::from_secs(30);

/// SQS and CloudWatch Logs clients for `endpoint` (moto accepts any keys).
async fn clients(endpoint: &str) -> (aws_sdk_sqs::Client, aws_sdk_cloudwatchlogs::Client) {
    let config = plantd_shared::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    (
        aws_sdk_sqs::Client::new(&config),
        aws_sdk_cloudwatchlogs::Client::new(&config),
    )
}

#[tokio::test]
async fn log_lines_travel_forwarder_sqs_lambda_into_cloudwatch() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let moto = Moto::start().await;
    let (sqs, logs) = clients(&moto.endpoint()).await;
    let queue = sqs
        .create_queue()
        .queue_name("plantd-e2e-logger_PLANTD_LOGS")
        .attributes(QueueAttributeName::VisibilityTimeout, "120")
        .send()
        .await
        .expect("moto creates the queue");
    let url = queue.queue_url().expect("a URL").to_owned();

    // The function, as Lambda would run it.
    let emulator = LambdaWatch::start(env!("CARGO_MANIFEST_DIR")).await;
    let mut cmd = emulator.function_command(
        env!("CARGO_BIN_EXE_plantd-logger"),
        FUNCTION,
        &moto.endpoint(),
    );
    cmd.env("PLANTD_CLOUDWATCH_PREFIX", PREFIX);
    let _function = ManagedProcess::spawn("plantd-logger (Lambda)", cmd, WAIT, |l| {
        l.contains("logger serving SQS events through the Lambda runtime API")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The forwarder.
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind(
            "logger",
            streams::LOGS,
            Arc::new(Forwarder::new(sqs.clone(), url.clone())),
            ConsumerSettings {
                max_wait: Duration::from_millis(100),
                backoff: vec![Duration::from_millis(100)],
                watch_interval: Duration::from_millis(100),
                ..ConsumerSettings::default()
            },
        )
        .await
        .expect("bind");

    let lines = [
        "2026-12-06T14:00:00Z ERROR motor 3 overheated",
        r#"{"level":"warn","msg":"temperature high","temp":81.5}"#,
        "level=info msg=\"line restarted\" operator=kim",
    ];
    let mut sequences = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("e2e:{i}").as_str());
        let ack = js
            .publish_with_headers("plantd.plant-1.log.line1.plc", headers, (*line).into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        sequences.push(ack.sequence);
    }
    // Someone else's message in the queue.
    let foreign = sqs
        .send_message()
        .queue_url(&url)
        .message_body("not a plantd envelope")
        .send()
        .await
        .expect("send")
        .message_id()
        .expect("an id")
        .to_owned();

    // The event source mapping: receive, invoke, delete the successes.
    let received = std::sync::Mutex::new(BTreeMap::new());
    eventually(WAIT, "four messages in the queue", || {
        let received = &received;
        let (sqs, url) = (&sqs, &url);
        async move {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive");
            let mut got = received.lock().expect("lock");
            for m in out.messages() {
                got.insert(m.message_id().unwrap_or_default().to_owned(), m.clone());
            }
            (got.len() >= 4).then_some(())
        }
    })
    .await;
    let received = received.into_inner().expect("lock");
    assert_eq!(
        received.len(),
        4,
        "three lines and the foreign message, once each"
    );
    let records: Vec<Value> = received
        .values()
        .map(|m| {
            let attributes: BTreeMap<String, String> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:plantd-e2e-logger_PLANTD_LOGS",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    let resp = emulator
        .invoke(FUNCTION, &json!({ "Records": records }).to_string())
        .await;
    let answer: SqsBatchResponse =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert_eq!(answer.failed_ids(), [foreign.as_str()]);
    let delete: Vec<DeleteMessageBatchRequestEntry> = received
        .values()
        .filter(|m| m.message_id() != Some(foreign.as_str()))
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .expect("entry")
        })
        .collect();
    let deleted = sqs
        .delete_message_batch()
        .queue_url(&url)
        .set_entries(Some(delete))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.successful().len(), 3);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("attributes");
    let count = |name: QueueAttributeName| -> u64 {
        attrs
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    assert_eq!(
        count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        1,
        "only the failed record stays for a retry"
    );

    // The lines, parsed, in CloudWatch.
    let out = logs
        .get_log_events()
        .log_group_name(format!("{PREFIX}/plant-1"))
        .log_stream_name("line1/plc")
        .start_from_head(true)
        .send()
        .await
        .expect("GetLogEvents");
    let mut events: Vec<Value> = out
        .events()
        .iter()
        .map(|e| serde_json::from_str(e.message().unwrap_or_default()).expect("JSON"))
        .collect();
    events.sort_by_key(|e| e["sequence"].as_u64());
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect();
    assert_eq!(seqs, sequences);
    let levels: Vec<&str> = events.iter().filter_map(|e| e["level"].as_str()).collect();
    assert_eq!(levels, ["error", "warn", "info"]);
    assert_eq!(events[2]["fields"]["operator"], "kim");

    // The forwarder acknowledged what SQS accepted: nothing left.
    let stream = js.get_stream(streams::LOGS).await.expect("stream");
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(&durable).await.expect("consumer");
    let info = eventually(WAIT, "the forwarder to have acknowledged all", || {
        let consumer = &consumer;
        async move {
            let i = consumer.get_info().await.ok()?;
            (i.num_pending == 0 && i.num_ack_pending == 0).then_some(i)
        }
    })
    .await;
    assert_eq!(
        info.ack_floor.stream_sequence,
        *sequences.last().expect("three")
    );
    trigger.shutdown().await;
}
