//! One download, from a key to a verified file under its final name.
//!
//! 1. Ask the tracker for the file's peers (or use the one peer given).
//! 2. Fetch the manifest from one of them and check it hashes to the key.
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
//!    writes the good ones at their offset.
//! 5. Every BufferMap interval BufferMaps are exchanged again, and the
//!    peers that the peer's housekeeping thread found at the tracker
//!    ([`Discovery`]) join; that thread also reports the progress (`BITF`).
//!    The download itself never waits on the tracker.
//! 6. A neighbour that fails (connection lost, timeout, killed) is dropped
//!    and its pieces go to the others (and it is tried again later); one
//!    that sends bad pieces or breaks the protocol is disconnected, and
//!    banned for the rest of the download after `max_bad_pieces` of those. With no piece coming and none to ask for
//!    during the stall timeout, the download fails and says which pieces no
//!    live peer has.
//! 7. All pieces in (each one checked against the manifest, which is
//!    checked against the key, so the whole file is): the file is flushed
//!    to disk (`sync_on_finish`), renamed to its final name, and offered to
//!    the tracker (`ADDF`). It is not read back: a second SHA-256 pass over
//!    the whole file would double the work per byte and prove nothing the
//!    piece checks have not.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex};

use crate::pieces::{Bitmap, Manifest, PieceFile};
use crate::protocol::{FileKey, FileName, FileOffer, MediaKind, PeerId, PeerRequest, SharedPath};

use super::discovery::Discovery;
use super::fsutil::{portable_file_name, sha256_of_file};
use super::library::{Library, SharedFile};
use super::link::{LinkCloser, LinkError, PeerLink, PieceAnswer, MIN_PIECE_RATE};
use super::ratelimit::RateLimiter;
use super::resume::ResumeStore;
use super::tracker_client::TrackerClient;

mod in_flight;
mod rarity;
mod speed;

use in_flight::InFlight;
use rarity::{sample_rarest, Rarity};
use speed::{Speed, Tally};

/// How many peers may be asked for the same piece in the endgame.
const ENDGAME_COPIES: usize = 2;
/// Failed exchanges in a row (no piece between them) after which a
/// neighbour is given up for the rest of the download.
const MAX_FAILURES: u32 = 4;

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
    manifest_link: Arc<Mutex<Option<LinkCloser>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What a download needs from its peer.
#[derive(Clone)]
pub struct DownloadContext {
    /// The link the manifest is being fetched on, so that cancelling
    /// closes it at once.
    pub manifest_link: Arc<Mutex<Option<LinkCloser>>>,
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

/// How often each neighbour's throughput is sampled.
const SPEED_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often a download's progress is saved for a restart.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Time allowed for any batch of pieces, on top of the time the bytes take
/// at [`MIN_PIECE_RATE`].
const BATCH_ALLOWANCE: Duration = Duration::from_secs(60);

impl Download {
    /// Starts downloading on a new thread named `download-<name>`.
    pub fn start(context: DownloadContext, plan: DownloadPlan) -> io::Result<Arc<Download>> {
        let status = Arc::new(Mutex::new(DownloadStatus {
            key: plan.key,
            name: plan.name.as_str().to_string(),
            kind: plan.kind,
            size: 0,
            state: DownloadState::Starting,
            elapsed: Duration::ZERO,
            sources: Vec::new(),
            have: Bitmap::empty(0),
            in_flight: Vec::new(),
        }));
        let cancel = Arc::new(AtomicBool::new(false));
        let focus = Arc::new(AtomicU64::new(NO_FOCUS));
        let ended = Arc::new(Condvar::new());
        let manifest_link = Arc::clone(&context.manifest_link);
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
            manifest_link,
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
        if let Some(link) = self.manifest_link.lock().take() {
            link.close();
        }
    }
}

/// What the user can change while a download runs.
#[derive(Clone, Copy)]
struct Controls<'a> {
    cancel: &'a AtomicBool,
    /// See [`Download::focus_on`].
    focus: &'a AtomicU64,
}

