//! The BufferMap: one bit per piece, set when the piece is held and verified.
//!
//! Bit `i` is piece `i`, most significant bit first in each byte, so piece 0
//! is the top bit of the first byte; trailing pad bits are always zero. The
//! wire form is the bytes in lower-case hex ([`BitmapField`]).

use crate::protocol::BitmapField;

/// Which pieces of a file are held. Read only through its checking
/// constructors (stored, it is kept as its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bytes: Vec<u8>,
    len: usize,
    ones: usize,
}

/// Why some bytes are not the bitmap of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    #[error("a bitmap of {pieces} pieces is {} hex digits, got {}", expected * 2, got * 2)]
    WrongLength {
        pieces: usize,
        expected: usize,
        got: usize,
    },
    #[error("the pad bits after piece {pieces} must be zero")]
    PadBitsSet { pieces: usize },
}

impl Bitmap {
    /// An empty bitmap (nothing held) for `len` pieces.
    pub fn empty(len: usize) -> Bitmap {
        Bitmap {
            bytes: vec![0; len.div_ceil(8)],
            len,
            ones: 0,
        }
    }

    /// A full bitmap (everything held) for `len` pieces.
    pub fn full(len: usize) -> Bitmap {
        let mut bytes = vec![0xff; len.div_ceil(8)];
        let pad_bits = bytes.len() * 8 - len;
        if let Some(last) = bytes.last_mut() {
            // Clear the pad bits after the last piece.
            *last <<= pad_bits;
        }
        Bitmap {
            bytes,
            len,
            ones: len,
        }
    }

    /// Checks that `bytes` is a bitmap of exactly `len` pieces.
    pub fn from_bytes(bytes: Vec<u8>, len: usize) -> Result<Bitmap, BitmapError> {
        let ones = Bitmap::count_checked(&bytes, len)?;
        Ok(Bitmap { bytes, len, ones })
    }

    /// Checks that `bytes` is a bitmap of exactly `len` pieces (right
    /// length, zero pad bits) and counts the pieces it holds, without
    /// copying it.
    pub fn count_checked(bytes: &[u8], len: usize) -> Result<usize, BitmapError> {
        let expected = len.div_ceil(8);
        if bytes.len() != expected {
            return Err(BitmapError::WrongLength {
                pieces: len,
                expected,
                got: bytes.len(),
            });
        }
        let pad_bits = expected * 8 - len;
        if pad_bits > 0 && bytes[expected - 1] & ((1u8 << pad_bits) - 1) != 0 {
            return Err(BitmapError::PadBitsSet { pieces: len });
        }
        Ok(bytes.iter().map(|b| b.count_ones() as usize).sum())
    }

    /// Checks a bitmap read from the wire against a file's piece count.
    pub fn from_field(field: &BitmapField, len: usize) -> Result<Bitmap, BitmapError> {
        Bitmap::from_bytes(field.0.clone(), len)
    }

    /// The wire form.
    pub fn to_field(&self) -> BitmapField {
        BitmapField(self.bytes.clone())
    }

    /// Number of pieces the bitmap covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a file of no pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces held.
    pub fn count(&self) -> usize {
        self.ones
    }

    /// True when every piece is held.
    pub fn is_complete(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `index` is held (false past the end).
    pub fn has(&self, index: usize) -> bool {
        index < self.len && self.bytes[index / 8] & (0x80 >> (index % 8)) != 0
    }

    /// Marks piece `index` held. Panics past the end: callers check indices
    /// from the network against [`Bitmap::len`] first.
    pub fn set(&mut self, index: usize) {
        assert!(
            index < self.len,
            "piece {index} past the end ({})",
            self.len
        );
        if !self.has(index) {
            self.bytes[index / 8] |= 0x80 >> (index % 8);
            self.ones += 1;
        }
    }
}

impl Bitmap {
    /// Marks piece `index` not held (a peer that said it lacks a piece its
    /// BufferMap claimed). Does nothing past the end.
    pub fn clear(&mut self, index: usize) {
        if self.has(index) {
            self.bytes[index / 8] &= !(0x80 >> (index % 8));
            self.ones -= 1;
        }
    }

    /// The indices of the pieces not held, in order. A byte of eight held
    /// pieces is passed over at once, so a nearly complete bitmap is quick
    /// to go through.
    pub fn missing(&self) -> impl Iterator<Item = usize> + '_ {
        self.bytes
            .iter()
            .enumerate()
            .flat_map(|(at, &byte)| set_bits(at, !byte))
            // The pad bits after the last piece are zero: not pieces.
            .take_while(|&index| index < self.len)
    }

