//! One connection from this peer to another peer's mini-server, with the
//! client side of each peer-to-peer exchange. Everything read is checked:
//! a reply that is not what was asked for is a [`LinkError::Misbehaved`],
//! which the downloader holds against that peer.

use std::io::{self, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::ratelimit::PAID_BLOCK;
use crate::pieces::{Bitmap, Manifest};
use crate::protocol::{ErrorCode, FileKey, PeerRequest, Reply, ShareEntry, MAX_LISTED_SHARES};
use crate::wire::{is_quiet_and_open, write_line, LineReader, ReadTimeout, StopSignal};

/// How long to wait for a connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer may stay silent before it is considered gone.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole BufferMap exchange may take.
pub const BITMAP_DEADLINE: Duration = Duration::from_secs(30);
/// The deadline of the first BufferMap asked of a peer that has not
/// answered this download yet, and of the first line of a manifest asked
/// of a holder the first time: a peer that takes connections and never
/// answers (made up, or stalled) holds a worker or a request this long,
/// not [`BITMAP_DEADLINE`]. A peer's mini-server answers both from
/// memory, at once.
pub const FIRST_ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// How long an answer header (or a listing) may take to arrive, a
/// manifest's first line on a second try among them; a manifest's bytes
/// then get this long again plus their time at [`MIN_PIECE_RATE`].
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// The most extra time a manifest's bytes get, however long it is.
pub const MAX_MANIFEST_EXTRA: Duration = Duration::from_secs(90);
/// The slowest a batch of pieces may arrive, on top of a fixed allowance:
/// a peer sending a byte now and then must not hold pieces for hours.
pub const MIN_PIECE_RATE: u64 = 8 * 1024;
/// Longest answer line read from a peer.
const MAX_LINE: usize = 64 * 1024;
/// Most pieces a file may have for its BufferMap answer (`BITF <key>
/// <hex>`, a hex digit per 4 pieces) to fit in [`MAX_LINE`]: about
/// 261,000 (4 TiB at the 16 MiB maximum piece size). The protocol allows
/// manifests of up to 1,048,576 pieces; a download of a larger file than
/// this is refused before it starts, rather than every peer's answer taken
/// for misbehaviour.
pub const MAX_BITMAP_PIECES: usize = (MAX_LINE - 128) * 4;
/// A link unused for longer than this is checked before it is used again
/// (see [`PeerLink::went_stale`]); one used more recently cannot have met
/// any server's idle deadline.
const STALE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Why an exchange with a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection broke, timed out, or could not be made.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The peer said something it should not have: a wrong header, a wrong
    /// length, a piece not asked for, garbage.
    #[error("misbehaved: {0}")]
    Misbehaved(String),
    /// The peer refused with an `ERRR` line.
    #[error("refused: {text} (ERRR {code})")]
    Refused { code: ErrorCode, text: String },
}

/// A piece as answered by a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum PieceAnswer {
    /// The piece's bytes are in the buffer (not yet checked against the
    /// manifest: that is the caller's job).
    Received,
    /// The peer does not have it (`ERRR 404`) or cannot read it (`ERRR 501`).
    Missing,
}

/// A connection to one peer's mini-server.
pub struct PeerLink {
    reader: LineReader<LinkStream>,
    writer: BufWriter<TcpStream>,
    /// Raised by its [`LinkCloser`].
    stop: StopSignal,
    /// When a line last went out or came in.
    last_used: Instant,
}

/// The reading half of a link: each read waits at most [`READ_TIMEOUT`],
/// and never past the deadline of the exchange under way, so that a peer
/// dribbling bytes cannot stretch an exchange without end.
struct LinkStream {
    stream: TcpStream,
    deadline: Option<Instant>,
    timeout: ReadTimeout,
}

impl Read for LinkStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timeout.read_before(
            &self.stream,
            self.deadline,
            Some(READ_TIMEOUT),
            buf,
            "the peer is too slow",
        )
    }
}

/// A handle that can close a link from another thread, waking a worker
/// blocked reading from it.
#[derive(Debug)]
pub struct LinkCloser(TcpStream, StopSignal);

