//! Telemetry alerts from real devices against `plantd up`: a device with a
//! token publishes readings over MQTT to the edge, the alert engine judges
//! them, the notifier POSTs signed webhooks to a local receiver.
//!
//! - a threshold held for a duration goes pending, fires no sooner than
//!   its `for` after, and resolves on a low value (a plain number payload
//!   and a JSON field path);
//! - an absence rule stays quiet while the device publishes and fires
//!   once it has been silent for `after`; the device coming back resolves
//!   it;
//! - an acknowledged alert stops repeating; a silenced one is stored
//!   marked `silenced` and not POSTed.
//!
//! Every wait is [`eventually`]; durations are asserted on the records'
//! own times (the engine's clock), never on how long the test waited.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Up, connect_device, plantd, register_device, run, stderr, stdout, up_logged_in};
use plantd_alerts::record::{AlertRecord, AlertState, RecordKind};
use plantd_testkit::eventually;
use plantd_testkit::webhook::{Receiver, Request};
use rumqttc::{AsyncClient, QoS};
use serde_json::Value;
use time::OffsetDateTime;

/// The bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

/// The webhook channel's signing secret.
const SECRET: &str = "device alerts test secret, 32+ bytes";

/// `plantd up` with a logged-in `plantd`, a webhook channel `ops` on a
/// local receiver, rules applied, and a device of site `local` allowed to
/// publish on `line1/#` and `line2/#`.
struct Plant {
    /// Its data directory (kept until the end).
    _data: tempfile::TempDir,
    /// `plantd up` (killed on drop).
    up: Up,
    /// `plantd`'s configuration directory (the session).
    config: tempfile::TempDir,
    /// Where channel `ops` POSTs.
    receiver: Receiver,
    /// The device's MQTT client id.
    device: String,
    /// Its access token.
    token: String,
}

impl Plant {
    /// Starts it all with `rules` (a JSON array of rules) applied.
    async fn start(rules: &Value) -> Plant {
        let data = tempfile::tempdir().expect("tmp");
        let (up, config) = up_logged_in(data.path(), &[]).await;
        let receiver = Receiver::start().await;
        let plant_dir = config.path().to_owned();
        let channel = write(
            &plant_dir,
            "channel.json",
            &serde_json::json!({"name": "ops", "webhook": {"url": receiver.url(), "secret": SECRET}}),
        );
        let out = run(plantd(&plant_dir)
            .args(["channels", "apply", "-f"])
            .arg(&channel));
        assert!(out.status.success(), "{}", stderr(&out));
        let file = write(&plant_dir, "rules.json", rules);
        let out = run(plantd(&plant_dir).args(["rules", "apply", "-f"]).arg(&file));
        assert!(out.status.success(), "{}", stderr(&out));
        let (device, token) =
            register_device(&up, data.path(), "sensor", &["line1/#", "line2/#"]).await;
        Plant {
            _data: data,
            up,
            config,
            receiver,
            device,
            token,
        }
    }

    /// The device, connected: its client and event-loop task.
    async fn connect(&self) -> (AsyncClient, tokio::task::JoinHandle<()>) {
        connect_device(&self.up, &self.device, &self.token).await
    }

