//! The course's user map: a text file of `<user> - <ip:port>` lines that a
//! peer refreshes from the tracker (`USRS`) in the background, and in which
//! the direct download looks a user up without asking the tracker.

use std::io;
use std::path::Path;

use crate::protocol::{PeerId, UserName};

use super::error::PeerError;
use crate::protocol::fields::echo;

/// Longest map file read (a tracker lists at most 10,000 users: about
/// 1 MiB of lines).
const MAX_MAP_FILE: usize = 8 << 20;

/// Rewrites the map file atomically with these users. A file there that
/// is not a user map (a user's own `users.txt`) is left alone: an
/// `InvalidData` error says so.
pub fn write(path: &Path, users: &[(UserName, PeerId)]) -> io::Result<()> {
    let text: String = users
        .iter()
        .map(|(user, peer)| format!("{user} - {peer}\n"))
        .collect();
    if let Some(old) = read_map(path)? {
        // Unchanged (the usual case, every refresh): no write, no flush.
        if old == text {
            return Ok(());
        }
        check_is_a_map(path, &old)?;
    }
    super::fsutil::write_atomically(path, text.as_bytes())
}

/// The address of `user` in the map file, if it is there. A file there
/// that is not a user map is an error saying so (it is never refreshed,
/// so nobody would ever be found in it).
pub fn lookup(path: &Path, user: &str) -> Result<Option<PeerId>, PeerError> {
    let text = read_map(path)
        .and_then(|text| match text {
            Some(text) => check_is_a_map(path, &text).map(|()| Some(text)),
            None => Ok(None),
        })
        .map_err(|e| PeerError::Failed(e.to_string()))?;
    Ok(text.and_then(|text| {
        text.lines()
            .filter_map(parse_line)
            .find(|(name, _)| *name == user)
            .map(|(_, addr)| addr)
    }))
}

/// Whether `text`, read from `path`, is a user map: every line that is
/// not blank is `<user> - <ip:port>`.
fn check_is_a_map(path: &Path, text: &str) -> io::Result<()> {
    match text
        .lines()
        .enumerate()
        .find(|(_, line)| !line.trim().is_empty() && parse_line(line).is_none())
    {
        Some((number, line)) => Err(not_a_map(
            path,
            &format!("line {}: {}", number + 1, echo(line)),
        )),
        None => Ok(()),
    }
}

/// One line of the map: `<user> - <ip:port>` (a port others can connect
/// to: not 0).
fn parse_line(line: &str) -> Option<(&str, PeerId)> {
    let (name, addr) = line.split_once(" - ")?;
    let peer = crate::protocol::fields::parse_peer_id(addr.trim()).ok()?;
    Some((name.trim(), peer))
}

/// The map file's text; `None` when there is none.
fn read_map(path: &Path) -> io::Result<Option<String>> {
    let bytes = match super::fsutil::read_at_most(path, MAX_MAP_FILE) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(not_a_map(path, &e.to_string()))
        }
        Err(e) => return Err(e),
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| not_a_map(path, "not UTF-8 text"))
}

fn not_a_map(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is not a user map ({why}); move it away or set user_map_file",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_users_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.txt");
        let users = vec![
            (
                UserName::parse("alice").unwrap(),
                "127.0.0.1:7001".parse().unwrap(),
            ),
            (
                UserName::parse("bob").unwrap(),
                "[::1]:7002".parse().unwrap(),
            ),
        ];
        write(&path, &users).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "alice - 127.0.0.1:7001\nbob - [::1]:7002\n"
        );
        assert_eq!(
            lookup(&path, "bob").unwrap(),
            Some("[::1]:7002".parse().unwrap())
        );
        assert_eq!(lookup(&path, "carol").unwrap(), None);
        std::fs::write(&path, "alice - 127.0.0.1:0\n").unwrap();
        assert!(lookup(&path, "alice").is_err(), "port 0: no one to ask");
        assert_eq!(lookup(&dir.path().join("none.txt"), "bob").unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_user_map_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.txt");
        let mine = "my own list of users\nalice, bob\n";
        std::fs::write(&path, mine).unwrap();
        let users = vec![(
            UserName::parse("alice").unwrap(),
            "127.0.0.1:7001".parse().unwrap(),
        )];
        let error = write(&path, &users).unwrap_err();
        assert!(
            error.to_string().contains("is not a user map (line 1: "),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), mine);
        // Nobody is looked up in it: the error says what it is.
        let error = lookup(&path, "alice").unwrap_err().to_string();
        assert!(
            error.contains("users.txt is not a user map (line 1: ")
                && error.ends_with("move it away or set user_map_file"),
            "{error}"
        );
        // An empty file, or an older map, is replaced.
        std::fs::write(&path, "").unwrap();
        write(&path, &users).unwrap();
        write(&path, &users[..0]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
