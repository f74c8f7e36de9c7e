//! The promises of RELIABILITY.md: nothing lost in a crash, a tracker that
//! can come and go, hostile peers that cannot spoil a download or knock a
//! server over, and nothing reachable that was not shared.

mod support;

use std::time::Duration;

use support::{
    eventually, random_bytes, start_peer, tracker_in_process, write_file, PeerProcess,
    TrackerProcess,
};

const PIECE: usize = 16 * 1024;
const WAIT: Duration = Duration::from_secs(60);

/// A `peer get` of an 8 MiB file from a seeder held to `upload_limit`,
/// killed (SIGKILL) once it has some pieces; its `.part` file is left in
/// `out`.
struct Interrupted {
    tracker: TrackerProcess,
    dir: tempfile::TempDir,
    _seeder: PeerProcess,
    data: Vec<u8>,
    key: String,
    out: std::path::PathBuf,
}

impl Interrupted {
    fn new(upload_limit: &str) -> Interrupted {
        let tracker = TrackerProcess::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(8 << 20, 3);
        let original = write_file(&dir.path().join("files"), "movie.mkv", &data);
        let mut seeder = PeerProcess::start(
            &dir.path().join("seeder"),
            tracker.addr,
            &[
                "--upload-limit",
                upload_limit,
                "share",
                original.to_str().unwrap(),
            ],
        );
        seeder.expect("sharing ");
        let mut observer = tracker.connect();
        let key = observer.key_of("movie");
        let out = dir.path().join("out");
        let interrupted = Interrupted {
            tracker,
            dir,
            _seeder: seeder,
            data,
            key,
            out,
        };
        let home = interrupted.dir.path().join("getter");
        let mut first = interrupted.get(&home);
        assert!(
            eventually(WAIT, || observer.leecher_pieces(&interrupted.key) >= 32),
            "no progress"
        );
        std::thread::sleep(Duration::from_millis(1200)); // a progress save since
        first.child.kill().unwrap(); // SIGKILL on Unix, TerminateProcess on Windows
        first.child.wait().unwrap();
        assert!(
            !interrupted.out.join("movie.mkv").exists(),
            "nothing under the final name"
        );
        assert!(interrupted.out.join("movie.mkv.part").exists());
        interrupted
    }

    /// `peer get <key> -o out`, its state in `home`, logging into
    /// `home/peer.log`.
    fn get(&self, home: &std::path::Path) -> PeerProcess {
        let log = home.join("peer.log");
        let args = [
            "--log-file",
            log.to_str().unwrap(),
            "--log-level",
            "info",
            "get",
            &self.key,
            "-o",
            self.out.to_str().unwrap(),
        ];
        PeerProcess::start(home, self.tracker.addr, &args)
    }

    /// The number `words` is followed by in `home`'s log (such as the
    /// pieces a resumed download started with).
    fn logged_count(home: &std::path::Path, words: &str) -> usize {
        let log = std::fs::read_to_string(home.join("peer.log")).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains(words))
            .unwrap_or_else(|| panic!("no {words:?} in the log:\n{log}"));
        line.split(words)
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count after {words:?} in {line}"))
    }

    /// Checks that the file is whole under its name, and no `.part` left.
    fn assert_done(&self) {
        assert_eq!(
            std::fs::read(self.out.join("movie.mkv")).unwrap(),
            self.data
        );
        assert!(!self.out.join("movie.mkv.part").exists());
    }
}

#[test]
fn a_download_killed_with_sigkill_resumes_from_its_verified_pieces() {
    let interrupted = Interrupted::new("1MB");
    let home = interrupted.dir.path().join("getter");
    let mut second = interrupted.get(&home);
    assert!(second.wait(Duration::from_secs(120)).success());
    interrupted.assert_done();
    let pieces = Interrupted::logged_count(&home, "movie.mkv: continuing with ");
    assert!(pieces >= 16, "resumed with only {pieces} pieces");
}

#[test]
fn a_part_file_whose_download_state_was_lost_is_taken_up_piece_by_piece() {
    let interrupted = Interrupted::new("1MB");
    // Another state folder: as if the first were deleted, or the peer
    // run from another working directory with a relative one.
    let elsewhere = interrupted.dir.path().join("elsewhere");
    let mut again = interrupted.get(&elsewhere);
    assert!(again.wait(Duration::from_secs(120)).success());
    interrupted.assert_done();
    let kept = Interrupted::logged_count(&elsewhere, "with no record of its download; ");
    assert!(kept >= 16, "took up only {kept} pieces");
}

