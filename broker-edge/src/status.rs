//! The edge's status for the cloud's site health: every
//! `[status] interval_ms` (5 s by default) a
//! [`plantd_shared::site_status::SiteStatus`] is put under the site's key
//! in KV bucket `plantd_site_status` over the edge's NATS connection —
//! which edge (journal id, version, host, start time), connected MQTT
//! clients, the journal backlog (messages JetStream has not acknowledged,
//! bytes on disk, the age of the oldest one: the uplink lag), when the
//! newest device publication was accepted, and the uplink's state and
//! since when.
//!
//! While the edge cannot reach NATS nothing is put (a status queued during
//! an outage would arrive late and look fresh); the cloud tells "not
//! connected" from the status's age
//! ([`plantd_shared::site_status::connected`]). On a clean stop a last
//! status says [`LinkState::Stopped`], so the cloud shows it at once.
//!
//! [`Seen`] wraps the broker's publish hook to note when the newest
//! publication was accepted: one relaxed atomic store per publication.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use plantd_bridge::{UplinkState, UplinkStatus};
use plantd_journal::Journal;
use plantd_shared::headers::now_ms;
use plantd_shared::site_status::{self, Backlog, EdgeInfo, LinkState, SiteStatus, Uplink};
use plantd_shared::streams::SITE_STATUS_BUCKET;
use plantd_shared::subject::Site;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::hooks::{BeginFuture, ClientInfo, HookFuture, PublishHook};
use crate::message::Publication;
use crate::metrics::Metrics;

/// How long one put may take before the status is given up (the next one
/// comes an interval later).
const PUT_TIMEOUT: Duration = Duration::from_secs(2);

/// When the newest device publication was accepted (ms since the Unix
/// epoch; 0: none yet). Cheap to clone; shared by [`Seen`] and the
/// reporter.
#[derive(Debug, Clone, Default)]
pub struct LastMessage(Arc<AtomicU64>);

impl LastMessage {
    /// The time of the newest publication, if there was one.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    fn note(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }
}

/// A publish hook that notes the time of every publication it sees in a
/// [`LastMessage`], then hands it to `inner` unchanged (both phases, so the
/// journal's group commit is kept).
#[derive(Debug, Clone)]
pub struct Seen<H> {
    /// The hook that does the work (the journal).
    inner: H,
    /// Where the time goes.
    last: LastMessage,
}

impl<H: PublishHook> Seen<H> {
    /// Wraps `inner`, noting publications in `last`.
    pub fn new(inner: H, last: LastMessage) -> Self {
        Self { inner, last }
    }
}

impl<H: PublishHook> PublishHook for Seen<H> {
    fn accept<'a>(
        &'a self,
        client: &'a ClientInfo,
        publication: &'a Publication,
    ) -> HookFuture<'a> {
        self.last.note();
        self.inner.accept(client, publication)
    }

    fn begin<'a>(
        &'a self,
        client: &'a ClientInfo,
        publication: &'a Publication,
    ) -> BeginFuture<'a> {
        self.last.note();
        self.inner.begin(client, publication)
    }
}

/// What the reporter reads its figures from.
#[derive(Clone)]
pub struct Sources {
    /// The site.
    pub site: Site,
    /// Which edge this is.
    pub edge: EdgeInfo,
    /// How often to publish.
    pub interval: Duration,
    /// The journal: backlog, size, the oldest unacknowledged record.
    pub journal: Journal,
    /// The uplink's state.
    pub uplink: watch::Receiver<UplinkStatus>,
    /// The broker's counters (connected clients).
    pub metrics: Arc<Metrics>,
    /// The newest publication's time.
    pub last_message: LastMessage,
}

/// The uplink's state as the contract names it.
fn link_state(s: UplinkState) -> LinkState {
    match s {
        UplinkState::Starting => LinkState::Starting,
        UplinkState::Up => LinkState::Up,
        UplinkState::Down => LinkState::Down,
        UplinkState::Stalled => LinkState::Stalled,
        UplinkState::Refused => LinkState::Refused,
        UplinkState::Stopped => LinkState::Stopped,
    }
}

