//! The proxy's secret in AWS: one Secrets Manager secret, read once at cold
//! start when `PLANTD_PROXY_SECRET_ID` names it (as identity does with its
//! own, which the proxy never reads: it holds the signing key).
//!
//! ```json
//! { "nats_url": "tls://nats.example:4222",
//!   "nats_creds": "-----BEGIN NATS USER JWT-----\n…",
//!   "jwks_url": "https://<http api>/.well-known/jwks.json" }
//! ```
//!
//! `nats_creds` is optional; `jwks_url` is optional when
//! `PLANTD_JWKS_URL` is set instead (it lives here because the template
//! cannot hand the HTTP API's own URL to a function mounted on that API
//! without a circular dependency). Reading and errors are
//! [`plantd_shared::secrets`]'s, as for identity's secret.

use std::fmt;

use plantd_shared::secrets::FunctionSecret;
pub use plantd_shared::secrets::{Client, SecretsError};
use serde::Deserialize;

/// The environment variable that names the secret (its ARN or name).
pub const SECRET_ID_ENV: &str = "PLANTD_PROXY_SECRET_ID";

/// What the proxy keeps in Secrets Manager.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySecrets {
    /// Where the JetStream backbone is.
    pub nats_url: String,
    /// NATS user credentials (`.creds` file contents), if required.
    #[serde(default)]
    pub nats_creds: Option<String>,
    /// The identity service's JWKS.
    #[serde(default)]
    pub jwks_url: Option<String>,
}

impl FunctionSecret for ProxySecrets {
    const ID_ENV: &'static str = SECRET_ID_ENV;
    const SHAPE: &'static str = "{\"nats_url\", \"nats_creds\"?, \"jwks_url\"?}";
}

impl fmt::Debug for ProxySecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySecrets")
            .field(
                "nats_url",
                &plantd_shared::nats_urls::redacted(&self.nats_url),
            )
            .field(
                "nats_creds",
                &self.nats_creds.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks_url", &self.jwks_url)
            .finish()
    }
}

impl ProxySecrets {
    /// NATS connection options carrying the credentials, if any.
    ///
    /// # Errors
    /// [`SecretsError::BadCreds`].
    pub fn nats_options(&self, id: &str) -> Result<async_nats::ConnectOptions, SecretsError> {
        plantd_shared::secrets::nats_options(id, self.nats_creds.as_deref())
    }
}

/// Reads and parses secret `id` ([`plantd_shared::secrets::fetch`]).
///
/// # Errors
/// [`SecretsError::NotFound`], [`SecretsError::Unavailable`],
/// [`SecretsError::NotText`] or [`SecretsError::Malformed`].
pub async fn fetch(client: &Client, id: &str) -> Result<ProxySecrets, SecretsError> {
    plantd_shared::secrets::fetch(client, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_password_or_credentials_in_debug() {
        let s = ProxySecrets {
            nats_url: "tls://proxy:s3cret@n1:4222,tls://n2:4222".into(),
            nats_creds: Some("-----BEGIN NATS USER JWT-----".into()),
            jwks_url: None,
        };
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("BEGIN"),
            "{shown}"
        );
        assert!(
            shown.contains("tls://proxy:***@n1:4222,tls://n2:4222"),
            "{shown}"
        );
    }
}
