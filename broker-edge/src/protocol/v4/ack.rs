//! PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK: a packet identifier only.

use bytes::{BufMut, Bytes, BytesMut};

use super::read_pkid;
use crate::protocol::{DecodeError, DecodeResult, FixedHeader, expect_flags, write_header};

pub(super) fn read(header: &FixedHeader, flags: u8, b: &mut Bytes) -> DecodeResult<u16> {
    expect_flags(header, flags)?;
    let id = read_pkid(b)?;
    if !b.is_empty() {
        return Err(DecodeError::Malformed(
            "acknowledgement longer than 2 bytes",
        ));
    }
    Ok(id)
}

pub(super) fn write(out: &mut BytesMut, first: u8, id: u16) {
    write_header(out, first, 2);
    out.put_u16(id);
}
