//! The ring, with real `tracker` and `peer` processes on loopback: a ring
//! of 16 peers routes every look-up to its owner in few hops; it heals
//! after peers leave and crash, keeping its records while a replica lives;
//! and a file shared in the ring is downloaded with the tracker stopped.
//!
//! Look-ups are made from the test with the library's [`RingClient`],
//! which speaks the same lines as `nc` would, to the peers' mini-servers.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use swarmline::protocol::ring::{Member, Record, RecordQuery, Via};
use swarmline::protocol::FileKey;
use swarmline::ring::{RingClient, RingSpace};

use support::{
    eventually, port_held_shut, random_bytes, write_file, Client, PeerProcess, TrackerProcess,
};

/// How often the peers of these tests run their stabilisation round.
const STABILIZE_MS: u64 = 150;

/// Flags of a ring peer in these tests: short rounds, no web page.
fn ring_flags(extra: &[&'static str]) -> Vec<&'static str> {
    let mut flags = vec![
        "--ring",
        "true",
        "--ring-stabilize-ms",
        "150",
        "--ring-fix-fingers-ms",
        "300",
        "--ring-check-predecessor-ms",
        "300",
        "--gui",
        "false",
    ];
    flags.extend_from_slice(extra);
    flags
}

/// A tracker (the welcome service) and `n` ring peers joined through it,
/// one after the other.
struct Ring {
    tracker: TrackerProcess,
    peers: Vec<PeerProcess>,
    dir: tempfile::TempDir,
    space: RingSpace,
    client: RingClient,
}

impl Ring {
    fn start(n: usize, extra: &[&'static str]) -> Ring {
        let tracker = TrackerProcess::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let peers = (0..n)
            .map(|i| {
                let home = dir.path().join(format!("peer{i}"));
                PeerProcess::start(&home, tracker.addr, &ring_flags(extra))
            })
            .collect();
        Ring {
            tracker,
            peers,
            dir,
            space: RingSpace::new(65536).unwrap(),
            client: RingClient::new(),
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.peers.iter().map(|p| p.addr).collect()
    }

    /// Each live peer as a ring member, asked of the peer itself.
    fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .addrs()
            .into_iter()
            .map(|addr| self.client.info(addr).unwrap().me)
            .collect();
        members.sort_by_key(|m| m.id);
        members
    }

    /// Whether every peer's successors, predecessor and routing table are
    /// the ideal ones for the ring formed by `members`.
    fn is_settled(&self, members: &[Member]) -> bool {
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let by_id = |id: u64| *members.iter().find(|m| m.id == id).unwrap();
        members.iter().enumerate().all(|(i, me)| {
            let Ok(view) = self.client.info(me.addr) else {
                return false;
            };
            let previous = members[(i + members.len() - 1) % members.len()];
            let ideal: Vec<(u64, Option<Member>)> = self
                .space
                .ideal_table(me.id, &ids)
                .into_iter()
                .map(|(k, id)| (k, Some(by_id(id))))
                .collect();
            // The default successor list: the next four peers.
            let successors: Vec<Member> = (1..members.len().min(5))
                .map(|step| members[(i + step) % members.len()])
                .collect();
            view.successors == successors
                && view.predecessor == Some(previous)
                && view.fingers == ideal
        })
    }

    /// Waits until the ring is settled; how long it took.
    fn settle(&self, members: &[Member], limit: Duration) -> Duration {
        let started = Instant::now();
        assert!(
            eventually(limit, || self.is_settled(members)),
            "the ring of {} did not settle within {limit:?}",
            members.len()
        );
        started.elapsed()
    }

    /// Looks up `ids` from every peer; checks each owner; the mean number
    /// of peers asked.
    fn mean_hops(&self, members: &[Member], ids: &[u64], via: Via) -> f64 {
        let owner_ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let mut hops = 0;
        let mut lookups = 0;
        for start in members {
            for &id in ids {
                let trace = self.client.trace(&self.space, *start, id, via).unwrap();
                let owner = self.space.owner_among(id, owner_ids.iter().copied());
                assert_eq!(
                    Some(trace.owner().id),
                    owner,
                    "look-up of {id} from {start}:\n{trace}"
                );
                hops += trace.hops.len();
                lookups += 1;
            }
        }
        hops as f64 / lookups as f64
    }
}

/// Ids spread over the whole ring, some of them peers' own.
fn sample_ids(space: &RingSpace, members: &[Member]) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..12).map(|i| (i * 5471 + 97) % space.size()).collect();
    ids.extend(members.iter().take(4).map(|m| m.id));
    ids
}

#[test]
fn sixteen_peers_route_every_lookup_to_its_owner_in_few_hops() {
    let ring = Ring::start(16, &[]);
    let members = ring.members();
    let took = ring.settle(&members, Duration::from_secs(60));
    println!("16 peers settled in {took:?}");
    let ids = sample_ids(&ring.space, &members);
    let with_fingers = ring.mean_hops(&members, &ids, Via::Fingers);
    let successors_only = ring.mean_hops(&members, &ids, Via::Successors);
    println!(
        "mean peers asked per look-up: {with_fingers:.2} with fingers, {successors_only:.2} by successors only (N = 16, log2 N + 1 = 5, N / 2 = 8)"
    );
    assert!(with_fingers <= 5.0, "{with_fingers} hops with fingers");
    assert!(
        (4.0..=13.0).contains(&successors_only),
        "{successors_only} hops without fingers is not about N / 2"
    );
    assert!(successors_only > with_fingers * 1.5);

    // The welcome service lists them all.
    let listed = course_lines(ring.tracker.addr, "li?");
    assert_eq!(listed.len(), 17, "16 peers and `end`: {listed:?}");
    // A peer answers `rt?` with its table in the course's form, which is
    // the ideal one.
    let me = members[3];
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let lines = course_lines(me.addr, "rt?");
    let expected: Vec<String> = ring
        .space
        .ideal_table(me.id, &ids)
        .into_iter()
        .map(|(k, id)| {
            let peer = members.iter().find(|m| m.id == id).unwrap();
            // Every peer here listens on its own port: written ip:port.
            format!("{k}:{id}:{}", peer.addr)
        })
        .chain(["end".to_string()])
        .collect();
    assert_eq!(lines, expected, "then the peer closes the connection");
}

#[test]
fn every_member_of_a_small_ring_names_the_same_homes_for_an_id() {
    // Three peers, a successor list of four: each list comes round the
    // ring, so the owner's records are kept on all three, whoever is asked.
    // (Each list is whole a stabilisation round after the ring settles.)
    let ring = Ring::start(3, &[]);
    let members = ring.members();
    ring.settle(&members, Duration::from_secs(60));
    let answers = |owner: Member| -> Vec<Vec<Member>> {
        members
            .iter()
            .map(|asked| {
                let trace = ring
                    .client
                    .trace(&ring.space, *asked, owner.id, Via::Fingers)
                    .unwrap();
                trace.owners
            })
            .collect()
    };
    let agree = |owner: Member| {
        let answers = answers(owner);
        answers[0].len() == 3 && answers[0][0] == owner && answers.iter().all(|a| *a == answers[0])
    };
    for owner in &members {
        assert!(
            eventually(Duration::from_secs(30), || agree(*owner)),
            "{:?}",
            answers(*owner)
        );
    }
}

/// Where the records placed by `text` live: the owner of its id and the
/// two peers after it.
fn homes(ring: &Ring, from: Member, text: &str) -> Vec<Member> {
    let trace = ring
        .client
        .trace(&ring.space, from, ring.space.id_of(text), Via::Fingers)
        .unwrap();
    trace.owners.into_iter().take(3).collect()
}

/// The records answering `query`, from its homes together.
fn found(ring: &Ring, from: Member, query: &RecordQuery) -> Vec<Record> {
    let mut records = Vec::new();
    for home in homes(ring, from, &query.placement()) {
        if let Ok(more) = ring.client.find(home.addr, query) {
            records.extend(more);
        }
    }
    records
}

fn share_in_ring(ring: &mut Ring, name: &str, bytes: &[u8]) -> (PeerProcess, FileKey) {
    let dir = ring.dir.path().join("sharer");
    let file = write_file(&dir, name, bytes);
    let mut args = ring_flags(&["--ring-refresh-secs", "600"]);
    let file = file.to_string_lossy().into_owned();
    let file: &'static str = Box::leak(file.into_boxed_str());
    args.extend(["share", file]);
    let mut sharer = PeerProcess::start(&dir, ring.tracker.addr, &args);
    let line = sharer.expect("sharing ");
    let key = FileKey::parse(line.rsplit(' ').next().unwrap()).unwrap();
    (sharer, key)
}

#[test]
fn the_ring_heals_after_peers_leave_and_crash_and_keeps_its_records() {
    // Records are announced once (the refresh is far away), so what is
    // found later was kept by the replicas alone.
    let mut ring = Ring::start(8, &["--ring-refresh-secs", "600"]);
    let (sharer, key) = share_in_ring(&mut ring, "notes.bin", &random_bytes(50_000, 7));
    ring.peers.push(sharer);
    let members = ring.members();
    ring.settle(&members, Duration::from_secs(60));
    let sharer = *members
        .iter()
        .find(|m| m.addr == ring.peers[8].addr)
        .unwrap();
    let holder = Record::Holder {
        key,
        peer: sharer.addr,
    };
    let query = RecordQuery::Holders(key);
    // Announced while the ring was forming: the records reach their homes
    // within a few rounds.
    assert!(eventually(Duration::from_secs(30), || found(
        &ring, members[0], &query
    )
    .contains(&holder)));

    // The record's owner crashes; the next home leaves gracefully.
    let victims: Vec<Member> = homes(&ring, members[0], &key.to_string())
        .into_iter()
        .filter(|m| *m != sharer)
        .take(2)
        .collect();
    let index_of =
        |ring: &Ring, m: &Member| ring.peers.iter().position(|p| p.addr == m.addr).unwrap();
    let crashed = index_of(&ring, &victims[0]);
    let mut crashed = ring.peers.remove(crashed);
    crashed.child.kill().unwrap();
    crashed.wait(Duration::from_secs(10));
    let leaving = index_of(&ring, &victims[1]);
    let mut leaving = ring.peers.remove(leaving);
    leaving.send("quit");
    assert!(leaving.wait(Duration::from_secs(30)).success());

    let alive: Vec<Member> = members
        .iter()
        .filter(|m| !victims.contains(m))
        .copied()
        .collect();
    let took = ring.settle(&alive, Duration::from_secs(60));
    let rounds = took.as_millis() as u64 / STABILIZE_MS + 1;
    println!(
        "after a crash and a leave, settled in {took:?} (about {rounds} stabilisation rounds)"
    );
    let ids = sample_ids(&ring.space, &alive);
    ring.mean_hops(&alive, &ids, Via::Fingers);
    for from in &alive {
        assert!(
            found(&ring, *from, &query).contains(&holder),
            "the record of {key} is lost (asked from {from})"
        );
    }
    // And it is copied again to every home of the healed ring: the owner
    // and the two peers after it each hold it.
    let every_home_holds_it = || {
        homes(&ring, alive[0], &key.to_string()).iter().all(|home| {
            ring.client
                .find(home.addr, &query)
                .is_ok_and(|records| records.contains(&holder))
        })
    };
    assert!(
        eventually(Duration::from_secs(30), every_home_holds_it),
        "the record was not copied to its new homes"
    );
    // The welcome service no longer lists the peer that left.
    let listed = course_lines(ring.tracker.addr, "li?");
    assert!(!listed
        .iter()
        .any(|l| l.starts_with(&format!("{}:", victims[1].id))));
}

#[test]
fn a_file_shared_in_the_ring_is_downloaded_with_the_tracker_stopped() {
    let mut ring = Ring::start(3, &[]);
    let bytes = random_bytes(300_000, 11);
    let (sharer, key) = share_in_ring(&mut ring, "lecture.bin", &bytes);
    ring.peers.push(sharer);
    let members = ring.members();
    ring.settle(&members, Duration::from_secs(60));
    ring.tracker.child.kill().unwrap();
    ring.tracker.wait_exit(Duration::from_secs(10));

    // The ring-wide listing (a walk of the ring) names the file.
    let shell = &mut ring.peers[0];
    let mut listed = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            shell.send("ring files");
            listed = shell.expect(" in the ring");
            listed.contains("1 file in the ring")
        }),
        "{listed}"
    );
    shell.send("ring files");
    assert!(shell.expect("lecture.bin").contains(&key.to_string()));
    // A search finds it in the ring too, with its holder.
    shell.send("search lect kind=other");
    // (Lines of the `ring files` above start with the key; a search
    // result starts with the name, and says how many hold it.)
    let found = loop {
        let line = shell.expect("lecture.bin");
        if line.starts_with("lecture.bin") {
            break line;
        }
    };
    assert!(found.contains(&key.to_string()), "{found}");
    assert_eq!(
        found.split_whitespace().nth(4),
        Some("1"),
        "one seeder: {found}"
    );

    // A made-up record names another file lecture.bin, which nobody
    // holds: the name is still the shared file's alone.
    let made_up = support::key(99);
    for home in homes(&ring, members[0], "lecture.bin") {
        let line = format!("STOR 600 NAME lecture.bin {made_up} 300000 16384 other");
        let stored = Client::connect(home.addr).ask(&line);
        assert!(stored.starts_with("OK"), "{stored}");
    }
    // A new peer joins through a member (the welcome service is gone) and
    // downloads by name.
    let home = ring.dir.path().join("leecher");
    let output = Command::new(env!("CARGO_BIN_EXE_peer"))
        .args(["--tracker", &ring.tracker.addr.to_string()])
        .args(["--address", "127.0.0.1", "--port", "0", "--log-file", ""])
        .args(ring_flags(&["--ring-join"]))
        .arg(members[0].addr.to_string())
        .arg("--download-dir")
        .arg(home.join("downloads"))
        .arg("--state-dir")
        .arg(home.join("state"))
        .args(["get", "lecture.bin"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let saved = std::fs::read(home.join("downloads").join("lecture.bin")).unwrap();
    assert!(saved == bytes, "the downloaded bytes differ");
    assert_no_part_files(&home.join("downloads"));
}

/// Sends one line of the course's grammar and reads every line of the
/// answer, up to the close of the connection (one request per connection).
fn course_lines(addr: SocketAddr, line: &str) -> Vec<String> {
    let mut client = Client::connect(addr);
    client.send(line);
    let mut lines = Vec::new();
    while let Some(line) = client.recv() {
        lines.push(line);
    }
    lines
}

fn assert_no_part_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".part"), "{name:?} left");
    }
}

