//! What the paths given to `share` (and the shell's `register`) stand for:
//! a file stands for itself; a folder for the files under it, found by
//! walking it, subfolders included, in name order.
//!
//! A walk leaves out what a user would not mean to offer, as `rsync` and
//! BitTorrent clients do by default or by habit:
//! - hidden entries, whose name starts with `.` (`.git`, `.DS_Store`, and
//!   this peer's own temporary copies), or that Windows marks hidden;
//! - unfinished downloads, named `*.part`;
//! - links to folders: a link back up would make the walk endless (a link
//!   to a file is followed, as sharing the file itself would be);
//! - anything that is not a regular file (a named pipe would block the
//!   hashing forever, a device would never end);
//! - the peer's own files (its log, its user map, its state folder),
//!   which it rewrites as it runs.
//!
//! What cannot be shared, or read, is told as a [`Refusal`]; the walk
//! goes on past it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Most files the paths given may stand for together: a walk stops there
/// (the list is held in memory, and a tracker takes far fewer from one
/// peer: `max_files_per_session`, 1000 by default).
pub const MAX_FILES: usize = 100_000;

/// A path that is not shared, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub path: PathBuf,
    pub reason: String,
}

/// The files to share, in the order given (each folder's files in name
/// order), and what was refused on the way.
#[derive(Debug, Default)]
pub struct FilesToShare {
    pub files: Vec<PathBuf>,
    pub refused: Vec<Refusal>,
    /// The walk stopped at the most files: more were left out than the
    /// one refusal that says so.
    pub stopped_at_most: bool,
    /// Most files taken: past it, the first file left out is refused,
    /// and the walk ends.
    most: usize,
    /// The peer's own files and folders, absolute and, where they exist,
    /// with every link resolved: a walk leaves them out.
    own: Vec<PathBuf>,
}

