//! Requests a client sends to the tracker, with their wire grammar.
//!
//! `TrackerRequest::parse` turns one line into a typed request or a
//! [`ProtocolError`]; `Display` writes the canonical line back, without the
//! newline. The answers are [`Reply`](super::Reply) lines.

use std::fmt;

use super::error::ProtocolError;
use super::fields::{
    in_ascii_case, next_size_and_piece_size, parse_number, percent_decode, piece_count, split_verb,
    BitmapField, Case, Fields, FileKey, FileName, MediaKind, PercentEncoded, SharedPath, UserName,
};
use crate::units::parse_byte_size;

/// The verbs the tracker understands, for "unknown verb" messages.
pub const TRACKER_VERBS: &str = "HELO ADDF RMVF RQFS LSTF REQF BITF USRS PING QUIT";

/// One request from a client to the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerRequest {
    /// `HELO <listen-port> [<user>]`: open a session. Answer `OK <peer-id>`.
    Helo { port: u16, user: Option<UserName> },
    /// `ADDF <key> <name> <size> <piece-size> <kind> <path>`: offer a
    /// complete file. Answer `OK <key>`.
    Addf(FileOffer),
    /// `RMVF <key>`: withdraw this session's offer or progress for a file.
    /// Answer `OK <key>`.
    Rmvf { key: FileKey },
    /// `RQFS [<criterion>...]`: search files. Answer `FILE` lines, `END`.
    Rqfs(SearchCriteria),
    /// `LSTF [<criterion>...]`: list who shares what, one line per offer.
    /// Answer `SHAR` lines, `END`.
    Lstf(SearchCriteria),
    /// `REQF <key>`: the peers that hold a file. Answer `PEER` lines, `END`.
    Reqf { key: FileKey },
    /// `BITF <key> <bitmap>`: report this session's progress on a file.
    /// Answer `OK <key> <pieces-held>`.
    Bitf { key: FileKey, bitmap: BitmapField },
    /// `USRS`: the named users and their peer ids. Answer `USER` lines, `END`.
    Usrs,
    /// `PING`: keep the session alive. Answer `OK pong`.
    Ping,
    /// `QUIT`: end the session. Answer `OK bye`, then the tracker closes.
    Quit,
}

/// What `ADDF` says about a file on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffer {
    pub key: FileKey,
    pub name: FileName,
    pub size: u64,
    pub piece_size: u32,
    pub kind: MediaKind,
    pub path: SharedPath,
}

impl FileOffer {
    /// How many pieces the file has.
    pub fn piece_count(&self) -> u64 {
        piece_count(self.size, self.piece_size)
    }
}

/// The filters of `RQFS` and `LSTF`; a file must pass all of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchCriteria(pub Vec<Criterion>);

/// One search filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    /// A plain word: a case-insensitive substring of the name.
    /// Percent-encoded, with `=` written as `%3D`.
    Word(String),
    /// `name=<glob>`: the whole name matches a glob (`*` any run, `?` one
    /// character), case-insensitive. Percent-encoded.
    NameGlob(String),
    /// `kind=<audio|video|other>`.
    Kind(MediaKind),
    /// `min=<size>`: at least this many bytes (units such as `MiB` accepted).
    MinSize(u64),
    /// `max=<size>`: at most this many bytes.
    MaxSize(u64),
    /// `user=<name>`: offered or held by this user.
    User(UserName),
    /// `key=<key>`: the file with this key.
    Key(FileKey),
}

const USAGE_HELO: &str = "HELO <listen-port> [<user>]";
const USAGE_ADDF: &str = "ADDF <key> <name> <size> <piece-size> <kind> <path>";
const USAGE_RMVF: &str = "RMVF <key>";
const USAGE_REQF: &str = "REQF <key>";
const USAGE_BITF: &str = "BITF <key> <bitmap>";

