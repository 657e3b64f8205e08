//! `/v1/alert-channels`: the organisation's notification channels
//! (webhook, SNS) that alert rules name in `notify`
//! ([`plantd_alerts::notify`]). Everything is the caller's organisation's:
//! another organisation's channel answers 404, never 403. Every operation
//! needs `alerts:admin` (a webhook URL can itself be a credential); a
//! webhook's `secret` is write-only — no answer ever carries it. Writes and
//! test sends are audited.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plantd_alerts::notify::{ChannelSpec, ChannelView, StoreError, channel::check_name};
use plantd_shared::audit::{Action, Outcome};
use serde_json::json;

use super::alert_answers::{ChannelList, TestSent};
use crate::audit::{Act, Origin};
use crate::auth::Caller;
use crate::{AppError, AppState};

/// The permission every channel operation needs.
pub const CHANNELS_ADMIN: &str = "alerts:admin";

fn store_error(e: StoreError) -> AppError {
    match e {
        StoreError::Unavailable { .. } => AppError::unavailable(e),
        StoreError::Corrupt { .. } => AppError::internal(e),
        // Names the channel and what to do, never the secret.
        StoreError::Sealed { .. } => AppError::conflict(e.to_string()),
    }
}

/// 400 unless `name` can name a channel.
fn valid_name(name: &str) -> Result<(), AppError> {
    check_name(name).map_err(|e| AppError::bad_request(e.to_string()))
}

fn target(name: &str) -> String {
    format!("alert_channel:{name}")
}

/// `GET /v1/alert-channels`: the organisation's channels, by name
/// (secrets never shown).
///
/// # Errors
/// 401, 403, 503.
#[utoipa::path(get, path = "/v1/alert-channels", tag = "alerts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The organisation's channels, without secrets", body = ChannelList),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, AppError> {
    caller.require(CHANNELS_ADMIN)?;
    let channels: Vec<ChannelView> = state
        .notifier
        .channels()
        .list(caller.org())
        .await
        .map_err(store_error)?
        .iter()
        .map(|c| c.view())
        .collect();
    Ok(axum::Json(ChannelList { channels }).into_response())
}

