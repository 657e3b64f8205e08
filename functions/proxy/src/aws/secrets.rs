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
//! without a circular dependency).

use std::fmt;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::Deserialize;
use thiserror::Error;

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

impl fmt::Debug for ProxySecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySecrets")
            .field("nats_url", &self.nats_url)
            .field(
                "nats_creds",
                &self.nats_creds.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks_url", &self.jwks_url)
            .finish()
    }
}

/// Why the secret could not be used. Messages name the secret, never its
/// contents.
#[derive(Debug, Error)]
pub enum SecretsError {
    /// Secrets Manager refused or could not be reached (including: no such secret).
    #[error("cannot read secret `{id}` from Secrets Manager ({SECRET_ID_ENV}): {detail}")]
    Unavailable {
        /// The secret id.
        id: String,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// Not the JSON document above.
    #[error(
        "secret `{id}` is not the JSON document {{\"nats_url\", \"nats_creds\"?, \"jwks_url\"?}}: {reason}"
    )]
    Malformed {
        /// The secret id.
        id: String,
        /// What did not parse (field names and positions only).
        reason: String,
    },
    /// `nats_creds` is not a NATS credentials file.
    #[error("secret `{id}`: nats_creds is not a NATS credentials file")]
    BadCreds {
        /// The secret id.
        id: String,
    },
}

impl ProxySecrets {
    /// NATS connection options carrying the credentials, if any.
    ///
    /// # Errors
    /// [`SecretsError::BadCreds`].
    pub fn nats_options(&self, id: &str) -> Result<async_nats::ConnectOptions, SecretsError> {
        match &self.nats_creds {
            Some(creds) => async_nats::ConnectOptions::with_credentials(creds)
                .map_err(|_| SecretsError::BadCreds { id: id.to_owned() }),
            None => Ok(async_nats::ConnectOptions::new()),
        }
    }
}

/// Reads and parses secret `id`.
///
/// # Errors
/// [`SecretsError::Unavailable`] or [`SecretsError::Malformed`].
pub async fn fetch(client: &Client, id: &str) -> Result<ProxySecrets, SecretsError> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| SecretsError::Unavailable {
            id: id.to_owned(),
            detail: DisplayErrorContext(&e).to_string(),
        })?;
    let malformed = |reason: String| SecretsError::Malformed {
        id: id.to_owned(),
        reason,
    };
    let text = out
        .secret_string()
        .ok_or_else(|| malformed("no SecretString".into()))?;
    serde_json::from_str(text).map_err(|e| malformed(e.to_string()))
}

/// The secret named by `PLANTD_PROXY_SECRET_ID`, or `None` when it is not
/// set (local runs).
///
/// # Errors
/// As [`fetch`].
pub async fn from_env(
    config: &aws_config::SdkConfig,
) -> Result<Option<(String, ProxySecrets)>, SecretsError> {
    let Ok(id) = std::env::var(SECRET_ID_ENV) else {
        return Ok(None);
    };
    let secrets = fetch(&Client::new(config), &id).await?;
    Ok(Some((id, secrets)))
}
