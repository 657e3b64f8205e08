//! PUBACK, PUBREC, PUBREL, PUBCOMP ([`Ack`]) and DISCONNECT / AUTH
//! ([`Disconnect`]): a reason code and properties, both optional on the wire.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Allowed, Properties, read_pkid};
use crate::protocol::{DecodeResult, read_u8, write_header};

/// A publish acknowledgement of any of the four kinds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// Packet identifier.
    pub pkid: u16,
    /// Reason code (0 success).
    pub reason: u8,
    /// Reason string and user properties.
    pub properties: Properties,
}

impl Ack {
    /// An acknowledgement with a reason code and no properties.
    pub fn new(pkid: u16, reason: u8) -> Self {
        Ack {
            pkid,
            reason,
            properties: Properties::default(),
        }
    }

    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let reason = if b.is_empty() { 0 } else { read_u8(b)? };
        let properties = if b.is_empty() {
            Properties::default()
        } else {
            Properties::read(b, Allowed::ACK)?
        };
        trailing(b)?;
        Ok(Ack {
            pkid,
            reason,
            properties,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut, first: u8) {
        if self.properties.is_empty() {
            if self.reason == 0 {
                write_header(out, first, 2);
                out.put_u16(self.pkid);
            } else {
                write_header(out, first, 3);
                out.put_u16(self.pkid);
                out.put_u8(self.reason);
            }
            return;
        }
        let props = self.properties.encode();
        write_header(out, first, 3 + props.len());
        out.put_u16(self.pkid);
        out.put_u8(self.reason);
        out.put_slice(&props);
    }
}

/// DISCONNECT (and, with the same shape, AUTH).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code (0 normal disconnection).
    pub reason: u8,
    /// Session expiry, reason string, user properties, server reference.
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with a reason code only.
    pub fn new(reason: u8) -> Self {
        Disconnect {
            reason,
            properties: Properties::default(),
        }
    }

    pub(super) fn read(b: &mut Bytes, allowed: Allowed) -> DecodeResult<Self> {
        let reason = if b.is_empty() { 0 } else { read_u8(b)? };
        let properties = if b.is_empty() {
            Properties::default()
        } else {
            Properties::read(b, allowed)?
        };
        trailing(b)?;
        Ok(Disconnect { reason, properties })
    }

    pub(super) fn write(&self, out: &mut BytesMut, first: u8) {
        if self.properties.is_empty() {
            if self.reason == 0 {
                write_header(out, first, 0);
            } else {
                // The property length could be omitted here, but some
                // clients (rumqttc 0.25) then wait for it forever.
                write_header(out, first, 2);
                out.put_u8(self.reason);
                out.put_u8(0);
            }
            return;
        }
        let props = self.properties.encode();
        write_header(out, first, 1 + props.len());
        out.put_u8(self.reason);
        out.put_slice(&props);
    }
}

pub(super) fn trailing(b: &Bytes) -> DecodeResult<()> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(crate::protocol::DecodeError::Malformed("trailing bytes"))
    }
}
