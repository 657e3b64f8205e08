//! `plantd-e2e`: the whole stack on loopback, for the end-to-end tests in
//! `tests/` and the proxy benchmarks in the workspace's `benches/`.
//!
//! [`Stack::start`] runs, each for real and on free ports:
//!
//! * nats-server with JetStream (`plantd_testkit::Nats`) and plantd's
//!   streams and buckets;
//! * the identity and proxy functions behind one `axum::serve` HTTP server
//!   (as `plantd up` mounts them), with a generated signing key and a
//!   bootstrap administrator;
//! * optionally the edge broker (`plantd_edge::edge::run`, the code the
//!   `plantd-edge` binary runs) for site [`SITE`], bridged to that NATS and
//!   trusting the identity service's keys.
//!
//! Site [`SITE`] is registered to the bootstrap administrator's
//! organisation. Devices are registered through the identity API and get their MQTT
//! passwords from `POST /v1/auth/token` ([`Stack::device`]); people log in
//! with `POST /v1/auth/login` ([`Stack::login`]). Everything stops when the
//! [`Stack`] is stopped or dropped.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use plantd_shared::streams::{self, Settings as StreamSettings};
use plantd_testkit::Nats;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The edge's site.
pub const SITE: &str = "plant-1";

/// The bootstrap administrator's email.
pub const ADMIN: &str = "admin@plantd.test";

/// Its password.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple e2e";

/// A running stack. Dropping it stops the server and the edge (their tasks
/// are aborted) and then nats-server.
pub struct Stack {
    /// The functions' HTTP server.
    pub http: SocketAddr,
    /// The edge's MQTT listener, when the stack has an edge.
    pub mqtt: Option<SocketAddr>,
    /// An HTTP client with keep-alive.
    pub client: reqwest::Client,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
    edge: Option<(oneshot::Sender<()>, EdgeTask)>,
    /// nats-server (dropped after the server and the edge).
    pub nats: Nats,
    _dir: TempDir,
}

/// The in-process edge's task.
type EdgeTask = JoinHandle<Result<(), plantd_edge::edge::EdgeError>>;

/// What to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also run the edge broker for [`SITE`].
    pub edge: bool,
}

impl Stack {
    /// Starts nats-server, the functions, and (with `opts.edge`) the edge.
    ///
    /// # Errors
    /// When a part does not start.
    pub async fn start(opts: Options) -> Result<Self> {
        Self::start_with(opts, false).await
    }

    /// Starts the stack with an edge that fetches its keys from identity's
    /// JWKS URL (refreshing only hourly, and when a token names an unknown
    /// key) instead of reading a file: for the key rotation tests.
    ///
    /// # Errors
    /// When a part does not start.
    pub async fn start_following_keys() -> Result<Self> {
        Self::start_with(Options { edge: true }, true).await
    }

    async fn start_with(opts: Options, edge_follows_url: bool) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new().prefix("plantd-e2e-").tempdir()?;
        let nats = Nats::start().await;
        let js = nats.jetstream().await;
        streams::ensure(&js, &StreamSettings::default())
            .await
            .context("streams and buckets")?;