/// Runs `peer` with `args` (a client-only subcommand); its exit status and
/// standard output.
/// `peer <args>` with `tracker` as its tracker (the ring's welcome
/// service), and what it said.
fn peer_command(tracker: SocketAddr, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_peer"))
        .args(["--log-file", "", "--tracker", &tracker.to_string()])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn the_monitor_draws_the_ring_and_sees_it_heal_after_a_crash() {
    let mut ring = Ring::start(5, &[]);
    let members = ring.members();
    ring.settle(&members, Duration::from_secs(60));
    let start = members[0].addr.to_string();
    let svg = support::target_dir().join("ring-monitor.svg");
    let svg_arg = svg.to_string_lossy().into_owned();
    let (ok, text) = peer_command(ring.tracker.addr, &["ring", &start, "--svg", &svg_arg]);
    assert!(ok, "{text}");
    assert!(text.contains("5 peers, ring closed, 0 problems"), "{text}");
    for member in &members {
        assert!(
            text.contains(&member.to_string()),
            "{member} missing:\n{text}"
        );
    }
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg") && drawing.trim_end().ends_with("</svg>"));
    assert!(drawing.contains(&members[2].id.to_string()));

    // A route shows its hops and the owner; an id no peer has is said so.
    let missing = (members[2].id + 1) % ring.space.size();
    let (ok, text) = peer_command(ring.tracker.addr, &["route", &start, &missing.to_string()]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{} owns {missing}", members[3])),
        "{text}"
    );
    assert!(
        text.contains(&format!("no peer has id {missing}")),
        "{text}"
    );
    let (ok, text) = peer_command(
        ring.tracker.addr,
        &["route", &start, &members[3].id.to_string(), "--no-fingers"],
    );
    assert!(ok && !text.contains("no peer has id"), "{text}");
    // Spelled as in the shell: the same route, hop by hop.
    let (ok, as_in_the_shell) = peer_command(
        ring.tracker.addr,
        &["route", &start, &members[3].id.to_string(), "nofingers"],
    );
    assert!(ok, "{as_in_the_shell}");
    assert_eq!(as_in_the_shell, text);

    // Kill a peer: the monitor sees a ring of four again soon.
    let index = ring
        .peers
        .iter()
        .position(|p| p.addr == members[2].addr)
        .unwrap();
    let mut crashed = ring.peers.remove(index);
    crashed.child.kill().unwrap();
    crashed.wait(Duration::from_secs(10));
    let mut last = String::new();
    let healed = eventually(Duration::from_secs(60), || {
        let (ok, text) = peer_command(ring.tracker.addr, &["ring", &start]);
        last = text;
        ok && last.contains("4 peers, ring closed, 0 problems")
    });
    assert!(healed, "not healed; the monitor said:\n{last}");
    assert!(!last.contains(&members[2].to_string()), "{last}");
}

/// The course's classroom: every peer on its own loopback address, all on
/// one port, so the course's tools (which give IPs without ports) work.
/// Linux routes all of 127.0.0.0/8 to the loopback interface; macOS needs
/// aliases (`ifconfig lo0 alias 127.0.0.2`), so this runs on Linux only.
#[cfg(target_os = "linux")]
#[test]
fn a_class_runs_its_peers_on_loopback_addresses_and_one_port() {
    let port = support::free_port().to_string();
    let tracker = TrackerProcess::start(&["--ring-port", &port, "--ring-size", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "slides.bin", &random_bytes(40_000, 3));
    let file = file.to_string_lossy().into_owned();
    let mut peers = Vec::new();
    for n in 2..=4 {
        let address = format!("127.0.0.{n}");
        let mut args = vec!["--address", &address, "--port", &port, "--ring-size", "100"];
        args.extend(ring_flags(&[]));
        args.extend(["share", &file]);
        let home = dir.path().join(format!("peer{n}"));
        let mut peer = PeerProcess::start(&home, tracker.addr, &args);
        assert_eq!(peer.addr.to_string(), format!("{address}:{port}"));
        let key = peer.expect("sharing ");
        peers.push((peer, key.rsplit(' ').next().unwrap().to_string()));
    }
    // The welcome service writes bare IPs: every peer is on ring_port.
    let listed = course_lines(tracker.addr, "li?");
    assert_eq!(listed.len(), 4, "{listed:?}");
    for line in &listed[..3] {
        let (_, ip) = line.split_once(':').unwrap();
        assert!(ip.starts_with("127.0.0.") && !ip.contains(':'), "{line}");
    }
    // The tracker tells the three peers apart by their addresses.
    let mut client = Client::connect(tracker.addr);
    let holders = client.list(&format!("REQF {}", peers[0].1));
    for n in 2..=4 {
        let id = format!("127.0.0.{n}:{port}");
        assert!(
            holders.iter().any(|h| h.contains(&id)),
            "{id} in {holders:?}"
        );
    }
    // A peer's own table is in the course's form, bare IPs too.
    let space = RingSpace::new(100).unwrap();
    let ring = RingClient::new();
    let members: Vec<Member> = peers
        .iter()
        .map(|(p, _)| ring.info(p.addr).unwrap().me)
        .collect();
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let me = members[1];
    let expected: Vec<String> = space
        .ideal_table(me.id, &ids)
        .into_iter()
        .map(|(k, id)| {
            let ip = members.iter().find(|m| m.id == id).unwrap().addr.ip();
            format!("{k}:{id}:{ip}")
        })
        .chain(["end".to_string()])
        .collect();
    assert!(
        eventually(Duration::from_secs(30), || course_lines(me.addr, "rt?")
            == expected),
        "rt? of {me}: {:?}, expected {expected:?}",
        course_lines(me.addr, "rt?")
    );
    // Only a member itself may say it leaves: a `LEAV` about the peer at
    // 127.0.0.2 sent from 127.0.0.1 is refused, and the ring keeps it.
    let (victim, told) = (members[0], members[1]);
    let forged = format!("LEAV {victim} - {told}");
    let answer = Client::connect(told.addr).ask(&forged);
    assert!(answer.starts_with("ERRR 401 "), "{answer}");
    let view = ring.info(told.addr).unwrap();
    assert!(
        view.predecessor == Some(victim) || view.successors.contains(&victim),
        "{victim} was dropped: {view:?}"
    );
}

#[test]
fn a_peer_can_take_its_id_from_the_hash_service() {
    let tracker = TrackerProcess::start(&["--ring-size", "1000"]);
    let dir = tempfile::tempdir().unwrap();
    let flags = ring_flags(&["--ring-size", "1000", "--ring-id", "service"]);
    let peer = PeerProcess::start(dir.path(), tracker.addr, &flags);
    let me = RingClient::new().info(peer.addr).unwrap().me;
    // The hash service gives the same text the same id again.
    let asked = course_lines(tracker.addr, &peer.addr.to_string());
    assert_eq!(asked, [me.id.to_string()]);
    assert_eq!(
        course_lines(tracker.addr, &format!("ip?:{}", me.id)),
        [peer.addr.to_string()],
        "the welcome service knows it by that id"
    );
}

#[test]
fn a_peer_killed_and_started_again_at_once_at_its_address_gets_its_id_back() {
    let mut ring = Ring::start(3, &[]);
    ring.settle(&ring.members(), Duration::from_secs(60));
    // Killed, and started again at once with its port and id: the ring
    // still gives the id to its old entry, at the very same address.
    let crashed = ring.peers.pop().unwrap();
    let me = ring.client.info(crashed.addr).unwrap().me;
    drop(crashed);
    let (port, id) = (me.addr.port().to_string(), me.id.to_string());
    let flags: Vec<&str> = ring_flags(&[])
        .into_iter()
        .chain(["--port", &port, "--ring-id", &id])
        .collect();
    let again = PeerProcess::start(&ring.dir.path().join("peer2"), ring.tracker.addr, &flags);
    assert_eq!(ring.client.info(again.addr).unwrap().me, me);
    ring.peers.push(again);
    ring.settle(&ring.members(), Duration::from_secs(60));
}

#[test]
fn a_peer_started_again_at_its_address_with_another_id_is_not_sent_to_its_old_self() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("a");
    let first = PeerProcess::start(&home, tracker.addr, &ring_flags(&["--ring-id", "50"]));
    let port = first.addr.port().to_string();
    drop(first);
    // The welcome service still lists 50 at this address, and names it
    // as the member to join through.
    let flags: Vec<&str> = ring_flags(&[])
        .into_iter()
        .chain(["--port", &port, "--ring-id", "51"])
        .collect();
    let again = PeerProcess::start(&home, tracker.addr, &flags);
    assert_eq!(RingClient::new().info(again.addr).unwrap().me.id, 51);
    assert_eq!(
        course_lines(tracker.addr, "li?"),
        [format!("51:{}", again.addr), "end".to_string()]
    );
}

#[test]
fn a_welcome_list_of_many_crashed_members_is_cleared_by_the_next_peer_to_join() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // 80 members listed at addresses nobody answers: more than the 64 ids
    // a join tries.
    let mut held = Vec::new();
    for id in 1000..1080 {
        let (socket, port) = port_held_shut();
        held.push(socket);
        course_lines(tracker.addr, &format!("yo:{id}:127.0.0.1:{port}"));
    }
    assert_eq!(course_lines(tracker.addr, "li?").len(), 81);
    let peer = PeerProcess::start(&dir.path().join("a"), tracker.addr, &ring_flags(&[]));
    let me = RingClient::new().info(peer.addr).unwrap().me;
    assert_eq!(
        course_lines(tracker.addr, "li?"),
        [format!("{}:{}", me.id, peer.addr), "end".to_string()]
    );
}

