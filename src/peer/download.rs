//! One download, from a key to a verified file under its final name.
//!
//! 1. Ask the tracker for the file's peers (or use the one peer given).
//! 2. Fetch the manifest from one of them and check it hashes to the key
//!    (several asked at once when the first is slow: [`manifest_fetch`]).
//! 3. Create `<name>.part` at full size and put it in the [`Library`], so
//!    the pieces that arrive are served to other peers at once.
//! 4. The coordinator (this download's thread) exchanges BufferMaps with
//!    every neighbour and hands batches of pieces to a pool of worker
//!    threads (crossbeam channels): rarest first among the neighbours'
//!    BufferMaps, random among equals; at the end (every missing piece
//!    already asked for), an endgame asks a second peer for the last ones.
//!    Each worker owns nothing but the job it is given: it sends one
//!    `REQF` for the batch (several pieces in flight on one persistent
//!    connection), checks each piece's SHA-256 against the manifest, and
//!    writes the good ones at their offset. The coordinator is in
//!    [`coordinator`], the pool in [`worker`]; this module holds what the
//!    rest of the peer sees (start, status, cancel) and the steps around
//!    the fetching (1 to 3 and 7).
//! 5. Every BufferMap interval BufferMaps are exchanged again, and the
//!    peers that the peer's housekeeping thread found at the tracker
//!    ([`Discovery`]) join; that thread also reports the progress (`BITF`).
//!    While pieces are fetched the download never waits on the tracker:
//!    only its first look-up (1), and another when every holder listed
//!    failed to give the manifest (2), wait for an answer (at most the
//!    tracker client's exchange deadline, and a cancel waits for it too).
//! 6. A neighbour that fails (connection lost, timeout, killed) is dropped
//!    and its pieces go to the others (and it is tried again later); one
//!    that sends bad pieces or breaks the protocol is disconnected, and
//!    banned for the rest of the download after `max_bad_pieces` of those
//!    (the rules are in [`standing`]). With no piece stored and none
//!    asked of a peer that may give it during the stall timeout (one
//!    given up and tried once more does not count until it gives a
//!    piece), or no piece stored for longer still whatever is asked, the
//!    download fails and says why.
//! 7. All pieces in (each one checked against the manifest, which is
//!    checked against the key, so the whole file is): the file is flushed
//!    to disk (`sync_on_finish`; on Linux its write-out was started along
//!    the way, see [`coordinator`]), renamed to its final name, and
//!    offered to the tracker (`ADDF`). It is not read back: a second
//!    SHA-256 pass over the whole file would double the work per byte and
//!    prove nothing the piece checks have not.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use crate::pieces::{Bitmap, Manifest, PieceFile};
use crate::protocol::{FileKey, FileName, FileOffer, MediaKind, PeerId, SharedPath};

use super::discovery::Discovery;
use super::fsutil::{cut_to, portable_file_name, room_for, sync_parent_dir, MAX_NAME_BYTES};
use super::library::{FinishError, Library, SharedFile};
use super::link::MAX_BITMAP_PIECES;
use super::ratelimit::RateLimiter;
use super::resume::ResumeStore;
use super::tracker_client::TrackerClient;

mod coordinator;
mod held;
mod in_flight;
mod manifest_fetch;
mod orphan;
mod rarity;
mod speed;
mod stall;
mod standing;
mod throttle_clock;
mod worker;

use coordinator::Coordinator;
use manifest_fetch::fetch_manifest;

/// What to download, and where from.
#[derive(Debug, Clone)]
pub struct DownloadPlan {
    pub key: FileKey,
    pub name: FileName,
    pub kind: MediaKind,
    /// The directory the file is saved in.
    pub dir: PathBuf,
    /// `Some(peer)`: fetch from that peer only (the course's direct
    /// download); `None`: from the swarm, peers found by the tracker.
    pub only_from: Option<PeerId>,
}

