//! The uplink's own NATS connections: one per attempt, never reconnecting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use plantd_shared::nats_urls::{redacted, server_urls, url_credentials};
use tokio::sync::watch;

/// Opens the uplink's own NATS connections, one per attempt.
///
/// The uplink never shares its connection and never lets it reconnect by
/// itself: a client that reconnects flushes the publishes it had queued
/// while disconnected, behind publishes that died with the old connection,
/// and that would reorder a topic. Instead each connection is used until it
/// fails and then dropped; the uplink opens a fresh one and resends from the
/// acknowledged cursor. On one TCP connection the server receives a prefix
/// of what was sent, in order, so publishes can be pipelined freely.
#[derive(Clone)]
pub struct UplinkConnector {
    /// Server URLs; tried in turn, one per connection attempt.
    servers: Vec<String>,
    /// Authentication, TLS and naming, as for the edge's other connection.
    options: async_nats::ConnectOptions,
    /// Next server to try.
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for UplinkConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkConnector")
            .field(
                "servers",
                &self.servers.iter().map(|s| redacted(s)).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// One uplink connection and a flag that turns true when it is lost.
pub struct UplinkConnection {
    /// The client; it does not reconnect.
    pub client: async_nats::Client,
    /// Becomes `true` when the connection is lost or closed.
    pub lost: watch::Receiver<bool>,
}

impl UplinkConnector {
    /// A connector for `urls` (one URL, or several separated by commas) with
    /// `options` (credentials, TLS, name; a user and password in the URLs
    /// too, [`url_credentials`]). Reconnection and the event callback of
    /// `options` are replaced.
    pub fn new(urls: &str, options: async_nats::ConnectOptions) -> Self {
        let servers = server_urls(urls);
        Self {
            servers,
            options: url_credentials(options, urls),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Opens a connection to the next server. It makes one attempt and
    /// never reconnects: when it drops, `lost` becomes true and the client
    /// closes, discarding anything it still had queued.
    pub async fn connect(&self) -> Result<UplinkConnection, async_nats::ConnectError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let url = self
            .servers
            .get(i % self.servers.len().max(1))
            .cloned()
            .unwrap_or_default();
        let (tx, lost) = watch::channel(false);
        let tx = Arc::new(tx);
        // One connection attempt in all: the initial connect uses it, so the
        // first disconnect closes the client instead of reconnecting it.
        let client = self
            .options
            .clone()
            .max_reconnects(1)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected
                        | async_nats::Event::Closed
                        | async_nats::Event::ClientError(_) => {
                            tracing::info!(%event, "uplink connection lost");
                            tx.send_replace(true);
                        }
                        other => tracing::debug!(event = %other, "uplink connection event"),
                    }
                }
            })
            .connect(url.as_str())
            .await?;
        Ok(UplinkConnection { client, lost })
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn a_connector_never_prints_passwords() {
        let urls = " tls://edge:s3cret@a:4222, ,tls://b:4222";
        let connector = UplinkConnector::new(urls, async_nats::ConnectOptions::new());
        assert!(!format!("{connector:?}").contains("s3cret"));
    }
}
