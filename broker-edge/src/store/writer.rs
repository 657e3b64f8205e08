//! The store's writer thread: one write transaction per batch of
//! [`Op`]s, then what waited on that commit — deliveries into mailboxes,
//! acknowledgements to publishers, PUBREL/PUBCOMP to subscribers and
//! publishers, flush waiters.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use redb::{Database, Durability, ReadableTableMetadata as _, Table};
use tracing::warn;

use super::codec::{self, Mark};
use super::{Counts, INCOMING, INFLIGHT, Op, QUEUE, RETAINED, SESSIONS, SyncPolicy, WILLS};
use crate::clock::{Clock, Now};
use crate::metrics::Metrics;

/// Most changes applied in one write transaction.
const MAX_BATCH: usize = 8192;

/// Runs until every sender is gone, then makes the last commit durable.
pub(super) fn run(
    db: &Database,
    path: &Path,
    rx: &mpsc::Receiver<Op>,
    metrics: &Metrics,
    sync: SyncPolicy,
    clock: &Clock,
) {
    let mut batch = Vec::with_capacity(256);
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let first = match sync {
            SyncPolicy::Periodic(every) if unsynced => {
                match rx.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        sync_now(db, path, metrics);
                        last_sync = Instant::now();
                        unsynced = false;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(op) => op,
                Err(_) => break,
            },
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let durable = match sync {
            SyncPolicy::EveryCommit => true,
            SyncPolicy::Periodic(every) => last_sync.elapsed() >= every,
        };
        match apply(db, &batch, durable, clock.read()) {
            Ok(Some(counts)) => {
                counts.publish(metrics);
                metrics.store_flushes.fetch_add(1, Relaxed);
                if durable {
                    last_sync = Instant::now();
                    unsynced = false;
                } else {
                    unsynced = true;
                }
            }
            Ok(None) => {}
            Err(e) => {
                metrics.store_write_errors.fetch_add(1, Relaxed);
                warn!(path = %path.display(), error = %e, changes = batch.len(), "session store commit failed; these changes are lost on restart");
            }
        }
        // Whether the commit succeeded or not, the broker carries on from
        // memory: what waited on it is delivered and answered now.
        for op in batch.drain(..) {
            after_commit(op);
        }
    }
    if unsynced {
        sync_now(db, path, metrics);
    }
}

/// An empty durable commit: makes every earlier non-durable one durable.
fn sync_now(db: &Database, path: &Path, metrics: &Metrics) {
    let r = db
        .begin_write()
        .map_err(redb::Error::from)
        .and_then(|t| t.commit().map_err(redb::Error::from));
    if let Err(e) = r {
        metrics.store_write_errors.fetch_add(1, Relaxed);
        warn!(path = %path.display(), error = %e, "session store sync failed");
    }
}

/// Does what waited on the commit of `op` (also used when the writer is
/// gone: then nothing is stored, but nothing is held back forever).
pub(super) fn after_commit(op: Op) {
    match op {
        Op::Route(b) => {
            for d in b.deliveries {
                d.mailbox.push_reserved(d.delivery);
            }
            for r in b.releases {
                r.send();
            }
        }
        Op::Progress(p) => {
            for ctl in p.replies {
                p.mailbox.push_ctl(p.conn_id, ctl);
            }
        }
        Op::Flush(w) => {
            let _ = w.send(());
        }
        Op::RetainedPut(_)
        | Op::RetainedDelete(_)
        | Op::SessionPut { .. }
        | Op::SessionDelete(_)
        | Op::WillPut { .. }
        | Op::WillDelete(_) => {}
    }
}

/// Releases what `op` carried without storing it (the writer is gone).
pub(super) fn release_unstored(op: Op) {
    after_commit(op);
}

/// Deletes every record of `client_id` in the `queue` or `inflight` table.
pub(super) fn clear_seqs(
    table: &mut Table<'_, (&str, u64), &[u8]>,
    client_id: &str,
) -> redb::Result<()> {
    table.retain_in((client_id, 0u64)..=(client_id, u64::MAX), |_, _| false)
}

/// Deletes every incoming QoS 2 packet id of `client_id`.
pub(super) fn clear_incoming(
    table: &mut Table<'_, (&str, u16), u8>,
    client_id: &str,
) -> redb::Result<()> {
    table.retain_in((client_id, 0u16)..=(client_id, u16::MAX), |_, _| false)
}