    /// The instances of `rule` (`plantd alerts list --json`).
    fn alerts_of(&self, rule: &str) -> Vec<Value> {
        let out = run(plantd(self.config.path()).args(["alerts", "list", "--json"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("JSON ({e}): {}", stdout(&out)));
        v["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .filter(|a| a["rule"] == rule)
            .cloned()
            .collect()
    }

    /// Waits for the instance of `rule` on `key` to be in `state`; its
    /// listing.
    async fn wait_state(&self, rule: &str, key: &str, state: AlertState) -> Value {
        let want = serde_json::to_value(state).expect("state");
        eventually(WAIT, &format!("{rule} [{key}] {want}"), || async {
            self.alerts_of(rule)
                .into_iter()
                .find(|a| a["key"] == key && a["state"] == want)
        })
        .await
    }

    /// An instance's records in `PLANTD_ALERTS`, oldest first
    /// (`plantd alerts history --json`).
    fn history(&self, id: &str) -> Vec<AlertRecord> {
        let out = run(plantd(self.config.path()).args(["alerts", "history", id, "--json"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("JSON ({e}): {}", stdout(&out)));
        serde_json::from_value(v["records"].clone()).expect("alert records")
    }

    /// Waits until instance `id`'s history has a record `what` accepts;
    /// the whole history then.
    async fn wait_record(
        &self,
        id: &str,
        what: &str,
        accept: impl Fn(&AlertRecord) -> bool,
    ) -> Vec<AlertRecord> {
        eventually(WAIT, what, || async {
            let records = self.history(id);
            records.iter().any(&accept).then_some(records)
        })
        .await
    }
}

/// Writes `v` to `<dir>/<name>`; the path.
fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).expect("write");
    path
}

/// Publishes `payload` on `topic` at least once.
async fn publish(client: &AsyncClient, topic: &str, payload: &str) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_owned())
        .await
        .expect("publish");
}

/// True for the transition `from → to`.
fn moved(r: &AlertRecord, from: AlertState, to: AlertState) -> bool {
    r.kind == RecordKind::Transition && r.from == from && r.to == to
}

/// `(event, record id)` of a webhook POST, after checking it is a signed
/// POST of channel `ops`.
fn notice(r: &Request) -> (String, String) {
    assert_eq!(r.method, "POST");
    assert!(r.verify(SECRET), "a valid signature: {r:?}");
    let body = r.json();
    assert_eq!(body["channel"], "ops");
    (
        body["event"].as_str().expect("event").to_owned(),
        body["record"]["id"].as_str().expect("record id").to_owned(),
    )
}

/// Seconds from `a` to `b`.
fn secs(a: OffsetDateTime, b: OffsetDateTime) -> f64 {
    (b - a).as_seconds_f64()
}

// Multi-threaded: the `plantd` runs block one worker while the MQTT event
// loop and the webhook receiver run on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_held_for_its_duration_fires_then_resolves_once_each() {
    let plant = Plant::start(&serde_json::json!([
        {"id": "hot", "for": "2s", "group_by": ["topic"], "notify": ["ops"],
         "condition": {"kind": "threshold", "topic": "line1/+/temp", "op": ">", "value": 80}},
        {"id": "hot-json", "for": "2s", "group_by": ["topic"], "notify": ["ops"],
         "condition": {"kind": "threshold", "topic": "line2/+/env", "field": "probe.t", "op": ">", "value": 80}}
    ]))
    .await;
    let (client, pump) = plant.connect().await;

