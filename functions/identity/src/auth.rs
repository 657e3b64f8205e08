//! Who is calling: the bearer token, verified against our own JWKS (API
//! audience), not revoked, with its permissions compiled once.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use plantd_shared::claims::{API_AUDIENCE, Claims, Permissions};
use plantd_shared::jwt::{self, VerifyOptions};

use crate::{AppError, AppState};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's claims.
    pub claims: Claims,
    /// Its permissions, compiled.
    pub perms: Permissions,
}

impl Caller {
    /// 403 unless the caller holds `permission`.
    ///
    /// # Errors
    /// [`AppError::forbidden`] naming the permission.
    pub fn require(&self, permission: &str) -> Result<(), AppError> {
        if self.perms.allows(permission) {
            Ok(())
        } else {
            Err(AppError::forbidden(permission))
        }
    }

    /// The caller's organisation.
    pub fn org(&self) -> &str {
        &self.claims.org
    }
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token =
            bearer(parts).ok_or_else(|| AppError::unauthorized("a bearer token is required"))?;
        let claims = jwt::verify(
            token,
            state.keys.jwks(),
            &VerifyOptions::for_audience(API_AUDIENCE),
        )
        .map_err(|e| AppError::unauthorized(e.to_string()))?;
        if state.store.is_revoked(&claims.jti).await? {
            return Err(AppError::unauthorized("token has been revoked"));
        }
        let perms = Permissions::from_claims(&claims);
        Ok(Caller { claims, perms })
    }
}
