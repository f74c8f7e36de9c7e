//! Getting a file's manifest from the peers that hold it. Holders are asked
//! in the order listed, but not one after another: when the requests in
//! flight have had no answer for [`STAGGER`], as many again are started
//! (one, then two, four, ...), up to [`MAX_AT_ONCE`] in flight. A holder
//! that takes the connection and never answers (its machine stalled, or a
//! session made up to block the file) so costs the download a fraction of
//! a second, and holds a request for the 5 s a mini-server is given to
//! answer. While every holder listed is being asked, the holders are
//! looked up again each second for ones not asked yet, so that many made-up
//! holders cannot keep a real one out. The first manifest that hashes to
//! the key wins; the requests still in flight are closed.
//!
//! Each request runs on a named thread of its own (`manifest-<peer>`),
//! scoped to [`fetch_manifest`]: every one is joined before it returns
//! (a request still connecting ends once its connection is made or gives
//! up: at most 5 s). The manifests being received share a byte budget
//! ([`Room`]), so that holders announcing huge ones cannot make a
//! download hold 50 of them at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Scope};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::debug;
use parking_lot::{Condvar, Mutex};

use crate::pieces::Manifest;
use crate::protocol::{ErrorCode, FileKey, PeerId};

use super::super::link::{LinkCloser, LinkError, PeerLink, ANSWER_DEADLINE, FIRST_ANSWER_DEADLINE};
use crate::wire::is_timeout;

/// How long the requests in flight go unanswered before more holders are
/// asked as well (as many as are in flight: one, then two, four, ...). An
/// honest holder on a LAN answers within milliseconds.
const STAGGER: Duration = Duration::from_millis(250);

/// Requests in flight at most: a tracker listing's worth (it lists 50
/// holders by default), so a listing of holders that never answer is
/// asked whole within 6 x [`STAGGER`] (1.5 s). So many of the first
/// listing are owed a try whatever the time (a listing can be longer: a
/// tracker's `max_peers_per_reply`, the ring's records).
const MAX_AT_ONCE: usize = 50;

/// How long a holder at its connection cap (`ERRR 500`) waits to be asked
/// again; how long after every listed holder failed the holders are
/// looked up again; and how often they are looked up while every holder
/// listed is being asked and none has answered.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often the fetch looks at the cancel flag while it waits.
const TICK: Duration = Duration::from_millis(100);

/// Bytes of manifests received at once, all requests together: two of
/// the largest a file may have, and 16 MiB besides, so that a manifest of
/// any honest size (16 MiB is a 57 GiB file in 256 KiB pieces) still has
/// room while two made-up giants are received.
fn manifest_room() -> usize {
    2 * Manifest::max_encoded_len() + (16 << 20)
}

/// A budget of bytes that requests take from before they receive a
/// manifest, and give back once done with it.
struct Room {
    left: Mutex<usize>,
    freed: Condvar,
}

/// Bytes taken from a [`Room`]; given back when dropped.
struct Taken<'a> {
    room: &'a Room,
    bytes: usize,
}

impl Room {
    fn new(bytes: usize) -> Room {
        Room {
            left: Mutex::new(bytes),
            freed: Condvar::new(),
        }
    }

    /// Takes `bytes`, waiting for them to be free; `None` once `stop` is
    /// set.
    fn take(&self, bytes: usize, stop: &AtomicBool) -> Option<Taken<'_>> {
        let mut left = self.left.lock();
        while *left < bytes {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            self.freed.wait_for(&mut left, TICK);
        }
        *left -= bytes;
        Some(Taken { room: self, bytes })
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        *self.room.left.lock() += self.bytes;
        self.room.freed.notify_all();
    }
}

/// A request's outcome, sent by its thread.
type Answer = (PeerId, Result<Manifest, Unanswered>);

/// Why a request gave no manifest.
#[derive(Debug)]
enum Unanswered {
    /// No connection was made to the holder.
    NotConnected(LinkError),
    /// Connected, it gave no good manifest (in time, or at all).
    Failed(LinkError),
}

