//! The tracker binary over real TCP on 127.0.0.1: many clients at once,
//! disconnects, bad input, keep-alive, the connection cap, configuration
//! errors, logs and clean shutdown. Each test asserts what a person at `nc`
//! would see: the reply lines.

mod support;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use support::{eventually, key, Client, TrackerProcess};

const WAIT: Duration = Duration::from_secs(20);

fn addf(key: &str, name: &str, size: u64) -> String {
    format!("ADDF {key} {name} {size} 16384 other /shared/{name}")
}

/// A tracker started where few open files are allowed (macOS starts
/// programs at 256) raises its own limit: a class's peers need more.
#[cfg(target_os = "linux")]
#[test]
fn a_tracker_started_with_few_open_files_allowed_raises_its_limit() {
    let low = ["sh", "-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""];
    let tracker = TrackerProcess::start_in(&low, &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", tracker.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    let soft = numbers.next().unwrap();
    let hard = numbers.next().unwrap_or(u64::MAX); // "unlimited"
    assert!(soft >= hard.min(65_536), "{line}");
}

/// Out of file descriptors (a hard limit too low for its connections),
/// the tracker fails to take each connection while it lasts: either
/// `accept` itself fails (every 50 ms) or the accepted connection cannot
/// be served. Which of the two depends on timing; both are told once a
/// second with their count, not each time (dozens of lines a second).
#[cfg(target_os = "linux")]
#[test]
fn a_tracker_out_of_file_descriptors_says_so_once_a_second() {
    let low = ["sh", "-c", "ulimit -n 32 && exec \"$0\" \"$@\""];
    let tracker = TrackerProcess::start_in(&low, &[]);
    // More connections than it can open files for, held 3 s.
    let held: Vec<_> = (0..60)
        .filter_map(|_| std::net::TcpStream::connect(tracker.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let log = tracker.log();
    let told = log.matches("accept failed").count() + log.matches("not served").count();
    assert!(told >= 1, "the failure is told: {log}");
    assert!(told <= 6, "told {told} times in 3 s: {log}");
    drop(held);
}

#[test]
fn two_hundred_clients_offer_files_at_once_and_the_listing_is_exact() {
    const CLIENTS: u32 = 200;
    // All clients come from 127.0.0.1: lift the per-IP cap for them.
    let tracker = TrackerProcess::start(&["--max-connections-per-ip", "1000"]);
    let start = Arc::new(Barrier::new(CLIENTS as usize + 1));
    let done = Arc::new(Barrier::new(CLIENTS as usize + 1));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (start, done, addr) = (Arc::clone(&start), Arc::clone(&done), tracker.addr);
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                start.wait();
                let port = 10_000 + i;
                assert_eq!(
                    client.ask(&format!("HELO {port} user{i}")),
                    format!("OK 127.0.0.1:{port}")
                );
                let name = format!("file%20{i:03}.bin");
                assert_eq!(
                    client.ask(&addf(&key(i), &name, u64::from(i) + 1)),
                    format!("OK {}", key(i))
                );
                // Every client offers a shared file too: 200 seeders of one key.
                assert_eq!(
                    client.ask(&addf(&key(999_999), "common.bin", 70_000)),
                    format!("OK {}", key(999_999))
                );
                done.wait(); // keep the session open until the listing is checked
                done.wait();
            })
        })
        .collect();
    start.wait();
    done.wait();

    let mut observer = tracker.connect();
    let files = observer.list("RQFS");
    let mut expected: Vec<String> = (0..CLIENTS)
        .map(|i| {
            format!(
                "FILE {} file%20{i:03}.bin {} 16384 other 1 0",
                key(i),
                i + 1
            )
        })
        .collect();
    expected.insert(
        0,
        format!(
            "FILE {} common.bin 70000 16384 other {CLIENTS} 0",
            key(999_999)
        ),
    );
    assert_eq!(files, expected);
    let users = observer.list("USRS");
    assert_eq!(users.len(), CLIENTS as usize);
    assert!(users.contains(&"USER user7 127.0.0.1:10007".to_string()));
    let peers = observer.list(&format!("REQF {}", key(999_999)));
    assert_eq!(peers.len(), 50, "capped at max_peers_per_reply");
    assert!(peers.iter().all(|p| p.ends_with(" seeder 5")));

    done.wait();
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(
        eventually(WAIT, || observer.list("RQFS").is_empty()),
        "files of closed sessions are still listed"
    );
}

