//! Preparing a file for sharing: its manifest, hashed
//! once and remembered in a small cache (serde + bincode, in the peer's
//! state directory) keyed by path, size and modification time, so an
//! unchanged file is not hashed again.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use log::{debug, warn};
use parking_lot::Mutex;

use crate::pieces::Manifest;

use super::fsutil::{modified_ns, write_atomically};

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

/// Largest cache file read back (a bound for a corrupted file).
const CACHE_LIMIT: usize = 256 * 1024 * 1024;

/// Manifests of files already hashed.
#[derive(Debug)]
pub struct ManifestCache {
    path: PathBuf,
    entries: Mutex<HashMap<PathBuf, CachedManifest>>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CachedManifest {
    size: u64,
    modified_ns: u128,
    piece_size: u32,
    /// The canonical text: parsed (so checked) again when used.
    manifest: String,
}

impl ManifestCache {
    /// The cache kept in `state_dir`; an unreadable cache starts empty.
    pub fn open(state_dir: &Path) -> ManifestCache {
        let path = state_dir.join("manifests.bin");
        let entries = fs::read(&path)
            .ok()
            .and_then(|bytes| {
                let config = bincode::config::standard().with_limit::<CACHE_LIMIT>();
                match bincode::serde::decode_from_slice(&bytes, config) {
                    Ok((entries, _)) => Some(entries),
                    Err(e) => {
                        warn!(
                            "manifest cache {} is unreadable ({e}); starting afresh",
                            path.display()
                        );
                        None
                    }
                }
            })
            .unwrap_or_default();
        ManifestCache {
            path,
            entries: Mutex::new(entries),
        }
    }

    /// The manifest of `path` with `piece_size`, from the cache when the
    /// file is unchanged, else hashed now (`progress` gets bytes hashed).
    pub fn manifest(
        &self,
        path: &Path,
        piece_size: u32,
        progress: impl FnMut(u64),
    ) -> io::Result<Manifest> {
        let canonical = fs::canonicalize(path)?;
        let meta = fs::metadata(&canonical)?;
        let modified_ns = modified_ns(&meta);
        if let Some(cached) = self.entries.lock().get(&canonical) {
            if cached.size == meta.len()
                && cached.modified_ns == modified_ns
                && cached.piece_size == piece_size
            {
                if let Ok(manifest) = Manifest::parse(cached.manifest.as_bytes()) {
                    debug!("manifest of {} from the cache", path.display());
                    return Ok(manifest);
                }
            }
        }
        let manifest = Manifest::from_path(&canonical, piece_size, progress)?;
        self.entries.lock().insert(
            canonical,
            CachedManifest {
                size: manifest.size(),
                modified_ns,
                piece_size,
                manifest: manifest.to_string(),
            },
        );
        if let Err(e) = self.save() {
            warn!(
                "cannot save the manifest cache {}: {e}",
                self.path.display()
            );
        }
        Ok(manifest)
    }

    /// Writes the cache atomically (a temporary file, synced, then
    /// renamed), holding the lock so two saves cannot interleave.
    fn save(&self) -> io::Result<()> {
        let entries = self.entries.lock();
        let bytes = bincode::serde::encode_to_vec(&*entries, bincode::config::standard())
            .map_err(io::Error::other)?;
        write_atomically(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((first, hashed_again), (second, 0));
        // Another piece size is another manifest.
        assert_eq!(
            cache.manifest(&file, 32768, |_| {}).unwrap().piece_size(),
            32768
        );
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
}
