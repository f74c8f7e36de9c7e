//! The `peer` program itself, as a user runs it: the course's workflow in
//! the shell, the one-shot `share` / `get` / `search` commands, and a
//! download that survives a seeder being killed.

mod support;

use std::time::Duration;

use support::{
    eventually, port_held_shut, random_bytes, write_file, Client, PeerProcess, TrackerProcess,
};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn the_course_workflow_register_list_user_map_direct_download_auto_register() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(100_000, 1);
    let original = write_file(&dir.path().join("alice-files"), "lecture notes.pdf", &data);
    let original = dunce::canonicalize(original).unwrap();
    let refresh = ["--user-map-refresh-secs", "1"];

    let mut alice = PeerProcess::start(
        &dir.path().join("alice"),
        tracker.addr,
        &[&["--user", "alice"][..], &refresh].concat(),
    );
    let mut bob = PeerProcess::start(
        &dir.path().join("bob"),
        tracker.addr,
        &[&["--user", "bob"][..], &refresh].concat(),
    );

    // Unquoted, the path with a space is two words: the error says how.
    alice.send(&format!("register alice {}", original.display()));
    let unquoted = alice.expect("error");
    assert!(
        unquoted.ends_with(&format!(
            "a path with spaces is written in quotes: \"{}\"",
            original.display()
        )),
        "{unquoted}"
    );
    alice.send(&format!("register alice \"{}\"", original.display()));
    let registered = alice.expect("registered ");
    let key = registered
        .split(" as ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    alice.send("list-files");
    assert_eq!(
        alice.expect(" : "),
        format!("alice : {}", original.display())
    );
    alice.send("register bob /etc/hostname");
    assert_eq!(alice.expect("error"), "error: this peer is alice, not bob");

    // Bob's user map file appears, refreshed from the tracker.
    let map = dir.path().join("bob/users.txt");
    let expected = format!("alice - {}\nbob - {}\n", alice.addr, bob.addr);
    assert!(
        eventually(WAIT, || std::fs::read_to_string(&map)
            .is_ok_and(|m| m == expected)),
        "user map: {:?}",
        std::fs::read_to_string(&map)
    );

    // A user's name where a file's was expected: the error shows the
    // direct download's three words.
    bob.send("download alice");
    let hint = bob.expect("error");
    assert!(
        hint.ends_with(
            "alice is a user: to download from them, download alice <path-on-alice> <path-to-save>"
        ),
        "{hint}"
    );

    // The direct download: by user and path, from alice's mini-server.
    let save_to = dir.path().join("bob-files/notes.pdf");
    bob.send(&format!(
        "download alice \"{}\" {}",
        original.display(),
        save_to.display()
    ));
    let done = bob.expect("[notes.pdf] ");
    let done = if done.contains("done:") {
        done
    } else {
        bob.expect("[notes.pdf] done:")
    };
    assert!(done.contains("SHA-256 verified"), "{done}");
    assert!(done.contains("/s in "), "{done}");
    assert_eq!(std::fs::read(&save_to).unwrap(), data);
    // Asked again: here already, and the line does not claim a speed.
    bob.send(&format!("download {key}"));
    let again = bob.expect("[notes.pdf] done:");
    assert!(
        again.ends_with("SHA-256 verified, every piece was here already)"),
        "{again}"
    );
    // `status` lists the file once: the second download, ended where
    // the first did, took its line.
    bob.send("status");
    let status = bob.lines_until("file notes.pdf ");
    let saved_as: Vec<_> = status
        .iter()
        .filter(|line| line.starts_with("  saved as "))
        .collect();
    assert_eq!(saved_as.len(), 1, "{status:?}");
    assert!(saved_as[0].ends_with("notes.pdf"), "{status:?}");

    // Auto-register: the tracker now lists two users for the file.
    let mut observer = tracker.connect();
    let saved = dunce::canonicalize(&save_to).unwrap();
    // (The offer goes out from bob's housekeeping thread a moment later.)
    assert!(eventually(WAIT, || observer
        .list(&format!("LSTF key={key}"))
        .len()
        == 2));
    assert_eq!(
        observer.list(&format!("LSTF key={key}")),
        [
            format!(
                "SHAR {key} alice {} {}",
                alice.addr,
                original.display().to_string().replace(' ', "%20")
            ),
            format!("SHAR {key} bob {} {}", bob.addr, saved.display()),
        ]
    );
    bob.send("list-files");
    bob.expect("alice : ");
    assert_eq!(bob.expect("bob : "), format!("bob : {}", saved.display()));

    // A folder to save into: the file goes there under alice's name.
    let folder = dir.path().join("bob-folder");
    std::fs::create_dir_all(&folder).unwrap();
    bob.send(&format!(
        "download alice \"{}\" {}",
        original.display(),
        folder.display()
    ));
    bob.expect("[lecture notes.pdf] done:");
    assert_eq!(
        std::fs::read(folder.join("lecture notes.pdf")).unwrap(),
        data
    );
    // A path ending in a separator is a folder too, made if need be.
    let new_folder = dir.path().join("bob-new").join("sub");
    bob.send(&format!(
        "download alice \"{}\" {}{}",
        original.display(),
        new_folder.display(),
        std::path::MAIN_SEPARATOR
    ));
    bob.expect("[lecture notes.pdf] done:");
    assert_eq!(
        std::fs::read(new_folder.join("lecture notes.pdf")).unwrap(),
        data
    );

    for mut peer in [alice, bob] {
        peer.send("quit");
        assert!(peer.wait(WAIT).success());
        assert!(peer.remaining_lines().iter().any(|l| l.contains("bye")));
    }
    assert!(
        eventually(WAIT, || observer.list("USRS").is_empty()),
        "both sessions closed"
    );
}