/// How downloads run (from the peer's configuration).
#[derive(Debug, Clone)]
pub struct DownloadSettings {
    /// Bad pieces or protocol violations after which a neighbour is banned.
    pub max_bad_pieces: u32,
    pub pool_size: usize,
    pub queue_depth: usize,
    pub bitmap_interval: Duration,
    pub stall_timeout: Duration,
    /// Connections to each neighbour, each with its own batch in flight.
    pub lanes_per_peer: usize,
    /// Flush the file to disk before it gets its final name.
    pub sync_on_finish: bool,
}

/// Where a download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadState {
    /// Finding peers and the manifest.
    Starting,
    /// Fetching pieces.
    Fetching,
    /// All pieces in and verified; flushing to disk and renaming.
    Finishing,
    /// Verified and in place at this path.
    Done(PathBuf),
    /// Stopped for this reason.
    Failed(String),
}

impl DownloadState {
    /// True once the download is done or failed.
    pub fn is_over(&self) -> bool {
        matches!(self, DownloadState::Done(_) | DownloadState::Failed(_))
    }
}

/// Pieces from the focus on (see [`Download::focus_on`]) fetched before
/// any other: a few seconds of sound or video at common bit rates.
pub const FOCUS_PIECES: u32 = 8;
/// No focus set.
const NO_FOCUS: u64 = u64::MAX;

/// A neighbour as seen by one download.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub peer: PeerId,
    /// Verified pieces received from it.
    pub pieces: u64,
    /// Bytes received from it (duplicates included).
    pub bytes: u64,
    /// Its recent throughput in bytes per second, once measured.
    pub rate: Option<f64>,
    /// Its recent time from a request to the first answer.
    pub latency: Option<Duration>,
    /// `None` while it is in use; else why it was dropped.
    pub dropped: Option<String>,
}

/// A snapshot of a download's progress.
#[derive(Debug, Clone)]
pub struct DownloadStatus {
    pub key: FileKey,
    pub name: String,
    pub kind: MediaKind,
    pub size: u64,
    pub state: DownloadState,
    pub elapsed: Duration,
    pub sources: Vec<SourceStatus>,
    /// The pieces verified here (empty until the manifest is known, then
    /// one bit per piece of the file).
    pub have: Bitmap,
    /// The pieces asked for and not in yet.
    pub in_flight: Vec<u32>,
}

impl DownloadStatus {
    /// The file's pieces (0 until the manifest is known).
    pub fn pieces_total(&self) -> usize {
        self.have.len()
    }

    /// The pieces verified here.
    pub fn pieces_done(&self) -> usize {
        self.have.count()
    }

    /// How far it is, from 0 to 1: whole once done or finishing (every
    /// piece is here, or a held file is being copied), else from the
    /// pieces when they are known (a resumed download starts with some;
    /// one that failed before knowing them is at 0, not 1).
    pub fn fraction_done(&self) -> f64 {
        match self.pieces_total() {
            _ if self.is_whole() => 1.0,
            0 => 0.0,
            total => self.pieces_done() as f64 / total as f64,
        }
    }

    /// [`DownloadStatus::fraction_done`] in whole percent, rounded down.
    pub fn percent_done(&self) -> usize {
        if self.is_whole() {
            return 100;
        }
        (self.pieces_done() * 100)
            .checked_div(self.pieces_total())
            .unwrap_or(0)
    }

    /// Whether every piece is here: done, or finishing.
    fn is_whole(&self) -> bool {
        matches!(
            self.state,
            DownloadState::Done(_) | DownloadState::Finishing
        )
    }

    /// Recent throughput of the whole download, bytes per second: what
    /// its live sources give together (`None` before any is measured).
    pub fn rate(&self) -> Option<f64> {
        self.sources
            .iter()
            .filter(|s| s.dropped.is_none())
            .filter_map(|s| s.rate)
            .reduce(|a, b| a + b)
    }

    /// Bytes received so far (pieces are whole, the last may be short).
    pub fn bytes_done(&self) -> u64 {
        let (done, total) = (self.pieces_done(), self.pieces_total());
        if total == 0 || done == total {
            return if done == total { self.size } else { 0 };
        }
        self.size / total as u64 * done as u64
    }
}

