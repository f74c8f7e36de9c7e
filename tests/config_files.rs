//! The shipped `config/*.ini` files stay in step with the code: each lists
//! every key the program knows, set to its built-in default, with a comment
//! that names its flag. And the `peer` binary checks its configuration.

mod support;

use std::process::Command;

use swarmline::config::{KeySpec, Settings, Source, PEER_KEYS, TRACKER_KEYS};

fn check_shipped_file(file: &str, section: &'static str, specs: &'static [KeySpec]) {
    let path = support::repo_root().join("config").join(file);
    let mut settings = Settings::defaults(section, specs);
    settings.load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&path).unwrap();
    for spec in specs {
        let (value, source) = settings.raw(spec.key);
        assert_eq!(
            *source,
            Source::File(path.clone()),
            "{file} does not list `{}`",
            spec.key
        );
        assert_eq!(
            value, spec.default,
            "{file}: `{}` is not the built-in default",
            spec.key
        );
        let settings_of_key = text
            .lines()
            .filter(|line| line.split('=').next().map(str::trim) == Some(spec.key))
            .count();
        assert_eq!(
            settings_of_key, 1,
            "{file}: `{}` is set {settings_of_key} times",
            spec.key
        );
        assert!(
            text.contains(&format!("; Flag: {}.", spec.flag)),
            "{file}: the comment of `{}` does not name {}",
            spec.key,
            spec.flag
        );
    }
}

#[test]
fn tracker_ini_lists_every_key_with_its_default() {
    check_shipped_file("tracker.ini", "tracker", TRACKER_KEYS);
}

#[test]
fn peer_ini_lists_every_key_with_its_default() {
    check_shipped_file("peer.ini", "peer", PEER_KEYS);
}

#[test]
fn the_peer_refuses_bad_configuration_with_exit_code_2() {
    let peer = env!("CARGO_BIN_EXE_peer");
    let output = Command::new(peer).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--tracker <TRACKER>",
        "--piece-size",
        "--upload-limit",
        "--ring-size",
    ] {
        assert!(help.contains(flag), "help lacks {flag}: {help}");
    }
    // Each subcommand on a line of its own in the list of commands (the
    // words alone appear in the flags' help too).
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for command in ["share", "get", "search", "ring", "route"] {
        assert!(
            commands.contains(&command),
            "help lists no {command} command: {help}"
        );
    }

    let output = Command::new(peer)
        .args(["--piece-size", "100KiB", "search"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--piece-size") && stderr.contains("power of two"),
        "{stderr}"
    );

    let output = Command::new(peer)
        .args(["--user", "no spaces", "search"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));

    // A switch without its word, before a command: the parser's own
    // complaint is about the word after the command; a hint says why.
    let output = Command::new(peer)
        .args(["--gui", "share", "a.txt"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("hint: --gui takes a word, true or false, before the command"),
        "{stderr}"
    );
    // A word that is not UTF-8 on such a line: the same, no panic.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let output = Command::new(peer)
            .args(["--gui", "share"])
            .arg(std::ffi::OsStr::from_bytes(b"a\xff.txt"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
    }

    // Megabits where bytes are meant: refused, with the bytes to write.
    let output = Command::new(peer)
        .args(["--upload-limit", "8Mb", "search"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--upload-limit") && stderr.contains("write 8MB"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("peer.ini");
    std::fs::write(&ini, "[peer]\npool_size = 0\n").unwrap();
    let output = Command::new(peer)
        .arg("--config")
        .arg(&ini)
        .arg("search")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("key `pool_size`") && stderr.contains("from 1 to 256"),
        "{stderr}"
    );

    // Flags go after a command too, and a negative size is a value refused
    // with its reason, not an unknown flag.
    let output = Command::new(peer)
        .args(["search", "x", "--piece-size", "100KiB"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("power of two"), "{stderr}");
    let output = Command::new(peer)
        .args(["search", "--upload-limit", "-5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"-5\" is not a size"), "{stderr}");
}