#[test]
fn a_crashed_class_member_written_without_a_port_is_taken_off_by_a_peer_on_another() {
    // A class's member on the ring_port, crashed: the list writes it
    // without a port, and the welcome service names it with its port to
    // a peer that gives its own. It was never matched on the list (taken
    // to be on the joiner's port), so never taken off: a thousand tries.
    let (_shut, ring_port) = port_held_shut();
    let tracker = TrackerProcess::start(&["--ring-port", &ring_port.to_string()]);
    course_lines(tracker.addr, "yo:58:127.0.0.1");
    assert_eq!(course_lines(tracker.addr, "li?"), ["58:127.0.0.1", "end"]);
    let dir = tempfile::tempdir().unwrap();
    let peer = PeerProcess::start(&dir.path().join("a"), tracker.addr, &ring_flags(&[]));
    let me = RingClient::new().info(peer.addr).unwrap().me;
    assert_eq!(
        course_lines(tracker.addr, "li?"),
        [format!("{}:{}", me.id, peer.addr), "end".to_string()]
    );
}

#[test]
fn a_crashed_peer_left_on_the_welcome_list_does_not_block_joins() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let flags = ring_flags(&["--ring-id", "42"]);
    let mut first = PeerProcess::start(&dir.path().join("a"), tracker.addr, &flags);
    first.child.kill().unwrap();
    first.wait(Duration::from_secs(10));
    assert_eq!(course_lines(tracker.addr, "li?").len(), 2, "42 and end");

    // Sent to the dead peer, the next one takes it off the list and is
    // the first of a new ring.
    let second = PeerProcess::start(&dir.path().join("b"), tracker.addr, &ring_flags(&[]));
    let me = RingClient::new().info(second.addr).unwrap().me;
    assert_eq!(
        course_lines(tracker.addr, "li?"),
        [format!("{}:{}", me.id, second.addr), "end".to_string()]
    );

    // The crashed peer comes back with its id (on a new port): its old
    // entry does not answer, so it is replaced.
    let again = PeerProcess::start(&dir.path().join("a"), tracker.addr, &flags);
    assert_eq!(RingClient::new().info(again.addr).unwrap().me.id, 42);
    assert_eq!(
        course_lines(tracker.addr, "ip?:42"),
        [again.addr.to_string()]
    );
}

