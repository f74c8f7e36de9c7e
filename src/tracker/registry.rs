//! The tracker's state: who is connected, which files exist, and who holds
//! which pieces of them. Pure data and rules, no sockets and no clocks, so
//! every rule is unit-tested here directly.
//!
//! A session is keyed by the id of the connection that opened it, so a
//! session can only ever touch its own offers and progress: there is no
//! request field that names another session, and a peer id or user name
//! held by a live session cannot be claimed by another. A file exists while
//! at least one session holds some of it, and vanishes with its last holder.
//!
//! Memory is bounded: a session holds at most `max_files_per_session` files,
//! for each holder only a piece count and the path it offered are kept (the
//! BufferMap itself is checked, counted and dropped), and all the offers
//! together, paths and names included, fit in a budget of bytes
//! (`max_offer_bytes`), counted as they come and go.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::IpAddr;

use crate::pieces::{Bitmap, BitmapError};
use crate::protocol::{
    BitmapField, ErrorCode, FileEntry, FileKey, FileMeta, FileOffer, PeerEntry, PeerId, Role,
    SearchCriteria, ShareEntry, SharedPath, UserName,
};

use super::search::Matcher;

/// Identifies a session: the id of the connection that opened it.
pub type SessionId = u64;

/// The default budget for all offers together (see [`Registry::bytes`]).
pub const DEFAULT_MAX_OFFER_BYTES: usize = 256 << 20;

/// What one holding costs besides its path, and one file besides its name:
/// the map entries, the structs, the allocator's overhead, roughly.
/// (Measured with a counting allocator: a holding takes about 150 bytes
/// besides its path, a file about 400 to 500 besides its name. In the
/// resident memory of a tracker, 120 sessions each holding the same 1000
/// files, a holding took 260 bytes: the session's set of keys, the
/// tables' spare room and the allocator's smallest blocks on top.)
const HOLDING_COST: usize = 256;
const RECORD_COST: usize = 512;

/// Everything the tracker knows.
#[derive(Debug)]
pub struct Registry {
    max_files_per_session: usize,
    /// The most [`Registry::bytes`] may reach.
    max_offer_bytes: usize,
    /// What the files and holdings take, as counted by [`HOLDING_COST`],
    /// [`RECORD_COST`] and the bytes of their paths and names.
    bytes: usize,
    sessions: HashMap<SessionId, Session>,
    by_peer: HashMap<PeerId, SessionId>,
    by_user: HashMap<UserName, SessionId>,
    /// By key, in key order: a search of every file goes on, a slice at
    /// a time, from the last key it looked at.
    files: BTreeMap<FileKey, FileRecord>,
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
    /// Changed only through `set_holding` and `remove_holding`, which keep
    /// `leechers` in step.
    holders: HashMap<SessionId, Holding>,
    /// How many holders lack pieces (so a holder's load is counted without
    /// walking every holder of every file it holds).
    leechers: usize,
}

/// One session's hold on a file: how many pieces it holds (never 0), and
/// the path it offered the file under (for peers that sent `ADDF`).
#[derive(Debug)]
struct Holding {
    pieces: u64,
    path: Option<SharedPath>,
}

/// What a file's record takes of the registry's budget.
fn record_cost(name: &crate::protocol::FileName) -> usize {
    RECORD_COST + name.as_str().len()
}

impl Holding {
    /// What it takes of the registry's budget.
    fn cost(&self) -> usize {
        HOLDING_COST + self.path.as_ref().map_or(0, |p| p.as_str().len())
    }
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
    #[error("peer id {0} is held by another live session; if that was you, retry once the old connection is gone")]
    PeerIdInUse(PeerId),
    #[error("this session already holds {}, the most allowed", crate::units::count(*.0 as u64, "file"))]
    TooManyFiles(usize),
    #[error("the tracker holds all the offers it has room for ({}); try again later", crate::units::format_bytes(*.0 as u64))]
    Full(usize),
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
            RegistryError::PeerIdInUse(_) => ErrorCode::PeerIdInUse,
            RegistryError::TooManyFiles(_) => ErrorCode::TooManyFiles,
            RegistryError::Full(_) => ErrorCode::TrackerFull,
            RegistryError::UnknownFile(_) => ErrorCode::UnknownFile,
            RegistryError::NotYours(_) => ErrorCode::NotYours,
            RegistryError::FileConflict { .. } => ErrorCode::FileConflict,
            RegistryError::Bitmap { .. } => ErrorCode::BitmapMismatch,
        }
    }
}

impl Registry {
    /// An empty registry; each session may hold at most
    /// `max_files_per_session` files.
    pub fn new(max_files_per_session: usize) -> Registry {
        Registry {
            max_files_per_session,
            max_offer_bytes: DEFAULT_MAX_OFFER_BYTES,
            bytes: 0,
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            by_user: HashMap::new(),
            files: BTreeMap::new(),
        }
    }

    /// The same registry, with room for `bytes` of offers in all (see
    /// [`Registry::bytes`]).
    pub fn with_max_offer_bytes(mut self, bytes: usize) -> Registry {
        self.max_offer_bytes = bytes;
        self
    }

