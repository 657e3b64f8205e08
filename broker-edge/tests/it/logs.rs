//! Logs in at the edge, with the real `plantd-edge` binary, a real
//! nats-server and rumqttc 5.0 clients:
//!
//! * a device's log lines on `$plantd/log/pump1` (plain text, JSON,
//!   logfmt), published at QoS 1 while nats-server is down, are in
//!   `PLANTD_LOGS` on `plantd.<site>.log.pump1` once each, in order, with
//!   the contract's headers (the `level` user property included), while
//!   its telemetry still goes to `PLANTD_TELEMETRY`;
//! * a token must grant `$plantd/log/…` (`#` does not: MQTT's `$` rule);
//!   `$plantd/log` without a source is refused; local subscribers see log
//!   lines only through a filter that names `$plantd/log/`;
//! * the edge's own warnings (a refused login), even during an outage,
//!   reach `PLANTD_LOGS` under `plantd.<site>.log.plantd.edge`.

use crate::common;
use crate::edge_proc;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use common::{TestBroker, V5, device_claims, v5, v5_unchecked};
use edge_proc::{Edge, SITE, drained, start_edge_shipping};
use plantd_shared::headers;
use plantd_shared::jwt::{SigningKey, jwks_of};
use plantd_shared::streams::{self, Settings};
use plantd_testkit::{Nats, eventually};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};

/// A signing key and its JWKS file, as the identity service would publish.
struct Issuer {
    key: SigningKey,
    _dir: tempfile::TempDir,
    jwks_file: PathBuf,
}

impl Issuer {
    fn new() -> Self {
        let key = SigningKey::generate_ed25519("k1").expect("key");
        let dir = tempfile::tempdir().expect("tmp");
        let jwks_file = dir.path().join("jwks.json");
        let jwks = serde_json::to_string(&jwks_of([&key]).expect("jwks")).expect("json");
        std::fs::write(&jwks_file, jwks).expect("write JWKS");
        Self {
            key,
            _dir: dir,
            jwks_file,
        }
    }

    /// A device token with these MQTT grants on the site.
    fn token(&self, sub: &str, publish: &[&str], subscribe: &[&str]) -> String {
        self.key
            .sign(&device_claims(sub, SITE, publish, subscribe))
            .expect("sign")
    }
}

async fn edge(nats: &Nats, data: &std::path::Path, issuer: &Issuer) -> (Edge, TestBroker) {
    let jwks = issuer.jwks_file.to_str().expect("utf-8 path");
    let edge =
        start_edge_shipping(nats, data, &["--jwks-file", jwks, "--org", "acme"], "warn").await;
    let broker = TestBroker::external(edge.mqtt, edge.http);
    (edge, broker)
}

async fn device(b: &TestBroker, id: &str, token: &str) -> V5 {
    let (id, token) = (id.to_owned(), token.to_owned());
    v5(b, &id.clone(), move |o| {
        o.set_credentials(id, token);
    })
    .await
    .0
}

/// Publishes at QoS 1 (with MQTT 5 user properties) and returns the
/// PUBACK's reason.
async fn publish(c: &mut V5, topic: &str, payload: &str, props: &[(&str, &str)]) -> PubAckReason {
    let properties = PublishProperties {
        user_properties: props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    c.client
        .publish_with_properties(
            topic,
            QoS::AtLeastOnce,
            false,
            payload.to_owned(),
            properties,
        )
        .await
        .expect("publish queued");
    c.puback().await.reason
}

/// Whether a PUBACK says the message was accepted (0x10: accepted, and no
/// local subscriber matched — the uplink still takes it).
fn accepted(reason: PubAckReason) -> bool {
    matches!(
        reason,
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
    )
}

/// A stored message: subject, headers, payload.
struct Stored {
    subject: String,
    headers: async_nats::HeaderMap,
    payload: String,
}

impl Stored {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }
}

/// Every message of `stream` on `subject`, in stream order.
async fn stored(js: &jetstream::Context, stream: &str, subject: &str) -> Vec<Stored> {
    let stream = js.get_stream(stream).await.expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("stored message");
        if plantd_shared::subject::subject_matches(subject, m.subject.as_str()) {
            out.push(Stored {
                subject: m.subject.to_string(),
                headers: m.headers,
                payload: String::from_utf8_lossy(&m.payload).into_owned(),
            });
        }
    }
    out
}

