//! The loop every line-protocol server runs on one connection: read a line
//! (capped, under the idle deadline), hand it to the service, flush what it
//! wrote; until the client leaves, stays silent past the deadline, or the
//! service says to close. The tracker and the peers' mini-servers are each
//! a [`LineService`]; this module owns what they have in common.

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use log::{debug, info};

use crate::protocol::{ErrorCode, ProtocolError, Reply};
use crate::server::Connection;
use crate::wire::{is_timeout, write_line, IdleDeadline, LineReader, StallWriter};

/// What to do after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// Where a service writes its answer; flushed after each line. Each block
/// of an answer must be taken by the client within the idle time (see
/// [`StallWriter`]): a client that stops reading is dropped like a silent
/// one.
pub type Output<'a> = BufWriter<StallWriter<'a>>;

/// A server's behaviour on one connection.
pub trait LineService {
    /// Answers one non-blank line, or the framing error that replaced it
    /// (over-long, not UTF-8), by writing to `out`.
    fn on_line(
        &mut self,
        line: Result<&str, &ProtocolError>,
        out: &mut Output<'_>,
    ) -> io::Result<Flow>;
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct LineLimits {
    /// The connection closes after this long without a complete line,
    /// counted from the answer to the last one.
    pub idle: Duration,
    /// Longest line accepted, ending included.
    pub max_line: usize,
}

/// Runs `service` on the connection until it ends (or the server stops).
pub fn serve_lines(conn: &Connection, limits: LineLimits, service: &mut impl LineService) {
    let (stream, remote) = (&conn.stream, conn.remote);
    if let Err(e) = stream.set_nodelay(true) {
        debug!("{remote}: cannot set up the socket: {e}");
        return;
    }
    // `&TcpStream` reads and writes, so one socket serves both halves.
    let reading = IdleDeadline::stopped_by(stream, limits.idle, conn.stop.clone());
    let mut reader = LineReader::new(reading, limits.max_line);
    let mut out = BufWriter::new(StallWriter::new(stream, limits.idle));
    loop {
        // The line is borrowed from the reader's buffer: answered before
        // the next read, it is never copied.
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) if is_timeout(&e) => {
                let text = format!(
                    "no complete line for {} s (keep-alive deadline), closing",
                    limits.idle.as_secs()
                );
                info!("{remote}: {text}");
                let _ = write_line(&mut out, &Reply::error(ErrorCode::IdleTimeout, text));
                let _ = out.flush();
                break;
            }
            Err(e) => {
                debug!("{remote}: connection lost: {e}");
                break;
            }
        };
        let answered = match &line {
            // Blank: spaces and tabs alone (a line of other white space,
            // a no-break space, is a request, and gets its answer).
            Ok(text) if text.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')) => {
                Ok(Flow::Continue)
            }
            Ok(text) => service.on_line(Ok(text), &mut out),
            Err(error) => service.on_line(Err(error), &mut out),
        };
        let flow = answered.and_then(|flow| out.flush().map(|()| flow));
        // Any complete line, even a bad or blank one, is a sign of life.
        reader.get_mut().restart();
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => break,
            Err(e) => {
                debug!("{remote}: cannot answer: {e}");
                break;
            }
        }
    }
}
