//! The AWS half of the trigger (feature `aws`): the forwarder. Lambda has
//! no NATS event source, so a small long-running process runs the same
//! durable consumer per (function, stream) as `plantd up` — the consumer
//! loop of this crate, unchanged — with a [`Forwarder`] as its handler:
//! "handling" a batch is sending it to the function's SQS queue, whose
//! event source mapping invokes the Lambda (docs/decisions/0026).
//!
//! ## Contract
//! - Each item becomes one SQS message: the JSON [`Envelope`] as body,
//!   `stream`/`sequence`/`subject`/`delivered` repeated as message
//!   attributes ([`crate::sqs`] documents the format).
//! - A batch is sent with `SendMessageBatch`, split into calls of at most
//!   [`MAX_ENTRIES`] entries and [`MAX_BATCH_BYTES`] bytes (the calls of a
//!   batch run concurrently).
//! - An item succeeds only when SQS listed its entry as successful; the
//!   consumer acknowledges it on JetStream only then. A per-entry failure,
//!   a failed call, or an entry SQS did not answer for is a failure of
//!   those items: NAKed with the backoff, retried, parked in `PLANTD_DLQ`
//!   after `max_deliver` deliveries (and replayable from there: a replay
//!   goes through this handler to the queue again).
//! - An item whose envelope cannot fit one SQS message fails every time
//!   (with an error saying so) and ends in `PLANTD_DLQ`.
//!
//! [`run`] is the `plantd-forwarder` process: configuration
//! ([`ForwarderConfig`]), NATS, the SQS client, one binding per
//! [`QueueBinding`], `/healthz`, `/healthz/trigger` and `/metrics`, the
//! CloudWatch metrics the template's alarms watch
//! ([`crate::cloud_metrics`], with `[cloud_metrics] stage` set), and a
//! graceful stop.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::cloud_metrics::{self, CloudMetricsConfig};
use crate::item::{BatchOutcome, Handler, Item};
use crate::metrics::Status;
use crate::settings::ConsumerSettings;
use crate::sqs::{ATTR_DELIVERED, ATTR_SEQUENCE, ATTR_STREAM, ATTR_SUBJECT, Envelope};
use crate::trigger::Trigger;

/// Most entries SQS takes in one `SendMessageBatch`.
pub const MAX_ENTRIES: usize = 10;
/// Most bytes (bodies and attributes of all entries) in one
/// `SendMessageBatch`, and so in one message: 256 KiB.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One message ready to send: its body and its size as SQS counts it.
struct Outgoing {
    /// Index of the item in the handler's batch (also the entry id).
    index: usize,
    /// The envelope JSON.
    body: String,
    /// The item's attributes: `(name, data type, value)`.
    attributes: [(&'static str, &'static str, String); 4],
    /// Body plus every attribute's name, type and value, in bytes.
    size: usize,
}

impl Outgoing {
    fn of(index: usize, item: &Item) -> Self {
        let body = Envelope::of(item).to_json();
        let attributes = [
            (ATTR_STREAM, "String", item.stream.to_string()),
            (ATTR_SEQUENCE, "Number", item.sequence.to_string()),
            (ATTR_SUBJECT, "String", item.subject.to_string()),
            (ATTR_DELIVERED, "Number", item.delivered.to_string()),
        ];
        let size = body.len()
            + attributes
                .iter()
                .map(|(n, t, v)| n.len() + t.len() + v.len())
                .sum::<usize>();
        Self {
            index,
            body,
            attributes,
            size,
        }
    }

    fn entry(&self) -> Result<SendMessageBatchRequestEntry, String> {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(self.index.to_string())
            .message_body(&self.body);
        for (name, data_type, value) in &self.attributes {
            let value = MessageAttributeValue::builder()
                .data_type(*data_type)
                .string_value(value)
                .build()
                .map_err(|e| format!("message attribute {name}: {e}"))?;
            entry = entry.message_attributes(*name, value);
        }
        entry.build().map_err(|e| format!("SQS entry: {e}"))
    }
}

