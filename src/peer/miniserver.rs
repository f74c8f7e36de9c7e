//! The mini-server every peer runs: other peers connect to it to learn
//! which pieces this peer holds (`BITF`), to fetch a file's manifest
//! (`MANF`), the pieces themselves (`REQF` -> `PIEC`), and the list of files
//! it offers (`LSTF`). One named thread per connection (see
//! [`crate::server`]); files are found by key in the [`Library`] only.
//!
//! A peer in the ring also answers the ring's requests here (`LOOK`,
//! `RNFO`, `NTFY`, ...: see [`crate::protocol::ring`]), and the course
//! monitor's bare `rt?` line, after which it closes the connection as the
//! course's tools expect.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use log::{debug, warn};

use crate::logging::printable;
use crate::protocol::course::{CourseReply, CourseRequest};
use crate::protocol::ring::{is_ring_verb, RingRequest};
use crate::protocol::{
    ErrorCode, FileKey, PeerId, PeerRequest, ProtocolError, Reply, ShareEntry, SharedPath, UserName,
};
use crate::ring::RingNode;
use crate::server::Connection;
use crate::service::{serve_lines, Flow, LineLimits, LineService, Output};
use crate::wire::write_line;

use super::library::{Library, SharedFile};
use super::ratelimit::{RateLimiter, PAID_BLOCK};
use super::tracker_client::TrackerClient;

/// What every mini-server connection shares.
pub struct MiniServerState {
    pub library: Arc<Library>,
    pub limits: LineLimits,
    pub upload: Arc<RateLimiter>,
    /// This peer's user name, for `LSTF` lines.
    pub user: Option<UserName>,
    /// The tracker session, whose peer id `LSTF` lines give (it may open
    /// after the mini-server starts, or change when the session is opened
    /// again).
    pub tracker: Arc<TrackerClient>,
    /// Where the mini-server listens: the peer id until the tracker gives
    /// one.
    pub listen: PeerId,
    /// This peer's place in the ring, once it has joined one.
    pub ring: OnceLock<Arc<RingNode>>,
}

/// Serves one connection from another peer.
pub fn serve(conn: Connection, state: Arc<MiniServerState>) {
    let mut service = MiniServerConnection {
        state: Arc::clone(&state),
        remote: conn.remote,
        buf: Vec::new(),
    };
    serve_lines(&conn, state.limits, &mut service);
}

struct MiniServerConnection {
    state: Arc<MiniServerState>,
    remote: SocketAddr,
    /// Reused for every piece read on this connection.
    buf: Vec<u8>,
}

impl MiniServerConnection {
    fn file(&self, key: &FileKey) -> Result<Arc<SharedFile>, Reply> {
        self.state
            .library
            .get(key)
            .ok_or_else(|| Reply::error(ErrorCode::UnknownFile, format!("no file with key {key}")))
    }

    fn answer(&mut self, request: PeerRequest, out: &mut Output<'_>) -> io::Result<Flow> {
        match request {
            PeerRequest::Bitf { key, .. } => {
                let reply = self
                    .file(&key)
                    .map(|file| Reply::Bitmap {
                        key,
                        bitmap: file.bitmap().to_field(),
                    })
                    .unwrap_or_else(|e| e);
                write_line(out, &reply)?;
            }
            PeerRequest::Manf { key } => match self.file(&key) {
                Ok(file) => {
                    let bytes = file.manifest_bytes();
                    let length = bytes.len() as u32;
                    write_line(out, &Reply::Manifest { key, length })?;
                    out.write_all(bytes)?;
                }
                Err(reply) => write_line(out, &reply)?,
            },
            PeerRequest::Reqf { key, indices } => self.send_pieces(key, &indices, out)?,
            PeerRequest::Lstf => {
                let peer = self.state.tracker.peer_id().unwrap_or(self.state.listen);
                let mut shares: Vec<ShareEntry> = self
                    .state
                    .library
                    .all()
                    .iter()
                    .filter(|file| file.is_offered())
                    .filter_map(|file| {
                        let path = SharedPath::new(&file.path().to_string_lossy()).ok()?;
                        Some(ShareEntry {
                            key: file.key,
                            user: self.state.user.clone(),
                            peer,
                            path,
                        })
                    })
                    .collect();
                shares.sort_by(|a, b| a.path.cmp(&b.path));
                for share in shares.into_iter().take(crate::protocol::MAX_LISTED_SHARES) {
                    write_line(out, &Reply::Share(share))?;
                }
                write_line(out, &Reply::End)?;
            }
            PeerRequest::Ping => write_line(out, &Reply::ok("pong"))?,
            PeerRequest::Quit => {
                write_line(out, &Reply::ok("bye"))?;
                return Ok(Flow::Close);
            }
        }
        Ok(Flow::Continue)
    }

