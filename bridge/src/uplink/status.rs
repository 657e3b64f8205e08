//! The uplink's settings and what it reports.

use std::time::{Duration, Instant};

use plantd_shared::subject::Site;

/// Uplink settings.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// This edge's site: the subject prefix and the message id prefix.
    pub site: Site,
    /// Publishes awaiting acknowledgement at most.
    pub window: usize,
    /// How long one acknowledgement may take before the link is considered
    /// failed.
    pub ack_timeout: Duration,
    /// A backlog with no acknowledgement for this long is reported as
    /// stalled.
    pub stall_after: Duration,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Start from this sequence instead of just after the cursor (recovery
    /// tooling and tests; resent records are de-duplicated by JetStream).
    pub start: Option<u64>,
    /// Ask JetStream what it last stored for this site on every new
    /// connection and skip what it holds (on by default; off, resends rely
    /// on the duplicate window alone).
    pub resume: bool,
}

impl UplinkConfig {
    /// Defaults for `site`: a window of 4096, 5 s ack timeout, stalled
    /// after 10 s, backoff from 100 ms to 10 s.
    pub fn new(site: Site) -> Self {
        Self {
            site,
            window: 4096,
            ack_timeout: Duration::from_secs(5),
            stall_after: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            start: None,
            resume: true,
        }
    }
}

/// Where the uplink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkState {
    /// Started, nothing acknowledged yet.
    Starting,
    /// Publishing and being acknowledged.
    Up,
    /// A publish failed; retrying after a backoff.
    Down,
    /// A backlog exists and nothing was acknowledged for `stall_after`.
    Stalled,
    /// Another live edge journal holds the site's lease: not publishing
    /// (`last_error` says who); retried until it is gone.
    Refused,
    /// Stopped by shutdown.
    Stopped,
}

impl UplinkState {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkState::Starting => "starting",
            UplinkState::Up => "up",
            UplinkState::Down => "down",
            UplinkState::Stalled => "stalled",
            UplinkState::Refused => "refused",
            UplinkState::Stopped => "stopped",
        }
    }
}

/// A snapshot of the uplink, for `/readyz` and metrics.
#[derive(Debug, Clone)]
pub struct UplinkStatus {
    /// Current state.
    pub state: UplinkState,
    /// Highest journal sequence JetStream acknowledged.
    pub acked_seq: u64,
    /// Publishes awaiting acknowledgement.
    pub in_flight: usize,
    /// When the last acknowledgement arrived.
    pub last_ack: Option<Instant>,
    /// Publishes sent (including resends).
    pub published: u64,
    /// Acknowledgements received.
    pub acked: u64,
    /// Records sent again after a failure.
    pub resends: u64,
    /// Records not sent again because JetStream proved it already had them
    /// when a connection started.
    pub already_stored: u64,
    /// Acknowledgements that JetStream flagged as duplicates.
    pub duplicates: u64,
    /// Failures that forced a resend.
    pub failures: u64,
    /// Records that could not be decoded or mapped (skipped, logged).
    pub undeliverable: u64,
    /// Publishes stored after an earlier one on the same topic had failed
    /// (the topic is out of order in the stream; logged as an error).
    pub reordered: u64,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

impl UplinkStatus {
    pub(super) fn new(acked_seq: u64) -> Self {
        Self {
            state: UplinkState::Starting,
            acked_seq,
            in_flight: 0,
            last_ack: None,
            published: 0,
            acked: 0,
            resends: 0,
            already_stored: 0,
            duplicates: 0,
            failures: 0,
            undeliverable: 0,
            reordered: 0,
            last_error: None,
        }
    }

    /// Whether the uplink is making progress (what `/readyz` reports).
    pub fn is_healthy(&self) -> bool {
        matches!(self.state, UplinkState::Up | UplinkState::Starting)
    }
}
