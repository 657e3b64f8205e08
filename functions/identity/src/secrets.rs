//! The function's secrets in AWS: one Secrets Manager secret, read once at
//! cold start when `PLANTD_IDENTITY_SECRET_ID` names it.
//!
//! The secret is a JSON document:
//!
//! ```json
//! { "signing_key_pem": "-----BEGIN PRIVATE KEY-----\n…",
//!   "nats_url": "tls://nats.example:4222",
//!   "nats_creds": "-----BEGIN NATS USER JWT-----\n…" }
//! ```
//!
//! `nats_creds` (the contents of a NATS `.creds` file) is optional. The SDK
//! is configured the standard way (region, credentials, and
//! `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SECRETS_MANAGER`, which is how the
//! tests point it at the `moto` emulator); its HTTPS client is rustls with
//! ring ([`plantd_shared::aws`]). Locally (no secret id) the keys come from the environment or a
//! file instead, see [`crate::keys`].

use std::fmt;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use plantd_shared::jwt::SigningKey;
use serde::Deserialize;
use thiserror::Error;

use crate::Keys;

/// The environment variable that names the secret (its ARN or name).
pub const SECRET_ID_ENV: &str = "PLANTD_IDENTITY_SECRET_ID";

/// What the identity function keeps in Secrets Manager.
#[derive(Clone, Deserialize)]
pub struct FunctionSecrets {
    /// The token signing key, PKCS#8 PEM (Ed25519 or P-256).
    pub signing_key_pem: String,
    /// Where the JetStream backbone is.
    pub nats_url: String,
    /// The NATS user credentials (`.creds` file contents), if the server
    /// requires them.
    #[serde(default)]
    pub nats_creds: Option<String>,
    /// The key published ahead for the next rotation (written by
    /// `POST /v1/keys/rotate`; see [`crate::keys`]).
    #[serde(default)]
    pub next_key_pem: Option<String>,
    /// Keys that signed before the last rotations, until they retire.
    #[serde(default)]
    pub previous_keys: Vec<crate::keys::SavedKey>,
}

impl fmt::Debug for FunctionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionSecrets")
            .field("signing_key_pem", &"<redacted>")
            .field("nats_url", &self.nats_url)
            .field(
                "nats_creds",
                &self.nats_creds.as_ref().map(|_| "<redacted>"),
            )
            .field("previous_keys", &self.previous_keys.len())
            .finish()
    }
}

/// Why the secrets could not be loaded. Messages name the secret and what
/// to fix, never its contents.
#[derive(Debug, Error)]
pub enum SecretsError {
    /// No secret with that id.
    #[error(
        "secret `{id}` does not exist in Secrets Manager: create it (see docs/deploy.md) or fix {SECRET_ID_ENV}"
    )]
    NotFound {
        /// The secret id asked for.
        id: String,
    },
    /// Secrets Manager could not be reached or refused the call.
    #[error("cannot read secret `{id}` from Secrets Manager: {detail}")]
    Unavailable {
        /// The secret id asked for.
        id: String,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// The secret holds binary data, not a JSON string.
    #[error("secret `{id}` has no SecretString; store the JSON document as text")]
    NotText {
        /// The secret id.
        id: String,
    },
    /// The secret is not the expected JSON document.
    #[error(
        "secret `{id}` is not the JSON document {{\"signing_key_pem\", \"nats_url\", \"nats_creds\"?}}: {source}"
    )]
    Malformed {
        /// The secret id.
        id: String,
        /// What did not parse (serde reports positions and field names).
        #[source]
        source: serde_json::Error,
    },
    /// `signing_key_pem` is not a usable key.
    #[error("secret `{id}`: signing_key_pem is not an Ed25519 or P-256 PKCS#8 PEM private key")]
    BadKey {
        /// The secret id.
        id: String,
    },
    /// `nats_creds` is not a NATS credentials file.
    #[error("secret `{id}`: nats_creds is not a NATS credentials file: {source}")]
    BadCreds {
        /// The secret id.
        id: String,
        /// What the NATS client said.
        #[source]
        source: std::io::Error,
    },
}

impl FunctionSecrets {
    /// Parses the secret's JSON text.
    ///
    /// # Errors
    /// [`SecretsError::Malformed`] when it is not the expected document.
    pub fn parse(id: &str, text: &str) -> Result<Self, SecretsError> {
        serde_json::from_str(text).map_err(|source| SecretsError::Malformed {
            id: id.to_owned(),
            source,
        })
    }

