//! What a peer serves, by key: the files it shares (complete) and the ones
//! it is downloading (partial, served piece by piece as they arrive).
//!
//! This is the only door from the network to the disk: the mini-server
//! asks for a key and a piece index, and only files registered here are
//! ever opened. No path from the network is looked up.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use log::warn;
use parking_lot::{Mutex, RwLock};

use crate::pieces::{Bitmap, Changed, Manifest, PieceFile};
use crate::protocol::{FileKey, FileName, MediaKind};

/// The files a peer serves.
#[derive(Debug, Default)]
pub struct Library {
    files: RwLock<HashMap<FileKey, Arc<SharedFile>>>,
    /// `.part` files that downloads of this peer are making or taking up,
    /// until their file is in `files`: the path, and whose download.
    parts_claimed: Mutex<HashMap<PathBuf, (FileKey, FileName)>>,
}

/// A download's claim on the `.part` file it makes or takes up (see
/// [`Library::claim_part`]); let go when dropped.
#[derive(Debug)]
pub struct PartClaim<'a> {
    library: &'a Library,
    path: PathBuf,
}

impl Drop for PartClaim<'_> {
    fn drop(&mut self) {
        self.library.parts_claimed.lock().remove(&self.path);
    }
}

impl Library {
    /// An empty library.
    pub fn new() -> Library {
        Library::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&self, file: Arc<SharedFile>) {
        self.files.write().insert(file.key, file);
    }

    /// Removes a file; returns it if it was there.
    pub fn remove(&self, key: &FileKey) -> Option<Arc<SharedFile>> {
        self.files.write().remove(key)
    }

    /// Removes `file` if it is still the one kept under its key (not a
    /// newer file of that key put in since); true if it was.
    pub fn remove_if_same(&self, file: &Arc<SharedFile>) -> bool {
        let mut files = self.files.write();
        if files
            .get(&file.key)
            .is_some_and(|kept| Arc::ptr_eq(kept, file))
        {
            files.remove(&file.key);
            return true;
        }
        false
    }

    /// The file with this key.
    pub fn get(&self, key: &FileKey) -> Option<Arc<SharedFile>> {
        self.files.read().get(key).cloned()
    }

    /// Every file, in no particular order.
    pub fn all(&self) -> Vec<Arc<SharedFile>> {
        self.files.read().values().cloned().collect()
    }

    /// Claims the `.part` file at `path` for the download of `key` (named
    /// `name`) while it makes or takes up the file and until it puts the
    /// file here: in that moment the file is on disk, locked, and in no
    /// list, and another download of this peer finding it would take it
    /// for another peer's. The download that holds the claim, if another
    /// does.
    pub fn claim_part(
        &self,
        path: &Path,
        key: FileKey,
        name: &FileName,
    ) -> Result<PartClaim<'_>, (FileKey, FileName)> {
        let mut claimed = self.parts_claimed.lock();
        if let Some(holder) = claimed.get(path) {
            return Err(holder.clone());
        }
        claimed.insert(path.to_path_buf(), (key, name.clone()));
        Ok(PartClaim {
            library: self,
            path: path.to_path_buf(),
        })
    }
}

/// One file a peer serves.
#[derive(Debug)]
pub struct SharedFile {
    pub key: FileKey,
    pub name: FileName,
    pub kind: MediaKind,
    pub manifest: Arc<Manifest>,
    /// The manifest's canonical text, sent for `MANF`.
    manifest_text: Box<[u8]>,
    state: RwLock<FileState>,
    /// Pieces and bytes sent to other peers.
    uploaded_pieces: AtomicU64,
    uploaded_bytes: AtomicU64,
}

#[derive(Debug)]
struct FileState {
    path: PathBuf,
    /// `None` for the moment the file is renamed, and after a rename that
    /// failed and could not open it again (see `lost`). Shared, so that a
    /// piece is read or written with the state lock already released: a
    /// worker marking a piece here never waits for another's disk I/O.
    file: Option<Arc<PieceFile>>,
    /// Set when a failed rename found the `.part` file gone or another in
    /// its place: the pieces are lost, and the download is let go. (A
    /// `.part` file that could not be opened again for another reason,
    /// too many open files say, is kept for a later start.)
    lost: bool,
    bitmap: Bitmap,
    /// True for a file this peer offered with `ADDF` (shared or finished).
    offered: bool,
    /// True once a shared file was found changed on disk since it was
    /// shared: nothing of it is served, it is neither offered nor an
    /// unfinished download (its path is the user's file, never to be
    /// written), and the peer's housekeeping takes it out of the library.
    changed: bool,
}

