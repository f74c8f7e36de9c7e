//! Preparing a file for sharing: its manifest, hashed
//! once and remembered in a small cache (a [`super::stored`] record, in the peer's
//! state directory) keyed by path and checked against the file's
//! [`Fingerprint`] (size, modification time, which file), so an unchanged
//! file is not hashed again.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, warn};
use parking_lot::Mutex;

use crate::pieces::{Fingerprint, Manifest};

use super::fsutil::write_atomically;

/// Most pieces a shared file is cut into, so that its BufferMap fits one
/// line of the default size (8192 bytes hold about 32,400 pieces in hex).
pub const MAX_SHARED_PIECES: u64 = 32_000;

/// The piece size to share a file of `size` bytes with: the configured one,
/// doubled as often as needed to stay within [`MAX_SHARED_PIECES`] (up to
/// the 16 MiB maximum).
pub fn piece_size_for(size: u64, configured: u32) -> u32 {
    use crate::protocol::fields::{piece_count, MAX_PIECE_SIZE};
    let mut piece = configured;
    while piece < MAX_PIECE_SIZE && piece_count(size, piece) > MAX_SHARED_PIECES {
        piece *= 2;
    }
    piece
}

/// The cache file's format: a cache of another one is started afresh.
const CACHE_VERSION: u32 = 3;
/// Largest cache file read back (a bound for a corrupted file).
const CACHE_LIMIT: usize = 256 * 1024 * 1024;
/// The manifest text the cache keeps at most, in bytes: past it, the
/// manifests used least lately are forgotten (they are hashed again if
/// their files are shared again). 64 MiB is a few thousand large files.
const CACHE_BUDGET: usize = 64 * 1024 * 1024;

/// The cache is saved at most this often while files are hashed one after
/// another: each save writes the whole cache, and saved after every file,
/// the first share of 5,000 small files took 22 s, most of it saving. What
/// is left is saved when the peer stops ([`ManifestCache::flush`]).
const SAVE_EVERY: Duration = Duration::from_secs(2);

/// Manifests of files already hashed.
#[derive(Debug)]
pub struct ManifestCache {
    path: PathBuf,
    entries: Mutex<HashMap<PathBuf, CachedManifest>>,
    /// Held through a save, so saves go one at a time and in order (a
    /// later snapshot is never overwritten by an earlier one), while
    /// look-ups in `entries` go on during the write and its flush. It
    /// holds when the last save was, if any.
    saving: Mutex<Option<Instant>>,
    /// Entries were added since the last save.
    unsaved: AtomicBool,
    /// Set to stop a hash under way, and any after it (the peer stops).
    stop_hashing: AtomicBool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CachedManifest {
    /// The file as it was hashed: a file changed since, or another put in
    /// its place with the same size and time, is hashed anew.
    file: Fingerprint,
    piece_size: u32,
    /// The canonical text: parsed (so checked) again when used.
    manifest: String,
    /// When it was last used, in seconds since the Unix epoch.
    used_at: u64,
}

impl ManifestCache {
    /// The cache kept in `state_dir`; an unreadable cache starts empty.
    pub fn open(state_dir: &Path) -> ManifestCache {
        let path = state_dir.join("manifests.bin");
        let read = match super::fsutil::read_at_most(&path, CACHE_LIMIT) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(e.to_string()),
            Ok(bytes) => super::stored::decode::<(u32, _), CACHE_LIMIT>(&bytes).and_then(
                |(version, entries)| match version {
                    CACHE_VERSION => Ok(entries),
                    other => Err(format!("written by another version ({other})")),
                },
            ),
        };
        let mut entries = read.unwrap_or_else(|e| {
            warn!(
                "manifest cache {} is unreadable ({e}); starting afresh",
                path.display()
            );
            HashMap::new()
        });
        forget_stale(&mut entries);
        ManifestCache {
            path,
            entries: Mutex::new(entries),
            saving: Mutex::new(None),
            unsaved: AtomicBool::new(false),
            stop_hashing: AtomicBool::new(false),
        }
    }

