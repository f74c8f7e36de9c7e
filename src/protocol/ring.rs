//! The native messages of the ring (Chord), spoken between ring peers on
//! their mini-server ports, with their wire grammar. Pure: no sockets.
//!
//! A ring member is written `<id>@<ip:port>`. Requests:
//!
//! | request | answer |
//! |---|---|
//! | `LOOK <id> [nofingers]` | `OWNR <member>...` (the owner of `id`, then its successors) or `NEXT <member>` (ask that one) |
//! | `RNFO` | `NODE`, `PRED`, `SUCC`..., `FING`..., `END`: this peer's ring state |
//! | `NTFY <member>` | `OK`: "I may be your predecessor" |
//! | `LEAV <member> <pred>\|- <succ>` | `OK`: "I leave; here are my neighbours" |
//! | `STOR <ttl> <record>` | `OK`: keep this record for `ttl` seconds |
//! | `FIND HOLD <key>` / `FIND NAME <name>` | records, `END` |
//! | `NAMS` | every name record held here, `END` |
//!
//! A record is `HOLD <key> <peer>` ("this peer holds the file") or
//! `NAME <name> <key> <size> <piece-size> <kind>` ("this name is this file").

use std::fmt;
use std::net::SocketAddr;

use super::error::ProtocolError;
use super::fields::{
    next_size_and_piece_size, parse_number, parse_peer_id, split_verb, Fields, FileKey, FileName,
    MediaKind,
};
use super::reply::{FileMeta, Reply};
use super::tracker::no_fields;

/// The verbs of the ring, for "unknown verb" messages.
pub const RING_VERBS: &str = "LOOK RNFO NTFY LEAV STOR FIND NAMS";

/// Whether `verb` (upper-case) is one of the ring's requests.
pub fn is_ring_verb(verb: &str) -> bool {
    RING_VERBS.split(' ').any(|v| v == verb)
}

/// The longest a record may be kept, in seconds (a day).
pub const MAX_TTL: u32 = 86_400;

/// A ring member: its id and where its mini-server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Member {
    pub id: u64,
    pub addr: SocketAddr,
}

impl Member {
    /// Parses `<id>@<ip:port>`.
    pub fn parse(text: &str) -> Result<Member, ProtocolError> {
        let (id, addr) = text
            .split_once('@')
            .ok_or_else(|| ProtocolError::bad_field("member", text, "expected <id>@<ip:port>"))?;
        Ok(Member {
            id: parse_number("member id", id)?,
            addr: parse_peer_id(addr)?,
        })
    }

    fn parse_optional(text: &str) -> Result<Option<Member>, ProtocolError> {
        if text == "-" {
            Ok(None)
        } else {
            Member::parse(text).map(Some)
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

/// Writes an optional member, `-` for none.
struct OrDash<'a>(&'a Option<Member>);

impl fmt::Display for OrDash<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(member) => write!(f, "{member}"),
            None => write!(f, "-"),
        }
    }
}

/// What the ring stores about files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// `HOLD <key> <peer>`: the peer at `peer` holds (some of) the file.
    Holder { key: FileKey, peer: SocketAddr },
    /// `NAME <name> <key> <size> <piece-size> <kind>`: a file by name.
    Name(FileMeta),
}

impl Record {
    /// The text the record is placed by: its key, or its name.
    pub fn placement(&self) -> String {
        match self {
            Record::Holder { key, .. } => key.to_string(),
            Record::Name(name) => name.name.as_str().to_string(),
        }
    }

    /// Parses a record from its verb and fields.
    fn parse_fields(kind: &str, f: &mut Fields<'_>) -> Result<Record, ProtocolError> {
        match kind {
            "HOLD" => Ok(Record::Holder {
                key: FileKey::parse(f.next("a key")?)?,
                peer: parse_peer_id(f.next("a peer")?)?,
            }),
            "NAME" => {
                let name = FileName::parse(f.next("a name")?)?;
                let key = FileKey::parse(f.next("a key")?)?;
                // As a tracker checks an ADDF.
                let (size, piece_size) = next_size_and_piece_size(f)?;
                let kind = MediaKind::parse(f.next("a kind")?)?;
                Ok(Record::Name(FileMeta {
                    name,
                    key,
                    size,
                    piece_size,
                    kind,
                }))
            }
            other => Err(ProtocolError::bad_field(
                "record",
                other,
                "expected HOLD or NAME",
            )),
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Holder { key, peer } => write!(f, "HOLD {key} {peer}"),
            Record::Name(n) => write!(
                f,
                "NAME {} {} {} {} {}",
                n.name, n.key, n.size, n.piece_size, n.kind
            ),
        }
    }
}

