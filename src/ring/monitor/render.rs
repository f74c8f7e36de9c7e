//! Drawing a ring snapshot: as readable text (one block per peer, the
//! walk on one line, the findings), and as a standalone SVG picture (the
//! circle, every peer at its id's angle, successor arcs, finger chords,
//! problems in red).

use std::collections::HashSet;
use std::f64::consts::PI;
use std::fmt::Write as _;

use crate::protocol::ring::Member;
use crate::units::count;

use super::{Finding, RingSnapshot};

// ---------------------------------------------------------------------
// Text

/// `16 peers, ring closed, 0 problems`.
fn summary(snapshot: &RingSnapshot, findings: &[Finding]) -> String {
    format!(
        "{}, {}, {}",
        count(snapshot.nodes.len() as u64, "peer"),
        if snapshot.closed {
            "ring closed"
        } else {
            "ring NOT closed"
        },
        count(findings.len() as u64, "problem")
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
            let _ = writeln!(
                out,
                "{}  (!) {}",
                node.me,
                count(problems as u64, "problem")
            );
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
pub(super) const COLOR_PROBLEM: &str = "#d62728";

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
            xml_escape(&format!("{member} does not answer as a member"))
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