impl LinkCloser {
    /// Closes the connection; the link's pending and next reads fail (at
    /// once, or on Windows within [`crate::wire::STOP_POLL`]: see
    /// [`StopSignal`]).
    pub fn close(&self) {
        self.1.raise();
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl PeerLink {
    /// Connects to the mini-server at `peer`.
    pub fn connect(peer: SocketAddr) -> io::Result<PeerLink> {
        PeerLink::connect_from(None, peer, CONNECT_TIMEOUT)
    }

    /// Connects to the mini-server at `peer` from the local IP `from` (see
    /// [`connect_from`]), waiting at most `wait`.
    pub fn connect_from(
        from: Option<IpAddr>,
        peer: SocketAddr,
        wait: Duration,
    ) -> io::Result<PeerLink> {
        let stream = connect_from(from, peer, wait)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        let stop = StopSignal::new();
        let reading = LinkStream {
            stream: stream.try_clone()?,
            deadline: None,
            timeout: ReadTimeout::stopped_by(stop.clone()),
        };
        Ok(PeerLink {
            stop,
            reader: LineReader::new(reading, MAX_LINE),
            writer: BufWriter::new(stream),
            last_used: Instant::now(),
        })
    }

    /// Whether this link, kept unused for a while, can no longer carry an
    /// exchange: the peer closed it, or sent something nobody asked for
    /// (its keep-alive deadline's `ERRR 303` before closing). Checked
    /// without waiting (a peek at the socket), and only for a link unused
    /// for over [`STALE_CHECK_AFTER`]. Such a link is to be dropped and a
    /// new one made: sent a request, it would answer with that farewell.
    ///
    /// The peek makes the socket non-blocking for a moment: it must not be
    /// called while a clone of this socket may be read on another thread
    /// (a link is used by one thread at a time; its [`LinkCloser`] only
    /// shuts it down).
    pub fn went_stale(&self) -> bool {
        if self.last_used.elapsed() < STALE_CHECK_AFTER {
            return false;
        }
        self.reader.buffered() > 0 || !is_quiet_and_open(self.writer.get_ref())
    }

    /// A handle to close this link from another thread.
    pub fn closer(&self) -> io::Result<LinkCloser> {
        let stream = self.writer.get_ref().try_clone()?;
        Ok(LinkCloser(stream, self.stop.clone()))
    }

    /// Sets how long the exchange starting now may take in all
    /// (`None`: no limit beyond [`READ_TIMEOUT`] per read).
    pub fn set_deadline(&mut self, within: Option<Duration>) {
        self.reader.get_mut().deadline = within.map(|d| Instant::now() + d);
    }

    /// Moves the deadline of the exchange under way `by` later: time spent
    /// here (waiting on this peer's own download limit) rather than on the
    /// other peer.
    pub fn extend_deadline(&mut self, by: Duration) {
        if let Some(deadline) = &mut self.reader.get_mut().deadline {
            *deadline += by;
        }
    }

    /// Sends one request.
    pub fn send(&mut self, request: &PeerRequest) -> io::Result<()> {
        self.send_line(request)
    }

    /// Sends one line of any grammar (the ring's, the course's).
    pub fn send_line(&mut self, line: &impl std::fmt::Display) -> io::Result<()> {
        self.last_used = Instant::now();
        write_line(&mut self.writer, line)?;
        self.writer.flush()
    }

    /// Reads one answer line.
    fn reply(&mut self) -> Result<Reply, LinkError> {
        let line = self.read_str()?;
        Reply::parse(line).map_err(|e| LinkError::Misbehaved(format!("{e} in {line:?}")))
    }

    /// Reads one line as text, whatever its grammar.
    pub fn read_text(&mut self) -> Result<String, LinkError> {
        self.read_str().map(str::to_string)
    }

    /// Reads one line, borrowed from the reader's buffer.
    ///
    /// A server's farewell to a connection it closes as idle (`ERRR 303`)
    /// is no answer, whatever was asked (a request can cross it): it is
    /// the connection lost, for every exchange and every grammar alike.
    fn read_str(&mut self) -> Result<&str, LinkError> {
        self.last_used = Instant::now();
        let line = self
            .reader
            .read_line()?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection",
                )
            })?
            .map_err(|e| LinkError::Misbehaved(e.to_string()))?;
        if is_idle_farewell(line) {
            return Err(LinkError::Io(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the peer closed the connection as idle: {line}"),
            )));
        }
        Ok(line)
    }

    /// Exchanges BufferMaps for `key`: tells ours (if any), returns theirs,
    /// checked against the file's piece count.
    pub fn exchange_bitmaps(
        &mut self,
        key: FileKey,
        mine: Option<&Bitmap>,
        pieces: usize,
        within: Duration,
    ) -> Result<Bitmap, LinkError> {
        self.set_deadline(Some(within));
        self.send(&PeerRequest::Bitf {
            key,
            bitmap: mine.map(Bitmap::to_field),
        })?;
        match self.reply()? {
            Reply::Bitmap { key: k, bitmap } if k == key => Bitmap::from_field(&bitmap, pieces)
                .map_err(|e| LinkError::Misbehaved(e.to_string())),
            other => Err(unexpected(other, "BITF")),
        }
    }

    /// Asks for the manifest of `key`, giving the answer's first line
    /// `deadline`; the length its holder announces (at most
    /// [`Manifest::max_encoded_len`]). Its bytes are to be read
    /// next, with [`PeerLink::read_manifest`]: in between, the caller may
    /// wait for room to hold them.
    pub fn ask_manifest(&mut self, key: FileKey, deadline: Duration) -> Result<u32, LinkError> {
        self.set_deadline(Some(deadline));
        self.send(&PeerRequest::Manf { key })?;
        match self.reply()? {
            Reply::Manifest { key: k, length } if k == key => {
                let most = Manifest::max_encoded_len();
                if length as usize > most {
                    return Err(LinkError::Misbehaved(format!(
                        "a manifest of {length} bytes announced (at most {most})"
                    )));
                }
                Ok(length)
            }
            other => Err(unexpected(other, "MANF")),
        }
    }

    /// Reads the `length` bytes of the manifest of `key` announced by
    /// [`PeerLink::ask_manifest`], and checks they hash to the key.
    pub fn read_manifest(&mut self, key: FileKey, length: u32) -> Result<Manifest, LinkError> {
        // Capped: a peer announcing a huge manifest must not earn hours
        // to send it.
        let payload =
            Duration::from_secs(u64::from(length) / MIN_PIECE_RATE).min(MAX_MANIFEST_EXTRA);
        self.set_deadline(Some(ANSWER_DEADLINE + payload));
        let bytes = self
            .reader
            .read_payload_vec(length as usize, Manifest::max_encoded_len())?;
        Manifest::parse_for_key(&bytes, &key).map_err(|e| LinkError::Misbehaved(e.to_string()))
    }

    /// Reads the answer for piece `index` of `key`, which must be `len`
    /// bytes long, into `buf`. The request was sent before (several may be
    /// in flight; answers come in the order asked).
    ///
    /// With `pay` (a download limit), the payload is read [`PAID_BLOCK`]
    /// bytes at a time, `pay` called before each block: it waits out the
    /// blocks read before (the bytes wait in the connection meanwhile) and
    /// returns how long it waited, time that is this side's and so moves
    /// the exchange's deadline on.
    pub fn read_piece(
        &mut self,
        key: FileKey,
        index: u32,
        len: u32,
        buf: &mut Vec<u8>,
        pay: Option<&mut dyn FnMut(u64) -> Duration>,
    ) -> Result<PieceAnswer, LinkError> {
        match self.reply()? {
            Reply::Piece {
                key: k,
                index: i,
                length,
            } if k == key && i == index => {
                if length != len {
                    return Err(LinkError::Misbehaved(format!(
                        "piece {index} announced as {length} bytes, it has {len}"
                    )));
                }
                buf.resize(len as usize, 0);
                match pay {
                    None => self.reader.read_payload(buf)?,
                    Some(pay) => {
                        for block in buf.chunks_mut(PAID_BLOCK) {
                            let waited = pay(block.len() as u64);
                            self.extend_deadline(waited);
                            self.reader.read_payload(block)?;
                        }
                    }
                }
                Ok(PieceAnswer::Received)
            }
            Reply::Piece { key: k, .. } if k != key => Err(LinkError::Misbehaved(format!(
                "sent a piece of {k} when piece {index} of {key} was asked for"
            ))),
            Reply::Piece { index: i, .. } => Err(LinkError::Misbehaved(format!(
                "sent piece {i} when piece {index} was asked for"
            ))),
            Reply::Error {
                code: ErrorCode::PieceMissing | ErrorCode::Internal,
                ..
            } => Ok(PieceAnswer::Missing),
            other => Err(unexpected(other, "PIEC")),
        }
    }

    /// The files the peer offers (its `LSTF`).
    pub fn shares(&mut self) -> Result<Vec<ShareEntry>, LinkError> {
        self.set_deadline(Some(ANSWER_DEADLINE));
        self.send(&PeerRequest::Lstf)?;
        let mut shares = Vec::new();
        loop {
            match self.reply()? {
                Reply::Share(entry) => shares.push(entry),
                Reply::End => return Ok(shares),
                other => return Err(unexpected(other, "SHAR or END")),
            }
            if shares.len() > MAX_LISTED_SHARES {
                return Err(LinkError::Misbehaved(format!(
                    "an LSTF listing of over {MAX_LISTED_SHARES} lines"
                )));
            }
        }
    }
}

