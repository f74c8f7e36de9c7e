//! This peer's place in the ring: its id, predecessor, successor list and
//! routing table (fingers); the answers it gives other ring peers; and the
//! periodic rounds that keep it right as peers come and go:
//!
//! - *stabilise*: ask the successor for its predecessor; if that peer sits
//!   between us, it becomes our successor; take the successor's own list
//!   as the rest of ours; tell the successor we are here (*notify*);
//! - *check predecessor*: forget a predecessor that no longer answers;
//! - *fix fingers*: look up, for each routing table line, the peer it
//!   should point at;
//! - *place records*: copy the records this peer owns to its successors
//!   (the replicas), a replica's records to their owner (perhaps a peer
//!   that joined since), and records it keeps but should not (stored while
//!   the ring was changing) to where they belong. Copies only: a record
//!   kept where it need not be is harmless, and expires.
//!
//! A successor that does not answer is dropped, and the next one in the
//! list takes its place: that is how the ring heals after a crash.
//!
//! No lock is held while talking to another peer.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use parking_lot::{Mutex, RwLock};

use crate::protocol::course::{CourseAddr, CourseReply, CourseRequest};
use crate::protocol::ring::{
    Member, NameRecord, Record, RecordQuery, RingReply, RingRequest, MAX_OWNER_LIST,
};
use crate::protocol::{ErrorCode, FileKey, FileName, Reply};

use super::client::{LookStep, NodeView, RingClient, RingError, Trace, CONNECT_TIMEOUT};
use super::records::RecordStore;
use super::space::RingSpace;

/// How a peer takes part in the ring (see `config/peer.ini`).
#[derive(Debug, Clone)]
pub struct RingSettings {
    pub space: RingSpace,
    /// How its id is chosen.
    pub id: IdChoice,
    /// Whom it asks to get in.
    pub entry: Entry,
    /// Length of the successor list (how many failures in a row the ring
    /// survives).
    pub successors: usize,
    /// On how many peers each record is kept (the owner and its next).
    pub replicas: usize,
    pub stabilize: Duration,
    pub fix_fingers: Duration,
    pub check_predecessor: Duration,
}

/// How a peer's ring id is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdChoice {
    /// The hash of its `ip:port`; the next free id if taken.
    FromAddress,
    /// This id, or no join.
    Fixed(u64),
    /// Asked of the hash service at this address.
    HashService(SocketAddr),
}

/// Whom a peer asks to get into the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A welcome service (`yo:`): the tracker, or the course's server.
    Welcome(SocketAddr),
    /// Any live member of the ring.
    Member(SocketAddr),
}

/// How many ids are tried when the address's hash is taken.
const ID_ATTEMPTS: u64 = 64;
/// How often expired records are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);
/// The most name records one `NAMS` answer gives.
const MAX_NAMES: usize = 1000;
/// Records are put in their places once every this many stabilisation
/// rounds.
const PLACE_EVERY_ROUNDS: u32 = 5;
/// How many times a look-up is tried again after a peer on its way did
/// not answer (the ring routes around it once the rounds notice).
const LOOKUP_ATTEMPTS: usize = 3;

/// One line of the routing table.
#[derive(Debug, Clone, Copy)]
struct Finger {
    /// The line's `k` (the course's form: `h`, then `h + 2^i`).
    k: u64,
    /// The id whose owner the line points at (`k + 1`).
    target: u64,
    node: Option<Member>,
}

/// What this peer knows of the ring. Only ever held briefly.
#[derive(Debug, Clone)]
struct Routing {
    me: Member,
    predecessor: Option<Member>,
    /// Nearest first; `[me]` when alone. Never empty.
    successors: Vec<Member>,
    fingers: Vec<Finger>,
}

