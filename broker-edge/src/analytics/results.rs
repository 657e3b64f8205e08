//! Publishing the engine's [`Output`]s at the edge.
//!
//! Each result goes on `$plantd/agg/<rule>/<key>` (body: the `Output` as
//! JSON): journaled first, exactly like a device's QoS 1 publish (the
//! uplink sends it to `plantd.<site>.agg.<rule>.<key>`, stream
//! `PLANTD_AGGREGATES`, with the journal's message id, so it is stored once
//! however often the link drops), then routed to local subscribers once
//! durable. A result with a `signal` (a pattern matched or cleared, an
//! anomaly) is also published on `$plantd/alert/<rule>/<key>` for local
//! subscribers at once, before the journal is waited for, and retained so
//! a siren or an HMI that connects later sees the latest state; that topic
//! is not journaled (the alert manager in the cloud raises the alert from
//! the journaled result).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use plantd_analytics::Output;
use plantd_bridge::UplinkMessage;
use plantd_journal::Journal;
use plantd_shared::topic::{AGG_PREFIX, ALERT_PREFIX, validate_topic};
use tracing::warn;

use super::feed::{Stats, now_ms};
use crate::inject::BrokerHandle;
use crate::message::{MessageProperties, Publication};
use crate::protocol::QoS;

/// The client id the edge's results carry (header `Plantd-Client-Id`).
pub const CLIENT_ID: &str = "plantd-edge-analytics";

/// Where results go.
#[derive(Debug, Clone)]
pub struct Results {
    /// The journal (towards `PLANTD_AGGREGATES`).
    pub journal: Journal,
    /// The broker (local subscribers).
    pub broker: BrokerHandle,
    /// Counters.
    pub stats: Arc<Stats>,
}

/// `<prefix><rule>/<key>` when it is a valid topic name (a key taken from a
/// payload field may hold `+`, `#` or NUL).
fn topic(prefix: &str, out: &Output) -> Option<String> {
    let t = format!("{prefix}{}/{}", out.rule, out.key);
    validate_topic(&t).is_ok().then_some(t)
}

fn publication(topic: String, payload: Bytes, retain: bool) -> Publication {
    let properties = MessageProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".to_owned()),
        ..MessageProperties::default()
    };
    Publication {
        topic: Arc::from(topic),
        payload,
        qos: QoS::AtLeastOnce,
        retain,
        // No Message Expiry Interval: nothing counts from here.
        received: None,
        properties,
        origin: None,
    }
}

impl Results {
    /// Publishes `outputs` in order: signals locally at once, then every
    /// result journaled and, once durable, routed. Failures are logged and
    /// counted, never retried here (the engine's checkpoint moves on).
    pub async fn publish(&self, outputs: &[Output]) {
        let mut queued = Vec::with_capacity(outputs.len());
        for out in outputs {
            let body = match serde_json::to_vec(out) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    self.failed(out, &format!("cannot encode: {e}"));
                    continue;
                }
            };
            if out.signal.is_some() {
                match topic(ALERT_PREFIX, out) {
                    Some(t) => {
                        // Stopped: the broker is shutting down.
                        let _ = self.broker.inject(publication(t, body.clone(), true)).await;
                        self.stats.alerts.fetch_add(1, Ordering::Relaxed);
                    }
                    None => self.failed(out, "the key is not a valid topic level"),
                }
            }
            let Some(t) = topic(AGG_PREFIX, out) else {
                self.failed(out, "the key is not a valid topic level");
                continue;
            };
            let record = UplinkMessage {
                topic: t.clone(),
                payload: body.clone(),
                qos: 1,
                retain: false,
                received_ms: u64::try_from(now_ms()).unwrap_or(0),
                client_id: CLIENT_ID.to_owned(),
                payload_format: Some(1),
                message_expiry: None,
                content_type: Some("application/json".to_owned()),
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            }
            .encode();
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    self.failed(out, &format!("cannot encode: {e}"));
                    continue;
                }
            };
            match self.journal.enqueue(record).await {
                Ok(durable) => queued.push((out, durable, publication(t, body, false))),
                Err(e) => self.failed(out, &format!("journal: {e}")),
            }
        }
        for (out, durable, p) in queued {
            match durable.await {
                Ok(_) => {
                    self.stats.results.fetch_add(1, Ordering::Relaxed);
                    let _ = self.broker.inject(p).await;
                }
                Err(e) => self.failed(out, &format!("journal: {e}")),
            }
        }
    }

    fn failed(&self, out: &Output, why: &str) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        warn!(rule = %out.rule, key = %out.key, window_start = out.window_start,
            revision = out.revision, reason = %why, "analytics result not published");
    }
}
