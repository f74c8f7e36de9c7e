//! The field types that messages are made of, each with its wire form:
//! file keys, percent-encoded names and paths, user names, media kinds,
//! bitmaps, numbers, and the cursor that walks a line's fields.
//!
//! Every `parse` here is strict and every `Display` gives the canonical form,
//! so `parse(display(x)) == x`. Pure: no I/O.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::error::ProtocolError;

/// Longest user name, in bytes.
pub const MAX_USER_LEN: usize = 32;
/// Longest file name, in bytes once decoded (the common file-system limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest shared path, in bytes once decoded.
pub const MAX_PATH_LEN: usize = 4096;
/// Smallest piece size a file may use (16 KiB).
pub const MIN_PIECE_SIZE: u32 = 16 * 1024;
/// Largest piece size a file may use (16 MiB).
pub const MAX_PIECE_SIZE: u32 = 16 * 1024 * 1024;
/// Most pieces a single file may have (2^20: 16 GiB at the smallest pieces).
pub const MAX_PIECES: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Percent-encoding

/// `text` percent-encoded for use as one field: space, `%`, control
/// characters and every non-ASCII byte become `%XX` (upper-case hex), and so
/// do the bytes in `extra`. Everything else stays as it is, so plain names
/// stay readable in a terminal.
///
/// A [`Display`](fmt::Display) wrapper rather than a `String`: a reply line
/// is written straight into the connection's buffer, with no allocation.
pub struct PercentEncoded<'a> {
    text: &'a str,
    extra: &'a [u8],
}

impl<'a> PercentEncoded<'a> {
    pub fn new(text: &'a str, extra: &'a [u8]) -> PercentEncoded<'a> {
        PercentEncoded { text, extra }
    }
}

impl fmt::Display for PercentEncoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for byte in self.text.bytes() {
            if byte <= b' ' || byte == b'%' || byte >= 0x7f || self.extra.contains(&byte) {
                write!(f, "%{byte:02X}")?;
            } else {
                // Plain bytes are ASCII: each is a character of its own.
                f.write_char(char::from(byte))?;
            }
        }
        Ok(())
    }
}

/// Decodes a percent-encoded field. Every `%` must be followed by two hex
/// digits, and the decoded bytes must be UTF-8.
pub fn percent_decode(field: &'static str, encoded: &str) -> Result<String, ProtocolError> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(hex_pair);
            match hex {
                Some(byte) => out.push(byte),
                None => {
                    return Err(ProtocolError::bad_field(
                        field,
                        encoded,
                        "'%' must be followed by two hex digits",
                    ))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        ProtocolError::bad_field(field, encoded, "decodes to bytes that are not UTF-8")
    })
}

// ---------------------------------------------------------------------------
// The field cursor

/// Walks the space-separated fields of one line for one verb, turning a
/// missing or surplus field into the right [`ProtocolError`].
///
/// Runs of spaces count as one separator, so a stray double space typed into
/// `nc` does not matter; the canonical form uses single spaces.
pub(crate) struct Fields<'a> {
    verb: &'static str,
    usage: &'static str,
    max: usize,
    parts: std::iter::Filter<std::str::Split<'a, char>, fn(&&str) -> bool>,
    taken: usize,
}

impl<'a> Fields<'a> {
    /// `rest` is the line after the verb; `max` is the most fields the verb
    /// takes, `usage` its grammar for error messages.
    pub(crate) fn new(verb: &'static str, usage: &'static str, max: usize, rest: &'a str) -> Self {
        fn non_empty(part: &&str) -> bool {
            !part.is_empty()
        }
        Fields {
            verb,
            usage,
            max,
            parts: rest.split(' ').filter(non_empty as fn(&&str) -> bool),
            taken: 0,
        }
    }

    /// The next field, which must be there. Before the first, the fields
    /// are counted: one too many is `ERRR 201` whatever the fields say
    /// (not a `202` for the first that does not parse).
    pub(crate) fn next(&mut self, field: &'static str) -> Result<&'a str, ProtocolError> {
        if self.taken == 0 {
            let count = self.parts.clone().count();
            if count > self.max {
                return Err(ProtocolError::ExtraField {
                    verb: self.verb,
                    max: self.max,
                    got: count,
                    usage: self.usage,
                });
            }
        }
        self.optional().ok_or(ProtocolError::MissingField {
            verb: self.verb,
            field,
            usage: self.usage,
        })
    }

    /// The next field, if any.
    pub(crate) fn optional(&mut self) -> Option<&'a str> {
        let part = self.parts.next()?;
        self.taken += 1;
        Some(part)
    }