/// Takes statuses from [`Sources`], remembering when the uplink's state
/// last changed (sampled once an interval).
struct Reporter {
    /// Where the figures come from.
    sources: Sources,
    /// The uplink state seen last and when it was first seen.
    since: Option<(LinkState, u64)>,
}

impl Reporter {
    /// The append time of the oldest record JetStream has not
    /// acknowledged (read from the journal, off the async threads).
    async fn oldest_unacked_ms(&self) -> Option<u64> {
        let journal = self.sources.journal.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader = journal.reader_from_cursor();
            match reader.try_next() {
                Ok(r) => r.map(|r| r.timestamp_ms),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the oldest unacknowledged record");
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The status now; `stopping` says the edge is shutting down.
    async fn take(&mut self, stopping: bool) -> SiteStatus {
        let now = now_ms();
        let uplink = self.sources.uplink.borrow().clone();
        let state = if stopping {
            LinkState::Stopped
        } else {
            link_state(uplink.state)
        };
        let since_ms = match self.since {
            Some((s, since)) if s == state => since,
            _ => {
                self.since = Some((state, now));
                now
            }
        };
        let stats = self.sources.journal.stats();
        let messages = stats.unacked();
        let lag_ms = if messages == 0 {
            0
        } else {
            self.oldest_unacked_ms()
                .await
                .map_or(0, |t| now.saturating_sub(t))
        };
        let elapsed_ms =
            |i: std::time::Instant| u64::try_from(i.elapsed().as_millis()).unwrap_or(u64::MAX);
        SiteStatus {
            site: self.sources.site.as_str().to_owned(),
            edge: self.sources.edge.clone(),
            at_ms: now,
            interval_ms: u64::try_from(self.sources.interval.as_millis()).unwrap_or(u64::MAX),
            clients: self.sources.metrics.connections.load(Ordering::Relaxed),
            last_message_ms: self.sources.last_message.get(),
            backlog: Backlog {
                messages,
                journal_bytes: stats.bytes,
                journal_max_bytes: stats.max_bytes,
                lag_ms,
                blocked: stats.blocked,
            },
            uplink: Uplink {
                state,
                since_ms,
                last_ack_ms: uplink.last_ack.map(|t| now.saturating_sub(elapsed_ms(t))),
                last_error: uplink.last_error,
            },
        }
    }
}

/// Why a status was not put.
#[derive(Debug, thiserror::Error)]
enum PutError {
    /// The edge is not connected to NATS.
    #[error("not connected to NATS")]
    Offline,
    /// The bucket is missing or JetStream did not answer.
    #[error("bucket {SITE_STATUS_BUCKET}: {0}")]
    Bucket(String),
    /// The status could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// JetStream refused or did not acknowledge the put in time.
    #[error("put: {0}")]
    Put(String),
}

/// Puts statuses in the bucket, opening it on first use.
struct Publisher {
    /// The edge's NATS connection.
    client: async_nats::Client,
    /// The bucket, once found.
    bucket: Option<kv::Store>,
    /// The site's key in it.
    key: String,
}

impl Publisher {
    async fn put(&mut self, status: &SiteStatus) -> Result<(), PutError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(PutError::Offline);
        }
        let bucket = match &self.bucket {
            Some(b) => b.clone(),
            None => {
                let js = jetstream::new(self.client.clone());
                let b = tokio::time::timeout(PUT_TIMEOUT, js.get_key_value(SITE_STATUS_BUCKET))
                    .await
                    .map_err(|_| PutError::Bucket("no answer".into()))?
                    .map_err(|e| PutError::Bucket(e.to_string()))?;
                self.bucket = Some(b.clone());
                b
            }
        };
        let value = serde_json::to_vec(status)?;
        tokio::time::timeout(PUT_TIMEOUT, bucket.put(self.key.as_str(), value.into()))
            .await
            .map_err(|_| PutError::Put("not acknowledged in time".into()))?
            .map_err(|e| PutError::Put(e.to_string()))?;
        Ok(())
    }
}

