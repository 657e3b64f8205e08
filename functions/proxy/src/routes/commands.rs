//! `POST /v1/sites/{site}/commands`: a command for the devices subscribed
//! to a topic on a site, stored in `PLANTD_COMMANDS` until the site's edge
//! takes it (the edge delivers it when the site is reachable, or drops it
//! once its time to live is over).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use plantd_shared::claims::Claims;
use plantd_shared::headers;
use plantd_shared::subject::{Channel, topic_to_subject};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::audit::{Act, Origin};
use crate::auth::Caller;
use crate::json::Body;
use crate::routes::site;
use crate::{AppError, AppState};
use plantd_shared::audit::{Action, Outcome};

/// A command.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The MQTT topic to deliver on.
    pub topic: String,
    /// The payload as text ...
    #[serde(default)]
    pub payload: Option<String>,
    /// ... or as base64 (standard alphabet), for bytes.
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// MQTT QoS to deliver with (default 1).
    #[serde(default = "default_qos")]
    #[schema(default = 1, maximum = 2)]
    pub qos: u8,
    /// Deliver as a retained message.
    #[serde(default)]
    pub retain: bool,
    /// Drop the command if not delivered within this many seconds.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// MQTT 5 content type to deliver with.
    #[serde(default)]
    pub content_type: Option<String>,
}

fn default_qos() -> u8 {
    1
}

/// The permission to send commands to `site`.
pub fn permission(site: &str) -> String {
    format!("commands:{site}:send")
}

/// Whether `claims` hold a permission that could allow
/// [`permission`]`(site)` for some site: `*`, or a three-part grant whose
/// first part is `commands` or `*` and whose last is `send` or `*`. An
/// over-approximation used only to decide whether a socket is worth
/// accepting (AWS `$connect`); every command is still checked with
/// [`Caller::require`] in [`publish`].
pub fn may_send_somewhere(claims: &Claims) -> bool {
    claims.perms.iter().any(|p| {
        let parts: Vec<&str> = p.split(':').collect();
        match parts.as_slice() {
            ["*"] => true,
            [what, _, action] => {
                matches!(*what, "commands" | "*") && matches!(*action, "send" | "*")
            }
            _ => false,
        }
    })
}

/// Where a command was stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Sent {
    /// The stream (`PLANTD_COMMANDS`).
    pub stream: String,
    /// Its sequence there.
    pub sequence: u64,
}

/// `POST /v1/sites/{site}/commands` → `202 {stream, sequence}`.
///
/// # Errors
/// 400 for a bad topic, payload or QoS; 403 (permission, or another
/// organisation's site); 404 for an unregistered site; 503 when JetStream refuses.
#[utoipa::path(post, path = "/v1/sites/{site}/commands", tag = "sites",
    params(("site" = String, Path, description = "Site name")),
    request_body = Command,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Stored for the site's edge", body = Sent),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 403, description = "A permission is missing, or the site belongs to another organisation", body = crate::openapi::ErrorBody),
        (status = 404, description = "The site is not registered", body = crate::openapi::ErrorBody),
        (status = 413, description = "Body too large", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    origin: Origin,
    Path(site_name): Path<String>,
    Body(cmd): Body<Command>,
) -> Result<Response, AppError> {
    let sent = publish(&state, &caller, &origin, &site_name, cmd).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(sent)).into_response())
}

