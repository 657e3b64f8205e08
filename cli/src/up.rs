//! `plantd up`: run the whole stack on this machine until Ctrl-C or
//! SIGTERM.
//!
//! That is nats-server with JetStream (data under `<data-dir>/nats`), with
//! plantd's streams and buckets created or updated; the functions —
//! identity, the proxy (REST API and `/v1/ws`) and the web app behind one
//! local HTTP server (default `127.0.0.1:8080`), the logger, the alert
//! engine, the notifier and analytics on one trigger — and the edge broker,
//! each supervised and restarted when it stops. On first start a local
//! administrator is created with a generated password kept in
//! `<data-dir>/admin-password` (mode 0600) — never a fixed default. Each
//! component prints one status line on standard output; logs go to standard
//! error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use plantd_shared::local_nats::{NatsServer, NatsServerSpec};
use plantd_shared::streams::{self, Settings};
use serde::{Deserialize, Serialize};

use crate::supervise::{RestartPolicy, Restarts};

/// Configuration of `plantd up` (file `--config`, `PLANTD_*` env, flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpConfig {
    /// Where every component keeps its data.
    pub data_dir: PathBuf,
    /// The local nats-server.
    pub nats: NatsConfig,
    /// The local functions server.
    pub http: HttpConfig,
    /// The edge broker.
    pub edge: EdgeConfig,
}

/// The local edge broker's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Site name of this machine's edge.
    pub site: String,
    /// MQTT listener; `127.0.0.1:0` picks a free port.
    pub mqtt_listen: String,
    /// Health and metrics listener.
    pub http_listen: String,
    /// Let MQTT clients in without a token (loudly logged).
    pub allow_anonymous: bool,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            site: "local".into(),
            mqtt_listen: "127.0.0.1:1883".into(),
            http_listen: "127.0.0.1:9090".into(),
            allow_anonymous: false,
        }
    }
}

/// The longest `http.access_token_ttl_secs` accepted (a day).
const MAX_ACCESS_TTL_SECS: u64 = 24 * 60 * 60;

/// The local functions server's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to bind; `127.0.0.1:0` picks a free port.
    pub listen: String,
    /// Email of the local administrator created on first start.
    pub admin_email: String,
    /// The built web app served at `/` (`app/dist`); unset: `app/dist`
    /// under the working directory, else the repository's this binary was
    /// built from, when either has an `index.html` (docs/app.md).
    pub app_dir: Option<PathBuf>,
    /// Lifetime of the access tokens identity issues, in seconds (default
    /// 900; 1 to 86,400). Sessions renew theirs with the refresh token; a
    /// live socket is closed when its token expires, and the SDKs and
    /// `plantd sub` resume it with a renewed one (docs/sdk.md).
    pub access_token_ttl_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_email: "admin@plantd.local".into(),
            app_dir: None,
            access_token_ttl_secs: plantd_identity::Settings::default().access_ttl.as_secs(),
        }
    }
}

/// The local nats-server's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Address to bind; loopback unless you mean to expose it.
    pub host: String,
    /// Client port; `0` picks a free one.
    pub port: u16,
    /// The nats-server binary; empty finds it in `.venv/bin` or `PATH`.
    pub binary: Option<PathBuf>,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".plantd"),
            nats: NatsConfig::default(),
            http: HttpConfig::default(),
            edge: EdgeConfig::default(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 4222,
            binary: None,
        }
    }
}

/// Command-line overrides for [`UpConfig`]; `None` leaves the file's or the
/// default value.
#[derive(Debug, Default, Serialize)]
pub struct UpOverrides {
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--nats-*` flags.
    #[serde(skip_serializing_if = "NatsOverrides::is_empty")]
    pub nats: NatsOverrides,
    /// `--http-listen`.
    #[serde(skip_serializing_if = "HttpOverrides::is_empty")]
    pub http: HttpOverrides,
    /// `--mqtt-listen`, `--edge-http-listen`, `--allow-anonymous`.
    #[serde(skip_serializing_if = "EdgeOverrides::is_empty")]
    pub edge: EdgeOverrides,
}

/// Edge flags.
#[derive(Debug, Default, Serialize)]
pub struct EdgeOverrides {
    /// `--mqtt-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_listen: Option<String>,
    /// `--edge-http-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// `--allow-anonymous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
}

impl EdgeOverrides {
    fn is_empty(&self) -> bool {
        self.mqtt_listen.is_none() && self.http_listen.is_none() && self.allow_anonymous.is_none()
    }
}

