//! Reloading the TLS certificate of the TLS and WSS listeners: on SIGHUP
//! ([`reload_on_hangup`]) or on request ([`reload_certificates`]).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

#[cfg(unix)]
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Metrics;
use crate::tls::Certificates;

/// Waits for SIGHUP until `stop`, reloading `certs` on each.
#[cfg(unix)]
pub(super) async fn reload_on_hangup(
    mut sig: tokio::signal::unix::Signal,
    certs: Option<Arc<Certificates>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = sig.recv() => if r.is_none() { return },
        }
        match &certs {
            Some(c) => {
                reload_certificates(c, &metrics);
            }
            None => info!("SIGHUP: no TLS or WSS listener, nothing to reload"),
        }
    }
}

/// Re-reads the TLS certificate, key and client CA into `certs`, logs the
/// outcome and counts it in `metrics` (`tls_reloads`,
/// `tls_reload_failures`, `tls_reload_failed`). On error the previous
/// certificate stays in force; established connections are never touched.
/// Returns whether the reload succeeded.
pub fn reload_certificates(certs: &Certificates, metrics: &Metrics) -> bool {
    let files = certs.files();
    match certs.reload() {
        Ok(()) => {
            metrics.tls_reloads.fetch_add(1, Relaxed);
            metrics.tls_reload_failed.store(0, Relaxed);
            info!(cert = %files.cert.display(), key = %files.key.display(), client_ca = ?files.client_ca, "TLS certificate reloaded");
            true
        }
        Err(e) => {
            metrics.tls_reload_failures.fetch_add(1, Relaxed);
            metrics.tls_reload_failed.store(1, Relaxed);
            tracing::error!(error = %e, cert = %files.cert.display(), "TLS certificate reload failed; keeping the previous certificate");
            false
        }
    }
}
