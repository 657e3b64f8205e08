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
//! JetStream for the last message stored on its site's subjects of each
//! channel (`plantd.<site>.up.>` in `PLANTD_TELEMETRY`,
//! `plantd.<site>.log.>` in `PLANTD_LOGS`, `plantd.<site>.agg.>` in
//! `PLANTD_AGGREGATES` for the edge's analytics results) and, when its
//! message id is one of this journal's, skips the records of that channel
//! up to it (see [`resume_point`]): on one connection a stream stores a
//! prefix of what was sent to it, in order, so its records before that one
//! are stored too. The streams store independently, so one stream's last
//! message says nothing about another's records: the cursor jumps to the
//! lowest of them, and past it each record is skipped only when its own
//! stream holds it (journal records interleave log lines, telemetry and
//! results). With a [`SiteLease`] the uplink also
//! confirms the site's lease first and publishes only while it holds it.
//! The first publish on a new connection goes alone, so a stream
//! that JetStream has not loaded yet refuses one publish rather than some
//! of a window. The same resend happens after a crash: the persisted
//! cursor may lag, never lead.
//!
//! Health is honest: [`UplinkStatus`] says `Stalled` when there is a
//! backlog and no acknowledgement for `stall_after`, whatever the
//! connection claims.

//!
//! | module | what it holds |
//! |---|---|
//! | `status` | [`UplinkConfig`], [`UplinkState`], [`UplinkStatus`] |
//! | `connection` | [`UplinkConnector`]: the uplink's own, never-reconnecting connections |
//! | `window` | the publishes awaiting acknowledgement, and reading an acknowledgement |
//! | `resume` | what JetStream already holds when a connection starts ([`resume_point`]) |

mod connection;
mod resume;
mod status;
mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use plantd_journal::{Identity, Journal};
use rand::Rng as _;
use tokio::sync::watch;

pub use connection::{UplinkConnection, UplinkConnector};
pub use resume::resume_point;
pub use status::{UplinkConfig, UplinkState, UplinkStatus};

use crate::lease::{LeaseState, SiteLease};
use crate::message::UplinkMessage;
use window::{Pending, Window, parse_ack};

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
            stored_upto: resume::StoredUpTo::default(),
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
    /// What each stream held when the connection started: records it
    /// holds are not sent again.
    stored_upto: resume::StoredUpTo,
}

/// Progress not yet published; see [`Pump::publish`].
#[derive(Default)]
struct Unpublished {
    acks: u64,
    /// Records not sent because their stream already held them.
    already_stored: u64,
    duplicates: u64,
    reordered: u64,
    sent: u64,
}

/// Publish progress at least every this many acknowledgements.
const PUBLISH_EVERY: u64 = 256;

impl Pump {
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
                        Err(plantd_journal::JournalError::Closed) => {
                            tracing::info!("uplink: journal closed");
                            break Stop::JournalClosed;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "uplink: cannot read the journal; the uplink stops");
                            break Stop::JournalClosed;
                        }
                    };
                    self.w.last_read = rec.seq;
                    let decoded = UplinkMessage::decode(rec.payload.clone())
                        .ok()
                        .and_then(|m| m.channel_and_subject(&self.cfg.site).map(|s| (m, s)));
                    let Some((msg, (channel, subject))) = decoded else {
                        tracing::error!(seq = rec.seq, "uplink: undecodable journal record skipped");
                        self.status.send_modify(|s| s.undeliverable += 1);
                        self.journal.ack(self.w.cursor());
                        continue;
                    };
                    if self.stored_upto.holds(channel, rec.seq) {
                        // Its stream held it when this connection started.
                        self.unpublished.already_stored += 1;
                        if self.w.outstanding.is_empty() {
                            self.publish();
                        }
                        continue;
                    }
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
        if u.acks == 0 && u.already_stored == 0 {
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
            s.already_stored += u.already_stored;
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
