//! CONNECT and CONNACK for 5.0.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Allowed, Properties, ack::trailing};
use crate::protocol::{
    DecodeError, DecodeResult, QoS, read_binary, read_string, read_u8, read_u16, write_binary,
    write_header,
};

/// The will a client registers in its CONNECT, with its properties
/// (will delay interval, message expiry, content type, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic the will is published to.
    pub topic: String,
    /// Will payload.
    pub payload: Bytes,
    /// QoS of the will.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
    /// Will properties.
    pub properties: Properties,
}

/// CONNECT (5.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Client identifier, possibly empty.
    pub client_id: String,
    /// Clean start flag.
    pub clean_start: bool,
    /// Keep-alive in seconds, 0 for none.
    pub keep_alive: u16,
    /// CONNECT properties.
    pub properties: Properties,
    /// Optional will message.
    pub will: Option<LastWill>,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password.
    pub password: Option<Bytes>,
}

impl Connect {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let name = read_binary(b)?;
        let level = read_u8(b)?;
        if &name[..] != b"MQTT" || level != 5 {
            return Err(DecodeError::UnsupportedProtocol(level));
        }
        let flags = read_u8(b)?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed("reserved CONNECT flag set"));
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0x03)?;
        let will_retain = flags & 0x20 != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::Malformed(
                "will QoS or retain without will flag",
            ));
        }
        let keep_alive = read_u16(b)?;
        let properties = Properties::read(b, Allowed::CONNECT)?;
        let client_id = read_string(b)?;
        let will = if will_flag {
            let properties = Properties::read(b, Allowed::WILL)?;
            let topic = read_string(b)?;
            let payload = read_binary(b)?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if flags & 0x80 != 0 {
            Some(read_string(b)?)
        } else {
            None
        };
        let password = if flags & 0x40 != 0 {
            Some(read_binary(b)?)
        } else {
            None
        };
        trailing(b)?;
        Ok(Connect {
            client_id,
            clean_start,
            keep_alive,
            properties,
            will,
            username,
            password,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        write_binary(&mut body, b"MQTT");
        body.put_u8(5);
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | ((w.qos as u8) << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.put_u8(flags);
        body.put_u16(self.keep_alive);
        body.put_slice(&self.properties.encode());
        write_binary(&mut body, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            body.put_slice(&w.properties.encode());
            write_binary(&mut body, w.topic.as_bytes());
            write_binary(&mut body, &w.payload);
        }
        if let Some(u) = &self.username {
            write_binary(&mut body, u.as_bytes());
        }
        if let Some(p) = &self.password {
            write_binary(&mut body, p);
        }
        write_header(out, 0x10, body.len());
        out.put_slice(&body);
    }
}

/// CONNACK (5.0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// Reason code (0 success, 0x80 and above refused).
    pub reason: u8,
    /// What the server tells the client about itself and the session.
    pub properties: Properties,
}

impl ConnAck {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let flags = read_u8(b)?;
        if flags & 0xfe != 0 {
            return Err(DecodeError::Malformed("reserved CONNACK flags"));
        }
        let reason = read_u8(b)?;
        let properties = Properties::read(b, Allowed::CONNACK)?;
        trailing(b)?;
        Ok(ConnAck {
            session_present: flags & 1 != 0,
            reason,
            properties,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let props = self.properties.encode();
        write_header(out, 0x20, 2 + props.len());
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.reason);
        out.put_slice(&props);
    }
}