/// Splits messages of `sizes` bytes into `SendMessageBatch` calls: in
/// order, at most [`MAX_ENTRIES`] and [`MAX_BATCH_BYTES`] per call. A
/// message larger than [`MAX_BATCH_BYTES`] is in no call; its index is in
/// the second list.
pub fn plan_calls(sizes: &[usize]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut too_large = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if size > MAX_BATCH_BYTES {
            too_large.push(i);
            continue;
        }
        if current.len() == MAX_ENTRIES || bytes + size > MAX_BATCH_BYTES {
            calls.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        calls.push(current);
    }
    (calls, too_large)
}

/// The handler that forwards batches to one SQS queue.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// The SQS client (cheap to clone, shared by every binding).
    sqs: aws_sdk_sqs::Client,
    /// The queue's URL.
    queue_url: String,
}

impl Forwarder {
    /// Forwards to the queue at `queue_url`.
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            sqs,
            queue_url: queue_url.into(),
        }
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends one call's messages; the indices that failed, with why.
    async fn send(&self, messages: &[&Outgoing]) -> Vec<(usize, String)> {
        let mut failures = Vec::new();
        let mut entries = Vec::with_capacity(messages.len());
        let mut sent = Vec::with_capacity(messages.len());
        for m in messages {
            match m.entry() {
                Ok(e) => {
                    entries.push(e);
                    sent.push(m.index);
                }
                Err(e) => failures.push((m.index, e)),
            }
        }
        if entries.is_empty() {
            return failures;
        }
        let answer = self
            .sqs
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(e) => {
                let why = format!("SQS SendMessageBatch: {}", DisplayErrorContext(&e));
                tracing::warn!(queue = %self.queue_url, entries = sent.len(), error = %why, "SQS refused a batch; it will be retried");
                failures.extend(sent.into_iter().map(|i| (i, why.clone())));
                return failures;
            }
        };
        let mut refused: Vec<usize> = Vec::new();
        for f in out.failed() {
            let why = format!(
                "SQS refused the message: {} {}{}",
                f.code(),
                f.message().unwrap_or_default(),
                if f.sender_fault() {
                    " (sender fault)"
                } else {
                    ""
                }
            );
            match f.id().parse::<usize>() {
                Ok(index) if sent.contains(&index) => {
                    refused.push(index);
                    failures.push((index, why));
                }
                _ => tracing::error!(id = f.id(), "SQS failed an entry id plantd never sent"),
            }
        }
        // Only what SQS listed as successful is done; an entry it did not
        // answer for counts as failed.
        for index in sent {
            let accepted = out
                .successful()
                .iter()
                .any(|s| s.id().parse::<usize>().ok() == Some(index));
            if !accepted && !refused.contains(&index) {
                failures.push((index, "SQS did not answer for this entry".to_owned()));
            }
        }
        failures
    }
}

impl Handler for Forwarder {
    /// Sends the batch; every entry SQS did not accept is a failure.
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let outgoing: Vec<Outgoing> = batch
            .iter()
            .enumerate()
            .map(|(i, item)| Outgoing::of(i, item))
            .collect();
        let sizes: Vec<usize> = outgoing.iter().map(|o| o.size).collect();
        let (calls, too_large) = plan_calls(&sizes);
        let mut outcome = BatchOutcome::success();
        for i in too_large {
            let error = format!(
                "the SQS message would be {} bytes, more than SQS's {MAX_BATCH_BYTES} (base64 adds a third to the payload)",
                sizes.get(i).copied().unwrap_or_default()
            );
            outcome.record_failure(i, error);
        }
        let sends = calls.iter().map(|call| {
            let messages: Vec<&Outgoing> = call.iter().filter_map(|&i| outgoing.get(i)).collect();
            async move { self.send(&messages).await }
        });
        for failures in futures::future::join_all(sends).await {
            for (i, error) in failures {
                outcome.record_failure(i, error);
            }
        }
        outcome
    }
}

/// One (function, stream) pair forwarded to a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueBinding {
    /// The function (the durable consumer is `<function>_<stream>`, as in
    /// `plantd up`).
    pub function: String,
    /// The source stream.
    pub stream: String,
    /// The function's SQS queue URL (the template's outputs).
    pub queue_url: String,
    /// Only these subjects of the stream (empty: all).
    #[serde(default)]
    pub filter_subjects: Vec<String>,
}

