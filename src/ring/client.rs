//! This peer's side of the ring's requests: one request to another ring
//! peer and its checked answer, and whole look-ups hop by hop.
//!
//! Look-ups are iterative: the asker sends `LOOK <id>` to one peer, which
//! answers either with the owner (`OWNR`) or with a closer peer to ask next
//! (`NEXT`). So the asker sees every hop, which is what `route` prints.
//! Every member named in an answer is checked against the ring's size: an
//! id outside it is misbehaviour, and ends the look-up; so is a `NEXT`
//! that is not strictly between the peer that said it and the target. A
//! whole look-up has [`LOOKUP_DEADLINE`], and stops when its peer leaves.
//!
//! Connections are kept for reuse (a few per peer), because the periodic
//! rounds talk to the same neighbours again and again; a kept connection
//! that the other side has closed meanwhile is replaced once, silently.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::peer::link::{LinkError, PeerLink};
use crate::protocol::course::{CourseAddr, CourseReply, CourseRequest};
use crate::protocol::ring::{Member, Record, RecordQuery, RingReply, RingRequest, Via};
use crate::protocol::{ErrorCode, FileMeta, Reply};
use crate::ring::space::RingSpace;

/// How long to wait for a connection to a ring peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole request may take.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(3);
/// The most lines of one listing answer.
pub const MAX_LISTING: usize = 1000;
/// The most bytes of one listing answer, all lines together (a record's
/// line takes a few hundred; a line may take 64 KiB, and a thousand of
/// those would be 64 MiB).
const MAX_LISTING_BYTES: usize = 1024 * 1024;
/// The longest line of a course listing (`yo:<id>:[<IPv6>]:<port>` takes
/// under 80 bytes), so that a welcome list of [`MAX_WELCOME_LIST`] lines
/// holds at most 25 MB.
const MAX_COURSE_LINE: usize = 256;
/// The most hops of one look-up (a ring walked peer by peer without
/// fingers may need one per peer).
pub const MAX_HOPS: usize = 1024;
/// The most members read from a welcome service's list (`li?`).
const MAX_WELCOME_LIST: usize = 100_000;
/// How long a whole look-up may take, all hops (and a node's retries)
/// together: no new hop starts after it, so a look-up ends at most one
/// request ([`CONNECT_TIMEOUT`] + [`REQUEST_DEADLINE`]) later. A peer that
/// answers slowly, one hop at a time, cannot hold a look-up (and the
/// rounds that wait for it) longer.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(15);
/// Connections kept per peer, and peers with kept connections.
const KEPT_PER_PEER: usize = 2;
const KEPT_PEERS: usize = 64;

/// Why a ring request failed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The peer could not be reached, or broke off.
    #[error("{addr} unreachable: {error}")]
    Unreachable { addr: SocketAddr, error: io::Error },
    /// The peer refused with an `ERRR` line.
    #[error("{addr} refused: {text} (ERRR {code})")]
    Refused {
        addr: SocketAddr,
        code: ErrorCode,
        text: String,
    },
    /// The peer answered something that is not the protocol.
    #[error("{addr} misbehaved: {text}")]
    Misbehaved { addr: SocketAddr, text: String },
    /// The ring could not do what was asked (no route, id taken, ...).
    #[error("{0}")]
    Failed(String),
}

impl RingError {
    fn from_link(addr: SocketAddr, error: LinkError) -> RingError {
        match error {
            LinkError::Io(error) => RingError::Unreachable { addr, error },
            LinkError::Refused { code, text } => RingError::Refused { addr, code, text },
            LinkError::Misbehaved(text) => RingError::Misbehaved { addr, text },
        }
    }

    fn misbehaved(addr: SocketAddr, text: impl Into<String>) -> RingError {
        RingError::Misbehaved {
            addr,
            text: text.into(),
        }
    }

