//! The signing keys, for the platform's operators: which keys are
//! published and a rotation. Only holders of `identity:keys:*` (the
//! bootstrap `superadmin`; no organisation admin) may see or rotate them:
//! the key signs every organisation's tokens.

use axum::Json;
use axum::extract::State;

use crate::auth::Caller;
use crate::keys::{KeyView, Rotated};
use crate::{AppError, AppState};

/// `GET /v1/keys`: the published keys (`signing`, `next`, `previous` with
/// the time each leaves the JWKS). No key material.
///
/// # Errors
/// 403 without `identity:keys:read`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<KeyView>>, AppError> {
    caller.require("identity:keys:read")?;
    state.keys.refresh().await;
    Ok(Json(state.keys.describe()))
}

/// `POST /v1/keys/rotate`: the next key starts signing, a new next key is
/// published, the old signing key stays in the JWKS until every token it
/// signed has expired. Edges and proxies pick the new key up without a
/// restart (it was published ahead; an unknown `kid` also makes them
/// fetch the JWKS again).
///
/// # Errors
/// 403 without `identity:keys:rotate`, 409 when the key comes from the
/// environment, 503 when the new ring cannot be saved (nothing changed).
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    origin: crate::audit::Origin,
) -> Result<Json<Rotated>, AppError> {
    caller.require("identity:keys:rotate")?;
    let rotated = state.keys.rotate(state.settings.access_ttl).await?;
    rotated_by(&caller, &rotated);
    let detail = serde_json::json!({
        "signing_kid": rotated.signing_kid,
        "retired_kid": rotated.retired_kid,
    });
    let target = format!("key:{}", rotated.signing_kid);
    let action = plantd_shared::audit::Action::KeyRotate;
    origin
        .record_detail(&state, &caller, action, caller.org(), target, detail)
        .await;
    Ok(Json(rotated))
}

/// A rotation happened: logged here; the one place to add its audit
/// record.
fn rotated_by(caller: &Caller, r: &Rotated) {
    tracing::warn!(
        actor = %caller.claims.sub,
        org = %caller.org(),
        signing = %r.signing_kid,
        retired = %r.retired_kid,
        "signing key rotated by an administrator"
    );
}
