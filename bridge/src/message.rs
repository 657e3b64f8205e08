//! What the edge journals for each uplinked MQTT message, and how it goes
//! onto the wire to JetStream.
//!
//! # Journal encoding (version 1)
//! ```text
//! u8  version (1)
//! u8  flags: bit 0 retain, bits 1-2 QoS, bit 3 payload format present,
//!     bit 4 expiry present
//! u64 received, ms since the Unix epoch
//! str topic, str client id          (str = u16 length + UTF-8)
//! [u8 payload format] [u32 expiry]  (when flagged)
//! opt-str content type, opt-str response topic, opt-bytes correlation data
//!                                   (u8 present flag, then str / u16 length + bytes)
//! u16 user property count, then (str key, str value) each
//! u32 payload length, payload
//! ```
//! All integers little endian. Decoding checks every length against what is
//! left, so a damaged record is an error, never a panic.

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use plantd_shared::headers;
use plantd_shared::subject::{Channel, Site, uplink_subject};
use plantd_shared::topic::Topic;
use thiserror::Error;

const VERSION: u8 = 1;

/// One MQTT message selected for the uplink, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkMessage {
    /// The MQTT topic it was published to.
    pub topic: String,
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// QoS it was published with (0, 1, 2).
    pub qos: u8,
    /// The RETAIN flag.
    pub retain: bool,
    /// When the edge received it, ms since the Unix epoch.
    pub received_ms: u64,
    /// The publishing client.
    pub client_id: String,
    /// MQTT 5 payload format indicator.
    pub payload_format: Option<u8>,
    /// MQTT 5 message expiry interval (seconds) as received.
    pub message_expiry: Option<u32>,
    /// MQTT 5 content type.
    pub content_type: Option<String>,
    /// MQTT 5 response topic.
    pub response_topic: Option<String>,
    /// MQTT 5 correlation data.
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 user properties, in order.
    pub user_properties: Vec<(String, String)>,
}

/// Why journal bytes are not an [`UplinkMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The record ends before a field does.
    #[error("uplink record truncated")]
    Truncated,
    /// An unknown encoding version.
    #[error("unknown uplink record version {0}")]
    Version(u8),
    /// A string is not UTF-8.
    #[error("uplink record has a non-UTF-8 string")]
    Utf8,
    /// A field is longer than its length prefix allows.
    #[error("uplink record field too long: {0}")]
    TooLong(&'static str),
}

