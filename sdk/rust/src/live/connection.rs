//! The task that owns the socket: the reconnect state machine.
//!
//! ```text
//!   idle (Closed/Refused) ──subscribe/publish──▶ Connecting/Reconnecting
//!        ▲                                          │ token (renewed after a 401 or "token expired")
//!        │ nothing to resume                        │   refused ──▶ Refused: every subscription ends
//!        │                                          ▼
//!   lost ◀── socket error / close / force ──── Connected: subscribe each from resume
//!        └──▶ backoff (jitter) ──▶ Reconnecting     "token revoked" ──▶ Refused
//! ```
//!
//! Invariant: a subscription's `resume` is the sequence after the last
//! message it yielded (0 until the server says where it starts), and a
//! message below it is never yielded — so a resume neither repeats nor,
//! while the stream holds them, misses one.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::frames::{self, ServerFrame};
use super::socket::{self, OpenError, Socket};
use super::subs::{Delivery, Flow, Sink, Sub, deliver};
use super::{Confirmation, LinkState, LiveOptions, LogLine, StateCell};
use crate::auth::{Secret, TokenSource};
use crate::error::Error;

/// What the handles ask of the connection.
#[derive(Debug)]
pub(crate) enum Command {
    /// A new subscription or tail.
    Subscribe { id: u64, sub: Sub },
    /// A subscription's stream was dropped.
    Unsubscribe { id: u64 },
    /// A command to send over the socket.
    Publish {
        site: String,
        body: Value,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    /// Subscribe again (the server's consumer failed: `unavailable`).
    Resubscribe { id: u64 },
    /// The reader of a paused subscription has drained half its queue:
    /// subscribe it again from where it stopped.
    Resume { id: u64 },
    /// Drop the socket and reconnect.
    Reconnect,
    /// Close for good.
    Close,
}

/// What ended a connected spell.
enum Ended {
    /// Lost (or forced): reconnect.
    Lost,
    /// The token expired: renew it, then reconnect.
    Expired,
    /// The token was revoked: refuse.
    Revoked,
    /// Closed for good.
    Stop,
}

/// The connection's state.
pub(crate) struct Connection {
    base: String,
    auth: TokenSource,
    options: LiveOptions,
    state: std::sync::Arc<StateCell>,
    /// To schedule commands to itself (re-subscribing after a delay).
    myself: mpsc::WeakSender<Command>,
    subs: HashMap<u64, Sub>,
    /// Commands waiting for a socket: site, body, reply.
    pending: Vec<(String, Value, Reply)>,
    /// Commands sent, waiting for `sent`, by frame id.
    awaiting: HashMap<String, Reply>,
    next_command: u64,
    /// Failed attempts since the last connection.
    attempt: u32,
}

type Writer = SplitSink<Socket, Frame>;
/// Where a command's outcome goes.
type Reply = oneshot::Sender<Result<Value, Error>>;
type Reader = SplitStream<Socket>;

impl Connection {
    pub(crate) fn new(
        base: String,
        auth: TokenSource,
        options: LiveOptions,
        state: std::sync::Arc<StateCell>,
        myself: mpsc::WeakSender<Command>,
    ) -> Self {
        Connection {
            base,
            auth,
            options,
            state,
            myself,
            subs: HashMap::new(),
            pending: Vec::new(),
            awaiting: HashMap::new(),
            next_command: 1,
            attempt: 0,
        }
    }

    /// Runs until [`Command::Close`] or until every handle is dropped.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut stale: Option<Secret> = None;
        loop {
            if self.subs.is_empty() && self.pending.is_empty() {
                if self.state.get() != LinkState::Refused {
                    self.state.set(LinkState::Closed);
                }
                self.attempt = 0;
                match rx.recv().await {
                    Some(c) => {
                        if self.idle_command(c) {
                            return self.stop();
                        }
                        continue;
                    }
                    None => return,
                }
            }
            self.state.set(
                if self.attempt == 0 && self.state.get() != LinkState::Reconnecting {
                    LinkState::Connecting
                } else {
                    LinkState::Reconnecting
                },
            );
            let token = match stale.take() {
                Some(old) => self.auth.renew(&old).await,
                None => self.auth.token().await,
            };
            let token = match token {
                Ok(t) => t,
                Err(Error::Refused(why)) => {
                    self.refuse(&why);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live: no token; trying again");
                    if self.pause(&mut rx).await {
                        return self.stop();
                    }
                    continue;
                }
            };
            let ws = match socket::open(&self.base, token.expose(), self.options.open_timeout).await
            {
                Ok(ws) => ws,
                Err(OpenError::Unauthorized(why)) => {
                    tracing::info!(reason = %why, "live: token refused at the handshake; renewing it");
                    stale = Some(token);
                    if self.pause(&mut rx).await {
                        return self.stop();
                    }
                    continue;
                }
                Err(OpenError::Failed(why)) => {
                    tracing::info!(reason = %why, attempt = self.attempt, "live: cannot connect");
                    if self.pause(&mut rx).await {
                        return self.stop();
                    }
                    continue;
                }
            };
            self.attempt = 0;
            self.state.set(LinkState::Connected);
            tracing::debug!(subscriptions = self.subs.len(), "live: connected");
            let (writer, reader) = ws.split();
            match self.connected(writer, reader, &mut rx).await {
                Ended::Stop => return self.stop(),
                Ended::Revoked => {
                    self.refuse("the token was revoked");
                    continue;
                }
                Ended::Expired => stale = Some(token),
                Ended::Lost => {}
            }
            self.lost();
            if self.subs.is_empty() && self.pending.is_empty() {
                continue;
            }
            self.state.set(LinkState::Reconnecting);
            if self.pause(&mut rx).await {
                return self.stop();
            }
        }
    }

