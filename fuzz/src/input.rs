//! Reading a fuzz input as a little program, and writing one (for seeds).
//!
//! [`Input`] never fails: past the end every read is zero, so any byte
//! string is a valid program and the fuzzer never wastes an input on a
//! parse error. [`Seed`] writes the same encoding.

/// A cursor over fuzz bytes.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.data.split_first() else { return 0 };
        self.data = rest;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A descriptor index or ring position: usually a small one (one byte),
    /// any u16 after a 0xff escape.
    pub fn small_u16(&mut self) -> u16 {
        match self.u8() {
            0xff => self.u16(),
            b => u16::from(b),
        }
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A length-prefixed (u16) byte string, cut short at the end of the input.
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.data.len());
        let (b, rest) = self.data.split_at(n);
        self.data = rest;
        b
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }
}

/// Writes the encoding [`Input`] reads.
#[derive(Debug, Default)]
pub struct Seed {
    pub bytes: Vec<u8>,
}

impl Seed {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u16(b.len() as u16);
        self.bytes.extend_from_slice(b);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_read_back_and_short_inputs_read_as_zeros() {
        let mut s = Seed::default();
        s.u8(7).u16(0x1234).u32(5).u64(u64::MAX).bytes(b"abc");
        let mut i = Input::new(&s.bytes);
        assert_eq!((i.u8(), i.u16(), i.u32(), i.u64(), i.bytes()), (7, 0x1234, 5, u64::MAX, &b"abc"[..]));
        assert!(i.is_empty());
        assert_eq!((i.u32(), i.bytes()), (0, &b""[..]));
        let mut short = Input::new(&[1, 2]);
        assert_eq!(short.u32(), 0x0201);
    }
}
