//! The six scenarios of BENCHMARKS.md. Each one starts its own tracker and
//! peers (the real binaries, as child processes on 127.0.0.1), runs its
//! baseline in the same invocation, checks what it measured (every copy's
//! SHA-256), and returns its rows for the table and the JSON file.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use swarmline::peer::fsutil::sha256_of_file;

use crate::baseline::{
    page_cache_write, sha256_one_core, sha256_seconds_per_byte, tcp_copy, tracker_work_alone,
    CANNED_SERVER,
};
use crate::procs::{machine_cpu_seconds, own_cpu_seconds, Binaries, Proc};

const MB: f64 = 1_000_000.0;
const MIB: f64 = 1_048_576.0;
/// How long any one step may take before the benchmark gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// One line of the results table (and one object of the JSON file).
pub struct Row {
    pub id: &'static str,
    pub what: String,
    pub measured: String,
    pub baseline: String,
    pub target: String,
    pub met: bool,
    pub json: serde_json::Value,
}

/// What every scenario shares: the binaries, a work directory, the size.
pub struct Bench {
    pub bins: Binaries,
    pub dir: PathBuf,
    pub size: u64,
    /// The data files made so far (each made and hashed once).
    pub made: RefCell<Vec<Data>>,
}

/// A file of random bytes and its SHA-256.
#[derive(Clone)]
pub struct Data {
    path: PathBuf,
    size: u64,
    sha256: [u8; 32],
}

impl Bench {
    /// Removes the data files made so far.
    pub fn remove_data(&self) {
        for data in self.made.borrow().iter() {
            let _ = std::fs::remove_file(&data.path);
        }
    }