/// `--http-listen`.
#[derive(Debug, Default, Serialize)]
pub struct HttpOverrides {
    /// `--http-listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--app-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_dir: Option<PathBuf>,
}

impl HttpOverrides {
    fn is_empty(&self) -> bool {
        self.listen.is_none() && self.app_dir.is_none()
    }
}

/// `--nats-host`, `--nats-port`.
#[derive(Debug, Default, Serialize)]
pub struct NatsOverrides {
    /// `--nats-host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `--nats-port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl NatsOverrides {
    fn is_empty(&self) -> bool {
        self.host.is_none() && self.port.is_none()
    }
}

/// Loads the configuration for `plantd up`.
///
/// # Errors
/// A one-line error naming the bad key and its file.
pub fn load_config(file: Option<&Path>, overrides: &UpOverrides) -> Result<UpConfig> {
    Ok(plantd_shared::config::load(file, overrides)?)
}

fn status(component: &str, state: &str, detail: impl std::fmt::Display) {
    println!("  {component:<9} {state:<7} {detail}");
}

/// Runs the stack until `shutdown` completes, then stops every component.
///
/// # Errors
/// When a component cannot start, or stops by itself while running.
pub async fn run(config: UpConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    // Warnings and errors (PLANTD_LOG_SHIP, default warn) go to PLANTD_LOGS:
    // the edge's through its journal, the others' to
    // plantd._plantd.log.plantd.<component> once NATS is up.
    plantd_shared::log_ship::start("up");
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    println!(
        "plantd up: starting the stack (data in {})",
        data_dir.display()
    );

    let mut spec = NatsServerSpec::new(data_dir.join("nats"));
    spec.host = config.nats.host.clone();
    spec.port = config.nats.port;
    spec.binary = config.nats.binary.clone();
    let mut nats = NatsServer::start(spec)
        .await
        .context("nats-server did not start")?;
    status(
        "nats",
        "ready",
        format_args!(
            "{}  (JetStream, store {})",
            nats.url(),
            nats.store_dir().display()
        ),
    );

    let client = async_nats::connect(nats.url())
        .await
        .with_context(|| format!("cannot connect to {}", nats.url()))?;
    let js = async_nats::jetstream::new(client.clone());
    streams::ensure(&js, &Settings::default())
        .await
        .context("cannot create plantd's streams and buckets")?;
    if let Some(queue) = plantd_shared::log_ship::take(plantd_shared::log_ship::Route::Platform) {
        tokio::spawn(plantd_shared::log_ship::publish_to_jetstream(
            queue,
            client.clone(),
            plantd_shared::sites::PLATFORM_SITE,
        ));
    }
    status("streams", "ready", streams::STREAMS.join(" "));
    status("buckets", "ready", streams::BUCKETS.join(" "));

    let (log_index, log_follow) = start_log_index(&js);
    let trigger = start_trigger(&js, &nats.url(), &log_index).await?;
    let trigger_status = trigger.status();
    let (functions_url, server_stop, server) =
        start_functions(&config, &js, &nats.url(), &trigger_status, &log_index).await?;
    status(
        "functions",
        "ready",
        format_args!(
            "{functions_url}  (identity /v1/auth, /.well-known/jwks.json; proxy /v1/state, /v1/sites)"
        ),
    );
    let (edge_stop, edge, edge_mqtt) = start_edge(&config, &nats.url(), &functions_url).await?;

    println!(
        "plantd is up. Next: get a token as {} (password in {}, mode 0600):",
        config.http.admin_email,
        admin_password_path(&config).display()
    );
    println!(
        "  TOKEN=$(curl -s {functions_url}/v1/auth/login -H 'content-type: application/json' -d \"{{\\\"email\\\":\\\"{}\\\",\\\"password\\\":\\\"$(cat {})\\\",\\\"sites\\\":[\\\"{}\\\"]}}\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        config.http.admin_email,
        admin_password_path(&config).display(),
        config.edge.site
    );
    println!(
        "  mosquitto_pub -h {} -p {} -u admin -P \"$TOKEN\" -t line1/temp -m 21.5",
        edge_mqtt.ip(),
        edge_mqtt.port()
    );
    println!(
        "  NATS is at {} (e.g. subscribe to plantd.>). Ctrl-C stops everything.",
        nats.url()
    );

    // Supervise until asked to stop: a component that stops by itself is
    // started again (nats-server on the same port and store); only a crash
    // loop ends `plantd up`. Meanwhile the edge keeps accepting and
    // journaling, and every NATS client reconnects by itself.
    tokio::pin!(shutdown);
    let policy = RestartPolicy::default();
    let mut nats_restarts = Restarts::new(policy);
    let mut edge_restarts = Restarts::new(policy);
    let mut functions_restarts = Restarts::new(policy);
    let (mut edge_stop, mut edge) = (edge_stop, edge);
    let (mut server_stop, mut server) = (server_stop, server);
    let outcome: Result<()> = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            exit = nats.exited() => {
                let how = exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                tracing::error!(exit = %how, "nats-server stopped unexpectedly; restarting it on the same store");
                status("nats", "down", format_args!("stopped unexpectedly ({how}); restarting"));
                let tail = nats.tail().join("\n");
                let spec = nats.spec().clone();
                let back = retry("nats-server", &mut nats_restarts, &mut shutdown, &tail, || {
                    let spec = spec.clone();
                    async move { NatsServer::start(spec).await.map_err(anyhow::Error::from) }
                })
                .await;
                match back {
                    Ok(Some(server)) => {
                        nats = server;
                        status(
                            "nats",
                            "ready",
                            format_args!("{}  (restarted, store {})", nats.url(), nats.store_dir().display()),
                        );
                        ensure_after_restart(&js).await;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            ended = &mut edge => {
                let why = describe_end(ended);
                tracing::error!(reason = %why, "the edge broker stopped unexpectedly; restarting it");
                status("edge", "down", format_args!("stopped unexpectedly ({why}); restarting"));
                let nats_url = nats.url();
                let back = retry("the edge broker", &mut edge_restarts, &mut shutdown, &why, || {
                    start_edge(&config, &nats_url, &functions_url)
                })
                .await;
                match back {
                    Ok(Some((stop, task, _))) => (edge_stop, edge) = (stop, task),
                    Ok(None) => {
                        edge = tokio::spawn(async { Ok(()) });
                        break Ok(());
                    }
                    Err(e) => {
                        edge = tokio::spawn(async { Ok(()) });
                        break Err(e);
                    }
                }
            }
            ended = &mut server => {
                let why = match ended {
                    Ok(Ok(())) => "stopped".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(reason = %why, "the functions server stopped unexpectedly; restarting it");
                status("functions", "down", format_args!("stopped unexpectedly ({why}); restarting"));
                let nats_url = nats.url();
                let back = retry("the functions server", &mut functions_restarts, &mut shutdown, &why, || {
                    start_functions(&config, &js, &nats_url, &trigger_status, &log_index)
                })
                .await;
                match back {
                    Ok(Some((url, stop, task))) => {
                        status("functions", "ready", format_args!("{url}  (restarted)"));
                        (server_stop, server) = (stop, task);
                    }
                    Ok(None) => {
                        server = tokio::spawn(async { Ok(()) });
                        break Ok(());
                    }
                    Err(e) => {
                        server = tokio::spawn(async { Ok(()) });
                        break Err(e);
                    }
                }
            }
        }
    };

    println!("plantd up: stopping");
    let _ = edge_stop.send(());
    match edge.await {
        Ok(Ok(())) => status("edge", "stopped", &config.edge.site),
        Ok(Err(e)) => tracing::warn!(error = %e, "edge"),
        Err(e) => tracing::warn!(error = %e, "edge task"),
    }
    let _ = server_stop.send(());
    match server.await {
        Ok(Ok(())) => status("functions", "stopped", &functions_url),
        Ok(Err(e)) => tracing::warn!(error = %e, "functions server"),
        Err(e) => tracing::warn!(error = %e, "functions server task"),
    }
    stop_trigger(trigger).await;
    log_follow.abort();
    if let Err(e) = client.drain().await {
        tracing::debug!(error = %e, "draining the NATS client");
    }
    nats.stop(Duration::from_secs(15))
        .await
        .context("stopping nats-server")?;
    status("nats", "stopped", nats.url());
    outcome
}

/// Starts a component again with `attempt`, waiting the policy's growing
/// delay before each try, until it comes up (`Some`), shutdown is
/// requested (`None`), or it is crash-looping.
///
/// # Errors
/// When `restarts` says the component is crash-looping; the error names
/// it and carries `last` (its last output or failure) and the last
/// attempt's error.
async fn retry<T, Fut>(
    what: &str,
    restarts: &mut Restarts,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    last: &str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<Option<T>>
where
    Fut: Future<Output = Result<T>>,
{
    let mut last_error = String::new();
    loop {
        let delay = restarts.failed(Instant::now()).map_err(|e| {
            anyhow::anyhow!("{what} keeps stopping ({e}); last attempt: {last_error}\n{last}")
        })?;
        tracing::info!(
            component = what,
            ?delay,
            recent_failures = restarts.recent(),
            "restarting"
        );
        if wait_or_shutdown(delay, shutdown).await {
            return Ok(None);
        }
        match attempt().await {
            Ok(t) => return Ok(Some(t)),
            Err(e) => {
                tracing::error!(component = what, error = %e, "restart failed");
                last_error = format!("{e:#}");
            }
        }
    }
}

/// Re-applies the streams and buckets after nats-server came back (a
/// wiped store comes back whole), once the client has reconnected;
/// bounded, so a slow reconnect is logged rather than fatal.
async fn ensure_after_restart(js: &async_nats::jetstream::Context) {
    let settings = Settings::default();
    let ensure = tokio::time::timeout(Duration::from_secs(30), streams::ensure(js, &settings));
    match ensure.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "streams and buckets after restart"),
        Err(_) => tracing::warn!(
            "streams and buckets not re-checked: the NATS client did not reconnect within 30 s"
        ),
    }
}

/// Sleeps `delay` unless `shutdown` completes first; true when it did.
async fn wait_or_shutdown(
    delay: Duration,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tokio::select! {
        _ = shutdown.as_mut() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// What a finished edge task says about why it ended.
fn describe_end(
    ended: Result<Result<(), plantd_edge::edge::EdgeError>, tokio::task::JoinError>,
) -> String {
    match ended {
        Ok(Ok(())) => "stopped".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(e) if e.is_panic() => format!("panicked: {e}"),
        Err(e) => e.to_string(),
    }
}

type EdgeTask = tokio::task::JoinHandle<Result<(), plantd_edge::edge::EdgeError>>;

/// Runs the edge broker bridged to the local NATS, trusting the local
/// identity service's keys.
async fn start_edge(
    config: &UpConfig,
    nats_url: &str,
    functions_url: &str,
) -> Result<(
    tokio::sync::oneshot::Sender<()>,
    EdgeTask,
    std::net::SocketAddr,
)> {
    let e = &config.edge;
    let mut edge = plantd_edge::Config {
        site: e.site.clone(),
        mqtt_listen: e.mqtt_listen.clone(),
        http_listen: e.http_listen.clone(),
        data_dir: Some(config.data_dir.join("edge")),
        allow_anonymous: e.allow_anonymous,
        // The site is registered to the bootstrap organisation at start
        // (`register_site`): only its tokens are let in.
        org: Some(plantd_shared::sites::BOOTSTRAP_ORG.to_owned()),
        jwks_url: Some(format!("{functions_url}/.well-known/jwks.json")),
        ..plantd_edge::Config::default()
    };
    edge.uplink.nats_url = Some(nats_url.to_owned());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(plantd_edge::edge::run(
        edge,
        async move {
            let _ = stopped.await;
        },
        move |listening: plantd_edge::server::Listening| {
            let _ = ready_tx.send((listening.mqtt, listening.http));
        },
    ));
    let (mqtt, http) = match ready_rx.await {
        Ok(a) => a,
        Err(_) => {
            let why = match task.await {
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(())) => "stopped".into(),
                Err(e) => e.to_string(),
            };
            return Err(anyhow::anyhow!("the edge broker did not start: {why}"));
        }
    };
    status(
        "edge",
        "ready",
        format_args!(
            "mqtt://{mqtt}  (site {}, bridged to NATS; health http://{http}/readyz, metrics /metrics{})",
            e.site,
            if e.allow_anonymous {
                "; ANONYMOUS ACCESS ON"
            } else {
                "; clients need a token"
            }
        ),
    );
    Ok((stop, task, mqtt))
}

/// Registers the edge's site to the bootstrap organisation (idempotent: a
/// restart finds it registered).
///
/// # Errors
/// When the site name is invalid, the registry unreachable, or another
/// organisation owns the site.
async fn register_site(state: &plantd_identity::AppState, site: &str) -> Result<()> {
    use plantd_shared::sites::{BOOTSTRAP_ORG, Registered, SitesError};
    let id =
        plantd_shared::subject::Site::new(site).map_err(|e| anyhow::anyhow!("edge site: {e}"))?;
    match state
        .sites
        .register(&id, BOOTSTRAP_ORG, "local site (plantd up)")
        .await
    {
        Ok(Registered::Created) => status(
            "site",
            "registered",
            format_args!("{site} (organisation {BOOTSTRAP_ORG})"),
        ),
        Ok(Registered::Existed) => status(
            "site",
            "ready",
            format_args!("{site} (organisation {BOOTSTRAP_ORG})"),
        ),
        Err(SitesError::OwnedByOther { org, .. }) => {
            return Err(anyhow::anyhow!(
                "site {site} is registered to organisation {org}; plantd up runs its edge for organisation {BOOTSTRAP_ORG}: choose another site or delete it (plantd sites delete {site})"
            ));
        }
        Err(e) => return Err(anyhow::anyhow!("site registry: {e}")),
    }
    Ok(())
}

fn admin_password_path(config: &UpConfig) -> PathBuf {
    config.data_dir.join("admin-password")
}

type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Identity's settings from the `http` table.
///
/// # Errors
/// `http.access_token_ttl_secs` out of 1..=86,400.
fn identity_settings(http: &HttpConfig) -> Result<plantd_identity::Settings> {
    let ttl = http.access_token_ttl_secs;
    if !(1..=MAX_ACCESS_TTL_SECS).contains(&ttl) {
        anyhow::bail!(
            "http.access_token_ttl_secs is {ttl}: give 1 to {MAX_ACCESS_TTL_SECS} seconds"
        );
    }
    Ok(plantd_identity::Settings {
        access_ttl: Duration::from_secs(ttl),
        ..plantd_identity::Settings::default()
    })
}

/// Starts every function's router behind one HTTP server (with the
/// trigger's `/metrics` and `/healthz/trigger`), creating the signing key
/// and the local administrator on first start.
async fn start_functions(
    config: &UpConfig,
    js: &async_nats::jetstream::Context,
    nats_url: &str,
    trigger: &plantd_trigger::Status,
    logs: &std::sync::Arc<plantd_logger::LogIndex>,
) -> Result<(String, tokio::sync::oneshot::Sender<()>, ServerTask)> {
    use plantd_identity::{AppState, Keys, bootstrap, keys};
    // The key ring (signing, next, previous keys) lives beside the key
    // file, so `POST /v1/keys/rotate` survives a restart.
    let keys = Keys::open_file(&config.data_dir.join("identity").join("signing-key.pem"))
        .map_err(|e| anyhow::anyhow!("signing keys: {e}"))?;
    let state = AppState::new(js, keys, identity_settings(&config.http)?)
        .await
        .map_err(|e| anyhow::anyhow!("identity: {e}"))?;
    let pw_path = admin_password_path(config);
    let password = match std::fs::read_to_string(&pw_path) {
        Ok(p) => p.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let p = plantd_identity::password::random_secret();
            keys::write_secret(&pw_path, &p).map_err(|e| anyhow::anyhow!("{e}"))?;
            p
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", pw_path.display())),
    };
    match bootstrap::ensure_admin(&state, &config.http.admin_email, &password)
        .await
        .map_err(|e| anyhow::anyhow!("local administrator: {e}"))?
    {
        bootstrap::Bootstrap::Created(_) => status("admin", "created", &config.http.admin_email),
        bootstrap::Bootstrap::Exists => status("admin", "ready", &config.http.admin_email),
    }
    register_site(&state, &config.edge.site).await?;
    let client = async_nats::connect(nats_url)
        .await
        .with_context(|| format!("cannot connect to {nats_url}"))?;
    let mut proxy = plantd_proxy::AppState::new(
        client,
        state.keys.jwks().clone(),
        plantd_proxy::Settings::default(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("proxy: {e}"))?;
    // `/v1/logs` reads the log index this process keeps.
    proxy.logs = Some(logs.clone());
    // The proxy follows identity's key rotations in this process.
    let keys = state.keys.clone();
    proxy
        .trust
        .set_key_source(plantd_proxy::auth::KeySource::Local(std::sync::Arc::new(
            move || keys.jwks().clone(),
        )));
    let router = axum::Router::new()
        .merge(plantd_identity::app(state))
        .merge(plantd_proxy::mountable(proxy))
        // The trigger's Prometheus `/metrics` and `/healthz/trigger` (503
        // naming a stuck consumer).
        .merge(plantd_trigger::http::routes(trigger.clone()))
        // The web app at `/` (every path no route above claims).
        .merge(app_files(config)?);
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    Ok((url, stop, task))
}

/// The web app's files as a fallback router: the configured `app_dir`
/// (an error when it holds no built app), else the app embedded in the
/// binary (release builds), else the first default directory that holds
/// one; without one, `/` answers 404 and a status line says how to build
/// it.
fn app_files(config: &UpConfig) -> Result<axum::Router> {
    use plantd_proxy::static_files::{self, AppDir};
    let found = match &config.http.app_dir {
        Some(dir) => Some(AppDir::open(dir).map_err(|e| anyhow::anyhow!("app_dir: {e}"))?),
        // A release build with the app inside (feature plantd-proxy/embed-app).
        None => static_files::embedded().or_else(|| {
            [
                PathBuf::from("app/dist"),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../app/dist"),
            ]
            .iter()
            .find_map(|dir| AppDir::open(dir).ok())
        }),
    };
    match found {
        Some(app) => {
            status("app", "ready", app.describe());
            Ok(static_files::router(app))
        }
        None => {
            status(
                "app",
                "missing",
                "no built web app (cd app && npm ci && npm run build, or --app-dir)",
            );
            Ok(axum::Router::new())
        }
    }
}

// ── The trigger (issue 13): stream events → functions, in this process ──

/// Starts the event functions (logger, alert engine, notifier, analytics)
/// on one trigger in this process (`crate::functions`), the analytics
/// function and the logger on connections of their own to `nats_url`,
/// printing a line each.
async fn start_trigger(
    js: &async_nats::jetstream::Context,
    nats_url: &str,
    log_index: &std::sync::Arc<plantd_logger::LogIndex>,
) -> Result<crate::functions::EventFunctions> {
    let connections = crate::functions::FunctionConnections::connect(nats_url).await?;
    // The logger feeds the log index the lines it parsed (one parse each).
    let functions = crate::functions::EventFunctions::start_feeding(
        js,
        connections,
        plantd_trigger::ConsumerSettings::default(),
        Some(log_index.clone()),
    )
    .await?;
    for (name, detail) in functions.lines() {
        status(name, "ready", detail);
    }
    Ok(functions)
}

/// The log index `/v1/logs` reads: hydrated from `PLANTD_LOGS` (the last
/// day), then following it live (docs/decisions/0023-log-index.md). The
/// task restarts its consumer by itself when nats-server comes back.
fn start_log_index(
    js: &async_nats::jetstream::Context,
) -> (
    std::sync::Arc<plantd_logger::LogIndex>,
    tokio::task::JoinHandle<()>,
) {
    let index = std::sync::Arc::new(plantd_logger::LogIndex::new(
        plantd_logger::IndexSettings::default(),
    ));
    let task = plantd_logger::follow(index.clone(), js.clone());
    let s = index.settings();
    status(
        "log index",
        "ready",
        format_args!(
            "following {}  (at most {} lines / {} MiB; plantd logs)",
            streams::LOGS,
            s.max_lines,
            s.max_bytes >> 20
        ),
    );
    (index, task)
}

/// Stops the event functions after the batches in hand are settled.
async fn stop_trigger(functions: crate::functions::EventFunctions) {
    functions.stop().await;
    status("trigger", "stopped", "");
}

/// Resolves when the process receives Ctrl-C (SIGINT) or SIGTERM
/// ([`plantd_shared::shutdown::terminated`]).
pub async fn shutdown_signal() {
    plantd_shared::shutdown::terminated().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let c = load_config(
            None,
            &UpOverrides {
                data_dir: Some("/tmp/x".into()),
                nats: NatsOverrides {
                    port: Some(5222),
                    host: None,
                },
                http: HttpOverrides::default(),
                edge: EdgeOverrides::default(),
            },
        )
        .expect("config");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.nats.port, 5222);
        assert_eq!(c.nats.host, "127.0.0.1");
    }

    #[test]
    fn the_access_token_lifetime_is_identitys_and_bounded() {
        let mut http = HttpConfig::default();
        assert_eq!(
            identity_settings(&http).expect("default").access_ttl,
            plantd_identity::Settings::default().access_ttl
        );
        http.access_token_ttl_secs = 3;
        assert_eq!(
            identity_settings(&http).expect("3 s").access_ttl,
            Duration::from_secs(3)
        );
        for bad in [0, MAX_ACCESS_TTL_SECS + 1] {
            http.access_token_ttl_secs = bad;
            let e = identity_settings(&http).expect_err("out of range");
            assert!(e.to_string().contains("http.access_token_ttl_secs"), "{e}");
        }
    }
}
