//! Who is calling: the bearer token, verified against our own JWKS (API
//! audience), not revoked, with its permissions compiled once.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use plantd_shared::claims::API_AUDIENCE;
use plantd_shared::jwt::{self, VerifyOptions};

use crate::{AppError, AppState};

pub use plantd_shared::http::{Caller, bearer};

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = plantd_shared::http::required_bearer(parts)?;
        let claims = jwt::verify(
            token,
            state.keys.jwks(),
            &VerifyOptions::for_audience(API_AUDIENCE),
        )
        .map_err(|e| AppError::unauthorized(e.to_string()))?;
        if state.store.is_revoked(&claims.jti).await? {
            return Err(AppError::unauthorized("token has been revoked"));
        }
        Ok(Caller::new(claims))
    }
}

/// Where the request came from, under [`plantd_shared::http::source`]'s
/// rules with this service's trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSource(pub plantd_shared::http::source::Source);

impl FromRequestParts<AppState> for ClientSource {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(Self(plantd_shared::http::source::source(
            parts,
            &state.settings.trusted_proxies,
        )))
    }
}
