//! protocol.md cannot drift from the code: every example in it (and the
//! `nc` session in README.md) is run here.
//!
//! - each ```tracker-session block runs, line by line, against a fresh real
//!   `tracker` process: `>` lines are sent, `<` lines must come back exactly;
//! - each ```peer-lines block is checked against the parsers: requests that
//!   parse round-trip exactly, requests that do not parse are followed by
//!   exactly the `ERRR` the parser's error gives, and every reply line
//!   round-trips (the mini-server that speaks them arrives with the peer);
//! - each ```manifest block equals the manifest the code builds for the
//!   example file, and the key stated after it is that manifest's key;
//! - the error-code table lists every code the code defines.

mod support;

use std::collections::HashMap;

use swarmline::pieces::Manifest;
use swarmline::protocol::{ErrorCode, PeerRequest, Reply};

use support::{Client, TrackerProcess};

/// One fenced block of protocol.md: its info string, its lines, and the
/// text that follows it up to the next block.
struct Block {
    info: String,
    lines: Vec<String>,
    after: String,
    line_number: usize,
}

/// The fenced blocks of protocol.md.
fn blocks() -> Vec<Block> {
    blocks_of("protocol.md")
}

fn blocks_of(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(support::repo_root().join(file)).unwrap();
    let mut blocks: Vec<Block> = Vec::new();
    let mut current: Option<Block> = None;
    for (number, line) in text.lines().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => {
                    current = Some(Block {
                        info: fence.trim().to_string(),
                        lines: Vec::new(),
                        after: String::new(),
                        line_number: number + 1,
                    })
                }
            }
            continue;
        }
        match (&mut current, blocks.last_mut()) {
            (Some(block), _) => block.lines.push(line.to_string()),
            (None, Some(previous)) => {
                previous.after.push_str(line);
                previous.after.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "{file} has an unclosed code block");
    blocks
}

/// A transcript line: who, which direction, what text.
fn split_arrow(line: &str) -> Option<(&str, char, &str)> {
    let at = line.find(['>', '<'])?;
    let who = &line[..at];
    if who.contains(' ') {
        return None;
    }
    let text = line[at + 1..].strip_prefix(' ').unwrap_or(&line[at + 1..]);
    Some((who, line.as_bytes()[at] as char, text))
}

#[test]
fn every_tracker_session_in_protocol_md_runs_as_shown() {
    let sessions: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.info == "tracker-session")
        .collect();
    assert!(
        sessions.len() >= 10,
        "found only {} tracker sessions",
        sessions.len()
    );
    run_tracker_sessions("protocol.md", sessions);
}

#[test]
fn the_readme_session_runs_as_shown() {
    let sessions: Vec<Block> = blocks_of("README.md")
        .into_iter()
        .filter(|b| b.info == "tracker-session")
        .collect();
    assert_eq!(sessions.len(), 1);
    run_tracker_sessions("README.md", sessions);
}

/// Runs each block against a fresh tracker process.
fn run_tracker_sessions(file: &str, sessions: Vec<Block>) {
    for block in sessions {
        let tracker = TrackerProcess::start(&[]);
        let mut clients: HashMap<String, Client> = HashMap::new();
        for (offset, line) in block.lines.iter().enumerate() {
            let place = format!("{file} line {}", block.line_number + offset + 1);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (who, arrow, text) = split_arrow(line)
                .unwrap_or_else(|| panic!("{place}: not a transcript line: {line}"));
            let client = clients
                .entry(who.to_string())
                .or_insert_with(|| tracker.connect());
            if arrow == '>' {
                client.send(text);
            } else if text == "(closed)" {
                assert_eq!(
                    client.recv(),
                    None,
                    "{place}: expected the connection to close"
                );
            } else {
                let got = client.recv();
                assert_eq!(got.as_deref(), Some(text), "{place}");
            }
        }
    }
}

#[test]
fn every_peer_example_in_protocol_md_matches_the_parsers() {
    let examples: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.info == "peer-lines")
        .collect();
    assert!(
        examples.len() >= 4,
        "found only {} peer examples",
        examples.len()
    );
    let manifest_len = Manifest::build(&b"hello"[..], 16384, |_| {})
        .unwrap()
        .to_string()
        .len();
    for block in examples {
        let mut expected_error: Option<String> = None;
        for (offset, line) in block.lines.iter().enumerate() {
            let place = format!("protocol.md line {}", block.line_number + offset + 1);
            let Some((_, arrow, text)) = split_arrow(line).filter(|_| !line.starts_with(' '))
            else {
                continue; // a payload description
            };
            if arrow == '>' {
                expected_error = match PeerRequest::parse(text) {
                    Ok(request) => {
                        assert_eq!(request.to_string(), text, "{place}");
                        None
                    }
                    Err(error) => Some(Reply::from_error(&error).to_string()),
                };
                continue;
            }
            if let Some(error_line) = expected_error.take() {
                assert_eq!(text, error_line, "{place}: the parser answers differently");
                continue;
            }
            let reply = Reply::parse(text).unwrap_or_else(|e| panic!("{place}: {e}"));
            assert_eq!(reply.to_string(), text, "{place}");
            if let Reply::Manifest { length, .. } = reply {
                assert_eq!(length as usize, manifest_len, "{place}: manifest length");
            }
        }
    }
}

#[test]
fn the_manifest_examples_are_what_the_code_builds() {
    let inputs: HashMap<&str, Vec<u8>> = HashMap::from([
        ("manifest hello", b"hello".to_vec()),
        ("manifest swarm", b"swarm".repeat(8000)),
    ]);
    let examples: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| inputs.contains_key(b.info.as_str()))
        .collect();
    assert_eq!(examples.len(), inputs.len());
    for block in examples {
        let built = Manifest::build(&inputs[block.info.as_str()][..], 16384, |_| {}).unwrap();
        let shown = format!("{}\n", block.lines.join("\n"));
        assert_eq!(shown, built.to_string(), "{}", block.info);
        assert_eq!(Manifest::parse(shown.as_bytes()).unwrap(), built);
        let key = built.key().to_string();
        let stated = block
            .after
            .split('`')
            .find(|word| word.len() == 64)
            .unwrap_or("");
        assert_eq!(stated, key, "the key stated after the {} block", block.info);
    }
}

#[test]
fn the_error_table_lists_every_code() {
    let text = std::fs::read_to_string(support::repo_root().join("protocol.md")).unwrap();
    for code in ErrorCode::ALL {
        assert!(
            text.contains(&format!("\n| {} | ", code.number())),
            "protocol.md's error table lacks code {}",
            code.number()
        );
    }
}
