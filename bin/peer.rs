//! `peer`: shares files and downloads them from the swarm.
//!
//! Without a subcommand it runs the interactive shell; `share`, `get` and
//! `search` do one job for scripts. Every mode that serves prints
//! `listening on <ip:port>` as its first line on standard output, and then,
//! unless `--gui false`, `gui on http://<ip:port>/` (the web page).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use crossbeam_channel::Receiver;

use swarmline::config::{flag_args, load_settings, switch_missing_its_word, PeerConfig, PEER_KEYS};
use swarmline::peer::folder::{files_to_share, FilesToShare, Refusal};
use swarmline::peer::gui::Gui;
use swarmline::peer::shell::{self, hashing_progress, progress_line};
use swarmline::peer::tracker_client::TrackerClient;
use swarmline::peer::{Download, DownloadState, Peer, PeerError};
use swarmline::protocol::ring::Via;
use swarmline::protocol::SearchCriteria;
use swarmline::units::{count, format_bytes};

/// A swarmline peer: shares files and downloads them piece by piece from
/// several peers at once, checking every piece. Without a command, it runs
/// an interactive shell (type `help` there).
#[derive(Parser)]
#[command(name = "peer", version)]
struct Args {
    /// The ini file to read (`config/peer.ini` is the commented example;
    /// without this flag the built-in defaults, which are the same, apply).
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Share files and keep seeding them until Ctrl-C.
    Share {
        /// The files to share, each hashed first; a folder stands for the
        /// files under it (hidden ones and unfinished `*.part` downloads
        /// left out).
        #[arg(required = true, value_parser = swarmline::config::expand_home)]
        files: Vec<PathBuf>,
    },
    /// Download a file by key or exact name; exits 0 only when the verified
    /// file is in place (1 on failure, 130 when stopped by Ctrl-C or a
    /// termination signal).
    Get {
        /// The file's key (64 hex digits, as `search` shows it) or its
        /// exact name.
        key_or_name: String,
        /// Directory to save into (default: download_dir).
        #[arg(short, long, value_name = "DIR", value_parser = swarmline::config::expand_home)]
        output: Option<PathBuf>,
        /// Once the file is here, keep sharing it until Ctrl-C (as a
        /// BitTorrent client keeps seeding), instead of exiting.
        #[arg(long)]
        seed: bool,
    },
    /// Search the tracker's files (words, name=*.mp3, kind=audio, min=1MB,
    /// max=..., user=..., key=...).
    Search {
        /// Words a name must contain, and filters: name=<glob>,
        /// kind=audio|video|other, min=<size>, max=<size>, user=<name>,
        /// key=<key>. None: every file. (The tracker's files only: the
        /// shell's `search` also lists a ring's.)
        criteria: Vec<String>,
    },
    /// Walk the ring from a member and show every peer's predecessor,
    /// successors and routing table, flagging inconsistencies; --svg draws
    /// it.
    Ring {
        /// A ring member's mini-server address (ip:port).
        #[arg(value_parser = swarmline::config::host_port)]
        addr: std::net::SocketAddr,
        /// Also draw the ring into this SVG file.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// The most peers to walk.
        #[arg(long, value_name = "N", default_value_t = 256)]
        most: usize,
        /// The welcome service whose list (`li?`) is compared with the
        /// ring walked, to find a second ring (default: the tracker, or
        /// the `ring_welcome` of a configuration with `ring = true`).
        #[arg(long, value_name = "HOST:PORT", value_parser = swarmline::config::host_port)]
        welcome: Option<std::net::SocketAddr>,
    },
    /// Look an id up in the ring, starting at a member, and show each hop
    /// and the owner (and whether a peer has exactly that id).
    Route {
        /// A ring member's mini-server address (ip:port).
        #[arg(value_parser = swarmline::config::host_port)]
        addr: std::net::SocketAddr,
        /// The id to look up.
        id: u64,
        /// Route by successors only, ignoring the routing tables (to
        /// compare: about N/2 hops instead of about log2 N). `nofingers`
        /// after the id says the same.
        #[arg(long)]
        no_fingers: bool,
        /// `nofingers`, as the shell's `route <id> nofingers` spells it:
        /// the same as --no-fingers.
        #[arg(value_parser = ["nofingers"], hide = true)]
        nofingers: Option<String>,
    },
}

