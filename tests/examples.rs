//! The examples a newcomer runs first must keep working: each is run to
//! completion here (they check their own results and exit non-zero if
//! anything is off).

use std::path::PathBuf;
use std::process::Command;

/// The compiled example `name`, built now: `cargo test` builds the
/// examples, but `cargo test --test examples` does not, and would run an
/// old build (cargo does nothing when it is up to date). Built as `cargo
/// test` or `cargo test --release` builds (a target directory given in
/// `CARGO_TARGET_DIR` is seen; one given as a flag, another `--target`, a
/// custom profile or features are not).
fn example(name: &str) -> PathBuf {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_tracker"));
    let path = bin_dir
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--example", name]);
    // In the profile of this test (`cargo test --release`: release).
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cannot build example {name}");
    path
}

#[test]
fn the_tracker_tour_runs_to_completion() {
    let output = Command::new(example("tracker_tour")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("carol< PEER 127.0.0.1:7002 bob leecher 2"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("tour complete: every answer was as expected\n"),
        "{stdout}"
    );
}

#[test]
fn the_local_swarm_demo_runs_to_completion_with_a_small_file() {
    let output = Command::new(example("local_swarm"))
        .args([
            "--size",
            "3MiB",
            "--piece-size",
            "64KiB",
            "--leechers",
            "3",
            "--seed-limit",
            "2MB",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for leecher in ["leecher-1", "leecher-2", "leecher-3"] {
        assert!(
            stdout.contains(&format!("  {leecher:<11} done in ")),
            "{stdout}"
        );
        // The live progress ends where the download did.
        assert!(
            stdout.contains(&format!(
                "  {leecher:<11} [demo.bin] 100% #################### done"
            )),
            "{stdout}"
        );
    }
    assert!(stdout.contains(": 48 pieces of 64 KiB, key "), "{stdout}");
    assert_eq!(stdout.matches(", SHA-256 matches").count(), 3, "{stdout}");
    assert!(stdout.contains(" pieces from seeder"), "{stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with("every copy verified; the temporary directory is removed"),
        "{stdout}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_local_swarm_demo_and_removes_its_files() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let mut demo = Command::new(example("local_swarm"))
        .args([
            "--size",
            "3MiB",
            "--piece-size",
            "64KiB",
            "--seed-limit",
            "100kB",
        ])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("download at once") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the demo ended early"
        );
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "its directory"
    );
    let sent = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = demo.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted; the temporary directory is removed"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "left behind"
    );
}
