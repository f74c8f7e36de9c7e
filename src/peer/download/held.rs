//! A download of a file this peer already holds, complete and verified
//! (shared, or downloaded before): it is done at once where the file is,
//! and elsewhere it is a local copy, checked against the manifest as it is
//! copied, never a second trip through the swarm.

use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use log::info;

use crate::pieces::Manifest;
use crate::protocol::FileName;

use super::super::fsutil::{
    hash_stream, portable_file_name, rename_no_replace, same_file, same_folder, sync_parent_dir,
};
use super::super::library::SharedFile;
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
/// copy made there, through a temporary file locked while the copy is
/// under way (so that a failure never removes a file another copy is
/// making), flushed first when `sync`. A different file under the name asked is left alone.
pub(super) fn deliver(
    held: &SharedFile,
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
    let (temp, mut out) = new_temp_file(dir, &saved_as).map_err(|e| {
        Undelivered::Failed(format!("cannot make a file in {}: {e}", dir.display()))
    })?;
    // Made here: removed again on any failure.
    let copied = copy_checked(&at, &mut out, &held.manifest, cancel).and_then(|()| {
        if sync {
            out.sync_all().map_err(|e| {
                Undelivered::Failed(format!("cannot flush {}: {e}", temp.display()))
            })?;
        }
        // Renamed while still locked: until its old name is gone, no other
        // copy may take the file for a leftover and empty it.
        rename_no_replace(&temp, &wanted)
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

/// A hidden file in `dir` to copy `saved_as` into (`.copy-<n>.<name>.part`,
/// the name cut to fit), locked for as long as the copy is under way. A
/// file of that name that no process holds locked is what a copy killed
/// half-way left: it is emptied and used again, so such leftovers never
/// pile up. A locked one is another copy's, under way: left alone.
fn new_temp_file(dir: &Path, saved_as: &str) -> io::Result<(PathBuf, File)> {
    let mut last = io::Error::other("no name left");
    for n in 0..64 {
        let temp = dir.join(part_file_name(&format!(".copy-{n}.{saved_as}")));
        let (file, made_here) = match File::options().write(true).create_new(true).open(&temp) {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                match File::options().write(true).open(&temp) {
                    Ok(file) => (file, false),
                    Err(e) => {
                        last = e;
                        continue;
                    }
                }
            }
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                return Ok((temp, file));
            }
            // A file system without locks: only a file made here is ours.
            Err(TryLockError::Error(_)) if made_here => return Ok((temp, file)),
            Err(TryLockError::Error(e)) => last = e,
            // Another copy's (perhaps one that took over the file this
            // call had just made).
            Err(TryLockError::WouldBlock) => {
                last = io::Error::new(io::ErrorKind::AlreadyExists, "a copy is under way")
            }
        }
    }
    Err(last)
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
    fn a_killed_copy_s_leftover_is_used_again_and_a_copy_under_way_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let leftover = dir.path().join(".copy-0.song.bin.part");
        fs::write(&leftover, b"half of a copy that was killed").unwrap();

        let (temp, first) = new_temp_file(dir.path(), "song.bin").unwrap();
        assert_eq!(temp, leftover, "the leftover is taken over");
        assert_eq!(fs::metadata(&temp).unwrap().len(), 0, "and emptied");

        // While `first` is under way (its file locked), a second copy of
        // the same name gets a file of its own, and the first is untouched.
        (&first).write_all(b"under way").unwrap();
        let (other, _second) = new_temp_file(dir.path(), "song.bin").unwrap();
        assert_eq!(other, dir.path().join(".copy-1.song.bin.part"));
        drop(first); // Windows' locks keep out even readers.
        assert_eq!(fs::read(&temp).unwrap(), b"under way");
    }
}
