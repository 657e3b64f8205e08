//! MQTT 5 properties: one struct holds every property, and each packet type
//! declares which identifiers it may carry ([`Allowed`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::protocol::{
    DecodeError, DecodeResult, read_binary, read_string, read_u8, read_u16, read_u32, read_varint,
    varint_len, write_binary, write_varint,
};

/// The property identifiers a packet type may carry, as a bit set.
#[derive(Debug, Clone, Copy)]
pub struct Allowed(u64);

const fn set(ids: &[u8]) -> Allowed {
    let mut bits = 0u64;
    let mut i = 0;
    while i < ids.len() {
        bits |= 1 << ids[i];
        i += 1;
    }
    Allowed(bits)
}

impl Allowed {
    /// CONNECT.
    pub const CONNECT: Allowed = set(&[0x11, 0x21, 0x27, 0x22, 0x19, 0x17, 0x26, 0x15, 0x16]);
    /// The will properties inside CONNECT.
    pub const WILL: Allowed = set(&[0x18, 0x01, 0x02, 0x03, 0x08, 0x09, 0x26]);
    /// CONNACK.
    pub const CONNACK: Allowed = set(&[
        0x11, 0x21, 0x24, 0x25, 0x27, 0x12, 0x22, 0x1f, 0x26, 0x28, 0x29, 0x2a, 0x13, 0x1a, 0x1c,
        0x15, 0x16,
    ]);
    /// PUBLISH.
    pub const PUBLISH: Allowed = set(&[0x01, 0x02, 0x23, 0x08, 0x09, 0x26, 0x0b, 0x03]);
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK.
    pub const ACK: Allowed = set(&[0x1f, 0x26]);
    /// SUBSCRIBE.
    pub const SUBSCRIBE: Allowed = set(&[0x0b, 0x26]);
    /// UNSUBSCRIBE.
    pub const UNSUBSCRIBE: Allowed = set(&[0x26]);
    /// DISCONNECT.
    pub const DISCONNECT: Allowed = set(&[0x11, 0x1f, 0x26, 0x1c]);
    /// AUTH.
    pub const AUTH: Allowed = set(&[0x15, 0x16, 0x1f, 0x26]);

    fn contains(self, id: u8) -> bool {
        id < 64 && self.0 & (1 << id) != 0
    }
}

/// Every MQTT 5 property; a packet uses the subset [`Allowed`] for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

fn once<T>(slot: &mut Option<T>, v: T) -> DecodeResult<()> {
    if slot.is_some() {
        return Err(DecodeError::Protocol("property included more than once"));
    }
    *slot = Some(v);
    Ok(())
}

fn flag(v: u8) -> DecodeResult<u8> {
    if v > 1 {
        return Err(DecodeError::Protocol("property must be 0 or 1"));
    }
    Ok(v)
}

/// A Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
fn response_topic(t: String) -> DecodeResult<String> {
    if t.contains(['+', '#']) {
        return Err(DecodeError::Protocol("wildcard in Response Topic"));
    }
    Ok(t)
}

fn nonzero_u16(v: u16) -> DecodeResult<u16> {
    if v == 0 {
        return Err(DecodeError::Protocol("property must not be 0"));
    }
    Ok(v)
}

