//! Putting records in their places: copies of the records this peer owns
//! to its successors (the replicas), a replica's records to their owner
//! (perhaps a peer that joined since), and records it keeps but should not
//! (stored while the ring was changing) to where they belong. Copies
//! only: a record kept where it need not be is harmless, and expires.
//! And, when the peer leaves, handing the records kept here to its
//! successor (those placement did not send it already).
//!
//! Three rules keep this cheap however many records a peer keeps (anyone
//! may store up to 100,000 here):
//!
//! - it runs on a thread of its own (`ring-place`), so a slow home or a
//!   long round never holds back the stabilisation (which once went from
//!   every second to every five or six under a flood of records);
//! - a record goes to a home once, and again only when its time here was
//!   extended by [`EXTENDED_BY`] or more (its holder announced it again;
//!   holders announce to every home themselves, so this is a safety net),
//!   or its home changed, or left the ring and may be back empty. A peer
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
use crate::protocol::ErrorCode;
use crate::ring::client::RingError;
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

/// How much later a record here must end than the copy a home was sent
/// for it to be sent again. Holders announce their records to every home
/// themselves, so this is a safety net; and a copy that came back a little
/// later (a store slow to arrive) must not count (see [`copy_ttl`]).
const EXTENDED_BY: Duration = Duration::from_secs(10);
/// The most homes told gone between two rounds that placement forgets
/// what it sent to (more, in a ring falling apart, are left to
/// [`EXTENDED_BY`]).
pub(super) const MOST_HOMES_GONE: usize = 1024;

/// What placement remembers from one round to the next: which records
/// each home was sent. Owned by the placement thread, and handed to the
/// hand-over when the peer leaves.
pub(super) struct Placement {
    /// The id of the last record group put in place (a round goes on from
    /// there, round the circle).
    cursor: u64,
    /// For each home, the records sent to it (by a hash: a record can be a
    /// few hundred bytes, and a flooded peer remembers several stores of
    /// each), with when the record here ended at the time.
    sent: HashMap<SocketAddr, HashMap<u64, Instant>>,
    /// How many stores `sent` remembers, all homes together.
    remembered: usize,
    /// The hash of `sent`'s keys: seeded at random, so that nobody can
    /// make two records collide and have one of them never sent.
    hasher: RandomState,
    /// The most stores remembered. Past it, everything is forgotten and
    /// sent again, round by round: a bound on memory when the ring keeps
    /// changing every record's homes.
    most: usize,
}

impl Placement {
    /// Placement for a peer that keeps each record at `replicas` peers.
    pub(super) fn new(replicas: usize) -> Placement {
        Placement {
            cursor: 0,
            sent: HashMap::new(),
            remembered: 0,
            hasher: RandomState::new(),
            // Most records have at most 3 homes other than here.
            most: MAX_RECORDS * replicas.clamp(1, 3),
        }
    }

    /// Whether `home` must be sent `record`, kept here `until`: it never
    /// was, or it was when the record here ended [`EXTENDED_BY`] sooner.
    fn must_send(&self, home: SocketAddr, record: &Record, until: Instant) -> bool {
        let sent_until = self
            .sent
            .get(&home)
            .and_then(|records| records.get(&self.hasher.hash_one(record)));
        sent_until.is_none_or(|&sent_until| until > sent_until + EXTENDED_BY)
    }

    fn was_sent(&mut self, home: SocketAddr, record: &Record, until: Instant) {
        if self.remembered >= self.most {
            self.sent.clear();
            self.remembered = 0;
        }
        let key = self.hasher.hash_one(record);
        if self
            .sent
            .entry(home)
            .or_default()
            .insert(key, until)
            .is_none()
        {
            self.remembered += 1;
        }
    }

    /// Forgets what was sent to `home`: it left or was dropped from the
    /// ring, and a peer started again at its address comes back empty.
    fn forget_home(&mut self, home: SocketAddr) {
        if let Some(records) = self.sent.remove(&home) {
            self.remembered -= records.len();
        }
    }

    /// Forgets the records that have ended by `now` (one still kept here
    /// then has a later end, and is sent again), and gives back memory a
    /// flood took.
    fn forget_ended(&mut self, now: Instant) {
        self.sent.retain(|_, records| {
            records.retain(|_, until| *until > now);
            if records.len() < records.capacity() / 4 {
                records.shrink_to_fit();
            }
            !records.is_empty()
        });
        self.remembered = self.sent.values().map(HashMap::len).sum();
    }
}

