//! MQTT 5.0 packets.
//!
//! One type per packet, one file per packet family; every packet carries
//! its [`Properties`]. [`Packet::read`] decodes a frame body after
//! [`super::split_frame`]; [`Packet::write`] is total.

mod ack;
mod connect;
mod properties;
mod publish;
mod subscribe;

pub use ack::{Ack, Disconnect};
pub use connect::{ConnAck, Connect, LastWill};
pub use properties::{Allowed, Properties};
pub use publish::{Publish, write_publish};
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};

use bytes::{Bytes, BytesMut};

use super::{DecodeError, DecodeResult, FixedHeader, PacketType, expect_flags, read_pkid};

/// Every MQTT 5.0 control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client asks to connect.
    Connect(Box<Connect>),
    /// Server's answer to CONNECT.
    ConnAck(ConnAck),
    /// An application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(Ack),
    /// QoS 2 step 1.
    PubRec(Ack),
    /// QoS 2 step 2.
    PubRel(Ack),
    /// QoS 2 step 3.
    PubComp(Ack),
    /// Subscription request.
    Subscribe(Subscribe),
    /// Subscription answer.
    SubAck(SubAck),
    /// Unsubscription request.
    Unsubscribe(Unsubscribe),
    /// Unsubscription answer.
    UnsubAck(UnsubAck),
    /// Keep-alive probe.
    PingReq,
    /// Keep-alive answer.
    PingResp,
    /// Either side closes, with a reason.
    Disconnect(Disconnect),
    /// Extended authentication exchange.
    Auth(Disconnect),
}

impl Packet {
    /// Decodes one frame body.
    ///
    /// # Errors
    /// [`DecodeError`] for anything that is not a valid 5.0 packet.
    pub fn read(header: &FixedHeader, mut body: Bytes) -> DecodeResult<Self> {
        let b = &mut body;
        let packet = match header.kind {
            PacketType::Connect => {
                expect_flags(header, 0)?;
                Packet::Connect(Box::new(Connect::read(b)?))
            }
            PacketType::ConnAck => {
                expect_flags(header, 0)?;
                Packet::ConnAck(ConnAck::read(b)?)
            }
            PacketType::Publish => Packet::Publish(Publish::read(header.flags, body)?),
            PacketType::PubAck => {
                expect_flags(header, 0)?;
                Packet::PubAck(Ack::read(b)?)
            }
            PacketType::PubRec => {
                expect_flags(header, 0)?;
                Packet::PubRec(Ack::read(b)?)
            }
            PacketType::PubRel => {
                expect_flags(header, 2)?;
                Packet::PubRel(Ack::read(b)?)
            }
            PacketType::PubComp => {
                expect_flags(header, 0)?;
                Packet::PubComp(Ack::read(b)?)
            }
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
            PacketType::UnsubAck => {
                expect_flags(header, 0)?;
                Packet::UnsubAck(UnsubAck::read(b)?)
            }
            PacketType::PingReq => {
                expect_flags(header, 0)?;
                empty(b, Packet::PingReq)?
            }
            PacketType::PingResp => {
                expect_flags(header, 0)?;
                empty(b, Packet::PingResp)?
            }
            PacketType::Disconnect => {
                expect_flags(header, 0)?;
                Packet::Disconnect(Disconnect::read(b, Allowed::DISCONNECT)?)
            }
            PacketType::Auth => {
                expect_flags(header, 0)?;
                Packet::Auth(Disconnect::read(b, Allowed::AUTH)?)
            }
        };
        Ok(packet)
    }

    /// Encodes the packet onto `out`.
    pub fn write(&self, out: &mut BytesMut) {
        match self {
            Packet::Connect(c) => c.write(out),
            Packet::ConnAck(c) => c.write(out),
            Packet::Publish(p) => p.write(out),
            Packet::PubAck(a) => a.write(out, 0x40),
            Packet::PubRec(a) => a.write(out, 0x50),
            Packet::PubRel(a) => a.write(out, 0x62),
            Packet::PubComp(a) => a.write(out, 0x70),
            Packet::Subscribe(s) => s.write(out),
            Packet::SubAck(s) => s.write(out),
            Packet::Unsubscribe(u) => u.write(out),
            Packet::UnsubAck(u) => u.write(out),
            Packet::PingReq => super::write_header(out, 0xc0, 0),
            Packet::PingResp => super::write_header(out, 0xd0, 0),
            Packet::Disconnect(d) => d.write(out, 0xe0),
            Packet::Auth(d) => d.write(out, 0xf0),
        }
    }
}

fn empty(b: &Bytes, p: Packet) -> DecodeResult<Packet> {
    if b.is_empty() {
        Ok(p)
    } else {
        Err(DecodeError::Malformed("packet must have no body"))
    }
}
