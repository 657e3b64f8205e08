//! `/v1/devices`: devices' client credentials, each bound to a site of
//! its organisation — create (the secret shown once), list, update,
//! delete, revoke their tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plantd_shared::topic::Filter;
use serde::{Deserialize, Serialize};

use super::{ClientKind, Credentials, client_key, index, not_found_as, revoke_client};
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::Device;
use crate::revocation::{self, Reason};
use crate::routes::json::Body;
use crate::routes::users::Revoked;
use crate::store::Change;
use crate::{AppError, AppState, password};
use plantd_shared::audit::Action;
use serde_json::json;

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

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        DeviceView {
            client_id: d.id,
            name: d.name,
            site: d.site,
            publish: d.publish,
            subscribe: d.subscribe,
            active: d.active,
        }
    }
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
    /// The SHA-256 fingerprint of its TLS client certificate (64 hex
    /// digits, `:` separators allowed): the device may then connect to its
    /// site's edge without a token (`docs/decisions/0043`).
    #[serde(default)]
    pub certificate_sha256: Option<String>,
}

/// Registers a device with its own MQTT permissions on its site, and with
/// its client certificate's fingerprint when given (written to
/// `plantd_device_certs` for the site's edge).
///
/// # Errors
/// 400 for a bad site, filter or fingerprint, 403 without
/// `identity:device:create`, for another organisation's site, or for a
/// filter beyond the caller's own MQTT grants on the site, 404 for an
/// unregistered site, 409 when the certificate is registered for another
/// device on the site.
pub async fn create_device(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Body(req): Body<CreateDevice>,
) -> Result<(StatusCode, Json<Credentials>), AppError> {
    caller.require("identity:device:create")?;
    // The site must be one of the caller's organisation (checked again
    // whenever the device asks for a token).
    crate::tokens::device_site(&state, caller.org(), &req.site).await?;
    for f in req.publish.iter().chain(&req.subscribe) {
        Filter::new(f.as_str()).map_err(|e| AppError::bad_request(format!("filter {f:?}: {e}")))?;
    }
    // Nobody mints a device that may do more on the site than they may.
    crate::routes::privilege::check_mqtt_grantable(
        &caller,
        &req.site,
        &req.publish,
        &req.subscribe,
    )?;
    let certificate = req
        .certificate_sha256
        .as_deref()
        .map(|f| {
            plantd_shared::device_certs::Fingerprint::parse(f)
                .map(|f| f.hex())
                .map_err(|e| AppError::bad_request(format!("certificate_sha256: {e}")))
        })
        .transpose()?;
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
        certificate_sha256: certificate,
    };
    index(&state, &client_id, caller.org(), "device").await?;
    let key = format!("device.{}.{client_id}", caller.org());
    state.store.create(&key, &dev).await?;
    // After the device exists (a certificate record never names a device
    // that is not there); a certificate taken already undoes the device.
    if let Some((cert_key, record)) = dev.certificate_record()
        && let Err(e) = state.store.create_device_cert(&cert_key, &record).await
    {
        let _ = state.store.delete(&key).await;
        let _ = state.store.delete(&format!("client.{client_id}")).await;
        return Err(e);
    }
    let detail = json!({
        "name": dev.name,
        "site": dev.site,
        "publish": dev.publish,
        "subscribe": dev.subscribe,
        "certificate_sha256": dev.certificate_sha256,
    });
    let target = format!("device:{client_id}");
    origin
        .record_detail(
            &state,
            &caller,
            Action::DeviceCreate,
            caller.org(),
            target,
            detail,
        )
        .await;
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
    Ok(Json(all.into_iter().map(DeviceView::from).collect()))
}