/// Whether `line` is a server's farewell to a connection it closes as
/// idle: `ERRR 303` ([`ErrorCode::IdleTimeout`]).
fn is_idle_farewell(line: &str) -> bool {
    // Looked at closely only when it is an `ERRR` line at all: every piece
    // header passes here.
    line.get(..4)
        .is_some_and(|verb| verb.eq_ignore_ascii_case("ERRR"))
        && matches!(
            Reply::parse(line),
            Ok(Reply::Error {
                code: ErrorCode::IdleTimeout,
                ..
            })
        )
}

fn unexpected(reply: Reply, wanted: &str) -> LinkError {
    match reply {
        Reply::Error { code, text } => LinkError::Refused { code, text },
        other => LinkError::Misbehaved(format!("expected {wanted}, got {other}")),
    }
}

/// Connects to `addr`, from the local IP `from` when one is given (and of
/// the same family, and not the wildcard). If no socket can be bound
/// there, the connection is made from wherever the system chooses; a
/// connection that fails from there fails (trying again from elsewhere
/// would double its time, and be seen from another address).
pub fn connect_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let Some(ip) = from.filter(|ip| !ip.is_unspecified() && ip.is_ipv4() == addr.is_ipv4()) else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let bound = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .and_then(|socket| socket.bind(&SocketAddr::new(ip, 0).into()).map(|()| socket));
    match bound {
        Ok(socket) => {
            socket.connect_timeout(&addr.into(), timeout)?;
            Ok(TcpStream::from(socket))
        }
        Err(e) => {
            log::warn!("cannot connect from {ip} ({e}); connecting to {addr} from any address");
            TcpStream::connect_timeout(&addr, timeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn an_exchange_that_dribbles_past_its_deadline_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // A byte every 100 ms: each read succeeds, the whole never ends.
            for _ in 0..100 {
                if stream.write_all(b"P").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let mut link = PeerLink::connect(addr).unwrap();
        link.set_deadline(Some(Duration::from_millis(500)));
        let started = Instant::now();
        let mut buf = Vec::new();
        let result = link.read_piece(FileKey([0; 32]), 0, 10, &mut buf, None);
        assert!(
            matches!(result, Err(LinkError::Io(ref e)) if e.kind() == io::ErrorKind::TimedOut),
            "{result:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the deadline did not hold"
        );
        drop(link);
        server.join().unwrap();
    }

    #[test]
    fn a_deadline_moved_later_covers_time_spent_here() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (written, first_written) = crossbeam_channel::bounded(1);
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // Two answers, the second sent once the first is read: the
            // time between is this side's.
            let piece = |index| format!("PIEC {} {index} 1\nx", FileKey([0; 32]));
            stream.write_all(piece(0).as_bytes()).unwrap();
            let _ = written.send(());
            std::thread::sleep(Duration::from_millis(600));
            let _ = stream.write_all(piece(1).as_bytes());
        });
        let mut link = PeerLink::connect(addr).unwrap();
        // The deadline starts once the first answer is there (a busy
        // machine may be slow to run the server's thread).
        first_written
            .recv_timeout(Duration::from_secs(10))
            .expect("the first answer is written");
        link.set_deadline(Some(Duration::from_millis(300)));
        let mut buf = Vec::new();
        link.read_piece(FileKey([0; 32]), 0, 1, &mut buf, None)
            .unwrap();
        // As a download limit's wait would, the 600 ms are taken here.
        link.extend_deadline(Duration::from_secs(5));
        let second = link.read_piece(FileKey([0; 32]), 1, 1, &mut buf, None);
        assert!(second.is_ok(), "{second:?}");
        drop(link);
        server.join().unwrap();
    }

    #[test]
    fn the_largest_buffermap_it_admits_fits_a_line() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let key = FileKey([7; 32]);
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            std::io::BufRead::read_line(&mut reader, &mut request).unwrap();
            let hex = "f".repeat(MAX_BITMAP_PIECES / 4);
            (&stream)
                .write_all(format!("BITF {key} {hex}\r\n").as_bytes())
                .unwrap();
        });
        let mut link = PeerLink::connect(addr).unwrap();
        let bitmap = link
            .exchange_bitmaps(key, None, MAX_BITMAP_PIECES, BITMAP_DEADLINE)
            .unwrap();
        assert_eq!(bitmap.count(), MAX_BITMAP_PIECES);
        server.join().unwrap();
    }
}
