//! Who is calling: the bearer token, verified against the identity
//! service's public keys (API audience) and the revocation list in
//! `plantd_revoked`, with its permissions compiled once per request.
//!
//! The keys follow identity's rotations without a restart: with a
//! [`KeySource`] set, [`ApiTrust::refresh_every`] fetches the JWKS
//! periodically, and a token whose `kid` is not known makes one fetch at
//! once (at most one per [`UNKNOWN_KEY_REFRESH`]; concurrent callers wait
//! for the same fetch) before it is refused.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use plantd_shared::claims::{API_AUDIENCE, Claims};
use plantd_shared::jwt::{self, JwkSet, TokenError, VerifyOptions};
use tokio::sync::broadcast;

use crate::{AppError, AppState};

/// The shortest time between two fetches caused by unknown key ids (a
/// stream of forged `kid`s costs identity at most one fetch per this).
pub const UNKNOWN_KEY_REFRESH: Duration = Duration::from_secs(2);

/// Where fresh keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// The identity service's `/.well-known/jwks.json`.
    Url {
        /// The HTTP client.
        client: reqwest::Client,
        /// The JWKS URL.
        url: String,
    },
    /// The identity service in the same process (`plantd up`): its
    /// current JWKS.
    Local(Arc<dyn Fn() -> JwkSet + Send + Sync>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url { url, .. } => f.debug_struct("Url").field("url", url).finish(),
            Self::Local(_) => f.write_str("Local"),
        }
    }
}

impl KeySource {
    /// Fetches the current keys.
    ///
    /// # Errors
    /// What went wrong, for the log.
    pub async fn fetch(&self) -> Result<JwkSet, String> {
        match self {
            Self::Local(f) => Ok(f()),
            Self::Url { client, url } => {
                let resp = client
                    .get(url)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| format!("cannot fetch {url}: {e}"))?;
                resp.json::<JwkSet>()
                    .await
                    .map_err(|e| format!("{url} is not a JWKS document: {e}"))
            }
        }
    }
}

/// What the API trusts: the keys bearer tokens (API audience) are
/// verified against, and the revocation list in `plantd_revoked`, read
/// online. Not the edge's `plantd_bridge::Trust`, which verifies MQTT
/// passwords (site audience) from keys and revocations cached on the
/// edge's disk, so a site keeps authenticating devices offline.
#[derive(Debug)]
pub struct ApiTrust {
    /// The identity service's JWKS; replaced whole on a refresh.
    jwks: RwLock<Arc<JwkSet>>,
    /// `plantd_revoked`: a `Put` for a token id means it is revoked.
    revoked: kv::Store,
    /// The watch of `plantd_revoked` for live sockets, started on first
    /// use by [`ApiTrust::revocations`].
    watcher: OnceLock<Watcher>,
    /// Where fresh keys come from (none: the keys given at start only).
    source: RwLock<Option<KeySource>>,
    /// When keys were last fetched because of an unknown key id; held
    /// while fetching, so concurrent callers share one fetch.
    unknown_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// What live connections hear from [`ApiTrust::revocations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// This token id was just revoked.
    Revoked(Arc<str>),
    /// The watch (re)started, or this receiver fell behind: revocations
    /// may have been missed, so look your own token id up with
    /// [`ApiTrust::is_revoked`].
    Recheck,
}

