//! Swarm downloads between peers on 127.0.0.1: the bytes on disk must be
//! the original's, whatever the size and however many peers take part.

mod support;

use std::time::Duration;

use swarmline::peer::{DownloadState, Peer};

use support::{
    random_bytes, seeded_swarm, start_peer, tracker_in_process, write_file, Fake, FakePeer,
};

const PIECE: usize = 16 * 1024;

#[test]
fn one_seeder_to_one_leecher_for_every_edge_size() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), &[]);
    let leecher = start_peer(dir.path(), "leecher", tracker.local_addr(), &[]);
    for (i, size) in [0, 1, PIECE, PIECE + 1, 5 * PIECE + 123]
        .into_iter()
        .enumerate()
    {
        let name = format!("file-{size}.bin");
        let data = random_bytes(size, i as u64);
        let original = write_file(&dir.path().join("originals"), &name, &data);
        let shared = seeder.share(&original, |_| {}).unwrap();
        let download = leecher.download(&shared.key.to_string(), None).unwrap();
        let path = download.wait().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(std::fs::read(&path).unwrap(), data, "{name}");
        assert!(
            !path.with_file_name(format!("{name}.part")).exists(),
            "no .part left"
        );
        assert_eq!(download.status().state, DownloadState::Done(path));
    }
    leecher.shutdown();
    seeder.shutdown();
    tracker.shutdown();
}

#[test]
fn three_seeders_all_serve_a_leecher() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(200 * PIECE, 7);
    let original = write_file(&dir.path().join("originals"), "big.bin", &data);
    let seeders: Vec<_> = (0..3)
        .map(|i| {
            // A modest upload limit on each seeder keeps any one of them
            // from serving the whole file before the others get a turn
            // (about 4 s for the file from all three).
            let peer = start_peer(
                dir.path(),
                &format!("seeder{i}"),
                tracker.local_addr(),
                &[("upload_limit", "300KB")],
            );
            peer.share(&original, |_| {}).unwrap();
            peer
        })
        .collect();
    let leecher = start_peer(dir.path(), "leecher", tracker.local_addr(), &[]);
    let download = leecher.download("big.bin", None).unwrap();
    let path = download.wait().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data);
    let status = download.status();
    assert_eq!(status.sources.len(), 3);
    for source in &status.sources {
        assert!(
            source.pieces > 0,
            "{} served nothing: {:?}",
            source.peer,
            status.sources
        );
    }
    assert_eq!(status.sources.iter().map(|s| s.pieces).sum::<u64>(), 200);
    drop(seeders);
}

#[test]
fn pieces_with_wrong_bytes_are_thrown_away_and_the_liar_is_banned() {
    // About 3 s for the file from the honest seeder: time for the liar, a
    // thread of this test process, to be asked three pieces.
    let swarm = seeded_swarm("doc.bin", 40 * PIECE + 5, 11, &[("upload_limit", "200KB")]);
    // A liar that flips a byte of every piece it sends.
    let liar = FakePeer::start(
        swarm.tracker.local_addr(),
        "doc.bin",
        swarm.data.clone(),
        PIECE as u32,
        Fake::Corrupt(|_| true),
    );
    assert_eq!(liar.key, swarm.key);

    let leecher = swarm.peer("leecher", &[]);
    let download = leecher.download(&swarm.key.to_string(), None).unwrap();
    let path = download.wait().unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        swarm.data,
        "the file is right"
    );
    let status = download.status();
    let liar_status = status.sources.iter().find(|s| s.peer == liar.addr).unwrap();
    assert_eq!(liar_status.pieces, 0, "no piece of the liar was kept");
    let reason = liar_status.dropped.as_deref().unwrap_or("");
    assert!(
        reason.starts_with("banned: sent 3 pieces that failed their hash check"),
        "{reason}"
    );
}

#[test]
fn a_download_on_its_way_cannot_be_unshared() {
    let swarm = seeded_swarm("doc.bin", 40 * PIECE, 13, &[("upload_limit", "200KB")]);
    let leecher = swarm.peer("leecher", &[]);
    let key = swarm.key.to_string();
    let download = leecher.download(&key, None).unwrap();
    assert!(support::eventually(Duration::from_secs(30), || download
        .status()
        .pieces_done()
        > 0));
    // The shell's `unregister` of a file on its way: refused (its state
    // would bring it back, offered, at the next start).
    let refused = leecher.unshare(&key).unwrap_err().to_string();
    assert!(refused.contains("is still downloading"), "{refused}");
    // Named by the path it will have, as a user would: the same.
    let part = leecher.library().get(&swarm.key).unwrap().path();
    let final_path = part.with_file_name("doc.bin");
    let refused = leecher
        .unshare(final_path.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is still downloading"), "{refused}");
    let path = download.wait().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), swarm.data);
    // Once here, it can be.
    leecher.unshare(&key).unwrap();
}

