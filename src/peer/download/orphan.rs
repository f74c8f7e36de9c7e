//! A `.part` file found where a new download would make its own, with no
//! download of this peer behind it: what a download left when its state
//! was lost (the state folder deleted, moved, or a relative one used from
//! another working directory, or a crash between making the `.part` file
//! and recording it), or a file another peer is writing. A regular file
//! that nobody holds locked and that has the file's exact size is taken
//! up: every piece in it is checked, and the right ones are kept. One with
//! no right piece is taken up only if it holds nothing but zeros (a
//! download stopped before its first piece); anything else there is some
//! other file, and is left alone. Where the file system has no locks,
//! nothing can tell, and it is left alone.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{info, warn};

use crate::pieces::{Bitmap, Manifest, PieceFile};
use crate::protocol::{FileKey, FileName};

use super::super::fsutil;
use super::super::library::SharedFile;
use super::super::resume;
use super::{DownloadContext, DownloadPlan};

/// Takes up the `.part` file at `part_path` for `plan`'s download of the
/// file `manifest` describes, or says why it is left alone.
pub(super) fn take_up(
    context: &DownloadContext,
    plan: &DownloadPlan,
    manifest: Manifest,
    part_path: &Path,
    cancel: &AtomicBool,
) -> Result<SharedFile, String> {
    let name = plan.name.as_str();
    let shown = part_path.display();
    // Another file of this peer downloading into it (another file of the
    // same name under another key; or, on a file system that ignores case
    // or accents' form, as macOS's and Windows' do, a name that differs
    // only so: the same file on disk).
    if let Some(other) = context.library.all().into_iter().find(|file| {
        file.key != plan.key
            && (file.path() == part_path || fsutil::same_file(&file.path(), part_path))
    }) {
        return Err(held_by_another_download(
            part_path,
            &plan.name,
            other.key,
            &other.name,
        ));
    }
    // Only a regular file is taken up, never through a link.
    let part = PieceFile::open_rw(part_path).map_err(|e| format!("{shown} is there: {e}"))?;
    match part.try_lock() {
        Ok(true) => {}
        Ok(false) => return Err(being_written(part_path)),
        Err(e) => {
            return Err(format!(
                "{shown} is there with no record of its download, and this file system \
                 cannot tell whether another peer writes it ({e}); delete it to start over"
            ))
        }
    }
    // Measured through the handle locked: the file that is taken up.
    let len = part
        .as_file()
        .metadata()
        .map_err(|e| format!("{shown}: {e}"))?
        .len();
    if len != manifest.size() {
        return Err(format!(
            "{shown} is there already, {len} bytes where {name} has {}: not a download of \
             this file; move it away, or delete it to start over",
            manifest.size()
        ));
    }
    let pieces = manifest.piece_count();
    let bitmap = resume::verified_pieces_until(&manifest, &part, &Bitmap::full(pieces), cancel)
        .ok_or("cancelled")?;
    if bitmap.count() == 0 && !holds_only_zeros(&manifest, &part, cancel)? {
        return Err(format!(
            "{shown} is there already, with the size of {name} but none of its pieces: \
             not a download of this file (or one stopped while it wrote its first piece); \
             move it away, or delete it to start over"
        ));
    }
    context
        .resume
        .begin(&plan.name, plan.kind, part_path, &manifest)
        .map_err(|e| format!("cannot save the download's state: {e}"))?;
    info!(
        "{name}: {shown} was there with no record of its download; {} of {pieces} pieces \
         in it verified",
        bitmap.count()
    );
    let shared = SharedFile::partial(
        plan.name.clone(),
        plan.kind,
        manifest,
        part_path,
        part,
        bitmap,
    );
    if let Err(e) = context.resume.save(&shared.key, &shared.bitmap()) {
        warn!("{name}: cannot save progress: {e}");
    }
    Ok(shared)
}

/// Whether every byte of `part` is zero: what a download leaves that was
/// stopped before it wrote a piece. Stops at the first byte that is not.
fn holds_only_zeros(
    manifest: &Manifest,
    part: &PieceFile,
    cancel: &AtomicBool,
) -> Result<bool, String> {
    let mut buf = Vec::new();
    for index in 0..manifest.piece_count() {
        if cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        part.read_piece(manifest, index, &mut buf)
            .map_err(|e| format!("cannot read the .part file: {e}"))?;
        if buf.iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Why a `.part` file is left alone: it is the unfinished download, by
/// this peer, of the file `other_key`, named `other_name`, where the
/// download of `name` would make its own.
pub(super) fn held_by_another_download(
    part_path: &Path,
    name: &FileName,
    other_key: FileKey,
    other_name: &FileName,
) -> String {
    let (name, other_name) = (name.as_str(), other_name.as_str());
    let named = if other_name == name {
        format!("another file named {name}")
    } else {
        format!("{other_name}, a name this file system does not tell apart from {name}")
    };
    format!(
        "{} holds the unfinished download of {named} ({other_key}); \
         finish or stop that one first, or move it away",
        part_path.display()
    )
}

/// Why a `.part` file is left alone: another peer holds its lock.
pub(super) fn being_written(part_path: &Path) -> String {
    format!(
        "{} is being written by another peer on this machine",
        part_path.display()
    )
}
