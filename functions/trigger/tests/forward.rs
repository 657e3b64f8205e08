//! The forwarder (the trigger's AWS half) against a real nats-server and
//! moto's SQS: items published to a stream arrive in the function's queue
//! exactly as enveloped, in `SendMessageBatch` calls of at most ten
//! entries and 256 KiB; nothing is acknowledged on JetStream before SQS
//! accepted it — with SQS unreachable or the queue missing nothing is
//! acked, and the items are redelivered and forwarded once it is back; an
//! item too large for SQS is parked in `PLANTD_DLQ` with the reason; and
//! the `plantd-forwarder` binary serves health and metrics and stops
//! cleanly on SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use base64::Engine as _;
use bytes::Bytes;
use plantd_shared::process::ManagedProcess;
use plantd_shared::streams;
use plantd_testkit::wait::drained;
use plantd_testkit::{Moto, Nats, eventually};
use plantd_trigger::forward::{Forwarder, MAX_BATCH_BYTES};
use plantd_trigger::sqs::{self, Envelope};
use plantd_trigger::{ConsumerSettings, Status, Trigger, dlq};

/// The CloudWatch metrics (moto's CloudWatch Logs).
#[path = "forward/cloud_metrics.rs"]
mod cloud_metrics;

const SUBJECT: &str = "plantd.plant-1.log.line1.plc";
const WAIT: Duration = Duration::from_secs(30);

/// An SQS client for `endpoint` (moto accepts any keys).
async fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = plantd_shared::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url()
        .expect("a queue URL")
        .to_owned()
}

/// One message taken from the queue: its body and its attributes.
#[derive(Debug)]
struct Received {
    body: String,
    attributes: BTreeMap<String, (String, String)>,
}

/// Takes messages off the queue until `n` have arrived (they stay taken:
/// the visibility timeout is longer than the test).
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str, n: usize) -> Vec<Received> {
    let got = std::sync::Mutex::new(Vec::new());
    eventually(WAIT, &format!("{n} messages in {url}"), || {
        let got = &got;
        async move {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            for m in out.messages() {
                let attributes = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    (
                                        v.data_type().to_owned(),
                                        v.string_value().unwrap_or_default().to_owned(),
                                    ),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                got.lock().expect("lock").push(Received {
                    body: m.body().unwrap_or_default().to_owned(),
                    attributes,
                });
            }
            (got.lock().expect("lock").len() >= n).then_some(())
        }
    })
    .await;
    let got = got.into_inner().expect("lock");
    assert_eq!(got.len(), n, "exactly {n} messages");
    got
}

/// Nothing more arrives in the queue (one short long-poll).
async fn queue_is_empty(sqs: &aws_sdk_sqs::Client, url: &str) -> bool {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    out.messages().is_empty()
}

async fn publish(js: &jetstream::Context, i: usize, payload: Bytes) -> u64 {
    let mut headers = HeaderMap::new();
    headers.insert("Plantd-Topic", "$plantd/log/line1/plc");
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("forward-test:{i}").as_str(),
    );
    headers.append("Plantd-User-tag", "a");
    headers.append("Plantd-User-tag", "b");
    js.publish_with_headers(SUBJECT, headers, payload)
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence
}

fn settings() -> ConsumerSettings {
    ConsumerSettings {
        batch_size: 100,
        max_wait: Duration::from_millis(200),
        max_deliver: 1000,
        backoff: vec![Duration::from_millis(100), Duration::from_millis(300)],
        ack_wait: Duration::from_secs(5),
        watch_interval: Duration::from_millis(100),
        ..ConsumerSettings::default()
    }
}

async fn consumer_info(js: &jetstream::Context, durable: &str) -> jetstream::consumer::Info {
    let stream = js.get_stream(streams::LOGS).await.expect("stream");
    let c: jetstream::consumer::PullConsumer =
        stream.get_consumer(durable).await.expect("consumer");
    c.get_info().await.expect("info")
}

