//! The baselines each scenario is measured against, run in the same
//! invocation so that a ratio holds on a noisy machine: a plain TCP file
//! copy (the machine's practical limit for moving a file between two
//! processes' worth of sockets and disk), and SHA-256 on one core (of a
//! file, and of bytes already in memory: the CPU cost of checking them).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

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
