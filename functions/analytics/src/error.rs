//! [`enum@Error`]: why a batch could not be applied, checkpointed or published.

use thiserror::Error;

/// Why the analytics function could not finish a batch. Every error makes
/// the batch fail as a whole: the in-memory state of the sites involved is
/// dropped and rebuilt from the last checkpoint when the items come back.
#[derive(Debug, Error)]
pub enum Error {
    /// NATS or JetStream refused or did not answer.
    #[error("cannot {what}: {reason}")]
    Nats {
        /// What was being done.
        what: &'static str,
        /// What NATS said.
        reason: String,
    },
    /// A checkpoint key was written by another process meanwhile (two
    /// hosts running the same consumer's work): this one rereads it.
    #[error("checkpoint {0} was written by someone else")]
    Conflict(String),
    /// The engine refused a rule or a checkpoint.
    #[error(transparent)]
    Engine(#[from] plantd_analytics::EngineError),
    /// A record could not be encoded.
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    /// A NATS error while doing `what`.
    pub(crate) fn nats(what: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Nats {
            what,
            reason: e.to_string(),
        }
    }
}
