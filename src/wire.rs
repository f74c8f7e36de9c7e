//! The one place that turns a byte stream into protocol lines and payloads:
//! capped line reads, exact-length payload reads, and line writes (through
//! a [`StallWriter`], so that a reader that stops taking them cannot hold
//! the writer).
//!
//! Framing never depends on how the bytes were cut by the network: a line
//! ends at `\n` (a `\r` before it is dropped), a payload is exactly the
//! length its header stated. A line longer than the cap is skipped as it
//! streams past, never buffered whole; a payload longer than its cap is
//! refused before anything is allocated.

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::ProtocolError;

/// The room a payload's buffer starts with (it grows as bytes arrive),
/// and the most read into it at once.
const PAYLOAD_START_CAPACITY: usize = 64 * 1024;

/// Reads lines and payloads from a stream, with a cap on line length.
///
/// It keeps its own buffer, so a read timeout in the middle of a line loses
/// nothing: the next call picks up where the last one stopped.
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    max_line: usize,
    /// True while skipping the rest of an over-long line.
    skipping: bool,
}

/// One line as read: its text (borrowed from the reader's buffer until the
/// next read, so reading a line copies nothing), or why it cannot be used.
pub type LineResult<'a> = Result<&'a str, ProtocolError>;

impl<R: Read> LineReader<R> {
    /// A reader whose lines may be at most `max_line` bytes, line ending
    /// included.
    pub fn new(inner: R, max_line: usize) -> LineReader<R> {
        let max_line = max_line.max(2);
        LineReader {
            inner,
            buf: vec![0; max_line.max(8 * 1024)].into_boxed_slice(),
            start: 0,
            end: 0,
            max_line,
            skipping: false,
        }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Bytes read from the stream and not yet handed out: the start of a
    /// line still coming, or lines and payload read ahead.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The stream underneath, mutably (to restart an [`IdleDeadline`]).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Reads the next line, without its ending.
    ///
    /// - `Ok(None)`: the stream ended cleanly between lines;
    /// - `Ok(Some(Err(_)))`: a line came but is over-long or not UTF-8; it
    ///   has been consumed, and the stream is ready for the next line;
    /// - `Err(_)`: the stream failed (a read timeout among others); what
    ///   was read of a partial line is kept for the next call.
    ///
    /// A last line without a `\n` before the end of the stream still counts.
    pub fn read_line(&mut self) -> io::Result<Option<LineResult<'_>>> {
        // `scanned` bytes after `start` are known to hold no newline.
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.start + scanned..self.end];
            if let Some(offset) = pending.iter().position(|&b| b == b'\n') {
                let line_end = self.start + scanned + offset;
                let line_start = self.start;
                self.start = line_end + 1;
                if std::mem::take(&mut self.skipping) || line_end + 1 - line_start > self.max_line {
                    return Ok(Some(Err(self.too_long())));
                }
                return Ok(Some(decode(&self.buf[line_start..line_end])));
            }
            scanned = self.end - self.start;
            if scanned >= self.max_line {
                // Over the cap with no newline yet: drop what we have and
                // skip the rest of this line as it arrives.
                self.skipping = true;
                self.start = self.end;
                scanned = 0;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let read = loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if read == 0 {
                let rest = self.start..self.end;
                self.start = self.end;
                return Ok(if std::mem::take(&mut self.skipping) {
                    Some(Err(self.too_long()))
                } else if rest.is_empty() {
                    None
                } else {
                    Some(decode(&self.buf[rest]))
                });
            }
            self.end += read;
        }
    }

    /// Reads exactly `out.len()` payload bytes: first what is buffered, then
    /// straight from the stream.
    pub fn read_payload(&mut self, out: &mut [u8]) -> io::Result<()> {
        let buffered = (self.end - self.start).min(out.len());
        out[..buffered].copy_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        self.inner.read_exact(&mut out[buffered..])
    }

    /// Reads a payload of `len` bytes into a new buffer, refusing one longer
    /// than `max` before reading. The buffer grows as the bytes arrive, so
    /// a sender that announces a large payload and sends little of it
    /// costs only what it sent.
    pub fn read_payload_vec(&mut self, len: usize, max: usize) -> io::Result<Vec<u8>> {
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("payload of {len} bytes is over the {max}-byte cap"),
            ));
        }
        let buffered = (self.end - self.start).min(len);
        let mut out = Vec::with_capacity(len.min(PAYLOAD_START_CAPACITY).max(buffered));
        out.extend_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        while out.len() < len {
            if out.len() == out.capacity() {
                // Doubled, never past the length announced.
                out.reserve_exact(out.capacity().min(len - out.len()));
            }
            let start = out.len();
            out.resize(
                out.capacity().min(len).min(start + PAYLOAD_START_CAPACITY),
                0,
            );
            match self.inner.read(&mut out[start..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("payload cut short at {start} of {len} bytes"),
                    ))
                }
                Ok(n) => out.truncate(start + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => out.truncate(start),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn too_long(&self) -> ProtocolError {
        ProtocolError::LineTooLong {
            limit: self.max_line,
        }
    }
}

