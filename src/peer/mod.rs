//! A peer: shares files, serves their pieces to other peers, and downloads
//! files from the swarm.
//!
//! - [`library`]: the files this peer serves, by key (the only door from
//!   the network to the disk);
//! - [`miniserver`]: answers other peers (`BITF`, `MANF`, `REQF`, `LSTF`);
//! - [`link`]: this peer's side of a connection to another mini-server;
//! - [`tracker_client`]: the session with the tracker;
//! - [`share`]: the manifest cache;
//! - [`media`]: a file's media kind and MIME type; client profiles;
//! - [`folder`]: what the paths given to share stand for (a folder: the
//!   files under it);
//! - [`fsutil`]: portable names, no-replace renames, atomic writes;
//! - [`download`]: one download (coordinator and worker pool);
//! - [`discovery`]: peer look-ups for downloads, done off their threads;
//! - [`resume`]: download state that survives a crash;
//! - [`stored`]: how those records and the manifest cache are written;
//! - [`usermap`]: the `<user> - <ip:port>` file of the course;
//! - [`ratelimit`]: the upload and download limits;
//! - [`shell`]: the interactive shell of the course's commands;
//! - [`gui`]: the web page (files, downloads, player), its JSON API and
//!   its HTTP server;
//! - [`ring_duties`]: announcing files and finding peers in the ring;
//! - `housekeeping`: the background threads (the tracker session kept
//!   alive, progress reports, peer look-ups, the user map; shared files
//!   looked at on disk);
//! - [`Peer`]: ties them together; `bin/peer.rs` and the shell drive it.

pub mod discovery;
pub mod download;
pub mod error;
pub mod folder;
pub mod fsutil;
pub mod gui;
mod housekeeping;
pub mod library;
pub mod link;
pub mod media;
pub mod miniserver;
pub mod ratelimit;
pub mod resume;
pub mod ring_duties;
pub mod share;
pub mod shell;
pub mod stored;
pub mod tracker_client;
pub mod usermap;

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, info, warn};
use parking_lot::Mutex;

use crate::config::PeerConfig;
use crate::protocol::names::same_name;
use crate::protocol::{
    FileEntry, FileKey, FileName, FileOffer, SearchCriteria, ShareEntry, SharedPath,
};
use crate::ring::RingNode;
use crate::server::{Handler, Server, ServerOptions};
use crate::service::LineLimits;

use discovery::Discovery;
pub use download::{Download, DownloadState, DownloadStatus};
use download::{DownloadContext, DownloadPlan, DownloadSettings};
pub use error::PeerError;
use housekeeping::{BackgroundThreads, DISK_LOOK_EVERY};
use library::{Library, SharedFile};
use link::PeerLink;
use miniserver::MiniServerState;
use ratelimit::RateLimiter;
use resume::ResumeStore;
use share::ManifestCache;
use tracker_client::{Identity, TrackerClient};

/// Ended downloads a peer keeps telling of (`status`, the web page) at
/// most: past it the oldest are forgotten, so that a peer left running for
/// weeks does not grow with every download it ever made.
const MAX_ENDED_KEPT: usize = 100;

/// A running peer. [`Peer::shutdown`] (or dropping it) stops its threads.
pub struct Peer {
    config: PeerConfig,
    library: Arc<Library>,
    tracker: Arc<TrackerClient>,
    discovery: Arc<Discovery>,
    cache: ManifestCache,
    resume: ResumeStore,
    server: Option<Server>,
    /// The upload limit, shared by every mini-server connection.
    upload_limit: Arc<RateLimiter>,
    /// The download limit, shared by every download's workers.
    download_limit: Arc<RateLimiter>,
    downloads: Mutex<Vec<Arc<Download>>>,
    /// Its place in the ring, when it is in one.
    ring: Option<Arc<RingNode>>,
    /// The housekeeping thread and the disk look's.
    background: Option<BackgroundThreads>,
}

