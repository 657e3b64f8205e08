//! [`Analytics`]: the trigger handler — a batch of `PLANTD_TELEMETRY`
//! items through the rules of each item's site, the results published,
//! then the checkpoints written; and the idle clock that closes windows
//! of a site that has gone quiet.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use plantd_analytics::{Event, Output, Rule};
use plantd_shared::headers;
use plantd_shared::sites::SiteCache;
use plantd_shared::subject::{Channel, Site, subject_to_topic};
use plantd_trigger::{BatchOutcome, Handler, Item};

use crate::error::Error;
use crate::metrics::Metrics;
use crate::order::StreamOrder;
use crate::publish::{self, FastIngest, publish};
use crate::rules::RuleBook;
use crate::site_rule::SiteRule;

/// The analytics function (cheap to clone).
#[derive(Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics").finish_non_exhaustive()
    }
}

struct Inner {
    /// Results, checkpoints.
    js: jetstream::Context,
    /// The checkpoint bucket (fencing reads).
    state: jetstream::kv::Store,
    /// The rules.
    book: Arc<RuleBook>,
    /// Site → organisation.
    sites: SiteCache,
    /// Site → its rules' runs. One lock: batches are sequential, the idle
    /// clock waits for the batch in hand.
    runs: tokio::sync::Mutex<HashMap<String, Vec<SiteRule>>>,
    /// Counters.
    metrics: Metrics,
    /// Whether results still go out as fast-ingest batches.
    fast: FastIngest,
    /// Stream order across crashes.
    order: tokio::sync::Mutex<StreamOrder>,
    /// The previous batch's emptied readings buffer.
    readings: std::sync::Mutex<Vec<Reading<'static>>>,
}

/// One item of a batch, decoded.
struct Reading<'a> {
    site: Site,
    topic: String,
    item: &'a Item,
    received_at: i64,
}

/// `readings` emptied, as a buffer for readings of another lifetime: the
/// allocation is kept (collected in place), so a batch does not take
/// fresh memory for its readings (docs/performance.md, "Analytics end to
/// end").
fn recycle<'b>(mut readings: Vec<Reading<'_>>) -> Vec<Reading<'b>> {
    readings.clear();
    readings
        .into_iter()
        .map(|_| unreachable!("emptied"))
        .collect()
}