#[cfg(unix)]
#[test]
fn a_link_put_where_a_part_file_was_is_never_written_through() {
    let interrupted = Interrupted::new("1MB");
    let precious = interrupted.dir.path().join("precious.txt");
    std::fs::write(&precious, b"precious data").unwrap();
    let part = interrupted.out.join("movie.mkv.part");
    std::fs::remove_file(&part).unwrap();
    std::os::unix::fs::symlink(&precious, &part).unwrap();
    // With the download's record (resumed), and without (taken up).
    for home in ["getter", "elsewhere"] {
        let mut again = interrupted.get(&interrupted.dir.path().join(home));
        assert!(!again.wait(WAIT).success(), "{home}");
        let said = again.stderr_text();
        assert!(said.contains("not a regular file"), "{home}: {said}");
        assert_eq!(std::fs::read(&precious).unwrap(), b"precious data");
    }
}

#[test]
fn a_second_get_of_a_download_under_way_leaves_it_and_its_state_alone() {
    // Slow enough (about 25 s for the rest) that the first is still under
    // way when the second has started, however busy the machine.
    let interrupted = Interrupted::new("300KB");
    let home = interrupted.dir.path().join("getter");
    let mut first = interrupted.get(&home);
    let log = home.join("peer.log");
    assert!(eventually(WAIT, || std::fs::read_to_string(&log)
        .is_ok_and(|log| log.contains("movie.mkv: continuing with "))));
    // The same file, into the same folder, on the same state folder.
    let mut second = interrupted.get(&home);
    assert!(!second.wait(WAIT).success());
    let said = second.stderr_text();
    assert!(said.contains("is being written by another peer"), "{said}");
    assert!(first.wait(Duration::from_secs(120)).success());
    interrupted.assert_done();
}

#[test]
fn downloads_go_on_while_the_tracker_restarts_and_peers_come_back_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker_in_process();
    let addr = tracker.local_addr();
    let data = random_bytes(200 * PIECE, 4);
    let original = write_file(&dir.path().join("files"), "big.bin", &data);
    let seeder = start_peer(
        dir.path(),
        "seeder",
        addr,
        // About 6 s for the whole file: the tracker stops well before.
        &[("upload_limit", "500KB"), ("user", "seed")],
    );
    let key = seeder.share(&original, |_| {}).unwrap().key;
    let leecher = start_peer(dir.path(), "leecher", addr, &[("user", "leech")]);
    let download = leecher.download(&key.to_string(), None).unwrap();
    assert!(eventually(WAIT, || download.status().pieces_done() > 10));

    // The tracker goes away in the middle of the download...
    tracker.shutdown();
    let at_stop = download.status().pieces_done();
    assert!(
        at_stop < 200,
        "the tracker stopped before the download ended"
    );
    std::thread::sleep(Duration::from_secs(2));
    // (Progress, not "still running": a slow machine may have finished.)
    assert!(
        download.is_finished() || download.status().pieces_done() > at_stop,
        "the download goes on without the tracker"
    );
    // ...and comes back empty on the same address.
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let tracker = swarmline::tracker::Tracker::start(listener, Default::default()).unwrap();

    // The download never needed it: it finishes from the neighbour it knew.
    let path = support::wait_within(download, Duration::from_secs(120)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    // And both peers came back on their own, announcing what they hold.
    let mut client = support::Client::connect(addr);
    let listed = format!("FILE {key} big.bin {} 16384 other 2 0", data.len());
    assert!(
        eventually(WAIT, || client.list(&format!("RQFS key={key}"))
            == [listed.clone()]),
        "peers did not come back: {:?}",
        client.list(&format!("RQFS key={key}"))
    );
    assert_eq!(client.list("USRS").len(), 2);
    drop(tracker);
}