#[tokio::test]
async fn device_log_lines_survive_an_outage_once_in_order_with_their_level() {
    let mut nats = Nats::start().await;
    streams::ensure(&nats.jetstream().await, &Settings::default())
        .await
        .expect("streams");
    let issuer = Issuer::new();
    let data = tempfile::tempdir().expect("tmp");
    let (edge, b) = edge(&nats, data.path(), &issuer).await;
    let token = issuer.token("pump1", &["$plantd/log/pump1", "line/#"], &[]);
    let mut pump = device(&b, "pump1", &token).await;

    nats.stop().await;
    let lines = [
        (
            "2026-12-06T14:30:00Z ERROR pump stalled",
            vec![("level", "error")],
        ),
        (
            r#"{"level":"warn","msg":"temperature high","temp":81}"#,
            vec![],
        ),
        (
            r#"level=info msg="restarted" attempt=2"#,
            vec![("unit", "A")],
        ),
    ];
    for (line, props) in &lines {
        assert!(
            accepted(publish(&mut pump, "$plantd/log/pump1", line, props).await),
            "a log line is acknowledged once journaled, NATS or not"
        );
    }
    assert!(accepted(
        publish(&mut pump, "line/1/temp", "21.5", &[]).await
    ));
    nats.start_again().await;
    drained(&edge).await;

    let js = nats.jetstream().await;
    let logs = stored(&js, streams::LOGS, "plantd.plant-1.log.pump1").await;
    let payloads: Vec<&str> = logs.iter().map(|m| m.payload.as_str()).collect();
    let expected: Vec<&str> = lines.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        payloads, expected,
        "each line once, in order, byte for byte"
    );
    for m in &logs {
        assert_eq!(m.subject, "plantd.plant-1.log.pump1");
        assert_eq!(m.header(headers::TOPIC), Some("$plantd/log/pump1"));
        assert_eq!(m.header(headers::CLIENT_ID), Some("pump1"));
        assert!(m.header(headers::RECEIVED).is_some());
        assert!(
            m.header(headers::MSG_ID)
                .is_some_and(|id| id.starts_with("plant-1:"))
        );
    }
    assert_eq!(logs[0].header("Plantd-User-level"), Some("error"));
    assert_eq!(logs[2].header("Plantd-User-unit"), Some("A"));
    let telemetry = stored(&js, streams::TELEMETRY, "plantd.plant-1.up.>").await;
    assert_eq!(telemetry.len(), 1, "log lines never land in telemetry");
    assert_eq!(telemetry[0].subject, "plantd.plant-1.up.line.1.temp");
    assert_eq!(telemetry[0].payload, "21.5");
}