    /// The peer that gave this error, if one did.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            RingError::Unreachable { addr, .. }
            | RingError::Refused { addr, .. }
            | RingError::Misbehaved { addr, .. } => Some(*addr),
            RingError::Failed(_) => None,
        }
    }

    /// Whether the peer that gave this error is no member to route
    /// through: it cannot be reached, or something else answers at its
    /// address now (a peer outside any ring refuses ring verbs as unknown,
    /// `ERRR 200`; another program answers what is not the protocol). A
    /// member at its connection cap (`ERRR 500`), or refusing one request,
    /// is still a member.
    pub fn is_not_a_member(&self) -> bool {
        match self {
            RingError::Unreachable { .. } | RingError::Misbehaved { .. } => true,
            RingError::Refused { code, .. } => *code == ErrorCode::UnknownVerb,
            RingError::Failed(_) => false,
        }
    }
}

/// One step of a look-up, as a peer answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookStep {
    /// The owner, then its successors.
    Owner(Vec<Member>),
    /// Ask this peer next.
    Next(Member),
}

/// One hop of a look-up: who was asked, and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub asked: Member,
    pub answer: LookStep,
}

/// A whole look-up: every hop, and the owner with its successors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub id: u64,
    pub hops: Vec<Hop>,
    pub owners: Vec<Member>,
}

impl Trace {
    /// The peer that owns the id.
    pub fn owner(&self) -> Member {
        self.owners[0]
    }

    /// Whether a peer has exactly this id. When none does, a message for
    /// that id is answered as such: the course's rule, "the target lies
    /// between a peer and its successor, and is neither".
    pub fn peer_exists(&self) -> bool {
        self.owner().id == self.id
    }
}

impl std::fmt::Display for Trace {
    /// The route as `route <id>` prints it: one line per hop, then the
    /// owner.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, hop) in self.hops.iter().enumerate() {
            let said = match &hop.answer {
                LookStep::Owner(owners) => format!("the owner is {}", owners[0]),
                LookStep::Next(next) => format!("ask {next}"),
            };
            writeln!(f, "  hop {}: {} says {said}", n + 1, hop.asked)?;
        }
        write!(
            f,
            "{} owns {} ({})",
            self.owner(),
            self.id,
            crate::units::count(self.hops.len() as u64, "hop")
        )?;
        if !self.peer_exists() {
            write!(
                f,
                "; no peer has id {}: it lies before {} and is not it",
                self.id,
                self.owner().id
            )?;
        }
        Ok(())
    }
}

/// What ends a look-up early: its deadline, and a flag set when this
/// peer stops (checked before every hop).
#[derive(Debug, Clone, Copy)]
pub struct Bounds<'a> {
    pub deadline: Instant,
    pub stopping: Option<&'a AtomicBool>,
}

impl Bounds<'_> {
    /// [`LOOKUP_DEADLINE`] from now, with no stopping flag.
    pub fn from_now() -> Bounds<'static> {
        Bounds {
            deadline: Instant::now() + LOOKUP_DEADLINE,
            stopping: None,
        }
    }

    /// Why a look-up of `id` after `hops` hops must stop now, if it must.
    fn exceeded(&self, id: u64, hops: usize) -> Option<RingError> {
        if self.stopping.is_some_and(|s| s.load(Ordering::SeqCst)) {
            Some(RingError::Failed(format!(
                "the look-up of {id} was stopped after {}: this peer is leaving",
                crate::units::count(hops as u64, "hop")
            )))
        } else if Instant::now() >= self.deadline {
            Some(RingError::Failed(format!(
                "the look-up of {id} ran out of time after {} (at most {} s)",
                crate::units::count(hops as u64, "hop"),
                LOOKUP_DEADLINE.as_secs()
            )))
        } else {
            None
        }
    }
}

/// A peer's ring state, as `RNFO` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub me: Member,
    pub size: u64,
    pub predecessor: Option<Member>,
    pub successors: Vec<Member>,
    /// The routing table: each line's `k` and the peer it points at.
    pub fingers: Vec<(u64, Option<Member>)>,
}