fn main() -> ExitCode {
    let command = Args::command()
        .args(flag_args(PEER_KEYS))
        .args_override_self(true);
    let matches = match command.clone().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => {
            // (`args_os`: a word that is not UTF-8 must not panic here.)
            let args: Vec<String> = std::env::args_os()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect();
            let commands: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
            if let Some(hint) = switch_missing_its_word(PEER_KEYS, &args, &commands) {
                let _ = e.print();
                note(format_args!("hint: {hint}\n"));
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let config = match load_settings("peer", PEER_KEYS, args.config.as_deref(), &matches)
        .and_then(|settings| PeerConfig::from_settings(&settings))
    {
        Ok(config) => config,
        Err(e) => {
            note(format_args!("peer: {e}\n"));
            return ExitCode::from(2);
        }
    };
    // Only a command that runs a peer writes the peer's log file (unless
    // one is asked for on the command line): a search or a look at the
    // ring leaves nothing behind.
    let runs_a_peer = !matches!(
        args.command,
        Some(Command::Search { .. } | Command::Ring { .. } | Command::Route { .. })
    );
    let from_command_line =
        |key: &str| matches.value_source(key) == Some(clap::parser::ValueSource::CommandLine);
    let log_file = config
        .log_file
        .as_deref()
        .filter(|_| runs_a_peer || from_command_line("log_file"));
    // The shell is a conversation, and `share` and `get` print what they
    // do (and `get` a progress line): their terminal shows only warnings
    // and errors, the log file everything (unless a level is asked for on
    // the command line, or there is no log file).
    let terminal_level = if runs_a_peer && log_file.is_some() && !from_command_line("log_level") {
        config.log_level.min(log::LevelFilter::Warn)
    } else {
        config.log_level
    };
    if let Err(e) =
        swarmline::logging::init_with_terminal(config.log_level, terminal_level, log_file)
    {
        note(format_args!("peer: log_file: {e}\n"));
        return ExitCode::from(2);
    }
    if runs_a_peer {
        swarmline::server::raise_open_file_limit();
    }
    let run = || -> Result<(), Failure> {
        match args.command {
            Some(Command::Search { criteria }) => search(&config, &criteria)?,
            Some(Command::Ring {
                addr,
                svg,
                most,
                welcome,
            }) => {
                let welcome = welcome.unwrap_or_else(|| welcome_of(&config));
                ring(addr, welcome, svg.as_deref(), most)?;
            }
            Some(Command::Route {
                addr,
                id,
                no_fingers,
                nofingers,
            }) => {
                let via = if no_fingers || nofingers.is_some() {
                    Via::Successors
                } else {
                    Via::Fingers
                };
                route(addr, id, via)?
            }
            // The commands that run a peer stop it cleanly on Ctrl-C; the
            // others (a search, the monitor) are simply ended by it.
            Some(Command::Share { files }) => share(config, &files, &catch_ctrl_c()?)?,
            Some(Command::Get {
                key_or_name,
                output,
                seed,
            }) => get(config, &key_or_name, output, seed, &catch_ctrl_c()?)?,
            None => interactive(config, catch_ctrl_c()?)?,
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            note(format_args!("peer: {message}\n"));
            ExitCode::from(code)
        }
    }
}

/// The ring's welcome service: `ring_welcome` when this peer's ring
/// settings name one, else the tracker (which serves it).
fn welcome_of(config: &PeerConfig) -> std::net::SocketAddr {
    use swarmline::ring::{Entry, IdChoice};
    match config.ring.as_ref().map(|ring| (&ring.entry, &ring.id)) {
        Some((Entry::Welcome(welcome), _) | (_, IdChoice::HashService(welcome))) => *welcome,
        _ => config.tracker,
    }
}

/// Why a command ended without doing its job: what to say, and the exit
/// code (1, or [`INTERRUPTED`]).
struct Failure {
    message: String,
    code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, code: 1 }
    }
}

/// The exit code of a `get` stopped by Ctrl-C or a termination signal
/// before its file was here: 128 + SIGINT's number, as shells report an
/// interrupted command, so that a script can tell it from a failure.
const INTERRUPTED: u8 = 130;

/// A running peer and its web page.
struct Running {
    peer: Arc<Peer>,
    gui: Option<Gui>,
}

