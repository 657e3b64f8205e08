//! A real nats-server with JetStream for one test.

use std::time::Duration;

use plantd_shared::local_nats::{NatsServer, NatsServerSpec};
use tempfile::TempDir;

/// A nats-server with JetStream on a free loopback port, its store in a
/// temporary directory. Dropping it kills the server and removes the store.
#[derive(Debug)]
pub struct Nats {
    /// The running server; `None` while stopped.
    server: Option<NatsServer>,
    /// The spec to start it again with the same port and store.
    spec: NatsServerSpec,
    /// Owns the store directory.
    _dir: TempDir,
}

impl Nats {
    /// Starts a fresh server and waits until it is ready.
    ///
    /// # Panics
    /// When `nats-server` is not installed (run `scripts/setup`) or does not
    /// start.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// [`Nats::start`], then plantd's streams and buckets with their
    /// default settings, as `plantd up` or the operator makes them.
    ///
    /// # Panics
    /// As [`Nats::start`], or when they cannot be created.
    pub async fn start_with_streams() -> Self {
        let nats = Self::start().await;
        let settings = plantd_shared::streams::Settings::default();
        plantd_shared::streams::ensure(&nats.jetstream().await, &settings)
            .await
            .expect("streams and buckets");
        nats
    }

    /// Starts a fresh server with `config` — nats-server configuration
    /// syntax, e.g. a `tls { ... }` block, `authorization`, or `operator` and
    /// `resolver` for decentralised JWT authentication — and waits until it
    /// is ready. JetStream, the port and the store still come from the
    /// command line (which wins over the file), as for [`Nats::start`]; an
    /// empty `config` is [`Nats::start`]. Restarts keep the configuration.
    ///
    /// Clients of a server that requires TLS or authentication connect with
    /// [`Nats::client_with`] and the URL from [`Nats::tls_url`] or
    /// [`Nats::url`].
    ///
    /// # Panics
    /// When `nats-server` is not installed (run `scripts/setup`), the
    /// configuration cannot be written, or the server does not start (a
    /// configuration it refuses included).
    pub async fn start_with(config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plantd-nats-")
            .tempdir()
            .expect("create a temporary directory for the JetStream store");
        let mut spec = NatsServerSpec::new(dir.path().join("store"));
        if !config.is_empty() {
            let file = dir.path().join("nats-server.conf");
            std::fs::write(&file, config).expect("write the nats-server configuration");
            spec.extra_args = vec!["--config".to_owned(), file.display().to_string()];
        }
        let server = NatsServer::start(spec.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        spec.port = server.port();
        Self {
            server: Some(server),
            spec,
            _dir: dir,
        }
    }

    /// `nats://127.0.0.1:<port>` — stays the same across restarts.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.spec.host, self.spec.port)
    }

    /// `tls://127.0.0.1:<port>`: the same server, for clients that must
    /// use TLS (a server started with a `tls` block).
    pub fn tls_url(&self) -> String {
        format!("tls://{}:{}", self.spec.host, self.spec.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// A new client connection.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// A JetStream context over a new client.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// A new client connection to `url` (one of [`Nats::url`] or
    /// [`Nats::tls_url`]) with `options`: TLS roots, a client certificate,
    /// credentials.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses the client.
    pub async fn client_with(
        &self,
        url: &str,
        options: async_nats::ConnectOptions,
    ) -> async_nats::Client {
        options
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }

    /// The server's recent output (for failure messages).
    pub fn tail(&self) -> Vec<String> {
        self.server
            .as_ref()
            .map(NatsServer::tail)
            .unwrap_or_default()
    }

    /// Stops the server gracefully, keeping its store (an uplink outage).
    ///
    /// # Panics
    /// When the server cannot be reaped.
    pub async fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop(Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| panic!("stop nats-server: {e}"));
        }
    }

    /// Kills the server (SIGKILL), keeping its store.
    ///
    /// # Panics
    /// When the server cannot be reaped.
    pub async fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill()
                .await
                .unwrap_or_else(|e| panic!("kill nats-server: {e}"));
        }
    }

    /// Starts the server again on the same port with the same store.
    ///
    /// # Panics
    /// When it is already running or does not come back.
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "nats-server is already running");
        let server = NatsServer::start(self.spec.clone())
            .await
            .unwrap_or_else(|e| panic!("restart nats-server on port {}: {e}", self.spec.port));
        self.server = Some(server);
    }

    /// Stops and starts the server on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }
}

/// How many messages stream `name` holds now.
///
/// # Panics
/// When the stream does not exist or its state cannot be read.
pub async fn stream_messages(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"))
        .get_info()
        .await
        .unwrap_or_else(|e| panic!("stream {name} info: {e}"))
        .state
        .messages
}
