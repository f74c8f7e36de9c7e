//! Serving a file to the page's player while it may still be downloading:
//! HTTP `Range` requests, and a reader that hands out a file's bytes piece
//! by piece, waiting (bounded) for pieces that are not here yet and asking
//! the download to fetch them first. It never returns bytes that have not
//! passed their piece's hash check.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::peer::download::Download;
use crate::peer::library::SharedFile;
use crate::pieces::Changed;

/// How long a read waits for a missing piece before it gives up (the
/// browser then asks again).
pub const PIECE_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting read looks whether its piece has come.
const POLL: Duration = Duration::from_millis(20);

/// A byte range of a file, `start..end` (end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable range (none, another unit, or several ranges): the whole
    /// file, `200 OK`.
    Whole,
    /// One satisfiable range: `206 Partial Content`.
    Part(ByteRange),
    /// A range outside the file: `416 Range Not Satisfiable`.
    Unsatisfiable,
}

/// Parses a `Range` header value (RFC 9110 section 14.2) for a file of
/// `size` bytes. Only single byte ranges are served; anything else gets the
/// whole file, as the standard allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| {
        let (unit, spec) = h.trim().split_once('=')?;
        unit.eq_ignore_ascii_case("bytes").then_some(spec)
    }) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.is_empty(), position(first), position(last)) {
        // bytes=-0: the last no bytes, which cannot be served.
        (true, _, Some(0)) => return RangeAsk::Unsatisfiable,
        // The last N bytes of an empty file: all of it, which is nothing
        // (RFC 9110 section 14.1.1: the one range an empty file meets).
        (true, _, Some(_)) if size == 0 => return RangeAsk::Whole,
        // bytes=-N: the last N bytes.
        (true, _, Some(suffix)) => ByteRange {
            start: size.saturating_sub(suffix),
            end: size,
        },
        // bytes=A- and bytes=A-B (B past the end means the end).
        (false, Some(start), None) if last.is_empty() => ByteRange { start, end: size },
        (false, Some(start), Some(last)) if last >= start => ByteRange {
            start,
            end: last.saturating_add(1).min(size),
        },
        _ => return RangeAsk::Whole,
    };
    if range.start >= size {
        RangeAsk::Unsatisfiable
    } else {
        RangeAsk::Part(range)
    }
}

/// A byte position of a range: digits only (no sign, no blanks), and
/// one too large for a `u64` is past the end of any file.
fn position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

/// Why piece `index` of `file`, not here, will not come (`NotFound`):
/// nothing downloads the file (its download failed or was cancelled), or
/// the file changed on disk since it was shared.
pub fn not_coming(file: &SharedFile, index: usize) -> io::Error {
    let name = file.name.as_str();
    let why = if file.has_changed() {
        format!(
            "{name} changed on disk since it was shared, and is no longer served: share it again to play it"
        )
    } else {
        let here = file.bitmap();
        format!(
            "{name} is not all here ({} of {} pieces; piece {index} is missing), and nothing \
             is downloading it: download it to play it",
            here.count(),
            here.len()
        )
    };
    io::Error::new(io::ErrorKind::NotFound, why)
}

/// Where the bytes of `file` here from `start` on end: at the first
/// piece missing, or at the end of the file.
pub fn here_until(file: &SharedFile, start: u64) -> u64 {
    let size = file.manifest.size();
    let piece_size = u64::from(file.manifest.piece_size());
    let here = file.bitmap();
    let first = (start / piece_size) as usize;
    let missing = (first..here.len()).find(|&index| !here.has(index));
    missing.map_or(size, |index| (index as u64 * piece_size).min(size))
}

/// Reads `range` of a shared file, piece by piece, straight into the
/// caller's buffer: it holds no piece of its own, so a player's stream
/// costs no more memory with 16 MiB pieces than with 16 KiB ones. A piece
/// that is not here yet is waited for while a download runs, at most
/// [`PIECE_WAIT`], and the download is told to fetch it and the ones
/// after it first; with no download running, a missing piece ends the
/// stream at once (nothing would bring it).
pub struct PieceStream {
    file: Arc<SharedFile>,
    download: Option<Arc<Download>>,
    range: ByteRange,
    /// Set when the page's server stops: a waiting read ends at once.
    stopping: Arc<AtomicBool>,
    /// How long the next read waits for its piece at most: until this
    /// deadline when set (the first read, which the answer waits for),
    /// else [`PIECE_WAIT`].
    next_read_by: Option<Instant>,
}

impl PieceStream {
    pub fn new(
        file: Arc<SharedFile>,
        download: Option<Arc<Download>>,
        range: ByteRange,
        stopping: Arc<AtomicBool>,
    ) -> PieceStream {
        PieceStream {
            file,
            download,
            range,
            stopping,
            next_read_by: None,
        }
    }

    /// The first read waits for its piece until `deadline` at most (later
    /// ones [`PIECE_WAIT`] each): for an answer whose whole start must
    /// come within one wait.
    pub fn first_read_by(mut self, deadline: Instant) -> PieceStream {
        self.next_read_by = Some(deadline);
        self
    }

    /// Whether a download of the file is still under way (it may bring
    /// the pieces that are missing).
    fn downloading(&self) -> bool {
        self.download.as_ref().is_some_and(|d| !d.is_finished())
    }

    fn not_coming(&self, index: usize) -> io::Error {
        not_coming(&self.file, index)
    }

