//! The course's hash service and welcome service, as the tracker serves
//! them: which ids the hash service has given, and which ring peers have
//! said `yo` and not yet `a+`. Pure: a request in, the answer lines out; the
//! connection loop ([`super::connection`]) reads and writes.
//!
//! - **Hash service** (`<ip>` -> an id): an address keeps the id it was
//!   given; a new address gets the first id not yet given at or after the
//!   SHA-256 of its canonical text ([`AddressText`],
//!   [`RingSpace::id_of`]), clockwise; `aht` once every id is given. Every
//!   spelling of one address (`127.0.0.1:7000`, `127.0.0.1:07000`) is that
//!   one canonical text, so shares one id; a text that is no address, or is
//!   longer than [`MAX_ADDRESS_TEXT`], is `wrq` (it is not a hash request,
//!   see [`CourseRequest::recognise`]). To bound memory, at most
//!   [`MAX_GIVEN_IDS`] ids are given (fewer when the ring is smaller); past
//!   that cap every new address gets `aht` too.
//! - **Welcome service**: `yo` joins (`yaf` to the first peer, else the
//!   address of a random present peer), `a+` leaves, `ip?` looks a hash up,
//!   `li?` lists every peer, `rt?:<hash>` gives a peer's ideal routing
//!   table. At most [`MAX_MEMBERS`] peers are present at once (`wrq` past
//!   that). A bare `rt?` ("your own table") is `wrq` here: the tracker is
//!   not a ring peer and has no table of its own.
//!
//! Addresses: a `yo` without a port means the usual port of ring peers
//! (`ring_port`); every address written back is bare when it is on that
//! port and `ip:port` otherwise ([`CourseAddr::of`]).
//!
//! [`MAX_ADDRESS_TEXT`]: crate::protocol::course::MAX_ADDRESS_TEXT

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use crate::protocol::course::{AddressText, CourseAddr, CourseReply, CourseRequest, WrongRequest};
use crate::ring::RingSpace;

/// Most ids the hash service gives (the ring size if smaller).
pub const MAX_GIVEN_IDS: u64 = 1_000_000;

/// Most peers present in the welcome service at once.
pub const MAX_MEMBERS: usize = 100_000;

/// The state of both services.
#[derive(Debug, Clone)]
pub struct Welcome {
    space: RingSpace,
    ring_port: u16,
    /// The hash service: each address, in canonical form (at most
    /// [`MAX_ADDRESS_TEXT`] bytes), and the id it was given.
    ///
    /// [`MAX_ADDRESS_TEXT`]: crate::protocol::course::MAX_ADDRESS_TEXT
    given: HashMap<AddressText, u64>,
    /// The ids given, as disjoint runs `start -> end` (`start..end`), never
    /// touching one another, so the next free id is one look-up away.
    taken: BTreeMap<u64, u64>,
    /// The welcome service: each present peer by hash.
    members: BTreeMap<u64, SocketAddr>,
    /// Most ids given: [`MAX_GIVEN_IDS`], or the ring size if smaller.
    id_cap: u64,
    /// Most peers present: [`MAX_MEMBERS`].
    member_cap: usize,
}

impl Welcome {
    /// Empty services for a ring of `space`, whose peers usually listen on
    /// `ring_port`.
    pub fn new(space: RingSpace, ring_port: u16) -> Welcome {
        Welcome {
            space,
            ring_port,
            given: HashMap::new(),
            taken: BTreeMap::new(),
            members: BTreeMap::new(),
            id_cap: space.size().min(MAX_GIVEN_IDS),
            member_cap: MAX_MEMBERS,
        }
    }

    /// The ring's id space.
    pub fn space(&self) -> RingSpace {
        self.space
    }

    /// The usual port of ring peers.
    pub fn ring_port(&self) -> u16 {
        self.ring_port
    }

    /// The peers present, by hash.
    pub fn members(&self) -> &BTreeMap<u64, SocketAddr> {
        &self.members
    }

    /// How many ids the hash service has given.
    pub fn given_count(&self) -> usize {
        self.given.len()
    }

    /// The answer to a course line that did not follow the grammar.
    pub fn wrong(_: &WrongRequest) -> Vec<CourseReply> {
        vec![CourseReply::Wrong]
    }

