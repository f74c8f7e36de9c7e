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
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(suffix)) if suffix > 0 => ByteRange {
            start: size.saturating_sub(suffix),
            end: size,
        },
        // bytes=A- and bytes=A-B (B past the end means the end).
        (false, Some(start), None) if last.trim().is_empty() => ByteRange { start, end: size },
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

/// Reads `range` of a shared file, piece by piece. A piece that is not
/// here yet is waited for, at most [`PIECE_WAIT`], and the download (if
/// any) is told to fetch it and the ones after it first.
pub struct PieceStream {
    file: Arc<SharedFile>,
    download: Option<Arc<Download>>,
    range: ByteRange,
    /// The piece in `buf`, if any.
    loaded: Option<usize>,
    buf: Vec<u8>,
    /// Set when the page's server stops: a waiting read ends at once.
    stopping: Arc<AtomicBool>,
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
            loaded: None,
            buf: Vec::new(),
            stopping,
        }
    }

    /// Loads piece `index` into `buf`, waiting for it if need be.
    fn load(&mut self, index: usize) -> io::Result<()> {
        let deadline = Instant::now() + PIECE_WAIT;
        let mut focused = false;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return Err(io::Error::other("the page's server is stopping"));
            }
            if self.file.has_piece(index) {
                // `Ok(false)` or an error: the file is being renamed at the
                // end of its download; try again in a moment.
                if let Ok(true) = self.file.read_piece(index, &mut self.buf) {
                    self.loaded = Some(index);
                    return Ok(());
                }
            } else if !focused {
                if let Some(download) = &self.download {
                    download.focus_on(index as u32);
                }
                focused = true;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "piece {index} of {} did not arrive within {} s",
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
        let piece_size = u64::from(self.file.manifest.piece_size());
        let index = (self.range.start / piece_size) as usize;
        if self.loaded != Some(index) {
            self.load(index)?;
        }
        let within = (self.range.start - index as u64 * piece_size) as usize;
        let available = &self.buf[within.min(self.buf.len())..];
        let n = available
            .len()
            .min(out.len())
            .min(self.range.len().min(usize::MAX as u64) as usize);
        if n == 0 {
            return Err(io::Error::other(
                "the piece is shorter than the manifest says",
            ));
        }
        out[..n].copy_from_slice(&available[..n]);
        self.range.start += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn ranges_not_served_get_the_whole_file() {
        for odd in [
            "items=0-5",
            "bytes=0-5,10-20",
            "bytes=5-2",
            "bytes=x-",
            "bytes=-0",
            "bytes",
        ] {
            assert_eq!(parse_range(Some(odd), 1000), RangeAsk::Whole, "{odd}");
        }
    }
}
