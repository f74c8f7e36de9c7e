//! The mini-server every peer runs: other peers connect to it to learn
//! which pieces this peer holds (`BITF`), to fetch a file's manifest
//! (`MANF`), the pieces themselves (`REQF` -> `PIEC`), and the list of files
//! it offers (`LSTF`). One named thread per connection (see
//! [`crate::server`]); files are found by key in the [`Library`] only.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, warn};
use parking_lot::RwLock;

use crate::protocol::{
    ErrorCode, FileKey, PeerId, PeerRequest, ProtocolError, Reply, ShareEntry, SharedPath, UserName,
};
use crate::server::Connection;
use crate::service::{serve_lines, Flow, LineLimits, LineService, Output};
use crate::wire::write_line;

use super::library::{Library, SharedFile};
use super::ratelimit::RateLimiter;

/// What every mini-server connection shares.
pub struct MiniServerState {
    pub library: Arc<Library>,
    pub limits: LineLimits,
    pub upload: Arc<RateLimiter>,
    /// This peer's user name and id, for `LSTF` lines.
    pub user: Option<UserName>,
    pub peer_id: RwLock<PeerId>,
}

/// Serves one connection from another peer.
pub fn serve(conn: Connection, state: Arc<MiniServerState>) {
    let mut service = MiniServerConnection {
        state: Arc::clone(&state),
        remote: conn.remote,
        buf: Vec::new(),
    };
    serve_lines(&conn.stream, conn.remote, state.limits, &mut service);
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
                let peer = *self.state.peer_id.read();
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
                for share in shares.into_iter().take(1000) {
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
            let text = format!(
                "bad index {bad}: the file has {count} pieces (0 to {})",
                count.saturating_sub(1)
            );
            return write_line(out, &Reply::error(ErrorCode::BadField, text));
        }
        for &index in indices {
            match file.read_piece(index as usize, &mut self.buf) {
                Ok(true) => {
                    let length = self.buf.len() as u32;
                    self.state.upload.take(u64::from(length));
                    write_line(out, &Reply::Piece { key, index, length })?;
                    out.write_all(&self.buf)?;
                    file.record_upload(u64::from(length));
                }
                Ok(false) => {
                    let text = format!("piece {index} of {key} is not here");
                    write_line(out, &Reply::error(ErrorCode::PieceMissing, text))?;
                }
                Err(e) => {
                    warn!("cannot read piece {index} of {}: {e}", file.name.as_str());
                    let text = format!("cannot read piece {index}: {e}");
                    write_line(out, &Reply::error(ErrorCode::Internal, text))?;
                }
            }
        }
        Ok(())
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
                debug!("{} > {text}", self.remote);
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
