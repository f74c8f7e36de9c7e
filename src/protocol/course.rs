//! The grammar of the course's ring tools (hash server, welcome server,
//! monitor): one request per TCP connection, a line each way, fields
//! separated by `:`. Pure: parsing and formatting only.
//!
//! These lines share ports with the native protocol, and are told apart
//! by their form ([`CourseRequest::recognise`]): a native line starts with
//! a four-letter verb and a space, a course line starts with `yo:`, `a+:`,
//! `ip?`, `li?`, `rt?`, or is an IP address (a hash request).
//!
//! Addresses: the course tools give an IP and no port, because every peer
//! of a class listens on the same port. This project also lets peers on
//! other ports in (`ip:port`, for one machine without extra loopback
//! addresses); [`CourseAddr`] prints the port only when it is not the
//! agreed one.
//!
//! An address text is at most [`MAX_ADDRESS_TEXT`] bytes: Rust's parser
//! takes any number of leading zeros in a port (`127.0.0.1:0007000`), so
//! without a bound one address has endless spellings. A hash request
//! carries its address as an [`AddressText`], in canonical form, so every
//! spelling of one address is one text.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Longest address text a course line may carry, in bytes. The longest
/// canonical address (IPv6 with a scope and a port) takes 58; the longest
/// spelling with no padding zeros in port or scope
/// (`[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535`)
/// exactly 64; the course's own, an IPv4 address, at most 15.
pub const MAX_ADDRESS_TEXT: usize = 64;

/// An address (`ip`, or `ip:port`, `[ip]:port` for IPv6) in canonical
/// form, as Rust writes it back: no leading zeros, IPv6 compressed, at
/// most [`MAX_ADDRESS_TEXT`] bytes. Only made so, so every spelling of one
/// address is one text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressText(String);

impl AddressText {
    /// The canonical form of `text`; `None` when `text` is no address or
    /// longer than [`MAX_ADDRESS_TEXT`].
    pub fn parse(text: &str) -> Option<AddressText> {
        if text.len() > MAX_ADDRESS_TEXT {
            return None;
        }
        // A bare IPv6 address hashes as Rust writes it (`::1`), with or
        // without the brackets it may be given in: the ids the service
        // gives stay what they were.
        let canonical = match parse_ip(text) {
            Some(ip) => ip.to_string(),
            None => text.parse::<SocketAddr>().ok()?.to_string(),
        };
        Some(AddressText(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<SocketAddr> for AddressText {
    fn from(addr: SocketAddr) -> AddressText {
        AddressText(addr.to_string())
    }
}

impl fmt::Display for AddressText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An address as the course tools write it: an IP, with a port when it is
/// not the one every ring peer is expected to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CourseAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl CourseAddr {
    /// `ip` or `ip:port` (`[ip]` or `[ip]:port` for IPv6; a bare IPv6
    /// address is taken too), at most [`MAX_ADDRESS_TEXT`] bytes. Port 0
    /// is no place to reach, and is refused.
    pub fn parse(text: &str) -> Option<CourseAddr> {
        if text.len() > MAX_ADDRESS_TEXT {
            return None;
        }
        if let Some(ip) = parse_ip(text) {
            return Some(CourseAddr { ip, port: None });
        }
        let addr: SocketAddr = text.parse().ok()?;
        (addr.port() != 0).then_some(CourseAddr {
            ip: addr.ip(),
            port: Some(addr.port()),
        })
    }

    /// The socket address, taking `default_port` when none was written.
    pub fn socket(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(default_port))
    }

    /// How `addr` is written where every peer is expected on `usual_port`.
    pub fn of(addr: SocketAddr, usual_port: u16) -> CourseAddr {
        CourseAddr {
            ip: addr.ip(),
            port: (addr.port() != usual_port).then_some(addr.port()),
        }
    }
}

/// An IP address alone: `1.2.3.4`, `::1`, or `[::1]`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let bracketed = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
    match bracketed {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => text.parse().ok(),
    }
}

/// An IPv6 address is written in brackets, even without a port: the
/// course's fields are separated by `:`, so `5:[::3]` is one id and one
/// address where `5:::3` could be read several ways.
impl fmt::Display for CourseAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.port, self.ip) {
            (None, IpAddr::V4(ip)) => write!(f, "{ip}"),
            (None, IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            (Some(port), ip) => write!(f, "{}", SocketAddr::new(ip, port)),
        }
    }
}