/// `plantd-forwarder`'s configuration: defaults, then the TOML file, then
/// `PLANTD_*` variables (`plantd_shared::config`). Times in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwarderConfig {
    /// NATS server URL.
    pub nats_url: String,
    /// NATS credentials file (`.creds`), if the server wants one.
    pub nats_creds: Option<PathBuf>,
    /// Where `/healthz`, `/healthz/trigger` and `/metrics` are served.
    pub http_listen: String,
    /// What to forward where.
    pub bindings: Vec<QueueBinding>,
    /// Most items pulled at once (sent in calls of 10).
    pub batch_size: usize,
    /// Longest wait for a batch to fill.
    pub max_wait_ms: u64,
    /// Failed sends of an item before it is parked in `PLANTD_DLQ`. High
    /// by default: a failed send is usually SQS or the network, not the
    /// item, and the backoff's last step repeats.
    pub max_deliver: u32,
    /// Delay before retrying a failed send, by attempt (last repeats).
    pub backoff_ms: Vec<u64>,
    /// JetStream's redelivery timeout for an unacknowledged item.
    pub ack_wait_ms: u64,
    /// Most items in flight per binding.
    pub max_ack_pending: i64,
    /// Pending items and no progress for this long: "stuck".
    pub stuck_after_ms: u64,
    /// The CloudWatch metrics for the template's alarms (off unless
    /// `stage` is set).
    pub cloud_metrics: CloudMetricsConfig,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        let d = ConsumerSettings::default();
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            http_listen: "127.0.0.1:9095".into(),
            bindings: Vec::new(),
            batch_size: d.batch_size,
            max_wait_ms: millis(d.max_wait),
            max_deliver: 100,
            backoff_ms: d.backoff.iter().map(|b| millis(*b)).collect(),
            ack_wait_ms: millis(d.ack_wait),
            max_ack_pending: d.max_ack_pending,
            stuck_after_ms: millis(d.stuck_after),
            cloud_metrics: CloudMetricsConfig::default(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ForwarderConfig {
    /// The consumer settings of `binding`.
    pub fn settings(&self, binding: &QueueBinding) -> ConsumerSettings {
        ConsumerSettings {
            batch_size: self.batch_size,
            max_wait: Duration::from_millis(self.max_wait_ms),
            max_deliver: self.max_deliver,
            backoff: self
                .backoff_ms
                .iter()
                .map(|b| Duration::from_millis(*b))
                .collect(),
            ack_wait: Duration::from_millis(self.ack_wait_ms),
            max_ack_pending: self.max_ack_pending,
            filter_subjects: binding.filter_subjects.clone(),
            stuck_after: Duration::from_millis(self.stuck_after_ms),
            ..ConsumerSettings::default()
        }
    }
}

/// Binds every binding of `config` on `trigger`, each with a
/// [`Forwarder`] to its queue.
///
/// # Errors
/// When there are no bindings, or one cannot be bound (bad name or
/// setting, no such stream, JetStream refused the consumer).
pub async fn bind_all(
    trigger: &mut Trigger,
    sqs: &aws_sdk_sqs::Client,
    config: &ForwarderConfig,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        !config.bindings.is_empty(),
        "config key `bindings` is empty: nothing to forward (see docs/operations.md)"
    );
    let mut durables = Vec::new();
    for b in &config.bindings {
        anyhow::ensure!(
            b.queue_url.starts_with("https://") || b.queue_url.starts_with("http://"),
            "binding {}/{}: queue_url {:?} is not a queue URL",
            b.function,
            b.stream,
            b.queue_url
        );
        let handler = Arc::new(Forwarder::new(sqs.clone(), b.queue_url.clone()));
        let durable = trigger
            .bind(&b.function, &b.stream, handler, config.settings(b))
            .await
            .with_context(|| format!("binding {} ← {}", b.function, b.stream))?;
        tracing::info!(consumer = %durable, queue = %b.queue_url, "forwarding to SQS");
        durables.push(durable);
    }
    Ok(durables)
}

