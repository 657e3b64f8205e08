//! Sequenced subscriptions on AWS: resume without a gap, as locally.
//!
//! Locally a sequenced subscription (`"sequenced": true` /
//! `"from_sequence": n`) is an ordered consumer on `PLANTD_TELEMETRY` owned
//! by the socket ([`crate::routes::live`]). On AWS nothing holds the socket
//! but API Gateway, and the per-message fan-out ([`super::fanout`]) sees
//! NATS core messages, which carry no stream sequence, spread over its
//! replicas. So a sequenced subscription is handed to **one** `fanout`
//! process, which runs the same ordered consumer
//! ([`crate::routes::resume::consumer`]) and posts its messages, each with
//! its `sequence` and stored `time`, in stream order:
//!
//! 1. The `websocket` function authorises the `subscribe` (the same checks
//!    as a live one), resolves the start ([`crate::routes::resume::start`],
//!    `missed` included) and stores the subscription with it
//!    ([`Registry::subscribe_sequenced`]: not in the site index, so the
//!    per-message fan-out never posts to it).
//! 2. It asks the `fanout` processes on [`START_SUBJECT`] (a NATS request
//!    to their queue group: exactly one answers) with only the connection
//!    and the subscription id — the process reads everything else from the
//!    registry, so a request names nothing it could widen.
//! 3. That process [`claim`](Registry::claim)s the item (a conditional
//!    write: one owner, ever), creates the consumer, **posts
//!    `{"op":"subscribed","id","from_sequence"[,"missed"]}` itself** — so,
//!    as locally, the answer comes before the first message — and answers
//!    the request; the function's route response is then empty. No answer
//!    within [`START_TIMEOUT`]: the function removes the item and answers
//!    `unavailable`.
//! 4. The process posts every message (the site's current owner checked as
//!    the fan-out does) until: `unsubscribe` (the function deletes the item
//!    and asks its owner on [`stop_subject`] to stop; the owner answers
//!    after its last post, so `unsubscribed` comes after it), the
//!    connection is gone (410: removed), the token expires (closed and
//!    removed), the item disappears (checked every [`RECHECK`]), or a
//!    consumer failure (an `error` frame with `unavailable`, the item
//!    removed: subscribe again from the last sequence + 1, as locally).
//!
//! Nothing is skipped silently: a message too large for API Gateway
//! ([`MAX_POST`]) is posted without its payload and with `"too_large":
//! <bytes>` (the history API has it); a post that fails other than with
//! 410 is retried; if it keeps failing the process **closes the connection**, and
//! the client reconnects and resumes from its last sequence + 1. The same
//! when a process stops (it closes the connections of every subscription it
//! delivers, [`Sequencer::shutdown`]) or dies: every process answers on its
//! [`alive_subject`], and each one looks for subscriptions owned by a
//! process that does not answer every [`RECHECK`] ([`Sequencer::adopt_orphans`])
//! and closes their connections. A client therefore sees every message the
//! stream holds exactly once, in order, across any of these.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt as _;
use plantd_shared::subject::{Site, subject_to_topic};
use plantd_shared::topic::{self, Filter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AwsError;
use super::fanout::{Fanout, Posted, QUEUE_GROUP, frame};
use super::registry::{Registry, Sequenced};
use crate::routes::resume;

/// Where the `websocket` function asks a `fanout` process to take a
/// sequenced subscription (a request to queue group [`QUEUE_GROUP`]).
pub const START_SUBJECT: &str = "plantd_fanout.sequenced.start";

/// How long the `websocket` function waits for a process to take one.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a delivering process checks that its subscriptions still
/// exist, and every process looks for subscriptions of a dead one.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Posts of one message tried before the connection is closed.
const POST_ATTEMPTS: u32 = 4;

/// The largest message API Gateway posts to a WebSocket client (128 KB).
pub const MAX_POST: usize = 128 * 1024;

/// Where the process `owner` is told to stop a subscription it delivers.
pub fn stop_subject(owner: &str) -> String {
    format!("plantd_fanout.sequenced.stop.{owner}")
}

/// Where the process `owner` answers while it runs.
pub fn alive_subject(owner: &str) -> String {
    format!("plantd_fanout.alive.{owner}")
}

/// A request on [`START_SUBJECT`] or a [`stop_subject`]: which
/// subscription; everything else is read from the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Which {
    /// The API Gateway connection id.
    pub connection: String,
    /// The subscription id.
    pub id: String,
}

