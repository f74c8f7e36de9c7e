//! The shared blocking accept loop: the caller binds the listener (with
//! [`bind_listener`], the same way on every system), this module accepts
//! connections, gives each one a named OS thread, enforces the connection
//! cap, and on shutdown closes every connection and joins every thread it
//! started.
//!
//! Used by the tracker, and by each peer's mini-server. It knows nothing of
//! what is said on a connection: that is the handler's job.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use parking_lot::Mutex;

use crate::logging::network_warning;
use crate::protocol::{ErrorCode, Reply};
use crate::wire::StopSignal;

/// Stack size of a line-protocol connection thread: small, so hundreds of
/// sessions cost little memory. Handlers keep big buffers on the heap.
pub const CONNECTION_STACK_SIZE: usize = 256 * 1024;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Thread names are `<name>-accept` and `<name>-<remote address>`.
    pub name: String,
    /// Connections served at once; the one past the cap is told so
    /// ([`ServerOptions::busy`]) and closed.
    pub max_connections: usize,
    /// Connections served at once from one IP address, likewise.
    pub max_per_ip: usize,
    /// What a connection past a cap is told, given a sentence saying why,
    /// before it is closed: [`busy_line`] for the line protocol.
    pub busy: fn(&str) -> Vec<u8>,
    /// Stack size of each connection's thread ([`CONNECTION_STACK_SIZE`]
    /// for the line protocol).
    pub stack_size: usize,
    /// At a cap, close the connection that has waited longest for a
    /// request (see [`Connection::waiting`]) to make room, rather than
    /// refuse the new one: for the web page, where a client's idle
    /// keep-alive connections (or heads sent a byte at a time) must not
    /// keep the next one out.
    pub make_room: bool,
}

impl ServerOptions {
    /// The options of a line-protocol server (the tracker, a peer's
    /// mini-server): refusals as `ERRR 500`, small thread stacks.
    pub fn lines(name: &str, max_connections: usize, max_per_ip: usize) -> ServerOptions {
        ServerOptions {
            name: name.into(),
            max_connections,
            max_per_ip,
            busy: busy_line,
            stack_size: CONNECTION_STACK_SIZE,
            make_room: false,
        }
    }
}

/// Where a connection wakes the accept loop of `listener`, bound at
/// `local`: that address itself, or loopback for a wildcard one. For `::`,
/// IPv4's loopback first when the socket takes IPv4 too (some hosts have
/// no IPv6 loopback), then IPv6's, in turns.
fn wake_addresses(listener: &TcpListener, local: SocketAddr) -> Vec<SocketAddr> {
    let port = local.port();
    let ipv4 = SocketAddr::from(([127, 0, 0, 1], port));
    let ipv6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    match local {
        addr if !addr.ip().is_unspecified() => vec![addr],
        SocketAddr::V4(_) => vec![ipv4],
        SocketAddr::V6(_) => match socket2::SockRef::from(listener).only_v6() {
            Ok(false) => vec![ipv4, ipv6],
            _ => vec![ipv6],
        },
    }
}

/// Open files a server asks the system to allow this process.
#[cfg(unix)]
const OPEN_FILES_WANTED: u64 = 65_536;

/// Raises this process's limit of open files towards [`OPEN_FILES_WANTED`],
/// as far as the system lets it. Each connection takes one or two (a
/// socket and its clone), and macOS starts programs at 256: a class's
/// tracker, or a test's 200 clients, need more. (Windows has no such
/// limit on sockets.) Programs it starts inherit the new limit.
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    match rlimit::increase_nofile_limit(OPEN_FILES_WANTED) {
        Ok(most) => debug!("open files: at most {most}"),
        Err(e) => debug!("cannot raise the limit of open files: {e}"),
    }
}

