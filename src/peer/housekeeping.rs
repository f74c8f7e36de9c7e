//! The peer's background threads, stopped together: housekeeping (the
//! tracker session kept alive and got back, queued offers, progress
//! reports, peer look-ups for downloads, the user map, the ring's duties)
//! and the look at shared files on disk.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn, Level};

use crate::config::PeerConfig;
use crate::protocol::FileKey;
use crate::ring::RingNode;

use super::discovery::{self, Discovery};
use super::library::Library;
use super::resume::ResumeStore;
use super::tracker_client::{SessionCheck, TrackerClient};
use super::{ring_duties, usermap, PeerError};

/// Longest wait between two attempts to reach a lost tracker.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The peer's two background threads, stopped together by dropping `stop`.
pub(super) struct BackgroundThreads {
    stop: Sender<()>,
    /// Tracker pings and progress reports, BufferMap rounds, the user map,
    /// queued offers and the ring's duties ([`Housekeeping::run`]).
    housekeeping: JoinHandle<()>,
    /// The look at shared files on disk, on a thread of its own: a look
    /// that hangs (a network file system gone away) holds up neither the
    /// tracker's pings nor the ring.
    disk_look: JoinHandle<()>,
}

impl BackgroundThreads {
    pub(super) fn start(
        config: &PeerConfig,
        tracker: &Arc<TrackerClient>,
        library: &Arc<Library>,
        resume: &ResumeStore,
        discovery: &Arc<Discovery>,
        ring: Option<&Arc<RingNode>>,
    ) -> Result<BackgroundThreads, PeerError> {
        let (stop, stop_rx) = crossbeam_channel::bounded(1);
        let disk_look_stop = stop_rx.clone();
        let duties = Housekeeping {
            tracker: Arc::clone(tracker),
            library: Arc::clone(library),
            discovery: Arc::clone(discovery),
            map_file: config.user_map_file.clone(),
            map_refresh: config.user_map_refresh,
            ping_every: config.tracker_ping,
            round_every: config.bitmap_interval,
            reported: HashMap::new(),
            last_round: None,
            last_refresh: None,
            map_trouble: None,
            told_pings_too_far_apart: false,
            ring: ring.map(|ring| ring_duties::RingDuties {
                ring: Arc::clone(ring),
                library: Arc::clone(library),
                discovery: Arc::clone(discovery),
                refresh: config.ring_refresh,
                round_every: config.bitmap_interval,
                last_announce: None,
                last_round: None,
                welcome_session: tracker.session_number(),
            }),
        };
        let housekeeping = thread::Builder::new()
            .name("peer-housekeeping".into())
            .spawn(move || {
                let mut duties = duties;
                duties.run(&stop_rx)
            })
            .map_err(|e| PeerError::Failed(format!("cannot start a thread: {e}")))?;
        let disk_look = thread::Builder::new().name("peer-disk-look".into()).spawn({
            let (library, resume, tracker) =
                (Arc::clone(library), resume.clone(), Arc::clone(tracker));
            move || look_at_shared_files(&library, &resume, &tracker, &disk_look_stop)
        });
        match disk_look {
            Ok(disk_look) => Ok(BackgroundThreads {
                stop,
                housekeeping,
                disk_look,
            }),
            Err(e) => {
                drop(stop);
                let _ = housekeeping.join();
                Err(PeerError::Failed(format!("cannot start a thread: {e}")))
            }
        }
    }

    /// Stops both threads: housekeeping is joined, the disk look waited
    /// for at most [`DISK_LOOK_STOP_WAIT`] (it may hang on a dead disk).
    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.housekeeping.join();
        join_within(self.disk_look, DISK_LOOK_STOP_WAIT);
    }
}

/// The wait before attempt `failures + 1` to reach a lost tracker: 1 s,
/// doubling with each failure up to [`MAX_BACKOFF`], times a jitter factor
/// between one half and one (from `random` in 0..1), so that peers that
/// lost the tracker together do not all come back at the same moment.
fn backoff(failures: u32, random: f64) -> Duration {
    let doubling = Duration::from_secs(1) * 2u32.saturating_pow(failures.clamp(1, 16) - 1);
    doubling
        .min(MAX_BACKOFF)
        .mul_f64(0.5 + random.clamp(0.0, 1.0) / 2.0)
}