/// The manifest of `key` from the first peer that gives a good one, and
/// that peer, for up to `patience`. The first [`MAX_AT_ONCE`] peers of the
/// `first` listing are asked, however long that takes (about 1.5 s to
/// ask them all, and 5 s to hear the last); past them, no request starts
/// once the time is up, and those in flight are waited for.
///
/// Peers at their connection cap (`ERRR 500`, a class on one machine) are
/// asked again a second later: a busy seeder is no reason to give a
/// download up. A peer that does not answer within 5 s is asked once
/// more, giving it the full [`ANSWER_DEADLINE`], once no other peer is
/// waiting to be asked ([`MAX_PATIENT`] such at once): a seeder slow for
/// a moment is not dropped, and made-up holders cannot hold the slots.
/// The peers are looked up again (`look_up`, on a thread of its own, so
/// that answers are read meanwhile) each second while every peer listed
/// is being asked and none has answered, and a second after every peer
/// listed failed otherwise; those not tried yet are asked: the tracker
/// lists at most 50 and draws some of them at random, so holders that
/// were made up cannot fill every listing, nor hold the download until a
/// real holder is drawn. A look-up that lists the same holders as the one
/// before, all tried, most likely lists all there are: the download then
/// gives up at once rather than at the end of `patience`. The fetch
/// returns once a look-up under way has ended (its thread is joined): a
/// look-up that took a second or more is therefore not made again while
/// requests are in flight. Setting `cancel` ends the fetch within
/// [`TICK`] (and the join of a request still connecting, or of a look-up
/// under way).
pub(super) fn fetch_manifest(
    key: FileKey,
    first: Vec<PeerId>,
    look_up: impl FnMut() -> Vec<PeerId> + Send,
    cancel: &AtomicBool,
    patience: Duration,
) -> Result<(Manifest, PeerId), String> {
    let (answers_in, answers) = crossbeam_channel::unbounded();
    let (listings_in, listings) = crossbeam_channel::bounded(1);
    let closers = Mutex::new(HashMap::new());
    let stop = AtomicBool::new(false);
    let room = Room::new(manifest_room());
    let look_up = Mutex::new(look_up);
    thread::scope(|scope| {
        let requests = Requests {
            scope,
            key,
            answers_in,
            closers: &closers,
            stop: &stop,
            room: &room,
        };
        let look_ups = LookUps {
            scope,
            look_up: &look_up,
            listings_in,
        };
        let mut fetch = Fetch::new(first, patience);
        let result = fetch.run(&requests, &look_ups, &answers, &listings, cancel);
        // Set before the links are closed: a request that publishes its
        // closer after this sees it, and one that published before is
        // closed here. Either way its thread ends, and the scope joins it.
        stop.store(true, Ordering::SeqCst);
        for (_, closer) in closers.lock().drain() {
            closer.close();
        }
        result
    })
}

/// Starts requests, each on a thread of its own that sends its [`Answer`].
struct Requests<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    key: FileKey,
    answers_in: Sender<Answer>,
    /// The links of the requests in flight, so that they can be closed.
    closers: &'env Mutex<HashMap<PeerId, LinkCloser>>,
    /// Set once the fetch is over: a request that sees it stops.
    stop: &'env AtomicBool,
    /// The bytes of manifests that may be received at once.
    room: &'env Room,
}

impl Requests<'_, '_> {
    /// Asks `peer` for the manifest on a new thread, giving it `deadline`
    /// for the answer's first line.
    fn start(&self, peer: PeerId, deadline: Duration) {
        let (key, answers_in) = (self.key, self.answers_in.clone());
        let (closers, stop, room) = (self.closers, self.stop, self.room);
        let no_longer_needed = || LinkError::Io(std::io::Error::other("no longer needed"));
        let spawned = thread::Builder::new()
            .name(format!("manifest-{peer}"))
            .spawn_scoped(self.scope, move || {
                let result = match PeerLink::connect(peer) {
                    Err(e) => Err(Unanswered::NotConnected(LinkError::from(e))),
                    Ok(mut link) => (|| {
                        closers.lock().insert(peer, link.closer()?);
                        if stop.load(Ordering::SeqCst) {
                            return Err(no_longer_needed());
                        }
                        let length = link.ask_manifest(key, deadline)?;
                        let _taken = room
                            .take(length as usize, stop)
                            .ok_or_else(no_longer_needed)?;
                        link.read_manifest(key, length)
                    })()
                    .map_err(Unanswered::Failed),
                };
                closers.lock().remove(&peer);
                // The fetch may be over; nobody needs the answer then.
                let _ = answers_in.send((peer, result));
            });
        if let Err(e) = spawned {
            let unanswered = Unanswered::NotConnected(LinkError::Io(e));
            let _ = self.answers_in.send((peer, Err(unanswered)));
        }
    }
}