/// `plantd_trigger_items_total{…,outcome="<outcome>"}` of the only consumer.
fn items(status: &Status, outcome: &str) -> u64 {
    let needle = format!("outcome=\"{outcome}\"}} ");
    status
        .prometheus()
        .lines()
        .find(|l| l.starts_with("plantd_trigger_items_total{") && l.contains(&needle))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {outcome} counter in {}", status.prometheus()))
}

/// What the forwarder must have sent for stream item `seq`.
async fn expected(js: &jetstream::Context, seq: u64) -> (Envelope, Bytes) {
    let stream = js.get_stream(streams::LOGS).await.expect("stream");
    let raw = stream.get_raw_message(seq).await.expect("stored message");
    // The headers `publish` set (a direct get keeps only the last value of
    // a repeated header, so they are not read back from the stream).
    let headers = BTreeMap::from([
        (
            "Nats-Msg-Id".to_owned(),
            vec![
                raw.headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .expect("a message id"),
            ],
        ),
        (
            "Plantd-Topic".to_owned(),
            vec!["$plantd/log/line1/plc".to_owned()],
        ),
        (
            "Plantd-User-tag".to_owned(),
            vec!["a".to_owned(), "b".to_owned()],
        ),
    ]);
    let envelope = Envelope {
        v: sqs::ENVELOPE_VERSION,
        stream: streams::LOGS.into(),
        sequence: seq,
        subject: SUBJECT.into(),
        headers,
        payload: base64::engine::general_purpose::STANDARD.encode(&raw.payload),
        published: raw.time,
        delivered: 1,
        replay: None,
    };
    (envelope, raw.payload)
}

#[tokio::test]
async fn items_reach_the_queue_exactly_as_enveloped_in_calls_of_ten() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let moto = Moto::start().await;
    let sqs = sqs_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "plantd-test-logger").await;

    // 25 items before the forwarder starts: its first pull takes them all
    // in one batch, which must go out as three calls (10, 10, 5) — SQS
    // refuses an eleventh entry.
    let mut sequences = Vec::new();
    for i in 0..25 {
        let payload = Bytes::from(format!("line {i} \u{2603} temp=81").into_bytes());
        sequences.push(publish(&js, i, payload).await);
    }
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind(
            "logger",
            streams::LOGS,
            Arc::new(Forwarder::new(sqs.clone(), url.clone())),
            settings(),
        )
        .await
        .expect("bind");
    assert_eq!(
        durable, "logger_PLANTD_LOGS",
        "the same consumer as plantd up"
    );
    let status = trigger.status();
    drained(&js, streams::LOGS, &durable, WAIT).await;
    let got = receive(&sqs, &url, 25).await;
    let mut by_seq = BTreeMap::new();
    for m in got {
        let envelope = Envelope::from_json(&m.body).expect("an envelope");
        assert_eq!(
            m.attributes.get(sqs::ATTR_SEQUENCE),
            Some(&("Number".to_owned(), envelope.sequence.to_string()))
        );
        assert_eq!(
            m.attributes.get(sqs::ATTR_STREAM),
            Some(&("String".to_owned(), streams::LOGS.to_owned()))
        );
        assert_eq!(
            m.attributes.get(sqs::ATTR_SUBJECT),
            Some(&("String".to_owned(), SUBJECT.to_owned()))
        );
        assert_eq!(
            m.attributes.get(sqs::ATTR_DELIVERED),
            Some(&("Number".to_owned(), "1".to_owned()))
        );
        assert!(
            by_seq.insert(envelope.sequence, envelope).is_none(),
            "each item once"
        );
    }
    assert_eq!(by_seq.keys().copied().collect::<Vec<_>>(), sequences);
    for (seq, envelope) in &by_seq {
        let (want, payload) = expected(&js, *seq).await;
        assert_eq!(envelope, &want, "item {seq} as enveloped");
        let item = envelope.clone().into_item(1).expect("decodes");
        assert_eq!(item.payload, payload, "byte for byte");
        let tags: Vec<&str> = item
            .headers
            .get_all("Plantd-User-tag")
            .map(|v| v.as_str())
            .collect();
        assert_eq!(tags, ["a", "b"], "every value of a header, in order");
    }
    assert_eq!(items(&status, "done"), 25);
    assert_eq!(items(&status, "failed"), 0);
    assert!(queue_is_empty(&sqs, &url).await, "nothing sent twice");

    // Large items: at most 256 KiB per call, so two 120 KB payloads
    // (160 KB as base64) never share a call; a 200 KB payload (267 KB)
    // fits no SQS message and is parked in PLANTD_DLQ with the reason
    // after max_deliver tries — never acknowledged as sent.
    trigger.shutdown().await;
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            "logger",
            streams::LOGS,
            Arc::new(Forwarder::new(sqs.clone(), url.clone())),
            ConsumerSettings {
                max_deliver: 2,
                ..settings()
            },
        )
        .await
        .expect("bind again");
    let big = |fill: u8, n: usize| Bytes::from(vec![fill; n]);
    let a = publish(&js, 100, big(b'a', 120_000)).await;
    let b = publish(&js, 101, big(b'b', 120_000)).await;
    let too_big = publish(&js, 102, big(b'c', 200_000)).await;
    let c = publish(&js, 103, big(b'd', 120_000)).await;
    drained(&js, streams::LOGS, &durable, WAIT).await;
    let got = receive(&sqs, &url, 3).await;
    let mut seqs: Vec<u64> = got
        .iter()
        .map(|m| {
            assert!(m.body.len() < MAX_BATCH_BYTES);
            Envelope::from_json(&m.body).expect("envelope").sequence
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [a, b, c]);
    let parked = dlq::list(&js, Some(&durable), 10).await.expect("DLQ");
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].sequence, too_big);
    assert!(
        parked[0].error.contains("more than SQS's"),
        "{}",
        parked[0].error
    );
    trigger.shutdown().await;
}