impl std::ops::Deref for Running {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl Running {
    /// Stops the page (joining its threads, which hold the peer), then the
    /// peer. The peer is told first, so that a page request busy in the
    /// ring (a search walking it) gives up instead of holding the join.
    fn shutdown(self) {
        self.peer.begin_stopping();
        if let Some(gui) = self.gui {
            gui.shutdown();
        }
        match Arc::try_unwrap(self.peer) {
            Ok(peer) => peer.shutdown(),
            // Not reached once the page is stopped; dropping the last
            // reference stops the peer all the same.
            Err(peer) => drop(peer),
        }
    }
}

/// Starts the peer and its web page, and prints where they listen.
fn start(config: PeerConfig) -> Result<Running, String> {
    if config.ring.is_some() {
        STARTING.store(false, Ordering::SeqCst);
    }
    let gui_addr = config.gui;
    let peer = Arc::new(Peer::start(config).map_err(|e| e.to_string())?);
    // Both started before either is printed: a script that waits for
    // "listening on" is not told of a peer whose page then fails.
    let gui = match gui_addr {
        Some(addr) => Some(Gui::start(addr, Arc::clone(&peer)).map_err(|e| e.to_string())?),
        None => None,
    };
    // A closed output (`peer share f | head -1`) must not stop a seeder:
    // these lines are for whoever reads them, the peer goes on without.
    let _ = out(format_args!("listening on {}", peer.listen_addr()));
    if let Some(gui) = &gui {
        let _ = out(format_args!("gui on http://{}/", gui.addr()));
    }
    let _ = std::io::stdout().flush();
    STARTING.store(false, Ordering::SeqCst);
    Ok(Running { peer, gui })
}

fn interactive(config: PeerConfig, ctrl_c: Receiver<()>) -> Result<(), String> {
    let peer = start(config)?;
    let input = Box::new(std::io::stdin());
    shell::run(&peer, input, Box::new(std::io::stdout()), ctrl_c);
    peer.shutdown();
    Ok(())
}

fn search(config: &PeerConfig, criteria: &[String]) -> Result<(), String> {
    let criteria = SearchCriteria::from_words(criteria).map_err(|e| e.to_string())?;
    let files = TrackerClient::new(config.tracker, None)
        .search(criteria)
        .map_err(|e| e.to_string())?;
    for f in &files {
        out(format_args!(
            "{}  {:>10}  {:<5}  {} seeder(s), {} leecher(s)  {}",
            f.key,
            format_bytes(f.size),
            f.kind.as_str(),
            f.seeders,
            f.leechers,
            f.name.as_str()
        ))?;
    }
    note(format_args!("{}\n", count(files.len() as u64, "file")));
    Ok(())
}

fn share(config: PeerConfig, files: &[PathBuf], ctrl_c: &Receiver<()>) -> Result<(), String> {
    // Looked at before anything starts (folders walked): a mistyped name
    // is told at once, and when no file is left, nothing (no tracker
    // session, no web page) is started for nothing.
    let FilesToShare {
        files: to_share,
        refused,
        stopped_at_most,
        ..
    } = files_to_share(files, &config.own_files());
    for Refusal { path, reason } in &refused {
        note(format_args!(
            "peer: {}: not shared: {reason}\n",
            path.display()
        ));
    }
    let total = to_share.len() + refused.len();
    let mut not_shared = refused.len();
    if to_share.is_empty() {
        return Err("no file is shared".into());
    }
    let peer = start(config)?;
    let mut interrupted = false;
    for (at, file) in to_share.iter().enumerate() {
        // Ctrl-C while hashing stops the hash (seen in its progress, after
        // a piece) and the files after it.
        if ctrl_c.try_recv().is_ok() {
            interrupted = true;
            let left = to_share.len() - at;
            note(format_args!(
                "peer: stopped before {} were hashed: not shared\n",
                count(left as u64, "more file")
            ));
            not_shared += left;
            break;
        }
        let live = std::io::stderr().is_terminal();
        let progress = hashing_progress(&peer, file, ctrl_c, |percent| {
            if live {
                note(format_args!("\rhashing {}: {percent}%", file.display()));
            }
        });
        // One file refused (the tracker's cap, a read error) does not
        // stop the others, as `cp` goes on past a file it cannot copy.
        match peer.share(file, progress) {
            Ok(shared) => {
                let _ = out(format_args!(
                    "sharing {} as {}",
                    shared.path().display(),
                    shared.key
                ));
            }
            // (A file's own error names it already.)
            Err(e @ PeerError::File { .. }) => {
                note(format_args!("peer: not shared: {e}\n"));
                not_shared += 1;
            }
            // The files after this one would each be hashed only to be
            // refused in turn.
            Err(e) if e.takes_no_more_files() => {
                note(format_args!("peer: {}: not shared: {e}\n", file.display()));
                let after = to_share.len() - at - 1;
                if after > 0 {
                    note(format_args!(
                        "peer: {} after it not shared: the tracker takes no more\n",
                        count(after as u64, "file")
                    ));
                }
                not_shared += after + 1;
                break;
            }
            Err(e) => {
                note(format_args!("peer: {}: not shared: {e}\n", file.display()));
                not_shared += 1;
            }
        }
    }
    // (Or during the last file's hash.)
    interrupted |= ctrl_c.try_recv().is_ok();
    if !interrupted {
        if not_shared == total {
            peer.shutdown();
            return Err("no file is shared".into());
        }
        let _ = ctrl_c.recv();
    }
    peer.shutdown();
    match not_shared {
        0 => Ok(()),
        // Of the files found and the paths refused (a folder refused
        // counts once, as the line above that names it does).
        n if stopped_at_most => Err(format!(
            "{n} not shared and more left out (named above: the walk stops at {} files)",
            swarmline::peer::folder::MAX_FILES
        )),
        n => Err(format!("{n} of {total} not shared (each named above)")),
    }
}

/// Writes a line to standard output. A closed or full output (`| head -1`,
/// `> /dev/full`) is an error for the caller to weigh, never the panic of
/// `println!`.
fn out(text: impl std::fmt::Display) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to standard output: {e}"))
}