/// One request of the course's grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CourseRequest {
    /// `<ip>`: "give this address an id" (the hash service).
    Hash { address: AddressText },
    /// `yo:<hash>:<ip>`: "I join with this hash at this address".
    Join { hash: u64, at: CourseAddr },
    /// `a+:<hash>`: "the peer with this hash leaves".
    Leave { hash: u64 },
    /// `ip?:<hash>`: "where is the peer with this hash?"
    AddressOf { hash: u64 },
    /// `li?`: "list every peer".
    List,
    /// `rt?:<hash>`: "the ideal routing table of this hash"; a bare `rt?`:
    /// "your own routing table" (asked of a peer).
    Table { hash: Option<u64> },
}

/// A course line that does not follow the grammar (answered `wrq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrongRequest;

impl CourseRequest {
    /// Whether `line` is in the course's form, and if so what it asks.
    /// `None`: a native line, for the native parser.
    pub fn recognise(line: &str) -> Option<Result<CourseRequest, WrongRequest>> {
        let line = line.trim();
        // The common case first, cheaply: a native verb (four letters, then
        // a space or nothing).
        let bytes = line.as_bytes();
        if bytes.len() >= 4
            && bytes[..4].iter().all(u8::is_ascii_alphabetic)
            && bytes.get(4).is_none_or(|&b| b == b' ')
        {
            return None;
        }
        let (head, rest) = match line.split_once(':') {
            Some((head, rest)) => (head, Some(rest)),
            None => (line, None),
        };
        let hash = |text: Option<&str>| -> Result<u64, WrongRequest> {
            let text = text.ok_or(WrongRequest)?;
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WrongRequest);
            }
            text.parse().map_err(|_| WrongRequest)
        };
        let request = match head.to_ascii_lowercase().as_str() {
            // `yo` alone, with no colon, is a word like any other.
            "yo" if rest.is_some() => rest
                .and_then(|rest| rest.split_once(':'))
                .ok_or(WrongRequest)
                .and_then(|(h, at)| {
                    Ok(CourseRequest::Join {
                        hash: hash(Some(h))?,
                        at: CourseAddr::parse(at).ok_or(WrongRequest)?,
                    })
                }),
            "a+" => hash(rest).map(|hash| CourseRequest::Leave { hash }),
            "ip?" => hash(rest).map(|hash| CourseRequest::AddressOf { hash }),
            "li?" if rest.is_none() => Ok(CourseRequest::List),
            "rt?" if rest.is_none() => Ok(CourseRequest::Table { hash: None }),
            "rt?" => hash(rest).map(|h| CourseRequest::Table { hash: Some(h) }),
            _ => match AddressText::parse(line) {
                Some(address) => Ok(CourseRequest::Hash { address }),
                // Native lines start with a word of letters and a space (or
                // are one word of letters); anything else with the course's
                // punctuation (an over-long address too) is a course line
                // gone wrong.
                None if line.contains([':', '?', '+']) && !line.contains(' ') => Err(WrongRequest),
                None => return None,
            },
        };
        Some(request)
    }
}

impl fmt::Display for CourseRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CourseRequest::Hash { address } => write!(f, "{address}"),
            CourseRequest::Join { hash, at } => write!(f, "yo:{hash}:{at}"),
            CourseRequest::Leave { hash } => write!(f, "a+:{hash}"),
            CourseRequest::AddressOf { hash } => write!(f, "ip?:{hash}"),
            CourseRequest::List => write!(f, "li?"),
            CourseRequest::Table { hash: None } => write!(f, "rt?"),
            CourseRequest::Table { hash: Some(h) } => write!(f, "rt?:{h}"),
        }
    }
}