#[test]
fn the_shell_search_table_lines_up_long_and_wide_names() {
    use unicode_width::UnicodeWidthStr;
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut alice = PeerProcess::start(
        &dir.path().join("alice"),
        tracker.addr,
        &["--user", "alice"],
    );
    // Longer than the table's old 32 columns, and two columns a character.
    let names = ["a.bin", "第05回 講義 ネットワークとルーティング.mp4"];
    for (seed, name) in names.iter().enumerate() {
        let file = write_file(
            &dir.path().join("files"),
            name,
            &random_bytes(1000, seed as u64),
        );
        alice.send(&format!("register alice \"{}\"", file.display()));
        alice.expect("registered ");
    }
    alice.send("search");
    let header = alice.expect("NAME ");
    // The column where the key starts, in terminal columns.
    let key_column = |line: &str, key_at: usize| line[..key_at].width();
    let header_column = key_column(&header, header.find("KEY").unwrap());
    for name in names {
        let row = alice.expect(name);
        let key_at = row.rfind(' ').unwrap() + 1;
        assert_eq!(key_column(&row, key_at), header_column, "{header}\n{row}");
    }
}

#[test]
fn get_survives_a_seeder_killed_mid_download() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(8 << 20, 2);
    let original = write_file(&dir.path().join("files"), "movie.mkv", &data);
    let original = original.to_str().unwrap();
    // Two seeders, each sending at most 1 MB/s: the download takes seconds
    // on any machine, so a seeder can be killed in the middle of it.
    let limit = ["--upload-limit", "1MB"];
    let mut seeders: Vec<PeerProcess> = ["s1", "s2"]
        .iter()
        .map(|name| {
            let mut seeder = PeerProcess::start(
                &dir.path().join(name),
                tracker.addr,
                &[&limit[..], &["share", original]].concat(),
            );
            seeder.expect("sharing ");
            seeder
        })
        .collect();
    let mut observer = tracker.connect();
    let key = observer.key_of("movie");

    let out = dir.path().join("got");
    let mut getter = PeerProcess::start(
        &dir.path().join("getter"),
        tracker.addr,
        &["get", &key, "-o", out.to_str().unwrap()],
    );
    // Wait until the getter reports some progress, then kill a seeder.
    let total = 512;
    let mut held = 0;
    assert!(eventually(WAIT, || {
        held = observer.leecher_pieces(&key);
        held > 0
    }));
    assert!(held < total, "the download was already over");
    let mut killed = seeders.remove(0);
    killed.child.kill().unwrap();
    let _ = killed.child.wait();

    let status = getter.wait(Duration::from_secs(120));
    assert!(status.success(), "peer get failed");
    let path = out.join("movie.mkv");
    assert_eq!(
        getter.remaining_lines().last().map(String::as_str),
        Some(path.to_str().unwrap())
    );
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // An empty folder to save into is refused: its saved state could not
    // name the `.part` file by an absolute path.
    let home = dir.path().join("nowhere");
    let mut refused = PeerProcess::start(&home, tracker.addr, &["get", &key, "-o", ""]);
    assert!(!refused.wait(WAIT).success());
    assert!(
        refused
            .stderr_text()
            .contains("cannot download into \"\" (cannot make an empty path absolute)"),
        "{}",
        refused.stderr_text()
    );
    assert!(!home.join("movie.mkv.part").exists());
    // The getter offered the finished file before it left, and left.
    drop(seeders);
}

