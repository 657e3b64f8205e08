//! Who is calling: the bearer token, verified against the identity
//! service's public keys (API audience) and the revocation list in
//! `plantd_revoked`, with its permissions compiled once per request.

use std::sync::{Arc, OnceLock, RwLock};

use async_nats::jetstream::kv::{self, Operation};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use plantd_shared::claims::{API_AUDIENCE, Claims};
use plantd_shared::jwt::{self, JwkSet, VerifyOptions};
use tokio::sync::broadcast;

use crate::{AppError, AppState};

/// The keys tokens are verified against, and the revocation list.
#[derive(Debug)]
pub struct Trust {
    /// The identity service's JWKS; replaced whole on a refresh.
    jwks: RwLock<Arc<JwkSet>>,
    /// `plantd_revoked`: a `Put` for a token id means it is revoked.
    revoked: kv::Store,
    /// The watch of `plantd_revoked` for live sockets, started on first
    /// use by [`Trust::revocations`].
    watcher: OnceLock<Watcher>,
}

/// What live connections hear from [`Trust::revocations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// This token id was just revoked.
    Revoked(Arc<str>),
    /// The watch (re)started, or this receiver fell behind: revocations
    /// may have been missed, so look your own token id up with
    /// [`Trust::is_revoked`].
    Recheck,
}

/// The task watching `plantd_revoked` and the channel it feeds; the task
/// ends when the [`Trust`] is dropped.
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

impl Trust {
    /// Trusts `jwks`, checking revocations in `revoked`.
    pub fn new(jwks: JwkSet, revoked: kv::Store) -> Self {
        Self {
            jwks: RwLock::new(Arc::new(jwks)),
            revoked,
            watcher: OnceLock::new(),
        }
    }

    /// Revocations as they happen, for connections that outlive a request
    /// (the WebSocket). The first call starts one watch of
    /// `plantd_revoked` over `js` (shared by every later receiver; the
    /// loop is [`plantd_shared::revocations::watch`]). The contract for a
    /// receiver that must not miss its token's revocation: subscribe with
    /// this, then look the token id up once with [`Trust::is_revoked`],
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
        let claims = jwt::verify(
            token,
            &self.jwks(),
            &VerifyOptions::for_audience(API_AUDIENCE),
        )
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