    /// Answers `REQF`: for each index in order, `PIEC` and the bytes, or
    /// `ERRR 404`. An unknown key or an index past the end refuses the
    /// whole request with one `ERRR`.
    fn send_pieces(
        &mut self,
        key: FileKey,
        indices: &[u32],
        out: &mut Output<'_>,
    ) -> io::Result<()> {
        let file = match self.file(&key) {
            Ok(file) => file,
            Err(reply) => return write_line(out, &reply),
        };
        let count = file.manifest.piece_count();
        if let Some(bad) = indices.iter().find(|&&i| i as usize >= count) {
            let text = bad_index(*bad, count);
            return write_line(out, &Reply::error(ErrorCode::BadField, text));
        }
        for &index in indices {
            match file.read_piece(index as usize, &mut self.buf) {
                Ok(true) => {
                    let length = self.buf.len() as u32;
                    write_line(out, &Reply::Piece { key, index, length })?;
                    if self.state.upload.rate() == 0 {
                        out.write_all(&self.buf)?;
                    } else {
                        // Paid for a block at a time, each sent as soon as
                        // it is (see `PAID_BLOCK`).
                        for block in self.buf.chunks(PAID_BLOCK) {
                            self.state.upload.take(block.len() as u64);
                            out.write_all(block)?;
                            out.flush()?;
                        }
                    }
                    file.record_upload(u64::from(length));
                }
                Ok(false) => {
                    let text = format!("piece {index} of {key} is not here");
                    write_line(out, &Reply::error(ErrorCode::PieceMissing, text))?;
                }
                Err(e) => {
                    warn!("cannot read piece {index} of {}: {e}", file.name.as_str());
                    let text = unreadable(index, &e);
                    write_line(out, &Reply::error(ErrorCode::Internal, text))?;
                }
            }
        }
        Ok(())
    }
}

impl MiniServerConnection {
    /// The line as a ring request, if its verb is one of the ring's.
    fn ring_request(&self, text: &str) -> Option<Result<RingRequest, ProtocolError>> {
        let verb = text.trim_start().split(' ').next()?.to_ascii_uppercase();
        is_ring_verb(&verb).then(|| RingRequest::parse(text))
    }

    fn answer_ring(
        &mut self,
        request: Result<RingRequest, ProtocolError>,
        out: &mut Output<'_>,
    ) -> io::Result<Flow> {
        let lines = match (request, self.state.ring.get()) {
            (Ok(request), Some(ring)) => ring.answer(&request, self.remote.ip()),
            (Ok(_), None) => vec![crate::protocol::ring::RingReply::Common(Reply::error(
                ErrorCode::UnknownVerb,
                "this peer is not in a ring (start it with --ring true)",
            ))],
            (Err(error), _) => {
                vec![crate::protocol::ring::RingReply::Common(Reply::from_error(
                    &error,
                ))]
            }
        };
        for line in &lines {
            write_line(out, line)?;
        }
        Ok(Flow::Continue)
    }

    /// The course's grammar: a peer answers a bare `rt?` with its routing
    /// table; anything else is `wrq`. One request per connection.
    fn answer_course(
        &mut self,
        request: Option<CourseRequest>,
        out: &mut Output<'_>,
    ) -> io::Result<Flow> {
        let lines = match (request, self.state.ring.get()) {
            (Some(CourseRequest::Table { hash: None }), Some(ring)) => ring.course_table(),
            _ => vec![CourseReply::Wrong],
        };
        for line in &lines {
            write_line(out, line)?;
        }
        Ok(Flow::Close)
    }
}

impl LineService for MiniServerConnection {
    fn on_line(
        &mut self,
        line: Result<&str, &ProtocolError>,
        out: &mut Output<'_>,
    ) -> io::Result<Flow> {
        let parsed = match line {
            Ok(text) => {
                debug!("{} > {}", self.remote, printable(text));
                if let Some(course) = CourseRequest::recognise(text) {
                    return self.answer_course(course.ok(), out);
                }
                if let Some(request) = self.ring_request(text) {
                    return self.answer_ring(request, out);
                }
                PeerRequest::parse(text)
            }
            Err(error) => Err(error.clone()),
        };
        match parsed {
            Ok(request) => self.answer(request, out),
            Err(error) => {
                let reply = Reply::from_error(&error);
                debug!("{} < {reply}", self.remote);
                write_line(out, &reply)?;
                Ok(Flow::Continue)
            }
        }
    }
}

/// Why index `bad` is not one of a file of `count` pieces.
fn bad_index(bad: u32, count: usize) -> String {
    match count {
        0 => format!("bad index {bad}: the file is empty, it has no piece"),
        1 => format!("bad index {bad}: the file has 1 piece (index 0)"),
        _ => format!(
            "bad index {bad}: the file has {count} pieces (0 to {})",
            count - 1
        ),
    }
}

/// Why piece `index` could not be read: `e` in words (the reader's
/// "failed to fill whole buffer" says nothing to a person).
fn unreadable(index: u32, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("cannot read piece {index}: the file on disk is shorter than it was")
    } else {
        format!("cannot read piece {index}: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::{bad_index, unreadable};
    use std::io;

    #[test]
    fn an_unreadable_piece_is_told_in_words() {
        let short = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(
            unreadable(2, &short),
            "cannot read piece 2: the file on disk is shorter than it was"
        );
        let other = io::Error::other("disk on fire");
        assert_eq!(unreadable(2, &other), "cannot read piece 2: disk on fire");
    }

    #[test]
    fn a_bad_index_is_told_with_the_file_s_range() {
        assert_eq!(
            bad_index(3, 3),
            "bad index 3: the file has 3 pieces (0 to 2)"
        );
        assert_eq!(
            bad_index(1, 1),
            "bad index 1: the file has 1 piece (index 0)"
        );
        assert_eq!(
            bad_index(0, 0),
            "bad index 0: the file is empty, it has no piece"
        );
    }
}
