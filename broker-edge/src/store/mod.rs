//! The durable session store: persistent sessions, the QoS 1/2 messages
//! waiting for them (queued or in flight), their QoS 2 state, wills waiting
//! out their delay, and retained messages, in one
//! [redb](https://docs.rs/redb) file, `<data-dir>/sessions.redb` (see
//! `docs/decisions/0015-edge-session-store.md`).
//!
//! The router's in-memory state stays the primary copy; the store mirrors
//! it. The router and the links send [`Op`]s on an unbounded channel (a
//! send never waits) to one dedicated thread (`writer`), which applies
//! everything waiting in **one write transaction per batch** and commits it
//! (fsync, unless `--fsync never`). Under load batches grow by themselves
//! while a commit is in progress (group commit).
//!
//! Durability contract:
//! * **Before acknowledging.** A QoS 1/2 message for a persistent session
//!   travels in an [`Op::Route`]: the writer commits it, *then* puts it in
//!   the session's mailbox and sends the publisher its PUBACK/PUBREC (and
//!   every later acknowledgement to the same publisher, which the router
//!   held back behind it to keep their order). A message is never handed to a subscriber or acknowledged to
//!   its publisher before it is on disk. The same commit records the
//!   publisher's incoming QoS 2 packet id, so a resent PUBLISH after a
//!   crash is recognised.
//! * **Progress of a connected session** ([`SessionLog`], one
//!   [`Op::Progress`] per link turn): PUBLISH sent (packet id), PUBREC
//!   received, PUBACK/PUBCOMP received, PUBREL received. PUBREL and
//!   PUBCOMP go to the client only after that commit; removals of
//!   acknowledged messages are write-behind (a crash may redeliver an
//!   acknowledged QoS 1 message with DUP, never lose one).
//! * **Everything else** (subscriptions, retained messages, session
//!   records, waiting wills) is write-behind: durable one commit after the
//!   change, normally milliseconds.
//!
//! What is stored (tables):
//! * `retained`: topic → retained message (`$SYS/` topics are not stored);
//! * `sessions`: client id → session record ([`codec::SessionState`]:
//!   expiry, when it went offline, subscriptions, next packet id);
//! * `queue`: (client id, sequence) → a QoS 1/2 delivery for the session,
//!   queued or in flight;
//! * `inflight`: (client id, sequence) → [`codec::Mark`]: sent with this
//!   packet id, or released (QoS 2, PUBREL sent);
//! * `incoming`: (client id, packet id) → incoming QoS 2 awaiting PUBREL;
//! * `wills`: client id → a will waiting out its delay and when it fires;
//! * `meta`: the format version.

pub mod codec;
mod load;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

#[cfg(test)]
use redb::ReadableDatabase as _;
use redb::{Database, TableDefinition};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::mailbox::{LinkCtl, Mailbox};
use crate::message::{Delivery, Publication, Will};
use crate::metrics::Metrics;
use crate::router::AckTo;
use codec::{DecodeError, SessionState};

/// File name of the store inside the data directory.
pub const FILE_NAME: &str = "sessions.redb";

/// Format of the store's contents (the `meta` table's `format` entry).
/// Format 1 kept in-flight messages and incoming QoS 2 ids inside the
/// session record; it is migrated to the tables of format 2 at load.
const STORE_FORMAT: u64 = 2;

const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const INFLIGHT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inflight");
const INCOMING: TableDefinition<(&str, u16), u8> = TableDefinition::new("incoming");
const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Why the store could not be opened or loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be opened (unreadable, not a redb file, corrupt, or
    /// held by another process).
    #[error("session store {}: cannot open: {source}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// What redb reported.
        source: redb::Error,
    },
    /// Reading or cleaning up the contents at start failed.
    #[error("session store {}: cannot read: {source}", path.display())]
    Read {
        /// The store file.
        path: PathBuf,
        /// What redb reported.
        source: redb::Error,
    },
    /// A record cannot be decoded.
    #[error("session store {}: table {table}, record {key:?}: {source}", path.display())]
    Record {
        /// The store file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The record's key.
        key: String,
        /// What is wrong with it.
        source: DecodeError,
    },
    /// The file was written by a newer, incompatible version.
    #[error("session store {}: format {found} is not supported (this build reads 1 and {STORE_FORMAT})", path.display())]
    Format {
        /// The store file.
        path: PathBuf,
        /// The format found.
        found: u64,
    },
}

