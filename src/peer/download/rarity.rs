//! How rare each piece is: how many live neighbours hold it, the counts
//! behind "rarest first". The coordinator keeps them here between
//! assignments and counts again only after a BufferMap, a refusal or a
//! neighbour's departure changed them, not each time a lane needs work.
//!
//! [`sample_rarest`] picks pieces of the lowest rarity by drawing random
//! pieces, so that a download of many pieces does not list every missing
//! piece for every batch it asks for.

use crate::pieces::Bitmap;

/// How many live neighbours hold each piece.
pub struct Rarity {
    counts: Vec<u32>,
    /// The fewest holders of any missing piece that someone holds (`None`:
    /// no missing piece is held by anyone).
    rarest: Option<u32>,
    /// Set when the bitmaps changed since the counts were taken.
    stale: bool,
}

impl Rarity {
    /// Counts for `pieces` pieces, to be taken at the first [`Rarity::refresh`].
    pub fn new(pieces: usize) -> Rarity {
        Rarity {
            counts: vec![0; pieces],
            rarest: None,
            stale: true,
        }
    }

    /// Says that a neighbour's bitmap changed, or a neighbour came or went.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// Counts again if the bitmaps changed: `live` are the bitmaps of the
    /// live neighbours, `have` ours.
    ///
    /// Between two counts pieces only arrive, so [`Rarity::rarest`] can
    /// only be lower than the truth, never higher.
    pub fn refresh<'a>(&mut self, live: impl Iterator<Item = &'a Bitmap>, have: &Bitmap) {
        if !self.stale {
            return;
        }
        self.stale = false;
        self.counts.iter_mut().for_each(|count| *count = 0);
        for bitmap in live {
            for (index, count) in self.counts.iter_mut().enumerate() {
                if bitmap.has(index) {
                    *count += 1;
                }
            }
        }
        self.rarest = have
            .missing()
            .map(|index| self.counts[index])
            .filter(|&count| count > 0)
            .min();
    }

    /// How many live neighbours hold piece `index`.
    pub fn of(&self, index: usize) -> u32 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// The fewest holders of any missing piece that someone holds, as of
    /// the last count.
    pub fn rarest(&self) -> Option<u32> {
        self.rarest
    }
}

/// How many random pieces [`sample_rarest`] draws per piece it must find
/// before it gives up: it wins while at least one piece in eight is a
/// candidate of the lowest rarity (most of a download), and costs little
/// when it loses.
const DRAWS_PER_PIECE: usize = 8;

/// Up to `room` distinct pieces out of `pieces`, drawn at random among
/// those for which `is_rarest_candidate` holds, or `None` when fewer turn
/// up within the draws (the caller then looks at every piece). Every such
/// piece is equally likely to be chosen, which keeps the choice as random
/// as listing them all and drawing from the list.
pub fn sample_rarest(
    rng: &mut fastrand::Rng,
    pieces: usize,
    room: usize,
    mut is_rarest_candidate: impl FnMut(usize) -> bool,
) -> Option<Vec<u32>> {
    if pieces == 0 || room == 0 {
        return None;
    }
    let mut chosen: Vec<u32> = Vec::with_capacity(room);
    for _ in 0..room * DRAWS_PER_PIECE {
        let index = rng.usize(..pieces);
        let index32 = u32::try_from(index).ok()?;
        if !chosen.contains(&index32) && is_rarest_candidate(index) {
            chosen.push(index32);
            if chosen.len() == room {
                return Some(chosen);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap(len: usize, held: &[usize]) -> Bitmap {
        let mut bitmap = Bitmap::empty(len);
        held.iter().for_each(|&i| bitmap.set(i));
        bitmap
    }

    #[test]
    fn counts_are_taken_again_only_when_stale() {
        let mut rarity = Rarity::new(4);
        let a = bitmap(4, &[0, 1, 2]);
        let b = bitmap(4, &[1, 2]);
        let have = bitmap(4, &[2]);
        rarity.refresh([&a, &b].into_iter(), &have);
        assert_eq!(
            (0..4).map(|i| rarity.of(i)).collect::<Vec<_>>(),
            [1, 2, 2, 0]
        );
        // Piece 2 is here, piece 3 held by nobody: the rarest is piece 0.
        assert_eq!(rarity.rarest(), Some(1));
        // Without a change said, nothing is counted again.
        rarity.refresh([&b].into_iter(), &have);
        assert_eq!(rarity.of(0), 1);
        rarity.mark_stale();
        rarity.refresh([&b].into_iter(), &have);
        assert_eq!(
            (0..4).map(|i| rarity.of(i)).collect::<Vec<_>>(),
            [0, 1, 1, 0]
        );
        assert_eq!(rarity.rarest(), Some(1));
        rarity.mark_stale();
        rarity.refresh(std::iter::empty(), &have);
        assert_eq!(rarity.rarest(), None, "nobody holds a missing piece");
        assert_eq!(rarity.of(99), 0, "past the end");
    }

    #[test]
    fn samples_are_distinct_candidates_or_none() {
        let mut rng = fastrand::Rng::with_seed(7);
        let even = |i: usize| i % 2 == 0;
        let chosen = sample_rarest(&mut rng, 1000, 16, even).unwrap();
        assert_eq!(chosen.len(), 16);
        assert!(chosen.iter().all(|&i| i % 2 == 0 && i < 1000));
        let mut unique = chosen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 16, "no piece twice");
        // Too few candidates to find by drawing: the caller must scan.
        assert_eq!(sample_rarest(&mut rng, 1000, 4, |i| i == 5), None);
        assert_eq!(sample_rarest(&mut rng, 0, 4, even), None);
        // All of few candidates can be found.
        let all = sample_rarest(&mut rng, 3, 3, |_| true).unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn every_candidate_is_as_likely_to_be_chosen() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut times = [0u32; 8];
        for _ in 0..4000 {
            for i in sample_rarest(&mut rng, 8, 2, |_| true).unwrap() {
                times[i as usize] += 1;
            }
        }
        // 8000 choices over 8 pieces: 1000 each on average.
        assert!(times.iter().all(|&t| (850..1150).contains(&t)), "{times:?}");
    }
}
