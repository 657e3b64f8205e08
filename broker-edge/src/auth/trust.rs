//! The edge's trust store and the tasks that keep it fresh (the JWKS
//! refresh, the revocation mirror), started and stopped with the edge.

use std::sync::Arc;
use std::time::Duration;

use plantd_bridge::trust::Trust;
use plantd_shared::subject::Site;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Why the edge's trust store could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("signing keys: {0}")]
pub struct TrustSetupError(String);

/// The edge's trust store and the tasks that keep it fresh: the JWKS
/// refresh from `--jwks-url` and the revocation mirror from
/// `plantd_revoked`. Owns its tasks: [`stop`](Self::stop) ends and awaits
/// them.
#[derive(Debug)]
pub struct EdgeTrust {
    /// Keys and revocations, shared with the broker.
    trust: Arc<Trust>,
    /// Stops the tasks.
    stop: CancellationToken,
    /// The refresh and mirror tasks.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EdgeTrust {
    /// Sets up the trust store of `config`: `None` when neither
    /// `jwks_url` nor `jwks_file` is configured. The cache lives in
    /// `<data-dir>/trust` (so a site that lost its uplink, or restarts
    /// offline, keeps its keys and revocations).
    ///
    /// # Errors
    /// [`TrustSetupError`] for an invalid site, `--jwks-url` without
    /// `--data-dir`, or a JWKS file that cannot be read.
    pub fn start(config: &crate::Config) -> Result<Option<Self>, TrustSetupError> {
        if config.jwks_url.is_none() && config.jwks_file.is_none() {
            return Ok(None);
        }
        let site = Site::new(config.site.as_str()).map_err(|e| TrustSetupError(e.to_string()))?;
        let cache = match (&config.data_dir, &config.jwks_url) {
            (Some(dir), _) => dir.join("trust"),
            (None, Some(_)) => {
                return Err(TrustSetupError(
                    "--jwks-url needs --data-dir (fetched keys are cached there)".into(),
                ));
            }
            // A key file is its own cache; keep the (unused) copy private
            // to this process.
            (None, None) => {
                std::env::temp_dir().join(format!("plantd-edge-trust-{}", std::process::id()))
            }
        };
        let trust = Trust::new(site, cache);
        if let Some(file) = &config.jwks_file {
            trust
                .load_file(file)
                .map_err(|e| TrustSetupError(e.to_string()))?;
            info!(file = %file.display(), "signing keys loaded from file");
        }
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(url) = config.jwks_url.clone() {
            let every = Duration::from_secs(config.jwks_refresh_secs.max(1));
            info!(%url, cached = trust.has_keys(), "fetching signing keys");
            tasks.push(tokio::spawn(trust.clone().refresh_keys(
                url,
                every,
                stop.clone().cancelled_owned(),
            )));
        }
        Ok(Some(Self { trust, stop, tasks }))
    }

    /// `broker`, verifying tokens with `this` trust store when there is one.
    pub fn install(this: Option<&Self>, broker: crate::Broker) -> crate::Broker {
        match this {
            Some(t) => broker.with_trust(t.trust()),
            None => broker,
        }
    }

    /// The trust store.
    pub fn trust(&self) -> Arc<Trust> {
        self.trust.clone()
    }

    /// Mirrors revocations from `plantd_revoked` over `client` until
    /// [`stop`](Self::stop).
    pub fn mirror_revocations(&mut self, client: &async_nats::Client) {
        let js = async_nats::jetstream::new(client.clone());
        self.tasks.push(tokio::spawn(
            self.trust
                .clone()
                .mirror_revocations(js, self.stop.clone().cancelled_owned()),
        ));
    }

    /// Stops the refresh and mirror tasks and waits for them.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
