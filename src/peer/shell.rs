//! The peer's interactive shell: the course's commands, typed one per line.
//! It reads commands from any reader and writes to any writer, so the same
//! code serves a terminal and a test. Downloads run in the background; a
//! watcher thread per download prints its progress as it happens.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use unicode_width::UnicodeWidthStr;

use crate::protocol::ring::Via;
use crate::protocol::{ProtocolError, Role, SearchCriteria, UserName};
use crate::units::{count, format_bytes};
use crate::wire::LineReader;

use super::folder::{files_to_share, Refusal};
use super::{Download, DownloadState, DownloadStatus, Peer, PeerError};

/// What `help` prints.
pub const HELP: &str = "\
commands:
  register <user> <file>...            share files, or the files under folders (as this peer's user); quote paths with spaces: \"my song.mp3\"
  unregister <user> <file>...          stop sharing files, or every file under a folder
  list-files                           every shared file: <user> : <path> (- : a peer without a user name)
  search [criteria]                    search the tracker and the ring (words, name=*.mp3, kind=audio, min=1MB, max=, user=, key=; quote one with spaces)
  download <key-or-name> [dir]         download from the swarm, every piece verified
  download <user> <path-on-user> <path-to-save>
                                       download from one user, found in the user map
                                       (<path-to-save>: a file, or a folder to save into: one there, or ending in /)
  peers <key-or-name>                  who else holds a file (as the tracker lists them; not this peer)
  users                                the user map: <user> - <ip:port>
  status                               this peer, its user and tracker session; downloads (one line per file and folder), shared files, uploads
  ring                                 this peer's place in the ring: id, predecessor, successors, fingers
  ring files                           every file named in the ring (walks it peer by peer)
  route <id> [nofingers]               look an id up in the ring and show each hop
  help                                 this text
  quit                                 leave (also the end of input: Ctrl-D, on Windows Ctrl-Z then Enter; or Ctrl-C: a second one stops at once)";

/// Where the shell and its download watchers write, one line at a time.
type Out = Arc<Mutex<Box<dyn Write + Send>>>;

/// Prints one line to the shared output.
fn say(out: &Out, text: impl AsRef<str>) {
    let mut out = out.lock();
    let _ = writeln!(out, "{}", text.as_ref());
    let _ = out.flush();
}

/// Runs the shell until `quit`, the end of `input`, or a message on
/// `interrupt` (Ctrl-C; [`crossbeam_channel::never`] for none). Stops the
/// downloads still running and waits for their watchers before
/// returning.
pub fn run(
    peer: &Peer,
    input: Box<dyn Read + Send>,
    output: Box<dyn Write + Send>,
    interrupt: Receiver<()>,
) {
    let out: Out = Arc::new(Mutex::new(output));
    let (lines, reader) = match read_in_background(input) {
        Ok(reading) => reading,
        Err(e) => {
            say(&out, format!("error: cannot read commands: {e}"));
            return;
        }
    };
    let mut watchers: Vec<JoinHandle<()>> = Vec::new();
    say(&out, "type `help` for the commands");
    for file in peer.unfinished() {
        let held = file.bitmap();
        say(
            &out,
            format!(
                "resuming {} in {}, where it was started ({} of {} pieces here)",
                file.name.as_str(),
                file.path()
                    .parent()
                    .map_or_else(|| ".".into(), |dir| dir.display().to_string()),
                held.count(),
                held.len()
            ),
        );
        match peer.resume_download(&file) {
            Ok(download) => match watch(download, Arc::clone(&out)) {
                Ok(watcher) => watchers.push(watcher),
                Err(e) => say(&out, format!("error: {e}")),
            },
            Err(e) => say(&out, format!("error: {e}")),
        }
    }
    prompt(&out);
    loop {
        let line = crossbeam_channel::select! {
            recv(lines) -> line => match line {
                Ok(Ok(line)) => line,
                Ok(Err(why)) => {
                    say(&out, format!("error: {why}"));
                    prompt(&out);
                    continue;
                }
                // The end of the input (Ctrl-D), or a terminal that failed.
                Err(_) => break,
            },
            recv(interrupt) -> _ => {
                say(&out, "");
                break;
            }
        };
        let words = match split_words(&line) {
            Ok(words) => words,
            Err(e) => {
                say(&out, format!("error: {e}"));
                prompt(&out);
                continue;
            }
        };
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            [] => {}
            ["quit" | "exit"] => break,
            command => {
                match execute(peer, command, &out, &mut watchers, &interrupt) {
                    Ok(()) => {}
                    // Under way already (resumed at start, say): no error.
                    Err(PeerError::Busy(what)) => say(&out, what),
                    Err(e) => say(&out, format!("error: {e}")),
                }
            }
        }
        prompt(&out);
    }
    for download in peer.downloads() {
        if !download.is_finished() {
            say(
                &out,
                format!("stopping the download of {}", download.status().name),
            );
            download.cancel();
        }
    }
    for watcher in watchers {
        let _ = watcher.join();
    }
    // Joined when the input has ended; after `quit` or Ctrl-C it may be
    // waiting for a line that never comes. No portable call interrupts a
    // read of the terminal, so that one thread is left to end with the
    // process.
    drop(lines);
    if reader.is_finished() {
        let _ = reader.join();
    }
    say(&out, "bye");
}

