//! `plantd-forwarder`: the trigger's AWS half as a process (feature
//! `aws`). It runs the durable JetStream consumer of every configured
//! (function, stream) binding and sends each batch to the function's SQS
//! queue, acknowledging JetStream only after SQS accepted the items
//! ([`plantd_trigger::forward`], docs/decisions/0026-trigger-on-aws.md).
//!
//! Configuration: defaults, then `--config <file.toml>`, then `PLANTD_*`
//! variables ([`plantd_trigger::forward::ForwarderConfig`],
//! docs/operations.md). AWS credentials, region and endpoint come from the
//! standard AWS environment (instance role on EC2). Stops on SIGTERM or
//! Ctrl-C after settling the batches in hand.

use std::path::PathBuf;

use anyhow::Context as _;
use plantd_trigger::forward::{self, ForwarderConfig};

/// The configuration file named by `--config <file>` (or `--config=<file>`).
fn config_file() -> anyhow::Result<Option<PathBuf>> {
    let mut args = std::env::args_os().skip(1);
    let mut file = None;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy().into_owned();
        if text == "--config" {
            file = Some(PathBuf::from(args.next().context("--config needs a file")?));
        } else if let Some(path) = text.strip_prefix("--config=") {
            file = Some(PathBuf::from(path));
        } else if text == "--help" || text == "-h" {
            println!(
                "plantd-forwarder [--config FILE]\n\nForwards JetStream items to SQS queues (docs/operations.md)."
            );
            std::process::exit(0);
        } else {
            anyhow::bail!("unknown argument {text:?} (use --config FILE)");
        }
    }
    Ok(file)
}

/// The command line overrides nothing but the file (an empty map for
/// `plantd_shared::config::load`).
#[derive(serde::Serialize)]
struct NoOverrides {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    plantd_shared::logging::init("plantd-forwarder");
    let file = config_file()?;
    let config: ForwarderConfig = plantd_shared::config::load(file.as_deref(), &NoOverrides {})
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sdk = plantd_shared::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    forward::run(
        config,
        sqs,
        Some(logs),
        plantd_shared::shutdown::terminated(),
    )
    .await
}
