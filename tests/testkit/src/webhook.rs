//! A webhook receiver for tests: an HTTP server on `127.0.0.1:0` that
//! records every request (method, path, headers, body) and answers 200 —
//! or, when told with [`Receiver::fail_next`], a chosen status for the next
//! N requests (to exercise retries and dead-lettering).
//!
//! ```no_run
//! # async fn demo() {
//! let receiver = plantd_testkit::webhook::Receiver::start().await;
//! receiver.fail_next(2, 503);
//! // … point a notification channel at receiver.url() …
//! let got = receiver.wait_for(3, std::time::Duration::from_secs(10)).await;
//! assert!(got[2].verify("the channel's secret"));
//! # }
//! ```
//!
//! [`verify_signature`] checks a `Plantd-Signature` the way a receiver
//! should (docs/operations.md#notifications), written here independently of
//! the notifier's own code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, …
    pub method: String,
    /// The path and query (`/hook`).
    pub path: String,
    /// The headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the webhook body is not JSON ({e}): {:?}", self.body))
    }

    /// True when `Plantd-Signature` is the HMAC-SHA256 of
    /// `"<Plantd-Timestamp>.<body>"` under `secret`.
    pub fn verify(&self, secret: &str) -> bool {
        match (
            self.header("plantd-timestamp"),
            self.header("plantd-signature"),
        ) {
            (Some(ts), Some(sig)) => verify_signature(secret.as_bytes(), ts, &self.body, sig),
            _ => false,
        }
    }
}

/// True when `signature` (`sha256=<hex>`) is the HMAC-SHA256 under `secret`
/// of `timestamp`, a `.`, and `body` — what a webhook receiver checks
/// (then it also checks that `timestamp` is recent).
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 {
        return false;
    }
    let Some(tag) = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// What the server task shares with the test.
#[derive(Debug, Default)]
struct Shared {
    /// Every request so far, in arrival order.
    requests: Mutex<Vec<Request>>,
    /// Statuses to answer the next requests with (front first).
    failures: Mutex<VecDeque<u16>>,
    /// The status for every request once `failures` is empty (`None`: 200).
    always: Mutex<Option<u16>>,
}

/// A recording webhook receiver; dropping it stops the server.
#[derive(Debug)]
pub struct Receiver {
    /// Where it listens.
    addr: SocketAddr,
    /// Requests and scripted failures.
    shared: Arc<Shared>,
    /// The server task (aborted on drop).
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind the webhook receiver: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the receiver's address: {e}"));
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(record).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "webhook receiver stopped");
            }
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>/hook` (any path is accepted).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next `n` requests with `status` (then 200 again).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut f = self
            .shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.extend(std::iter::repeat_n(status, n));
    }

    /// Answers every request with `status` from now on (until
    /// [`Receiver::recover`]).
    pub fn fail_all(&self, status: u16) {
        *self.shared.always.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// Answers 200 again.
    pub fn recover(&self) {
        self.shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.shared.always.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Every request so far, in arrival order (failed ones included).
    pub fn requests(&self) -> Vec<Request> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests answered 2xx so far.
    pub fn delivered(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    /// Waits until at least `n` requests arrived; all of them.
    ///
    /// # Panics
    /// When fewer arrive `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Request> {
        crate::eventually(within, &format!("{n} webhook requests"), || async {
            let got = self.requests();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answered = shared
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front()
        .or(*shared.always.lock().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or(200);
    let request = Request {
        method: method.to_string(),
        path: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        answered,
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_signature_verifies() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"secret",b"1.body",hashlib.sha256).hexdigest())'
        let sig = "sha256=842b24d9575dee4b6ec460b7e3af7d683501d84fe6279102340787c79d2e2bab";
        assert!(verify_signature(b"secret", "1", b"body", sig));
        assert!(!verify_signature(b"secret", "2", b"body", sig));
        assert!(!verify_signature(b"other", "1", b"body", sig));
        assert!(!verify_signature(b"secret", "1", b"body", "sha256=zz"));
    }
}
