//! The on-disk record: a fixed header and the payload.
//!
//! ```text
//! offset  size  field
//!      0     4  payload length (u32, little endian)
//!      4     4  CRC32C of bytes 8.. (sequence, time, payload)
//!      8     8  sequence number (u64 LE)
//!     16     8  append time, milliseconds since the Unix epoch (u64 LE)
//!     24     n  payload
//! ```
//!
//! A record is valid only if it is complete and its checksum matches; a
//! torn write (a crash mid-append) leaves an incomplete or mismatching last
//! record, which recovery truncates.

use bytes::{BufMut, Bytes};

/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length.
    pub len: u32,
    /// Checksum over sequence, time and payload.
    pub crc: u32,
    /// Sequence number.
    pub seq: u64,
    /// Append time (ms since the epoch).
    pub timestamp_ms: u64,
}

/// Appends one encoded record to `out`.
pub fn encode(seq: u64, timestamp_ms: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &timestamp_ms.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.reserve(HEADER_LEN + payload.len());
    out.put_u32_le(len);
    out.put_u32_le(crc);
    out.put_u64_le(seq);
    out.put_u64_le(timestamp_ms);
    out.put_slice(payload);
}

/// Parses a header from its 24 bytes.
pub fn parse_header(b: &[u8; HEADER_LEN]) -> Header {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(a)
    };
    Header {
        len: u32_at(0),
        crc: u32_at(4),
        seq: u64_at(8),
        timestamp_ms: u64_at(16),
    }
}

/// Whether `payload` matches the checksum in `h`.
pub fn verify(h: &Header, payload: &[u8]) -> bool {
    let mut crc = crc32c::crc32c(&h.seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &h.timestamp_ms.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    crc == h.crc
}

/// A complete, verified record decoded from a byte slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Its header.
    pub header: Header,
    /// Its payload.
    pub payload: Bytes,
    /// Bytes consumed from the input.
    pub consumed: usize,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the record needs: a torn write, or more to come.
    Incomplete,
    /// The length is over `max_record` or the checksum does not match.
    Corrupt,
}

/// Decodes the record at the start of `buf`.
///
/// # Errors
/// [`Invalid::Incomplete`] when `buf` is too short, [`Invalid::Corrupt`]
/// when the length is implausible or the checksum fails.
pub fn decode(buf: &[u8], max_record: usize) -> Result<Decoded, Invalid> {
    let head: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Invalid::Incomplete)?;
    let header = parse_header(head);
    let len = header.len as usize;
    if len > max_record {
        return Err(Invalid::Corrupt);
    }
    let payload = buf
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(Invalid::Incomplete)?;
    if !verify(&header, payload) {
        return Err(Invalid::Corrupt);
    }
    Ok(Decoded {
        header,
        payload: Bytes::copy_from_slice(payload),
        consumed: HEADER_LEN + len,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(7, 1234, b"hello", &mut buf);
        let d = decode(&buf, 1 << 20).expect("valid");
        assert_eq!(d.header.seq, 7);
        assert_eq!(d.header.timestamp_ms, 1234);
        assert_eq!(&d.payload[..], b"hello");
        assert_eq!(d.consumed, buf.len());
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode(42, 99, b"measurement", &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut], 1 << 20),
                Err(Invalid::Incomplete),
                "cut {cut}"
            );
        }
        for byte in 4..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert_eq!(
                    decode(&b, 1 << 20),
                    Err(Invalid::Corrupt),
                    "flip {byte}.{bit}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, 1 << 16);
        }
    }
}
