//! File-system steps that must never lose or clobber anything: a name safe
//! to create on every system, a rename that refuses to replace a file, an
//! atomic whole-file write; a file's SHA-256, read in a pass that can be
//! cancelled; and whether two paths are one folder or one file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// A file name that can be created on Linux, macOS and Windows alike: the
/// characters Windows forbids (`< > : " | ? *`) become `_`, a trailing dot
/// or space is dropped, and a device name (`CON`, `NUL`, `COM1`, `COM¹`,
/// `CONIN$`, ...) gets a `_` in front, and so does a name the peer keeps
/// for its copies' temporary files, with or without their `.part`
/// ([`is_copy_temp_name`]: a file saved under one, or a download's `.part`
/// file, would be taken for a killed copy's leftover, and deleted).
/// Names already safe are unchanged.
pub fn portable_file_name(name: &str) -> String {
    let mut safe: String = name
        .chars()
        .map(|c| {
            if "<>:\"|?*".contains(c) || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    while safe.ends_with(['.', ' ']) {
        safe.pop();
    }
    // Windows matches device names on the part before the first dot, with
    // the spaces before that dot dropped (`CON .txt` is the console too).
    let stem = safe
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end_matches(' ')
        .to_ascii_uppercase();
    // COM0 to COM9, and COM¹, COM², COM³ (likewise LPT).
    let numbered = |prefix: &str| {
        let mut rest = stem.strip_prefix(prefix).unwrap_or("").chars();
        matches!(
            (rest.next(), rest.next()),
            (Some('0'..='9' | '\u{b9}' | '\u{b2}' | '\u{b3}'), None)
        )
    };
    let device = matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || numbered("COM")
        || numbered("LPT");
    if device || safe.is_empty() || begins_as_copy_temp_name(&safe) {
        safe.insert(0, '_');
        // One byte more than the longest name, at worst: cut to fit.
        let fits = cut_to(&safe, MAX_NAME_BYTES).len();
        safe.truncate(fits);
        while safe.ends_with(['.', ' ']) {
            safe.pop();
        }
    }
    safe
}

/// The longest file name, in bytes, that every system takes (Windows
/// counts UTF-16 units, never more than the bytes).
pub const MAX_NAME_BYTES: usize = 255;

/// `name` cut to at most `max` bytes, on a character boundary.
pub fn cut_to(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// How every temporary file of a copy of a held file into another folder
/// begins (see `download::held`).
pub const COPY_PREFIX: &str = ".copy-";

/// Whether `name` is one a copy's temporary file gets:
/// `.copy-<digits>-<16 hex digits>.<name>.part`. Files so named that no
/// process holds locked are deleted as a killed copy's leftovers, so no
/// download is ever saved under such a name, nor its `.part` file
/// ([`portable_file_name`]).
pub fn is_copy_temp_name(name: &str) -> bool {
    begins_as_copy_temp_name(name) && name.ends_with(".part")
}

/// Whether `name` begins as a copy's temporary file's does:
/// `.copy-<digits>-<16 hex digits>.`.
fn begins_as_copy_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(COPY_PREFIX) else {
        return false;
    };
    let Some((pid, rest)) = rest.split_once('-') else {
        return false;
    };
    let Some((random, _)) = rest.split_once('.') else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Refuses to put `size` more bytes into `dir` when its disk has less
/// room left (for this user): better said at the start than found once
/// the disk is full. A disk that cannot tell is not refused; one that
/// fills meanwhile still fails the write, and says so.
pub fn room_for(dir: &Path, size: u64) -> Result<(), String> {
    match fs4::available_space(dir) {
        Ok(free) if free < size => Err(format!(
            "{} needed, and the disk of {} has {} free",
            crate::units::format_bytes(size),
            dir.display(),
            crate::units::format_bytes(free)
        )),
        _ => Ok(()),
    }
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists
/// (a plain rename would silently replace it). A hard link makes the check
/// and the move one step where the file system supports it. Once the new
/// name is made the file is in place: an old name that cannot be removed
/// then (a folder that takes new names but lets none go) is warned about,
/// not taken for a failed rename.
///
/// With an `identity` (see [`file_identity`]), the file must be that
/// one: another file, or a link, put at `from` in its place (however
/// late: between a last look and the rename) is not given the name `to`,
/// where the file system makes hard links (elsewhere the caller's last
/// look is all).
/// The new name is then taken back, `from` left as it was found, and the
/// error says so. (The caller keeps that file open meanwhile, so that no
/// file made since can have its identity.)
///
/// [`file_identity`]: crate::pieces::file_identity
pub fn rename_no_replace(from: &Path, to: &Path, identity: Option<(u64, u64)>) -> io::Result<()> {
    let is_the_file = || {
        identity.is_none()
            || fs::symlink_metadata(to)
                .is_ok_and(|there| crate::pieces::file_identity(&there) == identity)
    };
    let replaced = || {
        io::Error::other(format!(
            "{} is not the file written here any more (another was put in its place): \
             not given the name {}",
            from.display(),
            to.display()
        ))
    };
    match fs::hard_link(from, to) {
        Ok(()) if !is_the_file() => {
            let _ = fs::remove_file(to);
            Err(replaced())
        }
        Ok(()) => {
            if let Err(e) = fs::remove_file(from) {
                log::warn!(
                    "{} is in place, but its old name {} could not be removed ({e}): \
                     it is the same file; delete that name by hand",
                    to.display(),
                    from.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            // No hard links here (FAT, some network shares): check, then move.
            if to.exists() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", to.display()),
                ));
            }
            // (Not checked after: where there are no hard links, a
            // file's number may come from its place in the folder, and
            // change with its name.)
            fs::rename(from, to)
        }
    }
}

/// How [`replace_file`] treats the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before and after the rename: survives a power cut.
    Synced,
    /// Renamed without waiting for the disk: a process crash leaves the
    /// old file or the new one, a power cut may leave an empty one. For
    /// records a reader checks anyway; a sync here can wait on every other
    /// file's pending writes (a filesystem journal commit), for seconds.
    Unsynced,
}

/// Replaces `path` with `bytes` so that a crash leaves either the old file
/// or the new one, never half of one: a temporary file, synced, renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file(path, bytes, Durability::Synced)
}

/// Replaces `path` with `bytes` through a temporary file and a rename.
pub fn replace_file(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let synced = durability == Durability::Synced;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    // Named after the whole file name, so `x.a` and `x.b` never share one.
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!("{name}.tmp-{}", std::process::id()));
    let written = create_new_file(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        if synced {
            file.sync_all()?;
        }
        Ok(())
    });
    // A disk full half-way leaves no temporary file behind either.
    written
        .and_then(|()| fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
    if synced {
        sync_parent_dir(path);
    }
    Ok(())
}

