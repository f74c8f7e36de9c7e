//! Fault tests across hosts: the tracker and the peers each run in a
//! network namespace of their own, joined by veth links to a bridge, with
//! `tc tbf` rate limits on the links. Linux only, as root (CI is); where
//! namespaces cannot be made the tests say so loudly and skip, except under
//! `CI=true`, where that is a failure.
//!
//! All addresses (10.231.<test>.<host>/24) exist only inside namespaces
//! these tests create; every namespace is removed when a test ends, also
//! when it fails.

#![cfg(target_os = "linux")]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use support::{random_bytes, write_file, PeerProcess, TrackerProcess};

/// Runs `ip` with these arguments; panics with its error output if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether this machine lets us make namespaces; `Err` says why not.
/// Probed once per test process.
fn namespaces_available() -> Result<(), String> {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(probe_namespaces).clone()
}

fn probe_namespaces() -> Result<(), String> {
    let name = format!("swlprobe{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &name]).output();
    match made {
        Ok(out) if out.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            if Command::new("tc").arg("-V").output().is_err() {
                return Err("tc (iproute2) is not installed".into());
            }
            Ok(())
        }
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run ip: {e}")),
    }
}

/// Returns a lab, or `None` after saying loudly why these tests skip.
fn lab(test: u8) -> Option<Lab> {
    match namespaces_available() {
        Ok(()) => Some(Lab::new(test)),
        Err(reason) => {
            let message = format!("SKIPPED: network-namespace fault tests need Linux as root with iproute2 ({reason})");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("\n*** {message} ***\n");
            None
        }
    }
}

/// One simulated host: a namespace with `eth0` on the lab's bridge.
struct Host {
    ns: String,
    ip: Ipv4Addr,
}

impl Host {
    /// The wrapper that runs a program on this host.
    fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.ns]
    }

    /// Cuts this host's link (as pulling its cable would).
    fn cut(&self) {
        ip(&["-n", &self.ns, "link", "set", "eth0", "down"]);
    }

    /// Plugs it back.
    fn restore(&self) {
        ip(&["-n", &self.ns, "link", "set", "eth0", "up"]);
    }
}

/// A bridge namespace and the hosts on it; removed when dropped.
struct Lab {
    prefix: String,
    subnet: u8,
    bridge: String,
    hosts: Vec<String>,
    next: u8,
}

static LABS: AtomicU32 = AtomicU32::new(0);

