//! `plantd up` survives its parts: nats-server killed under it is started
//! again on the same store while the edge keeps acknowledging devices, and
//! when `plantd up` itself is killed its children do not linger.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Up, port_of};
use plantd_shared::streams;
use plantd_testkit::wait::procs;
use plantd_testkit::{eventually, http};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// A token for site `local` from the local administrator's login.
async fn admin_token(up: &Up, data_dir: &std::path::Path) -> String {
    let password = std::fs::read_to_string(data_dir.join("admin-password")).expect("password");
    let body = serde_json::json!({
        "email": "admin@plantd.local",
        "password": password.trim(),
        "sites": ["local"],
    })
    .to_string();
    let login = http::request(
        port_of(&up.functions_url()),
        "POST",
        "/v1/auth/login",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await
    .expect("login");
    assert_eq!(login.status, 200, "{}", login.text());
    let v: serde_json::Value = serde_json::from_slice(&login.body).expect("json");
    v["access_token"].as_str().expect("token").to_owned()
}

/// A device on the edge that publishes QoS 1 and counts PUBACKs.
struct Device {
    client: AsyncClient,
    events: rumqttc::EventLoop,
}

impl Device {
    async fn connect(port: u16, token: &str) -> Device {
        let mut opts = MqttOptions::new("sensor-1", "127.0.0.1", port);
        opts.set_credentials("admin", token);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(opts, 256);
        loop {
            match events.poll().await.expect("device connects") {
                Event::Incoming(Packet::ConnAck(ack)) => {
                    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
                    break;
                }
                _ => continue,
            }
        }
        Device { client, events }
    }

    /// Publishes `range` (payload = the number) and returns once every one
    /// has been acknowledged by the edge.
    async fn publish_acked(&mut self, range: std::ops::Range<u32>) {
        let n = range.len();
        let client = self.client.clone();
        let sender = tokio::spawn(async move {
            for i in range {
                client
                    .publish("line1/temp", QoS::AtLeastOnce, false, i.to_string())
                    .await
                    .expect("queue publish");
            }
        });
        let mut acked = 0;
        while acked < n {
            match tokio::time::timeout(Duration::from_secs(30), self.events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("device connection failed after {acked} acks: {e}"),
                Err(_) => panic!("only {acked} of {n} PUBACKs within 30 s"),
            }
        }
        sender.await.expect("sender");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_under_plantd_up_comes_back_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Up::on_free_ports(dir.path()).await;
    let token = admin_token(&up, dir.path()).await;
    let mqtt_port = port_of(up.mqtt.as_deref().expect("edge address"));
    let mut device = Device::connect(mqtt_port, &token).await;

    // Before, during and after the outage: every message is acknowledged.
    device.publish_acked(0..100).await;
    let up_pid = up.process.pid().expect("plantd up runs");
    let nats_pid = procs::children_of(up_pid)
        .into_iter()
        .find(|(_, comm)| comm == "nats-server")
        .map(|(pid, _)| pid)
        .expect("plantd up runs nats-server as its child");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(nats_pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill nats-server");
    eventually(Duration::from_secs(10), "nats-server to die", || async {
        (!procs::is_alive(nats_pid)).then_some(())
    })
    .await;
    device.publish_acked(100..200).await;

    // plantd up reports the crash and the restart, and keeps running.
    eventually(
        Duration::from_secs(60),
        "plantd up to restart nats-server",
        || async {
            up.process
                .tail()
                .iter()
                .any(|l| l.contains("nats") && l.contains("restarted"))
                .then_some(())
        },
    )
    .await;
    assert!(
        up.process
            .tail()
            .iter()
            .any(|l| l.contains("stopped unexpectedly")),
        "the crash is reported: {:?}",
        up.process.tail()
    );
    device.publish_acked(200..300).await;

    // Every acknowledged message is in JetStream, once.
    let js = up.jetstream().await;
    let mut stream = js.get_stream(streams::TELEMETRY).await.expect("stream");
    eventually(
        Duration::from_secs(60),
        "all 300 acknowledged messages in PLANTD_TELEMETRY",
        || {
            let js = js.clone();
            async move {
                let s = js.get_stream(streams::TELEMETRY).await.ok()?;
                (s.cached_info().state.messages >= 300).then_some(())
            }
        },
    )
    .await;
    let info = stream.info().await.expect("info");
    assert_eq!(info.state.messages, 300, "nothing doubled");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut seen = BTreeSet::new();
    while seen.len() < 300 {
        let m = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut messages),
        )
        .await
        .expect("a message")
        .expect("stream open")
        .expect("message");
        let n: u32 = std::str::from_utf8(&m.payload)
            .expect("utf8")
            .parse()
            .expect("number");
        seen.insert(n);
    }
    assert_eq!(seen, (0..300).collect::<BTreeSet<_>>());

    // The HTTP API answers again (its NATS clients reconnected).
    let _ = admin_token(&up, dir.path()).await;
    let health = http::get(port_of(&up.functions_url()), "/healthz")
        .await
        .expect("healthz");
    assert_eq!(health.status, 200);
    // The trigger's health and metrics are served beside the functions.
    let trigger = http::get(port_of(&up.functions_url()), "/healthz/trigger")
        .await
        .expect("trigger health");
    assert_eq!(trigger.status, 200, "{}", trigger.text());
    let metrics = http::get(port_of(&up.functions_url()), "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics
            .text()
            .contains("plantd_trigger_items_total{function=\"logger\",stream=\"PLANTD_LOGS\""),
        "{}",
        metrics.text()
    );
}

#[tokio::test]
async fn plantd_up_killed_leaves_no_nats_server_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = Up::on_free_ports(dir.path()).await;
    let up_pid = up.process.pid().expect("plantd up runs");
    let children = procs::children_of(up_pid);
    let (nats_pid, _) = children
        .iter()
        .find(|(_, comm)| comm == "nats-server")
        .cloned()
        .unwrap_or_else(|| panic!("nats-server among the children: {children:?}"));
    up.process.kill().await.expect("SIGKILL plantd up");
    eventually(
        Duration::from_secs(20),
        "nats-server to stop after plantd up was killed",
        || async { (!procs::is_alive(nats_pid)).then_some(()) },
    )
    .await;
}