#[tokio::test]
async fn nothing_is_acked_until_sqs_accepts_and_items_come_back_when_it_does() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let moto = Moto::start().await;
    let sqs = sqs_client(&moto.endpoint()).await;
    let mut sequences = Vec::new();
    for i in 0..5 {
        sequences.push(publish(&js, i, Bytes::from(format!("line {i}"))).await);
    }

    // 1. SQS unreachable: a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let unreachable = sqs_client(&format!("http://127.0.0.1:{dead}")).await;
    let url = format!("{}/123456789012/plantd-test-alerts", moto.endpoint());
    let mut trigger = Trigger::new(js.clone());
    let durable = trigger
        .bind(
            "logger",
            streams::LOGS,
            Arc::new(Forwarder::new(unreachable, url.clone())),
            settings(),
        )
        .await
        .expect("bind");
    let status = trigger.status();
    eventually(WAIT, "every item to have failed to send", || async {
        (items(&status, "failed") >= 5).then_some(())
    })
    .await;
    trigger.shutdown().await;
    let info = consumer_info(&js, &durable).await;
    assert_eq!(info.ack_floor.stream_sequence, 0, "nothing acknowledged");
    assert_eq!(items(&status, "done"), 0);

    // 2. SQS answers, but the queue does not exist yet.
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            "logger",
            streams::LOGS,
            Arc::new(Forwarder::new(sqs.clone(), url.clone())),
            settings(),
        )
        .await
        .expect("bind again");
    let status = trigger.status();
    eventually(WAIT, "SQS to refuse the missing queue", || async {
        (items(&status, "failed") >= 5).then_some(())
    })
    .await;
    let info = consumer_info(&js, &durable).await;
    assert_eq!(
        info.ack_floor.stream_sequence, 0,
        "still nothing acknowledged"
    );
    assert_eq!(items(&status, "done"), 0);

    // 3. The queue appears: the items are redelivered and forwarded, once.
    let created = create_queue(&sqs, "plantd-test-alerts").await;
    assert_eq!(created, url, "the URL the forwarder was given");
    drained(&js, streams::LOGS, &durable, WAIT).await;
    let got = receive(&sqs, &url, 5).await;
    let mut seqs = Vec::new();
    for m in &got {
        let e = Envelope::from_json(&m.body).expect("envelope");
        assert!(e.delivered >= 2, "a redelivery: {}", e.delivered);
        seqs.push(e.sequence);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, sequences);
    assert_eq!(items(&status, "done"), 5);
    assert_eq!(
        consumer_info(&js, &durable).await.ack_floor.stream_sequence,
        *sequences.last().expect("five")
    );
    assert!(queue_is_empty(&sqs, &url).await, "nothing sent twice");
    trigger.shutdown().await;
}

