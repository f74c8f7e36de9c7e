//! The baselines each scenario is measured against, run in the same
//! invocation so that a ratio holds on a noisy machine: a plain TCP file
//! copy (the machine's practical limit for moving a file between two
//! processes' worth of sockets and disk), SHA-256 on one core (of a
//! file, and of bytes already in memory: the CPU cost of checking them),
//! a server that answers each request line with a canned reply (the most
//! requests a thread-per-connection server can answer here), and the
//! tracker's own work per request with no socket at all.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use swarmline::protocol::{Reply, TrackerRequest};
use swarmline::tracker::handler::respond;
use swarmline::tracker::{Registry, TrackerOptions};
use swarmline::wire::write_line;

/// Buffer size of the plain copy, as the issue sets it.
const COPY_BUFFER: usize = 1 << 20;

/// Copies `from` to `to` over one TCP connection on 127.0.0.1 with 1 MiB
/// buffers and no hashing; with `sync`, the copy is flushed to disk before
/// the clock stops (as a download that must survive a power cut is).
pub fn tcp_copy(from: &Path, to: &Path, sync: bool) -> io::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let receiver = std::thread::Builder::new()
        .name("baseline-receiver".into())
        .spawn({
            let to = to.to_path_buf();
            move || -> io::Result<()> {
                let (mut stream, _) = listener.accept()?;
                let mut out = File::create(&to)?;
                let mut buf = vec![0u8; COPY_BUFFER];
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                }
                if sync {
                    out.sync_all()?;
                }
                Ok(())
            }
        })?;
    let sent = (|| -> io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let mut file = File::open(from)?;
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    })();
    let received = receiver
        .join()
        .map_err(|_| io::Error::other("the receiver panicked"))?;
    sent.and(received)?;
    Ok(started.elapsed())
}

/// Writes `bytes` from memory into a new file `to` (one thread, 1 MiB
/// writes, no network, no hashing, no flush) and deletes it again: the
/// time the writes took. This is the part of every copy and download that
/// puts the bytes in the page cache. On a virtual machine whose host takes
/// back the memory the guest frees, it varies by a factor of ten or more
/// from one moment to the next (BENCHMARKS.md), and the other figures
/// with it.
pub fn page_cache_write(to: &Path, bytes: u64) -> io::Result<Duration> {
    let chunk = vec![0xa5u8; COPY_BUFFER];
    let mut out = File::create(to)?;
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    let took = started.elapsed();
    drop(out);
    std::fs::remove_file(to)?;
    Ok(took)
}

/// SHA-256 of the file, and the time it took on one core.
pub fn sha256_one_core(path: &Path) -> io::Result<([u8; 32], Duration)> {
    let started = Instant::now();
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().into(), started.elapsed()))
}

/// The CPU time SHA-256 takes per byte on one core, hashing bytes already
/// in memory (no disk, no page cache): the least any verified download
/// must add to a plain copy, per byte received.
pub fn sha256_seconds_per_byte() -> f64 {
    const BYTES: usize = 64 << 20;
    let data = vec![0x5au8; BYTES];
    // Once to warm the pages and the code, then timed.
    let _ = Sha256::digest(&data);
    let started = Instant::now();
    let sum = Sha256::digest(&data);
    std::hint::black_box(sum);
    started.elapsed().as_secs_f64() / BYTES as f64
}

/// The argument that makes the benchmark binary the canned-reply server
/// ([`serve_canned`]) instead: it is started as a process of its own, as
/// the tracker is, so that both pay the same for switching between the
/// clients' process and theirs.
pub const CANNED_SERVER: &str = "--canned-server";

/// A server in the tracker's design (blocking sockets, a thread per
/// connection, line in, answer out) that does no work at all: each line
/// gets the canned reply for its verb at once. The requests per second it
/// answers are the most any thread-per-connection server could answer
/// with the same clients on this machine: the rest is the sockets, the
/// loopback and the scheduler.
///
/// `args` are pairs of a verb (a line's start) and a file holding its
/// reply; any other line is answered `OK`. Prints `listening on ADDR`,
/// then serves until the benchmark kills it.
pub fn serve_canned(args: &[String]) -> Result<(), String> {
    let replies: Vec<(String, Vec<u8>)> = args
        .chunks(2)
        .map(|pair| match pair {
            [verb, path] => std::fs::read(path)
                .map(|reply| (verb.clone(), reply))
                .map_err(|e| format!("{path}: {e}")),
            _ => Err(format!("{CANNED_SERVER} takes pairs of a verb and a file")),
        })
        .collect::<Result<_, _>>()?;
    let replies = Arc::new(replies);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    for (n, stream) in listener.incoming().enumerate() {
        // A failed accept ends the server (no spinning on it): the
        // benchmark then fails with the clients' errors.
        let stream = stream.map_err(|e| format!("accept: {e}"))?;
        let replies = Arc::clone(&replies);
        // Not joined: the process ends when the benchmark kills it.
        std::thread::Builder::new()
            .name(format!("canned-{n}"))
            .spawn(move || answer_lines(stream, &replies))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One connection of the canned server: reads lines until the client
/// closes, answering each.
fn answer_lines(stream: TcpStream, replies: &[(String, Vec<u8>)]) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let reply = replies
            .iter()
            .find(|(verb, _)| line.starts_with(verb.as_str()))
            .map_or(&b"OK\n"[..], |(_, bytes)| bytes);
        writer.write_all(reply)?;
    }
}