fn put_str(out: &mut BytesMut, s: &str, field: &'static str) -> Result<(), DecodeError> {
    let len = u16::try_from(s.len()).map_err(|_| DecodeError::TooLong(field))?;
    out.put_u16_le(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn get_bytes(b: &mut Bytes, len: usize) -> Result<Bytes, DecodeError> {
    if b.remaining() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(b.split_to(len))
}

fn get_u8(b: &mut Bytes) -> Result<u8, DecodeError> {
    if b.remaining() < 1 {
        return Err(DecodeError::Truncated);
    }
    Ok(b.get_u8())
}

fn get_u16(b: &mut Bytes) -> Result<u16, DecodeError> {
    if b.remaining() < 2 {
        return Err(DecodeError::Truncated);
    }
    Ok(b.get_u16_le())
}

fn get_u32(b: &mut Bytes) -> Result<u32, DecodeError> {
    if b.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    Ok(b.get_u32_le())
}

fn get_str(b: &mut Bytes) -> Result<String, DecodeError> {
    let len = usize::from(get_u16(b)?);
    let raw = get_bytes(b, len)?;
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Utf8)
}

fn get_opt_str(b: &mut Bytes) -> Result<Option<String>, DecodeError> {
    match get_u8(b)? {
        0 => Ok(None),
        _ => get_str(b).map(Some),
    }
}

impl UplinkMessage {
    /// Encodes for the journal.
    ///
    /// # Errors
    /// [`DecodeError::TooLong`] when a string exceeds 65,535 bytes (MQTT
    /// cannot carry such strings, so this means a caller bug).
    pub fn encode(&self) -> Result<Bytes, DecodeError> {
        let mut out = BytesMut::with_capacity(64 + self.topic.len() + self.payload.len());
        out.put_u8(VERSION);
        let mut flags = u8::from(self.retain) | ((self.qos & 3) << 1);
        if self.payload_format.is_some() {
            flags |= 1 << 3;
        }
        if self.message_expiry.is_some() {
            flags |= 1 << 4;
        }
        out.put_u8(flags);
        out.put_u64_le(self.received_ms);
        put_str(&mut out, &self.topic, "topic")?;
        put_str(&mut out, &self.client_id, "client id")?;
        if let Some(f) = self.payload_format {
            out.put_u8(f);
        }
        if let Some(e) = self.message_expiry {
            out.put_u32_le(e);
        }
        for (s, field) in [
            (&self.content_type, "content type"),
            (&self.response_topic, "response topic"),
        ] {
            match s {
                Some(s) => {
                    out.put_u8(1);
                    put_str(&mut out, s, field)?;
                }
                None => out.put_u8(0),
            }
        }
        match &self.correlation_data {
            Some(c) => {
                out.put_u8(1);
                let len =
                    u16::try_from(c.len()).map_err(|_| DecodeError::TooLong("correlation data"))?;
                out.put_u16_le(len);
                out.put_slice(c);
            }
            None => out.put_u8(0),
        }
        let n = u16::try_from(self.user_properties.len())
            .map_err(|_| DecodeError::TooLong("user properties"))?;
        out.put_u16_le(n);
        for (k, v) in &self.user_properties {
            put_str(&mut out, k, "user property")?;
            put_str(&mut out, v, "user property")?;
        }
        let len = u32::try_from(self.payload.len()).map_err(|_| DecodeError::TooLong("payload"))?;
        out.put_u32_le(len);
        out.put_slice(&self.payload);
        Ok(out.freeze())
    }

    /// Decodes a journal record. The payload shares `bytes`' buffer.
    ///
    /// # Errors
    /// [`DecodeError`] for a truncated or damaged record.
    pub fn decode(mut bytes: Bytes) -> Result<Self, DecodeError> {
        let b = &mut bytes;
        let version = get_u8(b)?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags = get_u8(b)?;
        if b.remaining() < 8 {
            return Err(DecodeError::Truncated);
        }
        let received_ms = b.get_u64_le();
        let topic = get_str(b)?;
        let client_id = get_str(b)?;
        let payload_format = if flags & (1 << 3) != 0 {
            Some(get_u8(b)?)
        } else {
            None
        };
        let message_expiry = if flags & (1 << 4) != 0 {
            Some(get_u32(b)?)
        } else {
            None
        };
        let content_type = get_opt_str(b)?;
        let response_topic = get_opt_str(b)?;
        let correlation_data = match get_u8(b)? {
            0 => None,
            _ => {
                let len = usize::from(get_u16(b)?);
                Some(get_bytes(b, len)?)
            }
        };
        let n = get_u16(b)?;
        let mut user_properties = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            user_properties.push((get_str(b)?, get_str(b)?));
        }
        let len = get_u32(b)? as usize;
        let payload = get_bytes(b, len)?;
        Ok(Self {
            topic,
            payload,
            qos: (flags >> 1) & 3,
            retain: flags & 1 != 0,
            received_ms,
            client_id,
            payload_format,
            message_expiry,
            content_type,
            response_topic,
            correlation_data,
            user_properties,
        })
    }

    /// The subject: `plantd.<site>.up.<escaped topic>`, or for a log line
    /// on `$plantd/log/<source>` `plantd.<site>.log.<escaped source>`
    /// ([`uplink_subject`]); `None` when the topic is not a valid MQTT topic
    /// name (the edge never journals one).
    pub fn subject(&self, site: &Site) -> Option<String> {
        self.channel_and_subject(site).map(|(_, s)| s)
    }

    /// The channel (up or log) and the subject; see [`Self::subject`].
    pub fn channel_and_subject(&self, site: &Site) -> Option<(Channel, String)> {
        let topic = Topic::new(self.topic.as_str()).ok()?;
        Some(uplink_subject(site, &topic))
    }

    /// The headers the architecture defines, for journal record `seq`
    /// written by the journal life `journal`.
    ///
    /// Anything a device sent becomes a valid header: user property keys
    /// are escaped into the name ([`headers::user_property`]), and when a
    /// value holds a control character (a CR or LF would end the header
    /// line) every plantd value of the message is escaped and
    /// [`headers::ESCAPED`] says so.
    pub fn headers(&self, site: &Site, journal: &str, seq: u64) -> HeaderMap {
        const MSG_ID: HeaderName = HeaderName::from_static(headers::MSG_ID);
        const TOPIC: HeaderName = HeaderName::from_static(headers::TOPIC);
        const QOS: HeaderName = HeaderName::from_static(headers::QOS);
        const RETAIN: HeaderName = HeaderName::from_static(headers::RETAIN);
        const RECEIVED: HeaderName = HeaderName::from_static(headers::RECEIVED);
        const CLIENT_ID: HeaderName = HeaderName::from_static(headers::CLIENT_ID);
        const CONTENT_TYPE: HeaderName = HeaderName::from_static(headers::CONTENT_TYPE);
        let esc = Escaping::for_values(
            [self.topic.as_str(), self.client_id.as_str()]
                .into_iter()
                .chain(self.content_type.as_deref())
                .chain(self.user_properties.iter().map(|(_, v)| v.as_str())),
        );
        let value = |v: &str| esc.value(v);
        let mut h = HeaderMap::new();
        h.insert(MSG_ID, headers::message_id(site.as_str(), journal, seq));
        h.insert(TOPIC, value(&self.topic));
        h.insert(
            QOS,
            match self.qos {
                0 => "0",
                1 => "1",
                2 => "2",
                _ => "3",
            },
        );
        h.insert(RETAIN, if self.retain { "true" } else { "false" });
        h.insert(RECEIVED, headers::format_time(self.received_ms));
        if !self.client_id.is_empty() {
            h.insert(CLIENT_ID, value(&self.client_id));
        }
        if let Some(ct) = &self.content_type {
            h.insert(CONTENT_TYPE, value(ct));
        }
        if let Some(f) = self.payload_format {
            h.insert(headers::PAYLOAD_FORMAT, f.to_string());
        }
        if let Some(e) = self.message_expiry {
            h.insert(headers::MESSAGE_EXPIRY, e.to_string());
        }
        if let Some(c) = &self.correlation_data {
            h.insert(headers::CORRELATION, BASE64.encode(c));
        }
        for (k, v) in &self.user_properties {
            h.append(headers::user_property(k), value(v));
        }
        esc.mark(&mut h);
        h
    }
}