/// Creates `path` as a new file, never opening one already there: a link
/// put at a name that can be guessed (in a folder others can write to)
/// would have the bytes written, and its target cut, wherever it points.
/// Something left at the name (by a process of the same id that crashed,
/// or put there) is removed first; a link goes, not what it points to.
fn create_new_file(path: &Path) -> io::Result<File> {
    let create = || OpenOptions::new().write(true).create_new(true).open(path);
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            create()
        }
        other => other,
    }
}

/// `path` with its links resolved, or, where the system cannot resolve it
/// (a Windows RAM disk or virtual drive that the volume manager does not
/// know: rust-lang/rust#48249), made absolute as it is. A path that is
/// not there is an error either way.
pub fn canonical_or_absolute(path: &Path) -> io::Result<PathBuf> {
    match dunce::canonicalize(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => std::path::absolute(path),
        resolved => resolved,
    }
}

/// Makes a rename into `path`'s folder durable, where a folder can be
/// flushed (Unix); elsewhere this does nothing that matters, and any
/// failure is ignored.
pub fn sync_parent_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

/// Whether `a` and `b` name the same folder: the same path once each is
/// made absolute and followed through symbolic links as far as it exists
/// (a folder deleted since is compared through its nearest parent that
/// is still there).
pub fn same_folder(a: &Path, b: &Path) -> bool {
    match (resolved(a), resolved(b)) {
        (Some(a), Some(b)) => a == b,
        _ => match (std::path::absolute(a), std::path::absolute(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        },
    }
}

/// `path` made absolute, its deepest part that exists canonicalized
/// (symbolic links, `.` and `..` followed) and the rest joined as given;
/// `None` when a part that does not exist is `..`.
fn resolved(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        if let Ok(real) = dunce::canonicalize(existing) {
            return Some(
                missing
                    .iter()
                    .rev()
                    .fold(real, |path, part| path.join(part)),
            );
        }
        missing.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

/// Whether the folder `path` is in is missing whole: maybe a disk not
/// mounted (yet, or for a moment), so a file missing there is not taken
/// for deleted.
pub fn folder_missing(path: &Path) -> bool {
    path.parent()
        .is_some_and(|dir| !dir.as_os_str().is_empty() && !dir.is_dir())
}

/// Whether `a` and `b` are one file on disk: through symbolic links, `.`
/// and `..`, a name spelled in another case where the file system ignores
/// case, and (on Unix, where a file's identity can be read) a second name
/// of the file, a hard link. False when either is missing.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use crate::pieces::store::file_identity;
    let identity = |path| {
        fs::metadata(path)
            .ok()
            .and_then(|meta| file_identity(&meta))
    };
    match (identity(a), identity(b)) {
        (Some(a), Some(b)) => a == b,
        _ => matches!((dunce::canonicalize(a), dunce::canonicalize(b)), (Ok(a), Ok(b)) if a == b),
    }
}

/// The bytes of the regular file at `path`, refused (`InvalidData`) past
/// `limit` without reading more than that (a damaged or foreign file in
/// the state folder, or given as the config, must not fill the memory),
/// or when it is something
/// else (a FIFO would block the open, a device might never end).
pub fn read_at_most(path: &Path, limit: usize) -> io::Result<Vec<u8>> {
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("over {} MiB", limit >> 20),
        )
    };
    // Looked at before opening: opening a FIFO would wait for a writer,
    // and a device may never end.
    let meta = fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if meta.len() > limit as u64 {
        return Err(too_big());
    }
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The SHA-256 of a whole file, read in one streaming pass.
pub fn sha256_of_file(path: &Path) -> io::Result<[u8; 32]> {
    let never = AtomicBool::new(false);
    let (_, hash) = hash_stream(File::open(path)?, &never, |_| Ok(()))?;
    Ok(hash)
}