/// Sends ring requests, keeping connections for reuse.
#[derive(Default)]
pub struct RingClient {
    kept: Mutex<HashMap<SocketAddr, Vec<PeerLink>>>,
    /// The local IP connections are made from (`None`: the system's
    /// choice). A peer uses its own, so that on one machine a class of
    /// peers on 127.0.0.2, 127.0.0.3, ... is not all seen as 127.0.0.1
    /// (and held to one address's connection cap).
    local_ip: Option<IpAddr>,
}

impl RingClient {
    /// A client with no connection yet.
    pub fn new() -> RingClient {
        RingClient::default()
    }

    /// A client whose connections come from `ip`.
    pub fn from_ip(ip: IpAddr) -> RingClient {
        RingClient {
            local_ip: Some(ip),
            ..RingClient::default()
        }
    }

    fn connect(&self, addr: SocketAddr) -> io::Result<PeerLink> {
        PeerLink::connect_from(self.local_ip, addr, CONNECT_TIMEOUT)
    }

    /// A fresh connection (never a kept one) with `line` sent on it, for
    /// one exchange under [`REQUEST_DEADLINE`].
    fn one_shot(
        &self,
        addr: SocketAddr,
        line: &impl std::fmt::Display,
    ) -> Result<PeerLink, RingError> {
        let unreachable = |error| RingError::Unreachable { addr, error };
        let mut link = self.connect(addr).map_err(unreachable)?;
        link.set_deadline(Some(REQUEST_DEADLINE));
        link.send_line(line).map_err(unreachable)?;
        Ok(link)
    }