    /// The indices of the pieces held, in order, passing over a byte of
    /// none at once. (The pad bits after the last piece are zero: none is
    /// listed.)
    pub fn held(&self) -> impl Iterator<Item = usize> + '_ {
        self.bytes
            .iter()
            .enumerate()
            .flat_map(|(at, &byte)| set_bits(at, byte))
    }

    /// The pieces held by one of `self` and `newer` but not the other, in
    /// order, each with whether `newer` holds it: what changed from one
    /// BufferMap to the next. Bytes that agree are passed over at once.
    /// Bitmaps of different lengths are compared over the bytes of the
    /// shorter one.
    pub fn changes<'a>(&'a self, newer: &'a Bitmap) -> impl Iterator<Item = (usize, bool)> + 'a {
        self.bytes
            .iter()
            .zip(&newer.bytes)
            .enumerate()
            .flat_map(|(at, (&old, &new))| set_bits(at, old ^ new))
            .map(|index| (index, newer.has(index)))
    }
}

/// The indices of the bits set in `byte`, the `at`-th byte of a bitmap.
/// A zero byte, the common case, is passed over without looking at its
/// bits.
fn set_bits(at: usize, byte: u8) -> impl Iterator<Item = usize> {
    let bits = if byte == 0 { 0 } else { 8 };
    (0..bits)
        .filter(move |bit| byte & (0x80 >> bit) != 0)
        .map(move |bit| at * 8 + bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lists_the_pieces_not_held_and_no_pad_bits() {
        let mut bitmap = Bitmap::full(21);
        assert_eq!(bitmap.missing().count(), 0);
        for i in [0, 9, 10, 20] {
            bitmap.clear(i);
        }
        assert_eq!(bitmap.missing().collect::<Vec<_>>(), [0, 9, 10, 20]);
        let empty = Bitmap::empty(10);
        assert_eq!(
            empty.missing().collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(Bitmap::empty(0).missing().count(), 0);
    }

    #[test]
    fn msb_first_with_zero_padding() {
        let mut bitmap = Bitmap::empty(10);
        bitmap.set(0);
        bitmap.set(2);
        bitmap.set(9);
        assert_eq!(bitmap.to_field().to_string(), "a040");
        assert_eq!(bitmap.count(), 3);
        assert!(bitmap.has(9) && !bitmap.has(1) && !bitmap.has(10));
        let back = Bitmap::from_field(&BitmapField::parse("a040").unwrap(), 10).unwrap();
        assert_eq!(back, bitmap);
    }

    #[test]
    fn held_and_changes_list_the_bits_in_order() {
        let mut older = Bitmap::empty(20);
        for i in [0, 7, 8, 19] {
            older.set(i);
        }
        assert_eq!(older.held().collect::<Vec<_>>(), [0, 7, 8, 19]);
        assert_eq!(Bitmap::empty(20).held().count(), 0);
        assert_eq!(Bitmap::full(11).held().count(), 11, "no pad bits");
        let mut newer = older.clone();
        newer.clear(7);
        newer.set(9);
        newer.set(18);
        assert_eq!(
            older.changes(&newer).collect::<Vec<_>>(),
            [(7, false), (9, true), (18, true)]
        );
        assert_eq!(older.changes(&older).count(), 0);
        let joined: Vec<_> = Bitmap::empty(20).changes(&older).collect();
        assert_eq!(joined, [(0, true), (7, true), (8, true), (19, true)]);
    }

    #[test]
    fn clear_and_missing() {
        let mut bitmap = Bitmap::full(10);
        bitmap.clear(3);
        bitmap.clear(3);
        bitmap.clear(99);
        assert_eq!(bitmap.count(), 9);
        assert_eq!(bitmap.missing().collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn wrong_lengths_and_pad_bits_are_refused() {
        assert!(matches!(
            Bitmap::from_bytes(vec![0xff], 10),
            Err(BitmapError::WrongLength { expected: 2, .. })
        ));
        assert_eq!(
            Bitmap::from_bytes(vec![0xff, 0xff], 10),
            Err(BitmapError::PadBitsSet { pieces: 10 })
        );
        assert!(Bitmap::from_bytes(vec![0xff, 0xc0], 10)
            .unwrap()
            .is_complete());
        assert!(Bitmap::from_bytes(vec![], 0).unwrap().is_complete());
    }

    #[test]
    fn full_is_complete_with_zero_padding() {
        for len in 0..40 {
            let full = Bitmap::full(len);
            assert!(full.is_complete(), "{len}");
            assert_eq!(
                Bitmap::from_bytes(full.bytes.clone(), len),
                Ok(full.clone()),
                "{len}"
            );
            assert!((0..len).all(|i| full.has(i)));
        }
        assert_eq!(Bitmap::full(13).to_field().to_string(), "fff8");
        assert_eq!(Bitmap::full(16).to_field().to_string(), "ffff");
    }
}