#[test]
fn a_restarted_welcome_service_learns_the_ring_again_and_does_not_split_it() {
    // Told as soon as the members see the tracker close their sessions,
    // not at their next refresh, nor their next ping (both far away here).
    let mut ring = Ring::start(
        3,
        &["--ring-refresh-secs", "3600", "--tracker-ping-secs", "600"],
    );
    let members = ring.members();
    ring.settle(&members, Duration::from_secs(60));
    let port = ring.tracker.addr.port().to_string();
    ring.tracker.child.kill().unwrap();
    ring.tracker.wait_exit(Duration::from_secs(10));
    ring.tracker = TrackerProcess::start(&["--port", &port]);
    // (Their next user map refresh, 30 s away, would reconnect them too.)
    assert!(
        eventually(Duration::from_secs(10), || course_lines(
            ring.tracker.addr,
            "li?"
        )
        .len()
            == 4),
        "the members did not list themselves again: {:?}",
        course_lines(ring.tracker.addr, "li?")
    );
    // A newcomer is sent to one of them: one ring of four, not two.
    let home = ring.dir.path().join("newcomer");
    let newcomer = PeerProcess::start(&home, ring.tracker.addr, &ring_flags(&[]));
    ring.peers.push(newcomer);
    let members = ring.members();
    ring.settle(&members, Duration::from_secs(60));
}