/// Deletes a device.
///
/// # Errors
/// 403 without `identity:device:delete`, 404 if unknown.
pub async fn delete_device(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:device:delete")?;
    let key = client_key("device", &caller, &id)?;
    let Some((device, _)) = state.store.get::<Device>(&key).await? else {
        return Err(AppError::not_found("device"));
    };
    // Its certificate first: the edge closes its connections at once.
    if let Some((cert_key, _)) = device.certificate_record() {
        state.store.delete_device_cert(&cert_key).await?;
    }
    state.store.delete(&key).await?;
    state.store.delete(&format!("client.{id}")).await?;
    let target = format!("device:{id}");
    origin
        .record(&state, &caller, Action::DeviceDelete, caller.org(), &target)
        .await;
    let n = revocation::revoke_all(&state, caller.org(), &id, Reason::Deleted).await?;
    origin
        .revoked(&state, &caller, caller.org(), target, Reason::Deleted, n)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /v1/devices/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDevice {
    /// Activate or deactivate (deactivating revokes its tokens: its MQTT
    /// connections close).
    #[serde(default)]
    pub active: Option<bool>,
    /// Replaces the client certificate it may log in with (its SHA-256,
    /// as at creation; the old certificate's connections close), or with
    /// `""` removes it.
    #[serde(default)]
    pub certificate_sha256: Option<String>,
}

/// Activates or deactivates a device (deactivating revokes every live
/// token it holds), and replaces or removes its client certificate.
///
/// # Errors
/// 400 for a malformed fingerprint, 403 without `identity:device:update`,
/// 404 if unknown, 409 when the new certificate is registered for another
/// device on the site.
pub async fn update_device(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    Body(req): Body<UpdateDevice>,
) -> Result<Json<DeviceView>, AppError> {
    caller.require("identity:device:update")?;
    // Some(None): remove the certificate; Some(Some(hex)): replace it.
    let certificate = req
        .certificate_sha256
        .as_deref()
        .map(|f| match f.trim() {
            "" => Ok(None),
            f => plantd_shared::device_certs::Fingerprint::parse(f)
                .map(|f| Some(f.hex()))
                .map_err(|e| AppError::bad_request(format!("certificate_sha256: {e}"))),
        })
        .transpose()?;
    let key = client_key("device", &caller, &id)?;
    let Some((before, _)) = state.store.get::<Device>(&key).await? else {
        return Err(AppError::not_found("device"));
    };
    // A new certificate is claimed first: 409 leaves the device as it was.
    let mut claimed = None;
    if let Some(Some(hex)) = &certificate
        && before.certificate_sha256.as_ref() != Some(hex)
    {
        let mut with = before.clone();
        with.certificate_sha256 = Some(hex.clone());
        if let Some((cert_key, record)) = with.certificate_record() {
            state.store.create_device_cert(&cert_key, &record).await?;
            claimed = Some(cert_key);
        }
    }
    let mut deactivated = false;
    let updated = state
        .store
        .modify::<Device, _>(&key, |d| {
            deactivated = false;
            if let Some(a) = req.active {
                deactivated = d.active && !a;
                d.active = a;
            }
            if let Some(c) = &certificate {
                d.certificate_sha256.clone_from(c);
            }
            Ok(Change::Put(()))
        })
        .await
        .map_err(|e| not_found_as(e, "device"));
    let d = match updated {
        Ok(d) => d,
        Err(e) => {
            if let Some(k) = &claimed {
                let _ = state.store.delete_device_cert(k).await;
            }
            return Err(e);
        }
    };
    // The old certificate goes (the edge closes its connections); the
    // current one follows the device's active flag.
    if before.certificate_sha256 != d.certificate_sha256
        && let Some((old_key, _)) = before.certificate_record()
    {
        state.store.delete_device_cert(&old_key).await?;
    }
    if let Some((cert_key, record)) = d.certificate_record() {
        state.store.put_device_cert(&cert_key, &record).await?;
    }
    let target = format!("device:{id}");
    let detail = json!({ "active": req.active, "certificate_sha256": req.certificate_sha256 });
    origin
        .record_detail(
            &state,
            &caller,
            Action::DeviceUpdate,
            caller.org(),
            &target,
            detail,
        )
        .await;
    if deactivated {
        let n = revocation::revoke_all(&state, caller.org(), &id, Reason::Deactivated).await?;
        origin
            .revoked(
                &state,
                &caller,
                caller.org(),
                target,
                Reason::Deactivated,
                n,
            )
            .await;
    }
    Ok(Json(DeviceView::from(d)))
}

/// `POST /v1/devices/{id}/revoke`: revokes every live token of the device
/// (its MQTT connections close; it can ask for a new token).
///
/// # Errors
/// 403 without `identity:device:update`, 404 if unknown.
pub async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, AppError> {
    revoke_client::<Device>(&state, &caller, &origin, &id, ClientKind::DEVICE).await
}
