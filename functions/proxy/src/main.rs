//! `plantd-proxy`: the proxy function as a process, in one of three roles
//! (`PLANTD_PROXY_MODE`, see `docs/decisions/0017-proxy-aws-websocket.md`):
//!
//! * `http` (default): the REST API and the local `/v1/ws` — under the
//!   Lambda runtime (`lambda_http`, API Gateway HTTP API v2 events) when
//!   `AWS_LAMBDA_RUNTIME_API` is set, otherwise an HTTP server
//!   (`PLANTD_PROXY_LISTEN`, default `127.0.0.1:8082`). `plantd up` mounts
//!   the same router in its one local server instead.
//! * `websocket`: API Gateway WebSocket API events under the Lambda runtime
//!   (`$connect`, `$disconnect`, `subscribe`, `unsubscribe`, `command`, `$default`;
//!   [`plantd_proxy::aws::websocket`]), recording connections in DynamoDB.
//! * `fanout`: a long-lived process next to NATS that posts live messages
//!   to the API Gateway connections and closes those of revoked tokens
//!   (it watches `plantd_revoked`; [`plantd_proxy::aws::fanout`]); it also
//!   compiles SQL analytics rules for the Lambda proxy
//!   ([`plantd_proxy::rule_compiler`]).
//!
//! Everything expensive (the secret, the JWKS, the NATS connection, the KV
//! handles, the SDK clients) is built once, at start (cold start on Lambda).
//!
//! Configuration: `PLANTD_*` environment variables, read once through
//! `plantd_shared::config` into [`Config`] (a bad value — a mode, a number
//! — stops the start with one line naming the variable):
//! * `PLANTD_PROXY_SECRET_ID` (in AWS): the Secrets Manager secret with
//!   `nats_url`, optional `nats_creds` and `jwks_url`
//!   ([`plantd_proxy::aws::secrets`]); otherwise `PLANTD_NATS_URL`
//!   (default `nats://127.0.0.1:4222`);
//! * `PLANTD_JWKS_URL` (the identity service's `/.well-known/jwks.json`,
//!   fetched at start and every `PLANTD_JWKS_REFRESH_SECS`, default 300) or
//!   `PLANTD_JWKS_FILE` (a JWKS document on disk) — not needed by `fanout`;
//! * `websocket`, `fanout`: `PLANTD_CONNECTIONS_TABLE` (the DynamoDB table);
//! * `fanout`: `PLANTD_WS_ENDPOINT` (the WebSocket API's
//!   `https://<api>.execute-api.<region>.amazonaws.com/<stage>`),
//!   `PLANTD_FANOUT_CACHE_MS` (reuse a site's subscription list this long,
//!   default 1000) and `PLANTD_FANOUT_WORKERS` (default 8);
//! * `PLANTD_LOG_SHIP` (default `warn`; `off` to stop): the level from
//!   which its events also go to `plantd._plantd.log.plantd.proxy`
//!   ([`plantd_shared::log_ship`]);
//! * `PLANTD_ALERTS_SECRET_ID` (in AWS; `http` requires it) or
//!   `PLANTD_CHANNEL_KEY_FILE` (locally; created on first start): the
//!   channel key that seals alert channels' webhook secrets in KV, the
//!   notifier's ([`plantd_alerts::notify::keys`]);
//! * `PLANTD_TRUSTED_PROXIES`: comma-separated proxy addresses whose
//!   `X-Forwarded-For` names the client in audit records (default none; on
//!   Lambda the client is API Gateway's `sourceIp`).
//!
//! `plantd-proxy --print-openapi` prints the `/openapi.json` document and
//! exits (the web app's API client is generated from it).
//!
//! Each role is a cargo feature (`mode-http`, `mode-websocket`,
//! `mode-fanout`; all three by default). The Lambda bootstraps are built
//! with one each (scripts/lambda-size, decision 0047), so the HTTP
//! function does not link DynamoDB and the management API, nor the
//! WebSocket function the REST routes; a role that was not built stops
//! the start with an error naming its feature.

