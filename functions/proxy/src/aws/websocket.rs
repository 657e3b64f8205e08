//! The `websocket` function: API Gateway WebSocket API events, by route key.
//!
//! The API's route selection expression is `$request.body.op`, so the JSON
//! operations of the local `/v1/ws` protocol arrive on routes of the same
//! name; the function's answer (`body`) is the frame the client receives
//! (each route has a `$default` route response).
//!
//! | route | does | answers |
//! |---|---|---|
//! | `$connect` | verifies the token (`Authorization: Bearer …`, or the `access_token` / `token` query parameter for browsers) with the REST routes' [`ApiTrust`](crate::ApiTrust), records the connection | 200; 401 for a missing, invalid or revoked token, 403 for a token that can neither subscribe (no MQTT subscribe grant) nor send commands (no `commands:…:send`-shaped permission), 503 when the backbone or the registry is unavailable |
//! | `$disconnect` | removes the connection and its subscriptions | 200 |
//! | `subscribe` | `{"op":"subscribe","id","site","filter"}`: checks `Permissions::can_subscribe` (the edge's rule for an MQTT SUBSCRIBE) and that the caller's organisation owns the site ([`site::owned`], as every site door), and stores the subscription with the owner (the fan-out posts only while the site still has that owner) | `{"op":"subscribed","id"}` |
//! | `unsubscribe` | `{"op":"unsubscribe","id"}` | `{"op":"unsubscribed","id"}` |
//! | `command` | `{"op":"command","id","site","topic",…}`: the local socket's `command` operation ([`commands::operation`]: `commands:<site>:send`, then `PLANTD_COMMANDS` with the REST route's headers) | `{"op":"sent","id","stream","sequence"}` |
//! | `$default` | anything else | `{"op":"error","error":"bad_request",…}` |
//!
//! Failures of `subscribe`/`unsubscribe`/`command` answer `{"op":"error","id","error","message"}`
//! with the local codes (`bad_request`, `unauthorized`, `forbidden`,
//! `conflict`, `not_found`, `unavailable`).
//!
//! `subscribe` and `command` act for the claims `$connect` recorded, after
//! checking that the connection is registered, its token has not expired
//! and its token id is not in `plantd_revoked` (`unauthorized` otherwise):
//! the `fanout` process closes the sockets of a revoked token within
//! moments, and this check covers the moments.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::registry::{Interest, Registry, Subscribed};
use crate::audit::Origin;
use crate::auth::Caller;
use crate::routes::{commands, site};
use crate::{AppError, AppState};

/// The parts of an API Gateway WebSocket event this function reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsEvent {
    /// Route key, connection id and the rest of the context.
    pub request_context: WsContext,
    /// Handshake headers (`$connect` only).
    #[serde(default)]
    pub headers: Option<HashMap<String, String>>,
    /// Handshake query parameters (`$connect` only).
    #[serde(default)]
    pub query_string_parameters: Option<HashMap<String, String>>,
    /// The frame (`subscribe`, `unsubscribe`, `$default`).
    #[serde(default)]
    pub body: Option<String>,
    /// Whether `body` is base64 (a binary frame).
    #[serde(default)]
    pub is_base64_encoded: bool,
}

/// `requestContext` of a WebSocket event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsContext {
    /// `$connect`, `$disconnect`, `$default` or a custom route (`subscribe`).
    pub route_key: String,
    /// The API Gateway connection id.
    pub connection_id: String,
    /// API Gateway's request id, for the logs and the audit trail.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Who is calling, as API Gateway saw it.
    #[serde(default)]
    pub identity: Option<WsIdentity>,
}

/// `requestContext.identity` of a WebSocket event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsIdentity {
    /// The client's address.
    #[serde(default)]
    pub source_ip: Option<String>,
}

impl WsContext {
    /// Where the event came from, for the audit trail.
    pub fn origin(&self) -> Origin {
        Origin {
            source: self.identity.as_ref().and_then(|i| i.source_ip.clone()),
            request_id: self.request_id.clone(),
        }
    }
}

/// What the function returns to API Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WsResponse {
    /// For `$connect`, non-2xx refuses the handshake with that status.
    pub status_code: u16,
    /// The frame sent back to the client (routes with a route response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl WsResponse {
    fn status(status: StatusCode) -> Self {
        Self {
            status_code: status.as_u16(),
            body: None,
        }
    }

    fn frame(v: &Value) -> Self {
        Self {
            status_code: 200,
            body: Some(v.to_string()),
        }
    }
}

/// `subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    /// Always `subscribe` (it selected the route).
    #[serde(rename = "op")]
    _op: String,
    /// The client's name for the subscription.
    id: String,
    /// The site.
    site: String,
    /// An MQTT topic filter.
    filter: String,
}

