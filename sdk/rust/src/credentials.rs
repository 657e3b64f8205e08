//! Token exchanges for a program that keeps a user's session itself —
//! between runs, on disk — rather than in a [`TokenSource`] (the `plantd`
//! command line stores its tokens in a 0600 file and renews them on its
//! next run): [`login`] and [`refresh`] return the [`IssuedTokens`] to
//! store; the generated `get_auth_whoami` says who a token belongs to.
//!
//! A program that runs as long as its session should use
//! [`Plantd::login`](crate::Plantd::login) instead, which renews and
//! rotates by itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), plantd_client::Error> {
//! use plantd_client::credentials;
//! let http = reqwest::Client::new();
//! let url = "http://127.0.0.1:8080";
//! let t = credentials::login(&http, url, "me@example.com", &"secret".into(), &[], credentials::DEFAULT_TIMEOUT).await?;
//! // … store t.access_token and t.refresh_token; on the next run:
//! if let Some(refresh) = &t.refresh_token {
//!     let renewed = credentials::refresh(&http, url, refresh, credentials::DEFAULT_TIMEOUT).await?;
//!     let plantd = plantd_client::Plantd::with_token(url, renewed.access_token)?;
//!     println!("{}", plantd.rest().get_auth_whoami().await?.value.sub);
//! }
//! # Ok(()) }
//! ```
//!
//! [`TokenSource`]: crate::TokenSource

use std::time::Duration;

use serde::Serialize;

use crate::auth::Secret;
use crate::error::Error;
use crate::generated::identity::types::{LoginRequest, RefreshRequest, TokenResponse};

/// Time limit of a login or refresh when the caller has no better one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a login or a refresh issued. Secrets never show in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    /// The access token (a JWT) to send as `Authorization: Bearer`.
    pub access_token: Secret,
    /// The refresh token to use next (each works once: identity revokes
    /// the whole login when one is used twice).
    pub refresh_token: Option<Secret>,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

impl From<TokenResponse> for IssuedTokens {
    fn from(t: TokenResponse) -> Self {
        IssuedTokens {
            access_token: Secret::new(t.access_token),
            refresh_token: t.refresh_token.map(Secret::new),
            expires_in: t.expires_in,
        }
    }
}

/// Logs a user in (`POST /v1/auth/login`); `sites` are the sites whose
/// edge brokers the token should also be valid for (MQTT passwords).
///
/// # Errors
/// [`Error::Api`] 401 for a wrong email or password, 429 while throttled,
/// 400 for a bad site; [`Error::Transport`]; [`Error::Timeout`].
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &Secret,
    sites: &[String],
    timeout: Duration,
) -> Result<IssuedTokens, Error> {
    let body = LoginRequest {
        email: email.to_owned(),
        password: password.expose().to_owned(),
        sites: (!sites.is_empty()).then(|| sites.to_vec()),
    };
    exchange(http, base, "/v1/auth/login", &body, timeout).await
}

/// Exchanges a refresh token for new tokens (`POST /v1/auth/refresh`).
/// Store the new refresh token: the old one no longer works.
///
/// # Errors
/// [`Error::Api`] 401 when the refresh token is expired, used already or
/// revoked (log in again); [`Error::Transport`]; [`Error::Timeout`].
pub async fn refresh(
    http: &reqwest::Client,
    base: &str,
    refresh_token: &Secret,
    timeout: Duration,
) -> Result<IssuedTokens, Error> {
    let body = RefreshRequest {
        refresh_token: refresh_token.expose().to_owned(),
    };
    exchange(http, base, "/v1/auth/refresh", &body, timeout).await
}

/// POSTs `body` without a bearer token and reads the tokens it answers.
async fn exchange(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &impl Serialize,
    timeout: Duration,
) -> Result<IssuedTokens, Error> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let send = async {
        let response = http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| Error::Transport(format!("POST {path}: {e}")))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Transport(format!("POST {path}: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(Error::from_answer(status, &bytes));
        }
        let t: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))?;
        Ok(IssuedTokens::from(t))
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_hide_their_secrets() {
        let t = IssuedTokens::from(TokenResponse {
            access_token: "eyJ.access-secret".into(),
            expires_in: 900,
            refresh_token: Some("refresh-secret".into()),
            token_type: "Bearer".into(),
        });
        let shown = format!("{t:?}");
        assert!(!shown.contains("access-secret"), "{shown}");
        assert!(!shown.contains("refresh-secret"), "{shown}");
        assert_eq!(t.expires_in, 900);
    }
}
