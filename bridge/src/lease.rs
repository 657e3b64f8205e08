//! Holding the site lease ([`plantd_shared::lease`]): one live journal per
//! site.
//!
//! [`SiteLease`] works over the edge's long-lived NATS connection (the one
//! that reconnects by itself): [`SiteLease::confirm`] reads the lease and
//! creates, renews or takes it over according to
//! [`plantd_shared::lease::decide`], asking the current holder whether it is
//! live on its liveness subject; [`SiteLease::run`] answers that subject for
//! this journal and renews every [`lease::RENEW_EVERY`]. The uplink calls
//! `confirm` before the first publish of every connection and stops
//! publishing when [`SiteLease::state`] turns [`LeaseState::Refused`].

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt as _;
use plantd_shared::headers::now_ms;
use plantd_shared::lease::{self, Decision, LeaseLife, LeaseRecord, Liveness};
use plantd_shared::streams::EDGE_LEASES_BUCKET;
use plantd_shared::subject::Site;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Mutex, watch};

/// Whether this edge may publish its site's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Not known yet (NATS not reached since start).
    Unknown,
    /// This journal holds the site's lease.
    Held,
    /// Another live journal holds it; the text says which and what to do.
    Refused(String),
}

/// Why the lease could not be checked (NATS trouble, not a refusal).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease bucket does not exist.
    #[error(
        "no KV bucket {EDGE_LEASES_BUCKET} for site leases (create it with --create-streams \
         or `plantd streams`): {0}"
    )]
    NoBucket(String),
    /// A request to NATS failed.
    #[error("site lease: {0}")]
    Nats(String),
}

/// The site lease of one journal. See the module documentation.
#[derive(Debug)]
pub struct SiteLease {
    /// The edge's own (reconnecting) connection.
    client: async_nats::Client,
    /// The site.
    site: Site,
    /// This journal's current id.
    journal: String,
    /// Who we are, for the holder field (host, pid, data directory).
    holder: String,
    /// When this journal took the lease (kept across renewals).
    since_ms: std::sync::atomic::AtomicU64,
    /// This journal's lives, oldest first (written into the record).
    lives: Vec<LeaseLife>,
    /// The lives of the journal we took the site over from, when it shares
    /// a life with ours (we are its restored backup or copy): the uplink
    /// needs them once, to know which of our records it went on to store.
    predecessor: std::sync::Mutex<Vec<LeaseLife>>,
    /// The bucket, once opened.
    bucket: Mutex<Option<kv::Store>>,
    /// The latest verdict.
    state: watch::Sender<LeaseState>,
}

