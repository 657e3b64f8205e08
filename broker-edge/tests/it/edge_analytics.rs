//! Analytics at the edge, with the real `plantd-edge` binary, a real
//! nats-server and rumqttc 5.0 clients:
//!
//! * a rule placed at the edge runs while the uplink is down: a local
//!   subscriber of `$plantd/agg/#` sees each result at once, and when the
//!   link returns each result is in `PLANTD_AGGREGATES` exactly once, on
//!   `plantd.<site>.agg.<rule>.<key>`;
//! * rules follow the bucket without a restart (added, changed, removed),
//!   only the owner's rules placed at this site's edge run (not a cloud
//!   rule, not another site's, not another organisation's);
//! * the rules are kept on disk: an edge restarted without its uplink runs
//!   them;
//! * a threshold rule fires and clears at the edge with the uplink down: a
//!   local subscriber of `$plantd/alert/#` sees each at once, and when the
//!   link returns (both results reaching the alert manager together) it
//!   records the firing and the resolution in `PLANTD_ALERTS` exactly once
//!   each.

use crate::common;
use crate::edge_proc;

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use common::{TestBroker, V5, v5};
use edge_proc::{Edge, SITE, drained, metric, start_edge};
use plantd_analytics::{Output, Placement, Rule, Source, StoredRule};
use plantd_shared::streams::{self, ANALYTICS_RULES_BUCKET};
use plantd_testkit::{Nats, eventually};
use rumqttc::v5::mqttbytes::QoS;

pub(crate) const WITHIN: Duration = Duration::from_secs(20);

/// A rule of `org` written as SQL.
pub(crate) fn stored(
    org: &str,
    name: &str,
    at: Placement,
    sites: &[&str],
    sql: &str,
) -> StoredRule {
    StoredRule {
        org: org.into(),
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
        at,
        enabled: true,
        rule: Rule::from_sql(name, sql).expect("rule compiles"),
        source: Source::Sql(sql.to_owned()),
        updated_by: "u-test".into(),
        updated_at: "2026-12-06T18:00:00Z".into(),
    }
}

/// The average of each `line1/<machine>/temp` per second.
pub(crate) const AVG: &str =
    r#"SELECT avg(value), count(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1s)"#;

/// Writes `rule` under `<org>.<name>` as `/v1/analytics/rules` does.
pub(crate) async fn put(js: &jetstream::Context, rule: &StoredRule) {
    let kv = js
        .get_key_value(ANALYTICS_RULES_BUCKET)
        .await
        .expect("rules bucket");
    kv.put(rule.key(), serde_json::to_vec(rule).expect("json").into())
        .await
        .expect("put rule");
}

async fn delete(js: &jetstream::Context, key: &str) {
    let kv = js
        .get_key_value(ANALYTICS_RULES_BUCKET)
        .await
        .expect("rules bucket");
    kv.delete(key).await.expect("delete rule");
}

/// Waits until the edge runs `n` rules.
pub(crate) async fn runs(edge: &Edge, n: usize) {
    eventually(WITHIN, &format!("the edge running {n} rules"), || async {
        (metric(edge, "plantd_analytics_rules").await == Some(n as f64)).then_some(())
    })
    .await;
}

/// The edge of site `plant-1`, owned by `acme`, anonymous clients allowed.
async fn edge(nats: &Nats, data: &Path) -> (Edge, TestBroker) {
    let edge = start_edge(nats, data, &["--org", "acme"]).await;
    let broker = TestBroker::external(edge.mqtt, edge.http);
    (edge, broker)
}

pub(crate) async fn client(b: &TestBroker, id: &str) -> V5 {
    v5(b, id, |_| {}).await.0
}

/// Publishes `value` at QoS 1 and waits for the PUBACK.
pub(crate) async fn reading(device: &mut V5, topic: &str, value: &str) {
    device
        .client
        .publish(topic, QoS::AtLeastOnce, false, value.to_owned())
        .await
        .expect("publish queued");
    device.puback().await;
}