/// The whole download; `Err` is a sentence for the user.
fn run(
    context: &DownloadContext,
    plan: &DownloadPlan,
    status: &Mutex<DownloadStatus>,
    controls: Controls<'_>,
) -> Result<PathBuf, String> {
    let cancel = controls.cancel;
    let name = plan.name.as_str();
    let key = plan.key;
    let (shared, peers) = match context.library.get(&key) {
        Some(file) if file.is_offered() => {
            return Err(format!(
                "{name} ({key}) is already here, at {}",
                file.path().display()
            ))
        }
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
                let (manifest, _) =
                    fetch_manifest(plan.key, &peers, cancel, &context.manifest_link)?;
                return already_here(context, plan, manifest, &final_path);
            }
            (prepare(context, plan, &peers, cancel)?, peers)
        }
    };
    let part_path = shared.path();
    let final_path = part_path.with_file_name(portable_file_name(shared.name.as_str()));
    let in_place = || {
        already_here(
            context,
            plan,
            Manifest::clone(&shared.manifest),
            &final_path,
        )
    };
    if final_path.exists() && in_place().is_ok() {
        // A crash after the file got its final name, before the state was
        // forgotten: the .part file (or a second link to the same file) is
        // a leftover.
        let _ = fs::remove_file(&part_path);
        context.resume.forget(&key);
        return Ok(final_path);
    }
    if final_path.exists() {
        return Err(format!(
            "{} already exists; move it away or choose another directory",
            final_path.display()
        ));
    }
    {
        let mut status = status.lock();
        status.size = shared.manifest.size();
        status.have = shared.bitmap();
        status.state = DownloadState::Fetching;
    }

    context.discovery.want(key);
    let result = Coordinator::new(context, plan, &shared, status, controls, peers)
        .run()
        .and_then(|()| {
            status.lock().state = DownloadState::Finishing;
            flush_if_asked(&shared, context.settings.sync_on_finish)
        })
        .and_then(|()| {
            shared.finish(&final_path).map_err(|e| {
                format!(
                    "cannot rename {} to {}: {e}",
                    part_path.display(),
                    final_path.display()
                )
            })
        });
    context.discovery.forget(&key);
    if let Err(reason) = result {
        // The verified pieces stay: in the .part file, in the saved state
        // (a later download of the same file, or a restart, goes on from
        // them) and in the library (they are still served).
        save_progress(context, &shared);
        return Err(reason);
    }
    context.resume.forget(&key);
    offer_finished(context, &shared, &final_path);
    Ok(final_path)
}

