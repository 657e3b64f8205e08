//! `plantd channels` against `plantd up`: a channel applied from a file is
//! listed without its secret, a test send reaches a real receiver signed
//! with it, an alert record in `PLANTD_ALERTS` is notified by the
//! notifier `plantd up` runs, an invalid channel exits 1 naming the field,
//! and a deleted channel is gone (exit 5; a malformed name exits 2). The
//! secret is sealed in `plantd_alert_channels` with the channel key
//! `plantd up` keeps in its data directory (mode 0600).

use crate::common;

use std::time::Duration;

use common::{plantd, run, stderr, stdout, up_logged_in};
use plantd_alerts::{AlertRecord, AlertState, RecordKind, Severity};
use plantd_testkit::webhook::Receiver;

const SECRET: &str = "cli test secret, long enough....";

fn record(org: &str) -> AlertRecord {
    AlertRecord {
        id: "overheat:k1:1".to_owned(),
        kind: RecordKind::Transition,
        org: org.to_owned(),
        site: "local".to_owned(),
        rule: "overheat".to_owned(),
        rule_name: "Overheat".to_owned(),
        key: String::new(),
        labels: Default::default(),
        severity: Severity::Critical,
        from: AlertState::Pending,
        to: AlertState::Firing,
        n: 1,
        at: time::OffsetDateTime::now_utc(),
        firing_since: None,
        value: Some(90.0),
        summary: "temperature 90 > 80 for 1m".to_owned(),
        evidence: Vec::new(),
        notify: vec!["ops".to_owned()],
        silenced: false,
        ack: None,
    }
}

// Multi-threaded: the `plantd` runs block one worker while the receiver
// answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_applied_listed_tested_used_and_deleted() {
    let data = tempfile::tempdir().expect("tmp");
    let (up, root) = up_logged_in(data.path(), &[]).await;
    let receiver = Receiver::start().await;
    let file = root.path().join("ch.json");
    std::fs::write(
        &file,
        serde_json::json!([{ "name": "ops", "webhook": { "url": receiver.url(), "secret": SECRET } }])
            .to_string(),
    )
    .expect("write");

    let out = run(plantd(root.path())
        .args(["channels", "apply", "-f"])
        .arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "channel ops created");

    for args in [
        &["channels", "list"][..],
        &["channels", "list", "--json"],
        &["channels", "get", "ops"],
    ] {
        let out = run(plantd(root.path()).args(args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("ops") && text.contains(&receiver.url()),
            "{args:?}: {text}"
        );
        assert!(!text.contains(SECRET), "{args:?} shows the secret: {text}");
    }

    let out = run(plantd(root.path()).args(["channels", "test", "ops"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("delivered on ops"),
        "{}",
        stdout(&out)
    );
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert!(got[0].verify(SECRET));
    assert_eq!(got[0].json()["event"], "test");

    // What the bucket holds is sealed; the key is in the data directory.
    let js = up.jetstream().await;
    let stored = js
        .get_key_value(plantd_shared::streams::ALERT_CHANNELS_BUCKET)
        .await
        .expect("bucket")
        .get("plantd.ops")
        .await
        .expect("get")
        .expect("the channel");
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        !stored.contains(SECRET) && stored.contains("\"kid\""),
        "{stored}"
    );
    let key_file = data.path().join("alerts").join("channel-keys.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file)
            .expect("the channel key file")
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600, "the channel key file is private");

    // The notifier plantd up runs sends what reaches PLANTD_ALERTS.
    let alert = record("plantd");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, alert.id.as_str());
    js.publish_with_headers(
        alert.subject(),
        headers,
        serde_json::to_vec(&alert).expect("json").into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert!(got[1].verify(SECRET));
    assert_eq!(got[1].json()["event"], "firing");
    assert_eq!(got[1].json()["record"]["id"], "overheat:k1:1");
    assert_eq!(
        got[1].header("plantd-notification-id"),
        Some("ops:overheat:k1:1")
    );

    let bad = root.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"name": "broken", "webhook": {"url": "ftp://x", "secret": "0123456789abcdef"}}"#,
    )
    .expect("write");
    let out = run(plantd(root.path())
        .args(["channels", "apply", "-f"])
        .arg(&bad));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("webhook.url"), "{}", stderr(&out));

    let out = run(plantd(root.path()).args(["channels", "delete", "ops"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["channels", "get", "ops"]));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = run(plantd(root.path()).args(["channels", "get", "Bad.Name"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