impl Analytics {
    /// The function over `js`, with `state` the checkpoint bucket, `book`
    /// for the rules, `sites` for site → organisation, fed by durable
    /// consumer `durable` on `PLANTD_TELEMETRY`.
    pub fn new(
        js: jetstream::Context,
        state: jetstream::kv::Store,
        book: Arc<RuleBook>,
        sites: SiteCache,
        durable: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                js,
                state,
                book,
                sites,
                runs: tokio::sync::Mutex::new(HashMap::new()),
                metrics: Metrics::default(),
                fast: FastIngest::default(),
                order: tokio::sync::Mutex::new(StreamOrder::new(durable)),
                readings: std::sync::Mutex::new(Vec::new()),
            }),
        }
    }

    /// Its counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Applies a batch. On any error the runs of the batch's sites are
    /// dropped (restored from their checkpoints when the items come back)
    /// and the error is returned.
    async fn apply(&self, items: &[&Item]) -> Result<(), Error> {
        let inner = &self.inner;
        let kept = std::mem::take(
            &mut *inner
                .readings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut readings: Vec<Reading<'_>> = recycle(kept);
        readings.reserve(items.len());
        for &item in items {
            let Ok(parsed) = subject_to_topic(&item.subject) else {
                continue;
            };
            if parsed.channel != Channel::Up {
                continue;
            }
            readings.push(Reading {
                site: parsed.site,
                topic: parsed.topic.into_string(),
                item,
                received_at: received_at(item),
            });
        }
        // Site by site, each in stream order (a stable sort, only when the
        // batch holds more than one site).
        if readings.windows(2).any(|w| w[0].site != w[1].site) {
            readings.sort_by(|a, b| a.site.cmp(&b.site));
        }
        let result = self.apply_sites(&readings).await;
        *inner
            .readings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = recycle(readings);
        result
    }

    /// [`Analytics::apply`] for readings grouped by site.
    async fn apply_sites(&self, readings: &[Reading<'_>]) -> Result<(), Error> {
        let mut runs = self.inner.runs.lock().await;
        for group in readings.chunk_by(|a, b| a.site == b.site) {
            let site = &group[0].site;
            let result = self.apply_site(&mut runs, site, group).await;
            if let Err(e) = result {
                runs.remove(site.as_str());
                return Err(e);
            }
        }
        Ok(())
    }

    async fn apply_site(
        &self,
        runs: &mut HashMap<String, Vec<SiteRule>>,
        site: &Site,
        readings: &[Reading<'_>],
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let wanted = self.rules_of(site).await?;
        let site_runs = runs.entry(site.as_str().to_owned()).or_default();
        let (mut outputs, redo) = self.sync(site, site_runs, wanted).await?;
        if site_runs.is_empty() {
            return Ok(());
        }
        // The fencing reads (checked below) go out before the engine runs:
        // on a connection the trigger shares, their replies wait behind
        // the previous batch's acknowledgements (docs/performance.md).
        let fences: Vec<_> = site_runs
            .iter()
            .map(|run| run.start_fence(&inner.state))
            .collect();
        let processed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            for r in readings {
                let event = Event {
                    topic: &r.topic,
                    payload: &r.item.payload,
                    received_at: r.received_at,
                    stream_seq: r.item.sequence,
                };
                for run in site_runs.iter_mut() {
                    run.engine.process_into(&event, &mut outputs);
                }
            }
        }));
        if processed.is_err() {
            return Err(Error::nats("run the rules", "the engine panicked"));
        }
        // Another host may have committed since this state was restored:
        // publish nothing computed from a stale state. The results and the
        // segments are encoded while the fencing reads are on the way.
        let encoded = publish::encode(site, &outputs)?;
        let mut prepared = Vec::with_capacity(site_runs.len());
        for run in site_runs.iter() {
            let force = redo.iter().any(|n| n == run.name());
            prepared.push(run.prepare(force)?);
        }
        for (run, fence) in site_runs.iter().zip(fences) {
            if run.changed() {
                fence.check().await?;
            }
        }
        // The results and the commit's segment (uncommitted until its
        // commit record) at once; the commit records only once every
        // result is stored (decision 0029).
        let staging = futures::future::try_join_all(site_runs.iter_mut().zip(prepared).map(
            |(run, prepared)| async move {
                match prepared {
                    Some(p) => run.stage(&inner.js, p).await.map(Some),
                    None => Ok(None),
                }
            },
        ));
        // Items delivered for the first time, and no idle advance to
        // publish again: no result is expected to be stored already, so a
        // fast-ingest batch (which does not count duplicates) will do.
        let first_time = redo.is_empty()
            && readings
                .iter()
                .all(|r| r.item.delivered == 1 && r.item.replay.is_none());
        let fast = first_time.then_some((&inner.fast, &inner.metrics));
        let (published, staged) =
            futures::future::try_join(publish::send(&inner.js, encoded, fast), staging).await?;
        let now = Instant::now();
        for (run, staged) in site_runs.iter_mut().zip(staged) {
            let Some(staged) = staged else {
                self.record(site, run, 0, &outputs, published.duplicates);
                continue;
            };
            let before = run.committed_metrics();
            let writes = run.finish(&inner.js, staged).await?;
            if run.committed_metrics().applied != before.applied {
                run.last_active = now;
            }
            self.record(site, run, writes, &outputs, published.duplicates);
        }
        Ok(())
    }

    /// Makes `site_runs` the runs of `wanted`: restores new rules, drops
    /// changed or removed ones (a rule that is gone has its checkpoints
    /// removed). Returns the results of intended idle advances to publish
    /// again, and the names of the runs that must commit.
    async fn sync(
        &self,
        site: &Site,
        site_runs: &mut Vec<SiteRule>,
        wanted: Vec<Rule>,
    ) -> Result<(Vec<Output>, Vec<String>), Error> {
        let inner = &self.inner;
        let org = self.org_of(site).await?;
        let mut kept = Vec::with_capacity(wanted.len());
        for run in site_runs.drain(..) {
            if wanted.contains(&run.rule) {
                kept.push(run);
            } else {
                tracing::info!(site = %site, rule = %run.name(), "analytics: rule changed, paused or removed; its run stops");
                if org
                    .as_deref()
                    .is_some_and(|o| !inner.book.exists(o, run.name()))
                {
                    crate::store::purge(
                        &inner.js,
                        &crate::store::prefix(site.as_str(), run.name()),
                    )
                    .await?;
                }
                inner.metrics.forget(site.as_str(), run.name());
            }
        }
        let mut outputs = Vec::new();
        let mut redo = Vec::new();
        for rule in wanted {
            if kept.iter().any(|r| r.rule == rule) {
                continue;
            }
            let (run, again) = SiteRule::restore(&inner.js, site.as_str(), rule).await?;
            tracing::info!(site = %site, rule = %run.name(), generation = run.generation(), "analytics: rule running");
            if let Some(again) = again {
                redo.push(run.name().to_owned());
                outputs.extend(again);
            }
            kept.push(run);
        }
        *site_runs = kept;
        Ok((outputs, redo))
    }

    /// The organisation of `site` (`None`: not registered).
    async fn org_of(&self, site: &Site) -> Result<Option<String>, Error> {
        Ok(self
            .inner
            .sites
            .get(site.as_str())
            .await
            .map_err(|e| Error::nats("read the site registry", e))?
            .map(|r| r.org))
    }

    /// The rules the cloud runs on `site`.
    async fn rules_of(&self, site: &Site) -> Result<Vec<Rule>, Error> {
        Ok(match self.org_of(site).await? {
            Some(org) => self.inner.book.for_site(&org, site.as_str()),
            None => Vec::new(),
        })
    }

    fn record(
        &self,
        site: &Site,
        run: &SiteRule,
        writes: usize,
        outputs: &[Output],
        duplicates: u64,
    ) {
        let mine = outputs.iter().filter(|o| o.rule == run.rule.name).count() as u64;
        let keys = run.engine.keys(run.name()) as u64;
        let engine = run.committed_metrics();
        let generation = run.generation();
        let max_event = run.max_event.unwrap_or(0);
        self.inner.metrics.update(site.as_str(), run.name(), |f| {
            f.engine = engine;
            f.keys = keys;
            f.generation = generation;
            f.max_event = max_event;
            f.stored += mine;
            f.republished += duplicates.min(mine);
            f.checkpoint_writes += writes as u64;
        });
    }

    /// One tick of the idle clock: every run with no reading for
    /// `idle_after` (and not advanced for as long) moves its event time on
    /// by the wall time since its last reading, so windows close and
    /// absence timers fire without new data. The target is written to the
    /// commit record before the results are published (decision 0029).
    pub async fn idle_tick(&self, idle_after: Duration) {
        let inner = &self.inner;
        let mut runs = inner.runs.lock().await;
        let mut failed = Vec::new();
        for (site, site_runs) in runs.iter_mut() {
            let Ok(site_id) = Site::new(site.clone()) else {
                continue;
            };
            for run in site_runs.iter_mut() {
                let idle = run.last_active.elapsed();
                let Some(m) = run.max_event else { continue };
                if idle < idle_after || run.last_advance.is_some_and(|a| a.elapsed() < idle_after) {
                    continue;
                }
                let to = m.saturating_add(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
                let done = async {
                    run.fence(&inner.state).await?;
                    run.intend_advance(&inner.js, to).await?;
                    let outputs = run.engine.advance(to);
                    let published = publish(&inner.js, &site_id, &outputs).await?;
                    let writes = run.commit(&inner.js, true).await?;
                    Ok::<_, Error>((outputs, published, writes))
                }
                .await;
                match done {
                    Ok((outputs, published, writes)) => {
                        run.last_advance = Some(Instant::now());
                        inner.metrics.idle_advances.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(site, rule = %run.name(), to, results = outputs.len(), "analytics: idle advance");
                        self.record(&site_id, run, writes, &outputs, published.duplicates);
                    }
                    Err(e) => {
                        tracing::warn!(site, rule = %run.name(), error = %e, "analytics: idle advance failed; the site is restored from its checkpoint");
                        failed.push(site.clone());
                    }
                }
            }
        }
        for site in failed {
            runs.remove(&site);
        }
    }
}

