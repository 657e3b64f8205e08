//! Roles: the built-in ones and each organisation's own.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plantd_shared::claims::{ANY_SITE, MqttGrant};
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;
use serde::Deserialize;

use super::json::Body;
use super::privilege::{check_mqtt_grantable, valid_role_name};
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::{self, BUILTIN_ROLES, Role};
use crate::revocation;
use crate::{AppError, AppState};
use plantd_shared::audit::Action;

/// `POST /v1/roles`, `PUT /v1/roles/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// Name (`a-z 0-9 - _`), not a built-in one. Ignored on PUT.
    #[serde(default)]
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Permission strings.
    #[serde(default)]
    pub perms: Vec<String>,
    /// MQTT grants per site (or `*`).
    #[serde(default)]
    pub mqtt: BTreeMap<String, MqttGrant>,
}

fn validate(caller: &Caller, name: &str, body: &RoleBody) -> Result<Role, AppError> {
    if !valid_role_name(name) {
        return Err(AppError::bad_request(
            "role name must be 1-64 of a-z, 0-9, -, _",
        ));
    }
    if BUILTIN_ROLES.contains(&name) {
        return Err(AppError::conflict(format!("{name} is a built-in role")));
    }
    for p in &body.perms {
        if !caller.perms.allows(p) {
            return Err(AppError::forbidden(p));
        }
    }
    for (site, g) in &body.mqtt {
        if site != ANY_SITE {
            Site::new(site.as_str()).map_err(|e| AppError::bad_request(e.to_string()))?;
        }
        for f in g.publish.iter().chain(&g.subscribe) {
            Filter::new(f.as_str())
                .map_err(|e| AppError::bad_request(format!("filter {f:?}: {e}")))?;
        }
        check_mqtt_grantable(caller, site, &g.publish, &g.subscribe)?;
    }
    Ok(Role {
        name: name.to_owned(),
        description: body.description.clone(),
        perms: body.perms.clone(),
        mqtt: body.mqtt.clone(),
        builtin: false,
    })
}

/// Built-in roles and the organisation's own.
///
/// # Errors
/// 403 without `identity:role:read`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Role>>, AppError> {
    caller.require("identity:role:read")?;
    let mut roles: Vec<Role> = BUILTIN_ROLES
        .iter()
        .filter_map(|n| model::builtin_role(n))
        .collect();
    roles.extend(
        state
            .store
            .list::<Role>(&format!("role.{}.", caller.org()))
            .await?,
    );
    Ok(Json(roles))
}

/// Creates a role. Nobody can put a permission or an MQTT grant in a role
/// that they do not hold themselves.
///
/// # Errors
/// 400 for a bad name or filter, 403 without `identity:role:create` or
/// for a permission or MQTT grant the caller lacks, 409 if it exists.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Body(body): Body<RoleBody>,
) -> Result<(StatusCode, Json<Role>), AppError> {
    caller.require("identity:role:create")?;
    let role = validate(&caller, &body.name, &body)?;
    state
        .store
        .create(&format!("role.{}.{}", caller.org(), role.name), &role)
        .await?;
    origin
        .record(
            &state,
            &caller,
            Action::RoleCreate,
            caller.org(),
            format!("role:{}", role.name),
        )
        .await;
    Ok((StatusCode::CREATED, Json(role)))
}

/// One role.
///
/// # Errors
/// 404 if unknown.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Role>, AppError> {
    caller.require("identity:role:read")?;
    if let Some(r) = model::builtin_role(&name) {
        return Ok(Json(r));
    }
    if !valid_role_name(&name) {
        return Err(AppError::not_found("role"));
    }
    state
        .store
        .get::<Role>(&format!("role.{}.{name}", caller.org()))
        .await?
        .map(|(r, _)| Json(r))
        .ok_or_else(|| AppError::not_found("role"))
}

/// Replaces a custom role.
///
/// # Errors
/// As [`create`], and 404 if it does not exist.
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
    Body(body): Body<RoleBody>,
) -> Result<Json<Role>, AppError> {
    caller.require("identity:role:update")?;
    let role = validate(&caller, &name, &body)?;
    let key = format!("role.{}.{name}", caller.org());
    let (old, rev) = state
        .store
        .get::<Role>(&key)
        .await?
        .ok_or_else(|| AppError::not_found("role"))?;
    state.store.update(&key, &role, rev).await?;
    let narrowed = old.perms.iter().any(|p| !role.perms.contains(p)) || old.mqtt != role.mqtt;
    let target = format!("role:{name}");
    origin
        .record(&state, &caller, Action::RoleUpdate, caller.org(), &target)
        .await;
    if narrowed {
        // Tokens issued under the old definition carry its permissions.
        let n = revocation::revoke_role_holders(&state, caller.org(), &name).await?;
        let reason = revocation::Reason::RoleChanged;
        origin
            .revoked(&state, &caller, caller.org(), target, reason, n)
            .await;
    }
    Ok(Json(role))
}

/// Deletes a custom role.
///
/// # Errors
/// 403 without `identity:role:delete`, 409 for a built-in role.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:role:delete")?;
    if BUILTIN_ROLES.contains(&name.as_str()) {
        return Err(AppError::conflict(format!("{name} is a built-in role")));
    }
    if !valid_role_name(&name) {
        return Err(AppError::not_found("role"));
    }
    state
        .store
        .delete(&format!("role.{}.{name}", caller.org()))
        .await?;
    let target = format!("role:{name}");
    origin
        .record(&state, &caller, Action::RoleDelete, caller.org(), &target)
        .await;
    let n = revocation::revoke_role_holders(&state, caller.org(), &name).await?;
    let reason = revocation::Reason::RoleChanged;
    origin
        .revoked(&state, &caller, caller.org(), target, reason, n)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
