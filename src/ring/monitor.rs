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

use std::collections::HashSet;
use std::f64::consts::PI;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use crate::protocol::ring::Member;

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

    /// Whether `member` is one of the walked peers.
    fn walked(&self, member: &Member) -> bool {
        self.nodes.iter().any(|node| node.me == *member)
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

/// Walks the ring from the member at `start`: asks each peer its ring
/// state and follows its successor, until back at the start, at a peer
/// already walked, or after `most` peers.
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
    };
    // Addresses already walked (as asked, and as the peers call themselves).
    let mut walked: HashSet<SocketAddr> = HashSet::from([start, first_addr]);
    'walk: while snapshot.nodes.len() < most.max(1) {
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

/// Walks the ring from `start` (see [`walk`]) and checks it.
pub fn walk_and_check(
    client: &RingClient,
    start: SocketAddr,
    most: usize,
) -> Result<(RingSnapshot, Vec<Finding>), RingError> {
    let snapshot = walk(client, start, most)?;
    let findings = check(&snapshot);
    Ok((snapshot, findings))
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
            Finding::Unreachable { member, .. } => vec![*member],
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
            },
            Finding::Unreachable { member, listed_by } => match listed_by {
                Some(by) => write!(f, "{member} does not answer (a successor of {by})"),
                None => write!(f, "{member} does not answer"),
            },
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

// ---------------------------------------------------------------------
// Text

/// `1 problem`, `2 problems`, ...
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `16 peers, ring closed, 0 problems`.
fn summary(snapshot: &RingSnapshot, findings: &[Finding]) -> String {
    format!(
        "{}, {}, {}",
        count(snapshot.nodes.len(), "peer"),
        if snapshot.closed {
            "ring closed"
        } else {
            "ring NOT closed"
        },
        count(findings.len(), "problem")
    )
}

/// The walk on one line, by ids: `10 -> 30 -> 60 -> 85 -> (10)`.
/// Successors that did not answer appear in brackets where the walk met
/// them; an open walk ends with where it would go next (`?`: nowhere).
pub fn ring_line(snapshot: &RingSnapshot) -> String {
    let mut line = String::new();
    for (i, node) in snapshot.nodes.iter().enumerate() {
        if i > 0 {
            line.push_str(" -> ");
        }
        let _ = write!(line, "{}", node.me.id);
        // The dead successors the walk stepped over to reach the next.
        for successor in &node.successors {
            if !snapshot.unreachable.contains(successor) {
                break;
            }
            let _ = write!(line, " -> [{} unreachable]", successor.id);
        }
    }
    let Some(last) = snapshot.nodes.last() else {
        return line;
    };
    if snapshot.closed {
        let _ = write!(line, " -> ({})", snapshot.nodes[0].me.id);
    } else {
        match last
            .successors
            .iter()
            .find(|s| !snapshot.unreachable.contains(s))
        {
            Some(next) if snapshot.walked(next) => {
                let _ = write!(line, " -> ({}, a loop)", next.id);
            }
            Some(next) => {
                let _ = write!(line, " -> {} ...", next.id);
            }
            None => line.push_str(" -> ?"),
        }
    }
    line
}

/// Appends `items` after `label`, joined by `, ` and wrapped at about 78
/// columns under the first item.
fn push_wrapped(out: &mut String, label: &str, items: &[String]) {
    let indent = " ".repeat(label.len());
    let mut column = label.len();
    out.push_str(label);
    for (i, item) in items.iter().enumerate() {
        let text = if i + 1 < items.len() {
            format!("{item}, ")
        } else {
            item.clone()
        };
        if i > 0 && column + text.len() > 78 {
            // No trailing space at the end of the broken line.
            out.truncate(out.trim_end().len());
            out.push('\n');
            out.push_str(&indent);
            column = indent.len();
        }
        out.push_str(&text);
        column += text.len();
    }
    if items.is_empty() {
        out.push('-');
    }
    out.push('\n');
}