impl RingNode {
    /// The placement thread's loop: a round every [`PLACE_EVERY_ROUNDS`]
    /// stabilisation rounds, until `stop` is dropped. Gives back what it
    /// remembers, for the hand-over.
    pub(super) fn run_placement(&self, stop: &Receiver<()>) -> Placement {
        let every = self.settings.stabilize * PLACE_EVERY_ROUNDS;
        let mut placement = Placement::new(self.settings.replicas);
        loop {
            match stop.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => self.place_records(&mut placement),
                _ => return placement,
            }
        }
    }

    /// Forgets what was sent to the members gone since the last look.
    fn forget_homes_gone(&self, placement: &mut Placement) {
        let gone = std::mem::take(&mut *self.homes_gone.lock());
        for home in gone {
            placement.forget_home(home);
        }
    }

    /// One placement round (see the module's doc). A round does a bounded
    /// amount of work, going on next round from where it stopped (by id,
    /// round the circle).
    pub(super) fn place_records(&self, placement: &mut Placement) {
        let now = Instant::now();
        self.forget_homes_gone(placement);
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
        let out_of_time = || self.is_stopping() || Instant::now() >= give_up_at;
        // Homes that failed a store this round are not tried again in it.
        let mut failed: HashSet<SocketAddr> = HashSet::new();
        for id in ids.into_iter().take(PLACES_PER_ROUND) {
            if out_of_time() || lookups >= LOOKUPS_PER_ROUND {
                return;
            }
            let Some(group) = by_place.remove(&id) else {
                continue;
            };
            let Some((homes, looked_up)) = self.homes_of(id) else {
                lookups += 1;
                placement.cursor = id;
                continue;
            };
            lookups += usize::from(looked_up);
            for home in homes {
                if failed.contains(&home.addr) {
                    continue;
                }
                for (record, until) in &group {
                    // Stopped within a group, the next round does it
                    // again (what was sent is not sent twice).
                    if out_of_time() {
                        return;
                    }
                    if !placement.must_send(home.addr, record, *until) {
                        continue;
                    }
                    let Some(ttl) = copy_ttl(*until, Instant::now()) else {
                        continue;
                    };
                    match self.client.store(home.addr, ttl, record) {
                        Ok(()) => placement.was_sent(home.addr, record, *until),
                        // Refused, this record (the home keeps as many of
                        // its key as it may): the next one.
                        Err(RingError::Refused { code, .. }) if code != ErrorCode::Busy => {
                            debug!("ring: {home} refused {record}: ERRR {code}");
                        }
                        Err(e) => {
                            debug!("ring: cannot place {record} at {home}: {e}");
                            failed.insert(home.addr);
                            break;
                        }
                    }
                }
            }
            placement.cursor = id;
        }
    }

    /// Hands every record kept here over to the first of `successors`
    /// that takes them, within [`HANDOVER_DEADLINE`]: a successor that is
    /// not there (it is asked `RNFO` first) or turns out gone passes the
    /// rest to the next one (it owns this peer's ids once both are gone).
    /// A record `placement` sent it already is not sent again (a peer that
    /// keeps 100,000 records handed over only a few thousand of them in
    /// the 10 s, sending each again).
    pub(super) fn hand_over(&self, successors: &[Member], placement: &mut Placement) -> Handover {
        let now = Instant::now();
        self.forget_homes_gone(placement);
        let records = self.records.lock().all(now);
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
            if Instant::now() >= deadline {
                break;
            }
            handover.to = succ;
            if !self.answers_as(succ) {
                warn!("ring: leaving; {succ} is not there; trying the next successor");
                continue;
            }
            // Counted again for this one.
            handover.there_already = 0;
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
        // Extended a little (a copy that came back from a home a little
        // later): not sent again.
        keep(&node, &owned[1], 65);
        node.place_records(&mut placement);
        assert_eq!(stores(), 4, "none sent again for 5 s more");
        // Announced again by its holder: its home must keep it longer too.
        keep(&node, &owned[0], 120);
        node.place_records(&mut placement);
        assert_eq!(stores(), 5, "the extended one sent");
    }

    /// Else two homes that place a record back to each other extend it at
    /// each pass, and send it again for ever.
    #[test]
    fn a_copy_never_ends_later_than_the_record_here() {
        // Each store takes 1.5 s (within the 3 s a request may take): the
        // fourth goes out 4.5 s into the round, when the record here has
        // 55.5 s left, not the 60 of the round's start.
        let (partner, asked) = counting_partner(300, Duration::from_millis(1500));
        let kept_at = Instant::now();
        let (node, _) = owner_of_records(member_at(300, partner.addr), 4);
        let ends = kept_at + Duration::from_secs(60);
        node.place_records(&mut Placement::new(node.settings.replicas));
        let ttls = asked.ttls.lock().clone();
        let (first, last) = (ttls[0].0, ttls[ttls.len() - 1].0);
        assert!(last - first >= Duration::from_secs(3), "{ttls:?}");
        for (came, ttl) in ttls {
            let copy_ends = came + Duration::from_secs(ttl);
            // Sent for what was left at the round's start, the last would
            // end 3.5 s late; sent for what is left, less a second, a
            // second early, give or take the time the store took to
            // arrive (a second of slack for a busy machine).
            assert!(
                copy_ends < ends + Duration::from_secs(1),
                "a copy for {ttl} s ends {:?} after the record",
                copy_ends.saturating_duration_since(ends)
            );
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
        // The successor fails every store: at its connection cap (as a
        // slow one that times out, or one gone).
        let stores = Arc::new(AtomicUsize::new(0));
        let failing = {
            let stores = Arc::clone(&stores);
            Fake::start(move |line| {
                if line.starts_with("STOR ") {
                    stores.fetch_add(1, Ordering::SeqCst);
                }
                vec!["ERRR 500 too many connections, try again later".into()]
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
        let handover = node.hand_over(&successors, &mut Placement::new(2));
        assert_eq!((handover.sent, handover.to), (5, successors[1]));
        assert_eq!(asked.stores.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_peer_that_leaves_does_not_hand_over_what_its_successor_was_sent() {
        let (partner, asked) = counting_partner(300, Duration::ZERO);
        let successor = member_at(300, partner.addr);
        let (node, owned) = owner_of_records(successor, 4);
        let mut placement = Placement::new(2);
        node.place_records(&mut placement);
        assert_eq!(asked.stores.load(Ordering::SeqCst), 4);
        // One announced again since: that one goes again.
        keep(&node, &owned[0], 120);
        let handover = node.hand_over(&[successor], &mut placement);
        assert_eq!((handover.sent, handover.there_already), (1, 3));
        assert_eq!(asked.stores.load(Ordering::SeqCst), 5);
    }

    /// Its records were only at this peer and that successor: they must
    /// reach the next one.
    #[test]
    fn a_peer_that_leaves_hands_over_to_the_next_successor_what_a_gone_one_was_sent() {
        let (first, _) = counting_partner(300, Duration::ZERO);
        let (next, asked) = counting_partner(400, Duration::ZERO);
        let successors = [member_at(300, first.addr), member_at(400, next.addr)];
        let (node, _) = owner_of_records(successors[0], 4);
        node.routing.write().successors = successors.to_vec();
        let mut placement = Placement::new(2);
        node.place_records(&mut placement);
        drop(first); // crashed since
        let handover = node.hand_over(&successors, &mut placement);
        assert_eq!(handover.to, successors[1]);
        assert_eq!((handover.sent, handover.there_already), (4, 0));
        assert_eq!(asked.stores.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn a_home_gone_from_the_ring_is_sent_its_records_again() {
        let (partner, asked) = counting_partner(300, Duration::ZERO);
        let (node, _) = owner_of_records(member_at(300, partner.addr), 4);
        let mut placement = Placement::new(2);
        node.place_records(&mut placement);
        assert_eq!(asked.stores.load(Ordering::SeqCst), 4);
        // Dropped (it did not answer a round), then back at its address,
        // started again: empty.
        node.member_gone(partner.addr);
        node.place_records(&mut placement);
        assert_eq!(asked.stores.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn a_record_a_home_refuses_does_not_keep_the_others_from_it() {
        // The home refuses its first store (as one whose place for that
        // key is full), and takes the rest.
        let refused_one = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taken = Arc::new(AtomicUsize::new(0));
        let home = {
            let (refused_one, taken) = (Arc::clone(&refused_one), Arc::clone(&taken));
            Fake::start(move |line| {
                if !line.starts_with("STOR ") {
                    return vec!["OK".into()];
                }
                if !refused_one.swap(true, Ordering::SeqCst) {
                    return vec!["ERRR 405 this peer keeps 1000 records for that key".into()];
                }
                taken.fetch_add(1, Ordering::SeqCst);
                vec!["OK".into()]
            })
        };
        let (node, _) = owner_of_records(member_at(300, home.addr), 4);
        node.place_records(&mut Placement::new(2));
        assert_eq!(taken.load(Ordering::SeqCst), 3);
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
        assert!(
            asked.stores.load(Ordering::SeqCst) >= 1,
            "the store was sent"
        );
        // A stabilisation round (every 200 ms) asks the partner `RNFO`:
        // count those asked in the next 2 s, while the store hangs.
        let before = asked.states.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(2));
        let during = asked.states.load(Ordering::SeqCst) - before;
        node.stop_rounds();
        assert!(during >= 2, "{during} stabilisation rounds in 2 s");
    }
}