#[cfg(feature = "mode-fanout")]
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
#[cfg(feature = "mode-websocket")]
use lambda_http::{LambdaEvent, service_fn};
use plantd_proxy::aws;
#[cfg(feature = "mode-fanout")]
use plantd_proxy::aws::Fanout;
#[cfg(any(feature = "mode-websocket", feature = "mode-fanout"))]
use plantd_proxy::aws::Registry;
#[cfg(feature = "mode-websocket")]
use plantd_proxy::aws::websocket;
use plantd_proxy::{AppState, Settings};
use plantd_shared::jwt::JwkSet;
use serde::{Deserialize, Serialize};
#[cfg(feature = "mode-websocket")]
use serde_json::Value;
#[cfg(feature = "mode-fanout")]
use tokio_util::sync::CancellationToken;

/// The role this process plays (`PLANTD_PROXY_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// The REST API and the local `/v1/ws`.
    #[default]
    Http,
    /// API Gateway WebSocket API events (Lambda only).
    Websocket,
    /// The long-lived fan-out to API Gateway connections.
    Fanout,
}

impl Mode {
    /// The cargo feature that builds this role in.
    fn feature(self) -> &'static str {
        match self {
            Mode::Http => "mode-http",
            Mode::Websocket => "mode-websocket",
            Mode::Fanout => "mode-fanout",
        }
    }

    /// Whether this binary was built with the role.
    fn built(self) -> bool {
        match self {
            Mode::Http => cfg!(feature = "mode-http"),
            Mode::Websocket => cfg!(feature = "mode-websocket"),
            Mode::Fanout => cfg!(feature = "mode-fanout"),
        }
    }
}

/// The function's configuration (`PLANTD_<KEY>` for each field).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The role (`http`, `websocket` or `fanout`).
    proxy_mode: Mode,
    /// The Secrets Manager secret with the NATS settings and JWKS URL.
    proxy_secret_id: Option<String>,
    /// The NATS server (without a secret).
    nats_url: String,
    /// The identity service's JWKS URL (the secret's, when it has one,
    /// comes first).
    jwks_url: Option<String>,
    /// A JWKS document on disk, when there is no URL.
    jwks_file: Option<std::path::PathBuf>,
    /// Seconds between JWKS refreshes from the URL.
    jwks_refresh_secs: u64,
    /// The DynamoDB table of WebSocket connections (`websocket`, `fanout`).
    connections_table: Option<String>,
    /// The WebSocket API's management endpoint (`fanout`).
    ws_endpoint: Option<String>,
    /// Milliseconds a site's subscription list is reused (`fanout`).
    fanout_cache_ms: u64,
    /// Concurrent posts to API Gateway (`fanout`).
    fanout_workers: usize,
    /// The HTTP listener outside Lambda.
    proxy_listen: String,
    /// Comma-separated proxy addresses whose `X-Forwarded-For` is believed.
    trusted_proxies: String,
    /// The alerts secret holding the channel key (AWS).
    alerts_secret_id: Option<String>,
    /// The channel key file (local runs).
    channel_key_file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            proxy_mode: Mode::Http,
            proxy_secret_id: None,
            nats_url: "nats://127.0.0.1:4222".into(),
            jwks_url: None,
            jwks_file: None,
            jwks_refresh_secs: 300,
            connections_table: None,
            ws_endpoint: None,
            fanout_cache_ms: 1000,
            fanout_workers: 8,
            proxy_listen: "127.0.0.1:8082".into(),
            trusted_proxies: String::new(),
            alerts_secret_id: None,
            channel_key_file: None,
        }
    }
}

/// Keys whose variables are taken as typed (addresses).
const VERBATIM: &[&str] = &["trusted_proxies"];

/// The command line overrides nothing.
#[derive(Serialize)]
struct NoOverrides {}

#[cfg(any(feature = "mode-websocket", feature = "mode-fanout"))]
/// A setting the mode needs, or [`aws::AwsError::Missing`] naming its
/// variable.
fn required(value: Option<&String>, env: &'static str) -> Result<String, aws::AwsError> {
    value.cloned().ok_or(aws::AwsError::Missing(env))
}

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

/// Where NATS and the keys come from.
struct Backbone {
    nats_url: String,
    nats_options: async_nats::ConnectOptions,
    jwks_url: Option<String>,
}