/// A line as the input thread hands it over: the command, or why the
/// line was refused.
type InputLine = Result<String, String>;

/// Reads command lines on a thread of its own (`shell-input`), so that
/// the shell can wait for a line and for Ctrl-C at once. The channel
/// closes at the end of the input; the thread reads at most one line
/// ahead of the shell.
fn read_in_background(
    input: Box<dyn Read + Send>,
) -> std::io::Result<(Receiver<InputLine>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(0);
    let reader = thread::Builder::new()
        .name("shell-input".into())
        .spawn(move || {
            let mut input = LineReader::new(input, MAX_COMMAND_LINE);
            while let Ok(Some(line)) = read_command(&mut input) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        })?;
    Ok((rx, reader))
}

/// Longest command line taken (a path is at most a few KiB).
const MAX_COMMAND_LINE: usize = 64 * 1024;

/// The next command line of `input` (the project's capped line reader):
/// `None` at the end of the input; an error sentence for a line that is
/// not UTF-8 or is over [`MAX_COMMAND_LINE`] (skipped as it streams past,
/// never held whole in memory).
fn read_command(input: &mut LineReader<impl Read>) -> std::io::Result<Option<InputLine>> {
    Ok(input.read_line()?.map(|line| match line {
        Ok(text) => Ok(text.to_string()),
        Err(ProtocolError::LineTooLong { .. }) => Err(format!(
            "a line over {} KiB; ignored",
            MAX_COMMAND_LINE / 1024
        )),
        Err(_) => {
            Err("the line is not UTF-8 text; ignored (is the terminal set to UTF-8?)".to_string())
        }
    }))
}

/// The usage lines of `verb` in [`HELP`], if it is a command.
fn usage_of(verb: &str) -> Option<String> {
    // A command's line is indented by two spaces; the deeper ones go on
    // describing the command above them.
    let usages: Vec<&str> = HELP
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|line| line.split(' ').next() == Some(verb))
        .filter_map(|line| line.split("  ").next())
        .collect();
    (!usages.is_empty()).then(|| usages.join(" | "))
}

/// Splits a command line into words: spaces separate words, except inside
/// double or single quotes (`register alice "my song.mp3"`). Backslashes
/// are kept as they are, so Windows paths need no escaping.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q}"));
    }
    words.extend(word);
    Ok(words)
}

fn prompt(out: &Out) {
    let mut out = out.lock();
    let _ = write!(out, "swarmline> ");
    let _ = out.flush();
}