#[test]
fn a_file_given_as_the_folder_to_save_into_is_refused_and_left_alone() {
    let swarm = seeded_swarm("doc.bin", 1000, 15, &[]);
    let peer = swarm.peer("getter", &[]);
    let not_a_folder = write_file(swarm.dir.path(), "notes.txt", b"mine");
    let error = peer
        .download(&swarm.key.to_string(), Some(&not_a_folder))
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        format!(
            "{} is a file, not a folder to save into",
            not_a_folder.display()
        )
    );
    assert_eq!(std::fs::read(&not_a_folder).unwrap(), b"mine");
    // No file named at all (`peer get ""`): said so, not a tracker's
    // refusal of an empty pattern.
    let error = peer.download("", None).err().unwrap();
    assert_eq!(error.to_string(), "which file? Give its key or its name");
    // The same file as the configured download folder: the same words,
    // not "cannot create it: File exists".
    let configured = swarm.peer(
        "configured",
        &[("download_dir", not_a_folder.to_str().unwrap())],
    );
    let error = configured
        .download(&swarm.key.to_string(), None)
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .ends_with("is a file, not a folder to save into"),
        "{error}"
    );
    assert_eq!(std::fs::read(&not_a_folder).unwrap(), b"mine");
}

#[test]
fn a_peer_keeps_the_latest_hundred_ended_downloads_and_forgets_older_ones() {
    let swarm = seeded_swarm("tiny.txt", 100, 14, &[]);
    let peer = swarm.peer("collector", &[]);
    let key = swarm.key.to_string();
    let folder = |n: usize| swarm.dir.path().join("copies").join(n.to_string());
    // The first fetched, the others copied from it, each into a folder of
    // its own (a download into the same folder takes the old one's line).
    for n in 0..105 {
        let download = peer.download(&key, Some(&folder(n))).unwrap();
        assert!(download.wait().is_ok(), "download {n}");
    }
    let kept = peer.downloads();
    assert_eq!(kept.len(), 101, "the hundred ended, and the newest");
    let saved_in = |d: &std::sync::Arc<swarmline::peer::Download>| match d.status().state {
        DownloadState::Done(path) => path.parent().unwrap().to_path_buf(),
        other => panic!("{other:?}"),
    };
    assert_eq!(saved_in(&kept[0]), folder(4), "the four oldest forgotten");
    assert_eq!(saved_in(&kept[100]), folder(104));
}

#[test]
fn a_few_bad_pieces_are_fetched_again_from_another_peer() {
    let swarm = seeded_swarm("doc.bin", 40 * PIECE, 12, &[("upload_limit", "2MB")]);
    // Only pieces 0 and 1 come wrong from this one: two strikes, no ban.
    let flaky = FakePeer::start(
        swarm.tracker.local_addr(),
        "doc.bin",
        swarm.data.clone(),
        PIECE as u32,
        Fake::Corrupt(|i| i < 2),
    );
    let leecher = swarm.peer("leecher", &[]);
    let download = leecher.download("doc.bin", None).unwrap();
    assert_eq!(std::fs::read(download.wait().unwrap()).unwrap(), swarm.data);
    let status = download.status();
    let flaky_status = status
        .sources
        .iter()
        .find(|s| s.peer == flaky.addr)
        .unwrap();
    assert_eq!(
        flaky_status.dropped, None,
        "two bad pieces are not enough for a ban"
    );
}

#[test]
fn a_download_that_cannot_finish_says_which_pieces_no_peer_has() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(10 * PIECE, 13);
    let original = write_file(&dir.path().join("originals"), "half.bin", &data);
    // A seeder offers the file, a partial holder with pieces 0-4 joins, and
    // the seeder leaves.
    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), &[]);
    seeder.share(&original, |_| {}).unwrap();
    let half = FakePeer::start(
        tracker.local_addr(),
        "half.bin",
        data,
        PIECE as u32,
        Fake::Holds(|i| i < 5),
    );
    seeder.shutdown();
    let leecher = start_peer(
        dir.path(),
        "leecher",
        tracker.local_addr(),
        &[("stall_timeout_secs", "2")],
    );
    let download = leecher.download(&half.key.to_string(), None).unwrap();
    let reason = download.wait().unwrap_err();
    assert!(reason.contains("stalled at 5 of 10 pieces"), "{reason}");
    assert!(
        reason.contains("no peer that answers has piece(s) 5, 6, 7, 8, 9"),
        "{reason}"
    );
    assert!(
        !dir.path().join("leecher/downloads/half.bin").exists(),
        "nothing under the final name"
    );
}

#[test]
fn leechers_holding_different_halves_finish_from_each_other() {
    let swarm = seeded_swarm("halves.bin", 30 * PIECE + 77, 14, &[]);
    let (data, key) = (swarm.data.clone(), swarm.key);
    // The seeder gave even pieces to A and odd pieces to B, then left.
    let leechers: Vec<_> = [("a", 0), ("b", 1)]
        .into_iter()
        .map(|(name, parity)| {
            let peer = swarm.peer(name, &[]);
            let home = swarm.dir.path().join(name);
            support::plant_partial(&peer, &home, "halves.bin", &data, |i| i % 2 == parity);
            let held = peer.library().get(&key).unwrap().bitmap();
            peer.tracker().report(key, &held).unwrap();
            peer
        })
        .collect();
    let support::SeededSwarm {
        seeder,
        tracker: _tracker,
        dir: _dir,
        ..
    } = swarm;
    seeder.shutdown();

    let downloads: Vec<_> = leechers
        .iter()
        .map(|p| p.download(&key.to_string(), None).unwrap())
        .collect();
    for (peer, download) in leechers.iter().zip(&downloads) {
        let path = download.wait().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let status = download.status();
        let other = leechers
            .iter()
            .find(|p| p.listen_addr() != peer.listen_addr())
            .unwrap();
        let from_other = status
            .sources
            .iter()
            .find(|s| s.peer == other.listen_addr())
            .unwrap();
        let missing = if peer.listen_addr() == leechers[0].listen_addr() {
            15
        } else {
            16
        };
        assert_eq!(
            from_other.pieces, missing,
            "every missing piece came from the other leecher"
        );
    }
}

