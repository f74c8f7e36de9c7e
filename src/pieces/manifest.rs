//! The manifest: a file's size, piece size, the SHA-256 of every piece and of
//! the whole file, in one canonical text. Its SHA-256 is the file's key, so a
//! manifest fetched from any peer is checked against the key, and then every
//! piece is checked against the manifest as it arrives.
//!
//! The text (every line ends in `\n`, no trailing spaces, hex lower-case):
//!
//! ```text
//! swarmline-manifest 1
//! size <bytes>
//! piece-size <bytes>
//! sha256 <hash of the whole file>
//! pieces <count>
//! piece <hash of piece 0>
//! piece <hash of piece 1>
//! ...
//! ```
//!
//! Only this exact form parses, so one manifest has one encoding and one key.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::protocol::fields::{check_piece_size, hex_array, piece_count, Hex, MAX_PIECES};
use crate::protocol::FileKey;

/// First line of every manifest: the format and its version.
const MAGIC: &str = "swarmline-manifest 1";

/// The most bytes of a file being shared that wait for a hashing thread.
const HASH_BUFFER_BYTES: usize = 32 << 20;

/// Bytes of one `piece <hash>` line.
const PIECE_LINE_LEN: usize = "piece ".len() + 64 + 1;

/// A file's manifest. Made only by hashing a file or by [`Manifest::parse`],
/// which checks it (stored, it is kept as its text and parsed again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    size: u64,
    piece_size: u32,
    file_hash: [u8; 32],
    piece_hashes: Vec<[u8; 32]>,
}

/// Why bytes are not a manifest, or not the manifest of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest line {line}: expected {expected}")]
    Malformed { line: usize, expected: String },
    #[error("manifest does not hash to the key {key}")]
    KeyMismatch { key: FileKey },
    #[error("manifest is {len} bytes, more than the {max} a manifest can have")]
    TooLong { len: usize, max: usize },
}