/// Writes to standard error for the person watching; if it is closed,
/// nothing is lost that the logs do not have.
fn note(text: impl std::fmt::Display) {
    let _ = write!(std::io::stderr(), "{text}");
}

/// True until the peer is up ([`start`]), for a peer outside a ring. A
/// Ctrl-C before then ends the process at once: nothing runs yet that
/// must be stopped cleanly, and the start may be waiting seconds for a
/// tracker that does not answer. (A peer joining a ring is in it before
/// its start ends, and must leave it cleanly: it waits, as before.)
static STARTING: AtomicBool = AtomicBool::new(true);

/// Ctrl-C (or a termination signal), as a message on the channel
/// returned: each command stops the way it should (a download cancelled,
/// the ring left, the tracker told). A second Ctrl-C, while that runs,
/// ends the process at once, as the first does while the peer starts.
fn catch_ctrl_c() -> Result<Receiver<()>, String> {
    let (pressed_tx, pressed_rx) = crossbeam_channel::bounded(1);
    let presses = std::sync::atomic::AtomicUsize::new(0);
    ctrlc::set_handler(move || {
        if STARTING.load(Ordering::SeqCst) {
            note("\nstopped while starting\n");
            std::process::exit(130);
        }
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            note("\nstopping (interrupt again to stop at once)\n");
            let _ = pressed_tx.try_send(());
        } else {
            std::process::exit(130);
        }
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    Ok(pressed_rx)
}

fn get(
    config: PeerConfig,
    what: &str,
    output: Option<PathBuf>,
    seed: bool,
    ctrl_c: &Receiver<()>,
) -> Result<(), Failure> {
    let patience = config.stall_timeout;
    let peer = start(config)?;
    let download = start_patiently(&peer, what, output.as_deref(), patience, ctrl_c)?;
    let live = std::io::stderr().is_terminal();
    let mut last = String::new();
    let mut interrupted = false;
    loop {
        let line = progress_line(&download.status());
        if live {
            note(format_args!("\r{line}"));
        } else if line != last {
            note(format_args!("{line}\n"));
        }
        last = line;
        if ctrl_c.try_recv().is_ok() {
            // Its verified pieces are saved: a later `get` goes on.
            interrupted = true;
            download.cancel();
        }
        if download.wait_for(Duration::from_millis(250)) {
            break;
        }
    }
    // Done: the last line says so (100%), not the last one before. (A
    // failure is said once, by the error below.)
    let status = download.status();
    if matches!(status.state, DownloadState::Done(_)) {
        let line = progress_line(&status);
        if live {
            note(format_args!("\r{line}"));
        } else if line != last {
            note(format_args!("{line}\n"));
        }
    }
    if live {
        note("\n");
    }
    let result = match (download.wait(), download.status().state) {
        (Ok(path), DownloadState::Done(_)) => {
            let printed = out(path.display());
            // Not after a Ctrl-C that came as the last piece did.
            if seed && !interrupted {
                note("seeding it until Ctrl-C\n");
                let _ = ctrl_c.recv();
            }
            printed.map_err(Failure::from)
        }
        (Err(reason), _) | (Ok(_), DownloadState::Failed(reason)) => Err(Failure {
            message: with_what_is_kept(&peer, &download, reason, interrupted),
            code: if interrupted { INTERRUPTED } else { 1 },
        }),
        (Ok(_), other) => Err(format!("ended while {other:?}").into()),
    };
    peer.shutdown();
    result
}

/// Starts the download of `what`. While the tracker cannot be reached (a
/// tracker restarting, say) it is asked again every two seconds, for up to
/// `patience` (the stall timeout, which a download under way also waits
/// for its peers), or until Ctrl-C. A tracker that was away and is back
/// may not list the file yet (its seeders come back to it one by one):
/// that too is asked again, within the same time.
fn start_patiently(
    peer: &Peer,
    what: &str,
    dir: Option<&std::path::Path>,
    patience: Duration,
    ctrl_c: &Receiver<()>,
) -> Result<Arc<Download>, Failure> {
    let until = std::time::Instant::now() + patience;
    let mut told = false;
    loop {
        match peer.download(what, dir) {
            Ok(download) => return Ok(download),
            Err(e)
                if (e.tracker_is_away() || (told && matches!(e, PeerError::NotFound(_))))
                    && std::time::Instant::now() < until =>
            {
                if !told {
                    told = true;
                    note(format_args!(
                        "peer: {e}; asking again for up to {} s (Ctrl-C stops)\n",
                        patience.as_secs()
                    ));
                }
                let left = until.saturating_duration_since(std::time::Instant::now());
                if ctrl_c
                    .recv_timeout(left.min(Duration::from_secs(2)))
                    .is_ok()
                {
                    return Err(Failure {
                        message: format!("stopped before {what} could be looked up"),
                        code: INTERRUPTED,
                    });
                }
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
}

/// `reason` a download failed for, and what is kept of it when it left
/// verified pieces. Stopped by the
/// user (`interrupted`), the same command goes on from them; failed, they
/// wait for the next try.
fn with_what_is_kept(
    peer: &Peer,
    download: &Download,
    reason: String,
    interrupted: bool,
) -> String {
    let kept = peer
        .unfinished()
        .into_iter()
        .find(|file| file.key == download.key())
        .map(|file| file.bitmap());
    let Some(kept) = kept.filter(|kept| kept.count() > 0) else {
        return reason;
    };
    let (count, total) = (kept.count(), kept.len());
    if interrupted {
        format!(
            "{reason}; {count} of {total} pieces are kept, and the same command goes on from them"
        )
    } else {
        format!("{reason}; {count} of {total} verified pieces are kept for the next try")
    }
}

/// `peer ring`: walks the ring from the member at `addr`, prints what every
/// peer knows and what is wrong, and draws it into `svg` if asked. Starts
/// no peer: it only asks the members (`RNFO`). Fails (exit 1) when there
/// are findings, or when `addr` does not answer.
fn ring(
    addr: std::net::SocketAddr,
    welcome: std::net::SocketAddr,
    svg: Option<&std::path::Path>,
    most: usize,
) -> Result<(), String> {
    use swarmline::ring::monitor;
    let client = swarmline::ring::RingClient::new();
    let snapshot = monitor::walk(&client, addr, most)
        .map_err(|e| format!("cannot walk the ring from {addr}: {e}"))?;
    let mut findings = monitor::check(&snapshot);
    // A second ring is invisible from inside this one: the welcome
    // service lists its members too.
    let welcome_line = match monitor::compare_with_welcome(&client, &snapshot, welcome) {
        Ok(_) if !snapshot.closed => {
            format!("welcome list at {welcome} not compared: the walk did not close")
        }
        Ok(check) => {
            let line = check.summary(welcome, snapshot.nodes.len());
            findings.extend(check.findings);
            line
        }
        Err(e) => format!(
            "the welcome list at {welcome} could not be read, so a second ring would not show: {e}"
        ),
    };
    out(monitor::render_text(&snapshot, &findings).trim_end())?;
    out(welcome_line)?;
    if let Some(path) = svg {
        std::fs::write(path, monitor::render_svg(&snapshot, &findings))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        out(format_args!("drawing written to {}", path.display()))?;
    }
    if findings.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} in the ring (listed above)",
            count(findings.len() as u64, "problem")
        ))
    }
}

/// `peer route`: looks `id` up hop by hop from the member at `addr`, as a
/// ring peer does, and prints each hop. Starts no peer.
fn route(addr: std::net::SocketAddr, id: u64, via: Via) -> Result<(), String> {
    let client = swarmline::ring::RingClient::new();
    let start = client
        .info(addr)
        .map_err(|e| format!("cannot ask {addr}: {e}"))?;
    let space = swarmline::ring::RingSpace::new(start.size)
        .map_err(|e| format!("{addr} says its ring has size {}: {e}", start.size))?;
    if !space.contains(id) {
        return Err(format!(
            "{id} is outside the ring (0 to {})",
            start.size.saturating_sub(1)
        ));
    }
    let trace = client
        .trace(&space, start.me, id, via)
        .map_err(|e| format!("the look-up of {id} failed: {e}"))?;
    let how = match via {
        Via::Fingers => "",
        Via::Successors => " by successors only",
    };
    out(format_args!(
        "route to {id} from {}{how}:\n{trace}",
        start.me
    ))
}
