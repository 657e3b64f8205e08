//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK for 5.0.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Allowed, Properties, read_pkid};
use crate::protocol::{
    DecodeError, DecodeResult, QoS, read_string, read_u8, write_binary, write_header,
};

/// When retained messages are sent for a new subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send them only if the subscription did not already exist.
    OnNewSubscription = 1,
    /// Never send them.
    Never = 2,
}

/// The options byte of each SUBSCRIBE filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber accepts.
    pub qos: QoS,
    /// Do not deliver this client's own publishes.
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// When retained messages are sent.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    fn read(byte: u8) -> DecodeResult<Self> {
        if byte & 0xc0 != 0 {
            return Err(DecodeError::Malformed("reserved subscription option bits"));
        }
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::Malformed("retain handling 3")),
        };
        Ok(SubscriptionOptions {
            qos: QoS::from_u8(byte & 0x03)?,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn byte(&self) -> u8 {
        (self.qos as u8)
            | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4)
    }
}

/// SUBSCRIBE (5.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// Subscription identifier and user properties.
    pub properties: Properties,
    /// `(filter, options)` pairs, at least one.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

impl Subscribe {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let properties = Properties::read(b, Allowed::SUBSCRIBE)?;
        if properties.subscription_identifiers.len() > 1 {
            return Err(DecodeError::Protocol(
                "more than one subscription identifier",
            ));
        }
        let mut filters = Vec::new();
        while !b.is_empty() {
            let f = read_string(b)?;
            let o = SubscriptionOptions::read(read_u8(b)?)?;
            filters.push((f, o));
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("SUBSCRIBE without filters"));
        }
        Ok(Subscribe {
            pkid,
            properties,
            filters,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let props = self.properties.encode();
        let len = 2 + props.len() + self.filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
        write_header(out, 0x82, len);
        out.put_u16(self.pkid);
        out.put_slice(&props);
        for (f, o) in &self.filters {
            write_binary(out, f.as_bytes());
            out.put_u8(o.byte());
        }
    }
}

/// SUBACK (5.0): one reason code per filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub pkid: u16,
    /// Reason string and user properties.
    pub properties: Properties,
    /// Granted QoS (0..=2) or a failure reason (0x80 and above).
    pub reasons: Vec<u8>,
}

impl SubAck {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let properties = Properties::read(b, Allowed::ACK)?;
        Ok(SubAck {
            pkid,
            properties,
            reasons: b.to_vec(),
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let props = self.properties.encode();
        write_header(out, 0x90, 2 + props.len() + self.reasons.len());
        out.put_u16(self.pkid);
        out.put_slice(&props);
        out.put_slice(&self.reasons);
    }
}

/// UNSUBSCRIBE (5.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// User properties.
    pub properties: Properties,
    /// Filters, at least one.
    pub filters: Vec<String>,
}

impl Unsubscribe {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let properties = Properties::read(b, Allowed::UNSUBSCRIBE)?;
        let mut filters = Vec::new();
        while !b.is_empty() {
            filters.push(read_string(b)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("UNSUBSCRIBE without filters"));
        }
        Ok(Unsubscribe {
            pkid,
            properties,
            filters,
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let props = self.properties.encode();
        let len = 2 + props.len() + self.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
        write_header(out, 0xa2, len);
        out.put_u16(self.pkid);
        out.put_slice(&props);
        for f in &self.filters {
            write_binary(out, f.as_bytes());
        }
    }
}

/// UNSUBACK (5.0): one reason code per filter (0 success, 0x11 no
/// subscription existed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub pkid: u16,
    /// Reason string and user properties.
    pub properties: Properties,
    /// Reason codes in filter order.
    pub reasons: Vec<u8>,
}

impl UnsubAck {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let properties = Properties::read(b, Allowed::ACK)?;
        Ok(UnsubAck {
            pkid,
            properties,
            reasons: b.to_vec(),
        })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let props = self.properties.encode();
        write_header(out, 0xb0, 2 + props.len() + self.reasons.len());
        out.put_u16(self.pkid);
        out.put_slice(&props);
        out.put_slice(&self.reasons);
    }
}
