//! Helpers shared by the integration tests: start the real `tracker` binary
//! on a free port, and talk to it line by line as `nc` would.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any single read in a test may block before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A `tracker` process on 127.0.0.1 and a free port; killed when dropped.
pub struct TrackerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TrackerProcess {
    /// Starts the tracker with `extra` flags after the test defaults
    /// (loopback, port 0, a log file in a temporary directory).
    pub fn start(extra: &[&str]) -> TrackerProcess {
        TrackerProcess::start_in(&[], extra)
    }

    /// Like [`TrackerProcess::start`], run through `wrapper` (such as
    /// `ip netns exec NS`).
    pub fn start_in(wrapper: &[&str], extra: &[&str]) -> TrackerProcess {
        let dir = tempfile::tempdir().unwrap();
        let log_file = dir.path().join("tracker.log");
        let mut child = wrapped(wrapper, env!("CARGO_BIN_EXE_tracker"))
            .args([
                "--address",
                "127.0.0.1",
                "--port",
                "0",
                "--log-level",
                "debug",
            ])
            .arg("--log-file")
            .arg(&log_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the tracker binary");
        let stdout = child.stdout.take().unwrap();
        let first_line = first_line_within(stdout, READ_TIMEOUT);
        let addr = first_line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {first_line:?}"))
            .parse()
            .unwrap();
        TrackerProcess {
            child,
            addr,
            log_file,
            _dir: dir,
        }
    }

    /// A new client connection.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The log file's content so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for `program`, run through `wrapper` when it is not empty.
pub fn wrapped(wrapper: &[&str], program: &str) -> Command {
    match wrapper.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
    }
}

/// Reads the first line of a child's output, failing the test if it does
/// not come in time.
pub fn first_line_within(stream: impl Read + Send + 'static, limit: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit)
        .expect("no first line from the process in time")
        .trim_end()
        .to_string()
}

/// One client connection, used the way a person uses `nc`.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        enough_open_files();
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Sends one line (a `\n` is added).
    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next line received, without its `\n`; `None` when the server
    /// closed the connection.
    pub fn recv(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.strip_suffix('\n').unwrap_or(&line).to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("no answer: {e}"),
        }
    }

    /// Exactly `n` raw bytes (a payload).
    pub fn recv_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0; n];
        self.reader
            .read_exact(&mut bytes)
            .expect("the whole payload");
        bytes
    }

    /// The next line, which must be there.
    pub fn line(&mut self) -> String {
        self.recv().expect("the connection closed")
    }

    /// Sends a request and returns its one-line answer.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Sends a request and returns the listing lines before `END`.
    pub fn list(&mut self, line: &str) -> Vec<String> {
        self.send(line);
        let mut lines = Vec::new();
        loop {
            let reply = self.line();
            if reply == "END" {
                return lines;
            }
            assert!(!reply.starts_with("ERRR"), "{line} -> {reply}");
            lines.push(reply);
        }
    }

    /// The key of the first file whose name contains `word` (by `RQFS`).
    pub fn key_of(&mut self, word: &str) -> String {
        let files = self.list(&format!("RQFS {word}"));
        let first = files
            .first()
            .unwrap_or_else(|| panic!("no file matches {word}"));
        first.split(' ').nth(1).unwrap().to_string()
    }

    /// The pieces the tracker says the (first) leecher of `key` holds.
    pub fn leecher_pieces(&mut self, key: &str) -> u64 {
        self.list(&format!("REQF {key}"))
            .iter()
            .find(|p| p.contains(" leecher "))
            .and_then(|p| p.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Closes without `QUIT`, as when the peer crashes.
    pub fn close(self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

/// A file key made from one byte, for tests that need many distinct keys.
pub fn key(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

/// Polls `check` until it is true or `limit` passes; true if it became true.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// The repository's root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Swarms in one process: a tracker and peers on 127.0.0.1, each peer with
// its own directories.

use swarmline::config::{PeerConfig, Settings, PEER_KEYS};
use swarmline::peer::Peer;
use swarmline::tracker::{Tracker, TrackerOptions};

/// A tracker in this process on a free port.
/// Raises the test process's limit of open files, once: a test's hundreds
/// of clients and in-process peers pass macOS's 256.
pub fn enough_open_files() {
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(swarmline::server::raise_open_file_limit);
}

pub fn tracker_in_process() -> Tracker {
    enough_open_files();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    Tracker::start(listener, TrackerOptions::default()).unwrap()
}

/// A peer configuration for tests: loopback, free port, 16 KiB pieces, a
/// 1 s BufferMap interval, directories under `dir/<name>`, and `extra`
/// settings (`("user", "alice")`, ...) on top.
pub fn peer_config(
    dir: &Path,
    name: &str,
    tracker: SocketAddr,
    extra: &[(&str, &str)],
) -> PeerConfig {
    let home = dir.join(name);
    let mut settings = Settings::defaults("peer", PEER_KEYS);
    let home_str = |sub: &str| home.join(sub).to_string_lossy().into_owned();
    let base = [
        ("tracker", tracker.to_string()),
        ("address", "127.0.0.1".to_string()),
        ("port", "0".to_string()),
        ("piece_size", "16KiB".to_string()),
        ("bitmap_interval_secs", "1".to_string()),
        ("stall_timeout_secs", "10".to_string()),
        ("tracker_ping_secs", "1".to_string()),
        ("download_dir", home_str("downloads")),
        ("state_dir", home_str("state")),
        ("user_map_file", home_str("users.txt")),
        ("log_file", String::new()),
    ];
    for (key, value) in base {
        settings.set_flag(key, value);
    }
    for (key, value) in extra {
        settings.set_flag(key, value.to_string());
    }
    PeerConfig::from_settings(&settings).unwrap()
}

/// Starts a peer with [`peer_config`].
pub fn start_peer(dir: &Path, name: &str, tracker: SocketAddr, extra: &[(&str, &str)]) -> Peer {
    enough_open_files();
    Peer::start(peer_config(dir, name, tracker, extra)).unwrap()
}

/// `len` bytes of seeded pseudo-random data (the same for the same seed).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand_like(seed);
    (0..len).map(|_| rng()).collect()
}

/// A tiny xorshift generator, so tests need no extra crate.
fn fastrand_like(seed: u64) -> impl FnMut() -> u8 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    }
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

// ---------------------------------------------------------------------------
// A fake peer for tests: a raw mini-server that holds a file in memory and
// can lie (serve wrong bytes) or hold only some pieces.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use swarmline::pieces::Manifest;
use swarmline::protocol::{FileKey, PeerRequest, Reply};

/// How a fake peer behaves.
#[derive(Clone, Copy)]
pub enum Fake {
    /// Serves every piece, but with wrong bytes for the pieces where the
    /// function says so.
    Corrupt(fn(u32) -> bool),
    /// Holds (and admits to) only the pieces where the function says so.
    Holds(fn(u32) -> bool),
    /// Claims every piece in its BufferMap, but gives only those where the
    /// function says so (`ERRR 404` for the others).
    Claims(fn(u32) -> bool),
    /// Claims and sends every piece, but one byte a second.
    Dribbles,
    /// Claims every piece, and refuses each asked for (`ERRR 404`) after
    /// three seconds: no failure, and no piece, ever.
    RefusesSlowly,
    /// Announces each piece one byte longer than it is (and sends that).
    WrongLength,
    /// Sends the next piece instead of the one asked for.
    WrongIndex,
    /// Sends half a piece, then closes the connection.
    Truncated,
    /// Announces a 4 GB piece.
    HugeLength,
    /// Answers with a line of garbage.
    Garbage,
}

/// A fake peer registered at the tracker; stops when dropped.
pub struct FakePeer {
    pub addr: SocketAddr,
    pub key: FileKey,
    stop: Arc<AtomicBool>,
    _tracker: TcpStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePeer {
    /// Starts serving `data` cut in `piece_size` pieces, and registers at
    /// the tracker as holding it (`ADDF`, or `BITF` for a partial holder
    /// of a file someone else offered).
    pub fn start(
        tracker: SocketAddr,
        name: &str,
        data: Vec<u8>,
        piece_size: u32,
        fake: Fake,
    ) -> FakePeer {
        let manifest = Arc::new(Manifest::build(&data[..], piece_size, |_| {}).unwrap());
        let key = manifest.key();
        let size = manifest.size();
        let bitmap = fake_bitmap(&manifest, fake);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let data = Arc::new(data);
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            let (manifest, data) = (Arc::clone(&manifest), Arc::clone(&data));
                            std::thread::spawn(move || fake_serve(stream, &manifest, &data, fake));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
        });
        let mut session = Client::connect(tracker);
        assert!(session
            .ask(&format!("HELO {}", addr.port()))
            .starts_with("OK"));
        let reply = match fake {
            Fake::Holds(_) => session.ask(&format!("BITF {key} {bitmap}")),
            _ => session.ask(&format!(
                "ADDF {key} {name} {size} {piece_size} other /fake/{name}"
            )),
        };
        assert!(reply.starts_with("OK"), "{reply}");
        FakePeer {
            addr,
            key,
            stop,
            _tracker: session.writer,
            thread: Some(thread),
        }
    }
}

/// The BufferMap a fake peer admits to.
fn fake_bitmap(manifest: &Manifest, fake: Fake) -> swarmline::protocol::BitmapField {
    let n = manifest.piece_count();
    let mut bits = vec![0u8; n.div_ceil(8)];
    for i in 0..n {
        let held = match fake {
            Fake::Holds(holds) => holds(i as u32),
            _ => true,
        };
        if held {
            bits[i / 8] |= 0x80 >> (i % 8);
        }
    }
    swarmline::protocol::BitmapField(bits)
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn fake_serve(stream: TcpStream, manifest: &Manifest, data: &[u8], fake: Fake) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        let request = PeerRequest::parse(line.trim_end());
        line.clear();
        let holds = |i: u32| match fake {
            Fake::Holds(holds) | Fake::Claims(holds) => holds(i),
            Fake::RefusesSlowly => false,
            _ => true,
        };
        let mut reply = Vec::new();
        match request {
            Ok(PeerRequest::Manf { key }) => {
                let text = manifest.to_string();
                reply.extend(
                    format!(
                        "{}\n",
                        Reply::Manifest {
                            key,
                            length: text.len() as u32
                        }
                    )
                    .into_bytes(),
                );
                reply.extend(text.into_bytes());
            }
            Ok(PeerRequest::Bitf { key, .. }) => {
                let bitmap = fake_bitmap(manifest, fake);
                reply.extend(format!("{}\n", Reply::Bitmap { key, bitmap }).into_bytes());
            }
            Ok(PeerRequest::Reqf { key, indices }) => {
                for index in indices {
                    if matches!(fake, Fake::RefusesSlowly) {
                        std::thread::sleep(Duration::from_secs(3));
                    }
                    if !holds(index) {
                        reply.extend(
                            format!("ERRR 404 piece {index} of {key} is not here\n").into_bytes(),
                        );
                        continue;
                    }
                    let start = manifest.piece_offset(index as usize) as usize;
                    let len = manifest.piece_len(index as usize).unwrap() as usize;
                    let mut piece = data[start..start + len].to_vec();
                    let mut header = Reply::Piece {
                        key,
                        index,
                        length: len as u32,
                    };
                    match fake {
                        Fake::Corrupt(bad) if bad(index) => piece[0] ^= 0xff,
                        Fake::WrongLength => {
                            piece.push(0);
                            header = Reply::Piece {
                                key,
                                index,
                                length: len as u32 + 1,
                            };
                        }
                        Fake::WrongIndex => {
                            header = Reply::Piece {
                                key,
                                index: index + 1,
                                length: len as u32,
                            }
                        }
                        Fake::Truncated => piece.truncate(len / 2),
                        Fake::HugeLength => {
                            header = Reply::Piece {
                                key,
                                index,
                                length: 4_000_000_000,
                            }
                        }
                        Fake::Garbage => {
                            reply.extend(b"%%%% \xff garbage\n");
                            continue;
                        }
                        _ => {}
                    }
                    reply.extend(format!("{header}\n").into_bytes());
                    reply.extend(piece);
                    if matches!(fake, Fake::Truncated) {
                        let _ = out.write_all(&reply);
                        return; // closes the connection mid-piece
                    }
                }
            }
            _ => reply.extend(b"ERRR 200 not in this fake\n"),
        }
        let sent = if matches!(fake, Fake::Dribbles) {
            reply.iter().try_for_each(|byte| {
                std::thread::sleep(Duration::from_secs(1));
                out.write_all(&[*byte])
            })
        } else {
            out.write_all(&reply)
        };
        if sent.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// A real `peer` process, driven through its standard input and output.

/// A `peer` process; killed when dropped.
pub struct PeerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    /// Everything printed so far, for failure messages.
    seen: Vec<String>,
    /// Where its standard error goes.
    stderr: PathBuf,
}

impl PeerProcess {
    /// Starts `peer` with test defaults (loopback, free port, directories
    /// under `home`, 16 KiB pieces, 1 s BufferMap interval) plus `args`
    /// (flags, then maybe a subcommand), and waits for `listening on`.
    pub fn start(home: &Path, tracker: SocketAddr, args: &[&str]) -> PeerProcess {
        PeerProcess::start_in(&[], home, tracker, args)
    }

    /// Like [`PeerProcess::start`], run through `wrapper` (such as
    /// `ip netns exec NS`).
    pub fn start_in(
        wrapper: &[&str],
        home: &Path,
        tracker: SocketAddr,
        args: &[&str],
    ) -> PeerProcess {
        std::fs::create_dir_all(home).unwrap();
        let path = |sub: &str| home.join(sub).to_string_lossy().into_owned();
        let mut child = wrapped(wrapper, env!("CARGO_BIN_EXE_peer"))
            .args([
                "--tracker",
                &tracker.to_string(),
                "--address",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args([
                "--piece-size",
                "16KiB",
                "--bitmap-interval-secs",
                "1",
                "--log-file",
                "",
            ])
            .args([
                "--download-dir",
                &path("downloads"),
                "--state-dir",
                &path("state"),
            ])
            .args(["--user-map-file", &path("users.txt"), "--log-level", "warn"])
            .args(["--tracker-ping-secs", "1"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(home.join("stderr.txt")).unwrap())
            .spawn()
            .expect("start the peer binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The shell's prompt has no newline: drop it from the line.
                let line = line.trim_start_matches("swarmline> ").to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = PeerProcess {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            seen: Vec::new(),
            stderr: home.join("stderr.txt"),
        };
        let first = process.expect("listening on ");
        process.addr = first.trim_start_matches("listening on ").parse().unwrap();
        process
    }

    /// Types a line into the process.
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line containing `wanted` (earlier lines are skipped);
    /// fails the test if it does not come in time.
    pub fn expect(&mut self, wanted: &str) -> String {
        let mut lines = self.lines_until(wanted);
        lines.pop().unwrap_or_default()
    }

    /// The lines printed from now up to the next one containing `wanted`
    /// (the last); fails the test if it does not come in time.
    pub fn lines_until(&mut self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let found = line.contains(wanted);
                    lines.push(line);
                    if found {
                        return lines;
                    }
                }
                Err(_) => panic!(
                    "no line with {wanted:?}; the peer printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to exit; its status.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "the peer did not exit; it printed:\n{}",
            self.seen.join("\n")
        );
    }

    /// Everything it wrote on its standard error.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last line on its standard error that contains `wanted`.
    pub fn last_stderr_line(&self, wanted: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.stderr).ok()?;
        text.lines()
            .rev()
            .find(|l| l.contains(wanted))
            .map(str::to_string)
    }

    /// The rest of what it printed after exiting.
    pub fn remaining_lines(&mut self) -> Vec<String> {
        let rest: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(rest.iter().cloned());
        rest
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a download's end, failing the test (instead of hanging it)
/// if it does not end within `limit`.
pub fn wait_within(
    download: std::sync::Arc<swarmline::peer::Download>,
    limit: Duration,
) -> Result<PathBuf, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(download.wait());
    });
    rx.recv_timeout(limit)
        .expect("the download did not end in time")
}

/// A tracker in this process and one peer seeding a file of seeded random
/// bytes: the start of most swarm tests.
pub struct SeededSwarm {
    // Fields drop in this order: the seeder, then the tracker, then the
    // directory its files live in.
    pub seeder: Peer,
    pub tracker: Tracker,
    pub data: Vec<u8>,
    pub key: swarmline::protocol::FileKey,
    pub dir: tempfile::TempDir,
}

/// Shares `len` bytes (from `seed`) as `name` from a peer started with
/// `settings`, under a new tracker.
pub fn seeded_swarm(name: &str, len: usize, seed: u64, settings: &[(&str, &str)]) -> SeededSwarm {
    let tracker = tracker_in_process();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(len, seed);
    let original = write_file(&dir.path().join("originals"), name, &data);
    let seeder = start_peer(dir.path(), "seeder", tracker.local_addr(), settings);
    let key = seeder.share(&original, |_| {}).unwrap().key;
    SeededSwarm {
        seeder,
        tracker,
        data,
        key,
        dir,
    }
}

impl SeededSwarm {
    /// Another peer in this swarm.
    pub fn peer(&self, name: &str, settings: &[(&str, &str)]) -> Peer {
        start_peer(self.dir.path(), name, self.tracker.local_addr(), settings)
    }
}

/// Puts into `peer`'s library a download of `data` (as `name`, under the
/// peer's download directory) that holds the pieces `holds` says: the state
/// a download is in when it was stopped. Returns the `.part` path.
pub fn plant_partial(
    peer: &Peer,
    home: &Path,
    name: &str,
    data: &[u8],
    holds: impl Fn(usize) -> bool,
) -> PathBuf {
    let downloads = home.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let part = downloads.join(format!("{name}.part"));
    plant_partial_at(peer, &part, name, data, holds);
    part
}

/// Like [`plant_partial`], with the unfinished file at `path` (made anew).
pub fn plant_partial_at(
    peer: &Peer,
    path: &Path,
    name: &str,
    data: &[u8],
    holds: impl Fn(usize) -> bool,
) {
    use swarmline::peer::library::SharedFile;
    use swarmline::pieces::{Bitmap, PieceFile};
    use swarmline::protocol::{FileName, MediaKind};
    const PIECE: usize = 16 * 1024;
    let manifest = Manifest::build(data, PIECE as u32, |_| {}).unwrap();
    let part = path;
    let file = PieceFile::create(part, manifest.size()).unwrap();
    let mut held = Bitmap::empty(manifest.piece_count());
    for (i, piece) in data.chunks(PIECE).enumerate().filter(|(i, _)| holds(*i)) {
        file.write_piece(&manifest, i, piece).unwrap();
        held.set(i);
    }
    let name = FileName::new(name).unwrap();
    let shared = SharedFile::partial(name, MediaKind::Other, manifest, part, file, held);
    peer.library().insert(Arc::new(shared));
}

// ---------------------------------------------------------------------------
// Odds and ends for tests that start other programs.

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0,
/// then released), for programs that must be told their port.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else
/// `<repo>/target`. For files a test leaves for people to look at.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir), // (an absolute `dir` stays as is)
        None => repo_root().join("target"),
    }
}

