//! Site health: the status every edge publishes about itself, and the one
//! rule for whether the cloud still hears from it.
//!
//! An edge puts a [`SiteStatus`] under key `<site>` ([`key`]) in KV bucket
//! [`crate::streams::SITE_STATUS_BUCKET`] every
//! [`SiteStatus::interval_ms`] (5 s by default, `[status] interval_ms` in
//! the edge's configuration), and once more with uplink state
//! [`LinkState::Stopped`] when it shuts down cleanly. While its link to
//! NATS is down it cannot publish: the cloud tells "edge not connected"
//! from the age of the newest status ([`connected`]), measured against the
//! time the KV entry was stored (the server's clock), never the edge's
//! clock, so a site with a wrong clock is not shown offline.

use serde::{Deserialize, Serialize};

/// A status older than this many of its intervals means the edge is not
/// connected (a missed or late status is tolerated, two are not).
pub const FRESH_INTERVALS: u64 = 3;

/// The status's key in the bucket: the site name.
pub fn key(site: &crate::subject::Site) -> &str {
    site.as_str()
}

/// Where the edge's uplink to JetStream is (the bridge's `UplinkState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Started, nothing acknowledged yet.
    Starting,
    /// Publishing and being acknowledged.
    Up,
    /// A publish failed; retrying after a backoff.
    Down,
    /// A backlog exists and nothing was acknowledged for a while.
    Stalled,
    /// Another live edge holds the site's lease: not publishing.
    Refused,
    /// The edge shut down cleanly.
    Stopped,
}

/// Which edge process this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeInfo {
    /// The edge journal's current id (changes when the edge restarts after
    /// a crash or its data directory is replaced; the site lease's
    /// `journal`).
    pub id: String,
    /// The `plantd-edge` version.
    pub version: String,
    /// Who runs it: host, process id, data directory.
    pub holder: String,
    /// When this process started (ms since the Unix epoch, edge clock).
    pub started_ms: u64,
}

/// What has not gone up yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    /// Journaled messages JetStream has not acknowledged.
    pub messages: u64,
    /// Bytes of the journal's segment files on disk: the backlog plus
    /// acknowledged records in segments not yet deleted (a segment goes
    /// when all of its records are acknowledged).
    pub journal_bytes: u64,
    /// The journal's size limit in bytes (0: none).
    pub journal_max_bytes: u64,
    /// Age of the oldest unacknowledged message when the status was taken,
    /// in ms (0 without a backlog): how far the cloud is behind the site.
    pub lag_ms: u64,
    /// Whether publishers are held back because the journal is full.
    pub blocked: bool,
}

/// The uplink's state and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// Current state.
    pub state: LinkState,
    /// When it entered that state (ms since the Unix epoch, edge clock).
    pub since_ms: u64,
    /// When JetStream last acknowledged a message (unset: not since start).
    pub last_ack_ms: Option<u64>,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

/// One status of a site's edge (JSON in the bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    /// The site.
    pub site: String,
    /// The edge.
    pub edge: EdgeInfo,
    /// When the edge took this status (ms since the Unix epoch, edge
    /// clock).
    pub at_ms: u64,
    /// How often the edge publishes it, in ms.
    pub interval_ms: u64,
    /// MQTT clients connected.
    pub clients: u64,
    /// When the newest publication from a device was accepted (ms since
    /// the Unix epoch, edge clock; unset: none since the edge started).
    pub last_message_ms: Option<u64>,
    /// What has not gone up yet.
    pub backlog: Backlog,
    /// The uplink.
    pub uplink: Uplink,
}

/// Whether an edge whose newest status the server stored `age_ms` ago,
/// publishing every `interval_ms`, is connected: the status is younger
/// than [`FRESH_INTERVALS`] intervals and does not say the edge stopped.
pub fn connected(status: &SiteStatus, age_ms: u64) -> bool {
    status.uplink.state != LinkState::Stopped
        && age_ms < status.interval_ms.max(1).saturating_mul(FRESH_INTERVALS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: LinkState) -> SiteStatus {
        SiteStatus {
            site: "plant-1".into(),
            edge: EdgeInfo {
                id: "j1".into(),
                version: "0.1.0".into(),
                holder: "host h".into(),
                started_ms: 1,
            },
            at_ms: 10,
            interval_ms: 5_000,
            clients: 2,
            last_message_ms: Some(9),
            backlog: Backlog::default(),
            uplink: Uplink {
                state,
                since_ms: 2,
                last_ack_ms: None,
                last_error: None,
            },
        }
    }

    #[test]
    fn connected_while_younger_than_three_intervals_and_not_stopped() {
        let up = status(LinkState::Up);
        assert!(connected(&up, 0));
        assert!(connected(&up, 14_999));
        assert!(!connected(&up, 15_000));
        // A down uplink is still a connected edge (it reached NATS to say so).
        assert!(connected(&status(LinkState::Down), 1_000));
        assert!(!connected(&status(LinkState::Stopped), 0));
    }

    #[test]
    fn json_round_trip_with_snake_case_states() {
        let s = status(LinkState::Stalled);
        let text = serde_json::to_string(&s).expect("json");
        assert!(text.contains(r#""state":"stalled""#), "{text}");
        let back: SiteStatus = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, s);
    }
}
