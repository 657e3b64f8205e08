//! How durable, how large, and what happens when full.

use std::str::FromStr;
use std::time::Duration;

/// When appended records are fsynced, and so when [`crate::Journal::append`]
/// resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Fsync every batch the writer takes from its queue before
    /// acknowledging it. Concurrent appenders still share an fsync.
    Always,
    /// Group commit: fsync once `max_delay` has passed since the first
    /// unsynced record or `max_bytes` are unsynced, whichever comes first.
    Batch {
        /// The longest an append waits for the fsync that covers it.
        max_delay: Duration,
        /// Unsynced bytes that trigger an fsync at once.
        max_bytes: usize,
    },
    /// Never fsync: a record is "durable" once written to the OS. Survives
    /// a crash of the process, not a power loss.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Batch {
            max_delay: Duration::from_millis(2),
            max_bytes: 256 * 1024,
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::default()),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!(
                "unknown fsync policy {other:?} (expected always, batch or never)"
            )),
        }
    }
}

/// What a full journal does with a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Stop accepting appends until acknowledged records free space:
    /// publishers see a slow broker; nothing is dropped.
    #[default]
    Block,
    /// Delete the oldest segment, acknowledged or not, and count the records
    /// lost.
    DropOldest,
}

impl FromStr for OverflowPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(OverflowPolicy::Block),
            "drop-oldest" => Ok(OverflowPolicy::DropOldest),
            other => Err(format!(
                "unknown overflow policy {other:?} (expected block or drop-oldest)"
            )),
        }
    }
}

/// Journal settings. `Default` is what the edge uses unless configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// Durability of appends.
    pub fsync: FsyncPolicy,
    /// Behaviour when `max_bytes` would be exceeded.
    pub overflow: OverflowPolicy,
    /// Upper bound of all segment files together (0 = unbounded).
    pub max_bytes: u64,
    /// Segments whose newest record is older than this are deleted and the
    /// unacknowledged records in them counted as expired (`None` = keep).
    pub max_age: Option<Duration>,
    /// Size at which a segment is closed and a new one started.
    pub segment_bytes: u64,
    /// Largest single record payload.
    pub max_record: usize,
    /// Appends queued for the writer before appenders wait.
    pub queue_depth: usize,
    /// How often an advanced acknowledgement cursor is persisted.
    pub cursor_interval: Duration,
    /// Records from this sequence on are kept even once acknowledged
    /// (another local reader still needs them, e.g. the edge's analytics
    /// replaying after a crash); moved later with
    /// [`crate::Journal::keep_from`]. `None`: acknowledged records go. The
    /// size and age limits still apply.
    pub keep_from: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::default(),
            overflow: OverflowPolicy::default(),
            max_bytes: 1024 * 1024 * 1024,
            max_age: None,
            segment_bytes: 64 * 1024 * 1024,
            max_record: 16 * 1024 * 1024,
            queue_depth: 8192,
            cursor_interval: Duration::from_millis(100),
            keep_from: None,
        }
    }
}

impl Options {
    /// Makes the limits consistent: a segment is at most a quarter of
    /// `max_bytes` (so dropping or freeing one makes real room), at least
    /// 4 KiB, and a record fits in a segment.
    pub(crate) fn normalised(mut self) -> Self {
        if self.max_bytes > 0 {
            self.segment_bytes = self.segment_bytes.min(self.max_bytes / 4);
        }
        self.segment_bytes = self.segment_bytes.max(4096);
        let room = usize::try_from(self.segment_bytes).unwrap_or(usize::MAX)
            - crate::frame::HEADER_LEN
            - crate::segment::MAGIC.len();
        self.max_record = self.max_record.min(room);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_from_their_flag_names() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert!(matches!("batch".parse(), Ok(FsyncPolicy::Batch { .. })));
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
        assert_eq!("drop-oldest".parse(), Ok(OverflowPolicy::DropOldest));
        assert_eq!("block".parse(), Ok(OverflowPolicy::Block));
        assert!("drop".parse::<OverflowPolicy>().is_err());
    }

    #[test]
    fn limits_are_made_consistent() {
        let o = Options {
            max_bytes: 64 * 1024,
            ..Options::default()
        }
        .normalised();
        assert_eq!(o.segment_bytes, 16 * 1024);
        assert!(o.max_record < 16 * 1024);
    }
}
