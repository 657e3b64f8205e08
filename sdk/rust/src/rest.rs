//! The REST core the generated operations (`crate::proxy`,
//! `crate::identity`) run on: one [`Rest`] handle (cheap to clone) that
//! sends a [`Call`] with the current bearer token, renews the token and
//! sends once more when the server answers 401, gives up after the time
//! limit ([`Error::Timeout`]) and turns error answers into
//! [`Error::Api`]. Dropping the future cancels the call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, ETAG, HeaderMap};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::TokenSource;
use crate::error::Error;

/// Sends the API's calls. Every operation of the OpenAPI documents is a
/// method (generated: `get_sites_site_last`, `put_state_scope_key`,
/// `post_devices`, …; see the crate's docs for the naming).
#[derive(Clone, Debug)]
pub struct Rest {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The API's base URL, without a trailing `/`.
    base: String,
    /// The HTTP client (connection pool).
    http: reqwest::Client,
    /// Where bearer tokens come from.
    auth: TokenSource,
    /// Time limit of a call that sets none.
    timeout: Duration,
}

/// One request, as the generated operations build it.
#[derive(Debug, Clone)]
pub struct Call {
    method: reqwest::Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<RawBody>,
    timeout: Option<Duration>,
}

impl Call {
    /// `method` on `path` (already percent-encoded, from the API's root).
    pub fn new(method: reqwest::Method, path: String) -> Self {
        Call {
            method,
            path,
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// Adds a query parameter.
    #[must_use]
    pub fn query(mut self, name: &str, value: String) -> Self {
        self.query.push((name.to_owned(), value));
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: String) -> Self {
        self.headers.push((name.to_owned(), value));
        self
    }

    /// A JSON body.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `body` cannot be written as JSON.
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Result<Self, Error> {
        Ok(self.raw(RawBody::json(body)?))
    }

    /// A body of any content type.
    #[must_use]
    pub fn raw(mut self, body: RawBody) -> Self {
        self.body = Some(body);
        self
    }

    /// A time limit for this call instead of the client's.
    #[must_use]
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

/// A request body with its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody {
    /// The bytes.
    pub bytes: Bytes,
    /// Its `Content-Type`.
    pub content_type: String,
}

impl RawBody {
    /// `value` as JSON (`application/json`).
    ///
    /// # Errors
    /// [`Error::Invalid`] when it cannot be written as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| Error::Invalid(format!("JSON body: {e}")))?;
        Ok(RawBody {
            bytes: bytes.into(),
            content_type: "application/json".to_owned(),
        })
    }

    /// Text (`text/plain; charset=utf-8`).
    pub fn text(text: impl Into<String>) -> Self {
        RawBody {
            bytes: Bytes::from(text.into()),
            content_type: "text/plain; charset=utf-8".to_owned(),
        }
    }

    /// Bytes with a content type.
    pub fn bytes(bytes: impl Into<Bytes>, content_type: impl Into<String>) -> Self {
        RawBody {
            bytes: bytes.into(),
            content_type: content_type.into(),
        }
    }
}

/// An answer body the document does not type: its bytes and content type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raw {
    /// Its `Content-Type`, if it said.
    pub content_type: Option<String>,
    /// The bytes.
    pub bytes: Bytes,
}

impl Raw {
    /// The body read as JSON into `T`.
    ///
    /// # Errors
    /// [`Error::Decode`] when it is not that.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The body as text, when it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }
}

/// A successful answer: the status, the headers and the typed body.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// The HTTP status (200, 201, 202, 204).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub value: T,
}

impl<T> Answer<T> {
    /// The `ETag` header, if any (state values: `"<revision>"`).
    pub fn etag(&self) -> Option<&str> {
        self.headers.get(ETAG).and_then(|v| v.to_str().ok())
    }

    /// The body.
    pub fn into_value(self) -> T {
        self.value
    }
}

