//! The ring monitor: walks a ring from any member, checks what every peer
//! believes against what the walk saw, and draws the result as text and as
//! a standalone SVG picture. Used by `peer ring`.
//!
//! The walk asks each peer its ring state (`RNFO`, see
//! [`RingClient::info`]) and follows its successor, until it is back where
//! it started. The checks are Chord's invariants, seen from outside:
//!
//! - the successors go round the circle in id order, skipping no peer;
//! - each peer's successor names it as its predecessor;
//! - every routing-table line points at the peer the course's table says
//!   ([`RingSpace::ideal_table`]), given the peers the walk found;
//! - every peer answers, and all agree on the ring's size.
//!
//! A snapshot is a photograph, not a verdict: right after peers join or
//! leave, a healthy ring shows findings until its periodic rounds (see
//! [`super::node`]) have run again.
//!
//! [`render`] draws a snapshot: as text, and as an SVG picture.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::course::CourseReply;
use crate::protocol::ring::Member;

mod render;

pub use render::{render_svg, render_text, ring_line, xml_escape};

use super::client::{NodeView, RingClient, RingError};
use super::space::RingSpace;

/// A ring as one walk saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingSnapshot {
    /// The ring's size (its number of ids), as the first peer said.
    pub size: u64,
    /// Every peer that answered, in walk order; the first is the start.
    pub nodes: Vec<NodeView>,
    /// Successors that did not answer, in the order the walk met them.
    pub unreachable: Vec<Member>,
    /// Whether the walk came back to the peer it started from.
    pub closed: bool,
    /// Whether the walk stopped at its time limit ([`WALK_TIME`]).
    pub out_of_time: bool,
}

impl RingSnapshot {
    /// The ids of the walked peers, in walk order.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.me.id).collect()
    }

    /// The walked peer with this id (the first, should two share it).
    fn walked_with_id(&self, id: u64) -> Option<Member> {
        self.nodes.iter().map(|node| node.me).find(|me| me.id == id)
    }

    /// Whether `member`'s address is one of the walked peers' (as the walk
    /// itself tells, whatever id it is listed with).
    fn walked(&self, member: &Member) -> bool {
        self.nodes.iter().any(|node| node.me.addr == member.addr)
    }

    /// The peer after `nodes[i]` on the walk: the next one, or the first
    /// after the last when the ring closed.
    fn next_on_walk(&self, i: usize) -> Option<&NodeView> {
        match self.nodes.get(i + 1) {
            Some(next) => Some(next),
            None if self.closed => self.nodes.first(),
            None => None,
        }
    }
}

// ---------------------------------------------------------------------
// The walk

/// How long a walk may take: no peer is asked after it (members that
/// answer slowly, or successor lists of members that do not answer,
/// cannot hold `peer ring` for hours).
pub const WALK_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Walks the ring from the member at `start`: asks each peer its ring
/// state and follows its successor, until back at the start, at a peer
/// already walked, after `most` peers, or after [`WALK_TIME`].
///
/// A successor that does not answer is recorded in
/// [`RingSnapshot::unreachable`] and the walk goes on with the next entry
/// of that peer's successor list (as the ring itself heals). Fails only
/// when `start` does not answer.
pub fn walk(
    client: &RingClient,
    start: SocketAddr,
    most: usize,
) -> Result<RingSnapshot, RingError> {
    let first = client.info(start)?;
    let first_addr = first.me.addr;
    let mut snapshot = RingSnapshot {
        size: first.size,
        nodes: vec![first],
        unreachable: Vec::new(),
        closed: false,
        out_of_time: false,
    };
    let give_up_at = std::time::Instant::now() + WALK_TIME;
    // Addresses already walked (as asked, and as the peers call themselves).
    let mut walked: HashSet<SocketAddr> = HashSet::from([start, first_addr]);
    'walk: loop {
        let successors = snapshot.nodes[snapshot.nodes.len() - 1].successors.clone();
        let mut next = None;
        for successor in successors {
            if successor.addr == first_addr || successor.addr == start {
                snapshot.closed = true;
                break 'walk;
            }
            if walked.contains(&successor.addr) {
                // A loop that misses the start: check() says so.
                break 'walk;
            }
            if snapshot.unreachable.contains(&successor) {
                continue;
            }
            // The limit holds before a new peer is asked, not before the
            // last one's successors are looked at: a ring of exactly
            // `most` peers closes.
            if snapshot.nodes.len() >= most.max(1) {
                break 'walk;
            }
            if std::time::Instant::now() >= give_up_at {
                snapshot.out_of_time = true;
                break 'walk;
            }
            match client.info(successor.addr) {
                Ok(view) => {
                    next = Some((successor.addr, view));
                    break;
                }
                Err(e) => {
                    log::debug!("ring monitor: {successor} does not answer: {e}");
                    snapshot.unreachable.push(successor);
                }
            }
        }
        match next {
            Some((asked, view)) => {
                walked.insert(asked);
                walked.insert(view.me.addr);
                snapshot.nodes.push(view);
            }
            // No successor answers: the walk cannot go on.
            None => break,
        }
    }
    Ok(snapshot)
}

