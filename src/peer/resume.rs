//! Download state that survives a crash, so a restarted peer continues from
//! the pieces it had already verified.
//!
//! Each unfinished download has two small files in `<state_dir>/downloads/`:
//! - `<key>.download`, written once when the download starts: the file's
//!   name, kind, `.part` path and manifest (checked against the key when
//!   read back, so it cannot lie);
//! - `<key>.resume`, rewritten about every second (temporary file and
//!   rename, not synced): the BufferMap.
//!
//! The `.part` file is not flushed before the BufferMap is saved (that
//! would stall a download for as long as the disk takes), so after a crash
//! or a power cut the BufferMap may claim pieces that never reached the
//! disk. It is therefore only a list of pieces to check: on load, every
//! claimed piece is read back and checked against the manifest (SHA-256 at
//! over 1 GB/s, a second or so per GiB), and only the right ones count. A
//! garbled or truncated `.resume` file is reported and rebuilt by checking
//! every piece of the `.part` file. Both files are [`super::stored`] records.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use log::{info, warn};

use crate::pieces::{Bitmap, Manifest, PieceFile};
use crate::protocol::{FileKey, FileName, MediaKind};

use super::fsutil::{portable_file_name, replace_file, same_file, write_atomically, Durability};
use super::stored::{decode, encode, leading_version};

/// Version of both record formats.
const VERSION: u32 = 2;
/// Largest record read back (a manifest of the largest file, and some).
const RECORD_LIMIT: usize = 96 * 1024 * 1024;

/// What is known about a download from the moment it starts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct DownloadRecord {
    version: u32,
    name: String,
    kind: MediaKind,
    part_path: PathBuf,
    manifest: String,
}

/// How far a download had come when last saved.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ProgressRecord {
    version: u32,
    bitmap: Vec<u8>,
}

/// Why a saved download cannot be resumed now.
#[derive(Debug)]
pub enum LoadError {
    /// The state is wrong or its `.part` file is gone: forget it.
    Invalid(String),
    /// Something that may pass (permissions, a disk not mounted yet): keep
    /// the state for a later start.
    Unavailable(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Invalid(reason) | LoadError::Unavailable(reason) => f.write_str(reason),
        }
    }
}

/// The error for a file that could not be read: gone means invalid, any
/// other failure may pass. Gone with its whole folder may pass too: a
/// disk not mounted yet, say.
fn file_error(path: &Path, e: io::Error) -> LoadError {
    let reason = format!("{}: {e}", path.display());
    if e.kind() == io::ErrorKind::InvalidData
        || (e.kind() == io::ErrorKind::NotFound && !super::fsutil::folder_missing(path))
    {
        LoadError::Invalid(reason)
    } else {
        LoadError::Unavailable(reason)
    }
}

/// An unfinished download found at start, checked and ready to go on.
#[derive(Debug)]
pub struct Resumed {
    pub name: FileName,
    pub kind: MediaKind,
    pub manifest: Manifest,
    pub part_path: PathBuf,
    pub part: PieceFile,
    pub bitmap: Bitmap,
}

/// The directory of download states.
#[derive(Debug, Clone)]
pub struct ResumeStore {
    dir: PathBuf,
}

impl ResumeStore {
    /// The store in `<state_dir>/downloads`.
    pub fn new(state_dir: &Path) -> ResumeStore {
        ResumeStore {
            dir: state_dir.join("downloads"),
        }
    }

    fn download_path(&self, key: &FileKey) -> PathBuf {
        self.dir.join(format!("{key}.download"))
    }

    fn resume_path(&self, key: &FileKey) -> PathBuf {
        self.dir.join(format!("{key}.resume"))
    }

    /// Records a download that starts into `part_path`.
    pub fn begin(
        &self,
        name: &FileName,
        kind: MediaKind,
        part_path: &Path,
        manifest: &Manifest,
    ) -> io::Result<()> {
        let record = DownloadRecord {
            version: VERSION,
            name: name.as_str().to_string(),
            kind,
            part_path: part_path.to_path_buf(),
            manifest: manifest.to_string(),
        };
        write_atomically(&self.download_path(&manifest.key()), &encode(&record)?)
    }

