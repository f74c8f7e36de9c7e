//! One client connection to the tracker: each line is parsed, answered by
//! the [handler](super::handler), and logged. Runs on the connection's own
//! thread inside [`serve_lines`]; whatever goes wrong here ends this
//! connection only.
//!
//! A line in the form of the course's ring tools
//! ([`CourseRequest::recognise`]) is answered by the
//! [welcome service](super::welcome) instead, and the connection then
//! closes: one request per connection, as the course's tools expect.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, info};

use crate::logging::{network_warning, printable};
use crate::protocol::course::{CourseRequest, WrongRequest};
use crate::protocol::fields::echo;
use crate::protocol::{ProtocolError, Reply, TrackerRequest};
use crate::server::Connection;
use crate::service::{serve_lines, Flow, LineLimits, LineService, Output};
use crate::wire::write_line;

use super::handler::{respond, Answer};
use super::registry::SessionId;
use super::{TrackerState, Welcome};

/// Serves one connection until the client quits, closes, goes silent past
/// the keep-alive deadline, or the tracker stops. The session it opened, if
/// any, is closed on the way out, so its offers vanish at once.
pub(crate) fn serve(conn: Connection, state: Arc<TrackerState>) {
    let limits = LineLimits {
        idle: state.options.keep_alive,
        max_line: state.options.max_line,
    };
    let mut service = TrackerConnection {
        state: Arc::clone(&state),
        session: conn.id,
        remote: conn.remote,
        errors: 0,
    };
    serve_lines(&conn, limits, &mut service);
    if service.errors > LOGGED_ERRORS {
        network_warning(format_args!(
            "{}: {} errors answered in all on this connection",
            conn.remote, service.errors
        ));
    }
    let peer = state.registry.read().peer_of(conn.id);
    if state.registry.write().close(conn.id) {
        let who = peer.map_or_else(|| conn.remote.to_string(), |p| p.to_string());
        info!("session {} of {who} closed", conn.id);
    }
}

/// `ERRR` answers logged at warn level per connection; the ones after go
/// to the debug level, so that a client sending garbage in a loop cannot
/// fill the log (its total is logged when it closes). A client that
/// reconnects for each line is held by [`network_warning`]'s budget,
/// which is the whole tracker's.
const LOGGED_ERRORS: u64 = 10;

/// The tracker's side of one connection.
struct TrackerConnection {
    state: Arc<TrackerState>,
    /// The session this connection opens with `HELO` (its connection id).
    session: SessionId,
    remote: SocketAddr,
    /// `ERRR` answers sent so far.
    errors: u64,
}

impl TrackerConnection {
    /// Whether this connection opened a session (`HELO`) that is still on.
    fn has_session(&self) -> bool {
        self.state.registry.read().peer_of(self.session).is_some()
    }

    fn answer(&self, text: &str) -> Answer {
        debug!("{} > {}", self.remote, printable(text));
        let request = match TrackerRequest::parse(text) {
            Ok(request) => request,
            Err(error) => return Answer::protocol_error(&error),
        };
        let registry = &self.state.registry;
        // Looked up for the log line of a QUIT only: every other request
        // goes without this extra turn of the registry's lock.
        let peer_before = matches!(request, TrackerRequest::Quit)
            .then(|| registry.read().peer_of(self.session))
            .flatten();
        let answer = respond(
            registry,
            self.session,
            self.remote.ip(),
            &request,
            &self.state.options,
        );
        match (&request, &answer.lines[..], peer_before) {
            (TrackerRequest::Helo { user, .. }, [Reply::Ok(peer)], _) => {
                let user = user.as_ref().map_or("-", |u| u.as_str());
                info!("session {} opened: peer {peer}, user {user}", self.session);
            }
            (TrackerRequest::Quit, _, Some(peer)) => {
                info!("session {} of {peer} closed by QUIT", self.session);
            }
            _ => {}
        }
        answer
    }

    /// Logs an `ERRR` answer: as a warning up to [`LOGGED_ERRORS`] of
    /// them, then at debug level.
    fn log_error(&mut self, reply: &Reply) {
        self.errors += 1;
        match self.errors {
            n if n < LOGGED_ERRORS => network_warning(format_args!("{} < {reply}", self.remote)),
            LOGGED_ERRORS => network_warning(format_args!(
                "{} < {reply} (further errors on this connection are logged at debug level)",
                self.remote
            )),
            _ => debug!("{} < {reply}", self.remote),
        }
    }

    /// Answers a course line by the welcome service, logs it, and says to
    /// close.
    fn answer_course(
        &self,
        text: &str,
        request: Result<CourseRequest, WrongRequest>,
        out: &mut Output<'_>,
    ) -> io::Result<Flow> {
        let replies = match &request {
            Ok(request) => self
                .state
                .welcome
                .lock()
                .answer(request, |n| fastrand::usize(..n)),
            Err(wrong) => Welcome::wrong(wrong),
        };
        // A parsed request is short (its address canonical, at most
        // MAX_ADDRESS_TEXT bytes); a wrong one is cut to a short prefix,
        // quoted and escaped (a carriage return in it would forge a log
        // line).
        let asked = match &request {
            Ok(request) => request.to_string(),
            Err(_) => format!("{:?}", echo(text.trim())),
        };
        match &replies[..] {
            [one] => info!("course: {} {asked} -> {one}", self.remote),
            lines => info!(
                "course: {} {asked} -> {} line(s) and end",
                self.remote,
                lines.len().saturating_sub(1)
            ),
        }
        for reply in &replies {
            write_line(out, reply)?;
        }
        Ok(Flow::Close)
    }
}

impl LineService for TrackerConnection {
    fn on_line(
        &mut self,
        line: Result<&str, &ProtocolError>,
        out: &mut Output<'_>,
    ) -> io::Result<Flow> {
        if let Some((text, request)) = line
            .ok()
            .and_then(|text| Some((text, CourseRequest::recognise(text)?)))
        {
            // A course line gone wrong on a native session (a `?` typed
            // for help) is a typo at the keyboard, not the course's tools:
            // answered as a native line, and the session goes on.
            let a_typo = request.is_err() && self.has_session();
            if !a_typo {
                return self.answer_course(text, request, out);
            }
        }
        let answer = match line {
            Ok(text) => self.answer(text),
            Err(error) => Answer::protocol_error(error),
        };
        for reply in &answer.lines {
            match reply {
                Reply::Error { .. } => self.log_error(reply),
                _ => debug!("{} < {reply}", self.remote),
            }
            write_line(out, reply)?;
        }
        Ok(if answer.close {
            Flow::Close
        } else {
            Flow::Continue
        })
    }
}
