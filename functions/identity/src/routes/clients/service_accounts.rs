//! `/v1/service-accounts`: programs' client credentials — create (the
//! secret shown once), list, update, delete, revoke their tokens.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ClientKind, Credentials, client_key, index, not_found_as, revoke_client};
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::ServiceAccount;
use crate::revocation::{self, Reason};
use crate::routes::json::Body;
use crate::routes::privilege;
use crate::routes::users::Revoked;
use crate::store::Change;
use crate::{AppError, AppState, password};
use plantd_shared::audit::Action;
use serde_json::json;

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
    privilege::check_assignable(&state, &caller, &req.roles).await?;
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

/// Service account `id` of the caller's organisation, with its key, when
/// the caller may change it ([`privilege::check_manageable`]).
///
/// # Errors
/// 404 unknown, 403 an account holding more than the caller, 503.
async fn manageable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(String, ServiceAccount), AppError> {
    let key = client_key("sa", caller, id)?;
    let (sa, _) = state
        .store
        .get::<ServiceAccount>(&key)
        .await?
        .ok_or_else(|| AppError::not_found("service account"))?;
    let target = format!("service_account:{}", sa.client_id);
    privilege::check_manageable(state, caller, &target, &sa.roles).await?;
    Ok((key, sa))
}

/// Deletes a service account.
///
/// # Errors
/// 403 without `identity:service-account:delete` or for an account
/// holding a permission the caller lacks, 404 if unknown.
pub async fn delete_service_account(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:service-account:delete")?;
    let (key, _) = manageable(&state, &caller, &id).await?;
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
/// 403 without `identity:service-account:update`, for roles granting
/// more than the caller holds, or for an account already holding more
/// ([`privilege::check_manageable`]); 404 if unknown.
pub async fn update_service_account(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    Body(req): Body<UpdateServiceAccount>,
) -> Result<Json<ServiceAccountView>, AppError> {
    caller.require("identity:service-account:update")?;
    if let Some(roles) = &req.roles {
        privilege::check_assignable(&state, &caller, roles).await?;
    }
    let (key, checked) = manageable(&state, &caller, &id).await?;
    let mut revoke = None;
    let sa = state
        .store
        .modify::<ServiceAccount, _>(&key, |sa| {
            if sa.roles != checked.roles {
                return Err(AppError::conflict(
                    "the service account's roles changed meanwhile; try again",
                ));
            }
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
/// 403 without `identity:service-account:update` or for an account
/// holding a permission the caller lacks, 404 if unknown.
pub async fn revoke_service_account(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, AppError> {
    caller.require(ClientKind::SERVICE_ACCOUNT.permission)?;
    manageable(&state, &caller, &id).await?;
    revoke_client::<ServiceAccount>(&state, &caller, &origin, &id, ClientKind::SERVICE_ACCOUNT)
        .await
}
