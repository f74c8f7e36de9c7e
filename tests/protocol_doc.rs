//! protocol.md cannot drift from the code: every example in it (and the
//! `nc` session in README.md) is run here.
//!
//! - each ```tracker-session block runs, line by line, against a fresh real
//!   `tracker` process: `>` lines are sent, `<` lines must come back exactly;
//!   flags after the info string's first word (```tracker-session
//!   --ring-size 100) are passed to that tracker;
//! - each ```peer-session block runs against a real peer's mini-server that
//!   shares `hello` and holds pieces 0 and 2 of `swarm.txt`; a payload line
//!   `  [N bytes: ...]` reads exactly N bytes, which must be the piece or
//!   manifest the header before it announced;
//! - each ```manifest block equals the manifest the code builds for the
//!   example file, and the key stated after it is that manifest's key;
//! - the error-code table lists every code the code defines.

mod support;

use std::collections::HashMap;

use swarmline::pieces::Manifest;
use swarmline::protocol::{ErrorCode, Reply};

use support::{Client, TrackerProcess};

/// One fenced block of protocol.md: its info string, its lines, and the
/// text that follows it up to the next block.
struct Block {
    info: String,
    lines: Vec<String>,
    after: String,
    line_number: usize,
}

impl Block {
    /// The first word of the info string (its kind, as Markdown sees it).
    fn kind(&self) -> &str {
        self.info.split_whitespace().next().unwrap_or("")
    }

    /// The words after the first.
    fn flags(&self) -> Vec<&str> {
        self.info.split_whitespace().skip(1).collect()
    }
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

/// Plays one transcript line on `client`: sends a `>` line; for a `<`
/// line, checks that the next line received (passed through `shown`, which
/// puts a run's own addresses into the documented ones) is exactly `text`,
/// or, for `(closed)`, that the connection was closed, or, for
/// `(one of) a b ...`, that it is one of the words `a`, `b`, ...
fn play(
    client: &mut Client,
    arrow: char,
    text: &str,
    place: &str,
    shown: impl Fn(String) -> String,
) {
    if arrow == '>' {
        client.send(text);
    } else if text == "(closed)" {
        assert_eq!(
            client.recv(),
            None,
            "{place}: expected the connection to close"
        );
    } else if let Some(choices) = text.strip_prefix("(one of) ") {
        let got = client.recv().map(shown);
        assert!(
            got.as_deref()
                .is_some_and(|got| choices.split_whitespace().any(|c| c == got)),
            "{place}: expected one of {choices}, got {got:?}"
        );
    } else {
        let got = client.recv().map(shown);
        assert_eq!(got.as_deref(), Some(text), "{place}");
    }
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
        .filter(|b| b.kind() == "tracker-session")
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
        .filter(|b| b.kind() == "tracker-session")
        .collect();
    assert_eq!(sessions.len(), 1);
    run_tracker_sessions("README.md", sessions);
}

/// Runs each block against a fresh tracker process.
fn run_tracker_sessions(file: &str, sessions: Vec<Block>) {
    for block in sessions {
        let tracker = TrackerProcess::start(&block.flags());
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
            play(client, arrow, text, &place, |line| line);
        }
    }
}

#[test]
fn every_peer_session_in_protocol_md_runs_as_shown() {
    let sessions: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.info == "peer-session")
        .collect();
    assert!(
        sessions.len() >= 5,
        "found only {} peer sessions",
        sessions.len()
    );

    // A peer that shares `hello` and holds pieces 0 and 2 of `swarm.txt`.
    let tracker = support::tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let peer = support::start_peer(
        dir.path(),
        "alice",
        tracker.local_addr(),
        &[("user", "alice")],
    );
    let hello = support::write_file(&dir.path().join("alice"), "hello", b"hello");
    let hello = peer.share(&hello, |_| {}).unwrap();
    let swarm = b"swarm".repeat(8000);
    support::plant_partial(&peer, &dir.path().join("alice"), "swarm.txt", &swarm, |i| {
        i != 1
    });

    // What the documented lines say in place of this run's address and path.
    let actual_peer = peer.listen_addr().to_string();
    let actual_path = hello.path().to_string_lossy().into_owned();
    let shown = |line: String| {
        line.replace(&actual_peer, "127.0.0.1:7001")
            .replace(&actual_path, "/home/alice/hello")
    };

    for block in sessions {
        let mut client = Client::connect(peer.listen_addr());
        let mut last_header = String::new();
        for (offset, line) in block.lines.iter().enumerate() {
            let place = format!("protocol.md line {}", block.line_number + offset + 1);
            if let Some(payload) = line
                .trim_start()
                .strip_prefix('[')
                .filter(|_| line.starts_with("  "))
            {
                let n: usize = payload.split(' ').next().unwrap().parse().unwrap();
                let bytes = client.recv_bytes(n);
                let expected = match Reply::parse(&last_header).unwrap() {
                    Reply::Manifest { .. } => hello.manifest_bytes().to_vec(),
                    Reply::Piece { index, .. } => {
                        let start = index as usize * 16384;
                        swarm[start..(start + 16384).min(swarm.len())].to_vec()
                    }
                    other => panic!("{place}: a payload after {other}"),
                };
                assert!(bytes == expected, "{place}: the payload bytes differ");
                continue;
            }
            let Some((_, arrow, text)) = split_arrow(line) else {
                continue;
            };
            if arrow == '<' {
                last_header = text.to_string();
            }
            play(&mut client, arrow, text, &place, shown);
        }
    }
    peer.shutdown();
    tracker.shutdown();
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