    /// Reads `out.len()` bytes of piece `index` from `within` bytes into
    /// it, waiting for the piece if a download may bring it.
    fn read_waiting(&mut self, index: usize, within: u32, out: &mut [u8]) -> io::Result<()> {
        let deadline = self
            .next_read_by
            .take()
            .unwrap_or_else(|| Instant::now() + PIECE_WAIT);
        let mut focused = false;
        let mut last_error = None;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Err(io::Error::other("the page's server is stopping"));
            }
            let downloading = self.downloading();
            if self.file.has_piece(index) {
                match self.file.read_piece_part(index, within, out) {
                    Ok(true) => return Ok(()),
                    // Withdrawn since: the file changed on disk.
                    Ok(false) => {}
                    // Found changed by this read (and withdrawn).
                    Err(e) if Changed::is(&e) => return Err(self.not_coming(index)),
                    // While a download runs, most likely its rename at
                    // the end: tried again in a moment.
                    Err(e) if downloading => last_error = Some(e),
                    Err(e) => return Err(e),
                }
            } else if !downloading {
                return Err(self.not_coming(index));
            } else if !focused {
                if let Some(download) = &self.download {
                    download.focus_on(index as u32);
                }
                focused = true;
            }
            if Instant::now() >= deadline {
                let last = last_error.map_or(String::new(), |e| format!(" (last: {e})"));
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "piece {index} of {} did not arrive within {} s{last}",
                        self.file.name.as_str(),
                        PIECE_WAIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Read for PieceStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.range.is_empty() || out.is_empty() {
            return Ok(0);
        }
        let manifest = &self.file.manifest;
        let piece_size = u64::from(manifest.piece_size());
        let index = (self.range.start / piece_size) as usize;
        let within = self.range.start - index as u64 * piece_size;
        let piece_len = manifest
            .piece_len(index)
            .ok_or_else(|| io::Error::other("a range past the end of the file"))?;
        // To the end of the piece, of the range, or of `out`.
        let n = (u64::from(piece_len) - within)
            .min(self.range.len())
            .min(out.len() as u64) as usize;
        if n == 0 {
            return Err(io::Error::other(
                "the piece is shorter than the manifest says",
            ));
        }
        self.read_waiting(index, within as u32, &mut out[..n])?;
        self.range.start += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pieces::{Manifest, PieceFile};
    use crate::protocol::{FileName, MediaKind};

    #[test]
    fn a_file_changed_on_disk_is_a_piece_that_will_not_come() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let manifest = Manifest::build(&data[..], 16384, |_| {}).unwrap();
        let name = FileName::new("clip.mp4").unwrap();
        let opened = PieceFile::open(&path).unwrap();
        let file = Arc::new(
            SharedFile::complete(name, MediaKind::Video, manifest, &path, opened).unwrap(),
        );
        let stream = |start, end| {
            let range = ByteRange { start, end };
            PieceStream::new(Arc::clone(&file), None, range, Arc::default())
        };
        let mut out = [0; 10];
        stream(0, 10).read_exact(&mut out).unwrap();
        assert_eq!(out, data[..10]);
        // Cut short: the read finds it changed. The page says so (409),
        // as for any piece nothing will bring.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(20_000)
            .unwrap();
        let error = stream(0, 10).read_exact(&mut out).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound, "{error}");
        assert!(error.to_string().contains("changed on disk"), "{error}");
    }

    fn part(start: u64, end: u64) -> RangeAsk {
        RangeAsk::Part(ByteRange { start, end })
    }

    #[test]
    fn ranges_as_browsers_send_them() {
        assert_eq!(parse_range(None, 1000), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 1000), part(0, 1000));
        assert_eq!(parse_range(Some("bytes=100-199"), 1000), part(100, 200));
        assert_eq!(parse_range(Some("bytes=900-5000"), 1000), part(900, 1000));
        assert_eq!(parse_range(Some("bytes=-100"), 1000), part(900, 1000));
        assert_eq!(parse_range(Some("bytes=-5000"), 1000), part(0, 1000));
        assert_eq!(
            parse_range(Some("bytes=1000-"), 1000),
            RangeAsk::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAsk::Unsatisfiable);
        // An empty file's last bytes: all of it, nothing, 200.
        assert_eq!(parse_range(Some("bytes=-5"), 0), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=-0"), 0), RangeAsk::Unsatisfiable);
        // The unit in any case; numbers too large for 64 bits.
        assert_eq!(parse_range(Some("Bytes=0-9"), 1000), part(0, 10));
        let huge = "99999999999999999999";
        assert_eq!(
            parse_range(Some(&format!("bytes=0-{huge}")), 1000),
            part(0, 1000)
        );
        assert_eq!(
            parse_range(Some(&format!("bytes=-{huge}")), 1000),
            part(0, 1000)
        );
        assert_eq!(
            parse_range(Some(&format!("bytes={huge}-")), 1000),
            RangeAsk::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=-0"), 1000), RangeAsk::Unsatisfiable);
    }

    #[test]
    fn ranges_not_served_get_the_whole_file() {
        for odd in [
            "items=0-5",
            "bytes=0-5,10-20",
            "bytes=5-2",
            "bytes=x-",
            "bytes=+5-9",
            "bytes=5-+9",
            "bytes",
        ] {
            assert_eq!(parse_range(Some(odd), 1000), RangeAsk::Whole, "{odd}");
        }
    }
}