#[test]
fn one_peer_runs_several_downloads_at_once() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let seeder = start_peer(
        dir.path(),
        "seeder",
        tracker.local_addr(),
        &[("upload_limit", "256KB")],
    );
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("f{i}.bin"),
                random_bytes(30 * PIECE + i, 20 + i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        seeder
            .share(
                &write_file(&dir.path().join("originals"), name, data),
                |_| {},
            )
            .unwrap();
    }
    let leecher = start_peer(dir.path(), "leecher", tracker.local_addr(), &[]);
    let downloads: Vec<_> = files
        .iter()
        .map(|(name, _)| leecher.download(name, None).unwrap())
        .collect();
    // All three are under way together: each has a piece before any is
    // done (one after the other, the last would start only after the
    // first ended).
    let mut all_started_while_none_done = false;
    let started = std::time::Instant::now();
    while !downloads.iter().any(|d| d.is_finished()) && started.elapsed() < Duration::from_secs(60)
    {
        if downloads.iter().all(|d| d.status().pieces_done() > 0) {
            all_started_while_none_done = !downloads.iter().any(|d| d.is_finished());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        all_started_while_none_done,
        "the downloads did not run at the same time"
    );
    for ((name, data), download) in files.iter().zip(&downloads) {
        assert_eq!(
            &std::fs::read(download.wait().unwrap()).unwrap(),
            data,
            "{name}"
        );
    }
    assert_eq!(leecher.downloads().len(), 3);
}

#[test]
fn a_peer_that_claims_pieces_it_never_gives_does_not_stall_the_download_forever() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(10 * PIECE, 31);
    // Its BufferMap claims all ten pieces; it gives only pieces 0-4.
    let liar = FakePeer::start(
        tracker.local_addr(),
        "claims.bin",
        data,
        PIECE as u32,
        Fake::Claims(|i| i < 5),
    );
    let leecher = start_peer(
        dir.path(),
        "leecher",
        tracker.local_addr(),
        &[("stall_timeout_secs", "2")],
    );
    let download = leecher.download(&liar.key.to_string(), None).unwrap();
    let reason = support::wait_within(download, Duration::from_secs(60)).unwrap_err();
    assert!(reason.contains("stalled at 5 of 10 pieces"), "{reason}");
    assert!(
        reason.contains("no peer that answers has piece(s) 5, 6, 7, 8, 9"),
        "{reason}"
    );
}

#[test]
fn a_seeder_at_its_cap_and_then_slow_is_waited_for_not_taken_for_stalled() {
    // The seeder refuses the first connections (at its cap for 3 s), then
    // gives a piece every 8 s: a few failures, then slow progress, all
    // within the stall timeout of 10 s. (A resumed download: the manifest
    // is here, so the first exchanges are for pieces.)
    let swarm = seeded_swarm(
        "capped.bin",
        4 * PIECE,
        77,
        &[("upload_limit", "2KB"), ("max_connections_per_ip", "2")],
    );
    let leecher = swarm.peer("leecher", &[("stall_timeout_secs", "10")]);
    let home = swarm.dir.path().join("leecher");
    support::plant_partial(&leecher, &home, "capped.bin", &swarm.data, |_| false);
    let seeder = swarm.seeder.listen_addr();
    let hogs: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(seeder).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let download = leecher.download(&swarm.key.to_string(), None).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    drop(hogs);
    let path = support::wait_within(download, Duration::from_secs(120)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), swarm.data);
}

#[test]
fn holders_made_up_at_the_tracker_do_not_hide_the_real_seeder() {
    // Twenty sessions of this host claim the file at ports nobody answers;
    // the tracker lists five holders at a time. A download whose first
    // listing holds only made-up ones looks the peers up again, each
    // second, within its stall timeout (long here: a listing holds the
    // real seeder with a chance of 5 in 21).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let options = swarmline::tracker::TrackerOptions {
        max_peers: 5,
        ..Default::default()
    };
    let tracker = swarmline::tracker::Tracker::start(listener, options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * PIECE, 48);
    let original = write_file(&dir.path().join("originals"), "real.bin", &data);
    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), &[]);
    let shared = seeder.share(&original, |_| {}).unwrap();
    let fakes = sessions_claiming(
        tracker.local_addr(),
        1..=20,
        &shared.key,
        "real.bin",
        data.len(),
    );
    for n in 0..3 {
        let leecher = start_peer(
            dir.path(),
            &format!("leecher{n}"),
            tracker.local_addr(),
            &[("stall_timeout_secs", "60")],
        );
        let download = leecher.download(&shared.key.to_string(), None).unwrap();
        let path = support::wait_within(download, Duration::from_secs(60)).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
    }
    drop(fakes);
}