impl Peer {
    /// Starts a peer, in the order a student can follow in a debugger:
    /// 1. binds the mini-server's listener (`config.listen`) and opens the
    ///    session with the tracker (a tracker not there is retried later);
    /// 2. starts the mini-server, which serves pieces from now on;
    /// 3. serves the pieces of unfinished downloads of an earlier run;
    /// 4. joins the ring, when `config.ring` says so, and starts its rounds;
    /// 5. starts the two background threads: housekeeping (tracker pings
    ///    and progress reports, BufferMap rounds, the user map, queued
    ///    offers, the ring's duties) and the look at shared files on disk.
    ///
    /// A step that fails undoes the ones before it.
    pub fn start(config: PeerConfig) -> Result<Peer, PeerError> {
        let listener = crate::server::bind_listener(config.listen)
            .map_err(|e| PeerError::Failed(format!("cannot listen on {}: {e}", config.listen)))?;
        let listen = listener
            .local_addr()
            .map_err(|e| PeerError::Failed(format!("cannot read the listening address: {e}")))?;
        let tracker = Arc::new(TrackerClient::new(
            config.tracker,
            Some(Identity {
                listen_port: listen.port(),
                listen_ip: Some(listen.ip()),
                user: config.user.clone(),
            }),
        ));
        // The tracker's state is soft: a peer starts without it, and the
        // housekeeping thread keeps trying to reach it. A session refused
        // still lets it search and download (those need none).
        match tracker.connect() {
            Ok(()) => {}
            Err(e) if e.session_refused() => warn!(
                "no session at the tracker: {e}; searches and downloads work without one, and this peer's files are offered once it opens (asked again in a moment)"
            ),
            Err(e) => warn!("{e}; the peer goes on, and tries it again in the background"),
        }
        let library = Arc::new(Library::new());
        let upload_limit = Arc::new(RateLimiter::new(config.upload_limit));
        let download_limit = Arc::new(RateLimiter::new(config.download_limit));
        let mini = Arc::new(MiniServerState {
            library: Arc::clone(&library),
            limits: LineLimits {
                idle: config.idle_timeout,
                max_line: crate::protocol::DEFAULT_MAX_LINE,
            },
            upload: Arc::clone(&upload_limit),
            user: config.user.clone(),
            tracker: Arc::clone(&tracker),
            listen,
            ring: std::sync::OnceLock::new(),
        });
        let server = start_mini_server(listener, &config, &mini)?;
        fs::create_dir_all(&config.state_dir).map_err(|e| PeerError::file(&config.state_dir, e))?;
        let cache = ManifestCache::open(&config.state_dir);
        let resume = ResumeStore::new(&config.state_dir);
        serve_unfinished_downloads(&resume, &library);
        // Serving first: the ring's members talk to us as soon as we join.
        let ring = join_ring(&config, listen, &mini)?;
        let discovery = Arc::new(Discovery::new());
        let background = BackgroundThreads::start(
            &config,
            &tracker,
            &library,
            &resume,
            &discovery,
            ring.as_ref(),
        )
        .inspect_err(|_| {
            if let Some(ring) = &ring {
                ring.leave();
            }
        })?;
        info!("peer listening on {listen}, tracker {}", config.tracker);
        Ok(Peer {
            config,
            library,
            tracker,
            discovery,
            cache,
            resume,
            server: Some(server),
            upload_limit,
            download_limit,
            downloads: Mutex::new(Vec::new()),
            ring,
            background: Some(background),
        })
    }

    /// Where the mini-server listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .map_or(self.config.listen, Server::local_addr)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The tracker session.
    pub fn tracker(&self) -> &TrackerClient {
        &self.tracker
    }

    /// Its place in the ring, when it is in one.
    pub fn ring(&self) -> Option<&Arc<RingNode>> {
        self.ring.as_ref()
    }

    /// The files this peer serves, by key.
    pub fn library(&self) -> &Arc<Library> {
        &self.library
    }

    /// Stops a file's hash under way (a [`Peer::share`] on another thread,
    /// or in the `progress` it was given), which then fails, and any hash
    /// after it: for Ctrl-C while a big file is hashed.
    pub fn stop_hashing(&self) {
        self.cache.stop_hashing();
    }

