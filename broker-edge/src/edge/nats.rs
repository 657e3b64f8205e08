//! The edge's NATS connection: its options from the configuration (name,
//! credentials, CA and client certificate, checked readable at start), and
//! connecting with retries and logged connection events.

use super::EdgeError;
use crate::config::Config;

/// Connection options for NATS from the configuration: name, credentials,
/// CA and client certificate. Shared by the edge's connection and the
/// uplink's own connections.
pub(super) async fn nats_options(config: &Config) -> Result<async_nats::ConnectOptions, EdgeError> {
    let u = &config.uplink;
    let mut opts = async_nats::ConnectOptions::new().name(format!("plantd-edge-{}", config.site));
    if let Some(creds) = &u.nats_creds {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|e| EdgeError::Nats(format!("credentials {}: {e}", creds.display())))?;
    }
    // async-nats reads these files on every connection attempt: check them
    // now, so that a wrong path stops the edge with its name instead of
    // leaving the uplink down with a bare "No such file".
    if let Some(ca) = &u.nats_ca {
        readable(ca, "--nats-ca").await?;
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&u.nats_cert, &u.nats_key) {
        (Some(cert), Some(key)) => {
            readable(cert, "--nats-cert").await?;
            readable(key, "--nats-key").await?;
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        // One without the other would silently connect without a client
        // certificate.
        _ => {
            return Err(EdgeError::Config(
                "--nats-cert and --nats-key (uplink.nats_cert, uplink.nats_key) go together".into(),
            ));
        }
    }
    Ok(opts)
}

/// Fails with [`EdgeError::Config`] naming `what` when `path` cannot be read.
async fn readable(path: &std::path::Path, what: &str) -> Result<(), EdgeError> {
    tokio::fs::File::open(path)
        .await
        .map(drop)
        .map_err(|e| EdgeError::Config(format!("{what} {}: {e}", path.display())))
}

pub(super) async fn connect_nats(
    opts: async_nats::ConnectOptions,
    url: &str,
) -> Result<async_nats::Client, EdgeError> {
    let opts = opts
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            tracing::info!(%event, "NATS connection event");
        });
    plantd_shared::nats_urls::connect(url, opts)
        .await
        .map_err(|e| {
            let url = plantd_shared::nats_urls::redacted(url);
            EdgeError::Nats(format!("{url}: {e}"))
        })
}