/// The answer to a [`Which`] request: `{}` when done, else `{"error"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Why the process could not do it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Asks a `fanout` process to take sequenced subscription `which` (stored
/// already): waits for its answer up to [`START_TIMEOUT`].
///
/// # Errors
/// `unavailable` when no process answers in time (none runs) or the one
/// that answered could not take it.
pub async fn request_start(
    client: &async_nats::Client,
    which: &Which,
) -> Result<(), crate::AppError> {
    let body = serde_json::to_vec(which).map_err(crate::AppError::internal)?;
    let reply = tokio::time::timeout(
        START_TIMEOUT,
        client.request(START_SUBJECT.to_owned(), body.into()),
    )
    .await
    .map_err(|_| {
        crate::AppError::unavailable("no fan-out process took the sequenced subscription in time")
    })?
    .map_err(|e| {
        crate::AppError::unavailable(format!(
            "no fan-out process takes sequenced subscriptions: {e}"
        ))
    })?;
    let answer: Answer = serde_json::from_slice(&reply.payload).unwrap_or(Answer {
        error: Some("an answer that is not JSON".into()),
    });
    match answer.error {
        None => Ok(()),
        Some(e) => Err(crate::AppError::unavailable(format!(
            "the fan-out could not start the subscription: {e}"
        ))),
    }
}

/// Tells process `owner` to stop delivering `which`, and waits (briefly)
/// until it has: nothing for the subscription is posted after this
/// returns. A process that does not answer is dead or gone already.
pub async fn request_stop(client: &async_nats::Client, owner: &str, which: &Which) {
    let Ok(body) = serde_json::to_vec(which) else {
        return;
    };
    let asked = tokio::time::timeout(
        START_TIMEOUT,
        client.request(stop_subject(owner), body.into()),
    )
    .await;
    if !matches!(asked, Ok(Ok(_))) {
        tracing::info!(owner, connection = %which.connection, id = %which.id, "the subscription's fan-out process did not confirm the stop");
    }
}

/// One delivering task.
struct Running {
    /// Cancels it.
    stop: CancellationToken,
    /// The task.
    task: JoinHandle<()>,
}

