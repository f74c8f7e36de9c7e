//! A whole swarm on one machine: a tracker, one seeder and several leechers
//! on 127.0.0.1. The seeder shares a file of seeded random bytes; the
//! leechers download it at the same time, from the seeder and from each
//! other; the demo prints live progress, then a summary: time, throughput,
//! who served how many pieces to whom, and whether every copy's SHA-256
//! matches the original. Everything lives in a temporary directory that is
//! removed at the end.
//!
//! The seeder's upload is limited (20 MB/s unless `--seed-limit` says
//! otherwise, 0 for none), as a real seeder's link is: that is what makes
//! the leechers trade pieces among themselves instead of all waiting on it.
//!
//! Run: `cargo run --release --example local_swarm -- [--size 64MiB] [--leechers 3] [--piece-size 256KiB] [--seed-limit 20MB]`

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use swarmline::config::{PeerConfig, Settings, PEER_KEYS};
use swarmline::peer::shell::progress_line;
use swarmline::peer::{DownloadState, Peer};
use swarmline::tracker::{Tracker, TrackerOptions};
use swarmline::units::{format_bytes, parse_byte_size};

/// What the demo is asked to do.
struct Options {
    size: u64,
    leechers: usize,
    piece_size: String,
    seed_limit: String,
}

/// What `--help` prints.
const USAGE: &str =
    "usage: local_swarm [--size 64MiB] [--leechers 3] [--piece-size 256KiB] [--seed-limit 20MB]";

/// The options given, or `None` for `--help`.
fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        size: 64 << 20,
        leechers: 3,
        piece_size: "256KiB".into(),
        seed_limit: "20MB".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => options.size = parse_byte_size(&value()?)?,
            "--leechers" => {
                options.leechers = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=32).contains(n))
                    .ok_or("--leechers takes a number from 1 to 32")?
            }
            // Checked here, so that a bad value is named by this demo's
            // own flag, before anything starts.
            "--piece-size" => {
                options.piece_size = value()?;
                let size = parse_byte_size(&options.piece_size)
                    .and_then(|size| u32::try_from(size).map_err(|e| e.to_string()))
                    .and_then(swarmline::protocol::fields::check_piece_size);
                size.map_err(|e| format!("--piece-size: {e}"))?;
            }
            "--seed-limit" => {
                options.seed_limit = value()?;
                parse_byte_size(&options.seed_limit).map_err(|e| format!("--seed-limit: {e}"))?;
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other}; try --help")),
        }
    }
    Ok(Some(options))
}

/// A peer's configuration inside the demo's directory.
fn peer_config(
    home: &Path,
    tracker: SocketAddr,
    piece_size: &str,
    upload_limit: &str,
) -> Result<PeerConfig, String> {
    let mut settings = Settings::defaults("peer", PEER_KEYS);
    let path = |sub: &str| home.join(sub).to_string_lossy().into_owned();
    for (key, value) in [
        ("tracker", tracker.to_string()),
        ("address", "127.0.0.1".into()),
        ("port", "0".into()),
        ("piece_size", piece_size.into()),
        ("upload_limit", upload_limit.into()),
        ("bitmap_interval_secs", "1".into()),
        ("download_dir", path("downloads")),
        ("state_dir", path("state")),
        ("user_map_file", path("users.txt")),
        ("log_file", String::new()),
    ] {
        settings.set_flag(key, value);
    }
    PeerConfig::from_settings(&settings).map_err(|e| e.to_string())
}

/// Seeded random bytes, written in chunks so memory stays small.
fn write_test_file(path: &Path, size: u64) -> std::io::Result<[u8; 32]> {
    let mut rng = fastrand::Rng::with_seed(2026);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        rng.fill(&mut chunk[..n]);
        file.write_all(&chunk[..n])?;
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    file.flush()?;
    Ok(hasher.finalize().into())
}

/// `n` and the word for one or for several.
fn plural(n: u64, one: &str, several: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { several })
}

fn sha256_of(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Set by Ctrl-C: the demo stops its downloads and returns, so that its
/// peers stop and its temporary directory (up to the file's size times the
/// peers) is removed. A second Ctrl-C ends it at once.
fn catch_ctrl_c() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping (Ctrl-C again to stop at once, leaving the files)");
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    Ok(stop)
}

