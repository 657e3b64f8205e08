//! Live data: one WebSocket to `/v1/ws` with one reconnect state machine.
//!
//! [`Live::subscribe`] gives a [`Subscription`], a `Stream` of the
//! messages of a site on topics matching an MQTT filter. Every
//! subscription is *sequenced* (it reads the stream `PLANTD_TELEMETRY`):
//! after any loss — network, server restart, expired token — the
//! connection renews the token if it must, opens a new socket after a
//! backoff with jitter, and subscribes every subscription again from its
//! last sequence + 1, so a subscriber neither misses nor repeats a
//! message the server stored. A refused token (revoked, or a fixed token
//! the server no longer accepts) ends every subscription with
//! [`Error::Refused`] instead of reconnecting forever.
//! [`Live::states`] reports [`LinkState`] changes as their own stream.
//!
//! [`Live::tail`] gives a [`Tail`], a `Stream` of a site's log lines
//! ([`LogLine`], parsed as `GET /v1/logs` shows them) on the same socket,
//! sequenced on `PLANTD_LOGS` and resumed the same way. Each time the
//! server confirms a subscription or tail — the first time and after every
//! reconnect — [`Subscription::confirmations`] yields a [`Confirmation`].
//!
//! Shape (after async-nats): [`Live`] is a cheap-to-clone handle over a
//! bounded command channel; one task (`connection`) owns the socket and
//! every subscription's queue. Flow control: a subscription's queue holds
//! [`LiveOptions::buffer`] messages; when its reader lets it fill, the
//! subscription is unsubscribed on the server and, once the reader has
//! drained half of it, subscribed again from its last sequence + 1 (the
//! stream holds the rest) — a slow reader, or a long replay read slowly,
//! gets everything at its own pace instead of being ended or buffered
//! without bound (decision 0059). Only an item without a sequence, which
//! cannot be fetched again, ends a full subscription with
//! [`Error::SlowConsumer`].

mod connection;
mod frames;
mod socket;
mod subs;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::auth::TokenSource;
use crate::error::Error;
use crate::generated::proxy::types;

use connection::Command;
use frames::Op;
use subs::{Flow, Sink, Stall, Sub};

/// One log line of a [`Tail`]: the `GET /v1/logs` record, with its
/// `stream` (`PLANTD_LOGS`) and `sequence`.
pub type LogLine = types::LogLine;

/// A tail of a site's log lines ([`Live::tail`]).
pub type Tail = Subscription<LogLine>;

/// The live connection's state, also offered as a stream ([`Live::states`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Opening the first socket.
    Connecting,
    /// Open; every subscription is (re)subscribed.
    Connected,
    /// Lost; trying again after a backoff.
    Reconnecting,
    /// The server refused the token for good (revoked, or not renewable).
    Refused,
    /// No socket: closed by [`Live::close`], or lost with nothing to
    /// resume (the next subscription opens one).
    Closed,
}

/// One message of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The site.
    pub site: String,
    /// The MQTT topic it was published on.
    pub topic: String,
    /// The payload, byte for byte as the device sent it.
    pub payload: Bytes,
    /// The headers the edge set (`Plantd-Qos`, `Plantd-Received`, …).
    pub headers: BTreeMap<String, String>,
    /// Its sequence in the stream `PLANTD_TELEMETRY`.
    pub sequence: u64,
    /// When it was stored (RFC 3339).
    pub time: Option<String>,
    /// Retention had already dropped messages between the previous one
    /// this subscription yielded and this one (a resume that came too
    /// late: the server said `missed`).
    pub missed_before: bool,
}

impl Message {
    /// The payload as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }
}

/// Options of the live connection.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// First reconnect delay (default 250 ms); doubles up to
    /// [`max_backoff`](Self::max_backoff), each delay drawn between half
    /// and all of it (jitter).
    pub backoff: Duration,
    /// Longest reconnect delay (default 15 s).
    pub max_backoff: Duration,
    /// Messages a subscription holds for a reader that is behind (default
    /// 10,000). When they are all unread the subscription is paused on the
    /// server, and resumed from where the reader is once it has read half
    /// of them: nothing is lost (see the module's flow control).
    pub buffer: usize,
    /// Time limit of opening a socket (default 10 s).
    pub open_timeout: Duration,
    /// Time limit of a published command's confirmation (default 30 s).
    pub command_timeout: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(15),
            buffer: 10_000,
            open_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// The state now, and its changes for [`Live::states`].