/// Publishes the status every interval until `stop`, then once more as
/// stopped. The task's owner awaits it at shutdown.
pub fn spawn(
    sources: Sources,
    client: async_nats::Client,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(sources.interval.max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reporter = Reporter {
            sources,
            since: None,
        };
        let mut publisher = Publisher {
            client,
            bucket: None,
            key: site_status::key(&reporter.sources.site).to_owned(),
        };
        // Say a failure once per kind of failure, not every interval.
        let mut failing: Option<String> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let status = reporter.take(false).await;
            match publisher.put(&status).await {
                Ok(()) => {
                    if failing.take().is_some() {
                        tracing::info!("site status published again");
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    if failing.as_deref() != Some(why.as_str()) {
                        tracing::info!(error = %why, "site status not published");
                        failing = Some(why);
                    }
                }
            }
        }
        let last = reporter.take(true).await;
        if let Err(e) = publisher.put(&last).await {
            tracing::debug!(error = %e, "last site status not published");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_uplink_state_has_its_name_in_the_contract() {
        for s in [
            UplinkState::Starting,
            UplinkState::Up,
            UplinkState::Down,
            UplinkState::Stalled,
            UplinkState::Refused,
            UplinkState::Stopped,
        ] {
            let json = serde_json::to_value(link_state(s)).expect("json");
            assert_eq!(json, s.as_str());
        }
    }

    fn uplink(state: UplinkState) -> UplinkStatus {
        UplinkStatus {
            state,
            acked_seq: 0,
            in_flight: 0,
            last_ack: None,
            published: 0,
            acked: 0,
            resends: 0,
            already_stored: 0,
            duplicates: 0,
            failures: 0,
            undeliverable: 0,
            reordered: 0,
            last_error: Some("no responders".into()),
        }
    }

    #[tokio::test]
    async fn the_backlog_and_its_lag_come_from_the_journal_and_the_state_keeps_its_since() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (journal, _) =
            Journal::open(dir.path(), plantd_journal::Options::default()).expect("journal");
        let (tx, rx) = watch::channel(uplink(UplinkState::Down));
        let metrics = Arc::new(Metrics::default());
        metrics.connections.store(4, Ordering::Relaxed);
        let last = LastMessage::default();
        let mut reporter = Reporter {
            sources: Sources {
                site: Site::new("plant-1").expect("site"),
                edge: EdgeInfo {
                    id: "j".into(),
                    version: "v".into(),
                    holder: "h".into(),
                    started_ms: 1,
                },
                interval: Duration::from_millis(100),
                journal: journal.clone(),
                uplink: rx,
                metrics,
                last_message: last.clone(),
            },
            since: None,
        };
        let empty = reporter.take(false).await;
        assert_eq!(empty.backlog.messages, 0);
        assert_eq!(empty.backlog.lag_ms, 0);
        assert_eq!(empty.last_message_ms, None);
        assert_eq!(empty.clients, 4);
        assert_eq!(empty.uplink.state, LinkState::Down);
        assert_eq!(empty.uplink.last_error.as_deref(), Some("no responders"));

        for i in 0..3u8 {
            journal
                .append(bytes::Bytes::from(vec![i]))
                .await
                .expect("append");
        }
        last.note();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let behind = reporter.take(false).await;
        assert_eq!(behind.backlog.messages, 3);
        assert!(behind.backlog.lag_ms >= 30, "{behind:?}");
        assert!(behind.backlog.journal_bytes > 0);
        assert!(behind.last_message_ms.is_some());
        assert_eq!(
            behind.uplink.since_ms, empty.uplink.since_ms,
            "still down since then"
        );

        journal.ack(3);
        tx.send_modify(|s| s.state = UplinkState::Up);
        let caught_up = reporter.take(false).await;
        assert_eq!(caught_up.backlog.messages, 0);
        assert_eq!(caught_up.backlog.lag_ms, 0);
        assert_eq!(caught_up.uplink.state, LinkState::Up);
        assert!(caught_up.uplink.since_ms >= behind.at_ms);
        let stopping = reporter.take(true).await;
        assert_eq!(stopping.uplink.state, LinkState::Stopped);
        drop(reporter);
        journal.close().await.expect("close");
    }

    #[test]
    fn last_message_is_unset_until_noted() {
        let last = LastMessage::default();
        assert_eq!(last.get(), None);
        last.note();
        assert!(last.get().is_some_and(|t| t > 1_600_000_000_000));
    }
}
