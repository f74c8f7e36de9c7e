//! How rare each piece is: how many live neighbours hold it, the counts
//! behind "rarest first". The coordinator tells [`Rarity`] what changed (a
//! new BufferMap, a piece refused, a neighbour gone or back) and the counts
//! move by that difference alone: a BufferMap that differs from the last
//! one by a few pieces costs a pass over its bytes, not a count of every
//! piece of every neighbour.
//!
//! [`sample_rarest`] picks pieces of the lowest rarity by drawing random
//! pieces, so that a download of many pieces does not list every missing
//! piece for every batch it asks for.

use crate::pieces::Bitmap;

/// How many live neighbours hold each piece.
pub struct Rarity {
    counts: Vec<u32>,
    /// The fewest holders of any missing piece that someone holds (`None`:
    /// no missing piece is held by anyone), as of the last refresh.
    rarest: Option<u32>,
    /// Set when the counts changed since `rarest` was found.
    stale: bool,
}

impl Rarity {
    /// Counts for `pieces` pieces, none held by anyone yet.
    pub fn new(pieces: usize) -> Rarity {
        Rarity {
            counts: vec![0; pieces],
            rarest: None,
            stale: true,
        }
    }

    /// A live neighbour's holdings went from `old` to `new` (its next
    /// BufferMap; a new neighbour starts from an empty one).
    pub fn update(&mut self, old: &Bitmap, new: &Bitmap) {
        for (index, held) in old.changes(new) {
            if held {
                self.increment(index);
            } else {
                self.decrement(index);
            }
        }
    }

    /// A dropped neighbour holding `held` is live again.
    pub fn add_holder(&mut self, held: &Bitmap) {
        held.held().for_each(|index| self.increment(index));
    }

    /// A live neighbour holding `held` was dropped.
    pub fn remove_holder(&mut self, held: &Bitmap) {
        held.held().for_each(|index| self.decrement(index));
    }

    /// A live neighbour turned out not to have piece `index` after all (it
    /// refused it, or sent it corrupt).
    pub fn remove_piece(&mut self, index: usize) {
        self.decrement(index);
    }

    /// Asks for the rarest piece to be found again at the next refresh,
    /// though no count changed: pieces that arrived may have been all the
    /// rarest ones.
    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    fn increment(&mut self, index: usize) {
        if let Some(count) = self.counts.get_mut(index) {
            *count += 1;
            self.stale = true;
        }
    }

    fn decrement(&mut self, index: usize) {
        if let Some(count) = self.counts.get_mut(index) {
            *count = count.saturating_sub(1);
            self.stale = true;
        }
    }

    /// Finds the rarest missing piece again if the counts changed since
    /// the last refresh, and says whether they had; `have` is our own
    /// bitmap.
    ///
    /// Between two refreshes pieces only arrive, so [`Rarity::rarest`] can
    /// only be lower than the truth, never higher.
    pub fn refresh(&mut self, have: &Bitmap) -> bool {
        if !self.stale {
            return false;
        }
        self.stale = false;
        self.rarest = have
            .missing()
            .map(|index| self.of(index))
            .filter(|&count| count > 0)
            .min();
        true
    }

    /// Whether the counts are those of `live`, the bitmaps of the live
    /// neighbours, counted from scratch: the check behind the incremental
    /// updates, which the debug builds (and so the tests) make at every
    /// assignment that follows a change.
    pub fn agrees_with<'a>(&self, live: impl Iterator<Item = &'a Bitmap>) -> bool {
        let mut counts = vec![0; self.counts.len()];
        for index in live.flat_map(Bitmap::held) {
            if let Some(count) = counts.get_mut(index) {
                *count += 1;
            }
        }
        counts == self.counts
    }

    /// How many live neighbours hold piece `index`.
    pub fn of(&self, index: usize) -> u32 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// The fewest holders of any missing piece that someone holds, as of
    /// the last refresh.
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
    fn counts_follow_what_changed() {
        let mut rarity = Rarity::new(4);
        let a = bitmap(4, &[0, 1, 2]);
        let b = bitmap(4, &[1, 2]);
        let have = bitmap(4, &[2]);
        let counts = |r: &Rarity| (0..4).map(|i| r.of(i)).collect::<Vec<_>>();
        rarity.update(&Bitmap::empty(4), &a);
        rarity.update(&Bitmap::empty(4), &b);
        assert!(rarity.refresh(&have));
        assert_eq!(counts(&rarity), [1, 2, 2, 0]);
        assert!(rarity.agrees_with([&a, &b].into_iter()));
        // Piece 2 is here, piece 3 held by nobody: the rarest is piece 0.
        assert_eq!(rarity.rarest(), Some(1));
        // b's next BufferMap: piece 3 new, piece 1 gone.
        let b2 = bitmap(4, &[2, 3]);
        rarity.update(&b, &b2);
        rarity.refresh(&have);
        assert_eq!(counts(&rarity), [1, 1, 2, 1]);
        assert!(rarity.agrees_with([&a, &b2].into_iter()));
        assert!(!rarity.agrees_with([&a, &b].into_iter()));
        // a refuses piece 0, then leaves; b leaves and comes back.
        rarity.remove_piece(0);
        rarity.remove_holder(&bitmap(4, &[1, 2]));
        rarity.refresh(&have);
        assert_eq!(counts(&rarity), [0, 0, 1, 1]);
        assert_eq!(rarity.rarest(), Some(1), "piece 3, from b");
        rarity.remove_holder(&b2);
        rarity.refresh(&have);
        assert_eq!(rarity.rarest(), None, "nobody holds a missing piece");
        assert!(rarity.agrees_with(std::iter::empty()));
        rarity.add_holder(&b2);
        assert!(rarity.refresh(&have));
        assert_eq!(rarity.rarest(), Some(1));
        assert!(rarity.agrees_with([&b2].into_iter()));
        // Nothing changed, nothing to find again; unless asked.
        assert!(!rarity.refresh(&have));
        rarity.mark_stale();
        assert!(rarity.refresh(&bitmap(4, &[2, 3])));
        assert_eq!(rarity.rarest(), None, "piece 3 arrived");
        assert_eq!(rarity.of(99), 0, "past the end");
        rarity.remove_piece(99);
    }

    #[test]
    fn samples_are_distinct_candidates_or_none() {
        let mut rng = fastrand::Rng::with_seed(7);
        let even = |i: usize| i.is_multiple_of(2);
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
