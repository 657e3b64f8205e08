//! The MQTT wire format: framing and primitives shared by both versions.
//!
//! [`check`] reads only the fixed header and refuses a frame larger than the
//! configured maximum before any of its body is buffered. The packet types
//! live in [`v4`] (3.1 and 3.1.1) and [`v5`] (5.0); they are distinct types
//! so that each writer is total over what its version can say.
//!
//! Decoding never panics: every length is checked against the bytes at hand
//! and bad input becomes a [`DecodeError`] whose
//! [`reason`](DecodeError::reason) is the v5 DISCONNECT reason (Malformed
//! Packet, Protocol Error, Packet too large). Every reason code the broker
//! chooses is a [`ReasonCode`].

mod reason;
pub mod v4;
pub mod v5;

pub use reason::ReasonCode;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The largest remaining length a four-byte variable integer can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Why bytes from a client could not be turned into a packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (v5 reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a protocol rule (v5 reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The fixed header announces more bytes than this side accepts (0x95).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size announced by the fixed header, including the header.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// CONNECT with a protocol name or level this broker does not speak.
    #[error("unsupported protocol name or level {0}")]
    UnsupportedProtocol(u8),
}

impl DecodeError {
    /// The MQTT 5 reason a DISCONNECT (or CONNACK) for this error carries.
    pub fn reason(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MalformedPacket,
            DecodeError::Protocol(_) => ReasonCode::ProtocolError,
            DecodeError::TooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocol(_) => ReasonCode::UnsupportedProtocolVersion,
        }
    }

    /// [`DecodeError::reason`] as the byte on the wire.
    pub fn reason_code(&self) -> u8 {
        self.reason().code()
    }
}

/// Short-hand for decode results.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once (PUBACK).
    AtLeastOnce = 1,
    /// Exactly once (PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; 3 is malformed.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] for the value 3 or more.
    pub fn from_u8(v: u8) -> DecodeResult<Self> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::Malformed("QoS 3")),
        }
    }

    /// The index used by per-QoS metrics and arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The MQTT control packet types (upper nibble of the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    fn from_nibble(n: u8) -> DecodeResult<Self> {
        Ok(match n {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return Err(DecodeError::Malformed("packet type 0")),
        })
    }
}

/// What the fixed header of a complete frame says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type.
    pub kind: PacketType,
    /// The four flag bits of the first byte.
    pub flags: u8,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
    /// The remaining length: bytes of the frame after the fixed header.
    pub remaining: usize,
}

impl FixedHeader {
    /// Total frame size in bytes.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Reads a fixed header from the front of `buf` without consuming it.
///
/// Returns `Ok(None)` while more bytes are needed for the header, and an
/// error as soon as the announced size exceeds `max_packet` — before the body
/// is buffered. The body itself may still be incomplete on `Ok(Some(_))`.
///
/// # Errors
/// [`DecodeError::Malformed`] for a bad length encoding or packet type 0,
/// [`DecodeError::TooLarge`] for an oversized frame.
pub fn check(buf: &[u8], max_packet: usize) -> DecodeResult<Option<FixedHeader>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = PacketType::from_nibble(first >> 4)?;
    let mut remaining: usize = 0;
    let mut shift = 0;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if i > 4 {
            return Err(DecodeError::Malformed(
                "remaining length longer than 4 bytes",
            ));
        }
    }
    let header = FixedHeader {
        kind,
        flags: first & 0x0f,
        header_len: i,
        remaining,
    };
    if header.frame_len() > max_packet {
        return Err(DecodeError::TooLarge {
            size: header.frame_len(),
            max: max_packet,
        });
    }
    Ok(Some(header))
}

/// Splits one complete frame off `buf`: its header and its body.
///
/// # Errors
/// As [`check`].
pub fn split_frame(
    buf: &mut BytesMut,
    max_packet: usize,
) -> DecodeResult<Option<(FixedHeader, Bytes)>> {
    let Some(header) = check(buf, max_packet)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len() {
        buf.reserve(header.frame_len() - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(header.frame_len());
    frame.advance(header.header_len);
    Ok(Some((header, frame.freeze())))
}

/// Requires the flag bits of a packet to equal `expected`.
///
/// # Errors
/// [`DecodeError::Malformed`] when they differ.
pub fn expect_flags(header: &FixedHeader, expected: u8) -> DecodeResult<()> {
    if header.flags == expected {
        Ok(())
    } else {
        Err(DecodeError::Malformed("reserved fixed header flags"))
    }
}

/// Reads a byte.
///
/// # Errors
/// [`DecodeError::Malformed`] when the body is exhausted.
pub fn read_u8(b: &mut Bytes) -> DecodeResult<u8> {
    if b.remaining() < 1 {
        return Err(DecodeError::Malformed("truncated"));
    }
    Ok(b.get_u8())
}

/// Reads a big-endian two-byte integer.
///
/// # Errors
/// [`DecodeError::Malformed`] when the body is exhausted.
pub fn read_u16(b: &mut Bytes) -> DecodeResult<u16> {
    if b.remaining() < 2 {
        return Err(DecodeError::Malformed("truncated"));
    }
    Ok(b.get_u16())
}

/// Reads a big-endian four-byte integer.
///
/// # Errors
/// [`DecodeError::Malformed`] when the body is exhausted.
pub fn read_u32(b: &mut Bytes) -> DecodeResult<u32> {
    if b.remaining() < 4 {
        return Err(DecodeError::Malformed("truncated"));
    }
    Ok(b.get_u32())
}

/// Reads a non-zero packet identifier (both versions: [MQTT-2.2.1-3]).
///
/// # Errors
/// [`DecodeError::Malformed`] when truncated, [`DecodeError::Protocol`] for 0.
pub(crate) fn read_pkid(b: &mut Bytes) -> DecodeResult<u16> {
    match read_u16(b)? {
        0 => Err(DecodeError::Protocol("packet identifier 0")),
        id => Ok(id),
    }
}

/// Reads a variable byte integer (at most four bytes).
///
/// # Errors
/// [`DecodeError::Malformed`] when truncated or longer than four bytes.
pub fn read_varint(b: &mut Bytes) -> DecodeResult<u32> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let byte = read_u8(b)?;
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed(
        "variable byte integer longer than 4 bytes",
    ))
}