    /// What the offers take, as the budget counts it: for each holding
    /// its path and [`HOLDING_COST`], for each file its name and
    /// [`RECORD_COST`]. An offer or report that would take it past the
    /// budget is refused ([`RegistryError::Full`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Opens session `id` for the peer listening at `peer`, optionally under
    /// a user name. A peer id or user name that another live session holds
    /// is refused: the tracker cannot tell a restarted peer from an
    /// impostor on the same host, so the old session must end first (a
    /// crashed peer's connection closes at once; a vanished host's at the
    /// keep-alive deadline).
    pub fn open(
        &mut self,
        id: SessionId,
        peer: PeerId,
        user: Option<UserName>,
    ) -> Result<(), RegistryError> {
        if let Some(session) = self.sessions.get(&id) {
            return Err(RegistryError::SessionOpen(session.peer));
        }
        if let Some(user) = user.as_ref().filter(|u| self.by_user.contains_key(*u)) {
            return Err(RegistryError::UserTaken(user.clone()));
        }
        if self.by_peer.contains_key(&peer) {
            return Err(RegistryError::PeerIdInUse(peer));
        }
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
        Ok(())
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
        let session = self.sessions.get(&id).ok_or(RegistryError::NoSession)?;
        if !session.files.contains(&offer.key) && session.files.len() >= self.max_files_per_session
        {
            return Err(RegistryError::TooManyFiles(session.files.len()));
        }
        let new_file = match self.files.get(&offer.key) {
            Some(record)
                if record.meta.size != offer.size || record.meta.piece_size != offer.piece_size =>
            {
                return Err(RegistryError::FileConflict {
                    key: offer.key,
                    size: record.meta.size,
                    piece_size: record.meta.piece_size,
                });
            }
            Some(_) => 0,
            None => record_cost(&offer.name),
        };
        let holding = Holding {
            pieces: offer.piece_count(),
            path: Some(offer.path.clone()),
        };
        self.make_room(
            self.cost_of_holding(offer.key, id),
            new_file + holding.cost(),
        )?;
        let record = self.files.entry(offer.key).or_insert_with(|| FileRecord {
            meta: FileMeta {
                key: offer.key,
                name: offer.name.clone(),
                size: offer.size,
                piece_size: offer.piece_size,
                kind: offer.kind,
            },
            holders: HashMap::new(),
            leechers: 0,
        });
        record.set_holding(id, holding);
        if let Some(session) = self.sessions.get_mut(&id) {
            session.files.insert(offer.key);
        }
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
    /// Returns how many it holds. A report of no piece at all withdraws the
    /// session's hold on the file (it has nothing to give).
    pub fn report(
        &mut self,
        id: SessionId,
        key: FileKey,
        bitmap: &BitmapField,
    ) -> Result<u64, RegistryError> {
        let session = self.sessions.get_mut(&id).ok_or(RegistryError::NoSession)?;
        let record = self
            .files
            .get_mut(&key)
            .ok_or(RegistryError::UnknownFile(key))?;
        let pieces = Bitmap::count_checked(&bitmap.0, record.meta.piece_count() as usize)
            .map_err(|error| RegistryError::Bitmap { key, error })? as u64;
        if pieces == 0 {
            if session.files.remove(&key) {
                self.drop_holding(key, id);
            }
            return Ok(0);
        }
        if !session.files.contains(&key) && session.files.len() >= self.max_files_per_session {
            return Err(RegistryError::TooManyFiles(session.files.len()));
        }
        // A holding kept keeps its path (a leecher that never offered the
        // file has none).
        let held = record.holders.get(&id);
        let freed = held.map_or(0, Holding::cost);
        let holding = Holding {
            pieces,
            path: held.and_then(|h| h.path.clone()),
        };
        self.make_room(freed, holding.cost())?;
        if let Some(record) = self.files.get_mut(&key) {
            record.set_holding(id, holding);
        }
        if let Some(session) = self.sessions.get_mut(&id) {
            session.files.insert(key);
        }
        Ok(pieces)
    }

    /// `RQFS`: the files that pass every criterion, by name then key, at
    /// most `limit` of them.
    pub fn search(&self, criteria: &SearchCriteria, limit: usize) -> Vec<FileEntry> {
        self.search_in(self.candidates(criteria), criteria, limit)
    }

    /// [`Registry::search`] over one slice of the files (see
    /// [`Registry::slice`]); with the key to go on after, if any.
    pub fn search_after(
        &self,
        after: Option<FileKey>,
        slice: usize,
        criteria: &SearchCriteria,
        limit: usize,
    ) -> (Vec<FileEntry>, Option<FileKey>) {
        let (records, last) = self.slice(after, slice, criteria);
        (self.search_in(records, criteria, limit), last)
    }

    fn search_in<'r>(
        &'r self,
        records: impl Iterator<Item = &'r FileRecord>,
        criteria: &SearchCriteria,
        limit: usize,
    ) -> Vec<FileEntry> {
        let matcher = Matcher::new(criteria);
        let found = records.filter(|record| self.matches(record, &matcher));
        first_by(
            found,
            limit,
            |record| file_order(&record.meta.name, record.meta.key),
            |record| {
                let seeders = (record.holders.len() - record.leechers) as u32;
                record.meta.clone().entry(seeders, record.leechers as u32)
            },
        )
    }

    /// `LSTF`: every offer (a complete holder with a shared path) of the
    /// files that pass the criteria, by user, then peer id, then path, at most
    /// `limit`.
    pub fn shares(&self, criteria: &SearchCriteria, limit: usize) -> Vec<ShareEntry> {
        self.shares_in(self.candidates(criteria), criteria, limit)
    }

    /// [`Registry::shares`] over one slice of the files (see
    /// [`Registry::slice`]); with the key to go on after, if any.
    pub fn shares_after(
        &self,
        after: Option<FileKey>,
        slice: usize,
        criteria: &SearchCriteria,
        limit: usize,
    ) -> (Vec<ShareEntry>, Option<FileKey>) {
        let (records, last) = self.slice(after, slice, criteria);
        (self.shares_in(records, criteria, limit), last)
    }

