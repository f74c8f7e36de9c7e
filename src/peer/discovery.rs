//! Peer discovery for downloads, kept off their threads: a download says
//! which file it wants peers for, the peer's housekeeping thread asks the
//! tracker (`REQF`) when the tracker can be reached, and the ring when the
//! peer is in one, and the download reads the latest answers without ever
//! waiting on the network. So a tracker (or ring) that is slow or gone
//! never slows the fetching of pieces down (a download's first look-up,
//! before it has any peer, does wait for the answer).

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::protocol::{FileKey, PeerId};

/// Where a list of peers came from. Each source's latest answer replaces
/// its previous one; the download sees them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Tracker,
    Ring,
}

/// The peers last found for one file, by source.
#[derive(Debug, Default)]
struct Found {
    tracker: Vec<PeerId>,
    ring: Vec<PeerId>,
}

/// The files downloads want peers for, and the peers last found.
#[derive(Debug, Default)]
pub struct Discovery {
    wanted: Mutex<HashMap<FileKey, Found>>,
}

impl Discovery {
    /// An empty table.
    pub fn new() -> Discovery {
        Discovery::default()
    }

    /// A download starts wanting peers for `key`.
    pub fn want(&self, key: FileKey) {
        self.wanted.lock().entry(key).or_default();
    }

    /// A download of `key` is over.
    pub fn forget(&self, key: &FileKey) {
        self.wanted.lock().remove(key);
    }

    /// The files wanted now.
    pub fn wanted(&self) -> Vec<FileKey> {
        self.wanted.lock().keys().copied().collect()
    }

    /// Records the peers `source` listed for `key` (if still wanted).
    pub fn found(&self, source: Source, key: &FileKey, peers: Vec<PeerId>) {
        if let Some(entry) = self.wanted.lock().get_mut(key) {
            match source {
                Source::Tracker => entry.tracker = peers,
                Source::Ring => entry.ring = peers,
            }
        }
    }

    /// The peers last found for `key`, from every source, each once.
    pub fn peers(&self, key: &FileKey) -> Vec<PeerId> {
        let wanted = self.wanted.lock();
        let Some(found) = wanted.get(key) else {
            return Vec::new();
        };
        let mut peers = found.tracker.clone();
        peers.extend(found.ring.iter().filter(|p| !found.tracker.contains(p)));
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_replaces_its_own_answer_only() {
        let discovery = Discovery::new();
        let key = FileKey([1; 32]);
        let a: PeerId = "127.0.0.1:7001".parse().unwrap();
        let b: PeerId = "127.0.0.1:7002".parse().unwrap();
        discovery.found(Source::Tracker, &key, vec![a]);
        assert!(discovery.peers(&key).is_empty(), "not wanted yet");
        discovery.want(key);
        discovery.found(Source::Tracker, &key, vec![a]);
        discovery.found(Source::Ring, &key, vec![a, b]);
        assert_eq!(discovery.peers(&key), [a, b]);
        discovery.found(Source::Tracker, &key, vec![]);
        assert_eq!(discovery.peers(&key), [a, b], "the ring still lists both");
    }
}