impl TrackerRequest {
    /// Parses one line (without its line ending).
    pub fn parse(line: &str) -> Result<TrackerRequest, ProtocolError> {
        let (verb, rest) = split_verb(line)?;
        match &*verb {
            "HELO" => {
                let mut f = Fields::new("HELO", USAGE_HELO, 2, rest);
                let port_text = f.next("a listen port")?;
                let port: u16 = parse_number("listen-port", port_text)?;
                if port == 0 {
                    return Err(ProtocolError::bad_field(
                        "listen-port",
                        port_text,
                        "port 0 is not a port others can connect to",
                    ));
                }
                let user = f.optional().map(UserName::parse).transpose()?;
                f.finish()?;
                Ok(TrackerRequest::Helo { port, user })
            }
            "ADDF" => {
                let mut f = Fields::new("ADDF", USAGE_ADDF, 6, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                let name = FileName::parse(f.next("a name")?)?;
                let (size, piece_size) = next_size_and_piece_size(&mut f)?;
                let kind = MediaKind::parse(f.next("a kind")?)?;
                let path = SharedPath::parse(f.next("a path")?)?;
                f.finish()?;
                Ok(TrackerRequest::Addf(FileOffer {
                    key,
                    name,
                    size,
                    piece_size,
                    kind,
                    path,
                }))
            }
            "RMVF" => {
                let mut f = Fields::new("RMVF", USAGE_RMVF, 1, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                f.finish()?;
                Ok(TrackerRequest::Rmvf { key })
            }
            "RQFS" => Ok(TrackerRequest::Rqfs(SearchCriteria::parse(rest)?)),
            "LSTF" => Ok(TrackerRequest::Lstf(SearchCriteria::parse(rest)?)),
            "REQF" => {
                let mut f = Fields::new("REQF", USAGE_REQF, 1, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                f.finish()?;
                Ok(TrackerRequest::Reqf { key })
            }
            "BITF" => {
                let mut f = Fields::new("BITF", USAGE_BITF, 2, rest);
                let key = FileKey::parse(f.next("a key")?)?;
                let bitmap = BitmapField::parse(f.next("a bitmap")?)?;
                f.finish()?;
                Ok(TrackerRequest::Bitf { key, bitmap })
            }
            "USRS" => no_fields("USRS", rest).map(|()| TrackerRequest::Usrs),
            "PING" => no_fields("PING", rest).map(|()| TrackerRequest::Ping),
            "QUIT" => no_fields("QUIT", rest).map(|()| TrackerRequest::Quit),
            _ => Err(ProtocolError::unknown_verb(line, TRACKER_VERBS)),
        }
    }

    /// The verb, for logs.
    pub fn verb(&self) -> &'static str {
        match self {
            TrackerRequest::Helo { .. } => "HELO",
            TrackerRequest::Addf(_) => "ADDF",
            TrackerRequest::Rmvf { .. } => "RMVF",
            TrackerRequest::Rqfs(_) => "RQFS",
            TrackerRequest::Lstf(_) => "LSTF",
            TrackerRequest::Reqf { .. } => "REQF",
            TrackerRequest::Bitf { .. } => "BITF",
            TrackerRequest::Usrs => "USRS",
            TrackerRequest::Ping => "PING",
            TrackerRequest::Quit => "QUIT",
        }
    }
}

/// Checks that a verb without fields got none.
pub(crate) fn no_fields(verb: &'static str, rest: &str) -> Result<(), ProtocolError> {
    Fields::new(verb, verb, 0, rest).finish()
}

impl fmt::Display for TrackerRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackerRequest::Helo { port, user } => {
                write!(f, "HELO {port}")?;
                if let Some(user) = user {
                    write!(f, " {user}")?;
                }
                Ok(())
            }
            TrackerRequest::Addf(o) => write!(
                f,
                "ADDF {} {} {} {} {} {}",
                o.key, o.name, o.size, o.piece_size, o.kind, o.path
            ),
            TrackerRequest::Rmvf { key } => write!(f, "RMVF {key}"),
            TrackerRequest::Rqfs(criteria) => write!(f, "RQFS{criteria}"),
            TrackerRequest::Lstf(criteria) => write!(f, "LSTF{criteria}"),
            TrackerRequest::Reqf { key } => write!(f, "REQF {key}"),
            TrackerRequest::Bitf { key, bitmap } => write!(f, "BITF {key} {bitmap}"),
            TrackerRequest::Usrs => f.write_str("USRS"),
            TrackerRequest::Ping => f.write_str("PING"),
            TrackerRequest::Quit => f.write_str("QUIT"),
        }
    }
}