#[test]
fn search_and_a_failed_get_as_a_script_sees_them() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Client::connect(tracker.addr);
    alice.ask("HELO 7001 alice");
    let key = "ab".repeat(32);
    alice.ask(&format!(
        "ADDF {key} song.mp3 5000000 262144 audio /m/song.mp3"
    ));

    // `peer search kind=audio` run in `dir`, with `flags`.
    let peer = env!("CARGO_BIN_EXE_peer");
    let search_audio = |flags: &[&str]| {
        let output = std::process::Command::new(peer)
            .args(["--tracker", &tracker.addr.to_string()])
            .args(flags)
            .args(["search", "kind=audio"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        output
    };
    // With the default log file: a search runs no peer, and leaves no
    // file behind in the folder it ran in...
    search_audio(&[]);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
    // ...unless one is asked for.
    let output = search_audio(&["--log-file", "search.log"]);
    let asked = dir.path().join("search.log");
    assert!(asked.is_file());
    std::fs::remove_file(&asked).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with(&format!("{key}  ")) && stdout.trim_end().ends_with("song.mp3"),
        "{stdout}"
    );

    // Each argument is one criterion, taken as typed: a name with a
    // space, a `%`, a phrase.
    let spaced = "cd".repeat(32);
    alice.ask(&format!(
        "ADDF {spaced} my%20song%20at%20100%25.mp3 5000 16384 audio /m/x.mp3"
    ));
    let search = |criteria: &[&str]| {
        let output = std::process::Command::new(peer)
            .args(["--tracker", &tracker.addr.to_string(), "--log-file", ""])
            .arg("search")
            .args(criteria)
            .output()
            .unwrap();
        assert!(output.status.success(), "{criteria:?}: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .lines()
            .filter_map(|l| l.split("  ").next().map(str::to_string))
            .filter(|first| first.len() == 64)
            .collect::<Vec<_>>()
    };
    let found = vec![spaced];
    assert_eq!(search(&["name=my song*"]), found);
    assert_eq!(search(&["100%"]), found);
    assert_eq!(search(&["song at"]), found);
    assert!(search(&["at song"]).is_empty(), "a phrase, not two words");
    assert_eq!(search(&["at", "song"]), found);

    // A file to share that is not there: said before anything starts.
    let home = dir.path().join("s");
    let output = std::process::Command::new(peer)
        .args(["--tracker", &tracker.addr.to_string(), "--log-file", ""])
        .args(["--user-map-file", &home.join("users.txt").to_string_lossy()])
        .args(["share", "no-such-file.bin"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-file.bin: "), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing started");
    assert!(!home.join("users.txt").exists());

    let mut getter = PeerProcess::start(
        &dir.path().join("g"),
        tracker.addr,
        &["get", "no-such-file.bin"],
    );
    let status = getter.wait(WAIT);
    assert_eq!(status.code(), Some(1));

    // An output that cannot be written (a full disk) is an error, said
    // as such, not a panic (exit code 101).
    if cfg!(target_os = "linux") {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let output = std::process::Command::new(peer)
            .args(["--tracker", &tracker.addr.to_string(), "--log-file", ""])
            .args(["search", "kind=audio"])
            .stdout(full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("cannot write to standard output"),
            "{stderr}"
        );
    }
}

#[test]
fn a_seeder_whose_output_is_closed_goes_on_seeding() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "closed.bin", &random_bytes(50_000, 4));
    let tracker = TrackerProcess::start(&[]);
    // Its output is a pipe nobody reads (`peer share closed.bin | head -0`):
    // every line it prints meets a closed pipe.
    let mut seeder = std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
        .args([
            "--tracker",
            &tracker.addr.to_string(),
            "--address",
            "127.0.0.1",
        ])
        .args(["--port", "0", "--gui", "false", "--log-file", ""])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("share")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(seeder.stdout.take());
    let mut client = Client::connect(tracker.addr);
    assert!(eventually(WAIT, || client.list("RQFS closed").len() == 1));
    // The line after the offer went nowhere; the seeder is still there.
    std::thread::sleep(Duration::from_millis(500));
    let running = seeder.try_wait().unwrap().is_none();
    let _ = seeder.kill();
    let _ = seeder.wait();
    assert!(running, "the seeder stopped when its output was closed");
}

#[test]
fn get_under_a_download_limit_then_seeds_until_stopped() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3_000_000, 3);
    let original = write_file(&dir.path().join("files"), "talk.mp3", &data);
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker.addr,
        &["--piece-size", "1MiB", "share", original.to_str().unwrap()],
    );
    seeder.expect("sharing ");
    let key = tracker.connect().key_of("talk");

    // 3 MB in 1 MiB pieces under a 1 MB/s download limit: at least 2.7 s
    // whatever the machine (the limit lets an eighth of a second's worth
    // through at once, and one 64 KiB block is read before it is paid
    // for). Paid a piece at a time, the last piece came free: 2.1 s.
    // Not flushed to disk at the end: the bytes are still right.
    let out = dir.path().join("got");
    let started = std::time::Instant::now();
    let mut getter = PeerProcess::start(
        &dir.path().join("getter"),
        tracker.addr,
        &[
            "--download-limit",
            "1MB",
            "--sync-on-finish",
            "false",
            "get",
            &key,
            "-o",
            out.to_str().unwrap(),
            "--seed",
        ],
    );
    let path = out.join("talk.mp3");
    getter.expect(path.to_str().unwrap());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2700), "done in {took:?}");
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // Its progress, on a standard error that is no terminal, ends at 100%.
    let progress = getter.stderr_text();
    let last = progress.lines().rfind(|l| l.starts_with("[talk.mp3]"));
    assert!(
        last.is_some_and(|l| l.contains("100%") && l.ends_with("done")),
        "{progress}"
    );

    // With --seed it stays: the seeder leaves, and a newcomer still gets
    // the file, from the getter alone.
    seeder.child.kill().unwrap();
    let _ = seeder.child.wait();
    let out2 = dir.path().join("got2");
    let mut newcomer = PeerProcess::start(
        &dir.path().join("newcomer"),
        tracker.addr,
        &["get", &key, "-o", out2.to_str().unwrap()],
    );
    assert!(newcomer.wait(WAIT).success(), "the newcomer's get failed");
    assert_eq!(std::fs::read(out2.join("talk.mp3")).unwrap(), data);
    assert!(
        getter.child.try_wait().unwrap().is_none(),
        "get --seed exited after the download"
    );
}

#[test]
fn a_get_started_while_the_tracker_is_away_waits_for_it() {
    // The tracker is not up yet: the seeder shares all the same (its
    // offer waits), and the `get` asks again until the tracker answers.
    // Its port is held meanwhile by a socket bound but not listening (a
    // connection there is refused), so that no other test's server can
    // take it before the tracker does.
    let (held, port) = port_held_shut();
    let tracker_addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(50_000, 80);
    let original = write_file(&dir.path().join("files"), "late.bin", &data);
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker_addr,
        &["share", original.to_str().unwrap()],
    );
    let key = seeder
        .expect("sharing ")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let out = dir.path().join("got");
    let mut getter = PeerProcess::start(
        &dir.path().join("getter"),
        tracker_addr,
        &["get", &key, "-o", out.to_str().unwrap()],
    );
    assert!(
        eventually(WAIT, || getter
            .stderr_text()
            .contains("asking again for up to 60 s")),
        "{}",
        getter.stderr_text()
    );
    drop(held);
    let _tracker = TrackerProcess::start(&["--port", &port.to_string()]);
    assert!(getter.wait(WAIT).success(), "{}", getter.stderr_text());
    assert_eq!(std::fs::read(out.join("late.bin")).unwrap(), data);
}

