//! Answer lines, from the tracker and from mini-servers alike.
//!
//! An answer is either one `OK` line, one `ERRR` line, a series of listing
//! lines (`FILE`, `SHAR`, `PEER`, `USER`) closed by `END`, a `BITF` line, or
//! a header (`PIEC`, `MANF`) announcing the exact length of the binary payload
//! that follows it. `Reply::parse` reads any of them; `Display` writes the
//! canonical line. Pure: the payload bytes themselves are read by
//! [`crate::wire`].

use std::fmt;

use super::error::{ErrorCode, ProtocolError};
use super::fields::{
    parse_number, parse_peer_id, split_verb, BitmapField, Fields, FileKey, FileName, MediaKind,
    PeerId, SharedPath, UserName,
};

/// One answer line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK [<text>]`: success. What follows `OK` depends on the request.
    Ok(String),
    /// `ERRR <code> <text>`: failure; `text` is for people, `code` for programs.
    Error { code: ErrorCode, text: String },
    /// `END`: closes a listing.
    End,
    /// `FILE <key> <name> <size> <piece-size> <kind> <seeders> <leechers>`:
    /// one search result.
    File(FileEntry),
    /// `SHAR <key> <user> <peer-id> <path>`: one offer, for `LSTF`.
    Share(ShareEntry),
    /// `PEER <peer-id> <user> <role> <pieces>`: one holder of a file.
    Peer(PeerEntry),
    /// `USER <user> <peer-id>`: one named user.
    User { user: UserName, peer: PeerId },
    /// `BITF <key> <bitmap>`: a mini-server's BufferMap for a file.
    Bitmap { key: FileKey, bitmap: BitmapField },
    /// `PIEC <key> <index> <length>`: exactly `length` payload bytes follow.
    Piece {
        key: FileKey,
        index: u32,
        length: u32,
    },
    /// `MANF <key> <length>`: exactly `length` bytes of manifest follow.
    Manifest { key: FileKey, length: u32 },
}

/// What identifies and describes a file: fixed by its first offer at the
/// tracker, carried by a ring's `NAME` record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileMeta {
    pub key: FileKey,
    pub name: FileName,
    pub size: u64,
    pub piece_size: u32,
    pub kind: MediaKind,
}

impl FileMeta {
    /// Number of pieces.
    pub fn piece_count(&self) -> u64 {
        super::fields::piece_count(self.size, self.piece_size)
    }

    /// The file as a search result, with its holders counted.
    pub fn entry(self, seeders: u32, leechers: u32) -> FileEntry {
        FileEntry {
            key: self.key,
            name: self.name,
            size: self.size,
            piece_size: self.piece_size,
            kind: self.kind,
            seeders,
            leechers,
        }
    }
}

/// A file in a search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub key: FileKey,
    pub name: FileName,
    pub size: u64,
    pub piece_size: u32,
    pub kind: MediaKind,
    pub seeders: u32,
    pub leechers: u32,
}

/// One peer's offer of a file (`<user>` is `-` for a session without a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareEntry {
    pub key: FileKey,
    pub user: Option<UserName>,
    pub peer: PeerId,
    pub path: SharedPath,
}

/// Whether a holder has the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Seeder,
    Leecher,
}

/// One holder of a file, as `REQF` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    pub peer: PeerId,
    pub user: Option<UserName>,
    pub role: Role,
    pub pieces: u64,
}

impl Reply {
    /// The `ERRR` line for a parse failure.
    pub fn from_error(error: &ProtocolError) -> Reply {
        Reply::error(error.code(), error.to_string())
    }

    /// An `ERRR` line.
    pub fn error(code: ErrorCode, text: impl Into<String>) -> Reply {
        Reply::Error {
            code,
            text: text.into(),
        }
    }