/// One persisted session as loaded at start.
#[derive(Debug)]
pub struct LoadedSession {
    /// Client identifier.
    pub client_id: Arc<str>,
    /// Expiry, subscriptions and QoS state: `outgoing` holds the messages
    /// that were in flight (in send order, each with its stored sequence
    /// number), `incoming_qos2` the packet ids awaiting PUBREL.
    pub state: SessionState,
    /// Queued deliveries not yet sent, oldest first (expired ones left
    /// out), each with its stored sequence number.
    pub queue: Vec<Delivery>,
    /// Sequence number for the next stored delivery.
    pub next_seq: u64,
    /// A will waiting out its delay, and when it fires (wall clock, ms
    /// since the epoch; possibly already past).
    pub will: Option<(Will, u64)>,
}

/// Everything loaded from the store at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Retained messages (expired ones left out).
    pub retained: Vec<Publication>,
    /// Persistent sessions that had not expired.
    pub sessions: Vec<LoadedSession>,
    /// Wills of sessions that expired while the broker was down, to
    /// publish at start.
    pub expired_wills: Vec<(Arc<str>, Will)>,
}

/// What the committed file holds, for the gauges.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    sessions: u64,
    retained: u64,
    queued: u64,
    inflight: u64,
    wills: u64,
}

impl Counts {
    fn publish(self, m: &Metrics) {
        m.store_sessions.store(self.sessions, Relaxed);
        m.store_retained.store(self.retained, Relaxed);
        m.store_queued.store(self.queued, Relaxed);
        m.store_inflight.store(self.inflight, Relaxed);
        m.store_wills.store(self.wills, Relaxed);
    }
}

/// An opened store and its contents, before its writer thread starts.
pub struct OpenedStore {
    db: Database,
    path: PathBuf,
    /// What is on disk after load.
    counts: Counts,
    /// What was in it.
    pub loaded: Loaded,
    /// The broker's clock, for the writer's expiry deadlines.
    clock: Clock,
}

impl std::fmt::Debug for OpenedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedStore")
            .field("path", &self.path)
            .field("retained", &self.loaded.retained.len())
            .field("sessions", &self.loaded.sessions.len())
            .finish_non_exhaustive()
    }
}

/// One QoS 1/2 delivery for a persistent session, on its way through the
/// store to the session's mailbox (which holds a slot for it, see
/// [`Mailbox::reserve`]). `delivery.stored` is its sequence number.
#[derive(Debug)]
pub struct StoredDelivery {
    /// The session.
    pub client_id: Arc<str>,
    /// Where it goes once committed.
    pub mailbox: Arc<Mailbox>,
    /// The delivery.
    pub delivery: Delivery,
}

/// Something the router answered and held back until the messages routed
/// before it are committed.
#[derive(Debug)]
pub enum Release {
    /// PUBACK/PUBREC to a publisher.
    Ack {
        /// Where it goes.
        ack: AckTo,
        /// v5 reason code.
        reason: u8,
        /// Counted in the publisher's mailbox as held
        /// ([`Mailbox::hold_ack`]).
        held: bool,
    },
    /// The outcome of an injected publication (a command from the cloud).
    Reply {
        /// Where it goes.
        reply: oneshot::Sender<u8>,
        /// v5 reason code.
        reason: u8,
    },
}

impl Release {
    /// Sends the answer now.
    pub fn send(self) {
        match self {
            Release::Ack { ack, reason, held } => {
                let ctl = LinkCtl::PubAck {
                    pkid: ack.pkid,
                    qos: ack.qos,
                    reason,
                };
                if held {
                    ack.mailbox.release_ack(ack.conn_id, ctl);
                } else {
                    ack.mailbox.push_ctl(ack.conn_id, ctl);
                }
            }
            Release::Reply { reply, reason } => {
                let _ = reply.send(reason);
            }
        }
    }
}

/// What one turn of the router stores before it may answer.
#[derive(Debug, Default)]
pub struct RouteBatch {
    /// Deliveries to persistent sessions.
    pub deliveries: Vec<StoredDelivery>,
    /// Incoming QoS 2 packet ids of persistent publishers, now awaiting
    /// PUBREL.
    pub incoming: Vec<(Arc<str>, u16)>,
    /// Answers to release after the commit, in order.
    pub releases: Vec<Release>,
}

impl RouteBatch {
    /// True when there is nothing to store or release.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.incoming.is_empty() && self.releases.is_empty()
    }

    /// How many changes it stores (deliveries and packet ids).
    pub fn changes(&self) -> usize {
        self.deliveries.len() + self.incoming.len()
    }
}

