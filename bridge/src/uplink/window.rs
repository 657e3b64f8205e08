//! The publishes awaiting their acknowledgement, and reading one.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// A publish awaiting its acknowledgement.
pub(super) struct Pending {
    /// Its subject (for order bookkeeping and logs).
    pub(super) subject: async_nats::Subject,
    /// When it was sent.
    pub(super) sent: Instant,
}

/// The records between the cursor and the reader.
pub(super) struct Window {
    /// Records sent and not yet acknowledged, by journal sequence.
    pub(super) outstanding: BTreeMap<u64, Pending>,
    /// Highest sequence read.
    pub(super) last_read: u64,
    /// Subjects with a failed publish on the current connection.
    pub(super) failed_subjects: HashSet<String>,
    /// Whether the current connection has had a publish acknowledged.
    pub(super) progressed: bool,
    /// The lowest sequence refused on the current connection: the cursor
    /// stays below it, whatever was acknowledged after it.
    pub(super) refused: Option<u64>,
}

impl Window {
    pub(super) fn new(start: u64) -> Self {
        Self {
            outstanding: BTreeMap::new(),
            last_read: start - 1,
            failed_subjects: HashSet::new(),
            progressed: false,
            refused: None,
        }
    }

    /// Everything up to here is acknowledged.
    pub(super) fn cursor(&self) -> u64 {
        let cursor = self
            .outstanding
            .first_key_value()
            .map(|(s, _)| s - 1)
            .unwrap_or(self.last_read);
        match self.refused {
            Some(r) => cursor.min(r - 1),
            None => cursor,
        }
    }

    /// When the oldest unacknowledged publish was sent.
    pub(super) fn oldest_sent(&self) -> Option<Instant> {
        self.outstanding.first_key_value().map(|(_, p)| p.sent)
    }

    /// Abandons everything outstanding and rewinds to `from`; returns how
    /// many records will be sent again.
    pub(super) fn reset(&mut self, from: u64) -> u64 {
        let abandoned = self.outstanding.len() as u64;
        self.outstanding.clear();
        self.failed_subjects.clear();
        self.refused = None;
        self.last_read = from - 1;
        abandoned
    }
}

/// Reads a JetStream publish acknowledgement: `Ok(duplicate)` when the
/// message is stored, the reason when it was refused.
pub(super) fn parse_ack(msg: &async_nats::Message) -> Result<bool, String> {
    if let Some(status) = msg.status {
        return Err(if status == async_nats::StatusCode::NO_RESPONDERS {
            "no JetStream stream for this site's subjects (create it or run with --create-streams)"
                .into()
        } else {
            format!(
                "JetStream answered {status}{}",
                msg.description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )
        });
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        duplicate: bool,
        #[serde(default)]
        seq: u64,
        error: Option<ApiError>,
    }
    #[derive(serde::Deserialize)]
    struct ApiError {
        #[serde(default)]
        code: u16,
        #[serde(default)]
        description: String,
    }
    match serde_json::from_slice::<Reply>(&msg.payload) {
        Ok(Reply { error: Some(e), .. }) => Err(format!(
            "JetStream refused the publish ({}): {}",
            e.code, e.description
        )),
        Ok(Reply { seq: 0, .. }) => Err("JetStream acknowledgement without a sequence".into()),
        Ok(r) => Ok(r.duplicate),
        Err(e) => Err(format!("unreadable JetStream acknowledgement: {e}")),
    }
}
