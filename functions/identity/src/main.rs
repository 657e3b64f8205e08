//! `plantd-identity`: the identity function as a process — under the
//! Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set, otherwise an HTTP
//! server (`PLANTD_IDENTITY_LISTEN`, default `127.0.0.1:8081`).
//!
//! Environment: `PLANTD_NATS_URL` (default `nats://127.0.0.1:4222`),
//! `PLANTD_IDENTITY_SIGNING_KEY` (PEM) or `PLANTD_IDENTITY_SIGNING_KEY_FILE`
//! (created with mode 0600 if missing; default `.plantd/identity/signing-key.pem`),
//! `PLANTD_BOOTSTRAP_ADMIN_EMAIL` + `PLANTD_BOOTSTRAP_ADMIN_PASSWORD`.

use std::path::PathBuf;

use anyhow::Context as _;
use plantd_identity::{AppState, Keys, Settings, app, bootstrap};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plantd_shared::logging::init("plantd-identity");
    let nats_url =
        std::env::var("PLANTD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = async_nats::connect(&nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
    let js = async_nats::jetstream::new(client);
    let signing = match std::env::var("PLANTD_IDENTITY_SIGNING_KEY") {
        Ok(pem) => Keys::from_pem(&pem)?,
        Err(_) => {
            let path = std::env::var_os("PLANTD_IDENTITY_SIGNING_KEY_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".plantd/identity/signing-key.pem"));
            Keys::load_or_create(&path)?
        }
    };
    let state = AppState::new(&js, Keys::new(signing, Vec::new())?, Settings::default()).await?;
    if let (Ok(email), Ok(pw)) = (
        std::env::var("PLANTD_BOOTSTRAP_ADMIN_EMAIL"),
        std::env::var("PLANTD_BOOTSTRAP_ADMIN_PASSWORD"),
    ) {
        bootstrap::ensure_admin(&state, &email, &pw).await?;
    }
    let listen =
        std::env::var("PLANTD_IDENTITY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "identity listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
