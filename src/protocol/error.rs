//! Failure kinds of the protocol: the stable numeric codes sent in `ERRR`
//! lines, and the typed error a parser returns for a line it cannot accept.
//!
//! This module owns the table of codes (mirrored in protocol.md, section
//! "Error codes"). It does no I/O.

use std::fmt;

/// A stable failure code, sent as `ERRR <code> <human text>`.
///
/// The first digit groups the codes: 1 the line itself, 2 the message's
/// grammar, 3 the session, 4 files and pieces, 5 the server. A code never
/// changes meaning; new kinds get new numbers. Codes this version does not
/// know (from a newer peer, say) parse as [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 100: the line is longer than the receiver's line cap; it was skipped.
    LineTooLong,
    /// 101: the line is not valid UTF-8 text.
    NotText,
    /// 200: the first word is not a verb this endpoint knows.
    UnknownVerb,
    /// 201: a field is missing, or there are more fields than the verb takes.
    FieldCount,
    /// 202: a field is present but its value is malformed.
    BadField,
    /// 300: the request needs a session: say `HELO` first.
    NoSession,
    /// 301: this connection already opened a session.
    SessionOpen,
    /// 302: the user name is held by another live session.
    UserTaken,
    /// 303: the keep-alive deadline passed with no complete line; closing.
    IdleTimeout,
    /// 304: another live session holds this peer id (ip:port).
    PeerIdInUse,
    /// 400: no file with that key is known here.
    UnknownFile,
    /// 401: the file is known, but not offered by this session.
    NotYours,
    /// 402: the offer disagrees with what is registered for that key.
    FileConflict,
    /// 403: the bitmap's length does not match the file's piece count.
    BitmapMismatch,
    /// 404: the piece is not held here (peer-to-peer).
    PieceMissing,
    /// 405: this session holds as many files as the server allows.
    TooManyFiles,
    /// 406: the tracker has no room left for offers (all sessions'
    /// together); a later try may find some.
    TrackerFull,
    /// 500: the server is at its connection cap; closing.
    Busy,
    /// 501: the server failed on its side (disk, internal error).
    Internal,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// Every code this version defines, in numeric order.
    pub const ALL: [ErrorCode; 19] = [
        ErrorCode::LineTooLong,
        ErrorCode::NotText,
        ErrorCode::UnknownVerb,
        ErrorCode::FieldCount,
        ErrorCode::BadField,
        ErrorCode::NoSession,
        ErrorCode::SessionOpen,
        ErrorCode::UserTaken,
        ErrorCode::IdleTimeout,
        ErrorCode::PeerIdInUse,
        ErrorCode::UnknownFile,
        ErrorCode::NotYours,
        ErrorCode::FileConflict,
        ErrorCode::BitmapMismatch,
        ErrorCode::PieceMissing,
        ErrorCode::TooManyFiles,
        ErrorCode::TrackerFull,
        ErrorCode::Busy,
        ErrorCode::Internal,
    ];

    /// The number sent on the wire.
    pub fn number(self) -> u16 {
        match self {
            ErrorCode::LineTooLong => 100,
            ErrorCode::NotText => 101,
            ErrorCode::UnknownVerb => 200,
            ErrorCode::FieldCount => 201,
            ErrorCode::BadField => 202,
            ErrorCode::NoSession => 300,
            ErrorCode::SessionOpen => 301,
            ErrorCode::UserTaken => 302,
            ErrorCode::IdleTimeout => 303,
            ErrorCode::PeerIdInUse => 304,
            ErrorCode::UnknownFile => 400,
            ErrorCode::NotYours => 401,
            ErrorCode::FileConflict => 402,
            ErrorCode::BitmapMismatch => 403,
            ErrorCode::PieceMissing => 404,
            ErrorCode::TooManyFiles => 405,
            ErrorCode::TrackerFull => 406,
            ErrorCode::Busy => 500,
            ErrorCode::Internal => 501,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number read from the wire.
    pub fn from_number(n: u16) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.number() == n)
            .unwrap_or(ErrorCode::Other(n))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// Why a line could not be parsed. Each variant maps to one [`ErrorCode`],
/// and its `Display` text is the human part of the `ERRR` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("line longer than {limit} bytes, skipped")]
    LineTooLong { limit: usize },
    #[error("line is not UTF-8 text")]
    NotText,
    #[error("empty line")]
    Empty,
    #[error("unknown verb {0:?}; verbs here: {1}")]
    UnknownVerb(String, &'static str),
    #[error("{verb} needs {field}; usage: {usage}")]
    MissingField {
        verb: &'static str,
        field: &'static str,
        usage: &'static str,
    },
    #[error("{verb} takes {}, got {got}; usage: {usage}", at_most_fields(*max))]
    ExtraField {
        verb: &'static str,
        max: usize,
        got: usize,
        usage: &'static str,
    },
    #[error("REQF asks for at most {max} pieces at once, got {got}; usage: {usage}")]
    TooManyIndices {
        max: usize,
        got: usize,
        usage: &'static str,
    },
    #[error("bad {field} {value:?}: {reason}")]
    BadField {
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl ProtocolError {
    /// The wire code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::LineTooLong { .. } => ErrorCode::LineTooLong,
            ProtocolError::NotText => ErrorCode::NotText,
            ProtocolError::Empty | ProtocolError::UnknownVerb(..) => ErrorCode::UnknownVerb,
            ProtocolError::MissingField { .. }
            | ProtocolError::ExtraField { .. }
            | ProtocolError::TooManyIndices { .. } => ErrorCode::FieldCount,
            ProtocolError::BadField { .. } => ErrorCode::BadField,
        }
    }

    /// Shorthand for a [`ProtocolError::BadField`]; the value is cut to a
    /// readable length so an error line never echoes a huge field back.
    pub fn bad_field(field: &'static str, value: &str, reason: impl Into<String>) -> Self {
        ProtocolError::BadField {
            field,
            value: super::fields::echo(value),
            reason: reason.into(),
        }
    }

    /// Shorthand for a [`ProtocolError::UnknownVerb`]: the first word of
    /// `line` as it was typed (not in the capitals it is compared in),
    /// cut to a readable length.
    pub fn unknown_verb(line: &str, known: &'static str) -> Self {
        let typed = line.trim_start_matches(' ').split(' ').next().unwrap_or("");
        ProtocolError::UnknownVerb(super::fields::echo(typed), known)
    }
}

/// "no fields", "at most 1 field", "at most 3 fields".
fn at_most_fields(max: usize) -> String {
    match max {
        0 => "no fields".into(),
        1 => "at most 1 field".into(),
        n => format!("at most {n} fields"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut numbers: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.number()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_number(code.number()), code);
        }
        assert_eq!(ErrorCode::from_number(999), ErrorCode::Other(999));
    }

    #[test]
    fn bad_field_echo_is_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let err = ProtocolError::bad_field("name", &long, "too long");
        let ProtocolError::BadField { value, .. } = err else {
            panic!("not a BadField")
        };
        assert!(value.len() <= 67 && value.ends_with("..."));
    }
}