#[test]
fn every_kind_of_broken_peer_is_cut_off_and_the_file_is_still_right() {
    use support::{Fake, FakePeer};
    let cases = [
        (Fake::WrongLength, "banned: piece"),
        (Fake::WrongIndex, "banned: sent piece"),
        (Fake::HugeLength, "banned: piece"),
        (Fake::Garbage, "banned:"),
        (
            Fake::Corrupt(|_| true),
            "banned: sent 1 pieces that failed their hash check",
        ),
        (Fake::Truncated, "dropped: connection"),
    ];
    for (i, (fake, expected)) in cases.into_iter().enumerate() {
        let swarm = support::seeded_swarm(
            "f.bin",
            30 * PIECE,
            60 + i as u64,
            // About 1.5 s for the file: time for the broken peer, a thread
            // of this test process, to be asked even on a busy machine.
            &[("upload_limit", "300KB")],
        );
        let data = &swarm.data;
        let broken = FakePeer::start(
            swarm.tracker.local_addr(),
            "f.bin",
            data.clone(),
            PIECE as u32,
            fake,
        );
        // One strike is enough here, so the ban is certain to be seen.
        let leecher = swarm.peer("leecher", &[("max_bad_pieces", "1")]);
        let download = leecher.download("f.bin", None).unwrap();
        let path = support::wait_within(std::sync::Arc::clone(&download), WAIT)
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(&std::fs::read(path).unwrap(), data, "case {i}");
        let status = download.status();
        let source = status
            .sources
            .iter()
            .find(|s| s.peer == broken.addr)
            .unwrap();
        assert_eq!(
            source.pieces, 0,
            "case {i}: nothing of the broken peer was kept"
        );
        let reason = source.dropped.clone().unwrap_or_default();
        assert!(reason.starts_with(expected), "case {i}: {reason}");
    }
}