/// The next result a subscriber of `$plantd/agg/#` receives: its topic
/// and the `Output` it carries.
pub(crate) async fn result(hmi: &mut V5) -> (String, Output) {
    let p = hmi.publish().await;
    let topic = String::from_utf8(p.topic.to_vec()).expect("utf-8 topic");
    let out = serde_json::from_slice(&p.payload).expect("an Output as JSON");
    (topic, out)
}

/// Asserts that no result arrives for longer than a window and a tick.
pub(crate) async fn no_result(hmi: &mut V5) {
    if let Ok(p) = tokio::time::timeout(Duration::from_millis(2_500), hmi.publish()).await {
        panic!("unexpected result on {:?}", p.topic);
    }
}

/// Every result stored in `PLANTD_AGGREGATES` for the site: subject and
/// `Output`.
async fn aggregates(js: &jetstream::Context) -> Vec<(String, Output)> {
    let stream = js.get_stream(streams::AGGREGATES).await.expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("stored result");
        out.push((
            m.subject.to_string(),
            serde_json::from_slice(&m.payload).expect("an Output as JSON"),
        ));
    }
    out
}

#[tokio::test]
async fn an_edge_rule_runs_while_the_uplink_is_down_and_each_result_goes_up_once() {
    let mut nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    put(
        &js,
        &stored("acme", "avg_temp", Placement::Edge, &[SITE], AVG),
    )
    .await;
    // Not for this edge: a cloud rule, another site's, another owner's.
    put(
        &js,
        &stored("acme", "cloud_avg", Placement::Cloud, &[SITE], AVG),
    )
    .await;
    put(
        &js,
        &stored("acme", "other_site", Placement::Edge, &["plant-2"], AVG),
    )
    .await;
    put(
        &js,
        &stored("initech", "theirs", Placement::Edge, &[SITE], AVG),
    )
    .await;
    let data = tempfile::tempdir().expect("tmp");
    let (edge, b) = edge(&nats, data.path()).await;
    runs(&edge, 1).await;
    let mut hmi = client(&b, "hmi").await;
    hmi.sub("$plantd/agg/#", QoS::AtLeastOnce).await;
    let mut plc = client(&b, "plc-1").await;

    nats.stop().await;
    let mut seen = Vec::new();
    for (machine, value) in [("m1", "20"), ("m2", "30.5"), ("m1", "22")] {
        reading(&mut plc, &format!("line1/{machine}/temp"), value).await;
        let (topic, out) = result(&mut hmi).await;
        assert_eq!(topic, format!("$plantd/agg/avg_temp/line1/{machine}/temp"));
        assert_eq!(out.rule, "avg_temp");
        assert_eq!(out.key, format!("line1/{machine}/temp"));
        assert_eq!(
            out.values["avg_value"],
            value.parse::<f64>().expect("number")
        );
        assert_eq!(out.values["count_value"], 1.0);
        assert_eq!(out.window_end - out.window_start, 1_000);
        seen.push(out);
    }

    nats.start_again().await;
    drained(&edge).await;
    let js = nats.jetstream().await;
    let stored = aggregates(&js).await;
    assert_eq!(
        stored.len(),
        seen.len(),
        "each result exactly once, and only this edge rule's: {stored:?}"
    );
    for ((subject, out), local) in stored.iter().zip(&seen) {
        assert_eq!(out, local, "the result as seen locally");
        assert_eq!(
            subject,
            &plantd_shared::subject::aggregate_subject(
                &plantd_shared::subject::Site::new(SITE).expect("site"),
                &out.rule,
                &out.key
            )
        );
    }
    // The readings went up too, and nothing else came of them locally.
    let telemetry = js.get_stream(streams::TELEMETRY).await.expect("stream");
    assert_eq!(telemetry.get_info().await.expect("info").state.messages, 3);
    no_result(&mut hmi).await;
}

