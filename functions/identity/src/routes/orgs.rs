//! Organisations (tenants). Only holders of `identity:org:create` (the
//! bootstrap `superadmin`) create them; everyone else sees their own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::json::Body;
use crate::audit::Origin;
use crate::auth::Caller;
use crate::model::{self, Org, User};
use crate::{AppError, AppState, password};
use plantd_shared::audit::Action;

/// `POST /v1/orgs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    /// Identifier: 1-63 of `a-z 0-9 -`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The organisation's first administrator.
    #[serde(default)]
    pub admin_email: Option<String>,
    /// Their password.
    #[serde(default)]
    pub admin_password: Option<String>,
}

/// `POST /v1/orgs` answer.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The organisation.
    pub org: Org,
    /// Its first administrator's id, if one was asked for.
    pub admin_id: Option<String>,
}

/// Creates an organisation, optionally with its first `admin`.
///
/// # Errors
/// 400 for a bad id, 403 without `identity:org:create`, 409 if it exists.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Body(req): Body<CreateOrg>,
) -> Result<(StatusCode, Json<Created>), AppError> {
    caller.require("identity:org:create")?;
    let ok_id = !req.id.is_empty()
        && req.id.len() <= 63
        && req
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_id {
        return Err(AppError::bad_request("org id must be 1-63 of a-z, 0-9, -"));
    }
    let org = Org {
        id: req.id.clone(),
        name: req.name,
        created_ms: plantd_shared::headers::now_ms(),
    };
    state.store.create(&format!("org.{}", org.id), &org).await?;
    let admin_id = match (req.admin_email, req.admin_password) {
        (Some(email), Some(pw)) => {
            if pw.len() < state.settings.min_password_len {
                return Err(AppError::bad_request(format!(
                    "password must be at least {} characters",
                    state.settings.min_password_len
                )));
            }
            let user = User {
                id: uuid::Uuid::new_v4().to_string(),
                org: org.id.clone(),
                email: model::normalise_email(&email),
                password_hash: password::hash(&pw)?,
                active: true,
                roles: vec!["admin".into()],
                created_ms: org.created_ms,
                version: 0,
                attributes: Default::default(),
                revoked_before_ms: 0,
                sessions_epoch: 0,
            };
            super::users::insert_user(&state, &user).await?;
            Some(user.id)
        }
        (None, None) => None,
        _ => {
            return Err(AppError::bad_request(
                "give both admin_email and admin_password",
            ));
        }
    };
    state
        .audit
        .record(
            origin
                .event(Action::OrgCreate, &org.id)
                .by(&caller.claims)
                .target(format!("org:{}", org.id))
                .detail(serde_json::json!({ "admin_id": admin_id })),
        )
        .await;
    Ok((StatusCode::CREATED, Json(Created { org, admin_id })))
}

/// The organisations the caller may see.
///
/// # Errors
/// 503 on storage errors.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Org>>, AppError> {
    if caller.perms.allows("identity:org:list") {
        return Ok(Json(state.store.list::<Org>("org.").await?));
    }
    let own = state
        .store
        .get::<Org>(&format!("org.{}", caller.org()))
        .await?
        .map(|(o, _)| vec![o])
        .unwrap_or_default();
    Ok(Json(own))
}

/// One organisation (own, or any with `identity:org:list`).
///
/// # Errors
/// 404 otherwise.
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Org>, AppError> {
    if id != caller.org() && !caller.perms.allows("identity:org:list") {
        return Err(AppError::not_found("organisation"));
    }
    state
        .store
        .get::<Org>(&format!("org.{id}"))
        .await?
        .map(|(o, _)| Json(o))
        .ok_or_else(|| AppError::not_found("organisation"))
}
