//! `plantd-analytics-function`: the analytics rules placed in the cloud,
//! run on `PLANTD_TELEMETRY` as it arrives — results to
//! `PLANTD_AGGREGATES`, exactly once across crashes, redeliveries and
//! restarts (docs/decisions/0029-analytics-exactly-once.md). Fed by the
//! trigger (`analytics_PLANTD_TELEMETRY`); `plantd up` and `plantd
//! functions` run it. Rules come from `plantd_analytics_rules`
//! ([`plantd_analytics::StoredRule`], those with
//! `runs_in_cloud_for(site)` for sites of the rule's organisation); the
//! engine is [`plantd_analytics::Engine`], one per (site, rule).
//!
//! | module | what it holds |
//! |---|---|
//! | [`function`] | [`Analytics`]: the trigger handler (apply, publish, checkpoint) and the idle clock |
//! | [`rules`] | [`RuleBook`]: the rules, kept current by a KV watch |
//! | `order` | items admitted in stream order from the consumer's acknowledgement floor (a crashed host's batch comes back before anything newer is applied) |
//! | `site_rule` | one rule on one site: its engine, restore from and commit to its checkpoint |
//! | `store` | the checkpoint records in `plantd_analytics_state` (commit record, one segment of key checkpoints per commit) and conditional writes |
//! | [`results`] | reading results back from `PLANTD_AGGREGATES` (checks that each is stored once) |
//! | [`publish`] | results to `PLANTD_AGGREGATES` with `Nats-Msg-Id` [`publish::message_id`] |
//! | [`fast_ingest`] | a batch of results as one fast-ingest batch (one flow acknowledgement per 500, not one per result) |
//! | [`metrics`] | counters per (site, rule), Prometheus text |
//! | [`error`] | [`Error`] |
//!
//! ## Contract
//! - A batch is applied in stream order; its results are published and
//!   acknowledged by JetStream **before** its checkpoint is committed (the
//!   commit's segment of key checkpoints is written meanwhile, uncommitted
//!   until the commit record names its generation), and the trigger
//!   acknowledges the items only after both.
//! - Items reach the engine in stream order, also after a crash: an item
//!   beyond a gap in the sequence (a killed host's batch not yet handed out
//!   again) fails and comes back shortly, until the gap is filled.
//! - Any failure fails the whole batch: the sites' state is dropped and
//!   restored from the last checkpoint when the items come back.
//!
//! Only the in-process path exists: the AWS (Lambda) path of the analytics
//! function is not built yet (docs/decisions/0029-analytics-exactly-once.md).

pub mod error;
pub mod fast_ingest;
pub mod function;
pub mod metrics;
mod order;
pub mod publish;
pub mod results;
pub mod rules;
mod site_rule;
mod store;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use plantd_shared::sites::{SiteCache, Sites};
use plantd_shared::streams;
use plantd_trigger::{AckMode, ConsumerSettings, Trigger, TriggerError};
use thiserror::Error as ThisError;

pub use error::Error;
pub use function::Analytics;
pub use rules::RuleBook;

/// The function's name (durable consumer `analytics_PLANTD_TELEMETRY`).
pub const FUNCTION: &str = "analytics";

/// Most items per batch: one checkpoint commit per (site, rule) per
/// batch, writing each key a reading changed once — so a backlog is worked
/// off in large batches (a key read many times in a batch is written
/// once), while a live stream's batches stay small (the trigger hands a
/// batch over after `max_wait` however few items it holds).
pub const BATCH_SIZE: usize = 10_000;

/// How the function runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// A (site, rule) with no reading for this long has its event time
    /// moved on by the wall time since its last reading (windows close,
    /// absence fires); `None` never (event time moves with readings only —
    /// results then depend on the readings alone).
    pub idle_close: Option<Duration>,
    /// How often the idle clock looks.
    pub tick: Duration,
    /// How long a site's organisation is cached.
    pub site_cache: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            idle_close: Some(Duration::from_secs(10)),
            tick: Duration::from_secs(1),
            site_cache: Duration::from_secs(5),
        }
    }
}

/// The trigger settings of the analytics consumer from the host's `base`:
/// batches of [`BATCH_SIZE`], at most two batches unacknowledged, a short
/// backoff (an item refused for order comes back soon), and deliveries
/// counted high (an item only fails with its batch or for order, never
/// for its content, so parking one would cut a hole in the stream's
/// order), and one acknowledgement per batch ([`AckMode::Cumulative`]:
/// the handler admits items only in stream order, so it never succeeds on
/// an item while a lower one is pending; decision 0064).
pub fn consumer_settings(base: &ConsumerSettings) -> ConsumerSettings {
    ConsumerSettings {
        batch_size: BATCH_SIZE,
        max_ack_pending: 2 * BATCH_SIZE as i64,
        max_deliver: 100_000,
        backoff: vec![Duration::from_millis(200)],
        ack: AckMode::Cumulative,
        ..base.clone()
    }
}

/// Why the function did not start.
#[derive(Debug, ThisError)]
pub enum StartError {
    /// A bucket could not be read.
    #[error("analytics: {0}")]
    Store(#[from] Error),
    /// The site registry could not be opened.
    #[error("analytics: site registry: {0}")]
    Sites(String),
    /// The trigger refused the binding.
    #[error("analytics: {0}")]
    Trigger(#[from] TriggerError),
}

/// The running function: its rule watch and idle clock stop when this is
/// dropped (the binding stops with the trigger).
#[derive(Debug)]
pub struct Running {
    /// The handler (metrics).
    pub analytics: Analytics,
    /// The durable consumer bound.
    pub consumer: String,
    /// The rule watch and the clock.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the function on `trigger`: reads the rules, starts their watch
/// and the idle clock, binds `analytics_PLANTD_TELEMETRY` with
/// [`consumer_settings`] of `base`.
///
/// # Errors
/// [`StartError`] when a bucket is missing or the binding is refused.
pub async fn start(
    js: &jetstream::Context,
    trigger: &mut Trigger,
    settings: Settings,
    base: &ConsumerSettings,
) -> Result<Running, StartError> {
    let (book, watch) = RuleBook::open(js).await?;
    let sites = Sites::open(js)
        .await
        .map_err(|e| StartError::Sites(e.to_string()))?;
    let state = js
        .get_key_value(streams::ANALYTICS_STATE_BUCKET)
        .await
        .map_err(|e| Error::nats("open the analytics state bucket", e))?;
    let durable =
        plantd_trigger::durable_name(FUNCTION, streams::TELEMETRY).map_err(TriggerError::from)?;
    let analytics = Analytics::new(
        js.clone(),
        state,
        book,
        SiteCache::new(sites, settings.site_cache),
        durable,
    );
    let mut tasks = vec![watch];
    if let Some(idle) = settings.idle_close {
        let a = analytics.clone();
        let tick = settings.tick;
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                a.idle_tick(idle).await;
            }
        }));
    }
    let consumer = trigger
        .bind(
            FUNCTION,
            streams::TELEMETRY,
            Arc::new(analytics.clone()),
            consumer_settings(base),
        )
        .await?;
    Ok(Running {
        analytics,
        consumer,
        tasks,
    })
}
