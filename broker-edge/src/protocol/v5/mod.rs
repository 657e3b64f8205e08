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

impl Packet {
    /// The properties a Reason String and User Properties may be left out
    /// of: every packet the broker sends with them except PUBLISH, whose
    /// properties belong to the application message.
    fn diagnostic_properties(&mut self) -> Option<&mut Properties> {
        match self {
            Packet::ConnAck(c) => Some(&mut c.properties),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                Some(&mut a.properties)
            }
            Packet::SubAck(s) => Some(&mut s.properties),
            Packet::UnsubAck(u) => Some(&mut u.properties),
            Packet::Disconnect(d) | Packet::Auth(d) => Some(&mut d.properties),
            _ => None,
        }
    }

    /// Whether the packet carries a Reason String or User Properties that
    /// [`Packet::fit`] could leave out (never true for PUBLISH).
    pub fn has_diagnostics(&self) -> bool {
        let props = match self {
            Packet::ConnAck(c) => &c.properties,
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                &a.properties
            }
            Packet::SubAck(s) => &s.properties,
            Packet::UnsubAck(u) => &u.properties,
            Packet::Disconnect(d) | Packet::Auth(d) => &d.properties,
            _ => return false,
        };
        props.reason_string.is_some() || !props.user_properties.is_empty()
    }

    /// Leaves out the Reason String, then the User Properties, when they
    /// would make the packet larger than `max` bytes, the receiver's
    /// Maximum Packet Size ([MQTT-3.2.2-19], [MQTT-3.2.2-20] for CONNACK;
    /// [MQTT-3.4.2-2]/[MQTT-3.4.2-3] and the same pair for PUBREC, PUBREL,
    /// PUBCOMP, SUBACK, UNSUBACK, DISCONNECT and AUTH). Returns whether
    /// anything was left out. Nothing is computed for a packet carrying
    /// neither.
    pub fn fit(&mut self, max: usize) -> bool {
        if !self.has_diagnostics() {
            return false;
        }
        let mut trimmed = false;
        for step in 0..2 {
            if self.encoded_len() <= max {
                break;
            }
            let Some(props) = self.diagnostic_properties() else {
                break;
            };
            if step == 0 {
                trimmed |= props.reason_string.take().is_some();
            } else {
                trimmed |= !props.user_properties.is_empty();
                props.user_properties.clear();
            }
        }
        trimmed
    }

    /// Bytes the packet takes on the wire.
    pub fn encoded_len(&self) -> usize {
        let mut out = BytesMut::new();
        self.write(&mut out);
        out.len()
    }
}

fn empty(b: &Bytes, p: Packet) -> DecodeResult<Packet> {
    if b.is_empty() {
        Ok(p)
    } else {
        Err(DecodeError::Malformed("packet must have no body"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_drops_reason_string_then_user_properties_only_when_too_large() {
        let mut d = Disconnect::new(0x82);
        d.properties.reason_string = Some("a long explanation of the protocol error".into());
        d.properties.user_properties = vec![("k".into(), "v".repeat(40))];
        let mut p = Packet::Disconnect(d.clone());
        assert!(!p.fit(1000), "fits: nothing left out");
        assert_eq!(p, Packet::Disconnect(d.clone()));

        let mut p = Packet::Disconnect(d.clone());
        assert!(p.fit(60));
        let Packet::Disconnect(got) = &p else {
            unreachable!()
        };
        assert_eq!(got.properties.reason_string, None);
        assert_eq!(got.properties.user_properties, d.properties.user_properties);
        assert!(p.encoded_len() <= 60);

        let mut p = Packet::Disconnect(d);
        assert!(p.fit(10));
        assert_eq!(p, Packet::Disconnect(Disconnect::new(0x82)));
    }

    #[test]
    fn response_topic_with_wildcards_is_a_protocol_error() {
        for (topic, ok) in [("reply/1", true), ("reply/+", false), ("#", false)] {
            let props = Properties {
                response_topic: Some(topic.into()),
                ..Properties::default()
            };
            let p = Packet::Publish(Publish {
                dup: false,
                qos: crate::protocol::QoS::AtMostOnce,
                retain: false,
                topic: "t".into(),
                pkid: 0,
                properties: props,
                payload: Bytes::from_static(b"x"),
            });
            let mut out = BytesMut::new();
            p.write(&mut out);
            let (h, body) = crate::protocol::split_frame(&mut out, usize::MAX)
                .expect("frame")
                .expect("complete");
            let got = Packet::read(&h, body);
            if ok {
                assert!(got.is_ok(), "{topic}: {got:?}");
            } else {
                assert!(
                    matches!(got, Err(DecodeError::Protocol(_))),
                    "{topic}: {got:?}"
                );
            }
        }
    }
}