    /// A data file of `size` random bytes (made once per size).
    fn data(&self, size: u64) -> Result<Data, String> {
        if let Some(made) = self.made.borrow().iter().find(|d| d.size == size) {
            return Ok(made.clone());
        }
        let path = self.dir.join(format!("data-{size}.bin"));
        let sha256: [u8; 32] = {
            let mut out = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&path).map_err(|e| e.to_string())?,
            );
            let mut rng = fastrand::Rng::with_seed(size);
            let mut chunk = vec![0u8; 1 << 20];
            let mut left = size;
            // Hashed as it is written: no second pass over the file.
            let mut hasher = Sha256::new();
            while left > 0 {
                rng.fill(&mut chunk);
                let n = left.min(chunk.len() as u64) as usize;
                hasher.update(&chunk[..n]);
                out.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
                left -= n as u64;
            }
            out.flush().map_err(|e| e.to_string())?;
            // On disk before anything is measured: no write-back of it
            // competes with a measurement.
            out.get_ref().sync_all().map_err(|e| e.to_string())?;
            hasher.finalize().into()
        };
        let data = Data { path, size, sha256 };
        self.made.borrow_mut().push(data.clone());
        Ok(data)
    }

    /// Writes and deletes a scratch file of `bytes`. On a virtual machine
    /// the first use of a page of memory is slow (the host maps it then:
    /// about 0.4 GB/s here, against over 3 GB/s after); the page cache a
    /// measurement writes into must not pay for that, or whichever step
    /// runs first looks several times slower than it is.
    /// (The host takes pages back again later: see [`page_cache_write`],
    /// which S1 times before each round.)
    pub fn warm_up(&self, bytes: u64) -> Result<(), String> {
        page_cache_write(&self.dir.join("warm-up.bin"), bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// A tracker on 127.0.0.1, and its address.
    fn tracker(&self, name: &str, extra: &[&str]) -> Result<(Proc, SocketAddr), String> {
        let mut args: Vec<String> = [
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend(extra.iter().map(ToString::to_string));
        let log = self.dir.join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, &self.bins.tracker, &args, &log)?;
        let addr = proc
            .line_after("listening on", STEP_TIMEOUT)?
            .1
            .parse()
            .map_err(|e| format!("tracker address: {e}"))?;
        Ok((proc, addr))
    }

    /// The flags of a peer living in `<dir>/<name>/`, then `extra`.
    fn peer_args(&self, name: &str, tracker: SocketAddr, extra: &[&str]) -> Vec<String> {
        let home = self.dir.join(name);
        let at = |sub: &str| home.join(sub).to_string_lossy().into_owned();
        let mut args = vec![
            "--tracker".to_string(),
            tracker.to_string(),
            "--address".into(),
            "127.0.0.1".into(),
            "--port".into(),
            "0".into(),
            "--state-dir".into(),
            at("state"),
            "--download-dir".into(),
            at("downloads"),
            "--user-map-file".into(),
            at("users.txt"),
            "--log-level".into(),
            "warn".into(),
            // No web page: the benchmark reads the peers' output lines.
            "--gui".into(),
            "false".into(),
        ];
        args.extend(extra.iter().map(ToString::to_string));
        // For experiments: extra flags for every peer, such as
        // BENCH_PEER_FLAGS="--lanes-per-peer 1" (BENCHMARKS.md).
        if let Ok(more) = std::env::var("BENCH_PEER_FLAGS") {
            args.extend(more.split_whitespace().map(ToString::to_string));
        }
        args
    }

    /// A peer sharing `file`; returns it, the key, and the time from its
    /// start to the file being shared (hashing included).
    fn seeder(
        &self,
        name: &str,
        tracker: SocketAddr,
        file: &Path,
        extra: &[&str],
    ) -> Result<(Proc, String, Duration), String> {
        let mut args = self.peer_args(name, tracker, extra);
        args.extend(["share".to_string(), file.to_string_lossy().into_owned()]);
        let log = self.dir.join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, &self.bins.peer, &args, &log)?;
        let (took, shared) = proc.line_after("sharing", STEP_TIMEOUT)?;
        let key = shared
            .rsplit(' ')
            .next()
            .ok_or("no key in the sharing line")?
            .to_string();
        Ok((proc, key, took))
    }

    /// A peer downloading `key` and seeding it afterwards.
    fn leecher(
        &self,
        name: &str,
        tracker: SocketAddr,
        key: &str,
        extra: &[&str],
    ) -> Result<Proc, String> {
        let mut args = self.peer_args(name, tracker, extra);
        args.extend(["get".into(), key.into(), "--seed".into()]);
        let log = self.dir.join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, &self.bins.peer, &args, &log)?;
        proc.line_after("listening on", STEP_TIMEOUT)?;
        Ok(proc)
    }

    /// Waits for a leecher's file and checks its SHA-256; the time from
    /// the leecher's start to the moment it printed the file's path, and
    /// the path.
    fn finished(&self, leecher: &mut Proc, data: &Data) -> Result<(Duration, PathBuf), String> {
        let (at, path) = leecher.next_line(STEP_TIMEOUT)?;
        let path = PathBuf::from(path);
        let hash = sha256_of_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if hash != data.sha256 {
            return Err(format!("{}: the copy's SHA-256 is wrong", leecher.name));
        }
        Ok((at - leecher.started, path))
    }

    /// S1 (one to one), with and without the flush before the final name,
    /// each against the plain copy done the same way; and S5 (the
    /// leecher's peak memory).
    pub fn one_to_one(&self) -> Result<Vec<Row>, String> {
        let data = self.data(self.size)?;
        let copy = self.dir.join("copy.bin");
        let mut rows = Vec::new();
        let mut peaks = Vec::new();
        let (_tracker, addr) = self.tracker("s1-tracker", &[])?;
        let (seeder, key, _) = self.seeder("s1-seeder", addr, &data.path, &[])?;
        // The CPU time checking every byte takes, measured on this machine.
        let hash_cpu = sha256_seconds_per_byte() * data.size as f64;
        for (sync, label) in [(false, "no flush"), (true, "flushed to disk")] {
            // The median of a few rounds of each, taken in turn, so that a
            // hiccup of the machine moves neither figure much.
            let mut bases = Vec::new();
            // The fastest any verified download could be in each round
            // (without the flush only): see `verified_floor`.
            let mut floors = Vec::new();
            let mut tooks = Vec::new();
            // CPU seconds (leecher, seeder) of each round.
            let mut cpu: Vec<(f64, f64)> = Vec::new();
            // CPU seconds of each round's copy (both ends).
            let mut copy_cpu: Vec<f64> = Vec::new();
            // Each round's time to write the bytes alone (no flush only).
            let mut writes = Vec::new();
            for round in 0..ROUNDS {
                if !sync {
                    writes.push(page_cache_write(&copy, data.size).map_err(|e| e.to_string())?);
                }
                let cpu_before = own_cpu_seconds();
                let base = tcp_copy(&data.path, &copy, sync).map_err(|e| e.to_string())?;
                let cpu_copied = own_cpu_seconds();
                std::fs::remove_file(&copy).map_err(|e| e.to_string())?;
                bases.push(base);
                if let (false, Some(before), Some(after)) = (sync, cpu_before, cpu_copied) {
                    copy_cpu.push(after - before);
                    floors.push(verified_floor(base, after - before, hash_cpu));
                }
                let name = format!(
                    "s1-leecher-{}-{round}",
                    if sync { "sync" } else { "nosync" }
                );
                let flag = if sync { "true" } else { "false" };
                let seeder_cpu = seeder.cpu_seconds();
                let mut leecher = self.leecher(&name, addr, &key, &["--sync-on-finish", flag])?;
                let (took, path) = self.finished(&mut leecher, &data)?;
                tooks.push(took);
                peaks.push(leecher.peak_rss());
                if let (Some(before), Some(after), Some(leecher)) =
                    (seeder_cpu, seeder.cpu_seconds(), leecher.cpu_seconds())
                {
                    cpu.push((leecher, after - before));
                }
                drop(leecher);
                std::fs::remove_file(&path).map_err(|e| e.to_string())?;
            }
            let (base, took) = (median(&bases), median(&tooks));
            let ratio = took.as_secs_f64() / base.as_secs_f64();
            let floor = (!floors.is_empty()).then(|| median(&floors));
            let floor_ratio = floor.map(|f| f.as_secs_f64() / base.as_secs_f64());
            let copy_cpu_mean = (!copy_cpu.is_empty())
                .then(|| copy_cpu.iter().sum::<f64>() / copy_cpu.len() as f64);
            rows.push(Row {
                id: "S1",
                what: format!("one to one, {}, {label}", size_text(data.size)),
                measured: format!(
                    "{:.2} s, {:.0} MB/s{}",
                    took.as_secs_f64(),
                    rate(data.size, took),
                    mean_cpu(&cpu).map_or(String::new(), |(l, s)| format!(
                        "; CPU {l:.2} s leecher + {s:.2} s seeder"
                    ))
                ),
                baseline: format!(
                    "copy {:.2} s, {:.0} MB/s (x{ratio:.2}){}{}",
                    base.as_secs_f64(),
                    rate(data.size, base),
                    floor
                        .zip(floor_ratio)
                        .zip(copy_cpu_mean)
                        .map_or(String::new(), |((f, r), c)| format!(
                            "; copy CPU {c:.2} s + SHA-256 CPU {hash_cpu:.2} s on {} cores: \
                             a verified download takes at least {:.2} s (x{r:.2} the copy)",
                            cores(),
                            f.as_secs_f64()
                        )),
                    spread(&writes).map_or(String::new(), |(low, high)| format!(
                        "; the bytes alone written from memory: {:.2} to {:.2} s",
                        low.as_secs_f64(),
                        high.as_secs_f64()
                    ))
                ),
                target: "<= 1.5 x copy".into(),
                met: ratio <= 1.5,
                json: json!({
                    "scenario": "S1", "sync_on_finish": sync, "bytes": data.size,
                    "rounds": ROUNDS, "leecher_secs": took.as_secs_f64(),
                    "leecher_mb_per_s": rate(data.size, took),
                    "baseline_secs": base.as_secs_f64(), "baseline_mb_per_s": rate(data.size, base),
                    "ratio": ratio,
                    "verified_floor_secs": floor.map(|f| f.as_secs_f64()),
                    "verified_floor_ratio": floor_ratio,
                    "sha256_cpu_secs": hash_cpu,
                    "cores": cores(),
                    "all_copy_cpu_secs": copy_cpu,
                    "cpu_secs_leecher_seeder": cpu,
                    "all_leecher_secs": tooks.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                    "all_baseline_secs": bases.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                    "all_page_cache_write_secs": writes.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                }),
            });
        }
        let peak = peaks.iter().flatten().max().copied();
        rows.push(Row {
            id: "S5",
            what: format!("leecher peak memory during S1, {}", size_text(data.size)),
            measured: peak.map_or("n/a (Linux only)".into(), |p| {
                format!("{:.1} MiB", p as f64 / MIB)
            }),
            baseline: "-".into(),
            target: "< 64 MiB".into(),
            met: peak.is_some_and(|p| (p as f64) < 64.0 * MIB),
            json: json!({"scenario": "S5", "peak_rss_bytes": peak}),
        });
        Ok(rows)
    }

    /// S2: four seeders at 25 MB/s each, one leecher.
    pub fn many_to_one(&self) -> Result<Vec<Row>, String> {
        let data = self.data(self.size)?;
        let (_tracker, addr) = self.tracker("s2-tracker", &[])?;
        let mut seeders = Vec::new();
        let mut key = String::new();
        for i in 0..4 {
            let (seeder, k, _) = self.seeder(
                &format!("s2-seeder-{i}"),
                addr,
                &data.path,
                &["--upload-limit", "25MB"],
            )?;
            seeders.push(seeder);
            key = k;
        }
        let mut leecher = self.leecher("s2-leecher", addr, &key, &[])?;
        let (took, _) = self.finished(&mut leecher, &data)?;
        let mbps = rate(data.size, took);
        Ok(vec![Row {
            id: "S2",
            what: format!(
                "four seeders at 25 MB/s to one leecher, {}",
                size_text(data.size)
            ),
            measured: format!("{:.2} s, {mbps:.1} MB/s", took.as_secs_f64()),
            baseline: "100 MB/s together".into(),
            target: ">= 90 MB/s".into(),
            met: mbps >= 90.0,
            json: json!({"scenario": "S2", "bytes": data.size, "leecher_secs": took.as_secs_f64(),
                         "leecher_mb_per_s": mbps, "seeders_mb_per_s": 100.0}),
        }])
    }

    /// S3: one seeder and eight leechers, every peer at 20 MB/s upload.
    pub fn one_to_many(&self) -> Result<Vec<Row>, String> {
        let data = self.data(self.size.min(256 << 20))?;
        let limit = ["--upload-limit", "20MB"];
        let (_tracker, addr) = self.tracker("s3-tracker", &[])?;
        let (seeder, key, _) = self.seeder("s3-seeder", addr, &data.path, &limit)?;
        // What the seeder reads from here on is the pieces it sends: how
        // many times over it sends the file is what the swarm waits on.
        let read_before = seeder.bytes_read();
        let mut leechers = (0..8)
            .map(|i| self.leecher(&format!("s3-leecher-{i}"), addr, &key, &limit))
            .collect::<Result<Vec<_>, _>>()?;
        // From the first leecher's start to each one's path line (the
        // copies' hashes are checked after, off the clock).
        let first = leechers[0].started;
        let mut times = Vec::new();
        for leecher in &mut leechers {
            let (took, _) = self.finished(leecher, &data)?;
            times.push((leecher.started + took - first).as_secs_f64());
        }
        let all = times.iter().copied().fold(0.0, f64::max);
        let single = data.size as f64 / (20.0 * MB);
        let ratio = all / single;
        let seeder_sent = read_before
            .zip(seeder.bytes_read())
            .map(|(before, after)| after.saturating_sub(before));
        let sent_text = seeder_sent.map_or(String::new(), |bytes| {
            format!(
                "; the seeder sent {:.0} MB, x{:.2} the file",
                bytes as f64 / MB,
                bytes as f64 / data.size as f64
            )
        });
        Ok(vec![Row {
            id: "S3",
            what: format!(
                "one seeder to eight leechers at 20 MB/s each, {}",
                size_text(data.size)
            ),
            measured: format!("all done in {all:.1} s{sent_text}"),
            baseline: format!(
                "one transfer {single:.1} s (x{ratio:.2}); client-server {:.1} s",
                single * 8.0
            ),
            target: "<= 1.5 x one transfer".into(),
            met: ratio <= 1.5,
            json: json!({"scenario": "S3", "bytes": data.size, "all_done_secs": all,
                         "each_done_secs": times, "single_transfer_secs": single,
                         "client_server_secs": single * 8.0, "ratio": ratio,
                         "seeder_sent_bytes": seeder_sent}),
        }])
    }

    /// S4: 1,000 sessions offering 10 files each, then 32 threads sending
    /// `RQFS` and `REQF` on persistent connections.
    pub fn tracker_load(&self) -> Result<Vec<Row>, String> {
        const SESSIONS: usize = 1000;
        const FILES: usize = 10;
        const CLIENTS: usize = 32;
        const MEASURE: Duration = Duration::from_secs(5);
        let (tracker, addr) = self.tracker(
            "s4-tracker",
            &[
                "--max-connections",
                "4096",
                "--max-connections-per-ip",
                "4096",
            ],
        )?;
        let mut rng = fastrand::Rng::with_seed(4);
        let mut sessions = Vec::with_capacity(SESSIONS);
        let mut keys = Vec::with_capacity(SESSIONS * FILES);
        // Each session's lines, `HELO` then its `ADDF`s, kept for the
        // measure of the tracker's work alone.
        let mut session_lines = Vec::with_capacity(SESSIONS);
        for i in 0..SESSIONS {
            let mut lines = vec![format!("HELO {} u{i}", 20_000 + i)];
            let mut session = Session::open(addr, &lines[0])?;
            for j in 0..FILES {
                let key: String = (0..32).map(|_| format!("{:02x}", rng.u8(..))).collect();
                lines.push(format!(
                    "ADDF {key} f-{i}-{j}.bin 1000000 262144 other /bench/f-{i}-{j}.bin"
                ));
                session.ask(&lines[j + 1])?;
                keys.push(key);
            }
            sessions.push(session);
            session_lines.push(lines);
        }
        let rss = tracker.rss();
        // The baseline server answers with the tracker's own replies to
        // one request of each kind, so both send the same bytes.
        let mut probe = Session::open(addr, "HELO 59999")?;
        let mut canned_args = vec![CANNED_SERVER.to_string()];
        for (verb, file) in [("RQFS key=", "rqfs"), ("REQF ", "reqf")] {
            probe.ask(&format!("{verb}{}", keys[0]))?;
            let path = self.dir.join(format!("s4-canned-{file}.txt"));
            std::fs::write(&path, &probe.reply).map_err(|e| e.to_string())?;
            canned_args.extend([verb.to_string(), path.to_string_lossy().into_owned()]);
        }
        drop(probe);
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut canned = Proc::spawn(
            "s4-canned",
            &me,
            &canned_args,
            &self.dir.join("s4-canned.log"),
        )?;
        let canned_addr: SocketAddr = canned
            .line_after("listening on", STEP_TIMEOUT)?
            .1
            .parse()
            .map_err(|e| format!("canned server address: {e}"))?;
        let keys = Arc::new(keys);
        // Two pairs of runs, tracker then canned server, then canned
        // server then tracker, so neither always goes first. Each pair's
        // two runs are minutes apart at most and share the machine's mood;
        // the pair where the tracker did best is reported, with its own
        // canned run, so the ratio never mixes two moments.
        let mut pairs = Vec::new();
        for tracker_first in [true, false] {
            let run_tracker = || load(&tracker, addr, &keys, CLIENTS, MEASURE);
            let run_canned = || load(&canned, canned_addr, &keys, CLIENTS, MEASURE);
            pairs.push(if tracker_first {
                let ours = run_tracker()?;
                (ours, run_canned()?)
            } else {
                let theirs = run_canned()?;
                (run_tracker()?, theirs)
            });
        }
        // Timed while the tracker's sessions are still open: closing a
        // thousand connections would keep the machine busy meanwhile.
        let requests: Vec<String> = (0..WORK_ALONE_REQUESTS)
            .map(|n| request_line(&keys, n % 2 == 0, &mut rng))
            .collect();
        let work_alone = tracker_work_alone(&session_lines, &requests)?;
        let [warm, core_cold, all_cold] =
            [work_alone.warm, work_alone.core_cold, work_alone.all_cold]
                .map(|per_request| per_request.as_secs_f64() * 1e6);
        drop(sessions);
        let (mut ours, theirs) = pairs
            .into_iter()
            .max_by_key(|(ours, _)| ours.latencies.len())
            .ok_or("no load run")?;
        let per_second = ours.per_second();
        let limit = theirs.per_second();
        let budget = theirs.budget_at(TARGET_RATE);
        let (p50, p99) = (ours.percentile(0.50), ours.percentile(0.99));
        let rss_mib = rss.map(|r| r as f64 / MIB);
        Ok(vec![Row {
            id: "S4",
            what: format!("tracker: {SESSIONS} sessions x {FILES} files, {CLIENTS} clients"),
            measured: format!(
                "{per_second:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms, {}",
                rss_mib.map_or("rss n/a".into(), |m| format!("{m:.1} MiB resident"))
            ),
            baseline: format!(
                "canned replies, no work, same clients: {limit:.0} req/s (x{:.2}), the machine {} busy; server CPU per request {} against {}, the whole machine's {} against {}; the tracker's work alone {warm:.2} us per request ({core_cold:.2} us with the core's own caches cold, {all_cold:.2} us with every cache cold), where {TARGET_RATE:.0} req/s leaves it about {} more than the canned server's",
                per_second / limit,
                theirs
                    .machine_busy()
                    .map_or("n/a".into(), |b| format!("{:.0}%", b * 100.0)),
                micros(ours.cpu_per_request()),
                micros(theirs.cpu_per_request()),
                micros(ours.machine_cpu_per_request()),
                micros(theirs.machine_cpu_per_request()),
                micros(budget),
            ),
            target: format!(">= {TARGET_RATE:.0} req/s, p99 < 5 ms, < 200 MiB"),
            met: per_second >= TARGET_RATE && p99 < 5.0 && rss_mib.is_some_and(|m| m < 200.0),
            json: json!({"scenario": "S4", "sessions": SESSIONS, "files_per_session": FILES,
                         "clients": CLIENTS, "requests": ours.latencies.len(), "requests_per_s": per_second,
                         "canned_requests_per_s": limit,
                         "tracker_cpu_us_per_request": ours.cpu_per_request(),
                         "canned_cpu_us_per_request": theirs.cpu_per_request(),
                         "canned_machine_busy": theirs.machine_busy(),
                         "tracker_machine_busy": ours.machine_busy(),
                         "canned_machine_cpu_us_per_request": theirs.machine_cpu_per_request(),
                         "tracker_machine_cpu_us_per_request": ours.machine_cpu_per_request(),
                         "tracker_work_alone_us": warm,
                         "tracker_work_alone_core_cold_us": core_cold,
                         "tracker_work_alone_all_cold_us": all_cold,
                         "work_budget_us_at_target": budget,
                         "p50_ms": p50, "p99_ms": p99, "tracker_rss_bytes": rss}),
        }])
    }

    /// S6: the time a peer takes to share (hash) a file, against SHA-256
    /// of the same file on one core.
    pub fn hashing(&self) -> Result<Vec<Row>, String> {
        let data = self.data(self.size)?;
        let (_, one_core) = sha256_one_core(&data.path).map_err(|e| e.to_string())?;
        let (_tracker, addr) = self.tracker("s6-tracker", &[])?;
        let (_seeder, _, took) = self.seeder("s6-seeder", addr, &data.path, &[])?;
        let gbps = data.size as f64 / took.as_secs_f64() / 1e9;
        Ok(vec![Row {
            id: "S6",
            what: format!("share (hash) {}, peer start included", size_text(data.size)),
            measured: format!("{:.2} s, {gbps:.2} GB/s", took.as_secs_f64()),
            baseline: format!(
                "SHA-256 on one core {:.2} s, {:.2} GB/s",
                one_core.as_secs_f64(),
                data.size as f64 / one_core.as_secs_f64() / 1e9
            ),
            target: ">= 1 GB/s".into(),
            met: gbps >= 1.0,
            json: json!({"scenario": "S6", "bytes": data.size, "share_secs": took.as_secs_f64(),
                         "gb_per_s": gbps, "one_core_secs": one_core.as_secs_f64()}),
        }])
    }
}

