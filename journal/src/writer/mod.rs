//! The writer thread: the only code that writes segment files.
//!
//! It takes appends from a bounded queue in batches, encodes them into one
//! buffer, writes it with one `write` call, and fsyncs according to the
//! policy — so one fsync covers every appender whose record was in the
//! batch (group commit). It also rotates segments, deletes acknowledged
//! ones, enforces the size and age limits, and persists the cursor.
//!
//! File I/O is blocking, so the writer runs on its own OS thread with a
//! small single-threaded runtime for its queue and timers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::options::{FsyncPolicy, Options};
use crate::segment::{self, MAGIC};
use crate::shared::{SegmentMeta, Shared};
use crate::{JournalError, cursor, frame};

mod recover;
mod retention;

pub(crate) use recover::recover;

/// Most appends taken from the queue into one write.
const MAX_BATCH: usize = 4096;
/// How often housekeeping runs when nothing else wakes the writer.
const TICK: Duration = Duration::from_millis(250);

/// A request to the writer thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// Append a record; `done` (if any) hears its sequence once durable.
    Append {
        payload: Bytes,
        done: Option<oneshot::Sender<Result<u64, JournalError>>>,
    },
    /// Flush, fsync, persist the cursor and stop.
    Close {
        done: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// The writer's private state.
pub(crate) struct State {
    dir: std::path::PathBuf,
    opts: Options,
    /// The active (newest) segment, open for appending.
    file: File,
    /// Its path, for error messages.
    active_path: std::path::PathBuf,
    /// Bytes in the active segment, including buffered ones.
    active_bytes: u64,
    /// Next sequence to assign.
    next_seq: u64,
    /// Encoded records not yet written.
    buf: Vec<u8>,
    /// Highest sequence written to the OS.
    written_seq: u64,
    /// Waiters for durability, in sequence order.
    pending: Vec<(u64, oneshot::Sender<Result<u64, JournalError>>)>,
    /// When the oldest unsynced record was written (batch policy).
    unsynced_since: Option<Instant>,
    /// Bytes written since the last fsync.
    unsynced_bytes: usize,
    /// The cursor value last persisted.
    persisted_cursor: u64,
    /// When the cursor was last persisted.
    cursor_written_at: Instant,
    /// Whether the 80% warning is active (so it is logged once).
    warned_full: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, SegmentMeta), JournalError> {
    let path = segment::path(dir, first_seq);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    f.write_all(MAGIC).map_err(|e| JournalError::io(&path, e))?;
    f.sync_data().map_err(|e| JournalError::io(&path, e))?;
    sync_dir(dir)?;
    let meta = SegmentMeta {
        first_seq,
        last_seq: first_seq - 1,
        bytes: MAGIC.len() as u64,
        max_ts: 0,
        path,
    };
    Ok((f, meta))
}

/// Starts the writer thread.
pub(crate) fn spawn(
    state: State,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
) -> Result<(), JournalError> {
    let dir = state.dir.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| JournalError::io(&dir, e))?;
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || rt.block_on(run(state, shared, rx)))
        .map_err(|e| JournalError::io(&dir, e))?;
    Ok(())
}

async fn run(mut st: State, shared: Arc<Shared>, mut rx: mpsc::Receiver<Command>) {
    let result = st.run(&shared, &mut rx).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "journal writer stopped after an error");
        if let Ok(mut f) = shared.failed.lock() {
            *f = Some(e.to_string());
        }
        for (_, done) in st.pending.drain(..) {
            let _ = done.send(Err(JournalError::Failed(e.to_string())));
        }
    }
}