#[derive(Debug)]
pub(crate) struct StateCell {
    now: Mutex<LinkState>,
    changes: broadcast::Sender<LinkState>,
}

impl StateCell {
    fn new() -> Self {
        StateCell {
            now: Mutex::new(LinkState::Closed),
            changes: broadcast::channel(64).0,
        }
    }

    /// Sets the state; announces it when it changed.
    pub(crate) fn set(&self, state: LinkState) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *now != state {
            *now = state;
            let _ = self.changes.send(state);
        }
    }

    fn get(&self) -> LinkState {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now and a receiver of every later change, taken together.
    fn watch(&self) -> (LinkState, broadcast::Receiver<LinkState>) {
        let now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (*now, self.changes.subscribe())
    }
}

/// The live connection: cheap to clone, clones share the socket. The
/// socket opens on the first subscription (or command) and the
/// connection's task ends when every handle and subscription is dropped.
/// Its methods must be called within a Tokio runtime.
#[derive(Clone, Debug)]
pub struct Live {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The API's base URL.
    base: String,
    /// Where tokens come from.
    auth: TokenSource,
    /// Backoff, buffers, time limits.
    options: LiveOptions,
    /// The connection task's command channel, once it runs.
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    /// The link state.
    state: Arc<StateCell>,
    /// Subscription ids.
    next_id: AtomicU64,
    /// [`Live::close`] was called.
    closed: AtomicBool,
}

