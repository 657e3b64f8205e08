//! The forwarder's CloudWatch metrics against moto's CloudWatch Logs and a
//! real nats-server: a consumer held with items waiting shows its lag as
//! `ConsumerPending` (per function and stream, and without dimensions, as
//! the template's alarm watches), and the edges' statuses in
//! `plantd_site_status` give `EdgeBacklogMessages` — the largest backlog
//! of a connected site, naming it — and `EdgesNotConnected`, ignoring a
//! clean stop; every document lands in `/plantd/<stage>/metrics` exactly
//! as put, as embedded metric format in namespace `plantd/<stage>`.

use super::*;

use plantd_shared::site_status::{Backlog, EdgeInfo, LinkState, SiteStatus, Uplink};
use plantd_shared::streams::SITE_STATUS_BUCKET;
use plantd_trigger::Item;
use plantd_trigger::cloud_metrics::{self, Publisher};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Holds every batch until released: items stay pending.
struct Held(CancellationToken);

impl plantd_trigger::Handler for Held {
    async fn handle(&self, _batch: &[Item]) -> plantd_trigger::BatchOutcome {
        self.0.cancelled().await;
        plantd_trigger::BatchOutcome::success()
    }
}

/// A CloudWatch Logs client for `endpoint` (moto accepts any keys).
pub(super) async fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let config = plantd_shared::aws::config_loader()
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .load()
        .await;
    aws_sdk_cloudwatchlogs::Client::new(&config)
}

/// Creates the stage's metrics log group (the template's `MetricsLogs`).
pub(super) async fn create_group(logs: &aws_sdk_cloudwatchlogs::Client, stage: &str) {
    logs.create_log_group()
        .log_group_name(cloud_metrics::log_group(stage))
        .send()
        .await
        .expect("moto creates the group");
}

/// Waits until some stream of the stage's group holds a `ConsumerPending`
/// document of `function` on `stream`, and returns it.
pub(super) async fn consumer_document(
    logs: &aws_sdk_cloudwatchlogs::Client,
    stage: &str,
    function: &str,
    stream: &str,
) -> Value {
    let group = cloud_metrics::log_group(stage);
    eventually(
        WAIT,
        &format!("a ConsumerPending document in {group}"),
        || async {
            let streams = logs
                .describe_log_streams()
                .log_group_name(&group)
                .send()
                .await
                .ok()?;
            for s in streams.log_streams() {
                let events = logs
                    .get_log_events()
                    .log_group_name(&group)
                    .log_stream_name(s.log_stream_name()?)
                    .start_from_head(true)
                    .send()
                    .await
                    .ok()?;
                for e in events.events() {
                    let Ok(doc) = serde_json::from_str::<Value>(e.message().unwrap_or_default())
                    else {
                        continue;
                    };
                    if doc["Function"] == function
                        && doc["Stream"] == stream
                        && doc["ConsumerPending"].is_u64()
                    {
                        return Some(doc);
                    }
                }
            }
            None
        },
    )
    .await
}

fn site(name: &str, state: LinkState, backlog: u64, interval_ms: u64) -> Bytes {
    let status = SiteStatus {
        site: name.into(),
        edge: EdgeInfo {
            id: "j1".into(),
            version: "0.1.0".into(),
            holder: "host gw-1".into(),
            started_ms: 1,
        },
        at_ms: 1,
        interval_ms,
        clients: 3,
        last_message_ms: None,
        backlog: Backlog {
            messages: backlog,
            ..Backlog::default()
        },
        uplink: Uplink {
            state,
            since_ms: 1,
            last_ack_ms: None,
            last_error: None,
        },
    };
    serde_json::to_vec(&status).expect("JSON").into()
}

#[tokio::test]
async fn consumer_lag_and_edge_backlog_are_put_as_emf() {
    plantd_testkit::init_tracing();
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let moto = Moto::start().await;
    let logs = logs_client(&moto.endpoint()).await;
    create_group(&logs, "test").await;
    let group = cloud_metrics::log_group("test");

    // Four edges: two connected with backlogs, one silent for longer than
    // three of its intervals, one stopped cleanly.
    let kv = js.get_key_value(SITE_STATUS_BUCKET).await.expect("bucket");
    for (name, state, backlog, interval) in [
        ("plant-1", LinkState::Down, 42, 60_000),
        ("plant-2", LinkState::Up, 7, 60_000),
        ("plant-3", LinkState::Up, 900, 1),
        ("plant-4", LinkState::Stopped, 800, 60_000),
    ] {
        kv.put(name, site(name, state, backlog, interval))
            .await
            .expect("put status");
    }

    // A consumer that takes five items and holds them: the rest wait.
    for i in 0..30 {
        publish(&js, i, Bytes::from_static(b"line")).await;
    }
    let release = CancellationToken::new();
    let mut trigger = Trigger::new(js.clone());
    trigger
        .bind(
            "logger",
            streams::LOGS,
            Arc::new(Held(release.clone())),
            ConsumerSettings {
                batch_size: 5,
                max_ack_pending: 5,
                ..settings()
            },
        )
        .await
        .expect("bind");
    let status = trigger.status();
    eventually(WAIT, "the consumer's lag read with items waiting", || {
        let status = status.clone();
        async move {
            let h = status.health();
            (h.consumers.first()?.pending? > 0).then_some(())
        }
    })
    .await;

    let stream = "plantd-forwarder/test/1".to_owned();
    let mut publisher = Publisher::new(logs.clone(), "test", stream.clone());
    let docs = publisher
        .publish_once(&status, &js)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Again into the same stream (created once).
    let again = publisher
        .publish_once(&status, &js)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let events = logs
        .get_log_events()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .start_from_head(true)
        .send()
        .await
        .expect("events");
    let stored: Vec<String> = events
        .events()
        .iter()
        .filter_map(|e| e.message())
        .map(str::to_owned)
        .collect();
    assert_eq!(stored, [docs.clone(), again].concat(), "stored as put");

    assert_eq!(docs.len(), 2, "{docs:?}");
    let parsed: Vec<Value> = docs
        .iter()
        .map(|d| serde_json::from_str(d).expect("JSON"))
        .collect();
    for d in &parsed {
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "plantd/test", "{d}");
        assert!(d["_aws"]["Timestamp"].as_u64().is_some(), "{d}");
    }
    let consumer = &parsed[0];
    assert_eq!(consumer["Function"], "logger");
    assert_eq!(consumer["Stream"], "PLANTD_LOGS");
    assert_eq!(
        consumer["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["Function", "Stream"], []])
    );
    let pending = consumer["ConsumerPending"].as_u64().expect("a count");
    assert!((1..=30).contains(&pending), "30 published: {consumer}");
    let edges = &parsed[1];
    assert_eq!(edges["EdgeBacklogMessages"], 42, "{edges}");
    assert_eq!(edges["Site"], "plant-1");
    assert_eq!(edges["EdgesNotConnected"], 1, "plant-3 only: {edges}");
    assert_eq!(edges["Sites"], 4);

    release.cancel();
    trigger.shutdown().await;
}
