//! A guided tour of the tracker: starts one on 127.0.0.1, plays three peers
//! talking to it (alice shares, bob downloads and reports progress, carol
//! searches), and prints every line that crosses the wire, as `nc` would
//! show it. Each answer is checked, so the tour fails loudly if the
//! tracker misbehaves.
//!
//! Run: `cargo run --example tracker_tour`
//! Keep the tracker up afterwards to try it with `nc`:
//! `cargo run --example tracker_tour -- --serve`

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;

use swarmline::pieces::Manifest;
use swarmline::protocol::{FileKey, FileName, MediaKind, SharedPath};
use swarmline::tracker::{Tracker, TrackerOptions};

/// One scripted peer: a named connection that prints what it says and hears.
struct Actor {
    name: &'static str,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Actor {
    fn connect(name: &'static str, addr: SocketAddr) -> std::io::Result<Actor> {
        let stream = TcpStream::connect(addr)?;
        Ok(Actor {
            name,
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends `line` and reads the answer: one line, or a listing up to `END`.
    fn say(&mut self, line: &str) -> std::io::Result<Vec<String>> {
        println!("{:>6}> {line}", self.name);
        writeln!(self.writer, "{line}")?;
        let mut answer = Vec::new();
        loop {
            let mut reply = String::new();
            if self.reader.read_line(&mut reply)? == 0 {
                break;
            }
            let reply = reply.trim_end().to_string();
            println!("{:>6}< {reply}", self.name);
            let last = !(reply.starts_with("FILE")
                || reply.starts_with("PEER")
                || reply.starts_with("USER")
                || reply.starts_with("SHAR"));
            answer.push(reply);
            if last {
                break;
            }
        }
        Ok(answer)
    }
}

fn expect(answer: &[String], first: &str) -> Result<(), String> {
    match answer.first() {
        Some(line) if line.starts_with(first) => Ok(()),
        other => Err(format!(
            "expected an answer starting with {first:?}, got {other:?}"
        )),
    }
}

fn narrate(text: &str) {
    println!("\n# {text}");
}

/// Plays the tour; returns bob's session, still open (with `--serve`, the
/// tracker then still lists his file for whoever connects).
fn tour(addr: SocketAddr) -> Result<Actor, String> {
    let io = |e: std::io::Error| format!("connection failed: {e}");
    // A real file's manifest and key, as a peer would compute them.
    let content = b"swarm".repeat(8000);
    let manifest = Manifest::build(&content[..], 16 * 1024, |_| {}).map_err(io)?;
    let key: FileKey = manifest.key();
    let name = FileName::new("swarm notes.txt").map_err(|e| e.to_string())?;
    let path = SharedPath::new("/home/alice/swarm notes.txt").map_err(|e| e.to_string())?;

    narrate("alice opens a session: her mini-server listens on port 7001");
    let mut alice = Actor::connect("alice", addr).map_err(io)?;
    expect(
        &alice.say("HELO 7001 alice").map_err(io)?,
        "OK 127.0.0.1:7001",
    )?;

    narrate("she offers a 40,000-byte file in 3 pieces; its key is the SHA-256 of its manifest");
    let addf = format!(
        "ADDF {key} {name} {} {} {} {path}",
        manifest.size(),
        manifest.piece_size(),
        MediaKind::Other
    );
    expect(&alice.say(&addf).map_err(io)?, "OK")?;

    narrate("carol, without a session, searches by a word of the name");
    let mut carol = Actor::connect("carol", addr).map_err(io)?;
    expect(&carol.say("RQFS notes").map_err(io)?, "FILE")?;

    narrate("bob opens a session and asks who holds the file");
    let mut bob = Actor::connect("bob", addr).map_err(io)?;
    expect(&bob.say("HELO 7002 bob").map_err(io)?, "OK")?;
    expect(
        &bob.say(&format!("REQF {key}")).map_err(io)?,
        "PEER 127.0.0.1:7001 alice seeder 3",
    )?;

    narrate("bob got pieces 0 and 2 (bitmap 1010 0000 = a0) and tells the tracker");
    expect(&bob.say(&format!("BITF {key} a0")).map_err(io)?, "OK")?;
    expect(&carol.say(&format!("REQF {key}")).map_err(io)?, "PEER")?;

    narrate("mistakes get an ERRR with a code, and the connection goes on");
    expect(&carol.say("HELLO 7003").map_err(io)?, "ERRR 200")?;
    expect(&carol.say("USRS").map_err(io)?, "USER alice")?;

    narrate("alice leaves: her offer vanishes at once");
    expect(&alice.say("QUIT").map_err(io)?, "OK bye")?;
    expect(&carol.say("LSTF").map_err(io)?, "END")?;
    expect(&carol.say("RQFS").map_err(io)?, "FILE")?;
    println!("\n# the file is still listed: bob holds 2 of its 3 pieces (0 seeders, 1 leecher)");
    Ok(bob)
}

fn main() -> ExitCode {
    let mut serve = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--serve" => serve = true,
            "-h" | "--help" => {
                println!("usage: tracker_tour [--serve]   (--serve: keep the tracker up afterwards, for nc)");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other}; try --help");
                return ExitCode::from(2);
            }
        }
    }
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tracker = match Tracker::start(listener, TrackerOptions::default()) {
        Ok(tracker) => tracker,
        Err(e) => {
            eprintln!("cannot start the tracker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = tracker.local_addr();
    println!("tracker listening on {addr}");
    let result = tour(addr);
    if let Err(e) = &result {
        eprintln!("\nthe tour failed: {e}");
    } else if serve {
        println!(
            "\nThe tracker is still running, and bob's session with it. Try: nc 127.0.0.1 {}",
            addr.port()
        );
        println!("(see protocol.md for every message; press Enter here to stop)");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    let completed = result.is_ok();
    drop(result); // bob leaves
    tracker.shutdown();
    if completed {
        println!("\ntour complete: every answer was as expected");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
