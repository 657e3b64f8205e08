//! SUBSCRIBE, SUBACK and UNSUBSCRIBE for 3.1.1.

use bytes::{BufMut, Bytes, BytesMut};

use super::read_pkid;
use crate::protocol::{
    DecodeError, DecodeResult, QoS, read_string, read_u8, write_binary, write_header,
};

/// SUBSCRIBE: filters with their requested QoS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// `(filter, requested QoS)` pairs, at least one.
    pub filters: Vec<(String, QoS)>,
}

impl Subscribe {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let mut filters = Vec::new();
        while !b.is_empty() {
            let filter = read_string(b)?;
            let opts = read_u8(b)?;
            if opts & 0xfc != 0 {
                return Err(DecodeError::Malformed("reserved subscription option bits"));
            }
            filters.push((filter, QoS::from_u8(opts)?));
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("SUBSCRIBE without filters"));
        }
        Ok(Subscribe { pkid, filters })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let len = 2 + self.filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
        write_header(out, 0x82, len);
        out.put_u16(self.pkid);
        for (f, q) in &self.filters {
            write_binary(out, f.as_bytes());
            out.put_u8(*q as u8);
        }
    }
}

/// SUBACK: one return code per filter (0, 1, 2 granted QoS; 0x80 failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub pkid: u16,
    /// Return codes in filter order.
    pub codes: Vec<u8>,
}

impl SubAck {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let codes = b.to_vec();
        if codes.iter().any(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
            return Err(DecodeError::Malformed("SUBACK return code"));
        }
        Ok(SubAck { pkid, codes })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        write_header(out, 0x90, 2 + self.codes.len());
        out.put_u16(self.pkid);
        out.put_slice(&self.codes);
    }
}

/// UNSUBSCRIBE: filters to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub pkid: u16,
    /// Filters, at least one.
    pub filters: Vec<String>,
}

impl Unsubscribe {
    pub(super) fn read(b: &mut Bytes) -> DecodeResult<Self> {
        let pkid = read_pkid(b)?;
        let mut filters = Vec::new();
        while !b.is_empty() {
            filters.push(read_string(b)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("UNSUBSCRIBE without filters"));
        }
        Ok(Unsubscribe { pkid, filters })
    }

    pub(super) fn write(&self, out: &mut BytesMut) {
        let len = 2 + self.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
        write_header(out, 0xa2, len);
        out.put_u16(self.pkid);
        for f in &self.filters {
            write_binary(out, f.as_bytes());
        }
    }
}