    /// Answers one request. `random(n)` picks an index in `0..n` (the
    /// present peer a newcomer joins through).
    pub fn answer(
        &mut self,
        request: &CourseRequest,
        mut random: impl FnMut(usize) -> usize,
    ) -> Vec<CourseReply> {
        let one = |reply| vec![reply];
        match request {
            CourseRequest::Hash { address } => one(self.hash(address)),
            CourseRequest::Join { hash, at } => one(self.join(*hash, at, &mut random)),
            CourseRequest::Leave { hash } => one(match self.members.remove(hash) {
                Some(_) => CourseReply::Ok,
                None => CourseReply::Wrong,
            }),
            CourseRequest::AddressOf { hash } => one(if !self.space.contains(*hash) {
                CourseReply::Wrong
            } else {
                match self.members.get(hash) {
                    Some(&addr) => CourseReply::Addr(self.shown(addr)),
                    None => CourseReply::UnknownHash,
                }
            }),
            CourseRequest::List => {
                let mut lines: Vec<CourseReply> = self
                    .members
                    .iter()
                    .map(|(&hash, &addr)| CourseReply::Member {
                        hash,
                        at: self.shown(addr),
                    })
                    .collect();
                lines.push(CourseReply::End);
                lines
            }
            CourseRequest::Table { hash: None } => one(CourseReply::Wrong),
            CourseRequest::Table { hash: Some(h) } => self.table(*h),
        }
    }

    /// How `addr` is written back.
    fn shown(&self, addr: SocketAddr) -> CourseAddr {
        CourseAddr::of(addr, self.ring_port)
    }

    /// The hash service, keyed by the address's canonical text.
    fn hash(&mut self, address: &AddressText) -> CourseReply {
        if let Some(&id) = self.given.get(address) {
            return CourseReply::Id(id);
        }
        if self.given.len() as u64 >= self.id_cap {
            return CourseReply::AllTaken;
        }
        let id = self.next_free(self.space.id_of(address.as_str()));
        self.take(id);
        self.given.insert(address.clone(), id);
        CourseReply::Id(id)
    }

    /// The first id not given at or after `from`, clockwise. Some id is
    /// free (the caller checked the count).
    fn next_free(&self, from: u64) -> u64 {
        // The end of the run holding an id is free (runs never touch), or
        // is the ring's end, past which 0 is next.
        let after_run = |id: u64| match self.taken.range(..=id).next_back() {
            Some((_, &end)) if end > id => end,
            _ => id,
        };
        let id = after_run(from);
        if id < self.space.size() {
            id
        } else {
            after_run(0)
        }
    }

    /// Marks `id` (free) as given, joining it to the runs beside it.
    fn take(&mut self, id: u64) {
        let mut start = id;
        let mut end = id + 1;
        if let Some((&before, &before_end)) = self.taken.range(..id).next_back() {
            if before_end == id {
                start = before;
            }
        }
        if let Some(after_end) = self.taken.remove(&end) {
            end = after_end;
        }
        self.taken.insert(start, end);
    }

    /// The welcome service's `yo`.
    fn join(
        &mut self,
        hash: u64,
        at: &CourseAddr,
        random: &mut impl FnMut(usize) -> usize,
    ) -> CourseReply {
        if !self.space.contains(hash)
            || self.members.contains_key(&hash)
            || self.members.len() >= self.member_cap
        {
            return CourseReply::Wrong;
        }
        let answer = if self.members.is_empty() {
            CourseReply::First
        } else {
            let pick = random(self.members.len()).min(self.members.len() - 1);
            let (_, &addr) = self.members.iter().nth(pick).expect("a member at pick");
            if at.port.is_some() {
                // A joiner that gave its port speaks this project's
                // extension: it gets the member's port too, whatever it is.
                CourseReply::Addr(CourseAddr {
                    ip: addr.ip(),
                    port: Some(addr.port()),
                })
            } else {
                CourseReply::Addr(self.shown(addr))
            }
        };
        self.members.insert(hash, at.socket(self.ring_port));
        answer
    }