/// The file is already under its final name: if it is the right file (its
/// size and SHA-256 match the manifest), it is shared and the download is
/// done; any other file there is left alone and the download refused.
fn already_here(
    context: &DownloadContext,
    plan: &DownloadPlan,
    manifest: Manifest,
    path: &Path,
) -> Result<PathBuf, String> {
    let refused = || {
        format!(
            "{} already exists; move it away or choose another directory",
            path.display()
        )
    };
    let size = fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size != manifest.size() {
        return Err(refused());
    }
    let hash = sha256_of_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if hash != manifest.file_hash() {
        return Err(refused());
    }
    info!(
        "{}: already here, verified, at {}",
        plan.name.as_str(),
        path.display()
    );
    let shared = SharedFile::complete(plan.name.clone(), plan.kind, manifest, path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    context.library.insert(Arc::new(shared));
    if let Some(shared) = context.library.get(&plan.key) {
        offer_finished(context, &shared, path);
    }
    Ok(path.to_path_buf())
}

/// Fetches the manifest, creates the `.part` file and puts it in the
/// library (so its pieces are served as they arrive).
fn prepare(
    context: &DownloadContext,
    plan: &DownloadPlan,
    peers: &[PeerId],
    cancel: &AtomicBool,
) -> Result<Arc<SharedFile>, String> {
    let name = plan.name.as_str();
    let saved_as = portable_file_name(name);
    let final_path = plan.dir.join(&saved_as);
    if final_path.exists() {
        return Err(format!(
            "{} already exists; move it away or choose another directory",
            final_path.display()
        ));
    }
    let (manifest, first) = fetch_manifest(plan.key, peers, cancel, &context.manifest_link)?;
    info!(
        "{name}: manifest from {first}: {} bytes in {} pieces",
        manifest.size(),
        manifest.piece_count()
    );
    fs::create_dir_all(&plan.dir)
        .map_err(|e| format!("cannot create {}: {e}", plan.dir.display()))?;
    let part_path = plan.dir.join(format!("{saved_as}.part"));
    let exists = || {
        format!(
            "{} already exists (another download of a file with this name?)",
            part_path.display()
        )
    };
    if part_path.exists() {
        return Err(exists());
    }
    // The state is recorded before the .part file is made: a crash in
    // between leaves a state whose .part is missing, which a restart
    // forgets, never a .part file that nothing knows about.
    context
        .resume
        .begin(&plan.name, plan.kind, &part_path, &manifest)
        .map_err(|e| format!("cannot save the download's state: {e}"))?;
    // Never truncate a file that is there: another download, or the user's.
    let part = PieceFile::create_new(&part_path, manifest.size()).map_err(|e| {
        context.resume.forget(&plan.key);
        if e.kind() == io::ErrorKind::AlreadyExists {
            exists()
        } else {
            format!("cannot create {}: {e}", part_path.display())
        }
    })?;
    let pieces = manifest.piece_count();
    let shared = Arc::new(SharedFile::partial(
        plan.name.clone(),
        plan.kind,
        manifest,
        &part_path,
        part,
        Bitmap::empty(pieces),
    ));
    context.library.insert(Arc::clone(&shared));
    Ok(shared)
}

/// Saves which pieces are verified, so that a restart goes on from them.
/// The data is not flushed first (that would stall the download for as
/// long as the disk takes): a restart checks every piece the state claims
/// (see [`ResumeStore::load`]).
fn save_progress(context: &DownloadContext, shared: &SharedFile) {
    let held = shared.bitmap();
    if let Err(e) = context.resume.save(&shared.key, &held) {
        warn!("{}: cannot save progress: {e}", shared.name.as_str());
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

/// The manifest from the first peer that gives a good one.
fn fetch_manifest(
    key: FileKey,
    peers: &[PeerId],
    cancel: &AtomicBool,
    slot: &Mutex<Option<LinkCloser>>,
) -> Result<(Manifest, PeerId), String> {
    let mut last_error = String::new();
    for &peer in peers {
        if cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        let result = PeerLink::connect(peer)
            .map_err(LinkError::from)
            .and_then(|mut link| {
                // Published so that a cancel can close it; a cancel that came
                // first is seen here.
                *slot.lock() = Some(link.closer()?);
                if cancel.load(Ordering::SeqCst) {
                    return Err(LinkError::Io(io::Error::other("cancelled")));
                }
                link.manifest(key)
            });
        *slot.lock() = None;
        match result {
            Ok(manifest) => return Ok((manifest, peer)),
            Err(e) => {
                debug!("manifest of {key} from {peer}: {e}");
                last_error = format!("{peer}: {e}");
            }
        }
    }
    Err(format!(
        "could not get a valid manifest from any of {} peer(s) (last: {last_error})",
        peers.len()
    ))
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
    let shown = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
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

// ---------------------------------------------------------------------------
// The coordinator and its workers

/// Which connection a job runs on: a neighbour, and one of its lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    neighbour: usize,
    lane: usize,
}

/// Work for a worker thread.
enum Job {
    /// Fetch these pieces from this neighbour.
    Fetch {
        at: Place,
        link: Arc<LinkSlot>,
        peer: PeerId,
        indices: Vec<u32>,
        /// The neighbour's counters (see [`Speed`]).
        tally: Arc<Tally>,
    },
    /// Exchange BufferMaps with this neighbour.
    Bitmap {
        at: Place,
        link: Arc<LinkSlot>,
        peer: PeerId,
    },
}

/// What a worker reports back.
enum Outcome {
    Fetched {
        at: Place,
        /// The pieces the job asked for.
        asked: Vec<u32>,
        pieces: Vec<(u32, PieceResult)>,
        /// Time from the request to the first answer.
        latency: Option<Duration>,
        /// The connection failed or the peer misbehaved after these pieces.
        error: Option<LinkError>,
        /// Writing to our own disk failed: the download cannot go on.
        disk_error: Option<io::Error>,
    },
    Bitmap {
        at: Place,
        result: Result<Bitmap, LinkError>,
    },
}

/// What became of one requested piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceResult {
    /// Verified and written.
    Stored,
    /// The neighbour said it does not have it.
    Missing,
    /// Its hash did not match: thrown away.
    Corrupt,
    /// Already here (an endgame duplicate): thrown away.
    Duplicate,
}

/// A neighbour's connection: the link a worker uses, and a closer the
/// coordinator can use while a worker is blocked on the link.
#[derive(Default)]
struct LinkSlot {
    link: Mutex<Option<PeerLink>>,
    closer: Mutex<Closer>,
}

/// The closer of a slot's current link, and whether the slot is closed.
#[derive(Default)]
struct Closer {
    current: Option<LinkCloser>,
    /// Set when the download ends: no new link may be opened any more (a
    /// worker that takes a job left in the queue must not connect again).
    closed: bool,
}

impl LinkSlot {
    /// Closes the connection, waking a worker blocked on it.
    fn close(&self) {
        if let Some(closer) = self.closer.lock().current.take() {
            closer.close();
        }
    }

    /// Closes the connection for good: no new one may be opened.
    fn close_for_good(&self) {
        let mut closer = self.closer.lock();
        closer.closed = true;
        if let Some(current) = closer.current.take() {
            current.close();
        }
    }
}

/// One connection to a neighbour, and whether a worker is using it.
struct Lane {
    link: Arc<LinkSlot>,
    busy: bool,
}

/// One neighbour, from the coordinator's point of view.
struct Neighbour {
    peer: PeerId,
    /// Its connections (`lanes_per_peer` of them), each used by one worker
    /// at a time: pieces of one neighbour are fetched, checked and written
    /// on several cores at once.
    lanes: Vec<Lane>,
    /// Its BufferMap, less the pieces it failed to give.
    bitmap: Bitmap,
    /// Pieces it answered as missing or sent bad: never asked of it again,
    /// whatever its next BufferMaps claim.
    refused: HashSet<u32>,
    /// When its BufferMap was last asked for (`None`: never).
    bitmap_at: Option<Instant>,
    strikes: u32,
    /// Its throughput and latency.
    speed: Speed,
    /// Pieces asked of it and not answered yet.
    asked: usize,
    dropped: Option<String>,
    /// When it was dropped, and whether for good (banned).
    dropped_at: Option<Instant>,
    banned: bool,
    /// Failed exchanges since the last piece it gave: each doubles the
    /// pause before it is tried again, and [`MAX_FAILURES`] give it up.
    failures: u32,
}

struct Coordinator<'a> {
    context: &'a DownloadContext,
    plan: &'a DownloadPlan,
    shared: &'a Arc<SharedFile>,
    status: &'a Mutex<DownloadStatus>,
    controls: Controls<'a>,
    neighbours: Vec<Neighbour>,
    /// The pieces verified here so far.
    have: Bitmap,
    /// Pieces asked for, and from which neighbours.
    in_flight: InFlight,
    /// How many live neighbours hold each piece.
    rarity: Rarity,
    rng: fastrand::Rng,
}

impl<'a> Coordinator<'a> {
    fn new(
        context: &'a DownloadContext,
        plan: &'a DownloadPlan,
        shared: &'a Arc<SharedFile>,
        status: &'a Mutex<DownloadStatus>,
        controls: Controls<'a>,
        peers: Vec<PeerId>,
    ) -> Coordinator<'a> {
        let pieces = shared.manifest.piece_count();
        let mut coordinator = Coordinator {
            context,
            plan,
            shared,
            status,
            controls,
            neighbours: Vec::new(),
            have: shared.bitmap(),
            in_flight: InFlight::new(pieces),
            rarity: Rarity::new(pieces),
            rng: fastrand::Rng::new(),
        };
        for peer in peers {
            coordinator.add_neighbour(peer, pieces);
        }
        coordinator
    }

    fn add_neighbour(&mut self, peer: PeerId, pieces: usize) {
        if self.neighbours.iter().any(|n| n.peer == peer) {
            return;
        }
        debug!("{}: new neighbour {peer}", self.plan.name.as_str());
        self.neighbours.push(Neighbour {
            peer,
            lanes: (0..self.context.settings.lanes_per_peer.max(1))
                .map(|_| Lane {
                    link: Arc::new(LinkSlot::default()),
                    busy: false,
                })
                .collect(),
            bitmap: Bitmap::empty(pieces),
            refused: HashSet::new(),
            bitmap_at: None,
            strikes: 0,
            speed: Speed::default(),
            asked: 0,
            dropped: None,
            dropped_at: None,
            banned: false,
            failures: 0,
        });
    }

    /// Runs the pool until every piece is here, or the download fails.
    fn run(mut self) -> Result<(), String> {
        let settings = &self.context.settings;
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (outcome_tx, outcome_rx) = crossbeam_channel::unbounded::<Outcome>();
        let mut workers = Vec::with_capacity(settings.pool_size);
        for i in 0..settings.pool_size {
            let worker = Worker {
                shared: Arc::clone(self.shared),
                limit: Arc::clone(&self.context.download_limit),
                jobs: job_rx.clone(),
                outcomes: outcome_tx.clone(),
            };
            let spawned = thread::Builder::new()
                .name(format!("fetch-{}-{i}", self.plan.name.as_str()))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) if workers.is_empty() => {
                    return Err(format!("cannot start a worker thread: {e}"))
                }
                Err(e) => warn!("pool smaller than configured: {e}"),
            }
        }
        drop((job_rx, outcome_tx));
        let result = self.coordinate(&job_tx, &outcome_rx);
        // (Published every SPEED_SAMPLE_INTERVAL meanwhile; now as it ends.)
        self.publish();
        // Closing the job channel ends idle workers; closing every link
        // wakes those still blocked on a slow or silent peer. Then join.
        drop(job_tx);
        for lane in self.neighbours.iter().flat_map(|n| &n.lanes) {
            lane.link.close_for_good();
        }
        for worker in workers {
            let _ = worker.join();
        }
        result
    }

    fn coordinate(
        &mut self,
        jobs: &Sender<Job>,
        outcomes: &Receiver<Outcome>,
    ) -> Result<(), String> {
        let interval = self.context.settings.bitmap_interval;
        let mut last_round = Instant::now();
        let mut last_sample = Instant::now();
        let mut last_save = (Instant::now(), self.have.count());
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.controls.cancel.load(Ordering::SeqCst) {
                return Err("cancelled".into());
            }
            if self.have.is_complete() {
                return Ok(());
            }
            if last_sample.elapsed() >= SPEED_SAMPLE_INTERVAL {
                last_sample = Instant::now();
                for n in &mut self.neighbours {
                    n.speed.sample(last_sample);
                }
                self.publish();
            }
            if last_round.elapsed() >= interval {
                last_round = Instant::now();
                self.periodic_round();
            }
            if last_save.0.elapsed() >= SAVE_INTERVAL && last_save.1 != self.have.count() {
                last_save = (Instant::now(), self.have.count());
                save_progress(self.context, self.shared);
            }
            self.assign(jobs);
            // Stalled: no piece asked for and none to ask (BufferMap
            // exchanges go on meanwhile, and may change that).
            if !self.in_flight.is_empty() {
                idle_since = None;
            } else {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.context.settings.stall_timeout {
                    return Err(self.stall_message());
                }
            }
            match outcomes.recv_timeout(interval.min(Duration::from_millis(250))) {
                Ok(outcome) => self.handle(outcome)?,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err("every worker thread stopped".into())
                }
            }
        }
    }

    /// Every BufferMap interval: take in the peers the housekeeping thread
    /// found, give dropped (not banned) neighbours another chance after a
    /// pause.
    fn periodic_round(&mut self) {
        let interval = self.context.settings.bitmap_interval;
        for n in &mut self.neighbours {
            // One interval after the first failure, doubling after each.
            let pause = (interval * 2u32.pow(n.failures.saturating_sub(1).min(6)))
                .min(Duration::from_secs(120));
            if !n.banned && n.dropped_at.is_some_and(|at| at.elapsed() >= pause) {
                debug!(
                    "{}: trying neighbour {} again",
                    self.plan.name.as_str(),
                    n.peer
                );
                n.dropped = None;
                n.dropped_at = None;
                n.bitmap_at = None;
                n.speed.reset_rate();
                self.rarity.mark_stale();
            }
        }
        // Progress reports and peer look-ups are the housekeeping thread's
        // job: here only what it found is read, without waiting.
        if self.plan.only_from.is_none() {
            let pieces = self.have.len();
            for peer in self.context.discovery.peers(&self.shared.key) {
                self.add_neighbour(peer, pieces);
            }
        }
    }

    /// Gives work to every idle lane of every live neighbour: its BufferMap
    /// when that is due, else the next pieces. Faster neighbours choose
    /// first, and each is asked for no more than it gives in half a second
    /// ([`Speed::allowance`]).
    fn assign(&mut self, jobs: &Sender<Job>) {
        let settings = &self.context.settings;
        let (interval, depth) = (settings.bitmap_interval, settings.queue_depth);
        let most = settings.lanes_per_peer.max(1) * depth;
        let piece_len = self.shared.manifest.piece_size();
        let live = self.neighbours.iter().filter(|n| n.dropped.is_none());
        self.rarity.refresh(live.map(|n| &n.bitmap), &self.have);
        // Whether any missing piece is not asked for yet (else: endgame).
        // Taken once per round: the next round sees the pieces assigned now.
        let fresh_left = self
            .have
            .missing()
            .any(|i| !self.in_flight.contains(i as u32));
        // Unmeasured neighbours first (to measure them), then the fastest.
        let mut order: Vec<usize> = (0..self.neighbours.len()).collect();
        let speed_of = |n: &Neighbour| n.speed.rate().unwrap_or(f64::INFINITY);
        order.sort_by(|&a, &b| {
            speed_of(&self.neighbours[b]).total_cmp(&speed_of(&self.neighbours[a]))
        });
        for id in order {
            for lane in 0..self.neighbours[id].lanes.len() {
                let n = &self.neighbours[id];
                if n.lanes[lane].busy || n.dropped.is_some() {
                    continue;
                }
                let at = Place {
                    neighbour: id,
                    lane,
                };
                let (link, peer) = (Arc::clone(&n.lanes[lane].link), n.peer);
                let job = if n.bitmap_at.is_none_or(|t| t.elapsed() >= interval) {
                    self.neighbours[id].bitmap_at = Some(Instant::now());
                    Job::Bitmap { at, link, peer }
                } else {
                    let room = n
                        .speed
                        .allowance(piece_len, depth, most)
                        .saturating_sub(n.asked)
                        .min(depth);
                    if room == 0 {
                        break;
                    }
                    let indices = self.pick(id, fresh_left, room);
                    if indices.is_empty() {
                        break;
                    }
                    for &index in &indices {
                        self.in_flight.add(index, id);
                    }
                    self.neighbours[id].asked += indices.len();
                    Job::Fetch {
                        at,
                        link,
                        peer,
                        indices,
                        tally: self.neighbours[id].speed.tally(),
                    }
                };
                self.neighbours[id].lanes[lane].busy = true;
                if jobs.send(job).is_err() {
                    return;
                }
            }
        }
    }

    /// The pieces a player needs next (see [`Download::focus_on`]).
    fn focus_window(&self) -> Option<std::ops::Range<u32>> {
        let focus = self.controls.focus.load(Ordering::Relaxed);
        let first = u32::try_from(focus).ok()?;
        Some(first..first.saturating_add(FOCUS_PIECES))
    }

    /// The next pieces (at most `room`) to ask neighbour `id` for:
    /// 1. the missing pieces of the focus window that it has, in order; one
    ///    already asked of a much slower neighbour is asked of this one too
    ///    (stolen), so that playback does not wait on a slow peer;
    /// 2. then the rarest missing pieces it has that nobody is fetching,
    ///    random among equally rare; or, in the endgame (everything missing
    ///    is being fetched), pieces another neighbour is fetching, as a
    ///    second copy.
    ///
    /// The rarest pieces are first sought by drawing pieces at random
    /// ([`sample_rarest`]); only when that finds too few is every missing
    /// piece listed.
    fn pick(&mut self, id: usize, fresh_left: bool, room: usize) -> Vec<u32> {
        let window = self.focus_window().unwrap_or(0..0);
        let pieces = self.have.len();
        let n = &self.neighbours[id];
        let wanted = |i: usize| i < pieces && !self.have.has(i) && n.bitmap.has(i);
        // (tier, then order within the tier, then a random tie-break, index)
        let mut candidates: Vec<(u8, u64, u64, u32)> = Vec::new();
        for index in window.clone().filter(|&i| wanted(i as usize)) {
            let askers = self.in_flight.askers(index);
            let take = askers.is_empty()
                || (askers.len() < ENDGAME_COPIES
                    && !askers.contains(&id)
                    && askers
                        .iter()
                        .all(|&a| self.neighbours[a].speed.is_much_slower_than(n.speed.rate())));
            if take {
                candidates.push((0, u64::from(index - window.start), 0, index));
            }
        }
        let outside = |i: u32| !window.contains(&i);
        let fresh = |i: usize| wanted(i) && !self.in_flight.contains(i as u32) && outside(i as u32);
        if fresh_left {
            let rarity = &self.rarity;
            let sampled = rarity.rarest().and_then(|rarest| {
                sample_rarest(&mut self.rng, pieces, room, |i| {
                    fresh(i) && rarity.of(i) == rarest
                })
                .map(|sampled| (u64::from(rarest), sampled))
            });
            match sampled {
                // No fresh piece is rarer than these: nothing else to see.
                Some((rarest, sampled)) => {
                    candidates.extend(sampled.into_iter().map(|index| (1, rarest, 0, index)));
                }
                None => {
                    for i in self.have.missing().filter(|&i| fresh(i)) {
                        let rarity = u64::from(rarity.of(i));
                        candidates.push((1, rarity, self.rng.u64(..), i as u32));
                    }
                }
            }
        } else {
            for (index, askers) in self.in_flight.iter() {
                if outside(index)
                    && wanted(index as usize)
                    && askers.len() < ENDGAME_COPIES
                    && !askers.contains(&id)
                {
                    let rarity = u64::from(self.rarity.of(index as usize));
                    candidates.push((1, rarity, self.rng.u64(..), index));
                }
            }
        }
        // Only the first `room` are wanted: select them, then sort those.
        if candidates.len() > room {
            candidates.select_nth_unstable(room);
            candidates.truncate(room);
        }
        candidates.sort_unstable();
        candidates.into_iter().map(|(.., i)| i).collect()
    }

    fn handle(&mut self, outcome: Outcome) -> Result<(), String> {
        match outcome {
            Outcome::Bitmap { at, result } => {
                let neighbour = at.neighbour;
                self.neighbours[neighbour].lanes[at.lane].busy = false;
                match result {
                    Ok(bitmap) => {
                        let n = &mut self.neighbours[neighbour];
                        n.bitmap = bitmap;
                        for &index in &n.refused {
                            n.bitmap.clear(index as usize);
                        }
                        self.rarity.mark_stale();
                    }
                    Err(e) => self.drop_neighbour(neighbour, e),
                }
            }
            Outcome::Fetched {
                at,
                asked,
                pieces,
                latency,
                error,
                disk_error,
            } => {
                let neighbour = at.neighbour;
                let n = &mut self.neighbours[neighbour];
                n.lanes[at.lane].busy = false;
                n.asked = n.asked.saturating_sub(asked.len());
                if let Some(latency) = latency {
                    n.speed.answered_after(latency, Instant::now());
                }
                for (index, result) in pieces {
                    self.settle(neighbour, index, result);
                }
                // Pieces asked for but not answered go back to the pool
                // (for the answered ones, settling did it already).
                for index in asked {
                    self.in_flight.remove(index, neighbour);
                }
                if let Some(e) = disk_error {
                    return Err(format!(
                        "cannot write to {}: {e}",
                        self.shared.path().display()
                    ));
                }
                if let Some(e) = error {
                    self.drop_neighbour(neighbour, e);
                }
            }
        }
        Ok(())
    }

    fn settle(&mut self, neighbour: usize, index: u32, result: PieceResult) {
        self.in_flight.remove(index, neighbour);
        let n = &mut self.neighbours[neighbour];
        match result {
            PieceResult::Stored => {
                n.failures = 0;
                self.have.set(index as usize);
            }
            // Here already: another worker stored it, and its own report
            // (at the end of its batch) may be still to come. Counted as
            // here now, or the endgame would ask for it again and again.
            PieceResult::Duplicate => self.have.set(index as usize),
            PieceResult::Missing => {
                n.refused.insert(index);
                n.bitmap.clear(index as usize);
                self.rarity.mark_stale();
            }
            PieceResult::Corrupt => {
                // Never ask it for this piece again: another peer must give it.
                n.refused.insert(index);
                n.bitmap.clear(index as usize);
                self.rarity.mark_stale();
                n.strikes += 1;
                let max = self.context.settings.max_bad_pieces;
                warn!(
                    "{}: piece {index} from {} failed its hash check ({} of {max} strikes)",
                    self.plan.name.as_str(),
                    n.peer,
                    n.strikes
                );
                if n.strikes >= max {
                    let reason = format!(
                        "banned: sent {} pieces that failed their hash check",
                        n.strikes
                    );
                    self.ban(neighbour, reason);
                }
            }
        }
    }

    /// Stops using a neighbour after a failed exchange: for good if it
    /// misbehaved, for a while if the connection failed.
    fn drop_neighbour(&mut self, neighbour: usize, error: LinkError) {
        match &error {
            LinkError::Misbehaved(what) => {
                let n = &mut self.neighbours[neighbour];
                n.strikes += 1;
                if n.strikes >= self.context.settings.max_bad_pieces {
                    self.ban(neighbour, format!("banned: {what}"));
                } else {
                    self.set_dropped(neighbour, format!("disconnected: {what}"), false);
                }
            }
            other => self.set_dropped(neighbour, format!("dropped: {other}"), false),
        }
    }

    fn ban(&mut self, neighbour: usize, reason: String) {
        self.set_dropped(neighbour, reason, true);
    }

    fn set_dropped(&mut self, neighbour: usize, reason: String, banned: bool) {
        let n = &mut self.neighbours[neighbour];
        if !banned {
            n.failures += 1;
            if n.failures >= MAX_FAILURES {
                return self.ban(
                    neighbour,
                    format!("given up after {MAX_FAILURES} failures in a row (last: {reason})"),
                );
            }
        }
        let n = &mut self.neighbours[neighbour];
        if n.dropped.is_none() {
            if banned {
                warn!("{}: neighbour {} {reason}", self.plan.name.as_str(), n.peer);
            } else {
                info!("{}: neighbour {} {reason}", self.plan.name.as_str(), n.peer);
            }
            n.dropped = Some(reason);
            n.dropped_at = Some(Instant::now());
            n.banned = banned;
            self.rarity.mark_stale();
            for lane in &n.lanes {
                lane.link.close();
            }
        }
    }

    /// Copies the progress into the shared status.
    fn publish(&self) {
        let mut status = self.status.lock();
        status.have.clone_from(&self.have);
        status.in_flight = self.in_flight.iter().map(|(index, _)| index).collect();
        status.sources = self
            .neighbours
            .iter()
            .map(|n| SourceStatus {
                peer: n.peer,
                // Counted by the workers as pieces are stored, so a piece
                // whose batch had not reported when the download ended
                // still counts.
                pieces: n.speed.pieces(),
                bytes: n.speed.bytes(),
                rate: n.speed.rate(),
                latency: n.speed.latency(),
                dropped: n.dropped.clone(),
            })
            .collect();
    }

    /// Why the download cannot finish: which pieces no live peer has.
    fn stall_message(&self) -> String {
        let held: HashSet<usize> = self
            .neighbours
            .iter()
            .filter(|n| n.dropped.is_none())
            .flat_map(|n| (0..n.bitmap.len()).filter(|&i| n.bitmap.has(i)))
            .collect();
        let lacking: Vec<usize> = self.have.missing().filter(|i| !held.contains(i)).collect();
        let shown: Vec<String> = lacking.iter().take(20).map(ToString::to_string).collect();
        let more = if lacking.len() > 20 {
            format!(" and {} more", lacking.len() - 20)
        } else {
            String::new()
        };
        format!(
            "stalled at {} of {} pieces: no live peer has piece(s) {}{more} ({} of {} neighbours left)",
            self.have.count(),
            self.have.len(),
            shown.join(", "),
            self.neighbours.iter().filter(|n| n.dropped.is_none()).count(),
            self.neighbours.len()
        )
    }
}

