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
    /// Environment it runs with beyond the test's own (kept for restarts).
    pub env: Vec<(String, String)>,
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

/// How [`Up::restart_with`] stops the running `plantd up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, as an operator or a service manager stops it: every part
    /// shuts down in order.
    Graceful,
    /// SIGKILL, as a crash or a power cut: no shutdown step runs (its
    /// children end on the parent-death signal).
    Kill,
}

/// Runs `plantd up` on `dir` with the functions on `http_listen` and the
/// edge on `mqtt_listen` (NATS and the edge's HTTP on free ports) and
/// waits until it says `plantd is up`: the process, the functions' URL and
/// the edge's MQTT port its summary printed.
async fn launch(
    dir: &Path,
    http_listen: &str,
    mqtt_listen: &str,
    env: &[(String, String)],
) -> (ManagedProcess, String, u16) {
    let mut cmd = Command::new(plantd_bin());
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.arg("up").arg("--data-dir").arg(dir).args([
        "--nats-port",
        "0",
        "--http-listen",
        http_listen,
        "--mqtt-listen",
        mqtt_listen,
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
    (
        process,
        url.expect("plantd up prints the functions' URL"),
        mqtt.as_deref()
            .and_then(port_of)
            .expect("plantd up prints the edge's address"),
    )
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
        Self::start_with_env(&[]).await
    }

    /// [`Up::start`] with these `PLANTD_*` variables (its configuration:
    /// `PLANTD_HTTP__ACCESS_TOKEN_TTL_SECS=3` for short-lived tokens), kept
    /// for [`Up::restart`].
    ///
    /// # Panics
    /// As [`Up::start`].
    pub async fn start_with_env(env: &[(&str, &str)]) -> Up {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let (process, url, mqtt) = launch(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &env).await;
        let password = std::fs::read_to_string(dir.path().join("admin-password"))
            .expect("plantd up writes the admin password");
        Up {
            process,
            url,
            mqtt_port: mqtt,
            dir,
            env,
            admin_email: "admin@plantd.local".to_owned(),
            admin_password: password.trim().to_owned(),
        }
    }

    /// Restarts `plantd up` the way an operator does: SIGTERM, waits for
    /// it to exit (killed after 30 s), then runs it again on the same data
    /// directory with the functions and the edge on the same ports, and
    /// waits until it says `plantd is up`. Clients keep their addresses;
    /// what the stack stored (streams, journal, identities, keys) is
    /// still there. NATS and the edge's HTTP listener get fresh free
    /// ports (nothing outside the stack addresses them).
    ///
    /// # Panics
    /// When the old process cannot be reaped, or the new one does not
    /// become ready within a minute on the same ports.
    pub async fn restart(&mut self) {
        self.restart_with(Stop::Graceful).await;
    }

    /// [`Up::restart`], stopping the running process as `stop` says.
    ///
    /// # Panics
    /// As [`Up::restart`].
    pub async fn restart_with(&mut self, stop: Stop) {
        let status = match stop {
            Stop::Graceful => self.process.terminate(Duration::from_secs(30)).await,
            Stop::Kill => self.process.kill().await,
        }
        .expect("plantd up is reaped");
        tracing::info!(?stop, %status, "plantd up stopped; starting it again");
        if stop == Stop::Kill {
            // Its children get SIGTERM from the kernel (parent-death
            // signal) and may still hold the ports for a moment.
            let (http, mqtt) = (self.http_port(), self.mqtt_port);
            crate::wait::eventually(
                Duration::from_secs(30),
                "the old stack's ports to close",
                || async move {
                    let busy = |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
                    (!busy(http) && !busy(mqtt)).then_some(())
                },
            )
            .await;
        }
        let (process, url, mqtt) = launch(
            self.dir.path(),
            &format!("127.0.0.1:{}", self.http_port()),
            &format!("127.0.0.1:{}", self.mqtt_port),
            &self.env,
        )
        .await;
        assert_eq!(
            url, self.url,
            "plantd up comes back on the same HTTP address"
        );
        assert_eq!(
            mqtt, self.mqtt_port,
            "plantd up comes back on the same MQTT port"
        );
        self.process = process;
    }

    /// The HTTP port of the functions.
    pub fn http_port(&self) -> u16 {
        port_of(&self.url).expect("a port in the functions' URL")
    }
}
