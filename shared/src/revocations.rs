//! Watching `plantd_revoked`: the one loop every part that holds live
//! sessions uses to hear of a revoked token id within moments — the edge's
//! trust store (which mirrors the whole list to disk for offline sites) and
//! the proxy's WebSockets (which close the sockets of a revoked token).
//!
//! A revocation is a `Put` of the token id (`jti`) as the key, its expiry
//! (seconds since the epoch, as text) as the value. Deletes and purges are
//! the bucket's housekeeping after expiry and are not reported.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, kv::Operation};
use futures::StreamExt as _;

use crate::streams::REVOKED_BUCKET;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every revocation the bucket holds, then new ones: for a mirror that
    /// keeps the whole list. Replayed again after a re-watch.
    Beginning,
    /// Only revocations made after the watch is established: for callers
    /// that look older ones up in the bucket themselves.
    Now,
}

/// What [`watch`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The watch is established — the first time, or again after an error.
    /// With [`Start::Now`], revocations made before this (or while the
    /// watch was down) were not reported: re-check what matters.
    Watching,
    /// Token id `jti` was revoked.
    Revoked {
        /// The token id.
        jti: &'a str,
        /// Its expiry in seconds since the epoch (0 when unknown).
        exp: u64,
    },
}

/// Reports revocations in `plantd_revoked` to `on` until `shutdown`
/// resolves. Errors (no bucket yet, NATS down) are logged and the watch is
/// established again a second later, with [`Event::Watching`] each time it
/// is. `on` runs on the watching task: keep it short and non-blocking.
pub async fn watch(
    js: jetstream::Context,
    start: Start,
    mut on: impl FnMut(Event<'_>),
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let watched = async {
            let kv = js
                .get_key_value(REVOKED_BUCKET)
                .await
                .map_err(|e| e.to_string())?;
            let mut entries = match start {
                Start::Beginning => kv.watch_all_from_revision(1).await,
                Start::Now => kv.watch_all().await,
            }
            .map_err(|e| e.to_string())?;
            on(Event::Watching);
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(|e| e.to_string())?;
                if entry.operation == Operation::Put {
                    let exp = std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    on(Event::Revoked {
                        jti: &entry.key,
                        exp,
                    });
                }
            }
            Ok::<(), String>(())
        };
        tokio::select! {
            () = &mut shutdown => break,
            r = watched => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "watching revocations interrupted; retrying");
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