/// `path` made absolute, and with its links resolved where it exists: two
/// spellings to compare, as a path reached through a link is not written
/// as its target (`~/Music` a link to another disk, macOS's `/tmp`).
fn spellings(path: &Path) -> Vec<PathBuf> {
    [
        std::path::absolute(path).ok(),
        dunce::canonicalize(path).ok(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The files `paths` stand for. A walk leaves out `own`, the files and
/// folders the peer writes itself (a file named on its own is taken).
pub fn files_to_share(paths: &[PathBuf], own: &[&Path]) -> FilesToShare {
    at_most(paths, own, MAX_FILES)
}

fn at_most(paths: &[PathBuf], own: &[&Path], most: usize) -> FilesToShare {
    let mut found = FilesToShare {
        most,
        own: own.iter().flat_map(|p| spellings(p)).collect(),
        ..FilesToShare::default()
    };
    for path in paths {
        match fs::metadata(path) {
            Ok(meta) if meta.is_file() => found.add(path.clone()),
            Ok(meta) if meta.is_dir() => {
                let before = (found.files.len(), found.refused.len());
                found.walk(path);
                // Nothing in it, and nothing said of it yet.
                if (found.files.len(), found.refused.len()) == before && !found.stopped_at_most {
                    found.refuse(path, "no file to share in this folder");
                }
            }
            Ok(_) => found.refuse(path, "not a regular file"),
            Err(e) => found.refuse(path, e.to_string()),
        }
    }
    found
}

impl FilesToShare {
    fn add(&mut self, file: PathBuf) {
        if self.stopped_at_most {
            return;
        }
        if self.files.len() == self.most {
            let most = self.most;
            self.refuse(&file, format!("{most} files are the most shared at once: this one and any after it are left out"));
            self.stopped_at_most = true;
            return;
        }
        self.files.push(file);
    }

    /// Whether the entry `name` of a folder written `folder` (its
    /// [`spellings`]) is one of the peer's own files, or in its folders,
    /// however either was reached (a folder shared through a link to the
    /// peer's own folder, say).
    fn is_own(&self, folder: &[PathBuf], name: &std::ffi::OsStr) -> bool {
        folder.iter().any(|spelling| {
            let path = spelling.join(name);
            self.own.iter().any(|own| path.starts_with(own))
        })
    }

    fn refuse(&mut self, path: &Path, reason: impl Into<String>) {
        self.refused.push(Refusal {
            path: path.to_path_buf(),
            reason: reason.into(),
        });
    }

    /// Adds the files under `folder`: its entries in name order, the files
    /// of a subfolder where the subfolder comes.
    fn walk(&mut self, folder: &Path) {
        let mut entries = match read_folder(folder) {
            Ok(entries) => entries,
            Err(e) => return self.refuse(folder, format!("cannot read this folder: {e}")),
        };
        // As a file manager lists them: `apple` before `Zebra`.
        entries.sort_by_cached_key(|entry| {
            let name = entry.file_name();
            (name.to_string_lossy().to_lowercase(), name)
        });
        // Resolved once for the folder, not for each of its entries.
        let here = spellings(folder);
        for entry in entries {
            if self.stopped_at_most {
                return;
            }
            let path = entry.path();
            if is_left_out(&entry) || self.is_own(&here, &entry.file_name()) {
                continue;
            }
            // The entry's own type: a link is seen as a link, not followed.
            let Ok(kind) = entry.file_type() else {
                self.refuse(&path, "cannot tell what it is");
                continue;
            };
            if kind.is_dir() {
                self.walk(&path);
            } else if kind.is_file() {
                self.add(path);
            } else if kind.is_symlink() {
                match fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => self.add(path),
                    Ok(meta) if meta.is_dir() => {
                        self.refuse(&path, "a link to a folder: not followed")
                    }
                    Ok(_) => self.refuse(&path, "not a regular file"),
                    Err(e) => self.refuse(&path, format!("a link to nothing: {e}")),
                }
            } else {
                self.refuse(&path, "not a regular file");
            }
        }
    }
}

/// The entries of `folder`; any one that cannot be read fails the lot
/// (it is a fault of the folder, not of one file).
fn read_folder(folder: &Path) -> io::Result<Vec<fs::DirEntry>> {
    fs::read_dir(folder)?.collect()
}

/// Whether a walk leaves out `entry` without a word: hidden, or an
/// unfinished download.
fn is_left_out(entry: &fs::DirEntry) -> bool {
    let name = entry.file_name();
    let name = name.to_string_lossy();
    // (`Icon\r`: the file of a macOS folder's own icon, hidden there.)
    name.starts_with('.')
        || name.to_ascii_lowercase().ends_with(".part")
        || name == "Icon\r"
        || is_hidden_on_windows(entry)
}

/// Whether Windows marks `entry` hidden (`Thumbs.db`, `desktop.ini`, what
/// a user hid): as a name starting with `.` is elsewhere.
#[cfg(windows)]
fn is_hidden_on_windows(entry: &fs::DirEntry) -> bool {
    use std::os::windows::fs::MetadataExt;
    const FILE_ATTRIBUTE_HIDDEN: u32 = 0x2;
    entry
        .metadata()
        .is_ok_and(|meta| meta.file_attributes() & FILE_ATTRIBUTE_HIDDEN != 0)
}

#[cfg(not(windows))]
fn is_hidden_on_windows(_: &fs::DirEntry) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    fn names(found: &FilesToShare, root: &Path) -> Vec<String> {
        found
            .files
            .iter()
            .map(|f| {
                f.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect()
    }

    #[test]
    fn a_folder_stands_for_its_files_in_name_order_subfolders_included() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("music");
        for name in ["b.mp3", "a/z.mp3", "a/y/x.mp3", "c.ogg"] {
            write(&root.join(name));
        }
        let found = files_to_share(std::slice::from_ref(&root), &[]);
        assert_eq!(
            names(&found, &root),
            ["a/y/x.mp3", "a/z.mp3", "b.mp3", "c.ogg"]
        );
        assert!(found.refused.is_empty(), "{:?}", found.refused);
    }

    #[test]
    fn hidden_entries_and_unfinished_downloads_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        for name in [
            "song.mp3",
            ".DS_Store",
            ".git/config",
            "movie.mkv.part",
            "SHOW.MP4.PART",
            "notes.txt",
        ] {
            write(&root.join(name));
        }
        // (A name Windows cannot hold.)
        #[cfg(unix)]
        write(&root.join("Icon\r"));
        let found = files_to_share(std::slice::from_ref(&root), &[]);
        assert_eq!(names(&found, &root), ["notes.txt", "song.mp3"]);
        assert!(found.refused.is_empty(), "{:?}", found.refused);
    }

    #[test]
    fn the_peer_s_own_log_user_map_and_state_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("here");
        for name in [
            "peer.log",
            "users.txt",
            "state/downloads/x.resume",
            "song.mp3",
        ] {
            write(&root.join(name));
        }
        let (log, map, state) = (
            root.join("peer.log"),
            root.join("users.txt"),
            root.join("state"),
        );
        let found = files_to_share(std::slice::from_ref(&root), &[&log, &map, &state]);
        assert_eq!(names(&found, &root), ["song.mp3"]);
        // The same folder shared through a link to it.
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&root, &link).unwrap();
            let found = files_to_share(std::slice::from_ref(&link), &[&log, &map, &state]);
            assert_eq!(names(&found, &link), ["song.mp3"]);
        }
        // Named on its own, it is taken.
        let found = files_to_share(std::slice::from_ref(&log), &[&log]);
        assert_eq!(found.files, [log]);
    }

    #[test]
    fn files_named_on_their_own_are_taken_whatever_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("old.part");
        write(&part);
        let found = files_to_share(std::slice::from_ref(&part), &[]);
        assert_eq!(found.files, [part]);
    }

    #[test]
    fn what_cannot_be_shared_is_told_and_the_rest_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let only_hidden = dir.path().join("hidden");
        write(&only_hidden.join(".secret"));
        let file = dir.path().join("a.txt");
        write(&file);
        let missing = dir.path().join("nosuch");
        let found = files_to_share(
            &[empty.clone(), file.clone(), missing.clone(), only_hidden],
            &[],
        );
        assert_eq!(found.files, [file]);
        let refused: Vec<_> = found
            .refused
            .iter()
            .map(|r| (&r.path, &r.reason[..]))
            .collect();
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert_eq!(refused[0], (&empty, "no file to share in this folder"));
        assert_eq!(refused[1].0, &missing);
        assert!(refused[2].1.contains("no file to share"), "{refused:?}");
    }

    #[test]
    fn past_the_most_files_the_first_left_out_is_told_and_the_walk_ends() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        for name in ["a", "b", "c/d", "c/e", "f"] {
            write(&root.join(name));
        }
        let after = dir.path().join("after.txt");
        write(&after);
        let found = at_most(&[root.clone(), after], &[], 3);
        assert_eq!(names(&found, &root), ["a", "b", "c/d"]);
        assert_eq!(found.refused.len(), 1, "{:?}", found.refused);
        assert_eq!(found.refused[0].path, root.join("c").join("e"));
        assert!(found.refused[0].reason.starts_with("3 files are the most"));
    }

    #[cfg(unix)]
    #[test]
    fn links_to_files_are_followed_links_to_folders_are_not() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        write(&root.join("real.txt"));
        symlink(root.join("real.txt"), root.join("link.txt")).unwrap();
        // A link back up: followed, the walk would never end.
        symlink(&root, root.join("loop")).unwrap();
        symlink(root.join("gone"), root.join("dangling")).unwrap();
        let found = files_to_share(std::slice::from_ref(&root), &[]);
        assert_eq!(names(&found, &root), ["link.txt", "real.txt"]);
        let reasons: Vec<_> = found.refused.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].starts_with("a link to nothing"), "{reasons:?}");
        assert_eq!(reasons[1], "a link to a folder: not followed");
    }

    #[cfg(unix)]
    #[test]
    fn a_named_pipe_is_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        write(&root.join("a.txt"));
        let fifo = root.join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // No mkfifo here: nothing to check.
        }
        let found = files_to_share(&[root.clone(), fifo.clone()], &[]);
        assert_eq!(names(&found, &root), ["a.txt"]);
        let refused: Vec<_> = found
            .refused
            .iter()
            .map(|r| (&r.path, &r.reason[..]))
            .collect();
        assert_eq!(
            refused,
            [(&fifo, "not a regular file"), (&fifo, "not a regular file")]
        );
    }
}