/// `unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    /// Always `unsubscribe`.
    #[serde(rename = "op")]
    _op: String,
    /// The subscription's id.
    id: String,
}

/// `{"op":"error","id","error","message"}`.
fn error(id: Option<&str>, e: &AppError) -> Value {
    json!({ "op": "error", "id": id, "error": e.code, "message": e.message })
}

/// Handles WebSocket API events; cheap to share.
#[derive(Clone)]
pub struct Handler {
    /// The REST routes' state: its [`crate::ApiTrust`] verifies tokens (keys
    /// and the revocation list), its JetStream takes commands.
    state: AppState,
    /// The connection registry.
    registry: Registry,
    /// Most subscriptions one connection may hold.
    max_subscriptions: usize,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("registry", &self.registry)
            .field("max_subscriptions", &self.max_subscriptions)
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// A handler over the REST routes' `state` (token verification,
    /// commands), recording connections in `registry`, allowing
    /// `max_subscriptions` per connection.
    pub fn new(state: AppState, registry: Registry, max_subscriptions: usize) -> Self {
        Self {
            state,
            registry,
            max_subscriptions,
        }
    }

    /// Handles one raw event. Never fails: a malformed event answers 400.
    pub async fn handle_value(&self, event: Value) -> WsResponse {
        match serde_json::from_value::<WsEvent>(event) {
            Ok(event) => self.handle(event).await,
            Err(e) => {
                tracing::warn!(error = %e, "not an API Gateway WebSocket event");
                WsResponse::status(StatusCode::BAD_REQUEST)
            }
        }
    }

