//! Alerting: rules (`/v1/alert-rules`), alert instances and their history
//! (`/v1/alerts`), acknowledgements, and silences (`/v1/silences`), over the
//! alert manager's stores ([`plantd_alerts::Stores`]). Everything is the
//! caller's organisation's: another organisation's rule, alert or silence
//! answers 404, never 403. Reads need `alerts:read`, writes `alerts:write`
//! (`plantd_shared::claims`); rule and silence changes and acks are
//! audited.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plantd_alerts::record::AlertRecord;
use plantd_alerts::{AlertState, InstanceState, Rule, Severity, Silence, StoreError, Stores};
use plantd_shared::audit::Action;
use plantd_shared::claims::{ALERTS_READ, ALERTS_WRITE};
use plantd_shared::http::Params;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{Act, Origin};
use crate::auth::Caller;
use crate::{AppError, AppState};

pub use super::alert_answers::{AlertHistory, AlertList, AlertRules, SilenceList, SilenceView};

/// Most history records one answer carries (the newest).
pub const MAX_HISTORY: usize = 500;

pub(crate) fn store_error(e: StoreError) -> AppError {
    match e {
        StoreError::NotFound(what) => AppError::not_found(what),
        StoreError::Refused(why) => AppError::conflict(why),
        StoreError::Conflict => AppError::conflict("changed concurrently; try again"),
        StoreError::Unavailable(d) => AppError::unavailable(d),
        e @ StoreError::Corrupt { .. } => AppError::internal(e),
    }
}

/// The alert stores, opened once per process (a missing bucket is not
/// remembered: the next request tries again).
pub(crate) async fn stores(state: &AppState) -> Result<Stores, AppError> {
    state
        .alert_stores
        .get_or_try_init(|| Stores::open(&state.js))
        .await
        .cloned()
        .map_err(store_error)
}

fn audit_target(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

/// `GET /v1/alert-rules`: the organisation's rules.
///
/// # Errors
/// 401, 403, 503.
#[utoipa::path(get, path = "/v1/alert-rules", operation_id = "list_alert_rules", tag = "alerts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's rules", body = AlertRules),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list_rules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, AppError> {
    caller.require(ALERTS_READ)?;
    let rules = stores(&state)
        .await?
        .rules(caller.org())
        .await
        .map_err(store_error)?;
    Ok(axum::Json(AlertRules { rules }).into_response())
}

/// `POST /v1/alert-rules`: creates a rule (409 when the id exists).
///
/// # Errors
/// 400 naming the field, 401, 403, 409, 503.
#[utoipa::path(post, path = "/v1/alert-rules", tag = "alerts",
    request_body(content = Object, description = "The rule (docs/api.md#alerts)", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created: the rule", body = Rule),
        (status = 400, description = "Invalid rule: the message names the field", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 409, description = "A rule with this id exists", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    body: Bytes,
) -> Result<Response, AppError> {
    caller.require(ALERTS_WRITE)?;
    let rule = Rule::from_json(&body).map_err(|e| AppError::bad_request(e.to_string()))?;
    let stores = stores(&state).await?;
    if stores
        .rule(caller.org(), &rule.id)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(AppError::conflict(format!(
            "alert rule {} exists (PUT /v1/alert-rules/{} replaces it)",
            rule.id, rule.id
        )));
    }
    stores
        .put_rule(caller.org(), &rule)
        .await
        .map_err(store_error)?;
    let act = Act::new(
        Action::AlertRuleCreate,
        "",
        audit_target("alert_rule", &rule.id),
    );
    origin.record(&state, &caller, act).await;
    Ok((StatusCode::CREATED, axum::Json(rule)).into_response())
}

/// `GET /v1/alert-rules/{id}`.
///
/// # Errors
/// 401, 403, 404 (also another organisation's), 503.
#[utoipa::path(get, path = "/v1/alert-rules/{id}", operation_id = "get_alert_rule", tag = "alerts",
    params(("id" = String, Path, description = "Rule id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rule", body = Rule),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such rule in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn get_rule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(ALERTS_READ)?;
    let rule = stores(&state)
        .await?
        .rule(caller.org(), &id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AppError::not_found(format!("alert rule {id}")))?;
    Ok(axum::Json(rule).into_response())
}

