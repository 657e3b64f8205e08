//! The audit trail's broken-chain reasons, typed: identity's document
//! gives [`BrokenRecord::reason`](crate::identity::types::BrokenRecord)
//! as a JSON object whose `kind` says which; [`BrokenRecord::why`] reads
//! it as a [`BrokenReason`].
//!
//! ```no_run
//! # async fn demo(plantd: plantd_client::Plantd) -> Result<(), plantd_client::Error> {
//! use plantd_client::identity::params::GetAuditVerifyParams;
//! let v = plantd.rest().get_audit_verify(&GetAuditVerifyParams::default()).await?.value;
//! if let Some(b) = &v.broken {
//!     println!("broken at {}: {}", b.seq, b.why()?);
//! }
//! # Ok(()) }
//! ```
//!
//! [`BrokenRecord::why`]: crate::identity::types::BrokenRecord::why

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::generated::identity::types::BrokenRecord;

/// Why a record breaks its organisation's audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BrokenReason {
    /// The stored payload is not a record.
    Unreadable {
        /// The parse error.
        error: String,
    },
    /// The record names another organisation than the chain's.
    WrongOrg {
        /// The organisation it names.
        found: String,
    },
    /// The numbering skips (records were deleted) or repeats (one was
    /// inserted).
    Numbering {
        /// The `n` the chain needs here.
        expected_n: u64,
        /// The `n` the record has.
        found_n: u64,
    },
    /// Its `prev` is not the hash of the record before it: that record was
    /// altered or replaced, or this one forged.
    Link {
        /// The hash of the record before it.
        expected_prev: String,
        /// The `prev` it carries.
        found_prev: String,
    },
}

impl std::fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokenReason::Unreadable { error } => write!(f, "is not a readable record ({error})"),
            BrokenReason::WrongOrg { found } => write!(f, "names organisation {found}"),
            BrokenReason::Numbering {
                expected_n,
                found_n,
            } if found_n > expected_n => write!(
                f,
                "is number {found_n} where {expected_n} was due: {} record(s) before it are missing",
                found_n - expected_n
            ),
            BrokenReason::Numbering {
                expected_n,
                found_n,
            } => write!(
                f,
                "is number {found_n} where {expected_n} was due: a record was inserted or repeated"
            ),
            BrokenReason::Link {
                expected_prev,
                found_prev,
            } => write!(
                f,
                "does not link to the record before it (prev {found_prev}, but that record hashes to {expected_prev}): a record was altered or forged"
            ),
        }
    }
}

impl BrokenRecord {
    /// Why this record breaks the chain.
    ///
    /// # Errors
    /// [`Error::Decode`] for a reason this client does not know (a newer
    /// server's).
    pub fn why(&self) -> Result<BrokenReason, Error> {
        serde_json::from_value(self.reason.clone())
            .map_err(|e| Error::Decode(format!("audit break reason {}: {e}", self.reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_read_by_their_kind() {
        let broken = |reason: serde_json::Value| BrokenRecord {
            reason,
            ..BrokenRecord::default()
        };
        let missing =
            broken(serde_json::json!({"kind": "numbering", "expected_n": 3, "found_n": 5}));
        assert_eq!(
            missing.why().expect("numbering"),
            BrokenReason::Numbering {
                expected_n: 3,
                found_n: 5
            }
        );
        assert!(
            missing
                .why()
                .expect("numbering")
                .to_string()
                .contains("2 record(s) before it are missing")
        );
        let forged =
            broken(serde_json::json!({"kind": "link", "expected_prev": "aa", "found_prev": "bb"}));
        assert!(
            forged
                .why()
                .expect("link")
                .to_string()
                .contains("altered or forged")
        );
        assert!(
            broken(serde_json::json!({"kind": "cosmic_ray"}))
                .why()
                .is_err()
        );
    }
}
