//! A local nats-server with JetStream, as `plantd up` and the test fixtures
//! run it: one process, file storage in a directory we own, bound to
//! loopback.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tokio::process::Command;

use crate::process::{ManagedProcess, ProcessError};
use crate::tools::{self, MissingTool};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct NatsServerSpec {
    /// The binary; `None` finds `nats-server` with [`tools::locate`].
    pub binary: Option<PathBuf>,
    /// Address to bind (loopback by default).
    pub host: String,
    /// Client port; `0` lets the server pick a free one.
    pub port: u16,
    /// JetStream store directory (kept across restarts).
    pub store_dir: PathBuf,
    /// How long to wait for "Server is ready".
    pub ready_timeout: Duration,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
}

impl NatsServerSpec {
    /// Loopback, a free port, JetStream stored under `store_dir`.
    pub fn new(store_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: None,
            host: "127.0.0.1".into(),
            port: 0,
            store_dir: store_dir.into(),
            ready_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
        }
    }
}

/// Why the server could not be started.
#[derive(Debug, Error)]
pub enum NatsServerError {
    /// The binary is not installed.
    #[error(transparent)]
    Missing(#[from] MissingTool),
    /// It did not start or did not become ready.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// It said it was ready without saying on which port it listens.
    #[error("nats-server did not report its client port")]
    NoPort,
    /// The store directory could not be created.
    #[error("cannot create store directory {path}: {source}")]
    StoreDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running nats-server. Dropping it kills the server.
#[derive(Debug)]
pub struct NatsServer {
    /// The spec it was started with, its port fixed after the first start so
    /// a restart comes back on the same address.
    spec: NatsServerSpec,
    /// The child process.
    process: ManagedProcess,
}

impl NatsServer {
    /// Starts the server and waits until it is ready for clients with
    /// JetStream enabled.
    ///
    /// # Errors
    /// [`NatsServerError`] when the binary is missing or it fails to start.
    pub async fn start(mut spec: NatsServerSpec) -> Result<Self, NatsServerError> {
        let binary = match &spec.binary {
            Some(b) => b.clone(),
            None => tools::locate("nats-server")?,
        };
        std::fs::create_dir_all(&spec.store_dir).map_err(|source| NatsServerError::StoreDir {
            path: spec.store_dir.clone(),
            source,
        })?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--jetstream")
            .arg("--store_dir")
            .arg(&spec.store_dir)
            .arg("--addr")
            .arg(&spec.host)
            .arg("--port")
            .arg(if spec.port == 0 {
                "-1".to_owned()
            } else {
                spec.port.to_string()
            })
            .args(&spec.extra_args)
            // Its own process group: a Ctrl-C in the terminal reaches only
            // our process, which then stops the server in order.
            .process_group(0);
        let mut port = None;
        let process = ManagedProcess::spawn("nats-server", cmd, spec.ready_timeout, |line| {
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                port = rest
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
            }
            line.contains("Server is ready")
        })
        .await?;
        spec.port = port.ok_or(NatsServerError::NoPort)?;
        tracing::info!(url = %format!("nats://{}:{}", spec.host, spec.port), store = %spec.store_dir.display(), "nats-server ready");
        Ok(Self { spec, process })
    }

    /// `nats://host:port` for clients.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.spec.host, self.spec.port)
    }

    /// What it runs with; after the first start the port is the one it
    /// listens on, so starting this spec again comes back on the same
    /// address and store.
    pub fn spec(&self) -> &NatsServerSpec {
        &self.spec
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &std::path::Path {
        &self.spec.store_dir
    }

    /// The server's recent output.
    pub fn tail(&self) -> Vec<String> {
        self.process.tail()
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after `grace`).
    ///
    /// # Errors
    /// [`ProcessError`] if it cannot be reaped.
    pub async fn stop(&mut self, grace: Duration) -> Result<(), ProcessError> {
        self.process.terminate(grace).await.map(|_| ())
    }

    /// Kills the server at once, as a crash or a power cut would.
    ///
    /// # Errors
    /// [`ProcessError`] if it cannot be reaped.
    pub async fn kill(&mut self) -> Result<(), ProcessError> {
        self.process.kill().await.map(|_| ())
    }

    /// Waits until the server exits by itself (a crash, or someone else
    /// stopping it) and returns how it ended.
    ///
    /// # Errors
    /// [`ProcessError`] if waiting fails.
    pub async fn exited(&mut self) -> Result<std::process::ExitStatus, ProcessError> {
        self.process.wait().await
    }

    /// Starts the server again on the same port with the same store (after
    /// [`stop`](Self::stop) or [`kill`](Self::kill); a running server is
    /// stopped first).
    ///
    /// # Errors
    /// [`NatsServerError`] if it fails to come back.
    pub async fn restart(&mut self) -> Result<(), NatsServerError> {
        self.process.terminate(Duration::from_secs(10)).await?;
        let again = Self::start(self.spec.clone()).await?;
        *self = again;
        Ok(())
    }
}
