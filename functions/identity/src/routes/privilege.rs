//! **The** rule for handing out and touching privileges in identity:
//! nobody gives out, or acts on someone holding, a permission they do not
//! hold themselves.
//!
//! * [`check_assignable`] — a role given to a user or service account
//!   (create, `PUT …/roles`, `PATCH` of a service account's roles) may
//!   only grant what the caller holds: its permissions and its MQTT
//!   grants.
//! * [`check_mqtt_grantable`] — the MQTT grants written into a custom
//!   role or a device stay within the caller's own.
//! * [`check_manageable`] — a principal whose *current* roles grant
//!   something the caller lacks cannot be changed by that caller: no
//!   password reset, no role change, no deactivation, deletion or
//!   "log out everywhere". Otherwise a holder of `identity:user:update`
//!   alone (a help-desk role, or an organisation `admin` of the bootstrap
//!   organisation) could reset the password of someone holding more — the
//!   bootstrap `superadmin` included — log in as them and hold it all
//!   (decision 0063).
//!
//! All compare with [`plantd_shared::claims`]'s matching: permission
//! strings with `Permissions::allows` (`*` in the caller's grant covers a
//! segment; only a grant of exactly `*` covers the superadmin's `*`), MQTT
//! filters with `Permissions::covers_publish`/`covers_subscribe` (the
//! filter given must be covered by one the caller holds; `#` never covers
//! a `$` topic).

use axum::http::StatusCode;
use plantd_shared::claims::ANY_SITE;
use plantd_shared::subject::Site;
use plantd_shared::topic::Filter;

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

/// The first permission or MQTT grant of `role` the caller does not hold,
/// described (`identity:user:update`, `MQTT subscribe # on site *`).
fn uncovered(caller: &Caller, role: &Role) -> Option<String> {
    if let Some(p) = role.perms.iter().find(|p| !caller.perms.allows(p)) {
        return Some(p.clone());
    }
    role.mqtt
        .iter()
        .find_map(|(site, g)| uncovered_mqtt(caller, site, &g.publish, &g.subscribe))
}

/// The first of these MQTT grant filters on `site` (a site id, or
/// [`ANY_SITE`]) that reaches beyond the caller's own grants, described;
/// filters or sites that do not parse grant nothing and are skipped.
fn uncovered_mqtt(
    caller: &Caller,
    site: &str,
    publish: &[String],
    subscribe: &[String],
) -> Option<String> {
    let scope = if site == ANY_SITE {
        None
    } else {
        Some(Site::new(site).ok()?)
    };
    let beyond = |covers: &dyn Fn(&Filter) -> bool, filters: &[String]| {
        filters
            .iter()
            .find(|f| Filter::new(f.as_str()).is_ok_and(|f| !covers(&f)))
            .cloned()
    };
    let publish = beyond(&|f| caller.perms.covers_publish(scope.as_ref(), f), publish)
        .map(|f| format!("MQTT publish {f} on site {site}"));
    publish.or_else(|| {
        beyond(
            &|f| caller.perms.covers_subscribe(scope.as_ref(), f),
            subscribe,
        )
        .map(|f| format!("MQTT subscribe {f} on site {site}"))
    })
}

/// 403 unless the MQTT grant `publish`/`subscribe` on `site` (a site id,
/// or [`ANY_SITE`]) stays within the caller's own grants for it: what a
/// custom role or a device may be given (an "installer" holding
/// `identity:device:create` alone cannot mint a device that reads every
/// topic).
///
/// # Errors
/// 403 naming the filter.
pub fn check_mqtt_grantable(
    caller: &Caller,
    site: &str,
    publish: &[String],
    subscribe: &[String],
) -> Result<(), AppError> {
    match uncovered_mqtt(caller, site, publish, subscribe) {
        Some(what) => Err(AppError::forbidden(&what)),
        None => Ok(()),
    }
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
            return Err(AppError::forbidden(&p));
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
