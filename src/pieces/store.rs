//! A file on disk, read and written piece by piece at the piece's offset.
//!
//! Positioned reads and writes (`pread`/`pwrite` on Unix, `seek_read`/
//! `seek_write` on Windows) let many threads use one open file at once with
//! no shared cursor to fight over: the mini-server reads pieces for several
//! leechers while the downloader's workers write the pieces they fetched.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use super::Manifest;

/// An open file holding (some of) the pieces of one manifest.
#[derive(Debug)]
pub struct PieceFile {
    file: File,
    /// Set while a [`PieceFile::start_writeback`] runs: one at a time.
    writing_out: AtomicBool,
    /// For a complete file opened to be read: its size, modification time
    /// and (on Unix) device and inode then. A read after one changed fails
    /// with [`Changed`] instead of handing out bytes that no longer match
    /// the manifest.
    opened_as: Option<Fingerprint>,
}

/// A file's size and last modification, to tell whether it changed, and
/// on Unix which file it is (device and inode), to tell it from another
/// put in its place with the same size and time (`cp -p`, `rsync -t`).
/// Kept by an open [`PieceFile`] and by the peer's manifest cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    len: u64,
    /// Nanoseconds from the Unix epoch, negative before it (where the
    /// system tells).
    modified: Option<i128>,
    identity: Option<(u64, u64)>,
}

impl Fingerprint {
    /// The fingerprint of the file open as `file`.
    pub fn of(file: &File) -> io::Result<Fingerprint> {
        file.metadata().map(|meta| Fingerprint::from(&meta))
    }

    /// The fingerprint of the file at `path` now.
    pub fn at(path: &Path) -> io::Result<Fingerprint> {
        std::fs::metadata(path).map(|meta| Fingerprint::from(&meta))
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }
}

impl From<&std::fs::Metadata> for Fingerprint {
    fn from(meta: &std::fs::Metadata) -> Fingerprint {
        let since_epoch = |time: std::time::SystemTime| match time.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        };
        Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok().map(since_epoch),
            identity: file_identity(meta),
        }
    }
}

/// Which file this is, on Unix: its device and inode (`None` elsewhere:
/// Windows has its file index only in unstable std).
pub fn file_identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// How many names (hard links) the file has, where that can be told.
fn name_count(meta: &std::fs::Metadata) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(meta.nlink())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The error of a read from a file changed on disk since it was opened
/// (an editor or a tagger rewrote it in place, or it was cut short).
#[derive(Debug, thiserror::Error)]
#[error("the file changed on disk since it was shared (its size, modification time or identity)")]
pub struct Changed;

impl Changed {
    /// Whether `error` is this one.
    pub fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|inner| inner.is::<Changed>())
    }
}

