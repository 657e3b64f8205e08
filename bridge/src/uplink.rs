//! The uplink: journal → JetStream, exactly once and in order.
//!
//! One task reads the journal from just after the acknowledged cursor and
//! publishes each record with message id `<site>:<journal id>:<seq>`
//! ([`plantd_shared::headers::message_id`]; the journal id is the one of the
//! journal life that wrote the record), pipelined: up to
//! `window` publishes await their acknowledgement; the journal's cursor
//! advances to just below the oldest unacknowledged record (which frees
//! disk space).
//!
//! Order per topic holds because the uplink owns its connection and never
//! lets it reconnect by itself ([`UplinkConnector`]): on one connection the
//! server receives a prefix of what was sent, in order. On any failure —
//! connection lost, ack timeout, a refused publish — the uplink waits for
//! what is still in flight, drops the connection (and whatever the client
//! still queued), backs off with jitter, opens a new connection and resends
//! from the cursor; JetStream's duplicate window drops the records that had
//! arrived.
//!
//! Exactly once does not depend on the outage being shorter than that
//! window: before the first publish of every connection the uplink asks
//! JetStream for the last message stored on its site's subjects
//! (`plantd.<site>.up.>`) and, when its message id is one of this
//! journal's, skips everything up to it (see [`resume_point`]): on one
//! connection the server stores a prefix of what was sent, in order, so
//! everything before it is stored too. With a [`SiteLease`] the uplink also
//! confirms the site's lease first and publishes only while it holds it.
//! The first publish on a new connection goes alone, so a stream
//! that JetStream has not loaded yet refuses one publish rather than some
//! of a window. The same resend happens after a crash: the persisted
//! cursor may lag, never lead.
//!
//! Health is honest: [`UplinkStatus`] says `Stalled` when there is a
//! backlog and no acknowledgement for `stall_after`, whatever the
//! connection claims.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use plantd_journal::{Identity, Journal, Located};
use plantd_shared::headers::{self, MessageId};
use plantd_shared::lease::LeaseLife;
use plantd_shared::subject::{Channel, Site};
use rand::Rng as _;
use tokio::sync::watch;

use crate::lease::{LeaseState, SiteLease};
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
    /// Ask JetStream what it last stored for this site on every new
    /// connection and skip what it holds (on by default; off, resends rely
    /// on the duplicate window alone).
    pub resume: bool,
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
            resume: true,
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
    /// Another live edge journal holds the site's lease: not publishing
    /// (`last_error` says who); retried until it is gone.
    Refused,
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
            UplinkState::Refused => "refused",
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
    /// Records not sent again because JetStream proved it already had them
    /// when a connection started.
    pub already_stored: u64,
    /// Acknowledgements that JetStream flagged as duplicates.
    pub duplicates: u64,
    /// Failures that forced a resend.
    pub failures: u64,
    /// Records that could not be decoded or mapped (skipped, logged).
    pub undeliverable: u64,
    /// Publishes stored after an earlier one on the same topic had failed
    /// (the topic is out of order in the stream; logged as an error).
    pub reordered: u64,
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
            already_stored: 0,
            duplicates: 0,
            failures: 0,
            undeliverable: 0,
            reordered: 0,
            last_error: None,
        }
    }

    /// Whether the uplink is making progress (what `/readyz` reports).
    pub fn is_healthy(&self) -> bool {
        matches!(self.state, UplinkState::Up | UplinkState::Starting)
    }
}

