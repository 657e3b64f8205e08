//! Edge analytics exactly once across SIGKILL, with the real `plantd-edge`
//! binary, a real nats-server and a rumqttc 5.0 device: a tumbling
//! aggregate placed at the edge, a device publishing numbered readings at
//! QoS 1 across many windows, the edge SIGKILLed at random points three
//! times and started again on the same data directory. At the end
//! `PLANTD_AGGREGATES` holds exactly what a reference
//! `plantd_analytics::Engine` computes from the readings the edge stored
//! (`PLANTD_TELEMETRY`, in order — a reading the device resent after a
//! crash is a second reading there too): none missing, none twice. The
//! journal's segments are small, so the uplink's acknowledgements would
//! delete records the engine still needs, were they not held.
//! See `docs/decisions/0031-edge-analytics-exactly-once.md`.

use crate::edge_proc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use edge_proc::{Edge, SITE, drained, metric, start_edge};
use plantd_analytics::{Engine, Event, Output, Placement, Rule, Source, StoredRule};
use plantd_shared::streams::{self, ANALYTICS_RULES_BUCKET};
use plantd_shared::subject::subject_to_topic;
use plantd_testkit::{Nats, eventually, wait};
use rand::{Rng, SeedableRng};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event as MqttEvent, MqttOptions};

const WITHIN: Duration = Duration::from_secs(30);

/// Readings the device publishes.
const READINGS: u64 = 600;

/// Event time between two readings: 20 readings per one-second window
/// (two machines: ten each).
const STEP_MS: i64 = 50;

const SQL: &str =
    r#"SELECT sum(value), count(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1s)"#;

/// The rule: event time from the payload's `ts`, so windows close by the
/// readings alone (the event times lie a day ahead of the wall clock: the
/// edge's tick closes nothing), as in the reference.
fn rule() -> Rule {
    let mut v = serde_json::to_value(Rule::from_sql("sum_temp", SQL).expect("rule")).expect("json");
    v["time"]["event_time"] = serde_json::json!(["ts"]);
    serde_json::from_value(v).expect("rule with event time")
}

async fn put_rule(js: &jetstream::Context) {
    let stored = StoredRule {
        org: "acme".into(),
        sites: vec![SITE.to_owned()],
        at: Placement::Edge,
        enabled: true,
        rule: rule(),
        source: Source::Json,
        updated_by: "u-test".into(),
        updated_at: "2026-12-06T19:00:00Z".into(),
    };
    let kv = js
        .get_key_value(ANALYTICS_RULES_BUCKET)
        .await
        .expect("rules bucket");
    kv.put(
        stored.key(),
        serde_json::to_vec(&stored).expect("json").into(),
    )
    .await
    .expect("put rule");
}

fn topic(i: u64) -> String {
    format!("line1/m{}/temp", i % 2)
}

