//! The moto AWS API emulator, where AWS would be.

use std::time::Duration;

use plantd_shared::process::ManagedProcess;
use tokio::process::Command;

use crate::http;

/// A `moto_server` on a free loopback port. Dropping it kills the server.
///
/// Point AWS SDK clients at [`Moto::endpoint`] with any credentials (moto
/// does not check signatures) and a region such as `us-east-1`.
#[derive(Debug)]
pub struct Moto {
    /// The child process.
    process: ManagedProcess,
    /// The bound port.
    port: u16,
}

impl Moto {
    /// Starts the emulator and waits until it listens.
    ///
    /// # Panics
    /// When `moto_server` is not installed (run `scripts/setup`) or does not
    /// start.
    pub async fn start() -> Self {
        let bin = crate::tool("moto_server");
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", "0"]);
        let mut port = None;
        let process = ManagedProcess::spawn("moto_server", cmd, Duration::from_secs(60), |line| {
            if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1) {
                port = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
            }
            port.is_some()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let port = port.unwrap_or_else(|| panic!("moto_server did not report its port"));
        Self { process, port }
    }

    /// `http://127.0.0.1:<port>`, the endpoint URL for every AWS service.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forgets every resource created so far (moto's `/moto-api/reset`).
    ///
    /// # Panics
    /// When the emulator does not answer 200.
    pub async fn reset(&self) {
        let resp = http::request(self.port, "POST", "/moto-api/reset", &[], b"")
            .await
            .unwrap_or_else(|e| panic!("moto reset: {e}"));
        assert_eq!(resp.status, 200, "moto reset answered {}", resp.status);
    }

    /// The emulator's recent output.
    pub fn tail(&self) -> Vec<String> {
        self.process.tail()
    }
}