/// Removes namespaces left by test processes that were killed before
/// they could clean up (their names carry the process id).
fn sweep_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("swl")
            .and_then(|rest| rest.split('x').next())
        else {
            continue;
        };
        let mine = pid == (std::process::id() % 100_000).to_string();
        let alive = std::path::Path::new("/proc").join(pid).exists();
        if !mine && !alive {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl Lab {
    fn new(subnet: u8) -> Lab {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_leftovers);
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("swl{}x{n}", std::process::id() % 100_000);
        let bridge = format!("{prefix}br");
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        Lab {
            prefix,
            subnet,
            bridge,
            hosts: Vec::new(),
            next: 1,
        }
    }

    /// A new host, its link limited to `rate` (tc syntax: `8mbit`).
    fn host(&mut self, rate: &str) -> Host {
        let k = self.next;
        self.next += 1;
        let ns = format!("{}h{k}", self.prefix);
        let (outer, inner) = (
            format!("{}a{k}", self.prefix),
            format!("{}b{k}", self.prefix),
        );
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &outer, "netns", &self.bridge]);
        ip(&["link", "set", &inner, "netns", &ns]);
        ip(&[
            "-n",
            &self.bridge,
            "link",
            "set",
            &outer,
            "master",
            "br0",
            "up",
        ]);
        ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"]);
        let addr = Ipv4Addr::new(10, 231, self.subnet, k);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let tc = Command::new("ip")
            .args([
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
            ])
            .args(["rate", rate, "burst", "64kb", "latency", "400ms"])
            .status()
            .unwrap();
        assert!(tc.success(), "tc tbf on {ns}");
        Host { ns, ip: addr }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes in the namespaces are killed by their own guards
        // (TrackerProcess, PeerProcess) before the lab, declared first,
        // is dropped; deleting a namespace removes its links.
        for ns in self.hosts.iter().chain(std::iter::once(&self.bridge)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Starts a peer on `host`, listening on its address.
fn peer_on(host: &Host, home: &Path, tracker: SocketAddr, args: &[&str]) -> PeerProcess {
    let address = host.ip.to_string();
    let base = ["--address", address.as_str(), "--port", "7000"];
    let all: Vec<&str> = base.iter().copied().chain(args.iter().copied()).collect();
    PeerProcess::start_in(&host.wrapper(), home, tracker, &all)
}

/// The pieces done so far by a `peer get`, from its progress lines.
fn pieces_done(getter: &PeerProcess) -> usize {
    getter
        .last_stderr_line(" pieces from ")
        .and_then(|line| {
            line.split(" pieces from ")
                .next()?
                .rsplit(' ')
                .next()?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn sha256(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

/// Waits until `check` holds, failing the test after `limit`.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts the tracker on `host` at port 6969.
fn tracker_on(host: &Host) -> TrackerProcess {
    let address = host.ip.to_string();
    TrackerProcess::start_in(
        &host.wrapper(),
        &[
            "--address",
            &address,
            "--port",
            "6969",
            "--keep-alive-secs",
            "30",
        ],
    )
}

#[test]
fn a_download_from_several_seeder_hosts_survives_one_host_being_cut_off() {
    let Some(mut lab) = lab(11) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (t, s1, s2, s3, l) = (
        lab.host("100mbit"),
        lab.host("8mbit"),
        lab.host("8mbit"),
        lab.host("8mbit"),
        lab.host("100mbit"),
    );
    let tracker = tracker_on(&t);
    let data = random_bytes(6 << 20, 71);
    let file = write_file(&dir.path().join("files"), "course.mp4", &data);
    let file = file.to_str().unwrap();
    let mut seeders: Vec<PeerProcess> = [(&s1, "s1"), (&s2, "s2"), (&s3, "s3")]
        .iter()
        .map(|(host, name)| {
            let mut seeder = peer_on(host, &dir.path().join(name), tracker.addr, &["share", file]);
            seeder.expect("sharing ");
            seeder
        })
        .collect();
    let out = dir.path().join("out");
    let mut getter = peer_on(
        &l,
        &dir.path().join("l"),
        tracker.addr,
        &["get", "course.mp4", "-o", out.to_str().unwrap()],
    );
    wait_for(Duration::from_secs(60), "some progress", || {
        pieces_done(&getter) > 20
    });
    s1.cut();
    let status = getter.wait(Duration::from_secs(180));
    assert!(
        status.success(),
        "the download failed after a seeder host was cut off"
    );
    assert_eq!(sha256(&out.join("course.mp4")), sha256(Path::new(file)));
    seeders.clear();
    drop(tracker);
    drop(lab);
}

#[test]
fn the_swarm_goes_on_without_its_tracker_and_peers_re_register_when_it_returns() {
    let Some(mut lab) = lab(12) else { return };
    let dir = tempfile::tempdir().unwrap();
    // The seeder's link is slow (about 12 s for the file): the tracker is
    // lost in the middle of the downloads, whatever the machine's speed.
    let (t, s, a, b) = (
        lab.host("100mbit"),
        lab.host("4mbit"),
        lab.host("100mbit"),
        lab.host("100mbit"),
    );
    let mut tracker = tracker_on(&t);
    let data = random_bytes(6 << 20, 72);
    let file = write_file(&dir.path().join("files"), "lecture.mkv", &data);
    let mut seeder = peer_on(
        &s,
        &dir.path().join("s"),
        tracker.addr,
        &["--user", "seed", "share", file.to_str().unwrap()],
    );
    seeder.expect("sharing ");
    // Two leechers in shells, so they stay in the swarm when done.
    let mut leechers: Vec<PeerProcess> = [(&a, "a"), (&b, "b")]
        .iter()
        .map(|(host, name)| {
            let mut peer = peer_on(
                host,
                &dir.path().join(name),
                tracker.addr,
                &["--user", name],
            );
            peer.send("download lecture.mkv");
            peer.expect("downloading lecture.mkv");
            peer
        })
        .collect();
    // Cut the tracker's host off as soon as the downloads are under way,
    // and let it crash: it comes back with an empty memory.
    std::thread::sleep(Duration::from_secs(2));
    t.cut();
    drop(tracker);
    for leecher in leechers.iter_mut() {
        leecher.send("status");
        let progress = leecher.expect("download [lecture.mkv]");
        assert!(
            !progress.contains("100%"),
            "already done when the tracker left: {progress}"
        );
    }
    for leecher in leechers.iter_mut() {
        let done = leecher.expect("[lecture.mkv] done:");
        assert!(done.contains("SHA-256 verified"), "{done}");
    }
    t.restore();
    tracker = tracker_on(&t);
    // Every peer finds the new tracker on its own and announces its file.
    let tracker_addr = tracker.addr.to_string();
    wait_for(Duration::from_secs(150), "peers to re-register", || {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &a.ns,
                env!("CARGO_BIN_EXE_peer"),
                "--tracker",
                &tracker_addr,
            ])
            .args(["--log-file", "", "search", "lecture"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).contains("3 seeder(s)")
    });
    for leecher in leechers.iter_mut() {
        leecher.send("quit");
        assert!(leecher.wait(Duration::from_secs(60)).success());
    }
    drop(seeder);
    drop(tracker);
    drop(lab);
}

#[test]
fn a_churning_swarm_completes_every_file_correctly_and_interrupted_downloads_resume() {
    let Some(mut lab) = lab(13) else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = lab.host("100mbit");
    let tracker = tracker_on(&t);
    let data = random_bytes(4 << 20, 73);
    let file = write_file(&dir.path().join("files"), "data.bin", &data);
    let mut seeders: Vec<PeerProcess> = (0..2)
        .map(|i| {
            let host = lab.host("16mbit");
            let mut seeder = peer_on(
                &host,
                &dir.path().join(format!("s{i}")),
                tracker.addr,
                &["share", file.to_str().unwrap()],
            );
            seeder.expect("sharing ");
            seeder
        })
        .collect();
    // Eight leechers, each on its own host, each running `peer get`.
    struct Leecher {
        host: Host,
        home: PathBuf,
        process: Option<PeerProcess>,
        restarts: u32,
    }
    let out = |home: &Path| home.join("out");
    let start = |l: &Leecher| {
        let out = out(&l.home);
        let log = l.home.join("peer.log");
        let args = [
            "--log-file",
            log.to_str().unwrap(),
            "--log-level",
            "info",
            "get",
            "data.bin",
            "-o",
            out.to_str().unwrap(),
        ];
        peer_on(&l.host, &l.home, tracker.addr, &args)
    };
    let mut leechers: Vec<Leecher> = (0..8)
        .map(|i| {
            let host = lab.host("32mbit");
            Leecher {
                home: dir.path().join(format!("l{i}")),
                host,
                process: None,
                restarts: 0,
            }
        })
        .collect();
    for l in leechers.iter_mut() {
        l.process = Some(start(l));
    }
    // Churn: for ten seconds, kill a random leecher (SIGKILL) every second
    // and start it again.
    let mut rng = fastrand::Rng::with_seed(2026);
    let churn = Instant::now();
    while churn.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_secs(1));
        let l = &mut leechers[rng.usize(..8)];
        let process = l.process.as_mut().unwrap();
        if process.child.try_wait().unwrap().is_none() {
            process.child.kill().unwrap();
            let _ = process.child.wait();
            l.restarts += 1;
            l.process = Some(start(l));
        }
    }
    // Then let every one finish; each file must be right.
    for l in leechers.iter_mut() {
        let process = l.process.as_mut().unwrap();
        let status = process.wait(Duration::from_secs(240));
        assert!(
            status.success(),
            "{} failed:\n{}",
            l.home.display(),
            process.stderr_text()
        );
        assert_eq!(
            sha256(&out(&l.home).join("data.bin")),
            sha256(&file),
            "{}",
            l.home.display()
        );
    }
    // Those killed mid-way went on from what they had verified: at least
    // one piece (a restart that kept nothing is no resume).
    let resumed = leechers
        .iter()
        .filter(|l| {
            std::fs::read_to_string(l.home.join("peer.log")).is_ok_and(|log| {
                log.split("data.bin: continuing with ")
                    .skip(1)
                    .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
                    .any(|pieces| pieces > 0)
            })
        })
        .count();
    let killed = leechers.iter().filter(|l| l.restarts > 0).count();
    assert!(killed > 0, "the churn killed nobody");
    assert!(
        resumed > 0,
        "no killed leecher resumed ({killed} were killed)"
    );
    seeders.clear();
    drop(tracker);
    drop(lab);
}