/// A pool thread: takes jobs until the channel closes.
struct Worker {
    shared: Arc<SharedFile>,
    /// The peer's download limit: each piece received is paid for here.
    limit: Arc<RateLimiter>,
    jobs: Receiver<Job>,
    outcomes: Sender<Outcome>,
}

impl Worker {
    fn run(self) {
        let mut buf = Vec::new();
        for job in self.jobs.iter() {
            let outcome = match job {
                Job::Fetch {
                    at,
                    link,
                    peer,
                    indices,
                    tally,
                } => self.fetch(at, &link, peer, indices, &tally, &mut buf),
                Job::Bitmap { at, link, peer } => {
                    let mut guard = link.link.lock();
                    let pieces = self.shared.manifest.piece_count();
                    let result = connected(&mut guard, &link, peer)
                        .and_then(|l| l.exchange_bitmaps(self.shared.key, None, pieces));
                    if result.is_err() {
                        *guard = None;
                    }
                    Outcome::Bitmap { at, result }
                }
            };
            if self.outcomes.send(outcome).is_err() {
                return;
            }
        }
    }

    fn fetch(
        &self,
        at: Place,
        link: &LinkSlot,
        peer: PeerId,
        indices: Vec<u32>,
        tally: &Tally,
        buf: &mut Vec<u8>,
    ) -> Outcome {
        let mut pieces = Vec::with_capacity(indices.len());
        let mut disk_error = None;
        let mut latency = None;
        let mut guard = link.link.lock();
        let key = self.shared.key;
        let manifest = &self.shared.manifest;
        let result = connected(&mut guard, link, peer).and_then(|l| {
            let bytes: u64 = indices
                .iter()
                .map(|&i| u64::from(manifest.piece_len(i as usize).unwrap_or(0)))
                .sum();
            l.set_deadline(Some(
                BATCH_ALLOWANCE + Duration::from_secs(bytes / MIN_PIECE_RATE),
            ));
            l.send(&PeerRequest::Reqf {
                key,
                indices: indices.clone(),
            })?;
            let asked_at = Instant::now();
            for &index in &indices {
                let len = manifest.piece_len(index as usize).unwrap_or(0);
                let answer = l.read_piece(key, index, len, buf)?;
                latency.get_or_insert_with(|| asked_at.elapsed());
                if answer == PieceAnswer::Received {
                    tally.bytes.fetch_add(u64::from(len), Ordering::Relaxed);
                    // Paid after the fact: the wait holds back the next
                    // read, and the sender with it.
                    self.limit.take(u64::from(len));
                }
                let result = match answer {
                    PieceAnswer::Missing => PieceResult::Missing,
                    PieceAnswer::Received if self.shared.has_piece(index as usize) => {
                        PieceResult::Duplicate
                    }
                    PieceAnswer::Received if !manifest.verify_piece(index as usize, buf) => {
                        PieceResult::Corrupt
                    }
                    PieceAnswer::Received => match self.shared.store_piece(index as usize, buf) {
                        Ok(true) => {
                            tally.pieces.fetch_add(1, Ordering::Relaxed);
                            PieceResult::Stored
                        }
                        Ok(false) => PieceResult::Duplicate,
                        Err(e) => {
                            disk_error = Some(e);
                            break;
                        }
                    },
                };
                pieces.push((index, result));
            }
            Ok(())
        });
        let error = result.err();
        if error.is_some() {
            *guard = None;
        }
        Outcome::Fetched {
            at,
            asked: indices,
            pieces,
            latency,
            error,
            disk_error,
        }
    }
}

/// The link in `slot`, connecting first if there is none (and leaving a
/// closer for the coordinator in `owner`).
fn connected<'s>(
    slot: &'s mut Option<PeerLink>,
    owner: &LinkSlot,
    peer: PeerId,
) -> Result<&'s mut PeerLink, LinkError> {
    if slot.is_none() {
        let link = PeerLink::connect(peer)?;
        let mut closer = owner.closer.lock();
        if closer.closed {
            return Err(LinkError::Io(io::Error::other("the download is over")));
        }
        closer.current = Some(link.closer()?);
        *slot = Some(link);
    }
    Ok(slot.as_mut().expect("just connected"))
}