impl PieceFile {
    /// Creates `path` (or truncates it) at the file's full size, ready to
    /// receive pieces in any order.
    pub fn create(path: &Path, size: u64) -> io::Result<PieceFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        mark_sparse(&file);
        file.set_len(size)?;
        Ok(PieceFile::from(file))
    }

    /// Creates `path`, which must not exist yet, at the file's full size.
    /// If it cannot have that size (a file system's size limit, a full
    /// disk without sparse files), it is removed again: an empty file left
    /// there would block the next attempt.
    pub fn create_new(path: &Path, size: u64) -> io::Result<PieceFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        mark_sparse(&file);
        if let Err(e) = file.set_len(size) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot make {} {size} bytes long: {e}", path.display()),
            ));
        }
        Ok(PieceFile::from(file))
    }

    /// Opens an existing file to read and write pieces (a download that
    /// goes on after a restart). Only a regular file is opened, never
    /// through a link: a link put where a `.part` file was would have the
    /// download write into the file it points to. (Looked at again once
    /// open, so a swap in between is seen too.) Nor a file with a second
    /// name (a hard link, made by a deduplicating tool or by hand): its
    /// pieces written would change the other file too. (Unix only: the
    /// standard library cannot count a file's names on Windows yet.)
    pub fn open_rw(path: &Path) -> io::Result<PieceFile> {
        let not_plain = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a link, or another kind of file); move it away",
            )
        };
        if !std::fs::symlink_metadata(path)?.is_file() {
            return Err(not_plain());
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let there = std::fs::symlink_metadata(path)?;
        let opened = file.metadata()?;
        if !there.is_file() || file_identity(&there) != file_identity(&opened) {
            return Err(not_plain());
        }
        if name_count(&opened).is_some_and(|names| names > 1) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the file has another name too (a hard link): writing pieces into it would \
                 change that other file; move it away",
            ));
        }
        Ok(PieceFile::from(file))
    }

    /// Takes this process's exclusive lock on the file, without waiting:
    /// `Ok(false)` when another process holds it (another peer writing
    /// this `.part` file). The lock goes when the file is closed, however
    /// the process ends. Where the file system has no locks, `Err`.
    pub fn try_lock(&self) -> io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Sets the file's size (a `.part` file found too short or too long).
    pub fn set_len(&self, size: u64) -> io::Result<()> {
        self.file.set_len(size)
    }

    /// Opens an existing, complete file for reading pieces; reads fail
    /// with [`Changed`] once it changes on disk.
    pub fn open(path: &Path) -> io::Result<PieceFile> {
        let file = File::open(path)?;
        let opened_as = Some(Fingerprint::of(&file)?);
        Ok(PieceFile {
            opened_as,
            ..PieceFile::from(file)
        })
    }

    /// The file itself: for its metadata, or for one pass through its
    /// cursor from the start right after it was opened (to check its
    /// hash), before any piece is read.
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// For a complete file opened with [`PieceFile::open`]: whether it is
    /// still, at `path`, the file it was when opened (same size and
    /// modification time, through this handle and at the path: not
    /// edited, cut, deleted or replaced). Always true for other files.
    pub fn unchanged_at(&self, path: &Path) -> bool {
        self.compare_at(path).unwrap_or(false)
    }

    /// Whether the open file has been deleted: it has no name left (where
    /// that can be told: on Unix; elsewhere, false). Such a file's folder
    /// being missing is no disk away, but a folder deleted.
    pub fn is_deleted(&self) -> bool {
        self.file
            .metadata()
            .ok()
            .and_then(|meta| name_count(&meta))
            .is_some_and(|names| names == 0)
    }

    /// Whether `path` still names this open file: `Ok(false)` when nothing
    /// is there any more, or (on Unix) another file is, or a link (to
    /// this file or any other: the name itself is looked at, not followed).
    /// Elsewhere any file at the path counts. Other failures to look are
    /// errors.
    pub fn is_at(&self, path: &Path) -> io::Result<bool> {
        let there = match std::fs::symlink_metadata(path) {
            Ok(there) => file_identity(&there),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mine = self.identity()?;
        Ok(mine.is_none() || mine == there)
    }

    /// Which file this is, where that can be told (see [`file_identity`]).
    pub fn identity(&self) -> io::Result<Option<(u64, u64)>> {
        self.file.metadata().map(|meta| file_identity(&meta))
    }

    /// Like [`PieceFile::unchanged_at`], but a path that cannot be looked
    /// at for a reason other than being gone (a network drive away for a
    /// moment, a permission) is an error, not a change.
    pub fn compare_at(&self, path: &Path) -> io::Result<bool> {
        let Some(opened_as) = &self.opened_as else {
            return Ok(true);
        };
        if Fingerprint::of(&self.file)? != *opened_as {
            return Ok(false);
        }
        match Fingerprint::at(path) {
            Ok(now) => Ok(now == *opened_as),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads piece `index` into `buf` (resized to the piece's length).
    pub fn read_piece(
        &self,
        manifest: &Manifest,
        index: usize,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        let len = manifest
            .piece_len(index)
            .ok_or_else(|| past_the_end(index))?;
        buf.resize(len as usize, 0);
        self.read_piece_part(manifest, index, 0, buf)
    }

    /// Reads `buf.len()` bytes of piece `index`, from `within` bytes into
    /// it: what a player streaming the file takes, a block at a time, so
    /// that it never holds a whole (up to 16 MiB) piece.
    pub fn read_piece_part(
        &self,
        manifest: &Manifest,
        index: usize,
        within: u32,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let len = manifest
            .piece_len(index)
            .ok_or_else(|| past_the_end(index))?;
        if u64::from(within) + buf.len() as u64 > u64::from(len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes from {within} run past the end of piece {index} ({len} bytes)",
                    buf.len()
                ),
            ));
        }
        let offset = manifest.piece_offset(index) + u64::from(within);
        let read = read_exact_at(&self.file, buf, offset);
        // Checked after the read: bytes read from a file that changed
        // meanwhile are not handed out either.
        if let Some(opened_as) = &self.opened_as {
            if Fingerprint::of(&self.file)? != *opened_as {
                return Err(io::Error::new(io::ErrorKind::InvalidData, Changed));
            }
        }
        read
    }

    /// Writes piece `index` at its offset.
    pub fn write_piece(&self, manifest: &Manifest, index: usize, data: &[u8]) -> io::Result<()> {
        if manifest.piece_len(index) != Some(data.len() as u32) {
            return Err(past_the_end(index));
        }
        write_all_at(&self.file, data, manifest.piece_offset(index))
    }

    /// Flushes what was written to the disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Starts writing what was written so far out to the disk, without
    /// waiting for the disk to finish, so that a [`PieceFile::sync`] later
    /// has less left to do: the disk works while the rest of the file
    /// arrives. It can still wait while the disk's queue is full; a call
    /// made while another runs returns at once, so that a slow disk holds
    /// one caller at most. Linux only (`sync_file_range`); elsewhere it
    /// does nothing, and the final sync does it all.
    pub fn start_writeback(&self) -> io::Result<()> {
        if self.writing_out.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let started = start_writeback(&self.file);
        self.writing_out.store(false, Ordering::Release);
        started
    }
}