impl Live {
    /// A live connection to the API at `base` (not opened yet).
    pub fn new(base: &str, auth: TokenSource, options: LiveOptions) -> Self {
        Live {
            shared: Arc::new(Shared {
                base: base.trim_end_matches('/').to_owned(),
                auth,
                options,
                commands: Mutex::new(None),
                state: Arc::new(StateCell::new()),
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The state now.
    pub fn state(&self) -> LinkState {
        self.shared.state.get()
    }

    /// The state now, then every change; ends after [`close`](Self::close).
    /// A reader that falls more than 64 changes behind skips the oldest.
    pub fn states(&self) -> impl Stream<Item = LinkState> + Send + Unpin + 'static {
        let (now, rx) = self.shared.state.watch();
        let shared = self.shared.clone();
        let ended =
            move |s: LinkState| s == LinkState::Closed && shared.closed.load(Ordering::SeqCst);
        let done = ended(now);
        let rest = futures::stream::unfold((rx, now, done), move |(mut rx, last, done)| {
            let ended = ended.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Ok(s) if s == last => {}
                        Ok(s) => return Some((s, (rx, s, ended(s)))),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Box::pin(futures::StreamExt::chain(
            futures::stream::iter([now]),
            rest,
        ))
    }

    /// Messages of `site` on topics matching the MQTT `filter`, from the
    /// next one stored, across reconnects.
    pub fn subscribe(&self, site: &str, filter: &str) -> Subscription {
        self.subscribe_with(site, filter, SubscribeOptions::default())
    }

    /// [`subscribe`](Self::subscribe) with options (a start sequence).
    pub fn subscribe_with(
        &self,
        site: &str,
        filter: &str,
        options: SubscribeOptions,
    ) -> Subscription {
        let op = Op::Subscribe {
            filter: filter.to_owned(),
        };
        self.open(site, op, options.from_sequence, Sink::Messages)
    }

    /// The log lines of `site` that pass `options` (source, level, a
    /// filter in the log query language), from the next one stored —
    /// or from [`TailOptions::from_sequence`] — across reconnects: after a
    /// loss the tail resumes at the last line's sequence + 1, so it
    /// neither misses nor repeats a line `PLANTD_LOGS` holds. It ends as
    /// a [`Subscription`] does: [`Error::Live`] (`forbidden`,
    /// `bad_request` for a bad filter or level, …), [`Error::Refused`];
    /// a slow reader is paced, as a subscription's is.
    pub fn tail(&self, site: &str, options: TailOptions) -> Tail {
        let op = Op::Tail {
            filter: options.filter.filter(|f| !f.trim().is_empty()),
            source: options.source,
            level: options.level,
        };
        self.open(site, op, options.from_sequence, Sink::Logs)
    }

    /// Registers a subscription or tail with the connection task.
    fn open<T>(
        &self,
        site: &str,
        op: Op,
        from_sequence: Option<u64>,
        sink_of: fn(mpsc::Sender<Result<T, Error>>) -> Sink,
    ) -> Subscription<T> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (sink, rx) = mpsc::channel(self.shared.options.buffer.max(1) + 1);
        let (confirmed, confirmations) = watch::channel(None);
        let stall = Stall::default();
        let subscribe = Command::Subscribe {
            id,
            sub: Sub {
                site: site.to_owned(),
                op,
                resume: from_sequence.unwrap_or(0),
                missed: false,
                sink: sink_of(sink.clone()),
                confirmed,
                flow: Flow::Awaiting,
                stall: stall.clone(),
            },
        };
        let commands = match self.commands() {
            Ok(commands) => commands,
            Err(e) => {
                let _ = sink.try_send(Err(e));
                return Subscription {
                    id,
                    rx,
                    confirmations,
                    commands: None,
                    stall,
                    half: 0,
                };
            }
        };
        if commands.try_send(subscribe).is_err() {
            let _ = sink.try_send(Err(Error::Transport(
                "the live connection's command queue is full".to_owned(),
            )));
        }
        Subscription {
            id,
            rx,
            confirmations,
            commands: Some(commands),
            stall,
            half: self.shared.options.buffer / 2,
        }
    }

    /// Sends a command to `site` over the socket (the WebSocket `command`
    /// operation: the body of `POST /v1/sites/{site}/commands`) and waits
    /// until the server stored it.
    ///
    /// # Errors
    /// [`Error::Live`] when the server refuses it (`forbidden`,
    /// `bad_request`, …); [`Error::Transport`] when the socket was lost
    /// before the server confirmed it (it may or may not be stored);
    /// [`Error::Timeout`], [`Error::Refused`], [`Error::Closed`].
    pub async fn publish(
        &self,
        site: &str,
        command: &types::Command,
    ) -> Result<types::Sent, Error> {
        let body = serde_json::to_value(command).map_err(|e| Error::Invalid(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        let limit = self.shared.options.command_timeout;
        let sent = async {
            self.commands()?
                .send(Command::Publish {
                    site: site.to_owned(),
                    body,
                    reply,
                })
                .await
                .map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)?
        };
        let value = tokio::time::timeout(limit, sent)
            .await
            .map_err(|_| Error::Timeout(limit))??;
        serde_json::from_value(value).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Drops the socket as a network failure would and reconnects at once
    /// (resuming every subscription): after a network change, or to test
    /// that nothing is lost.
    pub fn force_reconnect(&self) {
        if let Ok(commands) = self.commands() {
            let _ = commands.try_send(Command::Reconnect);
        }
    }

    /// Closes the socket and ends every subscription (their streams end)
    /// and the state stream. The connection cannot be used after it.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let taken = self
            .shared
            .commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(commands) = taken {
            let _ = commands.try_send(Command::Close);
        } else {
            self.shared.state.set(LinkState::Closed);
        }
    }

    /// The connection task's channel, starting the task if it is not
    /// running.
    fn commands(&self) -> Result<mpsc::Sender<Command>, Error> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let mut slot = self
            .shared
            .commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = slot.as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Invalid("the live connection needs a Tokio runtime".to_owned()))?;
        let (tx, rx) = mpsc::channel(1024);
        let task = connection::Connection::new(
            self.shared.base.clone(),
            self.shared.auth.clone(),
            self.shared.options.clone(),
            self.shared.state.clone(),
            tx.downgrade(),
        );
        runtime.spawn(task.run(rx));
        *slot = Some(tx.clone());
        Ok(tx)
    }
}

/// Options of [`Live::subscribe_with`].
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Start at this stream sequence (default: the next message stored).
    pub from_sequence: Option<u64>,
}

/// Options of [`Live::tail`]; every criterion is optional.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// A filter in the log query language (`|= "overheat" | temp > 80`;
    /// docs/api.md). Empty or blank: every line.
    pub filter: Option<String>,
    /// Only this source (`line1/plc`, or a glob: `line1/*`).
    pub source: Option<String>,
    /// Only this level and above (`trace` … `fatal`).
    pub level: Option<String>,
    /// Start at this sequence of `PLANTD_LOGS` (default: the next line
    /// stored).
    pub from_sequence: Option<u64>,
}

/// The server confirmed a subscription or tail (`subscribed` or
/// `tailing`): it is in place, and from here on nothing the server stores
/// for it is missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmation {
    /// The sequence it starts at this time (after a reconnect: the last
    /// one yielded + 1).
    pub from_sequence: u64,
    /// Retention had already dropped some of what was asked for (a resume
    /// that came too late); a subscription's next message also says so
    /// ([`Message::missed_before`]).
    pub missed: bool,
    /// How many times the server has confirmed it, this time included
    /// (1: the first; each reconnect, and each resume after its reader
    /// fell a buffer behind, adds one).
    pub count: u64,
}

