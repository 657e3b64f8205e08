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

use plantd_shared::jwt::SigningKey;
use plantd_shared::secrets::FunctionSecret;
pub use plantd_shared::secrets::{Client, SecretsError};
use serde::Deserialize;

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

impl FunctionSecret for FunctionSecrets {
    const ID_ENV: &'static str = SECRET_ID_ENV;
    const SHAPE: &'static str = "{\"signing_key_pem\", \"nats_url\", \"nats_creds\"?}";
}

impl fmt::Debug for FunctionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionSecrets")
            .field("signing_key_pem", &"<redacted>")
            .field(
                "nats_url",
                &plantd_shared::nats_urls::redacted(&self.nats_url),
            )
            .field(
                "nats_creds",
                &self.nats_creds.as_ref().map(|_| "<redacted>"),
            )
            .field("previous_keys", &self.previous_keys.len())
            .finish()
    }
}

impl FunctionSecrets {
    /// Parses the secret's JSON text.
    ///
    /// # Errors
    /// [`SecretsError::Malformed`] when it is not the expected document.
    pub fn parse(id: &str, text: &str) -> Result<Self, SecretsError> {
        plantd_shared::secrets::parse(id, text)
    }

    /// The signing key (its `kid` derived from the public key, as
    /// [`Keys::from_pem`] does everywhere).
    ///
    /// # Errors
    /// [`SecretsError::BadField`] when the PEM is not a usable key.
    pub fn signing_key(&self, id: &str) -> Result<SigningKey, SecretsError> {
        Keys::from_pem(&self.signing_key_pem).map_err(|_| SecretsError::BadField {
            id: id.to_owned(),
            field: "signing_key_pem",
            expected: "an Ed25519 or P-256 PKCS#8 PEM private key",
        })
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
        plantd_shared::secrets::nats_options(id, self.nats_creds.as_deref())
    }
}

/// Reads and parses secret `id` ([`plantd_shared::secrets::fetch`]).
///
/// # Errors
/// [`SecretsError::NotFound`] when there is no such secret,
/// [`SecretsError::Unavailable`] when Secrets Manager cannot be used,
/// [`SecretsError::NotText`] or [`SecretsError::Malformed`] when its value
/// is not the expected document.
pub async fn fetch(client: &Client, id: &str) -> Result<FunctionSecrets, SecretsError> {
    plantd_shared::secrets::fetch(client, id).await
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
    let text = plantd_shared::secrets::text(client, id, SECRET_ID_ENV).await?;
    let malformed = |source| SecretsError::Malformed {
        id: id.to_owned(),
        shape: <FunctionSecrets as FunctionSecret>::SHAPE,
        source,
    };
    let mut doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(malformed)?;
    let ring = serde_json::to_value(ring).map_err(malformed)?;
    if let serde_json::Value::Object(fields) = ring {
        doc.extend(fields);
    }
    let text = serde_json::Value::Object(doc).to_string();
    plantd_shared::secrets::put(client, id, SECRET_ID_ENV, text).await
}

/// A Secrets Manager client configured the standard way
/// ([`plantd_shared::aws::sdk_config`]).
pub async fn client() -> Client {
    plantd_shared::secrets::client().await
}