/// Opens the uplink's own NATS connections, one per attempt.
///
/// The uplink never shares its connection and never lets it reconnect by
/// itself: a client that reconnects flushes the publishes it had queued
/// while disconnected, behind publishes that died with the old connection,
/// and that would reorder a topic. Instead each connection is used until it
/// fails and then dropped; the uplink opens a fresh one and resends from the
/// acknowledged cursor. On one TCP connection the server receives a prefix
/// of what was sent, in order, so publishes can be pipelined freely.
#[derive(Clone)]
pub struct UplinkConnector {
    /// Server URLs; tried in turn, one per connection attempt.
    servers: Vec<String>,
    /// Authentication, TLS and naming, as for the edge's other connection.
    options: async_nats::ConnectOptions,
    /// Next server to try.
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for UplinkConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkConnector")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// One uplink connection and a flag that turns true when it is lost.
pub struct UplinkConnection {
    /// The client; it does not reconnect.
    pub client: async_nats::Client,
    /// Becomes `true` when the connection is lost or closed.
    pub lost: watch::Receiver<bool>,
}

impl UplinkConnector {
    /// A connector for `urls` (one URL, or several separated by commas) with
    /// `options` (credentials, TLS, name). Reconnection and the event
    /// callback of `options` are replaced.
    pub fn new(urls: &str, options: async_nats::ConnectOptions) -> Self {
        let servers = urls
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            servers,
            options,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Opens a connection to the next server. It makes one attempt and
    /// never reconnects: when it drops, `lost` becomes true and the client
    /// closes, discarding anything it still had queued.
    pub async fn connect(&self) -> Result<UplinkConnection, async_nats::ConnectError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let url = self
            .servers
            .get(i % self.servers.len().max(1))
            .cloned()
            .unwrap_or_default();
        let (tx, lost) = watch::channel(false);
        let tx = Arc::new(tx);
        // One connection attempt in all: the initial connect uses it, so the
        // first disconnect closes the client instead of reconnecting it.
        let client = self
            .options
            .clone()
            .max_reconnects(1)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected
                        | async_nats::Event::Closed
                        | async_nats::Event::ClientError(_) => {
                            tracing::info!(%event, "uplink connection lost");
                            tx.send_replace(true);
                        }
                        other => tracing::debug!(event = %other, "uplink connection event"),
                    }
                }
            })
            .connect(url.as_str())
            .await?;
        Ok(UplinkConnection { client, lost })
    }
}

/// The journal → JetStream publisher. See the module documentation.
#[derive(Debug)]
pub struct Uplink {
    /// The journal to drain.
    journal: Journal,
    /// Opens the uplink's connections.
    connector: UplinkConnector,
    /// Settings.
    cfg: UplinkConfig,
    /// Published status.
    status: Arc<watch::Sender<UplinkStatus>>,
    /// The site lease to hold while publishing, if any.
    lease: Option<Arc<SiteLease>>,
}

/// Why a connection's pumping stopped.
enum Stop {
    /// Shutdown was asked for.
    Shutdown,
    /// The connection or a publish failed; reconnect and resend.
    Failed(String),
    /// Another live journal holds the site's lease; the reason says which.
    Refused(String),
    /// The journal was closed.
    JournalClosed,
}

impl Uplink {
    /// An uplink draining `journal` over connections from `connector`.
    pub fn new(journal: Journal, connector: UplinkConnector, cfg: UplinkConfig) -> Self {
        let (status, _) = watch::channel(UplinkStatus::new(journal.acked()));
        Self {
            journal,
            connector,
            cfg,
            status: Arc::new(status),
            lease: None,
        }
    }

