//! Files only their owner may read (mode 0600): local keys and passwords
//! that `plantd up` makes on first start and keeps.
//!
//! [`create_once`] is the first-start rule: the file is created with mode
//! 0600 from the start (never world-readable, even for an instant) and
//! only when it does not exist, so two processes starting at once keep one
//! value — the loser reads the winner's.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// What [`create_once`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The file did not exist: it now holds the contents given.
    New,
    /// The file existed: its contents, unchanged.
    Existing(String),
}

/// Creates `path` (and its directory) with mode 0600 holding `contents`,
/// unless it exists; then its contents are returned and nothing is
/// written.
///
/// # Errors
/// When the directory or the file cannot be created, written or read (the
/// error's message names the path).
pub fn create_once(path: &Path, contents: &str) -> std::io::Result<Created> {
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(contents.as_bytes()).map_err(named)?;
            f.sync_all().map_err(named)?;
            Ok(Created::New)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path)
            .map(Created::Existing)
            .map_err(named),
        Err(e) => Err(named(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn made_private_once_then_kept() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("sub").join("key");
        assert_eq!(create_once(&path, "first").expect("create"), Created::New);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            create_once(&path, "second").expect("read"),
            Created::Existing("first".to_owned())
        );
    }
}