/// Runs one command. `interrupt` (Ctrl-C) is looked at, not taken, by a
/// command that runs long (hashing): it stops, and the shell then ends.
fn execute(
    peer: &Peer,
    command: &[&str],
    out: &Out,
    watchers: &mut Vec<JoinHandle<()>>,
    interrupt: &Receiver<()>,
) -> Result<(), PeerError> {
    match command {
        ["help"] => say(out, HELP),
        ["register", user, files @ ..] if !files.is_empty() => {
            register(peer, user, files, out, interrupt)?
        }
        ["unregister", user, files @ ..] if !files.is_empty() => {
            check_user(peer, user)?;
            // One that is not shared does not keep the others shared.
            for file in files {
                if let Err(e) = unregister(peer, file, out) {
                    say(out, format!("not unregistered: {e}"));
                }
            }
        }
        ["list-files"] => {
            for share in peer.tracker().shares(SearchCriteria::default())? {
                let user = share.user.as_ref().map_or("-", |u| u.as_str());
                say(out, format!("{user} : {}", share.path.as_str()));
            }
        }
        ["search", criteria @ ..] => search(peer, criteria, out)?,
        ["download", "", ..] => {
            return Err(PeerError::Failed(
                "download needs a key or a file name".into(),
            ))
        }
        ["download", what] | ["download", what, _] => {
            let dir = command.get(2).map(|dir| local_path(dir)).transpose()?;
            let download = peer
                .download(what, dir.as_deref())
                .map_err(|e| with_direct_hint(peer, e, what))?;
            say(out, format!("downloading {what}"));
            watchers.push(watch(download, Arc::clone(out))?);
        }
        ["download", user, path_on_user, save_to] => {
            let download = peer.download_direct(user, path_on_user, &local_path(save_to)?)?;
            say(out, format!("downloading {path_on_user} from {user}"));
            watchers.push(watch(download, Arc::clone(out))?);
        }
        ["peers", key] => peers(peer, key, out)?,
        ["users"] => {
            let users = peer.tracker().users()?;
            if users.is_empty() {
                say(out, "no named users (peers started with --user)");
            }
            for (user, addr) in users {
                say(out, format!("{user} - {addr}"));
            }
        }
        ["status"] => status(peer, out),
        ["ring"] => ring_view(peer, out)?,
        ["ring", "files"] => ring_files(peer, out)?,
        ["route", id] => route(peer, id, Via::Fingers, out)?,
        ["route", id, "nofingers"] => route(peer, id, Via::Successors, out)?,
        _ => {
            // A known command with the wrong words, or none known.
            let verb = command.first().copied().unwrap_or_default();
            let typed = command.join(" ");
            return Err(PeerError::Failed(match usage_of(verb) {
                Some(usage) => format!("usage: {usage}"),
                // An arrow key sends ESC [ A, which this shell does not read.
                None if typed.chars().any(char::is_control) => {
                    "unknown command: it holds control characters (this shell does not \
                     read arrow keys: type the command again); type `help`"
                        .to_string()
                }
                None => format!("unknown command {typed:?}; type `help`"),
            }));
        }
    }
    Ok(())
}

/// `ring files`: the files named in the ring (at most 256).
fn ring_files(peer: &Peer, out: &Out) -> Result<(), PeerError> {
    let files = in_ring(peer)?.all_files(256);
    for file in &files {
        say(
            out,
            format!(
                "{}  {:>10}  {:<5}  {}",
                file.key,
                format_bytes(file.size),
                file.kind.as_str(),
                file.name.as_str()
            ),
        );
    }
    say(
        out,
        format!("{} in the ring", count(files.len() as u64, "file")),
    );
    Ok(())
}

/// `route <id> [nofingers]`: looks `id` up in the ring, hop by hop.
fn route(peer: &Peer, id: &str, via: Via, out: &Out) -> Result<(), PeerError> {
    let ring = in_ring(peer)?;
    let id = ring.space().parse_id(id).map_err(PeerError::Failed)?;
    let trace = ring
        .trace(id, via)
        .map_err(|e| PeerError::Failed(e.to_string()))?;
    say(out, format!("route to {id}:\n{trace}"));
    Ok(())
}