#[test]
fn a_tracker_that_drops_sessions_between_pings_is_named_as_the_cause() {
    // The tracker keeps idle sessions 1 s; the peer pings every 3 s.
    let tracker = TrackerProcess::start(&["--keep-alive-secs", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let peer = PeerProcess::start(dir.path(), tracker.addr, &["--tracker-ping-secs", "3"]);
    let told = "the tracker closed this peer's session as idle before its next ping";
    assert!(
        eventually(WAIT, || peer.stderr_text().contains(told)),
        "{}",
        peer.stderr_text()
    );
    // Once, not at each of the sessions that follow.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(peer.stderr_text().matches(told).count(), 1);
}

#[test]
fn the_shell_says_what_is_wrong_with_a_line_and_goes_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    let mut peer = PeerProcess::start(dir.path(), tracker.addr, &[]);
    let stdin = peer.child.stdin.as_mut().unwrap();
    // Not UTF-8, then a line of 100 KiB, then commands with missing words.
    stdin.write_all(b"\xff\xfe bad\n").unwrap();
    stdin.write_all(&[b'x'; 100 * 1024]).unwrap();
    stdin
        .write_all(b"\nregister\ndownload \"\"\ndownload a b c d\n")
        .unwrap();
    let nobody = "0".repeat(64);
    writeln!(stdin, "peers {nobody}\nusers\nstatus").unwrap();
    // A name for peers, as download takes one; a user name that is none.
    writeln!(stdin, "peers nosuch.bin\nregister - z.txt").unwrap();
    stdin.flush().unwrap();
    peer.expect("error: the line is not UTF-8 text; ignored");
    peer.expect("error: a line over 64 KiB; ignored");
    peer.expect("error: usage: register <user> <file>...");
    peer.expect("error: download needs a key or a file name");
    assert_eq!(
        peer.expect("error: usage: download"),
        "error: usage: download <key-or-name> [dir] | download <user> <path-on-user> <path-to-save>"
    );
    // Empty answers say so, rather than print nothing.
    assert_eq!(
        peer.expect("no peer holds"),
        format!("no peer holds {nobody} (as far as the tracker knows)")
    );
    peer.expect("no named users");
    // Still there: it answers the next command, and quits when asked.
    // `status` says who it is at the tracker.
    let status = peer.expect("(tracker ");
    assert!(
        status.contains(", no user name (tracker ")
            && status.contains(&format!(": session open as {})", peer.addr)),
        "{status}"
    );
    let unknown = peer.expect("error: ");
    assert!(unknown.contains("nosuch.bin"), "{unknown}");
    assert_eq!(
        peer.expect("error: "),
        "error: this peer has no user name; start it with --user <name> (letters, digits, - and _)"
    );
    // An arrow key (ESC [ A): said in words, not as escaped characters.
    peer.send("\u{1b}[A");
    assert_eq!(
        peer.expect("error: "),
        "error: unknown command: it holds control characters (this shell does not read arrow \
         keys: type the command again); type `help`"
    );
    peer.send("quit");
    assert!(peer.wait(WAIT).success());
}

#[test]
fn a_users_txt_that_is_not_a_map_is_kept_and_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = TrackerProcess::start(&[]);
    let own = "my own list of users, not a map\n";
    let map = dir.path().join("users.txt");
    std::fs::write(&map, own).unwrap();
    let mut peer = PeerProcess::start(
        dir.path(),
        tracker.addr,
        &["--user-map-refresh-secs", "1", "--log-level", "debug"],
    );
    // Three refreshes at least: the first warns, the next ones say so at
    // debug level only.
    let stills = |peer: &PeerProcess| {
        peer.stderr_text()
            .lines()
            .filter(|l| l.contains("cannot write the user map") && l.contains("(still)"))
            .count()
    };
    assert!(
        eventually(WAIT, || stills(&peer) >= 2),
        "{}",
        peer.stderr_text()
    );
    let warned = peer
        .stderr_text()
        .lines()
        .filter(|l| l.contains("[WARN]") && l.contains("is not a user map"))
        .count();
    assert_eq!(warned, 1, "{}", peer.stderr_text());
    assert_eq!(std::fs::read_to_string(&map).unwrap(), own, "left alone");
    peer.send("quit");
    assert!(peer.wait(WAIT).success());
}

/// A tracker, and a `peer share` process seeding 1 MB (from `seed`) as
/// `name`; files and peers' homes go in the directory returned.
fn seeding(name: &str, seed: u64) -> (TrackerProcess, tempfile::TempDir, PeerProcess) {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let original = write_file(
        &dir.path().join("files"),
        name,
        &random_bytes(1_000_000, seed),
    );
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker.addr,
        &["share", original.to_str().unwrap()],
    );
    seeder.expect("sharing ");
    (tracker, dir, seeder)
}

