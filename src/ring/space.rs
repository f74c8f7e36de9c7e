//! The ring's identifier space: ids `0..size` on a circle, the clockwise
//! intervals Chord reasons with, ids from hashes, and the course's routing
//! table (which peer each table line points at). Pure: no sockets.
//!
//! Who owns an id: the first peer at or after it, clockwise (Chord's
//! `successor(id)`). The course's tables point, for a line `k`, at the first
//! peer *strictly after* `k`, which is the owner of `k + 1`; this module
//! says so once ([`RingSpace::table_targets`]).

use sha2::{Digest, Sha256};

/// The largest ring size allowed (ids fit in 32 bits).
pub const MAX_RING_SIZE: u64 = 1 << 32;

/// An identifier space of `size` ids on a circle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSpace {
    size: u64,
}

impl RingSpace {
    /// A space of `size` ids, from 2 up to 2^32.
    pub fn new(size: u64) -> Result<RingSpace, String> {
        if (2..=MAX_RING_SIZE).contains(&size) {
            Ok(RingSpace { size })
        } else {
            Err(format!(
                "a ring size must be from 2 to {MAX_RING_SIZE}, not {size}"
            ))
        }
    }

    /// How many ids there are.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `id` is in the space.
    pub fn contains(&self, id: u64) -> bool {
        id < self.size
    }

    /// Parses a decimal id and checks it is in the space.
    pub fn parse_id(&self, text: &str) -> Result<u64, String> {
        let id: u64 = text
            .parse()
            .ok()
            .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("{text:?} is not a ring id (a whole number)"))?;
        if self.contains(id) {
            Ok(id)
        } else {
            Err(format!("{id} is outside the ring (0 to {})", self.size - 1))
        }
    }

    /// The id of `text`: the first 8 bytes of its SHA-256, modulo the size.
    /// Stable on every machine, so two programs agree without talking.
    pub fn id_of(&self, text: &str) -> u64 {
        let digest = Sha256::digest(text.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) % self.size
    }

    /// `id + step`, around the circle.
    pub fn add(&self, id: u64, step: u64) -> u64 {
        ((u128::from(id) + u128::from(step)) % u128::from(self.size)) as u64
    }

    /// How far `to` is from `from`, going clockwise (0 when equal).
    pub fn distance(&self, from: u64, to: u64) -> u64 {
        // Ids from the network are checked, but a stray one must not
        // make this underflow.
        let (from, to) = (from % self.size, to % self.size);
        if to >= from {
            to - from
        } else {
            self.size - from + to
        }
    }

    /// Whether `x` lies in the clockwise interval `(a, b]`. When `a == b`
    /// the interval is the whole circle (a ring of one peer owns it all).
    pub fn in_half_open(&self, x: u64, a: u64, b: u64) -> bool {
        a == b || (self.distance(a, x) > 0 && self.distance(a, x) <= self.distance(a, b))
    }

    /// Whether `x` lies in the clockwise interval `(a, b)`, both ends
    /// excluded. When `a == b` it is the whole circle but `a`.
    pub fn in_open(&self, x: u64, a: u64, b: u64) -> bool {
        if a == b {
            x != a
        } else {
            self.distance(a, x) > 0 && self.distance(a, x) < self.distance(a, b)
        }
    }

    /// The offsets of the course's routing table lines: 0 (the next peer),
    /// then 2, 4, 8, ... while below the size.
    pub fn table_offsets(&self) -> Vec<u64> {
        let mut offsets = vec![0];
        let mut i = 2u64;
        while i < self.size {
            offsets.push(i);
            i = i.saturating_mul(2);
        }
        offsets
    }

    /// For the peer `h`, each table line's `k` and the id whose owner the
    /// line points at (`k + 1`: the first peer strictly after `k`).
    pub fn table_targets(&self, h: u64) -> Vec<(u64, u64)> {
        self.table_offsets()
            .into_iter()
            .map(|offset| {
                let k = self.add(h, offset);
                (k, self.add(k, 1))
            })
            .collect()
    }

    /// The owner of `id` among `ids`: the first at or after it, clockwise.
    /// `None` only when `ids` is empty.
    pub fn owner_among(&self, id: u64, ids: impl IntoIterator<Item = u64>) -> Option<u64> {
        ids.into_iter().min_by_key(|&peer| self.distance(id, peer))
    }

    /// The ideal routing table of the peer `h` in a ring whose peers are
    /// `ids`: for each line, its `k` and the id of the peer it points at.
    pub fn ideal_table(&self, h: u64, ids: &[u64]) -> Vec<(u64, u64)> {
        self.table_targets(h)
            .into_iter()
            .filter_map(|(k, target)| Some((k, self.owner_among(target, ids.iter().copied())?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(RingSpace::new(1).is_err());
        assert!(RingSpace::new(2).is_ok());
        assert!(RingSpace::new(1 << 32).is_ok());
        assert!(RingSpace::new((1 << 32) + 1).is_err());
    }

    #[test]
    fn intervals_wrap_around() {
        let s = RingSpace::new(100).unwrap();
        assert!(s.in_half_open(95, 90, 10));
        assert!(s.in_half_open(10, 90, 10));
        assert!(!s.in_half_open(90, 90, 10));
        assert!(s.in_half_open(5, 7, 7), "a == b is the whole ring");
        assert!(s.in_open(3, 90, 10));
        assert!(!s.in_open(10, 90, 10));
        assert!(!s.in_open(7, 7, 7));
        assert!(s.in_open(8, 7, 7));
        assert_eq!(s.distance(90, 10), 20);
        assert_eq!(s.add(99, 3), 2);
    }

    #[test]
    fn the_course_table_points_strictly_after_each_line() {
        // The course's example ring of size 100 with peers 10, 30, 60, 85.
        let s = RingSpace::new(100).unwrap();
        assert_eq!(s.table_offsets(), [0, 2, 4, 8, 16, 32, 64]);
        let ids = [10, 30, 60, 85];
        let table = s.ideal_table(30, &ids);
        assert_eq!(
            table,
            [
                (30, 60),
                (32, 60),
                (34, 60),
                (38, 60),
                (46, 60),
                (62, 85),
                (94, 10)
            ]
        );
        // A line whose k is a peer's own hash points past it.
        assert_eq!(s.ideal_table(58, &[60, 62]).get(1), Some(&(60, 62)));
        // A ring of one points at itself.
        assert_eq!(s.ideal_table(5, &[5])[0], (5, 5));
    }

    #[test]
    fn ids_of_texts_are_stable_and_in_range() {
        let s = RingSpace::new(100).unwrap();
        assert_eq!(s.id_of("127.0.0.2"), s.id_of("127.0.0.2"));
        assert!(s.id_of("127.0.0.2") < 100);
        assert_eq!(s.parse_id("99"), Ok(99));
        assert!(s.parse_id("100").is_err());
        assert!(s.parse_id("-1").is_err());
        assert!(s.parse_id("+1").is_err());
    }
}