#[test]
fn five_hundred_simultaneous_sessions_are_served() {
    const SESSIONS: usize = 500;
    let tracker = TrackerProcess::start(&["--max-connections-per-ip", "1000"]);
    let mut clients: Vec<Client> = (0..SESSIONS)
        .map(|i| {
            let mut client = tracker.connect();
            client.send(&format!("HELO {} s{i}", 20_000 + i));
            client
        })
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.line(), format!("OK 127.0.0.1:{}", 20_000 + i));
    }
    assert_eq!(tracker.connect().list("USRS").len(), SESSIONS);
    for client in clients.iter_mut() {
        assert_eq!(client.ask("PING"), "OK pong");
    }
}

#[test]
fn a_session_that_closes_without_quit_disappears_from_every_listing() {
    let tracker = TrackerProcess::start(&[]);
    let mut alice = tracker.connect();
    assert_eq!(alice.ask("HELO 7001 alice"), "OK 127.0.0.1:7001");
    alice.ask(&addf(&key(1), "a.bin", 10));
    let mut bob = tracker.connect();
    bob.ask("HELO 7002 bob");
    assert_eq!(
        bob.ask(&format!("BITF {} 80", key(1))),
        format!("OK {} 1", key(1))
    );
    assert_eq!(bob.list("RQFS").len(), 1);

    alice.close();
    assert!(eventually(WAIT, || bob.list("USRS") == ["USER bob 127.0.0.1:7002"]));
    // The file had a seeder (alice) and bob, who reported its only piece:
    // bob is now its one seeder, though not an offer (he sent no ADDF).
    assert_eq!(
        bob.list("RQFS"),
        [format!("FILE {} a.bin 10 16384 other 1 0", key(1))]
    );
    assert!(bob.list("LSTF").is_empty(), "alice's offer is gone");

    bob.close();
    let mut carol = tracker.connect();
    assert!(eventually(WAIT, || carol.list("RQFS").is_empty()));
    assert_eq!(
        carol.ask(&format!("REQF {}", key(1))),
        format!("ERRR 400 no file with key {}", key(1))
    );
    // The user name is free again.
    assert_eq!(carol.ask("HELO 7003 alice"), "OK 127.0.0.1:7003");
}