/// The reading's receive time: the edge's `Plantd-Received` header, or
/// when JetStream stored it.
fn received_at(item: &Item) -> i64 {
    item.headers
        .get(headers::RECEIVED)
        .and_then(|v| headers::parse_time(v.as_str()))
        .and_then(|ms| i64::try_from(ms).ok())
        .unwrap_or_else(|| (item.published.unix_timestamp_nanos() / 1_000_000) as i64)
}

impl Handler for Analytics {
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let inner = &self.inner;
        inner
            .metrics
            .items
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut sorted: Vec<usize> = (0..batch.len()).collect();
        sorted.sort_by_key(|&i| batch[i].sequence);
        let seqs: Vec<u64> = sorted.iter().map(|&i| batch[i].sequence).collect();
        let mut order = inner.order.lock().await;
        let admitted = match order.admit(&inner.js, &seqs).await {
            Ok(a) => a,
            Err(e) => return self.failed(batch.len(), &e.to_string()),
        };
        if admitted.stale {
            tracing::info!(
                "analytics: another host has been working; state is read again from the checkpoints"
            );
            inner.runs.lock().await.clear();
        }
        let items: Vec<&Item> = sorted[..admitted.count]
            .iter()
            .map(|&i| &batch[i])
            .collect();
        if let Err(e) = self.apply(&items).await {
            order.reset();
            return self.failed(batch.len(), &e.to_string());
        }
        order.advance(admitted.next);
        let mut outcome = BatchOutcome::success();
        if let Some(waiting) = admitted.waiting_for {
            let error = format!(
                "waiting for stream sequence {waiting} (a crashed host's item, redelivered after ack_wait)"
            );
            tracing::debug!(
                waiting,
                refused = sorted.len() - admitted.count,
                "analytics: items beyond a gap come back later"
            );
            for &i in &sorted[admitted.count..] {
                outcome.record_failure(i, error.clone());
            }
        }
        outcome
    }
}

impl Analytics {
    fn failed(&self, len: usize, error: &str) -> BatchOutcome {
        self.inner
            .metrics
            .failed_batches
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            items = len,
            error,
            "analytics: batch failed; it comes back and is applied from the last checkpoint"
        );
        BatchOutcome::all_failed(len, error)
    }
}
