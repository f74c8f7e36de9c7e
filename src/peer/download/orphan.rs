//! A `.part` file found where a new download would make its own, with no
//! download of this peer behind it: what a download left when its state
//! was lost (the state folder deleted, moved, or a relative one used from
//! another working directory), or a file another peer is writing. One that
//! nobody writes and that has the file's exact size is taken up: every
//! piece in it is checked, and the right ones are kept.

use std::path::Path;

use log::info;

use crate::pieces::{Bitmap, Manifest, PieceFile};

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
) -> Result<SharedFile, String> {
    let name = plan.name.as_str();
    let shown = part_path.display();
    // Another file of this peer downloading into it (another file of the
    // same name, under another key).
    if let Some(other) = context
        .library
        .all()
        .into_iter()
        .find(|file| file.key != plan.key && file.path() == part_path)
    {
        return Err(format!(
            "{shown} holds the unfinished download of another file named {name} ({}); \
             finish or stop that one first, or move it away",
            other.key
        ));
    }
    let part = PieceFile::open_rw(part_path).map_err(|e| format!("{shown}: {e}"))?;
    // Where the file system has no locks, nothing tells: taken up.
    if let Ok(false) = part.try_lock() {
        return Err(format!(
            "{shown} is being written by another peer (on the same state folder?)"
        ));
    }
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
    context
        .resume
        .begin(&plan.name, plan.kind, part_path, &manifest)
        .map_err(|e| format!("cannot save the download's state: {e}"))?;
    let pieces = manifest.piece_count();
    let bitmap = resume::verified_pieces(&manifest, &part, &Bitmap::full(pieces));
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
        log::warn!("{name}: cannot save progress: {e}");
    }
    Ok(shared)
}