    /// Saves which pieces are verified (written, maybe not yet on disk:
    /// [`ResumeStore::load`] checks them all). A record that cannot be
    /// replaced (a full disk) is removed: the old one would claim fewer
    /// pieces than are there, and those would be fetched again; with none,
    /// a restart checks every piece of the `.part` file.
    pub fn save(&self, key: &FileKey, bitmap: &Bitmap) -> io::Result<()> {
        let record = ProgressRecord {
            version: VERSION,
            bitmap: bitmap.to_field().0,
        };
        let path = self.resume_path(key);
        // Not synced: the record is only a list of pieces to check.
        let saved =
            encode(&record).and_then(|bytes| replace_file(&path, &bytes, Durability::Unsynced));
        if saved.is_err() {
            let _ = fs::remove_file(&path);
        }
        saved
    }

    /// The folder the records are kept in (for messages).
    pub fn folder(&self) -> &Path {
        &self.dir
    }

    /// Forgets a download (finished, or its `.part` file is gone).
    pub fn forget(&self, key: &FileKey) {
        let _ = fs::remove_file(self.resume_path(key));
        let _ = fs::remove_file(self.download_path(key));
    }

    /// Every unfinished download in the store, each checked. Problems are
    /// logged; a state that cannot be used is removed (its `.part` file is
    /// left where it is).
    pub fn load_all(&self) -> Vec<Resumed> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut resumed = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".download"))
                .and_then(|k| FileKey::parse(k).ok())
            else {
                continue;
            };
            match self.load(&key) {
                Ok(download) => resumed.push(download),
                Err(LoadError::Invalid(reason)) => {
                    warn!("cannot resume {key}: {reason}; forgetting it");
                    self.forget(&key);
                }
                Err(LoadError::Unavailable(reason)) => {
                    warn!("cannot resume {key} now: {reason}; its state is kept for a later start");
                }
            }
        }
        resumed
    }

    /// Loads and checks one download's state.
    pub fn load(&self, key: &FileKey) -> Result<Resumed, LoadError> {
        let record_path = self.download_path(key);
        let bytes = read_record(&record_path).map_err(|e| file_error(&record_path, e))?;
        let invalid = |what: String| LoadError::Invalid(format!("download record: {what}"));
        // A newer swarmline's record (after a downgrade): kept for the
        // version that wrote it, whatever its layout. (Formats 1 and 2 of
        // this record are the same: only the progress record changed.)
        if let Some(newer) = leading_version(&bytes).filter(|&v| v > VERSION) {
            return Err(LoadError::Unavailable(format!(
                "its record is of format {newer}, newer than this peer reads ({VERSION})"
            )));
        }
        let record: DownloadRecord =
            decode::<_, RECORD_LIMIT>(&bytes).map_err(|e| invalid(format!("unreadable: {e}")))?;
        let manifest = Manifest::parse_for_key(record.manifest.as_bytes(), key)
            .map_err(|e| invalid(e.to_string()))?;
        let name = FileName::new(&record.name).map_err(|e| invalid(e.to_string()))?;
        let part_path = record.part_path;
        // Only this file's own `.part` is ever opened from a record: one
        // naming any other file (damaged, or written by hand) would have
        // the download cut, write into and rename a file of the user's.
        let part_name = super::download::part_file_name(&portable_file_name(name.as_str()));
        if !part_path.is_absolute() || part_path.file_name() != Some(part_name.as_ref()) {
            return Err(invalid(format!(
                "{} is not where a download of {} keeps its pieces (an absolute path ending \
                 in {part_name}); no file there is touched",
                part_path.display(),
                name.as_str()
            )));
        }
        // A second name of the final file: most likely a stop between the
        // two steps of the final rename (the new name made, the old one not
        // removed yet). The .part name alone goes; the final file is left
        // as it is, and a new download of the file checks it (and says so
        // if it is not this file whole).
        let final_path = part_path.with_file_name(portable_file_name(name.as_str()));
        if final_path != part_path && same_file(&part_path, &final_path) {
            let _ = fs::remove_file(&part_path);
            return Err(LoadError::Invalid(format!(
                "{} is a second name of {} (stopped as it got its final name?): the .part \
                 name is removed; download the file again to have it checked",
                part_path.display(),
                final_path.display()
            )));
        }
        let part_len = fs::metadata(&part_path)
            .map_err(|e| file_error(&part_path, e))?
            .len();
        let part = PieceFile::open_rw(&part_path).map_err(|e| file_error(&part_path, e))?;
        // Another peer started on the same state folder resumes it already.
        if let Ok(false) = part.try_lock() {
            return Err(LoadError::Unavailable(format!(
                "{}: in use by another peer on this machine",
                part_path.display()
            )));
        }
        let pieces = manifest.piece_count();

        let resume_path = self.resume_path(key);
        let claimed = match read_record(&resume_path) {
            // Stopped before its first progress save: nothing claimed yet,
            // every piece of the .part file is checked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                info!(
                    "{}: no progress saved yet; checking every piece of {}",
                    name.as_str(),
                    part_path.display()
                );
                Ok(Bitmap::full(pieces))
            }
            read => read
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode::<ProgressRecord, RECORD_LIMIT>(&bytes))
                .and_then(|p| {
                    if p.version != VERSION {
                        return Err(format!("version {}, expected {VERSION}", p.version));
                    }
                    Bitmap::from_bytes(p.bitmap, pieces).map_err(|e| e.to_string())
                }),
        }
        .unwrap_or_else(|reason| {
            warn!(
                "resume file of {} is unreadable ({reason}); rebuilding it from {}",
                name.as_str(),
                part_path.display()
            );
            Bitmap::full(pieces)
        });
        let bitmap = verified_pieces(&manifest, &part, &claimed);
        if part_len != manifest.size() {
            part.set_len(manifest.size())
                .map_err(|e| file_error(&part_path, e))?;
        }
        info!(
            "{}: {} of {} pieces verified in {}",
            name.as_str(),
            bitmap.count(),
            pieces,
            part_path.display()
        );
        Ok(Resumed {
            name,
            kind: record.kind,
            manifest,
            part_path,
            part,
            bitmap,
        })
    }
}

