//! PUBLISH for 5.0.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Allowed, Properties, read_pkid};
use crate::protocol::{
    DecodeError, DecodeResult, QoS, read_binary, varint_len, write_binary, write_header,
};

/// PUBLISH: an application message with its properties. The topic may be
/// empty when a topic alias stands for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name (empty when only an alias is sent).
    pub topic: String,
    /// Packet identifier; 0 for QoS 0.
    pub pkid: u16,
    /// PUBLISH properties.
    pub properties: Properties,
    /// Application payload (a slice of the read buffer, no copy).
    pub payload: Bytes,
}

impl Publish {
    pub(super) fn read(flags: u8, mut b: Bytes) -> DecodeResult<Self> {
        let qos = QoS::from_u8((flags >> 1) & 0x03)?;
        let dup = flags & 0x08 != 0;
        if qos == QoS::AtMostOnce && dup {
            return Err(DecodeError::Malformed("DUP set on QoS 0"));
        }
        // Topic: an MQTT string that may be empty (alias).
        let raw = read_binary(&mut b)?;
        let topic = std::str::from_utf8(&raw)
            .map_err(|_| DecodeError::Malformed("invalid UTF-8"))?
            .to_owned();
        if topic.contains('\0') {
            return Err(DecodeError::Malformed("U+0000 in topic"));
        }
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            read_pkid(&mut b)?
        };
        let properties = Properties::read(&mut b, Allowed::PUBLISH)?;
        Ok(Publish {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            pkid,
            properties,
            payload: b,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let props = (!self.properties.is_empty()).then_some(&self.properties);
        write_publish(
            out,
            self.dup,
            self.qos,
            self.retain,
            &self.topic,
            self.pkid,
            props,
            &self.payload,
        );
    }
}

/// Writes a 5.0 PUBLISH from its parts, without building a [`Publish`] (the
/// broker's delivery path). `None` properties encode as a zero length.
#[allow(clippy::too_many_arguments)]
pub fn write_publish(
    out: &mut BytesMut,
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &str,
    pkid: u16,
    properties: Option<&Properties>,
    payload: &[u8],
) {
    let props = properties.map(Properties::encode);
    let remaining = 2
        + topic.len()
        + if qos == QoS::AtMostOnce { 0 } else { 2 }
        + props.as_ref().map_or(1, |p| p.len())
        + payload.len();
    let mut first = 0x30 | ((qos as u8) << 1);
    if dup {
        first |= 0x08;
    }
    if retain {
        first |= 0x01;
    }
    out.reserve(1 + varint_len(remaining) + remaining);
    write_header(out, first, remaining);
    write_binary(out, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        out.put_u16(pkid);
    }
    match &props {
        Some(p) => out.put_slice(p),
        None => out.put_u8(0),
    }
    out.put_slice(payload);
}