/// Sessions of this host at `tracker`, one per port of `ports`, each
/// claiming to hold the file `key` (`name`, `size` bytes in pieces of
/// [`PIECE`]); they end when dropped.
fn sessions_claiming(
    tracker: std::net::SocketAddr,
    ports: impl IntoIterator<Item = u16>,
    key: &swarmline::protocol::FileKey,
    name: &str,
    size: usize,
) -> Vec<support::Client> {
    ports
        .into_iter()
        .map(|port| {
            let mut session = support::Client::connect(tracker);
            assert!(session.ask(&format!("HELO {port}")).starts_with("OK"));
            let offer = format!("ADDF {key} {name} {size} {PIECE} other /made/up");
            assert!(session.ask(&offer).starts_with("OK"), "{offer}");
            session
        })
        .collect()
}

/// Peers at `n` free addresses that take every connection and never
/// answer, until `stop` is set; the thread holding them, to join.
fn silent_holders(
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<std::net::SocketAddr>, std::thread::JoinHandle<()>) {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        for listener in &listeners {
            listener.set_nonblocking(true).unwrap();
        }
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for listener in &listeners {
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    (addrs, thread)
}

#[test]
fn holders_that_take_connections_and_never_answer_do_not_hold_a_download_for_minutes() {
    // Ten holders listed with the real seeder accept every connection
    // and say nothing. Each used to hold the download's workers for 30 s
    // at a time: 3 MB took almost five minutes.
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(12 * PIECE, 52);
    let original = write_file(&dir.path().join("originals"), "quiet.bin", &data);
    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), &[]);
    let shared = seeder.share(&original, |_| {}).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (silent, holding) = silent_holders(10, std::sync::Arc::clone(&stop));
    let ports = silent.iter().map(|addr| addr.port());
    let sessions = sessions_claiming(
        tracker.local_addr(),
        ports,
        &shared.key,
        "quiet.bin",
        data.len(),
    );
    let leecher = start_peer(dir.path(), "leecher", tracker.local_addr(), &[]);
    let started = std::time::Instant::now();
    let download = leecher.download(&shared.key.to_string(), None).unwrap();
    let path = support::wait_within(download, Duration::from_secs(120)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
    drop(sessions);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    holding.join().unwrap();
}

#[test]
fn a_seeder_under_a_low_upload_limit_sends_its_pieces_steadily_not_in_bursts() {
    // 1 MiB pieces at 200 KB/s: five seconds a piece. Paid a piece at a
    // time, the second came after five seconds of silence (and a piece
    // taking over 30 s looked to a downloader like a peer gone).
    use std::io::{Read, Write};
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 << 20, 53);
    let original = write_file(&dir.path().join("originals"), "paced.bin", &data);
    let limits = [("upload_limit", "200KB"), ("piece_size", "1MiB")];
    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), &limits);
    let shared = seeder.share(&original, |_| {}).unwrap();
    let mut stream = std::net::TcpStream::connect(seeder.listen_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    writeln!(stream, "REQF {} 0 1", shared.key).unwrap();
    let header = |index: usize| format!("PIEC {} {index} {}\n", shared.key, 1 << 20);
    let mut expected = header(0).into_bytes();
    expected.extend_from_slice(&data[..1 << 20]);
    expected.extend_from_slice(header(1).as_bytes());
    expected.extend_from_slice(&data[1 << 20..]);
    // Both answers whole, and the longest wait between two reads.
    let mut got = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let mut longest = Duration::ZERO;
    let mut last = std::time::Instant::now();
    while got.len() < expected.len() {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        longest = longest.max(last.elapsed());
        last = std::time::Instant::now();
    }
    assert!(got == expected, "the answers differ from the pieces");
    assert!(
        longest < Duration::from_millis(2500),
        "{longest:?} without a byte"
    );
}

#[test]
fn a_peer_that_claims_every_piece_and_slowly_refuses_each_does_not_hold_a_download_for_ever() {
    // It never fails (a refusal is an answer) and always has requests in
    // flight, but stores nothing: the download stops once no piece came
    // for the stall timeout plus one piece's time at the slowest rate kept
    // (2 s + 60 s + 2 s here), not after refusing its 100 pieces one by one.
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let refuser = FakePeer::start(
        tracker.local_addr(),
        "refused.bin",
        random_bytes(100 * PIECE, 35),
        PIECE as u32,
        Fake::RefusesSlowly,
    );
    let leecher = start_peer(
        dir.path(),
        "leecher",
        tracker.local_addr(),
        &[("stall_timeout_secs", "2")],
    );
    let download = leecher.download(&refuser.key.to_string(), None).unwrap();
    let reason = support::wait_within(download, Duration::from_secs(150)).unwrap_err();
    assert!(
        reason.starts_with("stalled at 0 of 100 pieces: no piece came in 64 s, though 1 of 1"),
        "{reason}"
    );
}

#[test]
fn a_peer_that_sends_one_byte_a_second_neither_stalls_nor_hangs_the_download() {
    let swarm = seeded_swarm("slow.bin", 20 * PIECE, 32, &[("upload_limit", "1MB")]);
    let data = &swarm.data;
    let dribbler = FakePeer::start(
        swarm.tracker.local_addr(),
        "slow.bin",
        data.clone(),
        PIECE as u32,
        Fake::Dribbles,
    );
    let leecher = swarm.peer("leecher", &[]);
    let download = leecher.download("slow.bin", None).unwrap();
    // The pieces stuck on the dribbler are fetched again from the honest
    // peer at the end, and the download ends without waiting for it.
    // (At worst the manifest is first asked of the slow peer, which then
    // has 30 s to send its header.)
    let path = support::wait_within(download, Duration::from_secs(120)).unwrap();
    assert_eq!(&std::fs::read(path).unwrap(), data);
    drop(dribbler);
}