fn decode(bytes: &[u8]) -> LineResult<'_> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|_| ProtocolError::NotText)
}

/// Reads a socket under a deadline that only a complete line moves: the
/// owner calls [`IdleDeadline::restart`] once each line is answered. A
/// client that dribbles a byte now and then without ever finishing a line
/// still runs out of time, which a plain socket read timeout (reset by
/// every byte) would not do.
pub struct IdleDeadline<'a> {
    stream: &'a TcpStream,
    idle: Duration,
    deadline: Instant,
    timeout: ReadTimeout,
}

/// A flag another thread raises, before it shuts the socket down, to end
/// the reads of a connection: a server stopping, a download cancelled.
///
/// Shutting a socket down wakes a read blocked on it on Linux and macOS,
/// but not on Windows (rust-lang/rust#121594): there the read would wait
/// for the client's next byte, or its deadline. So on Windows a read that
/// can be stopped waits at most [`STOP_POLL`] at a time, and looks at the
/// flag between waits ([`ReadTimeout::stopped_by`]). Elsewhere it does not
/// poll: a thousand idle sessions waking twice a second cost a busy
/// tracker a fifth of its requests (the benchmark's S4). Writes are not
/// under it: on Windows a thread writing to a client that does not read
/// holds a stop until its stall time ([`StallWriter`]) runs out.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Ends every read under this signal that the socket's shutdown
    /// wakes, and on Windows within [`STOP_POLL`] any other.
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The error a read stopped by it fails with.
    fn stopped() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, "stopped")
    }
}

/// The longest a read under a [`StopSignal`] waits before it looks at the
/// signal again: only on Windows (see [`StopSignal`]).
pub const STOP_POLL: Option<Duration> = if cfg!(windows) {
    Some(Duration::from_millis(500))
} else {
    None
};

/// A socket's read timeout as last set, so that a reader under a deadline
/// changes it only when it must (a system call each time), not before
/// every read; and the signal that stops the reads, if any.
#[derive(Debug, Default)]
pub struct ReadTimeout {
    current: Option<Duration>,
    stop: Option<StopSignal>,
    /// The longest wait between two looks at `stop`, where a look is
    /// needed ([`STOP_POLL`]).
    poll: Option<Duration>,
}

impl ReadTimeout {
    /// Reads that end, failing with `ConnectionAborted`, once `stop` is
    /// raised (and the socket shut down).
    pub fn stopped_by(stop: StopSignal) -> ReadTimeout {
        ReadTimeout {
            current: None,
            stop: Some(stop),
            poll: STOP_POLL,
        }
    }

    /// Makes the next read on `stream` wait at most `wait` (not zero): the
    /// timeout is set again only when the current one would wait longer,
    /// or less than half as long.
    pub fn at_most(&mut self, stream: &TcpStream, wait: Duration) -> io::Result<()> {
        if !keeps(self.current, wait) {
            stream.set_read_timeout(Some(wait))?;
            self.current = Some(wait);
        }
        Ok(())
    }