/// Checks `commands:<site>:send`, that the caller's organisation owns the
/// site ([`site::owned`]) and the command, and stores it in
/// `PLANTD_COMMANDS` for the site's edge. Shared by the HTTP route and the
/// WebSocket's `command` operation. A stored command is recorded in the
/// audit trail of the site's organisation (`command.send`, from `origin`).
///
/// # Errors
/// 400 for a bad site, topic, payload or QoS; 403; 503 when JetStream
/// refuses.
pub async fn publish(
    state: &AppState,
    caller: &Caller,
    origin: &Origin,
    site_name: &str,
    cmd: Command,
) -> Result<Sent, AppError> {
    let site = site::site(site_name)?;
    caller.require(&permission(site.as_str()))?;
    let owner = site::owned(state, caller, &site).await?.org;
    let topic = site::topic(&cmd.topic)?;
    if cmd.qos > 2 {
        return Err(AppError::bad_request("qos must be 0, 1 or 2"));
    }
    // A header value cannot hold a CR or LF (async-nats panics on one).
    if cmd
        .content_type
        .as_deref()
        .is_some_and(|ct| !headers::is_plain_value(ct))
    {
        return Err(AppError::bad_request(
            "content_type must not contain control characters",
        ));
    }
    let mut detail = json!({ "qos": cmd.qos, "retain": cmd.retain, "ttl_secs": cmd.ttl_secs });
    let payload = match (cmd.payload, cmd.payload_base64) {
        (Some(_), Some(_)) => {
            return Err(AppError::bad_request(
                "send payload or payload_base64, not both",
            ));
        }
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => Bytes::from(
            crate::payload::decode(&b64)
                .map_err(|e| AppError::bad_request(format!("payload_base64: {e}")))?,
        ),
        (None, None) => Bytes::new(),
    };
    let payload_len = payload.len();
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::QOS, cmd.qos.to_string().as_str());
    h.insert(headers::RETAIN, if cmd.retain { "true" } else { "false" });
    h.insert(
        headers::SENT,
        headers::format_time(headers::now_ms()).as_str(),
    );
    // The subject carries the topic; the header only repeats it, and is
    // left out for a topic holding a control character (MQTT allows one,
    // a header value does not).
    if headers::is_plain_value(topic.as_str()) {
        h.insert(headers::TOPIC, topic.as_str());
    }
    if let Some(ttl) = cmd.ttl_secs {
        h.insert(headers::TTL, ttl.to_string().as_str());
    }
    if let Some(ct) = &cmd.content_type {
        h.insert(headers::CONTENT_TYPE, ct.as_str());
    }
    let subject = topic_to_subject(&site, Channel::Down, &topic);
    let ack = state
        .js
        .publish_with_headers(subject, h, payload)
        .await
        .map_err(AppError::unavailable)?
        .await
        .map_err(AppError::unavailable)?;
    detail["sequence"] = json!(ack.sequence);
    detail["payload_bytes"] = json!(payload_len);
    let target = format!("command:{site}/{}", topic.as_str());
    let act = Act::new(Action::CommandSend, &owner, target).detail(detail);
    origin.record(state, caller, act).await;
    Ok(Sent {
        stream: ack.stream,
        sequence: ack.sequence,
    })
}

/// The `command` operation of a WebSocket — the local `/v1/ws` and the AWS
/// WebSocket API's `command` route run this one function: `fields` is the
/// client's frame without its `op` (`id`, `site`, and the body of
/// `POST /v1/sites/{site}/commands`); the command goes through [`publish`]
/// (the route's permission check and headers) and the answer is
/// `{"op":"sent","id","stream","sequence"}`.
///
/// A refused command (403) is recorded as `command.send` with outcome
/// `denied` (the REST route's refusals are recorded by the audit
/// middleware).
///
/// # Errors
/// As [`publish`]; 400 also for a missing `site` or a field the commands
/// body does not have. The caller turns them into the socket's error frame.
pub async fn operation(
    state: &AppState,
    caller: &Caller,
    origin: &Origin,
    mut fields: Map<String, Value>,
) -> Result<Value, AppError> {
    let id = fields.remove("id");
    let site = match fields.remove("site") {
        Some(Value::String(s)) => s,
        _ => return Err(AppError::bad_request("a command needs a \"site\"")),
    };
    let cmd = serde_json::from_value::<Command>(Value::Object(fields))
        .map_err(|e| AppError::bad_request(e.to_string()))?;
    let topic = cmd.topic.clone();
    let sent = match publish(state, caller, origin, &site, cmd).await {
        Ok(sent) => sent,
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            let target = format!("command:{site}/{topic}");
            let act = Act::new(Action::CommandSend, "", target)
                .outcome(Outcome::Denied)
                .detail(json!({ "reason": e.message }));
            origin.record(state, caller, act).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    Ok(json!({ "op": "sent", "id": id, "stream": sent.stream, "sequence": sent.sequence }))
}
