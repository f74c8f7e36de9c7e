//! This peer's place in the ring: its id, predecessor, successor list and
//! routing table; the answers it gives other ring peers; look-ups and the
//! records it stores in the ring; and leaving.
//!
//! - [`routing`]: what this peer knows of the ring, and the decisions
//!   made from it alone (one step of a look-up, a notify, a leave); pure;
//! - [`join`]: getting in: an id, a member to join through, a successor;
//! - [`rounds`]: the periodic rounds that keep it all right as peers come
//!   and go, and heal the ring after a crash;
//! - [`placement`]: copying the records kept here to where they belong,
//!   on a thread of its own.
//!
//! No lock is held while talking to another peer.

mod join;
mod placement;
mod rounds;
mod routing;

use placement::Placement;
use routing::Routing;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, info, warn};
use parking_lot::{Mutex, RwLock};

use crate::logging::network_warning;
use crate::protocol::course::{CourseAddr, CourseReply, CourseRequest};
use crate::protocol::ring::{Member, Record, RecordQuery, RingReply, RingRequest, Via};
use crate::protocol::{ErrorCode, FileKey, FileMeta, FileName, Reply};

use crate::ring::client::{
    decode_ok, decode_records, names_of, refused_or, store_request, Bounds, LookStep, NodeView,
    RingClient, RingError, Trace, LOOKUP_DEADLINE,
};
use crate::ring::records::RecordStore;
use crate::ring::space::RingSpace;

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

/// The most name records one `NAMS` answer gives.
const MAX_NAMES: usize = 1000;
/// How many times a look-up is tried again after a peer on its way did
/// not answer (the ring routes around it once the rounds notice); all
/// tries together within [`LOOKUP_DEADLINE`].
const LOOKUP_ATTEMPTS: usize = 3;
/// The longest a walk of the whole ring ([`RingNode::all_files`]) may
/// take: members that answer slowly cannot hold a search (or a page
/// request, or the peer's shutdown) longer.
pub const WALK_DEADLINE: Duration = Duration::from_secs(30);

/// This peer as a ring member. Made by [`RingNode::join`]; its rounds run
/// from [`RingNode::start_rounds`] until [`RingNode::leave`].
pub struct RingNode {
    settings: RingSettings,
    routing: RwLock<Routing>,
    records: Mutex<RecordStore>,
    client: RingClient,
    /// The welcome service it joined through, told when it leaves.
    welcome: Option<SocketAddr>,
    rounds: Mutex<Option<Rounds>>,
    /// Members gone since placement last looked (see
    /// [`RingNode::member_gone`]).
    homes_gone: Mutex<HashSet<SocketAddr>>,
    /// Set when leaving: a round under way stops at its next step.
    stopping: AtomicBool,
}

/// The rounds' and the placement's threads, running.
struct Rounds {
    /// Dropped to stop them.
    stop: Sender<()>,
    rounds: JoinHandle<()>,
    /// Gives back what placement remembers, for the hand-over.
    placing: JoinHandle<Placement>,
}

