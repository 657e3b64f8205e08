//! `plantd-journal`: the edge's durable store-and-forward buffer.
//!
//! Every message the edge sends up to JetStream is first appended here; a
//! QoS 1/2 acknowledgement to the device waits until the record is durable
//! under the [`FsyncPolicy`] in force. The bridge reads records in order
//! with a [`Reader`], publishes them, and [`Journal::ack`]s what JetStream
//! acknowledged; acknowledged segments are deleted, and after a crash the
//! bridge resumes from the persisted cursor.
//!
//! | module | what it holds |
//! |---|---|
//! | [`frame`] | the on-disk record format: length, CRC32C, sequence, time, payload |
//! | [`segment`] | segment files: naming, scanning and torn-tail recovery |
//! | [`cursor`] | the persisted "acknowledged up to" sequence |
//! | [`identity`] | journal identities: a fresh random [`JournalId`] per open, kept per record |
//! | [`options`] | fsync and overflow policies, size limits |
//! | [`writer`] | the writer thread: group commit, rotation, retention |
//! | [`reader`] | tailing readers that see only durable records |
//!
//! # Guarantees
//! * Sequence numbers are contiguous from 1 and never reused, across
//!   restarts (dropped records leave a counted gap).
//! * Every record carries the [`JournalId`] of the life that wrote it
//!   ([`Journal::identity`]): `(identity, sequence)` is unique across wiped,
//!   restored and copied journals, while a record resent after a crash
//!   keeps its identity.
//! * A record [`Journal::append`] reported durable survives a crash of the
//!   process (any policy but `never` also a power loss).
//! * Recovery validates every record's checksum, truncates a torn tail and
//!   reports what it did in [`Recovery`].
//! * With [`OverflowPolicy::Block`] a full journal stops accepting appends
//!   (callers wait: backpressure) and never drops; with
//!   [`OverflowPolicy::DropOldest`] it deletes the oldest segment and counts
//!   the records lost.

pub mod cursor;
pub mod frame;
pub mod identity;
pub mod options;
pub mod reader;
pub mod segment;
mod shared;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

pub use identity::{Identity, JournalId, Located};
pub use options::{FsyncPolicy, Options, OverflowPolicy};
pub use reader::{Reader, Record};
pub use segment::Recovery;
pub use shared::Stats;

use shared::Shared;
use writer::Command;

/// What can go wrong with the journal.
#[derive(Debug, Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The journal has been closed (or its writer stopped after an I/O
    /// error); nothing more can be appended.
    #[error("journal is closed")]
    Closed,
    /// A single record is larger than a segment may be.
    #[error("record of {size} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// The record's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The writer failed and stopped; the message says why.
    #[error("journal writer failed: {0}")]
    Failed(String),
}

impl JournalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// A record queued by [`Journal::enqueue`]; resolves with its sequence
/// once durable.
#[derive(Debug)]
pub struct Durable {
    /// The writer's answer.
    wait: oneshot::Receiver<Result<u64, JournalError>>,
    /// To explain a writer failure.
    shared: Arc<Shared>,
}

