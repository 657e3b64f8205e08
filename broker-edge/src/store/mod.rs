//! The durable session store: persistent sessions, their offline queues and
//! retained messages in one [redb](https://docs.rs/redb) file,
//! `<data-dir>/sessions.redb` (see `docs/decisions/0015-edge-session-store.md`).
//!
//! The router's in-memory state stays the primary copy; the store is a
//! write-behind mirror of it. The router sends [`Op`]s on an unbounded
//! channel (a send never waits) to one dedicated thread, which applies
//! everything waiting in **one write transaction per batch** and commits it
//! with `fsync` (redb's `Durability::Immediate`). Under load batches grow by
//! themselves while a commit is in progress (group commit), so the cost per
//! change falls as the rate rises.
//!
//! Durability contract: a change is on disk once the commit of the batch it
//! joined returns — normally within one fsync (milliseconds) of the change.
//! `plantd_edge_session_store_flushes_total` counts commits. On graceful
//! shutdown the router hands its last changes over and [`StoreHandle::close`]
//! waits for the final commit. A crash (SIGKILL, power loss) loses at most
//! the changes of the batch not yet committed. A failed commit is logged,
//! counted in `plantd_edge_session_store_write_errors_total`, and the broker
//! carries on from memory.
//!
//! What is stored (tables):
//! * `retained`: topic → retained message (`$SYS/` topics are not stored:
//!   the broker regenerates them);
//! * `sessions`: client id → session record ([`codec::SessionState`]):
//!   expiry, when it went offline, subscriptions with their options, the
//!   unacknowledged outgoing QoS 1/2 messages and the incoming QoS 2 ids
//!   awaiting PUBREL;
//! * `queue`: (client id, sequence) → a QoS 1/2 delivery queued for the
//!   session while its client is offline;
//! * `meta`: the format version.

pub mod codec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadableTable as _, ReadableTableMetadata as _};
use redb::{Table, TableDefinition};
use tracing::{info, warn};

use crate::message::{Delivery, Publication};
use crate::metrics::Metrics;
use codec::{DecodeError, SessionState};

/// File name of the store inside the data directory.
pub const FILE_NAME: &str = "sessions.redb";

/// Format of the store's contents (the `meta` table's `format` entry).
const STORE_FORMAT: u64 = 1;

const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Most changes applied in one write transaction.
const MAX_BATCH: usize = 8192;

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
    #[error("session store {}: format {found} is not supported (this build reads {STORE_FORMAT})", path.display())]
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
    /// Expiry, subscriptions and QoS state.
    pub state: SessionState,
    /// Queued deliveries, oldest first (expired ones left out).
    pub queue: Vec<Delivery>,
    /// Sequence number for the next queued delivery.
    pub next_seq: u64,
}

/// Everything loaded from the store at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Retained messages (expired ones left out).
    pub retained: Vec<Publication>,
    /// Persistent sessions that had not expired.
    pub sessions: Vec<LoadedSession>,
}

