//! Login throttles, for administrators: who is being delayed, from where,
//! until when — and clearing one (the operator locked out by a typo storm,
//! the office NAT address that tripped the per-source limit).
//!
//! An organisation's administrators (`identity:user:read` to list,
//! `identity:user:update` to clear) see the throttles of their own
//! organisation's emails. Throttles of unknown emails and per-source ones
//! concern no organisation: only holders of `identity:lockout:all` (the
//! `superadmin`) see and clear those, and every other one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::auth::Caller;
use crate::throttle::{self, Throttle};
use crate::{AppError, AppState};

/// The permission to see and clear every throttle, of any organisation.
pub const ALL: &str = "identity:lockout:all";

/// One throttle as listed.
#[derive(Debug, Serialize)]
pub struct LockoutView {
    /// Its id, for `DELETE /v1/lockouts/{id}`.
    pub id: String,
    /// The record.
    #[serde(flatten)]
    pub throttle: Throttle,
    /// Seconds until attempts are accepted again (0: accepted now, the
    /// failures still count toward the next delay).
    pub retry_after_secs: u64,
}

fn visible(caller: &Caller, t: &Throttle) -> bool {
    caller.perms.allows(ALL) || t.org.as_deref() == Some(caller.org())
}

/// `GET /v1/lockouts`: the throttles the caller may see, refused ones
/// first.
///
/// # Errors
/// 403 without `identity:user:read`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<LockoutView>>, AppError> {
    caller.require("identity:user:read")?;
    let now = plantd_shared::headers::now_ms();
    let mut out: Vec<LockoutView> = throttle::list(&state)
        .await?
        .into_iter()
        .filter(|(_, t)| visible(&caller, t))
        .map(|(id, t)| LockoutView {
            id,
            retry_after_secs: t.blocked_until_ms.saturating_sub(now).div_ceil(1000),
            throttle: t,
        })
        .collect();
    out.sort_by_key(|v| std::cmp::Reverse(v.retry_after_secs));
    Ok(Json(out))
}

/// `DELETE /v1/lockouts/{id}`: clears a throttle (the failures it counted
/// are forgotten).
///
/// # Errors
/// 403 without `identity:user:update`, 404 for an id the caller cannot
/// see or that does not exist.
pub async fn clear(
    State(state): State<AppState>,
    caller: Caller,
    origin: crate::audit::Origin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:user:update")?;
    let well_formed = (id.starts_with("acct.") || id.starts_with("src."))
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    if !well_formed {
        return Err(AppError::not_found("lockout"));
    }
    let key = format!("{}{id}", throttle::PREFIX);
    let Some((t, _)) = state.store.get::<Throttle>(&key).await? else {
        return Err(AppError::not_found("lockout"));
    };
    if !visible(&caller, &t) {
        return Err(AppError::not_found("lockout"));
    }
    state.store.delete(&key).await?;
    cleared(&caller, &t);
    let org = t.org.as_deref().unwrap_or(caller.org());
    let detail = serde_json::json!({
        "kind": t.kind,
        "email": t.email,
        "source": t.source,
    });
    let action = plantd_shared::audit::Action::LockoutClear;
    origin
        .record_detail(
            &state,
            &caller,
            action,
            org,
            format!("lockout:{id}"),
            detail,
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// An administrator cleared a throttle: logged here; the one place to add
/// its audit record.
fn cleared(caller: &Caller, t: &Throttle) {
    tracing::info!(
        actor = %caller.claims.sub,
        org = %caller.org(),
        kind = ?t.kind,
        email = t.email.as_deref().unwrap_or(""),
        source = %t.source,
        "login throttle cleared"
    );
}
