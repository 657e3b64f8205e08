//! CONNECT and CONNACK for 3.1 and 3.1.1.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{
    DecodeError, DecodeResult, QoS, read_binary, read_string, read_u8, read_u16, write_binary,
    write_header,
};

/// The will a client registers in its CONNECT.
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
}

/// CONNECT (3.1 `MQIsdp` or 3.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level: 3 (`MQIsdp`) or 4.
    pub level: u8,
    /// Client identifier, possibly empty.
    pub client_id: String,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keep-alive in seconds, 0 for none.
    pub keep_alive: u16,
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
        match (&name[..], level) {
            (b"MQTT", 4) | (b"MQIsdp", 3) => {}
            _ => return Err(DecodeError::UnsupportedProtocol(level)),
        }
        let flags = read_u8(b)?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed("reserved CONNECT flag set"));
        }
        let clean_session = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0x03)?;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::Malformed(
                "will QoS or retain without will flag",
            ));
        }
        if has_password && !has_username && level == 4 {
            return Err(DecodeError::Malformed("password without user name"));
        }
        let keep_alive = read_u16(b)?;
        let client_id = read_string(b)?;
        let will = if will_flag {
            let topic = read_string(b)?;
            let payload = read_binary(b)?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(read_string(b)?)
        } else {
            None
        };
        let password = if has_password {
            Some(read_binary(b)?)
        } else {
            None
        };
        if !b.is_empty() {
            return Err(DecodeError::Malformed(
                "trailing bytes after CONNECT payload",
            ));
        }
        Ok(Connect {
            level,
            client_id,
            clean_session,
            keep_alive,
            will,
            username,
            password,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let name: &[u8] = if self.level == 3 { b"MQIsdp" } else { b"MQTT" };
        let mut body = BytesMut::new();
        write_binary(&mut body, name);
        body.put_u8(self.level);
        let mut flags = 0u8;
        if self.clean_session {
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
        write_binary(&mut body, self.client_id.as_bytes());
        if let Some(w) = &self.will {
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

/// CONNACK: session present flag and a 3.1.1 return code (0 accepted,
/// 1 bad protocol, 2 identifier rejected, 3 unavailable, 4 bad credentials,
/// 5 not authorised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// Return code.
    pub code: u8,
}

impl ConnAck {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let flags = read_u8(b)?;
        if flags & 0xfe != 0 {
            return Err(DecodeError::Malformed("reserved CONNACK flags"));
        }
        let code = read_u8(b)?;
        if !b.is_empty() {
            return Err(DecodeError::Malformed("CONNACK longer than 2 bytes"));
        }
        Ok(ConnAck {
            session_present: flags & 1 != 0,
            code,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        write_header(out, 0x20, 2);
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.code);
    }
}
