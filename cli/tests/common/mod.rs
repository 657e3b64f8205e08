//! What the `plantd` command-line tests share: `plantd up` as a child
//! process, and where its start-up summary says everything is.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use tokio::process::Command;

/// A running `plantd up` (killed on drop) and the addresses its summary
/// printed.
pub struct Up {
    /// The `plantd up` process.
    pub process: ManagedProcess,
    /// `nats://…`, from the `nats` line.
    pub nats: Option<String>,
    /// `http://…`, from the `functions` line.
    pub functions: Option<String>,
    /// `mqtt://…`, from the `edge` line.
    pub mqtt: Option<String>,
}

/// The first word of `line` that starts with `prefix`.
fn word(line: &str, prefix: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .map(str::to_owned)
}

/// The port at the end of an address such as `http://127.0.0.1:8080`.
pub fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in {address}"))
}

impl Up {
    /// Runs `plantd up --data-dir <data_dir>` with `args` and waits until
    /// it says `plantd is up`.
    ///
    /// # Panics
    /// When it does not become ready within a minute.
    pub async fn start(data_dir: &Path, args: &[&str]) -> Up {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plantd"));
        cmd.arg("up").arg("--data-dir").arg(data_dir).args(args);
        let (mut nats, mut functions, mut mqtt) = (None, None, None);
        let process = ManagedProcess::spawn("plantd up", cmd, Duration::from_secs(60), |line| {
            let entry = line.trim_start();
            if entry.starts_with("nats ") {
                nats = word(line, "nats://");
            }
            if entry.starts_with("functions ") {
                functions = word(line, "http://");
            }
            if entry.starts_with("edge ") {
                mqtt = word(line, "mqtt://");
            }
            line.starts_with("plantd is up")
        })
        .await
        .expect("plantd up becomes ready");
        Up {
            process,
            nats,
            functions,
            mqtt,
        }
    }

    /// [`Up::start`] with every listener on a free loopback port.
    pub async fn on_free_ports(data_dir: &Path) -> Up {
        Up::start(
            data_dir,
            &[
                "--nats-port",
                "0",
                "--http-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
                "--edge-http-listen",
                "127.0.0.1:0",
            ],
        )
        .await
    }

    /// The functions' base URL.
    pub fn functions_url(&self) -> String {
        self.functions
            .clone()
            .expect("plantd up prints the functions URL")
    }
}

/// The `plantd` binary with its own configuration directory (profiles and
/// tokens) and no password from the environment.
pub fn plantd(config_dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_plantd"));
    c.env("PLANTD_CONFIG_DIR", config_dir)
        .env_remove("PLANTD_PASSWORD");
    c
}

/// Runs a `plantd` command to completion.
pub fn run(c: &mut std::process::Command) -> std::process::Output {
    c.output().expect("run plantd")
}

/// Its standard output, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its standard error, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `plantd login` as `email` with the password in `password_file`,
/// asserting success.
pub fn login(config: &Path, url: &str, email: &str, password_file: &Path) {
    let out = run(plantd(config)
        .args(["login", "--url", url, "--email", email, "--password-file"])
        .arg(password_file));
    assert!(out.status.success(), "{}", stderr(&out));
}
