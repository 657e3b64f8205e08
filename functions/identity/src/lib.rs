//! `plantd-identity`: who may do what in plantd.
//!
//! A stateless function: every record lives in the JetStream KV bucket
//! `plantd_identity` (revocations in `plantd_revoked`) and is updated with
//! compare-and-set on the entry's revision, so any number of instances can
//! serve at once. The same [`app`] router runs under `lambda_http` in AWS,
//! under `axum::serve` locally, and in tests with `oneshot`.
//!
//! | module | what it holds |
//! |---|---|
//! | [`model`] | organisations, users, roles (with the built-in ones), service accounts, devices, refresh tokens |
//! | [`store`] | typed KV access with compare-and-set and retry |
//! | [`password`] | argon2id hashing and constant-time verification |
//! | [`throttle`] | login throttling by (email, source) and by source |
//! | [`revocation`] | the live access tokens of each principal, revoked at once on deactivation, deletion, role removal or request |
//! | [`tokens`] | access JWT issuance, opaque refresh tokens, revocation |
//! | [`keys`] | the signing keys and the JWKS document |
//! | [`audit`] | where a request came from, and recording refused requests in the audit trail |
//! | [`auth`] | the bearer-token extractor and permission checks |
//! | [`error`] | the JSON error every route returns |
//! | [`routes`] | the HTTP API (sites: [`routes::sites`]) |
//! | [`bootstrap`] | the first admin, from `PLANTD_BOOTSTRAP_ADMIN_*` |
//! | [`secrets`] | the signing key and NATS credentials from AWS Secrets Manager, at cold start |
//! | [`openapi`] | the OpenAPI document at `/v1/identity/openapi.json` (what the SDKs are generated from) |

pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod error;
pub mod keys;
pub mod model;
pub mod openapi;
pub mod password;
pub mod revocation;
pub mod routes;
pub mod secrets;
pub mod store;
pub mod throttle;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

pub use error::AppError;
pub use keys::Keys;
pub use store::Store;

/// Tunables of the identity service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `iss` of every token.
    pub issuer: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Login throttling by (email, source) and by source
    /// ([`throttle`]).
    pub throttle: throttle::ThrottleSettings,
    /// Proxies whose `X-Forwarded-For` names the client
    /// (`PLANTD_TRUSTED_PROXIES`); none by default.
    pub trusted_proxies: plantd_shared::http::source::TrustedProxies,
    /// Shortest password accepted.
    pub min_password_len: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            issuer: "plantd-identity".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            throttle: throttle::ThrottleSettings::default(),
            trusted_proxies: Default::default(),
            min_password_len: 12,
        }
    }
}

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Identity records.
    pub store: Store,
    /// Signing keys.
    pub keys: Arc<Keys>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// A hash verified for unknown users, so they take as long as known
    /// ones ([`password::DUMMY_HASH`]).
    pub dummy_hash: Arc<str>,
    /// The site registry (`plantd_sites`): which organisation owns each
    /// site, for `/v1/sites` and for the site audiences of tokens.
    pub sites: plantd_shared::sites::Sites,
    /// Appends to the audit trail (`PLANTD_AUDIT`).
    pub audit: plantd_shared::audit::Auditor,
}

impl AppState {
    /// Builds the state over a JetStream context whose `plantd_identity`,
    /// `plantd_revoked` and `plantd_sites` buckets exist.
    ///
    /// Hashes nothing: the unknown-user path verifies against the
    /// precomputed [`password::DUMMY_HASH`], so a cold start does not pay
    /// for an argon2 hash (issue 16).
    ///
    /// # Errors
    /// When a bucket is missing.
    pub async fn new(
        js: &async_nats::jetstream::Context,
        keys: Keys,
        settings: Settings,
    ) -> Result<Self, AppError> {
        let store = Store::open(js).await?;
        let sites = plantd_shared::sites::Sites::open(js).await?;
        Ok(Self {
            store,
            keys: Arc::new(keys),
            settings: Arc::new(settings),
            dummy_hash: password::DUMMY_HASH.into(),
            sites,
            audit: plantd_shared::audit::Auditor::new(js.clone()),
        })
    }
}

/// The identity HTTP API: the routes, every `403` recorded in the audit
/// trail, and a request id on every request (echoed in `x-request-id`).
pub fn app(state: AppState) -> Router {
    routes::router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            plantd_shared::http::denials::record_denials::<AppState>,
        ))
        .layer(axum::middleware::from_fn(
            plantd_shared::http::request_id::layer,
        ))
        .with_state(state)
}
