//! What a peer does in the ring, on top of keeping its place there (that
//! is [`crate::ring::node`]): it announces its files as records, finds the
//! peers of the files it downloads, and finds files by key or name, all
//! without the tracker.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};

use crate::protocol::ring::Record;
use crate::protocol::{FileEntry, FileKey, FileMeta, FileName, SearchCriteria};
use crate::ring::RingNode;
use crate::tracker::search::Matcher;

use super::discovery::{Discovery, Source};
use super::library::{Library, SharedFile};
use super::link::PeerLink;
use super::{media, PeerError};

/// A record lives for this many announcement intervals unless announced
/// again, so one lost announcement does not lose it.
const TTL_INTERVALS: u32 = 3;

/// The records announcing `file`, held by the peer at `me`: "I hold it"
/// once it has a piece, and its name once it is complete.
pub fn records_of(file: &SharedFile, me: SocketAddr) -> Vec<Record> {
    let mut records = Vec::new();
    if file.bitmap().count() > 0 {
        records.push(Record::Holder {
            key: file.key,
            peer: me,
        });
    }
    if file.is_offered() {
        records.push(Record::Name(FileMeta {
            name: file.name.clone(),
            key: file.key,
            size: file.manifest.size(),
            piece_size: file.manifest.piece_size(),
            kind: file.kind,
        }));
    }
    records
}

/// How long an announcement made every `refresh` lives.
pub fn record_ttl(refresh: Duration) -> Duration {
    refresh * TTL_INTERVALS
}

/// Announces `file` in the ring now (a share should not wait for the next
/// round to be found).
pub fn announce(ring: &RingNode, file: &SharedFile, refresh: Duration) {
    let records = records_of(file, ring.me().addr);
    let failed = ring.publish(&records, record_ttl(refresh));
    if failed > 0 {
        debug!(
            "ring: {failed} home(s) of {} not reached; next try in {} s",
            file.name.as_str(),
            refresh.as_secs()
        );
    }
}

/// The ring's part of the housekeeping: announcing every file again each
/// `refresh` (and checking the welcome service still lists this peer), and
/// finding peers for downloads each `round_every`.
pub struct RingDuties {
    pub ring: Arc<RingNode>,
    pub library: Arc<Library>,
    pub discovery: Arc<Discovery>,
    pub refresh: Duration,
    pub round_every: Duration,
    pub last_announce: Option<Instant>,
    pub last_round: Option<Instant>,
    /// The tracker session in which the welcome service was last checked.
    pub welcome_session: u64,
}

impl RingDuties {
    /// Given the tracker session now open: a new one means the tracker
    /// restarted (or the connection broke), and a restarted tracker's
    /// welcome service has forgotten every member. It is told again at
    /// once, not at the next refresh: meanwhile it would answer a
    /// newcomer `yaf`, and the newcomer would start a second ring.
    pub fn tracker_session(&mut self, session: u64) {
        if session != self.welcome_session {
            self.welcome_session = session;
            self.ring.renew_welcome();
        }
    }

    /// Does what is due.
    pub fn run_due(&mut self) {
        if self
            .last_round
            .is_none_or(|at| at.elapsed() >= self.round_every)
        {
            self.last_round = Some(Instant::now());
            for key in self.discovery.wanted() {
                match self.ring.holders(key) {
                    Ok(peers) => self.discovery.found(Source::Ring, &key, peers),
                    Err(e) => debug!("ring: holders of {key}: {e}"),
                }
            }
        }
        if self
            .last_announce
            .is_none_or(|at| at.elapsed() >= self.refresh)
        {
            self.last_announce = Some(Instant::now());
            self.ring.renew_welcome();
            let me = self.ring.me().addr;
            let records: Vec<Record> = self
                .library
                .all()
                .iter()
                .flat_map(|file| records_of(file, me))
                .collect();
            let failed = self.ring.publish(&records, record_ttl(self.refresh));
            info!(
                "ring: announced {} record(s){}",
                records.len(),
                if failed > 0 {
                    format!(", {failed} home(s) not reached")
                } else {
                    String::new()
                }
            );
        }
    }
}

