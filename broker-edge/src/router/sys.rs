//! Broker statistics as retained `$SYS/broker/...` messages, published at
//! start and every `sys_interval_secs` (never stored: they are regenerated).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::Router;
use crate::message::{MessageProperties, Publication};
use crate::protocol::QoS;

impl Router {
    /// Publishes broker statistics as retained `$SYS/broker/...` messages.
    pub(super) fn publish_sys(&mut self) {
        let m = &self.metrics;
        let stats: [(&str, u64); 9] = [
            ("$SYS/broker/uptime", self.started.elapsed().as_secs()),
            ("$SYS/broker/clients/connected", m.connections.load(Relaxed)),
            ("$SYS/broker/clients/total", self.sessions.len() as u64),
            (
                "$SYS/broker/subscriptions/count",
                m.subscriptions.load(Relaxed),
            ),
            (
                "$SYS/broker/retained messages/count",
                m.retained.load(Relaxed),
            ),
            (
                "$SYS/broker/messages/received",
                m.messages_in.iter().map(|c| c.load(Relaxed)).sum(),
            ),
            (
                "$SYS/broker/messages/sent",
                m.messages_out.iter().map(|c| c.load(Relaxed)).sum(),
            ),
            ("$SYS/broker/bytes/received", m.bytes_in.load(Relaxed)),
            ("$SYS/broker/bytes/sent", m.bytes_out.load(Relaxed)),
        ];
        for (topic, v) in stats {
            self.publish(Arc::new(Publication {
                topic: Arc::from(topic),
                payload: Bytes::from(v.to_string()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: MessageProperties::default(),
                origin: None,
                received: None,
            }));
        }
    }
}