#[test]
fn a_download_never_overwrites_a_file_or_another_download() {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    // Slow (30 pieces take about 15 s), so the first download is still
    // under way when the second starts, however busy the machine.
    let seeder = start_peer(
        dir.path(),
        "seeder",
        tracker.local_addr(),
        &[("upload_limit", "32KB")],
    );
    let a = random_bytes(30 * PIECE, 41);
    let b = random_bytes(30 * PIECE, 42);
    let key_a = seeder
        .share(&write_file(&dir.path().join("one"), "song.bin", &a), |_| {})
        .unwrap()
        .key;
    let key_b = seeder
        .share(&write_file(&dir.path().join("two"), "song.bin", &b), |_| {})
        .unwrap()
        .key;
    let leecher = start_peer(dir.path(), "leecher", tracker.local_addr(), &[]);
    let out = dir.path().join("out");

    // Two different files of one name into one directory: the second is
    // refused rather than sharing (and truncating) the first one's .part.
    let first = leecher.download(&key_a.to_string(), Some(&out)).unwrap();
    assert!(
        support::eventually(std::time::Duration::from_secs(30), || out
            .join("song.bin.part")
            .exists()),
        "the first download made no .part file"
    );
    let second = leecher.download(&key_b.to_string(), Some(&out)).unwrap();
    let reason = second.wait().unwrap_err();
    assert!(
        reason
            .contains("song.bin.part holds the unfinished download of another file named song.bin"),
        "{reason}"
    );
    assert_eq!(std::fs::read(first.wait().unwrap()).unwrap(), a);

    // And a file already under the final name is never replaced...
    let again = leecher.download(&key_b.to_string(), Some(&out)).unwrap();
    let reason = again.wait().unwrap_err();
    assert!(reason.contains("song.bin already exists"), "{reason}");
    assert_eq!(std::fs::read(out.join("song.bin")).unwrap(), a);
    // ...but when it is the very file asked for, the download is simply done.
    let other = start_peer(dir.path(), "other", tracker.local_addr(), &[]);
    // (Its key typed in capitals is the same key, at the tracker too.)
    let same = other
        .download(&key_a.to_string().to_uppercase(), Some(&out))
        .unwrap();
    assert_eq!(same.wait().unwrap(), out.join("song.bin"));
    let status = same.status();
    assert_eq!(status.size, a.len() as u64, "its size, for the done line");
    assert_eq!(status.pieces_done(), 30, "whole");
    assert_eq!(std::fs::read(out.join("song.bin")).unwrap(), a);
}

#[test]
fn a_part_file_of_the_right_size_holding_something_else_is_left_alone() {
    const WAIT: Duration = Duration::from_secs(60);
    let swarm = seeded_swarm("mine.bin", 3 * PIECE, 45, &[]);
    let peer = swarm.peer("peer", &[]);
    // The user's own file, by chance named as the download's .part file.
    let mine = random_bytes(3 * PIECE, 46);
    let part = write_file(
        &swarm.dir.path().join("peer/downloads"),
        "mine.bin.part",
        &mine,
    );
    let refused = peer.download("mine.bin", None).unwrap();
    let reason = support::wait_within(refused, WAIT).unwrap_err();
    assert!(reason.contains("but none of its pieces"), "{reason}");
    assert_eq!(std::fs::read(&part).unwrap(), mine, "left as it was");
    // Zeros: what a download stopped before its first piece leaves. Taken up.
    std::fs::write(&part, vec![0; 3 * PIECE]).unwrap();
    let done = peer.download("mine.bin", None).unwrap();
    let path = support::wait_within(done, WAIT).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), swarm.data);
}

#[cfg(unix)]
#[test]
fn a_folder_whose_path_is_not_utf8_is_refused_before_anything_is_made() {
    use std::os::unix::ffi::OsStrExt;
    let swarm = seeded_swarm("latin.bin", 2 * PIECE, 47, &[]);
    let peer = swarm.peer("peer", &[]);
    let folder = swarm
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    let refused = peer.download("latin.bin", Some(&folder)).unwrap();
    let reason = support::wait_within(refused, Duration::from_secs(60)).unwrap_err();
    assert!(reason.contains("is not valid UTF-8"), "{reason}");
    assert!(!folder.exists(), "nothing made there");
}