    /// The connected spell: subscribe everything, then pass frames both
    /// ways until the socket ends.
    async fn connected(
        &mut self,
        mut writer: Writer,
        mut reader: Reader,
        rx: &mut mpsc::Receiver<Command>,
    ) -> Ended {
        // A paused subscription waits for its reader (`Command::Resume`).
        let mut out: Vec<String> = self
            .subs
            .iter_mut()
            .filter(|(_, s)| s.flow != Flow::Paused)
            .map(|(id, s)| s.reopen(&sub_id(*id)))
            .collect();
        for (site, body, reply) in std::mem::take(&mut self.pending) {
            out.extend(self.command_frame(&site, &body, reply));
        }
        for text in out {
            if writer.send(Frame::Text(text.into())).await.is_err() {
                return Ended::Lost;
            }
        }
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else {
                        let _ = writer.send(Frame::Close(None)).await;
                        return Ended::Stop;
                    };
                    let text = match command {
                        Command::Subscribe { id, sub } => {
                            let text = frames::open(&sub_id(id), &sub.site, &sub.op, sub.resume);
                            self.subs.insert(id, sub);
                            Some(text)
                        }
                        Command::Unsubscribe { id } => {
                            self.subs.remove(&id).map(|_| frames::unsubscribe(&sub_id(id)))
                        }
                        Command::Publish { site, body, reply } => self.command_frame(&site, &body, reply),
                        Command::Resubscribe { id } => self.reopen(id, |f| f != Flow::Paused),
                        Command::Resume { id } => self.reopen(id, |f| f == Flow::Paused),
                        Command::Reconnect => return Ended::Lost,
                        Command::Close => {
                            let _ = writer.send(Frame::Close(None)).await;
                            return Ended::Stop;
                        }
                    };
                    if let Some(text) = text
                        && writer.send(Frame::Text(text.into())).await.is_err()
                    {
                        return Ended::Lost;
                    }
                }
                frame = reader.next() => match frame {
                    Some(Ok(Frame::Text(text))) => {
                        for text in self.frame(text.as_str()) {
                            if writer.send(Frame::Text(text.into())).await.is_err() {
                                return Ended::Lost;
                            }
                        }
                    }
                    Some(Ok(Frame::Close(close))) => {
                        let (code, reason) = close
                            .map(|c| (c.code, c.reason.to_string()))
                            .unwrap_or((CloseCode::Normal, String::new()));
                        tracing::info!(?code, %reason, "live: the server closed the socket");
                        if code == CloseCode::Policy && reason == "token revoked" {
                            return Ended::Revoked;
                        }
                        if code == CloseCode::Policy && reason == "token expired" {
                            return Ended::Expired;
                        }
                        return Ended::Lost;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "live: socket lost");
                        return Ended::Lost;
                    }
                    None => return Ended::Lost,
                }
            }
        }
    }

    /// Handles one server frame; frames to send back (a subscription
    /// that went away is unsubscribed).
    fn frame(&mut self, text: &str) -> Vec<String> {
        let frame: ServerFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "live: unreadable frame");
                return Vec::new();
            }
        };
        match frame {
            ServerFrame::Subscribed {
                id,
                from_sequence,
                missed,
            }
            | ServerFrame::Tailing {
                id,
                from_sequence,
                missed,
            } => {
                if let Some(sub) = parse_sub(&id).and_then(|id| self.subs.get_mut(&id)) {
                    if sub.flow == Flow::Awaiting {
                        sub.flow = Flow::Flowing;
                    }
                    if sub.resume == 0 {
                        sub.resume = from_sequence.unwrap_or(0);
                    }
                    if missed {
                        tracing::warn!(site = %sub.site, what = %sub.op.describe(), "live: retention dropped messages before the resume point");
                        sub.missed = true;
                    }
                    sub.confirmed.send_modify(|c| {
                        let count = c.as_ref().map_or(0, |c| c.count) + 1;
                        *c = Some(Confirmation {
                            from_sequence: from_sequence.unwrap_or(0),
                            missed,
                            count,
                        });
                    });
                }
                Vec::new()
            }
            ServerFrame::Log { id, record } => {
                let Some(sid) = parse_sub(&id) else {
                    return Vec::new();
                };
                let Some(sub) = self.subs.get_mut(&sid) else {
                    return Vec::new();
                };
                if sub.flow != Flow::Flowing {
                    return Vec::new();
                }
                let line: LogLine = match serde_json::from_value(record) {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::warn!(error = %e, site = %sub.site, "live: unreadable log record");
                        return Vec::new();
                    }
                };
                // Never twice: a resume starts at `resume`, but be strict.
                if line.sequence != 0 && line.sequence < sub.resume {
                    return Vec::new();
                }
                let Sink::Logs(sink) = &sub.sink else {
                    tracing::warn!(%id, "live: a log line for a subscription");
                    return Vec::new();
                };
                let sequence = line.sequence;
                match deliver(sink, line, self.options.buffer, sequence != 0) {
                    Delivery::Queued => {
                        if sequence != 0 {
                            sub.resume = sequence + 1;
                        }
                        // A tail reports `missed` through its confirmation only.
                        sub.missed = false;
                        Vec::new()
                    }
                    // Not yielded: `resume` stays, and it comes again.
                    Delivery::Full => self.hold(sid),
                    Delivery::Dropped | Delivery::TooSlow => {
                        self.subs.remove(&sid);
                        vec![frames::unsubscribe(&id)]
                    }
                }
            }
            ServerFrame::Message {
                id,
                site,
                topic,
                payload,
                payload_base64,
                headers,
                sequence,
                time,
            } => {
                let Some(sid) = parse_sub(&id) else {
                    return Vec::new();
                };
                let Some(sub) = self.subs.get_mut(&sid) else {
                    return Vec::new();
                };
                if sub.flow != Flow::Flowing {
                    return Vec::new();
                }
                let sequence = sequence.unwrap_or(0);
                // Never twice: a resume starts at `resume`, but be strict.
                if sequence != 0 && sequence < sub.resume {
                    return Vec::new();
                }
                let mut message = match frames::message(
                    site,
                    topic,
                    payload,
                    payload_base64,
                    headers,
                    sequence,
                    time,
                ) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "live: undecodable message");
                        return Vec::new();
                    }
                };
                message.missed_before = sub.missed;
                let Sink::Messages(sink) = &sub.sink else {
                    tracing::warn!(%id, "live: a message for a tail");
                    return Vec::new();
                };
                match deliver(sink, message, self.options.buffer, sequence != 0) {
                    Delivery::Queued => {
                        if sequence != 0 {
                            sub.resume = sequence + 1;
                        }
                        sub.missed = false;
                        Vec::new()
                    }
                    // Not yielded: `resume` (and `missed`) stay, and it
                    // comes again.
                    Delivery::Full => self.hold(sid),
                    Delivery::Dropped | Delivery::TooSlow => {
                        self.subs.remove(&sid);
                        vec![frames::unsubscribe(&id)]
                    }
                }
            }
            ServerFrame::Sent {
                id,
                stream,
                sequence,
            } => {
                if let Some(reply) = self.awaiting.remove(&id) {
                    let _ = reply.send(Ok(json!({"stream": stream, "sequence": sequence})));
                }
                Vec::new()
            }
            ServerFrame::Error { id, error, message } => {
                let id = id.unwrap_or_default();
                if let Some(reply) = self.awaiting.remove(&id) {
                    let _ = reply.send(Err(Error::Live {
                        code: error,
                        message,
                    }));
                } else if let Some(sid) = parse_sub(&id) {
                    if self.subs.get(&sid).is_some_and(|s| s.flow == Flow::Paused) {
                        // The paused consumer's last words: it is gone.
                        tracing::debug!(%error, %message, "live: an error for a paused subscription");
                    } else if error == "unavailable" {
                        // The server's consumer failed: again from `resume`.
                        self.resubscribe_later(sid);
                    } else if let Some(sub) = self.subs.remove(&sid) {
                        sub.sink.end(Error::Live {
                            code: error,
                            message,
                        });
                    }
                } else {
                    tracing::warn!(%error, %message, "live: the server refused a frame");
                }
                Vec::new()
            }
            ServerFrame::Other => Vec::new(),
        }
    }

    /// A `command` frame, its reply kept until `sent` or `error`.
    fn command_frame(
        &mut self,
        site: &str,
        body: &Value,
        reply: oneshot::Sender<Result<Value, Error>>,
    ) -> Option<String> {
        let id = format!("c{}", self.next_command);
        self.next_command += 1;
        match frames::command(&id, site, body) {
            Ok(text) => {
                self.awaiting.insert(id, reply);
                Some(text)
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        }
    }

    /// Holds back subscription `sid`, whose reader is a full queue behind
    /// ([`Sub::hold`]); the frames to send.
    fn hold(&mut self, sid: u64) -> Vec<String> {
        let half = self.options.buffer / 2;
        self.subs
            .get_mut(&sid)
            .map(|sub| sub.hold(&sub_id(sid), half))
            .unwrap_or_default()
    }

    /// Subscribes `id` again from its `resume` when its flow passes
    /// `when`; the frame to send.
    fn reopen(&mut self, id: u64, when: impl Fn(Flow) -> bool) -> Option<String> {
        let sub = self.subs.get_mut(&id).filter(|s| when(s.flow))?;
        Some(sub.reopen(&sub_id(id)))
    }

    fn resubscribe_later(&self, id: u64) {
        let Some(myself) = self.myself.upgrade() else {
            return;
        };
        let delay = self.options.backoff;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = myself.send(Command::Resubscribe { id }).await;
        });
    }

    /// A command while there is no socket; `true` to stop.
    fn idle_command(&mut self, command: Command) -> bool {
        match command {
            Command::Subscribe { id, sub } => {
                self.subs.insert(id, sub);
            }
            Command::Unsubscribe { id } => {
                self.subs.remove(&id);
            }
            Command::Publish { site, body, reply } => self.pending.push((site, body, reply)),
            Command::Resume { id } => {
                // Opened by the next socket.
                if let Some(sub) = self.subs.get_mut(&id).filter(|s| s.flow == Flow::Paused) {
                    sub.flow = Flow::Awaiting;
                }
            }
            Command::Resubscribe { .. } | Command::Reconnect => {}
            Command::Close => return true,
        }
        false
    }

    /// Waits out the backoff while taking commands; `true` to stop.
    async fn pause(&mut self, rx: &mut mpsc::Receiver<Command>) -> bool {
        let cap = max_delay(&self.options, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let delay = cap.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                () = &mut wake => return false,
                command = rx.recv() => match command {
                    None => return true,
                    Some(Command::Reconnect) => return false,
                    Some(c) => {
                        if self.idle_command(c) {
                            return true;
                        }
                    }
                },
            }
        }
    }

    /// The socket is gone: commands sent on it cannot be confirmed.
    fn lost(&mut self) {
        for (_, reply) in self.awaiting.drain() {
            let _ = reply.send(Err(Error::Transport(
                "the connection was lost before the server confirmed the command; it may or may not have been stored".to_owned(),
            )));
        }
        self.subs.retain(|_, s| !s.sink.is_closed());
    }

    /// The token was refused for good: everything ends with
    /// [`Error::Refused`].
    fn refuse(&mut self, why: &str) {
        tracing::warn!(reason = %why, "live: refused");
        self.state.set(LinkState::Refused);
        for (_, sub) in self.subs.drain() {
            sub.sink.end(Error::Refused(why.to_owned()));
        }
        for (_, _, reply) in self.pending.drain(..) {
            let _ = reply.send(Err(Error::Refused(why.to_owned())));
        }
        for (_, reply) in self.awaiting.drain() {
            let _ = reply.send(Err(Error::Refused(why.to_owned())));
        }
    }

    /// Closed for good: streams end without an error.
    fn stop(mut self) {
        self.subs.clear();
        for (_, _, reply) in self.pending.drain(..) {
            let _ = reply.send(Err(Error::Closed));
        }
        for (_, reply) in self.awaiting.drain() {
            let _ = reply.send(Err(Error::Closed));
        }
        self.state.set(LinkState::Closed);
    }
}

/// A subscription's id on the socket.
fn sub_id(id: u64) -> String {
    format!("s{id}")
}

fn parse_sub(id: &str) -> Option<u64> {
    id.strip_prefix('s')?.parse().ok()
}

/// The longest delay of backoff number `attempt`: the first delay doubled
/// per failed attempt, capped; the delay itself is drawn between half of
/// it and all of it.
fn max_delay(options: &LiveOptions, attempt: u32) -> Duration {
    options
        .backoff
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(options.max_backoff)
}
