//! The tracker's state: who is connected, which files exist, and who holds
//! which pieces of them. Pure data and rules, no sockets and no clocks, so
//! every rule is unit-tested here directly.
//!
//! A session is keyed by the id of the connection that opened it, so a
//! session can only ever touch its own offers and progress: there is no
//! request field that names another session. A file exists while at least
//! one session holds some of it, and vanishes with its last holder.

use std::collections::{BTreeSet, HashMap};

use crate::pieces::{Bitmap, BitmapError};
use crate::protocol::{
    BitmapField, ErrorCode, FileEntry, FileKey, FileName, FileOffer, MediaKind, PeerEntry, PeerId,
    Role, SearchCriteria, ShareEntry, SharedPath, UserName,
};

use super::search;

/// Identifies a session: the id of the connection that opened it.
pub type SessionId = u64;

/// Everything the tracker knows.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: HashMap<SessionId, Session>,
    by_peer: HashMap<PeerId, SessionId>,
    by_user: HashMap<UserName, SessionId>,
    files: HashMap<FileKey, FileRecord>,
}

/// One connected peer.
#[derive(Debug)]
struct Session {
    peer: PeerId,
    user: Option<UserName>,
    files: BTreeSet<FileKey>,
}

/// One file and its holders.
#[derive(Debug)]
pub(crate) struct FileRecord {
    pub(crate) meta: FileMeta,
    holders: HashMap<SessionId, Holding>,
}

/// What identifies and describes a file, fixed by its first offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub key: FileKey,
    pub name: FileName,
    pub size: u64,
    pub piece_size: u32,
    pub kind: MediaKind,
}

/// One session's hold on a file: its BufferMap, and the path it offered the
/// file under (for seeders that sent `ADDF`).
#[derive(Debug)]
struct Holding {
    bitmap: Bitmap,
    path: Option<SharedPath>,
}

/// Why the registry refused a request. Each maps to one [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("say HELO <listen-port> [<user>] first")]
    NoSession,
    #[error("this connection already has a session (as {0})")]
    SessionOpen(PeerId),
    #[error("user name {0} is taken")]
    UserTaken(UserName),
    #[error("no file with key {0}")]
    UnknownFile(FileKey),
    #[error("file {0} is not offered by this session")]
    NotYours(FileKey),
    #[error("file {key} is registered with size {size} and piece size {piece_size}")]
    FileConflict {
        key: FileKey,
        size: u64,
        piece_size: u32,
    },
    #[error("bitmap for {key}: {error}")]
    Bitmap { key: FileKey, error: BitmapError },
}

impl RegistryError {
    /// The wire code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            RegistryError::NoSession => ErrorCode::NoSession,
            RegistryError::SessionOpen(_) => ErrorCode::SessionOpen,
            RegistryError::UserTaken(_) => ErrorCode::UserTaken,
            RegistryError::UnknownFile(_) => ErrorCode::UnknownFile,
            RegistryError::NotYours(_) => ErrorCode::NotYours,
            RegistryError::FileConflict { .. } => ErrorCode::FileConflict,
            RegistryError::Bitmap { .. } => ErrorCode::BitmapMismatch,
        }
    }
}

