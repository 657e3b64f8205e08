//! The uplink: journal → JetStream, exactly once and in order.
//!
//! One task reads the journal from just after the acknowledged cursor and
//! publishes each record with message id `<site>:<seq>`. Up to `window`
//! records are outstanding, with at most one publish in flight per subject
//! (see `Window` in the source for why); the journal's cursor advances to just below the
//! oldest unacknowledged record (which frees disk space). On any
//! failure — connection lost, ack timeout, stream missing — every
//! in-flight publish is abandoned, the reader goes back to the cursor, and
//! after a backoff with jitter the records are sent again; JetStream's
//! duplicate window drops the ones that had arrived. The same happens after
//! a crash: the persisted cursor may lag, never lead.
//!
//! Health is honest: [`UplinkStatus`] says `Stalled` when there is a
//! backlog and no acknowledgement for `stall_after`, whatever the
//! connection claims.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{ContextBuilder, PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use plantd_journal::Journal;
use plantd_shared::subject::Site;
use rand::Rng as _;
use tokio::sync::watch;

use crate::message::UplinkMessage;

/// Uplink settings.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// This edge's site: the subject prefix and the message id prefix.
    pub site: Site,
    /// Publishes awaiting acknowledgement at most.
    pub window: usize,
    /// How long one acknowledgement may take before the link is considered
    /// failed.
    pub ack_timeout: Duration,
    /// A backlog with no acknowledgement for this long is reported as
    /// stalled.
    pub stall_after: Duration,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Start from this sequence instead of just after the cursor (recovery
    /// tooling and tests; resent records are de-duplicated by JetStream).
    pub start: Option<u64>,
}

impl UplinkConfig {
    /// Defaults for `site`: a window of 4096, 5 s ack timeout, stalled
    /// after 10 s, backoff from 100 ms to 10 s.
    pub fn new(site: Site) -> Self {
        Self {
            site,
            window: 4096,
            ack_timeout: Duration::from_secs(5),
            stall_after: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            start: None,
        }
    }
}

/// Where the uplink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkState {
    /// Started, nothing acknowledged yet.
    Starting,
    /// Publishing and being acknowledged.
    Up,
    /// A publish failed; retrying after a backoff.
    Down,
    /// A backlog exists and nothing was acknowledged for `stall_after`.
    Stalled,
    /// Stopped by shutdown.
    Stopped,
}

impl UplinkState {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkState::Starting => "starting",
            UplinkState::Up => "up",
            UplinkState::Down => "down",
            UplinkState::Stalled => "stalled",
            UplinkState::Stopped => "stopped",
        }
    }
}

/// A snapshot of the uplink, for `/readyz` and metrics.
#[derive(Debug, Clone)]
pub struct UplinkStatus {
    /// Current state.
    pub state: UplinkState,
    /// Highest journal sequence JetStream acknowledged.
    pub acked_seq: u64,
    /// Publishes awaiting acknowledgement.
    pub in_flight: usize,
    /// When the last acknowledgement arrived.
    pub last_ack: Option<Instant>,
    /// Publishes sent (including resends).
    pub published: u64,
    /// Acknowledgements received.
    pub acked: u64,
    /// Records sent again after a failure.
    pub resends: u64,
    /// Acknowledgements that JetStream flagged as duplicates.
    pub duplicates: u64,
    /// Failures that forced a resend.
    pub failures: u64,
    /// Records that could not be decoded or mapped (skipped, logged).
    pub undeliverable: u64,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

impl UplinkStatus {
    fn new(acked_seq: u64) -> Self {
        Self {
            state: UplinkState::Starting,
            acked_seq,
            in_flight: 0,
            last_ack: None,
            published: 0,
            acked: 0,
            resends: 0,
            duplicates: 0,
            failures: 0,
            undeliverable: 0,
            last_error: None,
        }
    }

    /// Whether the uplink is making progress (what `/readyz` reports).
    pub fn is_healthy(&self) -> bool {
        matches!(self.state, UplinkState::Up | UplinkState::Starting)
    }
}

/// The journal → JetStream publisher. See the module documentation.
#[derive(Debug)]
pub struct Uplink {
    /// The journal to drain.
    journal: Journal,
    /// JetStream, with an ack window matching ours.
    js: async_nats::jetstream::Context,
    /// Settings.
    cfg: UplinkConfig,
    /// Published status.
    status: Arc<watch::Sender<UplinkStatus>>,
}

impl Uplink {
    /// An uplink draining `journal` over `client`.
    pub fn new(journal: Journal, client: async_nats::Client, cfg: UplinkConfig) -> Self {
        let js = ContextBuilder::new()
            .timeout(cfg.ack_timeout)
            .max_ack_inflight(cfg.window.max(1))
            .build(client);
        let (status, _) = watch::channel(UplinkStatus::new(journal.acked()));
        Self {
            journal,
            js,
            cfg,
            status: Arc::new(status),
        }
    }