/// One tracker connection that speaks a line and reads the answer.
struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The last answer, every line of it.
    reply: String,
}

impl Session {
    fn open(addr: SocketAddr, helo: &str) -> Result<Session, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("tracker: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut session = Session {
            reader: BufReader::new(stream),
            writer,
            reply: String::new(),
        };
        session.ask(helo)?;
        Ok(session)
    }

    /// Sends `request`; reads one line, or up to `END` for a listing.
    fn ask(&mut self, request: &str) -> Result<usize, String> {
        self.writer
            .write_all(format!("{request}\n").as_bytes())
            .map_err(|e| format!("tracker: {e}"))?;
        let listing = request.starts_with("RQFS") || request.starts_with("REQF");
        let mut lines = 0;
        self.reply.clear();
        loop {
            let start = self.reply.len();
            let n = self
                .reader
                .read_line(&mut self.reply)
                .map_err(|e| format!("tracker: {e}"))?;
            let line = &self.reply[start..];
            if n == 0 {
                return Err("the tracker closed the connection".into());
            }
            if line.starts_with("ERRR") {
                return Err(format!("{request:?} refused: {}", line.trim()));
            }
            lines += 1;
            if !listing || line.starts_with("END") {
                return Ok(lines);
            }
        }
    }
}

/// What one load measurement saw: each request's latency, in
/// microseconds, over `measured`, and the server's CPU time meanwhile.
#[derive(Default)]
struct Load {
    latencies: Vec<u32>,
    measured: Duration,
    server_cpu: Option<f64>,
    /// The machine's CPU time meanwhile, all cores: (busy, all) seconds.
    machine_cpu: Option<(f64, f64)>,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.measured.as_secs_f64().max(f64::EPSILON)
    }

    /// The share of the machine's CPU time (all cores) that was busy.
    fn machine_busy(&self) -> Option<f64> {
        self.machine_cpu
            .map(|(busy, all)| busy / all.max(f64::EPSILON))
    }

    /// The whole machine's busy CPU time per request (clients, kernel and
    /// server), in microseconds.
    fn machine_cpu_per_request(&self) -> Option<f64> {
        self.per_request(self.machine_cpu.map(|(busy, _)| busy))
    }

    /// How much more CPU time per request than this run's whole machine
    /// took a server may take and still answer `rate` requests a second,
    /// in microseconds: the cores' time per request at `rate`, less the
    /// busy time per request measured here. An estimate: it takes the
    /// clients and the kernel to cost the same against both servers,
    /// which runs minutes apart do only roughly. Zero or less: not even
    /// this server reached `rate`.
    fn budget_at(&self, rate: f64) -> Option<f64> {
        let (_, all) = self.machine_cpu?;
        let cores = all / self.measured.as_secs_f64().max(f64::EPSILON);
        Some(cores * 1e6 / rate - self.machine_cpu_per_request()?)
    }

    /// The server's CPU time per request, in microseconds.
    fn cpu_per_request(&self) -> Option<f64> {
        self.per_request(self.server_cpu)
    }

    /// `seconds` of CPU time spread over the requests answered, in
    /// microseconds each.
    fn per_request(&self, seconds: Option<f64>) -> Option<f64> {
        let count = self.latencies.len().max(1) as f64;
        seconds.map(|cpu| cpu / count * 1e6)
    }

    /// The latency at `p` (0 to 1), in milliseconds.
    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let count = self.latencies.len();
        self.latencies
            .get(((count as f64 * p) as usize).min(count.saturating_sub(1)))
            .map_or(0.0, |&us| us as f64 / 1000.0)
    }
}