#[test]
fn the_mini_server_drops_silent_and_dribbling_clients_and_caps_each_address() {
    use std::io::{Read, Write};
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let peer = start_peer(
        dir.path(),
        "alice",
        tracker.local_addr(),
        &[("idle_timeout_secs", "1"), ("max_connections_per_ip", "3")],
    );
    // Silent: told, then closed.
    let mut silent = support::Client::connect(peer.listen_addr());
    assert_eq!(
        silent.recv().as_deref(),
        Some("ERRR 303 no complete line for 1 s (keep-alive deadline), closing")
    );
    assert_eq!(silent.recv(), None);
    // One byte every 200 ms never makes a line: dropped all the same.
    let mut slow = std::net::TcpStream::connect(peer.listen_addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < WAIT {
        if slow.write_all(b"B").is_err() {
            break;
        }
        let mut buf = [0u8; 128];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    assert!(
        String::from_utf8_lossy(&got).starts_with("ERRR 303 "),
        "{got:?}"
    );
    // Three connections from one address at most.
    let mut open: Vec<support::Client> = (0..3)
        .map(|_| support::Client::connect(peer.listen_addr()))
        .collect();
    for client in open.iter_mut() {
        assert_eq!(client.ask("PING"), "OK pong");
    }
    let mut fourth = support::Client::connect(peer.listen_addr());
    assert!(fourth
        .recv()
        .unwrap()
        .starts_with("ERRR 500 too many connections from 127.0.0.1"));
}

mod live_fuzz {
    //! Random and mutated lines against a live tracker and a live
    //! mini-server; after each batch, both must still answer correctly.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::OnceLock;
    use std::time::Duration;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::support;

    /// A tracker and a peer sharing `hello`, for the whole test binary.
    struct Servers {
        tracker: SocketAddr,
        peer: SocketAddr,
        hello_key: String,
    }

    fn servers() -> &'static Servers {
        static SERVERS: OnceLock<Servers> = OnceLock::new();
        SERVERS.get_or_init(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let options = swarmline::tracker::TrackerOptions {
                max_connections_per_ip: 100_000,
                ..Default::default()
            };
            let tracker = swarmline::tracker::Tracker::start(listener, options).unwrap();
            let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
            let peer = support::start_peer(
                dir.path(),
                "alice",
                tracker.local_addr(),
                &[("max_connections_per_ip", "100000")],
            );
            let hello = support::write_file(dir.path(), "hello", b"hello");
            let hello_key = peer.share(&hello, |_| {}).unwrap().key.to_string();
            let servers = Servers {
                tracker: tracker.local_addr(),
                peer: peer.listen_addr(),
                hello_key,
            };
            // Both live as long as the test binary.
            std::mem::forget(tracker);
            std::mem::forget(peer);
            servers
        })
    }

    /// Good lines of both grammars, as material for mutations.
    fn good_lines() -> Vec<String> {
        let key = "2f2dc94a9b5240310f364df5b7abe45849f2d1e14de851aaa69065a9c14ad935";
        vec![
            "HELO 7001 alice".into(),
            format!("ADDF {key} hello 5 16384 other /home/alice/hello"),
            format!("RMVF {key}"),
            "RQFS name=*.mp3 min=1MiB user=bob".into(),
            format!("REQF {key}"),
            format!("REQF {key} 0 1 2"),
            format!("BITF {key} 80"),
            format!("MANF {key}"),
            "USRS".into(),
            "LSTF".into(),
        ]
    }

    fn junk() -> impl Strategy<Value = Vec<u8>> {
        let mutated = (
            proptest::sample::select(good_lines()),
            vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        )
            .prop_map(|(line, edits)| {
                let mut bytes = line.into_bytes();
                for (at, byte) in edits {
                    let at = at.index(bytes.len() + 1);
                    if at < bytes.len() && byte % 2 == 0 {
                        bytes[at] = byte;
                    } else {
                        bytes.insert(at, byte);
                    }
                }
                bytes
            });
        prop_oneof![
            vec(any::<u8>(), 0..400),
            mutated,
            "[A-Z]{4}( [ -~]{0,80}){0,6}".prop_map(String::into_bytes),
        ]
    }

    /// Sends the lines, reads whatever comes back until the server closes
    /// (or a second passes), and never panics on what it reads.
    fn throw(addr: SocketAddr, lines: &[Vec<u8>]) {
        let mut stream = TcpStream::connect(addr).unwrap();
        for line in lines {
            if stream
                .write_all(line)
                .and_then(|()| stream.write_all(b"\n"))
                .is_err()
            {
                return; // the server closed on us (a QUIT among the junk)
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let _ = stream.read_to_end(&mut Vec::new());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_and_mutated_lines_never_take_a_server_down(lines in vec(junk(), 1..12)) {
            let servers = servers();
            throw(servers.tracker, &lines);
            throw(servers.peer, &lines);

            let mut tracker = support::Client::connect(servers.tracker);
            prop_assert_eq!(tracker.ask("PING"), "OK pong");
            let files = tracker.list(&format!("RQFS key={}", servers.hello_key));
            prop_assert_eq!(files.len(), 1);
            let expected = format!("FILE {} hello 5 16384 other ", servers.hello_key);
            prop_assert!(files[0].starts_with(&expected), "{}", files[0]);

            let mut peer = support::Client::connect(servers.peer);
            prop_assert_eq!(peer.ask(&format!("BITF {}", servers.hello_key)), format!("BITF {} 80", servers.hello_key));
            peer.send(&format!("REQF {} 0", servers.hello_key));
            prop_assert_eq!(peer.line(), format!("PIEC {} 0 5", servers.hello_key));
            prop_assert_eq!(peer.recv_bytes(5), b"hello".to_vec());
        }
    }
}

#[test]
fn no_request_can_name_a_path_on_the_mini_server() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let peer = start_peer(dir.path(), "alice", tracker.local_addr(), &[]);
    let hello = write_file(&dir.path().join("shared"), "hello", b"hello");
    let key = peer.share(&hello, |_| {}).unwrap().key;
    let mut client = support::Client::connect(peer.listen_addr());
    let paths = [
        "../../etc/passwd",
        "/etc/passwd",
        "C:\\Windows\\win.ini",
        "..",
        "%2E%2E%2Fetc",
        hello.to_str().unwrap(),
    ];
    for path in paths {
        for request in [
            format!("MANF {path}"),
            format!("BITF {path}"),
            format!("REQF {path} 0"),
        ] {
            let reply = client.ask(&request);
            assert!(
                reply.starts_with("ERRR 202 bad key"),
                "{request} -> {reply}"
            );
        }
        let reply = client.ask(&format!("REQF {key} {path}"));
        assert!(reply.starts_with("ERRR 202 bad index"), "{path} -> {reply}");
    }
    // An unknown key is refused, and the connection still serves the file.
    let unknown = "00".repeat(32);
    assert_eq!(
        client.ask(&format!("MANF {unknown}")),
        format!("ERRR 400 no file with key {unknown}")
    );
    assert_eq!(client.ask(&format!("BITF {key}")), format!("BITF {key} 80"));
}

#[cfg(unix)]
#[test]
fn a_symlink_swapped_in_after_sharing_never_leaks_its_target() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let peer = start_peer(dir.path(), "alice", tracker.local_addr(), &[]);
    // The same size as the shared file: a peer that followed the link would
    // read a whole piece of it, and send it.
    let secret = write_file(&dir.path().join("private"), "secret", b"SECRT");
    let shared = write_file(&dir.path().join("shared"), "note", b"hello");
    let key = peer.share(&shared, |_| {}).unwrap().key;
    // The shared path becomes a link to a secret file of the same size.
    std::fs::remove_file(&shared).unwrap();
    std::os::unix::fs::symlink(&secret, &shared).unwrap();
    let mut client = support::Client::connect(peer.listen_addr());
    client.send(&format!("REQF {key} 0"));
    let header = client.line();
    if header.starts_with("PIEC") {
        assert_eq!(
            client.recv_bytes(5),
            b"hello".to_vec(),
            "served the shared bytes, not the link's target"
        );
    } else {
        assert!(header.starts_with("ERRR"), "{header}");
    }
    // And sharing a link shares what it points to, under its real path.
    let link = dir.path().join("shared").join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let file = peer.share(&link, |_| {}).unwrap();
    assert_eq!(file.path(), dunce::canonicalize(&secret).unwrap());
}