#[tokio::test]
async fn rules_follow_the_bucket_without_a_restart() {
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    let data = tempfile::tempdir().expect("tmp");
    let (edge, b) = edge(&nats, data.path()).await;
    runs(&edge, 0).await;
    let mut hmi = client(&b, "hmi").await;
    hmi.sub("$plantd/agg/#", QoS::AtLeastOnce).await;
    let mut plc = client(&b, "plc-1").await;

    put(
        &js,
        &stored("acme", "avg_temp", Placement::Edge, &[SITE], AVG),
    )
    .await;
    runs(&edge, 1).await;
    reading(&mut plc, "line1/m1/temp", "20").await;
    let (_, out) = result(&mut hmi).await;
    assert_eq!(out.values["avg_value"], 20.0);

    // Changed: the maximum instead; the new definition answers.
    let max = r#"SELECT max(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1s)"#;
    put(
        &js,
        &stored("acme", "avg_temp", Placement::Edge, &[SITE], max),
    )
    .await;
    let cache = data.path().join(plantd_edge::analytics::RULES_FILE);
    eventually(WITHIN, "the changed rule cached", || async {
        let text = std::fs::read_to_string(&cache).ok()?;
        text.contains("max_value").then_some(())
    })
    .await;
    reading(&mut plc, "line1/m1/temp", "25").await;
    let (_, out) = result(&mut hmi).await;
    assert_eq!(out.values.get("max_value"), Some(&25.0), "{out:?}");
    assert!(!out.values.contains_key("avg_value"));

    // Moved to the cloud: no longer run here.
    put(
        &js,
        &stored("acme", "avg_temp", Placement::Cloud, &[SITE], max),
    )
    .await;
    runs(&edge, 0).await;
    reading(&mut plc, "line1/m1/temp", "26").await;
    no_result(&mut hmi).await;

    // Back at the edge, then deleted.
    put(
        &js,
        &stored("acme", "avg_temp", Placement::Edge, &[SITE], AVG),
    )
    .await;
    runs(&edge, 1).await;
    delete(&js, "acme.avg_temp").await;
    runs(&edge, 0).await;
    reading(&mut plc, "line1/m1/temp", "27").await;
    no_result(&mut hmi).await;
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).expect("cache")).expect("json");
    assert_eq!(cached["rules"], serde_json::json!({}), "the cache follows");
}

#[tokio::test]
async fn rules_survive_a_restart_without_the_uplink() {
    let mut nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    put(
        &js,
        &stored("acme", "avg_temp", Placement::Edge, &[SITE], AVG),
    )
    .await;
    put(
        &js,
        &stored("acme", "cloud_avg", Placement::Cloud, &[SITE], AVG),
    )
    .await;
    let data = tempfile::tempdir().expect("tmp");
    let (mut edge, _) = edge(&nats, data.path()).await;
    runs(&edge, 1).await;
    edge.proc
        .terminate(Duration::from_secs(10))
        .await
        .expect("the edge stops");

    nats.stop().await;
    let (edge, b) = self::edge(&nats, data.path()).await;
    runs(&edge, 1).await;
    let mut hmi = client(&b, "hmi").await;
    hmi.sub("$plantd/agg/#", QoS::AtLeastOnce).await;
    let mut plc = client(&b, "plc-1").await;
    reading(&mut plc, "line1/m1/temp", "21.5").await;
    let (topic, out) = result(&mut hmi).await;
    assert_eq!(topic, "$plantd/agg/avg_temp/line1/m1/temp");
    assert_eq!(out.values["avg_value"], 21.5);
    no_result(&mut hmi).await;

    nats.start_again().await;
    drained(&edge).await;
    let stored = aggregates(&nats.jetstream().await).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1, out);
}

/// Pressure above 8 for a second, per gauge, as JSON (a pattern).
const HELD: &str = r#"{"name": "press_held", "from": "line1/+/pressure",
    "operator": {"pattern": {"threshold":
        {"when": {"field": "value", "op": "gt", "value": 8}, "for": "1s"}}}}"#;

/// The alert manager's rule for `press_held`, as the analytics CRUD
/// creates it for a rule with an `alert` section.
const ALERT: &str = r#"{"id": "analytics-press_held", "severity": "critical",
    "condition": {"kind": "analytics", "rule": "press_held"}}"#;

