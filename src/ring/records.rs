//! The records this peer keeps for the ring: who holds which file, and
//! which file has which name. Each record lives until its time to live
//! runs out, unless its holder stores it again (refreshes it) first. Pure
//! state: the clock is passed in, so the expiry is testable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protocol::ring::{Record, RecordQuery};
use crate::protocol::{FileKey, FileMeta};

/// The most records one peer keeps for the ring.
pub const MAX_RECORDS: usize = 100_000;
/// The most holders kept for one file, and files kept for one name.
pub const MAX_PER_PLACE: usize = 1000;

/// Why a record was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("this peer keeps {MAX_RECORDS} records already")]
    Full,
    #[error("this peer keeps {MAX_PER_PLACE} records for that file or name already")]
    PlaceFull,
}

/// Records by what they are found by, each with its expiry.
#[derive(Debug, Default)]
pub struct RecordStore {
    holders: HashMap<FileKey, HashMap<SocketAddr, Instant>>,
    names: HashMap<String, HashMap<FileKey, (FileMeta, Instant)>>,
    count: usize,
}

impl RecordStore {
    /// An empty store.
    pub fn new() -> RecordStore {
        RecordStore::default()
    }

    /// How many records are kept (expired ones included until
    /// [`RecordStore::expire`]).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no record is kept.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Keeps `record` until `now + ttl` (a record kept already gets the
    /// later of its two expiries). A `ttl` of zero keeps nothing (and
    /// takes no place).
    pub fn insert(
        &mut self,
        record: Record,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), StoreError> {
        if ttl.is_zero() {
            return Ok(());
        }
        let until = now + ttl;
        let full = self.count >= MAX_RECORDS;
        // A place is made only for a record that goes in: a refused one
        // must not leave an empty place behind (only `expire` removes
        // those).
        let added = match record {
            Record::Holder { key, peer } => {
                if let Some(expiry) = self.holders.get_mut(&key).and_then(|p| p.get_mut(&peer)) {
                    *expiry = (*expiry).max(until);
                    false
                } else if full {
                    return Err(StoreError::Full);
                } else {
                    let place = self.holders.entry(key).or_default();
                    if place.len() >= MAX_PER_PLACE {
                        return Err(StoreError::PlaceFull);
                    }
                    place.insert(peer, until);
                    true
                }
            }
            Record::Name(name) => {
                let kept = self
                    .names
                    .get_mut(name.name.as_str())
                    .and_then(|p| p.get_mut(&name.key));
                if let Some((_, expiry)) = kept {
                    *expiry = (*expiry).max(until);
                    false
                } else if full {
                    return Err(StoreError::Full);
                } else {
                    let place = self
                        .names
                        .entry(name.name.as_str().to_string())
                        .or_default();
                    if place.len() >= MAX_PER_PLACE {
                        return Err(StoreError::PlaceFull);
                    }
                    place.insert(name.key, (name, until));
                    true
                }
            }
        };
        self.count += usize::from(added);
        Ok(())
    }

    /// The live records that answer `query`.
    pub fn find(&self, query: &RecordQuery, now: Instant) -> Vec<Record> {
        match query {
            RecordQuery::Holders(key) => self.holders.get(key).map_or_else(Vec::new, |place| {
                place
                    .iter()
                    .filter(|(_, &until)| until > now)
                    .map(|(&peer, _)| Record::Holder { key: *key, peer })
                    .collect()
            }),
            RecordQuery::Name(name) => {
                self.names
                    .get(name.as_str())
                    .map_or_else(Vec::new, |place| {
                        place
                            .values()
                            .filter(|(_, until)| *until > now)
                            .map(|(record, _)| Record::Name(record.clone()))
                            .collect()
                    })
            }
        }
    }

    /// Up to `most` live name records, sorted by name.
    pub fn names(&self, most: usize, now: Instant) -> Vec<FileMeta> {
        let mut names: Vec<FileMeta> = self
            .names
            .values()
            .flat_map(|place| place.values())
            .filter(|(_, until)| *until > now)
            .map(|(record, _)| record.clone())
            .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
        names.truncate(most);
        names
    }

