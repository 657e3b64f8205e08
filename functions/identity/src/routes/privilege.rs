//! **The** rule for handing out and touching privileges in identity:
//! nobody gives out, or acts on someone holding, a permission they do not
//! hold themselves.
//!
//! * [`check_assignable`] — a role given to a user or service account
//!   (create, `PUT …/roles`, `PATCH` of a service account's roles) may
//!   only grant what the caller holds.
//! * [`check_manageable`] — a principal whose *current* roles grant
//!   something the caller lacks cannot be changed by that caller: no
//!   password reset, no role change, no deactivation, deletion or
//!   "log out everywhere". Otherwise a holder of `identity:user:update`
//!   alone (a help-desk role, or an organisation `admin` of the bootstrap
//!   organisation) could reset the password of someone holding more — the
//!   bootstrap `superadmin` included — log in as them and hold it all
//!   (decision 0063).
//!
//! Both compare permission strings with [`plantd_shared::claims`]'s
//! matching (`Permissions::allows`), so `*` in the caller's grant covers a
//! segment and only a grant of exactly `*` covers the superadmin's `*`.

use axum::http::StatusCode;

use crate::auth::Caller;
use crate::model::{self, Role};
use crate::{AppError, AppState};

/// Whether `name` can name a custom role (1-64 of `a-z 0-9 - _`); other
/// names are never stored, so they cannot be looked up.
pub fn valid_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The role `name` of organisation `org`: built in, or the organisation's
/// own; `None` when there is none by that name.
///
/// # Errors
/// 503 on storage errors.
pub async fn role(state: &AppState, org: &str, name: &str) -> Result<Option<Role>, AppError> {
    if let Some(r) = model::builtin_role(name) {
        return Ok(Some(r));
    }
    if !valid_role_name(name) {
        return Ok(None);
    }
    Ok(state
        .store
        .get::<Role>(&format!("role.{org}.{name}"))
        .await?
        .map(|(r, _)| r))
}

/// The first permission of `role` the caller does not hold.
fn uncovered<'a>(caller: &Caller, role: &'a Role) -> Option<&'a str> {
    role.perms
        .iter()
        .map(String::as_str)
        .find(|p| !caller.perms.allows(p))
}

/// 403 unless the caller holds every permission the roles grant (nobody
/// hands out more than they have), 400 for unknown roles.
///
/// # Errors
/// As described; 503 on storage errors.
pub async fn check_assignable(
    state: &AppState,
    caller: &Caller,
    roles: &[String],
) -> Result<(), AppError> {
    for name in roles {
        let role = role(state, caller.org(), name)
            .await?
            .ok_or_else(|| AppError::bad_request(format!("unknown role {name}")))?;
        if let Some(p) = uncovered(caller, &role) {
            return Err(AppError::forbidden(p));
        }
    }
    Ok(())
}

/// 403 unless the caller holds every permission that `roles` — the
/// current roles of the principal `target` (`user:<id>`,
/// `service_account:<id>`) of the caller's organisation — grant. Roles
/// that no longer exist grant nothing and are skipped.
///
/// # Errors
/// 403 naming the principal and the permission; 503 on storage errors.
pub async fn check_manageable(
    state: &AppState,
    caller: &Caller,
    target: &str,
    roles: &[String],
) -> Result<(), AppError> {
    for name in roles {
        let Some(role) = role(state, caller.org(), name).await? else {
            continue;
        };
        if let Some(p) = uncovered(caller, &role) {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{target} holds permission {p} (role {name}), which you do not: only someone holding it may change them"
                ),
            ));
        }
    }
    Ok(())
}
