//! NATS message header names: the metadata that travels beside a payload.
//!
//! The payload stays byte-for-byte what the device sent; everything plantd
//! knows about it goes in headers. Values are UTF-8 text.

/// JetStream de-duplication id of an uplinked message:
/// `<site>:<journal id>:<journal sequence>`, made by [`message_id`] and read
/// back by [`MessageId::parse`]. The journal id changes every time an
/// edge's journal is opened and stays with each record, so a resend after
/// an outage or a crash carries the same id (and is dropped by the stream's
/// duplicate window, or not resent at all when the edge learns what the
/// stream holds), while a wiped, restored or copied journal never reuses
/// its predecessor's ids.
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

/// The MQTT client id of the publisher.
pub const CLIENT_ID: &str = "Plantd-Client-Id";

/// MQTT 5 content type (property 0x03), passed through unchanged.
pub const CONTENT_TYPE: &str = "Plantd-Content-Type";

/// MQTT 5 payload format indicator (property 0x01): `0` bytes, `1` UTF-8.
pub const PAYLOAD_FORMAT: &str = "Plantd-Payload-Format";

/// Prefix of MQTT 5 user properties: user property `k = v` travels as
/// header `Plantd-User-k: v` (repeated keys become repeated header values,
/// in order). A key is written with [`user_property`], which escapes what a
/// header name cannot hold; [`user_property_key`] reverses it.
pub const USER_PROPERTY_PREFIX: &str = "Plantd-User-";

/// Present (value `1`) when the plantd header values of this message are
/// escaped with [`escape_value`] because one of them held a control
/// character (a CR or LF would end the header line). Decode every
/// `Plantd-` value of such a message with [`unescape_value`]; messages
/// without it carry their values unchanged.
pub const ESCAPED: &str = "Plantd-Escaped";

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
    CLIENT_ID,
    CONTENT_TYPE,
    PAYLOAD_FORMAT,
    MESSAGE_EXPIRY,
    TTL,
    SENT,
    CORRELATION,
    STATUS,
    TIMEOUT_MS,
    ESCAPED,
];

/// The [`MSG_ID`] of the record `seq` written by journal `journal` on
/// `site`: `<site>:<journal>:<seq>` (a journal id is 16 lowercase hex
/// digits; the site is one subject token, so it holds no `:`).
pub fn message_id(site: &str, journal: &str, seq: u64) -> String {
    format!("{site}:{journal}:{seq}")
}

/// An uplinked message's id, read back from its [`MSG_ID`] header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageId<'a> {
    /// The site whose edge sent it.
    pub site: &'a str,
    /// The journal id of the life that wrote it.
    pub journal: &'a str,
    /// Its journal sequence.
    pub seq: u64,
}

impl<'a> MessageId<'a> {
    /// Parses [`message_id`]'s text; `None` for anything else (including
    /// the `<site>:<seq>` ids of plantd before journal ids).
    pub fn parse(text: &'a str) -> Option<Self> {
        let (site, rest) = text.split_once(':')?;
        let (journal, seq) = rest.split_once(':')?;
        let hex = journal.len() == 16
            && journal
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if site.is_empty() || !hex {
            return None;
        }
        Some(Self {
            site,
            journal,
            seq: seq.parse().ok()?,
        })
    }
}

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

/// The latest time a client may name in a query, 9999-12-31T23:59:59.999Z
/// in ms since the epoch: RFC 3339 cannot write a later one, and range
/// arithmetic (`to - from + 1`, `to + 1`) stays far from `u64`'s end.
pub const MAX_QUERY_TIME_MS: u64 = 253_402_300_799_999;

/// A time a client gives in a query: milliseconds since the epoch or an
/// RFC 3339 time, from 1970 up to [`MAX_QUERY_TIME_MS`]; `None` otherwise
/// (a negative, overflowing or far-future number is not a time).
pub fn parse_query_time(text: &str) -> Option<u64> {
    text.parse::<u64>()
        .ok()
        .or_else(|| parse_time(text))
        .filter(|ms| *ms <= MAX_QUERY_TIME_MS)
}

