//! Which pieces a download has asked for and not received yet, and of
//! which neighbours (more than one in the endgame, or for a piece a player
//! waits on: see `ENDGAME_COPIES` in the coordinator).
//!
//! Choosing pieces asks "is this one asked for already?" of every missing
//! piece, each time a lane needs work: that question is answered from a
//! bitmap, one bit per piece, rather than by hashing the index into the
//! map of askers (a measurable share of a fast download's CPU otherwise).

use std::collections::HashMap;

use crate::pieces::Bitmap;

/// The outstanding requests of one download.
pub struct InFlight {
    /// The neighbours (by their index in the coordinator) each piece is
    /// asked of.
    askers: HashMap<u32, Vec<usize>>,
    /// The keys of `askers`, as a bitmap.
    asked: Bitmap,
}

impl InFlight {
    /// No requests yet, for a file of `pieces` pieces.
    pub fn new(pieces: usize) -> InFlight {
        InFlight {
            askers: HashMap::new(),
            asked: Bitmap::empty(pieces),
        }
    }

    /// True when piece `index` is asked of some neighbour.
    pub fn contains(&self, index: u32) -> bool {
        self.asked.has(index as usize)
    }

    /// The neighbours piece `index` is asked of (empty: none).
    pub fn askers(&self, index: u32) -> &[usize] {
        self.askers.get(&index).map_or(&[], Vec::as_slice)
    }

    /// Every piece asked for, with its askers, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[usize])> {
        self.askers
            .iter()
            .map(|(&index, askers)| (index, askers.as_slice()))
    }

    /// Records that piece `index` is asked of `neighbour`. The index is a
    /// piece of the file (the coordinator picks it from its own bitmaps).
    pub fn add(&mut self, index: u32, neighbour: usize) {
        // The bit first: past the end it panics, before the map changes.
        self.asked.set(index as usize);
        self.askers.entry(index).or_default().push(neighbour);
    }

    /// Forgets the request of piece `index` from `neighbour` (answered or
    /// given up), if there was one.
    pub fn remove(&mut self, index: u32, neighbour: usize) {
        if let Some(askers) = self.askers.get_mut(&index) {
            askers.retain(|&a| a != neighbour);
            if askers.is_empty() {
                self.askers.remove(&index);
                self.asked.clear(index as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_past_the_first_byte_and_the_last_piece_are_kept_apart() {
        let mut in_flight = InFlight::new(10);
        in_flight.add(8, 0);
        in_flight.add(9, 2);
        assert!(in_flight.contains(8) && in_flight.contains(9));
        assert!(!in_flight.contains(0) && !in_flight.contains(1));
        assert!(!in_flight.contains(10), "past the end: never in flight");
        in_flight.remove(8, 0);
        assert!(!in_flight.contains(8) && in_flight.contains(9));
        let mut listed: Vec<(u32, Vec<usize>)> = in_flight
            .iter()
            .map(|(index, askers)| (index, askers.to_vec()))
            .collect();
        listed.sort();
        assert_eq!(listed, [(9, vec![2])]);
    }

    #[test]
    fn a_piece_stays_in_flight_until_its_last_asker_is_done() {
        let mut in_flight = InFlight::new(10);
        assert_eq!(in_flight.iter().count(), 0);
        in_flight.add(3, 0);
        in_flight.add(3, 1);
        in_flight.add(7, 1);
        assert!(in_flight.contains(3) && in_flight.contains(7));
        assert!(!in_flight.contains(4));
        assert_eq!(in_flight.askers(3), [0, 1]);
        assert_eq!(in_flight.askers(4), [] as [usize; 0]);

        in_flight.remove(3, 0);
        assert!(in_flight.contains(3), "neighbour 1 still fetches it");
        assert_eq!(in_flight.askers(3), [1]);
        in_flight.remove(3, 5);
        assert_eq!(in_flight.askers(3), [1], "5 never asked: nothing changes");
        in_flight.remove(3, 1);
        assert!(!in_flight.contains(3));
        in_flight.remove(7, 1);
        assert!(!in_flight.contains(7));
        assert_eq!(in_flight.iter().count(), 0);
    }
}
