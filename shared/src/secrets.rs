//! Reading a function's secret from AWS Secrets Manager (feature `aws`):
//! one JSON document per function, read once at cold start when the
//! function's `PLANTD_<FUNCTION>_SECRET_ID` names it.
//!
//! Each function describes its document as a [`FunctionSecret`] — the
//! variable naming the secret and the document's shape, for messages — and
//! calls [`fetch`]. Every failure is a [`SecretsError`] that names the
//! secret and what to fix, never the secret's contents. The SDK is
//! configured the standard way ([`crate::aws::sdk_config`]: region,
//! credentials, `AWS_ENDPOINT_URL*`, which is how tests point it at the
//! `moto` emulator).

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::de::DeserializeOwned;
use thiserror::Error;

pub use aws_sdk_secretsmanager::Client;
pub use read::read;

mod read;

/// A function's secret document.
pub trait FunctionSecret: DeserializeOwned {
    /// The environment variable that names the secret (its ARN or name).
    const ID_ENV: &'static str;
    /// The document's fields as operators write them, for the message
    /// about a malformed secret (`{"nats_url", "nats_creds"?}`).
    const SHAPE: &'static str;
}

/// Why a secret could not be read or used. Messages name the secret and
/// what to fix, never its contents.
#[derive(Debug, Error)]
pub enum SecretsError {
    /// No secret with that id.
    #[error(
        "secret `{id}` does not exist in Secrets Manager: create it (see docs/deploy.md) or fix {env}"
    )]
    NotFound {
        /// The secret id asked for.
        id: String,
        /// The variable that named it.
        env: &'static str,
    },
    /// Secrets Manager could not be reached or refused the call.
    #[error("cannot read secret `{id}` from Secrets Manager ({env}): {detail}")]
    Unavailable {
        /// The secret id asked for.
        id: String,
        /// The variable that named it.
        env: &'static str,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// The secret holds binary data, not a JSON string.
    #[error("secret `{id}` has no SecretString; store the JSON document as text")]
    NotText {
        /// The secret id.
        id: String,
    },
    /// The secret is not the function's JSON document.
    #[error("secret `{id}` is not the JSON document {shape}: {source}")]
    Malformed {
        /// The secret id.
        id: String,
        /// The document expected ([`FunctionSecret::SHAPE`]).
        shape: &'static str,
        /// What did not parse (serde reports positions and field names).
        #[source]
        source: serde_json::Error,
    },
    /// A field parsed but is not usable (a PEM that is not a key).
    #[error("secret `{id}`: {field} is not {expected}")]
    BadField {
        /// The secret id.
        id: String,
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
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

/// A Secrets Manager client configured the standard way
/// ([`crate::aws::sdk_config`]).
pub async fn client() -> Client {
    Client::new(&crate::aws::sdk_config().await)
}

/// The text of secret `id` (named by variable `env`, for messages).
///
/// # Errors
/// [`SecretsError::NotFound`] when there is no such secret,
/// [`SecretsError::Unavailable`] when Secrets Manager cannot be used,
/// [`SecretsError::NotText`] when the value is binary.
pub async fn text(client: &Client, id: &str, env: &'static str) -> Result<String, SecretsError> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                SecretsError::NotFound {
                    id: id.to_owned(),
                    env,
                }
            } else {
                SecretsError::Unavailable {
                    id: id.to_owned(),
                    env,
                    detail: DisplayErrorContext(&e).to_string(),
                }
            }
        })?;
    out.secret_string()
        .map(str::to_owned)
        .ok_or_else(|| SecretsError::NotText { id: id.to_owned() })
}

/// Parses secret `id`'s JSON `text` as `T`.
///
/// # Errors
/// [`SecretsError::Malformed`] when it is not `T`'s document.
pub fn parse<T: FunctionSecret>(id: &str, text: &str) -> Result<T, SecretsError> {
    serde_json::from_str(text).map_err(|source| SecretsError::Malformed {
        id: id.to_owned(),
        shape: T::SHAPE,
        source,
    })
}

/// Reads and parses secret `id`.
///
/// # Errors
/// As [`text`] and [`parse`].
pub async fn fetch<T: FunctionSecret>(client: &Client, id: &str) -> Result<T, SecretsError> {
    let text = text(client, id, T::ID_ENV).await?;
    parse(id, &text)
}

/// Writes `text` as a new version of secret `id` (needs
/// `secretsmanager:PutSecretValue`).
///
/// # Errors
/// [`SecretsError::Unavailable`] when the write is refused.
pub async fn put(
    client: &Client,
    id: &str,
    env: &'static str,
    text: String,
) -> Result<(), SecretsError> {
    client
        .put_secret_value()
        .secret_id(id)
        .secret_string(text)
        .send()
        .await
        .map_err(|e| SecretsError::Unavailable {
            id: id.to_owned(),
            env,
            detail: DisplayErrorContext(&e).to_string(),
        })?;
    Ok(())
}

/// NATS connection options carrying `creds` (the contents of a `.creds`
/// file kept in secret `id`), or plain options without.
///
/// # Errors
/// [`SecretsError::BadCreds`] when `creds` does not parse.
pub fn nats_options(
    id: &str,
    creds: Option<&str>,
) -> Result<async_nats::ConnectOptions, SecretsError> {
    match creds {
        Some(creds) => async_nats::ConnectOptions::with_credentials(creds).map_err(|source| {
            SecretsError::BadCreds {
                id: id.to_owned(),
                source,
            }
        }),
        None => Ok(async_nats::ConnectOptions::new()),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)] // read by serde only
        nats_url: String,
    }

    impl FunctionSecret for Doc {
        const ID_ENV: &'static str = "PLANTD_TEST_SECRET_ID";
        const SHAPE: &'static str = "{\"nats_url\"}";
    }

    #[test]
    fn malformed_names_secret_shape_and_field_not_contents() {
        let err =
            parse::<Doc>("plantd/x", r#"{"nats_creds": "SEED-VALUE"}"#).expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.contains("plantd/x"), "{msg}");
        assert!(msg.contains("{\"nats_url\"}"), "{msg}");
        assert!(!msg.contains("SEED-VALUE"), "{msg}");
    }

    #[test]
    fn creds_that_are_not_creds_are_refused() {
        let err = nats_options("plantd/x", Some("not creds")).expect_err("bad creds");
        assert!(matches!(err, SecretsError::BadCreds { .. }), "{err:?}");
        assert!(nats_options("plantd/x", None).is_ok());
    }
}
