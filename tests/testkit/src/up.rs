//! `plantd up` as a fixture for tests outside the `cli` crate (the SDKs'
//! suites): the whole stack on free loopback ports in a temporary data
//! directory, killed on drop, with the addresses its start-up summary
//! printed and the bootstrap administrator's password.
//!
//! The `plantd` binary is `$PLANTD_BIN` when set, else `plantd` beside the
//! running test's own directory (`target/<profile>/plantd`), which a
//! workspace build (`cargo nextest run --workspace`, as `scripts/test`
//! runs) has built; otherwise the test fails naming the command that
//! builds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use tokio::process::Command;

/// A running `plantd up` and where everything is.
pub struct Up {
    /// The `plantd up` process (killed on drop).
    pub process: ManagedProcess,
    /// Its data directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The functions' (identity and proxy) base URL, `http://…`.
    pub url: String,
    /// The edge's MQTT port on 127.0.0.1.
    pub mqtt_port: u16,
    /// The bootstrap administrator's email.
    pub admin_email: String,
    /// Its password.
    pub admin_password: String,
}

/// The `plantd` binary (see the module's documentation).
///
/// # Panics
/// When it cannot be found.
pub fn plantd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PLANTD_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/plantd
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("plantd"))
        .expect("target/<profile>");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p plantd-cli --bin plantd` (a workspace test run builds it), or set PLANTD_BIN",
        bin.display()
    );
    bin
}

/// The first word of `line` that starts with `prefix`.
fn word(line: &str, prefix: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .map(str::to_owned)
}

/// The port at the end of an address such as `mqtt://127.0.0.1:1883`.
fn port_of(address: &str) -> Option<u16> {
    address.rsplit(':').next().and_then(|p| p.parse().ok())
}

impl Up {
    /// Runs `plantd up` with every listener on a free loopback port and
    /// waits until it says `plantd is up`.
    ///
    /// # Panics
    /// When it does not become ready within a minute.
    pub async fn start() -> Up {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(plantd_bin());
        cmd.arg("up").arg("--data-dir").arg(dir.path()).args([
            "--nats-port",
            "0",
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--edge-http-listen",
            "127.0.0.1:0",
        ]);
        let (mut url, mut mqtt) = (None, None);
        let process = ManagedProcess::spawn("plantd up", cmd, Duration::from_secs(60), |line| {
            let entry = line.trim_start();
            if entry.starts_with("functions ") {
                url = word(line, "http://");
            }
            if entry.starts_with("edge ") {
                mqtt = word(line, "mqtt://");
            }
            line.starts_with("plantd is up")
        })
        .await
        .expect("plantd up becomes ready");
        let password = std::fs::read_to_string(dir.path().join("admin-password"))
            .expect("plantd up writes the admin password");
        Up {
            process,
            url: url.expect("plantd up prints the functions' URL"),
            mqtt_port: mqtt
                .as_deref()
                .and_then(port_of)
                .expect("plantd up prints the edge's address"),
            dir,
            admin_email: "admin@plantd.local".to_owned(),
            admin_password: password.trim().to_owned(),
        }
    }

    /// The HTTP port of the functions.
    pub fn http_port(&self) -> u16 {
        port_of(&self.url).expect("a port in the functions' URL")
    }
}