    /// Publishes only while `lease` is held: confirmed before the first
    /// publish of every connection, followed while connected.
    pub fn with_lease(mut self, lease: Arc<SiteLease>) -> Self {
        self.lease = Some(lease);
        self
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
            connector,
            cfg,
            status,
            lease,
        } = self;
        let start = cfg.start.unwrap_or_else(|| journal.acked() + 1);
        let mut p = Pump {
            identity: journal.identity().clone(),
            journal,
            cfg,
            status,
            lease,
            w: Window::new(start),
            last_progress: Instant::now(),
            stall_check: tokio::time::interval(Duration::from_millis(500)),
            unpublished: Unpublished::default(),
            refused_floor: None,
        };
        let mut reader = p.journal.reader(start);
        let mut backoff = p.cfg.backoff_min;
        tokio::pin!(shutdown);
        loop {
            let conn = tokio::select! {
                _ = &mut shutdown => break,
                c = connector.connect() => c,
            };
            let stop = match conn {
                Ok(conn) => {
                    // Asking NATS may take a while when it is slow: never
                    // hold up a shutdown for it.
                    let prepared = tokio::select! {
                        _ = &mut shutdown => Err(Stop::Shutdown),
                        r = p.prepare(&conn, &mut reader) => r,
                    };
                    let stop = match prepared {
                        Ok(()) => p.pump(&conn, &mut reader, &mut shutdown).await,
                        Err(stop) => stop,
                    };
                    // Dropping the client closes its connection: nothing it
                    // still queued can reach the server after this.
                    drop(conn);
                    stop
                }
                Err(e) => Stop::Failed(format!("cannot connect to NATS: {e}")),
            };
            let (error, refused) = match stop {
                Stop::Shutdown | Stop::JournalClosed => break,
                Stop::Failed(error) => (error, false),
                Stop::Refused(why) => (why, true),
            };
            if p.w.progressed {
                backoff = p.cfg.backoff_min;
            }
            let from = p.journal.acked() + 1;
            let abandoned = p.w.reset(from);
            reader.seek(from);
            if refused {
                tracing::error!(resend_from = from, reason = %error, "uplink refused: another edge holds this site");
            } else {
                tracing::warn!(resend_from = from, error = %error, "uplink failed; will resend");
            }
            p.status.send_modify(|s| {
                s.state = if refused {
                    UplinkState::Refused
                } else {
                    UplinkState::Down
                };
                s.failures += u64::from(!refused);
                s.resends += abandoned;
                s.in_flight = 0;
                s.last_error = Some(error);
            });
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
            let wait = if refused {
                // Try again about when the holder would have renewed.
                plantd_shared::lease::RENEW_EVERY
            } else {
                backoff + Duration::from_millis(jitter)
            };
            tracing::debug!(?wait, from, "uplink: reconnecting after backoff");
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = &mut sleep => break,
                    _ = p.stall_check.tick() => p.check_stall(),
                }
            }
            backoff = (backoff * 2).min(p.cfg.backoff_max);
        }
        let cursor = p.w.cursor();
        p.journal.ack(cursor);
        p.status.send_modify(|s| {
            s.state = UplinkState::Stopped;
            s.acked_seq = p.journal.acked();
            s.in_flight = 0;
        });
    }
}

/// The uplink's state across connections.
struct Pump {
    journal: Journal,
    /// The identities of the journal's records (for their message ids).
    identity: Arc<Identity>,
    cfg: UplinkConfig,
    status: Arc<watch::Sender<UplinkStatus>>,
    /// The site lease to hold, if any.
    lease: Option<Arc<SiteLease>>,
    w: Window,
    last_progress: Instant,
    stall_check: tokio::time::Interval,
    /// Acknowledgements counted here and not yet published (to the status
    /// watch and the journal's cursor), so a burst of acks costs one
    /// wake-up of watchers and of the journal writer, not one per message.
    unpublished: Unpublished,
    /// The lowest record JetStream refused and that is not acknowledged
    /// since: a resume never skips past it (later records may have been
    /// stored while it was not).
    refused_floor: Option<u64>,
}

/// Progress not yet published; see [`Pump::publish`].
#[derive(Default)]
struct Unpublished {
    acks: u64,
    duplicates: u64,
    reordered: u64,
    sent: u64,
}

/// Publish progress at least every this many acknowledgements.
const PUBLISH_EVERY: u64 = 256;

impl Pump {
    /// Gets a new connection ready before its first publish: confirms the
    /// site lease (when there is one) and learns what JetStream already
    /// stored for this journal, skipping it (when `resume` is on).
    async fn prepare(
        &mut self,
        conn: &UplinkConnection,
        reader: &mut plantd_journal::Reader,
    ) -> Result<(), Stop> {
        if let Some(lease) = &self.lease {
            match lease.confirm().await {
                Ok(LeaseState::Held) => {}
                Ok(LeaseState::Refused(why)) => return Err(Stop::Refused(why)),
                Ok(LeaseState::Unknown) => {
                    return Err(Stop::Failed("site lease not confirmed".into()));
                }
                Err(e) => return Err(Stop::Failed(e.to_string())),
            }
        }
        if !self.cfg.resume {
            return Ok(());
        }
        let stored = last_stored(&conn.client, &self.cfg.site)
            .await
            .map_err(Stop::Failed)?;
        let acked = self.journal.acked();
        if self.refused_floor.is_some_and(|r| r <= acked) {
            self.refused_floor = None;
        }
        let predecessor = self
            .lease
            .as_ref()
            .map(|l| l.predecessor_lives())
            .unwrap_or_default();
        let mut upto = resume_point(
            &self.identity,
            stored.as_ref().map(|(id, seq)| (id.as_str(), *seq)),
            acked,
            &predecessor,
        );
        if let Some(r) = self.refused_floor {
            upto = upto.min(r - 1);
        }
        // Only records already written can have been stored.
        upto = upto.min(self.journal.durable());
        if let Some(lease) = &self.lease {
            lease.resumed();
        }
        let position = self.w.cursor();
        if upto > position {
            let skipped = upto - position;
            tracing::info!(
                from = position + 1,
                to = upto,
                "uplink: JetStream already holds these records; not sending them again"
            );
            self.journal.ack(upto);
            self.w.reset(upto + 1);
            reader.seek(upto + 1);
            self.status.send_modify(|s| {
                s.already_stored += skipped;
                s.acked_seq = upto;
            });
        }
        Ok(())
    }

