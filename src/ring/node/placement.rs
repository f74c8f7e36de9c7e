//! Putting records in their places: copies of the records this peer owns
//! to its successors (the replicas), a replica's records to their owner
//! (perhaps a peer that joined since), and records it keeps but should not
//! (stored while the ring was changing) to where they belong. Copies
//! only: a record kept where it need not be is harmless, and expires.
//!
//! Two rules keep this cheap however many records a peer keeps (anyone
//! may store up to 100,000 here):
//!
//! - it runs on a thread of its own (`ring-place`), so a slow home or a
//!   long round never holds back the stabilisation (which once went from
//!   every second to every six or seven under a flood of records);
//! - a record goes to a home once, and again only when its time here was
//!   extended (its holder announced it again) or its home changed. A peer
//!   flooded with records used to send every one of them again every
//!   round: 100,000 records made 320,000 stores in the ring.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::debug;

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
/// The most stores remembered (a record at a home). Past it, everything
/// is forgotten and sent again, round by round: a bound on memory when
/// the ring keeps changing every record's homes.
const MAX_REMEMBERED: usize = 2 * MAX_RECORDS;

/// What placement remembers from one round to the next.
pub(super) struct Placement {
    /// The id of the last record group put in place (a round goes on from
    /// there, round the circle).
    cursor: u64,
    /// Each record sent to a home (by the record's hash: a record can be
    /// a few hundred bytes), and until when the home keeps it.
    sent: HashMap<(SocketAddr, u64), Instant>,
    /// The hash of `sent`'s keys: seeded at random, so that nobody can
    /// make two records collide and have one of them never sent.
    hasher: RandomState,
}

impl Placement {
    pub(super) fn new() -> Placement {
        Placement {
            cursor: 0,
            sent: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    fn key(&self, home: SocketAddr, record: &Record) -> (SocketAddr, u64) {
        (home, self.hasher.hash_one(record))
    }

    /// Whether `home` must be sent `record`, kept here `until`: it never
    /// was, or was sent a copy that ends sooner.
    fn must_send(&self, home: SocketAddr, record: &Record, until: Instant) -> bool {
        self.sent
            .get(&self.key(home, record))
            .is_none_or(|&sent_until| until > sent_until)
    }

    fn was_sent(&mut self, home: SocketAddr, record: &Record, until: Instant) {
        if self.sent.len() >= MAX_REMEMBERED {
            self.sent.clear();
        }
        let key = self.key(home, record);
        self.sent.insert(key, until);
    }

    /// Forgets the copies that have ended at their homes by `now` (a
    /// record still kept here then has a later time, and is sent again).
    fn forget_ended(&mut self, now: Instant) {
        self.sent.retain(|_, until| *until > now);
    }
}

impl RingNode {
    /// The placement thread's loop: a round every [`PLACE_EVERY_ROUNDS`]
    /// stabilisation rounds, until `stop` is dropped.
    pub(super) fn run_placement(&self, stop: &Receiver<()>) {
        let every = self.settings.stabilize * PLACE_EVERY_ROUNDS;
        let mut placement = Placement::new();
        loop {
            match stop.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => self.place_records(&mut placement),
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
        let mut by_place: HashMap<u64, Vec<(Record, Duration)>> = HashMap::new();
        for (record, left) in records {
            by_place
                .entry(space.id_of(&record.placement()))
                .or_default()
                .push((record, left));
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
                for (record, left) in &group {
                    let until = now + *left;
                    if !placement.must_send(home.addr, record, until) {
                        continue;
                    }
                    match self.client.store(home.addr, *left, record) {
                        Ok(()) => placement.was_sent(home.addr, record, until),
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
            if line.starts_with("STOR ") {
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
        let mut placement = Placement::new();
        node.place_records(&mut placement);
        assert_eq!(stores(), 4, "each record sent");
        node.place_records(&mut placement);
        assert_eq!(stores(), 4, "none sent again");
        // Announced again by its holder: its home must keep it longer too.
        keep(&node, &owned[0], 120);
        node.place_records(&mut placement);
        assert_eq!(stores(), 5, "the extended one sent");
    }

    #[test]
    fn a_new_home_is_sent_every_record() {
        let (old, _) = counting_partner(300, Duration::ZERO);
        let (node, _) = owner_of_records(member_at(300, old.addr), 4);
        let mut placement = Placement::new();
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
        node.place_records(&mut Placement::new());
        assert_eq!(
            stores.load(Ordering::SeqCst),
            1,
            "one store failed: no more"
        );
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
