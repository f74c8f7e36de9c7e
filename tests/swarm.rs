//! Swarm downloads between peers on 127.0.0.1: the bytes on disk must be
//! the original's, whatever the size and however many peers take part.

mod support;

use swarmline::peer::DownloadState;

use support::{random_bytes, start_peer, tracker_in_process, write_file};

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
            // from serving the whole file before the others get a turn.
            let peer = start_peer(
                dir.path(),
                &format!("seeder{i}"),
                tracker.local_addr(),
                &[("upload_limit", "1MB")],
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