    /// Shares a complete file: hashes it (or takes its manifest from the
    /// cache), serves it, and offers it to the tracker. `progress` gets the
    /// bytes hashed so far.
    pub fn share(
        &self,
        path: &Path,
        progress: impl FnMut(u64),
    ) -> Result<Arc<SharedFile>, PeerError> {
        let path = fsutil::canonical_or_absolute(path).map_err(|e| PeerError::file(path, e))?;
        let meta = fs::metadata(&path).map_err(|e| PeerError::file(&path, e))?;
        if !meta.is_file() {
            return Err(PeerError::Failed(format!(
                "{} is not a file",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| PeerError::Failed(format!("{} has no file name", path.display())))?;
        let name = FileName::new(&name).map_err(|e| PeerError::Failed(e.to_string()))?;
        let shown = SharedPath::new(&path.to_string_lossy())
            .map_err(|e| PeerError::Failed(e.to_string()))?;
        let piece_size = share::piece_size_for(meta.len(), self.config.piece_size);
        // Opened before it is hashed: a change while it is hashed is seen.
        let opened =
            crate::pieces::PieceFile::open(&path).map_err(|e| PeerError::file(&path, e))?;
        let manifest = self
            .cache
            .manifest(&path, piece_size, progress)
            .map_err(|e| PeerError::file(&path, e))?;
        if let Some(twin) = self.library.get(&manifest.key()) {
            refuse_a_second_copy(&twin, &path)?;
        }
        let kind = media::detect(&path).kind;
        let file = Arc::new(
            SharedFile::complete(name, kind, manifest, &path, opened)
                .map_err(|e| PeerError::file(&path, e))?,
        );
        let offer = FileOffer {
            key: file.key,
            name: file.name.clone(),
            size: file.manifest.size(),
            piece_size: file.manifest.piece_size(),
            kind,
            path: shown,
        };
        self.library.insert(Arc::clone(&file));
        match self.tracker.offer(&offer) {
            Ok(()) => {}
            // Remembered: announced as soon as the tracker is back, or
            // the session open.
            Err(e) if e.tracker_is_away() => warn!(
                "{e}; {} will be offered when it is back",
                file.name.as_str()
            ),
            Err(e) if e.session_refused() => warn!(
                "{e}; {} will be offered when the session opens",
                file.name.as_str()
            ),
            Err(e) => {
                self.library.remove(&file.key);
                return Err(e);
            }
        }
        if let Some(ring) = &self.ring {
            ring_duties::announce(ring, &file, self.config.ring_refresh);
        }
        info!("sharing {} as {}", path.display(), file.key);
        Ok(file)
    }

    /// Stops sharing the file at `path` (or with that key): it is no longer
    /// served, and withdrawn from the tracker. A download on its way is
    /// refused (`Busy`).
    pub fn unshare(&self, path_or_key: &str) -> Result<FileKey, PeerError> {
        // The path as it was shared is canonical. A file deleted since has
        // none: then its name, in the same folder.
        let given = Path::new(path_or_key);
        let canonical = dunce::canonicalize(given).ok();
        let folder = match given.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let is_given = |shared: &Path| {
            canonical.as_deref() == Some(shared)
                || (shared.file_name() == given.file_name()
                    && shared
                        .parent()
                        .is_some_and(|dir| fsutil::same_folder(dir, folder)))
        };
        // A download on its way is named by its `.part` file, or by the
        // path it will have once here.
        let final_path = |f: &SharedFile| {
            let part = f.path();
            part.parent()
                .map(|dir| dir.join(fsutil::portable_file_name(f.name.as_str())))
        };
        // (A file shared at that path comes before a download that will
        // end there.)
        let files = self.library.all();
        let file = files
            .iter()
            .find(|f| is_key(f.key, path_or_key) || is_given(&f.path()))
            .or_else(|| {
                files.iter().find(|f| {
                    f.is_unfinished() && final_path(f).is_some_and(|path| is_given(&path))
                })
            })
            .cloned()
            .ok_or_else(|| {
                // Typed after the file was deleted: the periodic look may
                // have withdrawn it already.
                let gone = FileKey::parse(path_or_key).is_err() && fs::metadata(given).is_err();
                PeerError::NotFound(if gone {
                    format!(
                        "{path_or_key} is not shared by this peer, and no such file is here \
                         (a shared file deleted is withdrawn by itself within {} s)",
                        DISK_LOOK_EVERY.as_secs()
                    )
                } else {
                    format!("{path_or_key} is not shared by this peer")
                })
            })?;
        // Its pieces are served as they come, and its state would bring
        // it back, offered, at the next start: it is unshared once here.
        // One that stopped (failed, or was cancelled) goes on at the next
        // `get`; its `.part` file deleted, it is let go.
        if file.is_unfinished() {
            let running = self
                .downloads()
                .iter()
                .any(|d| d.key() == file.key && !d.is_finished());
            return Err(PeerError::Busy(if running {
                format!(
                    "{} is still downloading (its pieces are shared as they come); it can be \
                     unregistered once it is here",
                    file.name.as_str()
                )
            } else {
                format!(
                    "{} is an unfinished download (its pieces are shared, and `get` goes on \
                     with it); to drop it, delete {}: it is let go within {} s",
                    file.name.as_str(),
                    file.path().display(),
                    DISK_LOOK_EVERY.as_secs()
                )
            }));
        }
        // (This very file: another of that key put in since stays.)
        self.library.remove_if_same(&file);
        match self.tracker.withdraw(file.key) {
            // Queued: the housekeeping sends it on its next round (or the
            // session ended, and its offers went with it).
            Err(e) if e.tracker_takes_it_later() => warn!(
                "{e}; {path_or_key} is unshared here, and withdrawn at the tracker once it answers"
            ),
            other => other?,
        }
        Ok(file.key)
    }

    /// The files this peer serves (shared, finished or downloading).
    pub fn files(&self) -> Vec<Arc<SharedFile>> {
        let mut files = self.library.all();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files
    }

    /// Starts downloading `what` (a key, or an exact file name) into `dir`.
    ///
    /// - An unfinished download of that file goes on where it stopped, in
    ///   the folder of its `.part` file (see [`Peer::start_download`] for
    ///   another folder asked).
    /// - A file held here complete, named by its key, is done where it
    ///   is (no folder asked), or copied into the folder asked.
    /// - Else the file is looked up by key or name (the ring, the tracker:
    ///   a name known under several keys is refused with the list) and
    ///   fetched from the swarm into `dir`, by default the configured
    ///   download directory, or where a copy is held already. When the
    ///   look-up finds nothing (or the tracker is away), a file held here
    ///   under that exact name, if only one, is taken.
    pub fn download(&self, what: &str, dir: Option<&Path>) -> Result<Arc<Download>, PeerError> {
        if what.trim().is_empty() {
            return Err(PeerError::Failed(
                "which file? Give its key or its name".into(),
            ));
        }
        if let Some(dir) = dir {
            folder_to_save_into(dir)?;
        }
        let named = |f: &Arc<SharedFile>| is_key(f.key, what) || same_name(f.name.as_str(), what);
        let partial = self.unfinished().into_iter().find(named).filter(|partial| {
            !download::forget_if_part_gone(&self.library, &self.resume, &self.tracker, partial)
        });
        if let Some(partial) = partial {
            return self.start_download(plan_for(&partial, dir));
        }
        let held: Vec<_> = self.held().into_iter().filter(named).collect();
        if let Some(file) = held.iter().find(|f| is_key(f.key, what)) {
            return self.start_download(plan_for(file, dir));
        }
        match self.find_file(what) {
            Ok(entry) => self.download_file(entry, dir),
            Err(e) if matches!(e, PeerError::NotFound(_)) || e.tracker_is_away() => match &held[..]
            {
                [file] => self.start_download(plan_for(file, dir)),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Starts downloading the file the tracker listed as `entry` into `dir`
    /// (default: where it is, if some of it is here already; else the
    /// configured download directory).
    pub fn download_file(
        &self,
        entry: FileEntry,
        dir: Option<&Path>,
    ) -> Result<Arc<Download>, PeerError> {
        let here = self.library.get(&entry.key).filter(|f| !f.has_changed());
        if let (None, Some(file)) = (dir, here) {
            return self.start_download(plan_for(&file, None));
        }
        let dir = dir.map_or_else(|| self.config.download_dir.clone(), Path::to_path_buf);
        self.start_download(DownloadPlan {
            key: entry.key,
            name: entry.name,
            kind: entry.kind,
            dir,
            only_from: None,
        })
    }

    /// The files held here complete (shared, or downloaded; one found
    /// changed on disk since is no longer offered).
    fn held(&self) -> Vec<Arc<SharedFile>> {
        let mut held = self.library.all();
        held.retain(|f| f.is_offered());
        held
    }

    /// Unfinished downloads that are not running (found at start, or that
    /// failed or were stopped).
    pub fn unfinished(&self) -> Vec<Arc<SharedFile>> {
        let running: Vec<FileKey> = self
            .downloads
            .lock()
            .iter()
            .filter(|d| !d.is_finished())
            .map(|d| d.key())
            .collect();
        self.files()
            .into_iter()
            .filter(|f| f.is_unfinished() && !running.contains(&f.key))
            .collect()
    }

    /// Goes on with an unfinished download, from the swarm.
    pub fn resume_download(&self, file: &SharedFile) -> Result<Arc<Download>, PeerError> {
        self.start_download(plan_for(file, None))
    }

    /// The course's direct download: looks `user` up in the local user map
    /// file, asks that user's mini-server which key it shares under
    /// `path_on_user`, and downloads from that peer alone into `save_to`.
    pub fn download_direct(
        &self,
        user: &str,
        path_on_user: &str,
        save_to: &Path,
    ) -> Result<Arc<Download>, PeerError> {
        let peer = usermap::lookup(&self.config.user_map_file, user)?.ok_or_else(|| {
            PeerError::NotFound(format!(
                "user {user} is not in the user map {} (refreshed every {} s)",
                self.config.user_map_file.display(),
                self.config.user_map_refresh.as_secs()
            ))
        })?;
        let shares = PeerLink::connect(peer)
            .map_err(link::LinkError::from)
            .and_then(|mut link| link.shares())
            .map_err(|e| PeerError::Failed(format!("{user} at {peer}: {e}")))?;
        let share: ShareEntry = shares
            .into_iter()
            .find(|s| s.path.as_str() == path_on_user)
            .ok_or_else(|| {
                PeerError::NotFound(format!(
                    "{user} does not share {path_on_user} (give the path as `list-files` \
                     shows it, after `{user} : `)"
                ))
            })?;
        // A folder to save into (one there, or a path ending in `/`, made
        // if need be): under the name the file has there.
        let into_folder;
        let names_a_folder = save_to
            .as_os_str()
            .to_string_lossy()
            .ends_with(std::path::is_separator);
        let save_to = if save_to.is_dir() || names_a_folder {
            let shared_name = path_on_user
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or(path_on_user);
            into_folder = save_to.join(shared_name);
            into_folder.as_path()
        } else {
            save_to
        };
        let name = save_to
            .file_name()
            .and_then(|n| FileName::new(&n.to_string_lossy()).ok())
            .ok_or_else(|| {
                PeerError::Failed(format!(
                    "{} is not a file name to save to",
                    save_to.display()
                ))
            })?;
        let dir = save_to
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        self.start_download(DownloadPlan {
            key: share.key,
            kind: media::from_name(save_to).kind,
            name,
            dir,
            only_from: Some(peer),
        })
    }

    /// Starts the download `plan` says, unless one of that file is under
    /// way, or an unfinished one of it is in another folder or under
    /// another name than asked: that one goes on only where it is, rather
    /// than a download finishing somewhere the caller did not ask for.
    fn start_download(&self, mut plan: DownloadPlan) -> Result<Arc<Download>, PeerError> {
        // Absolute, so that the path a download ends with is the same
        // however it ended (fetched, found there already, copied), and
        // its saved state finds its `.part` from any folder.
        plan.dir = std::path::absolute(&plan.dir).map_err(|e| {
            PeerError::Failed(format!(
                "cannot download into {:?} ({e}): name a folder (. is this one)",
                plan.dir
            ))
        })?;
        // (Asked already of a folder given; this is the configured one.)
        folder_to_save_into(&plan.dir)?;
        let mut downloads = self.downloads.lock();
        if downloads
            .iter()
            .any(|d| d.key() == plan.key && !d.is_finished())
        {
            return Err(PeerError::Busy(format!(
                "{} is already being downloaded (its progress is shown as it goes)",
                plan.name.as_str()
            )));
        }
        let partial = self.library.get(&plan.key).filter(|f| f.is_unfinished());
        if let Some(partial) = partial {
            let part = partial.path();
            let part_dir = part.parent().unwrap_or(Path::new("."));
            if !fsutil::same_folder(&plan.dir, part_dir) || plan.name != partial.name {
                let held = partial.bitmap();
                return Err(PeerError::Failed(format!(
                    "{} is unfinished in {} ({} of {} pieces, in {}), not {}; \
                     download it without a folder to go on there",
                    partial.name.as_str(),
                    part_dir.display(),
                    held.count(),
                    held.len(),
                    part.display(),
                    plan.dir.join(plan.name.as_str()).display()
                )));
            }
        }
        let context = DownloadContext {
            library: Arc::clone(&self.library),
            tracker: Arc::clone(&self.tracker),
            ring: self.ring.clone(),
            discovery: Arc::clone(&self.discovery),
            resume: self.resume.clone(),
            download_limit: Arc::clone(&self.download_limit),
            settings: DownloadSettings {
                max_bad_pieces: self.config.max_bad_pieces,
                pool_size: self.config.pool_size,
                queue_depth: self.config.queue_depth,
                bitmap_interval: self.config.bitmap_interval,
                stall_timeout: self.config.stall_timeout,
                sync_on_finish: self.config.sync_on_finish,
                lanes_per_peer: self.config.lanes_per_peer,
            },
        };
        // This download tells what an ended one of the same file told:
        // `status` shows one line per file and folder.
        let mut forgotten: Vec<Arc<Download>> = downloads
            .iter()
            .filter(|old| old.key() == plan.key && ended_as(old, &plan))
            .cloned()
            .collect();
        let download = Download::start(context, plan)
            .map_err(|e| PeerError::Failed(format!("cannot start a thread: {e}")))?;
        downloads.retain(|d| !forgotten.iter().any(|old| Arc::ptr_eq(old, d)));
        // The oldest ended ones past the most kept.
        let ended = downloads.iter().filter(|d| d.is_finished()).count();
        let mut excess = ended.saturating_sub(MAX_ENDED_KEPT);
        downloads.retain(|d| {
            let forget = excess > 0 && d.is_finished();
            if forget {
                excess -= 1;
                forgotten.push(Arc::clone(d));
            }
            !forget
        });
        downloads.push(Arc::clone(&download));
        drop(downloads);
        for old in forgotten {
            // Its thread has ended; joined here, its outcome told already.
            let _ = old.wait();
        }
        Ok(download)
    }

    /// Finds a file by key or exact name: in the ring first when the peer
    /// is in one, else (or when the ring does not know it) at the tracker.
    pub fn find_file(&self, what: &str) -> Result<FileEntry, PeerError> {
        let Some(ring) = &self.ring else {
            return self.find_at_tracker(what);
        };
        match ring_duties::find_file(ring, what) {
            Ok(entry) => Ok(entry),
            Err(in_ring) => match self.find_at_tracker(what) {
                Ok(entry) => Ok(entry),
                // The tracker may well be off: the ring's answer says more.
                Err(e) if e.tracker_is_away() => Err(in_ring),
                Err(other) => {
                    debug!("{what}: {in_ring}");
                    Err(other)
                }
            },
        }
    }

    /// Finds a file at the tracker by key or exact name.
    fn find_at_tracker(&self, what: &str) -> Result<FileEntry, PeerError> {
        use crate::protocol::Criterion;
        let criteria = match FileKey::parse(what) {
            Ok(key) => vec![Criterion::Key(key)],
            Err(_) => vec![Criterion::NameGlob(what.replace(['*', '?'], "?"))],
        };
        let mut found: Vec<_> = self
            .tracker
            .search(SearchCriteria(criteria))?
            .into_iter()
            .filter(|f| is_key(f.key, what) || same_name(f.name.as_str(), what))
            .collect();
        match found.len() {
            0 => Err(PeerError::NotFound(format!(
                "the tracker knows no file {what}"
            ))),
            1 => Ok(found.remove(0)),
            _ => Err(PeerError::ambiguous_name(what, found.iter().map(|f| f.key))),
        }
    }

    /// Searches files: at the tracker and, when the peer is in a ring,
    /// among the files named in the ring (a walk of it). In a ring, an
    /// unreachable tracker is not an error.
    pub fn search(&self, criteria: &SearchCriteria) -> Result<Vec<FileEntry>, PeerError> {
        let at_tracker = self.tracker.search(criteria.clone());
        let Some(ring) = &self.ring else {
            return at_tracker;
        };
        let mut files = at_tracker.unwrap_or_else(|e| {
            debug!("search: {e}; the ring only");
            Vec::new()
        });
        let more = ring_duties::search(ring, criteria, &files);
        files.extend(more);
        Ok(files)
    }

    /// Every download started by this peer, oldest first.
    pub fn downloads(&self) -> Vec<Arc<Download>> {
        self.downloads.lock().clone()
    }

    /// Stops: cancels downloads, leaves the tracker, closes every
    /// connection, joins every thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// The first step of stopping, for a caller that must stop something
    /// else before the peer itself (the web page, whose requests may be
    /// walking the ring or waiting on the tracker): the ring's look-ups
    /// and walks give up from now on, downloads are told to stop, and the
    /// tracker session ends ([`TrackerClient::stop`]: an exchange under
    /// way ends at once). Stopping the peer does this first too.
    pub fn begin_stopping(&self) {
        if let Some(ring) = &self.ring {
            ring.begin_leaving();
        }
        // First: a download that fails on the tracker now is one stopped.
        for download in self.downloads.lock().iter() {
            download.cancel();
        }
        self.tracker.stop();
    }

    fn stop(&mut self) {
        self.begin_stopping();
        // A worker waiting for its turn under the download limit stops
        // waiting.
        self.download_limit.close();
        // Taken out first: a web page asking for the downloads meanwhile
        // is not held until every one has ended.
        let downloads = std::mem::take(&mut *self.downloads.lock());
        for download in downloads {
            let _ = download.wait();
        }
        if let Some(background) = self.background.take() {
            background.stop();
        }
        if let Some(ring) = self.ring.take() {
            ring.leave();
        }
        self.upload_limit.close();
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        // Manifests hashed since the cache was last saved.
        self.cache.flush();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The mini-server on `listener`: one thread per connection, each
/// answering with [`miniserver::serve`].
fn start_mini_server(
    listener: std::net::TcpListener,
    config: &PeerConfig,
    mini: &Arc<MiniServerState>,
) -> Result<Server, PeerError> {
    let handler: Arc<Handler> = Arc::new({
        let mini = Arc::clone(mini);
        move |conn| miniserver::serve(conn, Arc::clone(&mini))
    });
    let options = ServerOptions::lines(
        "peer",
        config.max_connections,
        config.max_connections_per_ip,
    );
    Server::start(listener, options, handler)
        .map_err(|e| PeerError::Failed(format!("cannot start the mini-server: {e}")))
}

/// Unfinished downloads of an earlier run: their verified pieces are
/// served at once, and the downloads resumed when asked for (the shell
/// resumes them all at start). The housekeeping thread reports their
/// progress to the tracker.
fn serve_unfinished_downloads(resume: &ResumeStore, library: &Library) {
    for found in resume.load_all() {
        let file = SharedFile::partial(
            found.name,
            found.kind,
            found.manifest,
            &found.part_path,
            found.part,
            found.bitmap,
        );
        library.insert(Arc::new(file));
    }
}

/// Joins the ring when `config.ring` is set, and starts its rounds; a
/// peer that joined but cannot start them leaves again.
fn join_ring(
    config: &PeerConfig,
    listen: SocketAddr,
    mini: &MiniServerState,
) -> Result<Option<Arc<RingNode>>, PeerError> {
    let Some(settings) = &config.ring else {
        return Ok(None);
    };
    let node = RingNode::join(settings.clone(), listen)
        .map_err(|e| PeerError::Failed(format!("cannot join the ring: {e}")))?;
    let node = Arc::new(node);
    let _ = mini.ring.set(Arc::clone(&node));
    if let Err(e) = node.start_rounds() {
        node.leave();
        return Err(PeerError::Failed(e.to_string()));
    }
    Ok(Some(node))
}

/// Refuses `dir` as the folder to save a download into when it is a file
/// (a folder not there yet is made by the download).
fn folder_to_save_into(dir: &Path) -> Result<(), PeerError> {
    if dir.exists() && !dir.is_dir() {
        return Err(PeerError::Failed(format!(
            "{} is a file, not a folder to save into",
            dir.display()
        )));
    }
    Ok(())
}

/// Refuses to share the file at `path` when `twin`, the file of the same
/// key (the same bytes) that this peer serves, is elsewhere and still
/// there: a key is served from one file. (Else the second would silently
/// take the first one's place, and deleting it would withdraw both.) A
/// twin edited or deleted since is withdrawn (if that was not seen yet)
/// and gives its place.
fn refuse_a_second_copy(twin: &SharedFile, path: &Path) -> Result<(), PeerError> {
    let there = twin.path();
    // (A downloaded file's path is absolute, not canonical: through a
    // link it is named otherwise, and is the same file.)
    if there == path || twin.has_changed() || fsutil::same_file(&there, path) {
        return Ok(());
    }
    if twin.is_unfinished() {
        return Err(PeerError::Busy(format!(
            "{} has the same content as {}, which is downloading into {}: its pieces are \
             shared as they come",
            path.display(),
            twin.name.as_str(),
            there.display()
        )));
    }
    if twin.is_offered() && twin.check_unchanged() {
        return Err(PeerError::Failed(format!(
            "{} has the same content as {}, which this peer shares already (as {}); \
             a file is shared from one place",
            path.display(),
            there.display(),
            twin.key
        )));
    }
    Ok(())
}

/// A download of `file` (held here, complete or not) into `dir`, by
/// default the folder it is in.
fn plan_for(file: &SharedFile, dir: Option<&Path>) -> DownloadPlan {
    let dir = dir.map_or_else(
        || {
            file.path()
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        },
        Path::to_path_buf,
    );
    DownloadPlan {
        key: file.key,
        name: file.name.clone(),
        kind: file.kind,
        dir,
        only_from: None,
    }
}

/// Whether `old`, a download of `plan`'s file, ended where `plan` would
/// end: it failed (a new try replaces the failure), or it is done into
/// the same folder under the file's name, as saved or as held (a
/// download into another folder is another line).
fn ended_as(old: &Download, plan: &DownloadPlan) -> bool {
    match old.status().state {
        DownloadState::Failed(_) => true,
        DownloadState::Done(path) => {
            let name = plan.name.as_str();
            let saved_as = fsutil::portable_file_name(name);
            path.file_name()
                .is_some_and(|file| file == OsStr::new(name) || file == OsStr::new(&saved_as))
                && path
                    .parent()
                    .is_some_and(|folder| fsutil::same_folder(folder, &plan.dir))
        }
        _ => false,
    }
}

/// Whether `what`, as typed, is `key` (in either case).
fn is_key(key: FileKey, what: &str) -> bool {
    FileKey::parse(what).is_ok_and(|typed| typed == key)
}
