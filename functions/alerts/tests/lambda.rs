//! The alerts package's AWS path, proven rather than assumed: the real
//! `plantd-alerts` binary, as built by this test run, runs under the
//! Lambda runtime API emulator of `cargo lambda watch --only-lambda-apis`
//! and is invoked through the emulator's invoke endpoint (what `cargo
//! lambda invoke --data-file` does) with SQS events — envelopes as
//! `plantd-forwarder` writes them ([`Envelope::of`]) — and EventBridge
//! scheduled events, against a real nats-server.
//!
//! * `notifier`: its channel key from the alerts secret in Secrets
//!   Manager (moto); one alert record and one undecodable body → one
//!   POST to the channel's webhook, signed with the secret that is sealed
//!   in KV; only the bad record is listed in `batchItemFailures`; the same
//!   batch again sends nothing more. Without the secret it does not start.
//! * `alerts`: a telemetry reading above a rule's threshold → the
//!   inactive → pending record in `PLANTD_ALERTS`; a scheduled event is a
//!   tick, and once the rule's `for` has passed a tick writes pending →
//!   firing (and not before).
//! * `alerts`: an analytics result with `signal: fire` from the
//!   `alerts_PLANTD_AGGREGATES` queue, delivered twice → one firing record.
//! * An unknown `PLANTD_FUNCTION` stops the binary at start-up, naming the
//!   choices.

mod notify_common;

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use notify_common::{ORG, SECRET};
use plantd_alerts::{AlertRecord, AlertState, RecordKind, Rule, Stores};
use plantd_shared::process::ManagedProcess;
use plantd_shared::sites::Sites;
use plantd_shared::streams;
use plantd_shared::subject::Site;
use plantd_testkit::webhook::Receiver;
use plantd_testkit::{LambdaWatch, Moto, Nats, eventually};
use plantd_trigger::Item;
use plantd_trigger::sqs::{Envelope, SqsBatchResponse, SqsEvent, SqsMessage};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The binary's name: the emulator's invoke endpoint accepts only names of
/// the workspace's binaries, so both functions are registered under it,
/// each test with an emulator of its own.
const FUNCTION: &str = "plantd-alerts";
const WAIT: Duration = Duration::from_secs(30);
/// The site the alerts test publishes for (owned by [`ORG`]).
const SITE: &str = "plant1";

/// An item of `stream` as the trigger hands it over.
fn item(stream: &str, sequence: u64, subject: &str, payload: Vec<u8>) -> Item {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("lambda-test:{sequence}").as_str());
    Item {
        stream: stream.into(),
        sequence,
        subject: subject.into(),
        headers,
        payload: Bytes::from(payload),
        published: OffsetDateTime::now_utc(),
        delivered: 1,
        replay: None,
    }
}

/// An SQS event record with `body`, as the event source mapping delivers
/// it (the fields the function reads).
fn message(id: &str, body: &str, queue: &str) -> SqsMessage {
    SqsMessage {
        message_id: id.to_owned(),
        body: Some(body.to_owned()),
        attributes: [("ApproximateReceiveCount".to_owned(), "1".to_owned())].into(),
        event_source_arn: Some(format!("arn:aws:sqs:us-east-1:123456789012:{queue}")),
    }
}

/// What EventBridge sends for a `rate(1 minute)` schedule.
fn scheduled_event() -> String {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("a time"),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/plantd-test-alerts-tick"],
        "detail": {}
    })
    .to_string()
}

/// The alerts secret's name in the notifier test.
const ALERTS_SECRET: &str = "plantd/test/alerts";