/// `clients` threads, each on its own persistent connection to `server`,
/// asking for `keys` for `measure` after a warm-up ([`WARM_UP`]). The
/// clients count requests and this counts the server's CPU time over the
/// same window, from one start.
fn load(
    server: &Proc,
    addr: SocketAddr,
    keys: &Arc<Vec<String>>,
    clients: usize,
    measure: Duration,
) -> Result<Load, String> {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let keys = Arc::clone(keys);
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || load_client(addr, t, &keys, start, measure))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let sleep_until =
        |at: Instant| std::thread::sleep(at.saturating_duration_since(Instant::now()));
    sleep_until(start + WARM_UP);
    let (cpu_before, machine_before) = (server.cpu_seconds(), machine_cpu_seconds());
    sleep_until(start + WARM_UP + measure);
    let (cpu_after, machine_after) = (server.cpu_seconds(), machine_cpu_seconds());
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| "a load thread panicked")??);
    }
    Ok(Load {
        latencies,
        measured: measure,
        server_cpu: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
        machine_cpu: machine_before
            .zip(machine_after)
            .map(|((busy_a, all_a), (busy_b, all_b))| (busy_b - busy_a, all_b - all_a)),
    })
}

/// How long each load client runs before it measures.
const WARM_UP: Duration = Duration::from_millis(500);

