//! A download of a file this peer already holds, complete and verified
//! (shared, or downloaded before): it is done at once where the file is,
//! and elsewhere it is a local copy, checked against the manifest as it is
//! copied, never a second trip through the swarm.

use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use log::info;

use crate::pieces::{file_identity, Manifest};
use crate::protocol::FileName;

use super::super::fsutil::{
    hash_stream, is_copy_temp_name, portable_file_name, rename_no_replace, room_for, same_file,
    same_folder, sync_parent_dir, COPY_PREFIX,
};
use super::super::library::{Library, SharedFile};
use super::{name_taken, part_file_name};

/// Why a held file was not delivered.
#[derive(Debug)]
pub(super) enum Undelivered {
    /// The held file is gone or changed on disk since it was shared: it
    /// is no copy of the file any more, which must come from the swarm.
    HeldGone(String),
    /// Refused, or failed, for the reason said.
    Failed(String),
}

/// `held` asked for as `name` in `dir`: the held file itself when it is
/// that (same folder, same name), or a copy already there; else a new
/// copy made there, through a temporary file of its own, locked while
/// the copy is under way, and flushed first when `sync`. A different file
/// under the name asked is left alone, and so is every file of `library`.
pub(super) fn deliver(
    held: &SharedFile,
    library: &Library,
    dir: &Path,
    name: &FileName,
    sync: bool,
    cancel: &AtomicBool,
) -> Result<PathBuf, Undelivered> {
    let at = held.path();
    let saved_as = portable_file_name(name.as_str());
    let wanted = dir.join(&saved_as);
    let in_place = *name == held.name && at.parent().is_some_and(|own| same_folder(dir, own));
    if in_place || same_file(&at, &wanted) {
        if !held.check_unchanged() {
            return Err(Undelivered::HeldGone(format!(
                "{} is gone or changed on disk since it was shared",
                at.display()
            )));
        }
        info!("{}: already here, at {}", held.name.as_str(), at.display());
        return Ok(at);
    }
    if wanted.exists() {
        // Looked at before it is opened: opening a FIFO would wait.
        if !wanted.is_file() {
            return Err(Undelivered::Failed(name_taken(&wanted)));
        }
        let there = File::open(&wanted);
        return match there.and_then(|file| is_a_copy(&file, &held.manifest, cancel)) {
            Ok(true) => Ok(wanted),
            Ok(false) => Err(Undelivered::Failed(name_taken(&wanted))),
            Err(e) => Err(Undelivered::Failed(format!("{}: {e}", wanted.display()))),
        };
    }
    info!(
        "{}: held at {}, copied to {}",
        held.name.as_str(),
        at.display(),
        wanted.display()
    );
    fs::create_dir_all(dir)
        .map_err(|e| Undelivered::Failed(format!("cannot create {}: {e}", dir.display())))?;
    room_for(dir, held.manifest.size())
        .map_err(|why| Undelivered::Failed(format!("no room for {}: {why}", held.name.as_str())))?;
    let (temp, mut out) = new_temp_file(dir, &saved_as, library).map_err(|e| {
        Undelivered::Failed(format!("cannot make a file in {}: {e}", dir.display()))
    })?;
    // Made here: removed again on any failure.
    let copied = copy_checked(&at, &mut out, &held.manifest, cancel).and_then(|()| {
        if sync {
            out.sync_all().map_err(|e| {
                Undelivered::Failed(format!("cannot flush {}: {e}", temp.display()))
            })?;
        }
        // Renamed while still locked: until its old name is gone, no sweep
        // may take the file for a leftover and remove it.
        let written = out.metadata().ok().and_then(|meta| file_identity(&meta));
        rename_no_replace(&temp, &wanted, written)
            .map_err(|e| Undelivered::Failed(format!("cannot rename {}: {e}", temp.display())))
    });
    if let Err(why) = copied {
        let _ = fs::remove_file(&temp);
        return Err(why);
    }
    drop(out);
    if sync {
        sync_parent_dir(&wanted);
    }
    Ok(wanted)
}

/// A new hidden file in `dir` to copy `saved_as` into, locked for as long
/// as the copy is under way: `.copy-<pid>-<random>.<name>.part` (the name
/// cut to fit), a name never used twice, so that nothing but this copy
/// ever goes by it. What copies killed half-way left in `dir` is removed
/// first ([`sweep_leftovers`]), never a file of `library`.
fn new_temp_file(dir: &Path, saved_as: &str, library: &Library) -> io::Result<(PathBuf, File)> {
    sweep_leftovers(dir, library);
    let mut last = io::Error::other("no name left");
    for _ in 0..16 {
        let temp = dir.join(part_file_name(&format!(
            "{COPY_PREFIX}{}-{:016x}.{saved_as}",
            std::process::id(),
            fastrand::u64(..)
        )));
        let file = match File::options().write(true).create_new(true).open(&temp) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = e;
                continue;
            }
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            // Locked before any sweep could take it for a leftover: unless
            // one did just before, and removed it.
            Ok(()) if temp.exists() => return Ok((temp, file)),
            Ok(()) => {}
            // A file system without locks: the name is this copy's alone.
            Err(TryLockError::Error(_)) => return Ok((temp, file)),
            // A sweep holds it, and removes it: another name.
            Err(TryLockError::WouldBlock) => {}
        }
    }
    Err(last)
}