/// Runs the look-ups of holders, one at a time, each on a thread of its
/// own that sends the listing (a tracker that takes seconds to answer
/// must not keep the fetch from reading the answers that come).
struct LookUps<'scope, 'env, F> {
    scope: &'scope Scope<'scope, 'env>,
    look_up: &'env Mutex<F>,
    listings_in: Sender<Listing>,
}

/// A look-up's holders, and how long it took.
type Listing = (Vec<PeerId>, Duration);

impl<F: FnMut() -> Vec<PeerId> + Send> LookUps<'_, '_, F> {
    /// Starts a look-up; false if no thread could be made for it.
    fn start(&self) -> bool {
        let (look_up, listings_in) = (self.look_up, self.listings_in.clone());
        thread::Builder::new()
            .name("manifest-look-up".into())
            .spawn_scoped(self.scope, move || {
                let started = Instant::now();
                let listing = (look_up.lock())();
                let _ = listings_in.send((listing, started.elapsed()));
            })
            .is_ok()
    }
}

/// Patient requests (a second try, with [`ANSWER_DEADLINE`]) in flight at
/// most: holders that never answer cannot take every slot for 30 s.
const MAX_PATIENT: usize = 8;

/// What the fetch knows of the holders so far.
struct Fetch {
    /// Peers to ask, in order.
    to_ask: VecDeque<PeerId>,
    /// The first [`MAX_AT_ONCE`] peers of the first listing, not asked
    /// yet: asked even once the time is up.
    owed_a_try: HashSet<PeerId>,
    /// The holders of the latest look-up.
    last_listing: HashSet<PeerId>,
    /// Every peer asked.
    tried: HashSet<PeerId>,
    /// Peers that answered with no good manifest, or not at all twice (or
    /// once, with the full deadline): not asked again.
    failed: HashSet<PeerId>,
    /// Requests in flight.
    asking: HashSet<PeerId>,
    /// Peers that did not answer within [`FIRST_ANSWER_DEADLINE`], to ask
    /// again with the full deadline once no other peer waits to be asked.
    slow: VecDeque<PeerId>,
    /// Peers asked with the full deadline (in flight, or done).
    patient: HashSet<PeerId>,
    /// Busy peers, and when to ask them again.
    busy: Vec<(Instant, PeerId)>,
    /// When more requests may start while others are in flight.
    next_start: Instant,
    /// Requests that failed since the last start: each may be replaced at
    /// once (its slot is free), whatever [`STAGGER`] says.
    freed: usize,
    /// When every listed holder has failed: when to look them up again.
    look_up_at: Option<Instant>,
    /// When the holders were last looked up (the first listing counts).
    looked_up_at: Instant,
    /// A look-up is under way.
    looking: bool,
    /// A look-up took a second or more (a tracker flooded or away): none
    /// is made again while requests are in flight, as the fetch waits for
    /// one under way before it returns, its manifest in hand or not.
    look_ups_slow: bool,
    /// How long the fetch may take, and when that is up.
    patience: Duration,
    give_up_at: Instant,
    last_error: String,
}

impl Fetch {
    fn new(first: Vec<PeerId>, patience: Duration) -> Fetch {
        let first = without_repeats(first);
        let listed: HashSet<PeerId> = first.iter().copied().collect();
        Fetch {
            owed_a_try: first.iter().take(MAX_AT_ONCE).copied().collect(),
            to_ask: first.into(),
            last_listing: listed,
            tried: HashSet::new(),
            failed: HashSet::new(),
            asking: HashSet::new(),
            slow: VecDeque::new(),
            patient: HashSet::new(),
            busy: Vec::new(),
            next_start: Instant::now(),
            freed: 0,
            look_up_at: None,
            looked_up_at: Instant::now(),
            looking: false,
            look_ups_slow: false,
            patience,
            give_up_at: Instant::now() + patience,
            last_error: String::new(),
        }
    }

    /// Whether every holder known has failed: none is asked, or waits to
    /// be.
    fn all_failed(&self) -> bool {
        self.asking.is_empty()
            && self.to_ask.is_empty()
            && self.busy.is_empty()
            && self.slow.is_empty()
    }