impl State {
    async fn run(
        &mut self,
        shared: &Shared,
        rx: &mut mpsc::Receiver<Command>,
    ) -> Result<(), JournalError> {
        loop {
            let deadline = self.sync_deadline();
            let cmd = tokio::select! {
                biased;
                cmd = rx.recv() => cmd,
                _ = shared.wake.notified() => {
                    self.housekeeping(shared, false)?;
                    continue;
                }
                _ = sleep_until_opt(deadline) => {
                    self.sync(shared)?;
                    continue;
                }
                _ = tokio::time::sleep(TICK) => {
                    self.housekeeping(shared, false)?;
                    continue;
                }
            };
            match cmd {
                None => {
                    self.finish(shared)?;
                    return Ok(());
                }
                Some(Command::Close { done }) => {
                    let r = self.finish(shared);
                    let failed = r.as_ref().err().map(ToString::to_string);
                    let _ = done.send(r);
                    return match failed {
                        Some(msg) => Err(JournalError::Failed(msg)),
                        None => Ok(()),
                    };
                }
                Some(Command::Append { payload, done }) => {
                    let mut closing = None;
                    self.append(shared, payload, done).await?;
                    for _ in 1..MAX_BATCH {
                        match rx.try_recv() {
                            Ok(Command::Append { payload, done }) => {
                                self.append(shared, payload, done).await?;
                            }
                            Ok(Command::Close { done }) => {
                                closing = Some(done);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_buf()?;
                    self.after_write(shared, rx.is_empty())?;
                    if let Some(done) = closing {
                        let r = self.finish(shared);
                        let failed = r.as_ref().err().map(ToString::to_string);
                        let _ = done.send(r);
                        return match failed {
                            Some(msg) => Err(JournalError::Failed(msg)),
                            None => Ok(()),
                        };
                    }
                }
            }
        }
    }

    fn sync_deadline(&self) -> Option<Instant> {
        match self.opts.fsync {
            FsyncPolicy::Batch { max_delay, .. } => self.unsynced_since.map(|t| t + max_delay),
            _ => None,
        }
    }

    /// Encodes one record into the buffer, making room first.
    async fn append(
        &mut self,
        shared: &Shared,
        payload: Bytes,
        done: Option<oneshot::Sender<Result<u64, JournalError>>>,
    ) -> Result<(), JournalError> {
        let frame_len = (frame::HEADER_LEN + payload.len()) as u64;
        if let Err(e) = self.make_room(shared, frame_len).await {
            // Closing while blocked: refuse this record (it was never
            // acknowledged to anyone), keep the journal consistent.
            if let Some(done) = done {
                let _ = done.send(Err(e));
            }
            return Ok(());
        }
        if self.active_bytes + frame_len > self.opts.segment_bytes
            && self.active_has_records(shared)
        {
            self.rotate(shared)?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let ts = now_ms();
        frame::encode(seq, ts, &payload, &mut self.buf);
        self.active_bytes += frame_len;
        if let Ok(mut segs) = shared.segments.lock()
            && let Some(active) = segs.last_mut()
        {
            active.last_seq = seq;
            active.bytes = self.active_bytes;
            active.max_ts = ts;
        }
        shared.last_seq.store(seq, Ordering::Release);
        let c = &shared.counters;
        c.appends.fetch_add(1, Ordering::Relaxed);
        c.payload_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        if let Some(done) = done {
            self.pending.push((seq, done));
        }
        if self.buf.len() >= 1 << 20 {
            self.write_buf()?;
        }
        Ok(())
    }

    fn active_has_records(&self, shared: &Shared) -> bool {
        shared
            .segments
            .lock()
            .ok()
            .and_then(|s| s.last().map(|m| m.last_seq >= m.first_seq))
            .unwrap_or(false)
    }

    fn write_buf(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| JournalError::io(&self.active_path, e))?;
        self.unsynced_bytes += self.buf.len();
        if self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
        }
        self.buf.clear();
        self.written_seq = self.next_seq - 1;
        Ok(())
    }

    fn after_write(&mut self, shared: &Shared, queue_empty: bool) -> Result<(), JournalError> {
        match self.opts.fsync {
            FsyncPolicy::Always => self.sync(shared),
            FsyncPolicy::Never => {
                self.mark_durable(shared);
                Ok(())
            }
            FsyncPolicy::Batch { max_bytes, .. } => {
                // Natural group commit: sync as soon as nobody else is
                // queued (appends arriving during the fsync form the next
                // batch), or when enough bytes are waiting; `max_delay`
                // bounds the wait otherwise.
                if self.unsynced_bytes >= max_bytes || queue_empty {
                    self.sync(shared)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// fsyncs the active segment and completes every waiter written so far.
    fn sync(&mut self, shared: &Shared) -> Result<(), JournalError> {
        self.write_buf()?;
        if self.unsynced_bytes > 0 && self.opts.fsync != FsyncPolicy::Never {
            self.file
                .sync_data()
                .map_err(|e| JournalError::io(&self.active_path, e))?;
            shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        shared
            .counters
            .bytes_written
            .fetch_add(self.unsynced_bytes as u64, Ordering::Relaxed);
        self.unsynced_bytes = 0;
        self.unsynced_since = None;
        self.mark_durable(shared);
        Ok(())
    }

    fn mark_durable(&mut self, shared: &Shared) {
        let durable = self.written_seq;
        if self.opts.fsync == FsyncPolicy::Never && self.unsynced_bytes > 0 {
            shared
                .counters
                .bytes_written
                .fetch_add(self.unsynced_bytes as u64, Ordering::Relaxed);
            self.unsynced_bytes = 0;
            self.unsynced_since = None;
        }
        shared.durable.send_if_modified(|d| {
            if *d != durable {
                *d = durable;
                true
            } else {
                false
            }
        });
        let split = self.pending.partition_point(|(seq, _)| *seq <= durable);
        for (seq, done) in self.pending.drain(..split) {
            let _ = done.send(Ok(seq));
        }
    }

    /// Closes the active segment (durably) and starts a new one.
    fn rotate(&mut self, shared: &Shared) -> Result<(), JournalError> {
        self.write_buf()?;
        self.sync(shared)?;
        let (file, meta) = create_segment(&self.dir, self.next_seq)?;
        self.file = file;
        self.active_path = meta.path.clone();
        self.active_bytes = meta.bytes;
        if let Ok(mut segs) = shared.segments.lock() {
            segs.push(meta);
        }
        Ok(())
    }

    /// Deletes acknowledged and expired segments and persists an advanced
    /// cursor (at most every `cursor_interval`, unless `force`).
    fn housekeeping(&mut self, shared: &Shared, force: bool) -> Result<(), JournalError> {
        self.delete_acked(shared)?;
        self.expire(shared)?;
        let acked = shared.acked.load(Ordering::Acquire);
        if acked != self.persisted_cursor
            && (force || self.cursor_written_at.elapsed() >= self.opts.cursor_interval)
        {
            cursor::write(&self.dir, acked)?;
            self.persisted_cursor = acked;
            self.cursor_written_at = Instant::now();
        }
        Ok(())
    }

    fn finish(&mut self, shared: &Shared) -> Result<(), JournalError> {
        self.write_buf()?;
        self.sync(shared)?;
        // On a clean stop everything goes to disk, whatever the policy.
        self.file
            .sync_data()
            .map_err(|e| JournalError::io(&self.active_path, e))?;
        self.housekeeping(shared, true)?;
        tracing::debug!(last_seq = self.next_seq - 1, "journal closed");
        Ok(())
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
