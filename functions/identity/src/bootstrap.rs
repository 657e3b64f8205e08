//! The first administrator. `PLANTD_BOOTSTRAP_ADMIN_EMAIL` and
//! `PLANTD_BOOTSTRAP_ADMIN_PASSWORD` create, once, the system organisation
//! and a `superadmin` user; if the email exists already nothing changes (the
//! variables never reset a password). There is no default password: without
//! both variables no administrator is created.

use plantd_shared::audit::{Action, ActorKind, Event};

use crate::model::{self, EmailIndex, Org, SYSTEM_ORG, User};
use crate::{AppError, AppState, password};

/// What [`ensure_admin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Created the admin with this user id.
    Created(String),
    /// The email already belongs to a user.
    Exists,
}

/// Creates the system organisation and the first administrator unless the
/// email is taken (recorded in the audit trail as `user.create` by the
/// `system` actor `bootstrap`).
///
/// # Errors
/// 400 for a password shorter than the minimum, 503 on storage errors.
pub async fn ensure_admin(
    state: &AppState,
    email: &str,
    password: &str,
) -> Result<Bootstrap, AppError> {
    let email = model::normalise_email(email);
    let index_key = format!("email.{}", model::sha256_hex(&email));
    if state.store.get::<EmailIndex>(&index_key).await?.is_some() {
        return Ok(Bootstrap::Exists);
    }
    if password.len() < state.settings.min_password_len {
        return Err(AppError::bad_request(format!(
            "bootstrap password must be at least {} characters",
            state.settings.min_password_len
        )));
    }
    let org_key = format!("org.{SYSTEM_ORG}");
    if state.store.get::<Org>(&org_key).await?.is_none() {
        let org = Org {
            id: SYSTEM_ORG.into(),
            name: "plantd system".into(),
            created_ms: plantd_shared::headers::now_ms(),
        };
        match state.store.create(&org_key, &org).await {
            Ok(_) => {}
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
    }
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        org: SYSTEM_ORG.into(),
        email: email.clone(),
        password_hash: password::hash(password)?,
        active: true,
        roles: vec!["superadmin".into()],
        created_ms: plantd_shared::headers::now_ms(),
        version: 0,
        attributes: Default::default(),
        revoked_before_ms: 0,
        sessions_epoch: 0,
    };
    crate::routes::users::insert_user(state, &user).await?;
    tracing::info!(%email, "created the bootstrap administrator");
    let event = Event::new(Action::UserCreate, SYSTEM_ORG)
        .actor(ActorKind::System, "bootstrap")
        .target(format!("user:{}", user.id))
        .detail(serde_json::json!({ "email": email, "roles": user.roles }));
    state.audit.record(event).await;
    Ok(Bootstrap::Created(user.id))
}
