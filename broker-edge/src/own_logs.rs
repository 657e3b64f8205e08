//! The edge's own warnings and errors, journaled as log lines.
//!
//! [`plantd_shared::log_ship`] queues the edge's events at or above the
//! shipped level (`PLANTD_LOG_SHIP`, default `warn`) as JSON lines; this
//! task appends each to the journal as a publication on
//! `$plantd/log/plantd/edge` (client id [`CLIENT_ID`], MQTT 5 user
//! property `level`, content type `application/json`), so the uplink sends
//! it to `plantd.<site>.log.plantd.edge` like a device's log line and an
//! outage loses none. They are not routed to local subscribers.
//!
//! Appending never blocks logging: a full journal (under the `block`
//! policy) holds this task, the queue fills, and further lines are dropped
//! and counted (`plantd_dropped_total{reason="log_ship"}`).

use std::time::{SystemTime, UNIX_EPOCH};

use plantd_bridge::UplinkMessage;
use plantd_journal::Journal;
use plantd_shared::log_ship::{self, LogLine, Route};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// The client id the edge's own log lines carry (header `Plantd-Client-Id`).
pub const CLIENT_ID: &str = "plantd-edge";

/// The journal record of one line.
fn record(line: &LogLine) -> Option<bytes::Bytes> {
    let received_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    UplinkMessage {
        topic: line.topic(),
        payload: line.json.clone(),
        qos: 1,
        retain: false,
        received_ms,
        client_id: CLIENT_ID.to_owned(),
        payload_format: Some(1),
        message_expiry: None,
        content_type: Some("application/json".to_owned()),
        response_topic: None,
        correlation_data: None,
        user_properties: vec![("level".to_owned(), line.level_name().to_owned())],
    }
    .encode()
    .ok()
}

/// Journals the edge's shipped lines until `stop`; `None` when shipping is
/// not started in this process (or another edge task holds the queue).
pub fn spawn(journal: Journal, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let mut queue = log_ship::take(Route::Edge)?;
    let task = async move {
        loop {
            let line = tokio::select! {
                _ = stop.cancelled() => break,
                line = queue.recv() => line,
            };
            let Some(line) = line else { break };
            let appended = match record(&line) {
                Some(r) => journal.append_nowait(r).await.is_ok(),
                None => false,
            };
            if !appended {
                log_ship::count_dropped(1);
            }
        }
    };
    Some(tokio::spawn(task.instrument(log_ship::sink_span())))
}