fn run(options: Options) -> Result<bool, String> {
    let stop = catch_ctrl_c()?;
    let interrupted = || "interrupted; the temporary directory is removed".to_string();
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let tracker = Tracker::start(listener, TrackerOptions::default()).map_err(|e| e.to_string())?;
    println!("tracker     listening on {}", tracker.local_addr());

    let mut names: HashMap<SocketAddr, String> = HashMap::new();
    let seeder_home = dir.path().join("seeder");
    let seeder = Peer::start(peer_config(
        &seeder_home,
        tracker.local_addr(),
        &options.piece_size,
        &options.seed_limit,
    )?)
    .map_err(|e| e.to_string())?;
    names.insert(seeder.listen_addr(), "seeder".into());
    println!(
        "seeder      listening on {} (upload limit {})",
        seeder.listen_addr(),
        options.seed_limit
    );

    let original = dir.path().join("seeder").join("demo.bin");
    println!(
        "writing {} of seeded random bytes to {}",
        format_bytes(options.size),
        original.display()
    );
    let original_hash = write_test_file(&original, options.size).map_err(|e| e.to_string())?;
    if stop.load(Ordering::SeqCst) {
        return Err(interrupted());
    }
    let shared = seeder.share(&original, |_| {}).map_err(|e| e.to_string())?;
    println!(
        "seeder shares demo.bin: {} of {}, key {}",
        plural(shared.manifest.piece_count() as u64, "piece", "pieces"),
        format_bytes(u64::from(shared.manifest.piece_size())),
        shared.key
    );

    let mut leechers = Vec::new();
    for i in 1..=options.leechers {
        let name = format!("leecher-{i}");
        let peer = Peer::start(peer_config(
            &dir.path().join(&name),
            tracker.local_addr(),
            &options.piece_size,
            "0",
        )?)
        .map_err(|e| e.to_string())?;
        names.insert(peer.listen_addr(), name.clone());
        println!("{name:<11} listening on {}", peer.listen_addr());
        leechers.push((name, peer));
    }

    println!(
        "\n{} download at once:",
        plural(options.leechers as u64, "leecher", "leechers")
    );
    let started = Instant::now();
    let downloads = leechers
        .iter()
        .map(|(_, peer)| {
            peer.download(&shared.key.to_string(), None)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Progress every half second, until the last download ends (waiting
    // on an unfinished one, so the loop ends as soon as they all have).
    let mut next_report = started + Duration::from_millis(500);
    while let Some(running) = downloads.iter().find(|d| !d.is_finished()) {
        if stop.load(Ordering::SeqCst) {
            for download in &downloads {
                download.cancel();
                let _ = download.wait();
            }
            return Err(interrupted());
        }
        running.wait_for(next_report.saturating_duration_since(Instant::now()));
        if Instant::now() >= next_report {
            next_report = Instant::now() + Duration::from_millis(500);
            for ((name, _), download) in leechers.iter().zip(&downloads) {
                println!("  {name:<11} {}", progress_line(&download.status()));
            }
        }
    }
    // The last report, where every download ended (100%, or why not).
    for ((name, _), download) in leechers.iter().zip(&downloads) {
        println!("  {name:<11} {}", progress_line(&download.status()));
    }
    // Until the last one finished: each download's own time, all of them
    // having started together.
    let elapsed = downloads
        .iter()
        .map(|d| d.status().elapsed)
        .max()
        .unwrap_or_else(|| started.elapsed());

    println!("\nsummary");
    let mut all_good = true;
    for ((name, _), download) in leechers.iter().zip(&downloads) {
        let status = download.status();
        match &status.state {
            DownloadState::Done(path) => {
                let hash = sha256_of(path).map_err(|e| e.to_string())?;
                let verdict = if hash == original_hash {
                    "SHA-256 matches"
                } else {
                    "SHA-256 DIFFERS"
                };
                all_good &= hash == original_hash;
                let secs = status.elapsed.as_secs_f64().max(0.001);
                println!(
                    "  {name:<11} done in {secs:.2} s ({}/s), {verdict}",
                    format_bytes((status.size as f64 / secs) as u64)
                );
                let mut sources: Vec<_> = status.sources.iter().filter(|s| s.pieces > 0).collect();
                sources.sort_by_key(|s| std::cmp::Reverse(s.pieces));
                for source in sources {
                    let from = names
                        .get(&source.peer)
                        .cloned()
                        .unwrap_or_else(|| source.peer.to_string());
                    let pieces = plural(source.pieces, "piece", "pieces");
                    println!("      {pieces:>13} from {from}");
                }
            }
            DownloadState::Failed(reason) => {
                all_good = false;
                println!("  {name:<11} FAILED: {reason}");
            }
            other => println!("  {name:<11} {other:?}"),
        }
    }
    let total = options.size * options.leechers as u64;
    println!(
        "  {} delivered to {} in {:.2} s: {}/s across the swarm",
        format_bytes(total),
        plural(options.leechers as u64, "leecher", "leechers"),
        elapsed.as_secs_f64(),
        format_bytes((total as f64 / elapsed.as_secs_f64().max(0.001)) as u64)
    );
    // What the seeder sent counts every copy (a piece asked of two peers
    // at the end is sent twice); what the leechers gave each other counts
    // the pieces each one took from another leecher.
    let (pieces, bytes) = shared.uploaded();
    let from_leechers: u64 = downloads
        .iter()
        .flat_map(|d| d.status().sources)
        .filter(|s| s.peer != seeder.listen_addr())
        .map(|s| s.pieces)
        .sum();
    println!(
        "  the seeder uploaded {} ({}); the leechers gave each other {}",
        plural(pieces, "piece", "pieces"),
        format_bytes(bytes),
        plural(from_leechers, "piece", "pieces")
    );

    for (_, peer) in leechers {
        peer.shutdown();
    }
    seeder.shutdown();
    tracker.shutdown();
    Ok(all_good)
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(true) => {
            println!("\nevery copy verified; the temporary directory is removed");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("\nsome copies failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("local_swarm: {e}");
            ExitCode::FAILURE
        }
    }
}