#[test]
fn a_sole_source_that_keeps_failing_is_given_up_and_the_download_says_why() {
    use support::{Fake, FakePeer};
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(10 * PIECE, 81);
    // Its connections always break in the middle of a piece: no strike,
    // but it never gives anything.
    let broken = FakePeer::start(
        tracker.local_addr(),
        "t.bin",
        data,
        PIECE as u32,
        Fake::Truncated,
    );
    // The stall timeout is longer than the longest pause between retries
    // (4 s), so only giving the peer up lets the download end; and longer
    // than the 15 s after which a peer given up is tried once more: that
    // try (the peer on trial) does not keep the download waiting.
    let leecher = start_peer(
        dir.path(),
        "leecher",
        tracker.local_addr(),
        &[("stall_timeout_secs", "20")],
    );
    let download = leecher.download(&broken.key.to_string(), None).unwrap();
    let reason = support::wait_within(std::sync::Arc::clone(&download), WAIT).unwrap_err();
    assert!(reason.contains("stalled at 0 of 10 pieces"), "{reason}");
    let source = download
        .status()
        .sources
        .into_iter()
        .find(|s| s.peer == broken.addr)
        .unwrap();
    let dropped = source.dropped.unwrap_or_default();
    assert!(
        dropped.starts_with("given up after 4 failures in a row"),
        "{dropped}"
    );
}

