//! The byte layout of everything that is hashed or signed.
//!
//! Manifests and releases are encoded by hand with these primitives, not by
//! a serde codec, so that ids and signatures never change when a wire codec
//! does. The layout is: little-endian fixed-width integers, strings as a
//! length prefix followed by UTF-8 bytes, optional values as a tag byte (0 =
//! absent, 1 = present) followed by the value. `protocol/FORMATS.md` writes
//! down each record with test vectors.
//!
//! [`Reader`] checks every length against a limit and against the bytes that
//! remain before it allocates anything.

/// Why some bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record starts with the wrong magic bytes.
    #[error("not a {what}: wrong magic bytes")]
    BadMagic {
        /// What was expected.
        what: &'static str,
    },
    /// The input ends in the middle of a field.
    #[error("truncated: the input ends inside {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A length exceeds its limit.
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The field being read.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A string field is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    NotUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// An option tag other than 0 or 1.
    #[error("{what} has an invalid presence tag {tag}")]
    BadTag {
        /// The field being read.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// Bytes remain after the record.
    #[error("{count} unexpected bytes after the end of the {what}")]
    TrailingBytes {
        /// The record read.
        what: &'static str,
        /// How many bytes remained.
        count: usize,
    },
}

/// Appends canonical fields to a byte buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Raw bytes, no length prefix (magic, fixed-size hashes, keys).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A string with a u16 length prefix. Callers validate lengths first.
    pub fn str16(&mut self, s: &str) {
        let len = u16::try_from(s.len()).expect("string length validated before encoding");
        self.u16(len);
        self.raw(s.as_bytes());
    }

    /// A string with a u32 length prefix. Callers validate lengths first.
    pub fn str32(&mut self, s: &str) {
        let len = u32::try_from(s.len()).expect("string length validated before encoding");
        self.u32(len);
        self.raw(s.as_bytes());
    }

    /// Bytes with a u32 length prefix. Callers validate lengths first.
    pub fn bytes32(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len()).expect("length validated before encoding");
        self.u32(len);
        self.raw(b);
    }
}

/// Reads canonical fields from a byte slice, checking every length.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Checks magic bytes.
    pub fn magic(&mut self, magic: &[u8], what: &'static str) -> Result<(), DecodeError> {
        if self.take(magic.len(), what)? != magic {
            return Err(DecodeError::BadMagic { what });
        }
        Ok(())
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A little-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A presence tag: `Ok(true)` when a value follows.
    pub fn tag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag { what, tag }),
        }
    }

    fn checked_len(&self, len: u64, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        if len > max as u64 {
            return Err(DecodeError::TooLarge {
                what,
                len,
                max: max as u64,
            });
        }
        Ok(len as usize)
    }

    /// A string with a u16 length prefix, at most `max` bytes.
    pub fn str16(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u16(what)?;
        let len = self.checked_len(len.into(), max, what)?;
        std::str::from_utf8(self.take(len, what)?).map_err(|_| DecodeError::NotUtf8 { what })
    }

    /// A string with a u32 length prefix, at most `max` bytes.
    pub fn str32(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes32(max, what)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8 { what })
    }

    /// Bytes with a u32 length prefix, at most `max` bytes.
    pub fn bytes32(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)?;
        let len = self.checked_len(len.into(), max, what)?;
        self.take(len, what)
    }

    /// Fails unless every byte was read.
    pub fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                what,
                count: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_reading() {
        let mut w = Writer::new();
        w.u16(500);
        let bytes = w.into_bytes();
        let err = Reader::new(&bytes).str16(100, "name").unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { len: 500, .. }));
        let err = Reader::new(&bytes).str16(1000, "name").unwrap_err();
        assert_eq!(err, DecodeError::Truncated { what: "name" });
    }

    #[test]
    fn tags_and_trailing_bytes() {
        assert!(matches!(
            Reader::new(&[2]).tag("x"),
            Err(DecodeError::BadTag { tag: 2, .. })
        ));
        let mut r = Reader::new(&[1, 2]);
        r.u8("a").unwrap();
        assert!(matches!(
            r.finish("rec"),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
    }
}
