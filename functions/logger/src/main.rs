//! `plantd-logger`: the logger function on AWS Lambda (feature `aws`).
//!
//! The function's SQS queue — fed by `plantd-forwarder` from
//! `PLANTD_LOGS` — invokes it with batches of stream items
//! ([`plantd_trigger::sqs`]: envelopes back into items, a partial batch
//! response for the items that failed, a record that is not an envelope
//! failing alone). Each batch goes to two handlers at once:
//!
//! * CloudWatch Logs ([`plantd_logger::cloudwatch`]): every item parsed
//!   and written to the site's log group, the source's stream;
//! * the logger's own handler ([`plantd_logger::Logger`]) with the
//!   per-minute aggregates in KV `plantd_log_aggregates`, exactly once —
//!   when `PLANTD_NATS_URL` says where NATS is (without it the function
//!   only forwards to CloudWatch, and aggregates come from wherever the
//!   in-process logger runs).
//!
//! An item fails (and SQS redelivers it) when either handler failed it;
//! both are idempotent on `(stream, sequence)` (CloudWatch as far as it
//! allows: see the module).
//!
//! Configuration: `PLANTD_*` environment variables, read once through
//! `plantd_shared::config` into [`Config`] (a bad value stops the start
//! with one line naming the variable; an empty one counts as unset):
//! * `PLANTD_CLOUDWATCH_PREFIX`: the log group prefix, one group per site
//!   (default `/plantd/sites`);
//! * `PLANTD_CLOUDWATCH_RETENTION_DAYS`: retention of the groups this
//!   function creates (default: CloudWatch's, never expire);
//! * `PLANTD_NATS_URL` (optional) and `PLANTD_NATS_CREDS` (a `.creds`
//!   file, optional): NATS for the aggregates;
//! * the standard AWS variables Lambda sets (region, credentials;
//!   `AWS_ENDPOINT_URL` in tests).
//!
//! Clients are built once, at cold start, and reused by warm invocations.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use plantd_logger::cloudwatch::{self, CloudWatch};
use plantd_logger::{AggregateSettings, Aggregates, Logger};
use plantd_trigger::sqs::{self, SqsBatchResponse, SqsEvent};
use plantd_trigger::{BatchOutcome, Handler, Item};
use serde::{Deserialize, Serialize};

/// The function's configuration (`PLANTD_<KEY>` for each field).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// The log group prefix, one group per site.
    cloudwatch_prefix: String,
    /// Retention of the groups this function creates (unset: CloudWatch's,
    /// never expire).
    cloudwatch_retention_days: Option<i32>,
    /// NATS for the aggregates (unset: CloudWatch only).
    nats_url: Option<String>,
    /// A NATS credentials file (`.creds`).
    nats_creds: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cloudwatch_prefix: cloudwatch::DEFAULT_PREFIX.to_owned(),
            cloudwatch_retention_days: None,
            nats_url: None,
            nats_creds: None,
        }
    }
}

/// The command line overrides nothing.
#[derive(Serialize)]
struct NoOverrides {}

/// The function's handlers, run together on each batch.
struct LoggerFunction {
    /// Forwarding to CloudWatch Logs.
    cloudwatch: CloudWatch,
    /// The logger's aggregates, when NATS is configured.
    logger: Option<Logger>,
}

impl Handler for LoggerFunction {
    /// Both handlers on the whole batch; an item fails if either failed it.
    async fn handle(&self, batch: &[Item]) -> BatchOutcome {
        let aggregate = async {
            match &self.logger {
                Some(l) => l.handle(batch).await,
                None => BatchOutcome::success(),
            }
        };
        let (mut outcome, aggregated) = tokio::join!(self.cloudwatch.handle(batch), aggregate);
        for (i, why) in aggregated.failures() {
            outcome.record_failure(i, format!("aggregates: {why}"));
        }
        outcome
    }
}

/// The logger with aggregates, when `PLANTD_NATS_URL` is set.
async fn logger(config: &Config) -> anyhow::Result<Option<Logger>> {
    let Some(url) = &config.nats_url else {
        tracing::info!("PLANTD_NATS_URL not set: forwarding to CloudWatch only, no aggregates");
        return Ok(None);
    };
    let mut options = async_nats::ConnectOptions::new().name("plantd-logger");
    if let Some(creds) = &config.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("cannot read NATS credentials {}", creds.display()))?;
    }
    let client = plantd_shared::nats_urls::connect(url, options)
        .await
        .with_context(|| {
            format!(
                "cannot connect to NATS at {}",
                plantd_shared::nats_urls::redacted(url)
            )
        })?;
    let aggregates = Aggregates::open(
        &async_nats::jetstream::new(client),
        AggregateSettings::default(),
    )
    .await
    .context("the KV bucket plantd_log_aggregates (plantd streams creates it)")?;
    // Nothing kept in memory: a Lambda instance answers no queries.
    Ok(Some(Logger::new(0).with_aggregates(aggregates)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plantd_shared::logging::init("plantd-logger");
    anyhow::ensure!(
        std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some(),
        "plantd-logger runs under the Lambda runtime (AWS_LAMBDA_RUNTIME_API); locally `plantd up` runs the logger in-process"
    );
    let config: Config = plantd_shared::config::load(None, &NoOverrides {})?;
    let prefix = config.cloudwatch_prefix.clone();
    let retention = config.cloudwatch_retention_days;
    let sdk = plantd_shared::aws::sdk_config().await;
    let handler = Arc::new(LoggerFunction {
        cloudwatch: CloudWatch::new(aws_sdk_cloudwatchlogs::Client::new(&sdk), prefix.clone())
            .with_retention_days(retention),
        logger: logger(&config).await?,
    });
    tracing::info!(prefix = %prefix, aggregates = handler.logger.is_some(), "logger serving SQS events through the Lambda runtime API");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        async move {
            let records = event.payload.records.len();
            let response: SqsBatchResponse = sqs::handle(handler.as_ref(), event.payload).await;
            tracing::info!(
                records,
                failed = response.batch_item_failures.len(),
                "batch handled"
            );
            Ok::<_, lambda_runtime::Error>(response)
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}