impl RingNode {
    /// Starts the periodic rounds on a thread of their own, and the
    /// placement of records on another.
    pub fn start_rounds(self: &Arc<Self>) -> Result<(), RingError> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let cannot = |e| RingError::Failed(format!("cannot start a thread: {e}"));
        let rounds = thread::Builder::new().name("ring-rounds".into()).spawn({
            let (node, stopped) = (Arc::clone(self), stopped.clone());
            move || node.run_rounds(&stopped)
        });
        let rounds = rounds.map_err(cannot)?;
        let placing = thread::Builder::new().name("ring-place".into()).spawn({
            let node = Arc::clone(self);
            move || node.run_placement(&stopped)
        });
        match placing {
            Ok(placing) => {
                *self.rounds.lock() = Some(Rounds {
                    stop,
                    rounds,
                    placing,
                });
                Ok(())
            }
            Err(e) => {
                drop(stop);
                let _ = rounds.join();
                Err(cannot(e))
            }
        }
    }

    /// Stops the rounds and the placement, waits for their threads (a
    /// step under way ends first: a store or a look-up has a deadline),
    /// and gives back what placement remembers.
    fn stop_rounds(&self) -> Option<Placement> {
        let running = self.rounds.lock().take();
        let Rounds {
            stop,
            rounds,
            placing,
        } = running?;
        drop(stop);
        let _ = rounds.join();
        placing.join().ok()
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

    // -----------------------------------------------------------------
    // Answers to other peers

    /// Answers a ring request from another peer, whose connection comes
    /// from `from`.
    pub fn answer(&self, request: &RingRequest, from: IpAddr) -> Vec<RingReply> {
        let space = &self.settings.space;
        let outside = |what: &dyn std::fmt::Display| {
            vec![RingReply::Common(Reply::error(
                ErrorCode::BadField,
                format!(
                    "{what}: the id is outside this ring (0 to {})",
                    space.size() - 1
                ),
            ))]
        };
        if let Some(stray) = members_of(request)
            .into_iter()
            .find(|m| !space.contains(m.id))
        {
            return outside(&stray);
        }
        match request {
            RingRequest::Look { id, .. } if !space.contains(*id) => outside(id),
            RingRequest::Look { id, via } => match self.routing.read().step(space, *id, *via) {
                LookStep::Owner(owners) => vec![RingReply::Owner(owners)],
                LookStep::Next(next) => vec![RingReply::Next(next)],
            },
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
                // A `NTFY` may name any address: a candidate that would
                // change this peer's links is first asked who it is (out
                // of the lock), or anyone could make this peer its own
                // predecessor's successor, owner of almost every id.
                let noticed = self.routing.read().takes_notice_of(space, *candidate);
                if noticed && !self.answers_as(*candidate) {
                    network_warning(format_args!(
                        "ring: {from} notifies for {candidate}, which does not answer as it; refused"
                    ));
                    return vec![RingReply::Common(Reply::error(
                        ErrorCode::NotYours,
                        format!("{candidate} does not answer RNFO as that member"),
                    ))];
                }
                let mut routing = self.routing.write();
                // Changed meanwhile (the predecessor dropped, say), so that
                // the candidate now would count though it was not asked:
                // not taken (it notifies again at its next round).
                if !noticed && routing.takes_notice_of(space, *candidate) {
                    return vec![RingReply::Common(Reply::ok(""))];
                }
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
                // A member connects from its own address (`RingClient`
                // binds there), so only it can say it leaves: anyone else
                // could cut the ring's links with one line.
                if from.to_canonical() != leaving.addr.ip().to_canonical() {
                    network_warning(format_args!("ring: {from} says {leaving} leaves; refused"));
                    return vec![RingReply::Common(Reply::error(
                        ErrorCode::NotYours,
                        format!("only {leaving} itself may say it leaves, not {from}"),
                    ))];
                }
                info!("ring: {leaving} leaves");
                // Its predecessor becomes ours only if it answers as that
                // member (a `LEAV` names any address); else none, until
                // the real one notifies us at its next round.
                let ours = self.routing.read().predecessor == Some(*leaving);
                let predecessor = predecessor.filter(|p| !ours || self.answers_as(*p));
                self.routing.write().left(*leaving, predecessor, *successor);
                self.member_gone(leaving.addr);
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

    /// Takes the member at `addr` out of the routing: it is gone (see
    /// [`RingNode::member_gone`]).
    fn drop_member(&self, addr: SocketAddr) {
        self.routing.write().drop_member(addr);
        self.member_gone(addr);
    }

    /// The member at `addr` is gone: the connections kept to it are
    /// closed, and placement forgets what it sent there (a peer started
    /// again there comes back without the records it was sent).
    fn member_gone(&self, addr: SocketAddr) {
        self.client.forget(addr);
        let mut gone = self.homes_gone.lock();
        if gone.len() < placement::MOST_HOMES_GONE {
            gone.insert(addr);
        }
    }

    /// Whether `member` answers `RNFO` at its address as that very member.
    fn answers_as(&self, member: Member) -> bool {
        matches!(self.client.info(member.addr), Ok(view) if view.me == member)
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
    pub fn trace(&self, id: u64, via: Via) -> Result<Trace, RingError> {
        let mut last_error = None;
        let bounds = Bounds {
            deadline: Instant::now() + LOOKUP_DEADLINE,
            stopping: Some(&self.stopping),
        };
        for _ in 0..LOOKUP_ATTEMPTS {
            let (me, first) = {
                let routing = self.routing.read();
                (routing.me, routing.step(&self.settings.space, id, via))
            };
            match self
                .client
                .follow(&self.settings.space, id, me, first, via, bounds)
            {
                Ok(trace) => return Ok(trace),
                Err(e) if e.is_not_a_member() => {
                    // Route around it; the rounds will notice it too.
                    debug!("ring: look-up of {id}: {e}");
                    if let Some(addr) = e.addr().filter(|addr| *addr != me.addr) {
                        self.drop_member(addr);
                    }
                    last_error = Some(e);
                    if self.is_stopping() || Instant::now() >= bounds.deadline {
                        break;
                    }
                    thread::sleep(self.settings.stabilize.min(Duration::from_millis(500)));
                }
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or_else(|| RingError::Failed(format!("no route to {id}"))))
    }

    /// Sends `request` to `home`, or answers it here when `home` is this
    /// peer: the same answer, checked the same way, either way.
    fn ask(&self, home: Member, request: &RingRequest) -> Result<Vec<RingReply>, RingError> {
        if home == self.me() {
            refused_or(home.addr, self.answer(request, home.addr.ip()))
        } else {
            self.client.call(home.addr, request)
        }
    }

    /// Where the records placed by `text` live: the owner of its id, then
    /// the peers after it, as many as the replicas.
    fn record_homes(&self, text: &str) -> Result<Vec<Member>, RingError> {
        let id = self.settings.space.id_of(text);
        let mut homes = self.trace(id, Via::Fingers)?.owners;
        homes.truncate(self.settings.replicas.max(1));
        Ok(homes)
    }

    /// Stores `records` in the ring for `ttl`: each at the owner of its
    /// key (or name) and the replicas after it. Returns how many homes
    /// could not be reached.
    pub fn publish(&self, records: &[Record], ttl: Duration) -> usize {
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
                let stored = self
                    .ask(home, &store_request(ttl, record))
                    .and_then(|lines| decode_ok(home.addr, lines));
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
        let mut found: Vec<Record> = Vec::new();
        let mut last_error = None;
        let mut answered = false;
        for home in self.record_homes(&query.placement())? {
            let records = self
                .ask(home, &RingRequest::Find(query.clone()))
                .and_then(|lines| decode_records(home.addr, lines));
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

    /// The peers (other than this one) that hold the file `key`, in a
    /// random order: anyone may announce himself a holder, and those who
    /// ask only a few of them (a name look-up) must not always get the
    /// same few.
    pub fn holders(&self, key: FileKey) -> Result<Vec<SocketAddr>, RingError> {
        let me = self.me().addr;
        let mut holders: Vec<SocketAddr> = self
            .find(&RecordQuery::Holders(key))?
            .into_iter()
            .filter_map(|record| match record {
                Record::Holder { peer, .. } if peer != me => Some(peer),
                _ => None,
            })
            .collect();
        fastrand::shuffle(&mut holders);
        Ok(holders)
    }

    /// The files named exactly `name`.
    pub fn files_named(&self, name: &FileName) -> Result<Vec<FileMeta>, RingError> {
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
    /// here: at most `most_peers` of them, and never past a member already
    /// met (by id or by address: a member naming a new successor at each
    /// step, all at its own address, is walked once). The walk goes on to
    /// the next member only within [`WALK_DEADLINE`], and not once this
    /// peer begins leaving; a request under way then still takes its own
    /// time (a connection and an exchange, retried once on a fresh
    /// connection: about 8 s at worst).
    pub fn all_files(&self, most_peers: usize) -> Vec<FileMeta> {
        let deadline = Instant::now() + WALK_DEADLINE;
        let me = self.me();
        // By name, then key: each file once, in the order listed.
        let mut files: std::collections::BTreeMap<(FileName, FileKey), FileMeta> =
            std::collections::BTreeMap::new();
        let mut seen_ids = HashSet::new();
        let mut seen_addrs = HashSet::new();
        let mut current = me;
        // The rest of the last successor list read: where the walk goes
        // on when the member it went to is gone (as the ring heals).
        let mut others: std::collections::VecDeque<Member> = std::collections::VecDeque::new();
        while seen_ids.len() < most_peers
            && seen_ids.insert(current.id)
            && seen_addrs.insert(current.addr)
            && !self.is_stopping()
        {
            if Instant::now() >= deadline {
                info!(
                    "ring: the walk stopped after {} peers, at its {} s deadline",
                    seen_ids.len() - 1,
                    WALK_DEADLINE.as_secs()
                );
                break;
            }
            let names = self
                .ask(current, &RingRequest::Names)
                .and_then(|lines| decode_records(current.addr, lines))
                .map(names_of);
            let out_of_time = self.is_stopping() || Instant::now() >= deadline;
            let successors = if out_of_time {
                Err(RingError::Failed("out of time".into()))
            } else if current == me {
                Ok(self.routing.read().successors.clone())
            } else {
                self.client.info(current.addr).map(|view| view.successors)
            };
            let gone = names.as_ref().is_err_and(RingError::is_not_a_member)
                && successors.as_ref().is_err_and(RingError::is_not_a_member);
            match names {
                Ok(names) => {
                    for name in names {
                        files.entry((name.name.clone(), name.key)).or_insert(name);
                    }
                }
                Err(e) => debug!("ring: cannot list {current}: {e}"),
            }
            let next = match successors {
                Ok(list) => {
                    others = list.into_iter().collect();
                    others.pop_front()
                }
                // A member gone: the next one its predecessor listed.
                Err(_) if gone && !out_of_time => others.pop_front(),
                Err(_) => None,
            };
            match next {
                Some(next) if next != me => current = next,
                _ => break,
            }
        }
        files.into_values().collect()
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

    /// Leaves gracefully: stops the rounds, hands the records kept here
    /// to the successor (those it has not been sent already), tells both
    /// neighbours, and takes this peer off the welcome service's list.
    pub fn leave(&self) {
        self.begin_leaving();
        let placement = self.stop_rounds();
        let mut placement = placement.unwrap_or_else(|| Placement::new(self.settings.replicas));
        let routing = self.routing.read().clone();
        let me = routing.me;
        if routing.successor() != me {
            let handover = self.hand_over(&routing.successors, &mut placement);
            let succ = handover.to;
            let told = self.client.leave(succ.addr, me, routing.predecessor, succ);
            info!(
                "ring: leaving; {} of {} record(s) handed to {succ} ({} there already){}",
                handover.sent + handover.there_already,
                handover.kept,
                handover.there_already,
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn member_at(id: u64, addr: SocketAddr) -> Member {
        Member { id, addr }
    }

    /// A node in a ring of 1000 ids, not serving, with no rounds running.
    pub(crate) fn test_node(
        me: Member,
        successors: Vec<Member>,
        predecessor: Option<Member>,
    ) -> RingNode {
        let space = RingSpace::new(1000).expect("a ring size");
        let mut routing = Routing::new(&space, me, successors);
        routing.predecessor = predecessor;
        RingNode {
            settings: RingSettings {
                space,
                id: IdChoice::Fixed(me.id),
                entry: Entry::Member(me.addr),
                successors: 4,
                replicas: 2,
                stabilize: Duration::from_millis(200),
                fix_fingers: Duration::from_millis(500),
                check_predecessor: Duration::from_millis(500),
            },
            routing: RwLock::new(routing),
            records: Mutex::new(RecordStore::new()),
            client: RingClient::new(),
            welcome: None,
            rounds: Mutex::new(None),
            homes_gone: Mutex::new(HashSet::new()),
            stopping: AtomicBool::new(false),
        }
    }

    #[test]
    fn a_look_up_of_an_id_outside_the_ring_is_refused_as_a_member_is() {
        let me = member_at(50, "127.0.0.1:9".parse().expect("an address"));
        let node = test_node(me, vec![me], None);
        let from = "127.0.0.1".parse().expect("an address");
        let said = |request: RingRequest| {
            node.answer(&request, from)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            said(RingRequest::Look {
                id: 1000,
                via: Via::Fingers
            }),
            ["ERRR 202 1000: the id is outside this ring (0 to 999)"]
        );
        assert!(said(RingRequest::Look {
            id: 999,
            via: Via::Fingers
        })[0]
            .starts_with("OWNR "));
    }

    /// A fake member that answers `RNFO` as `id` at its own address.
    fn answering_as(id: u64) -> crate::ring::fake::Fake {
        let here: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let fake = {
            let here = Arc::clone(&here);
            crate::ring::fake::Fake::start(move |_| {
                let addr = here.lock().expect("set before it is asked");
                vec![
                    format!("NODE {id}@{addr} 1000"),
                    "PRED -".into(),
                    "END".into(),
                ]
            })
        };
        *here.lock() = Some(fake.addr);
        fake
    }

    #[test]
    fn a_notify_or_leave_naming_a_member_that_does_not_answer_as_it_changes_nothing() {
        // Our predecessor is 40. A made-up member 49 (just before us:
        // with it we would own the ring but for one id) is not one.
        let me = member_at(50, "127.0.0.1:9".parse().expect("an address"));
        let real = answering_as(40);
        let pred = member_at(40, real.addr);
        let succ = member_at(60, "127.0.0.1:10".parse().expect("an address"));
        let node = test_node(me, vec![succ], Some(pred));
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free address");
        let made_up = member_at(49, nobody);
        let from = "127.0.0.1".parse().expect("an address");
        let said = node.answer(&RingRequest::Notify(made_up), from);
        assert!(said[0].to_string().starts_with("ERRR 401 "), "{}", said[0]);
        assert_eq!(node.view().predecessor, Some(pred));
        // A member that does answer as itself is taken.
        let closer = answering_as(45);
        let real_closer = member_at(45, closer.addr);
        let said = node.answer(&RingRequest::Notify(real_closer), from);
        assert_eq!(said[0].to_string(), "OK");
        assert_eq!(node.view().predecessor, Some(real_closer));
        // It leaves, naming the made-up member as its predecessor: ours
        // becomes none (the real one notifies us at its next round).
        let leave = RingRequest::Leave {
            leaving: real_closer,
            predecessor: Some(made_up),
            successor: me,
        };
        assert_eq!(node.answer(&leave, from)[0].to_string(), "OK");
        assert_eq!(node.view().predecessor, None);
        // Named as a member that answers, it is taken.
        assert_eq!(
            node.answer(&RingRequest::Notify(real_closer), from)[0].to_string(),
            "OK"
        );
        let leave = RingRequest::Leave {
            leaving: real_closer,
            predecessor: Some(pred),
            successor: me,
        };
        assert_eq!(node.answer(&leave, from)[0].to_string(), "OK");
        assert_eq!(node.view().predecessor, Some(pred));
    }

    #[test]
    fn a_look_up_stops_when_the_peer_leaves() {
        let chain = crate::ring::fake::slow_chain(100, 60, Duration::from_millis(300));
        let me = member_at(50, "127.0.0.1:9".parse().expect("an address"));
        let node = Arc::new(test_node(me, vec![member_at(100, chain[0].addr)], None));
        let looking = Arc::clone(&node);
        let begun = Instant::now();
        let lookup = thread::Builder::new()
            .name("test-lookup".into())
            .spawn(move || looking.trace(900, Via::Fingers))
            .expect("spawn");
        thread::sleep(Duration::from_millis(700));
        node.begin_leaving();
        let result = lookup.join().expect("the look-up thread");
        let took = begun.elapsed();
        match result {
            Err(RingError::Failed(text)) => assert!(text.contains("leaving"), "{text}"),
            other => panic!("expected a stopped look-up, got {other:?}"),
        }
        // 60 hops of 0.3 s would take 18 s (15 s with the deadline).
        assert!(took < Duration::from_secs(8), "took {took:?}");
    }

    #[test]
    fn a_walk_of_the_ring_goes_past_a_member_gone() {
        // 50 -> 100 (gone) -> 200, which names a file and closes the ring.
        let me = member_at(50, "127.0.0.1:9".parse().expect("an address"));
        let gone = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free address");
        let key = crate::protocol::FileKey([7; 32]);
        let named = Arc::new(Mutex::new(None::<SocketAddr>));
        let fake = {
            let named = Arc::clone(&named);
            crate::ring::fake::Fake::start(move |line| {
                let addr = named.lock().expect("set before the walk");
                match line {
                    "NAMS" => vec![format!("NAME song.mp3 {key} 5 16384 audio"), "END".into()],
                    _ => vec![
                        format!("NODE 200@{addr} 1000"),
                        format!("SUCC {me}"),
                        "END".into(),
                    ],
                }
            })
        };
        *named.lock() = Some(fake.addr);
        let node = test_node(
            me,
            vec![member_at(100, gone), member_at(200, fake.addr)],
            None,
        );
        let files = node.all_files(256);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["song.mp3"]);
    }

    #[test]
    fn a_walk_of_the_ring_meets_each_address_once() {
        use std::sync::atomic::AtomicUsize;
        // One member that names a new successor, at its own address, each
        // time it is asked: walked naively, it is 255 members in a row.
        let asked = Arc::new(AtomicUsize::new(0));
        let next_id = Arc::new(std::sync::atomic::AtomicU64::new(100));
        let here: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let fake = {
            let (asked, here) = (Arc::clone(&asked), Arc::clone(&here));
            crate::ring::fake::Fake::start(move |line| {
                asked.fetch_add(1, Ordering::SeqCst);
                let addr = here.lock().expect("set before the walk");
                match line {
                    "RNFO" => {
                        let id = next_id.fetch_add(1, Ordering::SeqCst);
                        vec![
                            format!("NODE {id}@{addr} 1000"),
                            format!("SUCC {}@{addr}", id + 1),
                            "END".into(),
                        ]
                    }
                    _ => vec!["END".into()],
                }
            })
        };
        *here.lock() = Some(fake.addr);
        let me = member_at(50, "127.0.0.1:9".parse().expect("an address"));
        let node = test_node(me, vec![member_at(100, fake.addr)], None);
        assert!(node.all_files(256).is_empty());
        assert_eq!(asked.load(Ordering::SeqCst), 2, "one NAMS and one RNFO");

        // A peer that begins leaving walks no more.
        node.begin_leaving();
        assert!(node.all_files(256).is_empty());
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_the_leaving_member_itself_may_say_it_leaves() {
        let addr = |text: &str| text.parse::<SocketAddr>().expect("an address");
        let me = member_at(100, addr("10.0.0.1:7000"));
        let succ = member_at(200, addr("10.0.0.2:7000"));
        let after = member_at(300, addr("10.0.0.3:7000"));
        let node = test_node(me, vec![succ, after], None);
        let leave = RingRequest::Leave {
            leaving: succ,
            predecessor: Some(me),
            successor: member_at(900, addr("10.0.0.66:7000")),
        };
        let refused = node.answer(&leave, addr("10.0.0.66:1").ip());
        assert!(
            matches!(
                &refused[..],
                [RingReply::Common(Reply::Error {
                    code: ErrorCode::NotYours,
                    ..
                })]
            ),
            "{refused:?}"
        );
        assert_eq!(node.view().successors, vec![succ, after]);
        // From its own address (as an IPv4-mapped IPv6 one, as a
        // dual-stack listener sees it), it is taken.
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().expect("an address");
        let taken = node.answer(&leave, mapped);
        assert!(
            matches!(&taken[..], [RingReply::Common(Reply::Ok(_))]),
            "{taken:?}"
        );
        assert_eq!(node.view().successors[0].id, 900);
    }
}
