//! Low-level wire helpers: a bounds-checked reader, big-endian writers and
//! the checked view of an OpenFlow message header.

use crate::error::{Error, Result};

/// OpenFlow 1.4 on the wire.
pub const VERSION: u8 = 0x05;
/// Size of `ofp_header`.
pub const HEADER_LEN: usize = 8;
/// Largest OpenFlow message (the length field is 16 bits).
pub const MAX_MSG_LEN: usize = u16::MAX as usize;
/// Nicira's experimenter id (actions, messages, errors).
pub const NX_VENDOR_ID: u32 = 0x0000_2320;

/// A cursor over untrusted bytes: every read checks the bounds and names
/// what it was reading when it runs out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(Error::Truncated(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// Peeks at a big-endian u16 `at` bytes ahead without consuming.
    pub(crate) fn peek_u16(&self, at: usize) -> Result<u16> {
        match self.buf.get(at..at + 2) {
            Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
            None => Err(Error::Truncated(self.what)),
        }
    }
}

/// Big-endian appends to a message being built.
pub(crate) trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_zeros(&mut self, n: usize);
    /// Pads with zeros to a multiple of 8 counted from `start`.
    fn pad8_from(&mut self, start: usize);
    /// Writes `v` as a u16 at `at` (a length placeholder written earlier).
    fn set_u16(&mut self, at: usize, v: u16);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
    fn pad8_from(&mut self, start: usize) {
        let len = self.len() - start;
        self.put_zeros(pad8(len) - len);
    }
    fn set_u16(&mut self, at: usize, v: u16) {
        self[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// `n` rounded up to a multiple of 8.
pub(crate) const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Length of `out[start..]` as a u16 field, or an error when it cannot be
/// expressed.
pub(crate) fn len16(out: &[u8], start: usize, what: &'static str) -> Result<u16> {
    u16::try_from(out.len() - start).map_err(|_| Error::TooLarge(what))
}

/// A checked view of one OpenFlow message (header + body).
///
/// `new_checked` guarantees the buffer holds at least a header and exactly
/// as many bytes as the header's length field says, so the accessors
/// cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

mod field {
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const LENGTH: std::ops::Range<usize> = 2..4;
    pub const XID: std::ops::Range<usize> = 4..8;
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buf: T) -> Self {
        Self { buf }
    }

    /// Wraps `buf`, which must contain exactly one message.
    pub fn new_checked(buf: T) -> Result<Self> {
        let p = Self::new_unchecked(buf);
        p.check_len()?;
        Ok(p)
    }

    fn check_len(&self) -> Result<()> {
        let b = self.buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated("ofp_header"));
        }
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if len < HEADER_LEN || len != b.len() {
            return Err(Error::BadLength {
                what: "ofp_header",
                len,
            });
        }
        Ok(())
    }

    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VERSION]
    }
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[field::TYPE]
    }
    pub fn length(&self) -> u16 {
        let b = &self.buf.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn xid(&self) -> u32 {
        let b = &self.buf.as_ref()[field::XID];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn into_inner(self) -> T {
        self.buf
    }
}

/// How many bytes the message at the start of a stream buffer occupies:
/// `Ok(None)` when more bytes are needed, an error when the header is
/// impossible (the stream cannot be resynchronised then).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len < HEADER_LEN {
        return Err(Error::BadLength {
            what: "ofp_header",
            len,
        });
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Starts a message: writes a header with a placeholder length and returns
/// the offset to pass to [`finish_msg`].
pub(crate) fn start_msg(out: &mut Vec<u8>, msg_type: u8, xid: u32) -> usize {
    let start = out.len();
    out.put_u8(VERSION);
    out.put_u8(msg_type);
    out.put_u16(0);
    out.put_u32(xid);
    start
}

/// Writes the final length of the message begun at `start`.
pub(crate) fn finish_msg(out: &mut Vec<u8>, start: usize) -> Result<()> {
    let len = len16(out, start, "message")?;
    out.set_u16(start + 2, len);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_checks_bounds() {
        let mut r = Reader::new(&[1, 2, 3], "x");
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert!(matches!(r.u16(), Err(Error::Truncated("x"))));
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.is_empty());
    }

    #[test]
    fn packet_checks_length() {
        assert!(Packet::new_checked(&[5u8, 0, 0, 8, 0, 0, 0, 1][..]).is_ok());
        assert!(Packet::new_checked(&[5u8, 0, 0, 9, 0, 0, 0, 1][..]).is_err());
        assert!(Packet::new_checked(&[5u8, 0, 0, 4, 0, 0, 0, 1][..]).is_err());
        assert!(Packet::new_checked(&[5u8, 0, 0][..]).is_err());
        assert_eq!(frame_len(&[5, 0, 0, 16, 0, 0, 0, 1]).unwrap(), None);
        assert_eq!(frame_len(&[5, 0, 0, 8, 0, 0, 0, 1, 9]).unwrap(), Some(8));
        assert!(frame_len(&[5, 0, 0, 3, 0, 0, 0, 1]).is_err());
    }
}