/// moto holding the alerts secret: the channel key the test channels are
/// sealed with ([`notify_common::key_doc`]).
async fn moto_with_alerts_secret() -> Moto {
    use aws_config::Region;
    use aws_sdk_sns::config::Credentials;
    let moto = Moto::start().await;
    let sdk = plantd_shared::aws::config_loader()
        .endpoint_url(moto.endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    plantd_shared::secrets::Client::new(&sdk)
        .create_secret()
        .name(ALERTS_SECRET)
        .secret_string(serde_json::to_string(notify_common::key_doc()).expect("JSON"))
        .send()
        .await
        .expect("moto creates the secret");
    moto
}

/// `plantd-alerts` as function `function` (`PLANTD_FUNCTION`) under a
/// fresh emulator, connected to `nats`, with AWS at `aws` (moto) or
/// nowhere; the process stops when dropped.
async fn spawn(
    function: &str,
    nats: &Nats,
    aws: Option<&Moto>,
    ready: &'static str,
) -> (LambdaWatch, ManagedProcess) {
    let emulator = LambdaWatch::start(env!("CARGO_MANIFEST_DIR")).await;
    // SNS is not used here: without moto nothing answers at the endpoint.
    // PLANTD_ALERTS_BOOTSTRAP: the packaged binary instead (docs/deploy.md).
    let bin = std::env::var_os("PLANTD_ALERTS_BOOTSTRAP")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_plantd-alerts").into());
    let endpoint = aws.map_or_else(|| "http://127.0.0.1:9".to_owned(), Moto::endpoint);
    let mut cmd = emulator.function_command(bin, FUNCTION, &endpoint);
    cmd.env("PLANTD_FUNCTION", function)
        .env("PLANTD_NATS_URL", nats.url());
    if aws.is_some() {
        cmd.env("PLANTD_ALERTS_SECRET_ID", ALERTS_SECRET);
    }
    let process = ManagedProcess::spawn(
        &format!("plantd-alerts {function} (Lambda)"),
        cmd,
        WAIT,
        move |l| l.contains(ready),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (emulator, process)
}

/// Every record in `PLANTD_ALERTS`, in order.
async fn records(js: &jetstream::Context) -> Vec<AlertRecord> {
    let mut stream = js.get_stream(streams::ALERTS).await.expect("PLANTD_ALERTS");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&msg.payload).expect("an alert record"));
        }
    }
    out
}

fn transitions(records: &[AlertRecord]) -> Vec<(AlertState, AlertState)> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Transition)
        .map(|r| (r.from, r.to))
        .collect()
}

#[tokio::test]
async fn the_notifier_posts_one_signed_webhook_and_fails_only_the_bad_record() {
    plantd_testkit::init_tracing();
    let (nats, js) = notify_common::nats().await;
    let receiver = Receiver::start().await;
    notify_common::channel(&js, ORG, "ops", notify_common::webhook(&receiver.url())).await;
    let moto = moto_with_alerts_secret().await;
    let (emulator, _function) = spawn(
        "notifier",
        &nats,
        Some(&moto),
        "notifier serving SQS events through the Lambda runtime API",
    )
    .await;

    let record = notify_common::firing("hot", 1, &["ops"]);
    let alert = item(
        streams::ALERTS,
        7,
        &record.subject(),
        serde_json::to_vec(&record).expect("JSON"),
    );
    let queue = "plantd-test-notifier_PLANTD_ALERTS";
    let event = SqsEvent {
        records: vec![
            message("msg-alert", &Envelope::of(&alert).to_json(), queue),
            message("msg-bad", "{\"not\": \"an envelope\"}", queue),
        ],
    };
    let event = serde_json::to_string(&event).expect("JSON");
    let resp = emulator.invoke(FUNCTION, &event).await;
    let answer: SqsBatchResponse =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert_eq!(answer.failed_ids(), ["msg-bad"], "{}", resp.text());

    // The delivery is over when the invocation answers.
    let posts = receiver.requests();
    assert_eq!(posts.len(), 1, "one POST: {posts:#?}");
    let post = &posts[0];
    assert!(post.verify(SECRET), "signed with the channel's secret");
    let body = post.json();
    assert_eq!(
        (&body["channel"], &body["event"], &body["id"]),
        (&json!("ops"), &json!("firing"), &json!("ops:hot:k1:1")),
        "{body:#}"
    );
    assert_eq!(body["record"], serde_json::to_value(&record).expect("JSON"));

    // SQS redelivers the batch (say the answer was lost): the marker in
    // plantd_notifications keeps the receiver from hearing it twice.
    let resp = emulator.invoke(FUNCTION, &event).await;
    let answer: SqsBatchResponse = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(answer.failed_ids(), ["msg-bad"]);
    assert_eq!(receiver.requests().len(), 1, "not notified twice");
}