    /// The files one slice of a search of `criteria` looks at, and the key
    /// of the last of them when more may follow. A narrow search (one key,
    /// one user) or one of a registry of at most `slice` files looks at
    /// all its candidates in its first slice, and has no other. Else a
    /// slice is the next `slice` files after the file `after` (from the
    /// first, for none), in key order.
    fn slice<'r>(
        &'r self,
        after: Option<FileKey>,
        slice: usize,
        criteria: &SearchCriteria,
    ) -> (
        Box<dyn Iterator<Item = &'r FileRecord> + 'r>,
        Option<FileKey>,
    ) {
        use crate::protocol::Criterion;
        use std::ops::Bound;
        let narrow = criteria
            .0
            .iter()
            .any(|criterion| matches!(criterion, Criterion::Key(_) | Criterion::User(_)));
        if after.is_none() && (narrow || self.files.len() <= slice) {
            return (Box::new(self.candidates(criteria)), None);
        }
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let files = || self.files.range((from, Bound::Unbounded)).take(slice);
        let last = match slice {
            0 => None,
            _ => files().nth(slice - 1).map(|(key, _)| *key),
        };
        (Box::new(files().map(|(_, record)| record)), last)
    }

    fn shares_in<'r>(
        &'r self,
        records: impl Iterator<Item = &'r FileRecord>,
        criteria: &SearchCriteria,
        limit: usize,
    ) -> Vec<ShareEntry> {
        let matcher = Matcher::new(criteria);
        let offers = records
            .filter(|record| self.matches(record, &matcher))
            .flat_map(|record| {
                record.holders.iter().filter_map(move |(id, holding)| {
                    let session = self
                        .sessions
                        .get(id)
                        .filter(|_| record.is_complete(holding))?;
                    Some((record, session, holding.path.as_ref()?))
                })
            })
            .filter(|(_, session, _)| user_passes(criteria, session.user.as_ref()));
        first_by(
            offers,
            limit,
            |(record, session, path)| {
                share_order(session.user.as_ref(), session.peer, *path, record.meta.key)
            },
            |(record, session, path)| ShareEntry {
                key: record.meta.key,
                user: session.user.clone(),
                peer: session.peer,
                path: path.clone(),
            },
        )
    }

    /// `REQF`: the holders of a file, best first (see [`HolderRank`]) for
    /// an asker at `asker_ip` (with a session or not: its connection's
    /// address). The asking session is left out, and at most `limit` are
    /// listed: when there are more, the last fifth of the places go to
    /// holders drawn at random from the rest.
    pub fn holders(
        &self,
        key: FileKey,
        asker: SessionId,
        asker_ip: IpAddr,
        limit: usize,
    ) -> Result<impl ExactSizeIterator<Item = PeerEntry> + '_, RegistryError> {
        let record = self
            .files
            .get(&key)
            .ok_or(RegistryError::UnknownFile(key))?;
        let mut ranked: Vec<(HolderRank, (SessionId, &Session), PeerEntry)> = record
            .holders
            .iter()
            .filter(|(id, _)| **id != asker)
            .filter_map(|(id, holding)| {
                let session = self.sessions.get(id)?;
                let role = if record.is_complete(holding) {
                    Role::Seeder
                } else {
                    Role::Leecher
                };
                let rank = HolderRank {
                    role,
                    pieces: std::cmp::Reverse(holding.pieces),
                    distance: Distance::between(asker_ip, session.peer.ip()),
                    // Looked up below, only where it decides the order.
                    serving: 0,
                    lottery: fastrand::u64(..),
                };
                let entry = PeerEntry {
                    peer: session.peer,
                    user: session.user.clone(),
                    role,
                    pieces: holding.pieces,
                };
                Some((rank, (*id, session), entry))
            })
            .collect();
        ranked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // A holder's load only breaks ties, and counting it walks every
        // file the holder offers: it is counted only for holders that tie
        // on everything before it, within the first `limit`, and only they
        // are sorted again.
        let mut listed = 0;
        for tied in ranked.chunk_by_mut(|a, b| a.0.ties_before_load(&b.0)) {
            if listed >= limit {
                break;
            }
            listed += tied.len();
            if tied.len() > 1 {
                for (rank, (id, session), _) in tied.iter_mut() {
                    rank.serving = self.swarms_served(*id, session);
                }
                tied.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            }
        }
        // The last fifth of a listing that cannot hold every holder goes
        // to holders drawn at random from those below the cut: each has a
        // chance to be listed, however it ranks (holders made up to rank
        // best cannot keep the real ones out of every listing).
        let drawn = limit / 5;
        if ranked.len() > limit && drawn > 0 {
            for place in limit - drawn..limit {
                let pick = fastrand::usize(place..ranked.len());
                ranked.swap(place, pick);
            }
        }
        ranked.truncate(limit);
        // Handed out as they are, not collected again: a listing costs the
        // tracker as few allocations as it can.
        Ok(ranked.into_iter().map(|(_, _, entry)| entry))
    }

    /// How many files `session` holds that others are downloading: each is
    /// a swarm it is probably uploading to. The tracker does not see the
    /// transfers themselves; this is its best guess of a peer's load.
    fn swarms_served(&self, id: SessionId, session: &Session) -> usize {
        session
            .files
            .iter()
            .filter_map(|key| self.files.get(key))
            .filter(|record| record.has_leechers_besides(id))
            .count()
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

    /// The files a search must look at: with a `key=` criterion, that file
    /// alone (a hash look-up); with `user=`, that user's files; else all.
    fn candidates<'r>(
        &'r self,
        criteria: &SearchCriteria,
    ) -> impl Iterator<Item = &'r FileRecord> + 'r {
        use crate::protocol::Criterion;
        let key = criteria.0.iter().find_map(|criterion| match criterion {
            Criterion::Key(key) => Some(key),
            _ => None,
        });
        let user = criteria.0.iter().find_map(|criterion| match criterion {
            Criterion::User(user) => Some(user),
            _ => None,
        });
        match (key, user) {
            (Some(key), _) => Candidates::One(self.files.get(key)),
            (None, Some(user)) => Candidates::OfUser(
                self.by_user
                    .get(user)
                    .and_then(|id| self.sessions.get(id))
                    .into_iter()
                    .flat_map(|session| session.files.iter())
                    .filter_map(|key| self.files.get(key)),
            ),
            (None, None) => Candidates::All(self.files.values()),
        }
    }

    fn matches(&self, record: &FileRecord, matcher: &Matcher<'_>) -> bool {
        matcher.matches(&record.meta, |user| {
            record.holders.keys().any(|id| {
                self.sessions
                    .get(id)
                    .is_some_and(|s| s.user.as_ref() == Some(user))
            })
        })
    }

    fn drop_holding(&mut self, key: FileKey, id: SessionId) {
        if let Some(record) = self.files.get_mut(&key) {
            if let Some(old) = record.remove_holding(id) {
                self.bytes -= old.cost();
            }
            if record.holders.is_empty() {
                self.bytes -= record_cost(&record.meta.name);
                self.files.remove(&key);
            }
        }
    }

    /// What session `id`'s holding of `key` costs now (0: none).
    fn cost_of_holding(&self, key: FileKey, id: SessionId) -> usize {
        self.files
            .get(&key)
            .and_then(|record| record.holders.get(&id))
            .map_or(0, Holding::cost)
    }

    /// Counts `taken` bytes in place of `freed` ones, unless that grows
    /// the count past the budget.
    fn make_room(&mut self, freed: usize, taken: usize) -> Result<(), RegistryError> {
        let after = self.bytes - freed + taken;
        if taken > freed && after > self.max_offer_bytes {
            return Err(RegistryError::Full(self.max_offer_bytes));
        }
        self.bytes = after;
        Ok(())
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

impl FileRecord {
    /// True when `holding` has every piece of this file.
    fn is_complete(&self, holding: &Holding) -> bool {
        holding.pieces == self.meta.piece_count()
    }

    /// Records what session `id` holds (replacing what it held), keeping
    /// the count of leechers.
    fn set_holding(&mut self, id: SessionId, holding: Holding) {
        self.remove_holding(id);
        if !self.is_complete(&holding) {
            self.leechers += 1;
        }
        self.holders.insert(id, holding);
    }

    /// Forgets what session `id` holds, keeping the count of leechers.
    fn remove_holding(&mut self, id: SessionId) -> Option<Holding> {
        let old = self.holders.remove(&id)?;
        if !self.is_complete(&old) {
            self.leechers -= 1;
        }
        Some(old)
    }

    /// Whether anyone but session `id` is downloading this file.
    fn has_leechers_besides(&self, id: SessionId) -> bool {
        let own = self
            .holders
            .get(&id)
            .is_some_and(|holding| !self.is_complete(holding));
        self.leechers > usize::from(own)
    }
}

/// How good a holder is for one asker, best first when sorted: complete
/// copies first, then the most pieces, then the nearest (same host, then
/// same subnet), then the least busy, then at random, drawn anew for each
/// request: among equals each holder gets its turn in a listing cut at
/// its limit, and a host with many sessions cannot keep the others out.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct HolderRank {
    role: Role,
    pieces: std::cmp::Reverse<u64>,
    distance: Distance,
    /// Swarms the holder serves ([`Registry::swarms_served`]). Counted
    /// only where it decides the order (see [`Registry::holders`]): 0
    /// for a holder that ties with no other, or past the listing's limit.
    serving: usize,
    lottery: u64,
}