    /// `rt?:<h>`: the ideal routing table of the present peer `h`, each line
    /// pointing at the first present peer strictly after its `k`
    /// ([`RingSpace::table_targets`]), then `end`.
    fn table(&self, h: u64) -> Vec<CourseReply> {
        if !self.space.contains(h) {
            return vec![CourseReply::Wrong];
        }
        if !self.members.contains_key(&h) {
            return vec![CourseReply::UnknownHash];
        }
        let mut lines: Vec<CourseReply> = self
            .space
            .table_targets(h)
            .into_iter()
            .filter_map(|(k, target)| {
                // The owner of `target`: the first peer at or after it.
                let (&hash, &addr) = self
                    .members
                    .range(target..)
                    .next()
                    .or_else(|| self.members.iter().next())?;
                Some(CourseReply::Route {
                    k,
                    hash,
                    at: self.shown(addr),
                })
            })
            .collect();
        lines.push(CourseReply::End);
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::course::MAX_ADDRESS_TEXT;

    fn welcome(size: u64) -> Welcome {
        Welcome::new(RingSpace::new(size).unwrap(), 7000)
    }

    /// Answers `line` (which must be a course line) as text, picking the
    /// first present peer when one is to be picked at random.
    fn ask(w: &mut Welcome, line: &str) -> Vec<String> {
        let replies = match CourseRequest::recognise(line).expect("a course line") {
            Ok(request) => w.answer(&request, |_| 0),
            Err(wrong) => Welcome::wrong(&wrong),
        };
        replies.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_hash_service_is_stable_and_never_gives_an_id_twice() {
        let mut w = welcome(65536);
        let first = ask(&mut w, "127.0.0.2");
        assert_eq!(
            first,
            [RingSpace::new(65536)
                .unwrap()
                .id_of("127.0.0.2")
                .to_string()]
        );
        assert_eq!(ask(&mut w, "127.0.0.2"), first);
        assert_ne!(ask(&mut w, "127.0.0.3"), first);
        assert_eq!(w.given_count(), 2);
    }

    #[test]
    fn the_hash_service_probes_clockwise_then_says_all_taken() {
        let mut w = welcome(5);
        let texts = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"];
        let mut ids: Vec<u64> = texts
            .iter()
            .map(|text| ask(&mut w, text)[0].parse().unwrap())
            .collect();
        // The first text gets its own hash.
        assert_eq!(ids[0], w.space().id_of(texts[0]));
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        assert_eq!(ask(&mut w, "10.0.0.6"), ["aht"]);
        // Known texts keep their ids even when full.
        assert_eq!(
            ask(&mut w, texts[0])[0],
            w.space().id_of(texts[0]).to_string()
        );
    }

    #[test]
    fn spellings_of_one_address_share_one_id() {
        let mut w = welcome(65536);
        let id = ask(&mut w, "127.0.0.1:7000");
        assert_eq!(id, [w.space().id_of("127.0.0.1:7000").to_string()]);
        for spelling in ["127.0.0.1:07000", "127.0.0.1:000000000000007000"] {
            assert_eq!(ask(&mut w, spelling), id, "{spelling}");
        }
        // A request built by hand, not parsed, is keyed the same way.
        let by_hand = CourseRequest::Hash {
            address: AddressText::parse("127.0.0.1:0007000").unwrap(),
        };
        assert_eq!(
            w.answer(&by_hand, |_| 0),
            [CourseReply::Id(id[0].parse().unwrap())]
        );
        let v6 = ask(&mut w, "[::1]:80");
        assert_eq!(ask(&mut w, "[0:0:0:0:0:0:0:0001]:0080"), v6);
        assert_eq!(w.given_count(), 2);
    }

    #[test]
    fn an_over_long_address_is_wrq_and_given_nothing() {
        let mut w = welcome(65536);
        let long = format!("127.0.0.1:{:0>8000}", 7000);
        assert_eq!(ask(&mut w, &long), ["wrq"]);
        // Nor can such a request be built by hand.
        assert_eq!(AddressText::parse(&long), None);
        assert_eq!(AddressText::parse("hello"), None);
        assert_eq!(w.given_count(), 0);
        assert!(w.taken.is_empty());
    }

    #[test]
    fn ids_and_memory_do_not_grow_with_spellings() {
        // A ring of 2: were each spelling its own text, the second would
        // take the last id and a genuine newcomer would get `aht`.
        let mut w = welcome(2);
        let id = ask(&mut w, "10.0.0.1:7000");
        for zeros in 0..1000 {
            let spelling = format!("10.0.0.1:{}7000", "0".repeat(zeros));
            let answer = ask(&mut w, &spelling);
            if spelling.len() <= MAX_ADDRESS_TEXT {
                assert_eq!(answer, id, "{spelling}");
            } else {
                assert_eq!(answer, ["wrq"], "{spelling}");
            }
        }
        assert_eq!(w.given_count(), 1);
        assert_eq!(w.taken.len(), 1);
        let key_bytes: usize = w.given.keys().map(|key| key.as_str().len()).sum();
        assert_eq!(key_bytes, "10.0.0.1:7000".len());
        assert_ne!(ask(&mut w, "10.0.0.2"), ["aht"], "a genuine newcomer");
        assert_eq!(ask(&mut w, "10.0.0.3"), ["aht"], "now the ring is full");
    }

    #[test]
    fn memory_is_bounded_by_caps() {
        let mut w = welcome(1 << 32);
        assert_eq!((w.id_cap, w.member_cap), (MAX_GIVEN_IDS, MAX_MEMBERS));
        assert_eq!(welcome(100).id_cap, 100);
        (w.id_cap, w.member_cap) = (2, 2);
        assert_ne!(ask(&mut w, "10.0.0.1"), ["aht"]);
        assert_ne!(ask(&mut w, "10.0.0.2"), ["aht"]);
        assert_eq!(ask(&mut w, "10.0.0.3"), ["aht"], "past the cap");
        assert_eq!(ask(&mut w, "yo:1:10.0.0.1"), ["yaf"]);
        assert_eq!(ask(&mut w, "yo:2:10.0.0.2"), ["10.0.0.1"]);
        assert_eq!(ask(&mut w, "yo:3:10.0.0.3"), ["wrq"], "past the cap");
        assert_eq!(ask(&mut w, "a+:1"), ["ok"]);
        assert_eq!(ask(&mut w, "yo:3:10.0.0.3"), ["10.0.0.2"]);
    }

    #[test]
    fn probing_wraps_around_and_skips_whole_runs() {
        let mut w = welcome(10);
        for id in [7, 8, 9, 0, 1, 3] {
            w.take(id);
        }
        assert_eq!(w.taken, BTreeMap::from([(0, 2), (3, 4), (7, 10)]));
        assert_eq!(w.next_free(7), 2);
        assert_eq!(w.next_free(3), 4);
        assert_eq!(w.next_free(5), 5);
        w.take(2);
        assert_eq!(w.taken, BTreeMap::from([(0, 4), (7, 10)]));
        assert_eq!(w.next_free(8), 4);
    }

    #[test]
    fn a_huge_ring_stays_cheap_when_ids_run_in_long_runs() {
        let mut w = welcome(1 << 32);
        for id in 0..10_000 {
            w.take((1 << 32) - 5_000 + id % 5_000);
            w.take(id);
        }
        assert_eq!(w.taken.len(), 2);
        assert_eq!(w.next_free((1 << 32) - 1), 10_000);
    }

    #[test]
    fn the_first_peer_is_first_the_next_get_a_present_one() {
        let mut w = welcome(100);
        assert_eq!(ask(&mut w, "yo:10:127.0.0.2"), ["yaf"]);
        assert_eq!(ask(&mut w, "yo:30:127.0.0.3"), ["127.0.0.2"]);
        let replies = w.answer(
            &CourseRequest::recognise("yo:60:127.0.0.4")
                .unwrap()
                .unwrap(),
            |n| {
                assert_eq!(n, 2);
                1
            },
        );
        assert_eq!(
            replies,
            [CourseReply::Addr(CourseAddr::parse("127.0.0.3").unwrap())]
        );
        assert_eq!(ask(&mut w, "yo:10:127.0.0.9"), ["wrq"], "a hash present");
        assert_eq!(ask(&mut w, "yo:100:127.0.0.9"), ["wrq"], "outside the ring");
        assert_eq!(ask(&mut w, "yo:x:127.0.0.9"), ["wrq"]);
        assert_eq!(w.members().len(), 3);
    }

    #[test]
    fn other_ports_are_kept_and_shown() {
        let mut w = welcome(100);
        assert_eq!(ask(&mut w, "yo:5:127.0.0.1:45000"), ["yaf"]);
        assert_eq!(ask(&mut w, "yo:6:[::1]:7000"), ["127.0.0.1:45000"]);
        assert_eq!(ask(&mut w, "li?"), ["5:127.0.0.1:45000", "6:[::1]", "end"]);
        assert_eq!(ask(&mut w, "ip?:5"), ["127.0.0.1:45000"]);
        let answer = ask(&mut w, "yo:7:127.0.0.3:7000");
        assert!(
            answer == ["127.0.0.1:45000"] || answer == ["[::1]:7000"],
            "a joiner that gives a port gets one: {answer:?}"
        );
    }

    #[test]
    fn leaving_and_looking_up() {
        let mut w = welcome(100);
        ask(&mut w, "yo:42:127.0.0.2");
        assert_eq!(ask(&mut w, "ip?:42"), ["127.0.0.2"]);
        assert_eq!(ask(&mut w, "ip?:43"), ["ukh"]);
        assert_eq!(ask(&mut w, "ip?:100"), ["wrq"]);
        assert_eq!(ask(&mut w, "a+:42"), ["ok"]);
        assert_eq!(ask(&mut w, "a+:42"), ["wrq"]);
        assert_eq!(ask(&mut w, "ip?:42"), ["ukh"]);
        assert_eq!(
            ask(&mut w, "yo:42:127.0.0.2"),
            ["yaf"],
            "the ring is empty again"
        );
    }

    #[test]
    fn the_list_is_sorted_by_hash() {
        let mut w = welcome(100);
        assert_eq!(ask(&mut w, "li?"), ["end"]);
        for (hash, ip) in [(60, 4), (10, 2), (85, 5), (30, 3)] {
            ask(&mut w, &format!("yo:{hash}:127.0.0.{ip}"));
        }
        assert_eq!(
            ask(&mut w, "li?"),
            [
                "10:127.0.0.2",
                "30:127.0.0.3",
                "60:127.0.0.4",
                "85:127.0.0.5",
                "end"
            ]
        );
    }

    #[test]
    fn the_course_example_table() {
        let mut w = welcome(100);
        for (hash, ip) in [(10, 2), (30, 3), (60, 4), (85, 5)] {
            ask(&mut w, &format!("yo:{hash}:127.0.0.{ip}"));
        }
        assert_eq!(
            ask(&mut w, "rt?:30"),
            [
                "30:60:127.0.0.4",
                "32:60:127.0.0.4",
                "34:60:127.0.0.4",
                "38:60:127.0.0.4",
                "46:60:127.0.0.4",
                "62:85:127.0.0.5",
                "94:10:127.0.0.2",
                "end"
            ]
        );
        assert_eq!(ask(&mut w, "rt?:31"), ["ukh"]);
        assert_eq!(ask(&mut w, "rt?:100"), ["wrq"]);
        assert_eq!(ask(&mut w, "rt?"), ["wrq"], "the tracker has no table");
    }

    #[test]
    fn tables_are_the_ideal_tables() {
        let mut rng = fastrand::Rng::with_seed(7);
        for size in [2, 3, 100, 1000, 1 << 32] {
            let mut w = welcome(size);
            for _ in 0..20 {
                let hash = rng.u64(..size);
                ask(
                    &mut w,
                    &format!("yo:{hash}:127.0.0.1:{}", 1000 + hash % 1000),
                );
            }
            let ids: Vec<u64> = w.members().keys().copied().collect();
            for &h in &ids {
                let expected: Vec<(u64, u64)> = w.space().ideal_table(h, &ids);
                let got: Vec<(u64, u64)> = w
                    .table(h)
                    .into_iter()
                    .filter_map(|line| match line {
                        CourseReply::Route { k, hash, .. } => Some((k, hash)),
                        _ => None,
                    })
                    .collect();
                assert_eq!(got, expected, "size {size}, h {h}");
            }
        }
    }

    #[test]
    fn wrong_lines_are_wrq() {
        let mut w = welcome(100);
        for line in ["zz:1", "what?", "a+:", "li?:3"] {
            assert_eq!(ask(&mut w, line), ["wrq"], "{line}");
        }
    }
}