    /// Reads from `stream` into `buf`, waiting at most `each` per call
    /// (`None`: no limit but the deadline), and never past `deadline`.
    /// With neither, a read still gives up after an hour of silence.
    ///
    /// - Past the deadline: a `TimedOut` error saying `what`.
    /// - Silent for all of `each`: a `TimedOut` error saying for how long.
    /// - Its [`StopSignal`] raised: a `ConnectionAborted` error.
    /// - A timeout that comes early (the socket's timeout is kept when it
    ///   is a little shorter than the wait, see [`ReadTimeout::at_most`]),
    ///   or a look at the stop signal, is waited out.
    pub fn read_before(
        &mut self,
        stream: &TcpStream,
        deadline: Option<Instant>,
        each: Option<Duration>,
        buf: &mut [u8],
        what: &'static str,
    ) -> io::Result<usize> {
        let passed = || io::Error::new(io::ErrorKind::TimedOut, what);
        // In words, not the system's "resource temporarily unavailable".
        let silent = || {
            let how_long = match each {
                Some(each) if each >= Duration::from_secs(1) => {
                    format!(" for {:.0} s", each.as_secs_f64())
                }
                Some(each) => format!(" for {} ms", each.as_millis()),
                None => String::new(),
            };
            io::Error::new(io::ErrorKind::TimedOut, format!("no answer{how_long}"))
        };
        // Fixed once: a timeout that fires early must not start the
        // silence over again.
        let silent_until = each.map(|each| Instant::now() + each);
        let end = match (deadline, silent_until) {
            (Some(a), Some(b)) => a.min(b),
            (Some(end), None) | (None, Some(end)) => end,
            (None, None) => Instant::now() + Duration::from_secs(3600),
        };
        let stopped = |stop: &Option<StopSignal>| stop.as_ref().is_some_and(StopSignal::is_raised);
        loop {
            let now = Instant::now();
            if stopped(&self.stop) {
                return Err(StopSignal::stopped());
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(passed());
            }
            let mut wait = end.saturating_duration_since(now);
            if wait.is_zero() {
                return Err(silent());
            }
            if let Some(poll) = self.poll {
                wait = wait.min(poll);
            }
            self.at_most(stream, wait)?;
            let mut reader = stream;
            match reader.read(buf) {
                // Woken by a shutdown from the thread that raised it.
                Ok(_) | Err(_) if stopped(&self.stop) => return Err(StopSignal::stopped()),
                Err(e) if is_timeout(&e) => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(passed());
                    }
                    if now + EARLY_SLACK >= end {
                        // On time: the deadline's, if it was the nearer end.
                        return Err(if deadline == Some(end) {
                            passed()
                        } else {
                            silent()
                        });
                    }
                    // Fired early (see above): wait out the rest.
                }
                other => return other,
            }
        }
    }
}

/// Whether the other end of `stream`, an idle connection, has neither
/// closed it nor sent anything (which on an idle connection is a parting
/// `ERRR`, or garbage): a read that would block is the only sign of a
/// live, quiet connection. Must not be called while another thread reads
/// the socket (it is made non-blocking for a moment).
pub fn is_quiet_and_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let peeked = stream.peek(&mut [0; 1]);
    if stream.set_nonblocking(false).is_err() {
        return false;
    }
    matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// How much sooner than asked a socket timeout may fire and still count as
/// on time (timer granularity).
pub const EARLY_SLACK: Duration = Duration::from_millis(5);

impl<'a> IdleDeadline<'a> {
    /// A reader of `stream` whose deadline is `idle` from now, and whose
    /// reads end once `stop` is raised: a server's connection, which must
    /// end when the server stops ([`StopSignal`]; there is no constructor
    /// without one, so that no handler forgets it).
    pub fn stopped_by(stream: &'a TcpStream, idle: Duration, stop: StopSignal) -> IdleDeadline<'a> {
        IdleDeadline {
            stream,
            idle,
            deadline: Instant::now() + idle,
            timeout: ReadTimeout::stopped_by(stop),
        }
    }

    /// Moves the deadline to `idle` from now.
    pub fn restart(&mut self) {
        self.deadline = Instant::now() + self.idle;
    }
}

impl Read for IdleDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timeout.read_before(
            self.stream,
            Some(self.deadline),
            None,
            buf,
            "idle deadline passed",
        )
    }
}

/// Whether a socket timeout set to `current` may stay for a wait of at
/// most `wait`: it must not wait longer, and (so that it is set again
/// seldom) not less than half as long.
fn keeps(current: Option<Duration>, wait: Duration) -> bool {
    current.is_some_and(|t| t <= wait && t >= wait / 2)
}

/// What a [`StallWriter`]'s reader must take within each stall time.
pub const STALL_BLOCK: usize = 64 * 1024;