/// `GET /v1/alert-channels/{name}`.
///
/// # Errors
/// 400, 401, 403, 404 (also another organisation's), 409 (the secret does
/// not open), 503.
#[utoipa::path(get, path = "/v1/alert-channels/{name}", tag = "alerts",
    params(("name" = String, Path, description = "Channel name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The channel, without its secret", body = ChannelView),
        (status = 400, description = "Malformed name", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such channel in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 409, description = "The stored webhook secret does not open with this deployment's channel key (the message names the channel)", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    caller.require(CHANNELS_ADMIN)?;
    valid_name(&name)?;
    let channel = state
        .notifier
        .channels()
        .get(caller.org(), &name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AppError::not_found(format!("alert channel {name}")))?;
    Ok(axum::Json(channel.view()).into_response())
}

/// `PUT /v1/alert-channels/{name}`: creates or replaces a channel. On a
/// replacement a webhook without `secret` keeps the stored one (409 when
/// that one does not open with the channel key; a body with a `secret`
/// replaces it).
///
/// # Errors
/// 400 naming the field, 401, 403, 409 (the stored secret does not open
/// and none is given), 503.
#[utoipa::path(put, path = "/v1/alert-channels/{name}", tag = "alerts",
    params(("name" = String, Path, description = "Channel name")),
    request_body(content = Object, description = "`{webhook: {url, secret, headers?, timeout_ms?}} | {sns: {topic_arn, region?}}`, `send_resolved?`, `matchers?` (docs/api.md#notification-channels)", content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Replaced: the channel, without its secret", body = ChannelView),
        (status = 201, description = "Created: the channel, without its secret", body = ChannelView),
        (status = 400, description = "Invalid channel: the message names the field", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 409, description = "The stored webhook secret does not open with this deployment's channel key (the message names the channel)", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn put_channel(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    caller.require(CHANNELS_ADMIN)?;
    valid_name(&name)?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let spec: ChannelSpec = serde_path_to_error::deserialize(de)
        .map_err(|e| AppError::bad_request(format!("{}: {}", e.path(), e.inner())))?;
    let channels = state.notifier.channels();
    let gives_secret = spec.webhook.as_ref().is_some_and(|w| w.secret.is_some());
    let (existing, existed) = match channels.get(caller.org(), &name).await {
        Ok(c) => (c.clone(), c.is_some()),
        // A stored secret that does not open (another channel key) is
        // replaced by a body that gives a secret; without one, 409.
        Err(StoreError::Sealed { .. }) if gives_secret => (None, true),
        Err(e) => return Err(store_error(e)),
    };
    let channel = spec
        .into_channel(caller.org(), &name, existing.as_ref())
        .map_err(|e| AppError::bad_request(e.to_string()))?;
    channels.put(&channel).await.map_err(store_error)?;
    let act = Act::new(Action::AlertChannelPut, "", target(&name)).detail(json!({
        "type": channel.target.kind(),
        "created": !existed,
    }));
    origin.record(&state, &caller, act).await;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(channel.view())).into_response())
}

/// `DELETE /v1/alert-channels/{name}`. Rules naming it skip it from then
/// on (the notifier logs each skip).
///
/// # Errors
/// 400, 401, 403, 404, 503.
#[utoipa::path(delete, path = "/v1/alert-channels/{name}", tag = "alerts",
    params(("name" = String, Path, description = "Channel name")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed name", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such channel in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn delete_channel(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    caller.require(CHANNELS_ADMIN)?;
    valid_name(&name)?;
    let existed = state
        .notifier
        .channels()
        .delete(caller.org(), &name)
        .await
        .map_err(store_error)?;
    if !existed {
        return Err(AppError::not_found(format!("alert channel {name}")));
    }
    let act = Act::new(Action::AlertChannelDelete, "", target(&name));
    origin.record(&state, &caller, act).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/alert-channels/{name}/test`: sends a test notification
/// (event `test`) once, without retries, and says what the channel
/// answered.
///
/// # Errors
/// 400, 401, 403, 404, 409 (the secret does not open), 502 when the
/// channel refused it or could not be reached (the message says why), 503.
#[utoipa::path(post, path = "/v1/alert-channels/{name}/test", tag = "alerts",
    params(("name" = String, Path, description = "Channel name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The channel accepted it", body = TestSent),
        (status = 400, description = "Malformed name", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such channel in the caller's organisation", body = crate::openapi::ErrorBody),
        (status = 409, description = "The stored webhook secret does not open with this deployment's channel key (the message names the channel)", body = crate::openapi::ErrorBody),
        (status = 502, description = "The channel refused it or could not be reached", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable", body = crate::openapi::ErrorBody)))]
pub async fn test_channel(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    caller.require(CHANNELS_ADMIN)?;
    valid_name(&name)?;
    let channel = state
        .notifier
        .channels()
        .get(caller.org(), &name)
        .await
        .map_err(store_error)?
        .ok_or_else(|| AppError::not_found(format!("alert channel {name}")))?;
    let sent = state.notifier.send_test(&channel).await;
    let act = Act::new(Action::AlertChannelTest, "", target(&name));
    match sent {
        Ok(receipt) => {
            origin.record(&state, &caller, act).await;
            Ok(axum::Json(TestSent {
                delivered: true,
                receipt: receipt.receipt,
                attempts: receipt.attempts,
            })
            .into_response())
        }
        Err(e) => {
            let act = act
                .outcome(Outcome::Failure)
                .detail(json!({ "error": e.to_string() }));
            origin.record(&state, &caller, act).await;
            Err(AppError::new(
                StatusCode::BAD_GATEWAY,
                "delivery_failed",
                e.to_string(),
            ))
        }
    }
}