/// Binds a listening socket at `addr` the same way on every system. The
/// IPv6 wildcard (`::`) takes IPv4 clients too, as Linux and macOS do by
/// default and Windows does not (there it would take IPv6 alone, and a
/// peer told `127.0.0.1` could not reach it). Any other address is bound
/// as the standard library binds it.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    if !(addr.is_ipv6() && addr.ip().is_unspecified()) {
        return TcpListener::bind(addr);
    }
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    // A system without IPv4 on IPv6 sockets keeps IPv6 alone.
    let _ = socket.set_only_v6(false);
    // As the standard library does on Unix: a port left in TIME_WAIT by a
    // server just stopped can be bound again at once. (On Windows the
    // option would let another program take the port: not set there.)
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    // The standard library's backlog, as for every other address.
    socket.listen(128)?;
    Ok(socket.into())
}

/// The line-protocol refusal of a connection past a cap: `ERRR 500 ...`.
pub fn busy_line(sentence: &str) -> Vec<u8> {
    format!("{}\n", Reply::error(ErrorCode::Busy, sentence)).into_bytes()
}

/// A connection handed to the handler.
pub struct Connection {
    /// The accepted socket.
    pub stream: TcpStream,
    /// Where it comes from.
    pub remote: SocketAddr,
    /// Unique for the life of the server (starts at 1).
    pub id: u64,
    /// Raised when the server stops: the handler's reads under it end
    /// (see [`StopSignal`]; closing the socket does that on Linux and
    /// macOS, not on Windows).
    pub stop: StopSignal,
    /// Marked by the handler while it waits for a request (see
    /// [`Waiting`]): such a one may be closed to make room for a new one
    /// ([`ServerOptions::make_room`]).
    pub waiting: Arc<Waiting>,
}

/// Since when a connection has waited for a request (idle between two,
/// or with a request's head not all there yet), or that it is serving one.
#[derive(Debug, Default)]
pub struct Waiting {
    /// Microseconds from the first server's start, plus one; 0 while the
    /// connection serves a request.
    since: AtomicU64,
}

impl Waiting {
    /// The connection waits for a request from now.
    pub fn begin(&self) {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        let micros = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.since.store(micros + 1, Ordering::SeqCst);
    }

    /// It has its request, and serves it.
    pub fn end(&self) {
        self.since.store(0, Ordering::SeqCst);
    }

    /// Since when it waits (a tick to compare with others'), if it does.
    fn since(&self) -> Option<u64> {
        Some(self.since.load(Ordering::SeqCst)).filter(|&since| since > 0)
    }
}

/// What runs on each connection's thread.
pub type Handler = dyn Fn(Connection) + Send + Sync + 'static;

/// A running server. Dropping it shuts it down.
pub struct Server {
    local_addr: SocketAddr,
    /// Where a connection to ourselves wakes the accept loop at shutdown.
    wake_at: Vec<SocketAddr>,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// State shared by the accept thread, the connection threads and `Server`.
struct Shared {
    stopping: StopSignal,
    live: Mutex<Live>,
    next_id: AtomicU64,
}

/// The open connections: a clone of each socket (to close them on
/// shutdown, or one to make room) with the IP it comes from and since
/// when it waits for a request, and a count per IP (for the per-IP cap, without a scan of
/// every connection at each accept).
#[derive(Default)]
struct Live {
    sockets: HashMap<u64, LiveSocket>,
    per_ip: HashMap<IpAddr, usize>,
}

struct LiveSocket {
    stream: TcpStream,
    ip: IpAddr,
    waiting: Arc<Waiting>,
}

impl Live {
    fn len(&self) -> usize {
        self.sockets.len()
    }

    fn count_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    fn insert(&mut self, id: u64, stream: TcpStream, ip: IpAddr, waiting: Arc<Waiting>) {
        self.sockets.insert(
            id,
            LiveSocket {
                stream,
                ip,
                waiting,
            },
        );
        *self.per_ip.entry(ip).or_default() += 1;
    }

    fn remove(&mut self, id: u64) -> Option<TcpStream> {
        let LiveSocket { stream, ip, .. } = self.sockets.remove(&id)?;
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
        Some(stream)
    }

