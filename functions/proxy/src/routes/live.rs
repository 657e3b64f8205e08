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
//!   ([`site::owned`]: 403 another
//!   organisation's, 404 unregistered).
//!   With `"from_sequence": n` (or `"sequenced": true`) the messages come
//!   from the stream `PLANTD_TELEMETRY` instead — an ordered consumer
//!   starting at sequence `n` (or at the next message) — and each carries
//!   its `sequence` and stored `time`: a client that reconnects passes its
//!   last sequence + 1 and neither misses nor repeats a message the stream
//!   holds ([`Resume`], shared with the AWS WebSocket API).
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
use futures::stream::{SplitSink, select_all};
use futures::{SinkExt as _, StreamExt as _};
use plantd_shared::subject::{Channel, Site, filter_to_subjects, subject_to_topic};
use plantd_shared::topic::{self, Filter};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::Origin;
use crate::auth::{Caller, Revocation, SocketCaller};
use crate::routes::resume::{self, Resume};
use crate::routes::{commands, logs, site, socket_auth};
use crate::{AppError, AppState};

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

/// `subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    /// The client's name for this subscription, echoed on every message.
    id: String,
    /// The site.
    site: String,
    /// An MQTT topic filter.
    filter: String,
    /// Deliver from `PLANTD_TELEMETRY` starting at this stream sequence
    /// (≥ 1), each message with its sequence.
    #[serde(default)]
    from_sequence: Option<u64>,
    /// Deliver from `PLANTD_TELEMETRY` from the next message on, each
    /// message with its sequence (implied by `from_sequence`).
    #[serde(default)]
    sequenced: bool,
}