impl Properties {
    /// Reads a property length and the properties it covers.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] for truncation or unknown identifiers,
    /// [`DecodeError::Protocol`] for a property not allowed here, repeated,
    /// or out of range.
    pub fn read(b: &mut Bytes, allowed: Allowed) -> DecodeResult<Self> {
        let len = read_varint(b)? as usize;
        if b.remaining() < len {
            return Err(DecodeError::Malformed("property length exceeds packet"));
        }
        let mut p = b.split_to(len);
        let mut props = Properties::default();
        while p.has_remaining() {
            let id = read_varint(&mut p)?;
            let id = u8::try_from(id).map_err(|_| DecodeError::Malformed("unknown property"))?;
            if !allowed.contains(id) {
                return Err(DecodeError::Protocol("property not allowed in this packet"));
            }
            let p = &mut p;
            match id {
                0x01 => once(&mut props.payload_format_indicator, flag(read_u8(p)?)?)?,
                0x02 => once(&mut props.message_expiry_interval, read_u32(p)?)?,
                0x03 => once(&mut props.content_type, read_string(p)?)?,
                0x08 => once(&mut props.response_topic, response_topic(read_string(p)?)?)?,
                0x09 => once(&mut props.correlation_data, read_binary(p)?)?,
                0x0b => {
                    let v = read_varint(p)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("subscription identifier 0"));
                    }
                    props.subscription_identifiers.push(v);
                }
                0x11 => once(&mut props.session_expiry_interval, read_u32(p)?)?,
                0x12 => once(&mut props.assigned_client_identifier, read_string(p)?)?,
                0x13 => once(&mut props.server_keep_alive, read_u16(p)?)?,
                0x15 => once(&mut props.authentication_method, read_string(p)?)?,
                0x16 => once(&mut props.authentication_data, read_binary(p)?)?,
                0x17 => once(&mut props.request_problem_information, flag(read_u8(p)?)?)?,
                0x18 => once(&mut props.will_delay_interval, read_u32(p)?)?,
                0x19 => once(&mut props.request_response_information, flag(read_u8(p)?)?)?,
                0x1a => once(&mut props.response_information, read_string(p)?)?,
                0x1c => once(&mut props.server_reference, read_string(p)?)?,
                0x1f => once(&mut props.reason_string, read_string(p)?)?,
                0x21 => once(&mut props.receive_maximum, nonzero_u16(read_u16(p)?)?)?,
                0x22 => once(&mut props.topic_alias_maximum, read_u16(p)?)?,
                0x23 => once(&mut props.topic_alias, nonzero_u16(read_u16(p)?)?)?,
                0x24 => once(&mut props.maximum_qos, flag(read_u8(p)?)?)?,
                0x25 => once(&mut props.retain_available, flag(read_u8(p)?)?)?,
                0x26 => {
                    let k = read_string(p)?;
                    let v = read_string(p)?;
                    props.user_properties.push((k, v));
                }
                0x27 => {
                    let v = read_u32(p)?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("maximum packet size 0"));
                    }
                    once(&mut props.maximum_packet_size, v)?;
                }
                0x28 => once(
                    &mut props.wildcard_subscription_available,
                    flag(read_u8(p)?)?,
                )?,
                0x29 => once(
                    &mut props.subscription_identifier_available,
                    flag(read_u8(p)?)?,
                )?,
                0x2a => once(&mut props.shared_subscription_available, flag(read_u8(p)?)?)?,
                _ => return Err(DecodeError::Malformed("unknown property")),
            }
        }
        Ok(props)
    }

    /// True when no property is set (the encoding is a single zero byte).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Encodes the properties without their length prefix.
    fn body(&self) -> BytesMut {
        let mut o = BytesMut::new();
        let o = &mut o;
        fn byte(o: &mut BytesMut, id: u8, v: Option<u8>) {
            if let Some(v) = v {
                o.put_u8(id);
                o.put_u8(v);
            }
        }
        fn short(o: &mut BytesMut, id: u8, v: Option<u16>) {
            if let Some(v) = v {
                o.put_u8(id);
                o.put_u16(v);
            }
        }
        fn long(o: &mut BytesMut, id: u8, v: Option<u32>) {
            if let Some(v) = v {
                o.put_u8(id);
                o.put_u32(v);
            }
        }
        fn bin(o: &mut BytesMut, id: u8, v: Option<&[u8]>) {
            if let Some(v) = v {
                o.put_u8(id);
                write_binary(o, v);
            }
        }
        fn s(v: &Option<String>) -> Option<&[u8]> {
            v.as_deref().map(str::as_bytes)
        }
        byte(o, 0x01, self.payload_format_indicator);
        long(o, 0x02, self.message_expiry_interval);
        bin(o, 0x03, s(&self.content_type));
        bin(o, 0x08, s(&self.response_topic));
        bin(o, 0x09, self.correlation_data.as_deref());
        for id in &self.subscription_identifiers {
            o.put_u8(0x0b);
            write_varint(o, *id as usize);
        }
        long(o, 0x11, self.session_expiry_interval);
        bin(o, 0x12, s(&self.assigned_client_identifier));
        short(o, 0x13, self.server_keep_alive);
        bin(o, 0x15, s(&self.authentication_method));
        bin(o, 0x16, self.authentication_data.as_deref());
        byte(o, 0x17, self.request_problem_information);
        long(o, 0x18, self.will_delay_interval);
        byte(o, 0x19, self.request_response_information);
        bin(o, 0x1a, s(&self.response_information));
        bin(o, 0x1c, s(&self.server_reference));
        bin(o, 0x1f, s(&self.reason_string));
        short(o, 0x21, self.receive_maximum);
        short(o, 0x22, self.topic_alias_maximum);
        short(o, 0x23, self.topic_alias);
        byte(o, 0x24, self.maximum_qos);
        byte(o, 0x25, self.retain_available);
        for (k, v) in &self.user_properties {
            o.put_u8(0x26);
            write_binary(o, k.as_bytes());
            write_binary(o, v.as_bytes());
        }
        long(o, 0x27, self.maximum_packet_size);
        byte(o, 0x28, self.wildcard_subscription_available);
        byte(o, 0x29, self.subscription_identifier_available);
        byte(o, 0x2a, self.shared_subscription_available);
        std::mem::take(o)
    }

    /// Writes the properties with their length prefix straight onto `out`.
    pub fn write(&self, out: &mut BytesMut) {
        if self.is_empty() {
            out.put_u8(0);
        } else {
            out.put_slice(&self.encode());
        }
    }

    /// Encodes the properties with their length prefix, ready to be copied
    /// into a packet; `len()` of the result is what the packet needs.
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::new();
        if self.is_empty() {
            out.put_u8(0);
            return out;
        }
        let body = self.body();
        out.reserve(varint_len(body.len()) + body.len());
        write_varint(&mut out, body.len());
        out.put_slice(&body);
        out
    }
}
