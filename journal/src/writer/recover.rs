//! Opening a journal: every segment validated, torn tails truncated, the
//! cursor read, and the writer's [`State`] built from what is on disk.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{State, create_segment};
use crate::options::Options;
use crate::segment::{self, MAGIC, Recovery};
use crate::shared::{Counters, SegmentMeta, Shared};
use crate::{JournalError, cursor};

/// Opens the journal directory, validates every segment, truncates torn
/// tails, and builds the writer's state.
pub(crate) fn recover(
    dir: &Path,
    opts: Options,
) -> Result<(Arc<Shared>, Recovery, State), JournalError> {
    let opts = opts.normalised();
    fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut rec = Recovery::default();
    let mut metas: Vec<SegmentMeta> = Vec::new();
    let found = segment::list(dir)?;
    rec.segments = found.len();
    let mut expected_next: Option<u64> = None;
    for (first, path) in found {
        let scan = segment::scan(&path, first, opts.max_record)?;
        if scan.invalid_len > 0 {
            tracing::warn!(
                segment = %path.display(),
                kept_records = scan.records,
                cut_bytes = scan.invalid_len,
                corrupt = scan.corrupt,
                "journal recovery: cutting an invalid segment tail"
            );
            segment::truncate(&path, scan.valid_len.max(MAGIC.len() as u64))?;
            if scan.valid_len < MAGIC.len() as u64 {
                // Not even the magic survived: rewrite it.
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| JournalError::io(&path, e))?;
                f.write_all(MAGIC).map_err(|e| JournalError::io(&path, e))?;
                f.sync_data().map_err(|e| JournalError::io(&path, e))?;
            }
            rec.truncated_bytes += scan.invalid_len;
            rec.truncated_segments.push(path.clone());
            rec.corrupt |= scan.corrupt;
        }
        if let Some(exp) = expected_next
            && first > exp
        {
            rec.missing_records += first - exp;
        }
        rec.records += scan.records;
        let last = if scan.records == 0 {
            first - 1
        } else {
            scan.last_seq
        };
        expected_next = Some(last + 1);
        metas.push(SegmentMeta {
            first_seq: first,
            last_seq: last,
            bytes: scan.valid_len.max(MAGIC.len() as u64),
            max_ts: scan.max_ts,
            path,
        });
    }
    // Drop empty segments other than the newest (left by a crash right
    // after a rotation).
    let newest = metas.len().saturating_sub(1);
    let mut kept = Vec::with_capacity(metas.len());
    for (i, m) in metas.into_iter().enumerate() {
        if m.last_seq < m.first_seq && i != newest {
            fs::remove_file(&m.path).map_err(|e| JournalError::io(&m.path, e))?;
        } else {
            kept.push(m);
        }
    }
    let mut metas = kept;
    let acked_cursor = cursor::read(dir).unwrap_or(0);
    let (file, active_path, next_seq) = match metas.last() {
        Some(last) => {
            let f = OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(|e| JournalError::io(&last.path, e))?;
            (f, last.path.clone(), last.last_seq + 1)
        }
        None => {
            // A fresh journal continues after the cursor, so sequence
            // numbers (and JetStream message ids) are never reused even if
            // every segment was deleted.
            let first = acked_cursor + 1;
            let (f, meta) = create_segment(dir, first)?;
            let p = meta.path.clone();
            metas.push(meta);
            (f, p, first)
        }
    };
    let last_seq = next_seq - 1;
    let acked = acked_cursor.min(last_seq);
    rec.first_seq = metas.first().map(|m| m.first_seq).unwrap_or(next_seq);
    rec.last_seq = last_seq;
    rec.acked = acked;
    let active_bytes = metas.last().map(|m| m.bytes).unwrap_or(0);
    let (durable, _) = watch::channel(last_seq);
    let shared = Arc::new(Shared {
        max_record: opts.max_record,
        max_bytes: opts.max_bytes,
        acked: AtomicU64::new(acked),
        keep_from: AtomicU64::new(opts.keep_from.unwrap_or(u64::MAX)),
        last_seq: AtomicU64::new(last_seq),
        durable,
        segments: Mutex::new(metas),
        wake: Notify::new(),
        closing: AtomicBool::new(false),
        blocked: AtomicBool::new(false),
        failed: Mutex::new(None),
        counters: Counters::default(),
    });
    if rec.repaired() {
        tracing::warn!(?rec, "journal recovered with repairs");
    } else {
        tracing::info!(
            segments = rec.segments,
            records = rec.records,
            last_seq = rec.last_seq,
            acked = rec.acked,
            "journal opened"
        );
    }
    let state = State {
        dir: dir.to_owned(),
        opts,
        file,
        active_path,
        active_bytes,
        next_seq,
        buf: Vec::with_capacity(1 << 20),
        written_seq: last_seq,
        pending: Vec::new(),
        unsynced_since: None,
        unsynced_bytes: 0,
        persisted_cursor: acked_cursor,
        cursor_written_at: Instant::now(),
        warned_full: false,
    };
    Ok((shared, rec, state))
}