#[tokio::test]
async fn the_engine_alerts_on_sqs_items_and_ticks_on_the_schedule() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    Sites::open(&js)
        .await
        .expect("sites")
        .register(&Site::new(SITE).expect("a site"), ORG, "")
        .await
        .expect("register");
    let rule = Rule::from_json(
        br#"{"id":"hot","name":"Line 1 too hot","severity":"critical","for":"3s",
            "condition":{"kind":"threshold","topic":"line1/+/temp","op":">","value":80}}"#,
    )
    .expect("a valid rule");
    let stores = Stores::open(&js).await.expect("stores");
    stores.put_rule(ORG, &rule).await.expect("put the rule");
    let (emulator, _function) = spawn(
        "alerts",
        &nats,
        None,
        "alerts serving SQS and scheduled events through the Lambda runtime API",
    )
    .await;

    // A reading above the threshold, from the telemetry queue.
    let reading = item(
        streams::TELEMETRY,
        1,
        &format!("plantd.{SITE}.up.line1.oven.temp"),
        b"91.5".to_vec(),
    );
    let event = SqsEvent {
        records: vec![message(
            "msg-1",
            &Envelope::of(&reading).to_json(),
            "plantd-test-alerts_PLANTD_TELEMETRY",
        )],
    };
    let sent = Instant::now();
    let resp = emulator
        .invoke(FUNCTION, &serde_json::to_string(&event).expect("JSON"))
        .await;
    let answer: SqsBatchResponse =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    assert!(answer.batch_item_failures.is_empty(), "{}", resp.text());
    let written = records(&js).await;
    assert_eq!(
        transitions(&written),
        [(AlertState::Inactive, AlertState::Pending)],
        "{written:#?}"
    );
    assert_eq!(written[0].org, ORG);
    assert_eq!(written[0].site, SITE);
    assert_eq!(written[0].evidence.last().and_then(|e| e.value), Some(91.5));

    // The schedule's first tick, before `for` has passed: still pending.
    let resp = emulator.invoke(FUNCTION, &scheduled_event()).await;
    let tick: Value = serde_json::from_slice(&resp.body).expect("JSON");
    assert_eq!(tick["ticked"], true, "{tick}");
    assert_eq!(tick["instances"], 1, "{tick}");
    if sent.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            transitions(&records(&js).await).len(),
            1,
            "no firing before `for`"
        );
    }

    // The instance in KV is pending since the reading; once `for` has
    // passed, the next tick fires it.
    let stored = stores.instances().await.expect("read the states");
    assert_eq!(stored.len(), 1, "one instance: {stored:#?}");
    assert_eq!(stored[0].0.state, AlertState::Pending);
    let fired = eventually(WAIT, "a tick to move the rule pending -> firing", || {
        let (emulator, js) = (&emulator, &js);
        async move {
            emulator.invoke(FUNCTION, &scheduled_event()).await;
            let r = records(js).await;
            (r.len() >= 2).then_some(r)
        }
    })
    .await;
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "fired after `for`"
    );
    assert_eq!(
        transitions(&fired),
        [
            (AlertState::Inactive, AlertState::Pending),
            (AlertState::Pending, AlertState::Firing)
        ],
        "each transition once: {fired:#?}"
    );
    assert_eq!(fired[1].rule_name, "Line 1 too hot");

    // Anything else is refused, naming what the function takes.
    let url = format!("/2015-03-31/functions/{FUNCTION}/invocations");
    let resp = plantd_testkit::http::request(
        emulator.port(),
        "POST",
        &url,
        &[("content-type", "application/json")],
        br#"{"source":"aws.s3","detail-type":"Object Created"}"#,
    )
    .await
    .expect("the emulator answers");
    assert!(
        resp.text().contains("scheduled events"),
        "{}: {}",
        resp.status,
        resp.text()
    );
}