#[test]
fn a_sole_source_given_up_is_tried_again_once_it_is_back_at_its_address() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(200 * PIECE, 83);
    let original = write_file(&dir.path().join("files"), "back.bin", &data);
    // A fixed port, as in a classroom: the seeder comes back at the same
    // address, so under the same peer id. Below every system's range of
    // ports given out for port 0, so that no other test gets it meanwhile.
    let port = (0..1000)
        .map(|_| 20_000 + random_u16() % 12_000)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below 32000")
        .to_string();
    let seeder_settings = [("port", port.as_str()), ("upload_limit", "200KB")];
    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), &seeder_settings);
    let key = seeder.share(&original, |_| {}).unwrap().key;
    let leecher = start_peer(
        dir.path(),
        "leecher",
        tracker.local_addr(),
        &[("stall_timeout_secs", "120")],
    );
    let download = leecher.download(&key.to_string(), None).unwrap();
    assert!(eventually(WAIT, || download.status().pieces_done() > 10));

    seeder.shutdown();
    let given_up = || {
        download.status().sources.iter().any(|source| {
            source
                .dropped
                .as_deref()
                .is_some_and(|why| why.starts_with("given up"))
        })
    };
    assert!(
        eventually(WAIT, given_up),
        "{:?}",
        download.status().sources
    );

    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), &seeder_settings);
    seeder.share(&original, |_| {}).unwrap();
    let path = support::wait_within(download, Duration::from_secs(120)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

// Unix: Windows may keep a file deleted while open under its name until
// it is closed, so the download cannot see it go.
#[cfg(unix)]
#[test]
fn a_part_file_deleted_or_replaced_during_its_download_stops_it_and_the_next_starts_over() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(200 * PIECE, 84);
    let original = write_file(&dir.path().join("files"), "gone.bin", &data);
    let seeder = start_peer(
        dir.path(),
        "seeder",
        tracker.local_addr(),
        &[("upload_limit", "300KB")],
    );
    let key = seeder.share(&original, |_| {}).unwrap().key;
    let leecher = start_peer(dir.path(), "leecher", tracker.local_addr(), &[]);
    let download = leecher.download(&key.to_string(), None).unwrap();
    assert!(eventually(WAIT, || download.status().pieces_done() > 10));
    let part = dir
        .path()
        .join("leecher")
        .join("downloads")
        .join("gone.bin.part");
    std::fs::remove_file(&part).unwrap();
    let reason = support::wait_within(download, WAIT).unwrap_err();
    assert!(
        reason.contains("was deleted, moved or replaced"),
        "{reason}"
    );
    assert!(leecher.unfinished().is_empty(), "its pieces went with it");

    // Replaced by another file (here a copy of itself, put in its place):
    // stopped too, as its pieces would go into a file no longer there...
    let again = leecher.download(&key.to_string(), None).unwrap();
    assert!(eventually(WAIT, || again.status().pieces_done() > 10));
    let copy = dir.path().join("copy.part");
    std::fs::copy(&part, &copy).unwrap();
    std::fs::rename(&copy, &part).unwrap();
    let reason = support::wait_within(again, WAIT).unwrap_err();
    assert!(
        reason.contains("was deleted, moved or replaced"),
        "{reason}"
    );
    // ...and the file now there, nobody's, is taken up piece by piece.
    let third = leecher.download(&key.to_string(), None).unwrap();
    let path = support::wait_within(third, WAIT).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

/// Whether a file of this process is open under a name that contains
/// `name` (Linux: `/proc/self/fd`; elsewhere, unknown: false).
fn open_here(name: &str) -> bool {
    std::fs::read_dir("/proc/self/fd").is_ok_and(|fds| {
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|target| target.to_string_lossy().contains(name))
    })
}

/// A download that failed keeps its `.part` file, to go on later. Deleted
/// by hand then, it is forgotten at the peer's next look at its files:
/// the file's handle closes, and its space on the disk comes back (both
/// were kept until the peer stopped, or downloaded the file again).
#[test]
fn a_failed_download_whose_part_file_is_deleted_is_let_go() {
    let swarm = support::seeded_swarm("left.bin", 20 * PIECE, 87, &[]);
    let leecher = swarm.peer("leecher", &[]);
    let home = swarm.dir.path().join("leecher");
    let part = support::plant_partial(&leecher, &home, "left.bin", &swarm.data, |i| i < 10);
    assert_eq!(leecher.unfinished().len(), 1, "kept, to go on later");
    let key = swarm.key;
    // Not "still downloading": how to drop it.
    let refused = leecher.unshare(&key.to_string()).unwrap_err().to_string();
    assert!(
        refused.contains("is an unfinished download") && refused.contains("left.bin.part"),
        "{refused}"
    );
    std::fs::remove_file(&part).unwrap();
    assert!(
        eventually(WAIT, || leecher.unfinished().is_empty()),
        "forgotten"
    );
    assert!(
        eventually(WAIT, || !open_here("left.bin.part")),
        "its handle is closed"
    );
}

/// A finished download's whole folder deleted: the file is withdrawn, not
/// served from the deleted copy. (A folder missing may be a disk not
/// mounted, left for later: told apart by the open file having no name
/// left, which Unix tells.)
#[cfg(unix)]
#[test]
fn a_shared_file_whose_folder_is_deleted_is_withdrawn() {
    let swarm = support::seeded_swarm("folder.bin", 6 * PIECE, 88, &[]);
    let leecher = swarm.peer("leecher", &[]);
    let folder = swarm.dir.path().join("kept");
    let download = leecher
        .download(&swarm.key.to_string(), Some(folder.as_path()))
        .unwrap();
    support::wait_within(download, WAIT).unwrap();
    let offered = || {
        leecher
            .files()
            .iter()
            .any(|f| f.key == swarm.key && f.is_offered())
    };
    assert!(offered());
    std::fs::remove_dir_all(&folder).unwrap();
    assert!(eventually(WAIT, || !offered()), "withdrawn");
    assert!(
        eventually(WAIT, || !open_here("kept/folder.bin")),
        "its handle is closed"
    );
}