/// How the strings a device sent go into the header values of one
/// message: unchanged, or — when any of them holds a control character (a
/// CR or LF would end the header line) — all escaped with
/// [`headers::escape_value`] and the message marked [`headers::ESCAPED`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaping {
    escaped: bool,
}

impl Escaping {
    /// The escaping for a message whose device strings are `values`.
    pub(crate) fn for_values<'a>(mut values: impl Iterator<Item = &'a str>) -> Self {
        Self {
            escaped: !values.all(headers::is_plain_value),
        }
    }

    /// `v` as a header value of this message.
    pub(crate) fn value(self, v: &str) -> HeaderValue {
        if self.escaped {
            HeaderValue::from(headers::escape_value(v))
        } else {
            HeaderValue::from(v)
        }
    }

    /// Adds the [`headers::ESCAPED`] mark when the values are escaped.
    pub(crate) fn mark(self, h: &mut HeaderMap) {
        if self.escaped {
            h.insert(headers::ESCAPED, "1");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const JOURNAL: &str = "4f1c0a9e7b2d3c58";

    fn full() -> UplinkMessage {
        UplinkMessage {
            topic: "line1/press.2/temp".into(),
            payload: Bytes::from_static(b"\x00\x01binary\xff"),
            qos: 2,
            retain: true,
            received_ms: 1_795_404_726_123,
            client_id: "plc-7".into(),
            payload_format: Some(1),
            message_expiry: Some(60),
            content_type: Some("application/json".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"abc")),
            user_properties: vec![("unit".into(), "C".into()), ("unit".into(), "K".into())],
        }
    }

    #[test]
    fn round_trip() {
        let m = full();
        assert_eq!(UplinkMessage::decode(m.encode().expect("encode")), Ok(m));
        let minimal = UplinkMessage {
            payload_format: None,
            message_expiry: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![],
            ..full()
        };
        assert_eq!(
            UplinkMessage::decode(minimal.encode().expect("encode")),
            Ok(minimal)
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = full().encode().expect("encode");
        for cut in 0..bytes.len() {
            assert!(
                UplinkMessage::decode(bytes.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn headers_follow_the_contract() {
        let site = Site::new("plant-1").expect("site");
        let m = full();
        let h = m.headers(&site, JOURNAL, 42);
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
        assert_eq!(
            get(headers::MSG_ID).as_deref(),
            Some("plant-1:4f1c0a9e7b2d3c58:42")
        );
        assert_eq!(get(headers::TOPIC).as_deref(), Some("line1/press.2/temp"));
        assert_eq!(get(headers::QOS).as_deref(), Some("2"));
        assert_eq!(get(headers::RETAIN).as_deref(), Some("true"));
        assert_eq!(
            get(headers::RECEIVED).as_deref(),
            Some("2026-11-23T03:32:06.123Z")
        );
        assert_eq!(get(headers::CORRELATION).as_deref(), Some("YWJj"));
        let units: Vec<_> = h
            .get_all("Plantd-User-unit")
            .map(|v| v.as_str().to_owned())
            .collect();
        assert_eq!(units, vec!["C", "K"]);
        assert_eq!(
            m.subject(&site).as_deref(),
            Some("plantd.plant-1.up.line1.press%2E2.temp")
        );
    }

    #[test]
    fn log_lines_go_to_the_log_channel_with_the_same_headers() {
        let site = Site::new("plant-1").expect("site");
        let m = UplinkMessage {
            topic: "$plantd/log/line1/plc".into(),
            payload: Bytes::from_static(b"level=error msg=\"pump stalled\""),
            user_properties: vec![("level".into(), "error".into())],
            ..full()
        };
        assert_eq!(
            m.channel_and_subject(&site),
            Some((Channel::Log, "plantd.plant-1.log.line1.plc".to_owned()))
        );
        let h = m.headers(&site, JOURNAL, 9);
        assert_eq!(
            h.get(headers::TOPIC).map(|v| v.as_str()),
            Some("$plantd/log/line1/plc")
        );
        assert_eq!(
            h.get("Plantd-User-level").map(|v| v.as_str()),
            Some("error")
        );
        assert_eq!(
            h.get(headers::MSG_ID).map(|v| v.as_str()),
            Some("plant-1:4f1c0a9e7b2d3c58:9")
        );
    }

    #[test]
    fn anything_a_device_sends_makes_valid_headers_that_decode_back() {
        let site = Site::new("plant-1").expect("site");
        let mut m = full();
        m.client_id = "plc\r\n7".into();
        m.content_type = Some("text/plain\nX-Injected: 1".into());
        m.user_properties = vec![("unit: °C".into(), "50%\r\n".into())];
        let h = m.headers(&site, JOURNAL, 1);
        // Every value fits on its header line: nothing can be injected.
        for (name, values) in h.iter() {
            for v in values {
                assert!(headers::is_plain_value(v.as_str()), "{name}: {v:?}");
            }
        }
        assert_eq!(h.get(headers::ESCAPED).map(|v| v.as_str()), Some("1"));
        let get = |k: &str| {
            h.get(k)
                .and_then(|v| headers::unescape_value(v.as_str()))
                .expect(k)
        };
        assert_eq!(get(headers::CLIENT_ID), "plc\r\n7");
        assert_eq!(get(headers::CONTENT_TYPE), "text/plain\nX-Injected: 1");
        assert_eq!(get(headers::TOPIC), m.topic);
        let name = headers::user_property("unit: °C");
        assert_eq!(
            headers::user_property_key(&name).as_deref(),
            Some("unit: °C")
        );
        assert_eq!(get(&name), "50%\r\n");
        // A message without control characters is not escaped.
        assert!(
            full()
                .headers(&site, JOURNAL, 2)
                .get(headers::ESCAPED)
                .is_none()
        );
    }

    proptest! {
        #[test]
        fn headers_never_panic(
            client in ".*",
            key in ".*",
            value in ".*",
            ct in proptest::option::of(".*"),
        ) {
            let site = Site::new("plant-1").expect("site");
            let mut m = full();
            m.client_id = client;
            m.content_type = ct;
            m.user_properties = vec![(key, value)];
            for (_, values) in m.headers(&site, JOURNAL, 1).iter() {
                for v in values {
                    prop_assert!(headers::is_plain_value(v.as_str()));
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = UplinkMessage::decode(Bytes::from(bytes));
        }
    }
}
