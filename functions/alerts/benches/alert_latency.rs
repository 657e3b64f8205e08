//! Alert latency: from an MQTT publish of a triggering value on a real
//! `plantd-edge` to the alert record stored in `PLANTD_ALERTS`.
//!
//! Path: MQTT QoS 1 PUBLISH → edge (journal, uplink) → `PLANTD_TELEMETRY`
//! → the trigger's pull consumer `alerts_PLANTD_TELEMETRY` (batches of up
//! to 100, `max_wait`) → the engine (KV compare-and-set with the outbox,
//! publish awaiting the stream's ack, outbox cleared) → `PLANTD_ALERTS`.
//! Each sample publishes `99` on a new topic (`bench/<i>/temp`, a rule
//! grouped by topic with `for: 0s`), so each is a new instance going
//! inactive → firing; the clock is the time until a core-NATS subscriber
//! on `plantd.plant-1.alert.>` sees that instance's record. Samples run one
//! after another.
//!
//! ```sh
//! scripts/setup
//! cargo build --release -p plantd-edge
//! cargo bench -p plantd-alerts --bench alert_latency -- [--n 300] [--max-wait-ms 50]
//! ```
//!
//! The edge binary is `$PLANTD_EDGE_BIN`, else `plantd-edge` beside the
//! bench's target directory (`target/release/plantd-edge`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use plantd_alerts::{AlertRecord, Rule, Stores, SystemClock};
use plantd_shared::process::ManagedProcess;
use plantd_shared::sites::Sites;
use plantd_shared::subject::Site;
use plantd_testkit::Nats;
use plantd_trigger::{ConsumerSettings, Trigger};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::{Mutex, Notify};

const SITE: &str = "plant-1";
const ORG: &str = "acme";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn edge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PLANTD_EDGE_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/alert_latency-… → target/release/plantd-edge
    let exe = std::env::current_exe().expect("bench path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target directory")
        .to_path_buf();
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("plantd-edge");
        if p.exists() {
            return p;
        }
    }
    panic!("no plantd-edge binary: cargo build --release -p plantd-edge, or set PLANTD_EDGE_BIN");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let n = arg("--n", 300);
    let max_wait = Duration::from_millis(arg("--max-wait-ms", 50));
    let nats = Nats::start_with_streams().await;
    let js = nats.jetstream().await;
    Sites::open(&js)
        .await
        .expect("sites")
        .register(&Site::new(SITE).expect("site"), ORG, "bench")
        .await
        .expect("register");
    let rule = Rule::from_json(
        br#"{"id":"bench-hot","group_by":["topic"],
            "condition":{"kind":"threshold","topic":"bench/+/temp","op":">","value":50}}"#,
    )
    .expect("rule");
    Stores::open(&js)
        .await
        .expect("stores")
        .put_rule(ORG, &rule)
        .await
        .expect("rule");

    let mut trigger = Trigger::new(js.clone());
    let settings = ConsumerSettings {
        max_wait,
        ..ConsumerSettings::default()
    };
    let _running = plantd_alerts::start(
        &js,
        &mut trigger,
        Arc::new(SystemClock),
        plantd_alerts::TICK,
        settings,
    )
    .await
    .expect("engine");

    // Records as they arrive, by instance key.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrived = Arc::new(Notify::new());
    let mut sub = nats
        .client()
        .await
        .subscribe(format!("plantd.{SITE}.alert.>"))
        .await
        .expect("subscribe");
    {
        let seen = seen.clone();
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let at = Instant::now();
                if let Ok(r) = serde_json::from_slice::<AlertRecord>(&msg.payload) {
                    seen.lock().await.insert(r.key, at);
                    arrived.notify_waiters();
                }
            }
        });
    }

    let data = tempfile::tempdir().expect("tmp");
    let mut cmd = tokio::process::Command::new(edge_bin());
    cmd.args([
        "--site",
        SITE,
        "--org",
        ORG,
        "--mqtt-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data.path())
    .args(["--allow-anonymous", "--nats-url", &nats.url()])
    .env("RUST_LOG", "warn,plantd_edge=info")
    .env("PLANTD_LOG_SHIP", "off");
    let mut mqtt_port = None;
    let _edge = ManagedProcess::spawn("plantd-edge", cmd, Duration::from_secs(30), |line| {
        if line.contains("plantd-edge listening")
            && let Some(start) = line.find("mqtt=")
        {
            let rest = &line[start + 5..];
            mqtt_port = rest[..rest.find(' ').unwrap_or(rest.len())]
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.port());
        }
        mqtt_port.is_some()
    })
    .await
    .expect("plantd-edge starts");
    let port = mqtt_port.expect("mqtt port");

    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("bench-sensor", "127.0.0.1", port), 64);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });

    let mut samples = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n + 10 {
        let topic = format!("bench/{i}/temp");
        let key = format!("topic={topic}");
        let start = Instant::now();
        client
            .publish(topic, QoS::AtLeastOnce, false, "99")
            .await
            .expect("publish");
        let deadline = start + Duration::from_secs(10);
        let at = loop {
            let wait = arrived.notified();
            if let Some(at) = seen.lock().await.get(&key) {
                break *at;
            }
            if tokio::time::timeout_at(deadline.into(), wait)
                .await
                .is_err()
            {
                panic!("no alert record for {key} within 10 s");
            }
        };
        // The first ten warm up the consumer, the KV and the connection.
        if i >= 10 {
            samples.push(at - start);
        }
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(1);
    println!(
        "alert latency, MQTT publish -> record in PLANTD_ALERTS, n={} max_wait={:?}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms",
        samples.len(),
        max_wait,
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
}