/// `/healthz` (the same verdict as `/healthz/trigger`), `/healthz/trigger`
/// and `/metrics` over `status`.
pub fn routes(status: Status) -> Router {
    let for_health = status.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let status = for_health.clone();
                async move {
                    let h = status.health();
                    let code = if h.healthy {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(h))
                }
            }),
        )
        .merge(crate::http::routes(status))
}

/// Runs the forwarder until `shutdown` completes: connects to NATS, binds
/// every binding, serves HTTP, puts the CloudWatch metrics through `logs`
/// when `[cloud_metrics] stage` is set, then stops pulling, settles the
/// batches in hand (sent or NAKed) and returns.
///
/// # Errors
/// When NATS is unreachable, a binding cannot start, the HTTP address
/// cannot be bound, or metrics are configured without a `logs` client.
pub async fn run(
    config: ForwarderConfig,
    sqs: aws_sdk_sqs::Client,
    logs: Option<aws_sdk_cloudwatchlogs::Client>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.bindings.is_empty(),
        "config key `bindings` is empty: nothing to forward (see docs/operations.md)"
    );
    let mut options = async_nats::ConnectOptions::new().name("plantd-forwarder");
    if let Some(creds) = &config.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("cannot read NATS credentials {}", creds.display()))?;
    }
    let client = plantd_shared::nats_urls::connect(&config.nats_url, options)
        .await
        .with_context(|| {
            format!(
                "cannot connect to NATS at {}",
                plantd_shared::nats_urls::redacted(&config.nats_url)
            )
        })?;
    let js = async_nats::jetstream::new(client);
    let mut trigger = Trigger::new(js.clone());
    let durables = bind_all(&mut trigger, &sqs, &config).await?;
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    let metrics = if config.cloud_metrics.enabled() {
        let logs =
            logs.context("[cloud_metrics] stage is set but there is no CloudWatch Logs client")?;
        let publisher = cloud_metrics::Publisher::new(
            logs,
            &config.cloud_metrics.stage,
            cloud_metrics::default_stream(),
        );
        tracing::info!(
            group = publisher.group(),
            stream = publisher.stream(),
            namespace = %cloud_metrics::namespace(&config.cloud_metrics.stage),
            "putting CloudWatch metrics"
        );
        Some(tokio::spawn(publisher.run(
            trigger.status(),
            js.clone(),
            Duration::from_millis(config.cloud_metrics.interval_ms),
            stop_metrics.clone(),
        )))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(&config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_listen))?;
    let addr = listener.local_addr()?;
    let stop_http = tokio_util::sync::CancellationToken::new();
    let http = {
        let stop = stop_http.clone();
        let app = routes(trigger.status());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    tracing::info!(http = %addr, consumers = ?durables, "plantd-forwarder running");
    shutdown.await;
    tracing::info!("plantd-forwarder stopping: settling the batches in hand");
    trigger.shutdown().await;
    stop_metrics.cancel();
    if let Some(task) = metrics
        && let Err(e) = task.await
    {
        tracing::warn!(error = %e, "cloud metrics task failed");
    }
    stop_http.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
    }
    tracing::info!("plantd-forwarder stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_hold_at_most_ten_entries_and_256_kib() {
        let (calls, big) = plan_calls(&[100; 25]);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        assert!(big.is_empty());
        let (calls, big) = plan_calls(&[100_000, 100_000, 100_000, 300_000, 50_000]);
        assert_eq!(calls, vec![vec![0, 1], vec![2, 4]]);
        assert_eq!(big, vec![3]);
        let (calls, _) = plan_calls(&[MAX_BATCH_BYTES, 1]);
        assert_eq!(calls, vec![vec![0], vec![1]]);
        assert!(plan_calls(&[]).0.is_empty());
    }

    #[test]
    fn config_defaults_make_valid_settings() {
        let c = ForwarderConfig::default();
        let b = QueueBinding {
            function: "logger".into(),
            stream: "PLANTD_LOGS".into(),
            queue_url: "https://sqs.example/1/q".into(),
            filter_subjects: vec![],
        };
        assert_eq!(c.settings(&b).validate(), Ok(()));
        assert_eq!(c.settings(&b).max_deliver, 100);
    }
}
