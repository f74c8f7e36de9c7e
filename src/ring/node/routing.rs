//! What this peer knows of the ring (its predecessor, successors and
//! routing table) and the decisions made from that alone: one step of a
//! look-up, taking a notify, a neighbour leaving or gone. Pure: no
//! sockets, so each rule is unit-tested below.

use std::net::SocketAddr;

use crate::protocol::ring::{Member, Via, MAX_OWNER_LIST};

use crate::ring::client::{LookStep, NodeView};
use crate::ring::space::RingSpace;

/// One line of the routing table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Finger {
    /// The line's `k` (the course's form: `h`, then `h + 2^i`).
    pub(super) k: u64,
    /// The id whose owner the line points at (`k + 1`).
    pub(super) target: u64,
    pub(super) node: Option<Member>,
}

/// What this peer knows of the ring. Only ever held briefly.
#[derive(Debug, Clone)]
pub(super) struct Routing {
    pub(super) me: Member,
    pub(super) predecessor: Option<Member>,
    /// Nearest first; `[me]` when alone. Never empty.
    pub(super) successors: Vec<Member>,
    /// Whether the peer after the last successor is this one: the list
    /// came round the whole ring (a ring of at most `successors` + 1
    /// peers). Then this peer keeps its successor's records too.
    ends_before_me: bool,
    pub(super) fingers: Vec<Finger>,
}

impl Routing {
    pub(super) fn new(space: &RingSpace, me: Member, successors: Vec<Member>) -> Routing {
        let fingers = space
            .table_targets(me.id)
            .into_iter()
            .map(|(k, target)| Finger {
                k,
                target,
                node: None,
            })
            .collect();
        let successors = if successors.is_empty() {
            vec![me]
        } else {
            successors
        };
        Routing {
            me,
            predecessor: None,
            successors,
            ends_before_me: false,
            fingers,
        }
    }

    pub(super) fn successor(&self) -> Member {
        self.successors[0]
    }

    pub(super) fn is_alone(&self) -> bool {
        self.successor() == self.me
    }

    /// This peer, then its successors: where the records it owns live.
    pub(super) fn owners_from_me(&self) -> Vec<Member> {
        let mut owners = vec![self.me];
        owners.extend(self.successors.iter().filter(|m| **m != self.me));
        owners.truncate(MAX_OWNER_LIST);
        owners
    }

    /// The successor, then the peers after it as far as this peer knows:
    /// where the records the successor owns live (what it would answer).
    fn owners_from_successor(&self) -> Vec<Member> {
        let mut owners = self.successors.clone();
        if self.ends_before_me {
            owners.push(self.me);
        }
        owners.truncate(MAX_OWNER_LIST);
        owners
    }

    /// One step of the look-up of `id`, answered from what this peer knows.
    pub(super) fn step(&self, space: &RingSpace, id: u64, via: Via) -> LookStep {
        if let Some(pred) = self.predecessor {
            if space.in_half_open(id, pred.id, self.me.id) {
                return LookStep::Owner(self.owners_from_me());
            }
        }
        let succ = self.successor();
        if self.is_alone() {
            return LookStep::Owner(vec![self.me]);
        }
        if space.in_half_open(id, self.me.id, succ.id) {
            return LookStep::Owner(self.owners_from_successor());
        }
        let next = match via {
            Via::Fingers => self.closest_preceding(space, id),
            Via::Successors => succ,
        };
        LookStep::Next(next)
    }

    /// The known peer closest before `id` (going clockwise from here): the
    /// farthest hop that does not overshoot.
    pub(super) fn closest_preceding(&self, space: &RingSpace, id: u64) -> Member {
        self.fingers
            .iter()
            .filter_map(|f| f.node)
            .chain(self.successors.iter().copied())
            .filter(|m| space.in_open(m.id, self.me.id, id))
            .max_by_key(|m| space.distance(self.me.id, m.id))
            .unwrap_or_else(|| self.successor())
    }

    /// Whether `candidate`, saying it may be our predecessor, would change
    /// this peer's links (see [`Routing::notified`]).
    pub(super) fn takes_notice_of(&self, space: &RingSpace, candidate: Member) -> bool {
        self.closer_predecessor(space, candidate) || (self.is_alone() && candidate.id != self.me.id)
    }

