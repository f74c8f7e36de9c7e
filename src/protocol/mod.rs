//! The wire protocol, pure: every message of the system is parsed and
//! formatted here, with no sockets and no files, so the tracker, the peers
//! and the fuzzer all share one grammar. protocol.md is its prose twin.
//!
//! Conventions (see protocol.md, "Conventions"):
//! - one message per line ending in `\n` (`\r\n` accepted); the line reader
//!   in [`crate::wire`] strips the ending before the parsers here see it;
//! - the verb comes first, four upper-case letters (any case accepted);
//! - fields are separated by spaces and never contain one: names and paths
//!   are percent-encoded ([`fields::PercentEncoded`]);
//! - a success is one `OK` line, a listing is lines closed by `END`, a
//!   failure is `ERRR <code> <text>` ([`ErrorCode`]);
//! - binary payloads follow only a header line stating their exact length.
//!
//! Each message type has `parse(&str) -> Result<_, ProtocolError>` and a
//! `Display` that is its exact inverse for canonical lines.

pub mod course;
pub mod error;
pub mod fields;
pub mod names;
pub mod peer;
pub mod reply;
pub mod ring;
pub mod tracker;

pub use error::{ErrorCode, ProtocolError};
pub use fields::{BitmapField, FileKey, FileName, MediaKind, PeerId, SharedPath, UserName};
pub use peer::{PeerRequest, MAX_LISTED_SHARES, MAX_REQUEST_INDICES};
pub use reply::{FileEntry, FileMeta, PeerEntry, Reply, Role, ShareEntry};
pub use tracker::{Criterion, FileOffer, SearchCriteria, TrackerRequest, MAX_CRITERIA};

/// Default cap on one line's length in bytes, line ending included. Large
/// enough for a `BITF` line of a file of about 32,000 pieces (8 GiB at the
/// default 256 KiB pieces); configurable on every server.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// A well-formed key for the unit tests of the message modules.
#[cfg(test)]
pub(crate) const TEST_KEY: &str =
    "9f2c4bd7a1e0c1d2e3f405162738495a6b7c8d9eafb0c1d2e3f4051627384950";
