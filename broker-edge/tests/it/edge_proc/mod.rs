//! Running the real `plantd-edge` binary against a real nats-server, for
//! the tests of the whole edge.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use plantd_testkit::{Nats, http};
use tokio::process::Command;

pub const SITE: &str = "plant-1";

pub struct Edge {
    /// The process (killed on drop).
    pub proc: ManagedProcess,
    /// MQTT address.
    pub mqtt: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
}

/// The edge with its uplink. Its own warnings are not journaled
/// (`PLANTD_LOG_SHIP=off`): the tests that count uplinked records count
/// devices' messages; [`start_edge_shipping`] turns shipping on.
pub async fn start_edge(nats: &Nats, data: &Path, extra: &[&str]) -> Edge {
    let mut args = vec!["--nats-url".to_owned(), nats.url()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    spawn_edge(data, &args, "off").await
}

/// The edge with its uplink, journaling its own events at `level` and
/// above as log lines (`PLANTD_LOG_SHIP`).
pub async fn start_edge_shipping(nats: &Nats, data: &Path, extra: &[&str], level: &str) -> Edge {
    let mut args = vec!["--nats-url".to_owned(), nats.url()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    spawn_edge(data, &args, level).await
}

/// The binary without an uplink: the plain broker with its data directory
/// (session store), no journal.
pub async fn start_plain(data: &Path, extra: &[&str]) -> Edge {
    let args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    spawn_edge(data, &args, "off").await
}

async fn spawn_edge(data: &Path, extra: &[String], ship: &str) -> Edge {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantd-edge"));
    cmd.args([
        "--site",
        SITE,
        "--mqtt-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data)
    .arg("--allow-anonymous")
    .args(extra)
    .env("RUST_LOG", "info")
    .env("PLANTD_LOG_SHIP", ship);
    let mut addrs = None;
    let proc = ManagedProcess::spawn("plantd-edge", cmd, Duration::from_secs(30), |line| {
        if line.contains("plantd-edge listening") {
            let field = |name: &str| -> Option<SocketAddr> {
                let start = line.find(&format!("{name}="))? + name.len() + 1;
                let rest = &line[start..];
                rest[..rest.find(' ').unwrap_or(rest.len())].parse().ok()
            };
            addrs = field("mqtt").zip(field("http"));
        }
        addrs.is_some()
    })
    .await
    .expect("plantd-edge starts");
    let (mqtt, http) = addrs.expect("addresses");
    Edge { proc, mqtt, http }
}

pub async fn metric(edge: &Edge, name: &str) -> Option<f64> {
    let text = http::get(edge.http.port(), "/metrics").await.ok()?.text();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the edge reports no unacknowledged journal records.
pub async fn drained(edge: &Edge) {
    plantd_testkit::eventually(
        Duration::from_secs(60),
        "the edge to drain its journal",
        || async {
            (metric(edge, "plantd_journal_records_unacked").await == Some(0.0)).then_some(())
        },
    )
    .await;
}
