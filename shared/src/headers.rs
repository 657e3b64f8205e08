//! NATS message header names: the metadata that travels beside a payload.
//!
//! The payload stays byte-for-byte what the device sent; everything plantd
//! knows about it goes in headers. Values are UTF-8 text.

/// JetStream de-duplication id. The edge sets `<site>:<journal sequence>`,
/// so a resend after an outage or crash is dropped by the stream's duplicate
/// window instead of being stored twice.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// The original MQTT topic, exactly as published (the subject holds the
/// escaped form; this header saves decoding it).
pub const TOPIC: &str = "Plantd-Topic";

/// The MQTT QoS the message was published with: `0`, `1` or `2`. On the
/// downlink, the QoS to deliver a command with.
pub const QOS: &str = "Plantd-Qos";

/// `true` when the MQTT RETAIN flag was set (uplink), or when a command must
/// be delivered as retained (downlink).
pub const RETAIN: &str = "Plantd-Retain";

/// When the edge received the message: RFC 3339 UTC with at least
/// millisecond precision (`2026-11-23T03:32:06.123Z`).
pub const RECEIVED: &str = "Plantd-Received";

/// The site that produced or must receive the message.
pub const SITE: &str = "Plantd-Site";

/// The MQTT client id of the publisher.
pub const CLIENT_ID: &str = "Plantd-Client-Id";

/// MQTT 5 content type (property 0x03), passed through unchanged.
pub const CONTENT_TYPE: &str = "Plantd-Content-Type";

/// MQTT 5 payload format indicator (property 0x01): `0` bytes, `1` UTF-8.
pub const PAYLOAD_FORMAT: &str = "Plantd-Payload-Format";

/// Prefix of MQTT 5 user properties: user property `k = v` travels as
/// header `Plantd-User-k: v` (repeated keys become repeated header values,
/// in order).
pub const USER_PROPERTY_PREFIX: &str = "Plantd-User-";

/// MQTT 5 message expiry interval in seconds, as remaining when the edge
/// forwarded the message.
pub const MESSAGE_EXPIRY: &str = "Plantd-Message-Expiry";

/// Downlink: a command's time to live in seconds, counted from its
/// `Plantd-Sent` time. An edge that receives it later drops it and counts
/// it as expired.
pub const TTL: &str = "Plantd-Ttl";

/// Downlink: when the command was sent (RFC 3339 UTC).
pub const SENT: &str = "Plantd-Sent";

/// Request/reply: the MQTT 5 correlation data, base64-encoded (standard
/// alphabet, padded).
pub const CORRELATION: &str = "Plantd-Correlation";

/// Request/reply: the outcome of a service call when it is not a device's
/// answer: `503` (no device serves the topic) or `504` (no answer in time),
/// followed by a space and a reason. Absent on a device's reply.
pub const STATUS: &str = "Plantd-Status";

/// Request/reply: how long the caller waits for the device, in
/// milliseconds (the edge applies its own default when absent).
pub const TIMEOUT_MS: &str = "Plantd-Timeout-Ms";

/// Every header name plantd defines, for documentation and tests.
pub const ALL: &[&str] = &[
    MSG_ID,
    TOPIC,
    QOS,
    RETAIN,
    RECEIVED,
    SITE,
    CLIENT_ID,
    CONTENT_TYPE,
    PAYLOAD_FORMAT,
    MESSAGE_EXPIRY,
    TTL,
    SENT,
    CORRELATION,
    STATUS,
    TIMEOUT_MS,
];

/// Formats milliseconds since the Unix epoch as the RFC 3339 UTC text used
/// by [`RECEIVED`] and [`SENT`] (`2026-11-23T03:32:06.123Z`).
pub fn format_time(ms: u64) -> String {
    // Messages arrive many per millisecond: format each millisecond once
    // per thread.
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    LAST.with_borrow_mut(|(last_ms, text)| {
        if *last_ms != ms {
            let nanos = i128::from(ms) * 1_000_000;
            *text = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            *last_ms = ms;
        }
        text.clone()
    })
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parses [`format_time`]'s text (any RFC 3339 time) back into milliseconds
/// since the Unix epoch; `None` if it does not parse or is before 1970.
pub fn parse_time(text: &str) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The header name carrying MQTT 5 user property `key`.
pub fn user_property(key: &str) -> String {
    format!("{USER_PROPERTY_PREFIX}{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_header_safe() {
        let mut seen = std::collections::HashSet::new();
        for h in ALL {
            assert!(seen.insert(h.to_ascii_lowercase()), "duplicate header {h}");
            assert!(h.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
        }
        assert_eq!(user_property("line"), "Plantd-User-line");
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(format_time(1_795_404_726_123), "2026-11-23T03:32:06.123Z");
        assert_eq!(
            parse_time("2026-11-23T03:32:06.123Z"),
            Some(1_795_404_726_123)
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
