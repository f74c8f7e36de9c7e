//! The course's hash and welcome services, served by the real `tracker`
//! binary on its normal port: the grammar line by line over raw TCP, one
//! connection per request, each closed by the tracker after its answer.
//! Native lines still work on the same port.

mod support;

use std::process::Command;

use swarmline::ring::RingSpace;

use support::TrackerProcess;

/// Sends `line` on a new connection and returns every line received until
/// the tracker closed it (which it must do after the answer).
fn ask(tracker: &TrackerProcess, line: &str) -> Vec<String> {
    let mut client = tracker.connect();
    client.send(line);
    let mut lines = Vec::new();
    while let Some(reply) = client.recv() {
        assert!(lines.len() < 10_000, "{line}: no end to the answer");
        lines.push(reply);
    }
    assert!(!lines.is_empty(), "{line}: closed without an answer");
    lines
}

/// Like [`ask`], for a one-line answer.
fn ask_one(tracker: &TrackerProcess, line: &str) -> String {
    let lines = ask(tracker, line);
    assert_eq!(lines.len(), 1, "{line} -> {lines:?}");
    lines.into_iter().next().unwrap()
}

#[test]
fn the_hash_service_gives_stable_distinct_ids() {
    let tracker = TrackerProcess::start(&["--ring-size", "100"]);
    let space = RingSpace::new(100).unwrap();
    let first = ask_one(&tracker, "127.0.0.2");
    assert_eq!(first, space.id_of("127.0.0.2").to_string());
    assert_eq!(ask_one(&tracker, "127.0.0.2"), first, "stable");
    let second = ask_one(&tracker, "127.0.0.3");
    assert_ne!(second, first);
    assert!(second.parse::<u64>().unwrap() < 100);
    assert_eq!(ask_one(&tracker, "127.0.0.3"), second, "stable");
    assert_eq!(
        ask_one(&tracker, "127.0.0.1:7001")
            .parse::<u64>()
            .map(|id| id < 100),
        Ok(true)
    );
}

#[test]
fn the_hash_service_says_all_taken_when_every_id_is_given() {
    let tracker = TrackerProcess::start(&["--ring-size", "2"]);
    let first = ask_one(&tracker, "10.0.0.1");
    let mut ids = vec![first.clone(), ask_one(&tracker, "10.0.0.2")];
    ids.sort();
    assert_eq!(ids, ["0", "1"]);
    assert_eq!(ask_one(&tracker, "10.0.0.3"), "aht");
    assert_eq!(
        ask_one(&tracker, "10.0.0.1"),
        first,
        "a known text keeps its id"
    );
}

#[test]
fn spellings_of_one_address_share_one_id_and_long_texts_are_wrq() {
    // A ring of 2: were each spelling its own text, the spellings would
    // take both ids and a genuine newcomer would get `aht`.
    let tracker = TrackerProcess::start(&["--ring-size", "2"]);
    let first = ask_one(&tracker, "127.0.0.1:7000");
    assert_eq!(ask_one(&tracker, "127.0.0.1:07000"), first);
    assert_eq!(ask_one(&tracker, "127.0.0.1:000000000007000"), first);
    // The longest a line may be: Rust would take it as an address.
    let long = format!("127.0.0.1:{:0>8000}", 7000);
    assert_eq!(ask_one(&tracker, &long), "wrq");
    let second = ask_one(&tracker, "127.0.0.2");
    let mut ids = [first, second];
    ids.sort();
    assert_eq!(ids, ["0", "1"], "the newcomer got the id left");
    assert_eq!(ask_one(&tracker, "127.0.0.3"), "aht");
    // The log names the canonical address, and only a prefix of the long
    // text.
    let log = tracker.log();
    assert!(log.contains("127.0.0.1:7000 ->"), "{log}");
    assert!(!log.contains("127.0.0.1:07000"), "{log}");
    assert!(!log.contains(&"0".repeat(100)), "{log}");
}