    /// An `OK` line.
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply::Ok(text.into())
    }

    /// Parses one answer line (without its line ending).
    pub fn parse(line: &str) -> Result<Reply, ProtocolError> {
        const REPLY_VERBS: &str = "OK ERRR END FILE SHAR PEER USER BITF PIEC MANF";
        let (verb, rest) = split_verb(line)?;
        match &*verb {
            "OK" => Ok(Reply::Ok(rest.trim_matches(' ').to_string())),
            "ERRR" => {
                let rest = rest.trim_start_matches(' ');
                let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
                if code.is_empty() {
                    return Err(ProtocolError::MissingField {
                        verb: "ERRR",
                        field: "a code",
                        usage: "ERRR <code> <text>",
                    });
                }
                let code = ErrorCode::from_number(parse_number("code", code)?);
                Ok(Reply::Error {
                    code,
                    text: text.trim_matches(' ').to_string(),
                })
            }
            "END" => Fields::new("END", "END", 0, rest)
                .finish()
                .map(|()| Reply::End),
            "FILE" => {
                let usage = "FILE <key> <name> <size> <piece-size> <kind> <seeders> <leechers>";
                let mut f = Fields::new("FILE", usage, 7, rest);
                let entry = FileEntry {
                    key: FileKey::parse(f.next("a key")?)?,
                    name: FileName::parse(f.next("a name")?)?,
                    size: parse_number("size", f.next("a size")?)?,
                    piece_size: parse_number("piece-size", f.next("a piece size")?)?,
                    kind: MediaKind::parse(f.next("a kind")?)?,
                    seeders: parse_number("seeders", f.next("a seeder count")?)?,
                    leechers: parse_number("leechers", f.next("a leecher count")?)?,
                };
                f.finish()?;
                Ok(Reply::File(entry))
            }
            "SHAR" => {
                let mut f = Fields::new("SHAR", "SHAR <key> <user> <peer-id> <path>", 4, rest);
                let entry = ShareEntry {
                    key: FileKey::parse(f.next("a key")?)?,
                    user: parse_optional_user(f.next("a user")?)?,
                    peer: parse_peer_id(f.next("a peer id")?)?,
                    path: SharedPath::parse(f.next("a path")?)?,
                };
                f.finish()?;
                Ok(Reply::Share(entry))
            }
            "PEER" => {
                let mut f = Fields::new("PEER", "PEER <peer-id> <user> <role> <pieces>", 4, rest);
                let peer = parse_peer_id(f.next("a peer id")?)?;
                let user = parse_optional_user(f.next("a user")?)?;
                let role = match f.next("a role")? {
                    "seeder" => Role::Seeder,
                    "leecher" => Role::Leecher,
                    other => {
                        return Err(ProtocolError::bad_field(
                            "role",
                            other,
                            "expected seeder or leecher",
                        ))
                    }
                };
                let pieces = parse_number("pieces", f.next("a piece count")?)?;
                f.finish()?;
                Ok(Reply::Peer(PeerEntry {
                    peer,
                    user,
                    role,
                    pieces,
                }))
            }
            "USER" => {
                let mut f = Fields::new("USER", "USER <user> <peer-id>", 2, rest);
                let user = UserName::parse(f.next("a user")?)?;
                let peer = parse_peer_id(f.next("a peer id")?)?;
                f.finish()?;
                Ok(Reply::User { user, peer })
            }
            "BITF" => {
                let mut f = Fields::new("BITF", "BITF <key> <bitmap>", 2, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                let bitmap = BitmapField::parse(f.next("a bitmap")?)?;
                f.finish()?;
                Ok(Reply::Bitmap { key, bitmap })
            }
            "PIEC" => {
                let mut f = Fields::new("PIEC", "PIEC <key> <index> <length>", 3, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                let index = parse_number("index", f.next("an index")?)?;
                let length = parse_number("length", f.next("a length")?)?;
                f.finish()?;
                Ok(Reply::Piece { key, index, length })
            }
            "MANF" => {
                let mut f = Fields::new("MANF", "MANF <key> <length>", 2, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                let length = parse_number("length", f.next("a length")?)?;
                f.finish()?;
                Ok(Reply::Manifest { key, length })
            }
            _ => Err(ProtocolError::unknown_verb(line, REPLY_VERBS)),
        }
    }
}

fn parse_optional_user(text: &str) -> Result<Option<UserName>, ProtocolError> {
    if text == "-" {
        Ok(None)
    } else {
        UserName::parse(text).map(Some)
    }
}

/// The user field of a listing line: the name, or `-`.
struct OptionalUser<'a>(&'a Option<UserName>);

impl fmt::Display for OptionalUser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(user) => write!(f, "{user}"),
            None => f.write_str("-"),
        }
    }
}

