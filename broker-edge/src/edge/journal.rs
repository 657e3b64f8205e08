//! The edge's journal: its options from the configuration
//! ([`journal_options`]) and opening it at start, reporting what recovery
//! repaired.

use std::path::Path;
use std::time::Duration;

use plantd_journal::{FsyncPolicy, Journal, Options, OverflowPolicy};

use super::EdgeError;
use crate::config::Config;

/// Journal options from the configuration.
///
/// # Errors
/// [`EdgeError::Config`] for an unknown policy.
pub fn journal_options(config: &Config) -> Result<Options, EdgeError> {
    let j = &config.journal;
    let fsync: FsyncPolicy = j.fsync.parse().map_err(EdgeError::Config)?;
    let overflow: OverflowPolicy = j.overflow.parse().map_err(EdgeError::Config)?;
    Ok(Options {
        fsync,
        overflow,
        max_bytes: j.max_bytes,
        max_age: j.max_age_secs.map(Duration::from_secs),
        segment_bytes: j.segment_bytes,
        ..Options::default()
    })
}

/// Opens the journal under `<data_dir>/journal` with the configured
/// options (keeping what the analytics engine has not applied yet, when it
/// is on), and logs what recovery repaired and what it holds.
///
/// # Errors
/// [`EdgeError::Config`] for an unknown policy, [`EdgeError::Journal`]
/// when it cannot be opened.
pub(super) fn open_journal(config: &Config, data_dir: &Path) -> Result<Journal, EdgeError> {
    let mut options = journal_options(config)?;
    if config.analytics.enabled {
        // What the analytics engine has not applied stays until it has.
        options.keep_from = crate::analytics::resume_from(data_dir);
    }
    let (journal, recovery) = Journal::open(data_dir.join("journal"), options)?;
    if recovery.repaired() {
        tracing::warn!(
            truncated_bytes = recovery.truncated_bytes,
            segments = ?recovery.truncated_segments,
            corrupt = recovery.corrupt,
            missing = recovery.missing_records,
            "journal repaired at start"
        );
    }
    tracing::info!(
        records = recovery.records,
        unacked = recovery.last_seq.saturating_sub(recovery.acked),
        "journal ready"
    );
    Ok(journal)
}
