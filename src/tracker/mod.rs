//! The tracker: remembers which peers are online, which files they offer,
//! and how far along each leecher is, and tells anyone who asks.
//!
//! - [`registry`]: the state and its rules (pure, unit-tested);
//! - [`search`]: how search criteria select files;
//! - [`handler`]: one request in, its answer out (pure);
//! - [`welcome`]: the course's hash and welcome services (pure, unit-tested);
//! - [`connection`]: the per-connection read-parse-answer loop, which tells
//!   course lines from native ones;
//! - [`Tracker`]: ties them to a [`Server`] on a caller-bound listener.

pub mod connection;
pub mod handler;
pub mod registry;
pub mod search;
pub mod welcome;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::ring::RingSpace;
use crate::server::{Handler, Server, ServerOptions};

pub use registry::Registry;
pub use welcome::Welcome;

/// The most `max_peers_per_reply` may be set to: the longest `REQF`
/// answer any tracker gives (a peer refuses a longer one as garbage).
pub const MAX_PEERS_PER_REPLY: usize = 10_000;
/// The most `max_results` may be set to: the longest `RQFS` or `LSTF`
/// answer any tracker gives (a peer refuses a longer one as garbage).
pub const MAX_RESULTS: usize = 10_000;
/// The most `max_connections` may be set to. A session lives on one
/// connection and has at most one user name, so it also bounds a `USRS`
/// answer (a peer refuses a longer one as garbage).
pub const MAX_CONNECTIONS: usize = 100_000;

/// The tracker's run-time limits (see `config/tracker.ini`).
#[derive(Debug, Clone)]
pub struct TrackerOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once from one IP address.
    pub max_connections_per_ip: usize,
    /// A connection that sends no complete line for this long is closed
    /// (a client dribbling bytes without a newline too).
    pub keep_alive: Duration,
    /// Longest line accepted, in bytes.
    pub max_line: usize,
    /// Most peers listed in one `REQF` answer.
    pub max_peers: usize,
    /// Most lines in one `RQFS` or `LSTF` answer.
    pub max_results: usize,
    /// Most files one session may offer or report on.
    pub max_files_per_session: usize,
    /// Room for all offers together (see [`Registry::bytes`]).
    pub max_offer_bytes: usize,
    /// How many ids the course's ring has (hash and welcome services).
    pub ring_size: u64,
    /// The port ring peers usually listen on: a `yo` without a port means
    /// it, and addresses on it are written without it.
    pub ring_port: u16,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        TrackerOptions {
            max_connections: 1024,
            max_connections_per_ip: 128,
            keep_alive: Duration::from_secs(120),
            max_line: crate::protocol::DEFAULT_MAX_LINE,
            max_peers: 50,
            max_results: 1000,
            max_files_per_session: 1000,
            max_offer_bytes: registry::DEFAULT_MAX_OFFER_BYTES,
            ring_size: 65536,
            ring_port: 7000,
        }
    }
}

/// What every connection thread shares.
pub(crate) struct TrackerState {
    pub(crate) registry: RwLock<Registry>,
    pub(crate) options: TrackerOptions,
    /// The course's hash and welcome services.
    pub(crate) welcome: Mutex<Welcome>,
}

/// A running tracker. Dropping it, or [`Tracker::shutdown`], stops it and
/// joins its threads.
pub struct Tracker {
    server: Server,
    state: Arc<TrackerState>,
}

impl Tracker {
    /// Starts serving on `listener`, which the caller has bound. An
    /// invalid `ring_size` is an `InvalidInput` error.
    pub fn start(listener: TcpListener, options: TrackerOptions) -> io::Result<Tracker> {
        let space = RingSpace::new(options.ring_size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let state = Arc::new(TrackerState {
            registry: RwLock::new(
                Registry::new(options.max_files_per_session)
                    .with_max_offer_bytes(options.max_offer_bytes),
            ),
            welcome: Mutex::new(Welcome::new(space, options.ring_port)),
            options,
        });
        let server_options = ServerOptions::lines(
            "tracker",
            state.options.max_connections,
            state.options.max_connections_per_ip,
        );
        let handler: Arc<Handler> = Arc::new({
            let state = Arc::clone(&state);
            move |conn| connection::serve(conn, Arc::clone(&state))
        });
        let server = Server::start(listener, server_options, handler)?;
        Ok(Tracker { server, state })
    }

    /// Where the tracker listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Sessions open right now.
    pub fn session_count(&self) -> usize {
        self.state.registry.read().session_count()
    }

    /// Connections open right now (with or without a session).
    pub fn connection_count(&self) -> usize {
        self.server.connection_count()
    }

    /// Stops accepting, closes every connection, joins every thread (see
    /// [`crate::server::Server::shutdown`] for the one case it cannot).
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}
