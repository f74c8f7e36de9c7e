//! The real `tracker` and `peer` binaries as child processes: finding (and
//! if need be building) them, starting them with their flags, reading their
//! standard output line by line, and their memory as the kernel counts it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;

/// Every child started and not yet reaped, for [`stop_all`]; and whether
/// [`stop_all`] ran (then no child may start any more).
static RUNNING: Mutex<Running> = Mutex::new(Running {
    children: Vec::new(),
    stopped: false,
});

struct Running {
    children: Vec<Weak<Mutex<Child>>>,
    stopped: bool,
}

/// Kills every child still running and waits for it: an interrupted
/// benchmark (Ctrl-C, or a `kill` of this process alone, which its
/// children do not see) leaves none behind, nor any still writing into
/// the work directory about to be removed. A child whose handle is busy
/// for over a second (being reaped already) is left to that.
pub fn stop_all() {
    let running: Vec<_> = {
        let mut running = RUNNING.lock();
        running.stopped = true;
        running.children.iter().filter_map(Weak::upgrade).collect()
    };
    for child in running {
        if let Some(mut child) = child.try_lock_for(Duration::from_secs(1)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Where the two binaries are.
pub struct Binaries {
    pub tracker: PathBuf,
    pub peer: PathBuf,
}

/// The binaries built with the same profile as this benchmark, built now
/// (`cargo build --bins`) when missing or older than it.
pub fn binaries() -> Result<Binaries, String> {
    let exe = std::env::current_exe().map_err(|e| format!("where am I? {e}"))?;
    // <target>/<profile>/examples/bench
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory")?;
    let found = Binaries {
        tracker: profile_dir.join(format!("tracker{}", std::env::consts::EXE_SUFFIX)),
        peer: profile_dir.join(format!("peer{}", std::env::consts::EXE_SUFFIX)),
    };
    let built_at = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let bench_at = built_at(&exe);
    let stale = |path: &Path| match (built_at(path), bench_at) {
        (Some(bin), Some(bench)) => bin < bench,
        _ => true,
    };
    if stale(&found.tracker) || stale(&found.peer) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--bins"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        eprintln!("building the tracker and peer binaries...");
        let status = build
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("cargo build --bins failed".into());
        }
    }
    Ok(found)
}

/// A running child process, killed and reaped when dropped.
pub struct Proc {
    pub name: String,
    /// Shared with [`RUNNING`] only, so that [`stop_all`] can reach it.
    child: Arc<Mutex<Child>>,
    pid: u32,
    /// Standard output, each line with the moment it was read: a
    /// measurement ends when the line came, not when it was looked at.
    lines: Receiver<(Instant, String)>,
    reader: Option<JoinHandle<()>>,
    pub started: Instant,
}

impl Proc {
    /// Starts `program` with `args`; its standard error goes to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Proc, String> {
        let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let child = Arc::new(Mutex::new(child));
        {
            let mut running = RUNNING.lock();
            if running.stopped {
                // Started as the benchmark was being stopped: not kept.
                let mut child = child.lock();
                let _ = child.kill();
                let _ = child.wait();
                return Err("the benchmark is stopping".into());
            }
            running.children.retain(|c| c.strong_count() > 0);
            running.children.push(Arc::downgrade(&child));
        }
        let (tx, lines) = crossbeam_channel::unbounded();
        // Made first, so that any error from here on kills it (on drop).
        let mut proc = Proc {
            name: name.to_string(),
            child,
            pid,
            lines,
            reader: None,
            started,
        };
        let stdout = stdout.ok_or("no stdout")?;
        let reader = std::thread::Builder::new()
            .name(format!("stdout-{name}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((Instant::now(), line)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        proc.reader = Some(reader);
        Ok(proc)
    }

    /// The next line of standard output and when it came, within `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Result<(Instant, String), String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "{}: no output within {} s",
                self.name,
                timeout.as_secs()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .lock()
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                Err(format!(
                    "{} ended ({status}) before printing what was expected; see its log",
                    self.name
                ))
            }
        }
    }

    /// The rest of the first line that starts with `prefix`, and the time
    /// from the start of the process to that line.
    pub fn line_after(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<(Duration, String), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = self.next_line(left)?;
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok((at - self.started, rest.trim().to_string()));
            }
        }
    }

    /// Its peak resident memory so far, in bytes (Linux only).
    pub fn peak_rss(&self) -> Option<u64> {
        status_field(self.pid, "VmHWM:")
    }

    /// Bytes it has read so far through `read` and its kin, files and
    /// sockets alike (`rchar` in `/proc/<pid>/io`; Linux only).
    pub fn bytes_read(&self) -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid)).ok()?;
        let line = io.lines().find(|l| l.starts_with("rchar:"))?;
        line["rchar:".len()..].trim().parse().ok()
    }

    /// Its resident memory now, in bytes (Linux only).
    pub fn rss(&self) -> Option<u64> {
        status_field(self.pid, "VmRSS:")
    }

    /// CPU time it has used so far, user and system (Linux only; clock
    /// ticks taken as the usual 100 per second).
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&self.pid.to_string())
    }
}

/// The CPU time (user and system) this benchmark process has used so far,
/// all threads together (Linux only: `None` elsewhere).
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds_of("self")
}

/// The machine's CPU time so far, summed over its cores: (busy, all), in
/// seconds, from `/proc/stat` (Linux only; clock ticks taken as the usual
/// 100 per second). Busy is all but idle and waiting for I/O; time the
/// host gave to others (steal) counts as busy.
pub fn machine_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let first = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal (guest time is
    // counted in user already)
    let ticks: Vec<f64> = first
        .split_whitespace()
        .take(8)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let all: f64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(((all - idle) / 100.0, all / 100.0))
}

/// The CPU time of process `pid` (a number, or `self`) from `/proc`.
fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut child = self.child.lock();
        let _ = child.kill();
        let _ = child.wait();
        drop(child);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