#[tokio::test]
async fn the_forwarder_binary_serves_health_and_metrics_and_stops_on_sigterm() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let moto = Moto::start().await;
    let sqs = sqs_client(&moto.endpoint()).await;
    let url = create_queue(&sqs, "plantd-test-notifier").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("forwarder.toml");
    std::fs::write(
        &config,
        format!(
            "nats_url = \"{}\"\nhttp_listen = \"127.0.0.1:0\"\nmax_wait_ms = 100\n\n[[bindings]]\nfunction = \"logger\"\nstream = \"{}\"\nqueue_url = \"{url}\"\n",
            nats.url(),
            streams::LOGS
        ),
    )
    .expect("write the config");
    // With `[cloud_metrics] stage` it also puts the alarms' metrics.
    let logs = cloud_metrics::logs_client(&moto.endpoint()).await;
    cloud_metrics::create_group(&logs, "test").await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-forwarder"));
    cmd.arg("--config")
        .arg(&config)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("PLANTD_LOG", "info")
        // A process-wide variable the configuration must not trip over.
        .env("PLANTD_LOG_FORMAT", "text")
        .env("PLANTD_MAX_DELIVER", "7")
        .env("PLANTD_CLOUD_METRICS__STAGE", "test")
        .env("PLANTD_CLOUD_METRICS__INTERVAL_MS", "200");
    let mut port = None;
    let mut process = ManagedProcess::spawn("plantd-forwarder", cmd, WAIT, |line| {
        if line.contains("plantd-forwarder running")
            && let Some(rest) = line.split("http=127.0.0.1:").nth(1)
        {
            port = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse::<u16>().ok());
        }
        port.is_some()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let port = port.expect("the HTTP port");

    let seq = publish(&js, 1, Bytes::from_static(b"motor overheated")).await;
    let got = receive(&sqs, &url, 1).await;
    assert_eq!(
        Envelope::from_json(&got[0].body)
            .expect("envelope")
            .sequence,
        seq
    );
    let health = eventually(WAIT, "a healthy /healthz", || async {
        let r = plantd_testkit::http::get(port, "/healthz").await.ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    let h: serde_json::Value = serde_json::from_slice(&health.body).expect("JSON");
    assert_eq!(h["consumers"][0]["consumer"], "logger_PLANTD_LOGS");
    let metrics = eventually(WAIT, "the item counted as done", || async {
        let r = plantd_testkit::http::get(port, "/metrics").await.ok()?;
        r.text()
            .contains(
                "plantd_trigger_items_total{function=\"logger\",stream=\"PLANTD_LOGS\",outcome=\"done\"} 1",
            )
            .then_some(r)
    })
    .await;
    assert_eq!(metrics.status, 200);
    let doc = cloud_metrics::consumer_document(&logs, "test", "logger", streams::LOGS).await;
    assert_eq!(
        doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "plantd/test",
        "{doc}"
    );

    let exit = process
        .terminate(Duration::from_secs(20))
        .await
        .expect("exits");
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    assert!(
        process
            .tail()
            .iter()
            .any(|l| l.contains("plantd-forwarder stopped")),
        "{:?}",
        process.tail()
    );
}
