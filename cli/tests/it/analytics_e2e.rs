//! Analytics end to end through `plantd up`: rules put with `plantd
//! analytics rules put`, a real device publishing over MQTT to the edge,
//! the analytics function computing in the cloud — `plantd analytics
//! results` shows the device's window, and a pattern rule written with an
//! alert fires its companion alert through the alert manager (`plantd
//! alerts list`) and resolves it when the readings drop.

use crate::common;

use std::time::Duration;

use common::{connect_device, plantd, register_device, run, stderr, stdout, up_logged_in};
use plantd_testkit::eventually;
use rumqttc::QoS;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn json_of(o: &std::process::Output) -> Option<Value> {
    serde_json::from_str(&stdout(o)).ok()
}

#[tokio::test]
async fn a_device_reading_becomes_a_window_and_a_held_threshold_an_alert() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, root) = up_logged_in(data.path(), &[]).await;
    let cli = || plantd(root.path());
    let out = run(cli().args([
        "analytics",
        "rules",
        "put",
        "line1_avg",
        "--sql",
        r#"SELECT avg(value), count(*) FROM "line1/+/temp" GROUP BY topic, TUMBLE(1s)"#,
        "--sites",
        "local",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(cli().args([
        "analytics",
        "rules",
        "put",
        "over_pressure",
        "--sql",
        r#"SELECT threshold(value > 8, 1s) FROM "line1/+/pressure" GROUP BY topic"#,
        "--sites",
        "local",
        "--alert-severity",
        "critical",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));

    let (id, token) = register_device(&up, data.path(), "sensor", &["line1/#"]).await;
    let (device, _pump) = connect_device(&up, &id, &token).await;

    // Readings of 20 until a closed window of them is shown (the
    // watermark passes a window's end as later readings arrive).
    let window = eventually(WAIT, "a window of the device's readings", || {
        let device = device.clone();
        async move {
            device
                .publish("line1/m3/temp", QoS::AtLeastOnce, false, "20")
                .await
                .ok()?;
            let out = run(cli().args([
                "analytics",
                "results",
                "--site",
                "local",
                "--rule",
                "line1_avg",
                "--json",
            ]));
            json_of(&out)?.as_array()?.first().cloned()
        }
    })
    .await;
    assert_eq!(window["key"], "line1/m3/temp");
    assert_eq!(window["values"]["avg_value"], 20.0);
    let out = run(cli().args([
        "analytics",
        "results",
        "--site",
        "local",
        "--rule",
        "line1_avg",
    ]));
    assert!(stdout(&out).contains("avg_value=20"), "{}", stdout(&out));

    // Pressure above 8 for a second: the companion alert fires.
    let alert = eventually(WAIT, "the over_pressure alert firing", || {
        let device = device.clone();
        async move {
            device
                .publish("line1/press1/pressure", QoS::AtLeastOnce, false, "9.5")
                .await
                .ok()?;
            let out = run(cli().args(["alerts", "list", "--state", "firing", "--json"]));
            json_of(&out)?["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["rule"] == "analytics-over_pressure")
                .cloned()
        }
    })
    .await;
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["labels"]["key"], "line1/press1/pressure");

    // Back under 8: cleared, the alert resolves.
    eventually(WAIT, "the over_pressure alert resolved", || {
        let device = device.clone();
        async move {
            device
                .publish("line1/press1/pressure", QoS::AtLeastOnce, false, "5")
                .await
                .ok()?;
            let out = run(cli().args(["alerts", "list", "--json"]));
            let v = json_of(&out)?;
            let a = v["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["rule"] == "analytics-over_pressure")?
                .clone();
            (a["state"] == "inactive").then_some(())
        }
    })
    .await;
}
