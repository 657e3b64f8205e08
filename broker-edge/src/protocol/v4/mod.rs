//! MQTT 3.1 (`MQIsdp`, level 3) and 3.1.1 (level 4) packets.
//!
//! One type per packet, one file per packet family. [`Packet::read`] decodes a
//! frame body after [`super::split_frame`]; [`Packet::write`] is total: every
//! variant has a wire form.

mod ack;
mod connect;
mod publish;
mod subscribe;

pub use connect::{ConnAck, Connect, LastWill};
pub use publish::{Publish, write_publish};
pub use subscribe::{SubAck, Subscribe, Unsubscribe};

use bytes::{Bytes, BytesMut};

use super::{
    DecodeError, DecodeResult, FixedHeader, PacketType, expect_flags, read_pkid, write_header,
};

/// Every MQTT 3.1.1 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client asks to connect.
    Connect(Connect),
    /// Server's answer to CONNECT.
    ConnAck(ConnAck),
    /// An application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(u16),
    /// QoS 2 step 1.
    PubRec(u16),
    /// QoS 2 step 2.
    PubRel(u16),
    /// QoS 2 step 3.
    PubComp(u16),
    /// Subscription request.
    Subscribe(Subscribe),
    /// Subscription answer.
    SubAck(SubAck),
    /// Unsubscription request.
    Unsubscribe(Unsubscribe),
    /// Unsubscription answer.
    UnsubAck(u16),
    /// Keep-alive probe.
    PingReq,
    /// Keep-alive answer.
    PingResp,
    /// Client closes cleanly.
    Disconnect,
}

impl Packet {
    /// Decodes one frame body. `level` is 3 or 4 and matters only for CONNECT.
    ///
    /// # Errors
    /// [`DecodeError`] for anything that is not a valid 3.1.1 packet.
    pub fn read(header: &FixedHeader, mut body: Bytes) -> DecodeResult<Self> {
        let b = &mut body;
        let packet = match header.kind {
            PacketType::Connect => {
                expect_flags(header, 0)?;
                Packet::Connect(Connect::read(b)?)
            }
            PacketType::ConnAck => {
                expect_flags(header, 0)?;
                Packet::ConnAck(ConnAck::read(b)?)
            }
            PacketType::Publish => Packet::Publish(Publish::read(header.flags, body)?),
            PacketType::PubAck => Packet::PubAck(ack::read(header, 0, b)?),
            PacketType::PubRec => Packet::PubRec(ack::read(header, 0, b)?),
            PacketType::PubRel => Packet::PubRel(ack::read(header, 2, b)?),
            PacketType::PubComp => Packet::PubComp(ack::read(header, 0, b)?),
            PacketType::Subscribe => {
                expect_flags(header, 2)?;
                Packet::Subscribe(Subscribe::read(b)?)
            }
            PacketType::SubAck => {
                expect_flags(header, 0)?;
                Packet::SubAck(SubAck::read(b)?)
            }
            PacketType::Unsubscribe => {
                expect_flags(header, 2)?;
                Packet::Unsubscribe(Unsubscribe::read(b)?)
            }
            PacketType::UnsubAck => Packet::UnsubAck(ack::read(header, 0, b)?),
            PacketType::PingReq => empty(header, b, Packet::PingReq)?,
            PacketType::PingResp => empty(header, b, Packet::PingResp)?,
            PacketType::Disconnect => empty(header, b, Packet::Disconnect)?,
            PacketType::Auth => return Err(DecodeError::Malformed("AUTH is not a 3.1.1 packet")),
        };
        Ok(packet)
    }

    /// Encodes the packet onto `out`.
    pub fn write(&self, out: &mut BytesMut) {
        match self {
            Packet::Connect(c) => c.write(out),
            Packet::ConnAck(c) => c.write(out),
            Packet::Publish(p) => p.write(out),
            Packet::PubAck(id) => ack::write(out, 0x40, *id),
            Packet::PubRec(id) => ack::write(out, 0x50, *id),
            Packet::PubRel(id) => ack::write(out, 0x62, *id),
            Packet::PubComp(id) => ack::write(out, 0x70, *id),
            Packet::Subscribe(s) => s.write(out),
            Packet::SubAck(s) => s.write(out),
            Packet::Unsubscribe(u) => u.write(out),
            Packet::UnsubAck(id) => ack::write(out, 0xb0, *id),
            Packet::PingReq => write_header(out, 0xc0, 0),
            Packet::PingResp => write_header(out, 0xd0, 0),
            Packet::Disconnect => write_header(out, 0xe0, 0),
        }
    }
}

fn empty(header: &FixedHeader, b: &Bytes, p: Packet) -> DecodeResult<Packet> {
    expect_flags(header, 0)?;
    if b.is_empty() {
        Ok(p)
    } else {
        Err(DecodeError::Malformed("packet must have no body"))
    }
}