/// What `FIND` looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordQuery {
    /// `FIND HOLD <key>`: who holds the file.
    Holders(FileKey),
    /// `FIND NAME <name>`: which file has this name.
    Name(FileName),
}

impl RecordQuery {
    /// The text the answer is placed by (see [`Record::placement`]).
    pub fn placement(&self) -> String {
        match self {
            RecordQuery::Holders(key) => key.to_string(),
            RecordQuery::Name(name) => name.as_str().to_string(),
        }
    }
}

/// How a look-up goes round the ring: by the fingers (Chord's shortcuts,
/// about log2 N hops), or from successor to successor (about N/2 hops; the
/// `nofingers` option, to compare the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Fingers,
    Successors,
}

/// One request from a ring peer to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingRequest {
    /// `LOOK <id> [nofingers]`: one step of a look-up.
    Look { id: u64, via: Via },
    /// `RNFO`: this peer's predecessor, successors and fingers.
    Info,
    /// `NTFY <member>`: the sender may be the receiver's predecessor.
    Notify(Member),
    /// `LEAV <member> <pred>|- <succ>`: the sender leaves the ring.
    Leave {
        leaving: Member,
        predecessor: Option<Member>,
        successor: Member,
    },
    /// `STOR <ttl> <record>`: keep the record for `ttl` seconds.
    Store { ttl: u32, record: Record },
    /// `FIND HOLD <key>` or `FIND NAME <name>`.
    Find(RecordQuery),
    /// `NAMS`: every name record held here.
    Names,
}

const USAGE_LOOK: &str = "LOOK <id> [nofingers]";
const USAGE_NTFY: &str = "NTFY <id>@<ip:port>";
const USAGE_LEAV: &str = "LEAV <id>@<ip:port> <pred>|- <succ>";
const USAGE_STOR: &str =
    "STOR <ttl> HOLD <key> <peer> | STOR <ttl> NAME <name> <key> <size> <piece-size> <kind>";
const USAGE_FIND: &str = "FIND HOLD <key> | FIND NAME <name>";

impl RingRequest {
    /// Parses one line (without its line ending).
    pub fn parse(line: &str) -> Result<RingRequest, ProtocolError> {
        let (verb, rest) = split_verb(line)?;
        match &*verb {
            "LOOK" => {
                let mut f = Fields::new("LOOK", USAGE_LOOK, 2, rest);
                let id = parse_number("id", f.next("an id")?)?;
                let via = match f.optional() {
                    None => Via::Fingers,
                    Some("nofingers") => Via::Successors,
                    Some(other) => {
                        return Err(ProtocolError::bad_field(
                            "option",
                            other,
                            "expected nofingers or nothing",
                        ))
                    }
                };
                f.finish()?;
                Ok(RingRequest::Look { id, via })
            }
            "RNFO" => no_fields("RNFO", rest).map(|()| RingRequest::Info),
            "NAMS" => no_fields("NAMS", rest).map(|()| RingRequest::Names),
            "NTFY" => {
                let mut f = Fields::new("NTFY", USAGE_NTFY, 1, rest);
                let member = Member::parse(f.next("a member")?)?;
                f.finish()?;
                Ok(RingRequest::Notify(member))
            }
            "LEAV" => {
                let mut f = Fields::new("LEAV", USAGE_LEAV, 3, rest);
                let leaving = Member::parse(f.next("the leaving member")?)?;
                let predecessor = Member::parse_optional(f.next("its predecessor or -")?)?;
                let successor = Member::parse(f.next("its successor")?)?;
                f.finish()?;
                Ok(RingRequest::Leave {
                    leaving,
                    predecessor,
                    successor,
                })
            }
            "STOR" => {
                let mut f = Fields::new("STOR", USAGE_STOR, 7, rest);
                let ttl: u32 = parse_number("ttl", f.next("a time to live")?)?;
                if ttl > MAX_TTL {
                    return Err(ProtocolError::bad_field(
                        "ttl",
                        &ttl.to_string(),
                        format!("at most {MAX_TTL} seconds"),
                    ));
                }
                let kind = f.next("a record kind")?.to_ascii_uppercase();
                let record = Record::parse_fields(&kind, &mut f)?;
                f.finish()?;
                Ok(RingRequest::Store { ttl, record })
            }
            "FIND" => {
                let mut f = Fields::new("FIND", USAGE_FIND, 2, rest);
                let query = match f.next("HOLD or NAME")?.to_ascii_uppercase().as_str() {
                    "HOLD" => RecordQuery::Holders(FileKey::parse(f.next("a key")?)?),
                    "NAME" => RecordQuery::Name(FileName::parse(f.next("a name")?)?),
                    other => {
                        return Err(ProtocolError::bad_field(
                            "query",
                            other,
                            "expected HOLD or NAME",
                        ))
                    }
                };
                f.finish()?;
                Ok(RingRequest::Find(query))
            }
            _ => Err(ProtocolError::unknown_verb(line, RING_VERBS)),
        }
    }
}