impl From<File> for PieceFile {
    fn from(file: File) -> PieceFile {
        PieceFile {
            file,
            writing_out: AtomicBool::new(false),
            opened_as: None,
        }
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // Offset 0 and length 0: the whole file. WRITE alone starts the
    // write-out of the dirty pages not being written already, and does not
    // wait for it to end.
    // SAFETY: the descriptor is the open file's own, alive for the call;
    // the call takes no pointer.
    let done =
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) -> io::Result<()> {
    Ok(())
}

/// Marks a new, empty file sparse where that must be asked for (see
/// [`make_sparse`]); a file system that cannot is no error: the file works
/// all the same.
fn mark_sparse(file: &File) {
    if let Err(e) = make_sparse(file) {
        log::debug!("cannot make a file sparse: {e}");
    }
}

/// Makes a file sparse, on Windows. An NTFS file that is not sparse is
/// filled with zeros up to each write past its written end, so the first
/// piece written far into a large download would cost as much disk
/// writing as the whole gap. (Unix file systems leave holes by
/// themselves.) A file system without sparse files (FAT) refuses.
#[cfg(windows)]
fn make_sparse(file: &File) -> io::Result<()> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::System::Ioctl::FSCTL_SET_SPARSE;
    use windows_sys::Win32::System::IO::DeviceIoControl;
    let mut returned = 0u32;
    // SAFETY: the handle is the open file's own, alive for the call; no
    // input buffer (which sets the flag) nor output buffer, and `returned`
    // outlives the call, which is synchronous (no OVERLAPPED).
    let done = unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            FSCTL_SET_SPARSE,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if done == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(not(windows))]
fn make_sparse(_file: &File) -> io::Result<()> {
    Ok(())
}

fn past_the_end(index: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("piece {index} is not a piece of this file, or has the wrong length"),
    )
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    // No positioned I/O here: serialise through the cursor.
    use std::io::{Read, Seek, SeekFrom};
    static CURSOR: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _guard = CURSOR.lock();
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(not(any(unix, windows)))]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    static CURSOR: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _guard = CURSOR.lock();
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_that_cannot_take_its_size_is_not_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.part");
        // No file system takes u64::MAX bytes (the size is past i64::MAX).
        let error = PieceFile::create_new(&path, u64::MAX).err().unwrap();
        assert!(error.to_string().contains("huge.part"), "{error}");
        assert!(!path.exists());
        PieceFile::create_new(&path, 10).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
    }

    /// (Windows only: elsewhere a file has holes without being asked.)
    #[cfg(windows)]
    #[test]
    fn a_new_part_file_is_sparse() {
        use std::os::windows::fs::MetadataExt;
        const FILE_ATTRIBUTE_SPARSE_FILE: u32 = 0x200;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.part");
        let file = File::create(&path).unwrap();
        make_sparse(&file).expect("NTFS makes files sparse");
        drop(file);
        PieceFile::create_new(&dir.path().join("new.part"), 1 << 30).unwrap();
        let attributes = std::fs::metadata(dir.path().join("new.part"))
            .unwrap()
            .file_attributes();
        assert_ne!(
            attributes & FILE_ATTRIBUTE_SPARSE_FILE,
            0,
            "{attributes:#x}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_with_a_second_name_is_not_opened_to_write_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("notes.txt");
        std::fs::write(&mine, b"the user's own words").unwrap();
        let part = dir.path().join("notes.txt.part");
        std::fs::hard_link(&mine, &part).unwrap();
        let error = PieceFile::open_rw(&part).err().unwrap();
        assert!(error.to_string().contains("another name"), "{error}");
        // Its only name left: it may be taken up.
        std::fs::remove_file(&mine).unwrap();
        assert!(PieceFile::open_rw(&part).is_ok());
    }

    #[test]
    fn pieces_written_in_any_order_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let manifest = Manifest::build(&data[..], 16384, |_| {}).unwrap();
        let path = dir.path().join("f.part");
        let file = PieceFile::create(&path, manifest.size()).unwrap();
        for index in [2, 0, 1] {
            let start = index * 16384;
            let end = (start + 16384).min(data.len());
            file.write_piece(&manifest, index, &data[start..end])
                .unwrap();
            // Started early, between the writes: it must not fail or
            // change a byte (nothing at all, off Linux).
            file.start_writeback().unwrap();
        }
        assert!(file.write_piece(&manifest, 3, b"x").is_err());
        assert!(file.write_piece(&manifest, 2, b"short").is_err());
        file.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let mut buf = Vec::new();
        PieceFile::open(&path)
            .unwrap()
            .read_piece(&manifest, 2, &mut buf)
            .unwrap();
        assert_eq!(buf, &data[32768..]);
    }
}