    /// How many fields are left.
    pub(crate) fn left(self) -> usize {
        self.parts.count()
    }

    /// Checks that no field is left over.
    pub(crate) fn finish(mut self) -> Result<(), ProtocolError> {
        let extra = self.parts.by_ref().count();
        if extra == 0 {
            Ok(())
        } else {
            Err(ProtocolError::ExtraField {
                verb: self.verb,
                max: self.max,
                got: self.taken + extra,
                usage: self.usage,
            })
        }
    }
}

/// Splits a line into its verb and the rest, upper-casing the verb (verbs
/// are accepted in any case; a verb already in upper case, the canonical
/// form, is borrowed, not copied).
pub(crate) fn split_verb(line: &str) -> Result<(Cow<'_, str>, &str), ProtocolError> {
    let line = line.trim_start_matches(' ');
    if line.trim_end_matches(' ').is_empty() {
        return Err(ProtocolError::Empty);
    }
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    Ok((in_ascii_case(verb, Case::Upper), rest))
}

/// A letter case, for [`in_ascii_case`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Upper,
    Lower,
}

/// `text` with its ASCII letters in `case`: borrowed when it already is
/// (the usual case on the wire, which then costs no allocation).
pub(crate) fn in_ascii_case(text: &str, case: Case) -> Cow<'_, str> {
    let in_other_case = |b: &u8| match case {
        Case::Upper => b.is_ascii_lowercase(),
        Case::Lower => b.is_ascii_uppercase(),
    };
    if !text.as_bytes().iter().any(in_other_case) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(match case {
        Case::Upper => text.to_ascii_uppercase(),
        Case::Lower => text.to_ascii_lowercase(),
    })
}

/// Cuts text that came from the network to a length fit to echo back in
/// an error line.
pub(crate) fn echo(text: &str) -> String {
    const ECHO_MAX: usize = 64;
    if text.len() <= ECHO_MAX {
        return text.to_string();
    }
    let mut cut = ECHO_MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// Parses a decimal number with no sign and no unit.
pub(crate) fn parse_number<T: FromStr>(
    field: &'static str,
    text: &str,
) -> Result<T, ProtocolError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtocolError::bad_field(
            field,
            text,
            "expected a whole number",
        ));
    }
    text.parse()
        .map_err(|_| ProtocolError::bad_field(field, text, "number out of range"))
}

// ---------------------------------------------------------------------------
// Field types

/// A file's identity: the SHA-256 of its manifest, written as 64 lower-case
/// hex digits (upper-case is accepted on input).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct FileKey(pub [u8; 32]);

impl FileKey {
    /// Parses 64 hex digits.
    pub fn parse(text: &str) -> Result<FileKey, ProtocolError> {
        hex_array(text)
            .map(FileKey)
            .ok_or_else(|| ProtocolError::bad_field("key", text, "expected 64 hex digits"))
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Hex(&self.0).fmt(f)
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileKey({self})")
    }
}

/// Lower-case hex of the bytes, as a [`Display`](fmt::Display) wrapper
/// (written with no allocation).
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        // 32 bytes at a time through a buffer on the stack.
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(buf.len() / 2) {
            for (pair, &byte) in buf.chunks_exact_mut(2).zip(chunk) {
                pair[0] = DIGITS[usize::from(byte >> 4)];
                pair[1] = DIGITS[usize::from(byte & 0x0f)];
            }
            let digits = &buf[..chunk.len() * 2];
            f.write_str(std::str::from_utf8(digits).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// Bytes of an even-length hex string (either case), or `None`.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; text.len() / 2];
    hex_decode_into(text, &mut bytes).then_some(bytes)
}

/// Exactly `N` bytes written as `2 * N` hex digits (either case), or
/// `None`. Decoded on the stack: a key in a request costs no allocation.
pub fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    hex_decode_into(text, &mut bytes).then_some(bytes)
}

/// Fills `out` from `2 * out.len()` hex digits; false if `text` is not that.
fn hex_decode_into(text: &str, out: &mut [u8]) -> bool {
    if text.len() != 2 * out.len() {
        return false;
    }
    for (pair, byte) in text.as_bytes().chunks_exact(2).zip(out) {
        match hex_pair(pair) {
            Some(value) => *byte = value,
            None => return false,
        }
    }
    true
}

/// The byte written by two hex digits (either case). Strict: unlike
/// `u8::from_str_radix`, it refuses a sign such as `+f`.
fn hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    match pair {
        [high, low] => Some((digit(*high)? * 16 + digit(*low)?) as u8),
        _ => None,
    }
}