impl Manifest {
    /// Hashes everything `reader` yields, cut into `piece_size` pieces.
    /// `progress` is called with the bytes hashed so far after each piece.
    ///
    /// Three jobs share the work so that it runs on every core: the calling
    /// thread reads; one thread keeps the whole-file hash (it must see the
    /// bytes in order); the others (one per core) hash the pieces. At most
    /// [`HASH_BUFFER_BYTES`] (or a few pieces) wait in memory.
    pub fn build(
        mut reader: impl Read,
        piece_size: u32,
        mut progress: impl FnMut(u64),
    ) -> io::Result<Manifest> {
        check_piece_size(piece_size).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let helpers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 16);
        let in_flight = (HASH_BUFFER_BYTES / piece_size as usize).max(2 * helpers);
        type Piece = (usize, Arc<Vec<u8>>);
        let (to_whole, for_whole) = crossbeam_channel::bounded::<Arc<Vec<u8>>>(in_flight);
        let (to_hash, pieces) = crossbeam_channel::bounded::<Piece>(in_flight);
        let (to_collect, hashed) = crossbeam_channel::unbounded::<(usize, [u8; 32])>();
        std::thread::scope(|scope| {
            let whole = std::thread::Builder::new()
                .name("hash-file".into())
                .spawn_scoped(scope, move || {
                    let mut whole = Sha256::new();
                    for data in for_whole {
                        whole.update(&*data);
                    }
                    <[u8; 32]>::from(whole.finalize())
                })?;
            for i in 0..helpers {
                let (pieces, to_collect) = (pieces.clone(), to_collect.clone());
                std::thread::Builder::new()
                    .name(format!("hash-pieces-{i}"))
                    .spawn_scoped(scope, move || {
                        for (index, data) in pieces {
                            if to_collect
                                .send((index, Sha256::digest(&*data).into()))
                                .is_err()
                            {
                                return;
                            }
                        }
                    })?;
            }
            drop((pieces, to_collect));
            let mut size = 0u64;
            let mut count = 0usize;
            let result = loop {
                let mut buffer = Vec::with_capacity(piece_size as usize);
                // read_to_end into reserved space: no zero-filling first.
                let filled = match (&mut reader)
                    .take(u64::from(piece_size))
                    .read_to_end(&mut buffer)
                {
                    Ok(filled) => filled,
                    Err(e) => break Err(e),
                };
                if filled == 0 {
                    break Ok(());
                }
                size += filled as u64;
                count += 1;
                if count as u64 > MAX_PIECES {
                    break Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "more than {MAX_PIECES} pieces of {piece_size} bytes: use larger pieces"
                        ),
                    ));
                }
                let data = Arc::new(buffer);
                let sent = to_whole.send(Arc::clone(&data)).is_ok()
                    && to_hash.send((count - 1, data)).is_ok();
                if !sent {
                    break Err(io::Error::other("a hashing thread stopped"));
                }
                progress(size);
                if filled < piece_size as usize {
                    break Ok(());
                }
            };
            // Closing the queues ends the threads once they are drained.
            drop((to_whole, to_hash));
            let file_hash = whole
                .join()
                .map_err(|_| io::Error::other("the hashing thread panicked"))?;
            let mut piece_hashes = vec![[0u8; 32]; count];
            let mut received = 0;
            for (index, hash) in hashed.iter() {
                piece_hashes[index] = hash;
                received += 1;
            }
            result?;
            if received != count {
                return Err(io::Error::other("a hashing thread stopped"));
            }
            Ok(Manifest {
                size,
                piece_size,
                file_hash,
                piece_hashes,
            })
        })
    }

    /// Hashes the file at `path`.
    pub fn from_path(
        path: &Path,
        piece_size: u32,
        progress: impl FnMut(u64),
    ) -> io::Result<Manifest> {
        Manifest::build(File::open(path)?, piece_size, progress)
    }

    /// The file's key: the SHA-256 of the canonical text.
    pub fn key(&self) -> FileKey {
        FileKey(Sha256::digest(self.to_string().as_bytes()).into())
    }

    /// Parses manifest bytes and checks they hash to `key`: what a peer does
    /// with a manifest fetched from another peer.
    pub fn parse_for_key(bytes: &[u8], key: &FileKey) -> Result<Manifest, ManifestError> {
        if FileKey(Sha256::digest(bytes).into()) != *key {
            return Err(ManifestError::KeyMismatch { key: *key });
        }
        Manifest::parse(bytes)
    }

    /// Parses the canonical text.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let max = Manifest::max_encoded_len();
        if bytes.len() > max {
            return Err(ManifestError::TooLong {
                len: bytes.len(),
                max,
            });
        }
        let malformed = |line: usize, expected: &str| ManifestError::Malformed {
            line,
            expected: expected.to_string(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| malformed(1, "UTF-8 text"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| malformed(1, "text ending in a newline"))?;
        let mut lines = body.split('\n').enumerate().map(|(i, line)| (i + 1, line));
        let mut field = |name: &str| {
            let (n, line) = lines
                .next()
                .ok_or_else(|| malformed(0, &format!("a line `{name} ...`")))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|value| (n, value))
                .ok_or_else(|| malformed(n, &format!("`{name} <value>`")))
        };
        let number = |(n, value): (usize, &str), what: &str| -> Result<u64, ManifestError> {
            canonical_number(value).ok_or_else(|| malformed(n, what))
        };
        let hash = |(n, value): (usize, &str)| -> Result<[u8; 32], ManifestError> {
            canonical_hash(value).ok_or_else(|| malformed(n, "64 lower-case hex digits"))
        };

        let (n, magic) = field("swarmline-manifest")?;
        if format!("swarmline-manifest {magic}") != MAGIC {
            return Err(malformed(n, MAGIC));
        }
        let size = number(field("size")?, "a size in bytes")?;
        let piece_size_field = field("piece-size")?;
        let piece_size = u32::try_from(number(piece_size_field, "a piece size")?)
            .ok()
            .filter(|&p| check_piece_size(p).is_ok())
            .ok_or_else(|| {
                malformed(piece_size_field.0, "a power of two from 16384 to 16777216")
            })?;
        let file_hash = hash(field("sha256")?)?;
        let pieces_field = field("pieces")?;
        let pieces = number(pieces_field, "a piece count")?;
        // Checked before anything is allocated for the piece hashes: the
        // count must fit the protocol's limit and the bytes actually given.
        let room = (bytes.len() / PIECE_LINE_LEN) as u64;
        if pieces > MAX_PIECES.min(room) {
            return Err(malformed(
                pieces_field.0,
                &format!("at most {} pieces", MAX_PIECES.min(room)),
            ));
        }
        if pieces != piece_count(size, piece_size) {
            return Err(malformed(
                pieces_field.0,
                &format!(
                    "pieces {} for that size and piece size",
                    piece_count(size, piece_size)
                ),
            ));
        }
        let mut piece_hashes = Vec::with_capacity(pieces as usize);
        for _ in 0..pieces {
            piece_hashes.push(hash(field("piece")?)?);
        }
        if let Some((n, _)) = lines.next() {
            return Err(malformed(n, "the end of the manifest"));
        }
        Ok(Manifest {
            size,
            piece_size,
            file_hash,
            piece_hashes,
        })
    }

    /// The longest a valid manifest can be, in bytes: a bound for readers.
    pub fn max_encoded_len() -> usize {
        256 + PIECE_LINE_LEN * MAX_PIECES as usize
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Piece size in bytes (the last piece may be shorter).
    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> usize {
        self.piece_hashes.len()
    }

    /// SHA-256 of the whole file.
    pub fn file_hash(&self) -> [u8; 32] {
        self.file_hash
    }

    /// Byte offset of piece `index` in the file.
    pub fn piece_offset(&self, index: usize) -> u64 {
        index as u64 * u64::from(self.piece_size)
    }

    /// Length of piece `index` (`None` past the end).
    pub fn piece_len(&self, index: usize) -> Option<u32> {
        if index >= self.piece_count() {
            return None;
        }
        let rest = self.size - self.piece_offset(index);
        Some(rest.min(u64::from(self.piece_size)) as u32)
    }

    /// True when `data` is exactly piece `index`.
    pub fn verify_piece(&self, index: usize, data: &[u8]) -> bool {
        self.piece_len(index) == Some(data.len() as u32)
            && <[u8; 32]>::from(Sha256::digest(data)) == self.piece_hashes[index]
    }
}

