//! `plantd-identity`: the identity function as a process — under the
//! Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set, otherwise an HTTP
//! server (`PLANTD_IDENTITY_LISTEN`, default `127.0.0.1:8081`).
//!
//! Everything expensive (the Secrets Manager read, the NATS connection, the
//! KV handles, the keys) is built once here, at cold start, and shared by
//! every warm invocation.
//!
//! Configuration: `PLANTD_*` environment variables, read once through
//! `plantd_shared::config` into [`Config`] (a bad value stops the start
//! with one line naming the variable):
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
use serde::{Deserialize, Serialize};

/// The function's configuration (`PLANTD_<KEY>` for each field).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The Secrets Manager secret with the keys and NATS settings; when
    /// set, the only source of those.
    identity_secret_id: Option<String>,
    /// The NATS server (without a secret).
    nats_url: String,
    /// The signing key, PEM (without a secret; read verbatim).
    identity_signing_key: Option<String>,
    /// The signing key's file when `identity_signing_key` is unset
    /// (created with mode 0600 if missing).
    identity_signing_key_file: PathBuf,
    /// The bootstrap administrator's e-mail (with its password).
    bootstrap_admin_email: Option<String>,
    /// The bootstrap administrator's password (read verbatim).
    bootstrap_admin_password: Option<String>,
    /// The HTTP listener outside Lambda.
    identity_listen: String,
    /// Comma-separated proxy addresses whose `X-Forwarded-For` is believed.
    trusted_proxies: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            identity_secret_id: None,
            nats_url: "nats://127.0.0.1:4222".into(),
            identity_signing_key: None,
            identity_signing_key_file: PathBuf::from(".plantd/identity/signing-key.pem"),
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            identity_listen: "127.0.0.1:8081".into(),
            trusted_proxies: String::new(),
        }
    }
}

/// Keys whose variables are taken as typed: free text, PEMs, addresses.
const VERBATIM: &[&str] = &[
    "identity_signing_key",
    "bootstrap_admin_email",
    "bootstrap_admin_password",
    "trusted_proxies",
];

/// The command line overrides nothing.
#[derive(Serialize)]
struct NoOverrides {}

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
/// settings and key file.
async fn backbone(config: &Config) -> anyhow::Result<Backbone> {
    if let Some(id) = &config.identity_secret_id {
        let id = id.clone();
        let client = secrets::client().await;
        let secret = secrets::fetch(&client, &id).await?;
        tracing::info!(secret = %id, "signing keys and NATS credentials from Secrets Manager");
        // The PEM is checked here for a clear error naming the secret.
        secret.signing_key(&id)?;
        let keys = Keys::from_secret(&secret.ring(), client, id.clone())?;
        return Ok(Backbone {
            keys,
            nats_options: secret.nats_options(&id)?,
            nats_url: secret.nats_url,
        });
    }
    let keys = match &config.identity_signing_key {
        Some(pem) => Keys::new(Keys::from_pem(pem)?, Vec::new())?,
        None => Keys::open_file(&config.identity_signing_key_file)?,
    };
    Ok(Backbone {
        keys,
        nats_url: config.nats_url.clone(),
        nats_options: async_nats::ConnectOptions::new(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `plantd-identity --print-openapi`: the document
    // `/v1/identity/openapi.json` serves, without a server (the SDKs'
    // generators read it). Built with `--features openapi`, the document
    // the annotations make (what `functions/identity/openapi.json` must
    // hold); otherwise the committed one (decision 0046).
    if std::env::args().nth(1).as_deref() == Some("--print-openapi") {
        #[cfg(feature = "openapi")]
        print!("{}", plantd_identity::openapi::document::generate()?);
        #[cfg(not(feature = "openapi"))]
        print!("{}", plantd_identity::openapi::pretty_json());
        return Ok(());
    }
    plantd_shared::logging::init("plantd-identity");
    // Warnings and errors also go to plantd._plantd.log.plantd.identity.
    plantd_shared::log_ship::start("identity");
    let config: Config = plantd_shared::config::load_verbatim(None, &NoOverrides {}, VERBATIM)?;
    let Backbone {
        keys,
        nats_url,
        nats_options,
    } = backbone(&config).await?;
    let client = plantd_shared::nats_urls::connect(&nats_url, nats_options.name("plantd-identity"))
        .await
        .with_context(|| {
            format!(
                "cannot connect to NATS at {}",
                plantd_shared::nats_urls::redacted(&nats_url)
            )
        })?;
    if let Some(queue) = plantd_shared::log_ship::take(plantd_shared::log_ship::Route::Platform) {
        tokio::spawn(plantd_shared::log_ship::publish_to_jetstream(
            queue,
            client.clone(),
            plantd_shared::sites::PLATFORM_SITE,
        ));
    }
    let js = async_nats::jetstream::new(client);
    let settings = Settings {
        trusted_proxies: TrustedProxies::parse(&config.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("PLANTD_TRUSTED_PROXIES: {e}"))?,
        ..Settings::default()
    };
    let state = AppState::new(&js, keys, settings).await?;
    if let (Some(email), Some(pw)) = (
        &config.bootstrap_admin_email,
        &config.bootstrap_admin_password,
    ) {
        bootstrap::ensure_admin(&state, email, pw).await?;
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

    let listen = &config.identity_listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "identity listening");
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(plantd_shared::shutdown::terminated())
    .await?;
    Ok(())
}