/// Reads two-byte-length-prefixed binary data without copying.
///
/// # Errors
/// [`DecodeError::Malformed`] when truncated.
pub fn read_binary(b: &mut Bytes) -> DecodeResult<Bytes> {
    let len = usize::from(read_u16(b)?);
    if b.remaining() < len {
        return Err(DecodeError::Malformed("truncated"));
    }
    Ok(b.split_to(len))
}

/// Reads an MQTT UTF-8 string: valid UTF-8 without U+0000.
///
/// # Errors
/// [`DecodeError::Malformed`] when truncated or not a valid MQTT string.
pub fn read_string(b: &mut Bytes) -> DecodeResult<String> {
    let raw = read_binary(b)?;
    let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::Malformed("invalid UTF-8"))?;
    if s.contains('\0') {
        return Err(DecodeError::Malformed("U+0000 in string"));
    }
    Ok(s.to_owned())
}

/// Writes a fixed header.
pub fn write_header(out: &mut BytesMut, first: u8, remaining: usize) {
    out.put_u8(first);
    write_varint(out, remaining);
}

/// Writes a variable byte integer.
pub fn write_varint(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut byte = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Bytes a variable byte integer takes.
pub fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes length-prefixed binary data (callers keep it under 64 KiB).
pub fn write_binary(out: &mut BytesMut, data: &[u8]) {
    let len = data.len().min(usize::from(u16::MAX));
    out.put_u16(len as u16);
    out.put_slice(&data[..len]);
}

/// Protocol level announced by a CONNECT at the front of `body`, without
/// consuming it: 3 (`MQIsdp`), 4 (3.1.1) or 5.
///
/// # Errors
/// [`DecodeError::Malformed`] when truncated,
/// [`DecodeError::UnsupportedProtocol`] for an unknown name or level.
pub fn connect_level(body: &Bytes) -> DecodeResult<u8> {
    let mut b = body.clone();
    let name = read_binary(&mut b)?;
    let level = read_u8(&mut b)?;
    match (&name[..], level) {
        (b"MQTT", 4 | 5) | (b"MQIsdp", 3) => Ok(level),
        (b"MQTT" | b"MQIsdp", l) => Err(DecodeError::UnsupportedProtocol(l)),
        _ => Err(DecodeError::Protocol("unknown protocol name")),
    }
}

/// Decodes every frame in `data` as both 3.1.1 and 5.0 and returns how many
/// frames decoded; the entry point of the decoder fuzz targets. Must never
/// panic, whatever `data` is.
pub fn decode_all(data: &[u8], max_packet: usize) -> usize {
    let mut buf = BytesMut::from(data);
    let mut ok = 0;
    while let Ok(Some((header, body))) = split_frame(&mut buf, max_packet) {
        if header.kind == PacketType::Connect {
            let _ = connect_level(&body);
        }
        if v4::Packet::read(&header, body.clone()).is_ok() {
            ok += 1;
        }
        if v5::Packet::read(&header, body).is_ok() {
            ok += 1;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING_LENGTH,
        ] {
            let mut out = BytesMut::new();
            write_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut b = out.freeze();
            assert_eq!(read_varint(&mut b).expect("valid varint") as usize, v);
        }
    }

    #[test]
    fn check_refuses_oversize_from_the_header_alone() {
        // PUBLISH announcing 2 MB, with no body bytes present at all.
        let mut out = BytesMut::new();
        write_header(&mut out, 0x30, 2_000_000);
        let err = check(&out, 1024).expect_err("must refuse");
        assert!(matches!(err, DecodeError::TooLarge { .. }));
        assert_eq!(err.reason_code(), 0x95);
    }

    #[test]
    fn check_waits_for_header_and_rejects_five_byte_lengths() {
        assert_eq!(check(&[0x30], 100).expect("incomplete"), None);
        assert_eq!(check(&[0x30, 0x80], 100).expect("incomplete"), None);
        assert!(check(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX).is_err());
        assert!(check(&[0x00, 0x00], 100).is_err(), "type 0 is reserved");
    }
}
