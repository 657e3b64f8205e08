//! `plantd-identity`: the identity function as a process — under the
//! Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set, otherwise an HTTP
//! server (`PLANTD_IDENTITY_LISTEN`, default `127.0.0.1:8081`).
//!
//! Everything expensive (the Secrets Manager read, the NATS connection, the
//! KV handles, the keys) is built once here, at cold start, and shared by
//! every warm invocation.
//!
//! Environment:
//! * `PLANTD_IDENTITY_SECRET_ID` (in AWS): the Secrets Manager secret with
//!   the signing key, the NATS URL and optional NATS credentials
//!   ([`plantd_identity::secrets`]). When set, it is the only source of
//!   those three.
//! * otherwise `PLANTD_NATS_URL` (default `nats://127.0.0.1:4222`),
//!   `PLANTD_IDENTITY_SIGNING_KEY` (PEM) or `PLANTD_IDENTITY_SIGNING_KEY_FILE`
//!   (created with mode 0600 if missing; default `.plantd/identity/signing-key.pem`;
//!   rotations are saved beside it in `signing-key.ring.json`).
//! * `PLANTD_BOOTSTRAP_ADMIN_EMAIL` + `PLANTD_BOOTSTRAP_ADMIN_PASSWORD`.
//! * `PLANTD_LOG_SHIP` (default `warn`; `off` to stop): the level from
//!   which its events also go to `plantd._plantd.log.plantd.identity`
//!   ([`plantd_shared::log_ship`]).
//! * `PLANTD_TRUSTED_PROXIES`: comma-separated proxy addresses whose
//!   `X-Forwarded-For` names the client for login throttling (default
//!   none; on Lambda the client is API Gateway's `sourceIp`).

use std::path::PathBuf;

use anyhow::Context as _;
use plantd_identity::{AppState, Keys, Settings, app, bootstrap, secrets};
use plantd_shared::http::source::{PeerAddr, TrustedProxies};

/// Where the signing keys and NATS come from.
struct Backbone {
    /// Signs tokens (and where rotations are saved).
    keys: Keys,
    /// The NATS server URL.
    nats_url: String,
    /// Connection options (credentials, when the secret carries them).
    nats_options: async_nats::ConnectOptions,
}

/// Reads the secret named by `PLANTD_IDENTITY_SECRET_ID`, or the local
/// environment and key file.
async fn backbone() -> anyhow::Result<Backbone> {
    if let Some((id, secret)) = secrets::from_env().await? {
        tracing::info!(secret = %id, "signing keys and NATS credentials from Secrets Manager");
        // The PEM is checked here for a clear error naming the secret.
        secret.signing_key(&id)?;
        let keys = Keys::from_secret(&secret.ring(), secrets::client().await, id.clone())?;
        return Ok(Backbone {
            keys,
            nats_options: secret.nats_options(&id)?,
            nats_url: secret.nats_url,
        });
    }
    let nats_url =
        std::env::var("PLANTD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let keys = match std::env::var("PLANTD_IDENTITY_SIGNING_KEY") {
        Ok(pem) => Keys::new(Keys::from_pem(&pem)?, Vec::new())?,
        Err(_) => {
            let path = std::env::var_os("PLANTD_IDENTITY_SIGNING_KEY_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".plantd/identity/signing-key.pem"));
            Keys::open_file(&path)?
        }
    };
    Ok(Backbone {
        keys,
        nats_url,
        nats_options: async_nats::ConnectOptions::new(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plantd_shared::logging::init("plantd-identity");
    // Warnings and errors also go to plantd._plantd.log.plantd.identity.
    plantd_shared::log_ship::start("identity");
    let Backbone {
        keys,
        nats_url,
        nats_options,
    } = backbone().await?;
    let client = nats_options
        .name("plantd-identity")
        .connect(&nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
    if let Some(queue) = plantd_shared::log_ship::take(plantd_shared::log_ship::Route::Platform) {
        tokio::spawn(plantd_shared::log_ship::publish_to_jetstream(
            queue,
            client.clone(),
            plantd_shared::sites::PLATFORM_SITE,
        ));
    }
    let js = async_nats::jetstream::new(client);
    let settings = Settings {
        trusted_proxies: TrustedProxies::from_env().map_err(anyhow::Error::msg)?,
        ..Settings::default()
    };
    let state = AppState::new(&js, keys, settings).await?;
    if let (Ok(email), Ok(pw)) = (
        std::env::var("PLANTD_BOOTSTRAP_ADMIN_EMAIL"),
        std::env::var("PLANTD_BOOTSTRAP_ADMIN_PASSWORD"),
    ) {
        bootstrap::ensure_admin(&state, &email, &pw).await?;
    }

    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        tracing::info!("identity serving through the Lambda runtime API");
        // API Gateway's view of the client address is the peer.
        let app = app(state).layer(axum::middleware::map_request(
            |mut req: axum::extract::Request| async move {
                use lambda_http::RequestExt as _;
                use lambda_http::request::RequestContext;
                let ip = match req.request_context_ref() {
                    Some(RequestContext::ApiGatewayV2(c)) => c.http.source_ip.clone(),
                    _ => None,
                };
                if let Some(ip) = ip.and_then(|s| s.parse().ok()) {
                    req.extensions_mut().insert(PeerAddr(ip));
                }
                req
            },
        ));
        return lambda_http::run(app)
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"));
    }

    let listen =
        std::env::var("PLANTD_IDENTITY_LISTEN").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "identity listening");
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
