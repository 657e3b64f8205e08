//! Service accounts (programs) and devices: client credentials whose
//! secret is shown once, at creation, and stored only as a hash.

mod devices;
mod service_accounts;

pub use devices::{
    CreateDevice, DeviceView, UpdateDevice, create_device, delete_device, list_devices,
    revoke_device, update_device,
};
pub use service_accounts::{
    CreateServiceAccount, ServiceAccountView, UpdateServiceAccount, create_service_account,
    delete_service_account, list_service_accounts, revoke_service_account, update_service_account,
};

use axum::Json;
use axum::http::StatusCode;
use serde::Serialize;

use super::users::Revoked;
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::ClientIndex;
use crate::revocation::{self, Reason};
use crate::{AppError, AppState};

/// Credentials, returned once.
#[derive(Debug, Serialize)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The secret; store it now, it cannot be shown again.
    pub client_secret: String,
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