/// The snapshot as readable text: the walk on one line, one block per
/// peer (predecessor, successors, routing table as `k -> id`), a summary
/// line, then the findings.
pub fn render_text(snapshot: &RingSnapshot, findings: &[Finding]) -> String {
    let mut out = String::new();
    let start = snapshot
        .nodes
        .first()
        .map_or_else(|| "nowhere".to_string(), |node| node.me.to_string());
    let _ = writeln!(out, "ring of size {}, walked from {start}", snapshot.size);
    let _ = writeln!(out, "{}", ring_line(snapshot));
    for node in &snapshot.nodes {
        let problems = findings
            .iter()
            .filter(|finding| finding.members().contains(&node.me))
            .count();
        out.push('\n');
        if problems > 0 {
            let _ = writeln!(out, "{}  (!) {}", node.me, count(problems, "problem"));
        } else {
            let _ = writeln!(out, "{}", node.me);
        }
        let pred = node
            .predecessor
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        let _ = writeln!(out, "  predecessor  {pred}");
        let successors: Vec<String> = node.successors.iter().map(ToString::to_string).collect();
        push_wrapped(&mut out, "  successors   ", &successors);
        let fingers: Vec<String> = node
            .fingers
            .iter()
            .map(|(k, member)| match member {
                Some(member) => format!("{k} -> {}", member.id),
                None => format!("{k} -> -"),
            })
            .collect();
        push_wrapped(&mut out, "  fingers      ", &fingers);
    }
    let _ = writeln!(out, "\n{}", summary(snapshot, findings));
    for finding in findings {
        let _ = writeln!(out, "  - {finding}");
    }
    out
}

// ---------------------------------------------------------------------
// SVG

/// Text made safe inside XML content and attribute values: the five
/// special characters escaped, and characters XML 1.0 forbids (most
/// control characters) replaced by U+FFFD.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The picture's geometry: the ring's centre and radius, in pixels.
const WIDTH: f64 = 720.0;
const CENTER_X: f64 = 360.0;
const CENTER_Y: f64 = 390.0;
const RADIUS: f64 = 260.0;
const DOT: f64 = 6.0;
/// Findings listed under the picture, at most.
const LISTED_FINDINGS: usize = 12;

const COLOR_RING: &str = "#cccccc";
const COLOR_NODE: &str = "#1f5fa8";
const COLOR_SUCCESSOR: &str = "#2e8b57";
const COLOR_FINGER: &str = "#e08a00";
const COLOR_PROBLEM: &str = "#d62728";

/// The angle of `id` on the circle, in radians: 0 at the top, growing
/// clockwise.
fn angle(id: u64, size: u64) -> f64 {
    (id % size.max(1)) as f64 / size.max(1) as f64 * 2.0 * PI
}

/// The point at `angle` on a circle of `radius` around the centre (SVG's
/// y grows downwards, so clockwise on screen is `+sin, -cos`).
fn point(angle: f64, radius: f64) -> (f64, f64) {
    (
        CENTER_X + radius * angle.sin(),
        CENTER_Y - radius * angle.cos(),
    )
}

/// For each walked peer, how far out its label goes (0, 1 or 2 steps):
/// going round by id, a peer within a few degrees of the previous one
/// takes the next step out, so close labels do not overlap.
fn label_levels(snapshot: &RingSnapshot) -> std::collections::HashMap<Member, u8> {
    let size = snapshot.size.max(1);
    let mut members: Vec<Member> = snapshot.nodes.iter().map(|node| node.me).collect();
    members.sort_by_key(|m| (m.id % size, m.addr));
    let close = 0.14; // radians, about 8 degrees
    let mut levels = std::collections::HashMap::new();
    let mut previous: Option<(f64, u8)> = None;
    for member in members {
        let a = angle(member.id, size);
        let level = match previous {
            Some((before, level)) if a - before < close => (level + 1) % 3,
            _ => 0,
        };
        levels.insert(member, level);
        previous = Some((a, level));
    }
    levels
}

/// A coordinate with one decimal (fixed, so the output is deterministic).
fn px(value: f64) -> String {
    let text = format!("{value:.1}");
    if text == "-0.0" {
        "0.0".to_string()
    } else {
        text
    }
}