    /// Every live record with the time it has left (for a hand-over).
    pub fn all(&self, now: Instant) -> Vec<(Record, Duration)> {
        let holders = self.holders.iter().flat_map(|(key, place)| {
            place
                .iter()
                .map(|(&peer, &until)| (Record::Holder { key: *key, peer }, until))
        });
        let names = self
            .names
            .values()
            .flat_map(|place| place.values())
            .map(|(record, until)| (Record::Name(record.clone()), *until));
        holders
            .chain(names)
            .filter(|(_, until)| *until > now)
            .map(|(record, until)| (record, until - now))
            .collect()
    }

    /// Forgets every record whose time is up; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.count;
        let mut count = 0;
        self.holders.retain(|_, place| {
            place.retain(|_, until| *until > now);
            count += place.len();
            !place.is_empty()
        });
        self.names.retain(|_, place| {
            place.retain(|_, (_, until)| *until > now);
            count += place.len();
            !place.is_empty()
        });
        self.count = count;
        before - count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FileName, MediaKind};

    fn holder(n: u8) -> Record {
        Record::Holder {
            key: FileKey([7; 32]),
            peer: SocketAddr::from(([127, 0, 0, n], 7000)),
        }
    }

    #[test]
    fn records_live_until_their_time_is_up_unless_refreshed() {
        let mut store = RecordStore::new();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        store.insert(holder(1), ttl, t0).unwrap();
        store.insert(holder(2), ttl, t0).unwrap();
        store
            .insert(holder(2), ttl, t0 + Duration::from_secs(8))
            .unwrap();
        assert_eq!(store.len(), 2, "a refresh is not a second record");
        let query = RecordQuery::Holders(FileKey([7; 32]));
        let later = t0 + Duration::from_secs(12);
        assert_eq!(store.find(&query, later), [holder(2)]);
        assert_eq!(store.expire(later), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.all(later).len(), 1);
        // For no time at all: nothing kept, no place taken.
        store.insert(holder(3), Duration::ZERO, later).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn names_are_found_by_name() {
        let mut store = RecordStore::new();
        let now = Instant::now();
        let name = FileMeta {
            name: FileName::new("song.mp3").unwrap(),
            key: FileKey([1; 32]),
            size: 10,
            piece_size: 16384,
            kind: MediaKind::Audio,
        };
        store
            .insert(Record::Name(name.clone()), Duration::from_secs(5), now)
            .unwrap();
        let found = store.find(&RecordQuery::Name(FileName::new("song.mp3").unwrap()), now);
        assert_eq!(found, [Record::Name(name.clone())]);
        assert_eq!(store.names(10, now), [name]);
        assert!(store
            .find(&RecordQuery::Name(FileName::new("other").unwrap()), now)
            .is_empty());
    }

    #[test]
    fn one_file_cannot_take_every_slot() {
        let mut store = RecordStore::new();
        let now = Instant::now();
        for port in 0..MAX_PER_PLACE as u16 {
            let record = Record::Holder {
                key: FileKey([7; 32]),
                peer: SocketAddr::from(([10, 0, 0, 1], port)),
            };
            store.insert(record, Duration::from_secs(5), now).unwrap();
        }
        assert_eq!(
            store.insert(holder(1), Duration::from_secs(5), now),
            Err(StoreError::PlaceFull)
        );
    }

    #[test]
    fn a_refused_record_leaves_no_empty_place_behind() {
        let mut store = RecordStore::new();
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        let key = |n: u32| {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            FileKey(key)
        };
        let peer = SocketAddr::from(([10, 0, 0, 1], 7000));
        for n in 0..MAX_RECORDS as u32 {
            let record = Record::Holder { key: key(n), peer };
            store.insert(record, ttl, now).unwrap();
        }
        for n in 0..1000 {
            let holder = Record::Holder {
                key: key(u32::MAX - n),
                peer,
            };
            assert_eq!(store.insert(holder, ttl, now), Err(StoreError::Full));
            let name = FileMeta {
                name: FileName::new(&format!("new-{n}.mp3")).unwrap(),
                key: key(n),
                size: 10,
                piece_size: 16384,
                kind: MediaKind::Audio,
            };
            assert_eq!(
                store.insert(Record::Name(name), ttl, now),
                Err(StoreError::Full)
            );
        }
        assert_eq!(store.holders.len(), MAX_RECORDS);
        assert!(store.names.is_empty());
        // A record kept already is still refreshed when the store is full.
        let again = Record::Holder { key: key(0), peer };
        assert_eq!(store.insert(again, ttl, now), Ok(()));
    }
}