    fn run<F: FnMut() -> Vec<PeerId> + Send>(
        &mut self,
        requests: &Requests,
        look_ups: &LookUps<'_, '_, F>,
        answers: &Receiver<Answer>,
        listings: &Receiver<Listing>,
        cancel: &AtomicBool,
    ) -> Result<(Manifest, PeerId), String> {
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err("cancelled".into());
            }
            let now = Instant::now();
            self.ask_busy_peers_again(now);
            self.start_due_requests(requests, now);
            if self.all_failed() {
                // Every holder listed failed: look again, or give up.
                if now >= self.give_up_at {
                    return Err(self.gave_up(&format!(" in {} s", self.patience.as_secs())));
                }
                let due = *self.look_up_at.get_or_insert(now + RETRY_AFTER);
                if now >= due && !self.looking {
                    self.look_up_at = None;
                    self.looking = look_ups.start();
                }
            } else if self.to_ask.is_empty()
                && !self.looking
                && !self.look_ups_slow
                && now < self.give_up_at
                && now >= self.looked_up_at + RETRY_AFTER
            {
                // Every holder listed is being asked and none has answered
                // yet: holders not listed so far may be drawn this time.
                self.looking = look_ups.start();
            }
            let wait = if self.can_start_more() {
                TICK.min(self.next_start.saturating_duration_since(now))
            } else {
                TICK
            };
            crossbeam_channel::select! {
                recv(answers) -> answer => match answer {
                    Ok((peer, Ok(manifest))) => return Ok((manifest, peer)),
                    Ok((peer, Err(e))) => self.failed_to_answer(peer, e),
                    // `requests` holds a sender: never disconnected.
                    Err(_) => return Err(self.gave_up(", its requests lost")),
                },
                recv(listings) -> listing => {
                    self.looking = false;
                    self.looked_up_at = Instant::now();
                    self.look_up_at = None;
                    let (listing, took) = listing.unwrap_or_default();
                    self.look_ups_slow |= took >= RETRY_AFTER;
                    let listing = without_repeats(listing);
                    if self.all_failed() {
                        self.take_listing(listing)?;
                    } else {
                        self.take_new_holders(listing);
                    }
                },
                default(wait) => {}
            }
        }
    }

    /// Whether another request may start: one is waiting, and there is room.
    fn can_start_more(&self) -> bool {
        let patient_in_flight = self.asking.intersection(&self.patient).count();
        let waiting =
            !self.to_ask.is_empty() || (!self.slow.is_empty() && patient_in_flight < MAX_PATIENT);
        waiting && self.asking.len() < MAX_AT_ONCE
    }

    /// Starts the next request if none is in flight; once the ones in
    /// flight have gone [`STAGGER`] without an answer, as many again (so
    /// that holders that never answer are got past quickly, while a
    /// holder that answers at once costs one request); and one for each
    /// that failed since (its slot is free). Peers listed come first; a
    /// slow one is asked again, patiently, once none is left. Once the
    /// time is up, only peers of the first listing are asked.
    fn start_due_requests(&mut self, requests: &Requests, now: Instant) {
        let mut starts = match self.asking.len() {
            0 => 1,
            _ if now < self.next_start => 0,
            in_flight => in_flight,
        } + std::mem::take(&mut self.freed);
        while starts > 0 && self.can_start_more() {
            let (peer, patient) = match self.to_ask.pop_front() {
                Some(peer) => (peer, false),
                None => match self.slow.pop_front() {
                    Some(peer) => (peer, true),
                    None => return,
                },
            };
            let deadline = if patient {
                // As long as the time left allows, but never less than a
                // first try had: past the time, a try runs 5 s at most.
                let left = self.give_up_at.saturating_duration_since(now);
                if left.is_zero() || self.asking.contains(&peer) || self.failed.contains(&peer) {
                    continue;
                }
                self.patient.insert(peer);
                ANSWER_DEADLINE.min(left).max(FIRST_ANSWER_DEADLINE)
            } else if self.may_ask(peer, now) {
                FIRST_ANSWER_DEADLINE
            } else {
                continue;
            };
            self.tried.insert(peer);
            self.asking.insert(peer);
            self.next_start = now + STAGGER;
            requests.start(peer, deadline);
            starts -= 1;
        }
    }

    /// Whether `peer` may be asked now: it has not failed, is not being
    /// asked, and the time is not up (or it is owed a try).
    fn may_ask(&self, peer: PeerId, now: Instant) -> bool {
        let owed_a_try = self.owed_a_try.contains(&peer) && !self.tried.contains(&peer);
        !self.failed.contains(&peer)
            && !self.asking.contains(&peer)
            && (now < self.give_up_at || owed_a_try)
    }

    /// Puts the busy peers that are due back in line (or drops them once
    /// the time is up).
    fn ask_busy_peers_again(&mut self, now: Instant) {
        let give_up_at = self.give_up_at;
        let to_ask = &mut self.to_ask;
        self.busy.retain(|&(when, peer)| {
            if now >= give_up_at {
                return false;
            }
            if now >= when {
                to_ask.push_back(peer);
            }
            now < when
        });
    }

    fn failed_to_answer(&mut self, peer: PeerId, unanswered: Unanswered) {
        // A connection not made is no answer slow to come: asked again,
        // it would get no more time to connect.
        let (error, connected) = match unanswered {
            Unanswered::NotConnected(error) => (error, false),
            Unanswered::Failed(error) => (error, true),
        };
        debug!("manifest from {peer}: {error}");
        self.asking.remove(&peer);
        self.freed += 1;
        let at_its_cap = matches!(
            error,
            LinkError::Refused {
                code: ErrorCode::Busy,
                ..
            }
        );
        let slow = connected && matches!(&error, LinkError::Io(e) if is_timeout(e));
        if at_its_cap {
            debug!("{peer} is busy; asking it again in a second");
            self.busy.push((Instant::now() + RETRY_AFTER, peer));
        } else if slow && !self.patient.contains(&peer) {
            debug!("{peer} is slow to answer; asking it again, patiently, once no other waits");
            self.slow.push_back(peer);
        } else {
            self.failed.insert(peer);
        }
        self.last_error = format!("{peer}: {error}");
    }

    /// Queues the holders of a look-up made while others are asked that
    /// were not asked yet (nor are queued).
    fn take_new_holders(&mut self, listing: Vec<PeerId>) {
        self.last_listing = listing.iter().copied().collect();
        for peer in listing {
            let new = !self.tried.contains(&peer) && !self.to_ask.contains(&peer);
            if new {
                self.to_ask.push_back(peer);
            }
        }
    }

    /// Takes a new look-up's holders (without repeats), or gives up when
    /// it lists none, or the same as the one before.
    fn take_listing(&mut self, listing: Vec<PeerId>) -> Result<(), String> {
        let listed: HashSet<PeerId> = listing.iter().copied().collect();
        if listed.is_empty() {
            return Err(self.gave_up(", and a new look-up lists none"));
        }
        if listed == self.last_listing {
            return Err(self.gave_up(""));
        }
        debug!("every peer listed failed; asking those a new look-up gave");
        // In the order listed: the tracker's best first.
        self.to_ask = listing
            .into_iter()
            .filter(|p| !self.failed.contains(p))
            .collect();
        self.last_listing = listed;
        Ok(())
    }

    fn gave_up(&self, why: &str) -> String {
        format!(
            "could not get a valid manifest from any of {} peer(s){why} (last: {})",
            self.tried.len(),
            self.last_error
        )
    }
}