/// Finds a file in the ring by key or exact name.
pub fn find_file(ring: &RingNode, what: &str) -> Result<FileEntry, PeerError> {
    let failed = |e: crate::ring::RingError| PeerError::Failed(format!("the ring: {e}"));
    if let Ok(key) = FileKey::parse(what) {
        let holders = ring.holders(key).map_err(failed)?;
        return entry_from_holders(key, &holders);
    }
    let name = FileName::new(what).map_err(|e| PeerError::Failed(e.to_string()))?;
    let found = ring.files_named(&name).map_err(failed)?;
    if found.is_empty() {
        return Err(PeerError::NotFound(format!(
            "the ring knows no file {what}"
        )));
    }
    // (A look-up that fails leaves its file out, unless all fail.)
    let mut named = Vec::new();
    let mut first_failure = None;
    for file in found.into_iter().take(NAMED_FILES_CHECKED) {
        match ring.holders(file.key) {
            Ok(holders) => named.push((file, holders.len() as u32)),
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    if let (true, Some(e)) = (named.is_empty(), first_failure) {
        return Err(failed(e));
    }
    // Anyone may store a `NAME` record: of several files of one name,
    // those no peer holds are left out, so that one made-up record does
    // not make the name of a file in the swarm ambiguous.
    if named.len() > 1 {
        named.retain(|(_, holders)| *holders > 0);
    }
    match named.len() {
        0 => Err(PeerError::NotFound(format!(
            "the ring names files {what}, but no peer holds any of them"
        ))),
        1 => {
            let (file, holders) = named.remove(0);
            Ok(file.entry(holders, 0))
        }
        _ => Err(PeerError::ambiguous_name(
            what,
            named.iter().map(|(f, _)| f.key),
        )),
    }
}

/// Files of one name whose holders are looked up, at most (each a look-up
/// in the ring); the ring keeps up to 1000 `NAME` records of a name.
const NAMED_FILES_CHECKED: usize = 16;

/// Holders asked for a file's name, at most: anyone may announce
/// himself a holder in the ring, so the list can be long and made up.
const NAME_HOLDERS_ASKED: usize = 8;
/// No further holder is asked for a file's name after this long (the one
/// being asked still has its own deadline).
const NAME_SEARCH_TIME: Duration = Duration::from_secs(30);

/// A file known only by its key: its name comes from the first holder
/// that lists it (`LSTF`), of the first [`NAME_HOLDERS_ASKED`], asked in
/// turn for at most [`NAME_SEARCH_TIME`].
fn entry_from_holders(key: FileKey, holders: &[SocketAddr]) -> Result<FileEntry, PeerError> {
    if holders.is_empty() {
        return Err(PeerError::NotFound(format!(
            "no peer in the ring holds {key}"
        )));
    }
    let give_up = Instant::now() + NAME_SEARCH_TIME;
    let asked = &holders[..holders.len().min(NAME_HOLDERS_ASKED)];
    for &holder in asked {
        if Instant::now() >= give_up {
            break;
        }
        let shares = PeerLink::connect(holder)
            .map_err(super::link::LinkError::from)
            .and_then(|mut link| link.shares());
        let Ok(shares) = shares else { continue };
        let Some(share) = shares.into_iter().find(|s| s.key == key) else {
            continue;
        };
        let path = Path::new(share.path.as_str());
        let Some(name) = path
            .file_name()
            .and_then(|n| FileName::new(&n.to_string_lossy()).ok())
        else {
            continue;
        };
        return Ok(FileEntry {
            key,
            kind: media::from_name(path).kind,
            name,
            size: 0,
            piece_size: 0,
            seeders: holders.len() as u32,
            leechers: 0,
        });
    }
    Err(PeerError::NotFound(format!(
        "none of the {} peer(s) asked of the {} holding {key} lists it with a name",
        asked.len(),
        holders.len()
    )))
}

/// The most peers a search walks in the ring, and the most files it
/// answers from there (each costs a look-up of its holders).
const SEARCH_PEERS: usize = 256;
const SEARCH_FILES: usize = 100;
/// How long a search spends looking up holder counts, after its walk of
/// the ring: slow look-ups cannot hold it (each may take 15 s) for long.
const HOLDER_COUNTS_WITHIN: Duration = Duration::from_secs(15);

/// The files named in the ring that pass `criteria`, other than those in
/// `known`, with their holder counts (0 for those not looked up in time).
/// `user=` matches none (the ring does not know users).
pub fn search(ring: &RingNode, criteria: &SearchCriteria, known: &[FileEntry]) -> Vec<FileEntry> {
    let matcher = Matcher::new(criteria);
    let files = ring.all_files(SEARCH_PEERS);
    let deadline = Instant::now() + HOLDER_COUNTS_WITHIN;
    files
        .into_iter()
        .filter(|file| !known.iter().any(|k| k.key == file.key))
        .filter(|file| matcher.matches(file, |_| false))
        .take(SEARCH_FILES)
        .map(|file| {
            let holders = if Instant::now() < deadline {
                ring.holders(file.key).map_or(0, |h| h.len() as u32)
            } else {
                0
            };
            file.entry(holders, 0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_name_is_asked_of_a_few_holders_only() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // Holders that take each connection and close it at once: none
        // lists the file, and each answers quickly.
        let listeners: Vec<TcpListener> = (0..3 * NAME_HOLDERS_ASKED)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let holders: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let done = Arc::new(AtomicBool::new(false));
        let closer = std::thread::Builder::new()
            .name("closing-holders".into())
            .spawn({
                let done = Arc::clone(&done);
                move || {
                    let mut connected = vec![false; listeners.len()];
                    for listener in &listeners {
                        listener.set_nonblocking(true).unwrap();
                    }
                    while !done.load(Ordering::SeqCst) {
                        for (i, listener) in listeners.iter().enumerate() {
                            if listener.accept().is_ok() {
                                connected[i] = true;
                            }
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    connected
                }
            })
            .unwrap();
        let error = entry_from_holders(FileKey([7; 32]), &holders).unwrap_err();
        done.store(true, Ordering::SeqCst);
        let connected = closer.join().unwrap();
        assert!(
            error.to_string().contains(&format!(
                "none of the {NAME_HOLDERS_ASKED} peer(s) asked of the {} holding",
                holders.len()
            )),
            "{error}"
        );
        assert!(
            connected[..NAME_HOLDERS_ASKED].iter().all(|&c| c),
            "{connected:?}"
        );
        assert!(
            !connected[NAME_HOLDERS_ASKED..].iter().any(|&c| c),
            "{connected:?}"
        );
    }
}