impl HolderRank {
    /// Whether the two rank the same on everything before the load.
    fn ties_before_load(&self, other: &HolderRank) -> bool {
        (self.role, self.pieces, self.distance) == (other.role, other.pieces, other.distance)
    }
}

/// How far a holder is from the asker, by IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Distance {
    /// The same IP address: the same machine.
    SameHost,
    /// The same IPv4 /24 or IPv6 /64 network: probably the same LAN.
    SameSubnet,
    Elsewhere,
}

impl Distance {
    fn between(a: IpAddr, b: IpAddr) -> Distance {
        match (a, b) {
            _ if a == b => Distance::SameHost,
            (IpAddr::V4(a), IpAddr::V4(b)) if a.octets()[..3] == b.octets()[..3] => {
                Distance::SameSubnet
            }
            (IpAddr::V6(a), IpAddr::V6(b)) if a.segments()[..4] == b.segments()[..4] => {
                Distance::SameSubnet
            }
            _ => Distance::Elsewhere,
        }
    }
}

/// The order `RQFS` lists files in: by name (letter case aside), then
/// key. One definition for a search and for the merge of its slices.
fn file_order(name: &crate::protocol::FileName, key: FileKey) -> (String, FileKey) {
    (name.as_str().to_lowercase(), key)
}

/// The order `LSTF` lists offers in: by user, then peer id, then path,
/// then key (the user and path borrowed or owned).
fn share_order<U: Ord, P: Ord>(
    user: U,
    peer: PeerId,
    path: P,
    key: FileKey,
) -> (U, PeerId, P, FileKey) {
    (user, peer, path, key)
}