/// The sequenced subscriptions one `fanout` process delivers.
pub struct Sequencer {
    /// This process's id in the registry's `owner` attribute and its subjects.
    owner: String,
    /// Posts, closes, the registry and the site owners.
    fanout: Arc<Fanout>,
    /// NATS, for inboxes.
    client: async_nats::Client,
    /// `PLANTD_TELEMETRY`.
    js: jetstream::Context,
    /// (connection, id) → its task.
    running: Mutex<HashMap<(String, String), Running>>,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Sequencer {
    /// A sequencer named `owner` (unique per process, one subject token).
    pub fn new(owner: impl Into<String>, fanout: Arc<Fanout>, client: async_nats::Client) -> Self {
        let js = jetstream::new(client.clone());
        Self {
            owner: owner.into(),
            fanout,
            client,
            js,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// This process's id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn registry(&self) -> &Registry {
        self.fanout.registry()
    }

    /// How many subscriptions this process delivers now.
    pub fn delivering(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Takes sequenced subscription `which`: claims it, creates its
    /// consumer, posts `subscribed`, and starts delivering.
    ///
    /// # Errors
    /// Why not (the message of the [`Answer`]).
    pub async fn start(self: &Arc<Self>, which: &Which) -> Result<(), String> {
        let sub = self
            .registry()
            .sequenced(&which.connection, &which.id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such sequenced subscription")?;
        let site = Site::new(&sub.site).map_err(|e| e.to_string())?;
        let filter = Filter::new(&sub.filter).map_err(|e| e.to_string())?;
        if !self
            .registry()
            .claim(&which.connection, &which.id, &self.owner)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err("another fan-out process delivers it".into());
        }
        let messages = resume::consumer(
            &self.js,
            self.client.new_inbox(),
            &site,
            &filter,
            sub.from_sequence,
        )
        .await
        .map_err(|e| e.message)?;
        let mut ack =
            json!({ "op": "subscribed", "id": sub.id, "from_sequence": sub.from_sequence });
        if sub.missed {
            ack["missed"] = Value::Bool(true);
        }
        match self
            .fanout
            .post(&which.connection, ack.to_string().into_bytes())
            .await
        {
            Posted::Delivered => {}
            Posted::Gone => {
                let _ = self.registry().remove(&which.connection).await;
                return Err("the connection is gone".into());
            }
            Posted::Failed => return Err("cannot post to the connection".into()),
        }
        let stop = CancellationToken::new();
        let key = (which.connection.clone(), which.id.clone());
        let this = self.clone();
        {
            // Spawned and recorded under the lock: the task removes its own
            // entry when it ends, which must come after the insert.
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let task = tokio::spawn({
                let stop = stop.clone();
                async move {
                    let connection = sub.connection.clone();
                    let id = sub.id.clone();
                    let end = this.deliver(sub, site, filter, messages, stop).await;
                    tracing::info!(connection = %connection, id = %id, end = ?end, "sequenced subscription ended");
                    this.running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&(connection, id));
                }
            });
            running.insert(key, Running { stop, task });
        }
        tracing::info!(connection = %which.connection, id = %which.id, "sequenced subscription taken");
        Ok(())
    }

    /// Stops delivering `which` (after its last post). False when this
    /// process does not deliver it.
    pub async fn stop(&self, which: &Which) -> bool {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(which.connection.clone(), which.id.clone()));
        let Some(running) = running else {
            return false;
        };
        running.stop.cancel();
        let _ = running.task.await;
        true
    }

    /// Stops every subscription and closes their connections, so their
    /// clients reconnect and resume elsewhere from their last sequence.
    pub async fn shutdown(&self) {
        let all: Vec<((String, String), Running)> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let mut connections = Vec::new();
        for ((connection, _), running) in all {
            running.stop.cancel();
            let _ = running.task.await;
            connections.push(connection);
        }
        connections.sort();
        connections.dedup();
        for connection in connections {
            self.end_connection(&connection, "fan-out process stopping")
                .await;
        }
    }

    /// Closes the connections of sequenced subscriptions whose owner is
    /// neither this process nor answers on its [`alive_subject`]: their
    /// clients reconnect and resume. Returns the connections closed.
    ///
    /// # Errors
    /// [`AwsError::Dynamo`] when the registry cannot be read.
    pub async fn adopt_orphans(&self) -> Result<Vec<String>, AwsError> {
        let owned = self.registry().owned().await?;
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut closed = Vec::new();
        for (owner, connection) in owned {
            if owner == self.owner {
                continue;
            }
            let lives = match alive.get(&owner) {
                Some(l) => *l,
                None => {
                    let l = self.answers(&owner).await;
                    alive.insert(owner.clone(), l);
                    l
                }
            };
            if !lives && !closed.contains(&connection) {
                tracing::warn!(owner = %owner, connection = %connection, "sequenced subscription of a fan-out process that no longer answers; closing its connection");
                self.end_connection(&connection, "owner gone").await;
                closed.push(connection);
            }
        }
        Ok(closed)
    }

    /// Whether process `owner` answers on its [`alive_subject`]. Only
    /// "no responders" (nobody subscribes to it: the process is gone)
    /// counts as dead; a timeout or another error is a doubt, and sockets
    /// are not closed on a doubt.
    async fn answers(&self, owner: &str) -> bool {
        match tokio::time::timeout(
            START_TIMEOUT,
            self.client.request(alive_subject(owner), "".into()),
        )
        .await
        {
            Ok(Err(e)) => e.kind() != async_nats::client::RequestErrorKind::NoResponders,
            Ok(Ok(_)) | Err(_) => true,
        }
    }

    /// Closes `connection` and removes it from the registry.
    async fn end_connection(&self, connection: &str, why: &'static str) {
        if let Err(e) = self.fanout.close(connection).await {
            tracing::warn!(connection, why, error = %e, "cannot close a connection");
        }
        if let Err(e) = self.registry().remove(connection).await {
            tracing::warn!(connection, why, error = %e, "cannot remove a closed connection (its TTL will)");
        }
    }

    /// Posts one frame, retrying failures; the connection is closed when
    /// they persist (the client resumes from its last sequence).
    async fn post(&self, connection: &str, data: Vec<u8>) -> Posted {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=POST_ATTEMPTS {
            match self.fanout.post(connection, data.clone()).await {
                Posted::Failed if attempt < POST_ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
        Posted::Failed
    }

    /// Delivers one subscription until it ends; why it ended.
    async fn deliver(
        &self,
        sub: Sequenced,
        site: Site,
        filter: Filter,
        mut messages: jetstream::consumer::push::Ordered,
        stop: CancellationToken,
    ) -> End {
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return End::Stopped,
                _ = recheck.tick() => {
                    if sub.expires <= plantd_shared::jwt::now_secs() {
                        self.end_connection(&sub.connection, "token expired").await;
                        return End::Expired;
                    }
                    // Still there and still this process's (not removed, nor
                    // replaced by another subscription under the same id).
                    match self.registry().sequenced(&sub.connection, &sub.id).await {
                        Ok(Some(now)) if now.owner.as_deref() == Some(self.owner.as_str()) => {}
                        Ok(_) | Err(AwsError::Corrupt { .. }) => return End::Removed,
                        Err(e) => tracing::warn!(connection = %sub.connection, error = %e, "cannot re-read a sequenced subscription"),
                    }
                    continue;
                }
                next = messages.next() => next,
            };
            let m = match next {
                Some(Ok(m)) => m,
                failed => {
                    let detail = match failed {
                        Some(Err(e)) => e.to_string(),
                        _ => "the consumer ended".to_owned(),
                    };
                    let e = crate::AppError::unavailable(detail);
                    let error = json!({ "op": "error", "id": sub.id, "error": e.code, "message": e.message });
                    let _ = self
                        .post(&sub.connection, error.to_string().into_bytes())
                        .await;
                    let _ = self.registry().unsubscribe(&sub.connection, &sub.id).await;
                    return End::ConsumerFailed;
                }
            };
            if sub.expires <= plantd_shared::jwt::now_secs() {
                self.end_connection(&sub.connection, "token expired").await;
                return End::Expired;
            }
            let Ok(parsed) = subject_to_topic(&m.subject) else {
                continue;
            };
            if parsed.site != site || !topic::matches(filter.as_str(), parsed.topic.as_str()) {
                continue;
            }
            match self.fanout.site_owner(&site).await {
                Ok(Some(now)) if now.as_deref() != Some(sub.site_org.as_str()) => continue,
                Ok(_) => {}
                Err(e) => {
                    // Not knowing the owner is not a reason to skip a message
                    // for good: end, the client resumes at this one.
                    tracing::warn!(error = %e, "cannot read the site's owner");
                    self.end_connection(&sub.connection, "site registry unavailable")
                        .await;
                    return End::Closed;
                }
            }
            let mut headers = std::collections::BTreeMap::new();
            if let Some(h) = &m.headers {
                for (name, values) in h.iter() {
                    if let Some(first) = values.first() {
                        headers.insert(name.to_string(), first.as_str().to_owned());
                    }
                }
            }
            let mut data = frame(&sub.id, &site, &parsed.topic, &m.payload, &headers);
            if let Some((sequence, time)) = resume::position(&m) {
                data["sequence"] = json!(sequence);
                data["time"] = json!(time);
            }
            let mut bytes = data.to_string().into_bytes();
            if bytes.len() > MAX_POST {
                // API Gateway would refuse it on every attempt and every
                // resume: say that it exists and how big it is instead (the
                // history API has it), rather than skip it silently.
                if let Some(fields) = data.as_object_mut() {
                    fields.remove("payload");
                    fields.remove("payload_base64");
                    fields.insert("headers".into(), json!({}));
                    fields.insert("too_large".into(), json!(m.payload.len()));
                }
                bytes = data.to_string().into_bytes();
            }
            match self.post(&sub.connection, bytes).await {
                Posted::Delivered => {}
                Posted::Gone => {
                    let _ = self.registry().remove(&sub.connection).await;
                    return End::Gone;
                }
                Posted::Failed => {
                    self.end_connection(&sub.connection, "posts keep failing")
                        .await;
                    return End::Closed;
                }
            }
        }
    }
}

/// Why a delivering task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Told to stop (`unsubscribe`, shutdown).
    Stopped,
    /// Its registry item is gone.
    Removed,
    /// The client left (410).
    Gone,
    /// The token expired: connection closed.
    Expired,
    /// Posting kept failing or the site registry was unavailable:
    /// connection closed.
    Closed,
    /// The consumer failed: `error` frame, item removed.
    ConsumerFailed,
}

