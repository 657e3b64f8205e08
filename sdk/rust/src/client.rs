//! [`Plantd`]: the REST calls, the live connection and the few calls that
//! need more than one typed request (state with ETags, history pages as a
//! stream, service calls).

use std::time::Duration;

use futures::Stream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::{Secret, TokenSource};
use crate::error::Error;
use crate::generated::proxy::{params, types};
use crate::live::{Live, LiveOptions};
use crate::rest::{Raw, RawBody, Rest};

/// Options of [`Plantd`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Time limit of one REST call (default 30 s); a service call's own
    /// limit is added to it.
    pub timeout: Duration,
    /// The live connection's options.
    pub live: LiveOptions,
    /// An HTTP client to use (default: one with rustls and the platform's
    /// certificate verifier).
    pub http: Option<reqwest::Client>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            live: LiveOptions::default(),
            http: None,
        }
    }
}

/// A state value with the ETag to update it with (`If-Match`).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its ETag (`"<revision>"`).
    pub etag: String,
}

/// The plantd client: [`rest`](Self::rest) has every operation of the
/// proxy's and identity's OpenAPI documents as a typed method (bearer
/// token on each call, renewed once on a 401); [`live`](Self::live) is the
/// WebSocket. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), plantd_client::Error> {
/// use futures::StreamExt as _;
/// let plantd = plantd_client::Plantd::login("http://127.0.0.1:8080", "me@example.com", "secret").await?;
/// let mut sub = plantd.live().subscribe("plant-1", "line1/+/temp");
/// while let Some(m) = sub.next().await {
///     let m = m?;
///     println!("{} {} {:?}", m.sequence, m.topic, m.text());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Plantd {
    rest: Rest,
    live: Live,
    timeout: Duration,
}

/// An HTTP client with rustls (ring) and the platform's verifier.
fn http_client() -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))
}

impl Plantd {
    /// A client for the API at `url` with tokens from `auth`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the HTTP client cannot be built.
    pub fn new(url: &str, auth: TokenSource, options: Options) -> Result<Self, Error> {
        let http = match options.http {
            Some(h) => h,
            None => http_client()?,
        };
        Ok(Plantd {
            rest: Rest::new(http, url, auth.clone(), options.timeout),
            live: Live::new(url, auth, options.live),
            timeout: options.timeout,
        })
    }

    /// Logs in with an email and a password; the session renews its
    /// access token and rotates its refresh token by itself.
    ///
    /// # Errors
    /// [`Error::Api`] 401 for a wrong email or password (429 while
    /// throttled); transport errors; [`Error::Timeout`].
    pub async fn login(url: &str, email: &str, password: impl Into<Secret>) -> Result<Self, Error> {
        Self::login_with(url, email, password, Options::default()).await
    }

    /// [`login`](Self::login) with options.
    ///
    /// # Errors
    /// As [`login`](Self::login).
    pub async fn login_with(
        url: &str,
        email: &str,
        password: impl Into<Secret>,
        mut options: Options,
    ) -> Result<Self, Error> {
        let http = match options.http.take() {
            Some(h) => h,
            None => http_client()?,
        };
        let auth = TokenSource::login(&http, url, email, &password.into(), options.timeout).await?;
        options.http = Some(http);
        Self::new(url, auth, options)
    }

    /// With a fixed token (a service account's, a device's, or one from
    /// `plantd token`): never renewed; once the server refuses it, calls
    /// fail and subscriptions end with [`Error::Refused`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when the HTTP client cannot be built.
    pub fn with_token(url: &str, token: impl Into<Secret>) -> Result<Self, Error> {
        Self::new(url, TokenSource::fixed(token), Options::default())
    }

    /// As a service account or device (`POST /v1/auth/token`, client
    /// credentials); the token is then used as a fixed one.
    ///
    /// # Errors
    /// [`Error::Api`] 401 for bad credentials; transport errors;
    /// [`Error::Timeout`].
    pub async fn with_client_credentials(
        url: &str,
        client_id: &str,
        client_secret: impl Into<Secret>,
        mut options: Options,
    ) -> Result<Self, Error> {
        let http = match options.http.take() {
            Some(h) => h,
            None => http_client()?,
        };
        let auth = TokenSource::client_credentials(
            &http,
            url,
            client_id,
            &client_secret.into(),
            options.timeout,
        )
        .await?;
        options.http = Some(http);
        Self::new(url, auth, options)
    }