    /// Follows the uplink's status.
    pub fn status(&self) -> watch::Receiver<UplinkStatus> {
        self.status.subscribe()
    }

    /// Publishes until `shutdown` resolves. In-flight publishes are given
    /// up to `ack_timeout` to be acknowledged before it returns; anything
    /// unacknowledged is resent by the next run.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            journal,
            js,
            cfg,
            status,
        } = self;
        let start = cfg.start.unwrap_or_else(|| journal.acked() + 1);
        let mut w = Window::new(journal.reader(start), start - 1);
        let mut backoff = cfg.backoff_min;
        let mut last_progress = Instant::now();
        let mut stall_check = tokio::time::interval(Duration::from_millis(500));
        let mut resend_from: Option<u64> = None;
        tokio::pin!(shutdown);
        loop {
            if let Some(from) = resend_from.take() {
                let abandoned = w.reset(from);
                status.send_modify(|s| {
                    s.resends += abandoned;
                    s.in_flight = 0;
                });
                let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                let wait = backoff + Duration::from_millis(jitter);
                tracing::debug!(?wait, from, "uplink: retrying after backoff");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(wait) => {}
                }
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
            let window_open = w.outstanding.len() < cfg.window;
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some((seq, subject, ack)) = w.inflight.next(), if !w.inflight.is_empty() => {
                    match ack {
                        Ok(ack) => {
                            w.outstanding.remove(&seq);
                            let cursor = w.cursor();
                            journal.ack(cursor);
                            last_progress = Instant::now();
                            backoff = cfg.backoff_min;
                            // The subject is free: send its next waiting record.
                            if let Err(e) = w.release(&js, &cfg.site, &subject).await {
                                resend_from = Some(fail(&status, &journal, &e));
                            }
                            status.send_modify(|s| {
                                if s.state != UplinkState::Up {
                                    tracing::info!(acked_seq = cursor, "uplink is up");
                                }
                                s.state = UplinkState::Up;
                                s.acked_seq = cursor;
                                s.acked += 1;
                                s.duplicates += u64::from(ack.duplicate);
                                s.in_flight = w.outstanding.len();
                                s.last_ack = Some(last_progress);
                            });
                        }
                        Err(e) => {
                            tracing::warn!(seq, "uplink publish not acknowledged");
                            resend_from = Some(fail(&status, &journal, &e));
                        }
                    }
                }
                rec = w.reader.next(), if window_open => {
                    let rec = match rec {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::info!(error = %e, "uplink: journal closed");
                            break;
                        }
                    };
                    w.last_read = rec.seq;
                    let decoded = UplinkMessage::decode(rec.payload.clone())
                        .ok()
                        .and_then(|m| m.subject(&cfg.site).map(|s| (m, s)));
                    let Some((msg, subject)) = decoded else {
                        tracing::error!(seq = rec.seq, "uplink: undecodable journal record skipped");
                        status.send_modify(|s| s.undeliverable += 1);
                        journal.ack(w.cursor());
                        continue;
                    };
                    w.outstanding.insert(rec.seq);
                    match w.submit(&js, &cfg.site, rec.seq, subject, msg).await {
                        Ok(sent) => status.send_modify(|s| {
                            s.published += u64::from(sent);
                            s.in_flight = w.outstanding.len();
                        }),
                        Err(e) => resend_from = Some(fail(&status, &journal, &e)),
                    }
                }
                _ = stall_check.tick() => {
                    let backlog = journal.durable() > journal.acked();
                    let stalled = backlog && last_progress.elapsed() >= cfg.stall_after;
                    status.send_if_modified(|s| {
                        if stalled && s.state != UplinkState::Stalled {
                            tracing::warn!(
                                backlog = journal.durable() - journal.acked(),
                                since_last_ack = ?last_progress.elapsed(),
                                "uplink stalled: backlog and no acknowledgement"
                            );
                            s.state = UplinkState::Stalled;
                            true
                        } else if !backlog && s.state == UplinkState::Stalled {
                            s.state = UplinkState::Up;
                            true
                        } else {
                            false
                        }
                    });
                    if !backlog {
                        last_progress = Instant::now();
                    }
                }
            }
        }
        // Give what is in flight a last chance to be acknowledged.
        let deadline = tokio::time::Instant::now() + cfg.ack_timeout;
        while !w.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, w.inflight.next()).await {
                Ok(Some((seq, _, Ok(_)))) => {
                    w.outstanding.remove(&seq);
                }
                _ => break,
            }
        }
        journal.ack(w.cursor());
        status.send_modify(|s| {
            s.state = UplinkState::Stopped;
            s.acked_seq = journal.acked();
            s.in_flight = 0;
        });
    }
}