async fn backbone(
    config: &Config,
    sdk: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Backbone> {
    if let Some(sdk) = sdk
        && let Some(id) = &config.proxy_secret_id
    {
        let secret = aws::secrets::fetch(&aws_sdk_secretsmanager::Client::new(sdk), id).await?;
        tracing::info!(secret = %id, "NATS settings from Secrets Manager");
        return Ok(Backbone {
            nats_options: secret.nats_options(id)?,
            jwks_url: secret.jwks_url.clone().or_else(|| config.jwks_url.clone()),
            nats_url: secret.nats_url,
        });
    }
    Ok(Backbone {
        nats_url: config.nats_url.clone(),
        nats_options: async_nats::ConnectOptions::new(),
        jwks_url: config.jwks_url.clone(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `plantd-proxy --print-openapi`: the document `/openapi.json` serves,
    // without NATS or keys (the app's client is generated from it).
    if std::env::args().nth(1).as_deref() == Some("--print-openapi") {
        println!("{}", plantd_proxy::openapi::pretty_json());
        return Ok(());
    }
    plantd_shared::logging::init("plantd-proxy");
    // Warnings and errors also go to plantd._plantd.log.plantd.proxy.
    plantd_shared::log_ship::start("proxy");
    let config: Config = plantd_shared::config::load_verbatim(None, &NoOverrides {}, VERBATIM)?;
    let mode = config.proxy_mode;
    anyhow::ensure!(
        mode.built(),
        "PLANTD_PROXY_MODE={}: this plantd-proxy was built without that role (cargo feature {}); each Lambda bootstrap serves one role (scripts/lambda-size)",
        serde_json::to_value(mode)?.as_str().unwrap_or_default(),
        mode.feature()
    );
    let on_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    anyhow::ensure!(
        mode != Mode::Websocket || on_lambda,
        "PLANTD_PROXY_MODE=websocket runs under the Lambda runtime (AWS_LAMBDA_RUNTIME_API); locally /v1/ws serves WebSockets"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    // AWS is only configured where it is used: on Lambda, with a secret,
    // or for the registry.
    let sdk = if on_lambda || mode != Mode::Http || config.proxy_secret_id.is_some() {
        Some(plantd_shared::aws::sdk_config().await)
    } else {
        None
    };
    let Backbone {
        nats_url,
        nats_options,
        jwks_url,
    } = backbone(&config, sdk.as_ref()).await?;
    let client = plantd_shared::nats_urls::connect(&nats_url, nats_options.name("plantd-proxy"))
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

    #[cfg(feature = "mode-fanout")]
    if mode == Mode::Fanout {
        let sdk = sdk.context("the AWS configuration")?;
        let registry = Registry::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            required(config.connections_table.as_ref(), aws::TABLE_ENV)?,
        );
        let endpoint = required(config.ws_endpoint.as_ref(), aws::ENDPOINT_ENV)?;
        let cache = Duration::from_millis(config.fanout_cache_ms);
        // Which organisation owns each site: a subscription is delivered
        // only while its site's owner is the one it was authorised for.
        let sites = plantd_shared::sites::Sites::open(&async_nats::jetstream::new(client.clone()))
            .await
            .context("the site registry (KV bucket plantd_sites)")?;
        let fanout = Fanout::new(registry, aws::fanout::management_client(&sdk, &endpoint))
            .with_cache(cache)
            .with_sites(plantd_shared::sites::SiteCache::new(sites, cache));
        let workers = config.fanout_workers;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        // ECS stops a task with SIGTERM: the process then closes the
        // sockets of the sequenced subscriptions it delivers, so their
        // clients resume on another process.
        tokio::spawn(async move {
            plantd_shared::shutdown::terminated().await;
            stop.cancel();
        });
        // It also compiles SQL analytics rules for the Lambda proxy, which
        // is built without the SQL parser (decision 0047).
        let _compiler = plantd_proxy::rule_compiler::serve(client.clone())
            .await
            .context("the analytics rule compiler (subscribe)")?;
        tracing::info!(endpoint = %endpoint, "proxy fan-out starting");
        aws::fanout::run(client, Arc::new(fanout), workers, shutdown).await?;
        return Ok(());
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let jwks = match (&jwks_url, &config.jwks_file) {
        (Some(url), _) => fetch_jwks(&http, url).await?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JWKS document", path.display()))?
        }
        (None, None) => anyhow::bail!(
            "no JWKS: set jwks_url in the proxy secret, PLANTD_JWKS_URL or PLANTD_JWKS_FILE"
        ),
    };
    let settings = Settings {
        trusted_proxies: plantd_shared::http::source::TrustedProxies::parse(
            &config.trusted_proxies,
        )
        .map_err(|e| anyhow::anyhow!("PLANTD_TRUSTED_PROXIES: {e}"))?,
        ..Settings::default()
    };
    #[cfg(feature = "mode-websocket")]
    let max_subscriptions = settings.ws_max_subscriptions;
    let channel_keys = if mode == Mode::Http {
        plantd_alerts::notify::KeySource {
            secret_id: config.alerts_secret_id.clone(),
            key_file: config.channel_key_file.clone(),
            on_lambda,
        }
        .load()
        .await
        .context("the alert channels' key (the REST API writes channels)")?
    } else {
        // The WebSocket role serves no channel route: a key of its own,
        // never used, rather than a read of the alerts secret.
        plantd_alerts::notify::ChannelKeys::generate()
    };
    let state = AppState::new(client, jwks, settings, std::sync::Arc::new(channel_keys)).await?;

    // Keys follow identity's rotations: periodically, and at once for a
    // token signed by a key not seen yet.
    let refresher = jwks_url.map(|url| {
        let trust = state.trust.clone();
        trust.set_key_source(plantd_proxy::auth::KeySource::Url { client: http, url });
        tokio::spawn(trust.refresh_every(Duration::from_secs(config.jwks_refresh_secs)))
    });

    #[cfg(feature = "mode-websocket")]
    if mode == Mode::Websocket {
        let sdk = sdk.context("the AWS configuration")?;
        let registry = Registry::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            required(config.connections_table.as_ref(), aws::TABLE_ENV)?,
        );
        let handler = websocket::Handler::new(state.clone(), registry, max_subscriptions);
        tracing::info!("proxy serving WebSocket API events through the Lambda runtime API");
        return lambda_http::lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let handler = handler.clone();
            async move { Ok::<_, lambda_http::Error>(handler.handle_value(event.payload).await) }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"));
    }

    #[cfg(not(feature = "mode-http"))]
    {
        let _ = (state, refresher, config.proxy_listen);
        anyhow::bail!("built without the HTTP role (cargo feature mode-http)");
    }
    #[cfg(feature = "mode-http")]
    serve_http(state, on_lambda, &config.proxy_listen, refresher).await
}

/// The REST API (and the local `/v1/ws`): under the Lambda runtime, or
/// an HTTP server on `listen` until Ctrl-C.
#[cfg(feature = "mode-http")]
async fn serve_http(
    state: AppState,
    on_lambda: bool,
    listen: &str,
    refresher: Option<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    use plantd_proxy::app;
    if on_lambda {
        tracing::info!("proxy serving the HTTP API through the Lambda runtime API");
        // API Gateway's view of the client address is the peer (for the
        // audit trail's source addresses).
        let app = app(state).layer(axum::middleware::map_request(
            |mut req: axum::extract::Request| async move {
                use lambda_http::RequestExt as _;
                use lambda_http::request::RequestContext;
                let ip = match req.request_context_ref() {
                    Some(RequestContext::ApiGatewayV2(c)) => c.http.source_ip.clone(),
                    _ => None,
                };
                if let Some(ip) = ip.and_then(|s| s.parse().ok()) {
                    req.extensions_mut()
                        .insert(plantd_shared::http::source::PeerAddr(ip));
                }
                req
            },
        ));
        return lambda_http::run(app)
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"));
    }

    #[cfg(not(feature = "local-server"))]
    {
        let _ = (listen, refresher);
        anyhow::bail!(
            "this plantd-proxy serves HTTP only under the Lambda runtime (AWS_LAMBDA_RUNTIME_API): built without the cargo feature local-server"
        );
    }
    #[cfg(feature = "local-server")]
    {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(addr = %listener.local_addr()?, "proxy listening");
        axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(plantd_shared::shutdown::terminated())
        .await?;
        if let Some(task) = refresher {
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }
}