    /// Whether `candidate` would be a closer predecessor than the one known.
    /// Our own id at another address never is: with it this peer would
    /// think it owns the whole ring.
    fn closer_predecessor(&self, space: &RingSpace, candidate: Member) -> bool {
        candidate.id != self.me.id
            && self.predecessor != Some(candidate)
            && self
                .predecessor
                .is_none_or(|pred| space.in_open(candidate.id, pred.id, self.me.id))
    }

    /// `candidate` says it may be our predecessor; true if that changed
    /// this peer's links.
    pub(super) fn notified(&mut self, space: &RingSpace, candidate: Member) -> bool {
        if !self.takes_notice_of(space, candidate) {
            return false;
        }
        if self.closer_predecessor(space, candidate) {
            self.predecessor = Some(candidate);
        }
        if self.is_alone() {
            self.pair_with(candidate);
        }
        true
    }

    /// `other` notified this peer while it was alone: the first peer to
    /// join a ring of one is its successor too, and this peer is next.
    pub(super) fn pair_with(&mut self, other: Member) {
        self.successors = vec![other];
        self.ends_before_me = true;
    }

    /// Takes the successor's view: it, then its own successors, up to `len`.
    pub(super) fn adopt_successor(&mut self, view: &NodeView, len: usize) {
        let mut list = vec![view.me];
        let mut ends_before_me = false;
        for s in &view.successors {
            if *s == self.me {
                ends_before_me = true;
                break;
            }
            if list.len() >= len {
                break;
            }
            if !list.contains(s) {
                list.push(*s);
            }
        }
        self.successors = list;
        self.ends_before_me = ends_before_me;
    }

    /// `leaving` leaves; `predecessor` and `successor` were its neighbours.
    pub(super) fn left(&mut self, leaving: Member, predecessor: Option<Member>, successor: Member) {
        // By id: a member named with this peer's id at another address
        // would make this peer own the whole ring.
        if self.predecessor == Some(leaving) {
            self.predecessor = predecessor.filter(|p| p.id != self.me.id && p.id != leaving.id);
        }
        let was_first = self.successors.first() == Some(&leaving);
        self.successors.retain(|m| *m != leaving);
        if was_first
            && successor.id != self.me.id
            && successor.id != leaving.id
            && !self.successors.contains(&successor)
        {
            self.successors.insert(0, successor);
        }
        self.forget_fingers(leaving);
        if self.successors.is_empty() {
            self.successors.push(self.me);
        }
    }

    /// `gone` does not answer: it goes from every table.
    pub(super) fn drop_member(&mut self, gone: SocketAddr) {
        if self.predecessor.is_some_and(|p| p.addr == gone) {
            self.predecessor = None;
        }
        self.successors.retain(|m| m.addr != gone);
        for finger in &mut self.fingers {
            if finger.node.is_some_and(|m| m.addr == gone) {
                finger.node = None;
            }
        }
        if self.successors.is_empty() {
            self.successors.push(self.me);
        }
    }

    pub(super) fn forget_fingers(&mut self, gone: Member) {
        for finger in &mut self.fingers {
            if finger.node == Some(gone) {
                finger.node = None;
            }
        }
    }

