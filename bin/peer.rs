//! `peer`: shares files and downloads them from the swarm.
//!
//! This release has the peer's configuration (`config/peer.ini`, every key
//! also a flag) but not yet its commands: they arrive with the peer
//! mini-server and downloader. Until then it checks its configuration and
//! prints its help.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use swarmline::config::{flag_args, load_settings, PeerConfig, PEER_KEYS};

/// A swarmline peer: shares files and downloads them piece by piece from
/// several peers at once. (Sharing and downloading are not built yet: this
/// version validates its configuration and prints this help.)
#[derive(Parser)]
#[command(name = "peer", version)]
struct Args {
    /// The ini file to read (`config/peer.ini` is the commented example;
    /// without this flag the built-in defaults, which are the same, apply).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let mut command = Args::command()
        .args(flag_args(PEER_KEYS))
        .args_override_self(true);
    let matches = command.clone().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    match load_settings("peer", PEER_KEYS, args.config.as_deref(), &matches)
        .and_then(|settings| PeerConfig::from_settings(&settings))
    {
        Ok(_config) => {
            let _ = command.print_help();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::from(2)
        }
    }
}