/// A live subscription: a `Stream` of messages ([`Message`]; a [`Tail`]'s
/// are [`LogLine`]s) that ends with an error when the server refuses it
/// ([`Error::Live`]: `forbidden`, …) or the token ([`Error::Refused`]),
/// and without one after [`Live::close`]. A reader that falls
/// [`LiveOptions::buffer`] behind is paced, not ended: the rest waits in
/// the server's stream. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription<T = Message> {
    /// Its id on the socket.
    id: u64,
    /// Its items.
    rx: mpsc::Receiver<Result<T, Error>>,
    /// The server's latest confirmation (never marked seen here: each
    /// [`confirmations`](Self::confirmations) stream starts unseen).
    confirmations: watch::Receiver<Option<Confirmation>>,
    /// To unsubscribe on drop, and to resume it when paused.
    commands: Option<mpsc::Sender<Command>>,
    /// Set while the connection has paused it for this reader.
    stall: Stall,
    /// Paused, it resumes once this reader holds this many items or fewer.
    half: usize,
}

impl<T> Subscription<T> {
    /// The server's confirmations of this subscription, each time it
    /// confirms it: the first time, and again after every reconnect or
    /// resume after a pause (flow control). A
    /// stream taken after a confirmation starts with it; when several come
    /// before it is read, it yields the latest ([`Confirmation::count`]
    /// says how many there were). It ends when the subscription ends.
    /// Independent of the subscription's own stream, so both can be read
    /// at once (`tokio::select!`).
    pub fn confirmations(&self) -> impl Stream<Item = Confirmation> + Send + Unpin + 'static {
        let rx = self.confirmations.clone();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let now = *rx.borrow_and_update();
                if let Some(c) = now {
                    return Some((c, rx));
                }
            }
        }))
    }

    /// Whether the subscription is held back for this reader: it let
    /// [`LiveOptions::buffer`] items pile up unread, so the server stopped
    /// sending and the rest waits in its stream until the reader has read
    /// half of them (then it is subscribed again from where the reader
    /// is, and [`confirmations`](Self::confirmations) yields once more).
    pub fn is_held(&self) -> bool {
        self.stall.is_set()
    }

    /// Waits for the server's first confirmation (at once when it already
    /// came); `None` when the subscription ended before it.
    pub async fn confirmed(&self) -> Option<Confirmation> {
        let mut rx = self.confirmations.clone();
        let confirmed = rx.wait_for(Option::is_some).await.ok()?;
        *confirmed
    }
}

impl<T> Stream for Subscription<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        // Caught up after a pause: ask for the rest from where it stopped.
        if self.rx.len() <= self.half && self.stall.take() {
            let resume = Command::Resume { id: self.id };
            if let Some(commands) = &self.commands
                && commands.try_send(resume).is_err()
            {
                // The command queue is full: ask again on the next poll.
                self.stall.set();
            }
        }
        polled
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Some(commands) = &self.commands {
            // Best effort: the connection also drops a subscription whose
            // stream is gone the next time it has a message for it.
            let _ = commands.try_send(Command::Unsubscribe { id: self.id });
        }
    }
}