/// The claimed pieces that really are right in `part`, every one checked.
pub(super) fn verified_pieces(manifest: &Manifest, part: &PieceFile, claimed: &Bitmap) -> Bitmap {
    verified_pieces_until(manifest, part, claimed, &AtomicBool::new(false))
        .unwrap_or_else(|| Bitmap::empty(claimed.len()))
}

/// [`verified_pieces`], stopping (`None`) once `cancel` is set.
pub(super) fn verified_pieces_until(
    manifest: &Manifest,
    part: &PieceFile,
    claimed: &Bitmap,
    cancel: &AtomicBool,
) -> Option<Bitmap> {
    let mut verified = Bitmap::empty(claimed.len());
    let mut buf = Vec::new();
    for index in (0..claimed.len()).filter(|&i| claimed.has(i)) {
        if cancel.load(Ordering::SeqCst) {
            return None;
        }
        if piece_is_right(manifest, part, index, &mut buf) {
            verified.set(index);
        }
    }
    Some(verified)
}

fn piece_is_right(manifest: &Manifest, part: &PieceFile, index: usize, buf: &mut Vec<u8>) -> bool {
    part.read_piece(manifest, index, buf).is_ok() && manifest.verify_piece(index, buf)
}

/// The bytes of a record file, refused (`InvalidData`) past
/// [`RECORD_LIMIT`] without reading more than that: a damaged or foreign
/// file in the state folder must not fill the memory.
fn read_record(path: &Path) -> io::Result<Vec<u8>> {
    super::fsutil::read_at_most(path, RECORD_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: usize = 16 * 1024;

    /// A download of `data` with pieces `held` written, saved in `store`.
    fn saved_download(dir: &Path, data: &[u8], held: &[usize]) -> (ResumeStore, Manifest, PathBuf) {
        saved_download_into(dir, dir, data, held)
    }

    /// Like [`saved_download`], with the `.part` file in `part_dir`.
    fn saved_download_into(
        dir: &Path,
        part_dir: &Path,
        data: &[u8],
        held: &[usize],
    ) -> (ResumeStore, Manifest, PathBuf) {
        let manifest = Manifest::build(data, PIECE as u32, |_| {}).unwrap();
        let store = ResumeStore::new(&dir.join("state"));
        fs::create_dir_all(part_dir).unwrap();
        let part_path = part_dir.join("f.bin.part");
        let part = PieceFile::create(&part_path, manifest.size()).unwrap();
        let mut bitmap = Bitmap::empty(manifest.piece_count());
        for &i in held {
            part.write_piece(
                &manifest,
                i,
                &data[i * PIECE..((i + 1) * PIECE).min(data.len())],
            )
            .unwrap();
            bitmap.set(i);
        }
        part.sync().unwrap();
        let name = FileName::new("f.bin").unwrap();
        store
            .begin(&name, MediaKind::Other, &part_path, &manifest)
            .unwrap();
        store.save(&manifest.key(), &bitmap).unwrap();
        (store, manifest, part_path)
    }

    fn data() -> Vec<u8> {
        (0..10 * PIECE).map(|i| (i * 31 % 253) as u8).collect()
    }

    #[test]
    fn a_saved_download_resumes_with_its_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, _) = saved_download(dir.path(), &data(), &[0, 3, 9]);
        let resumed = store.load_all();
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].bitmap.missing().count(), 7);
        assert!([0, 3, 9].iter().all(|&i| resumed[0].bitmap.has(i)));
        assert_eq!(resumed[0].manifest, manifest);
    }

    /// (Unix: elsewhere two names of one file cannot be told apart; a
    /// resumed download then finds the final file in place and checks it.)
    #[cfg(unix)]
    #[test]
    fn a_download_stopped_between_the_two_steps_of_its_rename_keeps_its_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, part_path) = saved_download(dir.path(), &data(), &[0]);
        // The new name made, the old one not removed yet.
        let final_path = part_path.with_file_name("f.bin");
        fs::hard_link(&part_path, &final_path).unwrap();
        match store.load(&manifest.key()) {
            Err(LoadError::Invalid(reason)) => {
                assert!(reason.contains("is a second name of"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!part_path.exists(), "the .part name is removed");
        assert_eq!(fs::metadata(&final_path).unwrap().len(), manifest.size());
    }

    #[test]
    fn progress_that_cannot_be_saved_leaves_every_piece_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let data = data();
        let (store, manifest, part_path) = saved_download(dir.path(), &data, &[0, 3]);
        // Piece 5 comes, and its save fails (a full disk, here a folder
        // where the record's temporary file goes).
        let part = PieceFile::open_rw(&part_path).unwrap();
        part.write_piece(&manifest, 5, &data[5 * PIECE..6 * PIECE])
            .unwrap();
        drop(part);
        let resume = store.resume_path(&manifest.key());
        let name = resume.file_name().unwrap().to_string_lossy().into_owned();
        let blocker = resume.with_file_name(format!("{name}.tmp-{}", std::process::id()));
        fs::create_dir(&blocker).unwrap();
        let mut held = Bitmap::empty(manifest.piece_count());
        [0, 3, 5].iter().for_each(|&i| held.set(i));
        assert!(store.save(&manifest.key(), &held).is_err());
        fs::remove_dir(&blocker).unwrap();
        // The old record (0 and 3) would have had piece 5 fetched again.
        let resumed = store.load(&manifest.key()).unwrap();
        assert_eq!(resumed.bitmap.held().collect::<Vec<_>>(), [0, 3, 5]);
    }

    #[test]
    fn a_claimed_piece_that_is_not_on_disk_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, part_path) = saved_download(dir.path(), &data(), &[0, 1, 2]);
        // Piece 1 never reached the disk (a power cut after the save).
        let part = PieceFile::open_rw(&part_path).unwrap();
        part.write_piece(&manifest, 1, &vec![0u8; PIECE]).unwrap();
        part.sync().unwrap();
        let resumed = store.load(&manifest.key()).unwrap();
        assert!(resumed.bitmap.has(0) && !resumed.bitmap.has(1) && resumed.bitmap.has(2));
    }

    #[test]
    fn a_garbled_resume_file_is_rebuilt_from_the_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, _) = saved_download(dir.path(), &data(), &[2, 5]);
        let resume = store.resume_path(&manifest.key());
        let mut bytes = fs::read(&resume).unwrap();
        bytes.truncate(bytes.len() / 2);
        fs::write(&resume, bytes).unwrap();
        let resumed = store.load(&manifest.key()).unwrap();
        assert_eq!(resumed.bitmap.count(), 2);
        assert!(resumed.bitmap.has(2) && resumed.bitmap.has(5));
    }

    #[test]
    fn an_oversized_record_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, _) = saved_download(dir.path(), &data(), &[2]);
        // Sparse where the system allows: the file claims just over the
        // limit, the disk holds next to nothing.
        let grow = |path: PathBuf| {
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(RECORD_LIMIT as u64 + (1 << 20))
                .unwrap();
        };
        grow(store.resume_path(&manifest.key()));
        let resumed = store.load(&manifest.key()).unwrap();
        assert_eq!(resumed.bitmap.count(), 1, "rebuilt from the part file");
        grow(store.download_path(&manifest.key()));
        match store.load(&manifest.key()) {
            Err(LoadError::Invalid(reason)) => {
                assert!(reason.ends_with("over 96 MiB"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_state_whose_part_file_is_gone_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, part_path) = saved_download(dir.path(), &data(), &[1]);
        fs::remove_file(part_path).unwrap();
        assert!(store.load_all().is_empty());
        assert!(!store.download_path(&manifest.key()).exists());
    }

    #[test]
    fn a_state_whose_whole_download_folder_is_gone_is_kept_for_later() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("usb");
        let (store, manifest, _) = saved_download_into(dir.path(), &disk, &data(), &[1, 2]);
        // The disk is not mounted (its folder is not there) at this start...
        fs::rename(&disk, dir.path().join("elsewhere")).unwrap();
        assert!(store.load_all().is_empty());
        assert!(store.download_path(&manifest.key()).exists(), "kept");
        // ... and is at the next.
        fs::rename(dir.path().join("elsewhere"), &disk).unwrap();
        let resumed = store.load_all();
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].bitmap.count(), 2);
    }

    #[test]
    fn a_record_of_a_newer_format_is_kept_and_an_older_one_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, _) = saved_download(dir.path(), &data(), &[1]);
        let path = store.download_path(&manifest.key());
        let record: DownloadRecord = decode::<_, RECORD_LIMIT>(&fs::read(&path).unwrap()).unwrap();
        // A newer version's record, with a field this one does not know.
        let newer = (
            VERSION + 1,
            &record.name,
            record.kind,
            &record.part_path,
            &record.manifest,
            7u64,
        );
        fs::write(&path, encode(&newer).unwrap()).unwrap();
        match store.load(&manifest.key()) {
            Err(LoadError::Unavailable(reason)) => assert!(
                reason.contains(&format!("format {}, newer", VERSION + 1)),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(store.load_all().is_empty());
        assert!(path.exists(), "kept for the version that wrote it");
        // Format 1 (the layout is the same): resumed.
        let older = DownloadRecord {
            version: 1,
            ..record
        };
        fs::write(&path, encode(&older).unwrap()).unwrap();
        assert_eq!(store.load_all().len(), 1);
    }

    #[test]
    fn a_download_record_that_lies_about_its_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, _) = saved_download(dir.path(), &data(), &[1]);
        let other = Manifest::build(&b"other"[..], PIECE as u32, |_| {}).unwrap();
        // Move the record under another key: its manifest no longer matches.
        fs::rename(
            store.download_path(&manifest.key()),
            store.download_path(&other.key()),
        )
        .unwrap();
        let reason = store.load(&other.key()).unwrap_err();
        assert!(matches!(reason, LoadError::Invalid(_)), "{reason}");
        assert!(
            reason.to_string().contains("does not hash to the key"),
            "{reason}"
        );
    }

    #[test]
    fn a_record_that_names_another_file_than_a_part_file_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, manifest, _) = saved_download(dir.path(), &data(), &[1]);
        // The record rewritten (by hand, or damaged) to name a file of the
        // user's: resumed, it would be cut to size, written and renamed.
        let notes = dir.path().join("notes.txt");
        fs::write(&notes, b"my notes").unwrap();
        let name = FileName::new("f.bin").unwrap();
        for named in [notes.clone(), PathBuf::from("f.bin.part")] {
            store
                .begin(&name, MediaKind::Other, &named, &manifest)
                .unwrap();
            let reason = store.load(&manifest.key()).unwrap_err();
            assert!(matches!(reason, LoadError::Invalid(_)), "{reason}");
            assert!(
                reason
                    .to_string()
                    .contains("is not where a download of f.bin keeps its pieces"),
                "{reason}"
            );
        }
        assert_eq!(fs::read(&notes).unwrap(), b"my notes");
    }
}
