//! A JWKS endpoint for tests of key rotation: serves
//! `/.well-known/jwks.json` on a random loopback port, with a document the
//! test can replace ([`Server::set`]) and a count of fetches
//! ([`Server::hits`]) — what the identity service looks like to the edge
//! and the proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use plantd_shared::jwt::{SigningKey, jwks_of};

/// The JWKS document of `keys`, as JSON text.
///
/// # Panics
/// When a key cannot be exported (a broken test key).
pub fn document(keys: &[&SigningKey]) -> String {
    let set = jwks_of(keys.iter().copied()).expect("JWKS of the test keys");
    serde_json::to_string(&set).expect("JWKS as JSON")
}

/// A running JWKS endpoint; stops when dropped.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:<port>/.well-known/jwks.json`.
    url: String,
    /// The document served, replaceable.
    body: Arc<Mutex<String>>,
    /// Requests served.
    hits: Arc<AtomicUsize>,
    /// The server task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves the JWKS of `keys`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let body = Arc::new(Mutex::new(document(keys)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let text = b.lock().map(|t| t.clone()).unwrap_or_default();
                async move { ([("content-type", "application/json")], text) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the JWKS");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("local address")
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            body,
            hits,
            task,
        }
    }

    /// The JWKS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves the JWKS of `keys` from now on (a rotation at identity).
    pub fn set(&self, keys: &[&SigningKey]) {
        let text = document(keys);
        *self.body.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    /// How many times the document was fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
