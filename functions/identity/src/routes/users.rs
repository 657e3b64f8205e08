//! Users of the caller's organisation. Another organisation's users are
//! invisible: their keys are not under the caller's organisation, so every
//! lookup answers 404.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::json::Body;
use super::privilege;
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::{self, EmailIndex, User, UserView};
use crate::revocation::{self, Reason};
use crate::store::Change;
use crate::{AppError, AppState, password};
use plantd_shared::audit::Action;
use serde_json::json;

/// Creates the email index and the user record (409 if the email is taken).
///
/// # Errors
/// 409 when the email exists, 503 on storage errors.
pub async fn insert_user(state: &AppState, user: &User) -> Result<(), AppError> {
    let index_key = format!("email.{}", model::sha256_hex(&user.email));
    state
        .store
        .create(
            &index_key,
            &EmailIndex {
                org: user.org.clone(),
                user: user.id.clone(),
            },
        )
        .await
        .map_err(|e| {
            if e.status == StatusCode::CONFLICT {
                AppError::conflict("a user with this email exists")
            } else {
                e
            }
        })?;
    if let Err(e) = state
        .store
        .create(&format!("user.{}.{}", user.org, user.id), user)
        .await
    {
        let _ = state.store.delete(&index_key).await;
        return Err(e);
    }
    Ok(())
}

pub use super::privilege::check_assignable;

/// `POST /v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email (unique).
    pub email: String,
    /// Initial password.
    pub password: String,
    /// Roles (default `viewer`).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn valid_email(email: &str) -> bool {
    let mut parts = email.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None) if !l.is_empty() && d.contains('.') && !email.contains(char::is_whitespace))
}

/// Creates a user in the caller's organisation.
///
/// # Errors
/// 400 for a bad email or short password, 403 without
/// `identity:user:create`, 409 for a taken email.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Body(req): Body<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), AppError> {
    caller.require("identity:user:create")?;
    let email = model::normalise_email(&req.email);
    if !valid_email(&email) {
        return Err(AppError::bad_request("email is not valid"));
    }
    if req.password.len() < state.settings.min_password_len {
        return Err(AppError::bad_request(format!(
            "password must be at least {} characters",
            state.settings.min_password_len
        )));
    }
    let roles = req.roles.unwrap_or_else(|| vec!["viewer".into()]);
    check_assignable(&state, &caller, &roles).await?;
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        org: caller.org().to_owned(),
        email,
        password_hash: password::hash(&req.password)?,
        active: true,
        roles,
        created_ms: plantd_shared::headers::now_ms(),
        version: 0,
        attributes: req.attributes,
        revoked_before_ms: 0,
        sessions_epoch: 0,
    };
    insert_user(&state, &user).await?;
    let detail = json!({ "email": user.email, "roles": user.roles });
    let target = format!("user:{}", user.id);
    origin
        .record_detail(
            &state,
            &caller,
            Action::UserCreate,
            caller.org(),
            target,
            detail,
        )
        .await;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// Lists the caller's organisation's users.
///
/// # Errors
/// 403 without `identity:user:read`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserView>>, AppError> {
    caller.require("identity:user:read")?;
    let users: Vec<User> = state.store.list(&format!("user.{}.", caller.org())).await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

fn user_key(caller: &Caller, id: &str) -> Result<String, AppError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(AppError::not_found("user"));
    }
    Ok(format!("user.{}.{id}", caller.org()))
}

/// User `id` of the caller's organisation, with its key, when the caller
/// may change them ([`privilege::check_manageable`]: their roles grant
/// nothing the caller lacks).
///
/// # Errors
/// 404 unknown, 403 a more privileged user, 503.
async fn manageable(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(String, User), AppError> {
    let key = user_key(caller, id)?;
    let (u, _) = state
        .store
        .get::<User>(&key)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    privilege::check_manageable(state, caller, &format!("user:{}", u.id), &u.roles).await?;
    Ok((key, u))
}

/// Inside a compare-and-set: the roles [`manageable`] checked must still
/// be the user's (409 when someone changed them meanwhile).
fn unchanged_roles(checked: &User, now: &User) -> Result<(), AppError> {
    if checked.roles == now.roles {
        Ok(())
    } else {
        Err(AppError::conflict(
            "the user's roles changed meanwhile; try again",
        ))
    }
}

/// One user.
///
/// # Errors
/// 403 without `identity:user:read`, 404 if not in the caller's
/// organisation.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserView>, AppError> {
    caller.require("identity:user:read")?;
    let (u, _) = state
        .store
        .get::<User>(&user_key(&caller, &id)?)
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    Ok(Json(UserView::from(&u)))
}

/// `PATCH /v1/users/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Activate or deactivate.
    #[serde(default)]
    pub active: Option<bool>,
    /// Attributes to set (a `null` value removes one).
    #[serde(default)]
    pub attributes: BTreeMap<String, Option<String>>,
    /// Set a new password (administrators resetting one).
    #[serde(default)]
    pub password: Option<String>,
}