/// What a connected session's link did in one turn (see [`SessionLog`]).
#[derive(Debug)]
pub struct Progress {
    /// The session.
    pub client_id: Arc<str>,
    /// Its mailbox, for `replies`.
    pub mailbox: Arc<Mailbox>,
    /// The connection `replies` are for.
    pub conn_id: u64,
    /// Stored deliveries sent: (sequence, packet id).
    pub sent: Vec<(u64, u16)>,
    /// Outgoing QoS 2 released (PUBREC received): (sequence, packet id).
    pub released: Vec<(u64, u16)>,
    /// Stored deliveries finished (PUBACK, PUBCOMP, a failed PUBREC, or
    /// dropped unsent because they expired).
    pub done: Vec<u64>,
    /// Incoming QoS 2 packet ids whose PUBREL arrived.
    pub incoming_done: Vec<u16>,
    /// Packets to send once the above is committed (PUBREL, PUBCOMP).
    pub replies: Vec<LinkCtl>,
}

impl Progress {
    fn is_empty(&self) -> bool {
        self.sent.is_empty()
            && self.released.is_empty()
            && self.done.is_empty()
            && self.incoming_done.is_empty()
            && self.replies.is_empty()
    }
}

/// A change for the writer thread.
#[derive(Debug)]
pub enum Op {
    /// Store or replace a retained message.
    RetainedPut(Arc<Publication>),
    /// Delete the retained message of a topic.
    RetainedDelete(Arc<str>),
    /// Write a session record.
    SessionPut {
        /// Client id.
        client_id: Arc<str>,
        /// The record.
        state: Box<SessionState>,
    },
    /// Delete a session with everything stored for it.
    SessionDelete(Arc<str>),
    /// Store deliveries and incoming QoS 2 ids, then deliver and answer.
    Route(Box<RouteBatch>),
    /// A connected session's progress.
    Progress(Box<Progress>),
    /// A will waiting out its delay.
    WillPut {
        /// Client id.
        client_id: Arc<str>,
        /// The will.
        will: Box<Will>,
        /// When it fires (wall clock, ms since the epoch).
        fire_at_ms: u64,
    },
    /// The session's will fired or was cancelled.
    WillDelete(Arc<str>),
    /// Answer once every earlier change is committed.
    Flush(oneshot::Sender<()>),
}

/// How often the store syncs to disk (from `--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every commit is fsynced (`always`, `batch`): what was committed
    /// survives a crash or power loss.
    EveryCommit,
    /// Commits are written without fsync; one fsync at most this often and
    /// at shutdown (`never`): a process crash loses nothing committed, a
    /// power loss the last interval.
    Periodic(Duration),
}

impl SyncPolicy {
    /// The store's policy for the journal's `--fsync` setting.
    pub fn for_fsync(policy: &str) -> Self {
        if policy.eq_ignore_ascii_case("never") {
            SyncPolicy::Periodic(Duration::from_secs(1))
        } else {
            SyncPolicy::EveryCommit
        }
    }
}

impl OpenedStore {
    /// Opens (or creates) `<dir>/sessions.redb` and loads its contents,
    /// dropping what expired while the broker was down: sessions past their
    /// expiry (with everything stored for them), retained and queued
    /// messages past their message expiry, and records of sessions that no
    /// longer exist. Sessions whose client was connected when the broker
    /// stopped start their expiry countdown now. A format 1 file is
    /// migrated. Expiry deadlines are read and written by `clock` (the
    /// broker's, [`crate::Config::clock`]).
    ///
    /// # Errors
    /// [`StoreError`] naming the file when it cannot be opened, read or
    /// decoded. Nothing read from the file can panic.
    pub fn open(dir: &Path, clock: Clock) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        let (loaded, counts) = load::load(&db, &path, clock.read())?;
        info!(
            path = %path.display(),
            sessions = loaded.sessions.len(),
            queued = loaded.sessions.iter().map(|s| s.queue.len()).sum::<usize>(),
            inflight = loaded.sessions.iter().map(|s| s.state.outgoing.len()).sum::<usize>(),
            wills = loaded.sessions.iter().filter(|s| s.will.is_some()).count(),
            retained = loaded.retained.len(),
            "session store loaded"
        );
        Ok(OpenedStore {
            db,
            path,
            counts,
            loaded,
            clock,
        })
    }

    /// Takes the loaded contents out (for the router to restore).
    pub fn take_loaded(&mut self) -> Loaded {
        std::mem::take(&mut self.loaded)
    }

    /// Starts the writer thread.
    ///
    /// # Errors
    /// The OS error when the thread cannot be spawned.
    pub fn start(self, metrics: Arc<Metrics>, sync: SyncPolicy) -> std::io::Result<StoreHandle> {
        let (tx, rx) = mpsc::channel();
        let OpenedStore {
            db,
            path,
            counts,
            clock,
            ..
        } = self;
        counts.publish(&metrics);
        let thread = std::thread::Builder::new()
            .name("session-store".into())
            .spawn(move || writer::run(&db, &path, &rx, &metrics, sync, &clock))?;
        Ok(StoreHandle {
            tx: Some(tx),
            thread: Some(thread),
        })
    }
}