        use plantd_identity::{AppState, Keys, Settings, bootstrap};
        let keys = Keys::open_file(&dir.path().join("signing-key.pem"))
            .map_err(|e| anyhow!("signing keys: {e}"))?;
        let identity = AppState::new(&js, keys, Settings::default())
            .await
            .map_err(|e| anyhow!("identity: {e}"))?;
        bootstrap::ensure_admin(&identity, ADMIN, ADMIN_PASSWORD)
            .await
            .map_err(|e| anyhow!("admin: {e}"))?;
        let jwks = identity.keys.jwks().clone();
        let jwks_file = dir.path().join("jwks.json");
        std::fs::write(&jwks_file, serde_json::to_vec(&jwks)?)?;
        let proxy = plantd_proxy::AppState::new(
            nats.client().await,
            jwks,
            plantd_proxy::Settings::default(),
            std::sync::Arc::new(
                plantd_alerts::notify::keys::open_file(&dir.path().join("channel-keys.json"))
                    .map_err(|e| anyhow!("channel key: {e}"))?,
            ),
        )
        .await
        .map_err(|e| anyhow!("proxy: {e}"))?;
        // The proxy follows identity's key rotations, as under `plantd up`.
        let keys = identity.keys.clone();
        proxy
            .trust
            .set_key_source(plantd_proxy::auth::KeySource::Local(std::sync::Arc::new(
                move || keys.jwks().clone(),
            )));
        let router = axum::Router::new()
            .merge(plantd_identity::app(identity))
            .merge(plantd_proxy::mountable(proxy));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });

        let mut stack = Self {
            http,
            mqtt: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            server: Some((stop, server)),
            edge: None,
            nats,
            _dir: dir,
        };
        // The edge's site belongs to the administrator's organisation (as
        // `plantd up` registers `local`).
        let root = stack.login(&[]).await?;
        let (status, v) = stack
            .call(
                reqwest::Method::POST,
                "/v1/sites",
                Some(&root),
                Some(&json!({"id": SITE, "name": SITE})),
            )
            .await?;
        if status != 201 && status != 409 {
            bail!("register site {SITE}: {status} {v}");
        }
        if opts.edge {
            stack.start_edge(&jwks_file, edge_follows_url).await?;
        }
        Ok(stack)
    }

    /// Runs the edge for [`SITE`], with keys from `jwks_file` (loaded before
    /// it listens, so the first device is checked against them).
    async fn start_edge(&mut self, jwks_file: &std::path::Path, follow_url: bool) -> Result<()> {
        let mut config = plantd_edge::Config {
            site: SITE.into(),
            mqtt_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            data_dir: Some(self._dir.path().join("edge")),
            // The bootstrap administrator's organisation owns the site.
            org: Some(plantd_shared::sites::BOOTSTRAP_ORG.into()),
            ..plantd_edge::Config::default()
        };
        if follow_url {
            config.jwks_url = Some(format!("{}/.well-known/jwks.json", self.url()));
            config.jwks_refresh_secs = 3600;
        } else {
            config.jwks_file = Some(jwks_file.to_owned());
        }
        config.uplink.nats_url = Some(self.nats.url());
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(plantd_edge::edge::run(
            config,
            async move {
                let _ = stopped.await;
            },
            move |l: plantd_edge::server::Listening| {
                let _ = ready_tx.send(l.mqtt);
            },
        ));
        match ready_rx.await {
            Ok(mqtt) => {
                self.mqtt = Some(mqtt);
                self.edge = Some((stop, task));
                Ok(())
            }
            Err(_) => match task.await {
                Ok(Err(e)) => bail!("the edge did not start: {e}"),
                other => bail!("the edge did not start: {other:?}"),
            },
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `ws://127.0.0.1:<port>/v1/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.http)
    }

    /// The edge's MQTT address.
    ///
    /// # Panics
    /// When the stack runs no edge.
    pub fn mqtt(&self) -> SocketAddr {
        self.mqtt.expect("this stack runs no edge")
    }

    /// Sends a JSON request; the status and the JSON answer (`Null` when
    /// empty or not JSON).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self.client.request(method, format!("{}{path}", self.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Logs in as the administrator (with tokens also valid on `sites`);
    /// the access token.
    ///
    /// # Errors
    /// When the login is refused.
    pub async fn login(&self, sites: &[&str]) -> Result<String> {
        self.login_as(ADMIN, ADMIN_PASSWORD, sites).await
    }

    /// Logs in as `email`; the access token.
    ///
    /// # Errors
    /// When the login is refused.
    pub async fn login_as(&self, email: &str, password: &str, sites: &[&str]) -> Result<String> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/auth/login",
                None,
                Some(&json!({"email": email, "password": password, "sites": sites})),
            )
            .await?;
        if status != 200 {
            bail!("login {status}: {v}");
        }
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no access token in {v}"))
    }

    /// Registers a device on [`SITE`] with these MQTT grants (as `admin`)
    /// and gets its token: `(client id, token)`.
    ///
    /// # Errors
    /// When the identity service refuses.
    pub async fn device(
        &self,
        admin: &str,
        name: &str,
        publish: &[&str],
        subscribe: &[&str],
    ) -> Result<(String, String)> {
        let (status, creds) = self
            .call(
                reqwest::Method::POST,
                "/v1/devices",
                Some(admin),
                Some(&json!({"name": name, "site": SITE, "publish": publish, "subscribe": subscribe})),
            )
            .await?;
        if status != 201 {
            bail!("create device {status}: {creds}");
        }
        let id = creds["client_id"].as_str().unwrap_or_default().to_owned();
        let (status, token) = self
            .call(
                reqwest::Method::POST,
                "/v1/auth/token",
                None,
                Some(&json!({"grant_type": "client_credentials", "client_id": id, "client_secret": creds["client_secret"]})),
            )
            .await?;
        if status != 200 {
            bail!("device token {status}: {token}");
        }
        let token = token["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("no access token in {token}"))?
            .to_owned();
        Ok((id, token))
    }

    /// Stops the edge and the server in order, waiting for both.
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.edge.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some((_, task)) = self.edge.take() {
            task.abort();
        }
        if let Some((_, task)) = self.server.take() {
            task.abort();
        }
    }
}