// ---------------------------------------------------------------------
// The checks

/// Why a walk did not come back to its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd {
    /// The last peer's successor was walked already: a loop that misses
    /// the start.
    LoopsBackTo(Member),
    /// None of the last peer's successors answers (or it lists none).
    NoSuccessorAnswers,
    /// The walk stopped at its limit, this many peers.
    Limit(usize),
    /// The walk stopped at its time limit, after this many peers.
    OutOfTime(usize),
}

/// One thing wrong with a ring, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The walk did not come back to the peer it started from.
    NotClosed {
        start: Member,
        last: Member,
        end: WalkEnd,
    },
    /// A successor that did not answer, and the first peer that lists it.
    Unreachable {
        member: Member,
        listed_by: Option<Member>,
    },
    /// A live peer the welcome service lists that the walk did not meet:
    /// it is in a ring of its own (a newcomer told it was the first, while
    /// a restarted welcome service had not relearnt this ring).
    AnotherRing { member: Member, welcome: SocketAddr },
    /// A peer that says the ring has another size than the first peer.
    SizeDisagrees {
        node: Member,
        size: u64,
        expected: u64,
    },
    /// Two walked peers with the same id.
    SameId { first: Member, second: Member },
    /// A peer whose successor is not the next peer by id: the walk skips
    /// `expected` (or goes round the circle more than once).
    SkippedMember {
        node: Member,
        successor: Member,
        expected: Member,
    },
    /// A peer whose predecessor is not the peer that names it successor.
    WrongPredecessor {
        node: Member,
        has: Member,
        expected: Member,
    },
    /// A peer without a predecessor, though a peer names it successor.
    NoPredecessor { node: Member, expected: Member },
    /// A routing-table line that does not point where it should (`has`
    /// is `None` when the line is unknown, `-`, or missing).
    WrongFinger {
        node: Member,
        k: u64,
        has: Option<Member>,
        should: Member,
    },
    /// A successor list that is not the peers that follow, in order (it
    /// names a peer that is gone, or skips one): the list is copied from
    /// successor to predecessor one round at a time, so a change takes a
    /// few rounds to go round.
    StaleSuccessors {
        node: Member,
        has: Vec<Member>,
        expected: Vec<Member>,
    },
}