#[test]
fn a_file_held_already_is_done_where_it_is_and_copied_where_asked() {
    const WAIT: Duration = Duration::from_secs(60);
    let swarm = support::seeded_swarm("held.bin", 6 * PIECE, 43, &[]);
    let peer = swarm.peer("peer", &[]);
    let support::SeededSwarm {
        seeder,
        tracker: _tracker,
        data,
        dir,
        key,
    } = swarm;
    let first = peer.download("held.bin", None).unwrap();
    let held = support::wait_within(first, WAIT).unwrap();

    // Asked again: done at once, where it is (by name, or by its key
    // in capitals).
    let again = peer.download("held.bin", None).unwrap();
    assert_eq!(support::wait_within(again, WAIT).unwrap(), held);
    let shouted = peer
        .download(&key.to_string().to_uppercase(), None)
        .unwrap();
    assert_eq!(support::wait_within(shouted, WAIT).unwrap(), held);

    // Deleted since, and asked for again: fetched anew, not "done".
    std::fs::remove_file(&held).unwrap();
    let refetched = peer.download(&key.to_string(), None).unwrap();
    assert_eq!(support::wait_within(refetched, WAIT).unwrap(), held);
    assert_eq!(std::fs::read(&held).unwrap(), data);

    // A shared file asked for by the peer sharing it: done, where it is.
    let own = seeder.download("held.bin", None).unwrap();
    let original = dir.path().join("originals").join("held.bin");
    assert_eq!(
        std::fs::canonicalize(support::wait_within(own, WAIT).unwrap()).unwrap(),
        std::fs::canonicalize(original).unwrap()
    );

    // Into another folder: a checked copy there (the seeder is gone, so
    // it cannot have come through the swarm).
    // What a copy killed half-way left there is used again, not kept.
    seeder.shutdown();
    let elsewhere = dir.path().join("elsewhere");
    write_file(
        &elsewhere,
        ".copy-4242-00000000cafef00d.held.bin.part",
        b"killed half-way",
    );
    let copy = peer.download("held.bin", Some(&elsewhere)).unwrap();
    let copied = support::wait_within(copy, WAIT).unwrap();
    assert_eq!(copied, elsewhere.join("held.bin"));
    assert_eq!(std::fs::read(&copied).unwrap(), data);
    let names: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["held.bin"]);
    // There already: done. Another file of that name there: left alone.
    let twice = peer.download("held.bin", Some(&elsewhere)).unwrap();
    assert_eq!(support::wait_within(twice, WAIT).unwrap(), copied);
    let taken = dir.path().join("taken");
    write_file(&taken, "held.bin", b"mine");
    let refused = peer.download("held.bin", Some(&taken)).unwrap();
    let reason = support::wait_within(refused, WAIT).unwrap_err();
    assert!(reason.contains("already exists"), "{reason}");
    assert_eq!(std::fs::read(taken.join("held.bin")).unwrap(), b"mine");

    // A copy into a folder holding another download's .part of that name
    // leaves that .part alone.
    let busy = dir.path().join("busy");
    write_file(&busy, "held.bin.part", b"another download");
    let beside = peer.download("held.bin", Some(&busy)).unwrap();
    assert_eq!(
        support::wait_within(beside, WAIT).unwrap(),
        busy.join("held.bin")
    );
    assert_eq!(
        std::fs::read(busy.join("held.bin.part")).unwrap(),
        b"another download"
    );

    // A held file whose name is not a portable file name is done where it
    // is too, not copied beside itself under the portable name.
    if cfg!(unix) {
        let odd_dir = dir.path().join("odd");
        let odd = write_file(&odd_dir, "live: 1.bin", b"another file");
        peer.share(&odd, |_| {}).unwrap();
        let in_place = peer.download("live: 1.bin", None).unwrap();
        assert_eq!(
            std::fs::canonicalize(support::wait_within(in_place, WAIT).unwrap()).unwrap(),
            std::fs::canonicalize(&odd).unwrap()
        );
        assert_eq!(std::fs::read_dir(&odd_dir).unwrap().count(), 1);
    }

    // A held file changed on disk since is not copied: it is withdrawn
    // (never taken for an unfinished download, so never written into), and
    // the file is fetched from the swarm instead (here nobody has it).
    let mut changed = data.clone();
    changed[0] ^= 1;
    std::fs::write(&held, &changed).unwrap();
    let third = dir.path().join("third");
    let bad = peer.download(&key.to_string(), Some(&third)).unwrap();
    let reason = support::wait_within(bad, WAIT).unwrap_err();
    assert!(reason.contains("no peer holds held.bin"), "{reason}");
    assert!(peer.unfinished().is_empty());
    assert_eq!(
        std::fs::read(&held).unwrap(),
        changed,
        "the user's file stays"
    );
    // Nor is it "done", nor written over, when asked for where it is.
    let refused = peer
        .download(&key.to_string(), None)
        .map_err(|e| e.to_string())
        .and_then(|d| support::wait_within(d, WAIT));
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(std::fs::read(&held).unwrap(), changed);
    let leftovers: Vec<_> = std::fs::read_dir(&third)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_download_asked_again_replaces_the_one_that_ended_in_the_same_place() {
    const WAIT: Duration = Duration::from_secs(60);
    let swarm = support::seeded_swarm("again.bin", 3 * PIECE, 44, &[]);
    let peer = swarm.peer("peer", &[]);
    let ended_in = |peer: &Peer| -> Vec<String> {
        let mut ends: Vec<String> = peer
            .downloads()
            .iter()
            .map(|d| match d.status().state {
                DownloadState::Done(path) => format!("done {}", path.display()),
                DownloadState::Failed(_) => "failed".to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        ends.sort();
        ends
    };
    let held = support::wait_within(peer.download("again.bin", None).unwrap(), WAIT).unwrap();
    let again = peer.download("again.bin", None).unwrap();
    assert_eq!(support::wait_within(again, WAIT).unwrap(), held);
    assert_eq!(ended_in(&peer), [format!("done {}", held.display())]);

    // Into another folder: another line. A failure there, tried again
    // once the cause is gone: the new try's line replaces the failure's.
    let elsewhere = swarm.dir.path().join("elsewhere");
    let blocker = write_file(&elsewhere, "again.bin", b"someone else's");
    let refused = peer.download("again.bin", Some(&elsewhere)).unwrap();
    support::wait_within(refused, WAIT).unwrap_err();
    assert_eq!(
        ended_in(&peer),
        [format!("done {}", held.display()), "failed".to_string()]
    );
    std::fs::remove_file(&blocker).unwrap();
    let copy = peer.download("again.bin", Some(&elsewhere)).unwrap();
    let copied = support::wait_within(copy, WAIT).unwrap();
    let mut expected = [
        format!("done {}", held.display()),
        format!("done {}", copied.display()),
    ];
    expected.sort();
    assert_eq!(ended_in(&peer), expected);

    // A file saved under another name than its own (a copy's temporary
    // name gets a `_` in front): asked again, still one line.
    let odd = ".copy-1-0123456789abcdef.odd";
    let original = write_file(&swarm.dir.path().join("originals"), odd, b"an odd one");
    swarm.seeder.share(&original, |_| {}).unwrap();
    for _ in 0..2 {
        let saved = support::wait_within(peer.download(odd, None).unwrap(), WAIT).unwrap();
        assert!(saved.ends_with(format!("_{odd}")), "{}", saved.display());
    }
    assert_eq!(ended_in(&peer).len(), 3, "{:?}", ended_in(&peer));
}

#[test]
fn a_held_file_edited_or_replaced_in_place_is_never_reported_done() {
    const WAIT: Duration = Duration::from_secs(60);
    let swarm = support::seeded_swarm("kept.bin", 4 * PIECE, 44, &[]);
    let peer = swarm.peer("peer", &[]);
    let key = swarm.key.to_string();
    let held = support::wait_within(peer.download(&key, None).unwrap(), WAIT).unwrap();
    let asked_again = || {
        peer.download(&key, None)
            .map_err(|e| e.to_string())
            .and_then(|d| support::wait_within(d, WAIT))
    };

    // Edited in place, the same size: not "done", and not written over.
    let mut edited = swarm.data.clone();
    edited[7] ^= 1;
    let when = std::fs::metadata(&held).unwrap().modified().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&held)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, &edited)?;
            // A time of its own, whatever the file system's clock step.
            f.set_modified(when + Duration::from_secs(5))
        })
        .unwrap();
    let answer = asked_again();
    assert!(answer.is_err(), "{answer:?}");
    assert_eq!(
        std::fs::read(&held).unwrap(),
        edited,
        "the user's edit stays"
    );

    // Another peer's copy replaced by another file of the same size and
    // time (as `cp -p` does): not "done" either (Unix tells files apart).
    if cfg!(unix) {
        let other = swarm.peer("other", &[]);
        let kept = support::wait_within(other.download(&key, None).unwrap(), WAIT).unwrap();
        let when = std::fs::metadata(&kept).unwrap().modified().unwrap();
        let beside = kept.with_extension("new");
        std::fs::write(&beside, &edited).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&beside)
            .and_then(|f| f.set_modified(when))
            .unwrap();
        std::fs::rename(&beside, &kept).unwrap();
        let answer = other
            .download(&key, None)
            .map_err(|e| e.to_string())
            .and_then(|d| support::wait_within(d, WAIT));
        assert!(answer.is_err(), "{answer:?}");
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            edited,
            "the user's file stays"
        );
    }
}