    // 91 then 85: above 80, not yet for 2 s.
    publish(&client, "line1/oven/temp", "91").await;
    publish(&client, "line1/oven/temp", "85").await;
    publish(&client, "line2/oven/env", r#"{"probe": {"t": 91}}"#).await;
    publish(
        &client,
        "line2/oven/env",
        r#"{"probe": {"t": 85}, "rh": 40}"#,
    )
    .await;
    let cases = [
        ("hot", "topic=line1/oven/temp", "line1/oven/temp", "20"),
        (
            "hot-json",
            "topic=line2/oven/env",
            "line2/oven/env",
            r#"{"probe": {"t": 20}}"#,
        ),
    ];
    let mut ids = Vec::new();
    for (rule, key, _, _) in cases {
        let seen = eventually(WAIT, &format!("{rule} seen"), || async {
            plant
                .alerts_of(rule)
                .into_iter()
                .find(|a| a["key"] == key && a["state"] != "inactive")
        })
        .await;
        assert_eq!(seen["state"], "pending", "{rule}: {seen}");
        ids.push(seen["id"].as_str().expect("id").to_owned());
    }

    // Firing once the 2 s are over, on the engine's clock.
    for ((rule, key, topic, _), id) in cases.iter().zip(&ids) {
        plant.wait_state(rule, key, AlertState::Firing).await;
        let records = plant.history(id);
        assert_eq!(records.len(), 2, "{rule}: {records:#?}");
        let (pending, firing) = (&records[0], &records[1]);
        assert!(
            moved(pending, AlertState::Inactive, AlertState::Pending),
            "{pending:?}"
        );
        assert!(
            moved(firing, AlertState::Pending, AlertState::Firing),
            "{firing:?}"
        );
        assert!(
            secs(pending.at, firing.at) >= 2.0,
            "{rule} fired {}s after it went pending (for: 2s)",
            secs(pending.at, firing.at)
        );
        assert_eq!(firing.value, Some(85.0), "{rule}: the newest reading");
        let evidence: Vec<Option<f64>> = firing.evidence.iter().map(|e| e.value).collect();
        assert_eq!(evidence, [Some(91.0), Some(85.0)], "{rule}");
        assert!(firing.evidence.iter().all(|e| e.topic == *topic));
        assert_eq!(firing.labels["site"], "local");
    }

    // A low reading resolves each.
    for (_, _, topic, low) in cases {
        publish(&client, topic, low).await;
    }
    for ((rule, _, _, _), id) in cases.iter().zip(&ids) {
        let records = plant
            .wait_record(id, &format!("{rule} resolved"), |r| {
                moved(r, AlertState::Firing, AlertState::Inactive)
            })
            .await;
        assert_eq!(records.len(), 3, "{rule}: {records:#?}");
        assert_eq!(records[2].value, Some(20.0));
    }

    // One signed firing and one signed resolved POST per alert; pending
    // is never sent.
    let got = plant.receiver.wait_for(4, WAIT).await;
    let mut notices: Vec<(String, String)> = got.iter().map(notice).collect();
    notices.sort();
    let mut want = Vec::new();
    for id in &ids {
        let records = plant.history(id);
        want.push(("firing".to_owned(), records[1].id.clone()));
        want.push(("resolved".to_owned(), records[2].id.clone()));
    }
    want.sort();
    assert_eq!(notices, want);
    pump.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absence_rule_fires_only_once_the_device_is_silent_and_resolves_when_it_returns() {
    let plant = Plant::start(&serde_json::json!([
        {"id": "press-silent", "notify": ["ops"],
         "condition": {"kind": "absence", "topic": "line1/press", "after": "3s"}}
    ]))
    .await;
    let (client, pump) = plant.connect().await;

    // Every 500 ms for 5 s: longer than `after`, never silent that long.
    let mut pace = tokio::time::interval(Duration::from_millis(500));
    let mut last = OffsetDateTime::now_utc();
    for i in 0..10 {
        pace.tick().await;
        last = OffsetDateTime::now_utc();
        publish(
            &client,
            "line1/press",
            &format!("{}", 4.0 + f64::from(i) / 10.0),
        )
        .await;
    }
    let instance = eventually(WAIT, "the absence instance", || async {
        plant.alerts_of("press-silent").into_iter().next()
    })
    .await;
    let id = instance["id"].as_str().expect("id").to_owned();
    assert_eq!(instance["state"], "inactive", "{instance}");
    let records = plant.history(&id);
    assert!(
        records.is_empty(),
        "no record while it publishes: {records:#?}"
    );

    // The device goes away: silent for 3 s, the alert fires.
    client.disconnect().await.expect("disconnect");
    tokio::time::timeout(WAIT, pump)
        .await
        .expect("the connection ends")
        .expect("event loop");
    let records = plant
        .wait_record(&id, "the absence firing", |r| {
            moved(r, AlertState::Inactive, AlertState::Firing)
        })
        .await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let firing = &records[0];
    assert!(
        secs(last, firing.at) >= 3.0,
        "fired {}s after the last publish (after: 3s)",
        secs(last, firing.at)
    );

    // It comes back: resolved.
    let (client, pump) = plant.connect().await;
    publish(&client, "line1/press", "4.2").await;
    let records = plant
        .wait_record(&id, "the absence resolved", |r| {
            moved(r, AlertState::Firing, AlertState::Inactive)
        })
        .await;
    assert_eq!(records.len(), 2, "{records:#?}");

    let got = plant.receiver.wait_for(2, WAIT).await;
    let notices: Vec<(String, String)> = got.iter().map(notice).collect();
    assert_eq!(
        notices,
        [
            ("firing".to_owned(), records[0].id.clone()),
            ("resolved".to_owned(), records[1].id.clone())
        ]
    );
    pump.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acked_device_alert_stops_repeating_and_a_silenced_one_is_stored_not_sent() {
    let plant = Plant::start(&serde_json::json!([
        {"id": "hot", "for": "2s", "repeat_interval": "1s", "group_by": ["topic"], "notify": ["ops"],
         "condition": {"kind": "threshold", "topic": "line1/+/temp", "op": ">", "value": 80}}
    ]))
    .await;
    let (client, pump) = plant.connect().await;
    let root = plant.config.path();

    // Oven A fires and, unacknowledged, repeats.
    publish(&client, "line1/a/temp", "91").await;
    let a = plant
        .wait_state("hot", "topic=line1/a/temp", AlertState::Firing)
        .await;
    let a = a["id"].as_str().expect("id").to_owned();
    plant
        .wait_record(&a, "a repeat", |r| r.kind == RecordKind::Repeat)
        .await;

    let out = run(plantd(root).args(["alerts", "ack", &a, "--note", "door open, cooling"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let records = plant
        .wait_record(&a, "the ack", |r| r.kind == RecordKind::Ack)
        .await;
    let ack = records
        .iter()
        .find(|r| r.kind == RecordKind::Ack)
        .expect("ack");
    let acknowledgement = ack.ack.as_ref().expect("who and why");
    assert_eq!(acknowledgement.note, "door open, cooling");

    // Oven B goes pending then firing (2 s): time passes on the engine's
    // clock, past A's repeat interval twice over. Then A cools down.
    publish(&client, "line1/b/temp", "95").await;
    plant
        .wait_state("hot", "topic=line1/b/temp", AlertState::Firing)
        .await;
    publish(&client, "line1/a/temp", "20").await;
    let records = plant
        .wait_record(&a, "A resolved", |r| {
            moved(r, AlertState::Firing, AlertState::Inactive)
        })
        .await;
    let acked = records
        .iter()
        .position(|r| r.kind == RecordKind::Ack)
        .expect("ack");
    let resolved = records.last().expect("resolution");
    assert!(moved(resolved, AlertState::Firing, AlertState::Inactive));
    assert!(
        secs(records[acked].at, resolved.at) >= 2.0,
        "the ack was {}s before the resolution",
        secs(records[acked].at, resolved.at)
    );
    assert!(
        records[acked + 1..records.len() - 1].is_empty(),
        "nothing between the ack and the resolution: {records:#?}"
    );

    // POSTs for A: firing, its repeats, the ack, the resolution; no repeat
    // after the ack.
    let resolution_id = resolved.id.clone();
    eventually(WAIT, "A's resolution POSTed", || async {
        plant
            .receiver
            .requests()
            .iter()
            .any(|r| notice(r).1 == resolution_id)
            .then_some(())
    })
    .await;
    let events: Vec<String> = plant
        .receiver
        .requests()
        .iter()
        .map(notice)
        .filter(|(_, id)| records.iter().any(|r| r.id == *id))
        .map(|(event, _)| event)
        .collect();
    let after_ack: Vec<&str> = events
        .iter()
        .skip_while(|e| *e != "ack")
        .map(String::as_str)
        .collect();
    assert_eq!(
        events.first().map(String::as_str),
        Some("firing"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == "repeat"), "{events:?}");
    assert_eq!(after_ack, ["ack", "resolved"], "{events:?}");

    // Silence everything on site local: A fires again, stored silenced and
    // not POSTed.
    let out = run(plantd(root).args([
        "alerts",
        "silence",
        "--match",
        "site=local",
        "--for",
        "2h",
        "--comment",
        "maintenance",
        "--json",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let silence: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let silence = silence["id"].as_str().expect("silence id").to_owned();
    let before = records.len();
    publish(&client, "line1/a/temp", "93").await;
    let records = plant
        .wait_record(&a, "A firing again", |r| {
            r.n > resolved.n && moved(r, AlertState::Pending, AlertState::Firing)
        })
        .await;
    let again = records[before..]
        .iter()
        .find(|r| r.to == AlertState::Firing && r.kind == RecordKind::Transition)
        .expect("the new firing")
        .clone();
    assert!(again.silenced, "stored silenced: {again:?}");

    // End the silence and cool A down: the resolution is POSTed, after
    // (per alert, in stream order) the silenced firing was passed over.
    let out = run(plantd(root).args(["alerts", "unsilence", &silence]));
    assert!(out.status.success(), "{}", stderr(&out));
    publish(&client, "line1/a/temp", "20").await;
    let records = plant
        .wait_record(&a, "A resolved again", |r| {
            r.n > again.n && moved(r, AlertState::Firing, AlertState::Inactive)
        })
        .await;
    let second = records.last().expect("resolution").id.clone();
    eventually(WAIT, "the second resolution POSTed", || async {
        plant
            .receiver
            .requests()
            .iter()
            .any(|r| notice(r).1 == second)
            .then_some(())
    })
    .await;
    let sent: Vec<(String, String)> = plant.receiver.requests().iter().map(notice).collect();
    assert!(
        !sent.iter().any(|(_, id)| *id == again.id),
        "the silenced firing was POSTed: {sent:?}"
    );
    pump.abort();
}
