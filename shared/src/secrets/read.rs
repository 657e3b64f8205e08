//! One Secrets Manager read — `GetSecretValue` — as a single SigV4-signed
//! HTTPS request, without the SDK's Secrets Manager client: a function that
//! only reads its secret at cold start does not link the client's
//! operations, endpoint rules and error types (the `plantd-alerts`
//! bootstrap went over its 8 MB budget with them; decision 0065).
//!
//! The request is the service's JSON protocol (`X-Amz-Target:
//! secretsmanager.GetSecretValue`, `application/x-amz-json-1.1`), signed
//! with the configuration's credentials for its region; the endpoint is the
//! configuration's (`AWS_ENDPOINT_URL`: the `moto` emulator in tests) or
//! `https://secretsmanager.<region>.amazonaws.com`.

use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde::Deserialize;

use super::SecretsError;

/// The error answer of the JSON protocol.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type", default)]
    kind: String,
    #[serde(default, alias = "Message")]
    message: String,
}

/// The answer of `GetSecretValue`.
#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "SecretString")]
    secret_string: Option<String>,
}

/// The text of secret `id` (named by variable `env`, for messages), read
/// with `config`'s region, credentials and endpoint over `http`.
///
/// # Errors
/// As [`super::text`]: [`SecretsError::NotFound`],
/// [`SecretsError::Unavailable`] (no region or credentials, the request
/// failed or was refused), [`SecretsError::NotText`].
pub async fn read(
    http: &reqwest::Client,
    config: &SdkConfig,
    id: &str,
    env: &'static str,
) -> Result<String, SecretsError> {
    let unavailable = |detail: String| SecretsError::Unavailable {
        id: id.to_owned(),
        env,
        detail,
    };
    let region = config
        .region()
        .ok_or_else(|| unavailable("no AWS region (AWS_REGION)".to_owned()))?
        .to_string();
    let credentials = config
        .credentials_provider()
        .ok_or_else(|| unavailable("no AWS credentials".to_owned()))?
        .provide_credentials()
        .await
        .map_err(|e| unavailable(format!("no AWS credentials: {e}")))?;
    let endpoint = config.endpoint_url().map_or_else(
        || format!("https://secretsmanager.{region}.amazonaws.com/"),
        |u| format!("{}/", u.trim_end_matches('/')),
    );
    let body = serde_json::to_vec(&serde_json::json!({ "SecretId": id }))
        .map_err(|e| unavailable(e.to_string()))?;
    let headers = [
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", "secretsmanager.GetSecretValue"),
    ];
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("secretsmanager")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| unavailable(format!("cannot sign the request: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        &endpoint,
        headers.iter().copied(),
        SignableBody::Bytes(&body),
    )
    .map_err(|e| unavailable(format!("cannot sign the request: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| unavailable(format!("cannot sign the request: {e}")))?
        .into_parts();
    let mut request = http.post(&endpoint).body(body);
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| unavailable(format!("{endpoint}: {e}")))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| unavailable(format!("{endpoint}: {e}")))?;
    if !status.is_success() {
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
            kind: String::new(),
            message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        });
        // `__type` may be namespaced (`com.amazonaws…#ResourceNotFoundException`).
        if err.kind.rsplit('#').next() == Some("ResourceNotFoundException") {
            return Err(SecretsError::NotFound {
                id: id.to_owned(),
                env,
            });
        }
        return Err(unavailable(format!(
            "{status} {}: {}",
            err.kind, err.message
        )));
    }
    let answer: Answer = serde_json::from_slice(&bytes)
        .map_err(|e| unavailable(format!("an answer that is not GetSecretValue's: {e}")))?;
    answer
        .secret_string
        .ok_or_else(|| SecretsError::NotText { id: id.to_owned() })
}
