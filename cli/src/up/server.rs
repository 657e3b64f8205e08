//! The local functions server of `plantd up`: identity, the proxy (REST API
//! and `/v1/ws`), the trigger's `/metrics` and the web app behind one HTTP
//! listener; the signing keys and the local administrator (with its
//! generated password file) made on first start.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::config::identity_settings;
use super::edge::register_site;
use super::{UpConfig, status};

/// Where the local administrator's generated password is kept (mode 0600).
pub(super) fn admin_password_path(config: &UpConfig) -> PathBuf {
    config.data_dir.join("admin-password")
}

/// The functions server's task: its `axum::serve` result.
pub(super) type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Starts every function's router behind one HTTP server (with the
/// trigger's `/metrics` and `/healthz/trigger`), creating the signing key
/// and the local administrator on first start.
pub(super) async fn start_functions(
    config: &UpConfig,
    js: &async_nats::jetstream::Context,
    nats_url: &str,
    trigger: &plantd_trigger::Status,
    logs: &std::sync::Arc<plantd_logger::LogIndex>,
    channel_keys: &std::sync::Arc<plantd_alerts::notify::ChannelKeys>,
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
        channel_keys.clone(),
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
pub(super) fn app_files(config: &UpConfig) -> Result<axum::Router> {
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