/// `register <user> <file>...`: shares each file, or the files under each
/// folder ([`files_to_share`]), hashing each first. A file that cannot be
/// read is told and the others go on; a refusal from the tracker ends it,
/// and so does Ctrl-C (`interrupt`), in the middle of a file's hash.
fn register(
    peer: &Peer,
    user: &str,
    files: &[&str],
    out: &Out,
    interrupt: &Receiver<()>,
) -> Result<(), PeerError> {
    check_user(peer, user)?;
    // `register alice my song.mp3`: told before anything is shared.
    if let Some((word, joined)) = unquoted_path(files) {
        return Err(PeerError::Failed(format!(
            "{word} is not a file; a path with spaces is written in quotes: \"{joined}\""
        )));
    }
    let paths = files
        .iter()
        .map(|file| local_path(file))
        .collect::<Result<Vec<_>, _>>()?;
    let found = files_to_share(&paths, &peer.config().own_files());
    for Refusal { path, reason } in &found.refused {
        say(out, format!("{}: not registered: {reason}", path.display()));
    }
    for (at, path) in found.files.iter().enumerate() {
        if !interrupt.is_empty() {
            let left = found.files.len() - at;
            say(
                out,
                format!("stopped: {} not registered", count(left as u64, "file")),
            );
            break;
        }
        let shown = path.display();
        let progress = hashing_progress(peer, path, interrupt, |p| {
            say(out, format!("hashing {shown}: {p}%"))
        });
        match peer.share(path, progress) {
            Ok(shared) => say(
                out,
                format!(
                    "registered {} as {} ({})",
                    shared.path().display(),
                    shared.key,
                    format_bytes(shared.manifest.size())
                ),
            ),
            // (A file's own error names it already.)
            Err(e @ PeerError::File { .. }) => say(out, format!("not registered: {e}")),
            // The files after would each be hashed only to be refused.
            Err(e) if e.takes_no_more_files() => return Err(e),
            // Another file refused (a second copy of one shared, say)
            // does not stop the ones after it.
            Err(e) => say(out, format!("{shown}: not registered: {e}")),
        }
    }
    Ok(())
}

/// `unregister <user> <file>`: stops sharing a file (named by its path or
/// key), or every file this peer serves from under a folder.
fn unregister(peer: &Peer, file: &str, out: &Out) -> Result<(), PeerError> {
    let path = local_path(file)?;
    if !path.is_dir() {
        peer.unshare(&path.to_string_lossy())?;
        // As `register` says it: `~` expanded.
        say(out, format!("unregistered {}", path.display()));
        return Ok(());
    }
    let folder = dunce::canonicalize(&path).map_err(|e| PeerError::file(&path, e))?;
    // (Downloads on their way are left: they are unregistered once here.)
    let under: Vec<_> = peer
        .files()
        .into_iter()
        .filter(|f| f.is_complete() && f.path().starts_with(&folder))
        .collect();
    if under.is_empty() {
        return Err(PeerError::NotFound(format!(
            "no file under {file} is shared by this peer"
        )));
    }
    for shared in under {
        peer.unshare(&shared.key.to_string())?;
        say(out, format!("unregistered {}", shared.path().display()));
    }
    Ok(())
}

/// `search [criterion]...`: the tracker's matching files, as a table.
fn search(peer: &Peer, criteria: &[&str], out: &Out) -> Result<(), PeerError> {
    let criteria =
        SearchCriteria::from_words(criteria).map_err(|e| PeerError::Failed(e.to_string()))?;
    let files = peer.search(&criteria)?;
    // As wide as the longest name, so that every column lines up.
    let width = files
        .iter()
        .map(|f| f.name.as_str().width())
        .max()
        .unwrap_or(0)
        .max(4);
    say(
        out,
        format!(
            "{} {:>10} {:<6} {:>7} {:>8}  KEY",
            padded("NAME", width),
            "SIZE",
            "KIND",
            "SEEDERS",
            "LEECHERS"
        ),
    );
    for f in &files {
        say(
            out,
            format!(
                "{} {:>10} {:<6} {:>7} {:>8}  {}",
                padded(f.name.as_str(), width),
                format_bytes(f.size),
                f.kind.as_str(),
                f.seeders,
                f.leechers,
                f.key
            ),
        );
    }
    say(out, count(files.len() as u64, "file"));
    Ok(())
}

/// `peers <key-or-name>`: who else holds the file, as the tracker knows.
fn peers(peer: &Peer, key_or_name: &str, out: &Out) -> Result<(), PeerError> {
    let key = match crate::protocol::FileKey::parse(key_or_name) {
        Ok(key) => key,
        // A name, as `download` takes one.
        Err(_) => peer.find_file(key_or_name)?.key,
    };
    let holders = peer.tracker().holders(key)?;
    if holders.is_empty() {
        say(
            out,
            format!("no peer holds {key} (as far as the tracker knows)"),
        );
    }
    for holder in holders {
        let role = if holder.role == Role::Seeder {
            "seeder"
        } else {
            "leecher"
        };
        let user = holder.user.as_ref().map_or("-", |u| u.as_str());
        say(
            out,
            format!(
                "{} {user} {role} {}",
                holder.peer,
                crate::units::count(holder.pieces, "piece")
            ),
        );
    }
    Ok(())
}