/// Answers a request, if it asked for an answer.
async fn reply(client: &async_nats::Client, to: Option<async_nats::Subject>, answer: &Answer) {
    let Some(to) = to else { return };
    let body = serde_json::to_vec(answer).unwrap_or_default();
    if let Err(e) = client.publish(to, body.into()).await {
        tracing::warn!(error = %e, "cannot answer a fan-out request");
    }
}

/// Serves [`START_SUBJECT`] (in queue group [`QUEUE_GROUP`]), this
/// process's [`stop_subject`] and [`alive_subject`], and looks for orphans
/// every [`RECHECK`], until `shutdown`; then [`Sequencer::shutdown`].
///
/// # Errors
/// When the NATS subscriptions cannot be made.
pub async fn serve(
    sequencer: Arc<Sequencer>,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let client = sequencer.client.clone();
    let mut starts = client
        .queue_subscribe(START_SUBJECT.to_owned(), QUEUE_GROUP.to_owned())
        .await?;
    let mut stops = client.subscribe(stop_subject(&sequencer.owner)).await?;
    let mut alive = client.subscribe(alive_subject(&sequencer.owner)).await?;
    if let Err(e) = client.flush().await {
        tracing::warn!(error = %e, "NATS flush failed");
    }
    tracing::info!(owner = %sequencer.owner, "sequenced subscriptions served");
    // Its own task: a slow sweep must not hold up `alive` answers or starts.
    let orphans = tokio::spawn({
        let (sequencer, shutdown) = (sequencer.clone(), shutdown.clone());
        async move {
            let mut every = tokio::time::interval(RECHECK);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                if let Err(e) = sequencer.adopt_orphans().await {
                    tracing::warn!(error = %e, "cannot look for sequenced subscriptions of dead fan-out processes");
                }
            }
        }
    });
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            // Starts and stops wait on DynamoDB and JetStream: in tasks, so
            // this loop keeps answering `alive` meanwhile.
            m = starts.next() => {
                let Some(m) = m else { break };
                let sequencer = sequencer.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let done = match serde_json::from_slice::<Which>(&m.payload) {
                        Ok(which) => sequencer.start(&which).await,
                        Err(e) => Err(format!("not a start request: {e}")),
                    };
                    if let Err(e) = &done {
                        tracing::warn!(error = %e, "cannot take a sequenced subscription");
                    }
                    reply(&client, m.reply, &Answer { error: done.err() }).await;
                });
            }
            m = stops.next() => {
                let Some(m) = m else { break };
                let sequencer = sequencer.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    if let Ok(which) = serde_json::from_slice::<Which>(&m.payload) {
                        sequencer.stop(&which).await;
                    }
                    reply(&client, m.reply, &Answer::default()).await;
                });
            }
            m = alive.next() => {
                let Some(m) = m else { break };
                reply(&client, m.reply, &Answer::default()).await;
            }
        }
    }
    orphans.abort();
    let _ = orphans.await;
    sequencer.shutdown().await;
    Ok(())
}
