//! `POST /v1/sites/{site}/call/{topic…}`: a request to a service on a
//! site. The body goes to the device as an MQTT 5 request (through the
//! site's edge); the device's answer comes back as the response, with its
//! content type. 503 when no device serves the topic (or the site is not
//! connected), 504 when nobody answers in time.

use std::time::Duration;

use crate::json::Params;
use async_nats::RequestErrorKind;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plantd_shared::headers;
use plantd_shared::subject::{Channel, topic_to_subject};
use serde::Deserialize;

use crate::audit::{Act, Origin};
use crate::auth::Caller;
use crate::routes::site;
use crate::{AppError, AppState};
use plantd_shared::audit::{Action, Outcome};
use serde_json::json;

/// What NATS may add to the wait the caller asked for, so the edge's own
/// 504 (sent when the device is late) arrives before ours.
const MARGIN: Duration = Duration::from_millis(500);

/// The permission to call services on `site`.
pub fn permission(site: &str) -> String {
    format!("services:{site}:call")
}

/// Query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    /// How long to wait for the device, in milliseconds (default 10 000).
    pub timeout_ms: Option<u64>,
}

/// The call.
///
/// # Errors
/// 400, 403 (permission, or another organisation's site), 404 (site not
/// registered), 413, 503 (no responder), 504 (timeout), 502 (a reply the edge
/// marked as failed for another reason).
#[utoipa::path(post, path = "/v1/sites/{site}/call/{*topic}", tag = "sites",
    params(("site" = String, Path, description = "Site name"),
        ("topic" = String, Path, description = "The service's MQTT topic (may contain `/`)"),
        CallQuery),
    request_body(content = Vec<u8>, description = "Any bytes, sent to the device with the request's `Content-Type`", content_type = "*/*"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The device's answer with its content type; no schema: the device chooses both the bytes and the content type"),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large", body = crate::openapi::ErrorBody),
        (status = 502, description = "The edge reported a failure", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody),
        (status = 504, description = "No answer in time", body = crate::openapi::ErrorBody)))]
pub async fn call(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path((site_name, topic)): Path<(String, String)>,
    Params(query): Params<CallQuery>,
    req_headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let site = site::site(&site_name)?;
    caller.require(&permission(site.as_str()))?;
    let owner = site::owned(&state, &caller, &site).await?.org;
    let topic = site::topic(&topic)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::json::too_large()
        } else {
            AppError::bad_request(e.body_text())
        }
    })?;
    let wait = query
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(state.settings.call_timeout)
        .min(state.settings.max_call_timeout);
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::TIMEOUT_MS, wait.as_millis().to_string().as_str());
    if let Some(ct) = req_headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        h.insert(headers::CONTENT_TYPE, ct);
    }
    let subject = topic_to_subject(&site, Channel::Svc, &topic);
    let request = async_nats::Request::new()
        .payload(body)
        .headers(h)
        .timeout(Some(wait + MARGIN));
    let target = format!("call:{site}/{}", topic.as_str());
    let record = |outcome, detail| {
        let act = Act::new(Action::ServiceCall, &owner, target.clone())
            .outcome(outcome)
            .detail(detail);
        origin.record(&state, &caller, act)
    };
    let reply = match state.client.send_request(subject, request).await {
        Ok(reply) => reply,
        Err(e) => {
            let reason = json!({ "reason": e.to_string() });
            record(Outcome::Failure, reason).await;
            return Err(match e.kind() {
                RequestErrorKind::NoResponders => AppError::no_responder(format!(
                    "site {site} is not connected or serves no {topic}"
                )),
                RequestErrorKind::TimedOut => {
                    AppError::timeout(format!("no answer from {topic} on {site} in {wait:?}"))
                }
                _ => AppError::unavailable(e),
            });
        }
    };
    let reply_header = |name: &str| {
        reply
            .headers
            .as_ref()
            .and_then(|hm| hm.get(name))
            .map(|v| v.as_str().to_owned())
    };
    if let Some(status) = reply_header(headers::STATUS) {
        record(Outcome::Failure, json!({ "status": status })).await;
        let (code, reason) = status.split_once(' ').unwrap_or((status.as_str(), ""));
        let reason = if reason.is_empty() {
            status.as_str()
        } else {
            reason
        };
        return Err(match code {
            "503" => AppError::no_responder(reason.to_owned()),
            "504" => AppError::timeout(reason.to_owned()),
            "400" => AppError::bad_request(reason.to_owned()),
            _ => AppError::new(StatusCode::BAD_GATEWAY, "bad_gateway", reason.to_owned()),
        });
    }
    let size = json!({ "reply_bytes": reply.payload.len() });
    record(Outcome::Success, size).await;
    let ct = reply_header(headers::CONTENT_TYPE)
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok((StatusCode::OK, [(CONTENT_TYPE, ct)], reply.payload).into_response())
}