#[test]
fn get_saves_under_the_home_folder_for_an_output_that_starts_with_a_tilde() {
    // `-o ~/got` quoted, or `--output=~/got`: no shell made it the home.
    let (tracker, dir, _seeder) = seeding("home.bin", 9);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
        .current_dir(dir.path())
        .env("HOME", &home)
        .env("USERPROFILE", &home)
        .args(["--tracker", &tracker.addr.to_string()])
        .args(["--address", "127.0.0.1", "--port", "0", "--gui", "false"])
        .args(["--log-file", "", "get", "home.bin", "--output=~/got"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read(home.join("got").join("home.bin")).unwrap(),
        random_bytes(1_000_000, 9)
    );
    assert!(!dir.path().join("~").exists(), "a folder called ~");
}

#[test]
fn quit_stops_a_download_held_back_by_a_low_download_limit() {
    let (tracker, dir, _seeder) = seeding("slow.bin", 5);
    // At 1 kB/s a 256 KiB piece is paid for by over four minutes of wait.
    let mut leecher = PeerProcess::start(
        &dir.path().join("leecher"),
        tracker.addr,
        &["--download-limit", "1kB"],
    );
    leecher.send("download slow.bin");
    leecher.expect("downloading slow.bin");
    assert!(
        eventually(WAIT, || {
            leecher.send("status");
            leecher.expect("(tracker ");
            leecher
                .remaining_lines()
                .iter()
                .any(|l| l.contains(" gave ") && !l.contains(" gave 0 pieces"))
        }),
        "no piece came"
    );
    // Waiting out the debt took 50 s here; stopping takes about a second.
    let quitting = std::time::Instant::now();
    leecher.send("quit");
    assert!(leecher.wait(WAIT).success());
    let took = quitting.elapsed();
    assert!(took < Duration::from_secs(20), "quit took {took:?}");
}

/// Sends SIGINT (what Ctrl-C sends) to a process.
#[cfg(unix)]
fn ctrl_c(pid: u32) {
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// How many bytes process `pid` has read so far.
#[cfg(target_os = "linux")]
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|line| line.strip_prefix("rchar: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// (Linux: how much of the file was read is taken from `/proc`.)
#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_stops_a_big_file_s_hash_part_way_in_share_and_in_the_shell() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    // 64 GiB, all of it a hole: nothing on the disk, minutes to hash.
    let big = dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    let big_path = big.to_str().unwrap();
    let mut sharer = PeerProcess::start(
        &dir.path().join("sharer"),
        tracker.addr,
        &["share", big_path],
    );
    let pid = sharer.child.id();
    assert!(eventually(WAIT, || bytes_read(pid) > 64 << 20));
    ctrl_c(pid);
    assert_eq!(sharer.wait(WAIT).code(), Some(1));
    let said = sharer.stderr_text();
    assert!(said.contains("not hashed to its end"), "{said}");
    assert!(tracker.connect().list("LSTF").is_empty(), "nothing offered");

    let mut shell = PeerProcess::start(
        &dir.path().join("shell"),
        tracker.addr,
        &["--user", "alice"],
    );
    shell.send(&format!("register alice {big_path}"));
    let pid = shell.child.id();
    assert!(eventually(WAIT, || bytes_read(pid) > 64 << 20));
    ctrl_c(pid);
    assert!(shell.wait(WAIT).success());
    let said = shell.remaining_lines().join("\n");
    assert!(
        said.contains("not registered: ") && said.contains("not hashed to its end"),
        "{said}"
    );
    assert!(said.contains("bye"), "{said}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_shell_and_a_get_cleanly() {
    let (tracker, dir, _seeder) = seeding("held.bin", 6);

    // The shell, with a download under way: stopped, then `bye`, exit 0.
    let mut shell = PeerProcess::start(
        &dir.path().join("shell"),
        tracker.addr,
        &["--download-limit", "1kB"],
    );
    shell.send("download held.bin");
    shell.expect("downloading held.bin");
    // Asked again while under way: said so, not as an error.
    shell.send("download held.bin");
    let again = shell.expect("already being downloaded");
    assert!(again.starts_with("held.bin is already"), "{again}");
    // Stopped once its state is recorded (on a busy machine the download
    // may still be asking for the manifest when the shell answers).
    let records = dir.path().join("shell/state/downloads");
    assert!(eventually(WAIT, || std::fs::read_dir(&records).is_ok_and(
        |mut entries| entries
            .any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "download")))
    )));
    ctrl_c(shell.child.id());
    assert!(shell.wait(WAIT).success());
    let said = shell.remaining_lines().join("\n");
    assert!(
        said.contains("stopping the download of held.bin") && said.contains("bye"),
        "{said}"
    );
    assert!(said.contains("[held.bin] stopped: "), "{said}");
    assert!(!said.contains("failed"), "{said}");
    // Started again, the shell goes on with it, and says where.
    let mut shell = PeerProcess::start(
        &dir.path().join("shell"),
        tracker.addr,
        &["--download-limit", "1kB"],
    );
    let resuming = shell.expect("resuming held.bin in ");
    let folder = std::path::Path::new("shell").join("downloads");
    assert!(
        resuming.contains(&format!("{}, where it was started", folder.display())),
        "{resuming}"
    );
    ctrl_c(shell.child.id());
    assert!(shell.wait(WAIT).success());

    // `peer get`: the download is cancelled, its state kept for a later
    // `get` (and the message says so), and the exit code says it was
    // interrupted (130, as shells report it), not that it failed (1).
    let key = tracker.connect().key_of("held");
    let home = dir.path().join("getter");
    let mut getter = PeerProcess::start(
        &home,
        tracker.addr,
        &["--download-limit", "20kB", "get", "held.bin"],
    );
    let mut observer = tracker.connect();
    assert!(eventually(WAIT, || observer.leecher_pieces(&key) >= 1));
    ctrl_c(getter.child.id());
    assert_eq!(getter.wait(WAIT).code(), Some(130));
    let said = getter.stderr_text();
    assert!(said.contains("cancelled; "), "{said}");
    assert!(
        said.contains("pieces are kept, and the same command goes on from them"),
        "{said}"
    );
    assert!(home.join("downloads").join("held.bin.part").exists());
}