/// A file's display name: one path component, percent-encoded on the wire.
/// Not empty, at most [`MAX_NAME_LEN`] bytes, no `/`, `\` or control
/// characters, and not `.` or `..`, so a name can never climb out of a
/// download directory.
///
/// The text is shared (`Arc<str>`): a name is copied into every listing
/// that shows it, and a shared copy costs a counter, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(Arc<str>);

impl FileName {
    /// Checks a decoded name.
    pub fn new(name: &str) -> Result<FileName, ProtocolError> {
        let reason = if name.is_empty() {
            Some("a file name cannot be empty".to_string())
        } else if name.len() > MAX_NAME_LEN {
            Some(format!("longer than {MAX_NAME_LEN} bytes"))
        } else if name.contains(['/', '\\']) {
            Some("a file name cannot contain '/' or '\\'".to_string())
        } else if name.chars().any(char::is_control) {
            Some("a file name cannot contain control characters".to_string())
        } else if name == "." || name == ".." {
            Some("'.' and '..' are not file names".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ProtocolError::bad_field("name", name, reason)),
            None => Ok(FileName(Arc::from(name))),
        }
    }

    /// Parses the percent-encoded wire form.
    pub fn parse(encoded: &str) -> Result<FileName, ProtocolError> {
        FileName::new(&percent_decode("name", encoded)?)
    }

    /// The decoded name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        PercentEncoded::new(&self.0, &[]).fmt(f)
    }
}

/// Where a file lives on the peer that offers it (informational: no peer
/// ever opens a path that came from the network). Percent-encoded on the
/// wire; not empty, at most [`MAX_PATH_LEN`] bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedPath(String);

impl SharedPath {
    /// Checks a decoded path.
    pub fn new(path: &str) -> Result<SharedPath, ProtocolError> {
        if path.is_empty() {
            Err(ProtocolError::bad_field(
                "path",
                path,
                "a path cannot be empty",
            ))
        } else if path.len() > MAX_PATH_LEN {
            Err(ProtocolError::bad_field(
                "path",
                path,
                format!("longer than {MAX_PATH_LEN} bytes"),
            ))
        } else if path.chars().any(char::is_control) {
            Err(ProtocolError::bad_field(
                "path",
                path,
                "a path cannot contain control characters",
            ))
        } else {
            Ok(SharedPath(path.to_string()))
        }
    }

    /// Parses the percent-encoded wire form.
    pub fn parse(encoded: &str) -> Result<SharedPath, ProtocolError> {
        SharedPath::new(&percent_decode("path", encoded)?)
    }

    /// The decoded path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SharedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        PercentEncoded::new(&self.0, &[]).fmt(f)
    }
}

/// A user name: 1 to [`MAX_USER_LEN`] ASCII letters, digits, `-` or `_`,
/// starting with a letter or digit (so it can never be the `-` that
/// listings write for "no name"). Shared like [`FileName`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(Arc<str>);