#[test]
fn a_name_now_shared_as_another_file_says_how_to_fetch_that_one() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let old = random_bytes(100 * PIECE, 85);
    let new = random_bytes(60 * PIECE, 86);
    let first = start_peer(
        dir.path(),
        "first",
        tracker.local_addr(),
        &[("upload_limit", "300KB")],
    );
    first
        .share(
            &write_file(&dir.path().join("old"), "mid.bin", &old),
            |_| {},
        )
        .unwrap();
    let leecher = start_peer(
        dir.path(),
        "leecher",
        tracker.local_addr(),
        &[("stall_timeout_secs", "3")],
    );
    let download = leecher.download("mid.bin", None).unwrap();
    assert!(eventually(WAIT, || download.status().pieces_done() > 5));
    download.cancel();
    assert!(support::wait_within(download, WAIT).is_err());
    // The old file leaves the swarm; another is shared under its name.
    first.shutdown();
    let second = start_peer(dir.path(), "second", tracker.local_addr(), &[]);
    second
        .share(
            &write_file(&dir.path().join("new"), "mid.bin", &new),
            |_| {},
        )
        .unwrap();

    // By name, the unfinished download goes on, finds nobody, and says
    // what to do.
    let stuck = leecher.download("mid.bin", None).unwrap();
    let reason = support::wait_within(stuck, WAIT).unwrap_err();
    let part = dir
        .path()
        .join("leecher")
        .join("downloads")
        .join("mid.bin.part");
    assert!(reason.contains("no peer holding mid.bin"), "{reason}");
    assert!(
        reason.contains(&format!("delete {}", part.display())),
        "{reason}"
    );

    // Done as it says: the new file, at once.
    std::fs::remove_file(&part).unwrap();
    let fresh = leecher.download("mid.bin", None).unwrap();
    let path = support::wait_within(fresh, WAIT).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), new);
}

