//! `tracker`: the swarm's directory. Reads its config, starts logging, binds
//! the listener, prints `listening on <ip:port>` as the first line on
//! standard output, and serves until Ctrl-C or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use log::info;

use swarmline::config::{flag_args, load_settings, TrackerConfig, TRACKER_KEYS};
use swarmline::tracker::Tracker;

/// The swarmline tracker: remembers which peers share which files, and tells
/// anyone who asks. Talk to it by hand with `nc 127.0.0.1 6969` (see protocol.md).
#[derive(Parser)]
#[command(name = "tracker", version)]
struct Args {
    /// The ini file to read (`config/tracker.ini` is the commented example;
    /// without this flag the built-in defaults, which are the same, apply).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// Exit code for a bad configuration value.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let command = Args::command()
        .args(flag_args(TRACKER_KEYS))
        .args_override_self(true);
    let matches = command.get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let config = match load_settings("tracker", TRACKER_KEYS, args.config.as_deref(), &matches)
        .and_then(|settings| TrackerConfig::from_settings(&settings))
    {
        Ok(config) => config,
        Err(e) => {
            note(format_args!("tracker: {e}"));
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Err(e) = swarmline::logging::init(config.log_level, config.log_file.as_deref()) {
        note(format_args!("tracker: log_file: {e}"));
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note(format_args!("tracker: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A line on standard error; a closed one (the tracker run from a script
/// that went away) is no reason to panic.
fn note(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn run(config: TrackerConfig) -> Result<(), String> {
    swarmline::server::raise_open_file_limit();
    let listener = swarmline::server::bind_listener(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let tracker = Tracker::start(listener, config.options.clone())
        .map_err(|e| format!("cannot start: {e}"))?;
    let addr = tracker.local_addr();
    // Caught before the address is printed: a script that stops the
    // tracker as soon as it reads the line gets a clean stop.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    // The first line on stdout, for people and for scripts that pass --port 0.
    // A closed output is no reason to stop serving (`println!` would panic).
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {addr}").and_then(|()| stdout.flush());
    info!(
        "tracker listening on {addr} (max {} connections, keep-alive {} s, lines up to {} bytes)",
        config.options.max_connections,
        config.options.keep_alive.as_secs(),
        config.options.max_line
    );

    let _ = stop_rx.recv();

    info!(
        "stopping: {} session(s) on {} connection(s)",
        tracker.session_count(),
        tracker.connection_count()
    );
    tracker.shutdown();
    info!("stopped");
    Ok(())
}
