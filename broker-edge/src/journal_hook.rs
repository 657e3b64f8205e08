//! The edge's side of the JetStream bridge: which accepted publications go
//! up, and journaling them before they are acknowledged.
//!
//! [`JournalHook`] is the broker's [`PublishHook`]: a publication whose
//! topic matches an uplink rule (default: everything except `$`-topics),
//! or is a log line on `$plantd/log/<source>` (always, whatever the rules:
//! the uplink sends it to `plantd.<site>.log.<source>`), is encoded as a
//! [`plantd_bridge::UplinkMessage`] and appended to the journal. A publish
//! on `$plantd/log` or `$plantd/log/` names no source and is refused
//! (v5 0x80; a 3.1.1 client at QoS 1/2 is disconnected). QoS 0 is queued without waiting; QoS 1 and 2 are acknowledged
//! only once durable under the journal's fsync policy (the link queues a
//! whole read's worth before waiting, so one fsync covers many). When the
//! journal is full under the `block` policy, appending waits — the
//! publisher sees a slow broker; nothing is dropped.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use plantd_bridge::UplinkMessage;
use plantd_journal::Journal;
use plantd_shared::topic::{Filter, LOG_PREFIX, is_log_topic_without_source, log_source, matches};

use crate::hooks::{BeginFuture, ClientInfo, HookError, HookFuture, PublishHook};
use crate::message::Publication;
use crate::protocol::QoS;

/// Journals uplinked publications before they are acknowledged.
#[derive(Debug, Clone)]
pub struct JournalHook {
    /// The journal.
    journal: Journal,
    /// Topic filters that go up.
    rules: Arc<Vec<Filter>>,
}

impl JournalHook {
    /// A hook appending publications matching `rules` to `journal`.
    pub fn new(journal: Journal, rules: Vec<Filter>) -> Self {
        Self {
            journal,
            rules: Arc::new(rules),
        }
    }

    /// Whether `topic` goes up: log lines (`$plantd/log/<source>`) always,
    /// other topics when a rule matches (`$`-topics only when a rule names
    /// them: the matching function's `$` rule applies).
    pub fn selects(&self, topic: &str) -> bool {
        log_source(topic).is_some() || self.rules.iter().any(|f| matches(f.as_str(), topic))
    }

    fn encode(client: &ClientInfo, p: &Publication) -> Result<bytes::Bytes, HookError> {
        let received_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let props = &p.properties;
        UplinkMessage {
            topic: p.topic.to_string(),
            payload: p.payload.clone(),
            qos: p.qos as u8,
            retain: p.retain,
            received_ms,
            client_id: client.client_id.to_string(),
            payload_format: props.payload_format_indicator,
            message_expiry: props.message_expiry_interval,
            content_type: props.content_type.clone(),
            response_topic: props.response_topic.clone(),
            correlation_data: props.correlation_data.clone(),
            user_properties: props.user_properties.clone(),
        }
        .encode()
        .map_err(|e| HookError(e.to_string()))
    }
}

impl PublishHook for JournalHook {
    fn accept<'a>(
        &'a self,
        client: &'a ClientInfo,
        publication: &'a Publication,
    ) -> HookFuture<'a> {
        Box::pin(async move {
            if let Some(pending) = self.begin(client, publication).await? {
                pending.await?;
            }
            Ok(())
        })
    }

    fn begin<'a>(
        &'a self,
        client: &'a ClientInfo,
        publication: &'a Publication,
    ) -> BeginFuture<'a> {
        Box::pin(async move {
            if is_log_topic_without_source(&publication.topic) {
                return Err(HookError(format!(
                    "{:?} names no log source: publish log lines on {LOG_PREFIX}<source>",
                    &*publication.topic
                )));
            }
            if !self.selects(&publication.topic) {
                return Ok(None);
            }
            let record = Self::encode(client, publication)?;
            if publication.qos == QoS::AtMostOnce {
                self.journal
                    .append_nowait(record)
                    .await
                    .map_err(|e| HookError(e.to_string()))?;
                return Ok(None);
            }
            let durable = self
                .journal
                .enqueue(record)
                .await
                .map_err(|e| HookError(e.to_string()))?;
            Ok(Some(Box::pin(async move {
                durable.await.map_err(|e| HookError(e.to_string()))?;
                Ok(())
            }) as crate::hooks::Pending))
        })
    }
}
