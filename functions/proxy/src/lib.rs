//! `plantd-proxy`: how people and programs reach a plant over HTTP.
//!
//! A stateless function: scoped state lives in the JetStream KV bucket
//! `plantd_state`, telemetry in the `PLANTD_TELEMETRY` stream, commands go
//! to `PLANTD_COMMANDS`, service calls are NATS requests answered by the
//! site's edge. Every route is authorised by the caller's JWT (issued by
//! `plantd-identity`, verified here against its JWKS). The same [`app`]
//! router runs under `axum::serve` locally, inside `plantd up`, and in
//! tests with `oneshot`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`audit`] | where a request came from, and recording refused requests in the audit trail |
//! | [`auth`] | the keys tokens are verified against, the bearer-token extractor, permission checks |
//! | [`state_store`] | scoped state on `plantd_state`: keys, values with content types, compare-and-set, history |
//! | [`downsample`] | min/max/avg buckets and LTTB over a time range, in one pass |
//! | [`reading`] | a number out of a payload, whole or at a JSON field path |
//! | [`series_cache`] | recently charted topics' readings as columns, appended from the stream |
//! | [`scan`] | reading a stream in order with a throw-away ordered consumer |
//! | [`payload`] | payloads in JSON answers (JSON, text or base64) |
//! | [`json`] | the JSON body extractor (400 unknown fields, 413 too large) |
//! | [`error`] | the JSON error every route returns |
//! | [`openapi`] | the OpenAPI document at `/openapi.json`, generated from the route annotations |
//! | [`routes`] | the HTTP API |
//! | [`static_files`] | the web app's built files (`app/dist`), with the SPA fallback and cache headers |
//! | [`aws`] | on AWS: the WebSocket API function, the DynamoDB connection registry, fan-out with `post_to_connection` |

pub mod audit;
pub mod auth;
pub mod aws;
pub mod downsample;
pub mod error;
pub mod json;
pub mod openapi;
pub mod payload;
pub mod reading;
pub mod routes;
pub mod rule_compiler;
pub mod scan;
pub mod series_cache;
pub mod state_store;
pub mod static_files;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::Router;
use plantd_shared::jwt::JwkSet;
use plantd_shared::streams::REVOKED_BUCKET;

pub use auth::ApiTrust;
pub use error::AppError;
pub use state_store::StateStore;

/// Tunables of the proxy.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a service call waits for the device when the caller does
    /// not say.
    pub call_timeout: Duration,
    /// The longest wait a caller may ask for.
    pub max_call_timeout: Duration,
    /// Most messages one telemetry history page returns.
    pub max_page: usize,
    /// Messages one WebSocket may have queued for sending; a client that
    /// falls this far behind is closed (code 1008) rather than buffered.
    pub ws_send_queue: usize,
    /// Most live subscriptions one WebSocket may hold.
    pub ws_max_subscriptions: usize,
    /// Proxies whose `X-Forwarded-For` names the client, for the audit
    /// trail's source addresses (`PLANTD_TRUSTED_PROXIES`); none by
    /// default.
    pub trusted_proxies: plantd_shared::http::source::TrustedProxies,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(10),
            max_call_timeout: Duration::from_secs(60),
            max_page: 1000,
            ws_send_queue: 256,
            ws_max_subscriptions: 100,
            trusted_proxies: Default::default(),
        }
    }
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Verifies bearer tokens.
    pub trust: Arc<ApiTrust>,
    /// Scoped state.
    pub state: StateStore,
    /// NATS, for service calls and live subscriptions.
    pub client: async_nats::Client,
    /// JetStream, for commands and telemetry.
    pub js: jetstream::Context,
    /// Settings.
    pub settings: Arc<Settings>,
    /// The site registry (`plantd_sites`): every site-scoped door checks
    /// that the caller's organisation owns the site
    /// ([`routes::site::owned`]).
    pub sites: plantd_shared::sites::Sites,
    /// Appends to the audit trail (`PLANTD_AUDIT`).
    pub audit: plantd_shared::audit::Auditor,
    /// Notification channels (`plantd_alert_channels`) and test sends
    /// (`/v1/alert-channels`; one attempt, no retries).
    pub notifier: Arc<plantd_alerts::notify::Notifier>,
    /// The log index `/v1/logs` reads, when this process runs one
    /// (`plantd up`); `None` → 503 "log index not running here".
    pub logs: Option<Arc<plantd_logger::LogIndex>>,
    /// Readings of recently charted topics (`/v1/sites/{site}/series`).
    pub series: Arc<series_cache::SeriesCache>,
    /// The alert stores (rules, state, silences), opened by the first
    /// alert request that finds their buckets and kept: one lookup per
    /// process, not three per request.
    pub alert_stores: Arc<tokio::sync::OnceCell<plantd_alerts::Stores>>,
    /// The log aggregates bucket, opened the same way
    /// (`/v1/logs/aggregates`).
    pub log_aggregates: Arc<tokio::sync::OnceCell<plantd_logger::Aggregates>>,
}

