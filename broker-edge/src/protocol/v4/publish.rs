//! PUBLISH for 3.1.1.

use bytes::{BufMut, Bytes, BytesMut};

use super::read_pkid;
use crate::protocol::{DecodeError, DecodeResult, QoS, read_string, write_binary, write_header};

/// PUBLISH: an application message. The payload is a slice of the read
/// buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Redelivery flag.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name.
    pub topic: String,
    /// Packet identifier; 0 for QoS 0.
    pub pkid: u16,
    /// Application payload.
    pub payload: Bytes,
}

impl Publish {
    pub(super) fn read(flags: u8, mut b: Bytes) -> DecodeResult<Self> {
        let qos = QoS::from_u8((flags >> 1) & 0x03)?;
        let dup = flags & 0x08 != 0;
        if qos == QoS::AtMostOnce && dup {
            return Err(DecodeError::Malformed("DUP set on QoS 0"));
        }
        let topic = read_string(&mut b)?;
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            read_pkid(&mut b)?
        };
        Ok(Publish {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            pkid,
            payload: b,
        })
    }

    /// Size of the encoded packet.
    pub fn encoded_len(&self) -> usize {
        let remaining = remaining_len(&self.topic, self.qos, self.payload.len());
        1 + crate::protocol::varint_len(remaining) + remaining
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        write_publish(
            out,
            self.dup,
            self.qos,
            self.retain,
            &self.topic,
            self.pkid,
            &self.payload,
        );
    }
}

fn remaining_len(topic: &str, qos: QoS, payload: usize) -> usize {
    2 + topic.len() + if qos == QoS::AtMostOnce { 0 } else { 2 } + payload
}

/// Writes a 3.1.1 PUBLISH from its parts, without building a [`Publish`]
/// (the broker's delivery path).
pub fn write_publish(
    out: &mut BytesMut,
    dup: bool,
    qos: QoS,
    retain: bool,
    topic: &str,
    pkid: u16,
    payload: &[u8],
) {
    let mut first = 0x30 | ((qos as u8) << 1);
    if dup {
        first |= 0x08;
    }
    if retain {
        first |= 0x01;
    }
    let remaining = remaining_len(topic, qos, payload.len());
    out.reserve(5 + remaining);
    write_header(out, first, remaining);
    write_binary(out, topic.as_bytes());
    if qos != QoS::AtMostOnce {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
}