#[test]
fn after_a_tracker_restart_the_peer_announces_its_files_again() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = tracker_in_process();
    let addr = tracker.local_addr();
    let peer = start_peer(dir.path(), "alice", addr, &[("user", "alice")]);
    let data = random_bytes(3 * PIECE, 51);
    let key = peer
        .share(
            &write_file(&dir.path().join("files"), "kept.bin", &data),
            |_| {},
        )
        .unwrap()
        .key;
    tracker.shutdown();

    // A new tracker on the same address knows nothing until the peer's
    // next call finds its connection gone, reconnects, and announces its
    // offers again. (The peer's housekeeping may do so first, a moment
    // after the tracker is up: so what it knows before is not asserted.)
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let tracker = swarmline::tracker::Tracker::start(listener, Default::default()).unwrap();
    let mut client = support::Client::connect(addr);
    peer.tracker().ping().unwrap();
    let files = client.list("RQFS");
    assert_eq!(
        files,
        [format!(
            "FILE {key} kept.bin {} 16384 other 1 0",
            data.len()
        )]
    );
    assert_eq!(
        client.list("USRS"),
        [format!("USER alice {}", peer.listen_addr())]
    );
    drop(tracker);
}

#[test]
fn a_peer_started_before_its_tracker_lists_its_shares_under_the_id_the_tracker_gives() {
    // The tracker's port is taken now (kept, so nothing else takes it); the
    // tracker serves on it later. Until then the peer's HELO goes
    // unanswered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tracker_addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let peer = start_peer(
        dir.path(),
        "early",
        tracker_addr,
        &[("address", "0.0.0.0"), ("tracker_ping_secs", "1")],
    );
    peer.share(&write_file(dir.path(), "notes.txt", b"notes"), |_| {})
        .unwrap();
    let mini = std::net::SocketAddr::from(([127, 0, 0, 1], peer.listen_addr().port()));
    let shares = || support::Client::connect(mini).list("LSTF");
    // Before the tracker: the only id it knows is its bind address.
    assert!(
        shares()[0].contains(&format!(" 0.0.0.0:{} ", mini.port())),
        "{:?}",
        shares()
    );

    let _tracker =
        swarmline::tracker::Tracker::start(listener, swarmline::tracker::TrackerOptions::default())
            .unwrap();
    let given = format!(" 127.0.0.1:{} ", mini.port());
    assert!(
        support::eventually(Duration::from_secs(30), || shares()[0].contains(&given)),
        "LSTF still says {:?}",
        shares()
    );
}