type Acked = (u64, String, Result<PublishAck, PublishError>);
type AckFuture = Pin<Box<dyn Future<Output = Acked> + Send>>;

/// The records between the cursor and the reader: at most one publish in
/// flight per subject (so a message lost with a dropped connection can
/// never be overtaken by a later one on the same topic that the client
/// buffered and flushed after reconnecting), the rest waiting in order.
struct Window {
    /// Reads the journal.
    reader: plantd_journal::Reader,
    /// Sequences read and not yet acknowledged (in flight or waiting).
    outstanding: BTreeSet<u64>,
    /// Highest sequence read.
    last_read: u64,
    /// Subjects with a publish in flight, and the records waiting behind it.
    busy: HashMap<String, VecDeque<(u64, UplinkMessage)>>,
    /// Acknowledgements to come.
    inflight: FuturesUnordered<AckFuture>,
}

impl Window {
    fn new(reader: plantd_journal::Reader, last_read: u64) -> Self {
        Self {
            reader,
            outstanding: BTreeSet::new(),
            last_read,
            busy: HashMap::new(),
            inflight: FuturesUnordered::new(),
        }
    }

    /// Everything up to here is acknowledged.
    fn cursor(&self) -> u64 {
        self.outstanding
            .first()
            .map(|s| s - 1)
            .unwrap_or(self.last_read)
    }

    /// Abandons everything outstanding and rewinds to `from`; returns how
    /// many records will be sent again.
    fn reset(&mut self, from: u64) -> u64 {
        let abandoned = self.outstanding.len() as u64;
        self.outstanding.clear();
        self.busy.clear();
        self.inflight = FuturesUnordered::new();
        self.reader.seek(from);
        self.last_read = from - 1;
        abandoned
    }

    /// Sends `msg` now if its subject is free, else queues it behind the
    /// one in flight. Returns whether it was sent.
    async fn submit(
        &mut self,
        js: &async_nats::jetstream::Context,
        site: &Site,
        seq: u64,
        subject: String,
        msg: UplinkMessage,
    ) -> Result<bool, PublishError> {
        if let Some(queue) = self.busy.get_mut(&subject) {
            queue.push_back((seq, msg));
            return Ok(false);
        }
        self.send(js, site, seq, subject.clone(), msg).await?;
        self.busy.insert(subject, VecDeque::new());
        Ok(true)
    }

    /// The publish on `subject` was acknowledged: send the next one waiting.
    async fn release(
        &mut self,
        js: &async_nats::jetstream::Context,
        site: &Site,
        subject: &str,
    ) -> Result<(), PublishError> {
        let next = self.busy.get_mut(subject).and_then(VecDeque::pop_front);
        match next {
            Some((seq, msg)) => self.send(js, site, seq, subject.to_owned(), msg).await,
            None => {
                self.busy.remove(subject);
                Ok(())
            }
        }
    }

    async fn send(
        &mut self,
        js: &async_nats::jetstream::Context,
        site: &Site,
        seq: u64,
        subject: String,
        msg: UplinkMessage,
    ) -> Result<(), PublishError> {
        let headers = msg.headers(site, seq);
        let fut = js
            .publish_with_headers(subject.clone(), headers, msg.payload)
            .await?;
        self.inflight.push(Box::pin(async move {
            let r = fut.into_future().await;
            (seq, subject, r)
        }));
        Ok(())
    }
}

/// Records a failure and returns where to resend from.
fn fail(status: &watch::Sender<UplinkStatus>, journal: &Journal, e: &PublishError) -> u64 {
    let from = journal.acked() + 1;
    let msg = describe(e);
    tracing::warn!(resend_from = from, error = %msg, "uplink failed; will resend");
    status.send_modify(|s| {
        s.state = UplinkState::Down;
        s.failures += 1;
        s.last_error = Some(msg);
    });
    from
}

fn describe(e: &PublishError) -> String {
    match e.kind() {
        PublishErrorKind::StreamNotFound => {
            "no JetStream stream for this site's subjects (create it or run with --create-streams)"
                .into()
        }
        PublishErrorKind::TimedOut => "JetStream did not acknowledge in time".into(),
        _ => e.to_string(),
    }
}
