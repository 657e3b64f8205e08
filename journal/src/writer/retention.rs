//! What the writer deletes: acknowledged segments, segments past the age
//! limit, and — under the size limit — the overflow policy that makes room
//! for new records (refuse, or drop the oldest and count the loss).

use std::fs;
use std::sync::atomic::Ordering;

use super::{State, TICK, now_ms};
use crate::JournalError;
use crate::options::OverflowPolicy;
use crate::shared::{SegmentMeta, Shared};

impl State {
    fn total_bytes(shared: &Shared) -> u64 {
        shared
            .segments
            .lock()
            .map(|s| s.iter().map(|m| m.bytes).sum())
            .unwrap_or(0)
    }

    /// Applies the overflow policy until `need` more bytes fit.
    pub(super) async fn make_room(
        &mut self,
        shared: &Shared,
        need: u64,
    ) -> Result<(), JournalError> {
        let max = self.opts.max_bytes;
        if max == 0 {
            return Ok(());
        }
        self.warn_fill(shared);
        loop {
            if Self::total_bytes(shared) + need <= max {
                if shared.blocked.swap(false, Ordering::Relaxed) {
                    tracing::info!("journal has room again; accepting appends");
                }
                return Ok(());
            }
            self.delete_acked(shared)?;
            if Self::total_bytes(shared) + need <= max {
                continue;
            }
            match self.opts.overflow {
                OverflowPolicy::DropOldest => {
                    if !self.drop_oldest(shared)? {
                        // Only the active segment is left: start a new one so
                        // the full one can go.
                        self.rotate(shared)?;
                        if !self.drop_oldest(shared)? {
                            return Ok(());
                        }
                    }
                }
                OverflowPolicy::Block => {
                    // Make what we have readable, so the bridge can send and
                    // acknowledge it and free space.
                    self.sync(shared)?;
                    if !shared.blocked.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            bytes = Self::total_bytes(shared),
                            max_bytes = max,
                            "journal full: holding back publishers until the uplink catches up"
                        );
                    }
                    if shared.closing.load(Ordering::Acquire) {
                        return Err(JournalError::Closed);
                    }
                    tokio::select! {
                        _ = shared.wake.notified() => {}
                        _ = tokio::time::sleep(TICK) => {}
                    }
                    self.housekeeping(shared, false)?;
                }
            }
        }
    }

    fn warn_fill(&mut self, shared: &Shared) {
        let max = self.opts.max_bytes;
        if max == 0 {
            return;
        }
        let total = Self::total_bytes(shared);
        if !self.warned_full && total * 10 >= max * 8 {
            self.warned_full = true;
            tracing::warn!(bytes = total, max_bytes = max, "journal is 80% full");
        } else if self.warned_full && total * 10 < max * 7 {
            self.warned_full = false;
            tracing::info!(bytes = total, max_bytes = max, "journal below 70% again");
        }
    }

    /// Deletes the oldest non-active segment; returns whether one was
    /// deleted. Unacknowledged records in it are counted as dropped.
    fn drop_oldest(&mut self, shared: &Shared) -> Result<bool, JournalError> {
        let victim = {
            let Ok(mut segs) = shared.segments.lock() else {
                return Ok(false);
            };
            if segs.len() < 2 {
                return Ok(false);
            }
            segs.remove(0)
        };
        let lost = self.forget(shared, &victim)?;
        if lost > 0 {
            shared
                .counters
                .dropped_overflow
                .fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(
                lost,
                first = victim.first_seq,
                last = victim.last_seq,
                "journal full: dropped the oldest unacknowledged records (drop-oldest policy)"
            );
        }
        Ok(true)
    }

    /// Removes a segment's file; returns how many unacknowledged records it
    /// held, and moves the cursor past them.
    fn forget(&mut self, shared: &Shared, seg: &SegmentMeta) -> Result<u64, JournalError> {
        let acked = shared.acked.load(Ordering::Acquire);
        let lost = seg.last_seq.saturating_sub(acked.max(seg.first_seq - 1));
        if seg.last_seq >= seg.first_seq {
            shared.acked.fetch_max(seg.last_seq, Ordering::AcqRel);
        }
        match fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io(&seg.path, e)),
        }
        Ok(lost)
    }

    /// Deletes segments whose every record is acknowledged (and not held
    /// by [`Shared::keep_from`]).
    pub(super) fn delete_acked(&mut self, shared: &Shared) -> Result<(), JournalError> {
        let acked = shared
            .acked
            .load(Ordering::Acquire)
            .min(shared.keep_from.load(Ordering::Acquire).saturating_sub(1));
        let victims: Vec<SegmentMeta> = {
            let Ok(mut segs) = shared.segments.lock() else {
                return Ok(());
            };
            let keep_from = segs
                .iter()
                .take(segs.len().saturating_sub(1))
                .take_while(|m| m.last_seq <= acked)
                .count();
            segs.drain(..keep_from).collect()
        };
        for v in &victims {
            self.forget(shared, v)?;
        }
        Ok(())
    }

    /// Deletes segments older than `max_age`.
    pub(super) fn expire(&mut self, shared: &Shared) -> Result<(), JournalError> {
        let Some(max_age) = self.opts.max_age else {
            return Ok(());
        };
        let cutoff =
            now_ms().saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
        let victims: Vec<SegmentMeta> = {
            let Ok(mut segs) = shared.segments.lock() else {
                return Ok(());
            };
            let n = segs
                .iter()
                .take(segs.len().saturating_sub(1))
                .take_while(|m| m.max_ts < cutoff)
                .count();
            segs.drain(..n).collect()
        };
        for v in &victims {
            let lost = self.forget(shared, v)?;
            if lost > 0 {
                shared
                    .counters
                    .dropped_age
                    .fetch_add(lost, Ordering::Relaxed);
                tracing::warn!(
                    lost,
                    first = v.first_seq,
                    last = v.last_seq,
                    "journal: expired records older than max_age"
                );
            }
        }
        Ok(())
    }
}
