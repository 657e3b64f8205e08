//! Readers: follow the journal in sequence order, seeing only durable
//! records, and wait for more.
//!
//! Reads are plain file reads of recently written data (normally served
//! from the page cache); a reader belongs to one task.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::JournalError;
use crate::frame::{self, HEADER_LEN};
use crate::segment::MAGIC;
use crate::shared::Shared;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// When it was appended (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The payload, as appended.
    pub payload: Bytes,
}

/// The file a reader has open: which segment, and where in it.
struct Open {
    /// The segment's first sequence.
    first_seq: u64,
    /// Buffered reader over the file.
    file: BufReader<File>,
    /// Sequence of the next record at the read position.
    at_seq: u64,
}

/// Yields records from a start sequence onwards. See
/// [`crate::Journal::reader`].
pub struct Reader {
    /// Shared journal state.
    shared: Arc<Shared>,
    /// The next sequence to return.
    next: u64,
    /// The open segment, if any.
    open: Option<Open>,
    /// Durability notifications.
    durable: watch::Receiver<u64>,
    /// Records skipped because they were deleted before being read.
    skipped: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("next", &self.next)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, from: u64) -> Self {
        let durable = shared.durable.subscribe();
        Self {
            shared,
            next: from.max(1),
            open: None,
            durable,
            skipped: 0,
        }
    }

    /// The sequence the next record will have (unless records are skipped).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Records that were deleted (drop-oldest, age) before this reader got
    /// to them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Moves the reader to `seq` (for example back to the acknowledged
    /// cursor after an uplink failure, to resend).
    pub fn seek(&mut self, seq: u64) {
        self.next = seq.max(1);
        self.open = None;
    }

    /// The next durable record, waiting for one if there is none yet.
    ///
    /// # Errors
    /// [`JournalError::Closed`] once the journal's writer has stopped and
    /// every durable record has been read; I/O errors from reading.
    pub async fn next(&mut self) -> Result<Record, JournalError> {
        loop {
            if let Some(r) = self.try_next()? {
                return Ok(r);
            }
            if self.durable.changed().await.is_err() {
                // Writer gone: return what is left, then Closed.
                return match self.try_next()? {
                    Some(r) => Ok(r),
                    None => Err(JournalError::Closed),
                };
            }
        }
    }

    /// The next durable record if there is one now.
    ///
    /// # Errors
    /// I/O errors, or [`JournalError::Failed`] for a record whose checksum
    /// fails (disk corruption after recovery).
    pub fn try_next(&mut self) -> Result<Option<Record>, JournalError> {
        loop {
            let durable = *self.durable.borrow_and_update();
            if self.next > durable {
                return Ok(None);
            }
            let floor = self.shared.floor();
            if self.next < floor {
                self.skipped += floor - self.next;
                self.next = floor;
                self.open = None;
                continue;
            }
            // (Re)open when needed; if retention removed the segment between
            // looking and opening, the floor has moved: start over. If the
            // floor has not moved, the segment was deleted behind the
            // journal's back (a wiped data directory): an error, not a
            // retry — retrying would spin on the missing file forever.
            if self.open.as_ref().is_none_or(|o| o.at_seq != self.next)
                && !self.open_at(self.next)?
            {
                if self.shared.floor() <= self.next {
                    return Err(JournalError::Failed(format!(
                        "the journal segment holding record {} is gone (deleted outside plantd?)",
                        self.next
                    )));
                }
                continue;
            }
            let Some(open) = self.open.as_mut() else {
                continue;
            };
            match read_frame(&mut open.file, self.shared.max_record) {
                Ok(Some((h, payload))) => {
                    if h.seq != self.next {
                        return Err(JournalError::Failed(format!(
                            "journal out of order: expected {} found {} in segment {}",
                            self.next, h.seq, open.first_seq
                        )));
                    }
                    self.next += 1;
                    open.at_seq = self.next;
                    return Ok(Some(Record {
                        seq: h.seq,
                        timestamp_ms: h.timestamp_ms,
                        payload,
                    }));
                }
                Ok(None) => {
                    // End of this segment: the record is in the next one.
                    self.open = None;
                    if !self.segment_after(self.next) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn segment_after(&self, seq: u64) -> bool {
        self.shared
            .segments
            .lock()
            .map(|s| s.iter().any(|m| m.first_seq <= seq && seq <= m.last_seq))
            .unwrap_or(false)
    }

    /// Opens the segment holding `seq` and positions before it. Returns
    /// false if it is gone.
    fn open_at(&mut self, seq: u64) -> Result<bool, JournalError> {
        let meta = self.shared.segments.lock().ok().and_then(|s| {
            s.iter()
                .rev()
                .find(|m| m.first_seq <= seq)
                .map(|m| (m.first_seq, m.path.clone()))
        });
        let Some((first_seq, path)) = meta else {
            return Ok(false);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(JournalError::io(&path, e)),
        };
        let mut file = BufReader::with_capacity(256 * 1024, file);
        file.seek(SeekFrom::Start(MAGIC.len() as u64))
            .map_err(|e| JournalError::io(&path, e))?;
        let mut at = first_seq;
        while at < seq {
            let mut head = [0u8; HEADER_LEN];
            if file.read_exact(&mut head).is_err() {
                return Ok(false);
            }
            let h = frame::parse_header(&head);
            file.seek_relative(i64::from(h.len))
                .map_err(|e| JournalError::io(&path, e))?;
            at = h.seq + 1;
        }
        self.open = Some(Open {
            first_seq,
            file,
            at_seq: seq,
        });
        Ok(true)
    }
}

fn read_frame(
    file: &mut BufReader<File>,
    max_record: usize,
) -> Result<Option<(frame::Header, Bytes)>, JournalError> {
    let mut head = [0u8; HEADER_LEN];
    match file.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(JournalError::Failed(e.to_string())),
    }
    let h = frame::parse_header(&head);
    let len = h.len as usize;
    if len > max_record {
        return Err(JournalError::Failed(format!(
            "journal record {} claims {len} bytes",
            h.seq
        )));
    }
    let mut payload = vec![0u8; len];
    file.read_exact(&mut payload)
        .map_err(|e| JournalError::Failed(e.to_string()))?;
    if !frame::verify(&h, &payload) {
        return Err(JournalError::Failed(format!(
            "journal record {} fails its checksum",
            h.seq
        )));
    }
    Ok(Some((h, Bytes::from(payload))))
}
