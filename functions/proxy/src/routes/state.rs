//! `/v1/state`: scoped key/value state with optimistic concurrency.
//!
//! Permissions are per scope within the caller's organisation:
//! `state:scope:<scope>:read|write|delete|admin` (`admin` also grants the
//! other three, and is what creating or deleting a scope needs).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::audit::{Act, Origin};
use crate::auth::Caller;
use crate::json::Body;
use crate::state_store::{DEFAULT_CONTENT_TYPE, HistoryEntry, Precondition, check_scope};
use crate::{AppError, AppState};
use plantd_shared::audit::Action;

/// The permission for `action` on `scope`.
pub fn permission(scope: &str, action: &str) -> String {
    format!("state:scope:{scope}:{action}")
}

/// `"<rev>"`, the `ETag` of a revision.
pub fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Parses an entity tag we issued (`"12"`, also `W/"12"` or bare `12`).
fn parse_etag(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.trim_matches('"').parse().ok()
}

fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &axum::http::HeaderName,
) -> Result<Option<&'a str>, AppError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| AppError::bad_request(format!("{name} is not text")))
        })
        .transpose()
}

/// The write precondition in `If-Match` / `If-None-Match`.
pub(crate) fn precondition(headers: &HeaderMap) -> Result<Precondition, AppError> {
    let if_match = header_text(headers, &IF_MATCH)?;
    let if_none = header_text(headers, &IF_NONE_MATCH)?;
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(AppError::bad_request(
            "send either If-Match or If-None-Match, not both",
        )),
        (Some(m), None) if m.trim() == "*" => Ok(Precondition::Exists),
        (Some(m), None) => parse_etag(m).map(Precondition::Revision).ok_or_else(|| {
            AppError::bad_request("If-Match must be \"*\" or an ETag this API returned")
        }),
        (None, Some(n)) if n.trim() == "*" => Ok(Precondition::Absent),
        (None, Some(_)) => Err(AppError::bad_request(
            "on writes, If-None-Match can only be \"*\" (create only)",
        )),
        (None, None) => Ok(Precondition::None),
    }
}

/// `POST /v1/state/scopes` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScope {
    /// The scope's name.
    pub scope: String,
}

/// The answer of `POST /v1/state/scopes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScopeCreated {
    /// The scope's name.
    pub scope: String,
    /// The revision of its record (also the `ETag`).
    pub revision: u64,
}

/// The answer of `GET /v1/state/scopes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScopeList {
    /// The scopes the caller may read, by name.
    pub scopes: Vec<String>,
}

/// One key of a scope with its current revision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyRevision {
    /// The key.
    pub key: String,
    /// Its current revision (the `ETag` a read answers with).
    pub revision: u64,
}

/// The answer of `GET /v1/state/{scope}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// The scope.
    pub scope: String,
    /// Its keys, by name.
    pub keys: Vec<KeyRevision>,
}

/// The answer of `PUT /v1/state/{scope}/{key}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stored {
    /// The scope.
    pub scope: String,
    /// The key.
    pub key: String,
    /// The new revision (also the `ETag`).
    pub revision: u64,
}

/// The answer of `GET /v1/state/{scope}/{key}/history`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyHistory {
    /// The scope.
    pub scope: String,
    /// The key.
    pub key: String,
    /// Every kept revision, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// `POST /v1/state/scopes`: creates a scope (`admin` on it).
///
/// # Errors
/// 400, 403, 409 when it exists, 503.
#[utoipa::path(post, path = "/v1/state/scopes", tag = "state",
    request_body = NewScope,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created, with an `ETag`", body = ScopeCreated),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 409, description = "Exists already, or a concurrent change won", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn create_scope(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Body(body): Body<NewScope>,
) -> Result<Response, AppError> {
    check_scope(&body.scope)?;
    caller.require(&permission(&body.scope, "admin"))?;
    let revision = state.state.create_scope(caller.org(), &body.scope).await?;
    let target = format!("scope:{}", body.scope);
    let act = Act::new(Action::ScopeCreate, "", target);
    origin.record(&state, &caller, act).await;
    Ok((
        StatusCode::CREATED,
        [(ETAG, etag(revision))],
        axum::Json(ScopeCreated {
            scope: body.scope,
            revision,
        }),
    )
        .into_response())
}

