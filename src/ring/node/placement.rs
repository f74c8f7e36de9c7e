//! Putting records in their places: copies of the records this peer owns
//! to its successors (the replicas), a replica's records to their owner
//! (perhaps a peer that joined since), and records it keeps but should not
//! (stored while the ring was changing) to where they belong. Copies
//! only: a record kept where it need not be is harmless, and expires.
//! And, when the peer leaves, handing every record kept here to its
//! successor.
//!
//! Three rules keep this cheap however many records a peer keeps (anyone
//! may store up to 100,000 here):
//!
//! - it runs on a thread of its own (`ring-place`), so a slow home or a
//!   long round never holds back the stabilisation (which once went from
//!   every second to every five or six under a flood of records);
//! - a record goes to a home once, and again only when its time here was
//!   extended (its holder announced it again) or its home changed. A peer
//!   flooded with records used to send every one of them again every
//!   round: 100,000 records made up to a million stores a minute;
//! - a copy never ends later than the record here (see [`copy_ttl`]).
//!   Else homes that place a record back to each other would extend it
//!   at each pass, and send it again for ever: a record once went round
//!   three peers 33 times in two and a half minutes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, warn};

use crate::protocol::ring::{Member, Record, Via};
use crate::ring::records::MAX_RECORDS;

use super::RingNode;

/// Records are put in their places once every this many stabilisation
/// rounds.
const PLACE_EVERY_ROUNDS: u32 = 5;
/// The most record groups (records placed by one id) a round puts in
/// place, and the most look-ups it makes for them.
const PLACES_PER_ROUND: usize = 256;
const LOOKUPS_PER_ROUND: usize = 64;
/// The longest a round spends placing records; the next round goes on
/// from where it stopped.
const PLACE_TIME: Duration = Duration::from_secs(5);
/// How long a peer that leaves spends handing its records over: a slow or
/// vanished successor does not hold Ctrl-C for hours. (What is not handed
/// over stays at the other homes of each record, and holders announce
/// theirs again.)
const HANDOVER_DEADLINE: Duration = Duration::from_secs(10);

/// Taken off what is left of a record when a copy is sent (see
/// [`copy_ttl`]).
const COPY_MARGIN: Duration = Duration::from_secs(1);

/// The time a copy of a record kept here `until` is sent for, at `now`:
/// what is left of it, less [`COPY_MARGIN`] (the wire counts whole
/// seconds, and the home's clock starts when the store arrives), so that
/// the copy does not end later than the record here. `None` when less
/// than a second would be left: the record is about to end anyway.
fn copy_ttl(until: Instant, now: Instant) -> Option<Duration> {
    let ttl = until
        .checked_duration_since(now)?
        .checked_sub(COPY_MARGIN)?;
    (ttl >= Duration::from_secs(1)).then_some(ttl)
}

/// What a peer that leaves did with its records.
pub(super) struct Handover {
    /// The records kept here.
    pub(super) kept: usize,
    /// Those sent to the successor, and those it was sent already (by
    /// placement, and not extended here since).
    pub(super) sent: usize,
    pub(super) there_already: usize,
    /// The successor they went to (the last one tried).
    pub(super) to: Member,
}

/// What placement remembers from one round to the next.
pub(super) struct Placement {
    /// The id of the last record group put in place (a round goes on from
    /// there, round the circle).
    cursor: u64,
    /// For each record sent to a home, when its copy here ended at the
    /// time (a record is sent again once that moved later). Keyed by a
    /// hash of the home and the record: a record can be a few hundred
    /// bytes, and a peer flooded with records remembers several stores of
    /// each.
    sent: HashMap<u64, Instant>,
    /// The hash of `sent`'s keys: seeded at random, so that nobody can
    /// make two records collide and have one of them never sent.
    hasher: RandomState,
    /// The most stores remembered: one per record kept here and home of
    /// it. Past it, everything is forgotten and sent again, round by
    /// round: a bound on memory when the ring keeps changing every
    /// record's homes.
    most: usize,
}

