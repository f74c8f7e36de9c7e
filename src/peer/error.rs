//! What can go wrong for a peer, in words a person can act on.

use std::io;
use std::path::PathBuf;

use crate::protocol::{ErrorCode, FileKey};

/// A peer operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach the tracker at {addr}: {source}")]
    TrackerUnreachable {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    /// The tracker (or whatever answers at its address) did not finish
    /// answering one request in time, however steadily it sent bytes.
    #[error("the tracker at {addr} did not answer {verb} in full within {} s", within.as_secs_f64())]
    TrackerTooSlow {
        addr: std::net::SocketAddr,
        verb: &'static str,
        within: std::time::Duration,
    },
    #[error("the tracker refused: {text} (ERRR {code}){}", refusal_hint(*code))]
    TrackerRefused { code: ErrorCode, text: String },
    #[error("the tracker answered something unexpected: {0}")]
    TrackerProtocol(String),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("{0}")]
    NotFound(String),
    /// The thing asked for is under way already (a download of that file).
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

/// What to do about a refusal, where the tracker's words do not say.
fn refusal_hint(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::UserTaken => {
            "; another peer runs as that user: stop it, or start this one with another --user"
        }
        _ => "",
    }
}

impl PeerError {
    /// Whether the tracker is away: unreachable, or too slow to count as
    /// there. Such a failure is worth waiting out (an offer is sent when
    /// it is back) or going round (the ring is asked instead).
    pub fn tracker_is_away(&self) -> bool {
        matches!(
            self,
            PeerError::TrackerUnreachable { .. } | PeerError::TrackerTooSlow { .. }
        )
    }

    /// Whether the tracker refused this peer a session: another live
    /// session has its user name (`ERRR 302`) or its address (`304`).
    /// Offers wait for the session, as they wait for a tracker away.
    pub fn session_refused(&self) -> bool {
        matches!(
            self,
            PeerError::TrackerRefused {
                code: ErrorCode::UserTaken | ErrorCode::PeerIdInUse,
                ..
            }
        )
    }

    /// Whether the tracker takes no more files from this peer (`ERRR
    /// 405`): more offers would each be refused in turn. (A tracker full
    /// for now, `ERRR 406`, is no refusal: the offer waits for room.)
    pub fn takes_no_more_files(&self) -> bool {
        matches!(
            self,
            PeerError::TrackerRefused {
                code: ErrorCode::TooManyFiles,
                ..
            }
        )
    }

    /// Whether the tracker will take an offer or a withdrawal later, when
    /// it is back or the session open: it is kept, not given up.
    pub fn tracker_takes_it_later(&self) -> bool {
        self.tracker_is_away() || self.session_refused()
    }

    /// A file-system error about `path`.
    pub fn file(path: impl Into<PathBuf>, source: io::Error) -> PeerError {
        PeerError::File {
            path: path.into(),
            source,
        }
    }

    /// Several files have the name `what`: say to download by key.
    pub fn ambiguous_name(what: &str, keys: impl IntoIterator<Item = FileKey>) -> PeerError {
        let keys: Vec<String> = keys.into_iter().map(|k| k.to_string()).collect();
        PeerError::Failed(format!(
            "{} files are named {what}; download one by key: {}",
            keys.len(),
            keys.join(", ")
        ))
    }
}
