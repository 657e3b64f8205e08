//! Typed calls for the state lists, whose answers the proxy's OpenAPI
//! document does not type yet (the generated `get_state_scopes` and
//! `get_state_scope` return [`Raw`](crate::Raw)). Values themselves go
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

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::rest::Rest;

/// `GET /v1/state/scopes`.
#[derive(Debug, Deserialize)]
struct Scopes {
    scopes: Vec<String>,
}

/// `GET /v1/state/{scope}`.
#[derive(Debug, Deserialize)]
struct Keys {
    keys: Vec<KeyRevision>,
}

/// One key of a scope and its current revision (the ETag of its value is
/// `"<revision>"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRevision {
    /// The key.
    pub key: String,
    /// Its current revision.
    pub revision: u64,
}

impl Rest {
    /// The state scopes the caller may read (`GET /v1/state/scopes`).
    ///
    /// # Errors
    /// [`Error::Api`] 401, 403, 503.
    pub async fn list_scopes(&self) -> Result<Vec<String>, Error> {
        let s: Scopes = self.get_state_scopes().await?.value.json()?;
        Ok(s.scopes)
    }

    /// The keys of a scope with their revisions (`GET /v1/state/{scope}`).
    ///
    /// # Errors
    /// [`Error::Api`] 403 without `state:scope:<scope>:read`, 404 for an
    /// unknown scope, 401, 503.
    pub async fn list_keys(&self, scope: &str) -> Result<Vec<KeyRevision>, Error> {
        let k: Keys = self.get_state_scope(scope).await?.value.json()?;
        Ok(k.keys)
    }
}
