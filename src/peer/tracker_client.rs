//! The peer's conversation with the tracker: one persistent connection,
//! opened with `HELO` when the peer serves, and typed calls for each
//! request. The client remembers what it announced (offers and progress
//! reports): when a broken connection is reopened on the next call, the
//! new session announces all of it again, so a tracker restart loses
//! nothing for long.
//!
//! Every exchange (a request and its whole answer, listing included) must
//! end within [`EXCHANGE_DEADLINE`], not only each read: a tracker, or
//! anything at its address, that dribbles bytes or slow listing lines
//! fails with [`PeerError::TrackerTooSlow`] instead of holding the
//! connection (and every caller waiting for it) forever. The deadline
//! starts once the exchange has the connection; a caller waits its turn
//! for it at most as long again. A listing is
//! capped by request type ([`max_answer_lines`]), so an endless one fails
//! before it fills memory. Either way the connection is dropped and the
//! next call opens a new one.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;

use crate::pieces::Bitmap;
use crate::protocol::{
    ErrorCode, FileEntry, FileKey, FileOffer, PeerEntry, PeerId, Reply, SearchCriteria, ShareEntry,
    TrackerRequest, UserName,
};
use crate::wire::{is_quiet_and_open, write_line, LineReader, ReadTimeout, EARLY_SLACK};

use super::error::PeerError;
use crate::tracker::MAX_RESULTS;

/// The time a new session's offers told again may take together: two
/// exchange deadlines, and a tenth of a second for each (a thousand files
/// on a link of 30 ms take 30 s of the 160 s they get).
fn announce_budget(deadline: Duration, offers: usize) -> Duration {
    deadline * 2 + Duration::from_millis(100) * u32::try_from(offers).unwrap_or(u32::MAX)
}

/// How long to wait for the tracker to accept the connection, take a
/// request, or send the next bytes of an answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long one whole exchange (a request and all of its answer) may
/// take, however steadily the answer trickles in. A listing of the most
/// lines allowed ([`max_answer_lines`]) is well under a few MB, seconds on
/// any link that can carry a download.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(30);
/// Longest answer line read from the tracker.
const MAX_LINE: usize = 64 * 1024;

/// Who this peer is to the tracker.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The port of this peer's mini-server.
    pub listen_port: u16,
    /// The IP its mini-server listens on, when it is one address (not the
    /// wildcard): the session is opened from that address, because the
    /// tracker takes a peer's IP from the socket. So peers of a class on
    /// 127.0.0.2, 127.0.0.3, ... are told apart.
    pub listen_ip: Option<IpAddr>,
    pub user: Option<UserName>,
}

/// A client of the tracker at one address.
pub struct TrackerClient {
    addr: SocketAddr,
    /// `None` for a client that only asks (searches) and serves nothing.
    identity: Option<Identity>,
    conn: Mutex<Option<Conn>>,
    /// How long one exchange may take ([`EXCHANGE_DEADLINE`]).
    deadline: Duration,
    peer_id: Mutex<Option<PeerId>>,
    /// Sessions opened so far: a new number is a tracker that may have
    /// forgotten what the last session told it.
    sessions: std::sync::atomic::AtomicU64,
    /// What the tracker is to know, and what is still to be sent: one
    /// lock, so that the two never disagree on a file changed by two
    /// threads at once.
    books: Mutex<Books>,
    /// Held while a change of a file is sent, so that changes go out in
    /// the order they were made.
    sending: Mutex<()>,
    /// When the tracker last said it had no room for an offer (`ERRR
    /// 406`): the offers waiting are sent again [`FULL_RETRY`] later.
    full_at: Mutex<Option<Instant>>,
    /// Set by [`TrackerClient::stop`]: no exchange starts, no connection
    /// is opened again.
    stopping: std::sync::atomic::AtomicBool,
    /// The socket of the latest connection, so that [`TrackerClient::stop`]
    /// can end an exchange waiting on a tracker that does not answer.
    socket: Mutex<Option<TcpStream>>,
}

/// How long after an `ERRR 406` (no room for offers) the offers waiting
/// are tried again.
pub const FULL_RETRY: Duration = Duration::from_secs(30);

/// What [`TrackerClient::drop_if_closed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// Open (or in use, or none to look at).
    Open,
    /// The tracker closed it (it restarted, or dropped the session).
    Closed,
    /// The tracker closed it as idle (`ERRR 303`): it keeps sessions for
    /// less time than this peer leaves between pings.
    ClosedAsIdle,
}

/// How long a connection found closed is read for the tracker's last word.
const LAST_WORD_WAIT: Duration = Duration::from_millis(200);

/// How long a stopping peer waits for the answer to its `QUIT`.
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// See [`TrackerClient::books`].
#[derive(Debug, Default)]
struct Books {
    /// What this peer wants the tracker to know (offers and progress
    /// reports), to tell every new session again.
    announced: BTreeMap<FileKey, TrackerRequest>,
    /// Changes not sent yet ([`TrackerClient::offer_soon`],
    /// [`TrackerClient::withdraw_soon`]): the latest of each file.
    pending: BTreeMap<FileKey, TrackerRequest>,
}

struct Conn {
    reader: LineReader<TrackerStream>,
    writer: BufWriter<TcpStream>,
}

impl Drop for Conn {
    /// Ends the connection, for the tracker too: a clone of its socket is
    /// kept for [`TrackerClient::stop`], and would keep it open.
    fn drop(&mut self) {
        let _ = self.writer.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

/// The reading half of the connection: each read waits at most
/// [`TIMEOUT`], and never past the deadline of the exchange under way.
struct TrackerStream {
    stream: TcpStream,
    deadline: Option<Instant>,
    timeout: ReadTimeout,
}

impl Read for TrackerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.timeout.read_before(
            &self.stream,
            self.deadline,
            Some(TIMEOUT),
            buf,
            "the tracker's answer is overdue",
        )
    }
}