/// The snapshot as a standalone SVG picture: the circle of ids, each peer
/// as a dot at its id (0 at the top, clockwise) labelled with its id and
/// port, successor links as arrows along the circle, routing-table links
/// as thin curves through the inside, and in red the peers a finding is
/// about (and routing lines that are wrong). Same snapshot, same bytes.
pub fn render_svg(snapshot: &RingSnapshot, findings: &[Finding]) -> String {
    let size = snapshot.size.max(1);
    let listed = findings.len().min(LISTED_FINDINGS);
    let extra_lines = listed + usize::from(findings.len() > LISTED_FINDINGS);
    let height = CENTER_Y + RADIUS + 60.0 + 18.0 * extra_lines as f64;
    let at_fault: HashSet<Member> = findings.iter().flat_map(Finding::members).collect();
    let wrong_fingers: HashSet<(Member, u64)> = findings
        .iter()
        .filter_map(|finding| match finding {
            Finding::WrongFinger {
                node,
                has: Some(has),
                ..
            } => Some((*node, has.id)),
            _ => None,
        })
        .collect();

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
        w = px(WIDTH),
        h = px(height)
    );
    let _ = writeln!(
        svg,
        r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{COLOR_SUCCESSOR}"/></marker></defs>"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
        px(WIDTH),
        px(height)
    );

    // Title and legend.
    let title = format!(
        "swarmline ring of size {}: {}",
        snapshot.size,
        summary(snapshot, findings)
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="28" font-size="16" font-weight="bold">{}</text>"#,
        xml_escape(&title)
    );
    let legend = [
        (COLOR_SUCCESSOR, "successor", "line"),
        (COLOR_FINGER, "routing table (finger)", "line"),
        (COLOR_NODE, "peer", "rect"),
        (COLOR_PROBLEM, "problem", "rect"),
    ];
    let mut x = 20.0;
    for (color, label, shape) in legend {
        if shape == "line" {
            let _ = writeln!(
                svg,
                r#"<line x1="{}" y1="48" x2="{}" y2="48" stroke="{color}" stroke-width="2"/>"#,
                px(x),
                px(x + 22.0)
            );
        } else {
            let _ = writeln!(
                svg,
                r#"<rect x="{}" y="43" width="10" height="10" fill="{color}"/>"#,
                px(x + 6.0)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="52">{}</text>"#,
            px(x + 28.0),
            xml_escape(label)
        );
        x += 44.0 + 6.2 * label.len() as f64;
    }

    // The circle of ids, with 0 marked at the top.
    let _ = writeln!(
        svg,
        r#"<circle cx="{}" cy="{}" r="{}" fill="none" stroke="{COLOR_RING}" stroke-width="2"/>"#,
        px(CENTER_X),
        px(CENTER_Y),
        px(RADIUS)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#999999">0</text>"##,
        px(CENTER_X),
        px(CENTER_Y - RADIUS + 16.0)
    );

    // Routing-table links: one curve from each peer to each distinct
    // target, bent towards the centre.
    for node in &snapshot.nodes {
        let from = angle(node.me.id, size);
        let mut drawn = HashSet::new();
        for member in node.fingers.iter().filter_map(|(_, member)| *member) {
            if member.id == node.me.id || !drawn.insert(member.id) {
                continue;
            }
            let to = angle(member.id, size);
            let (x1, y1) = point(from, RADIUS);
            let (x2, y2) = point(to, RADIUS);
            let (cx, cy) = (
                CENTER_X + ((x1 + x2) / 2.0 - CENTER_X) * 0.3,
                CENTER_Y + ((y1 + y2) / 2.0 - CENTER_Y) * 0.3,
            );
            let wrong = wrong_fingers.contains(&(node.me, member.id));
            let (color, dash) = if wrong {
                (COLOR_PROBLEM, r#" stroke-dasharray="4 3""#)
            } else {
                (COLOR_FINGER, "")
            };
            let _ = writeln!(
                svg,
                r#"<path d="M{},{} Q{},{} {},{}" fill="none" stroke="{color}" stroke-width="1" stroke-opacity="0.7"{dash}><title>{}</title></path>"#,
                px(x1),
                px(y1),
                px(cx),
                px(cy),
                px(x2),
                px(y2),
                xml_escape(&format!("finger of {}: {}", node.me, member))
            );
        }
    }

    // Successor links: arrows along the circle, clockwise, stopping short
    // of the dots.
    for i in 0..snapshot.nodes.len() {
        let Some(next) = snapshot.next_on_walk(i) else {
            continue;
        };
        let node = &snapshot.nodes[i];
        // How far round the circle the successor is, as an angle.
        let from_id = angle(node.me.id, size);
        let sweep = (angle(next.me.id, size) - from_id).rem_euclid(2.0 * PI);
        let margin = (DOT + 4.0) / RADIUS;
        if sweep <= 2.0 * margin {
            continue;
        }
        let from = from_id + margin;
        let to = from_id + sweep - margin;
        let (x1, y1) = point(from, RADIUS);
        let (x2, y2) = point(to, RADIUS);
        let large = u8::from(sweep - 2.0 * margin > PI);
        let _ = writeln!(
            svg,
            r#"<path d="M{},{} A{r},{r} 0 {large} 1 {},{}" fill="none" stroke="{COLOR_SUCCESSOR}" stroke-width="2.5" marker-end="url(#arrow)"><title>{}</title></path>"#,
            px(x1),
            px(y1),
            px(x2),
            px(y2),
            xml_escape(&format!("successor of {}: {}", node.me, next.me)),
            r = px(RADIUS)
        );
    }

    // The peers: a dot each, labelled outside the circle; the labels of
    // peers close together are staggered outwards so they do not overlap.
    let levels = label_levels(snapshot);
    for node in &snapshot.nodes {
        let a = angle(node.me.id, size);
        let (x, y) = point(a, RADIUS);
        let color = if at_fault.contains(&node.me) {
            COLOR_PROBLEM
        } else {
            COLOR_NODE
        };
        let pred = node
            .predecessor
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        let successor = node
            .successors
            .first()
            .map_or_else(|| "-".to_string(), ToString::to_string);
        let tip = format!("{}\npredecessor {pred}\nsuccessor {successor}", node.me);
        let _ = writeln!(
            svg,
            r#"<circle cx="{}" cy="{}" r="{}" fill="{color}"><title>{}</title></circle>"#,
            px(x),
            px(y),
            px(DOT),
            xml_escape(&tip)
        );
        // Labels on the right go clockwise downwards, on the left upwards:
        // a staggered label moves that way; at the top and bottom, out.
        let step = f64::from(levels.get(&node.me).copied().unwrap_or(0));
        let (anchor, (lx, ly)) = if a.sin() > 0.2 {
            let (x, y) = point(a, RADIUS + 18.0);
            ("start", (x, y + 14.0 * step))
        } else if a.sin() < -0.2 {
            let (x, y) = point(a, RADIUS + 18.0);
            ("end", (x, y - 14.0 * step))
        } else {
            ("middle", point(a, RADIUS + 18.0 + 16.0 * step))
        };
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="{anchor}" dominant-baseline="middle" fill="{color}"><tspan font-weight="bold">{}</tspan><tspan fill="#777777"> :{}</tspan></text>"##,
            px(lx),
            px(ly),
            node.me.id,
            node.me.addr.port()
        );
    }

    // Successors that did not answer: a red cross at their id.
    for member in &snapshot.unreachable {
        let (x, y) = point(angle(member.id, size), RADIUS);
        let _ = writeln!(
            svg,
            r#"<path d="M{},{} L{},{} M{},{} L{},{}" stroke="{COLOR_PROBLEM}" stroke-width="2.5"><title>{}</title></path>"#,
            px(x - DOT),
            px(y - DOT),
            px(x + DOT),
            px(y + DOT),
            px(x - DOT),
            px(y + DOT),
            px(x + DOT),
            px(y - DOT),
            xml_escape(&format!("{member} does not answer"))
        );
    }

    // The findings, under the picture.
    let mut y = CENTER_Y + RADIUS + 50.0;
    for finding in findings.iter().take(listed) {
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{}" fill="{COLOR_PROBLEM}">{}</text>"#,
            px(y),
            xml_escape(&finding.to_string())
        );
        y += 18.0;
    }
    if findings.len() > listed {
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{}" fill="{COLOR_PROBLEM}">{}</text>"#,
            px(y),
            xml_escape(&format!(
                "... and {} more (see the text output)",
                findings.len() - listed
            ))
        );
    }
    svg.push_str("</svg>\n");
    svg
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

    fn consistent() -> RingSnapshot {
        RingSnapshot {
            size: SIZE,
            nodes: (0..IDS.len()).map(|i| view(&IDS, i)).collect(),
            unreachable: Vec::new(),
            closed: true,
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
            svg.contains(&format!(r#"fill="{COLOR_PROBLEM}"><title>60@"#)),
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