/// An opened store and its contents, before its writer thread starts.
pub struct OpenedStore {
    db: Database,
    path: PathBuf,
    /// Sessions, retained messages and queued messages on disk after load.
    counts: [u64; 3],
    /// What was in it.
    pub loaded: Loaded,
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
    /// Delete a session record and its queue.
    SessionDelete(Arc<str>),
    /// Replace a session's queue by these deliveries (sequence 0, 1, ...).
    QueueReplace {
        /// Client id.
        client_id: Arc<str>,
        /// The deliveries, oldest first.
        items: Vec<Delivery>,
    },
    /// Append one delivery to a session's queue.
    QueueAppend {
        /// Client id.
        client_id: Arc<str>,
        /// Its sequence number (increasing per session).
        seq: u64,
        /// The delivery.
        delivery: Delivery,
    },
    /// Empty a session's queue (its client is back and drains it).
    QueueClear(Arc<str>),
    /// Answer once every earlier change is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl OpenedStore {
    /// Opens (or creates) `<dir>/sessions.redb` and loads its contents,
    /// dropping what expired while the broker was down: sessions past their
    /// expiry (with their queues), retained and queued messages past their
    /// message expiry, and queue entries of sessions that no longer exist.
    /// Sessions whose client was connected when the broker stopped start
    /// their expiry countdown now.
    ///
    /// # Errors
    /// [`StoreError`] naming the file when it cannot be opened, read or
    /// decoded. Nothing read from the file can panic.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: e.into(),
        })?;
        let (loaded, counts) = load(&db, &path)?;
        info!(
            path = %path.display(),
            sessions = loaded.sessions.len(),
            queued = loaded.sessions.iter().map(|s| s.queue.len()).sum::<usize>(),
            retained = loaded.retained.len(),
            "session store loaded"
        );
        Ok(OpenedStore {
            db,
            path,
            counts,
            loaded,
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
    pub fn start(self, metrics: Arc<Metrics>) -> std::io::Result<StoreHandle> {
        let (tx, rx) = mpsc::channel();
        let OpenedStore {
            db, path, counts, ..
        } = self;
        metrics.store_sessions.store(counts[0], Relaxed);
        metrics.store_retained.store(counts[1], Relaxed);
        metrics.store_queued.store(counts[2], Relaxed);
        let thread = std::thread::Builder::new()
            .name("session-store".into())
            .spawn(move || writer(&db, &path, &rx, &metrics))?;
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
    match opened.start(metrics.clone()) {
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
            let _ = tx.send(op);
        }
    }

    /// Waits until every change sent so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
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

/// Deletes every queue entry of `client_id`.
fn clear_queue(queue: &mut Table<'_, (&str, u64), &[u8]>, client_id: &str) -> redb::Result<()> {
    queue.retain_in((client_id, 0u64)..=(client_id, u64::MAX), |_, _| false)
}

/// The writer thread: one write transaction per batch of changes.
fn writer(db: &Database, path: &Path, rx: &mpsc::Receiver<Op>, metrics: &Metrics) {
    let mut batch = Vec::with_capacity(256);
    let mut waiters = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let changes = batch.len();
        if let Err(e) = apply(db, &mut batch, &mut waiters, metrics) {
            metrics.store_write_errors.fetch_add(1, Relaxed);
            warn!(path = %path.display(), error = %e, changes, "session store commit failed; these changes are lost on restart");
        } else {
            metrics.store_flushes.fetch_add(1, Relaxed);
        }
        batch.clear();
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

fn apply(
    db: &Database,
    batch: &mut Vec<Op>,
    waiters: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    metrics: &Metrics,
) -> Result<(), redb::Error> {
    // A session record written several times in one batch (a client
    // subscribing filter by filter) is encoded and stored once: only its
    // last put or delete counts.
    let mut last: std::collections::HashMap<Arc<str>, usize> = std::collections::HashMap::new();
    for (i, op) in batch.iter().enumerate() {
        if let Op::SessionPut { client_id, .. } | Op::SessionDelete(client_id) = op {
            last.insert(client_id.clone(), i);
        }
    }
    let txn = db.begin_write()?;
    {
        let mut retained = txn.open_table(RETAINED)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut queue = txn.open_table(QUEUE)?;
        let now = codec::now_unix_ms();
        for (i, op) in batch.drain(..).enumerate() {
            match op {
                Op::RetainedPut(p) => {
                    let v = codec::encode_retained(&p, now);
                    retained.insert(&*p.topic, v.as_slice())?;
                }
                Op::RetainedDelete(topic) => {
                    retained.remove(&*topic)?;
                }
                Op::SessionPut { client_id, state } => {
                    if last.get(&client_id) == Some(&i) {
                        let v = codec::encode_session(&state, now);
                        sessions.insert(&*client_id, v.as_slice())?;
                    }
                }
                Op::SessionDelete(client_id) => {
                    sessions.remove(&*client_id)?;
                    clear_queue(&mut queue, &client_id)?;
                }
                Op::QueueReplace { client_id, items } => {
                    clear_queue(&mut queue, &client_id)?;
                    for (seq, d) in (0u64..).zip(&items) {
                        let v = codec::encode_queued(d, now);
                        queue.insert((&*client_id, seq), v.as_slice())?;
                    }
                }
                Op::QueueAppend {
                    client_id,
                    seq,
                    delivery,
                } => {
                    let v = codec::encode_queued(&delivery, now);
                    queue.insert((&*client_id, seq), v.as_slice())?;
                }
                Op::QueueClear(client_id) => clear_queue(&mut queue, &client_id)?,
                Op::Flush(w) => waiters.push(w),
            }
        }
        metrics.store_sessions.store(sessions.len()?, Relaxed);
        metrics.store_retained.store(retained.len()?, Relaxed);
        metrics.store_queued.store(queue.len()?, Relaxed);
    }
    txn.commit()?;
    Ok(())
}

/// Reads the whole store and removes what expired, in one transaction.
fn load(db: &Database, path: &Path) -> Result<(Loaded, [u64; 3]), StoreError> {
    let read_err = |e: redb::Error| StoreError::Read {
        path: path.to_owned(),
        source: e,
    };
    let record_err = |table: &'static str, key: String, source: DecodeError| StoreError::Record {
        path: path.to_owned(),
        table,
        key,
        source,
    };
    let now = codec::now_unix_ms();
    let txn = db.begin_write().map_err(|e| read_err(e.into()))?;
    let mut loaded = Loaded::default();
    let counts;
    {
        let mut meta = txn.open_table(META).map_err(|e| read_err(e.into()))?;
        let format = meta
            .get("format")
            .map_err(|e| read_err(e.into()))?
            .map(|v| v.value());
        match format {
            None => {
                meta.insert("format", STORE_FORMAT)
                    .map_err(|e| read_err(e.into()))?;
            }
            Some(STORE_FORMAT) => {}
            Some(found) => {
                return Err(StoreError::Format {
                    path: path.to_owned(),
                    found,
                });
            }
        }

        let mut retained = txn.open_table(RETAINED).map_err(|e| read_err(e.into()))?;
        let mut expired_retained = Vec::new();
        for entry in retained.iter().map_err(|e| read_err(e.into()))? {
            let (k, v) = entry.map_err(|e| read_err(e.into()))?;
            let topic = k.value().to_owned();
            match codec::decode_retained(v.value(), now) {
                Ok(Some(p)) => loaded.retained.push(p),
                Ok(None) => expired_retained.push(topic),
                Err(e) => return Err(record_err("retained", topic, e)),
            }
        }
        for topic in expired_retained {
            retained
                .remove(topic.as_str())
                .map_err(|e| read_err(e.into()))?;
        }

        let mut sessions = txn.open_table(SESSIONS).map_err(|e| read_err(e.into()))?;
        let mut expired = Vec::new();
        let mut restarted = Vec::new();
        for entry in sessions.iter().map_err(|e| read_err(e.into()))? {
            let (k, v) = entry.map_err(|e| read_err(e.into()))?;
            let client_id = k.value().to_owned();
            let mut state = codec::decode_session(v.value(), now)
                .map_err(|e| record_err("sessions", client_id.clone(), e))?;
            if state.disconnected_at_ms.is_none() {
                // Its client was connected when the broker stopped: the
                // session went offline now.
                state.disconnected_at_ms = Some(now);
                restarted.push((client_id.clone(), state.clone()));
            }
            if state.deadline_ms().is_some_and(|d| d <= now) {
                expired.push(client_id);
                continue;
            }
            loaded.sessions.push(LoadedSession {
                client_id: Arc::from(client_id),
                state,
                queue: Vec::new(),
                next_seq: 0,
            });
        }
        for (client_id, state) in restarted {
            if !expired.contains(&client_id) {
                let v = codec::encode_session(&state, now);
                sessions
                    .insert(client_id.as_str(), v.as_slice())
                    .map_err(|e| read_err(e.into()))?;
            }
        }
        for client_id in &expired {
            sessions
                .remove(client_id.as_str())
                .map_err(|e| read_err(e.into()))?;
        }

        let mut queue = txn.open_table(QUEUE).map_err(|e| read_err(e.into()))?;
        let mut orphans = Vec::new();
        let by_id: std::collections::HashMap<&str, usize> = loaded
            .sessions
            .iter()
            .enumerate()
            .map(|(i, s)| (&*s.client_id, i))
            .collect();
        let mut queues: Vec<(Vec<Delivery>, u64)> = vec![(Vec::new(), 0); loaded.sessions.len()];
        for entry in queue.iter().map_err(|e| read_err(e.into()))? {
            let (k, v) = entry.map_err(|e| read_err(e.into()))?;
            let (client_id, seq) = k.value();
            let Some(&i) = by_id.get(client_id) else {
                if orphans.last().map(String::as_str) != Some(client_id) {
                    orphans.push(client_id.to_owned());
                }
                continue;
            };
            let d = codec::decode_queued(v.value(), now)
                .map_err(|e| record_err("queue", format!("{client_id}#{seq}"), e))?;
            let q = &mut queues[i];
            q.1 = seq.saturating_add(1);
            if let Some(d) = d {
                q.0.push(d);
            }
        }
        drop(by_id);
        for (s, (q, next)) in loaded.sessions.iter_mut().zip(queues) {
            s.queue = q;
            s.next_seq = next;
        }
        for client_id in orphans {
            clear_queue(&mut queue, &client_id).map_err(|e| read_err(e.into()))?;
        }
        if !expired.is_empty() {
            info!(path = %path.display(), sessions = expired.len(), "dropped sessions that expired while the broker was down");
        }
        counts = [
            sessions.len().map_err(|e| read_err(e.into()))?,
            retained.len().map_err(|e| read_err(e.into()))?,
            queue.len().map_err(|e| read_err(e.into()))?,
        ];
    }
    txn.commit().map_err(|e| read_err(e.into()))?;
    Ok((loaded, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageProperties;
    use crate::protocol::QoS;
    use bytes::Bytes;

    fn publication(topic: &str, payload: &'static [u8]) -> Arc<Publication> {
        Arc::new(Publication {
            topic: Arc::from(topic),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: MessageProperties::default(),
            origin: None,
            received: None,
        })
    }

    fn delivery(payload: &'static [u8]) -> Delivery {
        Delivery {
            publication: publication("q", payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
        }
    }

    #[tokio::test]
    async fn changes_survive_reopening_and_expired_sessions_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let store = OpenedStore::open(dir.path()).expect("open");
        let h = store.start(metrics.clone()).expect("start");
        h.send(Op::RetainedPut(publication("a", b"1")));
        h.send(Op::RetainedPut(publication("b", b"2")));
        h.send(Op::RetainedDelete(Arc::from("a")));
        let live = SessionState {
            expiry: u32::MAX,
            disconnected_at_ms: Some(codec::now_unix_ms()),
            ..SessionState::default()
        };
        let gone = SessionState {
            expiry: 1,
            disconnected_at_ms: Some(1_000),
            ..SessionState::default()
        };
        h.send(Op::SessionPut {
            client_id: Arc::from("live"),
            state: Box::new(live),
        });
        h.send(Op::SessionPut {
            client_id: Arc::from("gone"),
            state: Box::new(gone),
        });
        h.send(Op::QueueReplace {
            client_id: Arc::from("live"),
            items: vec![delivery(b"x"), delivery(b"y")],
        });
        h.send(Op::QueueAppend {
            client_id: Arc::from("live"),
            seq: 2,
            delivery: delivery(b"z"),
        });
        h.send(Op::QueueAppend {
            client_id: Arc::from("gone"),
            seq: 0,
            delivery: delivery(b"lost"),
        });
        h.flush().await;
        assert_eq!(metrics.store_sessions.load(Relaxed), 2);
        assert_eq!(metrics.store_retained.load(Relaxed), 1);
        assert_eq!(metrics.store_queued.load(Relaxed), 4);
        assert!(metrics.store_flushes.load(Relaxed) >= 1);
        h.close().await;

        let mut store = OpenedStore::open(dir.path()).expect("reopen");
        let loaded = store.take_loaded();
        let topics: Vec<_> = loaded.retained.iter().map(|p| &*p.topic).collect();
        assert_eq!(topics, ["b"]);
        assert_eq!(loaded.sessions.len(), 1, "the expired session is dropped");
        let s = &loaded.sessions[0];
        assert_eq!(&*s.client_id, "live");
        let payloads: Vec<_> = s.queue.iter().map(|d| &d.publication.payload[..]).collect();
        assert_eq!(payloads, [b"x", b"y", b"z"]);
        assert_eq!(s.next_seq, 3);

        // The expired session's queue went with it; clearing works.
        let h = store.start(metrics.clone()).expect("start");
        h.send(Op::QueueClear(Arc::from("live")));
        h.flush().await;
        assert_eq!(metrics.store_queued.load(Relaxed), 0);
        h.send(Op::SessionDelete(Arc::from("live")));
        h.flush().await;
        assert_eq!(metrics.store_sessions.load(Relaxed), 0);
        h.close().await;
    }

    #[tokio::test]
    async fn the_last_write_of_a_session_wins_within_and_across_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::default());
        let h = OpenedStore::open(dir.path())
            .expect("open")
            .start(metrics.clone())
            .expect("start");
        let put = |expiry| Op::SessionPut {
            client_id: Arc::from("s"),
            state: Box::new(SessionState {
                expiry,
                disconnected_at_ms: Some(codec::now_unix_ms()),
                ..SessionState::default()
            }),
        };
        for expiry in 1..=50 {
            h.send(put(expiry * 100));
        }
        h.send(Op::SessionDelete(Arc::from("s")));
        h.send(put(7777));
        h.close().await;
        let mut store = OpenedStore::open(dir.path()).expect("reopen");
        let loaded = store.take_loaded();
        assert_eq!(loaded.sessions.len(), 1);
        assert_eq!(loaded.sessions[0].state.expiry, 7777);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, vec![0xa5u8; 64 * 1024]).expect("write garbage");
        let e = OpenedStore::open(dir.path()).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn a_bad_record_is_an_error_naming_file_table_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            {
                let mut t = txn.open_table(SESSIONS).expect("table");
                t.insert("dev-1", [7u8, 1, 2].as_slice()).expect("insert");
            }
            txn.commit().expect("commit");
        }
        let e = OpenedStore::open(dir.path()).expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains("sessions")
                && msg.contains("dev-1"),
            "{msg}"
        );
    }
}