/// How much [`hash_stream`] reads at a time.
const HASH_BLOCK: usize = 1 << 20;

/// Reads `input` to its end, a block at a time, each block hashed and
/// handed to `each`; returns the length and the SHA-256. Stops with an
/// `Interrupted` error once `cancel` is set.
pub fn hash_stream(
    mut input: impl Read,
    cancel: &AtomicBool,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; HASH_BLOCK];
    let mut len: u64 = 0;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let n = match input.read(&mut buffer) {
            Ok(0) => return Ok((len, hasher.finalize().into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        each(&buffer[..n])?;
        len += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_bigger_than_the_disk_s_free_space_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(room_for(dir.path(), 1), Ok(()));
        let refused = room_for(dir.path(), u64::MAX).unwrap_err();
        let needed = format!(
            "{} needed, and the disk of ",
            crate::units::format_bytes(u64::MAX)
        );
        assert!(refused.starts_with(&needed), "{refused}");
        assert!(refused.ends_with(" free"), "{refused}");
    }

    #[test]
    fn only_names_a_copy_gives_are_taken_for_leftovers() {
        assert!(is_copy_temp_name(".copy-123-0123456789abcdef.a b.mp3.part"));
        assert!(!is_copy_temp_name(".copy-123-0123456789abcdef.a.mp3"));
        assert!(!is_copy_temp_name(".copy-12x-0123456789abcdef.a.part"));
        assert!(!is_copy_temp_name(".copy-123-0123456789abcde.a.part"));
        assert!(!is_copy_temp_name(".copy-0.a.part"));
        assert!(!is_copy_temp_name("copy-123-0123456789abcdef.a.part"));
    }

    #[test]
    fn names_portable_everywhere() {
        assert_eq!(portable_file_name("song.mp3"), "song.mp3");
        assert_eq!(portable_file_name("été à Paris.mkv"), "été à Paris.mkv");
        assert_eq!(portable_file_name("C:evil"), "C_evil");
        assert_eq!(portable_file_name("what?*.txt"), "what__.txt");
        // A name kept for the copies' temporary files is never a download's.
        assert_eq!(
            portable_file_name(".copy-1-0123456789abcdef.notes.part"),
            "_.copy-1-0123456789abcdef.notes.part"
        );
        assert_eq!(
            portable_file_name(".copy-1-0123456789abcdef.notes"),
            "_.copy-1-0123456789abcdef.notes",
            "its .part file would be one"
        );
        assert_eq!(
            portable_file_name(".copy-of-notes.part"),
            ".copy-of-notes.part"
        );
        // A `_` put in front of a name of the longest length: cut to fit.
        let longest = format!("nul.{}é", "x".repeat(249));
        assert_eq!(longest.len(), 255);
        assert_eq!(
            portable_file_name(&longest),
            format!("_nul.{}", "x".repeat(249))
        );
        assert_eq!(portable_file_name("nul.txt"), "_nul.txt");
        assert_eq!(portable_file_name("COM3"), "_COM3");
        assert_eq!(portable_file_name("COMMA.txt"), "COMMA.txt");
        assert_eq!(portable_file_name("com\u{b9}.mp3"), "_com\u{b9}.mp3");
        assert_eq!(portable_file_name("LPT\u{b3}"), "_LPT\u{b3}");
        assert_eq!(portable_file_name("CONOUT$.txt"), "_CONOUT$.txt");
        assert_eq!(portable_file_name("CON .txt"), "_CON .txt");
        assert_eq!(portable_file_name("COM10.txt"), "COM10.txt");
        assert_eq!(portable_file_name("dots..."), "dots");
    }

    #[test]
    fn a_folder_is_the_same_through_links_and_after_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        assert!(same_folder(&real, &real.join("..").join("real")));
        assert!(!same_folder(&real, dir.path()));
        // Gone: through its parent, which is still there.
        let gone = real.join("gone");
        assert!(same_folder(&gone, &real.join(".").join("gone")));
        assert!(!same_folder(&gone, &real.join("other")));
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&real, &link).unwrap();
            assert!(same_folder(&link, &real));
            assert!(same_folder(&link.join("gone"), &gone));
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_link_at_the_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (map, victim) = (dir.path().join("users.txt"), dir.path().join("victim"));
        fs::write(&victim, b"precious").unwrap();
        let guessed = dir
            .path()
            .join(format!("users.txt.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &guessed).unwrap();
        write_atomically(&map, b"alice - 127.0.0.1:7001\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&map).unwrap(), b"alice - 127.0.0.1:7001\n");
        assert!(fs::symlink_metadata(&guessed).is_err(), "the link is gone");
    }

    #[cfg(unix)]
    #[test]
    fn a_file_swapped_at_the_last_moment_is_not_given_the_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let (part, done) = (dir.path().join("f.part"), dir.path().join("f"));
        fs::write(&part, b"verified").unwrap();
        // Held open, as the download holds it: its inode is its own
        // throughout, never reused by a file made meanwhile.
        let held = fs::File::open(&part).unwrap();
        let written = crate::pieces::file_identity(&held.metadata().unwrap());
        // Replaced by another file, then by a link to one: neither is
        // given the name, and what was put there is left there.
        let other = dir.path().join("other");
        fs::write(&other, b"impostor").unwrap();
        fs::rename(&other, &part).unwrap();
        let error = rename_no_replace(&part, &done, written).unwrap_err();
        assert!(
            error.to_string().contains("another was put in its place"),
            "{error}"
        );
        assert!(fs::symlink_metadata(&done).is_err());
        assert_eq!(fs::read(&part).unwrap(), b"impostor");
        fs::remove_file(&part).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), &part).unwrap();
        assert!(rename_no_replace(&part, &done, written).is_err());
        assert!(fs::symlink_metadata(&done).is_err());
        assert!(fs::symlink_metadata(&part)
            .unwrap()
            .file_type()
            .is_symlink());
        // The file itself is renamed.
        fs::remove_file(&part).unwrap();
        fs::write(&part, b"verified").unwrap();
        let written = crate::pieces::file_identity(&fs::metadata(&part).unwrap());
        rename_no_replace(&part, &done, written).unwrap();
        assert_eq!(fs::read(&done).unwrap(), b"verified");
    }

    /// A folder that takes new names but lets none go (`chattr +a`; Linux,
    /// as root, on a file system that has it, else nothing is checked).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_rename_whose_old_name_stays_has_still_put_the_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("append-only");
        fs::create_dir(&folder).unwrap();
        let (a, b) = (folder.join("f.part"), folder.join("f"));
        fs::write(&a, b"verified").unwrap();
        let chattr = |flag: &str| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(&folder)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if !chattr("+a") {
            eprintln!("skipped: chattr +a is not possible here");
            return;
        }
        let renamed = rename_no_replace(&a, &b, None);
        chattr("-a");
        assert!(renamed.is_ok(), "{renamed:?}");
        assert_eq!(fs::read(&b).unwrap(), b"verified");
        assert!(same_file(&a, &b), "the old name stays: the same file");
    }

    #[test]
    fn rename_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"precious").unwrap();
        assert_eq!(
            rename_no_replace(&a, &b, None).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(fs::read(&b).unwrap(), b"precious");
        fs::remove_file(&b).unwrap();
        rename_no_replace(&a, &b, None).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&b).unwrap(), b"new");
    }
}