/// `peers` in their order, each once (a listing may name a holder twice:
/// the ring's records, another tracker than ours).
fn without_repeats(peers: Vec<PeerId>) -> Vec<PeerId> {
    let mut seen = HashSet::new();
    peers
        .into_iter()
        .filter(|peer| seen.insert(*peer))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    /// How a made-up holder answers each connection it takes.
    #[derive(Clone)]
    enum Holder {
        /// Reads the request and never answers, until the link is closed.
        Silent,
        /// Answers with these bytes.
        Says(Vec<u8>),
    }

    /// A holder at a free port that takes one connection per entry of
    /// `answers`, in turn; joined once it has taken them all.
    fn holder(answers: Vec<Holder>) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = thread::spawn(move || {
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                match answer {
                    Holder::Silent => {
                        // Until the other side closes.
                        let _ = reader.read_to_end(&mut Vec::new());
                    }
                    Holder::Says(bytes) => (&stream).write_all(&bytes).unwrap(),
                }
            }
        });
        (addr, thread)
    }

    /// An address nobody listens at: connecting is refused.
    fn nobody() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// A one-piece file's manifest, and the `MANF` answer that gives it.
    fn manifest() -> (Manifest, Vec<u8>) {
        let manifest = Manifest::build(&b"hello"[..], 16 * 1024, |_| {}).unwrap();
        let text = manifest.to_string();
        let mut answer = format!("MANF {} {}\r\n", manifest.key(), text.len()).into_bytes();
        answer.extend_from_slice(text.as_bytes());
        (manifest, answer)
    }

    const PATIENCE: Duration = Duration::from_secs(30);

    #[test]
    fn holders_that_never_answer_do_not_each_hold_the_fetch_for_a_deadline() {
        let (manifest, answer) = manifest();
        let silent: Vec<_> = (0..6).map(|_| holder(vec![Holder::Silent])).collect();
        let (good, good_thread) = holder(vec![Holder::Says(answer)]);
        let mut listing: Vec<PeerId> = silent.iter().map(|(addr, _)| *addr).collect();
        listing.push(good);
        let started = Instant::now();
        let cancel = AtomicBool::new(false);
        let (got, from) =
            fetch_manifest(manifest.key(), listing, Vec::new, &cancel, PATIENCE).unwrap();
        assert_eq!((got.key(), from), (manifest.key(), good));
        // One after another, the six would have taken 30 s each.
        let took = started.elapsed();
        assert!(took < Duration::from_secs(25), "took {took:?}");
        // The silent holders' links were closed: their threads end.
        for (_, thread) in silent {
            thread.join().unwrap();
        }
        good_thread.join().unwrap();
    }

    #[test]
    fn a_listing_full_of_holders_that_never_answer_cannot_keep_a_real_one_out() {
        // One host's 50 made-up sessions fill the first listing; the real
        // holder is drawn into a later look-up (as the tracker draws the
        // last fifth of a listing at random). Asked only once all 50 had
        // failed, it came too late: each silent request held 30 s.
        let (manifest, answer) = manifest();
        let silent: Vec<_> = (0..MAX_AT_ONCE)
            .map(|_| holder(vec![Holder::Silent]))
            .collect();
        let listing: Vec<PeerId> = silent.iter().map(|(addr, _)| *addr).collect();
        let (good, good_thread) = holder(vec![Holder::Says(answer)]);
        let mut look_ups = 0;
        let look_up = || {
            look_ups += 1;
            let mut drawn = listing.clone();
            if look_ups >= 3 {
                drawn[MAX_AT_ONCE - 1] = good;
            }
            drawn
        };
        let cancel = AtomicBool::new(false);
        let patience = Duration::from_secs(20);
        let (_, from) =
            fetch_manifest(manifest.key(), listing.clone(), look_up, &cancel, patience).unwrap();
        assert_eq!(from, good);
        for (_, thread) in silent {
            thread.join().unwrap();
        }
        good_thread.join().unwrap();
    }

    #[test]
    fn a_holder_listed_twice_is_asked_once() {
        let [a, b] = [nobody(), nobody()];
        let fetch = Fetch::new(vec![a, b, a, b, a], PATIENCE);
        assert_eq!(fetch.to_ask, [a, b]);
        assert_eq!(without_repeats(vec![b, b, a]), [b, a]);
    }

    #[test]
    fn only_the_first_listing_s_first_peers_are_asked_once_the_time_is_up() {
        // A listing of a thousand (the ring's records, say): asked past the
        // time, it would take 20 rounds of a request's deadline.
        let listing: Vec<PeerId> = (0..1000)
            .map(|n| SocketAddr::from(([127, 0, 0, 1], 10_000 + n)))
            .collect();
        let fetch = Fetch::new(listing.clone(), Duration::ZERO);
        let now = Instant::now();
        assert!(fetch.may_ask(listing[0], now));
        assert!(fetch.may_ask(listing[MAX_AT_ONCE - 1], now));
        assert!(!fetch.may_ask(listing[MAX_AT_ONCE], now));
        assert!(!fetch.may_ask(listing[999], now));
    }

    #[test]
    fn a_manifest_that_does_not_hash_to_the_key_is_refused_and_the_next_holder_asked() {
        let (manifest, answer) = manifest();
        let (_, other) = {
            let other = Manifest::build(&b"other"[..], 16 * 1024, |_| {}).unwrap();
            let text = other.to_string();
            // Announced under the key asked for.
            let mut lie = format!("MANF {} {}\r\n", manifest.key(), text.len()).into_bytes();
            lie.extend_from_slice(text.as_bytes());
            (other, lie)
        };
        let (liar, liar_thread) = holder(vec![Holder::Says(other)]);
        let (good, good_thread) = holder(vec![Holder::Says(answer)]);
        let cancel = AtomicBool::new(false);
        let (_, from) = fetch_manifest(
            manifest.key(),
            vec![liar, good],
            Vec::new,
            &cancel,
            PATIENCE,
        )
        .unwrap();
        assert_eq!(from, good);
        liar_thread.join().unwrap();
        good_thread.join().unwrap();
    }

    #[test]
    fn a_holder_slow_to_answer_once_is_asked_again_patiently() {
        // The only holder says nothing for its first request's 5 s (a
        // machine stalled for a moment), and answers the next. Taken for
        // failed, it was never asked again: the download gave up.
        let (manifest, answer) = manifest();
        let (seeder, thread) = holder(vec![Holder::Silent, Holder::Says(answer)]);
        let cancel = AtomicBool::new(false);
        let (_, from) = fetch_manifest(
            manifest.key(),
            vec![seeder],
            || vec![seeder],
            &cancel,
            PATIENCE,
        )
        .unwrap();
        assert_eq!(from, seeder);
        thread.join().unwrap();
    }

    #[test]
    fn a_busy_holder_is_asked_again() {
        let (manifest, answer) = manifest();
        let busy = b"ERRR 500 too many connections\r\n".to_vec();
        let (seeder, thread) = holder(vec![Holder::Says(busy), Holder::Says(answer)]);
        let cancel = AtomicBool::new(false);
        let (_, from) =
            fetch_manifest(manifest.key(), vec![seeder], Vec::new, &cancel, PATIENCE).unwrap();
        assert_eq!(from, seeder);
        thread.join().unwrap();
    }

    #[test]
    fn holders_that_all_fail_are_looked_up_again_and_the_new_ones_asked() {
        let (manifest, answer) = manifest();
        let (good, thread) = holder(vec![Holder::Says(answer)]);
        let gone = nobody();
        let mut look_ups = 0;
        let look_up = || {
            look_ups += 1;
            vec![gone, good]
        };
        let cancel = AtomicBool::new(false);
        let (_, from) =
            fetch_manifest(manifest.key(), vec![gone], look_up, &cancel, PATIENCE).unwrap();
        assert_eq!((from, look_ups), (good, 1));
        thread.join().unwrap();
    }

    #[test]
    fn a_look_up_that_lists_the_same_holders_again_ends_the_fetch_at_once() {
        let (manifest, _) = manifest();
        let gone = [nobody(), nobody()];
        let cancel = AtomicBool::new(false);
        let started = Instant::now();
        let reason = fetch_manifest(
            manifest.key(),
            gone.to_vec(),
            || gone.to_vec(),
            &cancel,
            PATIENCE,
        )
        .unwrap_err();
        assert!(
            reason.starts_with("could not get a valid manifest from any of 2 peer(s) (last: "),
            "{reason}"
        );
        assert!(started.elapsed() < PATIENCE, "waited out its patience");
    }

    #[test]
    fn manifests_wait_for_room_and_give_it_back() {
        let room = Room::new(100);
        let stop = AtomicBool::new(false);
        let first = room.take(70, &stop).unwrap();
        // 40 more do not fit while the 70 are held: the taker waits.
        thread::scope(|scope| {
            let second = scope.spawn(|| room.take(40, &stop).map(|taken| taken.bytes));
            thread::sleep(Duration::from_millis(300));
            assert!(!second.is_finished(), "took room that was not there");
            drop(first);
            assert_eq!(second.join().unwrap(), Some(40));
        });
        // Nothing is kept, and a stop ends a wait.
        assert_eq!(*room.left.lock(), 100);
        let _all = room.take(100, &stop).unwrap();
        stop.store(true, Ordering::SeqCst);
        assert!(room.take(1, &stop).is_none());
    }

    #[test]
    fn a_cancel_ends_the_fetch_and_closes_its_requests() {
        let (manifest, _) = manifest();
        let (silent, thread) = holder(vec![Holder::Silent]);
        let cancel = Arc::new(AtomicBool::new(false));
        let canceller = thread::spawn({
            let cancel = Arc::clone(&cancel);
            move || {
                thread::sleep(Duration::from_millis(300));
                cancel.store(true, Ordering::SeqCst);
            }
        });
        let reason =
            fetch_manifest(manifest.key(), vec![silent], Vec::new, &cancel, PATIENCE).unwrap_err();
        assert_eq!(reason, "cancelled");
        // Its link closed, the silent holder sees the end of the stream.
        thread.join().unwrap();
        canceller.join().unwrap();
    }
}
