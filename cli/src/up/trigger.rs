//! The trigger (issue 13) in `plantd up`: stream events to the event
//! functions (logger, alert engine, notifier, analytics) in this process,
//! and the log index `/v1/logs` reads.

use anyhow::Result;
use plantd_shared::streams;

use super::status;

/// Starts the event functions (logger, alert engine, notifier, analytics)
/// on one trigger in this process (`crate::functions`), the analytics
/// function and the logger on connections of their own to `nats_url`,
/// printing a line each.
pub(super) async fn start_trigger(
    js: &async_nats::jetstream::Context,
    nats_url: &str,
    log_index: &std::sync::Arc<plantd_logger::LogIndex>,
    channel_keys: &std::sync::Arc<plantd_alerts::notify::ChannelKeys>,
) -> Result<crate::functions::EventFunctions> {
    let connections = crate::functions::FunctionConnections::connect(nats_url).await?;
    // The logger feeds the log index the lines it parsed (one parse each).
    let functions = crate::functions::EventFunctions::start_feeding(
        js,
        connections,
        plantd_trigger::ConsumerSettings::default(),
        Some(log_index.clone()),
        channel_keys.clone(),
    )
    .await?;
    for (name, detail) in functions.lines() {
        status(name, "ready", detail);
    }
    Ok(functions)
}

/// The log index `/v1/logs` reads: hydrated from `PLANTD_LOGS` (the last
/// day), then following it live (docs/decisions/0023-log-index.md). The
/// task restarts its consumer by itself when nats-server comes back.
pub(super) fn start_log_index(
    js: &async_nats::jetstream::Context,
) -> (
    std::sync::Arc<plantd_logger::LogIndex>,
    tokio::task::JoinHandle<()>,
) {
    let index = std::sync::Arc::new(plantd_logger::LogIndex::new(
        plantd_logger::IndexSettings::default(),
    ));
    let task = plantd_logger::follow(index.clone(), js.clone());
    let s = index.settings();
    status(
        "log index",
        "ready",
        format_args!(
            "following {}  (at most {} lines / {} MiB; plantd logs)",
            streams::LOGS,
            s.max_lines,
            s.max_bytes >> 20
        ),
    );
    (index, task)
}

/// Stops the event functions after the batches in hand are settled.
pub(super) async fn stop_trigger(functions: crate::functions::EventFunctions) {
    functions.stop().await;
    status("trigger", "stopped", "");
}