    /// Sends `request` to `addr` and reads its whole answer: one line, or
    /// the lines of a listing up to its `END`.
    pub fn call(
        &self,
        addr: SocketAddr,
        request: &RingRequest,
    ) -> Result<Vec<RingReply>, RingError> {
        // A kept connection the other side closed while it was unused is
        // dropped for a fresh one.
        // (Checked with the lock released: a peek is a few system calls.)
        let kept = self.kept.lock().get_mut(&addr).and_then(Vec::pop);
        let kept = kept.filter(|link| !link.went_stale());
        let result = match kept {
            Some(mut link) => match exchange(&mut link, request) {
                // It may still be closed as the request goes out (an idle
                // deadline's `ERRR 303` crossing it, which the link reads
                // as the connection lost): one fresh try.
                Err(LinkError::Io(_)) => self.fresh_exchange(addr, request),
                other => other.map(|lines| (lines, link)),
            },
            None => self.fresh_exchange(addr, request),
        };
        let (lines, link) = result.map_err(|e| RingError::from_link(addr, e))?;
        self.keep(addr, link);
        let lines = lines
            .iter()
            .map(|line| {
                RingReply::parse(line)
                    .map_err(|e| RingError::misbehaved(addr, format!("{e} in {line:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        refused_or(addr, lines)
    }

    fn fresh_exchange(
        &self,
        addr: SocketAddr,
        request: &RingRequest,
    ) -> Result<(Vec<String>, PeerLink), LinkError> {
        let mut link = self.connect(addr)?;
        exchange(&mut link, request).map(|lines| (lines, link))
    }

    fn keep(&self, addr: SocketAddr, link: PeerLink) {
        let mut kept = self.kept.lock();
        if kept.len() >= KEPT_PEERS && !kept.contains_key(&addr) {
            // Forget some peer's connections (they close when dropped).
            if let Some(other) = kept.keys().next().copied() {
                kept.remove(&other);
            }
        }
        let links = kept.entry(addr).or_default();
        if links.len() < KEPT_PER_PEER {
            links.push(link);
        }
    }

    /// Closes every kept connection to `addr` (it is gone).
    pub fn forget(&self, addr: SocketAddr) {
        self.kept.lock().remove(&addr);
    }

    /// Sends a request whose answer is one `OK`.
    fn expect_ok(&self, addr: SocketAddr, request: &RingRequest) -> Result<(), RingError> {
        self.call(addr, request)
            .and_then(|lines| decode_ok(addr, lines))
    }

    /// Asks `addr` one step of the look-up of `id` in the ring `space`.
    /// Every member of the answer must be in `space`: a peer naming an id
    /// outside it misbehaves.
    pub fn look(
        &self,
        space: &RingSpace,
        addr: SocketAddr,
        id: u64,
        via: Via,
    ) -> Result<LookStep, RingError> {
        let step = match self.call(addr, &RingRequest::Look { id, via })?.pop() {
            Some(RingReply::Owner(members)) => LookStep::Owner(members),
            Some(RingReply::Next(member)) => LookStep::Next(member),
            other => {
                return Err(RingError::misbehaved(
                    addr,
                    format!("expected OWNR or NEXT, got {other:?}"),
                ))
            }
        };
        check_step(space, addr, &step)?;
        Ok(step)
    }

    /// Follows a look-up of `id` in the ring `space` from `first` (the
    /// first hop's answer, got from `asked`: checked already, by
    /// [`RingClient::look`], or this peer's own step) to its owner, within
    /// `bounds`.
    /// Each `NEXT` must name a peer strictly between the peer that said it
    /// and `id`: so every hop gets closer, and a peer that sends the
    /// look-up back or past its target misbehaves.
    pub fn follow(
        &self,
        space: &RingSpace,
        id: u64,
        asked: Member,
        first: LookStep,
        via: Via,
        bounds: Bounds<'_>,
    ) -> Result<Trace, RingError> {
        let mut hops = vec![Hop {
            asked,
            answer: first,
        }];
        loop {
            let last = &hops[hops.len() - 1];
            let next = match &last.answer {
                LookStep::Owner(owners) => {
                    return Ok(Trace {
                        id,
                        owners: owners.clone(),
                        hops,
                    })
                }
                LookStep::Next(next) => *next,
            };
            if !space.in_open(next.id, last.asked.id, id) {
                return Err(RingError::misbehaved(
                    last.asked.addr,
                    format!(
                        "NEXT {next} for {id} from {}: not between them, no closer",
                        last.asked
                    ),
                ));
            }
            if let Some(error) = bounds.exceeded(id, hops.len()) {
                return Err(error);
            }
            if hops.len() >= MAX_HOPS || hops.iter().any(|hop| hop.asked.addr == next.addr) {
                return Err(RingError::Failed(format!(
                    "the look-up of {id} goes round in circles after {} hops (the ring is still settling?)",
                    hops.len()
                )));
            }
            let answer = self.look(space, next.addr, id, via)?;
            hops.push(Hop {
                asked: next,
                answer,
            });
        }
    }

    /// A whole look-up of `id` in the ring `space`, starting at the peer
    /// `start`, within [`LOOKUP_DEADLINE`].
    pub fn trace(
        &self,
        space: &RingSpace,
        start: Member,
        id: u64,
        via: Via,
    ) -> Result<Trace, RingError> {
        let bounds = Bounds::from_now();
        let first = self.look(space, start.addr, id, via)?;
        self.follow(space, id, start, first, via, bounds)
    }

    /// The ring state of the peer at `addr`.
    pub fn info(&self, addr: SocketAddr) -> Result<NodeView, RingError> {
        let lines = self.call(addr, &RingRequest::Info)?;
        let mut view: Option<NodeView> = None;
        for line in lines {
            match (line, view.as_mut()) {
                (RingReply::Node { me, size }, None) => {
                    view = Some(NodeView {
                        me,
                        size,
                        predecessor: None,
                        successors: Vec::new(),
                        fingers: Vec::new(),
                    })
                }
                (RingReply::Pred(pred), Some(view)) => view.predecessor = pred,
                (RingReply::Succ(member), Some(view)) => view.successors.push(member),
                (RingReply::Finger { k, node }, Some(view)) => view.fingers.push((k, node)),
                (RingReply::Common(Reply::End), Some(_)) => {}
                (other, _) => {
                    return Err(RingError::misbehaved(
                        addr,
                        format!("unexpected {other} in RNFO"),
                    ))
                }
            }
        }
        view.ok_or_else(|| RingError::misbehaved(addr, "RNFO without a NODE line"))
    }

    /// Tells `addr` that `me` may be its predecessor.
    pub fn notify(&self, addr: SocketAddr, me: Member) -> Result<(), RingError> {
        self.expect_ok(addr, &RingRequest::Notify(me))
    }

    /// Tells `addr` that `leaving` leaves, with its neighbours.
    pub fn leave(
        &self,
        addr: SocketAddr,
        leaving: Member,
        predecessor: Option<Member>,
        successor: Member,
    ) -> Result<(), RingError> {
        self.expect_ok(
            addr,
            &RingRequest::Leave {
                leaving,
                predecessor,
                successor,
            },
        )
    }

    /// Asks `addr` to keep `record` for `ttl`.
    pub fn store(&self, addr: SocketAddr, ttl: Duration, record: &Record) -> Result<(), RingError> {
        self.expect_ok(addr, &store_request(ttl, record))
    }

    /// The records `addr` keeps that answer `query`.
    pub fn find(&self, addr: SocketAddr, query: &RecordQuery) -> Result<Vec<Record>, RingError> {
        self.records(addr, &RingRequest::Find(query.clone()))
    }

    fn records(&self, addr: SocketAddr, request: &RingRequest) -> Result<Vec<Record>, RingError> {
        self.call(addr, request)
            .and_then(|lines| decode_records(addr, lines))
    }

    /// Sends one line of the course's grammar to `addr` (a welcome or hash
    /// service: one request per connection) and returns the first answer
    /// line.
    pub fn course(&self, addr: SocketAddr, request: &CourseRequest) -> Result<String, RingError> {
        let mut link = self.one_shot(addr, request)?;
        link.read_text().map_err(|e| RingError::from_link(addr, e))
    }

    /// The welcome service's list (`li?`): each member's id and address as
    /// written there (an address without a port is on the port every
    /// peer of the ring uses). A line that is no member is skipped.
    pub fn welcome_list(&self, welcome: SocketAddr) -> Result<Vec<(u64, CourseAddr)>, RingError> {
        let lines = self.course_listing(welcome, &CourseRequest::List, MAX_WELCOME_LIST)?;
        Ok(lines
            .iter()
            .filter_map(|line| match CourseReply::parse_member_line(line) {
                Some(CourseReply::Member { hash, at }) => Some((hash, at)),
                _ => None,
            })
            .collect())
    }

    /// Sends a course line whose answer is a listing (`li?`, `rt?`) and
    /// reads it up to `end` (at most `most` lines).
    pub fn course_listing(
        &self,
        addr: SocketAddr,
        request: &CourseRequest,
        most: usize,
    ) -> Result<Vec<String>, RingError> {
        let mut link = self.one_shot(addr, request)?;
        let mut lines = Vec::new();
        loop {
            let line = link
                .read_text()
                .map_err(|e| RingError::from_link(addr, e))?;
            if line == "end" || line == "wrq" || line == "ukh" {
                return Ok(lines);
            }
            if line.len() > MAX_COURSE_LINE {
                return Err(RingError::misbehaved(
                    addr,
                    format!(
                        "a listing line of {} bytes (at most {MAX_COURSE_LINE})",
                        line.len()
                    ),
                ));
            }
            if lines.len() >= most {
                return Err(RingError::misbehaved(
                    addr,
                    format!("a listing of over {most} lines"),
                ));
            }
            lines.push(line);
        }
    }

    /// Whether the peer at `addr` answers at all.
    pub fn ping(&self, addr: SocketAddr) -> Result<(), RingError> {
        let mut link = self.one_shot(addr, &crate::protocol::PeerRequest::Ping)?;
        match link.read_text() {
            Ok(line) if line.starts_with("OK") => Ok(()),
            Ok(line) => Err(RingError::misbehaved(
                addr,
                format!("PING answered {line:?}"),
            )),
            Err(e) => Err(RingError::from_link(addr, e)),
        }
    }
}

/// Checks that every member `addr` named in a look-up step is in `space`
/// (and that an owner list is not empty).
fn check_step(space: &RingSpace, addr: SocketAddr, step: &LookStep) -> Result<(), RingError> {
    let members: &[Member] = match step {
        LookStep::Owner(owners) if owners.is_empty() => {
            return Err(RingError::misbehaved(addr, "OWNR with no member"))
        }
        LookStep::Owner(owners) => owners,
        LookStep::Next(next) => std::slice::from_ref(next),
    };
    match members.iter().find(|m| !space.contains(m.id)) {
        Some(stray) => Err(RingError::misbehaved(
            addr,
            format!(
                "{stray} in a look-up answer: the id is outside this ring (0 to {})",
                space.size() - 1
            ),
        )),
        None => Ok(()),
    }
}

/// The answer lines from `addr`, or its refusal when the last is `ERRR`.
pub(crate) fn refused_or(
    addr: SocketAddr,
    lines: Vec<RingReply>,
) -> Result<Vec<RingReply>, RingError> {
    match lines.last() {
        Some(RingReply::Common(Reply::Error { code, text })) => Err(RingError::Refused {
            addr,
            code: *code,
            text: text.clone(),
        }),
        _ => Ok(lines),
    }
}

/// An answer that must be one `OK`.
pub(crate) fn decode_ok(addr: SocketAddr, lines: Vec<RingReply>) -> Result<(), RingError> {
    match &lines[..] {
        [RingReply::Common(Reply::Ok(_))] => Ok(()),
        other => Err(RingError::misbehaved(
            addr,
            format!("expected OK, got {other:?}"),
        )),
    }
}

/// An answer that must be records, then `END`.
pub(crate) fn decode_records(
    addr: SocketAddr,
    lines: Vec<RingReply>,
) -> Result<Vec<Record>, RingError> {
    lines
        .into_iter()
        .filter(|line| *line != RingReply::Common(Reply::End))
        .map(|line| match line {
            RingReply::Record(record) => Ok(record),
            other => Err(RingError::misbehaved(
                addr,
                format!("expected a record, got {other}"),
            )),
        })
        .collect()
}

/// The name records among `records`.
pub(crate) fn names_of(records: Vec<Record>) -> Vec<FileMeta> {
    records
        .into_iter()
        .filter_map(|record| match record {
            Record::Name(name) => Some(name),
            Record::Holder { .. } => None,
        })
        .collect()
}

/// `STOR` of `record` for `ttl` (whole seconds, 1 to [`MAX_TTL`]).
///
/// [`MAX_TTL`]: crate::protocol::ring::MAX_TTL
pub(crate) fn store_request(ttl: Duration, record: &Record) -> RingRequest {
    let ttl = ttl
        .as_secs()
        .clamp(1, u64::from(crate::protocol::ring::MAX_TTL)) as u32;
    RingRequest::Store {
        ttl,
        record: record.clone(),
    }
}

/// Whether the answer to `request` is a listing closed by `END`.
fn is_listing(request: &RingRequest) -> bool {
    matches!(
        request,
        RingRequest::Info | RingRequest::Find(_) | RingRequest::Names
    )
}

/// Sends one request on `link` and reads the lines of its answer.
fn exchange(link: &mut PeerLink, request: &RingRequest) -> Result<Vec<String>, LinkError> {
    link.set_deadline(Some(REQUEST_DEADLINE));
    link.send_line(request)?;
    let mut lines = Vec::new();
    let mut bytes = 0;
    loop {
        let line = link.read_text()?;
        let last = !is_listing(request) || line == "END" || line.starts_with("ERRR");
        bytes += line.len();
        lines.push(line);
        if last {
            return Ok(lines);
        }
        if lines.len() > MAX_LISTING {
            return Err(LinkError::Misbehaved(format!(
                "a listing of over {MAX_LISTING} lines"
            )));
        }
        if bytes > MAX_LISTING_BYTES {
            return Err(LinkError::Misbehaved(format!(
                "a listing of over {MAX_LISTING_BYTES} bytes"
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::fake::Fake;

    fn member(id: u64, addr: SocketAddr) -> Member {
        Member { id, addr }
    }

    #[test]
    fn a_look_up_answer_naming_an_id_outside_the_ring_is_misbehaviour() {
        let space = RingSpace::new(1000).unwrap();
        let owner = Fake::start(|_| vec!["OWNR 700@127.0.0.1:9 5000@127.0.0.1:9".into()]);
        let next = Fake::start(|_| vec!["NEXT 5000@127.0.0.1:9".into()]);
        let client = RingClient::new();
        for fake in [&owner, &next] {
            match client.trace(&space, member(600, fake.addr), 650, Via::Fingers) {
                Err(RingError::Misbehaved { addr, text }) => {
                    assert_eq!(addr, fake.addr);
                    assert!(text.contains("5000"), "{text}");
                }
                other => panic!("expected misbehaviour, got {other:?}"),
            }
        }
        let honest = Fake::start(|_| vec!["OWNR 700@127.0.0.1:9".into()]);
        let trace = client
            .trace(&space, member(600, honest.addr), 650, Via::Fingers)
            .unwrap();
        assert_eq!(trace.owner().id, 700);
    }

    #[test]
    fn a_listing_too_big_in_bytes_is_misbehaviour_whatever_its_line_count() {
        // 100 lines of 20 KB: under the line cap, over the byte budget.
        let big = Fake::start(|_| vec!["x".repeat(20_000); 100]);
        let client = RingClient::new();
        match client.info(big.addr) {
            Err(RingError::Misbehaved { text, .. }) => {
                assert!(text.contains("bytes"), "{text}")
            }
            other => panic!("expected misbehaviour, got {other:?}"),
        }
        // A welcome list's lines are short.
        let long = Fake::start(|_| vec![format!("yo:1:127.0.0.1:{}", "9".repeat(300))]);
        match client.welcome_list(long.addr) {
            Err(RingError::Misbehaved { text, .. }) => {
                assert!(text.starts_with("a listing line of 315 bytes"), "{text}")
            }
            other => panic!("expected misbehaviour, got {other:?}"),
        }
    }

    #[test]
    fn a_next_that_is_not_between_the_asked_peer_and_the_target_is_misbehaviour() {
        let space = RingSpace::new(1000).unwrap();
        let client = RingClient::new();
        for answer in [
            "NEXT 550@127.0.0.1:9",
            "NEXT 650@127.0.0.1:9",
            "NEXT 600@127.0.0.1:9",
        ] {
            let fake = Fake::start(move |_| vec![answer.into()]);
            match client.trace(&space, member(600, fake.addr), 650, Via::Fingers) {
                Err(RingError::Misbehaved { addr, text }) => {
                    assert_eq!(addr, fake.addr);
                    assert!(text.contains("not between"), "{text}");
                }
                other => panic!("{answer}: expected misbehaviour, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_look_up_through_slow_peers_ends_at_its_deadline() {
        let space = RingSpace::new(1000).unwrap();
        let chain = crate::ring::fake::slow_chain(100, 40, Duration::from_millis(300));
        let client = RingClient::new();
        let start = member(100, chain[0].addr);
        let first = client.look(&space, start.addr, 900, Via::Fingers).unwrap();
        let begun = Instant::now();
        let bounds = Bounds {
            deadline: begun + Duration::from_secs(1),
            stopping: None,
        };
        // Without the deadline, the 40 hops would take 12 s and succeed.
        match client.follow(&space, 900, start, first, Via::Fingers, bounds) {
            Err(RingError::Failed(text)) => assert!(text.contains("ran out of time"), "{text}"),
            other => panic!("expected the deadline, got {other:?}"),
        }
        let took = begun.elapsed();
        assert!(
            took < Duration::from_secs(1)
                + CONNECT_TIMEOUT
                + REQUEST_DEADLINE
                + Duration::from_secs(3),
            "took {took:?}"
        );
    }
}
