//! The `plantd-edge` binary: flags, config file, HTTP endpoints, signals.

use crate::common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

struct Proc {
    child: Child,
    mqtt: SocketAddr,
    http: SocketAddr,
}

/// Starts the binary and waits for its "listening" log line.
async fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plantd-edge"))
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn plantd-edge");
    // Logs go to standard error (`plantd_shared::logging`).
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let (mqtt, http) = loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("listening line in time")
            .expect("read stderr")
            .expect("plantd-edge exited before listening");
        if line.contains("plantd-edge listening") {
            let field = |name: &str| -> SocketAddr {
                let start = line.find(&format!("{name}=")).expect("address field") + name.len() + 1;
                let rest = &line[start..];
                let end = rest.find(' ').unwrap_or(rest.len());
                rest[..end].parse().expect("socket address")
            };
            break (field("mqtt"), field("http"));
        }
    };
    // Keep draining the log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proc { child, mqtt, http }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("http answer in time")
        .expect("read response");
    out
}

fn broker_at(p: &Proc) -> TestBroker {
    TestBroker::external(p.mqtt, p.http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_health_metrics_rules_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut p = spawn(&[
        "--site",
        "test-site",
        "--allow-anonymous",
        "--deny-subscribe",
        "secret/#",
        "--deny-subscribe",
        "private",
        "--data-dir",
        data.to_str().expect("utf8 path"),
    ])
    .await;
    assert!(data.is_dir(), "data dir created");
    let health = http_get(p.http, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let b = broker_at(&p);
    let (mut c, _) = v5(&b, "cli-client", |_| {}).await;
    let ack = c
        .sub("secret/x", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::NotAuthorized]
    );
    let ack = c
        .sub("private", rumqttc::v5::mqttbytes::QoS::AtMostOnce)
        .await;
    assert_eq!(
        ack.return_codes,
        vec![m5::SubscribeReasonCode::NotAuthorized]
    );

    let metrics = http_get(p.http, "/metrics").await;
    assert!(metrics.contains("plantd_edge_connections 1"), "{metrics}");
    assert!(metrics.contains("plantd_edge_messages_dropped_total{reason=\"queue_full\"}"));

    let pid = p.child.id().expect("pid").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let why = c.ended().await;
    assert!(
        why.contains("ServerShuttingDown"),
        "clients told 0x8B: {why}"
    );
    let exit = tokio::time::timeout(WAIT, p.child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_sets_limits_and_flags_override_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("edge.toml");
    std::fs::write(
        &file,
        "site = \"from-file\"\nmqtt_listen = \"127.0.0.1:1\"\n[limits]\nmax_inflight = 3\n",
    )
    .expect("write config");
    // --mqtt-listen (given by spawn) overrides the file's unusable port 1.
    let p = spawn(&[
        "--config",
        file.to_str().expect("utf8 path"),
        "--allow-anonymous",
    ])
    .await;
    let b = broker_at(&p);
    let (_c, ack) = v5(&b, "cfg", |_| {}).await;
    assert_eq!(ack.properties.expect("properties").receive_max, Some(3));

    std::fs::write(&file, "mqtt_lsiten = \"typo\"\n").expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_plantd-edge"))
        .args(["--config", file.to_str().expect("utf8 path")])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success(), "unknown keys are refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt_lsiten"));
}
