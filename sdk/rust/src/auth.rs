//! Where bearer tokens come from: a fixed token (a service account's or a
//! device's, or one pasted from `plantd token`), or a user's password
//! session that rotates its refresh token by itself.
//!
//! Secrets never show in `Debug`: tokens and passwords are [`Secret`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::error::Error;
use crate::generated::identity::types::{
    LoginRequest, LogoutRequest, RefreshRequest, TokenRequest, TokenResponse,
};

/// A string that is never shown: `Debug` prints `Secret(…)`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token, password or client secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, to send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// Renew this long before the access token expires (at most half its
/// lifetime).
const RENEW_EARLY: Duration = Duration::from_secs(30);

/// Where the client gets its bearer token. Cheap to clone; clones share
/// the session.
#[derive(Clone, Debug)]
pub struct TokenSource(Arc<Source>);

#[derive(Debug)]
enum Source {
    /// Used as is, never renewed.
    Fixed(Secret),
    /// Logged in with a password; rotates its refresh token.
    Session(PasswordSession),
}

impl TokenSource {
    /// A fixed token (service account, device, or pasted): never renewed;
    /// when the server refuses it, calls and streams end with
    /// [`Error::Refused`].
    pub fn fixed(token: impl Into<Secret>) -> Self {
        TokenSource(Arc::new(Source::Fixed(token.into())))
    }

    /// Logs a user in (`POST /v1/auth/login`) and keeps the session.
    ///
    /// # Errors
    /// [`Error::Api`] 401 for a wrong email or password, 429 while
    /// throttled; transport errors and [`Error::Timeout`].
    pub async fn login(
        http: &reqwest::Client,
        base: &str,
        email: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let session = PasswordSession {
            base: base.trim_end_matches('/').to_owned(),
            http: http.clone(),
            email: email.to_owned(),
            timeout,
            tokens: Mutex::new(Tokens::default()),
        };
        let body = LoginRequest {
            email: email.to_owned(),
            password: password.expose().to_owned(),
            sites: None,
        };
        let answer = session.exchange("/v1/auth/login", &body).await?;
        *session.tokens.lock().await = Tokens::from_answer(answer);
        Ok(TokenSource(Arc::new(Source::Session(session))))
    }

    /// A token for a service account or a device (`POST /v1/auth/token`,
    /// client credentials), used as a fixed token.
    ///
    /// # Errors
    /// [`Error::Api`] 401 for bad credentials; transport errors and
    /// [`Error::Timeout`].
    pub async fn client_credentials(
        http: &reqwest::Client,
        base: &str,
        client_id: &str,
        client_secret: &Secret,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let body = TokenRequest {
            grant_type: "client_credentials".to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.expose().to_owned(),
            sites: None,
        };
        let answer = post_json(
            http,
            &format!("{}/v1/auth/token", base.trim_end_matches('/')),
            None,
            &body,
            timeout,
        )
        .await?;
        let t: TokenResponse = serde_json::from_slice(&answer)
            .map_err(|e| Error::Decode(format!("/v1/auth/token: {e}")))?;
        Ok(TokenSource::fixed(t.access_token))
    }

    /// A currently valid access token (a session renews it shortly before
    /// it expires).
    ///
    /// # Errors
    /// [`Error::Refused`] when the session cannot be renewed (logged out,
    /// revoked); transport errors while renewing.
    pub async fn token(&self) -> Result<Secret, Error> {
        match &*self.0 {
            Source::Fixed(t) => Ok(t.clone()),
            Source::Session(s) => s.token().await,
        }
    }

    /// The server refused `stale`: a renewed token, or
    /// [`Error::Refused`] when there is none to be had (a fixed token, a
    /// revoked session). Never refreshes twice at once: a caller whose
    /// stale token was already replaced gets the replacement.
    ///
    /// # Errors
    /// [`Error::Refused`]; transport errors while renewing.
    pub async fn renew(&self, stale: &Secret) -> Result<Secret, Error> {
        match &*self.0 {
            Source::Fixed(_) => Err(Error::Refused(
                "the token was refused and a fixed token cannot be renewed".to_owned(),
            )),
            Source::Session(s) => s.renew(stale).await,
        }
    }

    /// Ends a password session on the server: its access token is revoked
    /// (live sockets using it close) and so is its refresh-token family.
    /// Every later call fails with [`Error::Refused`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a fixed token (revoke service accounts and
    /// devices through the API); the server's error; transport errors.
    pub async fn logout(&self) -> Result<(), Error> {
        match &*self.0 {
            Source::Fixed(_) => Err(Error::Invalid(
                "only a password session logs out; revoke service-account and device tokens through the API (post_service_accounts_id_revoke, post_devices_id_revoke)".to_owned(),
            )),
            Source::Session(s) => s.logout().await,
        }
    }
}