    /// Stops a hash under way at its next read, and refuses any after it:
    /// the peer is stopping (Ctrl-C while a big file is hashed).
    pub fn stop_hashing(&self) {
        self.stop_hashing.store(true, Ordering::SeqCst);
    }

    /// The manifest of `path` with `piece_size`, from the cache when the
    /// file is unchanged, else hashed now (`progress` gets bytes hashed).
    pub fn manifest(
        &self,
        path: &Path,
        piece_size: u32,
        progress: impl FnMut(u64),
    ) -> io::Result<Manifest> {
        let canonical = super::fsutil::canonical_or_absolute(path)?;
        let before = Fingerprint::at(&canonical)?;
        if let Some(cached) = self.entries.lock().get_mut(&canonical) {
            if cached.file == before && cached.piece_size == piece_size {
                if let Ok(manifest) = Manifest::parse(cached.manifest.as_bytes()) {
                    debug!("manifest of {} from the cache", path.display());
                    cached.used_at = now_secs();
                    return Ok(manifest);
                }
            }
        }
        let file = Unless {
            inner: std::fs::File::open(&canonical)?,
            stop: &self.stop_hashing,
        };
        let manifest = Manifest::build(file, piece_size, progress)?;
        // A file that changed while it was hashed is not remembered: the
        // manifest may mix its old bytes and its new ones. Nor one whose
        // path is not UTF-8, which the saved cache cannot hold (one such
        // entry would stop the whole cache from being saved).
        if Fingerprint::at(&canonical).ok().as_ref() != Some(&before)
            || manifest.size() != before.size()
            || canonical.to_str().is_none()
        {
            return Ok(manifest);
        }
        self.entries.lock().insert(
            canonical,
            CachedManifest {
                file: before,
                piece_size,
                manifest: manifest.to_string(),
                used_at: now_secs(),
            },
        );
        self.unsaved.store(true, Ordering::SeqCst);
        // (A save under way now takes this entry, or leaves it to the next.)
        if let Some(mut last_save) = self.saving.try_lock() {
            if last_save.is_none_or(|at| at.elapsed() >= SAVE_EVERY) {
                self.save(&mut last_save);
            }
        }
        Ok(manifest)
    }

    /// Saves what was added since the last save (the peer stops).
    pub fn flush(&self) {
        let mut last_save = self.saving.lock();
        if self.unsaved.load(Ordering::SeqCst) {
            self.save(&mut last_save);
        }
    }