    /// Publishes over `conn` until it fails, the journal closes or
    /// `shutdown` resolves, then waits (up to the ack timeout) for what is
    /// still in flight, so the cursor reflects everything stored before the
    /// connection is dropped.
    ///
    /// Acknowledgements come back on one wildcard inbox of this connection
    /// (`<inbox>.<journal sequence>`), not one request each: the window, not
    /// a future per message, tracks what is outstanding. The first publish
    /// on a connection is sent alone and must be acknowledged before the
    /// window opens, so a stream that is not there yet (JetStream still
    /// starting) refuses one publish, not a window of them of which later
    /// ones might then be stored first.
    async fn pump(
        &mut self,
        conn: &UplinkConnection,
        reader: &mut plantd_journal::Reader,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    ) -> Stop {
        let prefix = conn.client.new_inbox();
        let mut acks = match conn.client.subscribe(format!("{prefix}.*")).await {
            Ok(s) => s,
            Err(e) => return Stop::Failed(format!("cannot subscribe to acknowledgements: {e}")),
        };
        let mut lost = conn.lost.clone();
        let mut lease = self.lease.as_ref().map(|l| l.state());
        self.w.progressed = false;
        let stop = loop {
            let limit = if self.w.progressed {
                self.cfg.window
            } else {
                1
            };
            let window_open = self.w.outstanding.len() < limit;
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => break Stop::Shutdown,
                _ = async { lost.wait_for(|l| *l).await.map(|_| ()) } => {
                    return Stop::Failed("NATS connection lost".into());
                }
                Ok(state) = async {
                    match lease.as_mut() {
                        Some(l) => l.wait_for(|s| matches!(s, LeaseState::Refused(_))).await.map(|s| s.clone()),
                        None => std::future::pending().await,
                    }
                } => {
                    if let LeaseState::Refused(why) = state {
                        break Stop::Refused(why);
                    }
                }
                Some(msg) = acks.next() => {
                    if let Err(e) = self.on_ack(&msg) {
                        break Stop::Failed(e);
                    }
                }
                rec = reader.next(), if window_open => {
                    let rec = match rec {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::info!(error = %e, "uplink: journal closed");
                            break Stop::JournalClosed;
                        }
                    };
                    self.w.last_read = rec.seq;
                    let decoded = UplinkMessage::decode(rec.payload.clone())
                        .ok()
                        .and_then(|m| m.subject(&self.cfg.site).map(|s| (m, s)));
                    let Some((msg, subject)) = decoded else {
                        tracing::error!(seq = rec.seq, "uplink: undecodable journal record skipped");
                        self.status.send_modify(|s| s.undeliverable += 1);
                        self.journal.ack(self.w.cursor());
                        continue;
                    };
                    let subject = async_nats::Subject::from(subject);
                    let journal_id = self.identity.id_for(rec.seq);
                    let headers = msg.headers(&self.cfg.site, journal_id.as_str(), rec.seq);
                    let sent = conn
                        .client
                        .publish_with_reply_and_headers(
                            subject.clone(),
                            format!("{prefix}.{}", rec.seq),
                            headers,
                            msg.payload,
                        )
                        .await;
                    if let Err(e) = sent {
                        break Stop::Failed(format!("publish: {e}"));
                    }
                    self.w.outstanding.insert(
                        rec.seq,
                        Pending {
                            subject,
                            sent: Instant::now(),
                        },
                    );
                    self.unpublished.sent += 1;
                }
                _ = self.stall_check.tick() => {
                    self.publish();
                    self.check_stall();
                    if self.w.oldest_sent().is_some_and(|t| t.elapsed() >= self.cfg.ack_timeout) {
                        break Stop::Failed("JetStream did not acknowledge in time".into());
                    }
                }
            }
            if self.w.outstanding.is_empty() || self.unpublished.acks >= PUBLISH_EVERY {
                self.publish();
            }
        };
        // Settle: what is in flight is acknowledged, refused or given up.
        let deadline = tokio::time::Instant::now() + self.cfg.ack_timeout;
        while !self.w.outstanding.is_empty() {
            match tokio::time::timeout_at(deadline, acks.next()).await {
                Ok(Some(msg)) => {
                    let _ = self.on_ack(&msg);
                }
                _ => break,
            }
        }
        self.w.failed_subjects.clear();
        self.publish();
        stop
    }

    /// Handles one message on the acknowledgement inbox: a stored publish
    /// is counted; a refusal is returned as the error to fail with.
    fn on_ack(&mut self, msg: &async_nats::Message) -> Result<(), String> {
        let Some(seq) = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return Ok(());
        };
        let Some(pending) = self.w.outstanding.remove(&seq) else {
            return Ok(());
        };
        match parse_ack(msg) {
            Ok(duplicate) => {
                self.acked(seq, &pending.subject, duplicate);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(seq, subject = %pending.subject, error = %e, "uplink publish refused");
                self.w.failed_subjects.insert(pending.subject.to_string());
                self.w.refused = Some(self.w.refused.map_or(seq, |r| r.min(seq)));
                self.refused_floor = Some(self.refused_floor.map_or(seq, |r| r.min(seq)));
                Err(e)
            }
        }
    }

    /// Records a successful acknowledgement (published in batches by
    /// [`Pump::publish`]).
    fn acked(&mut self, seq: u64, subject: &async_nats::Subject, duplicate: bool) {
        if self.w.failed_subjects.contains(subject.as_str()) {
            // An earlier publish on this topic failed and this later one was
            // stored anyway: the resend will land after it. Only a refusal
            // by the server that clears within one window can do this.
            tracing::error!(
                seq,
                subject = %subject,
                "uplink: a publish was stored after an earlier one on the same topic failed; \
                 the topic is out of order in the stream"
            );
            self.unpublished.reordered += 1;
        }
        self.unpublished.acks += 1;
        self.unpublished.duplicates += u64::from(duplicate);
        self.w.progressed = true;
    }

    /// Advances the journal's cursor and publishes the status: what was
    /// acknowledged since the last call.
    fn publish(&mut self) {
        let u = std::mem::take(&mut self.unpublished);
        let in_flight = self.w.outstanding.len();
        if u.acks == 0 {
            if u.sent > 0 {
                self.status.send_if_modified(|s| {
                    s.published += u.sent;
                    s.in_flight = in_flight;
                    false
                });
            }
            return;
        }
        let cursor = self.w.cursor();
        self.journal.ack(cursor);
        self.last_progress = Instant::now();
        let last = self.last_progress;
        self.status.send_modify(|s| {
            if s.state != UplinkState::Up {
                tracing::info!(acked_seq = cursor, "uplink is up");
            }
            s.state = UplinkState::Up;
            s.acked_seq = cursor;
            s.acked += u.acks;
            s.published += u.sent;
            s.duplicates += u.duplicates;
            s.reordered += u.reordered;
            s.in_flight = in_flight;
            s.last_ack = Some(last);
        });
    }

    /// Reports `Stalled` when there is a backlog and nothing was
    /// acknowledged for `stall_after`.
    fn check_stall(&mut self) {
        let backlog = self.journal.durable() > self.journal.acked();
        let stalled = backlog && self.last_progress.elapsed() >= self.cfg.stall_after;
        let journal = &self.journal;
        let since = self.last_progress.elapsed();
        self.status.send_if_modified(|s| {
            if stalled && !matches!(s.state, UplinkState::Stalled | UplinkState::Refused) {
                tracing::warn!(
                    backlog = journal.durable() - journal.acked(),
                    since_last_ack = ?since,
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
            self.last_progress = Instant::now();
        }
    }
}

/// A publish awaiting its acknowledgement.
struct Pending {
    /// Its subject (for order bookkeeping and logs).
    subject: async_nats::Subject,
    /// When it was sent.
    sent: Instant,
}

/// The records between the cursor and the reader.
struct Window {
    /// Records sent and not yet acknowledged, by journal sequence.
    outstanding: BTreeMap<u64, Pending>,
    /// Highest sequence read.
    last_read: u64,
    /// Subjects with a failed publish on the current connection.
    failed_subjects: HashSet<String>,
    /// Whether the current connection has had a publish acknowledged.
    progressed: bool,
    /// The lowest sequence refused on the current connection: the cursor
    /// stays below it, whatever was acknowledged after it.
    refused: Option<u64>,
}

impl Window {
    fn new(start: u64) -> Self {
        Self {
            outstanding: BTreeMap::new(),
            last_read: start - 1,
            failed_subjects: HashSet::new(),
            progressed: false,
            refused: None,
        }
    }

    /// Everything up to here is acknowledged.
    fn cursor(&self) -> u64 {
        let cursor = self
            .outstanding
            .first_key_value()
            .map(|(s, _)| s - 1)
            .unwrap_or(self.last_read);
        match self.refused {
            Some(r) => cursor.min(r - 1),
            None => cursor,
        }
    }

    /// When the oldest unacknowledged publish was sent.
    fn oldest_sent(&self) -> Option<Instant> {
        self.outstanding.first_key_value().map(|(_, p)| p.sent)
    }

    /// Abandons everything outstanding and rewinds to `from`; returns how
    /// many records will be sent again.
    fn reset(&mut self, from: u64) -> u64 {
        let abandoned = self.outstanding.len() as u64;
        self.outstanding.clear();
        self.failed_subjects.clear();
        self.refused = None;
        self.last_read = from - 1;
        abandoned
    }
}

/// The last message JetStream stored on `site`'s uplink subjects
/// (`plantd.<site>.up.>`), as (journal id, sequence) from its message id;
/// `None` when there is none, it is not an uplinked message of this site,
/// or no stream holds the subjects (the first publish then says so).
///
/// # Errors
/// The reason, when JetStream could not be asked.
async fn last_stored(
    client: &async_nats::Client,
    site: &Site,
) -> Result<Option<(String, u64)>, String> {
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let js = async_nats::jetstream::new(client.clone());
    let filter = format!("{}.>", plantd_shared::subject::prefix(site, Channel::Up));
    let name = match js.stream_by_subject(filter.as_str()).await {
        Ok(name) => name,
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot find the stream of {filter}: {e}")),
    };
    let stream = js
        .get_stream_no_info(&name)
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    let last = match stream.get_last_raw_message_by_subject(&filter).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read what stream {name} last stored for {filter}: {e}"
            ));
        }
    };
    Ok(last
        .headers
        .get(headers::MSG_ID)
        .and_then(|v| MessageId::parse(v.as_str()))
        .filter(|id| id.site == site.as_str())
        .map(|id| (id.journal.to_owned(), id.seq)))
}

