//! The course's user map: a text file of `<user> - <ip:port>` lines that a
//! peer refreshes from the tracker (`USRS`) in the background, and in which
//! the direct download looks a user up without asking the tracker.

use std::io;
use std::path::Path;

use crate::protocol::{PeerId, UserName};

use super::error::PeerError;
use super::fsutil::write_atomically;

/// Rewrites the map file atomically with these users.
pub fn write(path: &Path, users: &[(UserName, PeerId)]) -> io::Result<()> {
    let text: String = users
        .iter()
        .map(|(user, peer)| format!("{user} - {peer}\n"))
        .collect();
    // Unchanged (the usual case, every refresh): no write, no flush.
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    write_atomically(path, text.as_bytes())
}

/// The address of `user` in the map file, if it is there.
pub fn lookup(path: &Path, user: &str) -> Result<Option<PeerId>, PeerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PeerError::file(path, e)),
    };
    Ok(text.lines().find_map(|line| {
        let (name, addr) = line.split_once(" - ")?;
        (name.trim() == user)
            .then(|| addr.trim().parse().ok())
            .flatten()
    }))
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
        assert_eq!(lookup(&dir.path().join("none.txt"), "bob").unwrap(), None);
    }
}