/// How often the files a peer shares are looked at on disk (see
/// [`SharedFile::withdraw_if_gone`]).
pub(super) const DISK_LOOK_EVERY: Duration = Duration::from_secs(10);

/// How long stopping waits for the look at shared files to end: one
/// stuck on a disk that does not answer is left behind.
const DISK_LOOK_STOP_WAIT: Duration = Duration::from_secs(5);

/// Joins `thread` if it ends within `wait`; else leaves it, saying so
/// (it is stuck in a system call, such as a look at a network disk gone
/// away, that nothing can interrupt: the process's end takes it).
fn join_within(thread: JoinHandle<()>, wait: Duration) {
    let until = Instant::now() + wait;
    while !thread.is_finished() && Instant::now() < until {
        thread::sleep(Duration::from_millis(10));
    }
    if thread.is_finished() {
        let _ = thread.join();
    } else {
        warn!(
            "thread {} did not end within {} s (a disk that does not answer?); not waited for",
            thread.thread().name().unwrap_or("?"),
            wait.as_secs()
        );
    }
}

/// Until `stop` closes, every [`DISK_LOOK_EVERY`]: shared files deleted
/// or replaced since are withdrawn (the housekeeping thread tells the
/// tracker), not served from the old file for as long as the peer runs;
/// and an unfinished download whose `.part` file was deleted or moved
/// since (one that failed, then was cleared away by hand) is forgotten,
/// so that its file's handle, and its space on the disk, are let go (they
/// were kept until the peer stopped, or downloaded the file again).
fn look_at_shared_files(
    library: &Library,
    resume: &ResumeStore,
    tracker: &TrackerClient,
    stop: &Receiver<()>,
) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(DISK_LOOK_EVERY) {
        for file in library.all() {
            file.withdraw_if_gone();
            super::download::forget_if_part_gone(library, resume, tracker, &file);
        }
    }
}

