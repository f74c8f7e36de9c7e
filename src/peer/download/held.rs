//! A download of a file this peer already holds, complete and verified
//! (shared, or downloaded before): it is done at once where the file is,
//! and elsewhere it is a local copy, checked against the manifest as it is
//! copied, never a second trip through the swarm.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use log::info;
use sha2::{Digest, Sha256};

use crate::pieces::Manifest;

use super::super::fsutil::{rename_no_replace, same_file, sha256_of_file, sync_parent_dir};
use super::super::library::SharedFile;

/// How much is read and written at a time.
const CHUNK: usize = 1 << 20;

/// `held` asked for at `wanted`: `wanted` itself when it is the held file,
/// or a copy already there; else a new copy made there (through a
/// temporary `part` file, flushed first when `sync`). A different file at
/// `wanted` is left alone and the request refused.
pub(super) fn deliver(
    held: &SharedFile,
    wanted: &Path,
    part: &Path,
    sync: bool,
    cancel: &AtomicBool,
) -> Result<PathBuf, String> {
    let at = held.path();
    if same_file(&at, wanted) {
        info!("{}: already here, at {}", held.name.as_str(), at.display());
        return Ok(at);
    }
    if wanted.exists() {
        return if is_a_copy(wanted, &held.manifest)? {
            Ok(wanted.to_path_buf())
        } else {
            Err(format!(
                "{} already exists; move it away or choose another directory",
                wanted.display()
            ))
        };
    }
    info!(
        "{}: held at {}, copied to {}",
        held.name.as_str(),
        at.display(),
        wanted.display()
    );
    if let Some(dir) = wanted.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let copied = File::options()
        .write(true)
        .create_new(true)
        .open(part)
        .map_err(|e| format!("cannot create {}: {e}", part.display()))
        .and_then(|mut out| {
            copy_checked(&at, &mut out, &held.manifest, cancel)?;
            if sync {
                out.sync_all()
                    .map_err(|e| format!("cannot flush {}: {e}", part.display()))?;
            }
            Ok(())
        })
        .and_then(|()| {
            rename_no_replace(part, wanted)
                .map_err(|e| format!("cannot rename {}: {e}", part.display()))
        });
    if let Err(reason) = copied {
        let _ = fs::remove_file(part);
        return Err(reason);
    }
    if sync {
        sync_parent_dir(wanted);
    }
    Ok(wanted.to_path_buf())
}

/// Copies the file at `from` into `out`, checking its size and SHA-256
/// against `manifest` on the way (a file changed on disk since it was
/// shared is not copied).
fn copy_checked(
    from: &Path,
    out: &mut File,
    manifest: &Manifest,
    cancel: &AtomicBool,
) -> Result<(), String> {
    let read_error = |e: io::Error| format!("cannot read {}: {e}", from.display());
    let mut input = File::open(from).map_err(read_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; CHUNK];
    let mut copied: u64 = 0;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        let n = match input.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n])
            .map_err(|e| format!("cannot write the copy: {e}"))?;
        copied += n as u64;
    }
    let hash: [u8; 32] = hasher.finalize().into();
    if copied != manifest.size() || hash != manifest.file_hash() {
        return Err(format!(
            "{} changed on disk since it was shared; not copied",
            from.display()
        ));
    }
    Ok(())
}

/// Whether the file at `path` is the file `manifest` describes.
pub(super) fn is_a_copy(path: &Path, manifest: &Manifest) -> Result<bool, String> {
    let size = fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size != manifest.size() {
        return Ok(false);
    }
    let hash = sha256_of_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(hash == manifest.file_hash())
}