/// What `open` did to an older session that had the same peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// A new session.
    Fresh,
    /// The peer id belonged to an older session (the same peer, restarted
    /// before its old connection timed out): that session was closed.
    Replaced(SessionId),
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Opens session `id` for the peer listening at `peer`, optionally under
    /// a user name. A peer id held by another session is taken over (only
    /// the process bound to that ip:port can be it); a user name held by
    /// another peer's live session is refused.
    pub fn open(
        &mut self,
        id: SessionId,
        peer: PeerId,
        user: Option<UserName>,
    ) -> Result<Opened, RegistryError> {
        if let Some(session) = self.sessions.get(&id) {
            return Err(RegistryError::SessionOpen(session.peer));
        }
        let previous = self.by_peer.get(&peer).copied();
        if let Some(user) = &user {
            if let Some(&holder) = self.by_user.get(user) {
                if Some(holder) != previous {
                    return Err(RegistryError::UserTaken(user.clone()));
                }
            }
        }
        let opened = match previous {
            Some(old) => {
                self.close(old);
                Opened::Replaced(old)
            }
            None => Opened::Fresh,
        };
        if let Some(user) = &user {
            self.by_user.insert(user.clone(), id);
        }
        self.by_peer.insert(peer, id);
        self.sessions.insert(
            id,
            Session {
                peer,
                user,
                files: BTreeSet::new(),
            },
        );
        Ok(opened)
    }

    /// Closes a session: all its offers and progress reports vanish at once.
    /// Returns false when there was no such session.
    pub fn close(&mut self, id: SessionId) -> bool {
        let Some(session) = self.sessions.remove(&id) else {
            return false;
        };
        self.by_peer.remove(&session.peer);
        if let Some(user) = &session.user {
            self.by_user.remove(user);
        }
        for key in &session.files {
            self.drop_holding(*key, id);
        }
        true
    }

    /// The peer id of an open session.
    pub fn peer_of(&self, id: SessionId) -> Option<PeerId> {
        self.sessions.get(&id).map(|s| s.peer)
    }

    /// `ADDF`: session `id` holds the whole file.
    pub fn offer(&mut self, id: SessionId, offer: &FileOffer) -> Result<(), RegistryError> {
        let session = self.sessions.get_mut(&id).ok_or(RegistryError::NoSession)?;
        let pieces = offer.piece_count() as usize;
        let record = self.files.entry(offer.key).or_insert_with(|| FileRecord {
            meta: FileMeta {
                key: offer.key,
                name: offer.name.clone(),
                size: offer.size,
                piece_size: offer.piece_size,
                kind: offer.kind,
            },
            holders: HashMap::new(),
        });
        if record.meta.size != offer.size || record.meta.piece_size != offer.piece_size {
            return Err(RegistryError::FileConflict {
                key: offer.key,
                size: record.meta.size,
                piece_size: record.meta.piece_size,
            });
        }
        record.holders.insert(
            id,
            Holding {
                bitmap: Bitmap::full(pieces),
                path: Some(offer.path.clone()),
            },
        );
        session.files.insert(offer.key);
        Ok(())
    }

    /// `RMVF`: session `id` no longer holds the file.
    pub fn withdraw(&mut self, id: SessionId, key: FileKey) -> Result<(), RegistryError> {
        let session = self.sessions.get_mut(&id).ok_or(RegistryError::NoSession)?;
        if !self.files.contains_key(&key) {
            return Err(RegistryError::UnknownFile(key));
        }
        if !session.files.remove(&key) {
            return Err(RegistryError::NotYours(key));
        }
        self.drop_holding(key, id);
        Ok(())
    }

    /// `BITF`: session `id` reports which pieces of a known file it holds.
    /// Returns how many it holds.
    pub fn report(
        &mut self,
        id: SessionId,
        key: FileKey,
        bitmap: &BitmapField,
    ) -> Result<usize, RegistryError> {
        let session = self.sessions.get_mut(&id).ok_or(RegistryError::NoSession)?;
        let record = self
            .files
            .get_mut(&key)
            .ok_or(RegistryError::UnknownFile(key))?;
        let pieces = record.meta.piece_count() as usize;
        let bitmap = Bitmap::from_field(bitmap, pieces)
            .map_err(|error| RegistryError::Bitmap { key, error })?;
        let count = bitmap.count();
        let holding = record.holders.entry(id).or_insert(Holding {
            bitmap: Bitmap::empty(pieces),
            path: None,
        });
        holding.bitmap = bitmap;
        session.files.insert(key);
        Ok(count)
    }

    /// `RQFS`: the files that pass every criterion, by name then key.
    pub fn search(&self, criteria: &SearchCriteria) -> Vec<FileEntry> {
        let mut entries: Vec<FileEntry> = self
            .files
            .values()
            .filter(|record| self.matches(record, criteria))
            .map(|record| {
                let seeders = record
                    .holders
                    .values()
                    .filter(|h| h.bitmap.is_complete())
                    .count();
                FileEntry {
                    key: record.meta.key,
                    name: record.meta.name.clone(),
                    size: record.meta.size,
                    piece_size: record.meta.piece_size,
                    kind: record.meta.kind,
                    seeders: seeders as u32,
                    leechers: (record.holders.len() - seeders) as u32,
                }
            })
            .collect();
        entries.sort_by(|a, b| {
            let by_name = a
                .name
                .as_str()
                .to_lowercase()
                .cmp(&b.name.as_str().to_lowercase());
            by_name.then(a.key.cmp(&b.key))
        });
        entries
    }

    /// `LSTF`: every offer (a holder with a shared path) of the files that
    /// pass the criteria, by user, then path.
    pub fn shares(&self, criteria: &SearchCriteria) -> Vec<ShareEntry> {
        let mut entries: Vec<ShareEntry> = self
            .files
            .values()
            .filter(|record| self.matches(record, criteria))
            .flat_map(|record| {
                record.holders.iter().filter_map(|(id, holding)| {
                    let session = self.sessions.get(id)?;
                    Some(ShareEntry {
                        key: record.meta.key,
                        user: session.user.clone(),
                        peer: session.peer,
                        path: holding.path.clone()?,
                    })
                })
            })
            .filter(|entry| user_passes(criteria, entry.user.as_ref()))
            .collect();
        entries.sort_by(|a, b| {
            (&a.user, a.peer, a.path.as_str()).cmp(&(&b.user, b.peer, b.path.as_str()))
        });
        entries
    }

    /// `REQF`: the holders of a file, best first: seeders, then those with
    /// the most pieces, then by peer id. The asking session is left out, and
    /// at most `limit` are listed.
    pub fn holders(
        &self,
        key: FileKey,
        asker: SessionId,
        limit: usize,
    ) -> Result<Vec<PeerEntry>, RegistryError> {
        let record = self
            .files
            .get(&key)
            .ok_or(RegistryError::UnknownFile(key))?;
        let mut entries: Vec<PeerEntry> = record
            .holders
            .iter()
            .filter(|(id, _)| **id != asker)
            .filter_map(|(id, holding)| {
                let session = self.sessions.get(id)?;
                Some(PeerEntry {
                    peer: session.peer,
                    user: session.user.clone(),
                    role: if holding.bitmap.is_complete() {
                        Role::Seeder
                    } else {
                        Role::Leecher
                    },
                    pieces: holding.bitmap.count() as u64,
                })
            })
            .collect();
        entries.sort_by(|a, b| {
            a.role
                .cmp(&b.role)
                .then(b.pieces.cmp(&a.pieces))
                .then(a.peer.cmp(&b.peer))
        });
        entries.truncate(limit);
        Ok(entries)
    }

    /// `USRS`: the named users and their peer ids, by name.
    pub fn users(&self) -> Vec<(UserName, PeerId)> {
        let mut users: Vec<(UserName, PeerId)> = self
            .by_user
            .iter()
            .filter_map(|(user, id)| Some((user.clone(), self.sessions.get(id)?.peer)))
            .collect();
        users.sort();
        users
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// How many files are known.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    fn matches(&self, record: &FileRecord, criteria: &SearchCriteria) -> bool {
        search::matches(&record.meta, criteria, |user| {
            record.holders.keys().any(|id| {
                self.sessions
                    .get(id)
                    .is_some_and(|s| s.user.as_ref() == Some(user))
            })
        })
    }

    fn drop_holding(&mut self, key: FileKey, id: SessionId) {
        if let Some(record) = self.files.get_mut(&key) {
            record.holders.remove(&id);
            if record.holders.is_empty() {
                self.files.remove(&key);
            }
        }
    }
}