/// An answer before its body is read.
#[derive(Debug)]
pub struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    /// The body as JSON.
    ///
    /// # Errors
    /// [`Error::Decode`] when the body is not `T`.
    pub fn json<T: DeserializeOwned>(self) -> Result<Answer<T>, Error> {
        let value = serde_json::from_slice(&self.body).map_err(|e| {
            Error::Decode(format!(
                "{e}: {}",
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        })?;
        Ok(Answer {
            status: self.status,
            headers: self.headers,
            value,
        })
    }

    /// The body as it came.
    ///
    /// # Errors
    /// Never; `Result` for the generated code's uniformity.
    pub fn raw(self) -> Result<Answer<Raw>, Error> {
        let content_type = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Answer {
            status: self.status,
            headers: self.headers,
            value: Raw {
                content_type,
                bytes: self.body,
            },
        })
    }

    /// No body.
    ///
    /// # Errors
    /// Never; `Result` for the generated code's uniformity.
    pub fn empty(self) -> Result<Answer<()>, Error> {
        Ok(Answer {
            status: self.status,
            headers: self.headers,
            value: (),
        })
    }
}

impl Rest {
    /// A handle on the API at `base` (`http(s)://host:port`).
    pub fn new(http: reqwest::Client, base: &str, auth: TokenSource, timeout: Duration) -> Self {
        Rest {
            inner: Arc::new(Inner {
                base: base.trim_end_matches('/').to_owned(),
                http,
                auth,
                timeout,
            }),
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.inner.base
    }

    /// Where the tokens come from.
    pub fn auth(&self) -> &TokenSource {
        &self.inner.auth
    }

    /// Sends `call` with the bearer token; on 401 renews the token once
    /// and sends again.
    ///
    /// # Errors
    /// [`Error::Api`] for an answer that is not 2xx; [`Error::Refused`]
    /// when the token was refused and cannot be renewed; transport errors;
    /// [`Error::Timeout`] after the call's (or the client's) time limit.
    pub async fn call(&self, call: Call) -> Result<Reply, Error> {
        let limit = call.timeout.unwrap_or(self.inner.timeout);
        tokio::time::timeout(limit, self.call_with_renewal(&call))
            .await
            .map_err(|_| Error::Timeout(limit))?
    }

    async fn call_with_renewal(&self, call: &Call) -> Result<Reply, Error> {
        let token = self.inner.auth.token().await?;
        let first = self.send(call, token.expose()).await?;
        if first.status != 401 {
            return ok_or_error(first);
        }
        let renewed = self.inner.auth.renew(&token).await?;
        let second = self.send(call, renewed.expose()).await?;
        if second.status == 401 {
            let Error::Api { message, .. } = Error::from_answer(401, &second.body) else {
                return Err(Error::Refused("the token was refused".to_owned()));
            };
            return Err(Error::Refused(message));
        }
        ok_or_error(second)
    }

    async fn send(&self, call: &Call, token: &str) -> Result<Reply, Error> {
        let url = format!("{}{}", self.inner.base, call.path);
        let mut url =
            reqwest::Url::parse(&url).map_err(|e| Error::Invalid(format!("{url}: {e}")))?;
        if !call.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &call.query {
                pairs.append_pair(k, v);
            }
        }
        let what = format!("{} {}", call.method, call.path);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), url)
            .bearer_auth(token);
        for (k, v) in &call.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, body.content_type.as_str())
                .body(body.bytes.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Transport(format!("{what}: {e}")))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Transport(format!("{what}: {e}")))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

fn ok_or_error(reply: Reply) -> Result<Reply, Error> {
    if (200..300).contains(&reply.status) {
        Ok(reply)
    } else {
        Err(Error::from_answer(reply.status, &reply.body))
    }
}

/// Percent-encodes one path segment (everything but `A-Z a-z 0-9 - . _ ~`).
pub fn segment(value: &str) -> String {
    encode(value, false)
}

/// Percent-encodes a path that may span segments (keeps its `/`s): the
/// catch-all `{topic}` of service calls.
pub fn segments(value: &str) -> String {
    encode(value, true)
}

fn encode(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
        assert_eq!(segments("line1/valve set"), "line1/valve%20set");
        assert_eq!(segment("plant-1_x.y~"), "plant-1_x.y~");
    }
}