/// Lets a refusal by the tracker pass (logged): only an unreachable
/// tracker interrupts the housekeeping round.
fn refusal_is_fine<T>(result: Result<T, PeerError>) -> Result<Option<T>, PeerError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(PeerError::TrackerRefused { code, text }) => {
            debug!("the tracker refused: {text} (ERRR {code})");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Whether the peer has its session at the tracker: without one (the
/// tracker refused it), only the duties that need none are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Open,
    Refused,
}

/// The background duties of a peer towards its tracker.
struct Housekeeping {
    tracker: Arc<TrackerClient>,
    library: Arc<Library>,
    discovery: Arc<Discovery>,
    map_file: PathBuf,
    map_refresh: Duration,
    ping_every: Duration,
    /// How often downloads' progress is reported and their peers looked up.
    round_every: Duration,
    /// The ring's duties, when the peer is in one.
    ring: Option<ring_duties::RingDuties>,
    /// The session and piece count last reported for each unfinished
    /// file.
    reported: HashMap<FileKey, (u64, usize)>,
    /// When progress was last reported and peers looked up.
    last_round: Option<Instant>,
    /// When the user map was last written.
    last_refresh: Option<Instant>,
    /// Why the user map could not be written last time: the same reason
    /// again is logged at debug level only, not at every refresh.
    map_trouble: Option<String>,
    /// Whether the user was told that the tracker drops this peer's
    /// session as idle between pings (once is enough).
    told_pings_too_far_apart: bool,
}

impl Housekeeping {
    /// Until `stop` closes: keeps the tracker session alive (a `PING` every
    /// `ping_every`) and gets it back when it is lost (attempts spaced by a
    /// doubling backoff with jitter, each logged; a new session announces
    /// the peer's files again); while the tracker answers, sends queued
    /// offers, reports the progress of unfinished files, looks up peers for
    /// downloads, and keeps the user map file fresh. The ring's duties go
    /// on whatever the tracker does.
    fn run(&mut self, stop: &Receiver<()>) {
        let mut contact = Contact {
            next_ping: Instant::now() + self.ping_every,
            failures: 0,
            session_refused: false,
        };
        let mut rng = fastrand::Rng::new();
        loop {
            // The peer is stopping: nothing more to tell the tracker.
            if self.tracker.is_stopping() {
                let _ = stop.recv();
                return;
            }
            if contact.failures == 0 && self.session_was_closed() {
                contact.next_ping = Instant::now();
            }
            if Instant::now() >= contact.next_ping {
                let pinged = self.tracker.ping();
                self.after_ping(&mut contact, pinged, rng.f64());
            }
            self.tracker_duties(&mut contact);
            // The ring does not need the tracker.
            if let Some(ring) = &mut self.ring {
                if contact.failures == 0 {
                    ring.tracker_session(self.tracker.session_number());
                }
                ring.run_due();
            }
            match stop.recv_timeout(Duration::from_millis(200)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// Whether the tracker closed the session (it restarted, or dropped
    /// it): then a new one is opened at once, so that the tracker learns
    /// this peer's files (and, as the ring's welcome service, its place)
    /// without waiting for the next ping.
    fn session_was_closed(&mut self) -> bool {
        let check = self.tracker.drop_if_closed();
        if check == SessionCheck::ClosedAsIdle && !self.told_pings_too_far_apart {
            self.told_pings_too_far_apart = true;
            warn!(
                "the tracker closed this peer's session as idle before its next ping: it keeps idle sessions for less than tracker_ping_secs ({} s); set tracker_ping_secs lower than its keep_alive_secs",
                self.ping_every.as_secs()
            );
        }
        if check != SessionCheck::Open {
            info!("the tracker closed the connection; opening a new session");
        }
        check != SessionCheck::Open
    }

    /// Takes in the outcome of a ping: the next one is due a ping interval
    /// later, or after a backoff (`random` in 0..1 for its jitter) when it
    /// failed (logged by [`log_failed_ping`]; the way back after failures,
    /// by [`Housekeeping::log_way_back`]).
    fn after_ping(&self, contact: &mut Contact, pinged: Result<(), PeerError>, random: f64) {
        match pinged {
            Ok(()) => {
                if contact.failures > 0 {
                    self.log_way_back(contact);
                }
                contact.failures = 0;
                contact.session_refused = false;
                contact.next_ping = Instant::now() + self.ping_every;
            }
            Err(e) => {
                contact.failures += 1;
                contact.session_refused = e.session_refused();
                let backoff = backoff(contact.failures, random);
                log_failed_ping(contact, &e, backoff);
                contact.next_ping = Instant::now() + backoff;
            }
        }
    }

    /// Says the tracker answers again. A first failed attempt is what a
    /// tracker restarting looks like (the next one, a second later, usually
    /// gets in): the way back from it is told in the log only; from the
    /// second on, warned, as the failures were.
    fn log_way_back(&self, contact: &Contact) {
        let failures = contact.failures;
        let level = if failures > 1 {
            Level::Warn
        } else {
            Level::Info
        };
        let addr = self.tracker.addr();
        if contact.session_refused {
            log::log!(
                level,
                "session open at the tracker {addr} after {failures} refusal(s)"
            );
        } else {
            log::log!(
                level,
                "tracker {addr} reached again after {failures} failed attempt(s)"
            );
        }
    }

    /// The work done with the tracker while it answers: all of it with a
    /// session; with a session refused, what needs none (downloads still
    /// find peers, and the user map stays fresh); nothing while it is away.
    fn tracker_duties(&mut self, contact: &mut Contact) {
        if contact.failures == 0 {
            if let Err(e) = self.duties(Session::Open) {
                debug!("tracker duties interrupted: {e}");
                contact.next_ping = Instant::now(); // check the session at once
            }
        } else if contact.session_refused {
            if let Err(e) = self.duties(Session::Refused) {
                debug!("tracker look-ups without a session interrupted: {e}");
            }
        }
    }

    /// Reports each unfinished download's progress (`BITF`), only what
    /// changed since this session heard it (a new session hears
    /// everything again).
    fn report_progress(&mut self) -> Result<(), PeerError> {
        let session = self.tracker.session_number();
        let unfinished: Vec<_> = self
            .library
            .all()
            .into_iter()
            .filter(|f| !f.is_complete())
            .collect();
        let keys: HashSet<FileKey> = unfinished.iter().map(|f| f.key).collect();
        self.reported.retain(|key, _| keys.contains(key));
        for file in &unfinished {
            let held = file.bitmap();
            let now = (session, held.count());
            let changed = now.1 > 0 && self.reported.get(&file.key) != Some(&now);
            if changed && refusal_is_fine(self.tracker.report(file.key, &held))?.is_some() {
                self.reported.insert(file.key, now);
            }
        }
        Ok(())
    }

    /// The work done while the tracker answers: withdrawals and offers,
    /// progress reports (with a session), looking up the peers of each
    /// download and the user map (with or without one).
    fn duties(&mut self, session: Session) -> Result<(), PeerError> {
        // Shared files found changed on disk: out of the library (unless
        // a download of that key replaced them) and withdrawn, in order
        // with any offer of that key since (see `withdraw_soon`).
        for file in self.library.all().into_iter().filter(|f| f.has_changed()) {
            if self.library.remove_if_same(&file) {
                info!(
                    "{}: withdrawn, changed on disk since it was shared",
                    file.name.as_str()
                );
                self.tracker.withdraw_soon(file.key);
            }
        }
        if session == Session::Open {
            self.tracker.flush()?;
        }
        if self
            .last_round
            .is_none_or(|at| at.elapsed() >= self.round_every)
        {
            self.last_round = Some(Instant::now());
            if session == Session::Open {
                self.report_progress()?;
            }
            for key in self.discovery.wanted() {
                if let Some(holders) = refusal_is_fine(self.tracker.holders(key))? {
                    let peers = holders.into_iter().map(|h| h.peer).collect();
                    self.discovery
                        .found(discovery::Source::Tracker, &key, peers);
                }
            }
        }
        if self
            .last_refresh
            .is_none_or(|at| at.elapsed() >= self.map_refresh)
        {
            self.last_refresh = Some(Instant::now());
            let users = self.tracker.users()?;
            match usermap::write(&self.map_file, &users) {
                Ok(()) => self.map_trouble = None,
                Err(e) => {
                    let text =
                        format!("cannot write the user map {}: {e}", self.map_file.display());
                    if self.map_trouble.as_ref() == Some(&text) {
                        debug!("{text} (still)");
                    } else {
                        warn!("{text}");
                        self.map_trouble = Some(text);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where the session with the tracker stands, as housekeeping sees it.
struct Contact {
    /// When the next `PING` (or attempt to get a session back) is due.
    next_ping: Instant,
    /// Failed attempts in a row (0: the tracker answers).
    failures: u32,
    /// The last failure was a session refused (the user name taken): the
    /// tracker answers, and the look-ups that need no session go on.
    session_refused: bool,
}

/// Logs a failed attempt to reach the tracker, `backoff` before the next.
/// Warned at the second attempt, and a tracker still away at every tenth
/// (ten minutes apart by then); a refused session once: the tries between,
/// a minute apart at most, would only flood the shell's terminal with the
/// same line.
fn log_failed_ping(contact: &Contact, error: &PeerError, backoff: Duration) {
    let failures = contact.failures;
    let trouble = if error.tracker_is_away() {
        "tracker unreachable"
    } else if contact.session_refused {
        "no session at the tracker"
    } else {
        "tracker trouble"
    };
    let warned = failures == 2 || (!contact.session_refused && failures.is_multiple_of(10));
    log::log!(
        if warned { Level::Warn } else { Level::Info },
        "{trouble} ({error}); attempt {failures}, next in {:.1} s",
        backoff.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_a_minute_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(30, 1.0), MAX_BACKOFF);
        assert_eq!(
            backoff(3, 0.0),
            Duration::from_secs(2),
            "jitter halves it at most"
        );
        assert!(
            backoff(6, 0.5) > Duration::from_secs(23) && backoff(6, 0.5) < Duration::from_secs(25)
        );
    }
}