/// Whether `batch` changes anything on disk.
fn writes(batch: &[Op]) -> bool {
    batch.iter().any(|op| match op {
        Op::Flush(_) => false,
        Op::Route(b) => b.changes() > 0,
        Op::Progress(p) => {
            !(p.sent.is_empty()
                && p.released.is_empty()
                && p.done.is_empty()
                && p.incoming_done.is_empty())
        }
        _ => true,
    })
}

/// Applies `batch` in one transaction; `None` when it writes nothing.
fn apply(
    db: &Database,
    batch: &[Op],
    durable: bool,
    now: Now,
) -> Result<Option<Counts>, redb::Error> {
    if !writes(batch) {
        return Ok(None);
    }
    // A session record written several times in one batch (a client
    // subscribing filter by filter) is encoded and stored once: only its
    // last put or delete counts.
    let mut last: HashMap<&Arc<str>, usize> = HashMap::new();
    for (i, op) in batch.iter().enumerate() {
        if let Op::SessionPut { client_id, .. } | Op::SessionDelete(client_id) = op {
            last.insert(client_id, i);
        }
    }
    // A message sent and acknowledged within one batch (a fast client)
    // never gets its in-flight mark written.
    let finished: HashSet<(&str, u64)> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Progress(p) => Some(p.done.iter().map(|&seq| (&*p.client_id, seq))),
            _ => None,
        })
        .flatten()
        .collect();
    let mut txn = db.begin_write()?;
    if !durable {
        txn.set_durability(Durability::None)?;
    }
    let counts;
    {
        let mut retained = txn.open_table(RETAINED)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut queue = txn.open_table(QUEUE)?;
        let mut inflight = txn.open_table(INFLIGHT)?;
        let mut incoming = txn.open_table(INCOMING)?;
        let mut wills = txn.open_table(WILLS)?;
        for (i, op) in batch.iter().enumerate() {
            match op {
                Op::RetainedPut(p) => {
                    let v = codec::encode_retained(p, now);
                    retained.insert(&*p.topic, v.as_slice())?;
                }
                Op::RetainedDelete(topic) => {
                    retained.remove(&**topic)?;
                }
                Op::SessionPut { client_id, state } => {
                    if last.get(client_id) == Some(&i) {
                        let v = codec::encode_session(state, now);
                        sessions.insert(&**client_id, v.as_slice())?;
                    }
                }
                Op::SessionDelete(client_id) => {
                    let id = &**client_id;
                    sessions.remove(id)?;
                    clear_seqs(&mut queue, id)?;
                    clear_seqs(&mut inflight, id)?;
                    clear_incoming(&mut incoming, id)?;
                    wills.remove(id)?;
                }
                Op::Route(b) => {
                    for d in &b.deliveries {
                        let seq = d.delivery.stored.unwrap_or_default();
                        let v = codec::encode_queued(&d.delivery, now);
                        queue.insert((&*d.client_id, seq), v.as_slice())?;
                    }
                    for (id, pkid) in &b.incoming {
                        incoming.insert((&**id, *pkid), 0u8)?;
                    }
                }
                Op::Progress(p) => {
                    let id = &*p.client_id;
                    for &(seq, pkid) in &p.sent {
                        if finished.contains(&(id, seq)) {
                            continue;
                        }
                        let m = codec::encode_mark(Mark::Sent(pkid));
                        inflight.insert((id, seq), m.as_slice())?;
                    }
                    for &(seq, pkid) in &p.released {
                        // The message itself is no longer needed: only the
                        // PUBREL is repeated after a restart.
                        queue.remove((id, seq))?;
                        if finished.contains(&(id, seq)) {
                            continue;
                        }
                        let m = codec::encode_mark(Mark::Released(pkid));
                        inflight.insert((id, seq), m.as_slice())?;
                    }
                    for &seq in &p.done {
                        queue.remove((id, seq))?;
                        inflight.remove((id, seq))?;
                    }
                    for &pkid in &p.incoming_done {
                        incoming.remove((id, pkid))?;
                    }
                }
                Op::WillPut {
                    client_id,
                    will,
                    fire_at_ms,
                } => {
                    let v = codec::encode_will(will, *fire_at_ms, now);
                    wills.insert(&**client_id, v.as_slice())?;
                }
                Op::WillDelete(client_id) => {
                    wills.remove(&**client_id)?;
                }
                Op::Flush(_) => {}
            }
        }
        counts = Counts {
            sessions: sessions.len()?,
            retained: retained.len()?,
            queued: queue.len()?,
            inflight: inflight.len()?,
            wills: wills.len()?,
        };
    }
    txn.commit()?;
    Ok(Some(counts))
}
