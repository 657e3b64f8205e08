//! The persisted acknowledgement cursor: "every record up to this sequence
//! is safely upstream". Written atomically (temporary file, fsync, rename)
//! with a checksum, so a crash leaves either the old or the new value.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::JournalError;

const FILE: &str = "cursor";
const TMP: &str = "cursor.tmp";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the cursor; `None` when there is none yet or it is unreadable
/// (a damaged cursor only means resending more, which JetStream
/// de-duplicates).
pub fn read(dir: &Path) -> Option<u64> {
    let bytes = fs::read(path(dir)).ok()?;
    let b: [u8; 12] = bytes.get(..12)?.try_into().ok()?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[..8]);
    let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    (crc32c::crc32c(&seq) == crc).then(|| u64::from_le_bytes(seq))
}

/// Persists `seq` atomically.
///
/// # Errors
/// [`JournalError::Io`] if the file cannot be written or renamed.
pub fn write(dir: &Path, seq: u64) -> Result<(), JournalError> {
    let tmp = dir.join(TMP);
    let mut buf = Vec::with_capacity(12);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(&seq.to_le_bytes()).to_le_bytes());
    let mut f = fs::File::create(&tmp).map_err(|e| JournalError::io(&tmp, e))?;
    f.write_all(&buf).map_err(|e| JournalError::io(&tmp, e))?;
    f.sync_data().map_err(|e| JournalError::io(&tmp, e))?;
    fs::rename(&tmp, path(dir)).map_err(|e| JournalError::io(&path(dir), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(read(dir.path()), None);
        write(dir.path(), 12345).expect("write");
        assert_eq!(read(dir.path()), Some(12345));
        fs::write(dir.path().join(FILE), b"garbage-bytes").expect("damage");
        assert_eq!(read(dir.path()), None, "a damaged cursor is ignored");
    }
}