/// One load thread: `RQFS key=` and `REQF` in turn for random keys, for
/// `measure` after the warm-up that follows `start`; the latency of each
/// request sent in that window, in microseconds.
fn load_client(
    addr: SocketAddr,
    id: usize,
    keys: &[String],
    start: Instant,
    measure: Duration,
) -> Result<Vec<u32>, String> {
    let mut session = Session::open(addr, &format!("HELO {}", 60_000 + id))?;
    let mut rng = fastrand::Rng::with_seed(id as u64);
    let warm_until = start + WARM_UP;
    let stop_at = warm_until + measure;
    let mut latencies = Vec::new();
    let mut turn = false;
    loop {
        turn = !turn;
        let request = request_line(keys, turn, &mut rng);
        let sent = Instant::now();
        if sent >= stop_at {
            return Ok(latencies);
        }
        let lines = session.ask(&request)?;
        if lines != 2 {
            return Err(format!("{request}: {lines} lines, expected one and END"));
        }
        if sent >= warm_until {
            latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

/// One of S4's requests for a random key: `RQFS key=` or `REQF`.
fn request_line(keys: &[String], search: bool, rng: &mut fastrand::Rng) -> String {
    let key = &keys[rng.usize(..keys.len())];
    if search {
        format!("RQFS key={key}")
    } else {
        format!("REQF {key}")
    }
}

/// How many requests the measure of the tracker's work alone times.
const WORK_ALONE_REQUESTS: usize = 200_000;

/// S4's target, requests per second.
const TARGET_RATE: f64 = 50_000.0;

/// Rounds of each S1 measurement; the median is reported.
const ROUNDS: usize = 3;

/// The mean (leecher, seeder) CPU seconds of the rounds, if measured.
fn mean_cpu(rounds: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = rounds.len() as f64;
    (n > 0.0).then(|| {
        let (l, s) = rounds
            .iter()
            .fold((0.0, 0.0), |(l, s), (a, b)| (l + a, s + b));
        (l / n, s / n)
    })
}

/// The fastest a verified download of the copied bytes could be: it does
/// at least the copy's work (`copy_cpu`, both ends) plus SHA-256 over every
/// byte (`hash_cpu`), spread perfectly over every core, and it is no
/// faster than the copy itself.
fn verified_floor(copy: Duration, copy_cpu: f64, hash_cpu: f64) -> Duration {
    let spread = (copy_cpu + hash_cpu) / cores() as f64;
    copy.max(Duration::from_secs_f64(spread))
}

/// The machine's cores (1 if unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The shortest and longest of `times`, if any.
fn spread(times: &[Duration]) -> Option<(Duration, Duration)> {
    Some((*times.iter().min()?, *times.iter().max()?))
}

fn median(times: &[Duration]) -> Duration {
    // Sorted in a copy: the JSON lists the rounds in the order they ran,
    // beside figures (CPU, floors) kept in that order too.
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// Microseconds for the table, or `n/a`.
fn micros(us: Option<f64>) -> String {
    us.map_or("n/a".into(), |us| format!("{us:.1} us"))
}

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / MB
}

fn size_text(bytes: u64) -> String {
    swarmline::units::format_bytes(bytes)
}