/// The first `limit` of two lists of a search's answers, each in the
/// order `RQFS` gives ([`file_order`]).
pub fn first_files(a: Vec<FileEntry>, b: Vec<FileEntry>, limit: usize) -> Vec<FileEntry> {
    let order = |entry: &FileEntry| file_order(&entry.name, entry.key);
    first_by(a.into_iter().chain(b), limit, order, |entry| entry)
}

/// The first `limit` of two lists of offers, in the order `LSTF` gives
/// ([`share_order`]).
pub fn first_shares(a: Vec<ShareEntry>, b: Vec<ShareEntry>, limit: usize) -> Vec<ShareEntry> {
    let order = |e: &ShareEntry| share_order(e.user.clone(), e.peer, e.path.clone(), e.key);
    first_by(a.into_iter().chain(b), limit, order, |entry| entry)
}

/// The first `limit` of `items` in the order of `key`, each key computed
/// once, made into replies by `build`. At most `limit` items are held at a
/// time, however many there are (a search may match every file), and only
/// those kept are built.
fn first_by<T, K: Ord, R>(
    items: impl Iterator<Item = T>,
    limit: usize,
    key: impl Fn(&T) -> K,
    mut build: impl FnMut(T) -> R,
) -> Vec<R> {
    let mut items = items.peekable();
    let Some(first) = items.next().filter(|_| limit > 0) else {
        return Vec::new();
    };
    if items.peek().is_none() {
        // One item (a search by key, the commonest): nothing to order, so
        // no sort key to build.
        return vec![build(first)];
    }
    // A max-heap on the key: its top is the worst of the best so far,
    // replaced by any later item that sorts before it.
    let mut best = BinaryHeap::new();
    best.push(Keyed(key(&first), first));
    for item in items {
        let item_key = key(&item);
        if best.len() < limit {
            best.push(Keyed(item_key, item));
        } else if let Some(mut worst) = best.peek_mut() {
            if item_key < worst.0 {
                *worst = Keyed(item_key, item);
            }
        }
    }
    best.into_sorted_vec()
        .into_iter()
        .map(|Keyed(_, item)| build(item))
        .collect()
}

/// An item ordered by its key alone (for [`first_by`]'s heap).
struct Keyed<K, T>(K, T);

impl<K: Ord, T> Ord for Keyed<K, T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl<K: Ord, T> PartialOrd for Keyed<K, T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, T> PartialEq for Keyed<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Ord, T> Eq for Keyed<K, T> {}