impl fmt::Display for RingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingRequest::Look {
                id,
                via: Via::Fingers,
            } => write!(f, "LOOK {id}"),
            RingRequest::Look {
                id,
                via: Via::Successors,
            } => write!(f, "LOOK {id} nofingers"),
            RingRequest::Info => write!(f, "RNFO"),
            RingRequest::Names => write!(f, "NAMS"),
            RingRequest::Notify(member) => write!(f, "NTFY {member}"),
            RingRequest::Leave {
                leaving,
                predecessor,
                successor,
            } => write!(f, "LEAV {leaving} {} {successor}", OrDash(predecessor)),
            RingRequest::Store { ttl, record } => write!(f, "STOR {ttl} {record}"),
            RingRequest::Find(RecordQuery::Holders(key)) => write!(f, "FIND HOLD {key}"),
            RingRequest::Find(RecordQuery::Name(name)) => write!(f, "FIND NAME {name}"),
        }
    }
}

/// The most members one `OWNR` line may carry.
pub const MAX_OWNER_LIST: usize = 32;

/// One answer line from a ring peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingReply {
    /// `OWNR <member>...`: the owner of the id looked up, then its
    /// successors (where replicas live).
    Owner(Vec<Member>),
    /// `NEXT <member>`: ask this member next.
    Next(Member),
    /// `NODE <member> <ring-size>`: who answers `RNFO`.
    Node { me: Member, size: u64 },
    /// `PRED <member>|-`: its predecessor.
    Pred(Option<Member>),
    /// `SUCC <member>`: one entry of its successor list, nearest first.
    Succ(Member),
    /// `FING <k> <member>|-`: one line of its routing table.
    Finger { k: u64, node: Option<Member> },
    /// A record (`HOLD` or `NAME`), in a `FIND` or `NAMS` listing.
    Record(Record),
    /// `OK`, `END` or `ERRR`.
    Common(Reply),
}

impl RingReply {
    /// Parses one answer line.
    pub fn parse(line: &str) -> Result<RingReply, ProtocolError> {
        let (verb, rest) = split_verb(line)?;
        match &*verb {
            "OWNR" => {
                let usage = "OWNR <member> [<member>...]";
                let mut f = Fields::new("OWNR", usage, MAX_OWNER_LIST, rest);
                let mut members = vec![Member::parse(f.next("a member")?)?];
                while members.len() < MAX_OWNER_LIST {
                    match f.optional() {
                        Some(text) => members.push(Member::parse(text)?),
                        None => break,
                    }
                }
                f.finish()?;
                Ok(RingReply::Owner(members))
            }
            "NEXT" => {
                let mut f = Fields::new("NEXT", "NEXT <member>", 1, rest);
                let member = Member::parse(f.next("a member")?)?;
                f.finish()?;
                Ok(RingReply::Next(member))
            }
            "NODE" => {
                let mut f = Fields::new("NODE", "NODE <member> <ring-size>", 2, rest);
                let me = Member::parse(f.next("a member")?)?;
                let size = parse_number("ring size", f.next("a ring size")?)?;
                f.finish()?;
                Ok(RingReply::Node { me, size })
            }
            "PRED" => {
                let mut f = Fields::new("PRED", "PRED <member>|-", 1, rest);
                let member = Member::parse_optional(f.next("a member or -")?)?;
                f.finish()?;
                Ok(RingReply::Pred(member))
            }
            "SUCC" => {
                let mut f = Fields::new("SUCC", "SUCC <member>", 1, rest);
                let member = Member::parse(f.next("a member")?)?;
                f.finish()?;
                Ok(RingReply::Succ(member))
            }
            "FING" => {
                let mut f = Fields::new("FING", "FING <k> <member>|-", 2, rest);
                let k = parse_number("k", f.next("a table line's k")?)?;
                let node = Member::parse_optional(f.next("a member or -")?)?;
                f.finish()?;
                Ok(RingReply::Finger { k, node })
            }
            "HOLD" | "NAME" => {
                let usage = "HOLD <key> <peer> | NAME <name> <key> <size> <piece-size> <kind>";
                let mut f = Fields::new("record", usage, 5, rest);
                let record = Record::parse_fields(&verb, &mut f)?;
                f.finish()?;
                Ok(RingReply::Record(record))
            }
            _ => Reply::parse(line).map(RingReply::Common),
        }
    }
}