/// Removes from `dir` the temporary files of copies killed half-way:
/// files named as [`new_temp_file`] names them that no process holds
/// locked, and that this peer does not share (a file the user registered
/// under such a name is the user's). (Where the file system has no locks,
/// nothing is removed.)
fn sweep_leftovers(dir: &Path, library: &Library) {
    // Listed at the first file so named (most sweeps find none).
    let mut shared: Option<Vec<PathBuf>> = None;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_copy = entry.file_name().to_str().is_some_and(is_copy_temp_name);
        if !is_copy || !entry.file_type().is_ok_and(|kind| kind.is_file()) {
            continue;
        }
        let path = entry.path();
        let shared =
            shared.get_or_insert_with(|| library.all().iter().map(|file| file.path()).collect());
        if shared.iter().any(|file| same_file(file, &path)) {
            continue;
        }
        let Ok(file) = File::options().write(true).open(&path) else {
            continue;
        };
        // Its name is never given again, so the file at `path` is the one
        // locked here, or none at all (renamed since by the copy that
        // made it, just before it let go of the lock).
        if file.try_lock().is_ok() && fs::remove_file(&path).is_ok() {
            info!(
                "removed {}, left by a copy that was stopped",
                path.display()
            );
        }
    }
}

/// Copies the file at `from` into `out`, checking its size and SHA-256
/// against `manifest` on the way.
fn copy_checked(
    from: &Path,
    out: &mut File,
    manifest: &Manifest,
    cancel: &AtomicBool,
) -> Result<(), Undelivered> {
    let gone = |why: String| Undelivered::HeldGone(format!("{}: {why}", from.display()));
    let unreadable =
        |e: io::Error| Undelivered::Failed(format!("cannot read {}: {e}", from.display()));
    // Gone, or not the file any more: fetched anew. Any other failure to
    // read it (permissions, a disk error, a lock) is no reason to forget it.
    let input = File::open(from).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => gone(e.to_string()),
        _ => unreadable(e),
    })?;
    let mut writing_failed = false;
    let hashed = hash_stream(input, cancel, |block| {
        out.write_all(block).inspect_err(|_| writing_failed = true)
    });
    match hashed {
        Err(e) if writing_failed => Err(Undelivered::Failed(format!("cannot write the copy: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            Err(Undelivered::Failed("cancelled".into()))
        }
        Err(e) => Err(unreadable(e)),
        Ok(found) if found != (manifest.size(), manifest.file_hash()) => Err(gone(
            "changed on disk since it was shared; not copied".into(),
        )),
        Ok(_) => Ok(()),
    }
}

/// Whether `file` (just opened, read from its start) is the file
/// `manifest` describes: its size, then its SHA-256, read until `cancel`
/// is set.
pub(super) fn is_a_copy(file: &File, manifest: &Manifest, cancel: &AtomicBool) -> io::Result<bool> {
    if file.metadata()?.len() != manifest.size() {
        return Ok(false);
    }
    let found = hash_stream(file, cancel, |_| Ok(()))?;
    Ok(found == (manifest.size(), manifest.file_hash()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_copy_s_leftover_is_removed_and_a_copy_under_way_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(".copy-77-00000000deadbeef.song.bin.part");
        fs::write(&leftover, b"half of a copy that was killed").unwrap();
        let users = dir.path().join(".copy-of-my-notes.part");
        fs::write(&users, b"the user's own").unwrap();
        // Named as a copy's would be, but shared by this peer: the user's.
        let registered = dir.path().join(".copy-78-00000000cafef00d.mine.bin.part");
        fs::write(&registered, b"registered").unwrap();
        let library = Library::new();
        let manifest = Manifest::build(&b"registered"[..], 16384, |_| {}).unwrap();
        let opened = crate::pieces::PieceFile::open(&registered).unwrap();
        let name = FileName::new("mine.bin").unwrap();
        let kind = crate::protocol::MediaKind::Other;
        let shared = SharedFile::complete(name, kind, manifest, &registered, opened).unwrap();
        library.insert(std::sync::Arc::new(shared));

        let (temp, first) = new_temp_file(dir.path(), "song.bin", &library).unwrap();
        assert!(!leftover.exists(), "the leftover is removed");
        assert!(users.exists(), "a file named otherwise is left alone");
        assert!(registered.exists(), "a file this peer shares is left alone");
        assert!(is_copy_temp_name(
            temp.file_name().unwrap().to_str().unwrap()
        ));

        // While `first` is under way (its file locked), another copy of
        // the same name gets a file of its own and leaves the first alone.
        (&first).write_all(b"under way").unwrap();
        let (other, _second) = new_temp_file(dir.path(), "song.bin", &library).unwrap();
        assert_ne!(other, temp);
        drop(first); // Windows' locks keep out even readers.
        assert_eq!(fs::read(&temp).unwrap(), b"under way");
    }
}