/// A download running on its own thread.
pub struct Download {
    /// The file's key (also in the status, which is costlier to read).
    key: FileKey,
    status: Arc<Mutex<DownloadStatus>>,
    /// Signalled (with `status` locked) when the download ends.
    ended: Arc<Condvar>,
    cancel: Arc<AtomicBool>,
    /// The piece a player needs next ([`NO_FOCUS`]: none).
    focus: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What a download needs from its peer.
#[derive(Clone)]
pub struct DownloadContext {
    pub library: Arc<Library>,
    pub tracker: Arc<TrackerClient>,
    /// The ring, when the peer is in one: another place to find peers.
    pub ring: Option<Arc<crate::ring::RingNode>>,
    pub discovery: Arc<Discovery>,
    pub resume: ResumeStore,
    /// The peer's download limit, shared by all its downloads.
    pub download_limit: Arc<RateLimiter>,
    pub settings: DownloadSettings,
}

impl Download {
    /// Starts downloading on a new thread named `download-<name>`.
    pub fn start(context: DownloadContext, plan: DownloadPlan) -> io::Result<Arc<Download>> {
        // Some of it here already (a download that goes on): shown from
        // the start, not as 0% until the first peer answers.
        let here = context.library.get(&plan.key).filter(|f| f.is_unfinished());
        let status = Arc::new(Mutex::new(DownloadStatus {
            key: plan.key,
            name: plan.name.as_str().to_string(),
            kind: plan.kind,
            size: here.as_ref().map_or(0, |f| f.manifest.size()),
            state: DownloadState::Starting,
            elapsed: Duration::ZERO,
            sources: Vec::new(),
            have: here.map_or_else(|| Bitmap::empty(0), |f| f.bitmap()),
            in_flight: Vec::new(),
        }));
        let cancel = Arc::new(AtomicBool::new(false));
        let focus = Arc::new(AtomicU64::new(NO_FOCUS));
        let ended = Arc::new(Condvar::new());
        let key = plan.key;
        let thread = thread::Builder::new()
            .name(format!("download-{}", plan.name.as_str()))
            .spawn({
                let (status, cancel) = (Arc::clone(&status), Arc::clone(&cancel));
                let (ended, focus) = (Arc::clone(&ended), Arc::clone(&focus));
                move || {
                    let started = Instant::now();
                    let controls = Controls {
                        cancel: &cancel,
                        focus: &focus,
                    };
                    let result = run(&context, &plan, &status, controls);
                    let mut status = status.lock();
                    status.elapsed = started.elapsed();
                    status.state = match result {
                        Ok(path) => {
                            info!(
                                "{}: done, verified, at {}",
                                plan.name.as_str(),
                                path.display()
                            );
                            DownloadState::Done(path)
                        }
                        // Stopped on purpose: no failure to warn about.
                        Err(reason) if cancel.load(Ordering::SeqCst) => {
                            info!("{}: stopped: {reason}", plan.name.as_str());
                            DownloadState::Failed(reason)
                        }
                        Err(reason) => {
                            warn!("{}: failed: {reason}", plan.name.as_str());
                            DownloadState::Failed(reason)
                        }
                    };
                    ended.notify_all();
                }
            })?;
        Ok(Arc::new(Download {
            key,
            status,
            ended,
            cancel,
            focus,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The key of the file downloaded.
    pub fn key(&self) -> FileKey {
        self.key
    }

    /// Streaming priority: fetch piece `index` and the [`FOCUS_PIECES`]
    /// after it before any other (a player needs them next). Pieces
    /// elsewhere go on rarest first once those are asked for.
    pub fn focus_on(&self, index: u32) {
        self.focus.store(u64::from(index), Ordering::Relaxed);
    }

    /// A snapshot of its progress.
    pub fn status(&self) -> DownloadStatus {
        self.status.lock().clone()
    }

    /// True once it is done or failed.
    pub fn is_finished(&self) -> bool {
        self.status.lock().state.is_over()
    }

    /// Waits up to `timeout` for the end; true if it has ended.
    pub fn wait_for(&self, timeout: Duration) -> bool {
        let mut status = self.status.lock();
        if !status.state.is_over() {
            self.ended.wait_for(&mut status, timeout);
        }
        status.state.is_over()
    }

    /// Waits for the end; the verified file's path, or why it failed.
    pub fn wait(&self) -> Result<PathBuf, String> {
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                return Err("the download thread panicked".into());
            }
        }
        match self.status.lock().state.clone() {
            DownloadState::Done(path) => Ok(path),
            DownloadState::Failed(reason) => Err(reason),
            other => Err(format!("ended while {other:?}")),
        }
    }

    /// Asks the download to stop (it fails with "cancelled").
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether it was told to stop ([`Download::cancel`]).
    pub fn was_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// What the user can change while a download runs.
#[derive(Clone, Copy)]
struct Controls<'a> {
    /// Set to cancel the download (see [`Download::cancel`]).
    cancel: &'a AtomicBool,
    /// See [`Download::focus_on`].
    focus: &'a AtomicU64,
}

/// The whole download; `Err` is a sentence for the user. Three cases:
/// the file is held here complete ([`deliver_held`]); pieces of it are
/// here (a download that stopped: carried on); or none are (a fresh
/// download: manifest, `.part` file, [`prepare`]). The last two end in
/// [`fetch_and_finish`], unless the file is under its final name already.
fn run(
    context: &DownloadContext,
    plan: &DownloadPlan,
    status: &Mutex<DownloadStatus>,
    controls: Controls<'_>,
) -> Result<PathBuf, String> {
    let cancel = controls.cancel;
    let name = plan.name.as_str();
    let key = plan.key;
    // A shared file found changed on disk is no copy of this file: as if
    // it were not here.
    let mut here = context.library.get(&key).filter(|f| !f.has_changed());
    if here.as_ref().is_some_and(|f| {
        forget_if_part_gone(&context.library, &context.resume, &context.tracker, f)
    }) {
        here = None;
    }
    if let Some(file) = here.as_ref().filter(|f| f.is_offered()) {
        match deliver_held(context, plan, status, file, cancel) {
            Some(delivered) => return delivered,
            None => here = None,
        }
    }
    let (shared, peers) = match here {
        // Pieces of it are already here (a download that stopped, or a
        // partial copy put in the library): carry on from them.
        Some(file) => {
            info!(
                "{name}: continuing with {} of {} pieces",
                file.bitmap().count(),
                file.manifest.piece_count()
            );
            (file, find_peers(context, plan).unwrap_or_default())
        }
        None => {
            let peers = find_peers(context, plan)?;
            let final_path = plan.dir.join(portable_file_name(name));
            if final_path.exists() {
                let (manifest, _) = manifest_for(context, plan, peers, cancel)?;
                return already_here(context, plan, status, manifest, &final_path, cancel);
            }
            let mut peers = peers;
            (prepare(context, plan, &mut peers, cancel)?, peers)
        }
    };
    let part_path = shared.path();
    let final_path = part_path.with_file_name(portable_file_name(shared.name.as_str()));
    let in_place = || {
        already_here(
            context,
            plan,
            status,
            Manifest::clone(&shared.manifest),
            &final_path,
            cancel,
        )
    };
    if final_path.exists() {
        // Another file under the name (name taken), or a check that could
        // not end (a cancel, a read error): its own words either way.
        in_place()?;
        // A crash after the file got its final name, before the state was
        // forgotten: the .part file (or a second link to the same file) is
        // a leftover. The final file itself is never removed, whatever
        // path the unfinished download was listed at.
        if part_path != final_path {
            let _ = fs::remove_file(&part_path);
        }
        context.resume.forget(&key);
        return Ok(final_path);
    }
    fetch_and_finish(context, plan, status, controls, &shared, peers, &final_path)
}

/// A download of a file held here already, complete: done where it is, or
/// copied to where it is asked for. `None` when the held file turns out to
/// be gone or changed: it is withdrawn, and the file is to be fetched anew.
fn deliver_held(
    context: &DownloadContext,
    plan: &DownloadPlan,
    status: &Mutex<DownloadStatus>,
    file: &SharedFile,
    cancel: &AtomicBool,
) -> Option<Result<PathBuf, String>> {
    {
        let mut status = status.lock();
        status.size = file.manifest.size();
        status.state = DownloadState::Finishing;
    }
    let sync = context.settings.sync_on_finish;
    match held::deliver(file, &context.library, &plan.dir, &plan.name, sync, cancel) {
        Ok(path) => {
            status.lock().have = file.bitmap();
            Some(Ok(path))
        }
        Err(held::Undelivered::Failed(reason)) => Some(Err(reason)),
        Err(held::Undelivered::HeldGone(reason)) => {
            warn!(
                "{}: {reason}; fetching it from the swarm",
                plan.name.as_str()
            );
            file.withdraw_changed();
            context.tracker.withdraw_soon(plan.key);
            status.lock().state = DownloadState::Starting;
            None
        }
    }
}

/// Fetches the missing pieces of `shared` from `peers` (and whoever else
/// turns up), then gives the file its final name and offers it. On a
/// failure the verified pieces stay, for a later download to go on from.
fn fetch_and_finish(
    context: &DownloadContext,
    plan: &DownloadPlan,
    status: &Mutex<DownloadStatus>,
    controls: Controls<'_>,
    shared: &Arc<SharedFile>,
    peers: Vec<PeerId>,
    final_path: &Path,
) -> Result<PathBuf, String> {
    // (Checked when the download began, unless it began before the check.)
    readable_bitmaps(&shared.manifest)?;
    let key = plan.key;
    {
        let mut status = status.lock();
        status.size = shared.manifest.size();
        status.have = shared.bitmap();
        status.state = DownloadState::Fetching;
    }

    context.discovery.want(key);
    let fetched = Coordinator::new(context, plan, shared, status, controls, peers)
        .run()
        .and_then(|()| {
            status.lock().state = DownloadState::Finishing;
            flush_if_asked(shared, context.settings.sync_on_finish)
        });
    context.discovery.forget(&key);
    let renamed = fetched.and_then(|()| match shared.finish(final_path) {
        Ok(()) => Ok(Shared::On),
        Err(FinishError::NotReopened(e)) => {
            // Complete and verified under its name, just not shared by
            // this run: it leaves the library (it is no download any
            // more) and the tracker's list.
            warn!("{}: {e}", plan.name.as_str());
            if context.library.remove_if_same(shared) {
                context.tracker.withdraw_soon(key);
            }
            Ok(Shared::Not)
        }
        // A file put under the name while the download ran.
        Err(FinishError::NotRenamed(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(name_taken(final_path))
        }
        Err(FinishError::NotRenamed(e)) => Err(e.to_string()),
    });
    match renamed {
        Ok(shared_on) => {
            // The new name on the disk too, not only the data under it.
            if context.settings.sync_on_finish {
                sync_parent_dir(final_path);
            }
            if shared_on == Shared::On {
                offer_finished(context, shared, final_path);
            }
        }
        // The .part file is gone (deleted or moved): so are its pieces,
        // and a later download starts over.
        Err(reason)
            if forget_if_part_gone(&context.library, &context.resume, &context.tracker, shared) =>
        {
            return Err(reason)
        }
        Err(reason) => {
            // The verified pieces stay: in the .part file, in the saved
            // state (a later download of the same file, or a restart, goes
            // on from them) and in the library (they are still served).
            save_progress(context, shared, &mut false);
            return Err(reason);
        }
    }
    context.resume.forget(&key);
    Ok(final_path.to_path_buf())
}

/// Whether a finished download is shared on under its final name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    On,
    /// It could not be opened again after its rename.
    Not,
}

/// Forgets an unfinished download whose `.part` file was deleted, moved or
/// replaced since: its pieces went with it, so it leaves the library (unless
/// another file of that key took its place), its state and the tracker's
/// list, and a new download of the file starts over. Returns whether it
/// did. A `.part` file whose whole folder is away (a disk not mounted:
/// [`SharedFile::folder_away`]) is not taken for gone.
pub(super) fn forget_if_part_gone(
    library: &Library,
    resume: &ResumeStore,
    tracker: &TrackerClient,
    file: &Arc<SharedFile>,
) -> bool {
    let part = file.path();
    if !file.is_unfinished() || file.folder_away() || file.is_still_at_its_path() {
        return false;
    }
    // Looked at again, and taken out, with the file's state held: a
    // download that finished while the look above was under way (a slow
    // disk's look may take seconds) renamed its `.part` file, and is no
    // download to drop.
    let removed = file.if_unfinished_at(&part, || library.remove_if_same(file));
    if removed.is_none() {
        return false;
    }
    warn!(
        "{}: {} is gone or was replaced, and its pieces with it: the download is dropped \
         (a new one starts over)",
        file.name.as_str(),
        part.display()
    );
    if removed == Some(true) {
        tracker.withdraw_soon(file.key);
    }
    resume.forget(&file.key);
    true
}

/// Why a download does not go under `path`: another file is there, and
/// it is never replaced.
pub(super) fn name_taken(path: &Path) -> String {
    format!(
        "{} already exists; move it away or choose another directory",
        path.display()
    )
}

/// The name of the `.part` file a download of `saved_as` is written
/// into: `<saved_as>.part`, the name cut (at a character) so that it
/// stays within the 255 bytes most file systems allow.
pub(super) fn part_file_name(saved_as: &str) -> String {
    const SUFFIX: &str = ".part";
    format!(
        "{}{SUFFIX}",
        cut_to(saved_as, MAX_NAME_BYTES - SUFFIX.len())
    )
}

/// The file is already under its final name: if it is the right file (its
/// size and SHA-256 match the manifest), it is shared, the download is
/// done (`status` says how big, and whole); any other file there is left
/// alone and the download refused.
/// Checking it stops once `cancel` is set.
fn already_here(
    context: &DownloadContext,
    plan: &DownloadPlan,
    status: &Mutex<DownloadStatus>,
    manifest: Manifest,
    path: &Path,
    cancel: &AtomicBool,
) -> Result<PathBuf, String> {
    let failed = |e: io::Error| format!("{}: {e}", path.display());
    // Looked at before it is opened: opening a FIFO would wait.
    if !path.is_file() {
        return Err(name_taken(path));
    }
    // Opened once, hashed through that handle and then shared through it:
    // a change while it is hashed is seen.
    let opened = PieceFile::open(path).map_err(failed)?;
    if !held::is_a_copy(opened.as_file(), &manifest, cancel).map_err(failed)? {
        return Err(name_taken(path));
    }
    info!(
        "{}: already here, verified, at {}",
        plan.name.as_str(),
        path.display()
    );
    let shared = SharedFile::complete(plan.name.clone(), plan.kind, manifest, path, opened)
        .map_err(failed)?;
    {
        let mut status = status.lock();
        status.size = shared.manifest.size();
        status.have = shared.bitmap();
    }
    context.library.insert(Arc::new(shared));
    if let Some(shared) = context.library.get(&plan.key) {
        offer_finished(context, &shared, path);
    }
    Ok(path.to_path_buf())
}

/// Fetches the manifest, creates the `.part` file and puts it in the
/// library (so its pieces are served as they arrive). The peer that gave
/// the manifest is put first in `peers`: it holds the file, and it may
/// have come from a later look-up than `peers` (see [`fetch_manifest`]).
fn prepare(
    context: &DownloadContext,
    plan: &DownloadPlan,
    peers: &mut Vec<PeerId>,
    cancel: &AtomicBool,
) -> Result<Arc<SharedFile>, String> {
    let name = plan.name.as_str();
    let saved_as = portable_file_name(name);
    let final_path = plan.dir.join(&saved_as);
    if final_path.exists() {
        return Err(name_taken(&final_path));
    }
    // The saved state (see `resume`) holds the `.part` file's path as UTF-8.
    if plan.dir.to_str().is_none() {
        return Err(format!(
            "cannot download into {}: its path is not valid UTF-8, which a download's \
             saved state cannot hold; choose another folder",
            plan.dir.display()
        ));
    }
    let (manifest, first) = manifest_for(context, plan, peers.clone(), cancel)?;
    peers.retain(|peer| *peer != first);
    peers.insert(0, first);
    info!(
        "{name}: manifest from {first}: {} bytes in {} pieces",
        manifest.size(),
        manifest.piece_count()
    );
    // Before any file is made for it.
    readable_bitmaps(&manifest)?;
    fs::create_dir_all(&plan.dir)
        .map_err(|e| format!("cannot create {}: {e}", plan.dir.display()))?;
    // (The folder is absolute, see `Peer::start_download`: the saved state
    // still finds the .part when the peer starts again elsewhere.)
    let part_path = plan.dir.join(part_file_name(&saved_as));
    // Held until the file is in the library (the end of this function).
    let _claim = context
        .library
        .claim_part(&part_path, plan.key, &plan.name)
        .map_err(|(key, other)| {
            orphan::held_by_another_download(&part_path, &plan.name, key, &other)
        })?;
    let shared = if part_path.exists() {
        orphan::take_up(context, plan, manifest, &part_path, cancel)?
    } else {
        room_for(&plan.dir, manifest.size()).map_err(|why| format!("no room for {name}: {why}"))?;
        // Never truncate a file that is there: another download, or the user's.
        match PieceFile::create_new(&part_path, manifest.size()) {
            Ok(part) => {
                // Held while this peer writes it, so that another peer (on
                // the same state folder, or finding it with no record)
                // leaves it alone. One that found it in the moment before
                // and holds it now keeps it.
                if let Ok(false) = part.try_lock() {
                    return Err(orphan::being_written(&part_path));
                }
                // Recorded once the file is this peer's: a crash before
                // leaves a .part file with no record, which the next
                // download of the file takes up.
                if let Err(e) = context
                    .resume
                    .begin(&plan.name, plan.kind, &part_path, &manifest)
                {
                    drop(part);
                    let _ = fs::remove_file(&part_path);
                    return Err(format!(
                        "cannot save the download's state in {}: {e}",
                        context.resume.folder().display()
                    ));
                }
                let pieces = manifest.piece_count();
                SharedFile::partial(
                    plan.name.clone(),
                    plan.kind,
                    manifest,
                    &part_path,
                    part,
                    Bitmap::empty(pieces),
                )
            }
            // Made meanwhile (another peer downloading into this folder),
            // or a link to nowhere: looked at as any file found there.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                orphan::take_up(context, plan, manifest, &part_path, cancel)?
            }
            Err(e) => return Err(format!("cannot create {}: {e}", part_path.display())),
        }
    };
    let shared = Arc::new(shared);
    context.library.insert(Arc::clone(&shared));
    Ok(shared)
}

/// Saves which pieces are verified, so that a restart goes on from them.
/// The data is not flushed first (that would stall the download for as
/// long as the disk takes): a restart checks every piece the state claims
/// (see [`ResumeStore::load`]).
///
/// A failure is warned about once while it lasts (`failing` remembers
/// it): a full disk would otherwise be told every second.
fn save_progress(context: &DownloadContext, shared: &SharedFile, failing: &mut bool) {
    let name = shared.name.as_str();
    match context.resume.save(&shared.key, &shared.bitmap()) {
        Ok(()) if std::mem::take(failing) => info!("{name}: progress saved again"),
        Ok(()) => {}
        Err(e) if *failing => debug!("{name}: still cannot save progress: {e}"),
        Err(e) => {
            *failing = true;
            warn!(
                "{name}: cannot save progress: {e} (a restart checks every piece of {} instead)",
                shared.path().display()
            );
        }
    }
}

/// The peers to start with.
fn find_peers(context: &DownloadContext, plan: &DownloadPlan) -> Result<Vec<PeerId>, String> {
    if let Some(peer) = plan.only_from {
        return Ok(vec![peer]);
    }
    let mut peers: Vec<PeerId> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    match context.tracker.holders(plan.key) {
        Ok(holders) => peers.extend(holders.into_iter().map(|h| h.peer)),
        Err(e) => failures.push(format!("cannot ask the tracker for peers: {e}")),
    }
    if let Some(ring) = &context.ring {
        match ring.holders(plan.key) {
            Ok(holders) => peers.extend(
                holders
                    .into_iter()
                    .filter(|p| !peers.contains(p))
                    .collect::<Vec<_>>(),
            ),
            Err(e) => failures.push(format!("cannot ask the ring for peers: {e}")),
        }
    }
    let every_source_failed = failures.len() == 1 + usize::from(context.ring.is_some());
    if every_source_failed {
        return Err(failures.join("; "));
    }
    if peers.is_empty() {
        return Err(format!(
            "no peer holds {} ({})",
            plan.name.as_str(),
            plan.key
        ));
    }
    Ok(peers)
}

/// The manifest of `plan`'s file from the first of `peers` that gives a
/// good one, the peers looked up again as needed, within the stall
/// timeout (see [`fetch_manifest`]).
fn manifest_for(
    context: &DownloadContext,
    plan: &DownloadPlan,
    peers: Vec<PeerId>,
    cancel: &AtomicBool,
) -> Result<(Manifest, PeerId), String> {
    fetch_manifest(
        plan.key,
        peers,
        || find_peers(context, plan).unwrap_or_default(),
        cancel,
        context.settings.stall_timeout,
    )
}

/// Whether a download of `manifest`'s file can read its peers' BufferMaps:
/// a file of more than [`MAX_BITMAP_PIECES`] pieces cannot (this peer
/// shares files in at most 32,000 pieces up to 500 GiB, and past 261,632
/// pieces only over 4 TiB; another program may cut a 4 GiB file so).
fn readable_bitmaps(manifest: &Manifest) -> Result<(), String> {
    let pieces = manifest.piece_count();
    if pieces > MAX_BITMAP_PIECES {
        return Err(format!(
            "the file has {pieces} pieces; this peer reads BufferMaps of at most {MAX_BITMAP_PIECES} pieces (a file shared with larger pieces can be downloaded)"
        ));
    }
    Ok(())
}

/// Flushes the finished file to disk when the settings ask for it, so that
/// a power cut after the rename cannot leave a damaged file under the
/// final name.
fn flush_if_asked(shared: &SharedFile, sync: bool) -> Result<(), String> {
    if sync {
        shared
            .sync()
            .map_err(|e| format!("cannot flush {}: {e}", shared.path().display()))?;
    }
    Ok(())
}

/// Offers the finished file to the tracker (the course's automatic
/// re-register), without waiting for the tracker.
fn offer_finished(context: &DownloadContext, shared: &SharedFile, path: &Path) {
    let shown = dunce::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(path) = SharedPath::new(&shown.to_string_lossy()) else {
        warn!("{}: path not offerable", shown.display());
        return;
    };
    let offer = FileOffer {
        key: shared.key,
        name: shared.name.clone(),
        size: shared.manifest.size(),
        piece_size: shared.manifest.piece_size(),
        kind: shared.kind,
        path,
    };
    // Queued: the housekeeping thread sends it at once if the tracker can
    // be reached, and a new session announces it anyway.
    context.tracker.offer_soon(&offer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_file_name_stays_within_255_bytes() {
        assert_eq!(part_file_name("song.mp3"), "song.mp3.part");
        let long = "a".repeat(253);
        assert_eq!(part_file_name(&long).len(), 255);
        // Cut at a character, never inside one (é is two bytes).
        let accented = "é".repeat(127);
        let name = part_file_name(&accented);
        assert!(name.len() <= 255 && name.ends_with("é.part"), "{name}");
    }

    /// A manifest of `pieces` pieces of 16 KiB (the hashes made up).
    fn manifest_of(pieces: usize) -> Manifest {
        use std::fmt::Write as _;
        let piece_size = 16 * 1024;
        let mut text = format!(
            "swarmline-manifest 1\nsize {}\npiece-size {piece_size}\nsha256 {}\npieces {pieces}\n",
            pieces * piece_size,
            "0".repeat(64)
        );
        for i in 0..pieces {
            writeln!(text, "piece {i:064x}").unwrap();
        }
        Manifest::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_file_whose_buffermap_a_link_cannot_read_is_refused_with_the_reason() {
        assert!(readable_bitmaps(&manifest_of(MAX_BITMAP_PIECES)).is_ok());
        let reason = readable_bitmaps(&manifest_of(MAX_BITMAP_PIECES + 1)).unwrap_err();
        assert!(
            reason.starts_with(&format!("the file has {} pieces", MAX_BITMAP_PIECES + 1)),
            "{reason}"
        );
    }
}