impl Placement {
    /// Placement for a peer that keeps each record at `replicas` peers.
    pub(super) fn new(replicas: usize) -> Placement {
        Placement {
            cursor: 0,
            sent: HashMap::new(),
            hasher: RandomState::new(),
            most: MAX_RECORDS * replicas.max(1),
        }
    }

    fn key(&self, home: SocketAddr, record: &Record) -> u64 {
        self.hasher.hash_one((home, record))
    }

    /// Whether `home` must be sent `record`, kept here `until`: it never
    /// was, or it was when the record here ended sooner.
    fn must_send(&self, home: SocketAddr, record: &Record, until: Instant) -> bool {
        self.sent
            .get(&self.key(home, record))
            .is_none_or(|&sent_until| until > sent_until)
    }

    fn was_sent(&mut self, home: SocketAddr, record: &Record, until: Instant) {
        if self.sent.len() >= self.most {
            self.sent.clear();
        }
        let key = self.key(home, record);
        self.sent.insert(key, until);
    }

    /// Forgets the records that have ended by `now` (one still kept here
    /// then has a later end, and is sent again).
    fn forget_ended(&mut self, now: Instant) {
        self.sent.retain(|_, until| *until > now);
    }
}

impl RingNode {
    /// The placement thread's loop: a round every [`PLACE_EVERY_ROUNDS`]
    /// stabilisation rounds, until `stop` is dropped.
    pub(super) fn run_placement(&self, stop: &Receiver<()>) {
        let every = self.settings.stabilize * PLACE_EVERY_ROUNDS;
        loop {
            match stop.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => self.place_records(&mut self.placement.lock()),
                _ => return,
            }
        }
    }

    /// One placement round (see the module's doc). A round does a bounded
    /// amount of work, going on next round from where it stopped (by id,
    /// round the circle).
    pub(super) fn place_records(&self, placement: &mut Placement) {
        let now = Instant::now();
        placement.forget_ended(now);
        let records = self.records.lock().all(now);
        if records.is_empty() {
            return;
        }
        let space = &self.settings.space;
        // Each record with when it ends here.
        let mut by_place: HashMap<u64, Vec<(Record, Instant)>> = HashMap::new();
        for (record, left) in records {
            by_place
                .entry(space.id_of(&record.placement()))
                .or_default()
                .push((record, now + left));
        }
        let mut ids: Vec<u64> = by_place.keys().copied().collect();
        ids.sort_unstable();
        let start = ids.partition_point(|&id| id <= placement.cursor);
        ids.rotate_left(start);
        let mut lookups = 0;
        let give_up_at = now + PLACE_TIME;
        // Homes that failed a store this round are not tried again in it.
        let mut failed: HashSet<SocketAddr> = HashSet::new();
        for id in ids.into_iter().take(PLACES_PER_ROUND) {
            if self.is_stopping() || lookups >= LOOKUPS_PER_ROUND || Instant::now() >= give_up_at {
                return;
            }
            placement.cursor = id;
            let Some(group) = by_place.remove(&id) else {
                continue;
            };
            let Some((homes, looked_up)) = self.homes_of(id) else {
                lookups += 1;
                continue;
            };
            lookups += usize::from(looked_up);
            for home in homes {
                if failed.contains(&home.addr) {
                    continue;
                }
                for (record, until) in &group {
                    if !placement.must_send(home.addr, record, *until) {
                        continue;
                    }
                    let Some(ttl) = copy_ttl(*until, Instant::now()) else {
                        continue;
                    };
                    match self.client.store(home.addr, ttl, record) {
                        Ok(()) => placement.was_sent(home.addr, record, *until),
                        Err(e) => {
                            debug!("ring: cannot place {record} at {home}: {e}");
                            failed.insert(home.addr);
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Hands every record kept here over to the first of `successors`
    /// that takes them, within [`HANDOVER_DEADLINE`]: a successor that
    /// turns out gone passes the rest to the next one (it owns this peer's
    /// ids once both are gone). A record placement sent it already is
    /// not sent again (a peer that keeps 100,000 records handed over only
    /// a few thousand of them in the 10 s, sending each again).
    pub(super) fn hand_over(&self, successors: &[Member]) -> Handover {
        let now = Instant::now();
        let records = self.records.lock().all(now);
        let placement = self.placement.lock();
        let deadline = now + HANDOVER_DEADLINE;
        let me = self.me();
        let mut handover = Handover {
            kept: records.len(),
            sent: 0,
            there_already: 0,
            to: successors.first().copied().unwrap_or(me),
        };
        let mut pending = &records[..];
        for &succ in successors.iter().filter(|m| **m != me) {
            handover.to = succ;
            while let Some(((record, left), rest)) = pending.split_first() {
                let until = now + *left;
                if !placement.must_send(succ.addr, record, until) {
                    handover.there_already += 1;
                    pending = rest;
                    continue;
                }
                if Instant::now() >= deadline {
                    warn!(
                        "ring: leaving; the records not handed over in {} s are left",
                        HANDOVER_DEADLINE.as_secs()
                    );
                    return handover;
                }
                let Some(ttl) = copy_ttl(until, Instant::now()) else {
                    pending = rest;
                    continue;
                };
                match self.client.store(succ.addr, ttl, record) {
                    Ok(()) => handover.sent += 1,
                    // This record goes to the next successor.
                    Err(e) if e.is_not_a_member() => {
                        warn!("ring: leaving; {succ} takes no records ({e}); trying the next successor");
                        break;
                    }
                    // Refused (its store is full): the next record.
                    Err(e) => debug!("ring: leaving; {succ} refused a record: {e}"),
                }
                pending = rest;
            }
            if pending.is_empty() {
                break;
            }
        }
        handover
    }

    /// Where the records placed by `id` should be, besides here, and
    /// whether that took a look-up; `None` when the look-up failed. This
    /// peer's own records go to its successors; any other's to their owner
    /// and its replicas, or only to the owner when this peer is one of the
    /// replicas (the owner may be new).
    fn homes_of(&self, id: u64) -> Option<(Vec<Member>, bool)> {
        let (me, predecessor, successors) = {
            let routing = self.routing.read();
            (routing.me, routing.predecessor, routing.successors.clone())
        };
        let replicas = self.settings.replicas.max(1);
        let space = &self.settings.space;
        if predecessor.is_some_and(|p| space.in_half_open(id, p.id, me.id)) {
            let homes = successors
                .into_iter()
                .filter(|m| *m != me)
                .take(replicas - 1)
                .collect();
            return Some((homes, false));
        }
        let mut homes: Vec<Member> = self
            .trace(id, Via::Fingers)
            .ok()?
            .owners
            .into_iter()
            .take(replicas)
            .collect();
        if homes.contains(&me) {
            homes.truncate(1);
        }
        homes.retain(|home| *home != me);
        Some((homes, true))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::tests::{member_at, test_node};
    use super::{Placement, RingNode};
    use crate::protocol::ring::{Member, Record};
    use crate::ring::fake::Fake;

    /// What a partner was asked.
    #[derive(Default)]
    struct Asked {
        stores: AtomicUsize,
        states: AtomicUsize,
        /// When each `STOR` came, and the time it asked.
        ttls: parking_lot::Mutex<Vec<(Instant, u64)>>,
    }

    /// A fake member with id `id`, whose predecessor is peer 100 at
    /// 127.0.0.1:9 (the test node), that counts the `STOR`s and `RNFO`s it
    /// gets and answers each store after `store_delay`.
    fn counting_partner(id: u64, store_delay: Duration) -> (Fake, Arc<Asked>) {
        let asked = Arc::new(Asked::default());
        let own = Arc::new(parking_lot::Mutex::new(None));
        let (counted, seen) = (Arc::clone(&asked), Arc::clone(&own));
        let fake = Fake::start(move |line| {
            let addr: std::net::SocketAddr = seen.lock().expect("address set");
            if let Some(rest) = line.strip_prefix("STOR ") {
                let ttl = rest.split(' ').next().and_then(|t| t.parse().ok());
                counted
                    .ttls
                    .lock()
                    .push((Instant::now(), ttl.expect("a ttl")));
                counted.stores.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(store_delay);
            }
            match line {
                "RNFO" => {
                    counted.states.fetch_add(1, Ordering::SeqCst);
                    vec![
                        format!("NODE {id}@{addr} 1000"),
                        "PRED 100@127.0.0.1:9".into(),
                        "END".into(),
                    ]
                }
                _ => vec!["OK".into()],
            }
        });
        *own.lock() = Some(fake.addr);
        (fake, asked)
    }

    /// Peer 100 in a ring of two with `partner` (id 300), so it owns the
    /// ids after 300 and up to 100, and keeps `n` records it owns.
    fn owner_of_records(partner: Member, n: usize) -> (RingNode, Vec<Record>) {
        let me = member_at(100, "127.0.0.1:9".parse().unwrap());
        let node = test_node(me, vec![partner], Some(partner));
        let space = &node.settings.space;
        let owned: Vec<Record> = (0..=255u8)
            .map(|i| Record::Holder {
                key: crate::protocol::FileKey([i; 32]),
                peer: "127.0.0.1:7000".parse().unwrap(),
            })
            .filter(|r| space.in_half_open(space.id_of(&r.placement()), 300, 100))
            .take(n)
            .collect();
        assert_eq!(owned.len(), n, "{n} of 256 keys placed in (300, 100]");
        for record in &owned {
            keep(&node, record, 60);
        }
        (node, owned)
    }

    fn keep(node: &RingNode, record: &Record, secs: u64) {
        node.records
            .lock()
            .insert(record.clone(), Duration::from_secs(secs), Instant::now())
            .unwrap();
    }

    #[test]
    fn a_record_goes_to_its_home_once_until_its_time_is_extended() {
        let (partner, asked) = counting_partner(300, Duration::ZERO);
        let (node, owned) = owner_of_records(member_at(300, partner.addr), 4);
        let stores = || asked.stores.load(Ordering::SeqCst);
        let mut placement = Placement::new(node.settings.replicas);
        node.place_records(&mut placement);
        assert_eq!(stores(), 4, "each record sent");
        node.place_records(&mut placement);
        assert_eq!(stores(), 4, "none sent again");
        // Announced again by its holder: its home must keep it longer too.
        keep(&node, &owned[0], 120);
        node.place_records(&mut placement);
        assert_eq!(stores(), 5, "the extended one sent");
    }

    /// Else two homes that place a record back to each other extend it at
    /// each pass, and send it again for ever.
    #[test]
    fn a_copy_never_ends_later_than_the_record_here() {
        // Each store takes 1.5 s: the second goes out 1.5 s into the round.
        let (partner, asked) = counting_partner(300, Duration::from_millis(1500));
        let kept_at = Instant::now();
        let (node, _) = owner_of_records(member_at(300, partner.addr), 2);
        let ends = kept_at + Duration::from_secs(60);
        node.place_records(&mut Placement::new(node.settings.replicas));
        let ttls = asked.ttls.lock().clone();
        assert_eq!(ttls.len(), 2);
        for (came, ttl) in ttls {
            let copy_ends = came + Duration::from_secs(ttl);
            assert!(copy_ends < ends, "a copy for {ttl} s ends too late");
        }
    }

    #[test]
    fn a_new_home_is_sent_every_record() {
        let (old, _) = counting_partner(300, Duration::ZERO);
        let (node, _) = owner_of_records(member_at(300, old.addr), 4);
        let mut placement = Placement::new(node.settings.replicas);
        node.place_records(&mut placement);
        // Peer 300 is gone; 200 joined: it is the successor now.
        let (new, asked) = counting_partner(200, Duration::ZERO);
        let joined = member_at(200, new.addr);
        {
            let mut routing = node.routing.write();
            routing.successors = vec![joined];
            routing.predecessor = Some(joined);
        }
        let records: Vec<Record> = node
            .records
            .lock()
            .all(Instant::now())
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let space = &node.settings.space;
        let owned_now = records
            .iter()
            .filter(|r| space.in_half_open(space.id_of(&r.placement()), 200, 100))
            .count();
        node.place_records(&mut placement);
        assert_eq!(asked.stores.load(Ordering::SeqCst), owned_now);
        assert_eq!(owned_now, 4, "(300, 100] is within (200, 100]");
    }

    #[test]
    fn a_home_that_fails_a_store_is_not_tried_again_in_the_round() {
        // The successor fails every store (as a slow one times out).
        let stores = Arc::new(AtomicUsize::new(0));
        let failing = {
            let stores = Arc::clone(&stores);
            Fake::start(move |line| {
                if line.starts_with("STOR ") {
                    stores.fetch_add(1, Ordering::SeqCst);
                }
                vec!["ERRR 501 cannot keep it".into()]
            })
        };
        let (node, _) = owner_of_records(member_at(300, failing.addr), 4);
        node.place_records(&mut Placement::new(node.settings.replicas));
        assert_eq!(
            stores.load(Ordering::SeqCst),
            1,
            "one store failed: no more"
        );
    }

    #[test]
    fn a_peer_that_leaves_hands_its_records_to_the_next_successor_when_the_first_is_gone() {
        // The first successor's port is now a peer outside any ring.
        let stranger = Fake::start(|_| vec!["ERRR 200 this peer is not in a ring".into()]);
        let (next, asked) = counting_partner(300, Duration::ZERO);
        let me = member_at(100, "127.0.0.1:9".parse().unwrap());
        let successors = [member_at(200, stranger.addr), member_at(300, next.addr)];
        let node = test_node(me, successors.to_vec(), None);
        for i in 0..5u8 {
            let holder = Record::Holder {
                key: crate::protocol::FileKey([i; 32]),
                peer: "127.0.0.1:7000".parse().unwrap(),
            };
            keep(&node, &holder, 60);
        }
        let handover = node.hand_over(&successors);
        assert_eq!((handover.sent, handover.to), (5, successors[1]));
        assert_eq!(asked.stores.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_peer_that_leaves_does_not_hand_over_what_its_successor_was_sent() {
        let (partner, asked) = counting_partner(300, Duration::ZERO);
        let successor = member_at(300, partner.addr);
        let (node, owned) = owner_of_records(successor, 4);
        node.place_records(&mut node.placement.lock());
        assert_eq!(asked.stores.load(Ordering::SeqCst), 4);
        // One announced again since: that one goes again.
        keep(&node, &owned[0], 120);
        let handover = node.hand_over(&[successor]);
        assert_eq!((handover.sent, handover.there_already), (1, 3));
        assert_eq!(asked.stores.load(Ordering::SeqCst), 5);
    }

    /// The stabilisation goes on every round while a store hangs: before
    /// placement had its own thread, it waited for the store's deadline.
    #[test]
    fn the_rounds_keep_time_while_a_store_hangs() {
        let (partner, asked) = counting_partner(300, Duration::from_secs(4));
        let (node, _) = owner_of_records(member_at(300, partner.addr), 1);
        let node = Arc::new(node);
        node.start_rounds().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while asked.stores.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(asked.stores.load(Ordering::SeqCst), 1, "the store was sent");
        // A stabilisation round (every 200 ms) asks the partner `RNFO`:
        // count those asked in the next 2 s, while the store hangs.
        let before = asked.states.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(2));
        let during = asked.states.load(Ordering::SeqCst) - before;
        node.stop_rounds();
        assert!(during >= 2, "{during} stabilisation rounds in 2 s");
    }
}