impl UserName {
    /// Checks a user name.
    pub fn parse(text: &str) -> Result<UserName, ProtocolError> {
        if text.is_empty() || text.len() > MAX_USER_LEN {
            return Err(ProtocolError::bad_field(
                "user",
                text,
                format!("a user name has 1 to {MAX_USER_LEN} characters"),
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ProtocolError::bad_field(
                "user",
                text,
                "a user name has only letters, digits, '-' and '_'",
            ));
        }
        if !text.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(ProtocolError::bad_field(
                "user",
                text,
                "a user name starts with a letter or a digit",
            ));
        }
        Ok(UserName(Arc::from(text)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a file holds, as far as the clients that filter by it care.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum MediaKind {
    Audio,
    Video,
    Other,
}

impl MediaKind {
    /// Parses `audio`, `video` or `other` (any case).
    pub fn parse(text: &str) -> Result<MediaKind, ProtocolError> {
        match text.to_ascii_lowercase().as_str() {
            "audio" => Ok(MediaKind::Audio),
            "video" => Ok(MediaKind::Video),
            "other" => Ok(MediaKind::Other),
            _ => Err(ProtocolError::bad_field(
                "kind",
                text,
                "expected audio, video or other",
            )),
        }
    }

    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Other => "other",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer's public address `ip:port` (IPv6 as `[ip]:port`): where its
/// mini-server listens. The tracker builds it from the socket's IP and the
/// port the peer announced.
pub type PeerId = std::net::SocketAddr;

/// Parses a peer id; port 0 is refused, as in `HELO`: no one can connect
/// to it.
pub fn parse_peer_id(text: &str) -> Result<PeerId, ProtocolError> {
    let peer: PeerId = text
        .parse()
        .map_err(|_| ProtocolError::bad_field("peer", text, "expected ip:port"))?;
    if peer.port() == 0 {
        return Err(ProtocolError::bad_field(
            "peer",
            text,
            "port 0 is not a port others can connect to",
        ));
    }
    Ok(peer)
}

/// A BufferMap as it travels: the bitmap's bytes, written as lower-case hex,
/// most significant bit first (bit i = piece i), or `-` when the file has no
/// pieces at all. Whether its length fits a file is checked by the receiver,
/// which knows the piece count (see [`crate::pieces::Bitmap`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BitmapField(pub Vec<u8>);

impl BitmapField {
    /// Parses the hex form (or `-`), refusing anything longer than the
    /// bitmap of the largest file allowed ([`MAX_PIECES`] pieces).
    pub fn parse(text: &str) -> Result<BitmapField, ProtocolError> {
        if text == "-" {
            return Ok(BitmapField(Vec::new()));
        }
        let max_hex = (MAX_PIECES / 4) as usize;
        if text.len() > max_hex {
            return Err(ProtocolError::bad_field(
                "bitmap",
                text,
                "longer than any file's bitmap",
            ));
        }
        hex_decode(text).map(BitmapField).ok_or_else(|| {
            ProtocolError::bad_field(
                "bitmap",
                text,
                "expected an even number of hex digits, or '-'",
            )
        })
    }
}

impl fmt::Display for BitmapField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("-")
        } else {
            Hex(&self.0).fmt(f)
        }
    }
}

/// Parses a piece size: a power of two from [`MIN_PIECE_SIZE`] to
/// [`MAX_PIECE_SIZE`].
pub fn parse_piece_size(text: &str) -> Result<u32, ProtocolError> {
    let size: u32 = parse_number("piece-size", text)?;
    check_piece_size(size)
        .map_err(|reason| ProtocolError::bad_field("piece-size", text, reason))?;
    Ok(size)
}

/// Why `size` is not an allowed piece size, if it is not.
pub fn check_piece_size(size: u32) -> Result<(), String> {
    if size.is_power_of_two() && (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&size) {
        Ok(())
    } else {
        Err("a piece size is a power of two from 16384 (16 KiB) to 16777216 (16 MiB)".to_string())
    }
}

/// Number of pieces of a file of `size` bytes cut in `piece_size` pieces.
pub fn piece_count(size: u64, piece_size: u32) -> u64 {
    size.div_ceil(u64::from(piece_size))
}

/// The next two fields, `<size> <piece-size>`, of a file's description
/// (`ADDF`, a ring's `NAME` record): an allowed piece size, and at most
/// [`MAX_PIECES`] pieces of it.
pub(crate) fn next_size_and_piece_size(f: &mut Fields<'_>) -> Result<(u64, u32), ProtocolError> {
    let size_text = f.next("a size")?;
    let size: u64 = parse_number("size", size_text)?;
    let piece_size = parse_piece_size(f.next("a piece size")?)?;
    if piece_count(size, piece_size) > MAX_PIECES {
        return Err(ProtocolError::bad_field(
            "size",
            size_text,
            format!("more than {MAX_PIECES} pieces at this piece size; use larger pieces"),
        ));
    }
    Ok((size, piece_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_spaces_percent_and_unicode_round_trip() {
        for name in [
            "my song.mp3",
            "100% pure.ogg",
            "été à Paris.mkv",
            "a=b",
            "tab\u{a0}x",
        ] {
            let parsed = FileName::new(name).unwrap();
            let wire = parsed.to_string();
            assert!(!wire.contains(' '), "{wire}");
            assert!(wire.is_ascii(), "{wire}");
            assert_eq!(FileName::parse(&wire).unwrap(), parsed);
        }
        assert_eq!(
            FileName::new("my song.mp3").unwrap().to_string(),
            "my%20song.mp3"
        );
        assert_eq!(FileName::new("100% x").unwrap().to_string(), "100%25%20x");
    }

    #[test]
    fn names_that_could_escape_a_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "..\\x", "line\nbreak"] {
            assert!(FileName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FileName::parse("..%2Fetc").is_err());
    }

    #[test]
    fn percent_encoding_escapes_exactly_what_it_must() {
        let encoded = |text, extra| PercentEncoded::new(text, extra).to_string();
        assert_eq!(encoded("plain.txt", &[]), "plain.txt");
        assert_eq!(encoded("", &[]), "");
        assert_eq!(encoded("é x%", &[]), "%C3%A9%20x%25");
        assert_eq!(encoded("a=b=", b"="), "a%3Db%3D");
        assert_eq!(encoded("\u{7f}\t", &[]), "%7F%09");
    }

    #[test]
    fn hex_is_lower_case_and_whole_at_any_length() {
        assert_eq!(Hex(&[]).to_string(), "");
        assert_eq!(Hex(&[0x00, 0xff, 0x1a]).to_string(), "00ff1a");
        // More bytes than one pass of the stack buffer (32) encodes.
        let bytes: Vec<u8> = (0..=70).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(Hex(&bytes).to_string(), expected);
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert!(percent_decode("name", "%").is_err());
        assert!(percent_decode("name", "%4").is_err());
        assert!(percent_decode("name", "%zz").is_err());
        assert!(percent_decode("name", "%FF").is_err(), "not UTF-8");
        assert!(
            percent_decode("name", "%+9").is_err(),
            "a sign is not a hex digit"
        );
        assert_eq!(percent_decode("name", "%41%62").unwrap(), "Ab");
    }

    #[test]
    fn keys_are_64_hex_digits() {
        let text = "00ff".repeat(16);
        let key = FileKey::parse(&text).unwrap();
        assert_eq!(key.to_string(), text);
        assert_eq!(FileKey::parse(&text.to_uppercase()).unwrap(), key);
        assert!(FileKey::parse(&text[..62]).is_err());
        assert!(FileKey::parse(&"zz".repeat(32)).is_err());
        assert!(FileKey::parse(&"+f".repeat(32)).is_err());
        assert!(FileKey::parse(&format!("{text}00")).is_err(), "too long");
        assert!(FileKey::parse(&text[..63]).is_err(), "odd length");
        assert!(
            FileKey::parse(&"é".repeat(32)).is_err(),
            "64 bytes, not digits"
        );
        assert!(BitmapField::parse("+f").is_err());
    }

    #[test]
    fn case_is_changed_only_where_it_differs() {
        assert!(matches!(
            in_ascii_case("RQFS", Case::Upper),
            Cow::Borrowed("RQFS")
        ));
        assert!(matches!(
            in_ascii_case("key", Case::Lower),
            Cow::Borrowed("key")
        ));
        assert_eq!(in_ascii_case("rQfs", Case::Upper), "RQFS");
        assert_eq!(in_ascii_case("KeY", Case::Lower), "key");
        assert_eq!(
            in_ascii_case("é-É", Case::Upper),
            "é-É",
            "ASCII letters only"
        );
    }

    #[test]
    fn hex_decodes_to_a_vector_or_an_exact_array() {
        assert_eq!(hex_decode("00fF1a"), Some(vec![0x00, 0xff, 0x1a]));
        assert_eq!(hex_decode(""), Some(vec![]));
        assert_eq!(hex_decode("abc"), None, "odd length");
        assert_eq!(hex_decode("0g"), None);
        assert_eq!(hex_array::<2>("ABcd"), Some([0xab, 0xcd]));
        assert_eq!(hex_array::<2>("abcdef"), None, "too long");
        assert_eq!(hex_array::<2>("abc"), None, "too short");
        assert_eq!(hex_array::<2>("ab-d"), None);
    }

    #[test]
    fn user_names_are_letters_digits_dash_underscore() {
        assert!(UserName::parse("alice_B-2").is_ok());
        assert!(UserName::parse("al ice").is_err());
        assert!(
            UserName::parse("-").is_err(),
            "'-' means no name in listings"
        );
        assert!(UserName::parse("_x").is_err());
        assert!(UserName::parse("é").is_err());
        assert!(UserName::parse(&"a".repeat(33)).is_err());
    }

    #[test]
    fn piece_sizes_are_powers_of_two_in_range() {
        assert_eq!(parse_piece_size("262144").unwrap(), 262_144);
        for bad in ["8192", "33554432", "300000", "-1", "abc", ""] {
            assert!(parse_piece_size(bad).is_err(), "{bad}");
        }
        assert_eq!(piece_count(0, 16384), 0);
        assert_eq!(piece_count(16385, 16384), 2);
    }

    #[test]
    fn empty_bitmap_is_a_dash() {
        assert_eq!(BitmapField(vec![]).to_string(), "-");
        assert_eq!(BitmapField::parse("-").unwrap(), BitmapField(vec![]));
        assert_eq!(
            BitmapField::parse("a0ff").unwrap(),
            BitmapField(vec![0xa0, 0xff])
        );
        assert!(BitmapField::parse("abc").is_err());
    }
}
