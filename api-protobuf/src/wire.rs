//! The protobuf wire format, read and written by hand.
//!
//! Kubernetes messages only use varints and length-delimited fields (plus the occasional fixed
//! width scalar in principle), so a few dozen lines cover it; this keeps prost, generated code
//! and protoc out of the build.

use thiserror::Error;

/// Why a byte string is not a well-formed protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The message ends inside a key, a varint or a length-delimited payload.
    #[error("message is truncated")]
    Truncated,
    /// A varint runs past ten bytes, which no 64-bit value needs.
    #[error("varint is longer than 10 bytes")]
    VarintTooLong,
    /// Wire types 3 and 4 (groups) and 6, 7 do not occur in Kubernetes messages.
    #[error("unsupported wire type {0}")]
    UnsupportedWireType(u8),
    /// Field number 0 is reserved and never valid.
    #[error("field number 0 is invalid")]
    ZeroFieldNumber,
}

/// How a field's value is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// Wire type 0: int32, int64, uint*, sint*, bool, enum.
    Varint,
    /// Wire type 1: fixed64, sfixed64, double.
    Fixed64,
    /// Wire type 2: string, bytes, embedded messages, packed repeated scalars.
    Len,
    /// Wire type 5: fixed32, sfixed32, float.
    Fixed32,
}

impl WireType {
    fn code(self) -> u64 {
        match self {
            WireType::Varint => 0,
            WireType::Fixed64 => 1,
            WireType::Len => 2,
            WireType::Fixed32 => 5,
        }
    }
}

/// One field occurrence as read from the wire, before the schema gives it a meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawValue<'a> {
    /// A varint, still unsigned; the schema decides about sign and zig-zag.
    Varint(u64),
    /// Eight little-endian bytes.
    Fixed64(u64),
    /// Four little-endian bytes.
    Fixed32(u32),
    /// A length-delimited payload.
    Len(&'a [u8]),
}

impl RawValue<'_> {
    /// The wire type this value arrived with, for error messages and type checks.
    pub fn wire_type(&self) -> WireType {
        match self {
            RawValue::Varint(_) => WireType::Varint,
            RawValue::Fixed64(_) => WireType::Fixed64,
            RawValue::Fixed32(_) => WireType::Fixed32,
            RawValue::Len(_) => WireType::Len,
        }
    }
}

/// Iterates over the fields of one message, in wire order.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf` as one message.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Reads one varint.
    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError::VarintTooLong)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    /// Reads eight little-endian bytes (a packed `fixed64`, `sfixed64` or `double`).
    pub fn fixed64(&mut self) -> Result<u64, WireError> {
        let mut le = [0u8; 8];
        le.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(le))
    }

    /// Reads four little-endian bytes (a packed `fixed32`, `sfixed32` or `float`).
    pub fn fixed32(&mut self) -> Result<u32, WireError> {
        let mut le = [0u8; 4];
        le.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(le))
    }

    /// Reads the next field: its number and raw value. `None` at the end of the message.
    pub fn field(&mut self) -> Result<Option<(u32, RawValue<'a>)>, WireError> {
        if self.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError::Truncated)?;
        if number == 0 {
            return Err(WireError::ZeroFieldNumber);
        }
        let value = match key & 7 {
            0 => RawValue::Varint(self.varint()?),
            1 => RawValue::Fixed64(self.fixed64()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                RawValue::Len(self.take(len)?)
            }
            5 => RawValue::Fixed32(self.fixed32()?),
            other => return Err(WireError::UnsupportedWireType(other as u8)),
        };
        Ok(Some((number, value)))
    }
}

/// Appends fields to a message buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Self {
        Writer::default()
    }

    /// The encoded message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn key(&mut self, number: u32, wire_type: WireType) {
        self.raw_varint((u64::from(number) << 3) | wire_type.code());
    }

    /// Writes a varint field; negative int32/int64 values arrive here sign-extended to 64 bits,
    /// which is how protobuf encodes them (ten bytes).
    pub fn varint(&mut self, number: u32, value: u64) {
        self.key(number, WireType::Varint);
        self.raw_varint(value);
    }

    /// Writes a length-delimited field.
    pub fn bytes(&mut self, number: u32, value: &[u8]) {
        self.key(number, WireType::Len);
        self.raw_varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    /// Writes an eight-byte field.
    pub fn fixed64(&mut self, number: u32, value: u64) {
        self.key(number, WireType::Fixed64);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// Writes a four-byte field.
    pub fn fixed32(&mut self, number: u32, value: u32) {
        self.key(number, WireType::Fixed32);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX,
            -1i64 as u64,
        ] {
            let mut w = Writer::new();
            w.varint(1, value);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            assert_eq!(r.field(), Ok(Some((1, RawValue::Varint(value)))));
            assert_eq!(r.field(), Ok(None));
        }
    }

    #[test]
    fn fixed_and_len_round_trip() {
        let mut w = Writer::new();
        w.fixed64(2, 0x0102_0304_0506_0708);
        w.fixed32(3, 0xdead_beef);
        w.bytes(4, b"hello");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(
            r.field(),
            Ok(Some((2, RawValue::Fixed64(0x0102_0304_0506_0708))))
        );
        assert_eq!(r.field(), Ok(Some((3, RawValue::Fixed32(0xdead_beef)))));
        assert_eq!(r.field(), Ok(Some((4, RawValue::Len(b"hello")))));
        assert_eq!(r.field(), Ok(None));
    }

    #[test]
    fn truncation_is_an_error() {
        assert_eq!(
            Reader::new(&[0x0a, 0x05, b'a']).field(),
            Err(WireError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0x08, 0x80]).field(),
            Err(WireError::Truncated)
        );
        assert_eq!(Reader::new(&[0x08]).field(), Err(WireError::Truncated));
        assert_eq!(
            Reader::new(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
                .field(),
            Err(WireError::VarintTooLong)
        );
        assert_eq!(
            Reader::new(&[0x0b]).field(),
            Err(WireError::UnsupportedWireType(3))
        );
        assert_eq!(
            Reader::new(&[0x00, 0x00]).field(),
            Err(WireError::ZeroFieldNumber)
        );
    }
}