/// `status`: the peer, each download and its neighbours, each file held.
fn status(peer: &Peer, out: &Out) {
    let user = peer
        .config()
        .user
        .as_ref()
        .map_or_else(|| "no user name".to_string(), |user| format!("user {user}"));
    let session = match (peer.tracker().has_session(), peer.tracker().peer_id()) {
        (true, Some(id)) => format!("session open as {id}"),
        _ => "no session now; tried again in the background".to_string(),
    };
    say(
        out,
        format!(
            "peer {}, {user} (tracker {}: {session})",
            peer.listen_addr(),
            peer.config().tracker
        ),
    );
    for download in peer.downloads() {
        let status = download.status();
        say(out, format!("download {}", progress_line(&status)));
        // Which of two downloads of one file (into two folders).
        if let DownloadState::Done(path) = &status.state {
            say(out, format!("  saved as {}", path.display()));
        }
        for source in &status.sources {
            let state = source.dropped.as_deref().unwrap_or("connected");
            let line = format!(
                "  neighbour {} gave {}, {state}",
                source.peer,
                count(source.pieces, "piece")
            );
            say(out, line);
        }
    }
    for file in peer.files() {
        let (pieces, bytes) = file.uploaded();
        let held = file.bitmap();
        say(
            out,
            format!(
                "file {} {}/{} pieces, uploaded {} ({})",
                file.name.as_str(),
                held.count(),
                held.len(),
                count(pieces, "piece"),
                format_bytes(bytes)
            ),
        );
    }
}

/// `ring`: this peer's place in the ring.
fn ring_view(peer: &Peer, out: &Out) -> Result<(), PeerError> {
    let view = in_ring(peer)?.view();
    say(
        out,
        format!("ring member {} (ring size {})", view.me, view.size),
    );
    let pred = view
        .predecessor
        .map_or_else(|| "unknown".into(), |p| p.to_string());
    say(out, format!("  predecessor {pred}"));
    for (n, succ) in view.successors.iter().enumerate() {
        say(out, format!("  successor {} {succ}", n + 1));
    }
    for (k, node) in &view.fingers {
        let node = node.map_or_else(|| "?".into(), |n| n.to_string());
        say(out, format!("  finger {k} -> {node}"));
    }
    Ok(())
}

/// The peer's ring node, or why there is none.
fn in_ring(peer: &Peer) -> Result<&crate::ring::RingNode, PeerError> {
    peer.ring().map(|ring| ring.as_ref()).ok_or_else(|| {
        PeerError::Failed("this peer is not in a ring (start it with --ring true)".into())
    })
}

/// A progress callback for [`Peer::share`] that calls `show` with the
/// percentage hashed, in steps of 10%, for files over 64 MiB (smaller ones
/// hash in a blink), and stops the hash ([`Peer::stop_hashing`]) once
/// Ctrl-C is pending on `interrupt` (looked at, not taken: the caller
/// ends after). Shared by the shell and `peer share`.
pub fn hashing_progress<'a>(
    peer: &'a Peer,
    path: &Path,
    interrupt: &'a Receiver<()>,
    mut show: impl FnMut(u64) + 'a,
) -> impl FnMut(u64) + 'a {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut shown = 0;
    move |done| {
        if !interrupt.is_empty() {
            peer.stop_hashing();
        }
        let percent = (done * 100).checked_div(size).unwrap_or(100);
        if size > 64 << 20 && percent >= shown + 10 {
            shown = percent - percent % 10;
            show(shown);
        }
    }
}

/// The course's `register <user>`: the user must be this peer's.
fn check_user(peer: &Peer, user: &str) -> Result<(), PeerError> {
    match &peer.config().user {
        Some(me) if me.as_str() == user => Ok(()),
        Some(me) => Err(PeerError::Failed(format!("this peer is {me}, not {user}"))),
        None if UserName::parse(user).is_ok() => Err(PeerError::Failed(format!(
            "this peer has no user name; start it with --user {user}"
        ))),
        None => Err(PeerError::Failed(
            "this peer has no user name; start it with --user <name> (letters, digits, - and _)"
                .into(),
        )),
    }
}