#[test]
fn a_download_with_every_piece_in_but_no_final_name_is_finished() {
    let swarm = support::seeded_swarm("whole.bin", 12 * PIECE, 82, &[]);
    // A peer that had verified every piece when it was stopped, before the
    // rename: all the pieces are in its .part file.
    let peer = swarm.peer("peer", &[]);
    let home = swarm.dir.path().join("peer");
    let part = support::plant_partial(&peer, &home, "whole.bin", &swarm.data, |_| true);
    assert_eq!(
        peer.unfinished().len(),
        1,
        "listed as unfinished, to be resumed"
    );
    let download = peer.download("whole.bin", None).unwrap();
    let path = support::wait_within(download, WAIT).unwrap();
    assert_eq!(path, home.join("downloads").join("whole.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), swarm.data);
    assert!(!part.exists());
    assert!(peer.unfinished().is_empty());

    // And a .part left beside the verified file (a crash between the two
    // steps of the rename) is cleaned up, not a dead end.
    let other = swarm.peer("other", &[]);
    let home = swarm.dir.path().join("other");
    let part = support::plant_partial(&other, &home, "whole.bin", &swarm.data, |_| true);
    let whole = home.join("downloads").join("whole.bin");
    std::fs::write(&whole, &swarm.data).unwrap();
    let download = other.download("whole.bin", None).unwrap();
    assert_eq!(support::wait_within(download, WAIT).unwrap(), whole);
    assert!(!part.exists(), "the leftover .part is gone");
    assert_eq!(std::fs::read(&whole).unwrap(), swarm.data);

    // An unfinished download listed at its final name (a run renamed it
    // and could not open it again, before such a file left the library):
    // asked again, it is done, and the file stays.
    let third = swarm.peer("third", &[]);
    let downloads = swarm.dir.path().join("third").join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let whole = downloads.join("whole.bin");
    support::plant_partial_at(&third, &whole, "whole.bin", &swarm.data, |_| true);
    let download = third.download("whole.bin", None).unwrap();
    assert_eq!(support::wait_within(download, WAIT).unwrap(), whole);
    assert_eq!(std::fs::read(&whole).unwrap(), swarm.data, "the file stays");
}

#[test]
fn an_unfinished_download_asked_into_another_folder_is_refused_not_moved() {
    let swarm = support::seeded_swarm("half.bin", 12 * PIECE, 83, &[]);
    let peer = swarm.peer("peer", &[]);
    let home = swarm.dir.path().join("peer");
    let part = support::plant_partial(&peer, &home, "half.bin", &swarm.data, |i| i < 6);
    let elsewhere = swarm.dir.path().join("elsewhere");
    let Err(refused) = peer.download("half.bin", Some(&elsewhere)) else {
        panic!("an unfinished download went on in another folder");
    };
    let refused = refused.to_string();
    assert!(
        refused.starts_with("half.bin is unfinished in")
            && refused.contains("(6 of 12 pieces")
            && refused.contains(", not ")
            && refused.contains("elsewhere"),
        "{refused}"
    );
    assert!(!elsewhere.exists(), "nothing made where it was refused");
    assert!(part.exists(), "the verified pieces are kept");
    assert_eq!(peer.unfinished().len(), 1);

    // Its own folder, named another way, is where it goes on.
    let same = home
        .join("downloads")
        .join(".")
        .join("..")
        .join("downloads");
    let download = peer.download("half.bin", Some(&same)).unwrap();
    let path = support::wait_within(download, WAIT).unwrap();
    assert_eq!(path, home.join("downloads").join("half.bin"));
    assert_eq!(std::fs::read(&path).unwrap(), swarm.data);
}

#[test]
fn a_link_kept_past_the_peers_idle_deadline_is_replaced_not_blamed() {
    use swarmline::peer::link::{LinkError, PeerLink};
    use swarmline::protocol::ring::RingRequest;
    use swarmline::protocol::ErrorCode;
    use swarmline::ring::{RingClient, RingError};
    // A peer that closes connections idle for 1 s (with `ERRR 303`).
    let swarm = support::seeded_swarm("idle.bin", 4 * PIECE, 84, &[("idle_timeout_secs", "1")]);
    let addr = swarm.seeder.listen_addr();
    let past_the_deadline = || std::thread::sleep(Duration::from_millis(2500));

    // A link: stale once the peer has closed it, and that farewell is a
    // closed connection, not a refusal to hold against the peer.
    let mut link = PeerLink::connect(addr).unwrap();
    assert_eq!(link.shares().unwrap().len(), 1);
    assert!(!link.went_stale(), "just used");
    assert!(
        eventually(Duration::from_secs(10), || link.went_stale()),
        "closed by the peer as idle"
    );
    match link.shares() {
        Err(LinkError::Io(_)) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
    let mut quiet = PeerLink::connect(swarm.tracker.local_addr()).unwrap();
    quiet.send_line(&"PING").unwrap();
    assert!(quiet.read_text().unwrap().starts_with("OK"));
    past_the_deadline();
    assert!(!quiet.went_stale(), "a live, quiet link is not stale");

    // The ring's client keeps connections for reuse: the one kept past the
    // deadline is replaced, and the answer is the peer's own (this peer is
    // in no ring: ERRR 200), not the farewell.
    let client = RingClient::new();
    let code = |answer| match answer {
        Err(RingError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        code(client.call(addr, &RingRequest::Info)),
        ErrorCode::UnknownVerb
    );
    past_the_deadline();
    assert_eq!(
        code(client.call(addr, &RingRequest::Info)),
        ErrorCode::UnknownVerb
    );
}

#[test]
fn two_peers_on_one_state_folder_never_resume_the_same_download() {
    let swarm = support::seeded_swarm("twice.bin", 12 * PIECE, 13, &[]);
    // A download stopped part-way leaves its state in `twin`'s folder.
    let first = swarm.peer("twin", &[("download_limit", "20kB")]);
    let download = first.download("twice.bin", None).unwrap();
    assert!(support::eventually(WAIT, || download
        .status()
        .pieces_done()
        > 0));
    first.shutdown();
    // Started again, a peer resumes it; a second peer on the same folder
    // leaves it to the first (and its state for later).
    let resumed = swarm.peer("twin", &[]);
    assert_eq!(resumed.unfinished().len(), 1);
    let second = swarm.peer("twin", &[]);
    assert!(second.unfinished().is_empty());
    drop(second);
    let download = resumed.download("twice.bin", None).unwrap();
    let path = support::wait_within(download, WAIT).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), swarm.data);
}

/// A pseudo-random number for picking a port (no extra crate for tests:
/// each `RandomState` has keys of its own).
fn random_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish() as u16
}