#[test]
fn the_monitor_sees_a_second_ring_through_the_welcome_list() {
    let ring = Ring::start(2, &[]);
    let members = ring.members();
    ring.settle(&members, Duration::from_secs(60));
    // A peer of another tracker is a ring of its own; listed here by hand,
    // it is what a newcomer told `yaf` by a restarted tracker becomes.
    let other = TrackerProcess::start(&[]);
    let lone = PeerProcess::start(&ring.dir.path().join("lone"), other.addr, &ring_flags(&[]));
    let me = RingClient::new().info(lone.addr).unwrap().me;
    let answer = course_lines(ring.tracker.addr, &format!("yo:{}:{}", me.id, lone.addr));
    assert_ne!(
        answer.first().map(String::as_str),
        Some("wrq"),
        "{answer:?}"
    );
    // And a peer gone without leaving: named, but no problem.
    let gone_id = (0..65536u64)
        .find(|id| *id != me.id && members.iter().all(|m| m.id != *id))
        .unwrap();
    let gone = format!("{gone_id}:127.0.0.1:1");
    course_lines(ring.tracker.addr, &format!("yo:{gone}"));

    let start = members[0].addr.to_string();
    let (ok, text) = peer_command(ring.tracker.addr, &["ring", &start]);
    assert!(!ok, "{text}");
    let at = ring.tracker.addr;
    assert!(
        text.contains(&format!(
            "welcome list at {at}: 4 listed, 2 not in this walk; \
             not answering, gone without leaving: {gone}"
        )),
        "{text}"
    );
    assert!(text.contains("1 problem"), "{text}");
    assert!(
        text.contains(&format!(
            "{me} is on the welcome list at {at} but in another ring"
        )),
        "{text}"
    );
    // Another welcome service's list, asked for: none of this ring is on
    // it, and the line says so.
    let other_list = other.addr.to_string();
    let (ok, text) = peer_command(
        ring.tracker.addr,
        &["ring", &start, "--welcome", &other_list],
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "welcome list at {other_list}: 1 listed, 1 not in this walk \
             (none of the walked peers is listed"
        )),
        "{text}"
    );
}