    /// Closes the connection (from `ip`, if given) that has waited
    /// longest for a request, to make room; true if there was one. Its
    /// thread then ends and takes it off the list.
    fn close_longest_waiting(&mut self, ip: Option<IpAddr>) -> bool {
        let longest = self
            .sockets
            .values()
            .filter(|socket| ip.is_none_or(|ip| socket.ip == ip))
            .filter_map(|socket| Some((socket.waiting.since()?, socket)))
            .min_by_key(|(since, _)| *since);
        let Some((_, socket)) = longest else {
            return false;
        };
        // (Not chosen again while it closes.)
        socket.waiting.end();
        let _ = socket.stream.shutdown(Shutdown::Both);
        true
    }

    fn drain(&mut self) -> Vec<TcpStream> {
        self.per_ip.clear();
        self.sockets
            .drain()
            .map(|(_, socket)| socket.stream)
            .collect()
    }
}

impl Server {
    /// Starts accepting on `listener` (already bound by the caller).
    pub fn start(
        listener: TcpListener,
        options: ServerOptions,
        handler: Arc<Handler>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let wake_at = wake_addresses(&listener, local_addr);
        let shared = Arc::new(Shared {
            stopping: StopSignal::new(),
            live: Mutex::new(Live::default()),
            next_id: AtomicU64::new(1),
        });
        let accept_thread = thread::Builder::new()
            .name(format!("{}-accept", options.name))
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(listener, options, handler, shared)
            })?;
        Ok(Server {
            local_addr,
            wake_at,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections open right now.
    pub fn connection_count(&self) -> usize {
        self.shared.live.lock().len()
    }

    /// Stops accepting, closes every connection, and joins every thread.
    /// The accept thread, which joins the connection threads, is woken by a
    /// connection to the listener. If 20 tries all fail (each waits at most
    /// 1 s, 100 ms apart; no descriptor left, say), it is left blocked with
    /// a warning, and its connection threads are not joined: each was
    /// closed already and ends on its own.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        self.shared.stopping.raise();
        // Close every connection first: their threads wake from their reads
        // and end, which also frees their descriptors for the wake-up below.
        for socket in self.shared.live.lock().sockets.values() {
            let _ = socket.stream.shutdown(Shutdown::Both);
        }
        // `accept` blocks; a connection to ourselves wakes it so it can see
        // the flag.
        const ATTEMPTS: usize = 20;
        for attempt in 1..=ATTEMPTS {
            let wake = self.wake_at[(attempt - 1) % self.wake_at.len()];
            match TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
                Ok(_) => {
                    if accept_thread.join().is_err() {
                        warn!("the accept thread panicked");
                    }
                    return;
                }
                Err(e) if attempt == ATTEMPTS => {
                    warn!("could not wake the accept thread on {wake}: {e}; leaving it");
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Failures to take a connection, which repeat for as long as their
/// cause lasts: out of file descriptors, `accept` fails every 50 ms, or
/// each accepted connection cannot be given its second handle. Told at
/// most once a second, with how many there were since they began, and so
/// is the end of them (a line per failure filled the log with dozens of
/// lines a second, and so did a line per failure and per success when
/// the two alternate, at the very limit).
#[derive(Default)]
struct RepeatedFailure {
    /// Connections not taken since the failures began.
    count: u64,
    /// When a line about them was last written.
    told: Option<Instant>,
}

impl RepeatedFailure {
    /// The most often a line about failures is written.
    const TELL_EVERY: Duration = Duration::from_secs(1);

    fn may_tell(&self) -> bool {
        self.told.is_none_or(|at| at.elapsed() >= Self::TELL_EVERY)
    }

    /// A failure; the line to log, if one may be written now.
    fn failed(&mut self, what: &str, error: &io::Error) -> Option<String> {
        self.count += 1;
        self.may_tell().then(|| {
            self.told = Some(Instant::now());
            format!(
                "{what}: {error} ({} not taken since this began)",
                crate::units::count(self.count, "connection")
            )
        })
    }

    /// A connection was served; the line to log, if failures came before
    /// and a line may be written now (until then they are taken to go
    /// on).
    fn served(&mut self) -> Option<String> {
        (self.count > 0 && self.may_tell()).then(|| {
            self.told = Some(Instant::now());
            let line = format!(
                "serving again, after {} not taken",
                crate::units::count(self.count, "connection")
            );
            self.count = 0;
            line
        })
    }
}

/// What became of an accepted connection.
enum Taken {
    /// A thread serves it.
    Served,
    /// Told the server is full, and closed.
    Refused,
    /// Closed by the client before it was taken (reset as it came): no
    /// failure of the server's, and anyone can cause it, so not worth a
    /// warning.
    Gone,
}

fn accept_loop(
    listener: TcpListener,
    options: ServerOptions,
    handler: Arc<Handler>,
    shared: Arc<Shared>,
) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut failure = RepeatedFailure::default();
    for incoming in listener.incoming() {
        if shared.stopping.is_raised() {
            break;
        }
        let stream = match incoming {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before we
                // took it: wait a moment so a persistent error cannot spin.
                if let Some(line) = failure.failed("accept failed", &e) {
                    warn!("{line}");
                }
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        workers = join_finished(workers);
        let told = match spawn_connection(stream, &options, &handler, &shared, &mut workers) {
            Ok(Taken::Served) => failure.served(),
            Ok(Taken::Refused | Taken::Gone) => None,
            Err(e) => failure.failed("connection not served", &e),
        };
        if let Some(line) = told {
            warn!("{line}");
        }
    }
    // Closing the sockets wakes every connection thread blocked in a read
    // (`Server::stop` closed those open then; these are the ones whose
    // threads have not ended yet, and any accepted since).
    let live: Vec<TcpStream> = shared.live.lock().drain();
    info!(
        "stopping: waiting for {} connection thread(s) to end",
        live.len()
    );
    for stream in live {
        let _ = stream.shutdown(Shutdown::Both);
    }
    for worker in workers {
        if worker.join().is_err() {
            warn!("a connection thread panicked");
        }
    }
}

fn spawn_connection(
    stream: TcpStream,
    options: &ServerOptions,
    handler: &Arc<Handler>,
    shared: &Arc<Shared>,
    workers: &mut Vec<JoinHandle<()>>,
) -> io::Result<Taken> {
    let remote = match stream.peer_addr() {
        Ok(remote) => remote,
        Err(e) => {
            debug!("a connection closed before it was taken: {e}");
            return Ok(Taken::Gone);
        }
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (open, from_ip) = {
        let live = shared.live.lock();
        (live.len(), live.count_from(remote.ip()))
    };
    let full = if open >= options.max_connections {
        Some((
            format!(
                "server busy: {} already open, try again later",
                crate::units::count(open as u64, "connection")
            ),
            None,
        ))
    } else if from_ip >= options.max_per_ip {
        Some((
            format!(
                "too many connections from {}: {from_ip} already open",
                remote.ip()
            ),
            Some(remote.ip()),
        ))
    } else {
        None
    };
    if let Some((text, from)) = full {
        // Room made by closing one that waits, where the server may.
        let made_room = options.make_room && shared.live.lock().close_longest_waiting(from);
        if !made_room {
            network_warning(format_args!("refusing {remote}: {text}"));
            refuse(stream, options.busy, &text);
            return Ok(Taken::Refused);
        }
    }
    // The clone lets shutdown close this connection from outside its thread.
    let clone = match stream.try_clone() {
        Ok(clone) => clone,
        Err(e) => {
            refuse(stream, options.busy, OUT_OF_RESOURCES);
            return Err(e);
        }
    };
    let waiting = Arc::new(Waiting::default());
    shared
        .live
        .lock()
        .insert(id, clone, remote.ip(), Arc::clone(&waiting));
    let spawned = thread::Builder::new()
        .name(format!("{}-{remote}", options.name))
        .stack_size(options.stack_size)
        .spawn({
            let handler = Arc::clone(handler);
            let shared = Arc::clone(shared);
            move || {
                debug!("connection {id} from {remote} opened");
                // Off the live list when this thread ends, even by a panic
                // (else its IP's count would never come down).
                let stop = shared.stopping.clone();
                let _live = LiveGuard { shared, id };
                handler(Connection {
                    stream,
                    remote,
                    id,
                    stop,
                    waiting,
                });
                debug!("connection {id} from {remote} closed");
            }
        });
    match spawned {
        Ok(worker) => {
            workers.push(worker);
            Ok(Taken::Served)
        }
        Err(e) => {
            // Out of threads: the cap is set too high for this machine.
            if let Some(stream) = shared.live.lock().remove(id) {
                refuse(stream, options.busy, OUT_OF_RESOURCES);
            }
            Err(e)
        }
    }
}

/// Takes a connection off the live list when dropped.
struct LiveGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.shared.live.lock().remove(self.id);
    }
}

/// What a client is told when no thread or socket could be had for it.
const OUT_OF_RESOURCES: &str = "server out of resources, try again later";

/// Tells a client the server cannot take it (`sentence`, as `busy` puts
/// it: [`ServerOptions::busy`]), then closes. Bounded in time: a client
/// that does not read cannot hold the accept thread.
///
/// What the client already sent (its first request) is read and dropped
/// before closing, without waiting: a socket closed with bytes unread
/// sends a reset, which on some systems destroys the answer before the
/// client reads it.
fn refuse(mut stream: TcpStream, busy: fn(&str) -> Vec<u8>, sentence: &str) {
    const MAX_DRAINED: usize = 64 * 1024;
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = stream.write_all(&busy(sentence));
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0; 4096];
        let mut drained = 0;
        while drained < MAX_DRAINED {
            match stream.read(&mut sink) {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}

/// Joins the threads that are done, keeps the others.
fn join_finished(workers: Vec<JoinHandle<()>>) -> Vec<JoinHandle<()>> {
    let (done, running): (Vec<_>, Vec<_>) = workers.into_iter().partition(|w| w.is_finished());
    for worker in done {
        if worker.join().is_err() {
            warn!("a connection thread panicked");
        }
    }
    running
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};

    use crate::wire::{IdleDeadline, LineReader};

    #[test]
    fn the_ipv6_wildcard_takes_ipv4_clients_on_every_system() {
        // Where the machine has no IPv6 at all, there is nothing to check.
        let Ok(listener) = bind_listener("[::]:0".parse().unwrap()) else {
            return;
        };
        assert_eq!(
            socket2::SockRef::from(&listener).only_v6().ok(),
            Some(false),
            "dual-stack, as Windows is not by default"
        );
        let port = listener.local_addr().unwrap().port();
        TcpStream::connect(("127.0.0.1", port)).expect("an IPv4 client gets in");
        // And a server on it stops, waking its accept loop over IPv4.
        let options = ServerOptions::lines("dual", 4, 4);
        let handler: Arc<Handler> = Arc::new(|_conn: Connection| {});
        let server = Server::start(listener, options, handler).unwrap();
        server.shutdown();
        // Any other address is bound as before.
        let plain = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(plain.local_addr().unwrap().is_ipv4());
    }

    fn echo_server(max_connections: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let options = ServerOptions::lines("echo", max_connections, max_connections);
        let handler: Arc<Handler> = Arc::new(|conn: Connection| {
            // Read under the stop signal, as every handler must: on
            // Windows closing the socket does not end a read.
            let reading =
                IdleDeadline::stopped_by(&conn.stream, Duration::from_secs(60), conn.stop);
            let mut reader = LineReader::new(reading, 1024);
            let mut writer = &conn.stream;
            while let Ok(Some(Ok(line))) = reader.read_line() {
                let name = thread::current().name().unwrap_or("?").to_string();
                let _ = writeln!(writer, "{name} {line}");
            }
        });
        Server::start(listener, options, handler).unwrap()
    }

    fn round_trip(stream: &mut TcpStream, text: &str) -> String {
        writeln!(stream, "{text}").unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    }

    #[test]
    fn failures_to_take_connections_are_told_once_a_second_however_they_alternate() {
        let mut failure = RepeatedFailure::default();
        let out_of_files = io::Error::from_raw_os_error(24);
        let first = failure.failed("connection not served", &out_of_files);
        assert!(
            first.is_some_and(|line| line.ends_with("(1 connection not taken since this began)"))
        );
        // At the very limit, failures and successes alternate: no line
        // until a second has passed.
        for _ in 0..100 {
            assert_eq!(failure.failed("connection not served", &out_of_files), None);
            assert_eq!(failure.served(), None);
        }
        failure.told = Some(Instant::now() - RepeatedFailure::TELL_EVERY);
        assert_eq!(
            failure.served().as_deref(),
            Some("serving again, after 101 connections not taken")
        );
        // Over: the next failure, a second later, is counted anew.
        failure.told = Some(Instant::now() - RepeatedFailure::TELL_EVERY);
        assert!(failure
            .failed("accept failed", &out_of_files)
            .is_some_and(|line| line.ends_with("(1 connection not taken since this began)")));
    }

    #[test]
    fn threads_are_named_after_the_remote_address() {
        let server = echo_server(8);
        let mut client = TcpStream::connect(server.local_addr()).unwrap();
        let local = client.local_addr().unwrap();
        assert_eq!(round_trip(&mut client, "hi"), format!("echo-{local} hi\n"));
        server.shutdown();
    }

    #[test]
    fn the_connection_past_the_cap_is_told_and_closed() {
        let server = echo_server(2);
        let mut first = TcpStream::connect(server.local_addr()).unwrap();
        let mut second = TcpStream::connect(server.local_addr()).unwrap();
        // Round trips prove both are being served before the third arrives.
        round_trip(&mut first, "a");
        round_trip(&mut second, "b");
        let mut third = TcpStream::connect(server.local_addr()).unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("ERRR 500 server busy"), "{answer}");
        drop(first);
        drop(second);
        server.shutdown();
    }

    /// A server of at most two connections that makes room: a connection
    /// is waiting between its lines, except once it said `busy`.
    fn room_making_server() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut options = ServerOptions::lines("room", 2, 2);
        options.make_room = true;
        let handler: Arc<Handler> = Arc::new(|conn: Connection| {
            let reading =
                IdleDeadline::stopped_by(&conn.stream, Duration::from_secs(60), conn.stop);
            let mut reader = LineReader::new(reading, 1024);
            let mut writer = &conn.stream;
            conn.waiting.begin();
            while let Ok(Some(Ok(line))) = reader.read_line() {
                // Waiting again before the answer goes: once the client
                // has it, this connection can be closed to make room.
                if line == "busy" {
                    conn.waiting.end();
                } else {
                    conn.waiting.begin();
                }
                let _ = writeln!(writer, "{line}");
            }
        });
        Server::start(listener, options, handler).unwrap()
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_makes_room_and_a_busy_one_does_not() {
        let server = room_making_server();
        let connect = || {
            let stream = TcpStream::connect(server.local_addr()).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream
        };
        let answer = |stream: &mut TcpStream, line: &str| {
            writeln!(stream, "{line}").unwrap();
            let mut reader = BufReader::new(stream);
            let mut got = String::new();
            reader.read_line(&mut got).unwrap();
            got
        };
        let (mut first, mut second) = (connect(), connect());
        assert_eq!(answer(&mut first, "a"), "a\n");
        assert_eq!(answer(&mut second, "b"), "b\n");
        assert_eq!(answer(&mut first, "a again"), "a again\n");
        // Both wait; `second` has waited longest (`first` was used since),
        // and is closed for the third.
        let mut third = connect();
        assert_eq!(answer(&mut third, "c"), "c\n");
        let mut rest = Vec::new();
        assert_eq!(second.read_to_end(&mut rest).unwrap(), 0, "second closed");
        // Busy, `first` and `third` keep their places: the next is told.
        assert_eq!(answer(&mut first, "busy"), "busy\n");
        assert_eq!(answer(&mut third, "busy"), "busy\n");
        let mut fourth = connect();
        let mut told = String::new();
        fourth.read_to_string(&mut told).unwrap();
        assert!(told.starts_with("ERRR 500 server busy"), "{told}");
        server.shutdown();
    }

    #[test]
    fn shutdown_closes_open_connections_and_returns() {
        let server = echo_server(8);
        let mut client = TcpStream::connect(server.local_addr()).unwrap();
        round_trip(&mut client, "x");
        server.shutdown();
        let mut rest = Vec::new();
        // The server closed our connection: reading ends instead of blocking.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0);
    }
}
