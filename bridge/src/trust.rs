//! What the edge trusts: the identity service's public keys (JWKS) and the
//! list of revoked token ids — both kept on the edge's disk, so a site that
//! lost its uplink keeps authenticating devices, and a restart while
//! offline still refuses revoked tokens.
//!
//! * Keys come from `--jwks-url` (fetched at start and refreshed
//!   periodically; the last good copy is cached) or `--jwks-file` (sites
//!   that never connect). A token naming a key id the edge does not know
//!   is refused, and makes the refresh task fetch the JWKS at once (at most
//!   once per [`UNKNOWN_KEY_REFRESH`]), so a key identity rotated to is
//!   picked up by the client's next attempt at the latest — usually it is
//!   known already: identity publishes the next key ahead of a rotation.
//! * Revocations are mirrored from the `plantd_revoked` KV bucket by a
//!   watch; each new one is broadcast at once so live connections using the
//!   token are closed within a second.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use plantd_shared::claims::{Claims, site_audience};
use plantd_shared::jwt::{self, JwkSet, TokenError, VerifyOptions};
use plantd_shared::subject::Site;
use tokio::sync::broadcast;

/// The shortest time between two JWKS fetches caused by unknown key ids
/// (forged `kid`s cost identity at most one fetch per this, per edge).
pub const UNKNOWN_KEY_REFRESH: Duration = Duration::from_secs(2);

const JWKS_CACHE: &str = "jwks.json";
const REVOKED_CACHE: &str = "revoked.json";

/// Why a token is refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The token itself is invalid (signature, expiry, audience...).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The token's id is on the revocation list.
    #[error("token has been revoked")]
    Revoked,
    /// No keys are known yet (no JWKS fetched, cached or configured).
    #[error("no signing keys are known yet")]
    NoKeys,
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Fetching the JWKS URL failed.
    #[error("fetching {url}: {detail}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// The edge's keys and revocation list. Shared by every connection.
/// (The proxy's `ApiTrust` is the API's online counterpart: API-audience
/// bearer tokens, revocations read from KV, nothing cached on disk.)
#[derive(Debug)]
pub struct Trust {
    /// The site whose audience tokens must carry.
    site: Site,
    /// Where the caches live.
    cache_dir: PathBuf,
    /// Current keys.
    jwks: RwLock<Option<Arc<JwkSet>>>,
    /// Revoked token ids and their expiry (seconds since the epoch).
    revoked: RwLock<HashMap<String, u64>>,
    /// New revocations, for live connections.
    revocations: broadcast::Sender<String>,
    /// Raised when a token names an unknown key: the refresh task fetches.
    key_wanted: tokio::sync::Notify,
}