#[test]
fn bad_input_gets_its_error_and_the_connection_goes_on() {
    let tracker = TrackerProcess::start(&[]);
    let mut client = tracker.connect();
    let k = key(1);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"FROB 1\n".to_vec(), "ERRR 200 "),
        (b"HELO\n".to_vec(), "ERRR 201 "),
        (b"HELO 7001 a b\n".to_vec(), "ERRR 201 "),
        (b"HELO port\n".to_vec(), "ERRR 202 "),
        (
            format!("ADDF {k} x.bin 12abc 16384 other /x\n").into_bytes(),
            "ERRR 202 bad size",
        ),
        (
            format!("ADDF {k} x.bin -5 16384 other /x\n").into_bytes(),
            "ERRR 202 bad size",
        ),
        (b"REQF 12345g\n".to_vec(), "ERRR 202 bad key"),
        (
            format!("REQF {}\n", "zz".repeat(32)).into_bytes(),
            "ERRR 202 bad key",
        ),
        (format!("BITF {k} 0x\n").into_bytes(), "ERRR 202 bad bitmap"),
        (
            format!("RQFS {}\n", "x".repeat(100_000)).into_bytes(),
            "ERRR 100 line longer than 8192 bytes",
        ),
        (
            b"HELO 7001 caf\xc3\n".to_vec(),
            "ERRR 101 line is not UTF-8 text",
        ),
        (
            (0u8..=255)
                .filter(|&b| b != b'\n')
                .cycle()
                .take(5000)
                .chain([b'\n'])
                .collect(),
            "ERRR 101 ",
        ),
        (b"ADDF\r\n".to_vec(), "ERRR 201 "),
        // White space that is not blank (a no-break space, a form feed):
        // a request like any, answered.
        ("\u{a0}\n".as_bytes().to_vec(), "ERRR 200 "),
        (b"\x0c\n".to_vec(), "ERRR 200 "),
        (
            vec![0u8; 20_000].into_iter().chain([b'\n']).collect(),
            "ERRR 100 ",
        ),
    ];
    for (bytes, expected) in cases {
        client.send_bytes(&bytes);
        let reply = client.line();
        assert!(
            reply.starts_with(expected),
            "{:?} -> {reply}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        );
        assert_eq!(
            client.ask("PING"),
            "OK pong",
            "the connection still answers"
        );
    }
    // And the same connection can still open a session.
    assert_eq!(client.ask("HELO 7001"), "OK 127.0.0.1:7001");

    // A course line gone wrong is logged quoted and escaped: a carriage
    // return in it cannot forge a line of the log.
    let mut course = tracker.connect();
    course.send("yo:1:x\rFAKE [INFO] session 9 opened");
    assert_eq!(course.line(), "wrq");
    assert!(support::eventually(Duration::from_secs(10), || tracker
        .log()
        .contains(r#""yo:1:x\rFAKE [INFO] session 9 opened" -> wrq"#)));
    assert!(!tracker.log().contains("\rFAKE"));

    // So is any other line, as the debug level shows it.
    let mut native = tracker.connect();
    native.send("RQFS x\rFORGED [WARN] \u{1b}[2J");
    assert_eq!(native.line(), "END", "a search that finds nothing");
    assert!(support::eventually(Duration::from_secs(10), || tracker
        .log()
        .contains(r"> RQFS x\rFORGED [WARN] \u{1b}[2J")));
    let log = tracker.log();
    assert!(
        !log.contains("\rFORGED") && !log.contains('\u{1b}'),
        "{log}"
    );
}

#[test]
fn lines_are_framed_by_newlines_not_by_network_writes() {
    let tracker = TrackerProcess::start(&[]);
    let mut client = tracker.connect();
    // One request split over several writes, then two in one write, with \r\n.
    client.send_bytes(b"HE");
    thread::sleep(Duration::from_millis(50));
    client.send_bytes(b"LO 70");
    thread::sleep(Duration::from_millis(50));
    client.send_bytes(b"01 alice\r\nPING\r\nUSRS\n");
    assert_eq!(client.line(), "OK 127.0.0.1:7001");
    assert_eq!(client.line(), "OK pong");
    assert_eq!(client.line(), "USER alice 127.0.0.1:7001");
    assert_eq!(client.line(), "END");
}

#[test]
fn a_silent_peer_is_dropped_at_the_keep_alive_deadline() {
    let tracker = TrackerProcess::start(&["--keep-alive-secs", "1"]);
    let mut alice = tracker.connect();
    assert_eq!(alice.ask("HELO 7001 alice"), "OK 127.0.0.1:7001");
    alice.ask(&addf(&key(1), "a.bin", 10));
    // Say nothing: the tracker gives up after the deadline.
    assert_eq!(
        alice.recv().as_deref(),
        Some("ERRR 303 no complete line for 1 s (keep-alive deadline), closing")
    );
    assert_eq!(alice.recv(), None, "then it closes the connection");
    let mut bob = tracker.connect();
    assert!(bob.list("RQFS").is_empty());
    assert!(bob.list("USRS").is_empty());
}

#[test]
fn pinging_keeps_a_session_alive_past_the_deadline() {
    let tracker = TrackerProcess::start(&["--keep-alive-secs", "2"]);
    let mut alice = tracker.connect();
    alice.ask("HELO 7001 alice");
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(700));
        assert_eq!(alice.ask("PING"), "OK pong");
    }
    assert_eq!(
        tracker.connect().list("USRS"),
        ["USER alice 127.0.0.1:7001"]
    );
}

#[test]
fn the_connection_past_the_cap_is_told_busy_and_closed() {
    let tracker = TrackerProcess::start(&["--max-connections", "3"]);
    let mut open: Vec<Client> = (0..3).map(|_| tracker.connect()).collect();
    for client in open.iter_mut() {
        assert_eq!(client.ask("PING"), "OK pong");
    }
    let mut fourth = tracker.connect();
    let reply = fourth.recv().unwrap();
    assert!(
        reply.starts_with("ERRR 500 server busy: 3 connections"),
        "{reply}"
    );
    assert_eq!(fourth.recv(), None);

    open.pop().unwrap().close();
    assert!(eventually(WAIT, || {
        let mut client = tracker.connect();
        client.send("PING");
        client.recv().as_deref() == Some("OK pong")
    }));
}

#[test]
fn nobody_takes_over_a_live_session() {
    let tracker = TrackerProcess::start(&[]);
    let mut alice = tracker.connect();
    alice.ask("HELO 7001 alice");
    alice.ask(&addf(&key(1), "a.bin", 10));
    // Another program on the same host claims alice's ip:port and name.
    let mut mallory = tracker.connect();
    assert!(mallory.ask("HELO 7001 alice").starts_with("ERRR 302 "));
    assert!(mallory
        .ask("HELO 7001")
        .starts_with("ERRR 304 peer id 127.0.0.1:7001"));
    assert_eq!(mallory.list("RQFS").len(), 1, "alice's offer is untouched");
    // Once alice's connection is gone, her restarted peer is welcome.
    alice.close();
    assert!(eventually(WAIT, || {
        let mut restarted = tracker.connect();
        restarted.ask("HELO 7001 alice") == "OK 127.0.0.1:7001"
    }));
}

#[test]
fn a_client_that_dribbles_bytes_without_a_line_is_dropped_at_the_deadline() {
    use std::io::{Read, Write};
    let tracker = TrackerProcess::start(&["--keep-alive-secs", "1"]);
    let mut slow = std::net::TcpStream::connect(tracker.addr).unwrap();
    slow.write_all(b"HELO 7001 slow\n").unwrap();
    // One byte every 200 ms would reset a plain socket timeout forever; the
    // deadline counts from the answer to the last complete line instead.
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut received = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < WAIT {
        if slow.write_all(b"P").is_err() {
            break;
        }
        let mut buf = [0u8; 256];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let received = String::from_utf8_lossy(&received);
    assert_eq!(
        received,
        "OK 127.0.0.1:7001\nERRR 303 no complete line for 1 s (keep-alive deadline), closing\n"
    );
    assert!(eventually(WAIT, || tracker
        .connect()
        .list("USRS")
        .is_empty()));
}

#[test]
fn a_session_holds_at_most_the_configured_number_of_files() {
    let tracker = TrackerProcess::start(&["--max-files-per-session", "2"]);
    let mut alice = tracker.connect();
    alice.ask("HELO 7001 alice");
    assert!(alice.ask(&addf(&key(1), "a.bin", 10)).starts_with("OK"));
    assert!(alice.ask(&addf(&key(2), "b.bin", 10)).starts_with("OK"));
    assert_eq!(
        alice.ask(&addf(&key(3), "c.bin", 10)),
        "ERRR 405 this session already holds 2 files, the most allowed"
    );
    assert_eq!(alice.list("RQFS").len(), 2);
}

#[test]
fn all_offers_together_fit_in_the_tracker_s_room_for_them() {
    // 1 MiB of room; offers with paths of 4000 bytes take it in about 240.
    let tracker = TrackerProcess::start(&["--max-offer-bytes", "1MiB"]);
    let long = format!("/{}", "d".repeat(3998));
    let offer = |i: u32| format!("ADDF {} f{i}.bin 10 16384 other {long}", key(i));
    let mut sessions = Vec::new();
    let mut accepted = 0;
    let refusal = 'filling: loop {
        let mut client = tracker.connect();
        client.ask(&format!("HELO {}", 7001 + sessions.len()));
        for _ in 0..100 {
            let answer = client.ask(&offer(accepted));
            if !answer.starts_with("OK") {
                break 'filling answer;
            }
            accepted += 1;
        }
        sessions.push(client);
    };
    assert_eq!(
        refusal,
        "ERRR 406 the tracker holds all the offers it has room for (1 MiB); try again later"
    );
    assert!((200..260).contains(&accepted), "{accepted} offers fit");
    // Room comes back as offers go.
    let mut first = sessions.remove(0);
    first.ask("QUIT");
    let mut again = tracker.connect();
    again.ask("HELO 7999");
    assert!(eventually(WAIT, || again
        .ask(&offer(accepted))
        .starts_with("OK")));
}

#[test]
fn listings_are_capped() {
    let tracker = TrackerProcess::start(&["--max-results", "3"]);
    let mut alice = tracker.connect();
    alice.ask("HELO 7001 alice");
    for i in 0..5 {
        alice.ask(&addf(&key(i), &format!("f{i}.bin"), 10));
    }
    assert_eq!(alice.list("RQFS").len(), 3);
    assert_eq!(alice.list("LSTF").len(), 3);
}

#[test]
fn the_log_names_threads_sessions_and_requests() {
    let tracker = TrackerProcess::start(&[]);
    let mut alice = tracker.connect();
    alice.ask("HELO 7001 alice");
    alice.ask("BOGUS");
    alice.ask("QUIT");
    assert!(eventually(WAIT, || tracker
        .log()
        .contains("closed by QUIT")));
    let log = tracker.log();
    assert!(
        log.contains("session 1 opened: peer 127.0.0.1:7001, user alice"),
        "{log}"
    );
    assert!(log.contains("(tracker-127.0.0.1:"), "thread names: {log}");
    assert!(
        log.contains("> HELO 7001 alice"),
        "requests at debug: {log}"
    );
    assert!(
        log.contains("[WARN]") && log.contains("< ERRR 200"),
        "errors at warn: {log}"
    );
    assert!(
        log.contains("session 1 of 127.0.0.1:7001 closed by QUIT"),
        "{log}"
    );
}

#[test]
fn the_shipped_config_file_runs_the_tracker() {
    let config = support::repo_root().join("config/tracker.ini");
    let tracker = TrackerProcess::start(&["--config", config.to_str().unwrap(), "--port", "0"]);
    assert_eq!(tracker.connect().ask("PING"), "OK pong");
}

fn run_tracker(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tracker"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_stops_startup_with_exit_code_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("bad.ini");
    std::fs::write(&ini, "[tracker]\nport = 6969\nkeep_alive_secs = soon\n").unwrap();
    let (code, stderr) = run_tracker(&["--config", ini.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(ini.to_str().unwrap()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("key `keep_alive_secs`"),
        "names the key: {stderr}"
    );
    assert!(
        stderr.contains("from 1 to 86400"),
        "says what is allowed: {stderr}"
    );

    std::fs::write(&ini, "[tracker]\nmax_conections = 5\n").unwrap();
    let (code, stderr) = run_tracker(&["--config", ini.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`max_conections`") && stderr.contains("unknown key"),
        "{stderr}"
    );

    let (code, stderr) = run_tracker(&["--max-line-bytes", "10"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--max-line-bytes") && stderr.contains("from 256"),
        "{stderr}"
    );

    let (code, stderr) = run_tracker(&["--config", "/no/such/tracker.ini"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("/no/such/tracker.ini"), "{stderr}");

    let (code, stderr) = run_tracker(&["--log-level", "loud"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--log-level") && stderr.contains("debug"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (code, stderr) =
        run_tracker(&["--address", "127.0.0.1", "--port", &port, "--log-file", ""]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_tracker_cleanly() {
    let mut tracker = TrackerProcess::start(&[]);
    let mut alice = tracker.connect();
    alice.ask("HELO 7001 alice");
    let status = Command::new("kill")
        .args(["-TERM", &tracker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tracker.wait_exit(WAIT).expect("the tracker did not stop");
    assert!(exit.success(), "{exit:?}");
    assert_eq!(alice.recv(), None, "open connections are closed");
    let log = tracker.log();
    assert!(
        log.contains("stopping: 1 session(s) on 1 connection(s)"),
        "{log}"
    );
    assert!(log.contains("] (main") && log.contains("stopped"), "{log}");
}

#[test]
fn a_client_sending_garbage_in_a_loop_cannot_fill_the_log_with_warnings() {
    let tracker = TrackerProcess::start(&[]);
    let mut spammer = tracker.connect();
    for _ in 0..30 {
        assert!(spammer.ask("BOGUS").starts_with("ERRR 200 "));
    }
    drop(spammer);
    assert!(eventually(WAIT, || tracker
        .log()
        .contains("30 errors answered in all")));
    let log = tracker.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("[WARN]") && l.contains("< ERRR 200"))
        .count();
    assert_eq!(warned, 10, "{log}");
    assert!(log.contains("further errors on this connection are logged at debug level"));
    // The rest are still there, at debug level.
    assert_eq!(log.matches("< ERRR 200").count(), 30, "{log}");
}

#[test]
fn a_client_reconnecting_for_each_bad_line_cannot_fill_the_log_either() {
    // The per-connection cap above is renewed by every new connection;
    // the tracker's own budget of warnings a second is not.
    const FLOOD: usize = 300;
    let tracker = TrackerProcess::start(&[]);
    let started = Instant::now();
    for _ in 0..FLOOD {
        assert!(tracker.connect().ask("BOGUS").starts_with("ERRR 200 "));
    }
    let took = started.elapsed();
    // A second later, one more: the warning that tells how many were
    // held back comes with it.
    thread::sleep(Duration::from_millis(1100));
    assert!(tracker.connect().ask("BOGUS").starts_with("ERRR 200 "));
    assert!(eventually(WAIT, || tracker
        .log()
        .matches("< ERRR 200")
        .count()
        == FLOOD + 1));
    let log = tracker.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("[WARN]") && l.contains("< ERRR 200"))
        .count() as u64;
    let held: u64 = log
        .lines()
        .filter(|l| l.contains("caused by connections went to the debug level only"))
        .map(|l| {
            let before = l.split(" more warning").next().unwrap();
            before.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    // None lost: each is a warning, or held back (at debug level) and
    // counted.
    assert_eq!(warned + held, FLOOD as u64 + 1, "{log}");
    // At most ten a second: the seconds the flood began in, and the last.
    let seconds = took.as_secs() + 3;
    assert!(
        warned <= 10 * seconds,
        "{warned} warnings in {took:?}: {log}"
    );
}

#[test]
fn one_address_gets_at_most_its_share_of_connections() {
    let tracker = TrackerProcess::start(&["--max-connections-per-ip", "2"]);
    let mut first = tracker.connect();
    let mut second = tracker.connect();
    assert_eq!(first.ask("PING"), "OK pong");
    assert_eq!(second.ask("PING"), "OK pong");
    let mut third = tracker.connect();
    let reply = third.recv().unwrap();
    assert!(
        reply.starts_with("ERRR 500 too many connections from 127.0.0.1: 2 already open"),
        "{reply}"
    );
    assert_eq!(third.recv(), None);
    assert_eq!(first.ask("PING"), "OK pong", "the others are unharmed");
}