#[test]
fn the_shell_and_get_keep_their_terminal_for_what_they_say_and_log_to_their_file() {
    use std::io::Write as _;
    let tracker = TrackerProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let mut shell = std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
        .current_dir(home.path())
        .args(["--tracker", &tracker.addr.to_string()])
        .args(["--address", "127.0.0.1", "--port", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(shell.stdin.as_mut().unwrap(), "status\nquit").unwrap();
    let output = shell.wait_with_output().unwrap();
    assert!(output.status.success());
    let terminal = String::from_utf8_lossy(&output.stderr);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("bye"), "{said}");
    // What the peer did is in peer.log, at the default level (info)...
    let log = std::fs::read_to_string(home.path().join("peer.log")).unwrap();
    assert!(
        log.contains("[INFO] ") && log.contains("peer listening on"),
        "{log}"
    );
    // ...and not mixed into the shell's conversation.
    assert!(!terminal.contains("[INFO]"), "{terminal}");

    // Nor into get's progress line and its verdict.
    let get = std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
        .current_dir(home.path())
        .args(["--tracker", &tracker.addr.to_string()])
        .args(["--address", "127.0.0.1", "--port", "0"])
        .args(["get", "no-such-file.bin"])
        .output()
        .unwrap();
    let terminal = String::from_utf8_lossy(&get.stderr);
    assert_eq!(get.status.code(), Some(1), "{terminal}");
    assert!(terminal.contains("no-such-file.bin"), "{terminal}");
    assert!(!terminal.contains("[INFO]"), "{terminal}");
    let log = std::fs::read_to_string(home.path().join("peer.log")).unwrap();
    assert_eq!(log.matches("peer listening on").count(), 2, "{log}");
}

#[cfg(unix)]
#[test]
fn share_goes_on_past_a_file_the_tracker_refuses_and_says_so_at_the_end() {
    let tracker = TrackerProcess::start(&["--max-files-per-session", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = ["a.bin", "b.bin", "c.bin"]
        .iter()
        .enumerate()
        .map(|(seed, name)| {
            let data = random_bytes(1000, 40 + seed as u64);
            let file = write_file(&dir.path().join("files"), name, &data);
            file.to_string_lossy().into_owned()
        })
        .collect();
    // A mistyped name among them is named, and the others shared.
    let args: Vec<&str> = ["share", "gone.bin"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let mut seeder = PeerProcess::start(&dir.path().join("seeder"), tracker.addr, &args);
    seeder.expect("sharing ");
    seeder.expect("sharing ");
    // The third is refused, and the two others stay shared.
    let mut observer = tracker.connect();
    assert!(eventually(WAIT, || seeder
        .stderr_text()
        .contains("c.bin: not shared: ")));
    assert_eq!(observer.list("LSTF").len(), 2);
    ctrl_c(seeder.child.id());
    assert_eq!(seeder.wait(WAIT).code(), Some(1));
    let said = seeder.stderr_text();
    assert!(said.contains("gone.bin: not shared: "), "{said}");
    assert!(
        said.contains("2 of 4 not shared (each named above)"),
        "{said}"
    );
}

#[test]
fn the_shell_registers_and_unregisters_the_files_under_a_folder() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let albums = dir.path().join("my albums");
    write_file(&albums.join("one"), "a.mp3", &random_bytes(1000, 70));
    write_file(&albums.join("two"), "b.mp3", &random_bytes(1000, 71));
    write_file(&albums, "c.mp3", &random_bytes(1000, 72));
    let mut alice = PeerProcess::start(
        &dir.path().join("alice"),
        tracker.addr,
        &["--user", "alice"],
    );
    let albums = dunce::canonicalize(albums).unwrap();
    let unreadable = albums.join("c.mp3");
    // A link to nothing is told and the walk goes on.
    std::fs::remove_file(&unreadable).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(albums.join("gone"), &unreadable).unwrap();

    alice.send(&format!("register alice \"{}\"", albums.display()));
    #[cfg(unix)]
    alice.expect(&format!(
        "{}: not registered: a link to nothing",
        unreadable.display()
    ));
    // In name order, subfolders included.
    for (folder, file) in [("one", "a.mp3"), ("two", "b.mp3")] {
        let line = alice.expect("registered ");
        let path = albums.join(folder).join(file);
        assert!(
            line.starts_with(&format!("registered {} as ", path.display())),
            "{line}"
        );
    }
    let mut observer = tracker.connect();
    assert_eq!(observer.list("LSTF").len(), 2);

    alice.send(&format!(
        "unregister alice \"{}\"",
        albums.join("one").display()
    ));
    alice.expect(&format!(
        "unregistered {}",
        albums.join("one").join("a.mp3").display()
    ));
    alice.send("list-files");
    let listed = alice.expect(" : ");
    assert!(listed.ends_with("b.mp3"), "{listed}");
    // One not shared does not keep the next one shared.
    alice.send(&format!(
        "unregister alice \"{}\" \"{}\"",
        albums.join("one").display(),
        albums.join("two").display()
    ));
    let none = alice.expect("not unregistered: ");
    assert!(
        none.contains("no file under") && none.ends_with("is shared by this peer"),
        "{none}"
    );
    alice.expect(&format!(
        "unregistered {}",
        albums.join("two").join("b.mp3").display()
    ));
    assert!(eventually(Duration::from_secs(10), || observer
        .list("LSTF")
        .is_empty()));
}

#[cfg(unix)]
#[test]
fn share_of_a_folder_shares_the_files_under_it_until_the_tracker_takes_no_more() {
    let tracker = TrackerProcess::start(&["--max-files-per-session", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let music = dir.path().join("music");
    // In name order: a.mp3, b/c.mp3, b/d.mp3, e.mp3, f.mp3. Hidden files
    // and unfinished downloads are not offered at all.
    std::fs::create_dir_all(music.join("b")).unwrap();
    for (seed, name) in ["e.mp3", "b/d.mp3", "a.mp3", "f.mp3", "b/c.mp3"]
        .iter()
        .enumerate()
    {
        write_file(&music, name, &random_bytes(1000, 60 + seed as u64));
    }
    write_file(&music, ".DS_Store", b"finder");
    write_file(&music, "g.mp3.part", b"half a download");
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker.addr,
        &["share", music.to_str().unwrap()],
    );
    for name in ["a.mp3", "c.mp3", "d.mp3"] {
        let line = seeder.expect("sharing ");
        assert!(line.contains(name), "{line} is not {name}");
    }
    // The tracker refuses the fourth: the fifth is not even hashed.
    assert!(eventually(WAIT, || seeder.stderr_text().contains(
        "1 file after it not shared: the tracker takes no more"
    )));
    let said = seeder.stderr_text();
    assert!(
        said.contains("e.mp3: not shared: the tracker refused"),
        "{said}"
    );
    let mut observer = tracker.connect();
    let listed = observer.list("LSTF");
    assert_eq!(listed.len(), 3, "{listed:?}");
    for name in ["a.mp3", "c.mp3", "d.mp3"] {
        assert!(listed.iter().any(|l| l.contains(name)), "{listed:?}");
    }
    ctrl_c(seeder.child.id());
    assert_eq!(seeder.wait(WAIT).code(), Some(1));
    let said = seeder.stderr_text();
    assert!(
        said.contains("2 of 5 not shared (each named above)"),
        "{said}"
    );
}

/// A tracker and a seeder of `name` (`size` random bytes from `seed`)
/// that serves at most 2 connections from one address.
fn capped_seeder(
    name: &str,
    size: usize,
    seed: u64,
) -> (TrackerProcess, tempfile::TempDir, Vec<u8>, PeerProcess) {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(size, seed);
    let original = write_file(&dir.path().join("files"), name, &data);
    let mut seeder = PeerProcess::start(
        &dir.path().join("seeder"),
        tracker.addr,
        &[
            "--max-connections-per-ip",
            "2",
            "share",
            original.to_str().unwrap(),
        ],
    );
    seeder.expect("sharing ");
    (tracker, dir, data, seeder)
}

#[test]
fn a_seeder_at_its_connection_cap_serves_on_the_connections_it_took() {
    // A class on one machine: every peer is 127.0.0.1, and a seeder caps
    // the connections from one address. A leecher's extra lanes past the
    // cap are refused (ERRR 500); the seeder keeps serving it on the
    // others, and is not dropped.
    let (tracker, dir, data, _seeder) = capped_seeder("capped.bin", 2_000_000, 21);
    let out = dir.path().join("got");
    let mut getter = PeerProcess::start(
        &dir.path().join("getter"),
        tracker.addr,
        &[
            "--lanes-per-peer",
            "4",
            "--log-level",
            "debug",
            "get",
            "capped.bin",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(getter.wait(WAIT).success(), "{}", getter.stderr_text());
    assert_eq!(std::fs::read(out.join("capped.bin")).unwrap(), data);
    let said = getter.stderr_text();
    assert!(said.contains("one lane fewer"), "{said}");
    assert!(!said.contains(" dropped: "), "{said}");
}

#[test]
fn a_peer_whose_user_name_is_taken_still_searches_and_downloads() {
    // A student starts a second peer with the same --user: the tracker
    // refuses its session, and it says why; a search and a download need
    // no session, and work.
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(300_000, 22);
    let original = write_file(&dir.path().join("files"), "named.bin", &data);
    let mut seeder = PeerProcess::start(
        &dir.path().join("first"),
        tracker.addr,
        &["--user", "alice", "share", original.to_str().unwrap()],
    );
    seeder.expect("sharing ");
    let mut shell = PeerProcess::start(
        &dir.path().join("second"),
        tracker.addr,
        &["--user", "alice"],
    );
    shell.send("search named");
    shell.expect("1 file");
    shell.send("download named.bin");
    shell.expect("done");
    let got = dir
        .path()
        .join("second")
        .join("downloads")
        .join("named.bin");
    assert_eq!(std::fs::read(got).unwrap(), data);
    // The first one stops: the name is free, the second's session opens,
    // and the file it got is offered then (it waited, not dropped).
    let mut observer = tracker.connect();
    let key = observer.key_of("named");
    seeder.child.kill().unwrap();
    let _ = seeder.child.wait();
    // (LSTF: an empty list while nobody offers it, not an error.)
    let second = format!(" alice 127.0.0.1:{} ", shell.addr.port());
    let offered = |observer: &mut support::Client| {
        observer
            .list(&format!("LSTF key={key}"))
            .iter()
            .any(|line| line.contains(&second))
    };
    assert!(
        eventually(WAIT, || offered(&mut observer)),
        "the second peer's offer never came: {:?}",
        observer.list(&format!("LSTF key={key}"))
    );
    shell.send("quit");
    assert!(shell.wait(WAIT).success());
    let said = shell.stderr_text();
    assert!(
        said.contains("no session at the tracker")
            && said.contains(
                "another peer runs as that user: stop it, or start this one with another --user"
            ),
        "{said}"
    );
}

#[test]
fn a_peer_without_a_session_still_finds_the_seeders_that_come_later() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2_000_000, 23);
    let original = write_file(&dir.path().join("files"), "later.bin", &data);
    let path = original.to_str().unwrap();
    // alice's name is held by a peer that shares nothing of it.
    let _holder = PeerProcess::start(
        &dir.path().join("holder"),
        tracker.addr,
        &["--user", "alice"],
    );
    let mut first = PeerProcess::start(&dir.path().join("first"), tracker.addr, &["share", path]);
    first.expect("sharing ");
    let mut shell = PeerProcess::start(
        &dir.path().join("second"),
        tracker.addr,
        &["--user", "alice", "--download-limit", "100kB"],
    );
    shell.send("download later.bin");
    shell.expect("downloading later.bin");
    let mut later = PeerProcess::start(&dir.path().join("later"), tracker.addr, &["share", path]);
    later.expect("sharing ");
    let neighbour = format!("neighbour {} ", later.addr);
    assert!(
        eventually(WAIT, || {
            shell.send("status");
            shell.expect("(tracker ");
            std::thread::sleep(Duration::from_millis(200));
            shell
                .remaining_lines()
                .iter()
                .any(|line| line.contains(&neighbour))
        }),
        "the seeder that came later was never found"
    );
    shell.send("quit");
    assert!(shell.wait(WAIT).success());
}

#[test]
fn a_download_waits_for_a_seeder_at_its_connection_cap() {
    // Every connection the seeder takes from this address is held: a new
    // download's first exchange is refused (ERRR 500). It asks again, and
    // gets the file once a connection is free.
    let (tracker, dir, data, seeder) = capped_seeder("busy.bin", 300_000, 24);
    let held: Vec<Client> = (0..2).map(|_| Client::connect(seeder.addr)).collect();
    let out = dir.path().join("got");
    let mut getter = PeerProcess::start(
        &dir.path().join("getter"),
        tracker.addr,
        &[
            "--log-level",
            "debug",
            "get",
            "busy.bin",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        eventually(WAIT, || getter
            .stderr_text()
            .contains("is busy; asking it again")),
        "{}",
        getter.stderr_text()
    );
    drop(held);
    assert!(getter.wait(WAIT).success(), "{}", getter.stderr_text());
    assert_eq!(std::fs::read(out.join("busy.bin")).unwrap(), data);
}

#[test]
fn a_shell_download_stopped_before_its_manifest_came_says_nothing_is_kept() {
    // The one holder listed takes connections and never answers.
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ghost = tracker.connect();
    let port = silent.local_addr().unwrap().port();
    assert!(ghost.ask(&format!("HELO {port}")).starts_with("OK"));
    let key = support::key(5);
    let added = ghost.ask(&format!("ADDF {key} ghost.bin 100000 16384 other /x"));
    assert!(added.starts_with("OK"), "{added}");
    let mut shell = PeerProcess::start(&dir.path().join("shell"), tracker.addr, &[]);
    shell.send("download ghost.bin");
    shell.expect("downloading ghost.bin");
    shell.send("quit");
    assert!(shell.wait(WAIT).success());
    let said = shell.remaining_lines().join("\n");
    assert!(
        said.contains("[ghost.bin] stopped before it began: nothing is kept"),
        "{said}"
    );
    assert!(!said.contains("goes on at the next start"), "{said}");
}

#[test]
fn a_second_copy_in_a_registered_folder_is_named_and_the_rest_registered() {
    let tracker = TrackerProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    write_file(&files, "a.txt", b"the same words");
    write_file(&files, "b.txt", b"the same words");
    write_file(&files, "c.txt", b"other words");
    let mut shell = PeerProcess::start(
        &dir.path().join("shell"),
        tracker.addr,
        &["--user", "alice"],
    );
    shell.send(&format!("register alice {}", files.display()));
    assert!(shell.expect("registered ").contains("a.txt"));
    let refused = shell.expect("not registered");
    assert!(
        refused.contains("b.txt") && refused.contains("has the same content as"),
        "{refused}"
    );
    assert!(shell.expect("registered ").contains("c.txt"));
    shell.send("quit");
    assert!(shell.wait(WAIT).success());
}

/// Ctrl-C while the peer starts (here: waiting for a tracker that takes
/// the connection and never answers, 5 s) ends it at once.
#[cfg(unix)]
#[test]
fn ctrl_c_while_the_peer_starts_ends_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let log = dir.path().join("peer.log");
    let peer = std::process::Command::new(env!("CARGO_BIN_EXE_peer"))
        .current_dir(dir.path())
        .args(["--tracker", &silent.local_addr().unwrap().to_string()])
        .args(["--port", "0", "--gui", "false", "--log-level", "debug"])
        .arg("--log-file")
        .arg(&log)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its handler is in place once it logs anything; it then waits for
    // the tracker.
    assert!(eventually(WAIT, || std::fs::read_to_string(&log)
        .is_ok_and(|text| text.contains("open files"))));
    ctrl_c(peer.id());
    // (Before, it said it was stopping, waited out the tracker, started
    // and then stopped: exit 0.)
    let output = peer.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{said}");
    assert!(said.contains("stopped while starting"), "{said}");
}