/// One answer line of the course's grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CourseReply {
    /// An id from the hash service.
    Id(u64),
    /// `aht`: every id is taken.
    AllTaken,
    /// `yaf`: "you are first" (no peer to join through).
    First,
    /// A peer's address (a random present peer, or the one asked for).
    Addr(CourseAddr),
    /// `ok`.
    Ok,
    /// `wrq`: a wrong request (bad or duplicate hash, unknown form).
    Wrong,
    /// `ukh`: unknown hash.
    UnknownHash,
    /// `<hash>:<ip>`: one line of `li?`.
    Member { hash: u64, at: CourseAddr },
    /// `<k>:<succHash>:<succIp>`: one line of a routing table.
    Route { k: u64, hash: u64, at: CourseAddr },
    /// `end`: closes `li?` and `rt?`.
    End,
}

impl CourseReply {
    /// Reads the answer to `yo`: `yaf`, an address, or `wrq`.
    pub fn parse_join_answer(line: &str) -> Option<CourseReply> {
        match line.trim() {
            "yaf" => Some(CourseReply::First),
            "wrq" => Some(CourseReply::Wrong),
            other => CourseAddr::parse(other).map(CourseReply::Addr),
        }
    }

    /// Reads the hash service's answer: an id or `aht`.
    pub fn parse_id_answer(line: &str) -> Option<CourseReply> {
        match line.trim() {
            "aht" => Some(CourseReply::AllTaken),
            other => other.parse().ok().map(CourseReply::Id),
        }
    }

    /// Reads one line of `li?`: `<hash>:<ip>`.
    pub fn parse_member_line(line: &str) -> Option<CourseReply> {
        let (hash, at) = line.trim().split_once(':')?;
        Some(CourseReply::Member {
            hash: hash.parse().ok()?,
            at: CourseAddr::parse(at)?,
        })
    }

    /// Reads one line of a routing table: `<k>:<hash>:<ip>`, or `end`.
    pub fn parse_route_line(line: &str) -> Option<CourseReply> {
        let line = line.trim();
        if line == "end" {
            return Some(CourseReply::End);
        }
        let mut parts = line.splitn(3, ':');
        let k = parts.next()?.parse().ok()?;
        let hash = parts.next()?.parse().ok()?;
        let at = CourseAddr::parse(parts.next()?)?;
        Some(CourseReply::Route { k, hash, at })
    }
}

