//! `GET /v1/ws`: live data over a WebSocket.
//!
//! The caller authenticates on the handshake (bearer header, or
//! `?access_token=`), or — with neither — by its first frame,
//! `{"op":"auth","token"}` → `{"op":"authenticated",…}` ([`socket_auth`]:
//! browsers, which cannot set headers and should not put tokens in URLs),
//! and then speaks JSON text frames:
//!
//! * `{"op":"subscribe","id","site","filter"}` → `{"op":"subscribed","id"}`,
//!   then `{"op":"message","id","site","topic","payload"|"payload_base64","headers"}`
//!   for every message the site's edge publishes on a matching topic (NATS
//!   core `plantd.<site>.up.…`). The filter must be covered by one of the
//!   caller's MQTT subscribe grants for the site — the check the edge makes
//!   on an MQTT SUBSCRIBE ([`Permissions::can_subscribe`]) — and the site
//!   must belong to the caller's organisation
//!   ([`site::owned`](crate::routes::site::owned): 403 another
//!   organisation's, 404 unregistered).
//!   With `"from_sequence": n` (or `"sequenced": true`) the messages come
//!   from the stream `PLANTD_TELEMETRY` instead — an ordered consumer
//!   starting at sequence `n` (or at the next message) — and each carries
//!   its `sequence` and stored `time`: a client that reconnects passes its
//!   last sequence + 1 and neither misses nor repeats a message the stream
//!   holds ([`Resume`](crate::routes::resume::Resume), shared with the AWS WebSocket API).
//! * `{"op":"unsubscribe","id"}` → `{"op":"unsubscribed","id"}`; nothing
//!   more is sent for that id.
//! * `{"op":"command","id","site","topic","payload",…}` (the body of
//!   `POST /v1/sites/{site}/commands`) → `{"op":"sent","id","stream","sequence"}`.
//! * `{"op":"tail","id","site","filter"?,"source"?,"level"?}` → `{"op":"tailing","id"}`,
//!   then `{"op":"log","id","record":{…}}` for every line of the site's
//!   logs that passes (parsed as `GET /v1/logs` shows them; the filter in
//!   the log query language), until `unsubscribe` ([`logs::tail()`]).
//! * Any failure → `{"op":"error","id","error","message"}` with the codes of
//!   the HTTP API.
//!
//! Every frame to the client goes through one bounded queue; a client that
//! lets it fill (it reads slower than its subscriptions produce) is closed
//! with code 1008 rather than buffered without bound. A sequenced
//! subscription is the exception: its messages are in the stream, so its
//! forwarder reads on only while the queue has more than half its room free
//! (`room`) — a replay of a long backlog runs at the socket's pace however
//! slow the client reads, and leaves room for live frames. The socket is also
//! closed (1008) when the token expires, and (1008, `token revoked`) within
//! moments of its token id appearing in `plantd_revoked` (one shared watch,
//! [`ApiTrust::revocations`](crate::auth::ApiTrust::revocations)).
//!
//! Ownership: the connection's future owns a writer task and one forwarding
//! task per subscription, and awaits all of them before it returns.
//!
//! [`Permissions::can_subscribe`]: plantd_shared::claims::Permissions::can_subscribe

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse as _, Response};
use futures::stream::SplitSink;
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::Origin;
use crate::auth::{Caller, Revocation, SocketCaller};
use crate::routes::{commands, logs, socket_auth};
use crate::{AppError, AppState};

mod forward;

use forward::{Subscribe, subscribe, tail};
pub(crate) use forward::{enqueue, room};

/// Close code for a client that fell behind, and for an expired or
/// revoked token (RFC 6455 1008, policy violation).
pub const CLOSE_POLICY: u16 = 1008;

/// Largest frame a client may send: a command with the largest body the
/// HTTP route accepts, plus its envelope.
pub const MAX_FRAME: usize = super::MAX_BODY + 4096;

/// How long a closing socket may take to flush its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// `GET /v1/ws`: authenticates, then upgrades; without a token on the
/// handshake, upgrades and authenticates the first frame
/// ([`socket_auth::first_frame`]).
///
/// # Errors
/// 401 before the upgrade for an invalid or revoked token.
#[utoipa::path(get, path = "/v1/ws", tag = "live",
    params(("access_token" = Option<String>, Query, description = "The bearer token, for browsers (which cannot set headers on the handshake)")),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; JSON text frames as described in docs/api.md"),
        (status = 400, description = "Malformed or invalid request", body = crate::openapi::ErrorBody),
        (status = 401, description = "Missing, invalid or revoked token", body = crate::openapi::ErrorBody),
        (status = 503, description = "NATS or JetStream unavailable, or no responder", body = crate::openapi::ErrorBody)))]