/// Every record in `PLANTD_ALERTS`.
async fn alert_records(js: &jetstream::Context) -> Vec<plantd_alerts::AlertRecord> {
    let stream = js.get_stream(streams::ALERTS).await.expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.expect("record");
        out.push(serde_json::from_slice(&m.payload).expect("an alert record"));
    }
    out
}

#[tokio::test]
async fn a_threshold_fires_at_the_edge_offline_and_is_one_alert_when_the_link_returns() {
    let mut nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    plantd_shared::sites::Sites::open(&js)
        .await
        .expect("sites")
        .register(
            &plantd_shared::subject::Site::new(SITE).expect("site"),
            "acme",
            "",
        )
        .await
        .expect("register the site");
    let alerts = plantd_alerts::Stores::open(&js)
        .await
        .expect("alert stores");
    alerts
        .put_rule(
            "acme",
            &plantd_alerts::Rule::from_json(ALERT.as_bytes()).expect("alert rule"),
        )
        .await
        .expect("put alert rule");
    let rule: Rule = serde_json::from_str(HELD).expect("a threshold rule");
    put(
        &js,
        &StoredRule {
            org: "acme".into(),
            sites: vec![SITE.into()],
            at: Placement::Edge,
            enabled: true,
            rule,
            source: Source::Json,
            updated_by: "u-test".into(),
            updated_at: "2026-12-06T18:00:00Z".into(),
        },
    )
    .await;
    let data = tempfile::tempdir().expect("tmp");
    let (edge, b) = edge(&nats, data.path()).await;
    runs(&edge, 1).await;
    let mut siren = client(&b, "siren").await;
    siren.sub("$plantd/alert/#", QoS::AtLeastOnce).await;
    let mut gauge = client(&b, "gauge-1").await;

    nats.stop().await;
    reading(&mut gauge, "line1/p1/pressure", "8.6").await;
    let fired = siren.publish().await;
    assert_eq!(
        &fired.topic[..],
        b"$plantd/alert/press_held/line1/p1/pressure"
    );
    let fire: Output = serde_json::from_slice(&fired.payload).expect("an Output");
    assert_eq!(
        fire.signal,
        Some(plantd_analytics::Signal::Fire),
        "{fire:?}"
    );
    assert_eq!(fire.key, "line1/p1/pressure");

    // Back under the bound, still offline: cleared at the edge at once.
    reading(&mut gauge, "line1/p1/pressure", "7.9").await;
    let cleared = siren.publish().await;
    let clear: Output = serde_json::from_slice(&cleared.payload).expect("an Output");
    assert_eq!(
        clear.signal,
        Some(plantd_analytics::Signal::Clear),
        "{clear:?}"
    );
    siren.no_publish().await;

    // The cloud comes back (this test's NATS is the site's link and the
    // cloud at once), and the alert manager with it.
    // The edge forwards both results before the alert manager starts, so
    // its first batch holds the fire and its clear together.
    nats.start_again().await;
    let js = nats.jetstream().await;
    drained(&edge).await;
    let mut trigger = plantd_trigger::Trigger::new(js.clone());
    let _alert_manager = plantd_alerts::start(
        &js,
        &mut trigger,
        std::sync::Arc::new(plantd_alerts::SystemClock),
        Duration::from_secs(1),
        plantd_trigger::ConsumerSettings {
            max_wait: Duration::from_millis(10),
            ..plantd_trigger::ConsumerSettings::default()
        },
    )
    .await
    .expect("the alert manager starts");
    // It fired and resolved, once each.
    let records = eventually(WITHIN, "the firing and the resolution", || {
        let js = js.clone();
        async move {
            let r = alert_records(&js).await;
            (r.len() >= 2).then_some(r)
        }
    })
    .await;
    plantd_testkit::wait::drained(&js, streams::AGGREGATES, "alerts_PLANTD_AGGREGATES", WITHIN)
        .await;
    let records = if records.len() == 2 {
        alert_records(&js).await
    } else {
        records
    };
    assert_eq!(records.len(), 2, "one firing, one resolution: {records:?}");
    assert_eq!(
        (records[0].from, records[0].to),
        (
            plantd_alerts::AlertState::Inactive,
            plantd_alerts::AlertState::Firing
        )
    );
    assert_eq!(records[0].rule, "analytics-press_held");
    assert_eq!(records[0].site, SITE);
    assert_eq!(
        records[0].labels.get("key").map(String::as_str),
        Some("line1/p1/pressure")
    );
    assert!(records[1].is_resolution(), "{:?}", records[1]);
    let results = aggregates(&js).await;
    assert_eq!(results.len(), 2, "fire and clear stored once: {results:?}");
}