impl fmt::Display for CourseReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CourseReply::Id(id) => write!(f, "{id}"),
            CourseReply::AllTaken => write!(f, "aht"),
            CourseReply::First => write!(f, "yaf"),
            CourseReply::Addr(at) => write!(f, "{at}"),
            CourseReply::Ok => write!(f, "ok"),
            CourseReply::Wrong => write!(f, "wrq"),
            CourseReply::UnknownHash => write!(f, "ukh"),
            CourseReply::Member { hash, at } => write!(f, "{hash}:{at}"),
            CourseReply::Route { k, hash, at } => write!(f, "{k}:{hash}:{at}"),
            CourseReply::End => write!(f, "end"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<Result<CourseRequest, WrongRequest>> {
        CourseRequest::recognise(line)
    }

    #[test]
    fn course_lines_round_trip() {
        for line in [
            "127.0.0.2",
            "127.0.0.1:7001",
            "::1",
            "yo:42:127.0.0.2",
            "yo:42:127.0.0.2:7001",
            "yo:42:[::2]",
            "yo:42:[::2]:7001",
            "a+:42",
            "ip?:42",
            "li?",
            "rt?",
            "rt?:42",
        ] {
            let request = parse(line).unwrap().unwrap();
            assert_eq!(request.to_string(), line);
        }
    }

    #[test]
    fn native_lines_are_left_alone() {
        for line in [
            "HELO 7001",
            "quit",
            "RQFS name=*.mp3",
            "PING",
            "BITF ab 00",
            "hello",
            "yo",
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }

    #[test]
    fn wrong_course_lines_are_wrq() {
        for line in [
            "yo:abc:127.0.0.2",
            "yo:42",
            "yo:42:not-an-ip",
            "yo:42:127.0.0.2:0",
            "yo:42:[::2]:0",
            "yo:42:[127.0.0.1]",
            "a+:",
            "a+:-3",
            "ip?:x",
            "li?:3",
            "rt?:",
            "zz:1",
            "what?",
        ] {
            assert_eq!(parse(line), Some(Err(WrongRequest)), "{line}");
        }
    }

    #[test]
    fn a_hash_request_carries_the_canonical_address() {
        for (line, canonical) in [
            ("127.0.0.1:07000", "127.0.0.1:7000"),
            ("127.0.0.1:0000000000007000", "127.0.0.1:7000"),
            ("0:0:0:0:0:0:0:1", "::1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[0000:0::1]:00080", "[::1]:80"),
            ("[fe80::1%0002]:7000", "[fe80::1%2]:7000"),
            ("127.0.0.2", "127.0.0.2"),
        ] {
            assert_eq!(
                parse(line),
                Some(Ok(CourseRequest::Hash {
                    address: AddressText(canonical.to_string())
                })),
                "{line}"
            );
        }
    }

    #[test]
    fn over_long_addresses_are_wrq() {
        let longest = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535";
        assert_eq!(longest.len(), MAX_ADDRESS_TEXT);
        assert!(matches!(
            parse(longest),
            Some(Ok(CourseRequest::Hash { .. }))
        ));
        let padded = |width: usize| format!("127.0.0.1:{:0>width$}", 7000);
        let at_bound = padded(MAX_ADDRESS_TEXT - "127.0.0.1:".len());
        assert_eq!(at_bound.len(), MAX_ADDRESS_TEXT);
        assert!(matches!(parse(&at_bound), Some(Ok(_))));
        for width in [MAX_ADDRESS_TEXT, 8000] {
            let line = padded(width);
            assert!(line.parse::<SocketAddr>().is_ok(), "Rust takes it");
            assert_eq!(parse(&line), Some(Err(WrongRequest)), "{width}");
            assert_eq!(parse(&format!("yo:1:{line}")), Some(Err(WrongRequest)));
            assert_eq!(AddressText::parse(&line), None);
            assert_eq!(CourseAddr::parse(&line), None);
        }
    }

    #[test]
    fn addresses_show_the_port_only_when_unusual() {
        let addr: SocketAddr = "127.0.0.2:7000".parse().unwrap();
        assert_eq!(CourseAddr::of(addr, 7000).to_string(), "127.0.0.2");
        assert_eq!(CourseAddr::of(addr, 6000).to_string(), "127.0.0.2:7000");
        assert_eq!(CourseAddr::parse("127.0.0.2").unwrap().socket(7000), addr);
    }

    #[test]
    fn answers_parse_back() {
        let route = CourseReply::Route {
            k: 32,
            hash: 60,
            at: CourseAddr::parse("127.0.0.3").unwrap(),
        };
        assert_eq!(
            CourseReply::parse_route_line(&route.to_string()),
            Some(route)
        );
        assert_eq!(CourseReply::parse_route_line("end"), Some(CourseReply::End));
        assert_eq!(
            CourseReply::parse_join_answer("yaf"),
            Some(CourseReply::First)
        );
        assert_eq!(
            CourseReply::parse_id_answer("aht"),
            Some(CourseReply::AllTaken)
        );
        assert_eq!(
            CourseReply::parse_id_answer("17"),
            Some(CourseReply::Id(17))
        );
    }
}
