//! `plantd-logger`: the logger function on AWS Lambda (feature `aws`).
//!
//! The function's SQS queue — fed by `plantd-forwarder` from
//! `PLANTD_LOGS` — invokes it with batches of stream items
//! ([`plantd_trigger::sqs`]: envelopes back into items, a partial batch
//! response for the items that failed, a record that is not an envelope
//! failing alone). Each item is parsed (`plantd_logger::parse`) and
//! written to CloudWatch Logs ([`plantd_logger::cloudwatch`]).
//!
//! Environment:
//! * `PLANTD_CLOUDWATCH_PREFIX`: the log group prefix, one group per site
//!   (default `/plantd/sites`);
//! * `PLANTD_CLOUDWATCH_RETENTION_DAYS`: retention of the groups this
//!   function creates (default: CloudWatch's, never expire);
//! * the standard AWS variables Lambda sets (region, credentials;
//!   `AWS_ENDPOINT_URL` in tests).
//!
//! Clients are built once, at cold start, and reused by warm invocations.

use std::sync::Arc;

use anyhow::Context as _;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use plantd_logger::cloudwatch::{self, CloudWatch};
use plantd_trigger::sqs::{self, SqsBatchResponse, SqsEvent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plantd_shared::logging::init("plantd-logger");
    anyhow::ensure!(
        std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some(),
        "plantd-logger runs under the Lambda runtime (AWS_LAMBDA_RUNTIME_API); locally `plantd up` runs the logger in-process"
    );
    let prefix = std::env::var("PLANTD_CLOUDWATCH_PREFIX")
        .unwrap_or_else(|_| cloudwatch::DEFAULT_PREFIX.to_owned());
    let retention = match std::env::var("PLANTD_CLOUDWATCH_RETENTION_DAYS") {
        Ok(days) if !days.is_empty() => Some(days.parse::<i32>().with_context(|| {
            format!("PLANTD_CLOUDWATCH_RETENTION_DAYS={days:?} is not a number of days")
        })?),
        _ => None,
    };
    let sdk = plantd_shared::aws::sdk_config().await;
    let handler = Arc::new(
        CloudWatch::new(aws_sdk_cloudwatchlogs::Client::new(&sdk), prefix.clone())
            .with_retention_days(retention),
    );
    tracing::info!(prefix = %prefix, "logger serving SQS events through the Lambda runtime API");
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