impl Finding {
    /// The peers where the problem is (drawn in red).
    pub fn members(&self) -> Vec<Member> {
        match self {
            Finding::NotClosed { last, .. } => vec![*last],
            Finding::Unreachable { member, .. } | Finding::AnotherRing { member, .. } => {
                vec![*member]
            }
            Finding::SameId { first, second } => vec![*first, *second],
            Finding::SizeDisagrees { node, .. }
            | Finding::SkippedMember { node, .. }
            | Finding::WrongPredecessor { node, .. }
            | Finding::NoPredecessor { node, .. }
            | Finding::WrongFinger { node, .. }
            | Finding::StaleSuccessors { node, .. } => vec![*node],
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NotClosed { start, last, end } => match end {
                WalkEnd::LoopsBackTo(again) => write!(
                    f,
                    "the ring does not close: after {last} the walk comes back to {again}, not to {start}"
                ),
                WalkEnd::NoSuccessorAnswers => write!(
                    f,
                    "the ring does not close: no successor of {last} answers, so the walk never came back to {start}"
                ),
                WalkEnd::Limit(most) => write!(
                    f,
                    "the walk stopped at {last} after {most} peers (the limit), before coming back to {start}"
                ),
                WalkEnd::OutOfTime(walked) => write!(
                    f,
                    "the walk stopped at {last} after {walked} peers and {} s (the time limit), before coming back to {start}",
                    WALK_TIME.as_secs()
                ),
            },
            Finding::Unreachable { member, listed_by } => match listed_by {
                Some(by) => write!(f, "{member} does not answer as a member (a successor of {by})"),
                None => write!(f, "{member} does not answer as a member"),
            },
            Finding::AnotherRing { member, welcome } => write!(
                f,
                "{member} is on the welcome list at {welcome} but in another ring: restart its peers to join this one"
            ),
            Finding::SizeDisagrees { node, size, expected } => {
                write!(f, "{node} says the ring has size {size}, not {expected}")
            }
            Finding::SameId { first, second } => {
                write!(f, "{first} and {second} have the same id {}", first.id)
            }
            Finding::SkippedMember {
                node,
                successor,
                expected,
            } => write!(
                f,
                "{node}: successor is {successor}, but {expected} comes first going clockwise"
            ),
            Finding::WrongPredecessor { node, has, expected } => write!(
                f,
                "{node}: predecessor is {has}, but {expected} names it as its successor"
            ),
            Finding::NoPredecessor { node, expected } => write!(
                f,
                "{node}: no predecessor, but {expected} names it as its successor"
            ),
            Finding::WrongFinger { node, k, has, should } => match has {
                Some(has) => write!(f, "{node}: routing line {k} has {has}, should be {should}"),
                None => write!(f, "{node}: routing line {k} is unknown, should be {should}"),
            },
            Finding::StaleSuccessors {
                node,
                has,
                expected,
            } => {
                let ids = |list: &[Member]| {
                    list.iter()
                        .map(|m| m.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                write!(
                    f,
                    "{node}: successor list is [{}], the peers that follow are [{}]",
                    ids(has),
                    ids(expected)
                )
            }
        }
    }
}

/// How long the monitor spends asking the welcome list's members that
/// the walk did not meet whether they are in another ring.
const WELCOME_PROBES_FOR: Duration = Duration::from_secs(10);

/// What the welcome service's list said about a walked ring.
#[derive(Debug, Default)]
pub struct WelcomeCheck {
    /// Members on the list.
    pub listed: usize,
    /// Members on the list the walk met.
    pub walked: usize,
    /// Members on the list the walk did not meet.
    pub not_walked: usize,
    /// Of those, the ones not asked, for want of time.
    pub not_asked: usize,
    /// Of those, the ones that did not answer (gone without leaving), as
    /// the list writes them (`id:address`).
    pub silent: Vec<String>,
    /// The ones in another ring ([`Finding::AnotherRing`]).
    pub findings: Vec<Finding>,
}

impl WelcomeCheck {
    /// One line for people: what the list at `welcome` holds, against
    /// the walk.
    pub fn summary(&self, welcome: SocketAddr, walked: usize) -> String {
        let mut line = format!(
            "welcome list at {welcome}: {} listed, {} not in this walk",
            self.listed, self.not_walked
        );
        if self.walked == 0 && walked > 0 {
            line.push_str(
                " (none of the walked peers is listed: this ring's welcome service may be another; --welcome names it)",
            );
        }
        if !self.silent.is_empty() {
            line.push_str(&format!(
                "; not answering, gone without leaving: {}",
                self.silent.join(", ")
            ));
        }
        if self.not_asked > 0 {
            line.push_str(&format!("; {} not asked, for want of time", self.not_asked));
        }
        line
    }
}

/// Compares a closed walk with the welcome service's list at `welcome`:
/// each member listed that the walk did not meet is asked its state
/// (within [`WELCOME_PROBES_FOR`] in all).
///
/// - It does not answer: a peer gone without leaving, which a join
///   clears up; not a finding.
/// - Its neighbours are walked peers: it joined since the walk.
/// - Else it is in another ring ([`Finding::AnotherRing`]).
///
/// An address written without a port is taken on the port of the walk's
/// first peer (a class's peers share one).
pub fn compare_with_welcome(
    client: &RingClient,
    snapshot: &RingSnapshot,
    welcome: SocketAddr,
) -> Result<WelcomeCheck, RingError> {
    let (Some(first), true) = (snapshot.nodes.first(), snapshot.closed) else {
        return Ok(WelcomeCheck::default());
    };
    let usual_port = first.me.addr.port();
    let listed = client.welcome_list(welcome)?;
    let mut check = WelcomeCheck {
        listed: listed.len(),
        ..WelcomeCheck::default()
    };
    let until = Instant::now() + WELCOME_PROBES_FOR;
    for (hash, at) in listed {
        if snapshot.nodes.iter().any(|node| node.me.id == hash) {
            check.walked += 1;
            continue;
        }
        check.not_walked += 1;
        if Instant::now() >= until {
            check.not_asked += 1;
            continue;
        }
        let Ok(view) = client.info(at.socket(usual_port)) else {
            check
                .silent
                .push(CourseReply::Member { hash, at }.to_string());
            continue;
        };
        let joined_this_ring = view
            .successors
            .iter()
            .chain(&view.predecessor)
            .any(|neighbour| snapshot.walked(neighbour));
        if view.me.id == hash && !snapshot.walked(&view.me) && !joined_this_ring {
            check.findings.push(Finding::AnotherRing {
                member: view.me,
                welcome,
            });
        }
    }
    Ok(check)
}

/// Everything wrong with the ring in `snapshot`: the ring as a whole
/// first, then peer by peer in walk order.
///
/// Routing tables are checked only when the ring closed: the ideal table
/// needs every peer's id, and an open walk did not see them all.
pub fn check(snapshot: &RingSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    let Some(first) = snapshot.nodes.first() else {
        return findings;
    };
    // The first reachable entry of a peer's successor list: where a walk
    // goes from it.
    let reachable_successor = |node: &NodeView| {
        node.successors
            .iter()
            .find(|s| !snapshot.unreachable.contains(s))
            .copied()
    };

    // The ring as a whole.
    if !snapshot.closed {
        let last = &snapshot.nodes[snapshot.nodes.len() - 1];
        let end = match reachable_successor(last) {
            None => WalkEnd::NoSuccessorAnswers,
            _ if snapshot.out_of_time => WalkEnd::OutOfTime(snapshot.nodes.len()),
            Some(next) if snapshot.walked(&next) => WalkEnd::LoopsBackTo(next),
            Some(_) => WalkEnd::Limit(snapshot.nodes.len()),
        };
        findings.push(Finding::NotClosed {
            start: first.me,
            last: last.me,
            end,
        });
    }
    for member in &snapshot.unreachable {
        let listed_by = snapshot
            .nodes
            .iter()
            .find(|node| node.successors.contains(member))
            .map(|node| node.me);
        findings.push(Finding::Unreachable {
            member: *member,
            listed_by,
        });
    }
    for node in &snapshot.nodes {
        if node.size != snapshot.size {
            findings.push(Finding::SizeDisagrees {
                node: node.me,
                size: node.size,
                expected: snapshot.size,
            });
        }
    }
    for (i, node) in snapshot.nodes.iter().enumerate() {
        if let Some(other) = snapshot.nodes[..i].iter().find(|o| o.me.id == node.me.id) {
            findings.push(Finding::SameId {
                first: other.me,
                second: node.me,
            });
        }
    }

    // Peer by peer, each with the one after it on the walk.
    let space = RingSpace::new(snapshot.size).ok();
    let ids = snapshot.ids();
    for (i, node) in snapshot.nodes.iter().enumerate() {
        let Some(next) = snapshot.next_on_walk(i) else {
            continue;
        };
        // Its successor should be the first walked peer strictly after it.
        if let Some(space) = &space {
            let expected = space
                .owner_among(space.add(node.me.id, 1), ids.iter().copied())
                .and_then(|id| snapshot.walked_with_id(id));
            if let Some(expected) = expected.filter(|e| e.id != next.me.id) {
                findings.push(Finding::SkippedMember {
                    node: node.me,
                    successor: next.me,
                    expected,
                });
            }
        }
        // Its successor should name it as predecessor (a peer alone in
        // its ring has none).
        if next.me != node.me {
            match next.predecessor {
                None => findings.push(Finding::NoPredecessor {
                    node: next.me,
                    expected: node.me,
                }),
                Some(has) if has != node.me => findings.push(Finding::WrongPredecessor {
                    node: next.me,
                    has,
                    expected: node.me,
                }),
                Some(_) => {}
            }
        }
    }

    // Successor lists: the peers that follow on the walk, in order.
    let n = snapshot.nodes.len();
    if snapshot.closed && n > 1 {
        for (i, node) in snapshot.nodes.iter().enumerate() {
            let expected: Vec<Member> = (1..=node.successors.len().min(n - 1))
                .map(|step| snapshot.nodes[(i + step) % n].me)
                .collect();
            if node.successors != expected {
                findings.push(Finding::StaleSuccessors {
                    node: node.me,
                    has: node.successors.clone(),
                    expected,
                });
            }
        }
    }

    // Routing tables, against the ideal one for the walked ids.
    if let (true, Some(space)) = (snapshot.closed, &space) {
        for node in &snapshot.nodes {
            for (k, should_id) in space.ideal_table(node.me.id, &ids) {
                let Some(should) = snapshot.walked_with_id(should_id) else {
                    continue;
                };
                let has = node
                    .fingers
                    .iter()
                    .find(|(line, _)| *line == k)
                    .and_then(|(_, member)| *member);
                if has != Some(should) {
                    findings.push(Finding::WrongFinger {
                        node: node.me,
                        k,
                        has,
                        should,
                    });
                }
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 100;
    const IDS: [u64; 4] = [10, 30, 60, 85];

    fn member(id: u64) -> Member {
        Member {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
        }
    }

    /// A peer of the consistent ring of `ids`: right neighbours, a
    /// successor list of two, and the ideal routing table.
    fn view(ids: &[u64], i: usize) -> NodeView {
        let space = RingSpace::new(SIZE).unwrap();
        let n = ids.len();
        let me = ids[i];
        NodeView {
            me: member(me),
            size: SIZE,
            predecessor: Some(member(ids[(i + n - 1) % n])),
            successors: vec![member(ids[(i + 1) % n]), member(ids[(i + 2) % n])],
            fingers: space
                .ideal_table(me, ids)
                .into_iter()
                .map(|(k, id)| (k, Some(member(id))))
                .collect(),
        }
    }

    #[test]
    fn a_ring_of_exactly_the_walk_s_limit_closes() {
        use crate::protocol::ring::RingReply;
        use crate::protocol::Reply;
        use crate::ring::fake::Fake;
        use parking_lot::Mutex;
        use std::sync::Arc;
        // Three live members, each telling its successor.
        let addrs: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let fakes: Vec<Fake> = (0..3)
            .map(|i| {
                let addrs = Arc::clone(&addrs);
                Fake::start(move |_| {
                    let addrs = addrs.lock();
                    let at = |j: usize| Member {
                        id: IDS[j],
                        addr: addrs[j],
                    };
                    vec![
                        RingReply::Node {
                            me: at(i),
                            size: SIZE,
                        }
                        .to_string(),
                        RingReply::Succ(at((i + 1) % 3)).to_string(),
                        RingReply::Common(Reply::End).to_string(),
                    ]
                })
            })
            .collect();
        addrs.lock().extend(fakes.iter().map(|f| f.addr));
        let client = RingClient::new();
        let whole = walk(&client, fakes[0].addr, 3).unwrap();
        assert!(whole.closed, "{:?}", check(&whole));
        assert_eq!(whole.nodes.len(), 3);
        let cut = walk(&client, fakes[0].addr, 2).unwrap();
        assert!(!cut.closed);
        assert!(
            check(&cut).iter().any(|f| matches!(
                f,
                Finding::NotClosed {
                    end: WalkEnd::Limit(2),
                    ..
                }
            )),
            "{:?}",
            check(&cut)
        );
    }

    #[test]
    fn a_walk_stopped_by_its_time_limit_says_so() {
        let mut snapshot = consistent();
        snapshot.nodes.truncate(2);
        snapshot.closed = false;
        snapshot.out_of_time = true;
        let said: Vec<String> = check(&snapshot).iter().map(ToString::to_string).collect();
        assert!(
            said.iter()
                .any(|line| line.starts_with("the walk stopped at ")
                    && line.contains("after 2 peers and 60 s (the time limit)")),
            "{said:?}"
        );
    }

    fn consistent() -> RingSnapshot {
        RingSnapshot {
            size: SIZE,
            nodes: (0..IDS.len()).map(|i| view(&IDS, i)).collect(),
            unreachable: Vec::new(),
            closed: true,
            out_of_time: false,
        }
    }

    #[test]
    fn a_consistent_ring_has_no_findings() {
        let snapshot = consistent();
        assert_eq!(check(&snapshot), []);
        let text = render_text(&snapshot, &[]);
        assert!(text.contains("10 -> 30 -> 60 -> 85 -> (10)"), "{text}");
        assert!(text.contains("4 peers, ring closed, 0 problems"), "{text}");
        assert!(text.contains("30@127.0.0.1:7030"), "{text}");
        assert!(
            text.contains("62 -> 85"),
            "30's line 62 points at 85: {text}"
        );
    }

    #[test]
    fn a_ring_of_one_is_consistent() {
        let space = RingSpace::new(SIZE).unwrap();
        let snapshot = RingSnapshot {
            size: SIZE,
            nodes: vec![NodeView {
                me: member(5),
                size: SIZE,
                predecessor: None,
                successors: vec![member(5)],
                fingers: space
                    .ideal_table(5, &[5])
                    .into_iter()
                    .map(|(k, id)| (k, Some(member(id))))
                    .collect(),
            }],
            unreachable: Vec::new(),
            closed: true,
            out_of_time: false,
        };
        assert_eq!(check(&snapshot), []);
        assert_eq!(ring_line(&snapshot), "5 -> (5)");
    }

    #[test]
    fn a_wrong_finger_is_reported_with_its_line() {
        let mut snapshot = consistent();
        // 30's line 62 should point at 85; make it point at 10.
        let line = snapshot.nodes[1]
            .fingers
            .iter_mut()
            .find(|(k, _)| *k == 62)
            .unwrap();
        line.1 = Some(member(10));
        // And 60's first line is unknown.
        snapshot.nodes[2].fingers[0].1 = None;
        let findings = check(&snapshot);
        assert_eq!(
            findings,
            [
                Finding::WrongFinger {
                    node: member(30),
                    k: 62,
                    has: Some(member(10)),
                    should: member(85),
                },
                Finding::WrongFinger {
                    node: member(60),
                    k: 60,
                    has: None,
                    should: member(85),
                },
            ]
        );
        let text = findings[0].to_string();
        assert!(
            text.contains("line 62") && text.contains("should be 85@"),
            "{text}"
        );
        assert!(findings[1].to_string().contains("unknown"));
    }

    #[test]
    fn a_wrong_or_missing_predecessor_is_reported() {
        let mut snapshot = consistent();
        snapshot.nodes[2].predecessor = Some(member(10));
        snapshot.nodes[0].predecessor = None;
        assert_eq!(
            check(&snapshot),
            [
                Finding::WrongPredecessor {
                    node: member(60),
                    has: member(10),
                    expected: member(30),
                },
                Finding::NoPredecessor {
                    node: member(10),
                    expected: member(85),
                },
            ]
        );
    }

    #[test]
    fn an_open_ring_is_reported() {
        let mut snapshot = consistent();
        // 85's successors loop back to 30: the start (10) is left out.
        snapshot.nodes[3].successors = vec![member(30)];
        snapshot.closed = false;
        let findings = check(&snapshot);
        assert_eq!(
            findings[0],
            Finding::NotClosed {
                start: member(10),
                last: member(85),
                end: WalkEnd::LoopsBackTo(member(30)),
            }
        );
        assert!(findings[0].to_string().contains("does not close"));
        assert!(ring_line(&snapshot).ends_with("85 -> (30, a loop)"));
        assert!(render_text(&snapshot, &findings).contains("ring NOT closed"));
    }

    #[test]
    fn a_skipped_member_and_a_dead_successor_are_reported() {
        // 30 is dead; 10 still lists it first, then 60. The walk steps over.
        let mut snapshot = consistent();
        snapshot.nodes.remove(1);
        snapshot.unreachable.push(member(30));
        let findings = check(&snapshot);
        assert!(findings.contains(&Finding::Unreachable {
            member: member(30),
            listed_by: Some(member(10)),
        }));
        assert!(findings.contains(&Finding::WrongPredecessor {
            node: member(60),
            has: member(30),
            expected: member(10),
        }));
        assert!(ring_line(&snapshot).starts_with("10 -> [30 unreachable] -> 60"));

        // A walk out of order: 10 -> 60 -> 30 -> 85.
        let mut snapshot = consistent();
        snapshot.nodes.swap(1, 2);
        let findings = check(&snapshot);
        assert!(findings.contains(&Finding::SkippedMember {
            node: member(10),
            successor: member(60),
            expected: member(30),
        }));
    }

    #[test]
    fn a_successor_list_naming_a_gone_peer_is_reported() {
        let mut snapshot = consistent();
        let has = vec![member(30), member(60), member(99)];
        snapshot.nodes[0].successors = has.clone();
        assert!(check(&snapshot).contains(&Finding::StaleSuccessors {
            node: member(10),
            has,
            expected: vec![member(30), member(60), member(85)],
        }));
    }

    #[test]
    fn a_size_disagreement_is_reported() {
        let mut snapshot = consistent();
        snapshot.nodes[3].size = 128;
        assert!(check(&snapshot).contains(&Finding::SizeDisagrees {
            node: member(85),
            size: 128,
            expected: SIZE,
        }));
    }

    #[test]
    fn the_svg_is_standalone_and_deterministic() {
        let snapshot = consistent();
        let svg = render_svg(&snapshot, &[]);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(
            svg.matches("<circle").count(),
            IDS.len() + 1,
            "the ring and a dot per peer"
        );
        for id in IDS {
            assert!(svg.contains(&format!(">{id}</tspan>")), "{id} labelled");
        }
        assert!(svg.contains(":7030"), "ports shown");
        assert!(!svg.contains("href"), "no external assets");
        assert!(svg.contains("4 peers, ring closed, 0 problems"));
        assert_eq!(svg, render_svg(&snapshot, &[]), "same snapshot, same bytes");

        // A peer with a problem is drawn in red, and the finding listed.
        let mut broken = consistent();
        broken.nodes[2].predecessor = None;
        let findings = check(&broken);
        let svg = render_svg(&broken, &findings);
        assert!(
            svg.contains(&format!(r#"fill="{}"><title>60@"#, render::COLOR_PROBLEM)),
            "{svg}"
        );
        assert!(svg.contains("1 problem"));
    }

    #[test]
    fn text_in_the_svg_is_escaped() {
        assert_eq!(
            xml_escape("[::1]:7000 <b>&\"x'\u{1}"),
            "[::1]:7000 &lt;b&gt;&amp;&quot;x&apos;\u{FFFD}"
        );
        // An IPv6 member with a scope: its text goes through the escaping.
        let mut snapshot = consistent();
        snapshot.nodes[0].me.addr = "[fe80::1%2]:7010".parse().unwrap();
        let svg = render_svg(&snapshot, &check(&snapshot));
        assert!(svg.contains("10@[fe80::1%2]:7010"), "{svg}");
        assert!(!svg.contains("<b>"));
    }
}