/// The canonical text; its bytes hash to [`Manifest::key`].
impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{MAGIC}")?;
        writeln!(f, "size {}", self.size)?;
        writeln!(f, "piece-size {}", self.piece_size)?;
        writeln!(f, "sha256 {}", Hex(&self.file_hash))?;
        writeln!(f, "pieces {}", self.piece_hashes.len())?;
        for hash in &self.piece_hashes {
            writeln!(f, "piece {}", Hex(hash))?;
        }
        Ok(())
    }
}

/// A decimal number in canonical form (no sign, no leading zero).
fn canonical_number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// A SHA-256 in canonical form (64 lower-case hex digits).
fn canonical_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex_array(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: u32 = 16 * 1024;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn pieces_and_whole_file_are_hashed() {
        for len in [
            0,
            1,
            PIECE as usize,
            PIECE as usize + 1,
            3 * PIECE as usize - 5,
        ] {
            let bytes = data(len);
            let manifest = Manifest::build(&bytes[..], PIECE, |_| {}).unwrap();
            assert_eq!(manifest.size(), len as u64);
            assert_eq!(
                manifest.piece_count() as u64,
                piece_count(len as u64, PIECE)
            );
            assert_eq!(
                manifest.file_hash(),
                <[u8; 32]>::from(Sha256::digest(&bytes))
            );
            for (index, piece) in bytes.chunks(PIECE as usize).enumerate() {
                assert!(manifest.verify_piece(index, piece));
                let mut bad = piece.to_vec();
                bad[0] ^= 1;
                assert!(!manifest.verify_piece(index, &bad));
                assert!(!manifest.verify_piece(index, &piece[1..]));
            }
        }
    }

    #[test]
    fn text_round_trips_and_checks_against_the_key() {
        let manifest = Manifest::build(&data(40_000)[..], PIECE, |_| {}).unwrap();
        let text = manifest.to_string();
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), manifest);
        let key = manifest.key();
        assert_eq!(
            Manifest::parse_for_key(text.as_bytes(), &key).unwrap(),
            manifest
        );
        let other_key = FileKey([7; 32]);
        assert_eq!(
            Manifest::parse_for_key(text.as_bytes(), &other_key),
            Err(ManifestError::KeyMismatch { key: other_key })
        );
    }

    #[test]
    fn only_the_canonical_text_parses() {
        let text = Manifest::build(&data(20_000)[..], PIECE, |_| {})
            .unwrap()
            .to_string();
        let variants = [
            text.replace("size 20000", "size 020000"),
            text.replace("piece-size 16384", "piece-size 1000"),
            text.replace("pieces 2", "pieces 3"),
            text.to_uppercase(),
            text.trim_end().to_string(),
            format!("{text}piece {}\n", "0".repeat(64)),
            text.replace('\n', "\r\n"),
            text.replace("swarmline-manifest 1", "swarmline-manifest 2"),
            {
                // A sign where a hex digit belongs.
                let at = text.find("\npiece ").unwrap() + "\npiece ".len();
                format!("{}+{}", &text[..at], &text[at + 1..])
            },
        ];
        for variant in variants {
            assert!(Manifest::parse(variant.as_bytes()).is_err(), "{variant}");
        }
    }

    #[test]
    fn a_huge_piece_count_is_refused_before_allocating() {
        let hash = "0".repeat(64);
        let text = format!(
            "swarmline-manifest 1\nsize 18446744073709551615\npiece-size 16384\nsha256 {hash}\npieces 1125899906842624\npiece {hash}\n"
        );
        assert!(matches!(
            Manifest::parse(text.as_bytes()),
            Err(ManifestError::Malformed { line: 5, .. })
        ));
    }

    #[test]
    fn progress_is_reported_per_piece() {
        let mut seen = Vec::new();
        Manifest::build(&data(40_000)[..], PIECE, |done| seen.push(done)).unwrap();
        assert_eq!(seen, vec![16_384, 32_768, 40_000]);
    }
}
