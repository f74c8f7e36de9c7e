//! Peer discovery for downloads, kept off their threads: a download says
//! which file it wants peers for, the peer's housekeeping thread asks the
//! tracker (`REQF`) when the tracker can be reached, and the download reads
//! the latest answer without ever waiting on the network. So a tracker that
//! is slow or gone never slows a download down.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::protocol::{FileKey, PeerId};

/// The files downloads want peers for, and the peers last found.
#[derive(Debug, Default)]
pub struct Discovery {
    wanted: Mutex<HashMap<FileKey, Vec<PeerId>>>,
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

    /// Records the peers the tracker listed for `key` (if still wanted).
    pub fn found(&self, key: &FileKey, peers: Vec<PeerId>) {
        if let Some(entry) = self.wanted.lock().get_mut(key) {
            *entry = peers;
        }
    }

    /// The peers last found for `key`.
    pub fn peers(&self, key: &FileKey) -> Vec<PeerId> {
        self.wanted.lock().get(key).cloned().unwrap_or_default()
    }
}