/// Free text of `OK` and `ERRR` lines, with anything that could break the
/// line framing (a newline, other control characters) replaced by `?`.
struct FreeText<'a>(&'a str);

impl fmt::Display for FreeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                f.write_str("?")?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok(text) if text.is_empty() => f.write_str("OK"),
            Reply::Ok(text) => write!(f, "OK {}", FreeText(text)),
            Reply::Error { code, text } => write!(f, "ERRR {code} {}", FreeText(text)),
            Reply::End => f.write_str("END"),
            Reply::File(e) => write!(
                f,
                "FILE {} {} {} {} {} {} {}",
                e.key, e.name, e.size, e.piece_size, e.kind, e.seeders, e.leechers
            ),
            Reply::Share(e) => write!(
                f,
                "SHAR {} {} {} {}",
                e.key,
                OptionalUser(&e.user),
                e.peer,
                e.path
            ),
            Reply::Peer(e) => {
                let role = match e.role {
                    Role::Seeder => "seeder",
                    Role::Leecher => "leecher",
                };
                write!(
                    f,
                    "PEER {} {} {role} {}",
                    e.peer,
                    OptionalUser(&e.user),
                    e.pieces
                )
            }
            Reply::User { user, peer } => write!(f, "USER {user} {peer}"),
            Reply::Bitmap { key, bitmap } => write!(f, "BITF {key} {bitmap}"),
            Reply::Piece { key, index, length } => write!(f, "PIEC {key} {index} {length}"),
            Reply::Manifest { key, length } => write!(f, "MANF {key} {length}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::TEST_KEY as KEY;

    #[test]
    fn canonical_lines_round_trip() {
        for line in [
            "OK".to_string(),
            "OK 127.0.0.1:7001".to_string(),
            "ERRR 302 user name alice is taken".to_string(),
            "END".to_string(),
            format!("FILE {KEY} my%20song.mp3 5000000 262144 audio 1 2"),
            format!("SHAR {KEY} alice 127.0.0.1:7001 /music/my%20song.mp3"),
            format!("SHAR {KEY} - [::1]:7001 C:\\music\\x.mp3"),
            "PEER 127.0.0.1:7001 alice seeder 20".to_string(),
            "PEER 127.0.0.1:7002 - leecher 3".to_string(),
            "USER alice 127.0.0.1:7001".to_string(),
            format!("BITF {KEY} ff80"),
            format!("PIEC {KEY} 7 262144"),
            format!("MANF {KEY} 312"),
        ] {
            let reply = Reply::parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(reply.to_string(), line);
        }
    }

    #[test]
    fn free_text_cannot_break_the_framing() {
        let reply = Reply::error(ErrorCode::Internal, "disk\nfull");
        assert_eq!(reply.to_string(), "ERRR 501 disk?full");
    }

    #[test]
    fn unknown_error_codes_survive() {
        let reply = Reply::parse("ERRR 777 from the future").unwrap();
        assert_eq!(
            reply,
            Reply::Error {
                code: ErrorCode::Other(777),
                text: "from the future".into()
            }
        );
        assert_eq!(reply.to_string(), "ERRR 777 from the future");
    }
}
