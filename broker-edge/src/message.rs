//! What flows through the broker: a [`Publication`] (one accepted PUBLISH,
//! shared by every subscriber it goes to), a [`Delivery`] (one subscriber's
//! copy: its QoS, retain flag and subscription identifiers) and a [`Will`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::clock::Clock;
use crate::protocol::QoS;
use crate::protocol::v5::Properties;

/// The MQTT 5 properties a message carries from publisher to subscriber
/// unchanged (message expiry is recomputed on delivery).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// Payload format indicator (1: UTF-8 text).
    pub payload_format_indicator: Option<u8>,
    /// Seconds the message lives, counted from [`Publication::received`].
    pub message_expiry_interval: Option<u32>,
    /// MIME type of the payload.
    pub content_type: Option<String>,
    /// Topic for a reply (request/response).
    pub response_topic: Option<String>,
    /// Opaque data tying a reply to its request.
    pub correlation_data: Option<Bytes>,
    /// User properties, order preserved.
    pub user_properties: Vec<(String, String)>,
}

impl MessageProperties {
    /// Takes the message properties out of decoded PUBLISH or will properties.
    pub fn from_properties(p: &mut Properties) -> Self {
        MessageProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.take(),
            response_topic: p.response_topic.take(),
            correlation_data: p.correlation_data.take(),
            user_properties: std::mem::take(&mut p.user_properties),
        }
    }

    /// True when no property is set (the common case: nothing to encode).
    pub fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.content_type.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
    }

    /// Writes these properties into an outgoing PUBLISH's properties.
    pub fn apply(&self, p: &mut Properties) {
        p.payload_format_indicator = self.payload_format_indicator;
        p.message_expiry_interval = self.message_expiry_interval;
        p.content_type.clone_from(&self.content_type);
        p.response_topic.clone_from(&self.response_topic);
        p.correlation_data.clone_from(&self.correlation_data);
        p.user_properties.clone_from(&self.user_properties);
    }
}

/// One accepted application message.
#[derive(Debug, Clone)]
pub struct Publication {
    /// Topic name it was published to.
    pub topic: Arc<str>,
    /// Payload bytes, never copied after decoding.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Whether the publisher set RETAIN.
    pub retain: bool,
    /// Properties passed through to subscribers.
    pub properties: MessageProperties,
    /// Client id of the publisher (for no-local); `None` for the broker.
    pub origin: Option<Arc<str>>,
    /// When the broker accepted it; recorded only when the message has a
    /// Message Expiry Interval (which counts from here), to keep the clock
    /// off the hot path.
    pub received: Option<Instant>,
}

impl Publication {
    /// The `received` stamp a publication with these properties needs,
    /// read from `clock` (the broker's, [`crate::Config::clock`]).
    pub fn stamp(properties: &MessageProperties, clock: &Clock) -> Option<Instant> {
        properties.message_expiry_interval.map(|_| clock.now())
    }

    /// Seconds of life left by `clock`, `None` when the message never
    /// expires, and `Some(0)` when it has expired and must be dropped. The
    /// clock is read only for a message with an expiry.
    pub fn remaining_expiry(&self, clock: &Clock) -> Option<u32> {
        self.properties.message_expiry_interval?;
        self.remaining_expiry_at(clock.now())
    }

    /// [`remaining_expiry`](Self::remaining_expiry) at `now`.
    pub fn remaining_expiry_at(&self, now: Instant) -> Option<u32> {
        let interval = self.properties.message_expiry_interval?;
        let elapsed = self
            .received
            .map_or(0, |r| now.saturating_duration_since(r).as_secs());
        Some(u32::try_from(u64::from(interval).saturating_sub(elapsed)).unwrap_or(0))
    }

    /// A copy whose payload owns exactly its bytes. A decoded payload is a
    /// slice of the connection's read buffer and keeps all of it alive;
    /// messages that are kept (retained, queued for an offline session) are
    /// compacted so that each holds only its own bytes.
    pub fn compacted(&self) -> Publication {
        Publication {
            payload: Bytes::copy_from_slice(&self.payload),
            ..self.clone()
        }
    }

    /// True when the message expiry interval has passed by `clock`.
    pub fn is_expired(&self, clock: &Clock) -> bool {
        self.remaining_expiry(clock) == Some(0)
    }
}

/// One subscriber's copy of a publication.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub publication: Arc<Publication>,
    /// QoS for this subscriber: min(published, granted).
    pub qos: QoS,
    /// RETAIN flag on the wire for this subscriber.
    pub retain: bool,
    /// Identifiers of every matching subscription that had one (v5).
    pub subscription_ids: Vec<u32>,
    /// Its sequence number in the session's queue in the session store,
    /// when it is stored there (QoS 1/2 for a persistent session with
    /// `--data-dir`): the link reports its progress under this number.
    pub stored: Option<u64>,
}

/// A will registered at CONNECT, published when the connection ends
/// without a normal DISCONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    /// Topic to publish to.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Message properties of the will.
    pub properties: MessageProperties,
    /// v5 Will Delay Interval in seconds (0 for v3).
    pub delay_secs: u32,
}

impl Will {
    /// The publication sent when the will fires, its expiry counting from
    /// now by `clock`.
    pub fn into_publication(self, origin: Option<Arc<str>>, clock: &Clock) -> Publication {
        let received = Publication::stamp(&self.properties, clock);
        Publication {
            topic: self.topic,
            payload: self.payload,
            qos: self.qos,
            retain: self.retain,
            properties: self.properties,
            origin,
            received,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    #[test]
    fn compacted_payload_no_longer_shares_the_read_buffer() {
        let read_buffer = Bytes::from(vec![7u8; 4096]);
        let p = Publication {
            topic: Arc::from("t"),
            payload: read_buffer.slice(100..164),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: MessageProperties::default(),
            origin: None,
            received: None,
        };
        let c = p.compacted();
        assert_eq!(c.payload, p.payload);
        assert_ne!(c.payload.as_ptr(), p.payload.as_ptr(), "own allocation");
        assert_eq!((c.qos, c.retain, &*c.topic), (p.qos, p.retain, "t"));
    }
}
