//! `/v1/analytics/rules`: the organisation's analytics rules, as SQL or
//! as the JSON form, with where they run (`at`: `cloud` or `edge`) and the
//! sites they read — stored as [`plantd_analytics::StoredRule`] in
//! `plantd_analytics_rules` under `<org>.<name>`, written with
//! compare-and-set (`ETag` is the revision; `If-Match` /
//! `If-None-Match: *` as on `/v1/state`).
//!
//! Everything is the caller's organisation's: another organisation's rule
//! answers 404, and every site a rule names must be one of the caller's
//! organisation's sites (400 naming `sites[i]` otherwise). Reads need
//! `analytics:read`, writes `analytics:write`; a rule with an `alert`
//! section — or one whose companion alert goes away — also needs
//! `alerts:write`, since the write creates, replaces or deletes its
//! companion alert rule `analytics-<name>` ([`body`], decision 0030) in
//! the same request: the analytics rule is written first (a precondition
//! or a concurrent writer fails the request before anything is written),
//! then the companion; if the companion cannot be written the analytics
//! rule is put back as it was. Every write is audited
//! (`analytics.rule_*`, and `alert.rule_*` for the companion).

pub mod body;
pub mod store;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::ETAG;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use plantd_alerts::Stores;
use plantd_alerts::rule::Rule as AlertRule;
use plantd_analytics::StoredRule;
use plantd_shared::audit::Action;
use plantd_shared::claims::{ALERTS_WRITE, ANALYTICS_READ, ANALYTICS_WRITE};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::alerts::{store_error, stores};
use super::state::{etag, precondition};
use crate::audit::{Act, Origin};
use crate::auth::Caller;
use crate::{AppError, AppState};

use body::{AlertSpec, companion_id, is_companion, spec_of};

fn target(name: &str) -> String {
    format!("analytics_rule:{name}")
}

/// The companion alert rule of `org`'s analytics rule `name`, if there is
/// one (an alert rule with its id that is not its companion is not).
async fn companion_of(
    stores: &Stores,
    org: &str,
    name: &str,
) -> Result<Option<AlertRule>, AppError> {
    Ok(stores
        .rule(org, &companion_id(name))
        .await
        .map_err(store_error)?
        .filter(|r| is_companion(r, name)))
}

/// A path's rule name, or 404 (no rule can have it).
fn path_name(name: &str) -> Result<&str, AppError> {
    if plantd_alerts::analytics::valid_rule_name(name) {
        Ok(name)
    } else {
        Err(AppError::not_found(format!("analytics rule {name}")))
    }
}

/// The answer of `GET /v1/analytics/rules`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AnalyticsRules {
    /// The organisation's rules, by name.
    pub rules: Vec<body::RuleView>,
}

/// `GET /v1/analytics/rules`: the organisation's rules, by name.
///
/// # Errors
/// 401, 403, 503.
#[utoipa::path(get, path = "/v1/analytics/rules", operation_id = "list_analytics_rules", tag = "analytics",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's rules, by name", body = AnalyticsRules),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, AppError> {
    caller.require(ANALYTICS_READ)?;
    let kv = store::bucket(&state).await?;
    let rules = store::list(&kv, caller.org()).await?;
    let alerts = stores(&state).await?;
    let companions: Vec<AlertRule> = alerts.rules(caller.org()).await.map_err(store_error)?;
    let views: Vec<body::RuleView> = rules
        .iter()
        .map(|(r, rev)| {
            let spec = companions
                .iter()
                .find(|a| is_companion(a, &r.rule.name))
                .map(spec_of);
            body::view(r, *rev, spec.as_ref())
        })
        .collect();
    Ok(axum::Json(AnalyticsRules { rules: views }).into_response())
}

/// `GET /v1/analytics/rules/{name}`: the rule with its `ETag`.
///
/// # Errors
/// 401, 403, 404 (also another organisation's), 503.
#[utoipa::path(get, path = "/v1/analytics/rules/{name}", operation_id = "get_analytics_rule", tag = "analytics",
    params(("name" = String, Path, description = "Rule name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rule, `ETag: \"<revision>\"`", body = body::RuleView),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such rule in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn get_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    caller.require(ANALYTICS_READ)?;
    let name = path_name(&name)?;
    let kv = store::bucket(&state).await?;
    let (rule, rev) = store::get(&kv, caller.org(), name)
        .await?
        .ok_or_else(|| AppError::not_found(format!("analytics rule {name}")))?;
    let alerts = stores(&state).await?;
    let spec = companion_of(&alerts, caller.org(), name)
        .await?
        .map(|a| spec_of(&a));
    Ok((
        [(ETAG, etag(rev))],
        axum::Json(body::view(&rule, rev, spec.as_ref())),
    )
        .into_response())
}

