//! The performance benchmark: six scenarios (BENCHMARKS.md says what each
//! measures and its target), each against a baseline measured in the same
//! run, with the real `tracker` and `peer` binaries on 127.0.0.1 and data
//! made at run time. Prints a table and writes the same figures as JSON
//! (`target/bench.json` unless `--json` says otherwise).
//!
//! Run: `cargo run --release --example bench -- [s1 s2 s3 s4 s5 s6] [--size 1GiB] [--json PATH]`
//! (no scenario named: all of them; `s5` is measured during `s1`).
//!
//! S4 also starts this same program as a child process with
//! `--canned-server` (see [`baseline::serve_canned`]): its baseline, a
//! server that answers without doing any work.

mod baseline;
mod procs;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use scenarios::{Bench, Row};

struct Options {
    scenarios: Vec<String>,
    size: u64,
    json: Option<PathBuf>,
}

const USAGE: &str = "usage: bench [s1 s2 s3 s4 s5 s6] [--size 1GiB] [--json PATH]";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        scenarios: Vec::new(),
        size: 1 << 30,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size" => options.size = swarmline::units::parse_byte_size(&value()?)?,
            "--json" => options.json = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            s if ["s1", "s2", "s3", "s4", "s5", "s6"].contains(&s.to_lowercase().as_str()) => {
                options.scenarios.push(s.to_lowercase())
            }
            other => return Err(format!("unknown argument {other}; {USAGE}")),
        }
    }
    if options.size < 1 << 20 {
        return Err("--size must be at least 1MiB".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((first, rest)) = args.split_first() {
        if first == baseline::CANNED_SERVER {
            return match baseline::serve_canned(rest) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench {first}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("some targets were missed (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Set by Ctrl-C, while its handler removes the work directory.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs the chosen scenarios; true when every target was met.
fn run(options: &Options) -> Result<bool, String> {
    let bins = procs::binaries()?;
    let target_dir = bins
        .peer
        .parent()
        .and_then(|p| p.parent())
        .ok_or("no target directory")?
        .to_path_buf();
    let work = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&target_dir)
        .map_err(|e| format!("cannot make a work directory: {e}"))?;
    // Ctrl-C (which the terminal sends to the tracker and peers as well),
    // or a `kill` of this process alone (which they do not see), must not
    // leave them running, nor gigabytes of data files in target/.
    let removed_on_ctrl_c = work.path().to_path_buf();
    ctrlc::set_handler(move || {
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("\ninterrupted: removing {}", removed_on_ctrl_c.display());
        procs::stop_all();
        let _ = std::fs::remove_dir_all(&removed_on_ctrl_c);
        std::process::exit(130);
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    let bench = Bench {
        bins,
        dir: work.path().to_path_buf(),
        size: options.size,
        made: Default::default(),
    };
    eprintln!("warming up the machine's memory...");
    bench.warm_up(options.size.saturating_mul(3))?;
    let wanted = |s: &str| options.scenarios.is_empty() || options.scenarios.iter().any(|w| w == s);
    type Scenario = fn(&Bench) -> Result<Vec<Row>, String>;
    let all: [(&[&str], Scenario); 5] = [
        (&["s1", "s5"], Bench::one_to_one),
        (&["s2"], Bench::many_to_one),
        (&["s3"], Bench::one_to_many),
        (&["s4"], Bench::tracker_load),
        (&["s6"], Bench::hashing),
    ];
    let mut rows = Vec::new();
    for (names, scenario) in all {
        if names.iter().any(|n| wanted(n)) {
            eprintln!("running {}...", names.join("+").to_uppercase());
            let found = match scenario(&bench) {
                Ok(found) => found,
                Err(_) if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) => {
                    // Failed because Ctrl-C is removing the files: the
                    // handler ends the process.
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    // The logs are kept for reading (the work directory
                    // would go with `work`); the data files are not.
                    bench.remove_data();
                    let kept = work.keep();
                    return Err(format!("{}: {e} (logs in {})", names[0], kept.display()));
                }
            };
            for row in &found {
                eprintln!("  {}", table_line(row));
            }
            rows.extend(found);
        }
    }
    print_table(&rows);
    let json_path = options
        .json
        .clone()
        .unwrap_or_else(|| target_dir.join("bench.json"));
    let json = serde_json::json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "os": std::env::consts::OS,
        },
        "results": rows.iter().map(|r| {
            let mut value = r.json.clone();
            value["met"] = serde_json::Value::Bool(r.met);
            value
        }).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    println!("\nfigures also in {}", json_path.display());
    Ok(rows.iter().all(|r| r.met))
}

fn table_line(row: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} |",
        row.id,
        row.what,
        row.measured,
        row.baseline,
        row.target,
        if row.met { "met" } else { "MISSED" }
    )
}

fn print_table(rows: &[Row]) {
    println!("| | scenario | measured | baseline (same run) | target | |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{}", table_line(row));
    }
}
