//! The `websocket` function: API Gateway WebSocket API events, by route key.
//!
//! The API's route selection expression is `$request.body.op`, so the JSON
//! operations of the local `/v1/ws` protocol arrive on routes of the same
//! name; the function's answer (`body`) is the frame the client receives
//! (each route has a `$default` route response).
//!
//! | route | does | answers |
//! |---|---|---|
//! | `$connect` | verifies the token (`Authorization: Bearer …`, or the `access_token` / `token` query parameter) with the REST routes' [`ApiTrust`](crate::ApiTrust), records the connection; **without any token** accepts the socket unrecorded, to be authenticated by its first frame (`auth`) | 200; 401 for an invalid or revoked token, 403 for a token that can neither subscribe (no MQTT subscribe grant) nor send commands (no `commands:…:send`-shaped permission), 503 when the backbone or the registry is unavailable |
//! | `auth` | `{"op":"auth","token"}` on a socket opened without a token ([`socket_auth`], as the local `/v1/ws`): the same verification and refusals as `$connect`, then records the connection | `{"op":"authenticated","sub","org","expires"}`; `unauthorized`, `forbidden`, `conflict` (already authenticated) |
//! | `$disconnect` | removes the connection and its subscriptions | 200 |
//! | `subscribe` | `{"op":"subscribe","id","site","filter"}`: checks `Permissions::can_subscribe` (the edge's rule for an MQTT SUBSCRIBE) and that the caller's organisation owns the site ([`site::owned`], as every site door), and stores the subscription with the owner (the fan-out posts only while the site still has that owner). With `"sequenced": true` or `"from_sequence": n` ([`Resume`]) it is stored with its start in `PLANTD_TELEMETRY` and handed to one `fanout` process ([`sequenced`]), which posts the answer and then the messages with their sequences | `{"op":"subscribed","id"}` (sequenced: posted by the fan-out, with `from_sequence` and `missed`; the route response is empty) |
//! | `unsubscribe` | `{"op":"unsubscribe","id"}` (a sequenced one: its fan-out process stops first) | `{"op":"unsubscribed","id"}` |
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
use super::sequenced::{self, Which};
use crate::audit::Origin;
use crate::auth::Caller;
use crate::routes::resume::{self, Resume};
use crate::routes::{commands, site, socket_auth};
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

    /// A route response without a frame (the answer was posted).
    fn empty() -> Self {
        Self::status(StatusCode::OK)
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
    /// Deliver from `PLANTD_TELEMETRY` starting at this stream sequence.
    #[serde(default)]
    from_sequence: Option<u64>,
    /// Deliver from `PLANTD_TELEMETRY` from the next message on.
    #[serde(default)]
    sequenced: bool,
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
            "auth" => match self.auth(conn, event.body.as_deref()).await {
                Ok(answer) => WsResponse::frame(&answer),
                Err(e) => WsResponse::frame(&error(None, &e)),
            },
            "subscribe" => {
                let (id, result) = self.subscribe(conn, event.body.as_deref()).await;
                match result {
                    Ok(Some(answer)) => WsResponse::frame(&answer),
                    Ok(None) => WsResponse::empty(),
                    Err(e) => WsResponse::frame(&error(id.as_deref(), &e)),
                }
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
                    AppError::bad_request("op must be auth, subscribe, unsubscribe or command")
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
            // Nothing recorded: every operation but `auth` answers
            // `unauthorized` until the first frame authenticates it.
            tracing::info!(
                connection = conn,
                "connected without a token; awaiting auth"
            );
            return WsResponse::status(StatusCode::OK);
        };
        match self.record(conn, &token).await {
            Ok(_) => WsResponse::status(StatusCode::OK),
            Err(e) => WsResponse::status(e.status),
        }
    }

    /// Verifies `token` and records the connection for its claims.
    ///
    /// # Errors
    /// 401 (`unauthorized`) for an invalid, expired or revoked token; 403
    /// (`forbidden`) for one that can neither subscribe nor send commands;
    /// 503 (`unavailable`) when the backbone or the registry is.
    async fn record(
        &self,
        conn: &str,
        token: &str,
    ) -> Result<plantd_shared::claims::Claims, AppError> {
        let claims = self.state.trust.verify(token).await.inspect_err(|e| {
            tracing::info!(connection = conn, error = %e.message, "refused");
        })?;
        if claims.mqtt.values().all(|g| g.subscribe.is_empty())
            && !commands::may_send_somewhere(&claims)
        {
            tracing::info!(connection = conn, sub = %claims.sub, "refused: no MQTT subscribe grant and no command permission");
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token can neither subscribe (no MQTT subscribe grant) nor send commands",
            ));
        }
        self.registry.connect(conn, &claims).await.map_err(|e| {
            tracing::error!(connection = conn, error = %e, "cannot record the connection");
            AppError::unavailable(e)
        })?;
        tracing::info!(connection = conn, sub = %claims.sub, org = %claims.org, "connected");
        Ok(claims)
    }

    /// `auth`: the first frame of a socket opened without a token.
    async fn auth(&self, conn: &str, body: Option<&str>) -> Result<Value, AppError> {
        let token = socket_auth::parse(body.unwrap_or_default())?;
        if self
            .registry
            .connection(conn)
            .await
            .map_err(AppError::unavailable)?
            .is_some()
        {
            return Err(AppError::conflict(
                "this socket is authenticated already; open a new one for another token",
            ));
        }
        let claims = self.record(conn, &token).await?;
        Ok(socket_auth::authenticated(&claims))
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
            .ok_or_else(|| {
                AppError::unauthorized(
                    "not authenticated: send {\"op\":\"auth\",\"token\":…} first, or reconnect",
                )
            })?;
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

    /// `subscribe`: the answer frame, or `None` when a `fanout` process
    /// posted it (a sequenced subscription).
    async fn subscribe(
        &self,
        conn: &str,
        body: Option<&str>,
    ) -> (Option<String>, Result<Option<Value>, AppError>) {
        let (id, req) = Self::parse::<Subscribe>(body);
        let result = async {
            let req = req?;
            let site = site::site(&req.site)?;
            let filter = site::filter(&req.filter)?;
            let resume = Resume::of(req.from_sequence, req.sequenced)?;
            let caller = self.caller(conn).await?;
            if !caller.perms.can_subscribe(&site, &filter) {
                return Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("no MQTT subscribe grant on {site} covers {filter}"),
                ));
            }
            let site_org = site::owned(&self.state, &caller, &site).await?.org;
            let interest = Interest {
                site: &site,
                site_org: &site_org,
                filter: &filter,
            };
            let start = match resume {
                Resume::Live => None,
                from => Some(resume::start(&self.state.js, from).await?),
            };
            let stored = match start {
                None => {
                    self.registry
                        .subscribe(
                            conn,
                            &req.id,
                            &interest,
                            caller.claims.exp,
                            self.max_subscriptions,
                        )
                        .await
                }
                Some(start) => {
                    self.registry
                        .subscribe_sequenced(
                            conn,
                            &req.id,
                            &interest,
                            caller.claims.exp,
                            self.max_subscriptions,
                            start,
                        )
                        .await
                }
            }
            .map_err(AppError::unavailable)?;
            match stored {
                Subscribed::Added if start.is_some() => {
                    self.hand_over(conn, &req.id).await?;
                    Ok(None)
                }
                Subscribed::Added => Ok(Some(json!({ "op": "subscribed", "id": req.id }))),
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

    /// Hands stored sequenced subscription `id` to a `fanout` process,
    /// which posts `subscribed` and the messages; when none takes it, the
    /// subscription is removed again.
    ///
    /// # Errors
    /// `unavailable` when no process took it.
    async fn hand_over(&self, conn: &str, id: &str) -> Result<(), AppError> {
        let which = Which {
            connection: conn.to_owned(),
            id: id.to_owned(),
        };
        let Err(e) = sequenced::request_start(&self.state.client, &which).await else {
            return Ok(());
        };
        tracing::warn!(connection = conn, id, error = %e.message, "sequenced subscription not taken");
        match self.registry.unsubscribe_owned(conn, id).await {
            // A process took it after all but answered too late: stop it.
            Ok(Some(Some(owner))) => {
                sequenced::request_stop(&self.state.client, &owner, &which).await;
            }
            Ok(_) => {}
            Err(r) => {
                tracing::warn!(connection = conn, id, error = %r, "cannot remove a sequenced subscription nobody took")
            }
        }
        Err(e)
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
            match self
                .registry
                .unsubscribe_owned(conn, &req.id)
                .await
                .map_err(AppError::unavailable)?
            {
                None => Err(AppError::not_found(format!("subscription {}", req.id))),
                Some(owner) => {
                    // A sequenced subscription: its process stops (after its
                    // last post) before the answer, so nothing follows it.
                    if let Some(owner) = owner {
                        let which = Which {
                            connection: conn.to_owned(),
                            id: req.id.clone(),
                        };
                        sequenced::request_stop(&self.state.client, &owner, &which).await;
                    }
                    Ok(json!({ "op": "unsubscribed", "id": req.id }))
                }
            }
        }
        .await;
        (id, result)
    }
}