/// 400 naming `sites[i]` unless every site is the caller's organisation's
/// (a site of another organisation reads as one that does not exist).
async fn own_sites(state: &AppState, caller: &Caller, sites: &[String]) -> Result<(), AppError> {
    for (i, site) in sites.iter().enumerate() {
        let owner = state.sites.get(site).await?.map(|(r, _)| r.org);
        if owner.as_deref() != Some(caller.org()) {
            return Err(AppError::bad_request(format!(
                "sites[{i}]: {site} is not a site of your organisation"
            )));
        }
    }
    Ok(())
}

/// What happened to the companion alert rule in a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompanionChange {
    None,
    Created,
    Updated,
    Deleted,
}

impl CompanionChange {
    fn action(self) -> Option<Action> {
        match self {
            Self::None => None,
            Self::Created => Some(Action::AlertRuleCreate),
            Self::Updated => Some(Action::AlertRuleUpdate),
            Self::Deleted => Some(Action::AlertRuleDelete),
        }
    }
}

async fn audit_companion(
    state: &AppState,
    caller: &Caller,
    origin: &Origin,
    name: &str,
    change: CompanionChange,
) {
    if let Some(action) = change.action() {
        let act = Act::new(action, "", format!("alert_rule:{}", companion_id(name)))
            .detail(json!({ "companion_of": name }));
        origin.record(state, caller, act).await;
    }
}

