//! The examples (`sdk/rust/examples`) against `plantd up`: two copies of
//! the state-backed job incrementing one counter at once lose no step;
//! the command sender's command reaches an MQTT subscriber; the dashboard
//! feed prints a device's reading as a JSON line; the rumqttc device
//! publishes readings and a log line and answers a service call.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{SITE, Stack, WAIT};

/// An example binary (built beside the tests by `cargo test`/nextest).
fn example(name: &str) -> tokio::process::Command {
    let exe = std::env::current_exe().expect("the test's own path");
    let path: PathBuf = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join("examples").join(name))
        .expect("target/<profile>");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p plantd-client --examples`",
        path.display()
    );
    let mut c = tokio::process::Command::new(path);
    c.kill_on_drop(true).stdin(Stdio::null());
    c
}

fn with_login(c: &mut tokio::process::Command, stack: &Stack) {
    c.env("PLANTD_URL", &stack.up.url)
        .env("PLANTD_EMAIL", &stack.up.admin_email)
        .env("PLANTD_PASSWORD", &stack.up.admin_password);
}

async fn output(mut c: tokio::process::Command) -> String {
    let out = tokio::time::timeout(WAIT * 3, c.output())
        .await
        .expect("the example finishes")
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_run_against_plantd_up() {
    let stack = Stack::start().await;

    // Two jobs at once: 2 × 10 increments, none lost to a race.
    let job = || {
        let mut c = example("state_job");
        with_login(&mut c, &stack);
        c.args(["jobs", "counter", "10"]);
        c
    };
    let (a, b) = tokio::join!(output(job()), output(job()));
    let last = stack
        .admin
        .get_state::<u64>("jobs", "counter")
        .await
        .expect("read")
        .expect("present");
    assert_eq!(last.value, 20, "{a}\n{b}");

    // The command sender's command reaches the valve.
    let (valve_id, valve_token) = stack.device("sdk-ex-valve", &[], &["sdk/ex/#"]).await;
    let mut valve = stack.mqtt(&valve_id, &valve_token).await;
    valve.sub("sdk/ex/#", rumqttc::QoS::AtLeastOnce).await;
    let mut sender = example("command_sender");
    with_login(&mut sender, &stack);
    sender.args([SITE, "sdk/ex/valve", "open"]);
    let said = output(sender).await;
    assert!(said.contains("stored in PLANTD_COMMANDS"), "{said}");
    let got = valve.publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("sdk/ex/valve", &b"open"[..])
    );

    // The dashboard feed prints a reading; the device publishes until it
    // is there (the feed's subscription starts at the next message).
    let (id, token) = stack.device("sdk-ex-sensor", &["sdk/#"], &[]).await;
    let mut sensor = stack.mqtt(&id, &token).await;
    let mut feed = example("dashboard_feed");
    with_login(&mut feed, &stack);
    feed.args([SITE, "sdk/ex/temp", "1"]);
    let feed = tokio::spawn(output(feed));
    let line = loop {
        sensor.publish1("sdk/ex/temp", false, "42.5").await;
        if feed.is_finished() {
            break feed.await.expect("the feed task");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(
        (v["topic"].as_str(), v["value"].as_str()),
        (Some("sdk/ex/temp"), Some("42.5")),
        "{v}"
    );

    // The rumqttc device: readings in history, its log line in the logs,
    // and the answer to a call.
    let (oven_id, oven_token) = stack
        .device(
            "sdk-ex-oven",
            &["sdk/ex/oven/#", "$plantd/log/#"],
            &["sdk/ex/oven/status"],
        )
        .await;
    let mut device = example("device_rumqttc");
    device
        .env("PLANTD_MQTT", format!("127.0.0.1:{}", stack.up.mqtt_port))
        .env("PLANTD_DEVICE_ID", &oven_id)
        .env("PLANTD_DEVICE_TOKEN", &oven_token)
        .args(["sdk/ex/oven", "3"]);
    let device = tokio::spawn(output(device));
    // Until the device has connected and subscribed, a call finds no
    // responder (503) or nobody to deliver it to (504): ask again.
    let answer = plantd_testkit::eventually(WAIT, "the device to answer", || async {
        match stack
            .admin
            .call(
                SITE,
                "sdk/ex/oven/status",
                plantd_client::RawBody::text("status?"),
                Duration::from_secs(1),
            )
            .await
        {
            Ok(raw) => Some(raw),
            Err(e) if matches!(e.status(), Some(503 | 504)) => None,
            Err(e) => panic!("{e:?}"),
        }
    })
    .await;
    let v: serde_json::Value = answer.json().expect("JSON");
    assert_eq!(v, serde_json::json!({"running": true, "asked": "status?"}));
    let said = device.await.expect("the device task");
    assert!(said.contains("answered a call"), "{said}");
    let temps = plantd_testkit::eventually(WAIT, "three readings in history", || async {
        let page = stack
            .admin
            .rest()
            .get_sites_site_history(
                SITE,
                &plantd_client::proxy::params::GetSitesSiteHistoryParams {
                    filter: "sdk/ex/oven/temp".to_owned(),
                    ..Default::default()
                },
            )
            .await
            .expect("history")
            .value;
        (page.messages.len() == 3).then_some(page.messages)
    })
    .await;
    assert!(temps.iter().all(|m| m.topic == "sdk/ex/oven/temp"));
    let logs = plantd_testkit::eventually(WAIT, "the device's log line", || async {
        let page = stack
            .admin
            .rest()
            .get_logs(&plantd_client::proxy::params::GetLogsParams {
                site: Some(SITE.to_owned()),
                source: Some(oven_id.clone()),
                ..Default::default()
            })
            .await
            .expect("logs")
            .value;
        (!page.records.is_empty()).then_some(page.records)
    })
    .await;
    assert_eq!(logs[0].message, "device started");
}