/// For `LSTF`, a `user=` criterion also picks which offers of a matching
/// file are listed.
fn user_passes(criteria: &SearchCriteria, user: Option<&UserName>) -> bool {
    criteria.0.iter().all(|criterion| match criterion {
        crate::protocol::Criterion::User(wanted) => user == Some(wanted),
        _ => true,
    })
}

impl FileMeta {
    /// Number of pieces.
    pub fn piece_count(&self) -> u64 {
        crate::protocol::fields::piece_count(self.size, self.piece_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Criterion, TrackerRequest};

    fn peer(port: u16) -> PeerId {
        PeerId::from(([127, 0, 0, 1], port))
    }

    fn user(name: &str) -> Option<UserName> {
        Some(UserName::parse(name).unwrap())
    }

    fn offer(key_byte: u8, name: &str, size: u64) -> FileOffer {
        let line = format!(
            "ADDF {} {name} {size} 16384 audio /music/{name}",
            FileKey([key_byte; 32])
        );
        match TrackerRequest::parse(&line).unwrap() {
            TrackerRequest::Addf(offer) => offer,
            other => panic!("{other:?}"),
        }
    }

    fn criteria(text: &str) -> SearchCriteria {
        SearchCriteria::parse(text).unwrap()
    }

    #[test]
    fn a_user_name_is_held_by_one_live_session() {
        let mut registry = Registry::new();
        registry.open(1, peer(7001), user("alice")).unwrap();
        assert_eq!(
            registry.open(2, peer(7002), user("alice")),
            Err(RegistryError::UserTaken(UserName::parse("alice").unwrap()))
        );
        assert_eq!(
            registry.open(1, peer(7009), None),
            Err(RegistryError::SessionOpen(peer(7001)))
        );
        registry.close(1);
        assert_eq!(
            registry.open(2, peer(7002), user("alice")),
            Ok(Opened::Fresh)
        );
    }

    #[test]
    fn a_restarted_peer_takes_over_its_old_session() {
        let mut registry = Registry::new();
        registry.open(1, peer(7001), user("alice")).unwrap();
        registry.offer(1, &offer(1, "a.mp3", 10)).unwrap();
        assert_eq!(
            registry.open(2, peer(7001), user("alice")),
            Ok(Opened::Replaced(1))
        );
        assert_eq!(
            registry.file_count(),
            0,
            "the old session's offers went with it"
        );
        assert_eq!(
            registry.offer(1, &offer(1, "a.mp3", 10)),
            Err(RegistryError::NoSession)
        );
        assert_eq!(
            registry.users(),
            vec![(UserName::parse("alice").unwrap(), peer(7001))]
        );
    }

    #[test]
    fn a_session_changes_only_its_own_offers() {
        let mut registry = Registry::new();
        registry.open(1, peer(7001), user("alice")).unwrap();
        registry.open(2, peer(7002), user("bob")).unwrap();
        let song = offer(1, "song.mp3", 40_000);
        registry.offer(1, &song).unwrap();
        assert_eq!(
            registry.withdraw(2, song.key),
            Err(RegistryError::NotYours(song.key))
        );
        assert_eq!(
            registry.withdraw(2, FileKey([9; 32])),
            Err(RegistryError::UnknownFile(FileKey([9; 32])))
        );
        assert_eq!(registry.withdraw(1, song.key), Ok(()));
        assert_eq!(registry.file_count(), 0);
        assert_eq!(
            registry.withdraw(3, song.key),
            Err(RegistryError::NoSession)
        );
    }

    #[test]
    fn offers_must_agree_with_the_registered_metadata() {
        let mut registry = Registry::new();
        registry.open(1, peer(7001), None).unwrap();
        registry.open(2, peer(7002), None).unwrap();
        registry.offer(1, &offer(1, "a.mp3", 40_000)).unwrap();
        assert!(matches!(
            registry.offer(2, &offer(1, "a.mp3", 50_000)),
            Err(RegistryError::FileConflict { size: 40_000, .. })
        ));
        registry.offer(2, &offer(1, "renamed.mp3", 40_000)).unwrap();
        assert_eq!(registry.search(&criteria(""))[0].seeders, 2);
    }

    #[test]
    fn progress_reports_make_leechers_and_complete_ones_seeders() {
        let mut registry = Registry::new();
        registry.open(1, peer(7001), None).unwrap();
        registry.open(2, peer(7002), None).unwrap();
        registry.open(3, peer(7003), None).unwrap();
        let song = offer(1, "song.mp3", 40_000); // 3 pieces
        let bits = |hex: &str| BitmapField::parse(hex).unwrap();
        assert_eq!(
            registry.report(2, song.key, &bits("80")),
            Err(RegistryError::UnknownFile(song.key))
        );
        registry.offer(1, &song).unwrap();
        assert_eq!(registry.report(2, song.key, &bits("80")), Ok(1));
        assert!(matches!(
            registry.report(2, song.key, &bits("8000")),
            Err(RegistryError::Bitmap { .. })
        ));
        assert!(matches!(
            registry.report(2, song.key, &bits("f0")),
            Err(RegistryError::Bitmap {
                error: BitmapError::PadBitsSet { .. },
                ..
            })
        ));
        let entry = &registry.search(&criteria(""))[0];
        assert_eq!((entry.seeders, entry.leechers), (1, 1));
        let holders = registry.holders(song.key, 3, 50).unwrap();
        let listed: Vec<(PeerId, Role, u64)> =
            holders.iter().map(|e| (e.peer, e.role, e.pieces)).collect();
        assert_eq!(
            listed,
            vec![
                (peer(7001), Role::Seeder, 3),
                (peer(7002), Role::Leecher, 1)
            ]
        );
        assert_eq!(
            registry.holders(song.key, 1, 50).unwrap().len(),
            1,
            "asker left out"
        );
        assert_eq!(registry.holders(song.key, 3, 1).unwrap().len(), 1, "limit");
        assert_eq!(registry.report(2, song.key, &bits("e0")), Ok(3));
        assert_eq!(registry.search(&criteria(""))[0].seeders, 2);
    }

    #[test]
    fn closing_a_session_removes_every_trace() {
        let mut registry = Registry::new();
        registry.open(1, peer(7001), user("alice")).unwrap();
        registry.open(2, peer(7002), user("bob")).unwrap();
        registry.offer(1, &offer(1, "a.mp3", 10)).unwrap();
        registry.offer(1, &offer(2, "b.mp3", 10)).unwrap();
        registry.offer(2, &offer(2, "b.mp3", 10)).unwrap();
        assert!(registry.close(1));
        assert!(!registry.close(1));
        let files = registry.search(&criteria(""));
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].seeders, 1);
        assert_eq!(registry.users().len(), 1);
        assert!(registry
            .shares(&criteria(""))
            .iter()
            .all(|s| s.peer == peer(7002)));
    }

    #[test]
    fn search_filters_combine() {
        let mut registry = Registry::new();
        registry.open(1, peer(7001), user("alice")).unwrap();
        registry.open(2, peer(7002), user("bob")).unwrap();
        registry
            .offer(1, &offer(1, "Summer%20Song.mp3", 5_000_000))
            .unwrap();
        registry.offer(1, &offer(2, "notes.txt", 2_000)).unwrap();
        registry.offer(2, &offer(3, "winter.ogg", 900_000)).unwrap();
        let names = |text: &str| -> Vec<String> {
            registry
                .search(&criteria(text))
                .into_iter()
                .map(|e| e.name.as_str().to_string())
                .collect()
        };
        assert_eq!(names(""), ["notes.txt", "Summer Song.mp3", "winter.ogg"]);
        assert_eq!(names("song"), ["Summer Song.mp3"]);
        assert_eq!(names("SUMMER song"), ["Summer Song.mp3"]);
        assert_eq!(names("name=*.mp3"), ["Summer Song.mp3"]);
        assert_eq!(names("name=w?nter.*"), ["winter.ogg"]);
        assert_eq!(names("min=1MB"), ["Summer Song.mp3"]);
        assert_eq!(names("max=1MB min=1000"), ["notes.txt", "winter.ogg"]);
        assert_eq!(names("user=bob"), ["winter.ogg"]);
        assert_eq!(names("user=carol"), Vec::<String>::new());
        let shares = registry.shares(&SearchCriteria(vec![Criterion::User(
            UserName::parse("alice").unwrap(),
        )]));
        assert_eq!(shares.len(), 2);
    }
}
