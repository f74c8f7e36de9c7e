//! Requests one peer sends to another peer's mini-server, with their wire
//! grammar. The answers are [`Reply`](super::Reply) lines, some followed by
//! an exact-length binary payload (`PIEC`, `MANF`).
//!
//! The verbs `BITF` and `REQF` also exist towards the tracker with other
//! fields: which grammar applies depends on who is listening, so each side
//! parses with its own enum.

use std::fmt;

use super::error::ProtocolError;
use super::fields::{parse_number, split_verb, BitmapField, Fields, FileKey};
use super::tracker::no_fields;

/// The verbs a mini-server understands, for "unknown verb" messages.
pub const PEER_VERBS: &str = "BITF MANF REQF LSTF PING QUIT";

/// The most `SHAR` lines a mini-server's `LSTF` answer gives (and a peer
/// reads).
pub const MAX_LISTED_SHARES: usize = 1000;

/// The most piece indices one `REQF` may name.
pub const MAX_REQUEST_INDICES: usize = 64;

/// One request from a peer to another peer's mini-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRequest {
    /// `BITF <key> [<bitmap>]`: "which pieces do you have?", optionally
    /// telling one's own. Answer `BITF <key> <bitmap>`.
    Bitf {
        key: FileKey,
        bitmap: Option<BitmapField>,
    },
    /// `MANF <key>`: send the file's manifest. Answer `MANF <key> <length>`
    /// followed by exactly `<length>` bytes of manifest text.
    Manf { key: FileKey },
    /// `REQF <key> <index> [<index>...]`: send these pieces. Answer, for each
    /// index in order, `PIEC <key> <index> <length>` followed by exactly
    /// `<length>` bytes, or an `ERRR` line for a piece not held.
    Reqf { key: FileKey, indices: Vec<u32> },
    /// `LSTF`: list the files this peer offers. Answer `SHAR` lines, `END`.
    Lstf,
    /// `PING`: answer `OK pong`.
    Ping,
    /// `QUIT`: answer `OK bye`, then the mini-server closes.
    Quit,
}

const USAGE_BITF: &str = "BITF <key> [<bitmap>]";
const USAGE_MANF: &str = "MANF <key>";
const USAGE_REQF: &str = "REQF <key> <index> [<index>...]";

impl PeerRequest {
    /// Parses one line (without its line ending).
    pub fn parse(line: &str) -> Result<PeerRequest, ProtocolError> {
        let (verb, rest) = split_verb(line)?;
        match &*verb {
            "BITF" => {
                let mut f = Fields::new("BITF", USAGE_BITF, 2, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                let bitmap = f.optional().map(BitmapField::parse).transpose()?;
                f.finish()?;
                Ok(PeerRequest::Bitf { key, bitmap })
            }
            "MANF" => {
                let mut f = Fields::new("MANF", USAGE_MANF, 1, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                f.finish()?;
                Ok(PeerRequest::Manf { key })
            }
            "REQF" => {
                // Counted below, in pieces: "65 fields" would puzzle.
                let mut f = Fields::new("REQF", USAGE_REQF, usize::MAX, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                let mut indices = vec![parse_number("index", f.next("at least one piece index")?)?];
                while let Some(index) = f.optional() {
                    if indices.len() == MAX_REQUEST_INDICES {
                        // Counted in pieces, as the limit is known.
                        return Err(ProtocolError::TooManyIndices {
                            max: MAX_REQUEST_INDICES,
                            got: indices.len() + 1 + f.left(),
                            usage: USAGE_REQF,
                        });
                    }
                    indices.push(parse_number("index", index)?);
                }
                Ok(PeerRequest::Reqf { key, indices })
            }
            "LSTF" => no_fields("LSTF", rest).map(|()| PeerRequest::Lstf),
            "PING" => no_fields("PING", rest).map(|()| PeerRequest::Ping),
            "QUIT" => no_fields("QUIT", rest).map(|()| PeerRequest::Quit),
            _ => Err(ProtocolError::unknown_verb(line, PEER_VERBS)),
        }
    }
}

impl fmt::Display for PeerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRequest::Bitf { key, bitmap: None } => write!(f, "BITF {key}"),
            PeerRequest::Bitf {
                key,
                bitmap: Some(bitmap),
            } => write!(f, "BITF {key} {bitmap}"),
            PeerRequest::Manf { key } => write!(f, "MANF {key}"),
            PeerRequest::Reqf { key, indices } => {
                write!(f, "REQF {key}")?;
                for index in indices {
                    write!(f, " {index}")?;
                }
                Ok(())
            }
            PeerRequest::Lstf => f.write_str("LSTF"),
            PeerRequest::Ping => f.write_str("PING"),
            PeerRequest::Quit => f.write_str("QUIT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    use crate::protocol::TEST_KEY as KEY;

    #[test]
    fn canonical_lines_round_trip() {
        for line in [
            format!("BITF {KEY}"),
            format!("BITF {KEY} f0"),
            format!("MANF {KEY}"),
            format!("REQF {KEY} 0"),
            format!("REQF {KEY} 3 1 4 1 5"),
            "LSTF".to_string(),
            "PING".to_string(),
            "QUIT".to_string(),
        ] {
            assert_eq!(PeerRequest::parse(&line).unwrap().to_string(), line);
        }
    }

    #[test]
    fn indices_are_bounded() {
        let many: String = (0..MAX_REQUEST_INDICES).map(|i| format!(" {i}")).collect();
        assert!(PeerRequest::parse(&format!("REQF {KEY}{many}")).is_ok());
        let err = PeerRequest::parse(&format!("REQF {KEY}{many} 99")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FieldCount);
        assert!(
            err.to_string()
                .starts_with("REQF asks for at most 64 pieces at once, got 65;"),
            "{err}"
        );
        let err = PeerRequest::parse(&format!("REQF {KEY}")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FieldCount);
        let err = PeerRequest::parse(&format!("REQF {KEY} -1")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadField);
    }

    #[test]
    fn a_path_is_not_a_key() {
        let err = PeerRequest::parse("MANF ../../etc/passwd").unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadField);
    }
}