/// The highest journal sequence JetStream is known to hold, given the last
/// message it stored for this site (`stored`: journal id and sequence) and
/// the acknowledged cursor.
///
/// * No message, or another journal's: only the cursor is known.
/// * One of this journal's records: it and everything before it (one
///   connection stores a prefix of what was sent, in order).
/// * A later record of one of this journal's earlier lives than this
///   journal holds (it is a restored backup or a copy, and the original
///   went on): every record of that life held here.
/// * A record of a later life of the journal this one took the site over
///   from (`predecessor`: its lives, from the site lease), when that
///   journal shares earlier lives with this one (this is its restored
///   backup, and it restarted since): every record of the shared lives up
///   to where that journal's life ended.
pub fn resume_point(
    identity: &Identity,
    stored: Option<(&str, u64)>,
    acked: u64,
    predecessor: &[LeaseLife],
) -> u64 {
    let Some((id, seq)) = stored else {
        return acked;
    };
    match identity.locate(id, seq) {
        Located::Foreign => {
            let Some(j) = predecessor.iter().position(|l| l.id == id) else {
                return acked;
            };
            let mut upto = acked;
            for (i, life) in predecessor[..j].iter().enumerate() {
                let Some((_, mine_last)) = identity.range_of(&life.id) else {
                    continue;
                };
                let theirs_last = predecessor[i + 1].first_seq.saturating_sub(1);
                upto = upto.max(mine_last.unwrap_or(theirs_last).min(theirs_last));
            }
            upto
        }
        Located::Within => acked.max(seq),
        Located::Beyond { last } => acked.max(last),
    }
}