impl Subscribe {
    fn resume(&self) -> Result<Resume, AppError> {
        Resume::of(self.from_sequence, self.sequenced)
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

/// Subscribes on NATS, queues `subscribed`, then starts forwarding.
async fn subscribe(
    state: &AppState,
    caller: &Caller,
    subs: &mut HashMap<String, JoinHandle<()>>,
    (out, sent): (&mpsc::Sender<Frame>, &Arc<Notify>),
    slow: &CancellationToken,
    req: Subscribe,
) -> Result<(), AppError> {
    let site = site::site(&req.site)?;
    let filter = site::filter(&req.filter)?;
    if !caller.perms.can_subscribe(&site, &filter) {
        return Err(AppError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("no MQTT subscribe grant on {site} covers {filter}"),
        ));
    }
    let resume = req.resume()?;
    site::owned(state, caller, &site).await?;
    if taken(subs, &req.id) {
        return Err(AppError::conflict(format!(
            "subscription {} exists; unsubscribe first",
            req.id
        )));
    }
    if subs.len() >= state.settings.ws_max_subscriptions {
        return Err(AppError::bad_request(format!(
            "at most {} subscriptions per socket",
            state.settings.ws_max_subscriptions
        )));
    }
    if resume != Resume::Live {
        let (ack, messages) = sequenced(state, &site, &filter, &req.id, resume).await?;
        if out.try_send(Frame::Text(ack.to_string().into())).is_err() {
            slow.cancel();
            return Ok(());
        }
        let task = tokio::spawn(forward_stored(
            req.id.clone(),
            site,
            filter,
            messages,
            (out.clone(), sent.clone()),
            slow.clone(),
        ));
        subs.insert(req.id, task);
        return Ok(());
    }
    let mut nats = Vec::new();
    for subject in filter_to_subjects(&site, Channel::Up, &filter) {
        nats.push(
            state
                .client
                .subscribe(subject)
                .await
                .map_err(AppError::unavailable)?,
        );
    }
    // The SUBs are on the wire before the client hears "subscribed", and
    // "subscribed" is queued before any message for the id: messages that
    // arrive meanwhile wait in the NATS subscriptions.
    state.client.flush().await.map_err(AppError::unavailable)?;
    let ack = json!({ "op": "subscribed", "id": req.id });
    if out.try_send(Frame::Text(ack.to_string().into())).is_err() {
        slow.cancel();
        return Ok(());
    }
    let task = tokio::spawn(forward(
        req.id.clone(),
        site,
        filter,
        nats,
        out.clone(),
        slow.clone(),
    ));
    subs.insert(req.id, task);
    Ok(())
}

/// Creates the ordered consumer of a sequenced subscription; its
/// `subscribed` answer (`from_sequence`: where delivery starts; with
/// `missed`: the stream no longer holds the sequences the client asked
/// for, retention dropped them) and its messages.
async fn sequenced(
    state: &AppState,
    site: &Site,
    filter: &Filter,
    id: &str,
    resume: Resume,
) -> Result<(Value, async_nats::jetstream::consumer::push::Ordered), AppError> {
    let start = resume::start(&state.js, resume).await?;
    let messages = resume::consumer(
        &state.js,
        state.client.new_inbox(),
        site,
        filter,
        start.sequence,
    )
    .await?;
    let mut ack = json!({ "op": "subscribed", "id": id, "from_sequence": start.sequence });
    if start.missed {
        ack["missed"] = Value::Bool(true);
    }
    Ok((ack, messages))
}

/// Like [`forward`], for a sequenced subscription: each message with its
/// stream `sequence` and stored `time`, read from the stream only while
/// the queue has [`room`]. A consumer error ends the subscription with an
/// `error` frame (`unavailable`); the client subscribes again from its
/// last sequence + 1.
async fn forward_stored(
    id: String,
    site: Site,
    filter: Filter,
    mut messages: async_nats::jetstream::consumer::push::Ordered,
    (out, sent): (mpsc::Sender<Frame>, Arc<Notify>),
    slow: CancellationToken,
) {
    loop {
        room(&out, &sent).await;
        let Some(next) = messages.next().await else {
            return;
        };
        let m = match next {
            Ok(m) => m,
            Err(e) => {
                enqueue(&out, &slow, &error(Some(&id), &AppError::unavailable(e)));
                return;
            }
        };
        let Some(mut frame) = matching_frame(&id, &site, &filter, &m.message) else {
            continue;
        };
        if let Some((sequence, time)) = resume::position(&m) {
            frame["sequence"] = json!(sequence);
            frame["time"] = json!(time);
        }
        if !enqueue(&out, &slow, &frame) {
            return;
        }
    }
}

/// Returns once the queue has more than half its room free (or is
/// closed), waking when the writer has sent a frame: a sequenced
/// subscription's messages wait in the stream, not in the queue, so a slow
/// reader slows its replay down instead of being closed as a slow consumer.
pub(crate) async fn room(out: &mpsc::Sender<Frame>, sent: &Notify) {
    let half = out.max_capacity() / 2;
    loop {
        let written = sent.notified();
        tokio::pin!(written);
        written.as_mut().enable();
        if out.capacity() > half || out.is_closed() {
            return;
        }
        written.await;
    }
}

/// `tail` ([`logs::tail`]): like `subscribe`, for a site's log lines,
/// parsed; ended with `unsubscribe`.
async fn tail(
    state: &AppState,
    caller: &Caller,
    subs: &mut HashMap<String, JoinHandle<()>>,
    (out, sent): (&mpsc::Sender<Frame>, &Arc<Notify>),
    slow: &CancellationToken,
    req: logs::Tail,
) -> Result<(), AppError> {
    if taken(subs, &req.id) {
        return Err(AppError::conflict(format!(
            "subscription {} exists; unsubscribe first",
            req.id
        )));
    }
    if subs.len() >= state.settings.ws_max_subscriptions {
        return Err(AppError::bad_request(format!(
            "at most {} subscriptions per socket",
            state.settings.ws_max_subscriptions
        )));
    }
    let id = req.id.clone();
    // The task starts after the answer is queued, so "tailing" comes first.
    let (gate, opened) = oneshot::channel::<()>();
    let (ack, task) = logs::tail(
        state,
        caller,
        req,
        (out.clone(), sent.clone()),
        slow.clone(),
        opened,
    )
    .await?;
    if out.try_send(Frame::Text(ack.to_string().into())).is_err() {
        task.abort();
        slow.cancel();
        return Ok(());
    }
    let _ = gate.send(());
    subs.insert(id, task);
    Ok(())
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

/// Forwards one subscription's messages into the send queue until
/// aborted, the queue closes, or the queue is full (then cancels `slow`).
async fn forward(
    id: String,
    site: Site,
    filter: Filter,
    nats: Vec<async_nats::Subscriber>,
    out: mpsc::Sender<Frame>,
    slow: CancellationToken,
) {
    let mut messages = select_all(nats);
    while let Some(m) = messages.next().await {
        if let Some(frame) = matching_frame(&id, &site, &filter, &m)
            && !enqueue(&out, &slow, &frame)
        {
            return;
        }
    }
}

/// The `message` frame for `m` when its subject is `site`'s and its topic
/// matches `filter` (NATS wildcards know nothing of MQTT's `$` rule; it is
/// applied here).
fn matching_frame(
    id: &str,
    site: &Site,
    filter: &Filter,
    m: &async_nats::Message,
) -> Option<Value> {
    let parsed = subject_to_topic(&m.subject).ok()?;
    if parsed.site != *site || !topic::matches(filter.as_str(), parsed.topic.as_str()) {
        return None;
    }
    Some(live_message(id, site, parsed.topic.as_str(), m))
}

/// Queues `frame`; false when the subscription must stop: the queue is
/// closed, or full (then `slow` is cancelled and the socket closes).
pub(crate) fn enqueue(out: &mpsc::Sender<Frame>, slow: &CancellationToken, frame: &Value) -> bool {
    match out.try_send(Frame::Text(frame.to_string().into())) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            slow.cancel();
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// `{"op":"message","id","site","topic","payload"|"payload_base64","headers"}`.
fn live_message(id: &str, site: &Site, topic: &str, m: &async_nats::Message) -> Value {
    let mut v = json!({ "op": "message", "id": id, "site": site.as_str(), "topic": topic });
    match std::str::from_utf8(&m.payload) {
        Ok(text) => v["payload"] = Value::String(text.to_owned()),
        Err(_) => v["payload_base64"] = Value::String(crate::payload::encode(&m.payload)),
    }
    let mut headers = Map::new();
    if let Some(h) = &m.headers {
        for (name, values) in h.iter() {
            if let Some(first) = values.first() {
                headers.insert(name.to_string(), Value::String(first.as_str().to_owned()));
            }
        }
    }
    v["headers"] = Value::Object(headers);
    v
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
