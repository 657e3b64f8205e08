//! `plantd-proxy`: the proxy function as a local HTTP server
//! (`PLANTD_PROXY_LISTEN`, default `127.0.0.1:8082`). `plantd up` mounts the
//! same router in its one local server instead; the AWS Lambda path is
//! described in `docs/decisions/0013-proxy.md`.
//!
//! Environment:
//! * `PLANTD_NATS_URL` (default `nats://127.0.0.1:4222`);
//! * `PLANTD_JWKS_URL` (the identity service's `/.well-known/jwks.json`,
//!   fetched at start and every `PLANTD_JWKS_REFRESH_SECS`, default 300) or
//!   `PLANTD_JWKS_FILE` (a JWKS document on disk).

use std::time::Duration;

use anyhow::Context as _;
use plantd_proxy::{AppState, Settings, app};
use plantd_shared::jwt::JwkSet;

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> anyhow::Result<JwkSet> {
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot fetch {url}"))?
        .error_for_status()
        .with_context(|| format!("cannot fetch {url}"))?;
    resp.json::<JwkSet>()
        .await
        .with_context(|| format!("{url} is not a JWKS document"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plantd_shared::logging::init("plantd-proxy");
    let nats_url =
        std::env::var("PLANTD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let jwks_url = std::env::var("PLANTD_JWKS_URL").ok();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let jwks = match (&jwks_url, std::env::var_os("PLANTD_JWKS_FILE")) {
        (Some(url), _) => fetch_jwks(&http, url).await?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.to_string_lossy()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JWKS document", path.to_string_lossy()))?
        }
        (None, None) => anyhow::bail!("set PLANTD_JWKS_URL or PLANTD_JWKS_FILE"),
    };
    let client = async_nats::ConnectOptions::new()
        .name("plantd-proxy")
        .connect(&nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
    let state = AppState::new(client, jwks, Settings::default()).await?;

    let refresher = jwks_url.map(|url| {
        let trust = state.trust.clone();
        let every = std::env::var("PLANTD_JWKS_REFRESH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300u64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
            tick.tick().await;
            loop {
                tick.tick().await;
                match fetch_jwks(&http, &url).await {
                    Ok(jwks) => trust.set_jwks(jwks),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "JWKS refresh failed; keeping the old keys"),
                }
            }
        })
    });

    let listen = std::env::var("PLANTD_PROXY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8082".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "proxy listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    if let Some(task) = refresher {
        task.abort();
        let _ = task.await;
    }
    Ok(())
}