/// `GET /v1/state/scopes`: the scopes of the caller's organisation that it
/// may read.
///
/// # Errors
/// 401, 503.
#[utoipa::path(get, path = "/v1/state/scopes", tag = "state",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The scopes the caller may read", body = ScopeList),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn list_scopes(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, AppError> {
    let scopes: Vec<String> = state
        .state
        .scopes(caller.org())
        .await?
        .into_iter()
        .filter(|s| caller.perms.allows(&permission(s, "read")))
        .collect();
    Ok(axum::Json(ScopeList { scopes }).into_response())
}

/// `DELETE /v1/state/scopes/{scope}`: deletes a scope and all its keys.
///
/// # Errors
/// 400, 403, 404, 503.
#[utoipa::path(delete, path = "/v1/state/scopes/{scope}", tag = "state",
    params(("scope" = String, Path, description = "State scope")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted with its keys and their history"),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn delete_scope(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(scope): Path<String>,
) -> Result<Response, AppError> {
    check_scope(&scope)?;
    caller.require(&permission(&scope, "admin"))?;
    state.state.delete_scope(caller.org(), &scope).await?;
    let target = format!("scope:{scope}");
    let act = Act::new(Action::ScopeDelete, "", target);
    origin.record(&state, &caller, act).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn require_scope(state: &AppState, org: &str, scope: &str) -> Result<(), AppError> {
    if state.state.scope_exists(org, scope).await? {
        Ok(())
    } else {
        Err(AppError::not_found(format!(
            "scope {scope} (create it with POST /v1/state/scopes)"
        )))
    }
}

/// `GET /v1/state/{scope}`: the scope's keys with their revisions.
///
/// # Errors
/// 400, 403, 404, 503.
#[utoipa::path(get, path = "/v1/state/{scope}", tag = "state",
    params(("scope" = String, Path, description = "State scope")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The scope's keys with their revisions", body = KeyList),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(scope): Path<String>,
) -> Result<Response, AppError> {
    check_scope(&scope)?;
    caller.require(&permission(&scope, "read"))?;
    require_scope(&state, caller.org(), &scope).await?;
    let keys: Vec<_> = state
        .state
        .keys(caller.org(), &scope)
        .await?
        .into_iter()
        .map(|(key, revision)| KeyRevision { key, revision })
        .collect();
    Ok(axum::Json(KeyList { scope, keys }).into_response())
}

/// `GET /v1/state/{scope}/{key}`: the value with its content type and
/// `ETag`; 304 when `If-None-Match` names the current revision.
///
/// # Errors
/// 400, 403, 404, 503.
#[utoipa::path(get, path = "/v1/state/{scope}/{key}", tag = "state",
    params(("scope" = String, Path, description = "State scope"), ("key" = String, Path, description = "Key in the scope"),
        ("If-None-Match" = Option<String>, Header, description = "`\"<revision>\"`: 304 when unchanged")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The value byte for byte, with its `Content-Type` and `ETag: \"<revision>\"`; no schema: it is whatever was written, of any content type"),
        (status = 304, description = "Unchanged since the revision in `If-None-Match`"),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn get_value(
    State(state): State<AppState>,
    caller: Caller,
    Path((scope, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    check_scope(&scope)?;
    caller.require(&permission(&scope, "read"))?;
    let value = state
        .state
        .get(caller.org(), &scope, &key)
        .await?
        .ok_or_else(|| AppError::not_found(format!("key {key} in scope {scope}")))?;
    let tag = etag(value.revision);
    if let Some(inm) = header_text(&headers, &IF_NONE_MATCH)?
        && inm
            .split(',')
            .any(|t| parse_etag(t) == Some(value.revision))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, tag)]).into_response());
    }
    let ct = HeaderValue::from_str(&value.content_type)
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    Ok((
        StatusCode::OK,
        [(ETAG, tag), (CONTENT_TYPE, ct)],
        value.bytes,
    )
        .into_response())
}