/// The engine's state survives a restart: a window open when the edge
/// stopped (checkpointed at shutdown) closes after it with the reading it
/// had, and its result is stored once.
#[tokio::test]
async fn an_open_window_survives_a_restart() {
    const TEN_S: &str =
        r#"SELECT avg(value), count(value) FROM "line1/+/temp" GROUP BY topic, TUMBLE(10s)"#;
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    put(
        &js,
        &stored("acme", "avg10", Placement::Edge, &[SITE], TEN_S),
    )
    .await;
    let data = tempfile::tempdir().expect("tmp");
    let (mut edge, b) = edge(&nats, data.path()).await;
    runs(&edge, 1).await;
    let mut plc = client(&b, "plc-1").await;
    // Early in a window, so it is still open when the edge has stopped.
    eventually(WITHIN, "the start of a 10 s window", || async {
        let into = plantd_edge::analytics::feed::now_ms().rem_euclid(10_000);
        (3_000..6_000).contains(&into).then_some(())
    })
    .await;
    reading(&mut plc, "line1/m1/temp", "20").await;
    drop(plc);
    edge.proc
        .terminate(Duration::from_secs(10))
        .await
        .expect("the edge stops");
    assert!(
        data.path()
            .join(plantd_edge::analytics::STATE_FILE)
            .exists(),
        "checkpointed at shutdown"
    );

    let (edge, b) = self::edge(&nats, data.path()).await;
    let mut hmi = client(&b, "hmi").await;
    hmi.sub("$plantd/agg/#", QoS::AtLeastOnce).await;
    let (_, out) = result(&mut hmi).await;
    assert_eq!(out.values["avg_value"], 20.0, "{out:?}");
    assert_eq!(out.values["count_value"], 1.0);
    drained(&edge).await;
    let stored = aggregates(&nats.jetstream().await).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
}

/// `#` never covers `$` topics: a device subscribing to the edge's alert
/// signals needs a grant naming them.
#[tokio::test]
async fn alert_signals_need_a_grant_naming_them() {
    use plantd_shared::jwt::{SigningKey, jwks_of};
    let nats = Nats::start_with_streams().await;
    let key = SigningKey::generate_ed25519("k1").expect("key");
    let dir = tempfile::tempdir().expect("tmp");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&jwks_of([&key]).expect("jwks")).expect("json"),
    )
    .expect("write JWKS");
    let data = tempfile::tempdir().expect("tmp");
    let edge = start_edge(
        &nats,
        data.path(),
        &[
            "--org",
            "acme",
            "--jwks-file",
            jwks.to_str().expect("utf-8"),
        ],
    )
    .await;
    let b = TestBroker::external(edge.mqtt, edge.http);
    let device = |id: &'static str, subscribe: &'static [&'static str]| {
        let token = key
            .sign(&common::device_claims(id, SITE, &[], subscribe))
            .expect("sign");
        let b = &b;
        async move {
            v5(b, id, move |o| {
                o.set_credentials(id, token);
            })
            .await
            .0
        }
    };
    let mut everything = device("hmi-1", &["#"]).await;
    let refused = everything.sub("$plantd/alert/#", QoS::AtLeastOnce).await;
    assert_eq!(
        refused.return_codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::NotAuthorized]
    );
    let mut siren = device("siren-1", &["$plantd/alert/#"]).await;
    let granted = siren.sub("$plantd/alert/#", QoS::AtLeastOnce).await;
    assert!(
        matches!(
            granted.return_codes[..],
            [rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)]
        ),
        "{granted:?}"
    );
}