/// Reads a JetStream publish acknowledgement: `Ok(duplicate)` when the
/// message is stored, the reason when it was refused.
fn parse_ack(msg: &async_nats::Message) -> Result<bool, String> {
    if let Some(status) = msg.status {
        return Err(if status == async_nats::StatusCode::NO_RESPONDERS {
            "no JetStream stream for this site's subjects (create it or run with --create-streams)"
                .into()
        } else {
            format!(
                "JetStream answered {status}{}",
                msg.description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )
        });
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        duplicate: bool,
        #[serde(default)]
        seq: u64,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        #[serde(default)]
        code: u16,
        #[serde(default)]
        description: String,
    }
    match serde_json::from_slice::<Reply>(&msg.payload) {
        Ok(Reply { error: Some(e), .. }) => Err(format!(
            "JetStream refused the publish ({}): {}",
            e.code, e.description
        )),
        Ok(Reply { seq: 0, .. }) => Err("JetStream acknowledgement without a sequence".into()),
        Ok(r) => Ok(r.duplicate),
        Err(e) => Err(format!("unreadable JetStream acknowledgement: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use plantd_journal::identity::Life;

    use super::*;

    fn id(c: char) -> String {
        c.to_string().repeat(16)
    }

    fn identity(lives: &[(char, u64)]) -> Identity {
        Identity::from_lives(
            lives
                .iter()
                .map(|(c, first_seq)| Life {
                    id: plantd_journal::JournalId::parse(&id(*c)).expect("id"),
                    first_seq: *first_seq,
                })
                .collect(),
        )
        .expect("identity")
    }

    fn lease(lives: &[(char, u64)]) -> Vec<LeaseLife> {
        lives
            .iter()
            .map(|(c, first_seq)| LeaseLife {
                id: id(*c),
                first_seq: *first_seq,
            })
            .collect()
    }

    #[test]
    fn resume_after_what_the_stream_proves_stored() {
        // Lives a (1..=100) and b (101..), cursor at 40.
        let me = identity(&[('a', 1), ('b', 101)]);
        let a = id('a');
        let b = id('b');
        assert_eq!(resume_point(&me, None, 40, &[]), 40, "nothing stored");
        assert_eq!(resume_point(&me, Some((&a, 80)), 40, &[]), 80);
        assert_eq!(resume_point(&me, Some((&a, 20)), 40, &[]), 40);
        assert_eq!(resume_point(&me, Some((&b, 130)), 40, &[]), 130);
        // Someone went on with life a beyond what we hold: a restored
        // backup; all of a that we hold is stored.
        assert_eq!(resume_point(&me, Some((&a, 900)), 40, &[]), 100);
        // Another journal's message: only the cursor is known.
        assert_eq!(resume_point(&me, Some((&id('z'), 5)), 40, &[]), 40);
    }

    #[test]
    fn a_restored_backup_learns_from_its_predecessors_lives() {
        // We are a backup of a journal with life a (1..=100 here); the
        // original went on with a up to 300 and then life c from 301.
        let me = identity(&[('a', 1), ('d', 101)]);
        let original = lease(&[('a', 1), ('c', 301)]);
        let c = id('c');
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &original), 100);
        // An original restored from an even older backup (its a ended at
        // 60): only what it had is known stored.
        let older = lease(&[('a', 1), ('c', 61)]);
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &older), 60);
        // Without the lineage, or for a stranger: the cursor.
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &[]), 40);
        let stranger = lease(&[('x', 1), ('c', 301)]);
        assert_eq!(resume_point(&me, Some((&c, 450)), 40, &stranger), 40);
    }
}