    /// Handles one event by its route key.
    pub async fn handle(&self, event: WsEvent) -> WsResponse {
        let ctx = &event.request_context;
        let conn = ctx.connection_id.as_str();
        let answer = match ctx.route_key.as_str() {
            "$connect" => self.connect(&event).await,
            "$disconnect" => {
                match self.registry.remove(conn).await {
                    Ok(items) => tracing::info!(connection = conn, items, "disconnected"),
                    Err(e) => {
                        tracing::warn!(connection = conn, error = %e, "cannot remove a closed connection (its TTL will)")
                    }
                }
                WsResponse::status(StatusCode::OK)
            }
            "subscribe" => {
                let (id, result) = self.subscribe(conn, event.body.as_deref()).await;
                WsResponse::frame(&result.unwrap_or_else(|e| error(id.as_deref(), &e)))
            }
            "unsubscribe" => {
                let (id, result) = self.unsubscribe(conn, event.body.as_deref()).await;
                WsResponse::frame(&result.unwrap_or_else(|e| error(id.as_deref(), &e)))
            }
            "command" => {
                let (id, result) = self
                    .command(conn, &event.request_context, event.body.as_deref())
                    .await;
                WsResponse::frame(&result.unwrap_or_else(|e| error(id.as_deref(), &e)))
            }
            _ => {
                let id = event
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<Value>(b).ok())
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
                let e = if event.is_base64_encoded {
                    AppError::bad_request("send JSON operations as text frames")
                } else {
                    AppError::bad_request("op must be subscribe, unsubscribe or command")
                };
                WsResponse::frame(&error(id.as_deref(), &e))
            }
        };
        tracing::info!(
            route = %ctx.route_key,
            connection = conn,
            request = ctx.request_id.as_deref().unwrap_or(""),
            status = answer.status_code,
            "websocket event"
        );
        answer
    }

    /// The token of the handshake: the bearer header, else the query.
    fn token(event: &WsEvent) -> Option<String> {
        let header = event.headers.as_ref().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| {
                    let (scheme, token) = v.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then(|| token.trim().to_owned())
                })
        });
        header.or_else(|| {
            let q = event.query_string_parameters.as_ref()?;
            q.get("access_token").or_else(|| q.get("token")).cloned()
        })
    }

    async fn connect(&self, event: &WsEvent) -> WsResponse {
        let conn = event.request_context.connection_id.as_str();
        let Some(token) = Self::token(event) else {
            tracing::info!(connection = conn, "refused: no token");
            return WsResponse::status(StatusCode::UNAUTHORIZED);
        };
        let claims = match self.state.trust.verify(&token).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(connection = conn, error = %e.message, "refused");
                return WsResponse::status(e.status);
            }
        };
        if claims.mqtt.values().all(|g| g.subscribe.is_empty())
            && !commands::may_send_somewhere(&claims)
        {
            tracing::info!(connection = conn, sub = %claims.sub, "refused: no MQTT subscribe grant and no command permission");
            return WsResponse::status(StatusCode::FORBIDDEN);
        }
        match self.registry.connect(conn, &claims).await {
            Ok(()) => {
                tracing::info!(connection = conn, sub = %claims.sub, org = %claims.org, "connected");
                WsResponse::status(StatusCode::OK)
            }
            Err(e) => {
                tracing::error!(connection = conn, error = %e, "cannot record the connection");
                WsResponse::status(StatusCode::SERVICE_UNAVAILABLE)
            }
        }
    }

    /// Parses the frame; the id (when there is one) for the error frame.
    fn parse<T: serde::de::DeserializeOwned>(
        body: Option<&str>,
    ) -> (Option<String>, Result<T, AppError>) {
        let Some(value) = body.and_then(|b| serde_json::from_str::<Value>(b).ok()) else {
            return (
                None,
                Err(AppError::bad_request("send a JSON object with an \"op\"")),
            );
        };
        let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
        let parsed =
            serde_json::from_value(value).map_err(|e| AppError::bad_request(e.to_string()));
        (id, parsed)
    }

    /// The registered, unexpired connection.
    async fn registered(&self, conn: &str) -> Result<super::registry::Connection, AppError> {
        let found = self
            .registry
            .connection(conn)
            .await
            .map_err(AppError::unavailable)?
            .ok_or_else(|| AppError::unauthorized("connection not registered; reconnect"))?;
        if found.expires <= plantd_shared::jwt::now_secs() {
            return Err(AppError::unauthorized(
                "token expired; reconnect with a fresh one",
            ));
        }
        Ok(found)
    }

    /// The caller of a registered, unexpired connection whose token is not
    /// revoked, with its permissions compiled from the recorded claims.
    async fn caller(&self, conn: &str) -> Result<Caller, AppError> {
        let found = self.registered(conn).await?;
        if self.state.trust.is_revoked(&found.claims.jti).await? {
            return Err(AppError::unauthorized("token has been revoked"));
        }
        Ok(Caller::new(found.claims))
    }

    /// `command`: the frame without its `op`, through the local socket's
    /// [`commands::operation`].
    async fn command(
        &self,
        conn: &str,
        context: &WsContext,
        body: Option<&str>,
    ) -> (Option<String>, Result<Value, AppError>) {
        let mut fields = match body.and_then(|b| serde_json::from_str::<Value>(b).ok()) {
            Some(Value::Object(fields)) => fields,
            _ => {
                return (
                    None,
                    Err(AppError::bad_request("send a JSON object with an \"op\"")),
                );
            }
        };
        let id = fields.get("id").and_then(Value::as_str).map(str::to_owned);
        fields.remove("op");
        let result = async {
            let caller = self.caller(conn).await?;
            let origin = context.origin();
            commands::operation(&self.state, &caller, &origin, fields).await
        }
        .await;
        (id, result)
    }

    async fn subscribe(
        &self,
        conn: &str,
        body: Option<&str>,
    ) -> (Option<String>, Result<Value, AppError>) {
        let (id, req) = Self::parse::<Subscribe>(body);
        let result = async {
            let req = req?;
            let site = site::site(&req.site)?;
            let filter = site::filter(&req.filter)?;
            let caller = self.caller(conn).await?;
            if !caller.perms.can_subscribe(&site, &filter) {
                return Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("no MQTT subscribe grant on {site} covers {filter}"),
                ));
            }
            let site_org = site::owned(&self.state, &caller, &site).await?.org;
            let stored = self
                .registry
                .subscribe(
                    conn,
                    &req.id,
                    &Interest {
                        site: &site,
                        site_org: &site_org,
                        filter: &filter,
                    },
                    caller.claims.exp,
                    self.max_subscriptions,
                )
                .await
                .map_err(AppError::unavailable)?;
            match stored {
                Subscribed::Added => Ok(json!({ "op": "subscribed", "id": req.id })),
                Subscribed::Exists => Err(AppError::conflict(format!(
                    "subscription {} exists; unsubscribe first",
                    req.id
                ))),
                Subscribed::TooMany => Err(AppError::bad_request(format!(
                    "at most {} subscriptions per socket",
                    self.max_subscriptions
                ))),
            }
        }
        .await;
        (id, result)
    }

    async fn unsubscribe(
        &self,
        conn: &str,
        body: Option<&str>,
    ) -> (Option<String>, Result<Value, AppError>) {
        let (id, req) = Self::parse::<Unsubscribe>(body);
        let result = async {
            let req = req?;
            self.registered(conn).await?;
            if self
                .registry
                .unsubscribe(conn, &req.id)
                .await
                .map_err(AppError::unavailable)?
            {
                Ok(json!({ "op": "unsubscribed", "id": req.id }))
            } else {
                Err(AppError::not_found(format!("subscription {}", req.id)))
            }
        }
        .await;
        (id, result)
    }
}
