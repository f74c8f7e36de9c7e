//! The periodic rounds that keep this peer's place in the ring right:
//!
//! - *stabilise*: ask the successor for its predecessor; if that peer sits
//!   between us (and is that peer when asked), it becomes our successor;
//!   take the successor's own list as the rest of ours; tell the successor
//!   we are here (*notify*);
//! - *check predecessor*: forget a predecessor that no longer answers, or
//!   whose address answers with another id;
//! - *fix fingers*: look up, for each routing table line, the peer it
//!   should point at;
//!
//! (Putting records in their places has a thread of its own: [`super::placement`].)
//!
//! A successor that does not answer is dropped, and the next one in the
//! list takes its place: that is how the ring heals after a crash.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info, warn};

use crate::protocol::ring::{Member, Via};
use crate::ring::client::NodeView;

use super::{fits, RingNode};

/// How often expired records are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

impl RingNode {
    pub(super) fn run_rounds(&self, stop: &Receiver<()>) {
        let settings = &self.settings;
        let now = Instant::now();
        let mut next_stabilize = now;
        let mut next_check = now + settings.check_predecessor;
        let mut next_fix = now + settings.fix_fingers.min(settings.stabilize);
        let mut next_expire = now + EXPIRE_EVERY;
        let mut twin_told = None;
        loop {
            let now = Instant::now();
            if now >= next_stabilize {
                // Told once for each twin (a busy round sees none).
                let twin = self.stabilize();
                if let Some(twin) = twin.filter(|_| twin != twin_told) {
                    twin_told = Some(twin);
                    warn!(
                        "ring: {twin} has this peer's id too (two peers joined with it at once): \
                         the ring routes id {} to it, and this peer owns nothing; stop this peer \
                         and start it again with another --ring-id (or none)",
                        twin.id
                    );
                }
                next_stabilize = now + settings.stabilize;
            }
            if now >= next_check {
                self.check_predecessor();
                next_check = now + settings.check_predecessor;
            }
            if now >= next_fix {
                self.fix_fingers();
                next_fix = now + settings.fix_fingers;
            }
            if now >= next_expire {
                let gone = self.records.lock().expire(now);
                if gone > 0 {
                    debug!("ring: {gone} record(s) expired");
                }
                next_expire = now + EXPIRE_EVERY;
            }
            let due = next_stabilize
                .min(next_check)
                .min(next_fix)
                .min(next_expire);
            match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// One stabilisation round (see the module's doc). Returns another
    /// member that has this peer's own id, if the round saw one
    /// ([`RingNode::twin_of`]).
    fn stabilize(&self) -> Option<Member> {
        let space = &self.settings.space;
        let attempts = self.settings.successors + 1;
        for _ in 0..attempts {
            let (me, succ) = {
                let mut routing = self.routing.write();
                if routing.is_alone() {
                    // Someone notified us: it is our successor too.
                    match routing.predecessor {
                        Some(pred) => routing.pair_with(pred),
                        None => return None,
                    }
                }
                (routing.me, routing.successor())
            };
            let mut view = match self.client.info(succ.addr) {
                Ok(view) if fits(&view, space) && view.me == succ => view,
                // Another id at its address (it restarted as another
                // member, or this is our own old entry): not it.
                Ok(view) if fits(&view, space) => {
                    warn!(
                        "ring: successor {succ} is not there ({} is); dropping it",
                        view.me
                    );
                    self.drop_member(succ.addr);
                    continue;
                }
                Ok(view) => {
                    warn!(
                        "ring: successor {} is not in this ring (size {}); dropping it",
                        view.me, view.size
                    );
                    self.drop_member(succ.addr);
                    continue;
                }
                Err(e) if e.is_not_a_member() => {
                    warn!("ring: successor {succ} does not answer as a member ({e}); dropping it");
                    self.drop_member(succ.addr);
                    continue;
                }
                // Busy: it is there; try again next round.
                Err(e) => {
                    debug!("ring: successor {succ}: {e}");
                    return None;
                }
            };
            let twin = self.twin_of(me, &view);
            if let Some(between) = view.predecessor {
                if between != me && space.in_open(between.id, me.id, view.me.id) {
                    // Only the peer the successor named, at that address:
                    // a notify may name another peer's address.
                    match self.client.info(between.addr) {
                        Ok(closer) if fits(&closer, space) && closer.me == between => {
                            view = closer;
                        }
                        Ok(closer) => debug!(
                            "ring: {between} (the predecessor of {}) is {} there; not taken",
                            view.me, closer.me
                        ),
                        Err(e) => debug!("ring: {between}: {e}"),
                    }
                }
            }
            {
                let mut routing = self.routing.write();
                let before = routing.successor();
                if before != succ {
                    // Changed while we asked (a leave, a notify): the
                    // next round starts from the new one.
                    return twin;
                }
                routing.adopt_successor(&view, self.settings.successors);
                if routing.successor() != before {
                    info!("ring: successor {} (was {before})", routing.successor());
                }
            }
            if let Err(e) = self.client.notify(view.me.addr, me) {
                debug!("ring: cannot notify {}: {e}", view.me);
            }
            return twin;
        }
        None
    }

    /// Another member with this peer's own id, named by the successor as
    /// its predecessor (and answering as that member there): two peers
    /// that joined with one id at once (`--ring-id` given twice, through
    /// members that did not know of each other yet). The ring routes the
    /// id to that one; this one owns nothing, and only its own rounds can
    /// tell.
    fn twin_of(&self, me: Member, view: &NodeView) -> Option<Member> {
        let other = view.predecessor?;
        let twin = other.id == me.id
            && other.addr != me.addr
            && self
                .client
                .info(other.addr)
                .is_ok_and(|there| there.me == other);
        twin.then_some(other)
    }

    /// Forgets the predecessor if it does not answer, or if the peer at
    /// its address is not it (another id: a notify may name any address).
    fn check_predecessor(&self) {
        let Some(pred) = self.routing.read().predecessor else {
            return;
        };
        let why = match self.client.info(pred.addr) {
            Ok(view) if view.me == pred => return,
            Ok(view) => format!("{} is there instead", view.me),
            Err(e) if e.is_not_a_member() => e.to_string(),
            // Busy: it is there; ask again next round.
            Err(_) => return,
        };
        warn!("ring: predecessor {pred} is not there ({why}); forgetting it");
        self.member_gone(pred.addr);
        let mut routing = self.routing.write();
        if routing.predecessor == Some(pred) {
            routing.predecessor = None;
        }
    }

    /// Points every routing table line at the owner of its target. A line
    /// whose target the previous line's owner also owns needs no look-up.
    fn fix_fingers(&self) {
        let space = &self.settings.space;
        let (me, succ, targets): (Member, Member, Vec<u64>) = {
            let routing = self.routing.read();
            let targets = routing.fingers.iter().map(|f| f.target).collect();
            (routing.me, routing.successor(), targets)
        };
        let mut previous: Option<(u64, Member)> = None;
        let mut found = Vec::with_capacity(targets.len());
        for target in targets {
            if self.is_stopping() {
                return;
            }
            let owner = if succ == me || space.in_half_open(target, me.id, succ.id) {
                Some(succ)
            } else if let Some((_, owner)) = previous.filter(|(earlier, owner)| {
                space.distance(*earlier, target) <= space.distance(*earlier, owner.id)
            }) {
                Some(owner)
            } else {
                match self.trace(target, Via::Fingers) {
                    Ok(trace) => Some(trace.owner()),
                    Err(e) => {
                        debug!("ring: finger for {target}: {e}");
                        None
                    }
                }
            };
            if let Some(owner) = owner {
                previous = Some((target, owner));
            }
            found.push(owner);
        }
        let mut routing = self.routing.write();
        for (finger, owner) in routing.fingers.iter_mut().zip(found) {
            if owner.is_some() {
                finger.node = owner;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{member_at, test_node};
    use crate::protocol::ring::Member;
    use crate::ring::fake::Fake;

    /// A fake member with this id that answers `RNFO` with the
    /// predecessor `pred` (`-`: none), and anything else with `OK`.
    fn fake_at(id: u64, pred: Option<String>) -> Fake {
        let own = std::sync::Arc::new(parking_lot::Mutex::new(None));
        let seen = std::sync::Arc::clone(&own);
        let fake = Fake::start(move |line| {
            let addr: std::net::SocketAddr = seen.lock().expect("address set");
            match line {
                "RNFO" => vec![
                    format!("NODE {id}@{addr} 1000"),
                    format!("PRED {}", pred.as_deref().unwrap_or("-")),
                    "END".into(),
                ],
                _ => vec!["OK".into()],
            }
        });
        *own.lock() = Some(fake.addr);
        fake
    }

    /// The successor of peer 100 with `successors` after one stabilisation
    /// round.
    fn successor_after_a_round(successors: &[Member]) -> Member {
        let me = member_at(100, "127.0.0.1:9".parse().unwrap());
        let node = test_node(me, successors.to_vec(), None);
        node.stabilize();
        let successor = node.routing.read().successor();
        successor
    }

    #[test]
    fn a_predecessor_named_at_another_peers_address_is_not_taken_as_successor() {
        // The ring 100 -> 200 -> 300; someone told 200 that 199 is at
        // 300's address.
        let n300 = fake_at(300, None);
        let at300 = n300.addr;
        let n200 = fake_at(200, Some(format!("199@{at300}")));
        let me = member_at(100, "127.0.0.1:9".parse().unwrap());
        let n200_member = member_at(200, n200.addr);
        let node = test_node(me, vec![n200_member, member_at(300, at300)], None);
        for _ in 0..3 {
            node.stabilize();
            assert_eq!(node.routing.read().successor(), n200_member);
        }
    }

    #[test]
    fn a_twin_with_this_peer_s_id_is_seen_by_its_rounds() {
        // 100 and another 100 joined at once; the successor 200 took the
        // other as its predecessor, and this one is left outside.
        let twin = fake_at(100, None);
        let n200 = fake_at(200, Some(format!("100@{}", twin.addr)));
        let me = member_at(100, "127.0.0.1:9".parse().unwrap());
        let node = test_node(me, vec![member_at(200, n200.addr)], None);
        assert_eq!(node.stabilize(), Some(member_at(100, twin.addr)));
        // A name at an address that answers as another id is no twin.
        let n300 = fake_at(300, None);
        let lied = fake_at(200, Some(format!("100@{}", n300.addr)));
        let node = test_node(me, vec![member_at(200, lied.addr)], None);
        assert_eq!(node.stabilize(), None);
    }

    #[test]
    fn a_successor_whose_address_answers_with_another_id_is_dropped() {
        // 200 restarted at its address as 250: not the successor listed.
        let n250 = fake_at(250, None);
        let n300 = fake_at(300, None);
        let successors = [member_at(200, n250.addr), member_at(300, n300.addr)];
        assert_eq!(successor_after_a_round(&successors), successors[1]);
    }

    #[test]
    fn a_true_closer_peer_is_taken_as_successor() {
        let n199 = fake_at(199, None);
        let at199 = n199.addr;
        let n200 = fake_at(200, Some(format!("199@{at199}")));
        assert_eq!(
            successor_after_a_round(&[member_at(200, n200.addr)]),
            member_at(199, at199)
        );
    }

    #[test]
    fn a_predecessor_whose_address_answers_with_another_id_is_forgotten() {
        let n300 = fake_at(300, None);
        let n50 = fake_at(50, None);
        let me = member_at(200, "127.0.0.1:9".parse().unwrap());
        let node = test_node(
            me,
            vec![member_at(300, n300.addr)],
            Some(member_at(199, n300.addr)),
        );
        node.check_predecessor();
        assert_eq!(
            node.routing.read().predecessor,
            None,
            "199 is not at 300's address"
        );
        let real = member_at(50, n50.addr);
        node.routing.write().predecessor = Some(real);
        node.check_predecessor();
        assert_eq!(node.routing.read().predecessor, Some(real), "50 is there");
    }

    /// A peer outside any ring at a member's old address: it refuses ring
    /// requests as unknown.
    fn not_in_a_ring() -> Fake {
        Fake::start(|_| vec!["ERRR 200 this peer is not in a ring".into()])
    }

    #[test]
    fn a_successor_whose_address_now_answers_outside_the_ring_is_dropped() {
        // A member crashed and a peer outside the ring took its port: it
        // answers, but as no member. Busy members are kept, though.
        let stranger = not_in_a_ring();
        let busy = Fake::start(|_| vec!["ERRR 500 too many connections".into()]);
        let n300 = fake_at(300, None);
        let dropped = [member_at(200, stranger.addr), member_at(300, n300.addr)];
        assert_eq!(successor_after_a_round(&dropped), dropped[1]);
        let kept = [member_at(200, busy.addr), member_at(300, n300.addr)];
        assert_eq!(successor_after_a_round(&kept), kept[0]);
    }

    #[test]
    fn a_predecessor_whose_address_now_answers_outside_the_ring_is_forgotten() {
        let stranger = not_in_a_ring();
        let me = member_at(200, "127.0.0.1:9".parse().unwrap());
        let node = test_node(me, Vec::new(), Some(member_at(150, stranger.addr)));
        node.check_predecessor();
        assert_eq!(node.routing.read().predecessor, None);
    }
}