#[tokio::test]
async fn log_topics_need_their_own_grant_and_a_source() {
    let nats = Nats::start().await;
    streams::ensure(&nats.jetstream().await, &Settings::default())
        .await
        .expect("streams");
    let issuer = Issuer::new();
    let data = tempfile::tempdir().expect("tmp");
    let (_edge, b) = edge(&nats, data.path(), &issuer).await;

    // `#` is everything but `$`-topics (MQTT 4.7.2): no log lines with it.
    let everything = issuer.token("plc-all", &["#"], &["#"]);
    let mut plc = device(&b, "plc-all", &everything).await;
    assert_eq!(
        publish(&mut plc, "$plantd/log/plc-all", "hello", &[]).await,
        PubAckReason::NotAuthorized
    );
    let other = issuer.token("plc-2", &["$plantd/log/plc-2"], &[]);
    let mut plc2 = device(&b, "plc-2", &other).await;
    assert_eq!(
        publish(&mut plc2, "$plantd/log/pump1", "not my source", &[]).await,
        PubAckReason::NotAuthorized
    );
    let any = issuer.token("plc-3", &["$plantd/log/#"], &[]);
    let mut plc3 = device(&b, "plc-3", &any).await;
    assert_eq!(
        publish(&mut plc3, "$plantd/log", "no source", &[]).await,
        PubAckReason::UnspecifiedError,
        "a log line needs a source"
    );

    // Local subscribers: `#` does not see log lines, `$plantd/log/#` does.
    let watcher = issuer.token("watcher", &[], &["#", "$plantd/log/#"]);
    let mut all = device(&b, "watch-all", &watcher).await;
    all.sub("#", QoS::AtLeastOnce).await;
    let mut logs = device(&b, "watch-logs", &watcher).await;
    logs.sub("$plantd/log/#", QoS::AtLeastOnce).await;
    assert_eq!(
        publish(&mut plc3, "$plantd/log/line1/plc", "level=warn msg=x", &[]).await,
        PubAckReason::Success
    );
    let p = logs.publish().await;
    assert_eq!(&p.topic[..], b"$plantd/log/line1/plc");
    all.no_publish().await;

    let js = nats.jetstream().await;
    let stored = eventually(Duration::from_secs(20), "the line in PLANTD_LOGS", || {
        let js = js.clone();
        async move {
            let s = stored(&js, streams::LOGS, "plantd.plant-1.log.>").await;
            let devices: Vec<String> = s
                .into_iter()
                .filter(|m| !m.subject.starts_with("plantd.plant-1.log.plantd."))
                .map(|m| m.subject)
                .collect();
            (!devices.is_empty()).then_some(devices)
        }
    })
    .await;
    assert_eq!(
        stored,
        vec!["plantd.plant-1.log.line1.plc"],
        "only the allowed line went up"
    );
}

/// The JSON lines the edge shipped about itself.
async fn edge_lines(js: &jetstream::Context) -> Vec<(Stored, serde_json::Value)> {
    stored(js, streams::LOGS, "plantd.plant-1.log.plantd.edge")
        .await
        .into_iter()
        .map(|m| {
            let v = serde_json::from_str(&m.payload).expect("a JSON line");
            (m, v)
        })
        .collect()
}

#[tokio::test]
async fn the_edge_ships_its_own_warnings_through_an_outage() {
    let mut nats = Nats::start().await;
    streams::ensure(&nats.jetstream().await, &Settings::default())
        .await
        .expect("streams");
    let issuer = Issuer::new();
    let stranger = SigningKey::generate_ed25519("k1").expect("key");
    let forged = stranger
        .sign(&device_claims("intruder", SITE, &["#"], &[]))
        .expect("sign");
    let data = tempfile::tempdir().expect("tmp");
    let (edge, b) = edge(&nats, data.path(), &issuer).await;

    let refused = |id: &'static str| {
        let forged = forged.clone();
        let b = &b;
        async move {
            let mut c = v5_unchecked(b, id, move |o| {
                o.set_credentials(id, forged);
            });
            assert!(
                c.connack().await.is_err(),
                "{id}: a forged token is refused"
            );
        }
    };
    refused("intruder-1").await;
    nats.stop().await;
    refused("intruder-2").await;
    nats.start_again().await;
    drained(&edge).await;

    let js = nats.jetstream().await;
    let lines = eventually(Duration::from_secs(20), "both refusals shipped", || {
        let js = js.clone();
        async move {
            let lines = edge_lines(&js).await;
            let refusals = lines
                .into_iter()
                .filter(|(_, v)| v["message"] == "refusing CONNECT: authentication")
                .collect::<Vec<_>>();
            (refusals.len() >= 2).then_some(refusals)
        }
    })
    .await;
    let ids: Vec<&str> = lines
        .iter()
        .map(|(_, v)| v["fields"]["client_id"].as_str().expect("client_id field"))
        .collect();
    assert_eq!(ids, ["intruder-1", "intruder-2"], "once each, in order");
    for (m, v) in &lines {
        assert_eq!(v["level"], "warn");
        assert_eq!(v["component"], "edge");
        assert!(
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("plantd_edge"))
        );
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(m.header(headers::TOPIC), Some("$plantd/log/plantd/edge"));
        assert_eq!(m.header("Plantd-User-level"), Some("warn"));
        assert_eq!(m.header(headers::CONTENT_TYPE), Some("application/json"));
    }
    // Nothing of it in telemetry.
    let telemetry = stored(&js, streams::TELEMETRY, "plantd.plant-1.up.>").await;
    assert!(telemetry.is_empty());
}
