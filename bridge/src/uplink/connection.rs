//! The uplink's own NATS connections: one per attempt, never reconnecting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The servers of `urls`: one URL, or several separated by commas (a
/// cluster's nodes), trimmed, empty entries dropped. What every NATS
/// connection of the edge connects to (`async_nats` takes the list and
/// fails over between its entries; one string with commas is no URL).
pub fn server_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `options` with the user and password of the first of `urls` that
/// carries them (`tls://user:password@host:4222`, letters and digits or
/// percent-encoded as in any URL). async-nats does not read credentials
/// from a URL, so they are lifted into the options; without any, `options`
/// as they were.
pub fn url_credentials(
    options: async_nats::ConnectOptions,
    urls: &str,
) -> async_nats::ConnectOptions {
    for url in server_urls(urls) {
        let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
            continue;
        };
        if let (Some(user), Some(password)) = (addr.username(), addr.password()) {
            return options.user_and_password(user.to_owned(), password.to_owned());
        }
    }
    options
}

/// `urls` with every password replaced by `***`, for logs and errors.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let user = u[scheme + 3..at].split(':').next().unwrap_or_default();
                format!("{}{user}:***{}", &u[..scheme + 3], &u[at..])
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
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
    fn a_list_of_urls_is_split_and_its_passwords_never_printed() {
        let urls = " tls://edge:s3cret@a:4222, ,tls://b:4222";
        assert_eq!(
            server_urls(urls),
            ["tls://edge:s3cret@a:4222", "tls://b:4222"]
        );
        assert_eq!(
            redacted("tls://edge:s3cret@a:4222,tls://b:4222"),
            "tls://edge:***@a:4222,tls://b:4222"
        );
        let connector = UplinkConnector::new(urls, async_nats::ConnectOptions::new());
        assert!(!format!("{connector:?}").contains("s3cret"));
    }
}