/// Whether the tracker answers `request` without a session: searches and
/// look-ups do; offers, reports and the session's own keep-alive (`PING`)
/// need one.
fn needs_no_session(request: &TrackerRequest) -> bool {
    matches!(
        request,
        TrackerRequest::Rqfs(_)
            | TrackerRequest::Lstf(_)
            | TrackerRequest::Reqf { .. }
            | TrackerRequest::Usrs
    )
}

/// Most lines before `END` accepted in the answer to `request`: none for
/// a request answered by a single line (it is not a listing); for a
/// listing, the most any tracker can send (`REQF`: the highest
/// `max_peers_per_reply`; `USRS`: one user per connection, at most the
/// highest `max_connections`), or [`MAX_RESULTS`] for `RQFS` and
/// `LSTF`.
fn max_answer_lines(request: &TrackerRequest) -> usize {
    match request {
        TrackerRequest::Rqfs(_) | TrackerRequest::Lstf(_) => MAX_RESULTS,
        TrackerRequest::Reqf { .. } => crate::tracker::MAX_PEERS_PER_REPLY,
        TrackerRequest::Usrs => crate::tracker::MAX_CONNECTIONS,
        TrackerRequest::Helo { .. }
        | TrackerRequest::Addf(_)
        | TrackerRequest::Rmvf { .. }
        | TrackerRequest::Bitf { .. }
        | TrackerRequest::Ping
        | TrackerRequest::Quit => 0,
    }
}

impl TrackerClient {
    /// A client of the tracker at `addr`. With an identity, the session is
    /// opened (`HELO`) as soon as the connection is.
    pub fn new(addr: SocketAddr, identity: Option<Identity>) -> TrackerClient {
        TrackerClient {
            addr,
            identity,
            conn: Mutex::new(None),
            deadline: EXCHANGE_DEADLINE,
            peer_id: Mutex::new(None),
            sessions: std::sync::atomic::AtomicU64::new(0),
            books: Mutex::new(Books::default()),
            sending: Mutex::new(()),
            full_at: Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            socket: Mutex::new(None),
        }
    }