#[test]
fn the_welcome_service_follows_the_course_grammar() {
    let tracker = TrackerProcess::start(&["--ring-size", "100"]);
    assert_eq!(ask(&tracker, "li?"), ["end"]);
    assert_eq!(ask_one(&tracker, "yo:10:127.0.0.2"), "yaf");
    assert_eq!(ask_one(&tracker, "yo:30:127.0.0.3"), "127.0.0.2");
    let third = ask_one(&tracker, "yo:60:127.0.0.4");
    assert!(
        ["127.0.0.2", "127.0.0.3"].contains(&third.as_str()),
        "{third}"
    );
    let fourth = ask_one(&tracker, "YO:85:127.0.0.5");
    assert!(
        ["127.0.0.2", "127.0.0.3", "127.0.0.4"].contains(&fourth.as_str()),
        "{fourth}"
    );

    // Duplicate, out of range, not a number, no address: wrong requests.
    for line in [
        "yo:10:127.0.0.9",
        "yo:100:127.0.0.9",
        "yo:x:127.0.0.9",
        "yo:11",
        "yo:11:nowhere",
    ] {
        assert_eq!(ask_one(&tracker, line), "wrq", "{line}");
    }

    assert_eq!(ask_one(&tracker, "ip?:60"), "127.0.0.4");
    assert_eq!(ask_one(&tracker, "ip?:61"), "ukh");
    assert_eq!(ask_one(&tracker, "ip?:100"), "wrq");
    assert_eq!(ask_one(&tracker, "ip?:abc"), "wrq");

    assert_eq!(
        ask(&tracker, "li?"),
        [
            "10:127.0.0.2",
            "30:127.0.0.3",
            "60:127.0.0.4",
            "85:127.0.0.5",
            "end"
        ]
    );

    // The course's example table.
    assert_eq!(
        ask(&tracker, "rt?:30"),
        [
            "30:60:127.0.0.4",
            "32:60:127.0.0.4",
            "34:60:127.0.0.4",
            "38:60:127.0.0.4",
            "46:60:127.0.0.4",
            "62:85:127.0.0.5",
            "94:10:127.0.0.2",
            "end"
        ]
    );
    assert_eq!(ask_one(&tracker, "rt?:31"), "ukh");
    assert_eq!(ask_one(&tracker, "rt?:100"), "wrq");
    assert_eq!(
        ask_one(&tracker, "rt?"),
        "wrq",
        "the tracker is not a ring peer"
    );

    assert_eq!(ask_one(&tracker, "a+:60"), "ok");
    assert_eq!(ask_one(&tracker, "a+:60"), "wrq");
    assert_eq!(ask_one(&tracker, "ip?:60"), "ukh");

    // A peer on another port than the usual one is written with it; and
    // as it gave a port, it is answered with one.
    let present = ask_one(&tracker, "yo:5:127.0.0.1:45000");
    assert!(
        ["127.0.0.2:7000", "127.0.0.3:7000", "127.0.0.5:7000"].contains(&present.as_str()),
        "{present}"
    );
    assert_eq!(
        ask(&tracker, "li?"),
        [
            "5:127.0.0.1:45000",
            "10:127.0.0.2",
            "30:127.0.0.3",
            "85:127.0.0.5",
            "end"
        ]
    );
    assert_eq!(ask_one(&tracker, "ip?:5"), "127.0.0.1:45000");

    for line in ["zz:1", "what?", "li?:3", "a+:"] {
        assert_eq!(ask_one(&tracker, line), "wrq", "{line}");
    }

    let log = tracker.log();
    assert!(log.contains("course: 127.0.0.1:"), "{log}");
    assert!(log.contains("yo:10:127.0.0.2 -> yaf"), "{log}");

    // Native lines still work on the same port, on a connection that stays open.
    let mut client = tracker.connect();
    assert_eq!(client.ask("HELO 7001 alice"), "OK 127.0.0.1:7001");
    assert_eq!(client.ask("PING"), "OK pong");
    assert_eq!(client.list("USRS"), ["USER alice 127.0.0.1:7001"]);
    // A typo with the course's punctuation on that session (a `?` for
    // help) is answered as a native line, and the session goes on; `yo`
    // alone is no course line at all.
    for typo in ["?", "help?", "yo"] {
        let answer = client.ask(typo);
        assert!(
            answer.starts_with("ERRR 200 unknown verb"),
            "{typo}: {answer}"
        );
    }
    assert_eq!(client.list("USRS"), ["USER alice 127.0.0.1:7001"]);
    // A course request proper still gets its answer, and ends the session.
    client.send("li?");
    assert_eq!(client.recv().as_deref(), Some("5:127.0.0.1:45000"));
}

#[test]
fn ring_port_is_the_port_a_yo_without_one_means() {
    let tracker = TrackerProcess::start(&["--ring-port", "45000"]);
    assert_eq!(ask_one(&tracker, "yo:5:127.0.0.1:45000"), "yaf");
    assert_eq!(ask_one(&tracker, "yo:6:127.0.0.2"), "127.0.0.1");
    // A joiner that gives its port is given the member's port too.
    let present = ask_one(&tracker, "yo:7:127.0.0.3:7000");
    assert!(
        ["127.0.0.1:45000", "127.0.0.2:45000"].contains(&present.as_str()),
        "{present}"
    );
    assert_eq!(
        ask(&tracker, "li?"),
        ["5:127.0.0.1", "6:127.0.0.2", "7:127.0.0.3:7000", "end"]
    );
    assert_eq!(ask(&tracker, "rt?:7")[0], "7:5:127.0.0.1");
}

#[test]
fn a_bad_ring_size_or_port_is_refused_with_exit_code_2() {
    for args in [
        ["--ring-size", "1"],
        ["--ring-size", "4294967297"],
        ["--ring-size", "x"],
        ["--ring-port", "0"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tracker"))
            .args(["--log-file", ""])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}