    pub(super) fn view(&self, size: u64) -> NodeView {
        NodeView {
            me: self.me,
            size,
            predecessor: self.predecessor,
            successors: self.successors.clone(),
            fingers: self.fingers.iter().map(|f| (f.k, f.node)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> Member {
        Member {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
        }
    }

    fn routing(space: &RingSpace, me: u64, successors: &[u64], pred: Option<u64>) -> Routing {
        let mut r = Routing::new(
            space,
            member(me),
            successors.iter().map(|&s| member(s)).collect(),
        );
        r.predecessor = pred.map(member);
        r
    }

    #[test]
    fn a_step_answers_the_owner_or_a_closer_peer() {
        let space = RingSpace::new(100).unwrap();
        let mut r = routing(&space, 10, &[30, 60], Some(85));
        assert_eq!(
            r.step(&space, 5, Via::Fingers),
            LookStep::Owner(vec![member(10), member(30), member(60)])
        );
        assert_eq!(
            r.step(&space, 25, Via::Fingers),
            LookStep::Owner(vec![member(30), member(60)])
        );
        assert_eq!(
            r.step(&space, 70, Via::Fingers),
            LookStep::Next(member(60)),
            "the farthest known"
        );
        assert_eq!(
            r.step(&space, 70, Via::Successors),
            LookStep::Next(member(30)),
            "successors only"
        );
        r.fingers[5].node = Some(member(70));
        assert_eq!(
            r.step(&space, 80, Via::Fingers),
            LookStep::Next(member(70)),
            "a finger beats the successors"
        );
    }

    #[test]
    fn the_owners_named_for_the_successor_are_the_ones_it_names() {
        // A ring of three, 10, 30 and 60: 30's successor list comes round
        // to 10, so 10 keeps 30's records too, and says so.
        let space = RingSpace::new(100).unwrap();
        let mut r = routing(&space, 10, &[30], Some(60));
        let successor = |successors: &[u64]| NodeView {
            me: member(30),
            size: 100,
            predecessor: Some(member(10)),
            successors: successors.iter().map(|&s| member(s)).collect(),
            fingers: Vec::new(),
        };
        r.adopt_successor(&successor(&[60, 10]), 4);
        assert_eq!(r.successors, [member(30), member(60)]);
        assert_eq!(
            r.step(&space, 25, Via::Fingers),
            LookStep::Owner(vec![member(30), member(60), member(10)])
        );
        // A longer ring, the list cut at its length: nothing is guessed.
        r.adopt_successor(&successor(&[60, 80, 95]), 2);
        assert_eq!(
            r.step(&space, 25, Via::Fingers),
            LookStep::Owner(vec![member(30), member(60)])
        );
        // A ring of two, made by a notify: the successor, then this peer.
        let mut pair = routing(&space, 10, &[], None);
        assert!(pair.notified(&space, member(40)));
        assert_eq!(
            pair.step(&space, 25, Via::Fingers),
            LookStep::Owner(vec![member(40), member(10)])
        );
    }

    #[test]
    fn a_ring_of_one_owns_everything_and_takes_its_first_joiner() {
        let space = RingSpace::new(100).unwrap();
        let mut r = routing(&space, 10, &[], None);
        assert_eq!(
            r.step(&space, 77, Via::Fingers),
            LookStep::Owner(vec![member(10)])
        );
        assert!(r.notified(&space, member(40)));
        assert_eq!(r.successor(), member(40));
        assert_eq!(r.predecessor, Some(member(40)));
        assert!(
            !r.notified(&space, member(20)),
            "20 is not between 40 and 10"
        );
    }

    #[test]
    fn a_leaving_peer_is_replaced_by_its_neighbours() {
        let space = RingSpace::new(100).unwrap();
        let mut r = routing(&space, 10, &[30, 60], Some(85));
        r.left(member(30), Some(member(10)), member(45));
        assert_eq!(r.successors, [member(45), member(60)]);
        r.left(member(85), Some(member(70)), member(10));
        assert_eq!(r.predecessor, Some(member(70)));
        r.drop_member(member(45).addr);
        assert_eq!(r.successors, [member(60)]);
        r.drop_member(member(60).addr);
        assert_eq!(r.successors, [member(10)], "alone again");
    }

    #[test]
    fn a_leave_naming_this_peer_s_id_at_another_address_is_not_taken() {
        let space = RingSpace::new(100).unwrap();
        let mut r = routing(&space, 10, &[30, 60], Some(85));
        let impostor = Member {
            id: 10,
            addr: SocketAddr::from(([10, 0, 0, 66], 7000)),
        };
        let before = r.step(&space, 50, Via::Fingers);
        r.left(member(85), Some(impostor), impostor);
        assert_eq!(r.predecessor, None, "not this peer's id");
        assert_eq!(
            r.step(&space, 50, Via::Fingers),
            before,
            "50 is not this peer's"
        );
    }
}
