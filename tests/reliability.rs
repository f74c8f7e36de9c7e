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

/// The pieces the tracker says the one leecher of `key` holds.
fn leecher_pieces(observer: &mut support::Client, key: &str) -> u64 {
    observer
        .list(&format!("REQF {key}"))
        .iter()
        .find(|p| p.contains(" leecher "))
        .and_then(|p| p.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_download_killed_with_sigkill_resumes_from_its_verified_pieces() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(8 << 20, 3);
    let original = write_file(&dir.path().join("files"), "movie.mkv", &data);
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker.addr,
        &["--upload-limit", "1MB", "share", original.to_str().unwrap()],
    );
    seeder.expect("sharing ");
    let mut observer = tracker.connect();
    let key = observer.list("RQFS movie")[0]
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();

    let home = dir.path().join("getter");
    let out = dir.path().join("out");
    let log = home.join("peer.log");
    let get = [
        "--log-file",
        log.to_str().unwrap(),
        "--log-level",
        "info",
        "get",
        &key,
        "-o",
        out.to_str().unwrap(),
    ];
    let mut first = PeerProcess::start(&home, tracker.addr, &get);
    assert!(
        eventually(WAIT, || leecher_pieces(&mut observer, &key) >= 32),
        "no progress"
    );
    std::thread::sleep(Duration::from_millis(1200)); // a progress save since
    first.child.kill().unwrap(); // SIGKILL on Unix, TerminateProcess on Windows
    first.child.wait().unwrap();
    assert!(
        !out.join("movie.mkv").exists(),
        "nothing under the final name"
    );
    assert!(out.join("movie.mkv.part").exists());

    let mut second = PeerProcess::start(&home, tracker.addr, &get);
    assert!(second.wait(Duration::from_secs(120)).success());
    assert_eq!(std::fs::read(out.join("movie.mkv")).unwrap(), data);
    assert!(!out.join("movie.mkv.part").exists());
    let log = std::fs::read_to_string(&log).unwrap();
    let resumed = log
        .lines()
        .find(|l| l.contains("movie.mkv: continuing with "))
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    let pieces: usize = resumed
        .split("continuing with ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pieces >= 16, "resumed with only {pieces} pieces: {resumed}");
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
        &[("upload_limit", "1MB"), ("user", "seed")],
    );
    let key = seeder.share(&original, |_| {}).unwrap().key;
    let leecher = start_peer(dir.path(), "leecher", addr, &[("user", "leech")]);
    let download = leecher.download(&key.to_string(), None).unwrap();
    assert!(eventually(WAIT, || download.status().pieces_done > 10));

    // The tracker goes away in the middle of the download...
    tracker.shutdown();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !download.is_finished(),
        "the download should still be running"
    );
    // ...and comes back empty on the same address.
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let tracker = swarmline::tracker::Tracker::start(listener, Default::default()).unwrap();

    // The download never needed it: it finishes from the neighbour it knew.
    let path = support::wait_within(download, Duration::from_secs(120)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    // And both peers came back on their own, announcing what they hold.
    let mut client = support::Client::connect(addr);
    assert!(
        eventually(WAIT, || client.list(&format!("REQF {key}")).len() == 2),
        "peers did not come back: {:?}",
        client.list(&format!("REQF {key}"))
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
        let tracker = tracker_in_process();
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(30 * PIECE, 60 + i as u64);
        let original = write_file(&dir.path().join("files"), "f.bin", &data);
        let honest = start_peer(
            dir.path(),
            "honest",
            tracker.local_addr(),
            &[("upload_limit", "2MB")],
        );
        honest.share(&original, |_| {}).unwrap();
        let broken = FakePeer::start(
            tracker.local_addr(),
            "f.bin",
            data.clone(),
            PIECE as u32,
            fake,
        );
        // One strike is enough here, so the ban is certain to be seen.
        let leecher = start_peer(
            dir.path(),
            "leecher",
            tracker.local_addr(),
            &[("max_bad_pieces", "1")],
        );
        let download = leecher.download("f.bin", None).unwrap();
        let path = support::wait_within(std::sync::Arc::clone(&download), WAIT)
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(std::fs::read(path).unwrap(), data, "case {i}");
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