/// What one write call hands the kernel of `rest`. On Linux a socket's
/// write timeout bounds the whole call, however much it sends meanwhile,
/// so all of it goes in one call (the fewest system calls). Elsewhere the
/// timeout bounds each wait for buffer space (macOS and the BSDs: a
/// reader freeing a little at a time could keep one call going for days)
/// or leaves the socket unusable once it fires (Windows): a call there is
/// one block, under a timeout fitted to it ([`call_timeout`]).
#[cfg(target_os = "linux")]
fn one_call(rest: &[u8]) -> &[u8] {
    rest
}

#[cfg(not(target_os = "linux"))]
fn one_call(rest: &[u8]) -> &[u8] {
    &rest[..rest.len().min(STALL_BLOCK)]
}

/// The write timeout for one call with `left` until the deadline: all of
/// it where it bounds the call (Linux, Windows); where it bounds each wait
/// for buffer space, a share of it, as a block usually needs up to 32
/// waits (the usual low-water mark of 2 KiB). A reader acknowledging in
/// smaller steps wakes the writer more often, each wait with its own
/// timeout: there a block can take several times `left`, never forever.
fn call_timeout(left: Duration) -> Duration {
    if cfg!(any(target_os = "linux", windows)) {
        left
    } else {
        (left / 32).max(Duration::from_millis(1))
    }
}

/// Writes to a socket whose reader must keep taking what it is sent: of
/// each answer (what is written between two flushes), at least
/// [`STALL_BLOCK`] bytes, or the rest, within each `stall` spent writing,
/// however the writes and the socket cut them. (A plain write timeout counts per system
/// call, and a reader that lets a few bytes through now and then would
/// hold the writer for many timeouts in a row.) After a failure every
/// write fails at once, so that a buffer flushing again as it is dropped
/// does not wait a second time.
pub struct StallWriter<'a> {
    stream: &'a TcpStream,
    stall: Duration,
    /// The socket's write timeout as last set.
    timeout: Option<Duration>,
    /// While an answer is being written: when the next block's worth must
    /// have been taken, and how much of it was taken so far.
    deadline: Option<Instant>,
    taken_since: usize,
    /// When the last write returned: time the writer spends between writes
    /// (reading the disk, waiting for its upload limit) is not the
    /// reader's to pay, and moves the deadline on.
    last_write_end: Option<Instant>,
    failed: bool,
}

impl<'a> StallWriter<'a> {
    pub fn new(stream: &'a TcpStream, stall: Duration) -> StallWriter<'a> {
        StallWriter {
            stream,
            stall,
            timeout: None,
            deadline: None,
            taken_since: 0,
            last_write_end: None,
            failed: false,
        }
    }

    /// Writes all of `buf` in as few system calls as the socket allows;
    /// the deadline moves on each time another block's worth is taken.
    fn write_all_within(&mut self, buf: &[u8]) -> io::Result<()> {
        if let (Some(deadline), Some(end)) = (self.deadline.as_mut(), self.last_write_end) {
            *deadline += end.elapsed();
        }
        let written = self.write_calls(buf);
        self.last_write_end = Some(Instant::now());
        written
    }

    fn write_calls(&mut self, buf: &[u8]) -> io::Result<()> {
        let stall = self.stall;
        let mut rest = buf;
        let mut out = self.stream;
        while !rest.is_empty() {
            let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + stall);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the other side took {} bytes in {stall:?}",
                        self.taken_since
                    ),
                ));
            }
            // On Linux the timeout set at first stays while it fits (a
            // system call saved per write): a write may then end up to a
            // sixteenth of the stall past the deadline. Elsewhere it is
            // fitted to each call.
            let wait = call_timeout(left);
            let linux = cfg!(target_os = "linux");
            if !linux || !keeps(self.timeout, wait + stall / 16) {
                self.stream.set_write_timeout(Some(wait))?;
                self.timeout = Some(wait);
            }
            match out.write(one_call(rest)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    rest = &rest[n..];
                    self.taken_since += n;
                    if self.taken_since >= STALL_BLOCK {
                        self.deadline = Some(Instant::now() + stall);
                        self.taken_since = 0;
                    }
                }
                // Timed out with nothing taken: the deadline says what next
                // (not on Windows, where the socket is not to be written
                // again after a timeout).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) && !cfg!(windows) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Write for StallWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier write on this connection failed",
            ));
        }
        let written = self.write_all_within(buf);
        self.failed = written.is_err();
        written.map(|()| buf.len())
    }

    /// Ends an answer: the next write starts a new one, with a new stall
    /// time. (Nothing is buffered here.)
    fn flush(&mut self) -> io::Result<()> {
        self.deadline = None;
        self.taken_since = 0;
        self.last_write_end = None;
        Ok(())
    }
}

