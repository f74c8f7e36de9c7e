//! One client connection to the tracker, from its first line to its close:
//! read a line, parse it, let the handler answer, write the answer. Runs on
//! the connection's own thread; whatever goes wrong here ends this
//! connection only.

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::sync::Arc;

use log::{debug, info, warn};

use crate::protocol::{ErrorCode, Reply, TrackerRequest};
use crate::server::Connection;
use crate::wire::{is_timeout, write_line, IdleDeadline, LineReader};

use super::handler::{respond, Answer};
use super::TrackerState;

/// Serves one connection until the client quits, closes, goes silent past
/// the keep-alive deadline, or the tracker stops. The session it opened, if
/// any, is closed on the way out, so its offers vanish at once.
pub(crate) fn serve(conn: Connection, state: Arc<TrackerState>) {
    let Connection { stream, remote, id } = conn;
    let session = id;
    if let Err(e) = configure(&stream, &state) {
        warn!("{remote}: cannot set up the socket: {e}");
        return;
    }
    // `&TcpStream` reads and writes, so one socket serves both halves (no
    // cloned file descriptor per connection).
    let idle = IdleDeadline::new(&stream, state.options.keep_alive);
    let mut reader = LineReader::new(idle, state.options.max_line);
    let mut writer = BufWriter::new(&stream);

    loop {
        let line = match reader.read_line() {
            Ok(Some(line)) => {
                // Any complete line, even a bad one, is a sign of life.
                reader.get_mut().restart();
                line
            }
            Ok(None) => break,
            Err(e) if is_timeout(&e) => {
                let text = format!(
                    "nothing heard for {} s (keep-alive deadline), closing",
                    state.options.keep_alive.as_secs()
                );
                info!("{remote}: {text}");
                let _ = send(&mut writer, &[Reply::error(ErrorCode::IdleTimeout, text)]);
                break;
            }
            Err(e) => {
                debug!("{remote}: connection lost: {e}");
                break;
            }
        };
        let answer = match line {
            Err(error) => Answer::protocol_error(&error),
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => {
                debug!("{remote} > {text}");
                match TrackerRequest::parse(&text) {
                    Ok(request) => {
                        let peer_before = state.registry.read().peer_of(session);
                        let answer = respond(
                            &state.registry,
                            session,
                            remote.ip(),
                            &request,
                            &state.options,
                        );
                        if let (TrackerRequest::Helo { user, .. }, [Reply::Ok(peer)]) =
                            (&request, &answer.lines[..])
                        {
                            let user = user.as_ref().map_or("-", |u| u.as_str());
                            info!("session {session} opened: peer {peer}, user {user}");
                        }
                        if let (TrackerRequest::Quit, Some(peer)) = (&request, peer_before) {
                            info!("session {session} of {peer} closed by QUIT");
                        }
                        answer
                    }
                    Err(error) => Answer::protocol_error(&error),
                }
            }
        };
        for reply in &answer.lines {
            match reply {
                Reply::Error { .. } => warn!("{remote} < {reply}"),
                _ => debug!("{remote} < {reply}"),
            }
        }
        if let Err(e) = send(&mut writer, &answer.lines) {
            debug!("{remote}: cannot write: {e}");
            break;
        }
        if answer.close {
            break;
        }
    }
    let peer = state.registry.read().peer_of(session);
    if state.registry.write().close(session) {
        info!(
            "session {session} of {} closed",
            peer.map_or_else(|| remote.to_string(), |p| p.to_string())
        );
    }
}

fn configure(stream: &TcpStream, state: &TrackerState) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // Reads are bounded by the IdleDeadline; writes to a client that does
    // not read give up after the same time.
    stream.set_write_timeout(Some(state.options.keep_alive))
}

fn send(writer: &mut BufWriter<&TcpStream>, lines: &[Reply]) -> std::io::Result<()> {
    for line in lines {
        write_line(writer, line)?;
    }
    writer.flush()
}