impl PeerProcess {
    /// A line containing `wanted`, printed already (even before
    /// `listening on`, which [`PeerProcess::start`] skips to) or to come:
    /// for start-up lines whose order is not fixed.
    pub fn printed(&mut self, wanted: &str) -> String {
        self.remaining_lines();
        match self.seen.iter().find(|line| line.contains(wanted)) {
            Some(line) => line.clone(),
            None => self.expect(wanted),
        }
    }

    /// The address of its web page, from the `gui on http://...` line it
    /// printed (without the final `/`).
    pub fn gui_url(&mut self) -> String {
        let line = self.printed("gui on ");
        let at = line
            .find("http://")
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        line[at..].trim().trim_end_matches('/').to_string()
    }
}

/// A WAV file (16-bit mono PCM at `rate` samples a second) holding `pcm`
/// as its samples: audio to any player and any kind detector.
pub fn wav_bytes(pcm: &[u8], rate: u32) -> Vec<u8> {
    let data_len = pcm.len() as u32;
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend(b"RIFF");
    wav.extend((36 + data_len).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes()); // the fmt chunk's size
    wav.extend(1u16.to_le_bytes()); // PCM
    wav.extend(1u16.to_le_bytes()); // mono
    wav.extend(rate.to_le_bytes());
    wav.extend((rate * 2).to_le_bytes()); // bytes per second
    wav.extend(2u16.to_le_bytes()); // bytes per frame
    wav.extend(16u16.to_le_bytes()); // bits per sample
    wav.extend(b"data");
    wav.extend(data_len.to_le_bytes());
    wav.extend(pcm);
    wav
}

/// A port of 127.0.0.1 that refuses connections, held by a socket bound
/// there and not listening, until the socket is dropped: an address where
/// nobody answers, which no other test's server can take meanwhile (a
/// port merely freed can be given to the next `bind` on port 0).
pub fn port_held_shut() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any_port: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any_port.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}