    /// Writes the cache atomically (a temporary file, synced, then
    /// renamed): a snapshot taken under the entries' lock, written without
    /// it. `last_save` is the `saving` lock's, held by the caller.
    fn save(&self, last_save: &mut Option<Instant>) {
        *last_save = Some(Instant::now());
        self.unsaved.store(false, Ordering::SeqCst);
        let snapshot = {
            let mut entries = self.entries.lock();
            trim_to(&mut entries, CACHE_BUDGET);
            super::stored::encode(&(CACHE_VERSION, &*entries))
        };
        if let Err(e) = snapshot.and_then(|bytes| write_atomically(&self.path, &bytes)) {
            warn!(
                "cannot save the manifest cache {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Forgets the entries that can never be used again: their file is gone
/// or changed (done once, when the cache is opened).
fn forget_stale(entries: &mut HashMap<PathBuf, CachedManifest>) {
    entries.retain(|path, cached| Fingerprint::at(path).is_ok_and(|now| now == cached.file));
}

/// Forgets the least lately used entries until the manifests fit in
/// `budget` bytes.
fn trim_to(entries: &mut HashMap<PathBuf, CachedManifest>, budget: usize) {
    let mut total: usize = entries.values().map(|c| c.manifest.len()).sum();
    if total <= budget {
        return;
    }
    let mut by_age: Vec<(u64, PathBuf)> = entries
        .iter()
        .map(|(path, cached)| (cached.used_at, path.clone()))
        .collect();
    by_age.sort_unstable();
    for (_, path) in by_age {
        if total <= budget {
            break;
        }
        if let Some(gone) = entries.remove(&path) {
            total -= gone.manifest.len();
        }
    }
}

/// Seconds since the Unix epoch (0 on a clock set before it).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A reader that fails once `stop` is set: a hash stopped part-way.
struct Unless<'a, R> {
    inner: R,
    stop: &'a AtomicBool,
}

impl<R: io::Read> io::Read for Unless<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::SeqCst) {
            // (Not `Interrupted`, which a reader's caller tries again.)
            return Err(io::Error::other(
                "the peer is stopping: not hashed to its end",
            ));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_cache_forgets_gone_files_and_then_the_least_lately_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut entries = HashMap::new();
        for (name, used_at) in [("old", 1), ("new", 3), ("mid", 2), ("gone", 9)] {
            let path = dir.path().join(name);
            std::fs::write(&path, name).unwrap();
            entries.insert(
                path.clone(),
                CachedManifest {
                    file: Fingerprint::at(&path).unwrap(),
                    piece_size: 16384,
                    manifest: "x".repeat(100),
                    used_at,
                },
            );
        }
        std::fs::remove_file(dir.path().join("gone")).unwrap();
        forget_stale(&mut entries);
        trim_to(&mut entries, 200);
        let mut kept: Vec<_> = entries
            .keys()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        kept.sort();
        assert_eq!(kept, ["mid", "new"], "gone first, then the oldest");
    }

    #[test]
    fn a_file_changed_while_it_is_hashed_is_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing.bin");
        std::fs::write(&path, vec![7u8; 64 << 10]).unwrap();
        let cache = ManifestCache::open(&dir.path().join("state"));
        let mut appended = false;
        cache
            .manifest(&path, 16 << 10, |_| {
                if !appended {
                    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
                    io::Write::write_all(&mut file, b"more").unwrap();
                    appended = true;
                }
            })
            .unwrap();
        assert!(appended);
        assert!(cache.entries.lock().is_empty());
        // Unchanged while hashed: remembered.
        cache.manifest(&path, 16 << 10, |_| {}).unwrap();
        assert_eq!(cache.entries.lock().len(), 1);
    }