/// `PUT /v1/state/{scope}/{key}`: stores the body as is, with its content
/// type. `If-Match: "<rev>"` → only if unchanged (409 otherwise);
/// `If-None-Match: *` → only if absent (409 otherwise).
///
/// # Errors
/// 400, 403, 404 (no such scope), 409, 413, 503.
#[utoipa::path(put, path = "/v1/state/{scope}/{key}", tag = "state",
    params(("scope" = String, Path, description = "State scope"), ("key" = String, Path, description = "Key in the scope"),
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"` or `*`: only if unchanged / present"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: only if absent")),
    request_body(content = Vec<u8>, description = "Any bytes; stored with the request's `Content-Type` (JSON must parse)", content_type = "*/*"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stored, with an `ETag`", body = Stored),
        (status = 201, description = "Created (`If-None-Match: *`), with an `ETag`", body = Stored),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "Exists already, or a concurrent change won", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn put_value(
    State(state): State<AppState>,
    caller: Caller,
    Path((scope, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    check_scope(&scope)?;
    caller.require(&permission(&scope, "write"))?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::json::too_large()
        } else {
            AppError::bad_request(e.body_text())
        }
    })?;
    let content_type = header_text(&headers, &CONTENT_TYPE)?
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_owned();
    if crate::payload::is_json(&content_type)
        && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err()
    {
        return Err(AppError::bad_request(
            "the body is not valid JSON but Content-Type says it is",
        ));
    }
    let pre = precondition(&headers)?;
    require_scope(&state, caller.org(), &scope).await?;
    let revision = state
        .state
        .put(caller.org(), &scope, &key, &content_type, body, pre)
        .await?;
    let status = if pre == Precondition::Absent {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(ETAG, etag(revision))],
        axum::Json(Stored {
            scope,
            key,
            revision,
        }),
    )
        .into_response())
}

/// `DELETE /v1/state/{scope}/{key}`: deletes the key (history is kept);
/// `If-Match: "<rev>"` → only if unchanged.
///
/// # Errors
/// 400, 403, 404, 409, 503.
#[utoipa::path(delete, path = "/v1/state/{scope}/{key}", tag = "state",
    params(("scope" = String, Path, description = "State scope"), ("key" = String, Path, description = "Key in the scope"),
        ("If-Match" = Option<String>, Header, description = "`\"<revision>\"`: only if unchanged")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted (history is kept)"),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 409, description = "Exists already, or a concurrent change won", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn delete_value(
    State(state): State<AppState>,
    caller: Caller,
    Path((scope, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    check_scope(&scope)?;
    caller.require(&permission(&scope, "delete"))?;
    let revision = match precondition(&headers)? {
        Precondition::Revision(r) => Some(r),
        Precondition::None | Precondition::Exists => None,
        Precondition::Absent => {
            return Err(AppError::bad_request(
                "If-None-Match makes no sense on DELETE",
            ));
        }
    };
    state
        .state
        .delete(caller.org(), &scope, &key, revision)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/state/{scope}/{key}/history`: every kept revision, oldest
/// first.
///
/// # Errors
/// 400, 403, 404, 503.
#[utoipa::path(get, path = "/v1/state/{scope}/{key}/history", operation_id = "state_history", tag = "state",
    params(("scope" = String, Path, description = "State scope"), ("key" = String, Path, description = "Key in the scope")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every kept revision, oldest first", body = KeyHistory),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "Not found", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path((scope, key)): Path<(String, String)>,
) -> Result<Response, AppError> {
    check_scope(&scope)?;
    caller.require(&permission(&scope, "read"))?;
    let entries = state.state.history(caller.org(), &scope, &key).await?;
    if entries.is_empty() {
        return Err(AppError::not_found(format!("key {key} in scope {scope}")));
    }
    Ok(axum::Json(KeyHistory {
        scope,
        key,
        history: entries,
    })
    .into_response())
}
