//! Who is calling an HTTP API: the bearer token's claims with their
//! permissions compiled once. Each API verifies the token its own way (its
//! keys, its revocation check) in its `FromRequestParts` impl.

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::AppError;
use crate::claims::{Claims, Permissions};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's claims.
    pub claims: Claims,
    /// Its permissions, compiled.
    pub perms: Permissions,
}

impl Caller {
    /// A caller with `claims`, its permissions compiled.
    pub fn new(claims: Claims) -> Self {
        let perms = Permissions::from_claims(&claims);
        Self { claims, perms }
    }

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

/// The bearer token of a request, or 401 saying one is required.
///
/// # Errors
/// [`AppError::unauthorized`] when the request has none.
pub fn required_bearer(parts: &Parts) -> Result<&str, AppError> {
    bearer(parts).ok_or_else(|| AppError::unauthorized("a bearer token is required"))
}