pub async fn socket(
    State(state): State<AppState>,
    caller: Result<SocketCaller, AppError>,
    headers: HeaderMap,
    uri: Uri,
    origin: Origin,
    upgrade: WebSocketUpgrade,
) -> Response {
    let upgrade = upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME);
    match caller {
        Ok(SocketCaller(caller)) => {
            upgrade.on_upgrade(move |ws| connection(ws, state, caller, origin))
        }
        Err(e) if socket_auth::offered(&headers, &uri) => e.into_response(),
        Err(_) => upgrade.on_upgrade(move |ws| async move {
            if let Some((ws, caller)) = socket_auth::first_frame(ws, &state).await {
                connection(ws, state, caller, origin).await;
            }
        }),
    }
}

/// `unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    /// The subscription's id.
    id: String,
}

/// Why the connection is ending.
enum End {
    /// The client closed or went away: nothing more to say.
    Gone,
    /// We close it, with this frame.
    Close(CloseFrame),
}

fn close(reason: &'static str) -> End {
    End::Close(CloseFrame {
        code: CLOSE_POLICY,
        reason: reason.into(),
    })
}

/// One connection, from upgrade to close.
/// `origin` is the handshake's: audit records of the connection's commands
/// carry its source address and request id.
async fn connection(ws: WebSocket, state: AppState, caller: Caller, origin: Origin) {
    let (sink, mut incoming) = ws.split();
    let (out, queue) = mpsc::channel::<Frame>(state.settings.ws_send_queue.max(1));
    let (closing, closed) = oneshot::channel();
    // Told after each frame written: replays wait on it for room.
    let sent = Arc::new(Notify::new());
    let writer = tokio::spawn(write(sink, queue, closed, sent.clone()));
    // Cancelled by whoever finds the queue full.
    let slow = CancellationToken::new();
    let mut subs: HashMap<String, JoinHandle<()>> = HashMap::new();
    let left = caller
        .claims
        .exp
        .saturating_sub(plantd_shared::jwt::now_secs());
    let expiry = tokio::time::sleep(Duration::from_secs(left));
    tokio::pin!(expiry);
    // Subscribed before the first look-up, so a revocation after the
    // handshake's check is either found by the look-up or heard here.
    let mut revocations = state.trust.revocations(&state.js);
    let mut watching = true;
    let mut recheck = true;

    let end = loop {
        if std::mem::take(&mut recheck) {
            match state.trust.is_revoked(&caller.claims.jti).await {
                Ok(true) => break close("token revoked"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e.message, "cannot check the socket's token for revocation")
                }
            }
        }
        tokio::select! {
            () = slow.cancelled() => break close("slow consumer: send queue full"),
            () = &mut expiry => break close("token expired"),
            heard = revocations.recv(), if watching => match heard {
                Ok(Revocation::Revoked(jti)) if *jti == *caller.claims.jti => break close("token revoked"),
                Ok(Revocation::Revoked(_)) => {}
                Ok(Revocation::Recheck) | Err(broadcast::error::RecvError::Lagged(_)) => recheck = true,
                Err(broadcast::error::RecvError::Closed) => watching = false,
            },
            frame = incoming.next() => {
                let reply = match frame {
                    Some(Ok(Frame::Text(text))) => {
                        let ctx = (&state, &caller, &origin);
                        operation(ctx, &mut subs, (&out, &sent), &slow, text.as_str()).await
                    }
                    Some(Ok(Frame::Binary(_))) => Some(error(
                        None,
                        &AppError::bad_request("send JSON operations as text frames"),
                    )),
                    Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => None,
                    Some(Ok(Frame::Close(_)) | Err(_)) | None => break End::Gone,
                };
                if let Some(reply) = reply
                    && out.try_send(Frame::Text(reply.to_string().into())).is_err()
                {
                    break close("slow consumer: send queue full");
                }
            }
        }
    };
    for (_, task) in subs.drain() {
        task.abort();
        let _ = task.await;
    }
    let _ = closing.send(match end {
        End::Gone => None,
        End::Close(frame) => Some(frame),
    });
    drop(out);
    let _ = writer.await;
}