/// `PUT /v1/analytics/rules/{name}`: creates or replaces the rule, and its
/// companion alert rule `analytics-<name>` with it (created or replaced
/// with an `alert` section, deleted without one).
///
/// # Errors
/// 400 naming the field (the SQL's line and column), 401, 403, 404
/// (`If-Match` on a rule that is not there), 409 (a precondition failed,
/// a concurrent write won, or an alert rule `analytics-<name>` exists
/// that is not this rule's companion), 503.
#[utoipa::path(put, path = "/v1/analytics/rules/{name}", operation_id = "put_analytics_rule", tag = "analytics",
    params(
        ("name" = String, Path, description = "Rule name (1-64 letters, digits, '_', '-'; lowercase for a rule with an alert)"),
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`: only if unchanged / present"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if absent")),
    request_body(content = Object, description = "`{sql | rule, sites?, at?, enabled?, alert?: {severity, channels, labels?, for?}}` (docs/api.md#analytics-rules)", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced: the rule, with its `ETag`", body = body::RuleView),
        (status = 201, description = "Created: the rule, with its `ETag`", body = body::RuleView),
        (status = 400, description = "Invalid rule: the message names the field (and the SQL's line and column)", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "`If-Match` and no such rule", body = crate::openapi::ErrorBody),
        (status = 409, description = "Precondition failed, a concurrent write, or a hand-written alert rule in the companion's place", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn put_rule(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, AppError> {
    caller.require(ANALYTICS_WRITE)?;
    let pre = precondition(&headers)?;
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .map_err(AppError::internal)?;
    let compiler = crate::rule_compiler::Compiler::of_build(&state.client);
    let write = body::read(
        caller.org(),
        &name,
        &bytes,
        &caller.claims.sub,
        &now,
        &compiler,
    )
    .await?;
    let name = write.stored.rule.name.clone();
    if write.companion.is_some() {
        caller.require(ALERTS_WRITE)?;
    }
    own_sites(&state, &caller, &write.stored.sites).await?;
    let alerts = stores(&state).await?;
    let existing = alerts
        .rule(caller.org(), &companion_id(&name))
        .await
        .map_err(store_error)?;
    let existing_companion = existing.as_ref().filter(|r| is_companion(r, &name));
    if write.companion.is_some() && existing.is_some() && existing_companion.is_none() {
        return Err(AppError::conflict(format!(
            "alert rule {} exists and is not this analytics rule's companion; rename or delete it first",
            companion_id(&name)
        )));
    }
    if write.companion.is_none() && existing_companion.is_some() {
        caller.require(ALERTS_WRITE)?;
    }

    let kv = store::bucket(&state).await?;
    let previous = store::get(&kv, caller.org(), &name).await?;
    let expected = store::expected(&name, pre, previous.as_ref().map(|(_, r)| *r))?;
    let revision = store::write(&kv, &write.stored, expected).await?;

    let change = match (&write.companion, existing_companion) {
        (Some(c), _) => alerts.put_rule(caller.org(), c).await.map(|created| {
            if created {
                CompanionChange::Created
            } else {
                CompanionChange::Updated
            }
        }),
        (None, Some(_)) => alerts
            .delete_rule(caller.org(), &companion_id(&name))
            .await
            .map(|_| CompanionChange::Deleted),
        (None, None) => Ok(CompanionChange::None),
    };
    let change = match change {
        Ok(c) => c,
        Err(e) => {
            store::undo(
                &kv,
                &write.stored,
                revision,
                previous.as_ref().map(|(r, _)| r),
            )
            .await;
            return Err(store_error(e));
        }
    };

    let created = previous.is_none();
    let action = if created {
        Action::AnalyticsRuleCreate
    } else {
        Action::AnalyticsRuleUpdate
    };
    let act = Act::new(action, "", target(&name)).detail(json!({
        "at": write.stored.at,
        "sites": write.stored.sites,
        "enabled": write.stored.enabled,
        "revision": revision,
    }));
    origin.record(&state, &caller, act).await;
    audit_companion(&state, &caller, &origin, &name, change).await;
    tracing::info!(org = %caller.org(), rule = %name, revision, at = ?write.stored.at, companion = ?change, "analytics rule written");

    let spec: Option<AlertSpec> = write.companion.as_ref().map(spec_of);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(ETAG, etag(revision))],
        axum::Json(body::view(&write.stored, revision, spec.as_ref())),
    )
        .into_response())
}

/// `DELETE /v1/analytics/rules/{name}`: the rule and its companion alert
/// rule (whose alert instances go with it, as on
/// `DELETE /v1/alert-rules/{id}`). Its results stay in
/// `PLANTD_AGGREGATES`.
///
/// # Errors
/// 401, 403, 404 (also another organisation's), 409 (`If-Match` names
/// another revision, or a concurrent write won), 503.
#[utoipa::path(delete, path = "/v1/analytics/rules/{name}", operation_id = "delete_analytics_rule", tag = "analytics",
    params(
        ("name" = String, Path, description = "Rule name"),
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"`: only if unchanged")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted, with its companion alert rule"),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such rule in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 409, description = "Changed since the `If-Match` revision", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    caller.require(ANALYTICS_WRITE)?;
    let name = path_name(&name)?.to_owned();
    let pre = precondition(&headers)?;
    let kv = store::bucket(&state).await?;
    let Some((rule, current)) = store::get(&kv, caller.org(), &name).await? else {
        return Err(AppError::not_found(format!("analytics rule {name}")));
    };
    let revision = store::expected(&name, pre, Some(current))?.unwrap_or(current);
    let alerts = stores(&state).await?;
    let companion = companion_of(&alerts, caller.org(), &name).await?;
    if companion.is_some() {
        caller.require(ALERTS_WRITE)?;
    }
    store::delete(&kv, caller.org(), &name, revision).await?;
    let mut change = CompanionChange::None;
    if companion.is_some() {
        match alerts.delete_rule(caller.org(), &companion_id(&name)).await {
            Ok(_) => change = CompanionChange::Deleted,
            Err(e) => {
                restore(&kv, &rule).await;
                return Err(store_error(e));
            }
        }
    }
    let act = Act::new(Action::AnalyticsRuleDelete, "", target(&name));
    origin.record(&state, &caller, act).await;
    audit_companion(&state, &caller, &origin, &name, change).await;
    tracing::info!(org = %caller.org(), rule = %name, "analytics rule deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Puts a deleted rule back (its companion could not be deleted).
async fn restore(kv: &async_nats::jetstream::kv::Store, rule: &StoredRule) {
    if let Err(e) = store::write(kv, rule, None).await {
        tracing::error!(org = %rule.org, rule = %rule.rule.name, error = %e.message, "could not restore an analytics rule whose companion alert rule could not be deleted");
    }
}
