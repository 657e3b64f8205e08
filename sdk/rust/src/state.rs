//! The state lists as plain values: the scopes' names and a scope's keys
//! (the generated `get_state_scopes` and `get_state_scope` answer the
//! whole typed envelopes, [`types::ScopeList`] and [`types::KeyList`]).
//! Values themselves go
//! through [`Plantd::get_state`](crate::Plantd::get_state) and
//! [`Plantd::put_state`](crate::Plantd::put_state) (with ETags).
//!
//! ```no_run
//! # async fn demo(plantd: plantd_client::Plantd) -> Result<(), plantd_client::Error> {
//! for scope in plantd.rest().list_scopes().await? {
//!     for k in plantd.rest().list_keys(&scope).await? {
//!         println!("{scope}/{} rev {}", k.key, k.revision);
//!     }
//! }
//! # Ok(()) }
//! ```

use crate::error::Error;
use crate::generated::proxy::types;
use crate::rest::Rest;

/// One key of a scope and its current revision (the ETag of its value is
/// `"<revision>"`).
pub type KeyRevision = types::KeyRevision;

impl Rest {
    /// The state scopes the caller may read (`GET /v1/state/scopes`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_scopes(&self) -> Result<Vec<String>, Error> {
        Ok(self.get_state_scopes().await?.value.scopes)
    }

    /// The keys of a scope with their revisions (`GET /v1/state/{scope}`).
    ///
    /// # Errors
    /// [`Error::Api`] 403 without `state:scope:<scope>:read`, 404 for an
    /// unknown scope, 401, 503.
    pub async fn list_keys(&self, scope: &str) -> Result<Vec<KeyRevision>, Error> {
        Ok(self.get_state_scope(scope).await?.value.keys)
    }
}