    /// The signing key (its `kid` derived from the public key, as
    /// [`Keys::from_pem`] does everywhere).
    ///
    /// # Errors
    /// [`SecretsError::BadKey`] when the PEM is not a usable key.
    pub fn signing_key(&self, id: &str) -> Result<SigningKey, SecretsError> {
        Keys::from_pem(&self.signing_key_pem)
            .map_err(|_| SecretsError::BadKey { id: id.to_owned() })
    }

    /// The key ring the secret holds (signing, next, previous keys).
    pub fn ring(&self) -> crate::keys::Ring {
        crate::keys::Ring {
            signing_key_pem: self.signing_key_pem.clone(),
            next_key_pem: self.next_key_pem.clone(),
            previous_keys: self.previous_keys.clone(),
        }
    }

    /// NATS connection options carrying the credentials, if any.
    ///
    /// # Errors
    /// [`SecretsError::BadCreds`] when `nats_creds` does not parse.
    pub fn nats_options(&self, id: &str) -> Result<async_nats::ConnectOptions, SecretsError> {
        match &self.nats_creds {
            Some(creds) => async_nats::ConnectOptions::with_credentials(creds).map_err(|source| {
                SecretsError::BadCreds {
                    id: id.to_owned(),
                    source,
                }
            }),
            None => Ok(async_nats::ConnectOptions::new()),
        }
    }
}

/// Reads and parses secret `id`.
///
/// # Errors
/// [`SecretsError::NotFound`] when there is no such secret,
/// [`SecretsError::Unavailable`] when Secrets Manager cannot be used,
/// [`SecretsError::NotText`] or [`SecretsError::Malformed`] when its value
/// is not the expected document.
pub async fn fetch(client: &Client, id: &str) -> Result<FunctionSecrets, SecretsError> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                SecretsError::NotFound { id: id.to_owned() }
            } else {
                SecretsError::Unavailable {
                    id: id.to_owned(),
                    detail: DisplayErrorContext(&e).to_string(),
                }
            }
        })?;
    let text = out
        .secret_string()
        .ok_or_else(|| SecretsError::NotText { id: id.to_owned() })?;
    FunctionSecrets::parse(id, text)
}

/// Writes `ring` into secret `id` (a new version of the secret): the
/// other fields (NATS URL and credentials, anything else) are kept as
/// they are. Needs `secretsmanager:PutSecretValue` on the secret.
///
/// # Errors
/// As [`fetch`] for the read; [`SecretsError::Unavailable`] when the write
/// is refused.
pub async fn save_ring(
    client: &Client,
    id: &str,
    ring: &crate::keys::Ring,
) -> Result<(), SecretsError> {
    let unavailable = |detail: String| SecretsError::Unavailable {
        id: id.to_owned(),
        detail,
    };
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| unavailable(DisplayErrorContext(&e).to_string()))?;
    let text = out
        .secret_string()
        .ok_or_else(|| SecretsError::NotText { id: id.to_owned() })?;
    let mut doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|source| SecretsError::Malformed {
            id: id.to_owned(),
            source,
        })?;
    let ring = serde_json::to_value(ring).map_err(|e| unavailable(e.to_string()))?;
    if let serde_json::Value::Object(fields) = ring {
        doc.extend(fields);
    }
    let text = serde_json::Value::Object(doc).to_string();
    client
        .put_secret_value()
        .secret_id(id)
        .secret_string(text)
        .send()
        .await
        .map_err(|e| unavailable(DisplayErrorContext(&e).to_string()))?;
    Ok(())
}

/// A Secrets Manager client configured the standard way
/// ([`plantd_shared::aws::sdk_config`]).
pub async fn client() -> Client {
    Client::new(&plantd_shared::aws::sdk_config().await)
}

/// The secrets named by `PLANTD_IDENTITY_SECRET_ID`, or `None` when it is
/// not set (local runs). Call once, at cold start.
///
/// # Errors
/// As [`fetch`].
pub async fn from_env() -> Result<Option<(String, FunctionSecrets)>, SecretsError> {
    let Ok(id) = std::env::var(SECRET_ID_ENV) else {
        return Ok(None);
    };
    let config = plantd_shared::aws::sdk_config().await;
    let client = Client::new(&config);
    let secrets = fetch(&client, &id).await?;
    Ok(Some((id, secrets)))
}