impl std::future::Future for Durable {
    type Output = Result<u64, JournalError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match std::pin::Pin::new(&mut self.wait).poll(cx) {
            std::task::Poll::Ready(Ok(r)) => std::task::Poll::Ready(r),
            std::task::Poll::Ready(Err(_)) => {
                std::task::Poll::Ready(Err(match self.shared.failure() {
                    Some(msg) => JournalError::Failed(msg),
                    None => JournalError::Closed,
                }))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// A handle to an open journal. Cheap to clone; every clone appends to the
/// same journal. The writer thread stops when [`Journal::close`] is called
/// or every handle is dropped.
#[derive(Debug, Clone)]
pub struct Journal {
    /// Commands to the writer thread (bounded: appenders wait when full).
    tx: mpsc::Sender<Command>,
    /// State shared with the writer and readers.
    shared: Arc<Shared>,
    /// The identities of the records (fixed while open).
    identity: Arc<Identity>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, recovering what is there,
    /// takes a fresh identity for the records appended from now on
    /// (persisted before anything is appended, see [`identity`]), and
    /// starts its writer thread.
    ///
    /// # Errors
    /// [`JournalError::Io`] if the directory, a segment or the identity
    /// file cannot be read, repaired or written.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<(Self, Recovery), JournalError> {
        let dir = dir.as_ref().to_owned();
        let (tx, rx) = mpsc::channel(options.queue_depth.max(1));
        let (shared, recovery, state) = writer::recover(&dir, options)?;
        let identity = Arc::new(Identity::open(&dir, recovery.acked, recovery.last_seq + 1)?);
        tracing::info!(
            journal_id = %identity.current(),
            first_seq = identity.current_first_seq(),
            lives = identity.lives().len(),
            "journal identity"
        );
        writer::spawn(state, shared.clone(), rx)?;
        Ok((
            Self {
                tx,
                shared,
                identity,
            },
            recovery,
        ))
    }

    /// The identities of this journal's records: the current one (records
    /// appended from now on) and those of earlier lives that may still have
    /// unacknowledged records.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// Appends `payload` and resolves with its sequence number once it is
    /// durable under the fsync policy (written and, unless the policy is
    /// `never`, fsynced). Waits while the journal is full under
    /// [`OverflowPolicy::Block`].
    ///
    /// # Errors
    /// [`JournalError::Closed`] after close, [`JournalError::TooLarge`] for
    /// a record over the segment size, [`JournalError::Failed`] if the
    /// writer hit an I/O error.
    pub async fn append(&self, payload: Bytes) -> Result<u64, JournalError> {
        self.enqueue(payload).await?.await
    }

    /// Queues `payload` (in order with every other append) and returns a
    /// future that resolves with its sequence once it is durable. Lets a
    /// caller queue many records before waiting, so one fsync covers them
    /// all; waits only while the queue is full (or the journal is full
    /// under [`OverflowPolicy::Block`]).
    ///
    /// # Errors
    /// As [`append`](Self::append); durability errors come from the future.
    pub async fn enqueue(&self, payload: Bytes) -> Result<Durable, JournalError> {
        self.check_size(&payload)?;
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Command::Append {
                payload,
                done: Some(done),
            })
            .await
            .map_err(|_| JournalError::Closed)?;
        Ok(Durable {
            wait,
            shared: self.shared.clone(),
        })
    }

    /// Appends `payload` without waiting for it to be durable (for QoS 0):
    /// resolves as soon as the writer has room for it, which under
    /// [`OverflowPolicy::Block`] may mean waiting while the journal is full.
    ///
    /// # Errors
    /// As [`append`](Self::append), except durability errors.
    pub async fn append_nowait(&self, payload: Bytes) -> Result<(), JournalError> {
        self.check_size(&payload)?;
        self.tx
            .send(Command::Append {
                payload,
                done: None,
            })
            .await
            .map_err(|_| JournalError::Closed)
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), JournalError> {
        let max = self.shared.max_record;
        if payload.len() > max {
            return Err(JournalError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        Ok(())
    }

    fn failure(&self) -> JournalError {
        match self.shared.failure() {
            Some(msg) => JournalError::Failed(msg),
            None => JournalError::Closed,
        }
    }

    /// Records that everything up to and including `seq` has been
    /// acknowledged upstream. The cursor is persisted by the writer soon
    /// after (and always on close); fully acknowledged segments are deleted.
    /// Going backwards is ignored.
    pub fn ack(&self, seq: u64) {
        let seq = seq.min(self.shared.last_seq.load(Ordering::Acquire));
        let prev = self.shared.acked.fetch_max(seq, Ordering::AcqRel);
        if seq > prev {
            self.shared.wake_writer();
        }
    }

    /// Holds records from `seq` on even once acknowledged (`None`: no
    /// hold), for a local reader that must be able to read them again
    /// after a crash (the edge's analytics keep it at their checkpoint).
    /// The size and age limits still delete them.
    pub fn keep_from(&self, seq: Option<u64>) {
        self.shared
            .keep_from
            .store(seq.unwrap_or(u64::MAX), Ordering::Release);
        self.shared.wake_writer();
    }

    /// The highest sequence acknowledged upstream (persisted or not).
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Acquire)
    }

    /// The highest sequence that is durable.
    pub fn durable(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    /// A reader that yields durable records from sequence `from` onwards
    /// (records before the oldest kept one are reported as skipped).
    pub fn reader(&self, from: u64) -> Reader {
        Reader::new(self.shared.clone(), from)
    }

    /// A reader starting just after the acknowledged cursor: what the
    /// bridge must (re)send.
    pub fn reader_from_cursor(&self) -> Reader {
        self.reader(self.acked() + 1)
    }

    /// Counters and gauges for metrics and `/readyz`.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Flushes and fsyncs everything appended so far, persists the cursor,
    /// and stops the writer thread. Other handles see
    /// [`JournalError::Closed`] afterwards.
    ///
    /// # Errors
    /// [`JournalError::Failed`] if the final flush failed.
    pub async fn close(self) -> Result<(), JournalError> {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake_writer();
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Close { done }).await.is_err() {
            return match self.shared.failure() {
                Some(msg) => Err(JournalError::Failed(msg)),
                None => Ok(()),
            };
        }
        wait.await.map_err(|_| self.failure())?
    }
}
