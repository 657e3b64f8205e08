//! Service accounts (programs) and devices: client credentials whose
//! secret is shown once, at creation, and stored only as a hash.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plantd_shared::topic::Filter;
use serde::{Deserialize, Serialize};

use super::json::Body;
use crate::auth::Caller;
use crate::model::{ClientIndex, Device, ServiceAccount};
use crate::{AppError, AppState, password};

/// Credentials, returned once.
#[derive(Debug, Serialize)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The secret; store it now, it cannot be shown again.
    pub client_secret: String,
}

/// A service account as listed (no secret).
#[derive(Debug, Serialize)]
pub struct ServiceAccountView {
    /// Client id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Active flag.
    pub active: bool,
}

/// A device as listed (no secret).
#[derive(Debug, Serialize)]
pub struct DeviceView {
    /// Client id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Site.
    pub site: String,
    /// Publish filters.
    pub publish: Vec<String>,
    /// Subscribe filters.
    pub subscribe: Vec<String>,
    /// Active flag.
    pub active: bool,
}

/// `POST /v1/service-accounts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    /// Display name.
    pub name: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

async fn index(state: &AppState, client_id: &str, org: &str, kind: &str) -> Result<(), AppError> {
    state
        .store
        .create(
            &format!("client.{client_id}"),
            &ClientIndex {
                org: org.to_owned(),
                kind: kind.to_owned(),
            },
        )
        .await
        .map(|_| ())
}

/// Creates a service account.
///
/// # Errors
/// 403 without `identity:service-account:create` or for roles granting more
/// than the caller holds.
pub async fn create_service_account(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateServiceAccount>,
) -> Result<(StatusCode, Json<Credentials>), AppError> {
    caller.require("identity:service-account:create")?;
    super::users::check_assignable(&state, &caller, &req.roles).await?;
    let client_id = format!("sa-{}", uuid::Uuid::new_v4());
    let secret = password::random_secret();
    let sa = ServiceAccount {
        client_id: client_id.clone(),
        org: caller.org().to_owned(),
        name: req.name,
        secret_hash: password::hash(&secret)?,
        roles: req.roles,
        active: true,
    };
    index(&state, &client_id, caller.org(), "service").await?;
    state
        .store
        .create(&format!("sa.{}.{client_id}", caller.org()), &sa)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Credentials {
            client_id,
            client_secret: secret,
        }),
    ))
}

/// Lists service accounts.
///
/// # Errors
/// 403 without `identity:service-account:read`.
pub async fn list_service_accounts(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ServiceAccountView>>, AppError> {
    caller.require("identity:service-account:read")?;
    let all: Vec<ServiceAccount> = state.store.list(&format!("sa.{}.", caller.org())).await?;
    Ok(Json(
        all.into_iter()
            .map(|s| ServiceAccountView {
                client_id: s.client_id,
                name: s.name,
                roles: s.roles,
                active: s.active,
            })
            .collect(),
    ))
}

/// Deletes a service account.
///
/// # Errors
/// 403 without `identity:service-account:delete`, 404 if unknown.
pub async fn delete_service_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:service-account:delete")?;
    let key = format!("sa.{}.{id}", caller.org());
    if state.store.get::<ServiceAccount>(&key).await?.is_none() {
        return Err(AppError::not_found("service account"));
    }
    state.store.delete(&key).await?;
    state.store.delete(&format!("client.{id}")).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDevice {
    /// Display name.
    pub name: String,
    /// The site it is on.
    pub site: String,
    /// Topic filters it may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters it may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

/// Registers a device with its own MQTT permissions on its site.
///
/// # Errors
/// 400 for a bad site or filter, 403 without `identity:device:create` or
/// for another organisation's site, 404 for an unregistered site.
pub async fn create_device(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateDevice>,
) -> Result<(StatusCode, Json<Credentials>), AppError> {
    caller.require("identity:device:create")?;
    // The site must be one of the caller's organisation (checked again
    // whenever the device asks for a token).
    crate::tokens::device_site(&state, caller.org(), &req.site).await?;
    for f in req.publish.iter().chain(&req.subscribe) {
        Filter::new(f.as_str()).map_err(|e| AppError::bad_request(format!("filter {f:?}: {e}")))?;
    }
    let client_id = format!("dev-{}", uuid::Uuid::new_v4());
    let secret = password::random_secret();
    let dev = Device {
        id: client_id.clone(),
        org: caller.org().to_owned(),
        site: req.site,
        name: req.name,
        secret_hash: password::hash(&secret)?,
        publish: req.publish,
        subscribe: req.subscribe,
        active: true,
    };
    index(&state, &client_id, caller.org(), "device").await?;
    state
        .store
        .create(&format!("device.{}.{client_id}", caller.org()), &dev)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Credentials {
            client_id,
            client_secret: secret,
        }),
    ))
}

/// Lists devices.
///
/// # Errors
/// 403 without `identity:device:read`.
pub async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<DeviceView>>, AppError> {
    caller.require("identity:device:read")?;
    let all: Vec<Device> = state
        .store
        .list(&format!("device.{}.", caller.org()))
        .await?;
    Ok(Json(
        all.into_iter()
            .map(|d| DeviceView {
                client_id: d.id,
                name: d.name,
                site: d.site,
                publish: d.publish,
                subscribe: d.subscribe,
                active: d.active,
            })
            .collect(),
    ))
}

/// Deletes a device.
///
/// # Errors
/// 403 without `identity:device:delete`, 404 if unknown.
pub async fn delete_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:device:delete")?;
    let key = format!("device.{}.{id}", caller.org());
    if state.store.get::<Device>(&key).await?.is_none() {
        return Err(AppError::not_found("device"));
    }
    state.store.delete(&key).await?;
    state.store.delete(&format!("client.{id}")).await?;
    Ok(StatusCode::NO_CONTENT)
}