    /// The peer is stopping: the session ends (`QUIT`, if no exchange is
    /// under way: within a second), an exchange under way ends at once
    /// (its connection is shut), and none starts after, so that a tracker
    /// that stalled holds no thread of the peer (a page request, the
    /// housekeeping) for its 30 s deadline when the peer stops.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(mut guard) = self.conn.try_lock() {
            if let Some(conn) = guard.as_mut() {
                let _ = self.exchange_on(conn, &TrackerRequest::Quit, Instant::now() + QUIT_WAIT);
            }
            *guard = None;
        }
        if let Some(socket) = self.socket.lock().take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Whether [`TrackerClient::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn stopped_error() -> PeerError {
        PeerError::Failed("the peer is stopping".into())
    }

    /// The same client with another limit on one exchange (tests).
    #[cfg(test)]
    fn with_deadline(mut self, deadline: Duration) -> TrackerClient {
        self.deadline = deadline;
        self
    }

    /// The tracker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many sessions have been opened so far (it changes when the
    /// session is opened again).
    pub fn session_number(&self) -> u64 {
        self.sessions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a connection to the tracker is open now (the session's,
    /// for a client with an identity): one in use by an exchange is.
    pub fn has_session(&self) -> bool {
        self.conn.try_lock().is_none_or(|conn| conn.is_some())
    }

    /// The peer id the tracker gave this peer, once the session is open.
    pub fn peer_id(&self) -> Option<PeerId> {
        *self.peer_id.lock()
    }

    /// Opens the session now (it is otherwise opened on first use).
    pub fn connect(&self) -> Result<(), PeerError> {
        let mut conn = self.conn.lock();
        if conn.is_none() {
            *conn = Some(self.open()?);
        }
        Ok(())
    }

    /// A connection to the tracker, with no session on it.
    fn connect_only(&self) -> Result<Conn, PeerError> {
        let unreachable = |source| PeerError::TrackerUnreachable {
            addr: self.addr,
            source,
        };
        let from = self.identity.as_ref().and_then(|i| i.listen_ip);
        let stream = super::link::connect_from(from, self.addr, TIMEOUT).map_err(unreachable)?;
        let setup = |stream: &TcpStream| -> io::Result<Conn> {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(TIMEOUT))?;
            stream.set_write_timeout(Some(TIMEOUT))?;
            let reading = TrackerStream {
                stream: stream.try_clone()?,
                deadline: None,
                timeout: ReadTimeout::default(),
            };
            Ok(Conn {
                reader: LineReader::new(reading, MAX_LINE),
                writer: BufWriter::new(stream.try_clone()?),
            })
        };
        let conn = setup(&stream).map_err(unreachable)?;
        *self.socket.lock() = Some(stream);
        // A stop that came while connecting shuts this one too.
        if self.is_stopping() {
            self.stop();
            return Err(Self::stopped_error());
        }
        Ok(conn)
    }

    /// Opens a connection and, with an identity, the session on it (`HELO`,
    /// then every offer again, each exchange within the client's deadline).
    fn open(&self) -> Result<Conn, PeerError> {
        let mut conn = self.connect_only()?;
        if let Some(identity) = &self.identity {
            let helo = TrackerRequest::Helo {
                port: identity.listen_port,
                user: identity.user.clone(),
            };
            match self
                .exchange_on(&mut conn, &helo, self.deadline())?
                .as_slice()
            {
                [Reply::Ok(id)] => {
                    let id: PeerId = id.parse().map_err(|_| {
                        PeerError::TrackerProtocol(format!("HELO answered OK {id}"))
                    })?;
                    info!("session open at the tracker {} as {id}", self.addr);
                    *self.peer_id.lock() = Some(id);
                    self.sessions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                other => return Err(self.refusal(other)),
            }
            self.announce_again(&mut conn)?;
        }
        Ok(conn)
    }

    /// When an exchange starting now must be over.
    fn deadline(&self) -> Instant {
        Instant::now() + self.deadline
    }

    /// The error for an answer that was not the expected success. A
    /// peer's mini-server answers a tracker's verb (`HELO`, `RQFS`...) as
    /// one it does not know (its verbs listed, `MANF` among them): then
    /// `--tracker` names a peer, and that is what is said.
    fn refusal(&self, replies: &[Reply]) -> PeerError {
        match replies.last() {
            Some(Reply::Error {
                code: ErrorCode::UnknownVerb,
                text,
            }) if text.contains("MANF") => PeerError::Failed(format!(
                "{} answers as a peer, not as a tracker: is the tracker's address (the one `tracker` prints as listening) the one given?",
                self.addr
            )),
            // Its words are shown and logged: a control character in them
            // is escaped (another tracker than ours may echo raw text).
            Some(Reply::Error { code, text }) => PeerError::TrackerRefused {
                code: *code,
                text: crate::logging::printable(text).into_owned(),
            },
            Some(other) => PeerError::TrackerProtocol(format!("unexpected answer {other}")),
            None => PeerError::TrackerProtocol("no answer".into()),
        }
    }

    /// Tells a new session every offer and progress report of the old one.
    /// Each is an exchange of its own, with its own deadline: a thousand
    /// files on a link of 30 ms take 30 s in all, and no one answer is slow.
    /// All of them together get [`announce_budget`] (a tracker that takes
    /// nearly the deadline over each would otherwise hold the connection
    /// for hours), and a peer that begins to stop sends no more.
    fn announce_again(&self, conn: &mut Conn) -> Result<(), PeerError> {
        let announced: Vec<TrackerRequest> =
            self.books.lock().announced.values().cloned().collect();
        if announced.is_empty() {
            return Ok(());
        }
        let all_by = Instant::now() + announce_budget(self.deadline, announced.len());
        for request in &announced {
            if self.is_stopping() {
                return Err(Self::stopped_error());
            }
            let deadline = self.deadline().min(all_by);
            match (
                self.exchange_on(conn, request, deadline)?.as_slice(),
                request,
            ) {
                // No room now: offered again later, as any offer is.
                (
                    [Reply::Error {
                        code: ErrorCode::TrackerFull,
                        text,
                    }],
                    TrackerRequest::Addf(offer),
                ) => {
                    self.wait_for_room(offer.key, request.clone(), text);
                }
                // A download's progress, before any seeder of the file is
                // back (a tracker that restarted): reported again each
                // round, and taken once the file is offered.
                (
                    [Reply::Error {
                        code: ErrorCode::UnknownFile,
                        text,
                    }],
                    TrackerRequest::Bitf { .. },
                ) => debug!(
                    "the tracker does not know the file yet: {}",
                    crate::logging::printable(text)
                ),
                ([Reply::Error { text, .. }], _) => {
                    warn!(
                        "the tracker refused {} from the previous session: {}",
                        request.verb(),
                        crate::logging::printable(text)
                    );
                }
                _ => {}
            }
        }
        info!("announced {} file(s) again to the tracker", announced.len());
        Ok(())
    }

    /// Sends `request` and reads its whole answer (one line, or a listing
    /// up to `END`), within [`EXCHANGE_DEADLINE`] of being sent; opening a
    /// new session first, if that is needed, has deadlines of its own.
    /// Reconnects once if the connection had broken; any other failure
    /// (the deadline missed, a listing too long, garbage) drops the
    /// connection, so the next call opens a new one.
    ///
    /// One exchange at a time: a caller waits its turn for the connection
    /// at most the deadline (then the tracker is too slow for it, and the
    /// connection is left to the exchange under way).
    fn exchange(&self, request: &TrackerRequest) -> Result<Vec<Reply>, PeerError> {
        let Some(mut guard) = self.conn.try_lock_for(self.deadline) else {
            return Err(PeerError::TrackerTooSlow {
                addr: self.addr,
                verb: request.verb(),
                within: self.deadline,
            });
        };
        for attempt in 0..2 {
            if self.is_stopping() {
                *guard = None;
                return Err(Self::stopped_error());
            }
            if guard.is_none() {
                match self.open() {
                    Ok(conn) => *guard = Some(conn),
                    // The session is refused (another live session has
                    // this user name, or this address): a search or a
                    // look-up needs none, and is asked on a connection of
                    // its own.
                    Err(e) if e.session_refused() && needs_no_session(request) => {
                        let mut conn = self.connect_only()?;
                        return self.exchange_on(&mut conn, request, self.deadline());
                    }
                    Err(e) => return Err(e),
                }
            }
            let conn = guard.as_mut().expect("just opened");
            match self.exchange_on(conn, request, self.deadline()) {
                Ok(replies) => return Ok(replies),
                Err(PeerError::TrackerUnreachable { source, .. }) if attempt == 0 => {
                    info!("tracker connection lost ({source}); reconnecting");
                    *guard = None;
                }
                Err(e) => {
                    // Whatever was left unread would answer the next call.
                    *guard = None;
                    return Err(e);
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// Sends `request` and reads its whole answer, all before `deadline`,
    /// and at most [`max_answer_lines`] lines before `END`.
    fn exchange_on(
        &self,
        conn: &mut Conn,
        request: &TrackerRequest,
        deadline: Instant,
    ) -> Result<Vec<Reply>, PeerError> {
        conn.reader.get_mut().deadline = Some(deadline);
        let io_error = |source| PeerError::TrackerUnreachable {
            addr: self.addr,
            source,
        };
        // A read that failed at the deadline (within a timer's
        // granularity) or past it missed it, whichever timeout fired: the
        // exchange took too long in all.
        let read_error = |source| {
            if Instant::now() + EARLY_SLACK >= deadline {
                PeerError::TrackerTooSlow {
                    addr: self.addr,
                    verb: request.verb(),
                    within: self.deadline,
                }
            } else {
                io_error(source)
            }
        };
        write_line(&mut conn.writer, request).map_err(io_error)?;
        conn.writer.flush().map_err(io_error)?;
        let max_lines = max_answer_lines(request);
        let listing = max_lines > 0;
        let mut replies = Vec::new();
        loop {
            let line = conn
                .reader
                .read_line()
                .map_err(read_error)?
                .ok_or_else(|| {
                    io_error(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the tracker closed the connection",
                    ))
                })?
                .map_err(|e| PeerError::TrackerProtocol(e.to_string()))?;
            let reply = Reply::parse(line)
                .map_err(|e| PeerError::TrackerProtocol(format!("{e} in {line:?}")))?;
            let done = !listing || matches!(reply, Reply::End | Reply::Error { .. });
            if !done && replies.len() == max_lines {
                return Err(PeerError::TrackerProtocol(format!(
                    "a listing of over {max_lines} lines in answer to {}",
                    request.verb()
                )));
            }
            replies.push(reply);
            if done {
                return Ok(replies);
            }
        }
    }

    /// Sends a request whose answer is one `OK` line.
    fn expect_ok(&self, request: &TrackerRequest) -> Result<String, PeerError> {
        match self.exchange(request)?.as_slice() {
            [Reply::Ok(text)] => Ok(text.clone()),
            other => Err(self.refusal(other)),
        }
    }

    /// Sends a listing request; returns its lines before `END`.
    fn listing(&self, request: &TrackerRequest) -> Result<Vec<Reply>, PeerError> {
        let mut replies = self.exchange(request)?;
        match replies.pop() {
            Some(Reply::End) => Ok(replies),
            other => Err(self.refusal(other.as_slice())),
        }
    }

    /// `ADDF`: offers a complete file. It is remembered first, so even if
    /// the tracker cannot be reached now, the next session announces it;
    /// any other failure forgets it. A tracker with no room for it now
    /// (`ERRR 406`) gets it again later: that is no error.
    pub fn offer(&self, offer: &FileOffer) -> Result<(), PeerError> {
        let request = TrackerRequest::Addf(offer.clone());
        // Sent in turn with the queue: never overtaken by an older queued
        // change of this file, nor overtaking one.
        let _in_turn = self.sending.lock();
        {
            let mut books = self.books.lock();
            books.announced.insert(offer.key, request.clone());
            books.pending.remove(&offer.key);
        }
        match self.expect_ok(&request) {
            Err(PeerError::TrackerRefused {
                code: ErrorCode::TrackerFull,
                text,
            }) => {
                self.wait_for_room(offer.key, request, &text);
                Ok(())
            }
            Err(e) => {
                if e.tracker_takes_it_later() {
                    // Sent again with every offer by the next session; or,
                    // when this one is still open (a wait for its turn
                    // that ran out leaves it so), by the next round's
                    // flush on it.
                    if self.has_session() {
                        self.requeue(offer.key, request);
                    }
                } else {
                    // The offer itself was refused: forgotten.
                    self.books.lock().announced.remove(&offer.key);
                }
                Err(e)
            }
            Ok(_) => Ok(()),
        }
    }

    /// Offers a file without waiting: the housekeeping thread sends it on
    /// its next round ([`TrackerClient::flush`]).
    pub fn offer_soon(&self, offer: &FileOffer) {
        let request = TrackerRequest::Addf(offer.clone());
        let mut books = self.books.lock();
        books.announced.insert(offer.key, request.clone());
        books.pending.insert(offer.key, request);
    }

    /// Withdraws a file without waiting: the housekeeping thread sends the
    /// `RMVF` on its next round, unless the file is offered again first
    /// (the newer change of a file replaces the older one in the queue).
    pub fn withdraw_soon(&self, key: FileKey) {
        let mut books = self.books.lock();
        books.announced.remove(&key);
        books.pending.insert(key, TrackerRequest::Rmvf { key });
    }

    /// `RMVF`: withdraws a file now (and whatever change of it was
    /// queued). A tracker that does not list it for this peer (it never
    /// took the offer, or restarted since) has nothing to withdraw: done.
    pub fn withdraw(&self, key: FileKey) -> Result<(), PeerError> {
        let _in_turn = self.sending.lock();
        {
            let mut books = self.books.lock();
            books.announced.remove(&key);
            books.pending.remove(&key);
        }
        let request = TrackerRequest::Rmvf { key };
        match self.expect_ok(&request) {
            Err(PeerError::TrackerRefused {
                code: ErrorCode::UnknownFile | ErrorCode::NotYours,
                ..
            }) => Ok(()),
            // A session still open (a wait for its turn that ran out) still
            // lists the file: the next round's flush withdraws it. One that
            // ended took its offers with it.
            Err(e) if e.tracker_takes_it_later() => {
                if self.has_session() {
                    self.requeue(key, request);
                }
                Err(e)
            }
            other => other.map(drop),
        }
    }

    /// The tracker had no room for `request` (an offer of `key`): it goes
    /// back in the queue (unless a newer change of that file was queued
    /// meanwhile), and the offers queued wait [`FULL_RETRY`] (withdrawals,
    /// which make room, do not).
    fn wait_for_room(&self, key: FileKey, request: TrackerRequest, text: &str) {
        self.requeue(key, request);
        warn!(
            "the tracker has no room for offers now: {text}; offering again in {} s",
            FULL_RETRY.as_secs()
        );
        *self.full_at.lock() = Some(Instant::now());
    }

    /// Queues `request`, a change of `key` not sent, again: unless a newer
    /// change of that file was queued since.
    fn requeue(&self, key: FileKey, request: TrackerRequest) {
        self.books.lock().pending.entry(key).or_insert(request);
    }

    /// Sends the changes queued by [`TrackerClient::offer_soon`] and
    /// [`TrackerClient::withdraw_soon`], the latest of each file, each
    /// taken off the queue as it is sent: one queued meanwhile is newer
    /// and goes next. One not sent (the tracker away, or full) goes back,
    /// unless a newer one took its place.
    pub fn flush(&self) -> Result<(), PeerError> {
        let _in_turn = self.sending.lock();
        let keys: Vec<FileKey> = self.books.lock().pending.keys().copied().collect();
        for key in keys {
            let full = self
                .full_at
                .lock()
                .is_some_and(|at| at.elapsed() < FULL_RETRY);
            let request = {
                let pending = &mut self.books.lock().pending;
                if full && matches!(pending.get(&key), Some(TrackerRequest::Addf(_))) {
                    continue;
                }
                match pending.remove(&key) {
                    Some(request) => request,
                    None => continue,
                }
            };
            match self.expect_ok(&request) {
                Ok(_) => {}
                Err(PeerError::TrackerRefused {
                    code: ErrorCode::TrackerFull,
                    text,
                }) => {
                    self.wait_for_room(key, request, &text);
                }
                // No session to send it on: kept for when there is one.
                Err(e) if e.session_refused() => {
                    self.requeue(key, request);
                    return Err(e);
                }
                // Withdrawn already (a tracker that restarted since).
                Err(PeerError::TrackerRefused { text, .. })
                    if matches!(request, TrackerRequest::Rmvf { .. }) =>
                {
                    debug!("the tracker refused RMVF: {text}")
                }
                Err(PeerError::TrackerRefused { text, .. }) => {
                    warn!("the tracker refused {}: {text}", request.verb());
                    // Refused for good: not offered to later sessions either.
                    let announced = &mut self.books.lock().announced;
                    if announced.get(&key) == Some(&request) {
                        announced.remove(&key);
                    }
                }
                Err(e) => {
                    // Not sent: kept for the next round.
                    self.requeue(key, request);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// `BITF`: reports progress on a file.
    pub fn report(&self, key: FileKey, bitmap: &Bitmap) -> Result<(), PeerError> {
        let request = TrackerRequest::Bitf {
            key,
            bitmap: bitmap.to_field(),
        };
        let _in_turn = self.sending.lock();
        {
            let Books { announced, pending } = &mut *self.books.lock();
            if bitmap.count() == 0 {
                announced.remove(&key);
            } else {
                // Holding pieces of it again: a queued withdrawal is older.
                if matches!(pending.get(&key), Some(TrackerRequest::Rmvf { .. })) {
                    pending.remove(&key);
                }
                if !matches!(announced.get(&key), Some(TrackerRequest::Addf(_))) {
                    announced.insert(key, request.clone());
                }
            }
        }
        self.expect_ok(&request).map(drop)
    }

    /// `RQFS`: searches files.
    pub fn search(&self, criteria: SearchCriteria) -> Result<Vec<FileEntry>, PeerError> {
        self.listing(&TrackerRequest::Rqfs(criteria))?
            .into_iter()
            .map(|reply| match reply {
                Reply::File(entry) => Ok(entry),
                other => Err(PeerError::TrackerProtocol(format!(
                    "expected FILE, got {other}"
                ))),
            })
            .collect()
    }

    /// `LSTF`: who offers what.
    pub fn shares(&self, criteria: SearchCriteria) -> Result<Vec<ShareEntry>, PeerError> {
        self.listing(&TrackerRequest::Lstf(criteria))?
            .into_iter()
            .map(|reply| match reply {
                Reply::Share(entry) => Ok(entry),
                other => Err(PeerError::TrackerProtocol(format!(
                    "expected SHAR, got {other}"
                ))),
            })
            .collect()
    }

    /// `REQF`: the peers that hold a file (an unknown file holds none).
    pub fn holders(&self, key: FileKey) -> Result<Vec<PeerEntry>, PeerError> {
        match self.listing(&TrackerRequest::Reqf { key }) {
            Err(PeerError::TrackerRefused {
                code: crate::protocol::ErrorCode::UnknownFile,
                ..
            }) => Ok(Vec::new()),
            result => result?
                .into_iter()
                .map(|reply| match reply {
                    Reply::Peer(entry) => Ok(entry),
                    other => Err(PeerError::TrackerProtocol(format!(
                        "expected PEER, got {other}"
                    ))),
                })
                .collect(),
        }
    }

    /// `USRS`: the named users and their peer ids.
    pub fn users(&self) -> Result<Vec<(UserName, PeerId)>, PeerError> {
        self.listing(&TrackerRequest::Usrs)?
            .into_iter()
            .map(|reply| match reply {
                Reply::User { user, peer } => Ok((user, peer)),
                other => Err(PeerError::TrackerProtocol(format!(
                    "expected USER, got {other}"
                ))),
            })
            .collect()
    }

    /// Drops the connection if the tracker closed it (it restarted, or
    /// dropped the session) or said something unasked, so that the next
    /// call opens a new session at once, not at the next ping. Returns
    /// what it found. Looks only when no exchange is under way.
    pub fn drop_if_closed(&self) -> SessionCheck {
        if self.is_stopping() {
            return SessionCheck::Open;
        }
        let Some(mut guard) = self.conn.try_lock() else {
            return SessionCheck::Open;
        };
        let Some(conn) = guard.as_mut() else {
            return SessionCheck::Open;
        };
        if conn.reader.buffered() == 0 && is_quiet_and_open(conn.writer.get_ref()) {
            return SessionCheck::Open;
        }
        // Its last word, if it said one (sent just before it closed).
        conn.reader.get_mut().deadline = Some(Instant::now() + LAST_WORD_WAIT);
        let idle = match conn.reader.read_line() {
            Ok(Some(Ok(line))) => matches!(
                Reply::parse(line),
                Ok(Reply::Error {
                    code: ErrorCode::IdleTimeout,
                    ..
                })
            ),
            _ => false,
        };
        *guard = None;
        if idle {
            SessionCheck::ClosedAsIdle
        } else {
            SessionCheck::Closed
        }
    }

    /// `PING`: keeps the session alive.
    pub fn ping(&self) -> Result<(), PeerError> {
        self.expect_ok(&TrackerRequest::Ping).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};

    #[test]
    fn the_latest_change_of_a_file_is_the_one_queued() {
        // No tracker there: nothing is sent, the queue is what is checked.
        let client = TrackerClient::new("127.0.0.1:1".parse().unwrap(), None)
            .with_deadline(Duration::from_millis(200));
        let queued = |client: &TrackerClient, n: u8| {
            client
                .books
                .lock()
                .pending
                .get(&FileKey([n; 32]))
                .map(TrackerRequest::verb)
        };
        // Offered, then withdrawn: only the withdrawal goes out.
        client.offer_soon(&offer_of(1));
        client.withdraw_soon(FileKey([1; 32]));
        assert_eq!(queued(&client, 1), Some("RMVF"));
        assert!(!client
            .books
            .lock()
            .announced
            .contains_key(&FileKey([1; 32])));
        // Withdrawn, then offered again: only the offer.
        client.offer_soon(&offer_of(1));
        assert_eq!(queued(&client, 1), Some("ADDF"));
        // Queued, then withdrawn at once (unshared): nothing left to send.
        client.offer_soon(&offer_of(2));
        assert!(client.withdraw(FileKey([2; 32])).is_err(), "no tracker");
        assert_eq!(queued(&client, 2), None);
        // A queued withdrawal, then pieces of it reported: it is held again.
        client.withdraw_soon(FileKey([3; 32]));
        let _ = client.report(FileKey([3; 32]), &Bitmap::full(3));
        assert_eq!(queued(&client, 3), None);
    }

    #[test]
    fn an_offer_the_tracker_has_no_room_for_is_offered_again_later() {
        use crate::tracker::{Tracker, TrackerOptions};
        let tracker = Tracker::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            TrackerOptions {
                max_offer_bytes: 1 << 20,
                ..TrackerOptions::default()
            },
        )
        .unwrap();
        // Another peer fills the room with offers of long paths.
        let filler = TrackerClient::new(
            tracker.local_addr(),
            Some(Identity {
                listen_port: 7001,
                listen_ip: None,
                user: None,
            }),
        );
        let offer = |n: u32, path: &str| {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&n.to_be_bytes());
            let line = format!("ADDF {} f{n}.bin 10 16384 other {path}", FileKey(key));
            match TrackerRequest::parse(&line).unwrap() {
                TrackerRequest::Addf(offer) => offer,
                other => panic!("{other:?}"),
            }
        };
        // (Long paths first, then shorter ones into what room is left,
        // down to none for the shortest: whatever an offer is counted.)
        let mut n = 1;
        for len in [4000, 400, 40, 1] {
            let path = format!("/{}", "d".repeat(len));
            filler.books.lock().pending.clear();
            while filler.offer(&offer(n, &path)).is_ok() && filler.books.lock().pending.is_empty() {
                n += 1;
            }
            n += 1;
        }
        // Refused for lack of room: kept, and not sent again at once.
        let ours = TrackerClient::new(
            tracker.local_addr(),
            Some(Identity {
                listen_port: 7002,
                listen_ip: None,
                user: None,
            }),
        );
        let mine = offer(100_000, "/mine.bin");
        assert!(ours.offer(&mine).is_ok(), "kept for later, not an error");
        assert_eq!(ours.books.lock().pending.len(), 1);
        ours.flush().unwrap();
        assert_eq!(
            ours.books.lock().pending.len(),
            1,
            "not tried again at once"
        );
        // One the tracker never took, unshared: done, nothing left queued.
        let other = offer(100_001, "/other.bin");
        assert!(ours.offer(&other).is_ok());
        assert_eq!(ours.books.lock().pending.len(), 2);
        assert!(
            ours.withdraw(other.key).is_ok(),
            "nothing to withdraw there"
        );
        assert_eq!(ours.books.lock().pending.len(), 1);
        // Room comes back; the next try, past its wait, gets in.
        filler.stop();
        *ours.full_at.lock() = Some(Instant::now() - FULL_RETRY);
        ours.flush().unwrap();
        assert!(ours.books.lock().pending.is_empty());
        let listed = ours
            .search(SearchCriteria::parse("f100000").unwrap())
            .unwrap();
        assert_eq!(listed.len(), 1);
        tracker.shutdown();
    }

    type Script = Box<dyn FnOnce(TcpStream) + Send>;

    /// A fake tracker on 127.0.0.1: connection `i` is handled by
    /// `scripts[i]`, each on its own named thread; the returned thread
    /// accepts them all, then joins their handlers.
    fn fake_tracker(scripts: Vec<Script>) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = thread::Builder::new()
            .name("fake-tracker".into())
            .spawn(move || {
                let mut handlers = Vec::new();
                // A client that never connects fails the test, not hangs it.
                listener.set_nonblocking(true).unwrap();
                let accept = || {
                    let give_up = std::time::Instant::now() + Duration::from_secs(60);
                    loop {
                        match listener.accept() {
                            Ok((stream, _)) => break stream,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                assert!(std::time::Instant::now() < give_up, "no connection");
                                thread::sleep(Duration::from_millis(10));
                            }
                            Err(e) => panic!("accept: {e}"),
                        }
                    }
                };
                for (i, script) in scripts.into_iter().enumerate() {
                    let stream = accept();
                    stream.set_nonblocking(false).unwrap();
                    // A bound on any wait, should the client misbehave.
                    stream
                        .set_read_timeout(Some(Duration::from_secs(60)))
                        .unwrap();
                    let handler = thread::Builder::new()
                        .name(format!("fake-tracker-conn-{i}"))
                        .spawn(move || script(stream))
                        .unwrap();
                    handlers.push(handler);
                }
                for handler in handlers {
                    handler.join().unwrap();
                }
            })
            .unwrap();
        (addr, acceptor)
    }

    /// Answers each request line read with the next answer, until the
    /// answers or the connection run out.
    fn serve(answers: Vec<Vec<String>>) -> Script {
        Box::new(move |stream| {
            let mut requests = BufReader::new(stream.try_clone().unwrap());
            let mut out = BufWriter::new(stream);
            for answer in answers {
                let mut request = String::new();
                if requests.read_line(&mut request).unwrap_or(0) == 0 {
                    return;
                }
                for line in answer {
                    if writeln!(out, "{line}").is_err() {
                        return;
                    }
                }
                if out.flush().is_err() {
                    return;
                }
            }
        })
    }

    /// The request lines a fake tracker read, in order.
    type Seen = std::sync::Arc<Mutex<Vec<String>>>;

    /// Answers each request line with `OK` (a peer id to `HELO`), each after
    /// `delay`, until the connection ends; notes each line in `seen`.
    fn answer_slowly(delay: Duration, seen: Seen) -> Script {
        Box::new(move |stream| {
            let requests = BufReader::new(stream.try_clone().unwrap());
            let mut out = stream;
            for request in requests.lines() {
                let Ok(request) = request else { return };
                seen.lock().push(request.clone());
                thread::sleep(delay);
                let answer = if request.starts_with("HELO") {
                    "OK 127.0.0.1:7001\n"
                } else {
                    "OK\n"
                };
                if out.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
        })
    }

    /// An offer of file `n` (its key is `n` repeated).
    fn offer_of(n: u8) -> FileOffer {
        let line = format!(
            "ADDF {} f{n}.bin 10 16384 other /f{n}.bin",
            FileKey([n; 32])
        );
        match TrackerRequest::parse(&line).unwrap() {
            TrackerRequest::Addf(offer) => offer,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_session_announces_each_offer_again_within_a_deadline_of_its_own() {
        // Each answer takes 200 ms, well within the 600 ms deadline; the
        // new session's HELO and six offers told again take 1.4 s in all.
        let delay = Duration::from_millis(200);
        // The first session: HELO, the first offer told to it as it
        // opens and then asked, and the five others; then it ends.
        let first = serve(vec![vec!["OK 127.0.0.1:7001".into()]; 8]);
        let seen = Seen::default();
        let (addr, tracker) = fake_tracker(vec![first, answer_slowly(delay, Seen::clone(&seen))]);
        let identity = Identity {
            listen_port: 7001,
            listen_ip: None,
            user: None,
        };
        let client =
            std::sync::Arc::new(TrackerClient::new(addr, Some(identity)).with_deadline(3 * delay));
        for n in 0..6 {
            client.offer(&offer_of(n)).unwrap();
        }
        // The first connection ends (a tracker restarted): the next call
        // opens a session on the second, which is told all six again.
        assert!(eventually_closed(&client));
        let reopening = thread::spawn({
            let client = std::sync::Arc::clone(&client);
            move || client.ping()
        });
        // An offer made meanwhile (once the new session's HELO is out)
        // waits its turn past its deadline: it is not lost, but sent by
        // the next round's flush on that session.
        let until = Instant::now() + Duration::from_secs(10);
        while !seen.lock().iter().any(|line| line.starts_with("HELO")) {
            assert!(Instant::now() < until, "the new session's HELO is sent");
            thread::sleep(Duration::from_millis(5));
        }
        assert!(
            client.offer(&offer_of(6)).is_err(),
            "waited past its deadline"
        );
        reopening
            .join()
            .unwrap()
            .expect("a new session, each offer within the deadline");
        assert_eq!(client.session_number(), 2);
        client.flush().unwrap();
        let late = format!("ADDF {}", FileKey([6; 32]));
        assert!(seen.lock().iter().any(|line| line.starts_with(&late)));
        drop(client);
        tracker.join().unwrap();
    }

    /// Waits until the client sees its connection closed by the other end.
    fn eventually_closed(client: &TrackerClient) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if client.drop_if_closed() != SessionCheck::Open {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn an_exchange_waiting_its_turn_has_its_whole_deadline_once_it_has_the_connection() {
        // Every answer takes 1 s of a 1.5 s deadline: two asked at once
        // both get theirs, the second after waiting for the first.
        let delay = Duration::from_secs(1);
        let (addr, tracker) = fake_tracker(vec![answer_slowly(delay, Seen::default())]);
        let client =
            std::sync::Arc::new(TrackerClient::new(addr, None).with_deadline(delay * 3 / 2));
        let asking: Vec<_> = (0..2)
            .map(|_| {
                let client = std::sync::Arc::clone(&client);
                thread::spawn(move || client.ping())
            })
            .collect();
        for asked in asking {
            asked
                .join()
                .unwrap()
                .expect("each in its turn, within its deadline");
        }
        drop(client);
        tracker.join().unwrap();
    }

    /// Reads one request, then answers a byte every 500 ms (well within
    /// the 5 s read timeout) and never a newline, until the client hangs
    /// up (or 60 s pass).
    fn trickle() -> Script {
        Box::new(|mut stream| {
            let mut request = String::new();
            let _ = BufReader::new(&stream).read_line(&mut request);
            for _ in 0..120 {
                if stream.write_all(b"O").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    }

    #[test]
    fn a_tracker_that_trickles_bytes_without_a_newline_fails_at_the_deadline() {
        let deadline = Duration::from_secs(2);
        let (addr, tracker) = fake_tracker(vec![trickle(), serve(vec![vec!["OK pong".into()]])]);
        let client = TrackerClient::new(addr, None).with_deadline(deadline);
        let started = Instant::now();
        let result = client.ping();
        let took = started.elapsed();
        match &result {
            Err(e @ PeerError::TrackerTooSlow { verb: "PING", .. }) => assert_eq!(
                e.to_string(),
                format!("the tracker at {addr} did not answer PING in full within 2 s")
            ),
            other => panic!("expected the deadline to pass, got {other:?}"),
        }
        assert!(
            took >= deadline,
            "gave up after {took:?}, before the deadline"
        );
        assert!(
            took < deadline + Duration::from_secs(10),
            "the deadline did not hold: {took:?}"
        );
        // The dribbling connection was dropped: the next call opens a new
        // one, which answers.
        client.ping().expect("a new connection answers PING");
        drop(client);
        tracker.join().unwrap();
    }

    #[test]
    fn a_stop_ends_an_exchange_with_a_stalled_tracker_at_once_and_opens_no_other() {
        // Reads the request, and answers nothing until the connection ends.
        let (connected, exchanging) = crossbeam_channel::bounded(1);
        let stalled: Script = Box::new(move |stream| {
            let _ = connected.send(());
            let _ = std::io::Read::read_to_end(&mut &stream, &mut Vec::new());
        });
        let (addr, tracker) = fake_tracker(vec![stalled]);
        let client = std::sync::Arc::new(TrackerClient::new(addr, None));
        let asking = thread::spawn({
            let client = std::sync::Arc::clone(&client);
            move || {
                let started = Instant::now();
                (client.ping(), started.elapsed())
            }
        });
        exchanging
            .recv_timeout(Duration::from_secs(10))
            .expect("the exchange began");
        client.stop();
        let (result, took) = asking.join().unwrap();
        assert!(result.is_err(), "{result:?}");
        assert!(took < EXCHANGE_DEADLINE / 2, "waited {took:?}");
        // Stopped: nothing more is asked (the fake takes one connection).
        let after = client.ping().unwrap_err();
        assert_eq!(after.to_string(), "the peer is stopping");
        tracker.join().unwrap();
    }

    #[test]
    fn a_peer_given_as_the_tracker_is_named_as_such() {
        let answer = r#"ERRR 200 unknown verb "HELO"; verbs here: BITF MANF REQF LSTF PING QUIT"#;
        let (addr, tracker) = fake_tracker(vec![serve(vec![vec![answer.into()]])]);
        let identity = Identity {
            listen_port: 7000,
            listen_ip: None,
            user: None,
        };
        let client = TrackerClient::new(addr, Some(identity));
        let error = client.ping().unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{addr} answers as a peer, not as a tracker")),
            "{error}"
        );
        client.stop();
        tracker.join().unwrap();
        // A search needs no session: its own verb is the one refused.
        let error = search_refused_with(
            r#"ERRR 200 unknown verb "RQFS"; verbs here: BITF MANF REQF LSTF PING QUIT"#,
        );
        assert!(
            error.contains("answers as a peer, not as a tracker"),
            "{error}"
        );
    }

    /// What a search says when the tracker answers it with `answer`.
    fn search_refused_with(answer: &str) -> String {
        let (addr, tracker) = fake_tracker(vec![serve(vec![vec![answer.into()]])]);
        let client = TrackerClient::new(addr, None);
        let error = client
            .search(SearchCriteria::default())
            .unwrap_err()
            .to_string();
        client.stop();
        tracker.join().unwrap();
        error
    }

    #[test]
    fn a_refusal_s_words_are_shown_with_control_characters_escaped() {
        // Another tracker than ours may echo what it was sent, raw.
        let error = search_refused_with("ERRR 400 no file x\rFORGED \u{1b}[2J");
        assert!(error.contains(r"no file x\rFORGED \u{1b}[2J"), "{error}");
        assert!(
            !error.contains('\r') && !error.contains('\u{1b}'),
            "{error}"
        );
    }

    #[test]
    fn a_listing_longer_than_its_cap_fails_clearly() {
        let files = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("FILE {i:064x} f{i}.txt 5 16384 other 1 0"))
                .chain(["END".to_string()])
                .collect()
        };
        let peers = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("PEER 127.0.0.1:{} - seeder 1", 1024 + i))
                .chain(["END".to_string()])
                .collect()
        };
        let max_peers = crate::tracker::MAX_PEERS_PER_REPLY;
        let (addr, tracker) = fake_tracker(vec![
            serve(vec![files(MAX_RESULTS), files(MAX_RESULTS + 1)]),
            serve(vec![peers(max_peers + 1)]),
        ]);
        let client = TrackerClient::new(addr, None);
        // At the cap: every line.
        let found = client.search(SearchCriteria::default()).unwrap();
        assert_eq!(found.len(), MAX_RESULTS);
        // One more: refused, saying why.
        match client.search(SearchCriteria::default()) {
            Err(PeerError::TrackerProtocol(text)) => assert_eq!(
                text,
                format!("a listing of over {MAX_RESULTS} lines in answer to RQFS")
            ),
            other => panic!("expected the listing to be refused, got {other:?}"),
        }
        // The rest of that listing is not read as the next answer: the
        // next call opens a new connection.
        match client.holders(FileKey([7; 32])) {
            Err(PeerError::TrackerProtocol(text)) => {
                assert_eq!(
                    text,
                    format!("a listing of over {max_peers} lines in answer to REQF")
                )
            }
            other => panic!("expected the listing to be refused, got {other:?}"),
        }
        drop(client);
        tracker.join().unwrap();
    }
}