impl fmt::Display for RingReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingReply::Owner(members) => {
                write!(f, "OWNR")?;
                for member in members {
                    write!(f, " {member}")?;
                }
                Ok(())
            }
            RingReply::Next(member) => write!(f, "NEXT {member}"),
            RingReply::Node { me, size } => write!(f, "NODE {me} {size}"),
            RingReply::Pred(member) => write!(f, "PRED {}", OrDash(member)),
            RingReply::Succ(member) => write!(f, "SUCC {member}"),
            RingReply::Finger { k, node } => write!(f, "FING {k} {}", OrDash(node)),
            RingReply::Record(record) => write!(f, "{record}"),
            RingReply::Common(reply) => write!(f, "{reply}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TEST_KEY;

    #[test]
    fn requests_round_trip() {
        for line in [
            "LOOK 42".to_string(),
            "LOOK 42 nofingers".to_string(),
            "RNFO".to_string(),
            "NAMS".to_string(),
            "NTFY 7@127.0.0.1:7001".to_string(),
            "LEAV 7@127.0.0.1:7001 - 9@127.0.0.1:7002".to_string(),
            "LEAV 7@127.0.0.1:7001 3@[::1]:7000 9@127.0.0.1:7002".to_string(),
            format!("STOR 90 HOLD {TEST_KEY} 127.0.0.1:7001"),
            format!("STOR 90 NAME song%20one.mp3 {TEST_KEY} 1000 262144 audio"),
            format!("FIND HOLD {TEST_KEY}"),
            "FIND NAME song.mp3".to_string(),
        ] {
            let request = RingRequest::parse(&line).unwrap();
            assert_eq!(request.to_string(), line);
        }
    }

    #[test]
    fn replies_round_trip() {
        for line in [
            "OWNR 7@127.0.0.1:7001 9@127.0.0.1:7002".to_string(),
            "NEXT 7@127.0.0.1:7001".to_string(),
            "NODE 7@127.0.0.1:7001 65536".to_string(),
            "PRED -".to_string(),
            "SUCC 9@127.0.0.1:7002".to_string(),
            "FING 9 9@127.0.0.1:7002".to_string(),
            "FING 11 -".to_string(),
            format!("HOLD {TEST_KEY} 127.0.0.1:7001"),
            "OK".to_string(),
            "END".to_string(),
            "ERRR 202 bad".to_string(),
        ] {
            let reply = RingReply::parse(&line).unwrap();
            assert_eq!(reply.to_string(), line);
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        assert!(RingRequest::parse("LOOK").is_err());
        assert!(RingRequest::parse("LOOK x").is_err());
        assert!(RingRequest::parse("LOOK 4 quickly").is_err());
        assert!(RingRequest::parse("NTFY 7").is_err());
        assert!(RingRequest::parse("STOR 999999 HOLD x y").is_err());
        let no_port = RingRequest::parse(&format!("STOR 90 HOLD {TEST_KEY} 1.2.3.4:0"));
        assert!(
            no_port.is_err_and(|e| e.to_string().contains("port 0 is not a port")),
            "a holder no one can connect to"
        );
        assert!(RingRequest::parse("NTFY 7@127.0.0.1:0").is_err());
        assert!(RingRequest::parse("FIND WHAT x").is_err());
        assert!(RingRequest::parse("ZZZZ").is_err());
        let long = format!("OWNR {}", vec!["1@127.0.0.1:1"; 40].join(" "));
        assert!(RingReply::parse(&long).is_err(), "lists are capped");
    }

    #[test]
    fn a_name_record_is_checked_as_an_addf_is() {
        let stor = |size: &str, piece: &str| {
            RingRequest::parse(&format!(
                "STOR 100 NAME z.ogg {TEST_KEY} {size} {piece} audio"
            ))
            .map_err(|e| e.to_string())
        };
        assert!(stor("7", "16384").is_ok());
        let err = stor("7", "1000").unwrap_err();
        assert!(err.contains("a piece size is a power of two"), "{err}");
        let err = stor("17179869185", "16384").unwrap_err();
        assert!(err.contains("more than 1048576 pieces"), "{err}");
    }
}
