//! When a long-running plantd process should stop: SIGTERM (what systemd,
//! container runtimes, `plantd up` and `kill` send) or Ctrl-C. Every
//! process's graceful shutdown waits on [`terminated`] — one definition, so
//! none of them dies on SIGTERM without draining.

/// Resolves when the process receives SIGTERM or Ctrl-C (SIGINT), and
/// logs which. Where SIGTERM cannot be listened for, only Ctrl-C (logged).
pub async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process gracefully");
                let _ = ctrl_c.await;
                tracing::info!(signal = "SIGINT", "shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        tracing::info!(signal = "SIGINT", "shutting down");
    }
}