/// The tracker's own work per request, with no socket and no other thread,
/// three ways: with its code and data in the cache, and with them pushed
/// out of the cache before each request. See [`tracker_work_alone`].
#[derive(Debug, Clone, Copy)]
pub struct WorkAlone {
    /// The fastest of three rounds, everything in the cache.
    pub warm: Duration,
    /// The mean over requests each made after the core's own caches (L1
    /// and L2) were filled with other data: what they held is then in
    /// the shared cache (L3), mostly.
    pub core_cold: Duration,
    /// The mean over requests each made after every cache level was
    /// filled with other data, the TLB's page translations with it.
    pub all_cold: Duration,
}

/// The tracker's own work per request, with no socket and no other thread:
/// parse the line, answer it from a registry that holds what S4's tracker
/// holds (`sessions`: each one's `HELO` and `ADDF` lines), and format the
/// reply into a buffer, on one thread while the machine has nothing else
/// to do.
///
/// Warm, it is about the least CPU time a request can cost the tracker on
/// top of what the canned server pays. Under load a request runs after a
/// switch from other threads, which have used the caches meanwhile: the
/// two cold figures time the same work after the caches were filled with
/// other data (reading one byte per cache line of a buffer twice the size
/// of the caches in question), one request at a time, the filling
/// untimed. Inside S4 a request finds some of its lines cached (other
/// tracker threads run the same code) and others not: the two figures
/// bracket what its work can cost there.
///
/// Every request must be answered as S4's clients expect (one line and
/// `END`), or the measure is refused.
pub fn tracker_work_alone(
    sessions: &[Vec<String>],
    requests: &[String],
) -> Result<WorkAlone, String> {
    let options = TrackerOptions::default();
    let registry = RwLock::new(Registry::new(options.max_files_per_session));
    let ip = IpAddr::from([127, 0, 0, 1]);
    let answer = |session: u64, line: &str| {
        let request = TrackerRequest::parse(line).map_err(|e| format!("{line}: {e}"))?;
        let answer = respond(&registry, session, ip, &request, &options);
        match answer.lines.first() {
            Some(Reply::Error { text, .. }) => Err(format!("{line}: {text}")),
            _ => Ok(answer),
        }
    };
    for (id, lines) in (1..).zip(sessions) {
        for line in lines {
            answer(id, line)?;
        }
    }
    // The asking client has a session of its own, as S4's clients do.
    let asker = sessions.len() as u64 + 1;
    answer(asker, "HELO 60000")?;
    let mut out = Vec::with_capacity(1 << 20);
    let mut work = |line: &str| -> Result<(), String> {
        let answer = answer(asker, line)?;
        if answer.lines.len() != 2 {
            return Err(format!(
                "{line}: {} lines, expected one and END",
                answer.lines.len()
            ));
        }
        for reply in &answer.lines {
            write_line(&mut out, reply).map_err(|e| e.to_string())?;
        }
        if out.len() > 1 << 19 {
            out.clear();
        }
        Ok(())
    };
    let mut warm = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        for line in requests {
            work(line)?;
        }
        warm = warm.min(started.elapsed() / requests.len().max(1) as u32);
    }
    let (core_caches, all_caches) = cache_sizes();
    let mut cold = |cache_bytes: usize| -> Result<Duration, String> {
        // Written once, so that every page is really there (a page never
        // written reads as the one shared zero page), then only read: no
        // dirty line is left for the request to write back.
        // `black_box`: the compiler may not assume it knows the bytes and
        // skip reading them.
        let other_data = std::hint::black_box(vec![1u8; 2 * cache_bytes]);
        let asked = &requests[..COLD_REQUESTS.min(requests.len())];
        let mut spent = Duration::ZERO;
        for line in asked {
            let sum = other_data
                .iter()
                .step_by(CACHE_LINE)
                .fold(0u8, |sum, byte| sum.wrapping_add(*byte));
            std::hint::black_box(sum);
            let started = Instant::now();
            work(line)?;
            spent += started.elapsed();
        }
        Ok(spent / asked.len().max(1) as u32)
    };
    Ok(WorkAlone {
        warm,
        core_cold: cold(core_caches)?,
        all_cold: cold(all_caches)?,
    })
}

/// Requests timed one by one with the caches cold: filling every cache
/// level before each takes milliseconds, so a thousand are enough.
const COLD_REQUESTS: usize = 1_000;

/// The cache line size on x86-64 and most ARM cores; where lines are
/// larger, a step of 64 bytes still reads every one.
const CACHE_LINE: usize = 64;

/// The sizes of the first core's data caches of the level below the
/// largest (here L2, each core's own) and of the largest (here L3, shared
/// by all), from `/sys/devices/system/cpu/cpu0/cache` (Linux); 1 MiB and
/// 32 MiB where that cannot be read.
fn cache_sizes() -> (usize, usize) {
    // A core lists a handful of caches (`index0`, `index1`, ...).
    let mut levels: Vec<(u32, usize)> = (0..8)
        .filter_map(|index| {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
            let read = |field: &str| std::fs::read_to_string(format!("{dir}/{field}")).ok();
            if read("type")?.trim() == "Instruction" {
                return None;
            }
            let level = read("level")?.trim().parse().ok()?;
            let size = read("size")?;
            let kib: usize = size.trim().strip_suffix('K')?.parse().ok()?;
            Some((level, kib << 10))
        })
        .collect();
    levels.sort_unstable();
    match &levels[..] {
        [.., (_, private), (_, shared)] => (*private, *shared),
        _ => (1 << 20, 32 << 20),
    }
}
