//! [`Trigger`]: binds function handlers to streams and owns the tasks that
//! feed them.

use std::sync::Arc;

use async_nats::jetstream::{self, consumer};
use plantd_shared::streams;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::consumer::{Binding, deliver, serve_replays, watch};
use crate::dlq;
use crate::item::Handler;
use crate::metrics::{ConsumerMetrics, Status};
use crate::settings::{ConsumerSettings, NameError, SettingsError, durable_name};

/// Why a binding could not start.
#[derive(Debug, Error)]
pub enum TriggerError {
    /// The function or stream name cannot name a consumer.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The settings make no sense.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The stream does not exist (run `plantd streams`).
    #[error("stream {0} does not exist (plantd streams creates it)")]
    NoStream(String),
    /// JetStream refused the durable consumer.
    #[error("consumer {durable}: {reason}")]
    Consumer {
        /// The durable name.
        durable: String,
        /// What JetStream said.
        reason: String,
    },
    /// The replay subscription failed.
    #[error("replay subscription of {durable}: {reason}")]
    Subscribe {
        /// The durable name.
        durable: String,
        /// What NATS said.
        reason: String,
    },
    /// The function already consumes that stream here.
    #[error("{0} is bound twice")]
    Duplicate(String),
}

/// Durable JetStream consumers feeding function handlers in this process.
///
/// Each [`Trigger::bind`] creates (or updates) the durable pull consumer
/// `<function>_<stream>` and starts three tasks: delivery, watching, and
/// replays. [`Trigger::shutdown`] stops them after the batches in hand are
/// settled; dropping the trigger aborts them at once (as a crash would:
/// unacknowledged items are redelivered after `ack_wait`).
#[derive(Debug)]
pub struct Trigger {
    /// The JetStream context every consumer and DLQ write uses.
    js: jetstream::Context,
    /// Tells every task to stop.
    cancel: CancellationToken,
    /// The tasks; aborted on drop.
    tasks: JoinSet<()>,
    /// Every consumer's counters, shared with `/metrics`.
    status: Status,
    /// Durable names bound so far.
    bound: Vec<String>,
}

impl Trigger {
    /// A trigger with no bindings yet.
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            cancel: CancellationToken::new(),
            tasks: JoinSet::new(),
            status: Status::default(),
            bound: Vec::new(),
        }
    }

    /// Metrics and health of every consumer (cheap to clone, lives on after
    /// the trigger stops).
    pub fn status(&self) -> Status {
        self.status.clone()
    }

    /// Starts feeding `handler` with `stream`'s items as function
    /// `function`, returning the durable consumer name. The consumer starts
    /// at the stream's first item the first time and where it left off
    /// afterwards.
    ///
    /// # Errors
    /// [`TriggerError`] when a name or setting is bad, the stream does not
    /// exist, or JetStream refuses the consumer.
    pub async fn bind<H: Handler>(
        &mut self,
        function: &str,
        stream: &str,
        handler: Arc<H>,
        settings: ConsumerSettings,
    ) -> Result<String, TriggerError> {
        let durable = durable_name(function, stream)?;
        settings.validate()?;
        if self.bound.contains(&durable) {
            return Err(TriggerError::Duplicate(durable));
        }
        let source = self
            .js
            .get_stream(stream)
            .await
            .map_err(|_| TriggerError::NoStream(stream.to_owned()))?;
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!("plantd trigger: {stream} -> function {function}")),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: settings.ack.policy(),
            ack_wait: settings.ack_wait,
            // Unlimited: the trigger counts deliveries itself and parks an
            // item after max_deliver, so JetStream never gives up on one
            // silently.
            max_deliver: -1,
            max_ack_pending: settings.max_ack_pending,
            filter_subjects: settings.filter_subjects.clone(),
            ..Default::default()
        };
        let (consumer, config) =
            crate::durable::ensure(&source, config)
                .await
                .map_err(|reason| TriggerError::Consumer {
                    durable: durable.clone(),
                    reason,
                })?;
        let requests = self
            .js
            .client()
            .queue_subscribe(dlq::replay_subject(&durable), dlq::REPLAY_QUEUE.to_owned())
            .await
            .map_err(|e| TriggerError::Subscribe {
                durable: durable.clone(),
                reason: e.to_string(),
            })?;
        if self.js.get_stream(streams::DLQ).await.is_err() {
            tracing::warn!(consumer = %durable, "stream PLANTD_DLQ does not exist: failing items cannot be parked and will be retried (plantd streams creates it)");
        }
        let metrics = Arc::new(ConsumerMetrics::new(
            function,
            stream,
            &durable,
            settings.stuck_after,
            settings.watch_interval,
        ));
        self.status.add(metrics.clone());
        let binding = Arc::new(Binding {
            function: function.to_owned(),
            durable: durable.clone(),
            stream: stream.into(),
            config,
            handler,
            settings,
            js: self.js.clone(),
            metrics,
        });
        self.tasks.spawn(deliver(
            binding.clone(),
            consumer.clone(),
            self.cancel.child_token(),
        ));
        self.tasks
            .spawn(watch(binding.clone(), consumer, self.cancel.child_token()));
        self.tasks
            .spawn(serve_replays(binding, requests, self.cancel.child_token()));
        tracing::info!(consumer = %durable, function, stream, "trigger bound");
        self.bound.push(durable.clone());
        Ok(durable)
    }

    /// Stops every binding: no new batches are pulled, the batches in hand
    /// are settled, then the tasks end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "a trigger task failed");
            }
        }
    }
}
