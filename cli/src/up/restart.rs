//! Bringing a component of `plantd up` back after it stopped by itself:
//! retries with the restart policy's growing delays until it is up, shutdown
//! is asked for or it crash-loops; the streams re-applied once nats-server
//! is back; why an edge task ended, in words.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use plantd_shared::streams::{self, Settings};

use crate::supervise::Restarts;

/// Starts a component again with `attempt`, waiting the policy's growing
/// delay before each try, until it comes up (`Some`), shutdown is
/// requested (`None`), or it is crash-looping.
///
/// # Errors
/// When `restarts` says the component is crash-looping; the error names
/// it and carries `last` (its last output or failure) and the last
/// attempt's error.
pub(super) async fn retry<T, Fut>(
    what: &str,
    restarts: &mut Restarts,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    last: &str,
    mut attempt: impl FnMut() -> Fut,
) -> Result<Option<T>>
where
    Fut: Future<Output = Result<T>>,
{
    let mut last_error = String::new();
    loop {
        let delay = restarts.failed(Instant::now()).map_err(|e| {
            anyhow::anyhow!("{what} keeps stopping ({e}); last attempt: {last_error}\n{last}")
        })?;
        tracing::info!(
            component = what,
            ?delay,
            recent_failures = restarts.recent(),
            "restarting"
        );
        if wait_or_shutdown(delay, shutdown).await {
            return Ok(None);
        }
        match attempt().await {
            Ok(t) => return Ok(Some(t)),
            Err(e) => {
                tracing::error!(component = what, error = %e, "restart failed");
                last_error = format!("{e:#}");
            }
        }
    }
}

/// Re-applies the streams and buckets after nats-server came back (a
/// wiped store comes back whole), once the client has reconnected;
/// bounded, so a slow reconnect is logged rather than fatal.
pub(super) async fn ensure_after_restart(js: &async_nats::jetstream::Context) {
    let settings = Settings::default();
    let ensure = tokio::time::timeout(Duration::from_secs(30), streams::ensure(js, &settings));
    match ensure.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "streams and buckets after restart"),
        Err(_) => tracing::warn!(
            "streams and buckets not re-checked: the NATS client did not reconnect within 30 s"
        ),
    }
}

/// Sleeps `delay` unless `shutdown` completes first; true when it did.
pub(super) async fn wait_or_shutdown(
    delay: Duration,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tokio::select! {
        _ = shutdown.as_mut() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// What a finished edge task says about why it ended.
pub(super) fn describe_end(
    ended: Result<Result<(), plantd_edge::edge::EdgeError>, tokio::task::JoinError>,
) -> String {
    match ended {
        Ok(Ok(())) => "stopped".to_owned(),
        Ok(Err(e)) => e.to_string(),
        Err(e) if e.is_panic() => format!("panicked: {e}"),
        Err(e) => e.to_string(),
    }
}