/// Criteria one search may give: a search tests each against every file
/// it looks at, under the registry's lock, so their number is capped.
pub const MAX_CRITERIA: usize = 16;

impl SearchCriteria {
    /// Parses the fields after `RQFS` / `LSTF`: at most [`MAX_CRITERIA`].
    pub fn parse(rest: &str) -> Result<SearchCriteria, ProtocolError> {
        let fields = rest.split(' ').filter(|part| !part.is_empty());
        let count = fields.clone().count();
        if count > MAX_CRITERIA {
            return Err(ProtocolError::bad_field(
                "search",
                rest,
                format!("{count} criteria, at most {MAX_CRITERIA}"),
            ));
        }
        fields
            .map(|field| Criterion::parse_with(field, Values::PercentEncoded))
            .collect::<Result<Vec<_>, _>>()
            .map(SearchCriteria)
    }

    /// Criteria as a person types them, one per word (the shell's words,
    /// a command line's arguments), values taken as they are: a word may
    /// hold spaces or `%` (`name=my song.mp3`, `50%`), which the wire form
    /// percent-encodes. Empty words are skipped.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<SearchCriteria, ProtocolError> {
        let words: Vec<&str> = words
            .iter()
            .map(AsRef::as_ref)
            .filter(|word| !word.is_empty())
            .collect();
        if words.len() > MAX_CRITERIA {
            return Err(ProtocolError::bad_field(
                "search",
                &words.join(" "),
                format!("{} criteria, at most {MAX_CRITERIA}", words.len()),
            ));
        }
        let criteria = words
            .iter()
            .map(|word| Criterion::parse_with(word, Values::AsTyped))
            .collect::<Result<Vec<_>, _>>()
            .map(SearchCriteria)?;
        // Said here, to the person typing; on the wire such a search is
        // simply answered with no file.
        match criteria.size_range() {
            (Some(min), Some(max)) if min > max => {
                let typed = |wanted: Criterion| {
                    let at = criteria.0.iter().position(|c| *c == wanted);
                    at.map_or("", |at| words[at])
                };
                Err(ProtocolError::bad_field(
                    "search",
                    &format!(
                        "{} {}",
                        typed(Criterion::MinSize(min)),
                        typed(Criterion::MaxSize(max))
                    ),
                    "the smallest size asked is over the largest: no file can match",
                ))
            }
            _ => Ok(criteria),
        }
    }

    /// The tightest `min=` and `max=` among the criteria (all must hold).
    fn size_range(&self) -> (Option<u64>, Option<u64>) {
        let mut range = (None, None);
        for criterion in &self.0 {
            match *criterion {
                Criterion::MinSize(min) => range.0 = range.0.max(Some(min)),
                Criterion::MaxSize(max) => range.1 = Some(range.1.map_or(max, |m: u64| m.min(max))),
                _ => {}
            }
        }
        range
    }
}

/// How a criterion's text values are written: on the wire, or as typed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Values {
    PercentEncoded,
    AsTyped,
}

/// Writes each criterion preceded by a space (nothing when empty), so that
/// `RQFS{criteria}` is the canonical line.
impl fmt::Display for SearchCriteria {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for criterion in &self.0 {
            write!(f, " {criterion}")?;
        }
        Ok(())
    }
}