/// Writes one message and its `\n`. Callers flush once per answer.
pub fn write_line(out: &mut impl Write, message: &impl Display) -> io::Result<()> {
    writeln!(out, "{message}")
}

/// True for the errors a socket read timeout gives (they differ by platform:
/// `WouldBlock` on Unix, `TimedOut` on Windows).
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_that_takes_too_little_fails_the_writer_in_time_and_for_good() {
        let (writer_side, mut reader_side) = connected_pair();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A reader that takes 1 KiB every 100 ms: 10 KB/s, far less than
        // a 64 KiB block in the 500 ms allowed.
        let dribbling = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0; 1024];
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    if matches!(reader_side.read(&mut buf), Ok(0) | Err(_)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let stall = Duration::from_millis(500);
        let mut out = StallWriter::new(&writer_side, stall);
        let started = Instant::now();
        let error = out.write_all(&vec![7; 64 << 20]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        // Filling the socket's buffers, then one block's stall, not the
        // minutes the whole 64 MiB would take at that pace.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        let again = Instant::now();
        assert_eq!(
            out.write(b"x").unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
        assert!(again.elapsed() < stall, "no second wait");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = writer_side.shutdown(std::net::Shutdown::Both);
        dribbling.join().unwrap();
    }

    #[test]
    fn an_answer_written_in_small_pieces_has_one_stall_per_block_not_per_piece() {
        use socket2::SockRef;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        SockRef::from(&listener).set_recv_buffer_size(4096).unwrap();
        let writer_side = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        SockRef::from(&writer_side)
            .set_send_buffer_size(4096)
            .unwrap();
        let (mut reader_side, _) = listener.accept().unwrap();
        // 8 KiB every 400 ms: 20 KB/s, under the 64 KiB a second asked.
        let dribbling = std::thread::spawn(move || {
            let mut buf = [0; 8192];
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                match reader_side.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => std::thread::sleep(Duration::from_millis(400)),
                }
            }
        });
        // One answer of 1 MiB, as a buffered writer hands it on: 8 KiB at
        // a time. Each piece used to get a stall of its own.
        let mut out =
            std::io::BufWriter::new(StallWriter::new(&writer_side, Duration::from_secs(1)));
        let started = Instant::now();
        let line = [b'x'; 99];
        let written = (0..10_000).try_for_each(|_| {
            out.write_all(&line)?;
            out.write_all(b"\n")
        });
        let error = written.and_then(|()| out.flush()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        drop(out);
        let _ = writer_side.shutdown(std::net::Shutdown::Both);
        dribbling.join().unwrap();
    }

    /// A read, on its own thread, of a connection nobody writes to,
    /// under `stop` looked at every `poll` (if given); the connection's
    /// two ends (the reader's, to shut it down).
    fn read_until_stopped(
        stop: &StopSignal,
        poll: Option<Duration>,
    ) -> (
        TcpStream,
        TcpStream,
        std::thread::JoinHandle<Result<usize, io::ErrorKind>>,
    ) {
        let (client, server) = connected_pair();
        let reader_end = server.try_clone().unwrap();
        let stop = stop.clone();
        let reading = std::thread::spawn(move || {
            // Its 30 s deadline would end it as `TimedOut`.
            let mut reader = IdleDeadline::stopped_by(&server, Duration::from_secs(30), stop);
            reader.timeout.poll = poll;
            reader.read(&mut [0; 16]).map_err(|e| e.kind())
        });
        std::thread::sleep(Duration::from_millis(200));
        (client, reader_end, reading)
    }

    #[test]
    fn a_read_under_a_stop_signal_ends_when_it_is_raised() {
        // As a server stops: the signal raised, then the socket shut down
        // (which wakes the read on Linux and macOS; Windows polls).
        let stop = StopSignal::new();
        let (_client, reader_end, reading) = read_until_stopped(&stop, STOP_POLL);
        stop.raise();
        let _ = reader_end.shutdown(std::net::Shutdown::Both);
        assert_eq!(
            reading.join().unwrap(),
            Err(io::ErrorKind::ConnectionAborted)
        );

        // Windows' way, on every system: the socket left open, the poll
        // sees the signal.
        let stop = StopSignal::new();
        let (_client, _open, reading) = read_until_stopped(&stop, Some(Duration::from_millis(50)));
        stop.raise();
        assert_eq!(
            reading.join().unwrap(),
            Err(io::ErrorKind::ConnectionAborted)
        );

        // A read started after it ends at once.
        let (_client, server) = connected_pair();
        let mut reader = IdleDeadline::stopped_by(&server, Duration::from_secs(30), stop);
        assert_eq!(
            reader.read(&mut [0; 16]).map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
    }

    /// Both ends of a connection on 127.0.0.1: (the connecting one, the
    /// accepted one).
    fn connected_pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connecting = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (connecting, accepted)
    }

    /// A connected socket to write on, and the thread reading all that
    /// comes from it (its count of bytes, at the end).
    fn socket_read_to_the_end() -> (TcpStream, std::thread::JoinHandle<io::Result<usize>>) {
        let (writer_side, mut reader_side) = connected_pair();
        let reading = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader_side.read_to_end(&mut all).map(|_| all.len())
        });
        (writer_side, reading)
    }

    #[test]
    fn the_writer_s_own_pauses_are_not_the_reader_s_to_pay() {
        let (writer_side, reading) = socket_read_to_the_end();
        // One answer of eight pieces, the writer pausing 400 ms before
        // each (its disk, its upload limit): 3.2 s against a 1 s stall,
        // all of it the writer's own.
        let mut out =
            std::io::BufWriter::new(StallWriter::new(&writer_side, Duration::from_secs(1)));
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(400));
            out.write_all(&[5; 16 * 1024]).unwrap();
        }
        out.flush().unwrap();
        drop(out);
        writer_side.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(reading.join().unwrap().unwrap(), 8 * 16 * 1024);
    }

    #[test]
    fn a_reader_that_keeps_up_gets_everything() {
        let (writer_side, reading) = socket_read_to_the_end();
        let data = vec![3; 4 << 20];
        StallWriter::new(&writer_side, Duration::from_secs(30))
            .write_all(&data)
            .unwrap();
        writer_side.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(reading.join().unwrap().unwrap(), data.len());
    }

    #[test]
    fn a_read_under_a_deadline_lasts_until_the_deadline_even_with_a_shorter_timeout_kept() {
        let (client, _server) = connected_pair();
        let mut timeout = ReadTimeout::default();
        // A 200 ms timeout is set on the socket...
        timeout
            .at_most(&client, Duration::from_millis(200))
            .unwrap();
        // ...and kept for a 300 ms wait (it is over half of it).
        let started = Instant::now();
        let deadline = Some(started + Duration::from_millis(300));
        let mut buf = [0u8; 8];
        let error = timeout
            .read_before(&client, deadline, None, &mut buf, "deadline passed")
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(
            started.elapsed() >= Duration::from_millis(290),
            "gave up after {:?}, before the deadline",
            started.elapsed()
        );
        // A silence is measured once: a kept timeout shorter than the wait
        // does not start it over (here 200 ms is kept for a 300 ms wait).
        timeout
            .at_most(&client, Duration::from_millis(200))
            .unwrap();
        let started = Instant::now();
        let error = timeout
            .read_before(
                &client,
                None,
                Some(Duration::from_millis(300)),
                &mut buf,
                "-",
            )
            .unwrap_err();
        assert!(is_timeout(&error), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(290));
        // (Started over, it would never end: every 200 ms timeout would
        // come early for a 300 ms wait.)
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the silence started over: {:?}",
            started.elapsed()
        );
        // Without a deadline, silence for the whole wait is a timeout
        // that says how long, not the system's "resource temporarily
        // unavailable".
        let error = timeout
            .read_before(
                &client,
                None,
                Some(Duration::from_millis(50)),
                &mut buf,
                "-",
            )
            .unwrap_err();
        assert!(is_timeout(&error), "{error}");
        assert_eq!(error.to_string(), "no answer for 50 ms");
    }

    /// A reader that hands out its bytes a few at a time, as a network would.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], step: usize, max_line: usize) -> Vec<Result<String, ProtocolError>> {
        let mut reader = LineReader::new(Trickle { data, step }, max_line);
        let mut lines = Vec::new();
        while let Some(line) = reader.read_line().unwrap() {
            lines.push(line.map(str::to_string));
        }
        lines
    }

    #[test]
    fn framing_does_not_depend_on_read_sizes() {
        let data = b"HELO 7001\r\nRQFS\n\nQUIT";
        let expected: Vec<Result<String, ProtocolError>> = ["HELO 7001", "RQFS", "", "QUIT"]
            .iter()
            .map(|s| Ok(s.to_string()))
            .collect();
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(lines(data, step, 64), expected, "step {step}");
        }
    }

    #[test]
    fn over_long_lines_are_skipped_and_the_next_line_survives() {
        let mut data = vec![b'x'; 100_000];
        data.extend_from_slice(b"\nPING\n");
        for step in [1, 9, 4096, 200_000] {
            let got = lines(&data, step, 32);
            assert_eq!(
                got,
                vec![
                    Err(ProtocolError::LineTooLong { limit: 32 }),
                    Ok("PING".into())
                ],
                "step {step}"
            );
        }
        // Exactly at the cap (ending included) is fine; one more is not.
        assert_eq!(lines(b"abc\n", 1, 4), vec![Ok("abc".into())]);
        assert_eq!(
            lines(b"abcd\n", 1, 4),
            vec![Err(ProtocolError::LineTooLong { limit: 4 })]
        );
    }

    #[test]
    fn invalid_utf8_is_a_typed_error_and_reading_goes_on() {
        assert_eq!(
            lines(b"\xff\xfe\nPING\n", 3, 64),
            vec![Err(ProtocolError::NotText), Ok("PING".into())]
        );
    }

    #[test]
    fn payloads_follow_their_header_exactly() {
        let data = b"PIEC k 0 5\nhelloPIEC k 1 3\nabc";
        let mut reader = LineReader::new(Trickle { data, step: 4 }, 64);
        assert_eq!(reader.read_line().unwrap(), Some(Ok("PIEC k 0 5")));
        assert_eq!(reader.read_payload_vec(5, 16).unwrap(), b"hello");
        assert_eq!(reader.read_line().unwrap(), Some(Ok("PIEC k 1 3")));
        assert!(reader.read_payload_vec(3, 2).is_err(), "over the cap");
        assert_eq!(reader.read_payload_vec(3, 16).unwrap(), b"abc");
        assert_eq!(reader.read_line().unwrap(), None);
    }

    #[test]
    fn a_payload_buffer_grows_with_what_arrives() {
        /// Sends a header announcing 64 MiB, then 10 bytes and the end,
        /// noting the largest read it was asked for.
        struct Announcer {
            data: &'static [u8],
            largest_ask: usize,
        }
        impl Read for Announcer {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.largest_ask = self.largest_ask.max(out.len());
                let n = out.len().min(self.data.len());
                out[..n].copy_from_slice(&self.data[..n]);
                self.data = &self.data[n..];
                Ok(n)
            }
        }
        let mut reader = LineReader::new(
            Announcer {
                data: b"MANF k 67108864\n0123456789",
                largest_ask: 0,
            },
            64,
        );
        reader.read_line().unwrap();
        let err = reader.read_payload_vec(64 << 20, 128 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(err.to_string(), "payload cut short at 10 of 67108864 bytes");
        assert!(
            reader.inner.largest_ask <= 1 << 20,
            "a buffer of {} bytes was offered for 10 bytes",
            reader.inner.largest_ask
        );
    }

    #[test]
    fn a_large_payload_arrives_whole_however_it_is_cut() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut data = b"MANF k 300000\n".to_vec();
        data.extend_from_slice(&payload);
        data.extend_from_slice(b"OK next\n");
        for step in [1000, 7_001, 65_536, 1 << 20] {
            let mut reader = LineReader::new(Trickle { data: &data, step }, 64);
            assert_eq!(reader.read_line().unwrap(), Some(Ok("MANF k 300000")));
            let got = reader.read_payload_vec(300_000, 1 << 20).unwrap();
            assert!(got == payload, "step {step}");
            assert_eq!(reader.read_line().unwrap(), Some(Ok("OK next")));
        }
    }

    #[test]
    fn a_truncated_payload_is_an_error() {
        let mut reader = LineReader::new(&b"PIEC k 0 5\nhel"[..], 64);
        reader.read_line().unwrap();
        let err = reader.read_payload_vec(5, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