    /// (Unix: a file name there may be any bytes.)
    #[cfg(unix)]
    #[test]
    fn a_file_whose_path_is_not_utf8_does_not_stop_the_cache_being_saved() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"a\xff.txt"));
        let plain = dir.path().join("b.bin");
        fs::write(&odd, b"odd").unwrap();
        fs::write(&plain, b"plain").unwrap();
        let state = dir.path().join("state");
        let cache = ManifestCache::open(&state);
        cache.manifest(&odd, 16 << 10, |_| {}).unwrap();
        cache.manifest(&plain, 16 << 10, |_| {}).unwrap();
        cache.flush();
        let again = ManifestCache::open(&state);
        let remembered: Vec<PathBuf> = again.entries.lock().keys().cloned().collect();
        assert_eq!(remembered, [dunce::canonicalize(&plain).unwrap()]);
    }

    #[test]
    fn a_file_dated_before_1970_is_remembered_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.bin");
        fs::write(&path, vec![1u8; 20_000]).unwrap();
        let long_ago = std::time::UNIX_EPOCH - std::time::Duration::from_secs(86_400);
        let dated = fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(long_ago));
        if dated.is_err() {
            return; // A file system that cannot date a file so early.
        }
        let state = dir.path().join("state");
        let cache = ManifestCache::open(&state);
        cache.manifest(&path, 16 << 10, |_| {}).unwrap();
        // Saved, and read back: the manifest comes from the cache.
        let again = ManifestCache::open(&state);
        assert_eq!(again.entries.lock().len(), 1);
        let mut hashed = 0;
        again.manifest(&path, 16 << 10, |n| hashed += n).unwrap();
        assert_eq!(hashed, 0, "hashed again");
    }

    #[test]
    fn big_files_get_bigger_pieces() {
        assert_eq!(
            piece_size_for(1 << 30, 256 << 10),
            256 << 10,
            "1 GiB: 4096 pieces"
        );
        assert_eq!(
            piece_size_for(20 << 30, 256 << 10),
            1 << 20,
            "20 GiB: 20480 pieces of 1 MiB"
        );
        assert_eq!(
            piece_size_for(1 << 50, 16 << 10),
            16 << 20,
            "never past 16 MiB"
        );
    }

    #[test]
    fn an_unchanged_file_is_hashed_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.bin");
        fs::write(&file, vec![7u8; 50_000]).unwrap();
        let cache = ManifestCache::open(dir.path());
        let mut hashed = 0;
        let first = cache.manifest(&file, 16384, |_| hashed += 1).unwrap();
        assert!(hashed > 0);
        // A new cache object reads the saved file: no hashing.
        let cache = ManifestCache::open(dir.path());
        let mut hashed_again = 0;
        let second = cache.manifest(&file, 16384, |_| hashed_again += 1).unwrap();
        let key = second.key();
        assert_eq!((first, hashed_again), (second, 0));
        // Another piece size is another manifest.
        assert_eq!(
            cache.manifest(&file, 32768, |_| {}).unwrap().piece_size(),
            32768
        );
        // Another file put in its place with the same size and time (as
        // `cp -p` does) is hashed anew, where files can be told apart.
        if cfg!(unix) {
            let when = fs::metadata(&file).unwrap().modified().unwrap();
            let other = dir.path().join("other.bin");
            fs::write(&other, vec![8u8; 50_000]).unwrap();
            fs::File::options()
                .write(true)
                .open(&other)
                .and_then(|f| f.set_modified(when))
                .unwrap();
            fs::rename(&other, &file).unwrap();
            let mut hashed_anew = 0;
            let third = cache.manifest(&file, 16384, |_| hashed_anew += 1).unwrap();
            assert!(hashed_anew > 0);
            assert_ne!(third.key(), key);
        }
    }

    #[test]
    fn files_hashed_one_after_another_are_all_remembered_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..20u8)
            .map(|n| {
                let file = dir.path().join(format!("f{n}.bin"));
                fs::write(&file, vec![n; 1000]).unwrap();
                file
            })
            .collect();
        let cache = ManifestCache::open(dir.path());
        for file in &files {
            cache.manifest(file, 16384, |_| {}).unwrap();
        }
        // Saved at most every 2 s as they come; the rest when the peer stops.
        cache.flush();
        let reopened = ManifestCache::open(dir.path());
        let mut hashed = 0;
        for file in &files {
            reopened.manifest(file, 16384, |_| hashed += 1).unwrap();
        }
        assert_eq!(hashed, 0, "every manifest came from the saved cache");
    }

    #[test]
    fn a_garbled_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("manifests.bin"),
            b"\xff\xff\xff\xff garbage",
        )
        .unwrap();
        let file = dir.path().join("x");
        fs::write(&file, b"abc").unwrap();
        let manifest = ManifestCache::open(dir.path())
            .manifest(&file, 16384, |_| {})
            .unwrap();
        assert_eq!(manifest.size(), 3);
    }

    #[test]
    fn a_cache_too_big_or_with_bytes_after_its_end_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        fs::write(&file, b"abc").unwrap();
        let cache_path = dir.path().join("manifests.bin");
        // A good cache of one entry...
        ManifestCache::open(dir.path())
            .manifest(&file, 16384, |_| {})
            .unwrap();
        assert_eq!(ManifestCache::open(dir.path()).entries.lock().len(), 1);
        // ... with bytes after its end is not that cache.
        let mut bytes = fs::read(&cache_path).unwrap();
        bytes.extend_from_slice(b"junk");
        fs::write(&cache_path, &bytes).unwrap();
        assert!(ManifestCache::open(dir.path()).entries.lock().is_empty());
        // Past the limit (sparse: no disk used): refused unread.
        fs::File::create(&cache_path)
            .unwrap()
            .set_len(CACHE_LIMIT as u64 + 1)
            .unwrap();
        let cache = ManifestCache::open(dir.path());
        assert!(cache.entries.lock().is_empty());
        assert_eq!(cache.manifest(&file, 16384, |_| {}).unwrap().size(), 3);
        // A device (without end, here) is not read at all.
        if cfg!(unix) {
            let error = super::super::fsutil::read_at_most(Path::new("/dev/zero"), 1 << 20);
            assert_eq!(error.unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
    }
}