impl Trust {
    /// A trust store for `site`, loading whatever is cached in `cache_dir`.
    pub fn new(site: Site, cache_dir: impl Into<PathBuf>) -> Arc<Self> {
        let cache_dir = cache_dir.into();
        let jwks = std::fs::read(cache_dir.join(JWKS_CACHE))
            .ok()
            .and_then(|b| serde_json::from_slice::<JwkSet>(&b).ok())
            .map(Arc::new);
        if jwks.is_some() {
            tracing::info!(cache = %cache_dir.display(), "using cached signing keys until fresh ones arrive");
        }
        let now = jwt::now_secs();
        let revoked: HashMap<String, u64> = std::fs::read(cache_dir.join(REVOKED_CACHE))
            .ok()
            .and_then(|b| serde_json::from_slice::<HashMap<String, u64>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, exp)| *exp == 0 || *exp > now)
            .collect();
        let (revocations, _) = broadcast::channel(1024);
        Arc::new(Self {
            site,
            cache_dir,
            jwks: RwLock::new(jwks),
            revoked: RwLock::new(revoked),
            revocations,
            key_wanted: tokio::sync::Notify::new(),
        })
    }

    /// Whether any keys are known.
    pub fn has_keys(&self) -> bool {
        self.jwks.read().map(|j| j.is_some()).unwrap_or(false)
    }

    /// Replaces the keys and caches them on disk.
    pub fn set_jwks(&self, jwks: JwkSet) {
        if let Ok(bytes) = serde_json::to_vec(&jwks) {
            write_atomic(&self.cache_dir.join(JWKS_CACHE), &bytes);
        }
        if let Ok(mut j) = self.jwks.write() {
            *j = Some(Arc::new(jwks));
        }
    }

    /// Verifies an MQTT password as a token for this site: signature,
    /// expiry, not-before, audience `plantd:site:<site>`, not revoked.
    ///
    /// # Errors
    /// A [`Refusal`] saying why.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let jwks = self
            .jwks
            .read()
            .ok()
            .and_then(|j| j.clone())
            .ok_or(Refusal::NoKeys)?;
        let opts = VerifyOptions::for_audience(site_audience(&self.site));
        let claims = jwt::verify(token, &jwks, &opts).inspect_err(|e| {
            if matches!(e, TokenError::UnknownKey(Some(_))) {
                self.key_wanted.notify_one();
            }
        })?;
        if self.is_revoked(&claims.jti) {
            return Err(Refusal::Revoked);
        }
        Ok(claims)
    }

    /// Whether token id `jti` is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .map(|r| r.contains_key(jti))
            .unwrap_or(false)
    }

    /// New revocations as they arrive (token ids).
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.revocations.subscribe()
    }

    /// Records a revocation, caches the list, and tells live connections.
    pub fn revoke(&self, jti: &str, exp: u64) {
        let snapshot = match self.revoked.write() {
            Ok(mut r) => {
                if r.insert(jti.to_owned(), exp).is_some() {
                    return;
                }
                let now = jwt::now_secs();
                r.retain(|_, e| *e == 0 || *e > now);
                serde_json::to_vec(&*r).ok()
            }
            Err(_) => None,
        };
        if let Some(bytes) = snapshot {
            write_atomic(&self.cache_dir.join(REVOKED_CACHE), &bytes);
        }
        let _ = self.revocations.send(jti.to_owned());
    }

    /// Reads keys from a JWKS file.
    ///
    /// # Errors
    /// [`TrustError::File`] if it cannot be read or parsed.
    pub fn load_file(&self, path: &Path) -> Result<(), TrustError> {
        let err = |detail: String| TrustError::File {
            path: path.to_owned(),
            detail,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let jwks: JwkSet = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        self.set_jwks(jwks);
        Ok(())
    }

    /// Fetches keys from `url` once.
    ///
    /// # Errors
    /// [`TrustError::Fetch`] on any failure (the cached keys stay in use).
    pub async fn fetch(&self, client: &reqwest::Client, url: &str) -> Result<(), TrustError> {
        let err = |detail: String| TrustError::Fetch {
            url: url.to_owned(),
            detail,
        };
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("status {}", resp.status())));
        }
        let jwks: JwkSet = resp.json().await.map_err(|e| err(e.to_string()))?;
        self.set_jwks(jwks);
        Ok(())
    }

    /// Fetches keys from `url` now, every `interval`, and soon after a
    /// token names an unknown key (at most once per
    /// [`UNKNOWN_KEY_REFRESH`]), until `shutdown`; failures are logged and
    /// the last good keys kept.
    pub async fn refresh_keys(
        self: Arc<Self>,
        url: String,
        interval: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let client = match http_client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build an HTTPS client; signing keys will not be refreshed");
                return;
            }
        };
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(interval);
        let mut last_fetch: Option<tokio::time::Instant> = None;
        loop {
            let wanted = tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => false,
                () = self.key_wanted.notified() => true,
            };
            if wanted && let Some(last) = last_fetch {
                // Rate-limited: wait out the rest of the interval.
                tokio::select! {
                    _ = &mut shutdown => break,
                    () = tokio::time::sleep_until(last + UNKNOWN_KEY_REFRESH) => {}
                }
            }
            last_fetch = Some(tokio::time::Instant::now());
            match self.fetch(&client, &url).await {
                Ok(()) if wanted => {
                    tracing::info!(%url, "signing keys fetched for a token with an unknown key id")
                }
                Ok(()) => tracing::debug!(%url, "signing keys refreshed"),
                Err(e) => {
                    tracing::warn!(error = %e, cached = self.has_keys(), "cannot refresh signing keys")
                }
            }
        }
    }

    /// Mirrors `plantd_revoked` until `shutdown`, re-watching after errors
    /// (the loop is [`plantd_shared::revocations::watch`], from the
    /// beginning of the bucket so the cached list is complete).
    pub async fn mirror_revocations(
        self: Arc<Self>,
        js: async_nats::jetstream::Context,
        shutdown: impl Future<Output = ()>,
    ) {
        use plantd_shared::revocations::{self, Event, Start};
        revocations::watch(
            js,
            Start::Beginning,
            |event| {
                if let Event::Revoked { jti, exp } = event {
                    self.revoke(jti, exp);
                }
            },
            shutdown,
        )
        .await;
    }
}

/// An HTTPS client with rustls (ring) and the platform's roots.
///
/// # Errors
/// When the TLS backend cannot be initialised.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
}

fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let r = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
        .and_then(|_| std::fs::write(&tmp, bytes))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "cannot write trust cache");
    }
}
