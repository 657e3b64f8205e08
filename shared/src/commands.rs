//! Held commands: the contract between the edge's downlink, which holds a
//! command it cannot deliver yet, and the proxy, which lists pending
//! commands and cancels them.
//!
//! A command's id is its sequence in `PLANTD_COMMANDS` (what
//! `POST /v1/sites/{site}/commands` returns). The stream keeps the command
//! itself; a command the edge has taken but could not deliver (nobody
//! subscribes to its topic, or it waits behind such a command on the same
//! topic) gets a [`HeldCommand`] record in the KV bucket
//! [`crate::streams::COMMANDS_BUCKET`] under [`record_key`]`(site, id)`,
//! written *before* the edge acknowledges the stream message. The records
//! are the durable list of held commands: they outlive an edge restart (the
//! edge reloads them before it takes new commands, so order per topic
//! holds) and the proxy reads them while the edge is offline.
//!
//! Who writes what (each write is a compare-and-set on the revision):
//!
//! | from → to | by | when |
//! |---|---|---|
//! | (none) → `held` | edge | the command could not be delivered |
//! | `held` → `cancel_requested` | proxy | `DELETE /v1/sites/{site}/commands/{id}` |
//! | `held` → (deleted) | edge | delivered, or expired, with no cancel in between |
//! | `cancel_requested` → `cancelled` | edge | it dropped the command |
//! | `cancel_requested` → `delivered` / `expired` | edge | the cancel came too late |
//!
//! Records in a final state stay for [`FINISHED_RECORD_KEEP`] so that the
//! canceller can read the verdict, then the edge deletes them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::subject::Site;

/// How long the edge keeps a record in a final state before deleting it.
pub const FINISHED_RECORD_KEEP: Duration = Duration::from_secs(60);

/// The name of the edge's durable consumer on `PLANTD_COMMANDS` for `site`:
/// `plantd-edge-<site>`. The proxy reads its state to tell commands the
/// edge has not taken yet from those it has.
pub fn consumer_name(site: &Site) -> String {
    format!("plantd-edge-{site}")
}

/// The record key of command `id` of `site`: `<site>.<id>`.
pub fn record_key(site: &Site, id: u64) -> String {
    format!("{site}.{id}")
}

/// The key filter of every record of `site`: `<site>.*`.
pub fn site_records(site: &Site) -> String {
    format!("{site}.*")
}

/// The command id in a record key of `site`, or `None` when `key` is not
/// one.
pub fn record_id(site: &Site, key: &str) -> Option<u64> {
    key.strip_prefix(site.as_str())?
        .strip_prefix('.')?
        .parse()
        .ok()
}

/// Where a held command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// The edge holds it and offers it again until it is delivered, its
    /// time to live (or the edge's hold) runs out, or it is cancelled.
    Held,
    /// Someone asked to cancel it; the edge has not answered yet (it is
    /// offline, or about to). It is never delivered after the edge saw the
    /// request.
    CancelRequested,
    /// Final: delivered (a cancel came too late).
    Delivered,
    /// Final: dropped on request, never delivered.
    Cancelled,
    /// Final: dropped when its time to live or the hold ran out.
    Expired,
}

impl CommandState {
    /// Whether the edge is done with it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Cancelled | Self::Expired)
    }
}

/// Why a command is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    /// No device subscribes to its topic.
    NoSubscriber,
    /// An earlier command to the same topic is held: order per topic.
    Behind,
    /// Every subscriber's queue was full.
    Refused,
}

/// The record of a held command (JSON in the KV bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCommand {
    /// Its sequence in `PLANTD_COMMANDS`.
    pub id: u64,
    /// The MQTT topic.
    pub topic: String,
    /// Where it is.
    pub state: CommandState,
    /// Why it was held.
    pub reason: HoldReason,
    /// When it was sent (RFC 3339), if the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    /// When the edge held it (RFC 3339).
    pub held_since: String,
    /// When the edge drops it if still undelivered (RFC 3339).
    pub expires: String,
    /// When it reached its final state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

impl HeldCommand {
    /// The record as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and enums always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored record.
    ///
    /// # Errors
    /// When `bytes` is not a record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The record in final state `state`, finished at `now_ms`.
    pub fn finish(&self, state: CommandState, now_ms: u64) -> Self {
        Self {
            state,
            finished: Some(crate::headers::format_time(now_ms)),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let site = Site::new("plant-1").expect("site");
        assert_eq!(record_key(&site, 42), "plant-1.42");
        assert_eq!(record_id(&site, "plant-1.42"), Some(42));
        assert_eq!(record_id(&site, "plant-10.42"), None);
        assert_eq!(record_id(&site, "plant-1.x"), None);
        assert_eq!(site_records(&site), "plant-1.*");
        assert_eq!(consumer_name(&site), "plantd-edge-plant-1");
    }

    #[test]
    fn records_round_trip_with_snake_case_states() {
        let r = HeldCommand {
            id: 7,
            topic: "nobody/listens".into(),
            state: CommandState::CancelRequested,
            reason: HoldReason::NoSubscriber,
            sent: None,
            held_since: "2026-01-01T00:00:00Z".into(),
            expires: "2026-01-01T00:10:00Z".into(),
            finished: None,
        };
        let bytes = r.to_bytes();
        assert!(
            std::str::from_utf8(&bytes)
                .expect("utf-8")
                .contains("\"cancel_requested\"")
        );
        assert_eq!(HeldCommand::from_bytes(&bytes).expect("parse"), r);
        assert!(r.finish(CommandState::Cancelled, 0).state.is_final());
    }
}
