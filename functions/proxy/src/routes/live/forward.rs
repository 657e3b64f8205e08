//! The subscriptions of a live socket: `subscribe` (NATS core, or the
//! stream from a sequence), `tail` (a site's log lines), the tasks that
//! forward their messages, and the bounded queue every frame goes through.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Message as Frame;
use futures::StreamExt as _;
use futures::stream::select_all;
use plantd_shared::subject::{Channel, Site, filter_to_subjects, subject_to_topic};
use plantd_shared::topic::{self, Filter};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{error, taken};
use crate::auth::Caller;
use crate::routes::resume::{self, Resume};
use crate::routes::{logs, site};
use crate::{AppError, AppState};

/// `subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Subscribe {
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

/// Subscribes on NATS, queues `subscribed`, then starts forwarding.
pub(super) async fn subscribe(
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

/// `tail` ([`logs::tail()`]): like `subscribe`, for a site's log lines,
/// parsed; ended with `unsubscribe`.
pub(super) async fn tail(
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