/// Updates a user with compare-and-set: concurrent updates of different
/// fields both land. A password reset ends every session of the user (live
/// access tokens revoked, refresh tokens stop working), like a
/// deactivation ends its tokens: whoever had the old password is out.
///
/// # Errors
/// 403 without `identity:user:update` or for a user holding a permission
/// the caller lacks ([`privilege::check_manageable`]), 404 if not found.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    Body(req): Body<UpdateUser>,
) -> Result<Json<UserView>, AppError> {
    caller.require("identity:user:update")?;
    let new_hash = match &req.password {
        Some(p) if p.len() < state.settings.min_password_len => {
            return Err(AppError::bad_request(format!(
                "password must be at least {} characters",
                state.settings.min_password_len
            )));
        }
        Some(p) => Some(password::hash(p)?),
        None => None,
    };
    let (key, checked) = manageable(&state, &caller, &id).await?;
    let mut deactivated = false;
    let u = state
        .store
        .modify::<User, _>(&key, |u| {
            unchanged_roles(&checked, u)?;
            deactivated = false;
            if let Some(a) = req.active {
                deactivated = u.active && !a;
                u.active = a;
            }
            for (k, v) in &req.attributes {
                match v {
                    Some(v) => {
                        u.attributes.insert(k.clone(), v.clone());
                    }
                    None => {
                        u.attributes.remove(k);
                    }
                }
            }
            if let Some(h) = &new_hash {
                u.password_hash = h.clone();
                // Refresh tokens of every login so far stop working.
                u.revoked_before_ms = plantd_shared::headers::now_ms();
                u.sessions_epoch += 1;
            }
            u.version += 1;
            Ok(Change::Put(()))
        })
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                AppError::not_found("user")
            } else {
                e
            }
        })?;
    let target = format!("user:{}", u.id);
    let detail = json!({
        "active": req.active,
        "attributes": req.attributes.keys().collect::<Vec<_>>(),
        "password_reset": new_hash.is_some(),
    });
    origin
        .record_detail(&state, &caller, Action::UserUpdate, &u.org, &target, detail)
        .await;
    let ended = if deactivated {
        Some(Reason::Deactivated)
    } else {
        new_hash.is_some().then_some(Reason::PasswordReset)
    };
    if let Some(reason) = ended {
        let n = revocation::revoke_all(&state, &u.org, &u.id, reason).await?;
        origin
            .revoked(&state, &caller, &u.org, target, reason, n)
            .await;
    }
    Ok(Json(UserView::from(&u)))
}

/// `PUT /v1/users/{id}/roles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    /// The roles the user will have.
    pub roles: Vec<String>,
}

/// Assigns roles.
///
/// # Errors
/// 403 without `identity:user:update`, when a role grants more than the
/// caller holds, or for a user already holding more
/// ([`privilege::check_manageable`]); 404 if not found.
pub async fn set_roles(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    Body(req): Body<SetRoles>,
) -> Result<Json<UserView>, AppError> {
    caller.require("identity:user:update")?;
    check_assignable(&state, &caller, &req.roles).await?;
    let (key, checked) = manageable(&state, &caller, &id).await?;
    let mut removed = false;
    let u = state
        .store
        .modify::<User, _>(&key, |u| {
            unchanged_roles(&checked, u)?;
            removed = u.roles.iter().any(|r| !req.roles.contains(r));
            u.roles.clone_from(&req.roles);
            u.version += 1;
            Ok(Change::Put(()))
        })
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                AppError::not_found("user")
            } else {
                e
            }
        })?;
    let target = format!("user:{}", u.id);
    let detail = json!({ "roles": u.roles });
    origin
        .record_detail(&state, &caller, Action::UserUpdate, &u.org, &target, detail)
        .await;
    if removed {
        // Tokens carry the roles' permissions: the old ones must go.
        let n = revocation::revoke_all(&state, &u.org, &u.id, Reason::RoleRemoved).await?;
        origin
            .revoked(&state, &caller, &u.org, target, Reason::RoleRemoved, n)
            .await;
    }
    Ok(Json(UserView::from(&u)))
}

/// Deletes a user.
///
/// # Errors
/// 403 without `identity:user:delete` or for a user holding a permission
/// the caller lacks ([`privilege::check_manageable`]), 404 if not found.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    caller.require("identity:user:delete")?;
    let (key, u) = manageable(&state, &caller, &id).await?;
    state.store.delete(&key).await?;
    state
        .store
        .delete(&format!("email.{}", model::sha256_hex(&u.email)))
        .await?;
    let target = format!("user:{}", u.id);
    let detail = json!({ "email": u.email });
    origin
        .record_detail(&state, &caller, Action::UserDelete, &u.org, &target, detail)
        .await;
    let n = revocation::revoke_all(&state, &u.org, &u.id, Reason::Deleted).await?;
    origin
        .revoked(&state, &caller, &u.org, target, Reason::Deleted, n)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// What `POST …/{id}/revoke` answers.
#[derive(Debug, Serialize)]
pub struct Revoked {
    /// Live access tokens revoked.
    pub revoked: usize,
}

/// `POST /v1/users/{id}/revoke`: logs the user out everywhere — every live
/// access token is revoked (MQTT connections and WebSockets using them
/// close) and every refresh token issued so far stops working. The user
/// can log in again.
///
/// # Errors
/// 403 without `identity:user:update` or for a user holding a permission
/// the caller lacks ([`privilege::check_manageable`]), 404 if not found.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, AppError> {
    caller.require("identity:user:update")?;
    let (key, checked) = manageable(&state, &caller, &id).await?;
    let now = plantd_shared::headers::now_ms();
    let u = state
        .store
        .modify::<User, _>(&key, |u| {
            unchanged_roles(&checked, u)?;
            u.revoked_before_ms = now;
            u.sessions_epoch += 1;
            u.version += 1;
            Ok(Change::Put(()))
        })
        .await
        .map_err(|e| {
            if e.status == StatusCode::NOT_FOUND {
                AppError::not_found("user")
            } else {
                e
            }
        })?;
    let revoked = revocation::revoke_all(&state, &u.org, &u.id, Reason::Requested).await?;
    let target = format!("user:{}", u.id);
    origin
        .revoked(&state, &caller, &u.org, target, Reason::Requested, revoked)
        .await;
    Ok(Json(Revoked { revoked }))
}