impl SharedFile {
    /// A complete file on disk, to share: `file` is it, opened with
    /// [`PieceFile::open`] before `manifest` was made from it, and checked
    /// unchanged since. Refused (`InvalidData`) if it changed meanwhile.
    pub fn complete(
        name: FileName,
        kind: MediaKind,
        manifest: Manifest,
        path: &Path,
        file: PieceFile,
    ) -> io::Result<SharedFile> {
        if !file.unchanged_at(path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "changed on disk while it was being read; try again once it is written",
            ));
        }
        let bitmap = Bitmap::full(manifest.piece_count());
        Ok(SharedFile::new(
            name, kind, manifest, path, file, bitmap, true,
        ))
    }

    /// A file being downloaded into `path` (a `.part` file), holding the
    /// pieces in `bitmap`.
    pub fn partial(
        name: FileName,
        kind: MediaKind,
        manifest: Manifest,
        path: &Path,
        file: PieceFile,
        bitmap: Bitmap,
    ) -> SharedFile {
        SharedFile::new(name, kind, manifest, path, file, bitmap, false)
    }

    fn new(
        name: FileName,
        kind: MediaKind,
        manifest: Manifest,
        path: &Path,
        file: PieceFile,
        bitmap: Bitmap,
        offered: bool,
    ) -> SharedFile {
        SharedFile {
            key: manifest.key(),
            name,
            kind,
            manifest_text: manifest.to_string().into_bytes().into_boxed_slice(),
            manifest: Arc::new(manifest),
            state: RwLock::new(FileState {
                path: path.to_path_buf(),
                file: Some(Arc::new(file)),
                bitmap,
                offered,
                changed: false,
                lost: false,
            }),
            uploaded_pieces: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
        }
    }

    /// The manifest's canonical text.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_text
    }

    /// Which pieces are here.
    pub fn bitmap(&self) -> Bitmap {
        self.state.read().bitmap.clone()
    }

    /// Whether piece `index` is here.
    pub fn has_piece(&self, index: usize) -> bool {
        self.state.read().bitmap.has(index)
    }

    /// True when every piece is here.
    pub fn is_complete(&self) -> bool {
        self.state.read().bitmap.is_complete()
    }

    /// Where the file is on disk (its `.part` file while downloading).
    pub fn path(&self) -> PathBuf {
        self.state.read().path.clone()
    }

    /// True for a file this peer offers as a seeder (listed by `LSTF`).
    pub fn is_offered(&self) -> bool {
        self.state.read().offered
    }

    /// Reads piece `index` into `buf` if it is here; `Ok(false)` if not.
    pub fn read_piece(&self, index: usize, buf: &mut Vec<u8>) -> io::Result<bool> {
        let Some(file) = self.file_with_piece(index) else {
            return Ok(false);
        };
        self.withdrawn_if_changed(file.read_piece(&self.manifest, index, buf))
    }

    /// Reads `buf.len()` bytes of piece `index` from `within` bytes into
    /// it, if the piece is here; `Ok(false)` if not.
    pub fn read_piece_part(&self, index: usize, within: u32, buf: &mut [u8]) -> io::Result<bool> {
        let Some(file) = self.file_with_piece(index) else {
            return Ok(false);
        };
        self.withdrawn_if_changed(file.read_piece_part(&self.manifest, index, within, buf))
    }

    /// The open file, if piece `index` is here.
    fn file_with_piece(&self, index: usize) -> Option<Arc<PieceFile>> {
        let state = self.state.read();
        match &state.file {
            Some(file) if state.bitmap.has(index) => Some(Arc::clone(file)),
            _ => None,
        }
    }

    /// A read's outcome; one that found the file changed on disk withdraws
    /// it ([`SharedFile::withdraw_changed`]).
    fn withdrawn_if_changed(&self, read: io::Result<()>) -> io::Result<bool> {
        match read {
            Ok(()) => Ok(true),
            Err(e) if Changed::is(&e) => {
                self.withdraw_changed();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The file changed on disk since it was shared (or is gone): none of
    /// its pieces is served any more (its BufferMap says so to every
    /// peer), and it is no longer offered, nor taken for an unfinished
    /// download. Sharing it again hashes it anew.
    pub fn withdraw_changed(&self) {
        let mut state = self.state.write();
        if !state.changed {
            warn!(
                "{} is gone or changed on disk since it was shared: no longer served (to serve what is there now, share it again)",
                state.path.display()
            );
            state.bitmap = Bitmap::empty(self.manifest.piece_count());
            state.offered = false;
            state.changed = true;
        }
    }

    /// Whether the file is still on disk as it was when shared (or
    /// finished): a look at its size, modification time and (on Unix)
    /// device and inode, through its handle and at its path. Found not,
    /// it is withdrawn ([`SharedFile::withdraw_changed`]).
    pub fn check_unchanged(&self) -> bool {
        let (file, path) = self.handle_and_path();
        let unchanged = file.is_some_and(|file| file.unchanged_at(&path));
        if !unchanged {
            self.withdraw_changed();
        }
        unchanged
    }

    /// The open file and its path, taken under the lock, to look at the
    /// disk without holding it.
    fn handle_and_path(&self) -> (Option<Arc<PieceFile>>, PathBuf) {
        let state = self.state.read();
        (state.file.clone(), state.path.clone())
    }

    /// For a download under way: whether its `.part` file is still at its
    /// path (not deleted, moved, or replaced by another file or a link). A
    /// path that cannot be looked at for another reason counts as still
    /// there; a download whose failed rename found its file lost does not.
    pub fn is_still_at_its_path(&self) -> bool {
        let (file, path, lost) = {
            let state = self.state.read();
            (state.file.clone(), state.path.clone(), state.lost)
        };
        file.map_or(!lost, |file| !matches!(file.is_at(&path), Ok(false)))
    }

    /// Runs `then` if this is still an unfinished download whose `.part`
    /// file is at `part`, with its state held meanwhile: a download that
    /// finishes (or a file found changed) cannot slip in between the
    /// look and `then`. (`then` must not take this file's state: the
    /// library's own lock, as [`Library::remove_if_same`] takes, is fine,
    /// as the library never takes a file's state under it.)
    pub fn if_unfinished_at<R>(&self, part: &Path, then: impl FnOnce() -> R) -> Option<R> {
        let state = self.state.read();
        let unfinished = !state.offered && !state.changed && state.path == part;
        unfinished.then(then)
    }

    /// Whether its path's whole folder is missing while the file may
    /// still be there (a disk not mounted, for a moment): not when the
    /// open file is known deleted (the folder was deleted with it).
    pub fn folder_away(&self) -> bool {
        let (file, path) = self.handle_and_path();
        super::fsutil::folder_missing(&path) && !file.is_some_and(|file| file.is_deleted())
    }

    /// For the peer's periodic look at what it shares: withdraws a
    /// complete file deleted, replaced or edited at its path since it was
    /// shared ([`SharedFile::withdraw_changed`]), even if no piece of it
    /// was asked for since. A path that cannot be looked at for another
    /// reason, or whose whole folder is away ([`SharedFile::folder_away`]),
    /// is left for the next look.
    pub fn withdraw_if_gone(&self) {
        if !self.is_offered() || self.folder_away() {
            return;
        }
        let (file, path) = self.handle_and_path();
        if file.is_some_and(|file| matches!(file.compare_at(&path), Ok(false))) {
            self.withdraw_changed();
        }
    }

    /// Whether it is an unfinished download: neither offered (complete)
    /// nor a shared file found changed on disk (whose path is the user's
    /// file, never to be written into).
    pub fn is_unfinished(&self) -> bool {
        let state = self.state.read();
        !state.offered && !state.changed
    }

    /// Whether it was found changed on disk since it was shared (see
    /// [`SharedFile::withdraw_changed`]).
    pub fn has_changed(&self) -> bool {
        self.state.read().changed
    }

    /// Writes a verified piece and marks it here, so it is served at once.
    /// Returns false when the piece was already here (two peers sent it at
    /// once in the endgame: the same verified bytes were written twice).
    pub fn store_piece(&self, index: usize, data: &[u8]) -> io::Result<bool> {
        // Positioned writes need only shared access to the file, and no
        // lock: the bitmap is locked only to mark the piece, after.
        {
            let file = self
                .state
                .read()
                .file
                .clone()
                .ok_or_else(|| io::Error::other("file is being renamed"))?;
            file.write_piece(&self.manifest, index, data)?;
            // (Dropped here, before the lock below: `finish` waits for the
            // file to be unshared while holding that lock.)
        }
        let mut state = self.state.write();
        let new = !state.bitmap.has(index);
        state.bitmap.set(index);
        Ok(new)
    }

    /// Flushes the file to disk.
    pub fn sync(&self) -> io::Result<()> {
        let file = self.state.read().file.clone();
        file.map_or(Ok(()), |file| file.sync())
    }

    /// Starts writing the file out to disk without waiting (see
    /// [`PieceFile::start_writeback`]).
    pub fn start_writeback(&self) -> io::Result<()> {
        let file = self.state.read().file.clone();
        file.map_or(Ok(()), |file| file.start_writeback())
    }

    /// Moves the finished download to `final_path` (never replacing a file
    /// already there) and marks it offered. The file is closed for the
    /// rename (not every system renames an open file) and reopened after;
    /// the error says which of the two failed. It is not flushed here:
    /// [`SharedFile::sync`] first, when the data must be on the disk
    /// before the name is (`sync_on_finish`).
    ///
    /// The file renamed must be the one the pieces were written to: a
    /// `.part` replaced by another file or a link (by hand, while the
    /// download ran) is never given the final name, however late the
    /// swap (see [`rename_no_replace`]).
    ///
    /// [`rename_no_replace`]: super::fsutil::rename_no_replace
    pub fn finish(&self, final_path: &Path) -> Result<(), FinishError> {
        let mut state = self.state.write();
        let mut written = None;
        #[cfg(unix)]
        let mut held_open: Option<std::fs::File> = None;
        if let Some(file) = state.file.take() {
            if matches!(file.is_at(&state.path), Ok(false)) {
                let why = format!(
                    "{} was deleted or replaced while the download ran, and its pieces with it: \
                     not given the name {}",
                    state.path.display(),
                    final_path.display()
                );
                // Kept open: the housekeeping's look lets it go.
                state.file = Some(file);
                return Err(FinishError::NotRenamed(io::Error::other(why)));
            }
            written = file.identity().ok().flatten();
            // Open through the rename on Unix (a second handle), so that
            // no file made meanwhile can take its identity. (Windows
            // renames no open file, and compares none.)
            #[cfg(unix)]
            {
                held_open = file.as_file().try_clone().ok();
            }
            // Closed once the readers that took it before (a mini-server
            // sending a piece) are done: the write lock held here lets
            // none take it again.
            close_when_unshared(file);
        }
        let renamed = super::fsutil::rename_no_replace(&state.path, final_path, written);
        #[cfg(unix)]
        drop(held_open);
        if let Err(e) = renamed {
            let why = format!(
                "cannot rename {} to {}: {e}",
                state.path.display(),
                final_path.display()
            );
            // Still there: served on, as before. (Gone, or another file in
            // its place: nothing to serve, and the housekeeping's look
            // lets the download go.)
            // Opened to write and locked, as a download's `.part` is (a
            // file opened only to read cannot be flushed on Windows, and
            // the lock keeps another peer on the folder from taking it up).
            match PieceFile::open_rw(&state.path) {
                Ok(file) if written.is_none() || file.identity().ok().flatten() == written => {
                    // (The lock may be refused: the old handle, still held
                    // by a reader that outlasted `CLOSE_WAIT`, holds it, and
                    // a second handle of one process is refused it too.
                    // The file is this download's either way.)
                    let _ = file.try_lock();
                    state.file = Some(Arc::new(file));
                }
                Ok(_) => state.lost = true,
                Err(e) => state.lost = e.kind() == io::ErrorKind::NotFound,
            }
            return Err(FinishError::NotRenamed(io::Error::new(e.kind(), why)));
        }
        // Recorded first: the file is there now, whether or not it can be
        // opened again below.
        state.path = final_path.to_path_buf();
        let file = PieceFile::open(&state.path).map_err(|e| {
            FinishError::NotReopened(io::Error::new(
                e.kind(),
                format!(
                    "{} is complete, but cannot be opened again to share it: {e}",
                    final_path.display()
                ),
            ))
        })?;
        state.file = Some(Arc::new(file));
        state.offered = true;
        Ok(())
    }

    /// Counts a piece sent to another peer.
    pub fn record_upload(&self, bytes: u64) {
        self.uploaded_pieces.fetch_add(1, Ordering::Relaxed);
        self.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Pieces and bytes sent to other peers so far.
    pub fn uploaded(&self) -> (u64, u64) {
        (
            self.uploaded_pieces.load(Ordering::Relaxed),
            self.uploaded_bytes.load(Ordering::Relaxed),
        )
    }
}

/// Why [`SharedFile::finish`] did not end with the file shared under its
/// final name.
#[derive(Debug)]
pub enum FinishError {
    /// Not renamed: the `.part` file is still there, and served on (or it
    /// is gone).
    NotRenamed(io::Error),
    /// Renamed: complete and verified under its final name, only it cannot
    /// be opened again to be shared by this run.
    NotReopened(io::Error),
}

/// The longest a rename waits for readers of the file to finish.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes `file` once no one else holds it (each holder is in one read or
/// write of a piece), or gives up waiting after [`CLOSE_WAIT`]: then the
/// last holder closes it, and on Windows the rename may fail and be
/// reported.
fn close_when_unshared(mut file: Arc<PieceFile>) {
    let started = std::time::Instant::now();
    while started.elapsed() < CLOSE_WAIT {
        match Arc::try_unwrap(file) {
            Ok(unshared) => {
                drop(unshared);
                return;
            }
            Err(shared) => {
                file = shared;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn shared(dir: &Path, data: &[u8]) -> (PathBuf, SharedFile) {
        let path = dir.join("song.mp3");
        std::fs::write(&path, data).unwrap();
        let opened = PieceFile::open(&path).unwrap();
        let manifest = Manifest::build(data, 16384, |_| {}).unwrap();
        let name = FileName::new("song.mp3").unwrap();
        let file = SharedFile::complete(name, MediaKind::Audio, manifest, &path, opened).unwrap();
        (path, file)
    }

    #[test]
    fn a_part_file_claimed_by_one_download_is_refused_to_another_until_let_go() {
        let library = Library::new();
        let path = Path::new("/music/song.mp3.part");
        let name = FileName::new("song.mp3").unwrap();
        let (first, second) = (FileKey([1; 32]), FileKey([2; 32]));
        let claim = library.claim_part(path, first, &name).unwrap();
        let holder = library.claim_part(path, second, &name).unwrap_err();
        assert_eq!(holder, (first, name.clone()));
        // Another path is free.
        let other = library.claim_part(Path::new("/music/b.part"), second, &name);
        assert!(other.is_ok());
        drop(claim);
        assert!(library.claim_part(path, second, &name).is_ok());
    }

    #[test]
    fn a_file_changed_on_disk_after_sharing_is_no_longer_served() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        let mut buf = Vec::new();
        for change in ["rewritten in place", "cut short"] {
            let dir = tempfile::tempdir().unwrap();
            let (path, file) = shared(dir.path(), &data);
            assert!(file.read_piece(1, &mut buf).unwrap());
            assert_eq!(buf, &data[16384..32768]);
            let disk = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            if change == "cut short" {
                disk.set_len(20_000).unwrap();
            } else {
                // Same size, another modification time (set outright: a
                // write in the same clock tick would not change it).
                disk.set_modified(SystemTime::now() - Duration::from_secs(3600))
                    .unwrap();
            }
            let error = file.read_piece(0, &mut buf).unwrap_err();
            assert!(Changed::is(&error), "{change}: {error}");
            assert!(!file.has_piece(1) && !file.is_offered(), "{change}");
            assert!(!file.read_piece(1, &mut buf).unwrap(), "{change}");
        }
    }

    /// A download of `data` with every piece written and checked into
    /// `dir/song.mp3.part`, ready to finish.
    fn downloaded(dir: &Path, data: &[u8]) -> (PathBuf, SharedFile) {
        let part = dir.join("song.mp3.part");
        let manifest = Manifest::build(data, 16384, |_| {}).unwrap();
        let file = PieceFile::create(&part, manifest.size()).unwrap();
        assert!(file.try_lock().unwrap(), "held as a download holds it");
        for (index, piece) in data.chunks(16384).enumerate() {
            file.write_piece(&manifest, index, piece).unwrap();
        }
        let bitmap = Bitmap::full(manifest.piece_count());
        let name = FileName::new("song.mp3").unwrap();
        let shared = SharedFile::partial(name, MediaKind::Audio, manifest, &part, file, bitmap);
        (part, shared)
    }

    #[test]
    fn a_download_that_finished_since_a_look_is_not_taken_for_gone() {
        // The disk look takes the `.part` path, and finds it gone: the
        // download finished meanwhile (renamed it). Decided on the state
        // held, it is no download to drop.
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 233) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let (part, shared) = downloaded(dir.path(), &data);
        assert_eq!(
            shared.if_unfinished_at(&part, || "dropped"),
            Some("dropped")
        );
        shared.finish(&dir.path().join("song.mp3")).unwrap();
        assert!(!part.exists());
        assert_eq!(shared.if_unfinished_at(&part, || "dropped"), None);
    }

    #[test]
    fn a_part_file_whose_final_name_is_taken_is_kept_as_a_download_is() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 239) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let (part, shared) = downloaded(dir.path(), &data);
        let final_path = dir.path().join("song.mp3");
        std::fs::write(&final_path, b"someone else's").unwrap();
        match shared.finish(&final_path) {
            Err(FinishError::NotRenamed(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}")
            }
            other => panic!("finished: {other:?}"),
        }
        // Open again as a download's `.part` is: to write (a file open
        // only to read cannot be flushed on Windows), and locked.
        assert!(shared.is_still_at_its_path() && shared.is_unfinished());
        let other = PieceFile::open_rw(&part).unwrap();
        assert!(!other.try_lock().unwrap(), "the lock was let go");
        let mut buf = Vec::new();
        assert!(shared.read_piece(2, &mut buf).unwrap());
        assert_eq!(buf, &data[32768..]);
        shared.sync().unwrap();
    }

    /// (Unix: elsewhere a file's identity cannot be told.)
    #[cfg(unix)]
    #[test]
    fn a_part_file_replaced_before_the_rename_never_gets_the_final_name() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let (part, shared) = downloaded(dir.path(), &data);
        assert!(shared.is_still_at_its_path());
        // Another file put in its place, as `mv impostor song.mp3.part`.
        let impostor = dir.path().join("impostor");
        std::fs::write(&impostor, b"not the verified bytes").unwrap();
        std::fs::rename(&impostor, &part).unwrap();
        assert!(!shared.is_still_at_its_path());
        let final_path = dir.path().join("song.mp3");
        let error = match shared.finish(&final_path) {
            Err(FinishError::NotRenamed(e)) => e.to_string(),
            other => panic!("finished: {other:?}"),
        };
        assert!(error.contains("was deleted or replaced"), "{error}");
        assert!(!final_path.exists(), "the impostor has no final name");
        assert_eq!(std::fs::read(&part).unwrap(), b"not the verified bytes");
        assert!(!shared.is_offered());
    }

    #[cfg(unix)]
    #[test]
    fn a_part_file_turned_into_a_link_to_itself_is_taken_for_replaced() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 241) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let (part, shared) = downloaded(dir.path(), &data);
        // Moved out of the folder, and a link to it left in its place: the
        // same file through the link, but the name is not its own.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::rename(&part, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &part).unwrap();
        assert!(!shared.is_still_at_its_path());
        let final_path = dir.path().join("song.mp3");
        assert!(shared.finish(&final_path).is_err());
        assert!(std::fs::symlink_metadata(&final_path).is_err());
    }
}
