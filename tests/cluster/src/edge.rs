//! The real `plantd-edge` binary, with its uplink to a region's nodes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use plantd_testkit::http;
use tokio::process::Command;

/// The site every test edge serves.
pub const SITE: &str = "plant-1";

/// The `plantd-edge` binary of this build: next to the test executable's
/// folder (`target/<profile>/plantd-edge`, built by `cargo nextest run
/// --workspace`); built with `cargo build -p plantd-edge` when absent.
///
/// # Panics
/// When it is absent and cannot be built.
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/<test> -> target/<profile>/plantd-edge
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        let bin = profile_dir.join("plantd-edge");
        if !bin.exists() {
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "-p", "plantd-edge", "--bin", "plantd-edge"])
                .current_dir(plantd_shared::tools::workspace_root())
                .status()
                .expect("run cargo build -p plantd-edge");
            assert!(status.success(), "cargo build -p plantd-edge failed");
        }
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

/// A running edge (killed on drop).
pub struct Edge {
    /// The process.
    pub proc: ManagedProcess,
    /// MQTT listener.
    pub mqtt: SocketAddr,
    /// HTTP listener (`/metrics`, `/readyz`).
    pub http: SocketAddr,
}

/// Starts the edge of [`SITE`] with its journal in `data`, uplinked to
/// `urls` (comma separated) trusting CA file `ca`, creating plantd's
/// streams if `create_streams`; devices connect anonymously.
///
/// # Panics
/// When it does not start.
pub async fn start(urls: &str, ca: &Path, data: &Path, extra: &[&str]) -> Edge {
    let mut cmd = Command::new(binary());
    cmd.args([
        "--site",
        SITE,
        "--mqtt-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "--nats-url",
        urls,
    ])
    .arg("--nats-ca")
    .arg(ca)
    .arg("--data-dir")
    .arg(data)
    .args(extra)
    .env("RUST_LOG", "info")
    .env("PLANTD_LOG_SHIP", "off");
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
    .unwrap_or_else(|e| panic!("plantd-edge: {e}"));
    let (mqtt, http) = addrs.expect("the edge's addresses");
    Edge { proc, mqtt, http }
}

impl Edge {
    /// A metric from `/metrics`, if the edge answers and has it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = http::get(self.http.port(), "/metrics").await.ok()?.text();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}