/// A user's session: logged in once, then `POST /v1/auth/refresh` before
/// the access token expires or when the server refuses it. Each refresh
/// token is used once (identity revokes the whole login when one is used
/// twice), so refreshes are serialised by one lock.
struct PasswordSession {
    /// The API's base URL.
    base: String,
    /// The HTTP client (shared with the REST calls).
    http: reqwest::Client,
    /// Whose session, for `Debug`.
    email: String,
    /// Time limit of one login, refresh or logout call.
    timeout: Duration,
    /// The current tokens; the lock is held across a refresh.
    tokens: Mutex<Tokens>,
}

impl std::fmt::Debug for PasswordSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordSession")
            .field("base", &self.base)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// The tokens of a session.
#[derive(Default)]
struct Tokens {
    /// The access token (empty after logout).
    access: Secret,
    /// The refresh token to use next.
    refresh: Secret,
    /// When to renew the access token.
    renew_at: Option<Instant>,
    /// Logged out: nothing is renewed any more.
    ended: bool,
}

impl Tokens {
    fn from_answer(t: TokenResponse) -> Tokens {
        let life = Duration::from_secs(t.expires_in);
        Tokens {
            access: Secret(t.access_token),
            refresh: Secret(t.refresh_token.unwrap_or_default()),
            renew_at: Some(Instant::now() + life - RENEW_EARLY.min(life / 2)),
            ended: false,
        }
    }

    fn fresh(&self) -> bool {
        !self.ended
            && !self.access.0.is_empty()
            && self.renew_at.is_some_and(|at| Instant::now() < at)
    }
}

impl PasswordSession {
    async fn token(&self) -> Result<Secret, Error> {
        let mut tokens = self.tokens.lock().await;
        if tokens.fresh() {
            return Ok(tokens.access.clone());
        }
        self.refresh(&mut tokens).await
    }

    async fn renew(&self, stale: &Secret) -> Result<Secret, Error> {
        let mut tokens = self.tokens.lock().await;
        if tokens.access != *stale && tokens.fresh() {
            return Ok(tokens.access.clone());
        }
        self.refresh(&mut tokens).await
    }

    /// Rotates the refresh token; the caller holds the lock.
    async fn refresh(&self, tokens: &mut Tokens) -> Result<Secret, Error> {
        if tokens.ended || tokens.refresh.0.is_empty() {
            return Err(Error::Refused("the session was logged out".to_owned()));
        }
        let body = RefreshRequest {
            refresh_token: tokens.refresh.0.clone(),
        };
        match self.exchange("/v1/auth/refresh", &body).await {
            Ok(answer) => {
                *tokens = Tokens::from_answer(answer);
                tracing::debug!(email = %self.email, "access token renewed");
                Ok(tokens.access.clone())
            }
            Err(Error::Api {
                status: 401,
                message,
                ..
            }) => {
                tokens.ended = true;
                Err(Error::Refused(message))
            }
            Err(e) => Err(e),
        }
    }

    async fn logout(&self) -> Result<(), Error> {
        let mut tokens = self.tokens.lock().await;
        let body = LogoutRequest {
            refresh_token: Some(tokens.refresh.0.clone()).filter(|r| !r.is_empty()),
        };
        post_json(
            &self.http,
            &format!("{}/v1/auth/logout", self.base),
            Some(&tokens.access),
            &body,
            self.timeout,
        )
        .await?;
        *tokens = Tokens {
            ended: true,
            ..Tokens::default()
        };
        Ok(())
    }

    async fn exchange(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<TokenResponse, Error> {
        let answer = post_json(
            &self.http,
            &format!("{}{path}", self.base),
            None,
            body,
            self.timeout,
        )
        .await?;
        serde_json::from_slice(&answer).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }
}

/// POSTs `body` as JSON; the answer's bytes on 2xx, else the API's error.
async fn post_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&Secret>,
    body: &impl serde::Serialize,
    timeout: Duration,
) -> Result<bytes::Bytes, Error> {
    let mut request = http.post(url).json(body);
    if let Some(t) = bearer {
        request = request.bearer_auth(t.expose());
    }
    let send = async {
        let response = request
            .send()
            .await
            .map_err(|e| Error::Transport(format!("POST {url}: {e}")))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Transport(format!("POST {url}: {e}")))?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(Error::from_answer(status, &bytes))
        }
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let t = TokenSource::fixed("eyJhbGciOi.secret-token");
        assert!(!format!("{t:?}").contains("secret-token"), "{t:?}");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(…)");
    }
}