/// `PUT /v1/alert-rules/{id}`: creates or replaces the rule (the body's
/// `id`, when given, must be the path's).
///
/// # Errors
/// 400 naming the field, 401, 403, 503.
#[utoipa::path(put, path = "/v1/alert-rules/{id}", operation_id = "put_alert_rule", tag = "alerts",
    params(("id" = String, Path, description = "Rule id")),
    request_body(content = Object, description = "The rule (docs/api.md#alerts)", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced: the rule", body = Rule),
        (status = 201, description = "Created: the rule", body = Rule),
        (status = 400, description = "Invalid rule: the message names the field", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn put_rule(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    caller.require(ALERTS_WRITE)?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| AppError::bad_request(format!("rule: {e}")))?;
    if let Some(obj) = value.as_object_mut() {
        match obj.get("id") {
            None => {
                obj.insert("id".into(), json!(id));
            }
            Some(given) if given.as_str() == Some(id.as_str()) => {}
            Some(_) => {
                return Err(AppError::bad_request(format!(
                    "id: must be {id:?}, the id in the path"
                )));
            }
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(AppError::internal)?;
    let rule = Rule::from_json(&bytes).map_err(|e| AppError::bad_request(e.to_string()))?;
    let created = stores(&state)
        .await?
        .put_rule(caller.org(), &rule)
        .await
        .map_err(store_error)?;
    let action = if created {
        Action::AlertRuleCreate
    } else {
        Action::AlertRuleUpdate
    };
    let act = Act::new(action, "", audit_target("alert_rule", &rule.id));
    origin.record(&state, &caller, act).await;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(rule)).into_response())
}

/// `DELETE /v1/alert-rules/{id}`: its alert instances go with it (no
/// resolution is recorded).
///
/// # Errors
/// 401, 403, 404, 503.
#[utoipa::path(delete, path = "/v1/alert-rules/{id}", operation_id = "delete_alert_rule", tag = "alerts",
    params(("id" = String, Path, description = "Rule id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such rule in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(ALERTS_WRITE)?;
    if !stores(&state)
        .await?
        .delete_rule(caller.org(), &id)
        .await
        .map_err(store_error)?
    {
        return Err(AppError::not_found(format!("alert rule {id}")));
    }
    let act = Act::new(Action::AlertRuleDelete, "", audit_target("alert_rule", &id));
    origin.record(&state, &caller, act).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Filters of `GET /v1/alerts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Only instances in this state (`inactive`, `pending`, `firing`,
    /// `no_data`).
    #[param(value_type = Option<String>)]
    pub state: Option<AlertState>,
    /// Only this site's.
    pub site: Option<String>,
    /// Only this severity (`info`, `warning`, `critical`).
    #[param(value_type = Option<String>)]
    pub severity: Option<Severity>,
    /// Only this rule's.
    pub rule: Option<String>,
}

/// An alert instance as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    /// `<rule>.<key hash>`: the id for history and ack.
    pub id: String,
    /// The rule id.
    pub rule: String,
    /// The site.
    pub site: String,
    /// The group-by key.
    pub key: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Severity (from the rule).
    pub severity: Option<Severity>,
    /// Where it is.
    pub state: AlertState,
    /// Since when (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String)]
    pub since: OffsetDateTime,
    /// When it started firing, while it fires (RFC 3339).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>)]
    pub firing_since: Option<OffsetDateTime>,
    /// The last value judged.
    pub value: Option<f64>,
    /// The acknowledgement of the current firing.
    pub ack: Option<plantd_alerts::record::Ack>,
    /// Transitions so far.
    pub transitions: u64,
}

impl From<&InstanceState> for AlertView {
    fn from(s: &InstanceState) -> Self {
        Self {
            id: s.id.clone(),
            rule: s.rule.clone(),
            site: s.site.clone(),
            key: s.key.clone(),
            labels: s.labels.clone(),
            severity: s
                .labels
                .get("severity")
                .and_then(|v| serde_json::from_value(json!(v)).ok()),
            state: s.state,
            since: s.since,
            firing_since: s.firing_since,
            value: s.value,
            ack: s.ack.clone(),
            transitions: s.n,
        }
    }
}

/// `GET /v1/alerts`: the organisation's alert instances, filtered.
///
/// # Errors
/// 400 for a bad filter, 401, 403, 503.
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(AlertsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's alert instances that pass the filters", body = AlertList),
        (status = 400, description = "Bad filter", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<AlertsQuery>,
) -> Result<Response, AppError> {
    caller.require(ALERTS_READ)?;
    let all = stores(&state)
        .await?
        .instances()
        .await
        .map_err(store_error)?;
    let alerts: Vec<AlertView> = all
        .iter()
        .map(|(s, _)| s)
        .filter(|s| s.org == caller.org())
        .filter(|s| q.state.is_none_or(|x| x == s.state))
        .filter(|s| q.site.as_ref().is_none_or(|x| *x == s.site))
        .filter(|s| q.rule.as_ref().is_none_or(|x| *x == s.rule))
        .map(AlertView::from)
        .filter(|v| q.severity.is_none_or(|x| Some(x) == v.severity))
        .collect();
    Ok(axum::Json(AlertList { alerts }).into_response())
}

async fn own_instance(
    stores: &Stores,
    caller: &Caller,
    id: &str,
) -> Result<InstanceState, AppError> {
    match stores.instance(id).await.map_err(store_error)? {
        Some((s, _)) if s.org == caller.org() => Ok(s),
        _ => Err(AppError::not_found(format!("alert {id}"))),
    }
}

/// `GET /v1/alerts/{id}/history`: the instance's records in
/// `PLANTD_ALERTS`, oldest first (the newest 500).
///
/// # Errors
/// 401, 403, 404, 503.
#[utoipa::path(get, path = "/v1/alerts/{id}/history", operation_id = "alert_history", tag = "alerts",
    params(("id" = String, Path, description = "Alert id (`<rule>.<key hash>`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The alert and its records, oldest first", body = AlertHistory),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such alert in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(ALERTS_READ)?;
    let stores = stores(&state).await?;
    let instance = own_instance(&stores, &caller, &id).await?;
    let records = stores
        .history(&instance, MAX_HISTORY)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(AlertHistory {
        alert: AlertView::from(&instance),
        records,
    })
    .into_response())
}

/// `POST /v1/alerts/{id}/ack` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// Why, what is being done.
    #[serde(default)]
    pub note: String,
}

/// `POST /v1/alerts/{id}/ack`: acknowledges the firing alert; an `Ack`
/// record is written (once) and repeats stop until it fires again.
///
/// # Errors
/// 400, 401, 403, 404, 409 (not firing, or acknowledged already), 503.
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "alerts",
    params(("id" = String, Path, description = "Alert id (`<rule>.<key hash>`)")),
    request_body = AckBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The `Ack` record", body = AlertRecord),
        (status = 400, description = "Malformed body", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such alert in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 409, description = "Not firing, or acknowledged already", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    caller.require(ALERTS_WRITE)?;
    let body: AckBody = if body.is_empty() {
        AckBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::bad_request(format!("body: {e}")))?
    };
    if body.note.len() > 2000 {
        return Err(AppError::bad_request("note: longer than 2000 bytes"));
    }
    let stores = stores(&state).await?;
    let record = stores
        .acknowledge(
            caller.org(),
            &id,
            &caller.claims.sub,
            &body.note,
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(store_error)?;
    let act = Act::new(Action::AlertAck, "", audit_target("alert", &id))
        .detail(json!({"note": body.note}));
    origin.record(&state, &caller, act).await;
    Ok(axum::Json(record).into_response())
}

/// `GET /v1/silences`: the organisation's silences (expired included).
///
/// # Errors
/// 401, 403, 503.
#[utoipa::path(get, path = "/v1/silences", tag = "alerts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's silences, expired ones included", body = SilenceList),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list_silences(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, AppError> {
    caller.require(ALERTS_READ)?;
    let now = OffsetDateTime::now_utc();
    let silences: Vec<SilenceView> = stores(&state)
        .await?
        .silences(caller.org())
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|s| SilenceView::new(s, now))
        .collect();
    Ok(axum::Json(SilenceList { silences }).into_response())
}

/// `POST /v1/silences`: creates a silence; the id is chosen here.
///
/// # Errors
/// 400 naming the field, 401, 403, 503.
#[utoipa::path(post, path = "/v1/silences", tag = "alerts",
    request_body(content = Object, description = "`{matchers: [{label, op, value}], starts?, ends, comment?}`", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created: the silence", body = Silence),
        (status = 400, description = "Invalid silence: the message names the field", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn create_silence(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    body: Bytes,
) -> Result<Response, AppError> {
    caller.require(ALERTS_WRITE)?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let mut silence: Silence = serde_path_to_error::deserialize(de)
        .map_err(|e| AppError::bad_request(format!("{}: {}", e.path(), e.inner())))?;
    silence
        .validate()
        .map_err(|e| AppError::bad_request(e.to_string()))?;
    silence.id = format!("s-{}", uuid::Uuid::new_v4().simple());
    silence.created_by.clone_from(&caller.claims.sub);
    stores(&state)
        .await?
        .put_silence(caller.org(), &silence)
        .await
        .map_err(store_error)?;
    let act = Act::new(
        Action::SilenceCreate,
        "",
        audit_target("silence", &silence.id),
    )
    .detail(json!({"matchers": silence.matchers, "ends": silence.ends.unix_timestamp()}));
    origin.record(&state, &caller, act).await;
    Ok((StatusCode::CREATED, axum::Json(silence)).into_response())
}

/// `GET /v1/silences/{id}`.
///
/// # Errors
/// 401, 403, 404, 503.
#[utoipa::path(get, path = "/v1/silences/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Silence id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The silence", body = Silence),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such silence in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn get_silence(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(ALERTS_READ)?;
    let silence = stores(&state)
        .await?
        .silence(caller.org(), &id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AppError::not_found(format!("silence {id}")))?;
    Ok(axum::Json(silence).into_response())
}

/// `DELETE /v1/silences/{id}`: ends the silence now (records made from
/// here on are notified).
///
/// # Errors
/// 401, 403, 404, 503.
#[utoipa::path(delete, path = "/v1/silences/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Silence id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such silence in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn delete_silence(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require(ALERTS_WRITE)?;
    if !stores(&state)
        .await?
        .delete_silence(caller.org(), &id)
        .await
        .map_err(store_error)?
    {
        return Err(AppError::not_found(format!("silence {id}")));
    }
    let act = Act::new(Action::SilenceDelete, "", audit_target("silence", &id));
    origin.record(&state, &caller, act).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