impl AppState {
    /// Builds the state over a NATS client whose JetStream has the
    /// `plantd_state`, `plantd_revoked` and `plantd_sites` buckets (see
    /// `plantd_shared::streams::ensure`), trusting tokens signed by a key
    /// in `jwks`; alert channels' webhook secrets are sealed and opened
    /// with `channel_keys` (the notifier's: `plantd_alerts::notify::keys`).
    ///
    /// # Errors
    /// 503 when a bucket is missing or JetStream is unreachable.
    pub async fn new(
        client: async_nats::Client,
        jwks: JwkSet,
        settings: Settings,
        channel_keys: Arc<plantd_alerts::notify::ChannelKeys>,
    ) -> Result<Self, AppError> {
        let js = jetstream::new(client.clone());
        let revoked = js
            .get_key_value(REVOKED_BUCKET)
            .await
            .map_err(AppError::unavailable)?;
        let state = StateStore::open(client.clone(), js.clone()).await?;
        let sites = plantd_shared::sites::Sites::open(&js).await?;
        let audit = plantd_shared::audit::Auditor::new(js.clone());
        let notifier = notifier(&js, channel_keys).await?;
        Ok(Self {
            trust: Arc::new(ApiTrust::new(jwks, revoked)),
            state,
            client,
            js,
            settings: Arc::new(settings),
            sites,
            audit,
            notifier,
            logs: None,
            series: Arc::default(),
            alert_stores: Arc::default(),
            log_aggregates: Arc::default(),
        })
    }
}

/// The notifier the channel routes use: test sends make one attempt, so
/// `POST /v1/alert-channels/{name}/test` answers at once.
async fn notifier(
    js: &jetstream::Context,
    keys: Arc<plantd_alerts::notify::ChannelKeys>,
) -> Result<Arc<plantd_alerts::notify::Notifier>, AppError> {
    let settings = plantd_alerts::notify::Settings {
        retry: plantd_alerts::notify::Retry {
            attempts: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    plantd_alerts::notify::notifier(js, settings, keys)
        .await
        .map(Arc::new)
        .map_err(AppError::unavailable)
}

/// The proxy HTTP API: the routes, every `403` recorded in the audit
/// trail, and a request id on every request (echoed in `x-request-id`).
pub fn app(state: AppState) -> Router {
    audited(routes::router(), state)
}

/// The proxy HTTP API without `/healthz`, to merge into a server that
/// already has one (`plantd up` merges it beside `plantd_identity::app`).
pub fn mountable(state: AppState) -> Router {
    audited(routes::api(), state)
}

/// `routes` with the audit middleware and the request id, and `state`.
fn audited(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            plantd_shared::http::denials::record_denials::<AppState>,
        ))
        .layer(axum::middleware::from_fn(
            plantd_shared::http::request_id::layer,
        ))
        .with_state(state)
}