impl Routing {
    fn new(space: &RingSpace, me: Member, successors: Vec<Member>) -> Routing {
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
            fingers,
        }
    }

    fn successor(&self) -> Member {
        self.successors[0]
    }

    fn is_alone(&self) -> bool {
        self.successor() == self.me
    }

    /// This peer, then its successors: where the records it owns live.
    fn owners_from_me(&self) -> Vec<Member> {
        let mut owners = vec![self.me];
        owners.extend(self.successors.iter().filter(|m| **m != self.me));
        owners.truncate(MAX_OWNER_LIST);
        owners
    }

    /// One step of the look-up of `id`, answered from what this peer knows.
    fn step(&self, space: &RingSpace, id: u64, fingers: bool) -> LookStep {
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
            return LookStep::Owner(self.successors.clone());
        }
        let next = if fingers {
            self.closest_preceding(space, id)
        } else {
            succ
        };
        LookStep::Next(next)
    }

    /// The known peer closest before `id` (going clockwise from here): the
    /// farthest hop that does not overshoot.
    fn closest_preceding(&self, space: &RingSpace, id: u64) -> Member {
        self.fingers
            .iter()
            .filter_map(|f| f.node)
            .chain(self.successors.iter().copied())
            .filter(|m| space.in_open(m.id, self.me.id, id))
            .max_by_key(|m| space.distance(self.me.id, m.id))
            .unwrap_or_else(|| self.successor())
    }

    /// `candidate` says it may be our predecessor.
    fn notified(&mut self, space: &RingSpace, candidate: Member) -> bool {
        // Our own id at another address cannot be our predecessor: with it
        // this peer would think it owns the whole ring.
        if candidate.id == self.me.id {
            return false;
        }
        let mut changed = false;
        let closer = self
            .predecessor
            .is_none_or(|pred| space.in_open(candidate.id, pred.id, self.me.id));
        if closer && self.predecessor != Some(candidate) {
            self.predecessor = Some(candidate);
            changed = true;
        }
        if self.is_alone() {
            // The first peer to join a ring of one is also its successor.
            self.successors = vec![candidate];
            changed = true;
        }
        changed
    }

    /// Takes the successor's view: it, then its own successors, up to `len`.
    fn adopt_successor(&mut self, view: &NodeView, len: usize) {
        let mut list = vec![view.me];
        for s in &view.successors {
            if *s == self.me || list.len() >= len {
                break;
            }
            if !list.contains(s) {
                list.push(*s);
            }
        }
        self.successors = list;
    }

    /// `leaving` leaves; `predecessor` and `successor` were its neighbours.
    fn left(&mut self, leaving: Member, predecessor: Option<Member>, successor: Member) {
        if self.predecessor == Some(leaving) {
            self.predecessor = predecessor.filter(|p| *p != self.me && *p != leaving);
        }
        let was_first = self.successors.first() == Some(&leaving);
        self.successors.retain(|m| *m != leaving);
        if was_first
            && successor != self.me
            && successor != leaving
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
    fn drop_member(&mut self, gone: SocketAddr) {
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

    fn forget_fingers(&mut self, gone: Member) {
        for finger in &mut self.fingers {
            if finger.node == Some(gone) {
                finger.node = None;
            }
        }
    }

    fn view(&self, size: u64) -> NodeView {
        NodeView {
            me: self.me,
            size,
            predecessor: self.predecessor,
            successors: self.successors.clone(),
            fingers: self.fingers.iter().map(|f| (f.k, f.node)).collect(),
        }
    }
}

/// This peer as a ring member. Made by [`RingNode::join`]; its rounds run
/// from [`RingNode::start_rounds`] until [`RingNode::leave`].
pub struct RingNode {
    settings: RingSettings,
    routing: RwLock<Routing>,
    records: Mutex<RecordStore>,
    client: RingClient,
    /// The welcome service it joined through, told when it leaves.
    welcome: Option<SocketAddr>,
    rounds: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// Set when leaving: a round under way stops at its next step.
    stopping: AtomicBool,
}

impl RingNode {
    /// Gets into the ring: chooses an id, asks the entry for a member (or
    /// learns it is the first), and finds its successor by a look-up
    /// through that member. `listen` is the mini-server's address; when
    /// it is the wildcard address, the IP that reaches the entry is used.
    /// Nothing is running yet: serve the node, then start its rounds.
    pub fn join(settings: RingSettings, listen: SocketAddr) -> Result<RingNode, RingError> {
        let space = settings.space;
        let contact = match settings.entry {
            Entry::Welcome(addr) | Entry::Member(addr) => addr,
        };
        let addr = if listen.ip().is_unspecified() {
            SocketAddr::new(local_ip_towards(contact)?, listen.port())
        } else {
            listen
        };
        let client = RingClient::from_ip(addr.ip());
        let mut id = match settings.id {
            IdChoice::Fixed(id) if space.contains(id) => id,
            IdChoice::Fixed(id) => {
                return Err(RingError::Failed(format!(
                    "ring id {id} is outside the ring (0 to {})",
                    space.size() - 1
                )))
            }
            IdChoice::FromAddress => space.id_of(&addr.to_string()),
            IdChoice::HashService(service) => ask_hash_service(&client, service, addr, &space)?,
        };
        let probing = settings.id == IdChoice::FromAddress;
        for _ in 0..ID_ATTEMPTS {
            let member = match settings.entry {
                Entry::Welcome(welcome) => match welcome_join(&client, welcome, id, addr)? {
                    Welcomed::First => None,
                    Welcomed::Through(member) => Some(member),
                    Welcomed::Taken if !probing && stale_at_welcome(&client, welcome, id, addr) => {
                        // Our own entry from before a crash, or a peer gone
                        // since: it is off the list now; join again.
                        let _ = client.course(welcome, &CourseRequest::Leave { hash: id });
                        continue;
                    }
                    Welcomed::Taken => {
                        if !probing {
                            return Err(RingError::Failed(format!(
                                "the welcome service at {welcome} refused id {id} (taken, or outside its ring)"
                            )));
                        }
                        id = space.add(id, 1);
                        continue;
                    }
                },
                Entry::Member(member) => Some(member),
            };
            let successors = match member {
                None => Vec::new(),
                Some(member) => {
                    let place = find_place(&client, &space, member, id);
                    if place
                        .as_ref()
                        .map_or(true, |p| matches!(p, Place::Taken(_)))
                    {
                        if let Entry::Welcome(welcome) = settings.entry {
                            // The welcome service has us on its list: take
                            // us off again before trying anything else.
                            let _ = client.course(welcome, &CourseRequest::Leave { hash: id });
                        }
                    }
                    match place {
                        Ok(Place::Free(owners)) => owners,
                        Ok(Place::Taken(by)) if !probing => {
                            return Err(RingError::Failed(format!("ring id {id} is taken by {by}")))
                        }
                        Ok(Place::Taken(_)) => {
                            id = space.add(id, 1);
                            continue;
                        }
                        // A member the welcome service still lists, but
                        // gone (a crash): ask again, for another one.
                        Err(RingError::Unreachable { addr: gone, .. }) => {
                            let Entry::Welcome(welcome) = settings.entry else {
                                return Err(RingError::Failed(format!(
                                    "the member {gone} to join through does not answer"
                                )));
                            };
                            warn!("ring: {gone} does not answer; taking it off the welcome service's list");
                            forget_at_welcome(&client, welcome, gone, addr.port());
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let me = Member { id, addr };
            info!(
                "ring: joined as {me}, successor {}",
                successors
                    .first()
                    .map_or_else(|| "me (first peer)".to_string(), ToString::to_string)
            );
            return Ok(RingNode {
                routing: RwLock::new(Routing::new(&space, me, successors)),
                records: Mutex::new(RecordStore::new()),
                client,
                welcome: match settings.entry {
                    Entry::Welcome(welcome) => Some(welcome),
                    Entry::Member(_) => None,
                },
                settings,
                rounds: Mutex::new(None),
                stopping: AtomicBool::new(false),
            });
        }
        Err(RingError::Failed(format!(
            "{ID_ATTEMPTS} ids in a row were taken; set ring_id"
        )))
    }

    /// Starts the periodic rounds on a thread of their own.
    pub fn start_rounds(self: &Arc<Self>) -> Result<(), RingError> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let node = Arc::clone(self);
        let handle = thread::Builder::new()
            .name("ring-rounds".into())
            .spawn(move || node.run_rounds(&stop_rx))
            .map_err(|e| RingError::Failed(format!("cannot start a thread: {e}")))?;
        *self.rounds.lock() = Some((stop_tx, handle));
        Ok(())
    }

    /// This peer as a ring member.
    pub fn me(&self) -> Member {
        self.routing.read().me
    }

    /// The ring's id space.
    pub fn space(&self) -> &RingSpace {
        &self.settings.space
    }

    /// What this peer knows of the ring now.
    pub fn view(&self) -> NodeView {
        self.routing.read().view(self.settings.space.size())
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// How many records this peer keeps for the ring.
    pub fn record_count(&self) -> usize {
        self.records.lock().len()
    }

    // -----------------------------------------------------------------
    // Answers to other peers

    /// Answers a ring request from another peer.
    pub fn answer(&self, request: &RingRequest) -> Vec<RingReply> {
        let space = &self.settings.space;
        if let Some(stray) = members_of(request)
            .into_iter()
            .find(|m| !space.contains(m.id))
        {
            return vec![RingReply::Common(Reply::error(
                ErrorCode::BadField,
                format!(
                    "{stray}: the id is outside this ring (0 to {})",
                    space.size() - 1
                ),
            ))];
        }
        match request {
            RingRequest::Look { id, fingers } => {
                match self.routing.read().step(space, *id, *fingers) {
                    LookStep::Owner(owners) => vec![RingReply::Owner(owners)],
                    LookStep::Next(next) => vec![RingReply::Next(next)],
                }
            }
            RingRequest::Info => {
                let view = self.view();
                let mut lines = vec![
                    RingReply::Node {
                        me: view.me,
                        size: view.size,
                    },
                    RingReply::Pred(view.predecessor),
                ];
                lines.extend(view.successors.into_iter().map(RingReply::Succ));
                lines.extend(
                    view.fingers
                        .into_iter()
                        .map(|(k, node)| RingReply::Finger { k, node }),
                );
                lines.push(RingReply::Common(Reply::End));
                lines
            }
            RingRequest::Notify(candidate) => {
                let mut routing = self.routing.write();
                if routing.notified(space, *candidate) {
                    info!(
                        "ring: predecessor {}, successor {}",
                        candidate,
                        routing.successor()
                    );
                }
                vec![RingReply::Common(Reply::ok(""))]
            }
            RingRequest::Leave {
                leaving,
                predecessor,
                successor,
            } => {
                info!("ring: {leaving} leaves");
                self.routing
                    .write()
                    .left(*leaving, *predecessor, *successor);
                self.client.forget(leaving.addr);
                vec![RingReply::Common(Reply::ok(""))]
            }
            RingRequest::Store { ttl, record } => {
                let ttl = Duration::from_secs(u64::from(*ttl));
                match self
                    .records
                    .lock()
                    .insert(record.clone(), ttl, Instant::now())
                {
                    Ok(()) => vec![RingReply::Common(Reply::ok(""))],
                    Err(e) => vec![RingReply::Common(Reply::error(
                        ErrorCode::TooManyFiles,
                        e.to_string(),
                    ))],
                }
            }
            RingRequest::Find(query) => {
                self.listing(self.records.lock().find(query, Instant::now()))
            }
            RingRequest::Names => self.listing(
                self.records
                    .lock()
                    .names(MAX_NAMES, Instant::now())
                    .into_iter()
                    .map(Record::Name)
                    .collect(),
            ),
        }
    }

    fn listing(&self, records: Vec<Record>) -> Vec<RingReply> {
        let mut lines: Vec<RingReply> = records.into_iter().map(RingReply::Record).collect();
        lines.push(RingReply::Common(Reply::End));
        lines
    }

    /// This peer's routing table in the course's form (the answer to a
    /// bare `rt?`): lines `<k>:<hash>:<ip>` for the lines it knows, then
    /// `end`. Addresses on this peer's own port are written as a bare IP,
    /// as the course tools expect.
    pub fn course_table(&self) -> Vec<CourseReply> {
        let routing = self.routing.read();
        let usual_port = routing.me.addr.port();
        let mut lines: Vec<CourseReply> = routing
            .fingers
            .iter()
            .filter_map(|f| {
                let node = f.node?;
                Some(CourseReply::Route {
                    k: f.k,
                    hash: node.id,
                    at: CourseAddr::of(node.addr, usual_port),
                })
            })
            .collect();
        lines.push(CourseReply::End);
        lines
    }

    // -----------------------------------------------------------------
    // Look-ups, records

    /// Looks `id` up from here, hop by hop: every hop and the owner.
    /// `fingers: false` routes by successors only (to compare).
    pub fn trace(&self, id: u64, fingers: bool) -> Result<Trace, RingError> {
        let mut last_error = None;
        for _ in 0..LOOKUP_ATTEMPTS {
            let (me, first) = {
                let routing = self.routing.read();
                (routing.me, routing.step(&self.settings.space, id, fingers))
            };
            match self.client.follow(id, me, first, fingers) {
                Ok(trace) => return Ok(trace),
                Err(RingError::Unreachable { addr, error }) => {
                    // Route around it; the rounds will notice it too.
                    debug!("ring: look-up of {id}: {addr} unreachable ({error})");
                    self.routing.write().drop_member(addr);
                    self.client.forget(addr);
                    last_error = Some(RingError::Unreachable { addr, error });
                    if self.is_stopping() {
                        break;
                    }
                    thread::sleep(self.settings.stabilize.min(Duration::from_millis(500)));
                }
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or_else(|| RingError::Failed(format!("no route to {id}"))))
    }

    /// Where the records placed by `text` live: the owner of its id, then
    /// the peers after it, as many as the replicas.
    fn record_homes(&self, text: &str) -> Result<Vec<Member>, RingError> {
        let id = self.settings.space.id_of(text);
        let mut homes = self.trace(id, true)?.owners;
        homes.truncate(self.settings.replicas.max(1));
        Ok(homes)
    }

    /// Stores `records` in the ring for `ttl`: each at the owner of its
    /// key (or name) and the replicas after it. Returns how many homes
    /// could not be reached.
    pub fn publish(&self, records: &[Record], ttl: Duration) -> usize {
        let me = self.me();
        let mut failures = 0;
        for record in records {
            if self.is_stopping() {
                break;
            }
            let homes = match self.record_homes(&record.placement()) {
                Ok(homes) => homes,
                Err(e) => {
                    debug!("ring: cannot place {record}: {e}");
                    failures += 1;
                    continue;
                }
            };
            for home in homes {
                let stored = if home == me {
                    self.records
                        .lock()
                        .insert(record.clone(), ttl, Instant::now())
                        .map_err(|e| RingError::Failed(e.to_string()))
                } else {
                    self.client.store(home.addr, ttl, record)
                };
                if let Err(e) = stored {
                    debug!("ring: cannot store {record} at {home}: {e}");
                    failures += 1;
                }
            }
        }
        failures
    }

    /// The records answering `query`, from the owner and its replicas
    /// (together: a peer that joined lately may not have them yet, and a
    /// crashed owner's replicas still do).
    pub fn find(&self, query: &RecordQuery) -> Result<Vec<Record>, RingError> {
        let me = self.me();
        let mut found: Vec<Record> = Vec::new();
        let mut last_error = None;
        let mut answered = false;
        for home in self.record_homes(&query.placement())? {
            let records = if home == me {
                Ok(self.records.lock().find(query, Instant::now()))
            } else {
                self.client.find(home.addr, query)
            };
            match records {
                Ok(records) => {
                    answered = true;
                    for record in records {
                        if !found.contains(&record) {
                            found.push(record);
                        }
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        match (answered, last_error) {
            (false, Some(e)) => Err(e),
            _ => Ok(found),
        }
    }

    /// The peers (other than this one) that hold the file `key`.
    pub fn holders(&self, key: FileKey) -> Result<Vec<SocketAddr>, RingError> {
        let me = self.me().addr;
        Ok(self
            .find(&RecordQuery::Holders(key))?
            .into_iter()
            .filter_map(|record| match record {
                Record::Holder { peer, .. } if peer != me => Some(peer),
                _ => None,
            })
            .collect())
    }

    /// The files named exactly `name`.
    pub fn files_named(&self, name: &FileName) -> Result<Vec<NameRecord>, RingError> {
        Ok(self
            .find(&RecordQuery::Name(name.clone()))?
            .into_iter()
            .filter_map(|record| match record {
                Record::Name(found) => Some(found),
                Record::Holder { .. } => None,
            })
            .collect())
    }

    /// Every file named in the ring, found by walking it peer by peer from
    /// here (at most `most_peers` of them).
    pub fn all_files(&self, most_peers: usize) -> Vec<NameRecord> {
        let me = self.me();
        let mut files: Vec<NameRecord> = Vec::new();
        let mut seen = HashSet::new();
        let mut current = me;
        while seen.len() < most_peers && seen.insert(current.id) {
            let (names, next) = if current == me {
                let names = self.records.lock().names(MAX_NAMES, Instant::now());
                (Ok(names), Ok(self.routing.read().successor()))
            } else {
                (
                    self.client.names(current.addr),
                    self.client.info(current.addr).and_then(|view| {
                        view.successors.first().copied().ok_or_else(|| {
                            RingError::Failed(format!("{current} lists no successor"))
                        })
                    }),
                )
            };
            match names {
                Ok(names) => {
                    for name in names {
                        if !files.contains(&name) {
                            files.push(name);
                        }
                    }
                }
                Err(e) => debug!("ring: cannot list {current}: {e}"),
            }
            match next {
                Ok(next) if next != me => current = next,
                _ => break,
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
        files
    }

    /// Makes sure the welcome service still lists this peer: a welcome
    /// service that restarted has forgotten every member, and would answer
    /// the next newcomer `yaf`, starting a second ring. If it says `ukh`
    /// for our id, join its list again (`yo`).
    pub fn renew_welcome(&self) {
        let Some(welcome) = self.welcome else {
            return;
        };
        let me = self.me();
        match self
            .client
            .course(welcome, &CourseRequest::AddressOf { hash: me.id })
        {
            Ok(line) if line.trim() == "ukh" => {
                let at = CourseAddr {
                    ip: me.addr.ip(),
                    port: Some(me.addr.port()),
                };
                match self
                    .client
                    .course(welcome, &CourseRequest::Join { hash: me.id, at })
                {
                    Ok(answer) if answer.trim() != "wrq" => {
                        info!("ring: the welcome service at {welcome} had forgotten this peer; listed again");
                    }
                    Ok(_) => warn!(
                        "ring: the welcome service at {welcome} refuses id {}",
                        me.id
                    ),
                    Err(e) => debug!("ring: welcome service: {e}"),
                }
            }
            Ok(line) => {
                if CourseAddr::parse(&line).is_some_and(|at| at.socket(me.addr.port()) != me.addr) {
                    warn!(
                        "ring: the welcome service lists {line} with this peer's id {}",
                        me.id
                    );
                }
            }
            Err(e) => debug!("ring: welcome service: {e}"),
        }
    }

    // -----------------------------------------------------------------
    // Leaving

    /// Says the peer is about to leave: work under way (rounds, look-ups
    /// retried, announcements) stops at its next step. [`RingNode::leave`]
    /// does this too; calling it first lets other threads of the peer
    /// finish sooner.
    pub fn begin_leaving(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Leaves gracefully: stops the rounds, hands every record kept here
    /// to the successor, tells both neighbours, and takes this peer off
    /// the welcome service's list.
    pub fn leave(&self) {
        self.begin_leaving();
        if let Some((stop, handle)) = self.rounds.lock().take() {
            drop(stop);
            let _ = handle.join();
        }
        let routing = self.routing.read().clone();
        let (me, succ) = (routing.me, routing.successor());
        if succ != me {
            let records = self.records.lock().all(Instant::now());
            let handed = records
                .iter()
                .filter(|(record, left)| self.client.store(succ.addr, *left, record).is_ok())
                .count();
            let told = self.client.leave(succ.addr, me, routing.predecessor, succ);
            info!(
                "ring: leaving; {handed} of {} record(s) handed to {succ}{}",
                records.len(),
                told.err()
                    .map_or_else(String::new, |e| format!(" (not told: {e})"))
            );
            if let Some(pred) = routing.predecessor.filter(|p| *p != succ && *p != me) {
                if let Err(e) = self.client.leave(pred.addr, me, routing.predecessor, succ) {
                    debug!("ring: cannot tell {pred} we leave: {e}");
                }
            }
        }
        if let Some(welcome) = self.welcome {
            if let Err(e) = self
                .client
                .course(welcome, &CourseRequest::Leave { hash: me.id })
            {
                debug!("ring: cannot tell the welcome service we leave: {e}");
            }
        }
    }

    // -----------------------------------------------------------------
    // The rounds

    fn run_rounds(&self, stop: &Receiver<()>) {
        let settings = &self.settings;
        let now = Instant::now();
        let mut next_stabilize = now;
        let mut next_check = now + settings.check_predecessor;
        let mut next_fix = now + settings.fix_fingers.min(settings.stabilize);
        let mut next_expire = now + EXPIRE_EVERY;
        let place_every = settings.stabilize * PLACE_EVERY_ROUNDS;
        let mut next_place = now + place_every;
        loop {
            let now = Instant::now();
            if now >= next_stabilize {
                self.stabilize();
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
            if now >= next_place {
                self.place_records();
                next_place = now + place_every;
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
                .min(next_expire)
                .min(next_place);
            match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// One stabilisation round (see the module's doc).
    fn stabilize(&self) {
        let space = &self.settings.space;
        let attempts = self.settings.successors + 1;
        for _ in 0..attempts {
            let (me, succ) = {
                let mut routing = self.routing.write();
                if routing.is_alone() {
                    // Someone notified us: it is our successor too.
                    match routing.predecessor {
                        Some(pred) => routing.successors = vec![pred],
                        None => return,
                    }
                }
                (routing.me, routing.successor())
            };
            let mut view = match self.client.info(succ.addr) {
                Ok(view) if fits(&view, space) => view,
                Ok(view) => {
                    warn!(
                        "ring: successor {} is not in this ring (size {}); dropping it",
                        view.me, view.size
                    );
                    self.routing.write().drop_member(succ.addr);
                    continue;
                }
                Err(e @ RingError::Unreachable { .. }) => {
                    warn!("ring: successor {succ} does not answer ({e}); dropping it");
                    self.client.forget(succ.addr);
                    self.routing.write().drop_member(succ.addr);
                    continue;
                }
                // Busy, or a bad answer: it is there; try again next round.
                Err(e) => {
                    debug!("ring: successor {succ}: {e}");
                    return;
                }
            };
            if let Some(between) = view.predecessor {
                if between != me && space.in_open(between.id, me.id, view.me.id) {
                    match self.client.info(between.addr) {
                        Ok(closer) if fits(&closer, space) => view = closer,
                        _ => {}
                    }
                }
            }
            {
                let mut routing = self.routing.write();
                let before = routing.successor();
                if before != succ {
                    // Changed while we asked (a leave, a notify): the
                    // next round starts from the new one.
                    return;
                }
                routing.adopt_successor(&view, self.settings.successors);
                if routing.successor() != before {
                    info!("ring: successor {} (was {before})", routing.successor());
                }
            }
            if let Err(e) = self.client.notify(view.me.addr, me) {
                debug!("ring: cannot notify {}: {e}", view.me);
            }
            return;
        }
    }

    /// Copies the records this peer owns to its next `replicas - 1`
    /// successors, the records it keeps as a replica to their owner, and
    /// records it keeps without being one of their homes to those homes. (A record stored while the ring was still forming
    /// may have gone to a peer that is no longer its owner.)
    fn place_records(&self) {
        let space = &self.settings.space;
        let records = self.records.lock().all(Instant::now());
        if records.is_empty() {
            return;
        }
        let mut by_place: HashMap<u64, Vec<(Record, Duration)>> = HashMap::new();
        for (record, left) in records {
            by_place
                .entry(space.id_of(&record.placement()))
                .or_default()
                .push((record, left));
        }
        let (me, predecessor, successors) = {
            let routing = self.routing.read();
            (routing.me, routing.predecessor, routing.successors.clone())
        };
        let replicas = self.settings.replicas.max(1);
        for (id, group) in by_place {
            if self.is_stopping() {
                return;
            }
            let owned = predecessor.is_some_and(|p| space.in_half_open(id, p.id, me.id));
            let homes: Vec<Member> = if owned {
                successors
                    .iter()
                    .filter(|m| **m != me)
                    .take(replicas - 1)
                    .copied()
                    .collect()
            } else {
                match self.trace(id, true) {
                    Ok(trace) => {
                        let mut homes: Vec<Member> =
                            trace.owners.into_iter().take(replicas).collect();
                        if homes.contains(&me) {
                            // A replica here: make sure the owner (perhaps
                            // new) has it too.
                            homes.truncate(1);
                        }
                        homes.retain(|home| *home != me);
                        homes
                    }
                    Err(_) => continue,
                }
            };
            for home in homes {
                for (record, left) in &group {
                    if let Err(e) = self.client.store(home.addr, *left, record) {
                        debug!("ring: cannot place {record} at {home}: {e}");
                        break;
                    }
                }
            }
        }
    }

    /// Forgets the predecessor if it does not answer.
    fn check_predecessor(&self) {
        let Some(pred) = self.routing.read().predecessor else {
            return;
        };
        if let Err(e) = self.client.ping(pred.addr) {
            warn!("ring: predecessor {pred} does not answer ({e}); forgetting it");
            self.client.forget(pred.addr);
            let mut routing = self.routing.write();
            if routing.predecessor == Some(pred) {
                routing.predecessor = None;
            }
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
                match self.trace(target, true) {
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

/// The members a request names (checked against the ring's size).
fn members_of(request: &RingRequest) -> Vec<Member> {
    match request {
        RingRequest::Notify(member) => vec![*member],
        RingRequest::Leave {
            leaving,
            predecessor,
            successor,
        } => [Some(*leaving), *predecessor, Some(*successor)]
            .into_iter()
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a peer's view fits this ring: its size, and every id in it.
fn fits(view: &NodeView, space: &RingSpace) -> bool {
    view.size == space.size()
        && view
            .predecessor
            .iter()
            .chain(&view.successors)
            .chain(view.fingers.iter().filter_map(|(_, m)| m.as_ref()))
            .all(|m| space.contains(m.id))
}

/// Where an id would go in the ring.
enum Place {
    /// Free: these are its owner-to-be (our successor) and the peers after.
    Free(Vec<Member>),
    /// A peer has this id already.
    Taken(Member),
}

/// Looks `id` up through `member`, checking that the ring has our size.
fn find_place(
    client: &RingClient,
    space: &RingSpace,
    member: SocketAddr,
    id: u64,
) -> Result<Place, RingError> {
    let view = client.info(member)?;
    if !fits(&view, space) {
        return Err(RingError::Failed(format!(
            "{} is in a ring of size {}, this peer's ring_size is {}",
            view.me,
            view.size,
            space.size()
        )));
    }
    let trace = client.trace(view.me, id, true)?;
    if trace.owner().id == id {
        Ok(Place::Taken(trace.owner()))
    } else {
        Ok(Place::Free(trace.owners))
    }
}

/// The most members read from a welcome service's list.
const MAX_WELCOME_LIST: usize = 100_000;

/// Takes the member at `gone` off the welcome service's list (the course's
/// `a+` has no owner check: anyone may say a peer left). A member written
/// without a port is on `usual_port`.
fn forget_at_welcome(client: &RingClient, welcome: SocketAddr, gone: SocketAddr, usual_port: u16) {
    let Ok(lines) = client.course_listing(welcome, &CourseRequest::List, MAX_WELCOME_LIST) else {
        return;
    };
    for line in lines {
        let Some((hash, at)) = line.split_once(':') else {
            continue;
        };
        let (Ok(hash), Some(at)) = (hash.parse::<u64>(), CourseAddr::parse(at)) else {
            continue;
        };
        if at.socket(usual_port) == gone {
            let _ = client.course(welcome, &CourseRequest::Leave { hash });
        }
    }
}

/// Whether the welcome service's entry for `id` is stale: this very
/// address (before a restart), or a peer that does not answer.
fn stale_at_welcome(client: &RingClient, welcome: SocketAddr, id: u64, me: SocketAddr) -> bool {
    let Ok(line) = client.course(welcome, &CourseRequest::AddressOf { hash: id }) else {
        return false;
    };
    match CourseAddr::parse(&line) {
        Some(at) => {
            let holder = at.socket(me.port());
            holder == me || matches!(client.info(holder), Err(RingError::Unreachable { .. }))
        }
        None => false,
    }
}

/// What a welcome service said to `yo`.
enum Welcomed {
    First,
    Through(SocketAddr),
    Taken,
}

fn welcome_join(
    client: &RingClient,
    welcome: SocketAddr,
    id: u64,
    me: SocketAddr,
) -> Result<Welcomed, RingError> {
    let at = CourseAddr {
        ip: me.ip(),
        port: Some(me.port()),
    };
    let line = client.course(welcome, &CourseRequest::Join { hash: id, at })?;
    match CourseReply::parse_join_answer(&line) {
        Some(CourseReply::First) => Ok(Welcomed::First),
        Some(CourseReply::Wrong) => Ok(Welcomed::Taken),
        // A member without a port listens on ours (the course's rule).
        Some(CourseReply::Addr(member)) => Ok(Welcomed::Through(member.socket(me.port()))),
        _ => Err(RingError::Failed(format!(
            "the welcome service at {welcome} answered {line:?} to yo"
        ))),
    }
}

fn ask_hash_service(
    client: &RingClient,
    service: SocketAddr,
    me: SocketAddr,
    space: &RingSpace,
) -> Result<u64, RingError> {
    let line = client.course(
        service,
        &CourseRequest::Hash {
            text: me.to_string(),
        },
    )?;
    match CourseReply::parse_id_answer(&line) {
        Some(CourseReply::Id(id)) if space.contains(id) => Ok(id),
        Some(CourseReply::AllTaken) => Err(RingError::Failed(format!(
            "the hash service at {service} has no id left (aht)"
        ))),
        _ => Err(RingError::Failed(format!(
            "the hash service at {service} answered {line:?}, not an id of a ring of size {}",
            space.size()
        ))),
    }
}

/// The local IP address that reaches `addr`.
fn local_ip_towards(addr: SocketAddr) -> Result<std::net::IpAddr, RingError> {
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .and_then(|stream| stream.local_addr())
        .map(|local| local.ip())
        .map_err(|error| RingError::Unreachable { addr, error })
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
            r.step(&space, 5, true),
            LookStep::Owner(vec![member(10), member(30), member(60)])
        );
        assert_eq!(
            r.step(&space, 25, true),
            LookStep::Owner(vec![member(30), member(60)])
        );
        assert_eq!(
            r.step(&space, 70, true),
            LookStep::Next(member(60)),
            "the farthest known"
        );
        assert_eq!(
            r.step(&space, 70, false),
            LookStep::Next(member(30)),
            "successors only"
        );
        r.fingers[5].node = Some(member(70));
        assert_eq!(
            r.step(&space, 80, true),
            LookStep::Next(member(70)),
            "a finger beats the successors"
        );
    }

    #[test]
    fn a_ring_of_one_owns_everything_and_takes_its_first_joiner() {
        let space = RingSpace::new(100).unwrap();
        let mut r = routing(&space, 10, &[], None);
        assert_eq!(r.step(&space, 77, true), LookStep::Owner(vec![member(10)]));
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
}