/// The header name carrying MQTT 5 user property `key`: the prefix and the
/// key, with every byte a NATS header name cannot hold (anything but
/// printable ASCII, and `:`) and `%` itself written as `%XX`. Any UTF-8
/// key a device sends therefore makes a valid name, and
/// [`user_property_key`] gives the key back.
pub fn user_property(key: &str) -> String {
    let mut name = String::with_capacity(USER_PROPERTY_PREFIX.len() + key.len());
    name.push_str(USER_PROPERTY_PREFIX);
    for b in key.bytes() {
        if b.is_ascii_graphic() && b != b':' && b != b'%' {
            name.push(char::from(b));
        } else {
            push_escaped(&mut name, b);
        }
    }
    name
}

/// The user property key a header name carries, or `None` when the name
/// is not a user property (or its escapes are not valid UTF-8).
pub fn user_property_key(name: &str) -> Option<String> {
    let escaped = name
        .get(..USER_PROPERTY_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(USER_PROPERTY_PREFIX))
        .map(|_| &name[USER_PROPERTY_PREFIX.len()..])?;
    unescape(escaped)
}

/// Whether `value` can travel as a header value unchanged: it holds no
/// control character.
pub fn is_plain_value(value: &str) -> bool {
    !value.bytes().any(|b| b.is_ascii_control())
}

/// `value` with control characters and `%` written as `%XX`, for a message
/// that carries [`ESCAPED`]. Reversed by [`unescape_value`].
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_ascii_control() || c == '%' {
            push_escaped(&mut out, c as u8);
        } else {
            out.push(c);
        }
    }
    out
}

/// Reverses [`escape_value`]; `None` for a malformed escape.
pub fn unescape_value(value: &str) -> Option<String> {
    unescape(value)
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 15)]));
}

fn unescape(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = char::from(it.next()?).to_digit(16)?;
            let lo = char::from(it.next()?).to_digit(16)?;
            bytes.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
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
    fn any_user_property_key_makes_a_valid_name_and_comes_back() {
        for key in ["line", "unit: °C", "a%b", "tab\there", "", "ünï cödé\r\n"] {
            let name = user_property(key);
            assert!(
                name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
                "{name:?}"
            );
            assert_eq!(user_property_key(&name).as_deref(), Some(key));
        }
        assert_eq!(user_property_key("Plantd-Topic"), None);
        assert_eq!(user_property_key("Plantd-User-%4"), None);
    }

    #[test]
    fn values_with_control_characters_are_escaped_reversibly() {
        assert!(is_plain_value("50% of °C"));
        assert!(!is_plain_value("two\r\nlines"));
        for v in ["two\r\nlines", "100%\n", "\u{7f}", "ok"] {
            let e = escape_value(v);
            assert!(is_plain_value(&e), "{e:?}");
            assert_eq!(unescape_value(&e).as_deref(), Some(v));
        }
    }

    #[test]
    fn message_ids_round_trip_and_reject_other_shapes() {
        let text = message_id("plant-1", "4f1c0a9e7b2d3c58", 42);
        assert_eq!(text, "plant-1:4f1c0a9e7b2d3c58:42");
        assert_eq!(
            MessageId::parse(&text),
            Some(MessageId {
                site: "plant-1",
                journal: "4f1c0a9e7b2d3c58",
                seq: 42
            })
        );
        for other in [
            "plant-1:42",
            "plant-1:4F1C0A9E7B2D3C58:42",
            "plant-1:4f1c:42",
            ":4f1c0a9e7b2d3c58:42",
            "plant-1:4f1c0a9e7b2d3c58:x",
            "plant-1:4f1c0a9e7b2d3c58:",
        ] {
            assert_eq!(MessageId::parse(other), None, "{other}");
        }
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(format_time(1_795_404_726_123), "2026-11-23T03:32:06.123Z");
        assert_eq!(
            parse_time("2026-11-23T03:32:06.123Z"),
            Some(1_795_404_726_123)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_query_time("1796571900000"), Some(1_796_571_900_000));
        assert_eq!(
            parse_query_time("9999-12-31T23:59:59.999Z"),
            Some(MAX_QUERY_TIME_MS)
        );
        assert_eq!(parse_query_time("18446744073709551615"), None);
        assert_eq!(parse_query_time("253402300800000"), None);
        assert_eq!(parse_query_time("-1"), None);
    }
}
