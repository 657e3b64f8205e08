//! Segment files: `<first sequence, 20 digits>.seg`, each starting with an
//! 8-byte magic, followed by records. Only the newest segment is written to.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::JournalError;
use crate::frame::{self, HEADER_LEN};

/// The first bytes of every segment file (format version 1).
pub const MAGIC: &[u8; 8] = b"PLTDJNL1";

/// The file of the segment whose first record is `first_seq`.
pub fn path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

/// The segments in `dir`, oldest first, as `(first_seq, path)`.
///
/// # Errors
/// [`JournalError::Io`] if the directory cannot be listed.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))? {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            out.push((first, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// What a scan of one segment found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Valid records.
    pub records: u64,
    /// Sequence of the last valid record (0 if none).
    pub last_seq: u64,
    /// Bytes up to the end of the last valid record.
    pub valid_len: u64,
    /// Bytes after that (a torn or corrupt tail).
    pub invalid_len: u64,
    /// Newest append time among the valid records.
    pub max_ts: u64,
    /// Whether the invalid tail was a checksum failure (rather than a
    /// short, torn record).
    pub corrupt: bool,
}

/// Reads a segment, validating every record, and stops at the first
/// incomplete, corrupt or out-of-sequence record.
///
/// # Errors
/// [`JournalError::Io`] if the file cannot be read.
pub fn scan(path: &Path, first_seq: u64, max_record: usize) -> Result<Scan, JournalError> {
    let io = |e| JournalError::io(path, e);
    let file = File::open(path).map_err(io)?;
    let total = file.metadata().map_err(io)?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut scan = Scan::default();
    let mut magic = [0u8; 8];
    if total < MAGIC.len() as u64 || r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        scan.invalid_len = total;
        scan.corrupt = total >= MAGIC.len() as u64;
        return Ok(scan);
    }
    let mut pos = MAGIC.len() as u64;
    let mut expected = first_seq;
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; HEADER_LEN];
        if total - pos < HEADER_LEN as u64 {
            break;
        }
        r.read_exact(&mut head).map_err(io)?;
        let h = frame::parse_header(&head);
        let len = h.len as usize;
        if len > max_record {
            scan.corrupt = true;
            break;
        }
        if total - pos - (HEADER_LEN as u64) < len as u64 {
            break;
        }
        payload.resize(len, 0);
        r.read_exact(&mut payload).map_err(io)?;
        if !frame::verify(&h, &payload) || h.seq != expected {
            scan.corrupt = true;
            break;
        }
        pos += (HEADER_LEN + len) as u64;
        scan.records += 1;
        scan.last_seq = h.seq;
        scan.max_ts = scan.max_ts.max(h.timestamp_ms);
        expected += 1;
    }
    scan.valid_len = pos;
    scan.invalid_len = total - pos;
    Ok(scan)
}

/// Cuts a segment back to `len` bytes and fsyncs it.
///
/// # Errors
/// [`JournalError::Io`] if the file cannot be truncated.
pub fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let io = |e| JournalError::io(path, e);
    let f = OpenOptions::new().write(true).open(path).map_err(io)?;
    f.set_len(len).map_err(io)?;
    f.sync_all().map_err(io)
}

/// What opening the journal found and repaired. Logged at start; the edge
/// also exposes it in metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files found.
    pub segments: usize,
    /// Valid records found.
    pub records: u64,
    /// Oldest sequence kept (0 if empty).
    pub first_seq: u64,
    /// Newest valid sequence (0 if empty).
    pub last_seq: u64,
    /// The persisted acknowledgement cursor.
    pub acked: u64,
    /// Bytes cut from torn or corrupt segment tails.
    pub truncated_bytes: u64,
    /// Segments whose tail was cut.
    pub truncated_segments: Vec<PathBuf>,
    /// Whether any cut was a checksum failure rather than a torn write.
    pub corrupt: bool,
    /// Sequence numbers missing between segments (lost to corruption).
    pub missing_records: u64,
}

impl Recovery {
    /// Whether recovery had to repair anything.
    pub fn repaired(&self) -> bool {
        self.truncated_bytes > 0 || self.missing_records > 0
    }
}