    /// Every operation of the OpenAPI documents, typed.
    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    /// The live connection (subscriptions and commands over `/v1/ws`).
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Logs a password session out: its access token is revoked (live
    /// subscriptions end with [`Error::Refused`]) and so are its refresh
    /// tokens. The client is unusable after it.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a fixed token; the server's error.
    pub async fn logout(&self) -> Result<(), Error> {
        self.rest.auth().logout().await
    }

    /// A state value and its ETag; `None` when the key does not exist.
    ///
    /// # Errors
    /// [`Error::Api`] (403 without `state:scope:<scope>:read`, …);
    /// [`Error::Decode`] when the value is not `T`.
    pub async fn get_state<T: DeserializeOwned>(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<Versioned<T>>, Error> {
        let answer = match self
            .rest
            .get_state_scope_key(scope, key, &params::GetStateScopeKeyParams::default())
            .await
        {
            Ok(a) => a,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = answer.etag().unwrap_or_default().to_owned();
        Ok(Some(Versioned {
            value: answer.value.json()?,
            etag,
        }))
    }

    /// Writes a state value as JSON. With `if_match` (an ETag from
    /// [`get_state`](Self::get_state)) only if nobody changed it since;
    /// returns the new ETag.
    ///
    /// # Errors
    /// [`Error::Api`] 409 `conflict` when it changed since `if_match`
    /// ([`Error::is_conflict`]); 403, 404 as the API says.
    pub async fn put_state<T: Serialize + ?Sized>(
        &self,
        scope: &str,
        key: &str,
        value: &T,
        if_match: Option<&str>,
    ) -> Result<String, Error> {
        let p = params::PutStateScopeKeyParams {
            if_match: if_match.map(str::to_owned),
            ..Default::default()
        };
        let answer = self
            .rest
            .put_state_scope_key(scope, key, &p, RawBody::json(value)?)
            .await?;
        Ok(answer.etag().unwrap_or_default().to_owned())
    }

    /// Sends a command to `site` over REST (`POST
    /// /v1/sites/{site}/commands`); the answer's `sequence` is its id.
    ///
    /// # Errors
    /// [`Error::Api`] 403 without `commands:<site>:send`, 404 for an
    /// unregistered site, 400 for a bad topic.
    pub async fn send_command(
        &self,
        site: &str,
        command: &types::Command,
    ) -> Result<types::Sent, Error> {
        Ok(self
            .rest
            .post_sites_site_commands(site, command)
            .await?
            .value)
    }

    /// A service call: `body` to the device serving `topic` on `site` (an
    /// MQTT 5 request with response topic and correlation data), its
    /// answer back. `timeout` is how long the device may take.
    ///
    /// # Errors
    /// [`Error::Api`] 503 when no device serves the topic or the site is
    /// not connected, 504 when nobody answered in time.
    pub async fn call(
        &self,
        site: &str,
        topic: &str,
        body: RawBody,
        timeout: Duration,
    ) -> Result<Raw, Error> {
        let p = params::PostSitesSiteCallTopicParams {
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        };
        let call = self.rest.post_sites_site_call_topic(site, topic, &p, body);
        let limit = self.timeout + timeout;
        // The REST call's own limit is the client's; a long service call
        // gets its own on top of it.
        match tokio::time::timeout(limit, call).await {
            Ok(answer) => Ok(answer?.value),
            Err(_) => Err(Error::Timeout(limit)),
        }
    }

    /// The stored messages of `site` matching `filter`, page after page
    /// (`GET /v1/sites/{site}/history`, following `next_cursor`), as a
    /// stream. `params.filter` and `params.cursor` are set from the
    /// arguments and the pages.
    pub fn history(
        &self,
        site: &str,
        filter: &str,
        params: params::GetSitesSiteHistoryParams,
    ) -> impl Stream<Item = Result<types::Message, Error>> + Send + 'static {
        use futures::StreamExt as _;
        let rest = self.rest.clone();
        let site = site.to_owned();
        let first = params::GetSitesSiteHistoryParams {
            filter: filter.to_owned(),
            ..params
        };
        futures::stream::try_unfold(Some(first), move |next| {
            let rest = rest.clone();
            let site = site.clone();
            async move {
                let Some(p) = next else { return Ok(None) };
                let page = rest.get_sites_site_history(&site, &p).await?.value;
                let next =
                    page.next_cursor
                        .clone()
                        .map(|cursor| params::GetSitesSiteHistoryParams {
                            cursor: Some(cursor),
                            ..p
                        });
                Ok::<_, Error>(Some((
                    futures::stream::iter(page.messages.into_iter().map(Ok)),
                    next,
                )))
            }
        })
        .map(|page| match page {
            Ok(messages) => messages.left_stream(),
            Err(e) => futures::stream::iter([Err(e)]).right_stream(),
        })
        .flatten()
    }
}