/// Sends queued frames until told to close (then sends the close frame,
/// or just closes the sink) or the queue ends; `sent` is told after each.
async fn write(
    mut sink: SplitSink<WebSocket, Frame>,
    mut queue: mpsc::Receiver<Frame>,
    mut closed: oneshot::Receiver<Option<CloseFrame>>,
    sent: Arc<Notify>,
) {
    let frame = loop {
        tokio::select! {
            biased;
            frame = &mut closed => break frame.ok().flatten(),
            next = queue.recv() => {
                let Some(next) = next else { break None };
                tokio::select! {
                    written = sink.send(next) => if written.is_err() { return },
                    frame = &mut closed => break frame.ok().flatten(),
                }
                sent.notify_waiters();
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if let Some(frame) = frame {
            let _ = sink.send(Frame::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    })
    .await;
}

/// `{"op":"error","id","error","message"}`.
pub(crate) fn error(id: Option<&str>, e: &AppError) -> Value {
    json!({ "op": "error", "id": id, "error": e.code, "message": e.message })
}

/// Runs one client operation; the reply to queue, if any.
async fn operation(
    (state, caller, origin): (&AppState, &Caller, &Origin),
    subs: &mut HashMap<String, JoinHandle<()>>,
    (out, sent): (&mpsc::Sender<Frame>, &Arc<Notify>),
    slow: &CancellationToken,
    text: &str,
) -> Option<Value> {
    let mut fields = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) | Err(_) => {
            return Some(error(
                None,
                &AppError::bad_request("send a JSON object with an \"op\""),
            ));
        }
    };
    let id = fields.get("id").and_then(Value::as_str).map(str::to_owned);
    let op = fields.remove("op");
    let result = match op.as_ref().and_then(Value::as_str) {
        Some("subscribe") => match parse::<Subscribe>(fields) {
            // `subscribe` queues its own answer, ahead of the first message.
            Ok(s) => match subscribe(state, caller, subs, (out, sent), slow, s).await {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Some("unsubscribe") => match parse::<Unsubscribe>(fields) {
            Ok(u) => unsubscribe(subs, u).await,
            Err(e) => Err(e),
        },
        Some("command") => commands::operation(state, caller, origin, fields).await,
        Some("tail") => match parse::<logs::Tail>(fields) {
            Ok(t) => match tail(state, caller, subs, (out, sent), slow, t).await {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        _ => Err(AppError::bad_request(
            "op must be subscribe, unsubscribe, command or tail",
        )),
    };
    Some(result.unwrap_or_else(|e| error(id.as_deref(), &e)))
}

fn parse<T: serde::de::DeserializeOwned>(fields: Map<String, Value>) -> Result<T, AppError> {
    serde_json::from_value(Value::Object(fields)).map_err(|e| AppError::bad_request(e.to_string()))
}

async fn unsubscribe(
    subs: &mut HashMap<String, JoinHandle<()>>,
    req: Unsubscribe,
) -> Result<Value, AppError> {
    let task = subs
        .remove(&req.id)
        .ok_or_else(|| AppError::not_found(format!("subscription {}", req.id)))?;
    // Awaited, so nothing for this id is queued after the answer.
    task.abort();
    let _ = task.await;
    Ok(json!({ "op": "unsubscribed", "id": req.id }))
}

/// Whether subscription `id` is live on this socket. Subscriptions that
/// ended on their own (an `unavailable` error frame: the client is told to
/// subscribe again from its last sequence) are dropped first, so that id
/// can be used again without an `unsubscribe` and they do not count
/// against the per-socket limit.
fn taken(subs: &mut HashMap<String, JoinHandle<()>>, id: &str) -> bool {
    subs.retain(|_, task| !task.is_finished());
    subs.contains_key(id)
}

#[cfg(test)]
mod taken_tests {
    use super::*;

    /// A subscription whose task ended (it sent `unavailable`) frees its
    /// id and its place: subscribing again from the last sequence is not
    /// a conflict. A live one still is.
    #[tokio::test]
    async fn an_ended_subscription_frees_its_id() {
        let mut subs = HashMap::new();
        let ended = tokio::spawn(async {});
        let live = tokio::spawn(std::future::pending::<()>());
        while !ended.is_finished() {
            tokio::task::yield_now().await;
        }
        subs.insert("a".to_owned(), ended);
        subs.insert("b".to_owned(), live);
        assert!(!taken(&mut subs, "a"), "the ended one's id is free");
        assert!(taken(&mut subs, "b"), "the live one's id is taken");
        assert_eq!(subs.len(), 1, "only the live one counts");
        for (_, t) in subs.drain() {
            t.abort();
        }
    }
}