impl Criterion {
    fn parse_with(field: &str, values: Values) -> Result<Criterion, ProtocolError> {
        let text = |what: &'static str, value: &str| match values {
            Values::PercentEncoded => percent_decode(what, value),
            Values::AsTyped => Ok(value.to_string()),
        };
        let Some((filter, value)) = field.split_once('=') else {
            return Ok(Criterion::Word(text("word", field)?));
        };
        let size = |value: &str| {
            parse_byte_size(value)
                .map_err(|reason| ProtocolError::bad_field("size filter", value, reason))
        };
        match &*in_ascii_case(filter, Case::Lower) {
            "name" if !value.is_empty() => Ok(Criterion::NameGlob(text("glob", value)?)),
            "kind" => Ok(Criterion::Kind(MediaKind::parse(value)?)),
            "min" => Ok(Criterion::MinSize(size(value)?)),
            "max" => Ok(Criterion::MaxSize(size(value)?)),
            "user" => Ok(Criterion::User(UserName::parse(value)?)),
            "key" => Ok(Criterion::Key(FileKey::parse(value)?)),
            "name" => Err(ProtocolError::bad_field(
                "filter",
                field,
                "name= needs a glob",
            )),
            _ if values == Values::AsTyped => Err(ProtocolError::bad_field(
                "filter",
                field,
                "filters are name=, kind=, min=, max=, user= and key=",
            )),
            _ => Err(ProtocolError::bad_field(
                "filter",
                field,
                "filters are name=, kind=, min=, max=, user= and key= (write '=' in a word as %3D)",
            )),
        }
    }
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Criterion::Word(word) => PercentEncoded::new(word, b"=").fmt(f),
            Criterion::NameGlob(glob) => write!(f, "name={}", PercentEncoded::new(glob, &[])),
            Criterion::Kind(kind) => write!(f, "kind={kind}"),
            Criterion::MinSize(size) => write!(f, "min={size}"),
            Criterion::MaxSize(size) => write!(f, "max={size}"),
            Criterion::User(user) => write!(f, "user={user}"),
            Criterion::Key(key) => write!(f, "key={key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::protocol::TEST_KEY as KEY;

    #[test]
    fn canonical_lines_round_trip() {
        let lines = [
            "HELO 7001".to_string(),
            "HELO 7001 alice".to_string(),
            format!("ADDF {KEY} my%20song.mp3 5000000 262144 audio /home/alice/my%20song.mp3"),
            format!("RMVF {KEY}"),
            "RQFS".to_string(),
            "RQFS song name=*.mp3 kind=audio min=1000 max=2000000 user=alice".to_string(),
            format!("RQFS key={KEY}"),
            "LSTF user=bob".to_string(),
            format!("REQF {KEY}"),
            format!("BITF {KEY} a0"),
            format!("BITF {KEY} -"),
            "USRS".to_string(),
            "PING".to_string(),
            "QUIT".to_string(),
        ];
        for line in lines {
            let request = TrackerRequest::parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(request.to_string(), line);
        }
    }

    #[test]
    fn lenient_input_gives_canonical_output() {
        let request = TrackerRequest::parse("helo  7001   alice ").unwrap();
        assert_eq!(request.to_string(), "HELO 7001 alice");
        let request = TrackerRequest::parse("RQFS min=1KiB a%3Db").unwrap();
        assert_eq!(request.to_string(), "RQFS min=1024 a%3Db");
    }

    #[test]
    fn an_unknown_verb_is_echoed_as_typed() {
        let error = TrackerRequest::parse("  localhost 7001").unwrap_err();
        assert!(
            error.to_string().starts_with("unknown verb \"localhost\";"),
            "{error}"
        );
    }

    #[test]
    fn each_failure_has_its_typed_error() {
        use crate::protocol::ErrorCode::*;
        let cases = [
            ("HELLO 7001", UnknownVerb),
            ("HELO", FieldCount),
            ("HELO 7001 alice extra", FieldCount),
            ("HELO seven", BadField),
            ("HELO 70000", BadField),
            ("HELO 0", BadField),
            ("HELO 7001 al!ce", BadField),
            ("ADDF abc x 1 16384 audio /x", BadField),
            (&format!("ADDF {KEY} x -1 16384 audio /x"), BadField),
            (&format!("ADDF {KEY} x 10 1000 audio /x"), BadField),
            (&format!("ADDF {KEY} x 10 16384 image /x"), BadField),
            (&format!("ADDF {KEY} x 10 16384 audio"), FieldCount),
            (
                &format!("ADDF {KEY} x 99999999999999 16384 audio /x"),
                BadField,
            ),
            (&format!("BITF {KEY} xyz"), BadField),
            ("RQFS size=5", BadField),
            ("RQFS min=lots", BadField),
            ("USRS now", FieldCount),
            // Counted before they are read: one too many is 201 even
            // when the first field would not parse.
            ("REQF a b", FieldCount),
            ("RMVF x y", FieldCount),
        ];
        for (line, code) in cases {
            let err = TrackerRequest::parse(line).expect_err(line);
            assert_eq!(err.code(), code, "{line}: {err}");
        }
        let said = |line: &str| TrackerRequest::parse(line).unwrap_err().to_string();
        assert_eq!(said("PING x"), "PING takes no fields, got 1; usage: PING");
        assert!(
            said(&format!("RMVF {KEY} x")).starts_with("RMVF takes at most 1 field, got 2"),
            "{}",
            said(&format!("RMVF {KEY} x"))
        );
    }

    #[test]
    fn a_search_takes_at_most_sixteen_criteria() {
        let words = |n: usize| vec!["a"; n].join(" ");
        let sixteen = format!("RQFS {}", words(MAX_CRITERIA));
        assert!(TrackerRequest::parse(&sixteen).is_ok());
        let err = TrackerRequest::parse(&format!("LSTF {}", words(4000))).unwrap_err();
        assert_eq!(err.code(), crate::protocol::ErrorCode::BadField);
        assert!(
            err.to_string().ends_with(": 4000 criteria, at most 16"),
            "{err}"
        );
    }

    #[test]
    fn typed_words_are_taken_as_they_are_and_encoded_on_the_wire() {
        let typed = ["name=my song.mp3", "50%", "two words", "", "kind=audio"];
        let criteria = SearchCriteria::from_words(&typed).unwrap();
        assert_eq!(
            criteria.0,
            [
                Criterion::NameGlob("my song.mp3".into()),
                Criterion::Word("50%".into()),
                Criterion::Word("two words".into()),
                Criterion::Kind(MediaKind::Audio),
            ]
        );
        let line = TrackerRequest::Rqfs(criteria.clone()).to_string();
        assert_eq!(line, "RQFS name=my%20song.mp3 50%25 two%20words kind=audio");
        assert_eq!(
            TrackerRequest::parse(&line).unwrap(),
            TrackerRequest::Rqfs(criteria)
        );
        let err = SearchCriteria::from_words(&["a=b"]).unwrap_err();
        assert!(err.to_string().ends_with("user= and key="), "{err}");
        assert!(SearchCriteria::from_words(&["min=lots"]).is_err());
        assert!(SearchCriteria::from_words(&vec!["a"; MAX_CRITERIA + 1]).is_err());
    }

    #[test]
    fn a_typed_search_no_file_can_match_is_refused() {
        let err = SearchCriteria::from_words(&["min=2MB", "max=5MB", "max=1MB"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad search \"min=2MB max=1MB\": the smallest size asked is over the largest: no file can match"
        );
        assert!(SearchCriteria::from_words(&["min=1MB", "max=1MB"]).is_ok());
        // On the wire it is a search like any other.
        assert!(TrackerRequest::parse("RQFS min=2000000 max=1000000").is_ok());
    }
}