#[test]
fn a_shared_file_deleted_on_disk_is_withdrawn_without_being_asked_for() {
    let swarm = support::seeded_swarm("deleted.bin", 40_000, 13, &[]);
    let mut observer = support::Client::connect(swarm.tracker.local_addr());
    let listed =
        |observer: &mut support::Client| observer.list(&format!("LSTF key={}", swarm.key)).len();
    assert_eq!(listed(&mut observer), 1);
    let path = swarm.dir.path().join("originals").join("deleted.bin");
    std::fs::remove_file(&path).unwrap();
    // Looked at every 10 s, withdrawn at the next round after that.
    assert!(support::eventually(Duration::from_secs(60), || listed(
        &mut observer
    ) == 0));
    assert!(swarm.seeder.files().is_empty());
    // Unshared by hand after that: the refusal says why it is not shared.
    let refusal = swarm
        .seeder
        .unshare(path.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        refusal.contains("no such file is here")
            && refusal.contains("a shared file deleted is withdrawn by itself"),
        "{refusal}"
    );
}

#[test]
fn a_shared_file_deleted_since_is_unshared_by_its_path() {
    let swarm = support::seeded_swarm("gone.bin", 40_000, 12, &[]);
    let originals = swarm.dir.path().join("originals");
    std::fs::remove_file(originals.join("gone.bin")).unwrap();
    // Named through `..`: the same folder.
    let roundabout = originals.join("..").join("originals").join("gone.bin");
    let key = swarm
        .seeder
        .unshare(roundabout.to_str().unwrap())
        .expect("unshared by the path it had");
    assert_eq!(key, swarm.key);
    assert!(swarm.seeder.files().is_empty());

    // Its whole folder gone too: by the path it had.
    let lost = swarm.dir.path().join("lost");
    let file = write_file(&lost, "lost.bin", b"lost");
    let shared = swarm.seeder.share(&file, |_| {}).unwrap();
    std::fs::remove_dir_all(&lost).unwrap();
    let unshared = swarm.seeder.unshare(file.to_str().unwrap());
    assert_eq!(unshared.unwrap(), shared.key);
    assert!(swarm.seeder.files().is_empty());
}

#[test]
fn a_second_copy_of_a_shared_file_is_refused_and_the_first_stays_shared() {
    let swarm = support::seeded_swarm("song.bin", 40_000, 14, &[]);
    let first = swarm.dir.path().join("originals").join("song.bin");
    let bytes = std::fs::read(&first).unwrap();
    let backup = write_file(&swarm.dir.path().join("backup"), "song copy.bin", &bytes);
    let refusal = swarm.seeder.share(&backup, |_| {}).unwrap_err().to_string();
    assert!(
        refusal.contains("has the same content as") && refusal.contains("shares already"),
        "{refusal}"
    );
    let files = swarm.seeder.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path(), dunce::canonicalize(&first).unwrap());
    // Deleting the copy takes nothing from the swarm; the first is still
    // unshared by its own path.
    std::fs::remove_file(&backup).unwrap();
    assert_eq!(
        swarm.seeder.unshare(first.to_str().unwrap()).unwrap(),
        swarm.key
    );
    // Once the first is edited, the copy may take its place.
    let again = write_file(&swarm.dir.path().join("backup"), "song copy.bin", &bytes);
    swarm.seeder.share(&first, |_| {}).unwrap();
    std::fs::write(&first, b"edited").unwrap();
    let shared = swarm.seeder.share(&again, |_| {}).unwrap();
    assert_eq!(shared.path(), dunce::canonicalize(&again).unwrap());
}

/// (Unix: a link to a folder is made without rights there.)
#[cfg(unix)]
#[test]
fn a_downloaded_file_shared_again_through_another_path_is_the_same_file() {
    let swarm = support::seeded_swarm("notes.bin", 40_000, 15, &[]);
    let real = swarm.dir.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let link = swarm.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let leecher = swarm.peer("leecher", &[("download_dir", link.to_str().unwrap())]);
    let download = leecher.download(&swarm.key.to_string(), None).unwrap();
    let saved = download.wait().unwrap();
    assert!(saved.starts_with(&link), "{}", saved.display());
    // Shared by its real path: the file held already, not a copy of it.
    let shared = leecher.share(&real.join("notes.bin"), |_| {}).unwrap();
    assert_eq!(shared.key, swarm.key);
    assert_eq!(leecher.files().len(), 1);
}
