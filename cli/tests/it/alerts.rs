//! `plantd rules` and `plantd alerts` against `plantd up`: a rule applied
//! from a file fires on a reading published to the site, is listed,
//! acknowledged with a note and shown in its history; silences are
//! created, listed and removed; an invalid rule file is refused naming
//! the field before anything is sent; an unknown rule exits 5. And the
//! whole path: a device's log lines over MQTT become an alert, notified
//! once to a signed webhook, resolved when the lines stop.

use crate::common;

use std::time::Duration;

use common::{connect_device, plantd, register_device, run, stderr, stdout, up_logged_in};
use plantd_testkit::eventually;
use plantd_testkit::webhook::Receiver;
use rumqttc::QoS;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn json_of(o: &std::process::Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("JSON ({e}): {}", stdout(o)))
}

#[tokio::test]
async fn rules_fire_alerts_that_are_acked_silenced_and_listed() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, root) = up_logged_in(data.path(), &[]).await;

    // An invalid file is refused here, naming the field; nothing is sent.
    let bad = root.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"id":"ok","condition":{"kind":"absence","topic":"a","after":"1m"}},
            {"id":"hot","for":"-1s","condition":{"kind":"threshold","topic":"line1/temp","op":">","value":80}}]"#,
    )
    .expect("write");
    let out = run(plantd(root.path()).args(["rules", "apply", "-f"]).arg(&bad));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rules[1].for: must be ≥ 0s"),
        "{}",
        stderr(&out)
    );
    let out = run(plantd(root.path()).args(["rules", "list", "--json"]));
    assert_eq!(json_of(&out)["rules"], serde_json::json!([]));

    let file = root.path().join("hot.json");
    std::fs::write(
        &file,
        r#"{"id":"hot","name":"Line 1 too hot","severity":"critical",
            "condition":{"kind":"threshold","topic":"line1/temp","op":">","value":80}}"#,
    )
    .expect("write");
    let out = run(plantd(root.path())
        .args(["rules", "apply", "-f"])
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rule hot created"),
        "{}",
        stdout(&out)
    );
    let out = run(plantd(root.path()).args(["rules", "list"]));
    assert!(
        stdout(&out).contains("hot") && stdout(&out).contains("critical"),
        "{}",
        stdout(&out)
    );
    let out = run(plantd(root.path()).args(["rules", "get", "nope"]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));

    // A reading above the threshold on the local site fires it (the
    // engine picks the new rule up from its watch).
    let js = up.jetstream().await;
    let alert = eventually(WAIT, "the alert firing", || {
        let js = js.clone();
        let root = root.path().to_owned();
        async move {
            js.publish("plantd.local.up.line1.temp", "93".into())
                .await
                .ok()?
                .await
                .ok()?;
            let out = run(plantd(&root).args(["alerts", "list", "--state", "firing", "--json"]));
            let v: Value = serde_json::from_str(&stdout(&out)).ok()?;
            v["alerts"].as_array()?.first().cloned()
        }
    })
    .await;
    let id = alert["id"].as_str().expect("id").to_owned();
    assert_eq!(alert["severity"], "critical");
    let out = run(plantd(root.path()).args(["alerts", "list", "--severity", "critical"]));
    assert!(
        stdout(&out).contains(&id) && stdout(&out).contains("firing"),
        "{}",
        stdout(&out)
    );

    let out = run(plantd(root.path()).args(["alerts", "ack", &id, "--note", "opening the vent"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["alerts", "ack", &id]));
    assert!(!out.status.success(), "acknowledged already");
    let history = eventually(WAIT, "the ack in the history", || {
        let root = root.path().to_owned();
        let id = id.clone();
        async move {
            let out = run(plantd(&root).args(["alerts", "history", &id]));
            stdout(&out).contains("ack").then(|| stdout(&out))
        }
    })
    .await;
    assert!(history.contains("inactive -> firing"), "{history}");
    assert!(history.contains("opening the vent"), "{history}");

    let out = run(plantd(root.path()).args([
        "alerts",
        "silence",
        "--match",
        "rule=hot",
        "--match",
        "site=~loc.*",
        "--for",
        "2h",
        "--comment",
        "maintenance",
        "--json",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let silence = json_of(&out)["id"].as_str().expect("id").to_owned();
    let out = run(plantd(root.path()).args(["alerts", "silences"]));
    assert!(
        stdout(&out).contains(&silence) && stdout(&out).contains("active"),
        "{}",
        stdout(&out)
    );
    let out =
        run(plantd(root.path()).args(["alerts", "silence", "--match", "rule", "--for", "2h"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "a matcher without = is a usage error"
    );
    let out = run(plantd(root.path()).args(["alerts", "unsilence", &silence]));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(plantd(root.path()).args(["rules", "delete", "hot"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["rules", "delete", "hot"]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

const SECRET: &str = "alerts test secret, long enough..";

// Multi-threaded: the `plantd` runs block one worker while the MQTT event
// loop and the webhook receiver run on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_log_lines_become_an_alert_notified_once_that_resolves() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, root) = up_logged_in(data.path(), &[]).await;
    let receiver = Receiver::start().await;
    let channel = root.path().join("ch.json");
    std::fs::write(
        &channel,
        serde_json::json!({"name": "ops", "webhook": {"url": receiver.url(), "secret": SECRET}})
            .to_string(),
    )
    .expect("write");
    let out = run(plantd(root.path())
        .args(["channels", "apply", "-f"])
        .arg(&channel));
    assert!(out.status.success(), "{}", stderr(&out));
    let rule = root.path().join("overheat.json");
    std::fs::write(
        &rule,
        r#"{"id":"overheat","severity":"critical","group_by":["source"],"notify":["ops"],
            "condition":{"kind":"log_count","match":"{level>=\"error\"} |= \"overheat\"","window":"2s","threshold":0}}"#,
    )
    .expect("write");
    let out = run(plantd(root.path())
        .args(["rules", "apply", "-f"])
        .arg(&rule));
    assert!(out.status.success(), "{}", stderr(&out));

    // A device on the edge sends error lines on $plantd/log/plc until the
    // alert fires (the engine picks the rule up from its watch).
    // `$plantd/log/plc`: `#` does not cover `$` topics.
    let (device, token) = register_device(&up, data.path(), "plc", &["$plantd/log/plc"]).await;
    let (client, pump) = connect_device(&up, &device, &token).await;
    let firing = eventually(WAIT, "the log rule firing", || {
        let client = client.clone();
        let root = root.path().to_owned();
        async move {
            client
                .publish(
                    "$plantd/log/plc",
                    QoS::AtLeastOnce,
                    false,
                    "level=error msg=\"overheat in zone 2\"",
                )
                .await
                .ok()?;
            client
                .publish(
                    "$plantd/log/plc",
                    QoS::AtLeastOnce,
                    false,
                    "level=info msg=\"all good\"",
                )
                .await
                .ok()?;
            let out = run(plantd(&root).args(["alerts", "list", "--state", "firing", "--json"]));
            let v: Value = serde_json::from_str(&stdout(&out)).ok()?;
            v["alerts"].as_array()?.first().cloned()
        }
    })
    .await;
    assert_eq!(firing["key"], "source=plc");
    let id = firing["id"].as_str().expect("id").to_owned();

    // The lines stop: the window slides out and the alert resolves.
    let history = eventually(WAIT, "the alert resolved", || {
        let root = root.path().to_owned();
        let id = id.clone();
        async move {
            let out = run(plantd(&root).args(["alerts", "history", &id, "--json"]));
            let v: Value = serde_json::from_str(&stdout(&out)).ok()?;
            let records = v["records"].as_array()?.clone();
            records
                .iter()
                .any(|r| r["from"] == "firing" && r["to"] == "inactive")
                .then_some(records)
        }
    })
    .await;
    let firings = history.iter().filter(|r| r["to"] == "firing").count();
    assert_eq!(firings, 1, "{history:#?}");
    let evidence = history[0]["evidence"].as_array().expect("evidence");
    assert!(
        evidence
            .iter()
            .all(|e| e["text"].as_str().is_some_and(|t| t.contains("overheat"))),
        "only the matching lines: {evidence:?}"
    );

    // One signed POST for the firing, one for the resolution.
    let got = receiver.wait_for(2, WAIT).await;
    assert!(got.iter().all(|r| r.verify(SECRET)));
    let kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(kinds, ["firing", "resolved"], "{kinds:?}");
    pump.abort();
}