#[test]
fn a_peer_of_another_ring_size_is_told_the_welcome_service_s() {
    let tracker = TrackerProcess::start(&["--ring-size", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let member = PeerProcess::start(
        &dir.path().join("member"),
        tracker.addr,
        &ring_flags(&["--ring-size", "100", "--ring-id", "50"]),
    );
    assert!(eventually(Duration::from_secs(30), || course_lines(
        tracker.addr,
        "li?"
    )
    .len()
        == 2));
    // Three members listed before it, gone (nobody answers there): the
    // newcomer asks on until one answers.
    let mut held = Vec::new();
    for id in 1..=3 {
        let (socket, port) = port_held_shut();
        held.push(socket);
        course_lines(tracker.addr, &format!("yo:{id}:127.0.0.1:{port}"));
    }
    assert_eq!(course_lines(tracker.addr, "li?").len(), 5);
    // The usual slip: --ring-size forgotten (the default is 65536).
    let said = join_refused(
        &dir.path().join("newcomer"),
        tracker.addr,
        &["--address", "127.0.0.1"],
    );
    assert!(
        said.contains("in a ring of size 100; this peer's ring_size is 65536 (--ring-size 100 joins that ring)"),
        "{said}"
    );
    drop(member);
}

/// The flags of a peer of the class's ring (size 100) on 127.0.0.3, and
/// `more`: another address, and another port than the class's members.
#[cfg(target_os = "linux")]
fn from_another_address<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--address", "127.0.0.3", "--ring-size", "100"];
    flags.extend_from_slice(more);
    flags
}

/// A peer started on another port than the class's `ring_port` cannot
/// reach the members the welcome service lists without a port (on
/// `ring_port`). It must not take them for gone and off the list: a
/// newcomer would then start a second ring.
#[cfg(target_os = "linux")]
#[test]
fn a_peer_on_another_port_leaves_the_class_s_members_on_the_welcome_list() {
    let (tracker, dir, member) = class_member_85_on_ring_port();
    let listed = ["85:127.0.0.2", "end"];
    assert_eq!(course_lines(tracker.addr, "li?"), listed);
    // The same id, from another address and port: taken, and said so.
    let said = join_refused(
        &dir.path().join("other"),
        tracker.addr,
        &from_another_address(&["--ring-id", "85"]),
    );
    assert!(said.contains("ring id 85 is taken"), "{said}");
    assert_eq!(course_lines(tracker.addr, "li?"), listed);
    drop(member);
}

/// The course's own welcome service writes every member as a bare IP (on
/// `ring_port`), in its answer to a join too. A peer sent to one from
/// another port cannot reach it there: it must say so, and neither take
/// the member off the list nor start a second ring.
#[cfg(target_os = "linux")]
#[test]
fn a_peer_sent_to_a_member_written_without_a_port_from_another_port_says_so() {
    use std::io::{BufRead, BufReader, Write};
    let (tracker, dir, member) = class_member_85_on_ring_port();
    // A stand-in for the course's welcome service: one line in, its
    // answer out, the connection closed; every `a+` is noted.
    let course = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let course_addr = course.local_addr().unwrap();
    let told: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let noted = std::sync::Arc::clone(&told);
    std::thread::spawn(move || {
        for stream in course.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let line = line.trim().to_string();
            let answer = if line.starts_with("yo:") {
                "127.0.0.2\n"
            } else if line == "li?" {
                "85:127.0.0.2\nend\n"
            } else if line.starts_with("ip?:") {
                "127.0.0.2\n"
            } else {
                "ok\n"
            };
            noted.lock().unwrap().push(line);
            let _ = (&stream).write_all(answer.as_bytes());
        }
    });
    let welcome = course_addr.to_string();
    let said = join_refused(
        &dir.path().join("other"),
        tracker.addr,
        &from_another_address(&["--ring-id", "20", "--ring-welcome", &welcome]),
    );
    assert!(
        said.contains("(written without a port: on the tracker's ring_port)"),
        "{said}"
    );
    let told = told.lock().unwrap().clone();
    assert!(
        !told.iter().any(|line| line.starts_with("a+:85")),
        "the member was taken off the list: {told:?}"
    );
    assert!(!said.contains("first peer"), "{said}");
    drop(member);
}

/// A tracker whose ring is a class's (`ring_port` a free port, 100 ids),
/// and one member on it: id 85 at 127.0.0.2, written as a bare IP.
#[cfg(target_os = "linux")]
fn class_member_85_on_ring_port() -> (TrackerProcess, tempfile::TempDir, PeerProcess) {
    let port = support::free_port().to_string();
    let tracker = TrackerProcess::start(&["--ring-port", &port, "--ring-size", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--address", "127.0.0.2", "--port", &port];
    args.extend(["--ring-size", "100", "--ring-id", "85"]);
    args.extend(ring_flags(&[]));
    let member = PeerProcess::start(&dir.path().join("member"), tracker.addr, &args);
    (tracker, dir, member)
}

/// Runs a ring peer's `get` from `home` with `args` (any port), which must
/// fail to join; what it said.
fn join_refused(home: &Path, tracker: SocketAddr, args: &[&str]) -> String {
    std::fs::create_dir_all(home).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_peer"))
        .current_dir(home)
        .args(["--log-file", "", "--tracker", &tracker.to_string()])
        .args(["--port", "0"])
        .args(args)
        .args(ring_flags(&[]))
        .args(["get", "nothing.bin"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{said}");
    said
}
