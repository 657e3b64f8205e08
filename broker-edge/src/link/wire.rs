//! The version a connection speaks, and the translation between its packets
//! and the 5.0 packets the link logic works with. A 3.1.1 PUBLISH becomes a
//! 5.0 PUBLISH without properties; a 5.0 reason code becomes the nearest
//! 3.1.1 return code; packets 3.1.1 has no form for (DISCONNECT and AUTH
//! from the server) are simply not sent.

use bytes::{Bytes, BytesMut};

use crate::protocol::v5::{self, Ack, Properties, SubscriptionOptions};
use crate::protocol::{DecodeError, DecodeResult, FixedHeader, v4};

/// The protocol a connection negotiated in its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// MQTT 3.1 (level 3) or 3.1.1 (level 4).
    V4 {
        /// Protocol level from CONNECT.
        level: u8,
    },
    /// MQTT 5.0.
    V5,
}

impl Wire {
    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        matches!(self, Wire::V5)
    }

    /// Decodes one frame into its 5.0 form.
    ///
    /// # Errors
    /// [`DecodeError`] for invalid packets and for packets only a server
    /// sends.
    pub fn decode(self, header: &FixedHeader, body: Bytes) -> DecodeResult<v5::Packet> {
        match self {
            Wire::V5 => v5::Packet::read(header, body),
            Wire::V4 { .. } => {
                let p = v4::Packet::read(header, body)?;
                Ok(match p {
                    v4::Packet::Publish(p) => v5::Packet::Publish(v5::Publish {
                        dup: p.dup,
                        qos: p.qos,
                        retain: p.retain,
                        topic: p.topic,
                        pkid: p.pkid,
                        properties: Properties::default(),
                        payload: p.payload,
                    }),
                    v4::Packet::PubAck(id) => v5::Packet::PubAck(Ack::new(id, 0)),
                    v4::Packet::PubRec(id) => v5::Packet::PubRec(Ack::new(id, 0)),
                    v4::Packet::PubRel(id) => v5::Packet::PubRel(Ack::new(id, 0)),
                    v4::Packet::PubComp(id) => v5::Packet::PubComp(Ack::new(id, 0)),
                    v4::Packet::Subscribe(s) => v5::Packet::Subscribe(v5::Subscribe {
                        pkid: s.pkid,
                        properties: Properties::default(),
                        filters: s
                            .filters
                            .into_iter()
                            .map(|(f, qos)| {
                                (
                                    f,
                                    SubscriptionOptions {
                                        qos,
                                        ..SubscriptionOptions::default()
                                    },
                                )
                            })
                            .collect(),
                    }),
                    v4::Packet::Unsubscribe(u) => v5::Packet::Unsubscribe(v5::Unsubscribe {
                        pkid: u.pkid,
                        properties: Properties::default(),
                        filters: u.filters,
                    }),
                    v4::Packet::PingReq => v5::Packet::PingReq,
                    v4::Packet::Disconnect => v5::Packet::Disconnect(v5::Disconnect::new(0)),
                    v4::Packet::Connect(_) => return Err(DecodeError::Protocol("second CONNECT")),
                    v4::Packet::ConnAck(_)
                    | v4::Packet::SubAck(_)
                    | v4::Packet::UnsubAck(_)
                    | v4::Packet::PingResp => {
                        return Err(DecodeError::Protocol(
                            "server-to-client packet from a client",
                        ));
                    }
                })
            }
        }
    }

    /// Encodes a packet for this connection onto `out`.
    pub fn encode(self, p: &v5::Packet, out: &mut BytesMut) {
        match self {
            Wire::V5 => p.write(out),
            Wire::V4 { level } => {
                let v4p = match p {
                    v5::Packet::ConnAck(c) => v4::Packet::ConnAck(v4::ConnAck {
                        session_present: c.session_present,
                        code: v4_connack_code(c.reason),
                    }),
                    v5::Packet::Publish(p) => v4::Packet::Publish(v4::Publish {
                        dup: p.dup,
                        qos: p.qos,
                        retain: p.retain,
                        topic: p.topic.clone(),
                        pkid: p.pkid,
                        payload: p.payload.clone(),
                    }),
                    v5::Packet::PubAck(a) => v4::Packet::PubAck(a.pkid),
                    v5::Packet::PubRec(a) => v4::Packet::PubRec(a.pkid),
                    v5::Packet::PubRel(a) => v4::Packet::PubRel(a.pkid),
                    v5::Packet::PubComp(a) => v4::Packet::PubComp(a.pkid),
                    v5::Packet::SubAck(s) => v4::Packet::SubAck(v4::SubAck {
                        pkid: s.pkid,
                        codes: s
                            .reasons
                            .iter()
                            .map(|&r| if r < 0x80 { r } else { 0x80 })
                            .collect(),
                    }),
                    v5::Packet::UnsubAck(u) => v4::Packet::UnsubAck(u.pkid),
                    v5::Packet::PingReq => v4::Packet::PingReq,
                    v5::Packet::PingResp => v4::Packet::PingResp,
                    v5::Packet::Subscribe(s) => v4::Packet::Subscribe(v4::Subscribe {
                        pkid: s.pkid,
                        filters: s.filters.iter().map(|(f, o)| (f.clone(), o.qos)).collect(),
                    }),
                    v5::Packet::Unsubscribe(u) => v4::Packet::Unsubscribe(v4::Unsubscribe {
                        pkid: u.pkid,
                        filters: u.filters.clone(),
                    }),
                    v5::Packet::Connect(c) => v4::Packet::Connect(v4::Connect {
                        level,
                        client_id: c.client_id.clone(),
                        clean_session: c.clean_start,
                        keep_alive: c.keep_alive,
                        will: c.will.as_ref().map(|w| v4::LastWill {
                            topic: w.topic.clone(),
                            payload: w.payload.clone(),
                            qos: w.qos,
                            retain: w.retain,
                        }),
                        username: c.username.clone(),
                        password: c.password.clone(),
                    }),
                    // 3.1.1 servers close the socket without a packet.
                    v5::Packet::Disconnect(_) | v5::Packet::Auth(_) => return,
                };
                v4p.write(out);
            }
        }
    }
}

/// The 3.1.1 CONNACK return code nearest to a 5.0 reason code.
pub fn v4_connack_code(reason: u8) -> u8 {
    match reason {
        0x00 => 0,
        0x84 => 1,
        0x85 => 2,
        0x86 | 0x8c => 4,
        0x87 => 5,
        _ => 3,
    }
}