impl SiteLease {
    /// The lease of journal `journal` (whose lives are `lives`, oldest
    /// first, the current one last) on `site`, over `client`.
    pub fn new(
        client: async_nats::Client,
        site: Site,
        journal: String,
        holder: String,
        lives: Vec<LeaseLife>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            site,
            journal,
            holder,
            since_ms: std::sync::atomic::AtomicU64::new(0),
            lives,
            predecessor: std::sync::Mutex::new(Vec::new()),
            bucket: Mutex::new(None),
            state: watch::channel(LeaseState::Unknown).0,
        })
    }

    /// Follows the verdict.
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// This journal's id (the one in the lease when held).
    pub fn journal(&self) -> &str {
        &self.journal
    }

    /// The lives of the journal this one took the site over from, when
    /// they share a life with ours (see [`LeaseRecord::predecessor_lives`]);
    /// empty otherwise.
    pub fn predecessor_lives(&self) -> Vec<LeaseLife> {
        self.predecessor
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// The uplink has resumed with [`predecessor_lives`](Self::predecessor_lives):
    /// they are dropped from the record at the next renewal.
    pub fn resumed(&self) {
        if let Ok(mut p) = self.predecessor.lock() {
            p.clear();
        }
    }

    /// Whether `lives` has a life of this journal.
    fn shares(&self, lives: &[LeaseLife]) -> bool {
        lives
            .iter()
            .any(|l| self.lives.iter().any(|mine| mine.id == l.id))
    }

    async fn store(&self) -> Result<kv::Store, LeaseError> {
        let mut bucket = self.bucket.lock().await;
        if let Some(b) = bucket.as_ref() {
            return Ok(b.clone());
        }
        let js = async_nats::jetstream::new(self.client.clone());
        let store = js
            .get_key_value(EDGE_LEASES_BUCKET)
            .await
            .map_err(|e| LeaseError::NoBucket(e.to_string()))?;
        *bucket = Some(store.clone());
        Ok(store)
    }

    /// Asks the holder of `journal`'s lease whether it is live.
    async fn ping(&self, journal: &str) -> Liveness {
        let subject = lease::liveness_subject(&self.site, journal);
        let request = async_nats::Request::new()
            .payload(Bytes::new())
            .timeout(Some(lease::PING_TIMEOUT));
        match self.client.send_request(subject, request).await {
            Ok(_) => Liveness::Live,
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Liveness::Gone,
            Err(e) => {
                tracing::warn!(error = %e, journal, "site lease: the holder did not answer clearly");
                Liveness::Unknown
            }
        }
    }

    fn record(&self) -> Bytes {
        let now = now_ms();
        let since = match self.since_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => now,
            s => s,
        };
        let rec = LeaseRecord {
            journal: self.journal.clone(),
            holder: self.holder.clone(),
            since_ms: since,
            renewed_ms: now,
            lives: self.lives.clone(),
            predecessor_lives: self.predecessor_lives(),
        };
        Bytes::from(serde_json::to_vec(&rec).unwrap_or_default())
    }

    /// Reads the site's lease and creates, renews or takes it over — or
    /// is refused — according to [`lease::decide`]; publishes and returns
    /// the verdict.
    ///
    /// # Errors
    /// [`LeaseError`] when NATS or the bucket cannot be reached (the
    /// verdict is unchanged then).
    pub async fn confirm(&self) -> Result<LeaseState, LeaseError> {
        let store = self.store().await?;
        let key = lease::key(&self.site);
        // A concurrent writer makes a compare-and-set fail: read again.
        for _ in 0..3 {
            let entry = store
                .entry(key)
                .await
                .map_err(|e| LeaseError::Nats(e.to_string()))?;
            let (current, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    Some(
                        serde_json::from_slice::<LeaseRecord>(&e.value).unwrap_or_else(|_| {
                            LeaseRecord {
                                journal: "(unreadable lease)".into(),
                                holder: "unknown".into(),
                                since_ms: 0,
                                renewed_ms: 0,
                                lives: Vec::new(),
                                predecessor_lives: Vec::new(),
                            }
                        }),
                    ),
                    Some(e.revision),
                ),
                Some(e) => (None, Some(e.revision)),
                None => (None, None),
            };
            let liveness = match &current {
                Some(c) if c.journal != self.journal => self.ping(&c.journal).await,
                _ => Liveness::Unknown,
            };
            let decision = lease::decide(
                &self.site,
                &self.journal,
                current.as_ref(),
                liveness,
                now_ms(),
            );
            if let (Decision::TakeOver, Some(prev)) = (&decision, &current) {
                // Our own earlier run (its journal id is one of our lives)
                // may still carry its predecessor's lives, if it stopped
                // before its uplink resumed: keep those. Another journal
                // that shares a life with ours is the one we are a backup
                // or copy of: its lives tell what it went on to store.
                let own_earlier_run = self.lives.iter().any(|l| l.id == prev.journal);
                let lineage = if own_earlier_run {
                    prev.predecessor_lives.clone()
                } else if self.shares(&prev.lives) {
                    prev.lives.clone()
                } else {
                    Vec::new()
                };
                if let Ok(mut p) = self.predecessor.lock() {
                    *p = lineage;
                }
            }
            let written = match &decision {
                Decision::Refuse(why) => {
                    let state = LeaseState::Refused(why.clone());
                    self.publish(state.clone());
                    return Ok(state);
                }
                Decision::Create if revision.is_none() => store
                    .create(key, self.record())
                    .await
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
                Decision::Create | Decision::Renew | Decision::TakeOver => store
                    .update(key, self.record(), revision.unwrap_or(0))
                    .await
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
            };
            match written {
                Ok(_) => {
                    if decision != Decision::Renew {
                        self.since_ms
                            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                    }
                    if let (Decision::TakeOver, Some(prev)) = (&decision, &current) {
                        tracing::warn!(
                            site = %self.site,
                            previous_journal = %prev.journal,
                            previous_holder = %prev.holder,
                            journal = %self.journal,
                            "took over the site lease: its previous holder does not answer"
                        );
                    }
                    self.publish(LeaseState::Held);
                    return Ok(LeaseState::Held);
                }
                Err(true) => continue,
                Err(false) => {
                    return Err(LeaseError::Nats(format!(
                        "cannot write the lease of site {}",
                        self.site
                    )));
                }
            }
        }
        Err(LeaseError::Nats(format!(
            "the lease of site {} keeps changing under us",
            self.site
        )))
    }

    fn publish(&self, state: LeaseState) {
        self.state.send_if_modified(|s| {
            if *s == state {
                return false;
            }
            match &state {
                LeaseState::Held => {
                    tracing::info!(site = %self.site, journal = %self.journal, "holding the site lease");
                }
                LeaseState::Refused(why) => {
                    tracing::error!(site = %self.site, journal = %self.journal, reason = %why, "site lease refused: not publishing");
                }
                LeaseState::Unknown => {}
            }
            *s = state;
            true
        });
    }

    /// Subscribes to this journal's liveness subject. Do it before the
    /// first [`confirm`](Self::confirm), so that no challenger can find the
    /// new holder silent; then hand the subscription to [`run`](Self::run).
    ///
    /// # Errors
    /// [`LeaseError::Nats`] when the subscription cannot be made.
    pub async fn listen(&self) -> Result<async_nats::Subscriber, LeaseError> {
        self.client
            .subscribe(lease::liveness_subject(&self.site, &self.journal))
            .await
            .map_err(|e| LeaseError::Nats(e.to_string()))
    }

    /// Answers liveness requests arriving on `pings` (from
    /// [`listen`](Self::listen)) and renews the lease every
    /// [`lease::RENEW_EVERY`] (retrying a refused one, which succeeds once
    /// the other holder is gone) until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        mut pings: async_nats::Subscriber,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut renew = tokio::time::interval(lease::RENEW_EVERY);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(ping) = pings.next() => {
                    if let Some(reply) = ping.reply {
                        let _ = self.client.publish(reply, self.record()).await;
                    }
                }
                _ = renew.tick() => {
                    tokio::select! {
                        _ = &mut shutdown => break,
                        r = self.confirm() => if let Err(e) = r {
                            tracing::warn!(error = %e, "site lease: cannot renew now");
                        },
                    }
                }
            }
        }
        // Make sure the server has seen the unsubscription, so a successor
        // asking right after finds nobody answering — but never hold up a
        // shutdown while NATS is out of reach.
        let _ = tokio::time::timeout(lease::PING_TIMEOUT, async {
            let _ = pings.unsubscribe().await;
            let _ = self.client.flush().await;
        })
        .await;
    }
}