#[tokio::test]
async fn an_analytics_signal_from_its_queue_fires_the_companion_alert_once() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    Sites::open(&js)
        .await
        .expect("sites")
        .register(&Site::new(SITE).expect("a site"), ORG, "")
        .await
        .expect("register");
    let rule = Rule::from_json(
        br#"{"id":"analytics-press_held","severity":"critical",
            "condition":{"kind":"analytics","rule":"press_held"}}"#,
    )
    .expect("a valid rule");
    Stores::open(&js)
        .await
        .expect("stores")
        .put_rule(ORG, &rule)
        .await
        .expect("put the rule");
    let (emulator, _function) = spawn(
        "alerts",
        &nats,
        None,
        "alerts serving SQS and scheduled events through the Lambda runtime API",
    )
    .await;
    // A result with `signal: fire`, from the aggregates queue, twice (SQS
    // delivers at least once).
    let result = json!({"rule": "press_held", "key": "line1/press", "window_start": 0,
        "window_end": 30_000, "revision": 0, "values": {"max_value": 8.6},
        "dropped_late": 0, "signal": "fire"});
    let fire = item(
        streams::AGGREGATES,
        1,
        &format!("plantd.{SITE}.agg.press_held.line1.press"),
        result.to_string().into_bytes(),
    );
    let event = SqsEvent {
        records: vec![message(
            "msg-1",
            &Envelope::of(&fire).to_json(),
            "plantd-test-alerts_PLANTD_AGGREGATES",
        )],
    };
    let event = serde_json::to_string(&event).expect("JSON");
    for _ in 0..2 {
        let resp = emulator.invoke(FUNCTION, &event).await;
        let answer: SqsBatchResponse =
            serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
        assert!(answer.batch_item_failures.is_empty(), "{}", resp.text());
    }
    let written = records(&js).await;
    assert_eq!(
        transitions(&written),
        [(AlertState::Inactive, AlertState::Firing)],
        "{written:#?}"
    );
    assert_eq!(
        written[0].labels.get("key").map(String::as_str),
        Some("line1/press")
    );
}

/// `plantd-alerts` run with `env` (and a runtime API address): its exit
/// status and standard error.
async fn start_with(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_plantd-alerts"))
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run plantd-alerts");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_unknown_function_is_a_start_up_error_naming_the_choices() {
    let (status, stderr) = start_with(&[
        ("PLANTD_FUNCTION", "alerter"),
        ("PLANTD_NATS_URL", "nats://127.0.0.1:9"),
    ])
    .await;
    assert!(!status.success());
    assert!(
        stderr.contains("PLANTD_FUNCTION=\"alerter\" is not a function of plantd-alerts")
            && stderr.contains("`alerts` or `notifier`"),
        "{stderr}"
    );
    // The other start-up errors name their variable too.
    for (env, says) in [
        (vec![], "PLANTD_FUNCTION is not set"),
        (
            vec![("PLANTD_FUNCTION", "notifier")],
            "PLANTD_NATS_URL is not set",
        ),
        // No channel key, no notifier: a file is refused under Lambda.
        (
            vec![
                ("PLANTD_FUNCTION", "notifier"),
                ("PLANTD_NATS_URL", "nats://127.0.0.1:9"),
            ],
            "no channel key: set PLANTD_ALERTS_SECRET_ID",
        ),
        (
            vec![
                ("PLANTD_FUNCTION", "notifier"),
                ("PLANTD_NATS_URL", "nats://127.0.0.1:9"),
                ("PLANTD_CHANNEL_KEY_FILE", "/tmp/plantd-channel-keys.json"),
            ],
            "PLANTD_CHANNEL_KEY_FILE under Lambda",
        ),
        (
            vec![
                ("PLANTD_FUNCTION", "alerts"),
                ("PLANTD_NATS_URL", "nats://127.0.0.1:9"),
                ("PLANTD_NATS_CREDS", "/nonexistent/plantd.creds"),
            ],
            "cannot read NATS credentials /nonexistent/plantd.creds",
        ),
    ] {
        let (status, stderr) = start_with(&env).await;
        assert!(!status.success(), "{env:?}");
        assert!(stderr.contains(says), "{env:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_alerts_secret_stops_the_notifier_naming_it() {
    let moto = moto_with_alerts_secret().await;
    let endpoint = moto.endpoint();
    let aws = [
        ("PLANTD_FUNCTION", "notifier"),
        ("PLANTD_NATS_URL", "nats://127.0.0.1:9"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    // The signed read (decision 0065) tells a secret that is not there
    // from one that cannot be read.
    let mut env = aws.to_vec();
    env.push(("PLANTD_ALERTS_SECRET_ID", "plantd/test/missing"));
    let (status, stderr) = start_with(&env).await;
    assert!(!status.success());
    assert!(
        stderr.contains("secret `plantd/test/missing` does not exist in Secrets Manager"),
        "{stderr}"
    );
    // Secrets Manager unreachable: the endpoint is named, the secret is not
    // said to be missing.
    let mut env = aws.to_vec();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:9"));
    env.push(("PLANTD_ALERTS_SECRET_ID", ALERTS_SECRET));
    let (status, stderr) = start_with(&env).await;
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("cannot read secret `{ALERTS_SECRET}`"))
            && stderr.contains("127.0.0.1:9"),
        "{stderr}"
    );
}