/// Hands an opened store (if any) to `router`: its contents are restored
/// and its writer thread started. Should the thread fail to start, the
/// broker runs from memory alone and says so.
pub fn attach(
    router: crate::router::Router,
    store: Option<OpenedStore>,
    metrics: &Arc<Metrics>,
) -> crate::router::Router {
    let Some(mut opened) = store else {
        return router;
    };
    let path = opened.path.clone();
    let loaded = opened.take_loaded();
    let sync = SyncPolicy::for_fsync(&router.config().journal.fsync);
    match opened.start(metrics.clone(), sync) {
        Ok(handle) => router.with_store(handle, loaded),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot start the session store writer; sessions and retained messages are kept in memory only");
            router
        }
    }
}

/// The router's side of the store: changes go in, never waiting.
#[derive(Debug)]
pub struct StoreHandle {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
}

impl StoreHandle {
    /// Queues a change for the writer thread (never blocks).
    pub fn send(&self, op: Op) {
        if let Some(tx) = &self.tx {
            // Fails only when the writer thread is gone (it panicked): the
            // broker keeps running from memory; the error was logged there.
            if let Err(mpsc::SendError(op)) = tx.send(op) {
                writer::release_unstored(op);
            }
        }
    }

    /// Sends a route batch (when it holds anything); its answers are
    /// released after its commit, in order behind every earlier one.
    pub fn route(&self, batch: RouteBatch) {
        if !batch.is_empty() {
            self.send(Op::Route(Box::new(batch)));
        }
    }

    /// A progress log for a connected persistent session.
    pub fn session_log(
        &self,
        client_id: Arc<str>,
        mailbox: Arc<Mailbox>,
        conn_id: u64,
    ) -> Option<SessionLog> {
        let tx = self.tx.clone()?;
        Some(SessionLog {
            tx,
            progress: Box::new(Progress {
                client_id,
                mailbox,
                conn_id,
                sent: Vec::new(),
                released: Vec::new(),
                done: Vec::new(),
                incoming_done: Vec::new(),
                replies: Vec::new(),
            }),
        })
    }

    /// Waits until every change sent so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx));
        let _ = rx.await;
    }

    /// Commits everything sent so far, stops the writer thread and closes
    /// the file.
    pub async fn close(mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                warn!("session store writer ended abnormally");
            }
        }
    }
}

/// A connected persistent session's link records its QoS progress here
/// and hands it to the store once per turn ([`flush`](Self::flush)):
/// one channel send per turn, whatever the number of packets.
#[derive(Debug)]
pub struct SessionLog {
    tx: mpsc::Sender<Op>,
    progress: Box<Progress>,
}

impl SessionLog {
    /// A stored delivery went out with packet id `pkid`.
    pub fn sent(&mut self, seq: u64, pkid: u16) {
        self.progress.sent.push((seq, pkid));
    }

    /// An outgoing QoS 2 delivery was released (PUBREC received): PUBREL
    /// `pkid` goes out once that is committed.
    pub fn released(&mut self, seq: u64, pkid: u16) {
        self.progress.released.push((seq, pkid));
        self.progress.replies.push(LinkCtl::PubRel { pkid });
    }

    /// A stored delivery is finished.
    pub fn done(&mut self, seq: u64) {
        self.progress.done.push(seq);
    }

    /// An incoming QoS 2 message's PUBREL arrived: PUBCOMP goes out once
    /// the store no longer holds its packet id.
    pub fn incoming_done(&mut self, pkid: u16) {
        self.progress.incoming_done.push(pkid);
        self.progress.replies.push(LinkCtl::PubComp { pkid });
    }

    /// Hands this turn's progress to the writer (nothing when idle).
    pub fn flush(&mut self) {
        if self.progress.is_empty() {
            return;
        }
        let next = Box::new(Progress {
            client_id: self.progress.client_id.clone(),
            mailbox: self.progress.mailbox.clone(),
            conn_id: self.progress.conn_id,
            sent: Vec::new(),
            released: Vec::new(),
            done: Vec::new(),
            incoming_done: Vec::new(),
            replies: Vec::new(),
        });
        let progress = std::mem::replace(&mut self.progress, next);
        if let Err(mpsc::SendError(op)) = self.tx.send(Op::Progress(progress)) {
            writer::release_unstored(op);
        }
    }
}

#[cfg(test)]
mod tests;