/// The task watching `plantd_revoked` and the channel it feeds; the task
/// ends when the [`ApiTrust`] is dropped.
#[derive(Debug)]
struct Watcher {
    /// New revocations, to every live connection.
    tx: broadcast::Sender<Revocation>,
    /// The watching task.
    task: tokio::task::AbortHandle,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiTrust {
    /// Trusts `jwks`, checking revocations in `revoked`.
    pub fn new(jwks: JwkSet, revoked: kv::Store) -> Self {
        Self {
            jwks: RwLock::new(Arc::new(jwks)),
            revoked,
            watcher: OnceLock::new(),
            source: RwLock::new(None),
            unknown_fetch: tokio::sync::Mutex::new(None),
        }
    }

    /// Follows key rotations from `source` (see the module docs).
    pub fn set_key_source(&self, source: KeySource) {
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    fn key_source(&self) -> Option<KeySource> {
        self.source
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fetches the keys from the source now; the old keys stay on failure.
    ///
    /// # Errors
    /// Without a source, or when the fetch fails.
    pub async fn refresh_keys(&self) -> Result<(), String> {
        let source = self.key_source().ok_or("no key source is configured")?;
        let jwks = source.fetch().await?;
        self.set_jwks(jwks);
        Ok(())
    }

    /// Refreshes the keys every `interval` (failures logged, old keys
    /// kept), forever: spawn it and abort the task to stop.
    pub async fn refresh_every(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.refresh_keys().await {
                Ok(()) => tracing::debug!("signing keys refreshed"),
                Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the old keys"),
            }
        }
    }

    /// A token named a key we do not know: fetch once (rate-limited,
    /// shared by concurrent callers). True when the caller should verify
    /// again.
    async fn refresh_for_unknown_key(&self, seen: &Arc<JwkSet>) -> bool {
        if self.key_source().is_none() {
            return false;
        }
        let mut last = self.unknown_fetch.lock().await;
        if !Arc::ptr_eq(seen, &self.jwks()) {
            // Someone refreshed while we waited.
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KEY_REFRESH) {
            return false;
        }
        *last = Some(Instant::now());
        match self.refresh_keys().await {
            Ok(()) => {
                tracing::info!("fetched the signing keys for a token with an unknown key id");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the signing keys");
                false
            }
        }
    }

    /// Revocations as they happen, for connections that outlive a request
    /// (the WebSocket). The first call starts one watch of
    /// `plantd_revoked` over `js` (shared by every later receiver; the
    /// loop is [`plantd_shared::revocations::watch`]). The contract for a
    /// receiver that must not miss its token's revocation: subscribe with
    /// this, then look the token id up once with [`ApiTrust::is_revoked`],
    /// and again on every [`Revocation::Recheck`] (sent whenever the watch
    /// is established, so a revocation made before it was is still found).
    ///
    /// Must be called within a Tokio runtime.
    pub fn revocations(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> broadcast::Receiver<Revocation> {
        self.watcher
            .get_or_init(|| {
                use plantd_shared::revocations::{Event, Start, watch};
                let (tx, _) = broadcast::channel(1024);
                let feed = tx.clone();
                let task = tokio::spawn(watch(
                    js.clone(),
                    Start::Now,
                    move |event| {
                        let _ = feed.send(match event {
                            Event::Watching => Revocation::Recheck,
                            Event::Revoked { jti, .. } => Revocation::Revoked(jti.into()),
                        });
                    },
                    std::future::pending(),
                ));
                Watcher {
                    tx,
                    task: task.abort_handle(),
                }
            })
            .tx
            .subscribe()
    }

    /// Whether token id `jti` is revoked (looked up in `plantd_revoked`).
    ///
    /// # Errors
    /// 503 when the bucket cannot be read.
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, AppError> {
        match self.revoked.entry(jti).await {
            Ok(Some(e)) => Ok(e.operation == Operation::Put),
            Ok(None) => Ok(false),
            Err(e) => Err(AppError::unavailable(e)),
        }
    }

    /// Replaces the keys (after a refresh of the JWKS URL).
    pub fn set_jwks(&self, jwks: JwkSet) {
        let mut slot = self.jwks.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(jwks);
    }

    /// The current keys.
    pub fn jwks(&self) -> Arc<JwkSet> {
        self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Verifies an API token: signature, expiry, audience, not revoked.
    ///
    /// # Errors
    /// 401 for an invalid or revoked token; 503 when the revocation list
    /// cannot be read.
    pub async fn verify(&self, token: &str) -> Result<Claims, AppError> {
        let opts = VerifyOptions::for_audience(API_AUDIENCE);
        let keys = self.jwks();
        let claims = match jwt::verify(token, &keys, &opts) {
            Err(TokenError::UnknownKey(Some(_))) if self.refresh_for_unknown_key(&keys).await => {
                jwt::verify(token, &self.jwks(), &opts)
            }
            other => other,
        }
        .map_err(|e| AppError::unauthorized(e.to_string()))?;
        if self.is_revoked(&claims.jti).await? {
            return Err(AppError::unauthorized("token has been revoked"));
        }
        Ok(claims)
    }
}

pub use plantd_shared::http::{Caller, bearer};

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = plantd_shared::http::required_bearer(parts)?;
        let claims = state.trust.verify(token).await?;
        Ok(Caller::new(claims))
    }
}

/// `?access_token=` on a WebSocket URL.
#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    /// The token (browsers cannot set headers on a WebSocket handshake).
    access_token: Option<String>,
}

/// A caller authenticated for a WebSocket: by the bearer header, or by
/// `?access_token=` for browsers, which cannot set headers on the
/// handshake. Only `/v1/ws` accepts the query form (tokens in URLs end up
/// in access logs; HTTP routes insist on the header).
#[derive(Debug, Clone)]
pub struct SocketCaller(pub Caller);

impl FromRequestParts<AppState> for SocketCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let from_query = axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.access_token);
        let token = bearer(parts)
            .map(str::to_owned)
            .or(from_query)
            .ok_or_else(|| {
                AppError::unauthorized("a bearer token (header or ?access_token=) is required")
            })?;
        let claims = state.trust.verify(&token).await?;
        Ok(SocketCaller(Caller::new(claims)))
    }
}