/// The files a search looks at: the one with the asked key, the asked
/// user's, or all of them. An enum, not a boxed iterator, so that starting
/// a search costs no allocation.
enum Candidates<'r, U: Iterator<Item = &'r FileRecord>> {
    One(Option<&'r FileRecord>),
    OfUser(U),
    All(std::collections::btree_map::Values<'r, FileKey, FileRecord>),
}

impl<'r, U: Iterator<Item = &'r FileRecord>> Iterator for Candidates<'r, U> {
    type Item = &'r FileRecord;

    fn next(&mut self) -> Option<&'r FileRecord> {
        match self {
            Candidates::One(record) => record.take(),
            Candidates::OfUser(records) => records.next(),
            Candidates::All(records) => records.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_come_out_sorted_whatever_the_count() {
        let items: Vec<u32> = vec![9, 3, 7, 1, 8, 2, 6];
        let first = |items: &[u32], limit| first_by(items.iter().copied(), limit, |&x| x, |x| x);
        assert_eq!(first(&items, 3), [1, 2, 3]);
        assert_eq!(first(&items, 1), [1]);
        assert_eq!(first(&items, 100), [1, 2, 3, 6, 7, 8, 9]);
        assert_eq!(first(&items, 0), Vec::<u32>::new());
        assert_eq!(first(&[5], 1), [5]);
        assert_eq!(first(&[5], 0), Vec::<u32>::new());
        assert_eq!(first(&[], 3), Vec::<u32>::new());
    }

    #[test]
    fn each_sort_key_is_computed_once_and_none_for_a_single_item() {
        let computed = std::cell::Cell::new(0);
        let key = |&x: &u32| {
            computed.set(computed.get() + 1);
            x
        };
        assert_eq!(
            first_by((0..1000u32).rev(), 10, key, |x| x),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(computed.get(), 1000);
        computed.set(0);
        assert_eq!(first_by(std::iter::once(7u32), 10, key, |x| x), [7]);
        assert_eq!(computed.get(), 0);
    }

    use crate::protocol::{Criterion, TrackerRequest};

    const NO_LIMIT: usize = usize::MAX;
    /// The address of the sessions [`peer`] makes.
    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

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

    fn bits(hex: &str) -> BitmapField {
        BitmapField::parse(hex).unwrap()
    }

    /// A registry with sessions 1, 2, 3 open as peers 7001, 7002, 7003.
    fn three_sessions() -> Registry {
        let mut registry = Registry::new(NO_LIMIT);
        for id in 1..=3 {
            registry.open(id, peer(7000 + id as u16), None).unwrap();
        }
        registry
    }

    #[test]
    fn a_user_name_and_a_peer_id_are_held_by_one_live_session() {
        let mut registry = Registry::new(NO_LIMIT);
        registry.open(1, peer(7001), user("alice")).unwrap();
        let alice = UserName::parse("alice").unwrap();
        assert_eq!(
            registry.open(2, peer(7002), user("alice")),
            Err(RegistryError::UserTaken(alice.clone()))
        );
        // Not even from the same ip:port: that could be anyone on the host.
        assert_eq!(
            registry.open(2, peer(7001), user("alice")),
            Err(RegistryError::UserTaken(alice))
        );
        assert_eq!(
            registry.open(2, peer(7001), None),
            Err(RegistryError::PeerIdInUse(peer(7001)))
        );
        assert_eq!(
            registry.open(1, peer(7009), None),
            Err(RegistryError::SessionOpen(peer(7001)))
        );
        registry.close(1);
        assert_eq!(registry.open(2, peer(7001), user("alice")), Ok(()));
    }

    #[test]
    fn a_session_changes_only_its_own_offers() {
        let mut registry = three_sessions();
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
            registry.withdraw(9, song.key),
            Err(RegistryError::NoSession)
        );
    }

    /// The budget's count from scratch, to check the running one.
    fn recount(registry: &Registry) -> usize {
        registry
            .files
            .values()
            .map(|record| {
                RECORD_COST
                    + record.meta.name.as_str().len()
                    + record.holders.values().map(Holding::cost).sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn all_offers_together_fit_in_the_budget() {
        // Room for three offers of one file each, with these names and paths.
        let one = RECORD_COST + HOLDING_COST + "f0.mp3".len() + "/music/f0.mp3".len();
        let mut registry = three_sessions().with_max_offer_bytes(3 * one);
        for n in 0..3 {
            registry
                .offer(1, &offer(n, &format!("f{n}.mp3"), 10))
                .unwrap();
        }
        assert_eq!(registry.bytes(), 3 * one);
        let refused = registry.offer(2, &offer(7, "f7.mp3", 10)).unwrap_err();
        assert_eq!(refused, RegistryError::Full(3 * one));
        assert_eq!(refused.code(), ErrorCode::TrackerFull);
        // Offering again what is held costs nothing more; a progress
        // report from a new holder costs a holding.
        registry.offer(1, &offer(0, "f0.mp3", 10)).unwrap();
        assert_eq!(
            registry.report(2, FileKey([0; 32]), &bits("80")),
            Err(RegistryError::Full(3 * one))
        );
        // Withdrawn, a file's room is free again; a closed session frees
        // all of its own.
        registry.withdraw(1, FileKey([2; 32])).unwrap();
        registry.offer(2, &offer(7, "f7.mp3", 10)).unwrap();
        assert_eq!(registry.bytes(), recount(&registry));
        registry.close(1);
        registry.close(2);
        assert_eq!(registry.bytes(), 0);
    }

    #[test]
    fn the_budget_count_follows_every_change() {
        // A roomy budget, and small ones that refuse often.
        for budget in [DEFAULT_MAX_OFFER_BYTES, 1500, 4000, 9000] {
            budget_follows_random_changes(budget);
        }
    }

    fn budget_follows_random_changes(budget: usize) {
        let mut registry = three_sessions().with_max_offer_bytes(budget);
        let mut rng = fastrand::Rng::with_seed(budget as u64);
        let mut next_session = 4;
        let mut refused = 0;
        for _ in 0..5000 {
            let id = rng.u64(1..next_session);
            let key = rng.u8(0..8);
            match rng.u8(0..6) {
                0 | 1 => {
                    let name = format!("{}.mp3", "n".repeat(rng.usize(1..40)));
                    if let Err(RegistryError::Full(_)) =
                        registry.offer(id, &offer(key, &name, 40_000))
                    {
                        refused += 1;
                    }
                }
                2 => {
                    let _ = registry.withdraw(id, FileKey([key; 32]));
                }
                3 => {
                    let bitmap = ["00", "80", "c0", "e0"][rng.usize(0..4)];
                    if let Err(RegistryError::Full(_)) =
                        registry.report(id, FileKey([key; 32]), &bits(bitmap))
                    {
                        refused += 1;
                    }
                }
                4 => {
                    registry.close(id);
                }
                _ => {
                    let _ = registry.open(next_session, peer(8000 + next_session as u16), None);
                    next_session += 1;
                }
            }
            assert_eq!(registry.bytes(), recount(&registry));
            assert!(registry.bytes() <= budget);
        }
        assert_eq!(
            refused > 0,
            budget < DEFAULT_MAX_OFFER_BYTES,
            "{refused} refusals"
        );
    }

    #[test]
    fn offers_must_agree_with_the_registered_metadata() {
        let mut registry = three_sessions();
        registry.offer(1, &offer(1, "a.mp3", 40_000)).unwrap();
        assert!(matches!(
            registry.offer(2, &offer(1, "a.mp3", 50_000)),
            Err(RegistryError::FileConflict { size: 40_000, .. })
        ));
        registry.offer(2, &offer(1, "renamed.mp3", 40_000)).unwrap();
        let files = registry.search(&criteria(""), NO_LIMIT);
        assert_eq!((files[0].name.as_str(), files[0].seeders), ("a.mp3", 2));
    }

    #[test]
    fn progress_reports_make_leechers_and_complete_ones_seeders() {
        let mut registry = three_sessions();
        let song = offer(1, "song.mp3", 40_000); // 3 pieces
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
        let entry = &registry.search(&criteria(""), NO_LIMIT)[0];
        assert_eq!((entry.seeders, entry.leechers), (1, 1));
        let listed: Vec<(PeerId, Role, u64)> = registry
            .holders(song.key, 3, LOCAL, 50)
            .unwrap()
            .map(|e| (e.peer, e.role, e.pieces))
            .collect();
        assert_eq!(
            listed,
            vec![
                (peer(7001), Role::Seeder, 3),
                (peer(7002), Role::Leecher, 1)
            ]
        );
        assert_eq!(
            registry.holders(song.key, 1, LOCAL, 50).unwrap().len(),
            1,
            "asker left out"
        );
        assert_eq!(
            registry.holders(song.key, 3, LOCAL, 1).unwrap().len(),
            1,
            "limit"
        );
        assert_eq!(registry.report(2, song.key, &bits("e0")), Ok(3));
        assert_eq!(registry.search(&criteria(""), NO_LIMIT)[0].seeders, 2);
        // Only offers (ADDF) are listed as shares, with their paths.
        assert_eq!(registry.shares(&criteria(""), NO_LIMIT).len(), 1);
    }

    #[test]
    fn holders_are_ranked_complete_then_pieces_then_nearest_then_least_busy() {
        let mut registry = Registry::new(NO_LIMIT);
        let at = |ip: [u8; 4], port| PeerId::from((ip, port));
        let asker = 1;
        registry
            .open(asker, at([192, 168, 1, 10], 7000), None)
            .unwrap();
        // Four seeders: far away, far away but busy, same subnet, same host.
        // The busy one has the lower address: only its load puts it after.
        let far = at([10, 0, 0, 2], 7000);
        let far_busy = at([10, 0, 0, 1], 7000);
        let subnet = at([192, 168, 1, 20], 7000);
        let host = at([192, 168, 1, 10], 7001);
        for (id, peer) in [(2, far_busy), (3, far), (4, subnet), (5, host)] {
            registry.open(id, peer, None).unwrap();
        }
        let song = offer(1, "song.mp3", 40_000); // 3 pieces
        for id in 2..=5 {
            registry.offer(id, &song).unwrap();
        }
        // The busy one also seeds a file someone (session 6) is fetching;
        // so does the one on the same host, which still comes first: load
        // only breaks ties.
        let film = offer(2, "film.mp3", 40_000);
        registry.offer(2, &film).unwrap();
        registry.offer(5, &film).unwrap();
        registry.open(6, at([10, 0, 0, 9], 7000), None).unwrap();
        assert_eq!(registry.report(6, film.key, &bits("80")), Ok(1));
        // A leecher on the same host ranks after every complete copy.
        registry.open(7, at([192, 168, 1, 10], 7002), None).unwrap();
        assert_eq!(registry.report(7, song.key, &bits("c0")), Ok(2));

        let ranked_for = |asker| -> Vec<PeerId> {
            let asker_ip = IpAddr::from([192, 168, 1, 10]);
            registry
                .holders(song.key, asker, asker_ip, 50)
                .unwrap()
                .map(|e| e.peer)
                .collect()
        };
        let leecher = at([192, 168, 1, 10], 7002);
        assert_eq!(
            ranked_for(asker),
            vec![host, subnet, far, far_busy, leecher]
        );
        // Asked without a session, from the same address: the same order
        // (nearest by the connection's address).
        let no_session = 99;
        assert_eq!(ranked_for(no_session), ranked_for(asker));
    }

    #[test]
    fn holders_that_rank_the_same_take_turns_in_a_listing_cut_at_its_limit() {
        // Fifty sessions of one host claim the file (nothing need listen
        // on their ports); the real seeder, on the same host, ranks the
        // same. Listings of 50 leave out one at random, never always it.
        let mut registry = Registry::new(NO_LIMIT);
        let song = offer(1, "song.mp3", 40_000);
        for id in 1..=51 {
            registry.open(id, peer(id as u16), None).unwrap();
            registry.offer(id, &song).unwrap();
        }
        let real = peer(51);
        let asker = 99;
        let listed = |registry: &Registry| -> Vec<PeerId> {
            registry
                .holders(song.key, asker, LOCAL, 50)
                .unwrap()
                .map(|e| e.peer)
                .collect()
        };
        assert_eq!(listed(&registry).len(), 50);
        // Left out of one listing in 51: of 20, it misses all with a
        // chance of 51^-20. (By address, as before, it was always left out.)
        let times = (0..20)
            .filter(|_| listed(&registry).contains(&real))
            .count();
        assert!(times > 0, "the real seeder was never listed");
    }

    #[test]
    fn a_holder_that_ranks_below_the_cut_is_still_listed_now_and_then() {
        // Ten made-up holders on the asker's own host rank first; the real
        // seeder is elsewhere. Listings of five keep four places for the
        // best and draw the fifth from the others.
        let mut registry = Registry::new(NO_LIMIT);
        let song = offer(1, "song.mp3", 40_000);
        for id in 1..=10 {
            registry.open(id, peer(id as u16), None).unwrap();
            registry.offer(id, &song).unwrap();
        }
        let real = PeerId::from(([10, 0, 0, 9], 7000));
        registry.open(11, real, None).unwrap();
        registry.offer(11, &song).unwrap();
        let asker = 99;
        let listed = |registry: &Registry| -> Vec<PeerId> {
            registry
                .holders(song.key, asker, LOCAL, 5)
                .unwrap()
                .map(|e| e.peer)
                .collect()
        };
        assert!(listed(&registry)[..4].iter().all(|p| p.ip() == LOCAL));
        // Listed with a chance of 1 in 7 each time: never in 100 listings
        // with a chance of (6/7)^100, under one in a million.
        assert!((0..100).any(|_| listed(&registry).contains(&real)));
        // A listing that holds every holder: none drawn.
        assert_eq!(
            registry
                .holders(song.key, asker, LOCAL, 11)
                .unwrap()
                .count(),
            11
        );
    }

    #[test]
    fn a_report_of_no_piece_holds_nothing() {
        let mut registry = three_sessions();
        let song = offer(1, "song.mp3", 40_000);
        registry.offer(1, &song).unwrap();
        assert_eq!(registry.report(2, song.key, &bits("00")), Ok(0));
        assert_eq!(registry.search(&criteria(""), NO_LIMIT)[0].leechers, 0);
        registry.report(2, song.key, &bits("40")).unwrap();
        assert_eq!(registry.report(2, song.key, &bits("00")), Ok(0));
        registry.close(1);
        assert_eq!(registry.file_count(), 0, "nobody holds any piece of it");
    }

    #[test]
    fn a_seeder_that_reports_partial_progress_is_no_longer_an_offer() {
        let mut registry = three_sessions();
        let song = offer(1, "song.mp3", 40_000);
        registry.offer(1, &song).unwrap();
        registry.report(1, song.key, &bits("c0")).unwrap();
        assert!(registry.shares(&criteria(""), NO_LIMIT).is_empty());
        assert_eq!(registry.search(&criteria(""), NO_LIMIT)[0].leechers, 1);
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_files() {
        let mut registry = Registry::new(2);
        registry.open(1, peer(7001), None).unwrap();
        registry.open(2, peer(7002), None).unwrap();
        registry.offer(2, &offer(3, "c.mp3", 40_000)).unwrap();
        registry.offer(1, &offer(1, "a.mp3", 10)).unwrap();
        registry.offer(1, &offer(2, "b.mp3", 10)).unwrap();
        assert_eq!(
            registry.offer(1, &offer(4, "d.mp3", 10)),
            Err(RegistryError::TooManyFiles(2))
        );
        assert_eq!(
            registry.report(1, FileKey([3; 32]), &bits("80")),
            Err(RegistryError::TooManyFiles(2))
        );
        // Offering again what it already holds is fine.
        registry.offer(1, &offer(2, "b.mp3", 10)).unwrap();
        registry.withdraw(1, FileKey([1; 32])).unwrap();
        registry.offer(1, &offer(4, "d.mp3", 10)).unwrap();
    }

    #[test]
    fn closing_a_session_removes_every_trace() {
        let mut registry = Registry::new(NO_LIMIT);
        registry.open(1, peer(7001), user("alice")).unwrap();
        registry.open(2, peer(7002), user("bob")).unwrap();
        registry.offer(1, &offer(1, "a.mp3", 10)).unwrap();
        registry.offer(1, &offer(2, "b.mp3", 10)).unwrap();
        registry.offer(2, &offer(2, "b.mp3", 10)).unwrap();
        assert!(registry.close(1));
        assert!(!registry.close(1));
        let files = registry.search(&criteria(""), NO_LIMIT);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].seeders, 1);
        assert_eq!(registry.users().len(), 1);
        assert!(registry
            .shares(&criteria(""), NO_LIMIT)
            .iter()
            .all(|s| s.peer == peer(7002)));
        assert_eq!(registry.open(3, peer(7001), user("alice")), Ok(()));
    }

    #[test]
    fn search_filters_combine_and_listings_are_capped() {
        let mut registry = Registry::new(NO_LIMIT);
        registry.open(1, peer(7001), user("alice")).unwrap();
        registry.open(2, peer(7002), user("bob")).unwrap();
        registry
            .offer(1, &offer(1, "Summer%20Song.mp3", 5_000_000))
            .unwrap();
        registry.offer(1, &offer(2, "notes.txt", 2_000)).unwrap();
        registry.offer(2, &offer(3, "winter.ogg", 900_000)).unwrap();
        let names = |text: &str| -> Vec<String> {
            registry
                .search(&criteria(text), NO_LIMIT)
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
        // key= is looked up, and the other criteria still apply to it.
        let winter = FileKey([3; 32]);
        assert_eq!(names(&format!("key={winter}")), ["winter.ogg"]);
        assert_eq!(names(&format!("key={winter} user=bob")), ["winter.ogg"]);
        assert_eq!(
            names(&format!("key={winter} user=alice")),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&format!("key={}", FileKey([9; 32]))),
            Vec::<String>::new()
        );
        let alice = SearchCriteria(vec![Criterion::User(UserName::parse("alice").unwrap())]);
        assert_eq!(registry.shares(&alice, NO_LIMIT).len(), 2);
        assert_eq!(registry.search(&criteria(""), 2).len(), 2);
        assert_eq!(registry.shares(&criteria(""), 1).len(), 1);
    }

    #[test]
    fn a_capped_listing_is_the_head_of_the_whole_one() {
        let mut registry = Registry::new(NO_LIMIT);
        for session in 1..=3u8 {
            let name = ["carol", "alice", "bob"][usize::from(session) - 1];
            registry
                .open(session.into(), peer(7000 + u16::from(session)), user(name))
                .unwrap();
            // Every session offers the same ten files, in scrambled order.
            for n in [7u8, 2, 9, 0, 5, 3, 8, 1, 6, 4] {
                let file = offer(n, &format!("F{n}.mp3"), 10);
                registry.offer(session.into(), &file).unwrap();
            }
        }
        let all_files = registry.search(&criteria(""), NO_LIMIT);
        let all_offers = registry.shares(&criteria(""), NO_LIMIT);
        assert_eq!(all_files.len(), 10);
        assert_eq!(all_offers.len(), 30);
        assert_eq!(all_files[0].name.as_str(), "F0.mp3");
        assert_eq!(all_offers[0].user, user("alice"));
        assert_eq!(all_offers[0].path.as_str(), "/music/F0.mp3");
        for limit in [0, 1, 4, 10, 11, 29] {
            let files = registry.search(&criteria(""), limit);
            assert_eq!(files[..], all_files[..limit.min(10)], "limit {limit}");
            let offers = registry.shares(&criteria(""), limit);
            assert_eq!(offers[..], all_offers[..limit], "limit {limit}");
        }
    }
}
