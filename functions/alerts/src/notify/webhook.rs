//! Webhook delivery: one signed POST of the [`Notification`] JSON, retried
//! with exponential backoff and jitter while the failure is transient.
//!
//! Each attempt carries `Content-Type: application/json`,
//! `Plantd-Notification-Id` (the same on every attempt),
//! `Plantd-Timestamp` (Unix seconds of this attempt) and
//! `Plantd-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`
//! keyed with the channel's secret, plus the channel's own headers.
//!
//! | answer | verdict |
//! |---|---|
//! | 2xx | delivered |
//! | 408, 429, 5xx, connect error, timeout | transient: retried here, then the item fails |
//! | other 3xx/4xx | permanent: the item fails at once (the trigger still retries it later and finally parks it) |

use std::time::Duration;

use rand::Rng as _;
use reqwest::StatusCode;
use thiserror::Error;
use time::OffsetDateTime;

use super::channel::Webhook;
use super::payload::{ID_HEADER, Notification, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature};

/// Attempts within one delivery (the trigger's own retries come on top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(500),
            max: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// The wait after failed attempt `n` (1-based): `base · 2^(n-1)`
    /// capped at `max`, times a random factor in [0.5, 1) so that many
    /// notifiers failing together do not retry in step.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max);
        exp.mul_f64(rand::thread_rng().gen_range(0.5..1.0))
    }
}

/// A webhook delivery that did not succeed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// The receiver refused it for good (a 3xx or 4xx other than 408/429).
    /// The answer's body is logged, never put in the error: the error
    /// reaches API callers (`/test`) and the DLQ, and a URL pointing at an
    /// internal service must not turn plantd into a way to read it.
    #[error("{url} refused the notification: HTTP {status}")]
    Refused {
        /// The URL.
        url: String,
        /// Its status.
        status: u16,
    },
    /// Every attempt failed transiently.
    #[error("{url}: {attempts} attempts failed, the last: {last}")]
    Exhausted {
        /// The URL.
        url: String,
        /// How many.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// A delivered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The receiver's 2xx status.
    pub status: u16,
    /// Attempts it took.
    pub attempts: u32,
}

/// The HTTP client webhooks are sent with: rustls with ring, no redirects
/// (a redirect is answered as a refusal, never followed with the body).
///
/// # Errors
/// When reqwest cannot build a client (no TLS roots).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("plantd-notifier/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One attempt's failure.
enum Attempt {
    Transient(String),
    Permanent(StatusCode),
}

/// POSTs `notification` to `webhook`, retrying transient failures by
/// `retry`.
///
/// # Errors
/// [`WebhookError`].
pub async fn deliver(
    client: &reqwest::Client,
    webhook: &Webhook,
    notification: &Notification,
    retry: &Retry,
) -> Result<Delivered, WebhookError> {
    let body = serde_json::to_vec(notification).unwrap_or_default();
    let attempts = retry.attempts.max(1);
    let mut last = String::new();
    for n in 1..=attempts {
        match attempt(client, webhook, &notification.id, &body).await {
            Ok(status) => {
                return Ok(Delivered {
                    status: status.as_u16(),
                    attempts: n,
                });
            }
            Err(Attempt::Permanent(status)) => {
                return Err(WebhookError::Refused {
                    url: webhook.url.clone(),
                    status: status.as_u16(),
                });
            }
            Err(Attempt::Transient(why)) => {
                tracing::debug!(notification = %notification.id, attempt = n, error = %why, "webhook attempt failed");
                last = why;
                if n < attempts {
                    tokio::time::sleep(retry.delay(n)).await;
                }
            }
        }
    }
    Err(WebhookError::Exhausted {
        url: webhook.url.clone(),
        attempts,
        last,
    })
}

async fn attempt(
    client: &reqwest::Client,
    webhook: &Webhook,
    id: &str,
    body: &[u8],
) -> Result<StatusCode, Attempt> {
    let timestamp = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    let mut request = client
        .post(&webhook.url)
        .timeout(webhook.timeout())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ID_HEADER, id)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(
            SIGNATURE_HEADER,
            signature(webhook.secret.as_bytes(), timestamp, body),
        );
    for (name, value) in &webhook.headers {
        request = request.header(name, value);
    }
    let response = request
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| Attempt::Transient(describe(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status);
    }
    let text: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    tracing::warn!(notification = %id, url = %webhook.url, status = status.as_u16(), answer = %text, "webhook answered an error");
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Err(Attempt::Transient(format!("HTTP {status}")))
    } else {
        Err(Attempt::Permanent(status))
    }
}

/// A reqwest error with its cause chain (reqwest's own text is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let r = Retry {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(300),
        };
        for _ in 0..50 {
            let d1 = r.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(100));
            let d2 = r.delay(2);
            assert!(d2 >= Duration::from_millis(100) && d2 < Duration::from_millis(200));
            let d9 = r.delay(9);
            assert!(d9 >= Duration::from_millis(150) && d9 < Duration::from_millis(300));
        }
    }
}
