//! Revoking a principal — a user, a service account, a device — at once:
//! every access token it holds stops working everywhere.
//!
//! Identity remembers the id (`jti`) and expiry of every access token it
//! issues, per principal, in `plantd_identity` under
//! `issued.<org>.<subject>` ([`Issued`], expired entries pruned on every
//! write). Revoking the principal puts each live `jti` into
//! `plantd_revoked` — the one list every edge and proxy already watches
//! (`plantd_shared::revocations`): edges close the MQTT connections using
//! those tokens within a second, proxies close their WebSockets (local and
//! API Gateway), and every API refuses them. For users, refresh tokens
//! issued before the revocation stop working too
//! ([`crate::model::User::sessions_epoch`]).
//!
//! Revocation happens on deactivation, deletion, removal of a role (and
//! for every holder, when a role is narrowed or deleted), and
//! on `POST /v1/{users,service-accounts,devices}/{id}/revoke` ("log this
//! one out everywhere").
//!
//! A token issued *while* a revocation runs can escape it only if it was
//! issued before the principal was deactivated or deleted — issuance checks
//! that first — so at worst it lives its short lifetime, as any token
//! issued just before.

use axum::http::StatusCode;
use plantd_shared::jwt::now_secs;
use serde::{Deserialize, Serialize};

use crate::store::CAS_ATTEMPTS;
use crate::{AppError, AppState};

/// The access tokens issued to one principal and not yet expired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// `(jti, exp)` of each, oldest first.
    pub tokens: Vec<(String, u64)>,
}

/// Key of a principal's [`Issued`] record.
pub fn issued_key(org: &str, subject: &str) -> String {
    format!("issued.{org}.{subject}")
}

/// Remembers access token `jti` (expiring at `exp`, seconds) of `subject`
/// in `org`, pruning expired ones.
///
/// # Errors
/// 503 on storage errors, 409 after too many concurrent writers.
pub async fn remember(
    state: &AppState,
    org: &str,
    subject: &str,
    jti: &str,
    exp: u64,
) -> Result<(), AppError> {
    let key = issued_key(org, subject);
    let now = now_secs();
    for _ in 0..CAS_ATTEMPTS {
        let current = state.store.get::<Issued>(&key).await?;
        let mut issued = current.as_ref().map(|(i, _)| i.clone()).unwrap_or_default();
        issued.tokens.retain(|(_, e)| *e > now);
        issued.tokens.push((jti.to_owned(), exp));
        let written = match current {
            Some((_, rev)) => state.store.update(&key, &issued, rev).await,
            None => state.store.create(&key, &issued).await,
        };
        match written {
            Ok(_) => return Ok(()),
            Err(e) if e.status == StatusCode::CONFLICT => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AppError::conflict(format!(
        "{key}: too many concurrent changes"
    )))
}

/// Why a principal's tokens were revoked (for the log and the audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Deactivated.
    Deactivated,
    /// Deleted.
    Deleted,
    /// A role was taken away.
    RoleRemoved,
    /// A role it holds lost permissions or was deleted.
    RoleChanged,
    /// An administrator asked (`POST …/revoke`).
    Requested,
    /// An administrator set a new password (`PATCH /v1/users/{id}`).
    PasswordReset,
    /// The user changed their own password (`POST /v1/auth/password`).
    PasswordChanged,
}

impl Reason {
    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deactivated => "deactivated",
            Self::Deleted => "deleted",
            Self::RoleRemoved => "role removed",
            Self::RoleChanged => "role narrowed or deleted",
            Self::Requested => "revoked by an administrator",
            Self::PasswordReset => "password reset by an administrator",
            Self::PasswordChanged => "password changed",
        }
    }
}

/// Revokes every live access token of `subject` in `org`: puts their ids
/// into `plantd_revoked` and forgets them. Returns how many were live.
///
/// # Errors
/// 503 on storage errors.
pub async fn revoke_all(
    state: &AppState,
    org: &str,
    subject: &str,
    reason: Reason,
) -> Result<usize, AppError> {
    let key = issued_key(org, subject);
    let now = now_secs();
    let mut count = 0;
    for _ in 0..CAS_ATTEMPTS {
        let Some((issued, rev)) = state.store.get::<Issued>(&key).await? else {
            revoked(org, subject, reason, count);
            return Ok(count);
        };
        let live: Vec<&(String, u64)> = issued.tokens.iter().filter(|(_, e)| *e > now).collect();
        for (jti, exp) in &live {
            state.store.revoke_token(jti, *exp).await?;
        }
        count = count.max(live.len());
        // Emptied only after every id is in plantd_revoked, and only if no
        // token was issued meanwhile (else revoke that one too).
        match state.store.update(&key, &Issued::default(), rev).await {
            Ok(_) => {
                revoked(org, subject, reason, count);
                return Ok(count);
            }
            Err(e) if e.status == StatusCode::CONFLICT => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AppError::conflict(format!(
        "{key}: too many concurrent changes"
    )))
}

/// Revokes the live tokens of every user and service account of `org`
/// holding role `role` (the role was narrowed or deleted: tokens carry its
/// old permissions). Returns how many tokens were live.
///
/// # Errors
/// 503 on storage errors.
pub async fn revoke_role_holders(
    state: &AppState,
    org: &str,
    role: &str,
) -> Result<usize, AppError> {
    let role = role.to_owned();
    let mut holders: Vec<String> = state
        .store
        .list::<crate::model::User>(&format!("user.{org}."))
        .await?
        .into_iter()
        .filter(|u| u.roles.contains(&role))
        .map(|u| u.id)
        .collect();
    holders.extend(
        state
            .store
            .list::<crate::model::ServiceAccount>(&format!("sa.{org}."))
            .await?
            .into_iter()
            .filter(|s| s.roles.contains(&role))
            .map(|s| s.client_id),
    );
    let mut total = 0;
    for subject in holders {
        total += revoke_all(state, org, &subject, Reason::RoleChanged).await?;
    }
    Ok(total)
}

/// A principal's tokens were revoked: logged here; the one place to add
/// its audit record.
fn revoked(org: &str, subject: &str, reason: Reason, tokens: usize) {
    tracing::info!(
        org,
        subject,
        reason = reason.as_str(),
        tokens,
        "revoked the principal's live tokens"
    );
}