fn payload(base: i64, i: u64) -> String {
    let ts = base + i64::try_from(i).expect("small") * STEP_MS;
    format!(r#"{{"value": {i}, "ts": {ts}}}"#)
}

/// Publishes readings `from..READINGS` one by one at QoS 1, recording in
/// `acked` how many the edge acknowledged; returns when done or when the
/// connection fails (the edge was killed).
async fn publish(port: u16, base: i64, acked: Arc<AtomicU64>) {
    let mut o = MqttOptions::new("plc-1", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(o, 100);
    loop {
        let i = acked.load(Ordering::SeqCst);
        if i >= READINGS {
            return;
        }
        if client
            .publish(topic(i), QoS::AtLeastOnce, false, payload(base, i))
            .await
            .is_err()
        {
            return;
        }
        loop {
            match events.poll().await {
                Ok(MqttEvent::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        acked.store(i + 1, Ordering::SeqCst);
    }
}

/// `(subject, payload)` of every message of `stream`, in order.
async fn contents(js: &jetstream::Context, name: &str) -> Vec<(String, bytes::Bytes)> {
    let stream = js.get_stream(name).await.expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("stored message");
        out.push((m.subject.to_string(), m.payload));
    }
    out
}

/// What the engine computes from the stored readings, by id.
fn reference(readings: &[(String, bytes::Bytes)]) -> BTreeMap<String, Output> {
    let mut engine = Engine::new(vec![rule()]).expect("engine");
    let mut out = BTreeMap::new();
    for (seq, (subject, payload)) in readings.iter().enumerate() {
        let topic = subject_to_topic(subject).expect("telemetry subject").topic;
        for o in engine.process(&Event {
            topic: topic.as_str(),
            payload,
            received_at: 0,
            stream_seq: seq as u64 + 1,
        }) {
            out.insert(o.id(), o);
        }
    }
    out
}

/// The edge, its journal in small segments: the uplink's acknowledgements
/// would delete the readings the engine has not checkpointed if the
/// journal did not hold them.
async fn edge(nats: &Nats, data: &std::path::Path, config: &std::path::Path) -> Edge {
    let config = config.to_str().expect("utf-8 path");
    start_edge(nats, data, &["--org", "acme", "--config", config]).await
}

#[tokio::test]
async fn edge_results_are_stored_exactly_once_across_sigkills() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    put_rule(&js).await;
    let data = tempfile::tempdir().expect("tmp");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "[journal]\nsegment_bytes = 4096\n").expect("config");
    // A day ahead, on a window boundary.
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let base = (now + 86_400_000) / 1_000 * 1_000;
    let acked = Arc::new(AtomicU64::new(0));

    let mut e = edge(&nats, data.path(), &config).await;
    eventually(WITHIN, "the edge running the rule", || async {
        (metric(&e, "plantd_analytics_rules").await == Some(1.0)).then_some(())
    })
    .await;
    for kill in 0..3 {
        let device = tokio::spawn(publish(e.mqtt.port(), base, acked.clone()));
        let before = acked.load(Ordering::SeqCst);
        // A random point, once the device is well under way.
        let at = rng.gen_range(30..120u64);
        eventually(WITHIN, "the device publishing", || async {
            (acked.load(Ordering::SeqCst) >= before + at).then_some(())
        })
        .await;
        // A random crash point: time passing, not synchronisation.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
        e.proc.kill().await.expect("SIGKILL");
        let _ = device.await;
        eprintln!(
            "kill {kill}: after {} readings acknowledged",
            acked.load(Ordering::SeqCst)
        );
        e = edge(&nats, data.path(), &config).await;
    }
    publish(e.mqtt.port(), base, acked.clone()).await;
    assert_eq!(
        acked.load(Ordering::SeqCst),
        READINGS,
        "every reading acknowledged"
    );
    drained(&e).await;

    let readings = contents(&js, streams::TELEMETRY).await;
    assert!(
        readings.len() as u64 >= READINGS,
        "{} readings stored",
        readings.len()
    );
    let expected = reference(&readings);
    assert!(
        expected.len() >= 50,
        "the readings span many windows: {}",
        expected.len()
    );
    // The results of the last readings follow them up; give them time,
    // then compare whatever is stored (a missing result fails below,
    // naming it).
    let enough = wait::at_most(Duration::from_secs(10), || async {
        let stored = contents(&js, streams::AGGREGATES).await;
        (stored.len() >= expected.len()).then_some(stored)
    })
    .await;
    let stored = match enough {
        Some(stored) => stored,
        None => contents(&js, streams::AGGREGATES).await,
    };
    let mut got: BTreeMap<String, Output> = BTreeMap::new();
    for (subject, body) in &stored {
        let out: Output = serde_json::from_slice(body).expect("an Output as JSON");
        assert!(
            subject.starts_with(&format!("plantd.{SITE}.agg.sum_temp.")),
            "{subject}"
        );
        let id = out.id();
        assert!(got.insert(id.clone(), out).is_none(), "{id} stored twice");
    }
    let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, not expected {extra:?}"
    );
    assert_eq!(got, expected, "each result as the reference computes it");
}