/// A thread that prints a download's progress every second until it ends.
fn watch(download: Arc<Download>, out: Out) -> Result<JoinHandle<()>, PeerError> {
    let name = download.status().name;
    thread::Builder::new()
        .name(format!("watch-{name}"))
        .spawn(move || {
            let mut last = String::new();
            loop {
                let status = download.status();
                match &status.state {
                    DownloadState::Done(path) => {
                        let line = format!(
                            "[{name}] done: {} ({}, SHA-256 verified, {})",
                            path.display(),
                            format_bytes(status.size),
                            rate(&status)
                        );
                        return say(&out, line);
                    }
                    // Stopped on purpose (`quit`, Ctrl-C): what is kept.
                    // (Before its manifest came, nothing was made: no
                    // piece, no state, nothing to go on from.)
                    DownloadState::Failed(_) if download.was_cancelled() => {
                        let held = status.have;
                        let line = if held.is_empty() {
                            format!("[{name}] stopped before it began: nothing is kept")
                        } else {
                            format!(
                                "[{name}] stopped: {} of {} pieces kept (and any still being written); it goes on at the next start",
                                held.count(),
                                held.len()
                            )
                        };
                        return say(&out, line);
                    }
                    DownloadState::Failed(reason) => {
                        return say(&out, format!("[{name}] failed: {reason}"))
                    }
                    _ => {}
                }
                let line = progress_line(&status);
                if line != last {
                    say(&out, &line);
                    last = line;
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
        .map_err(|e| PeerError::Failed(format!("cannot start a thread: {e}")))
}

/// A path typed in the shell, `~` made the home folder as a system shell
/// would have done ([`crate::config::expand_home`]).
fn local_path(text: &str) -> Result<PathBuf, PeerError> {
    crate::config::expand_home(text).map_err(PeerError::Failed)
}

/// A path with spaces typed without quotes among `words`: the first
/// word that is no file, and the file it starts when joined with the
/// words after it (`my` and `my song.mp3`), up to [`MOST_UNQUOTED_WORDS`]
/// of them (a line of thousands of words that are no files would
/// otherwise be joined every way there is: minutes of looking).
fn unquoted_path<'a>(words: &[&'a str]) -> Option<(&'a str, String)> {
    (0..words.len())
        .filter(|&first| !Path::new(words[first]).exists())
        .find_map(|first| {
            let mut joined = words[first].to_string();
            words[first + 1..]
                .iter()
                .take(MOST_UNQUOTED_WORDS - 1)
                .find_map(|word| {
                    joined.push(' ');
                    joined.push_str(word);
                    Path::new(&joined).is_file().then(|| joined.clone())
                })
                .map(|joined| (words[first], joined))
        })
}

/// The most words a path typed without quotes is looked for in.
const MOST_UNQUOTED_WORDS: usize = 16;

/// A name the swarm does not know that is a user's (in the user map):
/// the direct download was meant, with its save path forgotten.
fn with_direct_hint(peer: &Peer, error: PeerError, what: &str) -> PeerError {
    let is_a_user = matches!(error, PeerError::NotFound(_))
        && matches!(
            super::usermap::lookup(&peer.config().user_map_file, what),
            Ok(Some(_))
        );
    if !is_a_user {
        return error;
    }
    PeerError::Failed(format!(
        "{error}; {what} is a user: to download from them, download {what} <path-on-{what}> <path-to-save>"
    ))
}

/// `text` and spaces up to `width` terminal columns (a CJK character
/// takes two; `format!`'s padding counts characters).
fn padded(text: &str, width: usize) -> String {
    let spaces = width.saturating_sub(text.width());
    format!("{text}{}", " ".repeat(spaces))
}

/// `[name] 42% ########............ 12/26 pieces from 2 peer(s)`
pub fn progress_line(status: &DownloadStatus) -> String {
    let percent = status.percent_done();
    let filled = percent / 5;
    let bar: String = "#".repeat(filled) + &".".repeat(20 - filled);
    let live = status
        .sources
        .iter()
        .filter(|s| s.dropped.is_none())
        .count();
    let state = match &status.state {
        DownloadState::Starting => "starting".to_string(),
        DownloadState::Fetching => format!(
            "{}/{} pieces from {}",
            status.pieces_done(),
            status.pieces_total(),
            count(live as u64, "peer")
        ),
        DownloadState::Finishing => "finishing".to_string(),
        DownloadState::Done(_) => "done".to_string(),
        DownloadState::Failed(reason) => format!("failed: {reason}"),
    };
    format!("[{}] {percent:>3}% {bar} {state}", status.name)
}

/// What a finished download fetched from peers, and how fast, for people:
/// pieces that were here already (a resumed download, a copy of a file
/// held) are not counted as fetched.
fn rate(status: &DownloadStatus) -> String {
    let fetched: u64 = status.sources.iter().map(|source| source.bytes).sum();
    if fetched == 0 {
        return "every piece was here already".to_string();
    }
    let secs = status.elapsed.as_secs_f64().max(0.001);
    let speed = format!(
        "{}/s in {secs:.1} s",
        format_bytes((fetched as f64 / secs) as u64)
    );
    if fetched < status.size {
        format!("{} fetched at {speed}", format_bytes(fetched))
    } else {
        speed
    }
}

#[cfg(test)]
mod tests {
    use super::{padded, progress_line, split_words, unquoted_path};
    use crate::peer::{DownloadState, DownloadStatus};
    use crate::pieces::Bitmap;

    #[test]
    fn a_path_with_spaces_typed_without_quotes_is_found_among_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.txt"), "t").unwrap();
        std::fs::write(dir.path().join("my song.mp3"), "m").unwrap();
        let t = dir.path().join("t.txt").to_string_lossy().into_owned();
        let my = dir.path().join("my").to_string_lossy().into_owned();
        let song = dir
            .path()
            .join("my song.mp3")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            unquoted_path(&[&t, &my, "song.mp3"]),
            Some((my.as_str(), song.clone()))
        );
        assert_eq!(unquoted_path(&[&t, &song]), None);
        assert_eq!(unquoted_path(&[&t, &my]), None, "no file to join into");
        // Thousands of words that are no files: each joined with the few
        // after it, not with every run of words after it (hours of it).
        assert_eq!(unquoted_path(&["zq"; 5000]), None);
    }

    #[test]
    fn names_are_padded_to_terminal_columns() {
        // Two columns for each CJK character: both lines end at column 10.
        assert_eq!(padded("映画.mkv", 10), "映画.mkv  ");
        assert_eq!(padded("film.mkv", 10), "film.mkv  ");
        assert_eq!(padded("été.mp3", 8), "été.mp3 ");
        assert_eq!(padded("longer than that", 4), "longer than that");
    }

    #[test]
    fn progress_is_counted_in_pieces_and_a_failure_is_never_full() {
        let status = |state: DownloadState, have: Bitmap| DownloadStatus {
            key: crate::protocol::FileKey([7; 32]),
            name: "f.bin".into(),
            kind: crate::protocol::MediaKind::Other,
            size: 4 << 14,
            state,
            elapsed: std::time::Duration::ZERO,
            sources: Vec::new(),
            have,
            in_flight: Vec::new(),
        };
        let mut three = Bitmap::empty(4);
        (0..3).for_each(|i| three.set(i));
        // A download going on from 3 of 4 pieces, before any peer answered.
        let resumed = progress_line(&status(DownloadState::Starting, three));
        assert!(resumed.starts_with("[f.bin]  75% "), "{resumed}");
        // Failed before the manifest was known: nothing, not everything.
        let failed = progress_line(&status(
            DownloadState::Failed("cannot create x".into()),
            Bitmap::empty(0),
        ));
        assert!(
            failed.starts_with("[f.bin]   0% ...................."),
            "{failed}"
        );
        // A held file being copied into another folder: whole already.
        let copying = progress_line(&status(DownloadState::Finishing, Bitmap::empty(0)));
        assert!(
            copying.starts_with("[f.bin] 100% #################### finishing"),
            "{copying}"
        );
    }

    #[test]
    fn words_quotes_and_windows_paths() {
        assert_eq!(split_words("  a  b ").unwrap(), ["a", "b"]);
        assert_eq!(
            split_words(r#"register alice "my song.mp3" 'it''s' C:\music\x.mp3"#).unwrap(),
            ["register", "alice", "my song.mp3", "its", r"C:\music\x.mp3"]
        );
        assert_eq!(split_words(r#"download """#).unwrap(), ["download", ""]);
        assert!(split_words("say \"unclosed").is_err());
    }
}
