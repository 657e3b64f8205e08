//! Service accounts (programs) and devices: client credentials whose
//! secret is shown once, at creation, and stored only as a hash.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plantd_shared::topic::Filter;
use serde::{Deserialize, Serialize};

use super::json::Body;
use super::users::Revoked;
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::{ClientIndex, Device, ServiceAccount};
use crate::revocation::{self, Reason};
use crate::store::Change;
use crate::{AppError, AppState, password};
use plantd_shared::audit::Action;
use serde_json::json;

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
    origin: Origin,
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
    let detail = json!({ "name": sa.name, "roles": sa.roles });
    let target = format!("service_account:{client_id}");
    let action = Action::ServiceAccountCreate;
    origin
        .record_detail(&state, &caller, action, caller.org(), target, detail)
        .await;
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
    origin: Origin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:service-account:delete")?;
    let key = client_key("sa", &caller, &id)?;
    if state.store.get::<ServiceAccount>(&key).await?.is_none() {
        return Err(AppError::not_found("service account"));
    }
    state.store.delete(&key).await?;
    state.store.delete(&format!("client.{id}")).await?;
    let target = format!("service_account:{id}");
    origin
        .record(
            &state,
            &caller,
            Action::ServiceAccountDelete,
            caller.org(),
            &target,
        )
        .await;
    let n = revocation::revoke_all(&state, caller.org(), &id, Reason::Deleted).await?;
    origin
        .revoked(&state, &caller, caller.org(), target, Reason::Deleted, n)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PATCH /v1/service-accounts/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateServiceAccount {
    /// Activate or deactivate (deactivating revokes its tokens).
    #[serde(default)]
    pub active: Option<bool>,
    /// New roles (removing one revokes its tokens).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// Updates a service account: deactivating it, or taking a role away,
/// revokes every live token it holds.
///
/// # Errors
/// 403 without `identity:service-account:update` or for roles granting
/// more than the caller holds, 404 if unknown.
pub async fn update_service_account(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    Body(req): Body<UpdateServiceAccount>,
) -> Result<Json<ServiceAccountView>, AppError> {
    caller.require("identity:service-account:update")?;
    if let Some(roles) = &req.roles {
        super::users::check_assignable(&state, &caller, roles).await?;
    }
    let mut revoke = None;
    let sa = state
        .store
        .modify::<ServiceAccount, _>(&client_key("sa", &caller, &id)?, |sa| {
            revoke = None;
            if let Some(a) = req.active {
                if sa.active && !a {
                    revoke = Some(Reason::Deactivated);
                }
                sa.active = a;
            }
            if let Some(roles) = &req.roles {
                if sa.roles.iter().any(|r| !roles.contains(r)) {
                    revoke = revoke.or(Some(Reason::RoleRemoved));
                }
                sa.roles.clone_from(roles);
            }
            Ok(Change::Put(()))
        })
        .await
        .map_err(|e| not_found_as(e, "service account"))?;
    let target = format!("service_account:{id}");
    let detail = json!({ "active": req.active, "roles": req.roles });
    let action = Action::ServiceAccountUpdate;
    origin
        .record_detail(&state, &caller, action, caller.org(), &target, detail)
        .await;
    if let Some(reason) = revoke {
        let n = revocation::revoke_all(&state, caller.org(), &id, reason).await?;
        origin
            .revoked(&state, &caller, caller.org(), target, reason, n)
            .await;
    }
    Ok(Json(ServiceAccountView {
        client_id: sa.client_id,
        name: sa.name,
        roles: sa.roles,
        active: sa.active,
    }))
}

/// `POST /v1/service-accounts/{id}/revoke`: revokes every live token of
/// the service account (it can ask for new ones).
///
/// # Errors
/// 403 without `identity:service-account:update`, 404 if unknown.
pub async fn revoke_service_account(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, AppError> {
    revoke_client::<ServiceAccount>(&state, &caller, &origin, &id, ClientKind::SERVICE_ACCOUNT)
        .await
}

/// The key of client `id` of `kind` (`sa` or `device`) in the caller's
/// organisation; 404 for an id that cannot be one.
fn client_key(kind: &str, caller: &Caller, id: &str) -> Result<String, AppError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(AppError::not_found(if kind == "sa" {
            "service account"
        } else {
            "device"
        }));
    }
    Ok(format!("{kind}.{}.{id}", caller.org()))
}

fn not_found_as(e: AppError, what: &str) -> AppError {
    if e.status == StatusCode::NOT_FOUND {
        AppError::not_found(what)
    } else {
        e
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
/// `identity:device:create` or for another organisation's site, 404 for an
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

/// What differs between revoking a service account's and a device's
/// tokens.
struct ClientKind {
    /// Key prefix in `plantd_identity` (`sa`, `device`).
    key: &'static str,
    /// The permission required.
    permission: &'static str,
    /// The noun of the 404.
    noun: &'static str,
    /// The audit target's kind.
    target: &'static str,
}

impl ClientKind {
    const SERVICE_ACCOUNT: Self = Self {
        key: "sa",
        permission: "identity:service-account:update",
        noun: "service account",
        target: "service_account",
    };
    const DEVICE: Self = Self {
        key: "device",
        permission: "identity:device:update",
        noun: "device",
        target: "device",
    };
}

/// Revokes every live token of client `id` (a record of type `T`) of the
/// caller's organisation, and records it.
///
/// # Errors
/// 403 without the kind's permission, 404 if unknown, 503 on storage
/// errors.
async fn revoke_client<T: serde::de::DeserializeOwned>(
    state: &AppState,
    caller: &Caller,
    origin: &Origin,
    id: &str,
    kind: ClientKind,
) -> Result<Json<Revoked>, AppError> {
    caller.require(kind.permission)?;
    if state
        .store
        .get::<T>(&client_key(kind.key, caller, id)?)
        .await?
        .is_none()
    {
        return Err(AppError::not_found(kind.noun));
    }
    let revoked = revocation::revoke_all(state, caller.org(), id, Reason::Requested).await?;
    let target = format!("{}:{id}", kind.target);
    origin
        .revoked(
            state,
            caller,
            caller.org(),
            target,
            Reason::Requested,
            revoked,
        )
        .await;
    Ok(Json(Revoked { revoked }))
}
